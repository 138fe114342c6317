//! The do-nothing relay: the limit of any design with a daemon in the
//! middle. A process of its own (this executable, run with
//! [`SERVE_RELAY_FLAG`]) that accepts front-ends on a Unix socket, spawns one
//! MCP server per connection and copies bytes between the socket and the
//! server's pipes, both ways, and nothing else: no parsing, no routing, no
//! ids. What a daemon adds to a call beyond what this adds is the cost of
//! being more than a pipe.
//!
//! It runs on a tokio multi-thread runtime with the default number of
//! workers, as corrald does, so that both pay the same for waking up.
//! [`RelayProcess`] is the benchmark's side: start it, connect a raw MCP
//! client ([`McpLines`]), stop it (SIGKILL, then reap: its servers die with
//! their stdin and carry this run's tag, so the survivor check finds any).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};

use crate::bridge::McpLines;
use crate::survivors;

/// The hidden flag that makes this executable the relay: `--serve-relay SOCKET -- PROGRAM ARGS…`.
pub(crate) const SERVE_RELAY_FLAG: &str = "--serve-relay";
/// Longest wait for the relay's socket to accept, and for it to exit.
const RELAY_TIMEOUT: Duration = Duration::from_secs(5);

/// The relay itself, in the process started with [`SERVE_RELAY_FLAG`]: serve until killed.
pub(crate) fn serve(socket: &Path, command: &[OsString]) -> anyhow::Result<()> {
    let (program, args) = command.split_first().context("no server command after `--`")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
        loop {
            let (stream, _) = listener.accept().await?;
            let mut child = tokio::process::Command::new(program)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("spawning {}", program.to_string_lossy()))?;
            let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
                bail!("the server has no pipes");
            };
            let (mut from_client, mut to_client) = stream.into_split();
            tokio::spawn(async move {
                let up = tokio::spawn(async move { tokio::io::copy(&mut from_client, &mut stdin).await });
                let _ = tokio::io::copy(&mut stdout, &mut to_client).await;
                up.abort();
                drop(child); // kill_on_drop
            });
        }
    })
}

/// The relay process, started by the benchmark.
pub(crate) struct RelayProcess {
    child: tokio::process::Child,
    pub(crate) pid: u32,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl RelayProcess {
    /// Start this executable as a relay whose connections each get `program args…` as their server.
    pub(crate) async fn start(program: &str, args: &[&Path]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("corral-bench-relay-")
            .tempdir()
            .context("creating the relay's directory")?;
        let socket = dir.path().join("relay.sock");
        let exe = std::env::current_exe().context("finding this executable to run it as the relay")?;
        let mut command = tokio::process::Command::new(exe);
        command
            .arg(SERVE_RELAY_FLAG)
            .arg(&socket)
            .arg("--")
            .arg(program)
            .args(args)
            .env(survivors::RUN_TAG_VAR, survivors::run_tag())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = command.spawn().context("starting the relay")?;
        let pid = child.id().context("the relay has no pid")?;
        let relay = Self {
            child,
            pid,
            socket,
            _dir: dir,
        };
        let started = Instant::now();
        while !relay.socket.exists() {
            if started.elapsed() > RELAY_TIMEOUT {
                bail!(
                    "the relay did not bind {} within {RELAY_TIMEOUT:?}",
                    relay.socket.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(relay)
    }

    /// A raw MCP client on a new connection (the relay spawns its server), initialized.
    pub(crate) async fn connect(&self, client_name: &str) -> anyhow::Result<McpLines<OwnedReadHalf, OwnedWriteHalf>> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .with_context(|| format!("connecting to the relay at {}", self.socket.display()))?;
        let (read, write) = stream.into_split();
        let mut client = McpLines::new(read, write);
        crate::bridge::bounded_answer(client.initialize(client_name))
            .await
            .context("`initialize` through the relay")?;
        Ok(client)
    }

    /// The pid of the server the relay spawned for its only connection.
    pub(crate) fn server_pid(&self) -> anyhow::Result<u32> {
        let tasks = format!("/proc/{}/task", self.pid);
        let mut children = Vec::new();
        for task in std::fs::read_dir(&tasks).with_context(|| format!("reading {tasks}"))? {
            let path = task?.path().join("children");
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            children.extend(text.split_whitespace().filter_map(|pid| pid.parse::<u32>().ok()));
        }
        match children[..] {
            [pid] => Ok(pid),
            _ => bail!("the relay has {} children, not the one server", children.len()),
        }
    }

    /// Kill the relay (its servers die with their stdin) and reap it; says how it ended.
    pub(crate) async fn stop(mut self) -> String {
        let _ = self.child.start_kill();
        match tokio::time::timeout(RELAY_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) => format!("killed ({status})"),
            Ok(Err(error)) => format!("could not be waited for: {error}"),
            Err(_) => format!("still there {RELAY_TIMEOUT:?} after SIGKILL"),
        }
    }
}
