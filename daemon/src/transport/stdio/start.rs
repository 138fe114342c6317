//! Starting a stdio server and ending its process, as values the server task acts on.
//!
//! [`launch_process`] gives each run a fresh marker and (when servers get one) a cgroup
//! leaf, launches the child (`super::launch`) and drains its stderr. [`Startup`] runs
//! the start of the session (`transport::era`, over the session's one transport, `pipe`, on its wire,
//! `mcp::wire_tee`) and `tools/list` under the startup deadline, raced against the
//! process's exit and a broken message. A server that refuses `initialize` as a server of
//! MCP 2026-07-28 only does gets `server/discover` on the same pipes; one that exits after
//! that refusal is [`StartFailure::Relaunch`], which the task launches once more. [`ServerProcess::teardown`] is the one
//! way a run's process tree ends. Nothing here writes a server's state: the task records
//! the pid, the last exit and the status from what these return.
//!
//! Startup ends by what the server completed, not by which event corrald noticed first: a
//! server that answered `initialize` and `tools/list` and then exited is started (the task
//! then sees it crash); one that exited before that failed with its exit status
//! ([`StartFailure::Exited`]). The startup future keeps the child's stdin open until the
//! task drops the [`Startup`]: a failure is explained (did the process exit?) before the
//! server sees stdin EOF. The race is biased towards a completed startup, and an exit
//! noticed first still lets the startup read what was written before it, for at most
//! `EXIT_NOTICE_GRACE` (1 s).
//!
//! Invalid JSON on stdout during startup is a `protocolError`, never a `startupTimeout`:
//! at once when the line looks like a JSON-RPC message (the wire tee says so), else when
//! the startup deadline passes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_protocol::FailureReason;
use corral_protocol::config::StdioConfig;
use process_wrap::tokio::ChildWrapper;
use rmcp::model::Tool;
use rmcp::service::{ClientInitializeError, ClientLifecycleMode, ClientServiceExt as _};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::mcp::handler::McpClientHandler;
use crate::mcp::wire_tee::WireTee;
use crate::process::cgroup;
use crate::process::reaper::Registry;
use crate::process::scan::{self, ProcessId};
use crate::process::teardown::{TeardownPolicy, reap_adopted, teardown};
use crate::transport::McpSession;
use crate::transport::era::{self, Opening};

use super::pipe::PipeHome;
use super::{LaunchError, StderrTail, drain_stderr, launch};

/// How long, once a server's process exit or a closed transport was noticed
/// during startup, the other may take to show: the rest of its stdout to be
/// read, or its exit status to be collected.
const EXIT_NOTICE_GRACE: Duration = Duration::from_secs(1);

/// How long the stderr reader may take, after the process exited, to catch its last words.
const LAST_WORDS_GRACE: Duration = Duration::from_millis(200);

/// What launching a stdio server needs.
#[derive(Debug)]
pub(crate) struct LaunchSpec<'a> {
    /// The server's name.
    pub(crate) name: &'a str,
    /// Its command, arguments, environment and working directory.
    pub(crate) config: &'a StdioConfig,
    /// The daemon's process registry (leaders, markers, the record).
    pub(crate) processes: &'a Arc<Registry>,
    /// Where the server's stderr lines go.
    pub(crate) stderr: &'a StderrTail,
    /// Where the stderr reader runs.
    pub(crate) tracker: &'a TaskTracker,
}

/// One run's process tree: what its teardown needs, from launch to teardown.
pub(crate) struct ServerProcess {
    name: String,
    pid: u32,
    child: Box<dyn ChildWrapper>,
    /// The leader, with its start time (read at launch, while its pid is its own).
    leader: ProcessId,
    /// The environment marker every process of this run carries.
    marker: String,
    /// The run's cgroup, when servers get one.
    leaf: Option<cgroup::Leaf>,
    /// Descendants of the leader, as seen when the server became ready.
    known_tree: Vec<ProcessId>,
    /// The stderr reader.
    drain: JoinHandle<()>,
    processes: Arc<Registry>,
}

impl std::fmt::Debug for ServerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerProcess")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// The pipes of a launched server, which its MCP session speaks over.
#[derive(Debug)]
pub(crate) struct Pipes {
    stdout: ChildStdout,
    stdin: ChildStdin,
}

