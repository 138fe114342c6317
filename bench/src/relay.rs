//! The do-nothing relay: the limit of any design with a daemon in the
//! middle. A process of its own (this executable, run with
//! [`SERVE_RELAY_FLAG`]) that accepts front-ends on a Unix socket, spawns one
//! MCP server per connection and copies bytes between the socket and the
//! server's pipes, both ways, and nothing else: no parsing, no routing, no
//! ids. What a daemon adds to a call beyond what this adds is the cost of
//! being more than a pipe.
//!
//! The shared relay ([`SERVE_SHARED_RELAY_FLAG`]) is the limit of a daemon
//! that puts many front-ends on one server, the throughput comparison's
//! reference: one server for every connection, each request's id swapped for
//! one of the relay's on the way in and back on the way out, found by a byte
//! search where these clients and server-everything write it, and nothing
//! else. Less than any real multiplexer can do (it reads no JSON).
//!
//! Both run on a tokio multi-thread runtime with the default number of
//! workers, as corrald does, so that all pay the same for waking up.
//! [`RelayProcess`] is the benchmark's side: start it, connect a raw MCP
//! client ([`McpLines`]), stop it (SIGKILL, then reap: its servers die with
//! their stdin and carry this run's tag, so the survivor check finds any).

use std::collections::HashMap;
use std::ffi::OsString;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::mpsc;

use crate::bridge::McpLines;
use crate::survivors;

/// The hidden flag that makes this executable the relay: `--serve-relay SOCKET -- PROGRAM ARGS…`.
pub(crate) const SERVE_RELAY_FLAG: &str = "--serve-relay";
/// The same for the shared relay: `--serve-shared-relay SOCKET -- PROGRAM ARGS…`.
pub(crate) const SERVE_SHARED_RELAY_FLAG: &str = "--serve-shared-relay";
/// Where a message's id begins, as the benchmark's clients and server-everything write it.
const ID_KEY: &[u8] = br#""id":"#;
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
            let (child, mut stdin, mut stdout) = spawn_server(program, args)?;
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

/// `program args…` with piped stdin and stdout, killed when dropped.
fn spawn_server(program: &OsString, args: &[OsString]) -> anyhow::Result<(Child, ChildStdin, ChildStdout)> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {}", program.to_string_lossy()))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        bail!("the server has no pipes");
    };
    Ok((child, stdin, stdout))
}

/// The shared relay itself, in the process started with [`SERVE_SHARED_RELAY_FLAG`]: one
/// server, spawned at once, for every connection; serve until killed.
pub(crate) fn serve_shared(socket: &Path, command: &[OsString]) -> anyhow::Result<()> {
    let (program, args) = command.split_first().context("no server command after `--`")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
        let (_child, stdin, stdout) = spawn_server(program, args)?;
        let stdin = Arc::new(tokio::sync::Mutex::new(stdin));
        let routes = Arc::new(StdMutex::new(Routes {
            next: SHARED_ID_BASE,
            waiting: HashMap::new(),
        }));
        let (writers, new_writers) = mpsc::unbounded_channel();
        tokio::spawn(answers(stdout, Arc::clone(&routes), new_writers));
        for connection in 0_usize.. {
            let (stream, _) = listener.accept().await?;
            let (read, write) = stream.into_split();
            if writers.send((connection, write)).is_err() {
                bail!("the server's output ended");
            }
            tokio::spawn(requests(connection, read, Arc::clone(&stdin), Arc::clone(&routes)));
        }
        Ok(())
    })
}

/// The shared relay's ids start here: never one the server uses for its own requests.
const SHARED_ID_BASE: u64 = 1 << 32;

/// The shared relay's requests waiting for their answer.
struct Routes {
    /// The last id the relay gave.
    next: u64,
    /// By the relay's id: the connection, and the id as the connection wrote it.
    waiting: HashMap<u64, (usize, Vec<u8>)>,
}

fn lock(routes: &StdMutex<Routes>) -> std::sync::MutexGuard<'_, Routes> {
    routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Which occurrence [`find`] looks for.
#[derive(Clone, Copy)]
enum Place {
    First,
    Last,
}

/// Where `what` occurs in `line`, the first or the last time.
fn find(line: &[u8], what: &[u8], place: Place) -> Option<usize> {
    let mut windows = line.windows(what.len());
    match place {
        Place::First => windows.position(|window| window == what),
        Place::Last => windows.rposition(|window| window == what),
    }
}

/// The digits of a number id written right after the first or last `"id":` of `line`.
fn id_digits(line: &[u8], place: Place) -> Option<Range<usize>> {
    let start = find(line, ID_KEY, place)? + ID_KEY.len();
    let digits = line[start..].iter().take_while(|byte| byte.is_ascii_digit()).count();
    (digits > 0).then_some(start..start + digits)
}

