//! An MCP server that runs inside corrald (the built-in `corral` server), reached over an
//! in-memory duplex pipe instead of a child process or HTTP.
//!
//! The server task knows such a server only as an [`InProcessServer`]: something that serves
//! one MCP session on one end of a [`DuplexStream`]. Boot builds the concrete server and
//! hands it to the supervisor as an `Arc<dyn InProcessServer>`, so neither the supervisor nor
//! the server task depends on what the server does (and the server, which reads the
//! supervisor, does not form a cycle with them).
//!
//! `start` opens the pipe, spawns the server's side, and runs `initialize` and `tools/list`
//! on corrald's side under the startup timeout. It returns values and writes no task state.
//! Invariant: the server's side lives exactly as long as the returned `InProcessRun`; a
//! startup that fails or times out ends it at once.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rmcp::ServiceExt as _;
use rmcp::model::Tool;
use tokio::io::DuplexStream;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

use crate::mcp::handler::McpClientHandler;

use super::McpSession;

/// Bytes the in-memory pipe buffers in each direction.
const DUPLEX_BUFFER: usize = 64 * 1024;

/// An MCP server that corrald runs in-process.
pub trait InProcessServer: Send + Sync + fmt::Debug {
    /// Serve one MCP session on `io` until the client side closes it (or the returned future
    /// is dropped, which ends the session).
    fn serve(&self, io: DuplexStream) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The server's side of a running in-process session: dropping it ends that side.
#[derive(Debug)]
pub(crate) struct InProcessRun {
    _server: AbortOnDropHandle<()>,
}

/// A session that finished `initialize` and `tools/list`.
pub(crate) struct InProcessStarted {
    /// corrald's side of the session.
    pub(crate) service: McpSession,
    /// The tools the server listed.
    pub(crate) tools: Vec<Tool>,
    /// The server's side; keep it as long as the session.
    pub(crate) server: InProcessRun,
}

/// Why an in-process server did not start.
#[derive(Debug)]
pub(crate) enum InProcessFailure {
    /// `initialize` or `tools/list` failed: what failed, and why.
    Protocol(String),
    /// They did not finish within the startup timeout.
    TimedOut,
}

/// Start `server` over a new duplex pipe and run `initialize` and `tools/list` through
/// `handler`, both within `timeout`. The server's side runs in `tracker`.
pub(crate) async fn start(
    server: &dyn InProcessServer,
    handler: McpClientHandler,
    tracker: &TaskTracker,
    timeout: Duration,
) -> Result<InProcessStarted, InProcessFailure> {
    let (client_io, server_io) = tokio::io::duplex(DUPLEX_BUFFER);
    let server = InProcessRun {
        _server: AbortOnDropHandle::new(tracker.spawn(server.serve(server_io))),
    };
    let startup = async {
        let service = handler
            .serve(client_io)
            .await
            .map_err(|error| format!("initialize failed: {error}"))?;
        let tools = service
            .peer()
            .list_all_tools()
            .await
            .map_err(|error| format!("tools/list failed: {error}"))?;
        Ok::<_, String>((service, tools))
    };
    match tokio::time::timeout(timeout, startup).await {
        Ok(Ok((service, tools))) => Ok(InProcessStarted { service, tools, server }),
        Ok(Err(error)) => Err(InProcessFailure::Protocol(error)),
        Err(_) => Err(InProcessFailure::TimedOut),
    }
}