/// Launch the server's process with a new marker (and cgroup leaf, when enabled), and start
/// draining its stderr. A failure is the reason front-ends see and why, without the name.
pub(crate) async fn launch_process(spec: LaunchSpec<'_>) -> Result<(ServerProcess, Pipes), (FailureReason, String)> {
    let LaunchSpec {
        name,
        config,
        processes,
        stderr,
        tracker,
    } = spec;
    let marker = processes.next_marker(name);
    let leaf = if cgroup::enabled(processes) {
        let (name, processes) = (name.to_owned(), processes.clone());
        tokio::task::spawn_blocking(move || cgroup::Leaf::create(&name, processes))
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    let (launched, stderr_pipe) = match launch(name, config, &marker, leaf.as_ref(), processes) {
        Ok(launched) => launched,
        Err(error) => {
            if let Some(leaf) = leaf {
                let _ = tokio::task::spawn_blocking(move || leaf.kill_and_remove()).await;
            }
            let reason = match &error {
                LaunchError::ExecutableNotFound { .. } => FailureReason::ExecutableNotFound,
                LaunchError::BadWorkingDirectory { .. } => FailureReason::ConfigInvalid,
                LaunchError::NotExecutable { .. } | LaunchError::Spawn { .. } => FailureReason::SpawnFailed,
            };
            return Err((reason, error.to_string()));
        }
    };
    let pid = launched.pid;
    tracing::info!(server = %name, pid, "launched");
    let process = ServerProcess {
        name: name.to_owned(),
        pid,
        child: launched.child,
        // Read now, while the leader cannot have been reaped: its pid is its own.
        leader: ProcessId::of(pid),
        marker,
        leaf,
        known_tree: Vec::new(),
        drain: tracker.spawn(drain_stderr(name.to_owned(), stderr_pipe, stderr.clone())),
        processes: processes.clone(),
    };
    let pipes = Pipes {
        stdout: launched.stdout,
        stdin: launched.stdin,
    };
    Ok((process, pipes))
}

impl ServerProcess {
    /// The leader's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Wait for the leader to exit. Cancel-safe.
    pub(crate) async fn exited(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.inner_mut().wait().await
    }

    /// Let the stderr reader catch the last words of a process that exited (bounded).
    /// Call it once per run.
    pub(crate) async fn last_words(&mut self) {
        let _ = tokio::time::timeout(LAST_WORDS_GRACE, &mut self.drain).await;
    }

    /// Remember the tree as it is now, while its parent chains are intact: a
    /// grandchild that leaves the group and clears its environment is still
    /// known as this server's if the server dies first.
    pub(crate) async fn remember_tree(&mut self) {
        let leader = self.leader;
        self.known_tree = tokio::task::spawn_blocking(move || scan::descendants(&[leader]))
            .await
            .unwrap_or_default();
    }

    /// The bounded teardown of the run's tree ([`teardown`]), closing `session` first (stdin
    /// EOF), then reaping what it left and freeing its leaf. Returns how the leader ended, if
    /// that was seen here.
    pub(crate) async fn teardown(mut self, session: Option<McpSession>, policy: TeardownPolicy) -> Option<String> {
        let started = Instant::now();
        let close_session = async move {
            if let Some(mut session) = session {
                let _ = session.close_with_timeout(policy.stdin_grace).await;
            }
        };
        let exit = teardown(
            close_session,
            &mut self.child,
            self.leader,
            &self.marker,
            &self.known_tree,
            self.leaf.as_ref(),
            policy,
        )
        .await;
        reap_adopted(self.processes.clone()).await;
        if let Some(leaf) = self.leaf.take() {
            // After the ladder nothing of the run may stay: kill what is left, remove the leaf.
            let _ = tokio::task::spawn_blocking(move || leaf.kill_and_remove()).await;
        }
        self.processes.leader_gone(self.pid);
        tracing::info!(server = %self.name, pid = self.pid, elapsed = ?started.elapsed(), exit = ?exit, "torn down");
        exit
    }
}

/// A session that finished its start (`initialize`, or `server/discover`) and `tools/list`:
/// the session, the tools listed, and how it was opened (for the server's next runs).
pub(crate) struct Started {
    /// The session.
    pub(crate) session: McpSession,
    /// The tools it listed.
    pub(crate) tools: Vec<Tool>,
    /// The start that worked.
    pub(crate) opening: Opening,
}

/// The start then `tools/list`.
type StartupFuture = Pin<Box<dyn Future<Output = Result<Started, StartFailure>> + Send>>;

/// Why a stdio server did not start.
#[derive(Debug)]
pub(crate) enum StartFailure {
    /// Its process exited before it completed the startup (the task records the exit and
    /// quotes the last stderr lines).
    Exited(std::io::Result<std::process::ExitStatus>),
    /// It refused `initialize` as a server of MCP 2026-07-28 does and then closed its pipes
    /// (exited) before the start its refusal pointed to: launch it again and start with this.
    Relaunch(Opening),
    /// Anything else: the reason front-ends see, and why (without the server's name).
    Failed(FailureReason, String),
}

/// The start of a session (`transport::era`: `initialize` first, unless the server showed
/// before that it wants `server/discover`) and `tools/list` over a launched server's pipes.
/// Dropping it closes the child's stdin unless the session took it (the first teardown step).
pub(crate) struct Startup {
    initialize: StartupFuture,
    raw: Arc<WireTee>,
    broken_message: CancellationToken,
    deadline: tokio::time::Instant,
    limit: Duration,
}

impl Startup {
    /// Begin the startup over `pipes`, read and written through the wire `raw`, within `limit` from now, opening
    /// the session with `first`.
    pub(crate) fn new(
        pipes: Pipes,
        handler: McpClientHandler,
        raw: Arc<WireTee>,
        limit: Duration,
        first: Opening,
    ) -> Self {
        let deadline = tokio::time::Instant::now() + limit;
        let broken_message = raw.broken_message();
        let home = PipeHome::new(raw.transport(Box::new(pipes.stdout), Box::new(pipes.stdin)));
        let name = handler.server().to_owned();
        let initialize = async move {
            // Every start gets the same pipes again: a server that refused `initialize` and
            // reads on gets `server/discover` next.
            let start = |lifecycle: ClientLifecycleMode, handler: McpClientHandler| {
                let pipe = home.lend();
                async move {
                    match pipe {
                        Some(pipe) => handler.serve_with_lifecycle(pipe, lifecycle).await,
                        None => Err(ClientInitializeError::ConnectionClosed(
                            "the pipes are already in use".to_owned(),
                        )),
                    }
                }
            };
            let opened = era::open(&name, first.clone(), handler, start).await;
            let (session, opening) = opened.map_err(|not_opened| match not_opened.on_new_transport {
                Some(opening) => StartFailure::Relaunch(opening),
                None => StartFailure::Failed(
                    FailureReason::ProtocolError,
                    format!("{} failed: {}", first.method(), not_opened.error),
                ),
            })?;
            let tools = session.peer().list_all_tools().await.map_err(|error| {
                StartFailure::Failed(FailureReason::ProtocolError, format!("tools/list failed: {error}"))
            })?;
            Ok(Started {
                session,
                tools,
                opening,
            })
        };
        Self {
            initialize: Box::pin(initialize),
            raw,
            broken_message,
            deadline,
            limit,
        }
    }

    /// Run the startup until it completes, `process` exits, the server writes a message that
    /// is not JSON, or the deadline passes. What the server completed decides. Cancel-safe in
    /// the sense the task needs: dropped, it leaves the startup where it was.
    pub(crate) async fn run(&mut self, process: &mut ServerProcess) -> Result<Started, StartFailure> {
        tokio::select! {
            // Biased: a startup that completed wins over an exit noticed in the same poll.
            biased;
            outcome = tokio::time::timeout_at(self.deadline, &mut self.initialize) => match outcome {
                Ok(outcome) => outcome,
                Err(_) => Err(self.timed_out()),
            },
            status = process.exited() => {
                // The process is gone, but what it wrote before it went may not
                // have been read yet: let the startup read it (the pipe is at
                // EOF, or a grandchild holds it open, hence the bound). What
                // the server completed decides, not which event came first.
                let grace = EXIT_NOTICE_GRACE.min(self.deadline.saturating_duration_since(tokio::time::Instant::now()));
                match tokio::time::timeout(grace, &mut self.initialize).await {
                    Ok(Ok(ready)) => Ok(ready),
                    // It refused `initialize` as a server of 2026-07-28, then went: relaunch.
                    Ok(Err(relaunch @ StartFailure::Relaunch(_))) => Err(relaunch),
                    _ => Err(StartFailure::Exited(status)),
                }
            }
            () = self.broken_message.cancelled() => Err(StartFailure::Failed(
                FailureReason::ProtocolError,
                format!("the server wrote a JSON-RPC message that is not valid JSON ({})", self.raw.invalid_summary()),
            )),
        }
    }

    /// A protocol error usually means a closed pipe, and that the process died: if it exits
    /// within a short grace, say so with its exit status. Other failures come back as they are.
    pub(crate) async fn explain(&mut self, process: &mut ServerProcess, failure: StartFailure) -> StartFailure {
        match failure {
            StartFailure::Failed(FailureReason::ProtocolError, error) => {
                match tokio::time::timeout(EXIT_NOTICE_GRACE, process.exited()).await {
                    Ok(status) => StartFailure::Exited(status),
                    Err(_) => StartFailure::Failed(FailureReason::ProtocolError, error),
                }
            }
            other => other,
        }
    }

    /// The failure of a startup that ran out of time. Invalid JSON on stdout
    /// means the answer came but could not be read: a protocol error.
    fn timed_out(&self) -> StartFailure {
        let limit = self.limit;
        let raw = &self.raw;
        if raw.invalid_lines() > 0 {
            return StartFailure::Failed(
                FailureReason::ProtocolError,
                format!(
                    "no valid answer to initialize and tools/list within {limit:?} (startup_timeout_sec); \
                     the server wrote {} line(s) on stdout that are not valid JSON ({})",
                    raw.invalid_lines(),
                    raw.invalid_summary()
                ),
            );
        }
        StartFailure::Failed(
            FailureReason::StartupTimeout,
            format!("initialize and tools/list did not finish within {limit:?} (startup_timeout_sec)"),
        )
    }
}