/// The next line of `reader` into `line` (its newline kept); `false` at the end or an error.
async fn next_line(reader: &mut (impl AsyncBufRead + Unpin), line: &mut Vec<u8>) -> bool {
    line.clear();
    matches!(reader.read_until(b'\n', line).await, Ok(read) if read > 0)
}

/// End the relay (its clients see their connection close, and the benchmark fails) over a
/// line it cannot relay.
fn give_up(what: &str, line: &[u8]) -> ! {
    eprintln!(
        "corral-bench shared relay: {what}: {}",
        String::from_utf8_lossy(line).trim_end()
    );
    std::process::exit(1)
}

/// `line` with `digits` replaced by `id`, into `out`.
fn swap_id(out: &mut Vec<u8>, line: &[u8], digits: Range<usize>, id: &[u8]) {
    out.clear();
    out.extend_from_slice(&line[..digits.start]);
    out.extend_from_slice(id);
    out.extend_from_slice(&line[digits.end..]);
}

/// One connection's lines to the shared server, a request's id swapped for the relay's
/// (the clients write the id first, so the first `"id":` is the envelope's).
async fn requests(
    connection: usize,
    read: OwnedReadHalf,
    stdin: Arc<tokio::sync::Mutex<ChildStdin>>,
    routes: Arc<StdMutex<Routes>>,
) {
    let mut reader = BufReader::new(read);
    let (mut line, mut out) = (Vec::new(), Vec::new());
    while next_line(&mut reader, &mut line).await {
        let to_send = match id_digits(&line, Place::First) {
            // An id it cannot swap: its answer could not be routed, and the client would wait.
            None if find(&line, ID_KEY, Place::First).is_some() => give_up("a request whose id is not a number", &line),
            Some(digits) => {
                let ours = {
                    let mut routes = lock(&routes);
                    routes.next += 1;
                    let ours = routes.next;
                    routes.waiting.insert(ours, (connection, line[digits.clone()].to_vec()));
                    ours
                };
                swap_id(&mut out, &line, digits, ours.to_string().as_bytes());
                &out
            }
            None => &line,
        };
        if stdin.lock().await.write_all(to_send).await.is_err() {
            return;
        }
    }
}

/// The shared server's answers, each to the connection of its request with that one's id;
/// anything else it writes is dropped. (Every connection's `initialize` reaches the one
/// server: server-everything answers each, and logs, to the stderr the relay discards, that
/// its per-session tools were registered already.)
async fn answers(
    stdout: ChildStdout,
    routes: Arc<StdMutex<Routes>>,
    mut new_writers: mpsc::UnboundedReceiver<(usize, OwnedWriteHalf)>,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut writers = HashMap::new();
    let (mut line, mut out) = (Vec::new(), Vec::new());
    while next_line(&mut reader, &mut line).await {
        // The last `"id":` (a result's), else the first (an error's: `{jsonrpc, id, error}`).
        let routed = [Place::Last, Place::First].into_iter().find_map(|place| {
            let digits = id_digits(&line, place)?;
            let ours = std::str::from_utf8(&line[digits.clone()]).ok()?.parse::<u64>().ok()?;
            let route = lock(&routes).waiting.remove(&ours)?;
            Some((digits, route))
        });
        let Some((digits, (connection, theirs))) = routed else {
            // A notification or a request of the server's: dropped. An answer no request
            // waits for would leave a client waiting: the run fails instead.
            if find(&line, br#""result":"#, Place::First).is_some()
                || find(&line, br#""error":"#, Place::First).is_some()
            {
                give_up("an answer to no request it sent", &line);
            }
            continue;
        };
        while let Ok((number, writer)) = new_writers.try_recv() {
            writers.insert(number, writer);
        }
        let Some(writer) = writers.get_mut(&connection) else {
            continue;
        };
        swap_id(&mut out, &line, digits, &theirs);
        if writer.write_all(&out).await.is_err() {
            writers.remove(&connection);
        }
    }
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
        Self::start_as(SERVE_RELAY_FLAG, program, args).await
    }

    /// Start this executable as the shared relay, whose connections all share one `program args…`.
    pub(crate) async fn start_shared(program: &str, args: &[&Path]) -> anyhow::Result<Self> {
        Self::start_as(SERVE_SHARED_RELAY_FLAG, program, args).await
    }

    async fn start_as(flag: &str, program: &str, args: &[&Path]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("corral-bench-relay-")
            .tempdir()
            .context("creating the relay's directory")?;
        let socket = dir.path().join("relay.sock");
        let exe = std::env::current_exe().context("finding this executable to run it as the relay")?;
        let mut command = tokio::process::Command::new(exe);
        command
            .arg(flag)
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

    /// The pid of the server the relay spawned (for its only connection, or the shared one).
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
