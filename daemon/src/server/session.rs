//! What a server task owns while its server is ready: the MCP session and what its
//! transport needs alongside it ([`ReadySession`]), and the events the task's one ready
//! loop waits for ([`TaskEvent`]).
//!
//! Every transport's ready phase is the same loop over [`TaskEvent`]s (a server given its
//! client's roots also gets [`TaskEvent::RootsChanged`]); a transport only adds
//! the events it can produce ([`ReadySession::transport_event`]): a stdio server's process
//! exit or closed stdout, a streamable-HTTP server's health signals and session-recovery
//! requests; an in-process server adds none.
//!
//! A streamable-HTTP session can expire (HTTP 404) under a front-end's request:
//! `mcp::route::SessionRecovery` (the session's generation and a channel) is how that
//! request asks the task for a new session, answered by the ready loop
//! ([`TaskEvent::Recovery`]). The task builds a new transport and runs `initialize` (with
//! the startup retries), bumps the generation, swaps the peer in the server's
//! `SessionHandle`, renews the front-ends' resource subscriptions on it, and answers with
//! the new peer; the request is then sent once more (`mcp::forward`). A request holding
//! an older generation gets the current peer without a second renewal. A renewal that
//! fails is the server gone: a crash, under the restart policy. A 404 on the event
//! stream's `GET` (no request waiting) renews the session the same way.
//!
//! After `notifications/tools/list_changed` the task lists the tools again and builds a new
//! `ToolCatalog` from the listing; [`Relisting`] keeps that to one listing at a time (a
//! change announced meanwhile is covered by one more listing after it), so the listing a
//! stdio session's wire completed last is the one the catalog is built from.
//!
//! Invariant: a [`ReadySession`] is ended exactly once, by the task (`ServerTask::end_session`),
//! which also forgets the session in the server's state.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::mcp::tool_catalog::ToolCatalog;
use crate::mcp::wire_tee::WireTee;
use crate::transport::McpSession;
use crate::transport::http::{HealthSignal, HttpConnection};
use crate::transport::in_process::InProcessRun;
use crate::transport::stdio::ServerProcess;

use super::task::RunEnd;
use crate::mcp::route::RecoveryRequest;

/// A ready server: its MCP session and what its transport keeps with it.
pub(super) struct ReadySession {
    /// corrald's side of the MCP session.
    pub(super) service: McpSession,
    /// What the transport keeps while the session lives.
    pub(super) transport: ReadyTransport,
}

/// What each transport keeps while its server is ready.
pub(super) enum ReadyTransport {
    /// A child process over stdio.
    Stdio(StdioRun),
    /// A streamable-HTTP server.
    Http(HttpRun),
    /// A server inside corrald; dropping it ends the server's side.
    InProcess(InProcessRun),
}

/// A ready stdio server's process and pipes.
pub(super) struct StdioRun {
    /// The run's process tree.
    pub(super) process: ServerProcess,
    /// Cancelled when the server closes its stdout (the MCP transport).
    pub(super) stdout_closed: CancellationToken,
    /// The session's answers as the server wrote them.
    pub(super) raw: Arc<WireTee>,
}

/// A ready streamable-HTTP server's way to renew its session, and what it reports.
pub(super) struct HttpRun {
    /// Opens new sessions (after a 404).
    pub(super) connection: HttpConnection,
    /// The transport's health signals.
    pub(super) health: mpsc::Receiver<HealthSignal>,
    /// Requests for a new session from front-end requests that found the session expired.
    pub(super) recovery: mpsc::Receiver<RecoveryRequest>,
    /// The sending side handed out with every session (in its `SessionHandle`).
    pub(super) recovery_tx: mpsc::Sender<RecoveryRequest>,
    /// Which session is current: bumped with every renewal.
    pub(super) generation: u64,
}

impl HttpRun {
    /// Forget what the transport reported before now: it is about an old session, or
    /// trouble seen while connecting.
    pub(super) fn forget_health(&mut self) {
        while self.health.try_recv().is_ok() {}
    }
}

/// What the ready loop of a server task reacts to.
#[derive(Debug)]
pub(super) enum TaskEvent {
    /// A stop or restart command, or the daemon shutting down: the run ends.
    Interrupted(RunEnd),
    /// The server said its tools changed.
    ToolsChanged,
    /// The tools re-listed after that (or why re-listing failed).
    Relisted(Result<ToolCatalog, String>),
    /// The MCP client that started the server for itself said its roots changed.
    RootsChanged,
    /// The stdio server's process exited.
    ProcessExited(std::io::Result<std::process::ExitStatus>),
    /// The stdio server closed its stdout while its process may run on.
    StdoutClosed,
    /// The streamable-HTTP transport reported trouble.
    Health(HealthSignal),
    /// A front-end request found the streamable-HTTP session expired.
    Recovery(RecoveryRequest),
}

impl ReadySession {
    /// The next event of the transport itself (never, for an in-process server).
    /// Cancel-safe (used inside `select!`). A process exit wins over a closed stdout
    /// noticed in the same poll.
    pub(super) async fn transport_event(&mut self) -> TaskEvent {
        match &mut self.transport {
            ReadyTransport::Stdio(run) => tokio::select! {
                biased;
                status = run.process.exited() => TaskEvent::ProcessExited(status),
                () = run.stdout_closed.cancelled() => TaskEvent::StdoutClosed,
            },
            ReadyTransport::Http(run) => tokio::select! {
                Some(signal) = run.health.recv() => TaskEvent::Health(signal),
                Some(request) = run.recovery.recv() => TaskEvent::Recovery(request),
                else => std::future::pending().await,
            },
            ReadyTransport::InProcess(_) => std::future::pending().await,
        }
    }

    /// Whether the server is reached over streamable HTTP.
    pub(super) fn is_http(&self) -> bool {
        matches!(self.transport, ReadyTransport::Http(_))
    }

    /// The session's wire, when corrald sees it (stdio).
    pub(super) fn wire(&self) -> Option<&Arc<WireTee>> {
        match &self.transport {
            ReadyTransport::Stdio(run) => Some(&run.raw),
            ReadyTransport::Http(_) | ReadyTransport::InProcess(_) => None,
        }
    }
}

/// Re-listing a ready server's tools: at most one listing at a time, and one more after it
/// when the server announced a change meanwhile (however many times it did).
#[derive(Debug, Default)]
pub(super) struct Relisting {
    /// A listing is under way.
    running: bool,
    /// The tools changed again while it ran.
    again: bool,
}

impl Relisting {
    /// The server said its tools changed: whether to start a listing now.
    pub(super) fn changed(&mut self) -> bool {
        if self.running {
            self.again = true;
            false
        } else {
            self.running = true;
            true
        }
    }

    /// The listing under way ended: whether to start another now.
    pub(super) fn finished(&mut self) -> bool {
        self.running = std::mem::take(&mut self.again);
        self.running
    }
}

#[cfg(test)]
mod tests {
    use super::Relisting;

    #[test]
    fn one_listing_at_a_time_and_changes_meanwhile_make_one_more() {
        let mut relisting = Relisting::default();
        assert!(relisting.changed(), "nothing running: list now");
        assert!(!relisting.changed(), "one runs: wait");
        assert!(!relisting.changed(), "still one more, not two");
        assert!(relisting.finished(), "the change meanwhile: list again");
        assert!(!relisting.finished(), "no change since: done");
        assert!(relisting.changed(), "idle again: list now");
        assert!(!relisting.finished());
    }
}
