//! One request from a front-end, sent on to an MCP server.
//!
//! Every request goes out through rmcp's `send_cancellable_request`, so its
//! id and progress token are known: the server's answer is returned as the
//! server wrote it when the transport lets corrald see it (`raw`), the
//! server's progress reaches the front-end that asked for it, and dropping
//! the future (timeout, `$/cancelRequest`, a front-end gone) tells the server
//! with `notifications/cancelled`.
//!
//! A request is never sent twice, with one exception: when a streamable-HTTP
//! server no longer knows the session (HTTP 404 to a request carrying it),
//! it did not run the request; the server's task makes a new session (a new
//! transport and `initialize`) and the request is sent once more on it. A
//! second 404 is an error; every other failure (401 included) is returned as
//! it is.

use std::sync::Arc;

use rmcp::model::{CancelledNotificationParam, ClientRequest, RequestId, ServerResult};
use rmcp::service::PeerRequestOptions;
use rmcp::{Peer, RoleClient, ServiceError};
use serde_json::value::RawValue;

use crate::hub::link::Link;
use crate::hub::routes::FrontEnds;
use crate::mcp::classify::is_session_expired;
use crate::mcp::route::CallTarget;

/// Where a request's progress goes: the registry, the caller's link and the token it gave.
pub(crate) type ProgressTarget<'a> = (&'a Arc<FrontEnds>, &'a Arc<Link>, serde_json::Value);

/// The server's answer: rmcp's typed result, and the `result` exactly as
/// the server wrote it when corrald could see it.
pub(crate) struct Answer {
    pub(crate) typed: ServerResult,
    pub(crate) raw: Option<Box<RawValue>>,
}

/// Why a request to a server failed.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The request failed (including a second expired session).
    Service(ServiceError),
    /// The session expired and no new one could be made.
    Recovery(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Service(error) => error.fmt(f),
            Self::Recovery(why) => write!(f, "the session expired and a new one could not be made: {why}"),
        }
    }
}

/// Send `request` to `target`'s server and wait for the answer, renewing an
/// expired HTTP session once (see the module documentation).
pub(crate) async fn send(
    target: &CallTarget,
    request: impl Into<ClientRequest>,
    progress: Option<ProgressTarget<'_>>,
) -> Result<Answer, SendError> {
    let request = request.into();
    let error = match send_on(&target.peer, target, request.clone(), progress.clone()).await {
        Ok(answer) => return Ok(answer),
        Err(error) => error,
    };
    let Some(recovery) = target.session_recovery.as_ref().filter(|_| is_session_expired(&error)) else {
        return Err(SendError::Service(error));
    };
    tracing::info!(server = %target.config.name, "request found the session expired; asking for a new one");
    let peer = recovery.recover().await.map_err(SendError::Recovery)?;
    send_on(&peer, target, request, progress)
        .await
        .map_err(SendError::Service)
}

/// Send `request` on `peer` (a session of `target`'s server) and wait for the answer.
async fn send_on(
    peer: &Peer<RoleClient>,
    target: &CallTarget,
    request: ClientRequest,
    progress: Option<ProgressTarget<'_>>,
) -> Result<Answer, ServiceError> {
    let handle = peer
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await?;
    let _route = progress.map(|(frontends, link, theirs)| {
        let ours = serde_json::to_value(&handle.progress_token).unwrap_or_default();
        frontends.progress_route(&target.config.name, link, &ours, theirs)
    });
    let id = handle.id.clone();
    let mut cancel = CancelOnDrop {
        peer: peer.clone(),
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
            super::rpc::rpc_error(
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
