//! The MCP transport over a stdio server's wire (`mcp::wire_tee`), lent to each start of a session
//! and given back when that start fails ([`Pipe`]): a server of MCP 2026-07-28 only refuses
//! `initialize` and reads on, so `server/discover` follows on the same pipes, with whatever
//! the transport had read already still in its buffer. The one transport lives as long as
//! the pipes: the session that starts keeps it; dropped with the session (or with the
//! startup that never got one), it closes the server's stdin.
//!
//! Each request is stamped with its log level on the way out when the session is one of
//! MCP 2026-07-28 (`mcp::modern::stamp_log_level`), as over streamable HTTP.

use std::sync::{Arc, Mutex, PoisonError};

use rmcp::RoleClient;
use rmcp::service::TxJsonRpcMessage;
use rmcp::transport::Transport;
use tokio_util::either::Either;

use crate::mcp::modern::stamp_log_level;
use crate::mcp::wire_tee::WireTransport;

/// The transport over one run's pipes.
type Inner = WireTransport;

/// Where the transport waits between starts.
#[derive(Clone)]
pub(crate) struct PipeHome(Arc<Mutex<Option<Inner>>>);

impl std::fmt::Debug for PipeHome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeHome").finish_non_exhaustive()
    }
}

impl PipeHome {
    /// A home for `transport`, the one over a run's wire.
    pub(crate) fn new(transport: WireTransport) -> Self {
        Self(Arc::new(Mutex::new(Some(transport))))
    }

    /// The transport, lent to one start; `None` once a session kept it.
    pub(crate) fn lend(&self) -> Option<Pipe> {
        let inner = self.0.lock().unwrap_or_else(PoisonError::into_inner).take()?;
        Some(Pipe {
            inner: Some(inner),
            home: self.clone(),
        })
    }
}

/// The transport lent to one start: given back when dropped.
pub(crate) struct Pipe {
    /// Always `Some` until dropped.
    inner: Option<Inner>,
    home: PipeHome,
}

impl std::fmt::Debug for Pipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipe")
            .field("lent", &self.inner.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            *self.home.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(inner);
        }
    }
}

/// The error of a pipe whose transport is gone (never seen: it is there until dropped).
fn gone() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotConnected, "the server's pipes are closed")
}

impl Transport<RoleClient> for Pipe {
    type Error = std::io::Error;

    fn send(
        &mut self,
        mut item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        stamp_log_level(&mut item);
        match self.inner.as_mut() {
            Some(inner) => Either::Left(inner.send(item)),
            None => Either::Right(std::future::ready(Err(gone()))),
        }
    }

    async fn receive(&mut self) -> Option<rmcp::service::RxJsonRpcMessage<RoleClient>> {
        self.inner.as_mut()?.receive().await
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        match self.inner.as_mut() {
            Some(inner) => inner.close().await,
            None => Ok(()),
        }
    }
}
