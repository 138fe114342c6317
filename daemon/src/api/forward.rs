//! One request from a front-end, sent on to an MCP server.
//!
//! Every request goes out through rmcp's `send_cancellable_request`, so its
//! id and progress token are known: the server's answer is returned as the
//! server wrote it when the transport lets corrald see it (`raw`), the
//! server's progress reaches the front-end that asked for it, and dropping
//! the future (timeout, `$/cancelRequest`, a front-end gone) tells the server
//! with `notifications/cancelled`.

use std::sync::Arc;

use rmcp::model::{CancelledNotificationParam, ClientRequest, RequestId, ServerResult};
use rmcp::service::PeerRequestOptions;
use rmcp::{Peer, RoleClient, ServiceError};
use serde_json::value::RawValue;

use crate::frontends::{FrontEnds, Link};
use crate::supervisor::CallTarget;

/// Where a request's progress goes: the registry, the caller's link and the token it gave.
pub(crate) type ProgressTarget<'a> = (&'a Arc<FrontEnds>, &'a Arc<Link>, serde_json::Value);

/// The server's answer: rmcp's typed result, and the `result` exactly as
/// the server wrote it when corrald could see it.
pub(crate) struct Answer {
    pub(crate) typed: ServerResult,
    pub(crate) raw: Option<Box<RawValue>>,
}

/// Send `request` to `target`'s server and wait for the answer.
pub(crate) async fn send(
    target: &CallTarget,
    request: impl Into<ClientRequest>,
    progress: Option<ProgressTarget<'_>>,
) -> Result<Answer, ServiceError> {
    let handle = target
        .peer
        .send_cancellable_request(request.into(), PeerRequestOptions::no_options())
        .await?;
    let _route = progress.map(|(frontends, link, theirs)| {
        let ours = serde_json::to_value(&handle.progress_token).unwrap_or_default();
        frontends.progress_route(&target.config.name, link, &ours, theirs)
    });
    let id = handle.id.clone();
    let mut cancel = CancelOnDrop {
        peer: target.peer.clone(),
        id: Some(id.clone()),
    };
    let typed = handle.await_response().await;
    cancel.id = None;
    let raw = target.raw.as_ref().and_then(|raw| raw.take(&id));
    Ok(Answer { typed: typed?, raw })
}

/// The answer as the server wrote it (`raw`), else rmcp's `typed` value.
pub(crate) fn json<T: serde::Serialize>(
    raw: Option<Box<RawValue>>,
    typed: &T,
) -> Result<Box<RawValue>, jsonrpsee::types::ErrorObjectOwned> {
    match raw {
        Some(raw) => Ok(raw),
        None => serde_json::value::to_raw_value(typed).map_err(|error| {
            super::methods::rpc_error(
                corral_protocol::ErrorCode::InternalError,
                format!("cannot serialize the result: {error}"),
            )
        }),
    }
}

/// Tells the server a request is abandoned unless disarmed by taking `id`.
struct CancelOnDrop {
    peer: Peer<RoleClient>,
    id: Option<RequestId>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let peer = self.peer.clone();
        tokio::spawn(async move {
            let reason = Some("request abandoned by the caller".to_owned());
            if let Err(error) = peer
                .notify_cancelled(CancelledNotificationParam::new(Some(id), reason))
                .await
            {
                tracing::debug!(%error, "cannot tell the server a request was cancelled");
            }
        });
    }
}
