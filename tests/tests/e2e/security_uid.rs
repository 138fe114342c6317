//! Another local user must not reach the daemon, its front-ends or its files.
//!
//! The victim is the uid the tests run as (root here and in CI) or a spare uid
//! the test drops to (65533); the attacker is another spare uid (65534,
//! nobody), reached with `setpriv` for file plants and by a Python impostor
//! that drops to it before listening. Everything shared is set up in a
//! world-writable sticky directory (mode 1777, like `/tmp`) that each test
//! creates under its own scratch directory, so nothing depends on the
//! machine's `/tmp`.
//!
//! On `fs.protected_symlinks`: with it on (1), the kernel refuses to follow a
//! symlink owned by someone else in a sticky world-writable directory, which
//! hides half of these attacks; many containers and servers run with it off,
//! and so does the machine these tests were written on. The tests do not
//! depend on it: the daemon must refuse a shared directory before it opens
//! anything in it, and the `O_NOFOLLOW` tests plant links in a directory the
//! sysctl does not cover (a private, non-sticky one).
//!
//! - S1: clients refuse a socket whose directory is not private to them, or
//!   whose listener runs as another uid, before sending a byte (CLI and SDK).
//! - S2: the daemon refuses a symlinked or shared socket directory and never
//!   opens its lock or temp file through a symbolic link.
//! - S3: a children record is trusted only when it is ours (owner, mode,
//!   directory); a recorded process is killed only with an exact start time
//!   and the record's marker.
//! - R4: a record that cannot be written shows in `daemon/status` and
//!   `corral doctor`, and is written once it can be.
//! - Review follow-ups: U1, a recorded leader without the marker (`env -i`)
//!   is still killed after a SIGKILL of corrald, when the record is of this
//!   boot; U2, a record of the previous version (0644) is still trusted; U3,
//!   a socket directory whose parent others can write is refused (the
//!   descriptor-relative operations are unit-tested in `paths.rs` and
//!   `reaper.rs`); U4, a lock file of another uid nobody holds no longer
//!   locks the user out, and the refusals say what to run.

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use corral_client::protocol::ServerStatus;
use corral_client::protocol::paths::UntrustedSocket;
use corral_client::{Client, ClientError, ConnectOptions};
use corral_tests::{
    KillSurvivorsOnDrop, SERVER_WAIT, TestDaemon, WAIT, assert_all_alive, assert_all_gone, corral_command,
    fixture_config, fixture_python, fixture_script, poll_until, process_stat, run_command, scratch_dir, toml_string,
    toml_string_array, wait_for_pid_file, wait_for_status,
};
use serde_json::Value;
use tempfile::TempDir;

/// The attacker.
const ATTACKER: u32 = 65534;
/// A non-root victim, for "root is trusted only by root".
const OTHER_VICTIM: u32 = 65533;
/// What the victim sends; it must never reach the impostor.
const SECRET: &str = "hunter2-corral-test-password";

fn require_root() {
    let euid = corral_client::protocol::paths::effective_uid();
    assert_eq!(
        euid, 0,
        "these tests play two other users, which needs root (the test machines and CI run as root)"
    );
}

/// Run `program args` as `uid` (and its gid, no supplementary groups); fails the test unless it succeeds.
fn as_user(uid: u32, program: &str, args: &[&str]) {
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(program)
        .args(args);
    let output = run_command(&mut command, WAIT);
    assert!(
        output.status.success(),
        "{program} {args:?} as uid {uid} failed (setpriv is in util-linux: `apt-get install util-linux`): {}",
        output.stderr
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|error| panic!("lstat {}: {error}", path.display()))
        .mode()
        & 0o7777
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// A scratch directory others can traverse, with a shared sticky directory
/// (`shared`, 1777, like `/tmp`) and a private one of the victim (`private`, 0700).
struct Scene {
    scratch: TempDir,
}

impl Scene {
    fn new() -> Scene {
        require_root();
        let scratch = scratch_dir();
        std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod scratch");
        let shared = scratch.path().join("shared");
        std::fs::create_dir(&shared).expect("create the shared dir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).expect("chmod 1777");
        let private = scratch.path().join("private");
        std::fs::create_dir(&private).expect("create the private dir");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod 700");
        let scene = Scene { scratch };
        assert!(
            corral_client::protocol::paths::fits_socket_address(&scene.shared().join("corral-0/corral.sock.children")),
            "the scratch dir's path is too long for a socket address: set TMPDIR=/tmp"
        );
        scene
    }

    fn path(&self) -> &Path {
        self.scratch.path()
    }

    fn shared(&self) -> PathBuf {
        self.path().join("shared")
    }

    fn private(&self) -> PathBuf {
        self.path().join("private")
    }

    /// A victim's file with known content, in a directory of the victim's.
    fn precious_file(&self, name: &str) -> PathBuf {
        let home = self.path().join("home");
        std::fs::create_dir_all(&home).expect("create the victim's home");
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).expect("chmod home");
        let file = home.join(name);
        std::fs::write(&file, format!("{name}: the victim's own data\n")).expect("write the victim's file");
        file
    }
}

fn assert_untouched(file: &Path) {
    let name = file.file_name().expect("file name").to_string_lossy();
    let content = std::fs::read_to_string(file).unwrap_or_else(|error| panic!("read {}: {error}", file.display()));
    assert_eq!(
        content,
        format!("{name}: the victim's own data\n"),
        "{} was written through a planted link",
        file.display()
    );
}

// ---------------------------------------------------------------------------
// The impostor: a fake corrald of another user.

/// Listens on a socket as `uid` and plays corrald well enough for the CLI and
/// the SDK (a valid `initialize` answer, a fake tool result), recording what it
/// receives. Ends when its stdin closes; prints one JSON line of counts (never
/// the bytes themselves: they may hold the test's secret).
const IMPOSTOR: &str = r#"
import json, os, select, socket, sys
path, uid = sys.argv[1], int(sys.argv[2])
if uid != os.getuid():
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
os.chmod(path, 0o777)
server.listen(8)
print("listening", flush=True)
connections, received, buffers = 0, b"", {}

def answer(conn, data):
    global received
    received += data
    buffers[conn] += data
    while b"\n" in buffers[conn]:
        line, buffers[conn] = buffers[conn].split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if "id" not in message:
            continue
        if message.get("method") == "initialize":
            result = {"protocolVersion": 1, "connectionId": 1, "lastSeq": 0, "replayCapacity": 16,
                      "daemonInfo": {"name": "corrald", "version": "0.1.0", "pid": os.getpid()}}
        else:
            result = {"content": [{"type": "text", "text": "stored"}], "isError": False}
        reply = {"jsonrpc": "2.0", "id": message["id"], "result": result}
        try:
            conn.sendall((json.dumps(reply) + "\n").encode())
        except OSError:
            pass

def serve(readable):
    global connections
    if server in readable:
        conn, _ = server.accept()
        connections += 1
        buffers[conn] = b""
    for conn in [c for c in readable if c in buffers]:
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            del buffers[conn]
            conn.close()
        else:
            answer(conn, data)

while True:
    readable, _, _ = select.select([server, sys.stdin] + list(buffers), [], [], 60)
    if not readable:
        break
    serve(readable)
    if sys.stdin in readable:
        # Told to stop: first take whatever is already queued (connections
        # and bytes the client got in before it gave up), without waiting.
        for _ in range(1000):
            pending, _, _ = select.select([server] + list(buffers), [], [], 0)
            if not pending:
                break
            serve(pending)
        break
print(json.dumps({"connections": connections, "bytes": len(received),
                  "sawSecret": sys.argv[3].encode() in received}), flush=True)
"#;

struct Impostor {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Impostor {
    /// Listen on `socket` as `uid`; returns once it listens.
    fn start(socket: &Path, uid: u32) -> Impostor {
        // Started as root, it drops to `uid` itself (as lifecycle.rs's intruder does).
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(IMPOSTOR)
            .arg(socket)
            .arg(uid.to_string())
            .arg(SECRET)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("python3 is needed (`apt-get install python3`): {error}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let impostor = Impostor { child, stdin, lines };
        let first = impostor.lines.recv_timeout(WAIT).expect("the impostor to listen");
        assert_eq!(first, "listening");
        impostor
    }

    /// Stop it and return what it saw: `connections`, `bytes`, `sawSecret`.
    fn finish(mut self) -> Value {
        drop(self.stdin.take());
        let line = self
            .lines
            .recv_timeout(WAIT)
            .expect("the impostor's report after its stdin closed");
        serde_json::from_str(&line).unwrap_or_else(|error| panic!("impostor printed {line:?}: {error}"))
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// S1: clients

/// The issue's attack: `XDG_RUNTIME_DIR` unset, so the CLI falls back to
/// `$TMPDIR/corral-<uid>/corral.sock`, which the attacker created first.
#[test]
fn the_cli_refuses_a_socket_directory_another_user_made_and_sends_it_nothing() {
    let scene = Scene::new();
    let planted_dir = scene.shared().join("corral-0");
    as_user(ATTACKER, "mkdir", &["-m", "0755", path_str(&planted_dir)]);
    let socket = planted_dir.join("corral.sock");
    let impostor = Impostor::start(&socket, ATTACKER);

    let mut corral = corral_command();
    corral
        .args(["call", "vault", "store", &format!("{{\"password\":\"{SECRET}\"}}")])
        .env("TMPDIR", scene.shared())
        .env_remove("XDG_RUNTIME_DIR");
    let output = run_command(&mut corral, WAIT);
    let seen = impostor.finish();

    assert_eq!(seen["sawSecret"], false, "the secret reached the impostor");
    assert_eq!(seen["connections"], 0, "the CLI must not even connect: {seen}");
    assert!(!output.status.success(), "the CLI must fail: {output:?}");
    assert!(!output.stdout.contains("stored"), "no fake result printed: {output:?}");
    let expected = format!(
        "refusing to talk to corrald at {}: its directory {} belongs to uid {ATTACKER}, not to you (uid 0)",
        socket.display(),
        planted_dir.display()
    );
    assert!(
        output.stderr.contains(&expected),
        "names the path and the owner: {output:?}"
    );
    // U4: the fallback stays blocked while that directory exists: say how out.
    let way_out = format!(
        "while {} exists, set XDG_RUNTIME_DIR to a private directory, or pass --socket (or CORRAL_SOCKET) with a path in a directory only you can write",
        planted_dir.display()
    );
    assert!(output.stderr.contains(&way_out), "says how to get out: {output:?}");
    assert!(!output.stderr.contains(SECRET), "{output:?}");
}

/// A root-owned listener is trusted only by root: a non-root victim whose own
/// private directory holds a socket served by uid 0 refuses it after `connect`
/// (the peer's uid), before writing anything.
#[test]
fn the_cli_of_a_user_refuses_a_socket_served_by_another_uid_even_root() {
    let scene = Scene::new();
    let victim_dir = scene.path().join("victim-home");
    std::fs::create_dir(&victim_dir).expect("create the victim's dir");
    std::os::unix::fs::chown(&victim_dir, Some(OTHER_VICTIM), Some(OTHER_VICTIM)).expect("chown");
    std::fs::set_permissions(&victim_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod 700");
    let socket = victim_dir.join("corral.sock");
    let impostor = Impostor::start(&socket, 0);

    let mut corral = Command::new("setpriv");
    corral
        .arg(format!("--reuid={OTHER_VICTIM}"))
        .arg(format!("--regid={OTHER_VICTIM}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(corral_tests::binary("corral"))
        .args(["call", "vault", "store", &format!("{{\"password\":\"{SECRET}\"}}")])
        .arg("--socket")
        .arg(&socket)
        .env_remove("CORRAL_SOCKET")
        .env("HOME", &victim_dir);
    let output = run_command(&mut corral, WAIT);
    let seen = impostor.finish();

    assert_eq!(seen["sawSecret"], false, "the secret reached the impostor");
    assert_eq!(
        seen["bytes"], 0,
        "not a byte may be sent to another uid's listener: {seen}"
    );
    assert!(!output.status.success(), "the CLI must fail: {output:?}");
    let expected = format!(
        "refusing to talk to corrald at {}: it is served by a process of uid 0, not by you (uid {OTHER_VICTIM})",
        socket.display()
    );
    assert!(
        output.stderr.contains(&expected),
        "names the path and the uids: {output:?}"
    );
}

fn sdk_options(socket: &Path) -> ConnectOptions {
    ConnectOptions::new("security-test", "0")
        .with_socket_path(socket)
        .with_connect_timeout(WAIT)
        .with_request_timeout(WAIT)
}

/// The SDK gives a typed error for both checks, and root still reaches a root daemon.
#[tokio::test]
async fn the_sdk_refuses_untrusted_sockets_with_a_typed_error() {
    let scene = Scene::new();

    // The directory check: the attacker made the directory.
    let planted_dir = scene.shared().join("corral-0");
    as_user(ATTACKER, "mkdir", &["-m", "0755", path_str(&planted_dir)]);
    let planted_socket = planted_dir.join("corral.sock");
    let impostor = Impostor::start(&planted_socket, ATTACKER);
    let error = Client::connect(sdk_options(&planted_socket))
        .await
        .expect_err("a socket in another user's directory");
    let seen = impostor.finish();
    assert_eq!(seen["connections"], 0, "{seen}");
    match &error {
        ClientError::UntrustedSocket {
            socket,
            reason: UntrustedSocket::DirOwnedByOther { dir, owner, own_uid },
        } => {
            assert_eq!(socket, &planted_socket);
            assert_eq!(dir, &planted_dir);
            assert_eq!((*owner, *own_uid), (ATTACKER, 0));
        }
        other => panic!("expected UntrustedSocket(DirOwnedByOther), got {other:?}"),
    }

    // The peer check: a socket of the attacker's moved into our private
    // directory (the directory passes; the listener's uid does not).
    let attacker_dir = scene.shared().join("attacker");
    as_user(ATTACKER, "mkdir", &["-m", "0755", path_str(&attacker_dir)]);
    let impostor = Impostor::start(&attacker_dir.join("corral.sock"), ATTACKER);
    let moved = scene.private().join("corral.sock");
    std::fs::rename(attacker_dir.join("corral.sock"), &moved).expect("move the attacker's socket");
    let error = Client::connect(sdk_options(&moved))
        .await
        .expect_err("a socket served by another uid");
    let seen = impostor.finish();
    assert_eq!(seen["connections"], 1, "{seen}");
    assert_eq!(seen["bytes"], 0, "nothing is written before the peer check: {seen}");
    assert!(
        matches!(
            &error,
            ClientError::UntrustedSocket {
                reason: UntrustedSocket::PeerIsOtherUser {
                    peer_uid: ATTACKER,
                    own_uid: 0
                },
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains(&moved.display().to_string()), "{error}");

    // Root connecting to a root daemon keeps working.
    let daemon = TestDaemon::start();
    let client = daemon.connect_client().await;
    assert_eq!(
        client.daemon_status().await.expect("daemon/status").daemon_info.pid,
        daemon.pid()
    );
}

// ---------------------------------------------------------------------------
// S2: the daemon's directory, lock and temp files

/// The attacker points `$TMPDIR/corral-0` at a directory of the victim's. The
/// daemon used to follow it: chmod the victim's directory to 0700 and create
/// its lock file and socket there.
#[test]
fn the_daemon_refuses_a_socket_directory_planted_as_a_symlink() {
    let scene = Scene::new();
    let victim_file = scene.precious_file("notes");
    let victim_home = victim_file.parent().expect("home").to_path_buf();
    let planted = scene.shared().join("corral-0");
    as_user(ATTACKER, "ln", &["-s", path_str(&victim_home), path_str(&planted)]);

    let mut daemon = TestDaemon::builder().socket_path(planted.join("corral.sock")).spawn();
    let status = daemon.wait_for_exit(WAIT);
    assert_eq!(mode(&victim_home), 0o755, "the victim's directory was chmodded");
    let entries: Vec<_> = std::fs::read_dir(&victim_home)
        .expect("list the victim's dir")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(entries, ["notes"], "nothing created in the victim's directory");
    assert_untouched(&victim_file);
    assert!(
        status.is_some_and(|status| !status.success()),
        "corrald must refuse a symlinked socket directory ({status:?}); stderr:\n{}",
        daemon.stderr()
    );
    let expected = format!(
        "refusing to serve a socket in {}: its directory {} is a symbolic link",
        planted.display(),
        planted.display()
    );
    assert!(daemon.stderr().contains(&expected), "{}", daemon.stderr());
}

/// `--socket` in a shared sticky directory (like `/tmp`) where the attacker
/// planted links at the lock file and at the record's temp file: the daemon
/// refuses the directory before opening anything in it.
#[test]
fn the_daemon_refuses_a_shared_directory_and_writes_through_no_planted_link() {
    let scene = Scene::new();
    let lock_target = scene.precious_file("lock-target");
    let temp_target = scene.precious_file("temp-target");
    let shared = scene.shared();
    let lock_link = shared.join("corral.sock.lock");
    let temp_link = shared.join("corral.sock.tmp");
    as_user(ATTACKER, "ln", &["-s", path_str(&lock_target), path_str(&lock_link)]);
    as_user(ATTACKER, "ln", &["-s", path_str(&temp_target), path_str(&temp_link)]);

    let mut daemon = TestDaemon::builder().socket_path(shared.join("corral.sock")).spawn();
    let status = daemon.wait_for_exit(WAIT);
    assert_untouched(&lock_target);
    assert_untouched(&temp_target);
    assert!(
        status.is_some_and(|status| !status.success()),
        "corrald must refuse a world-writable socket directory ({status:?}); stderr:\n{}",
        daemon.stderr()
    );
    let expected = format!(
        "refusing to serve a socket in {}: its directory {} has mode 1777",
        shared.display(),
        shared.display()
    );
    assert!(daemon.stderr().contains(&expected), "{}", daemon.stderr());
    assert_eq!(mode(&shared), 0o1777, "the shared directory is left as it was");
}

/// In the daemon's own directory (private, not sticky: `fs.protected_symlinks`
/// never applies), a symbolic link at the lock file is refused and one at the
/// record's temp file is replaced, never written through.
#[test]
fn the_daemon_opens_no_lock_or_temp_file_through_a_symlink() {
    let scene = Scene::new();
    let lock_target = scene.precious_file("lock-target");
    let temp_target = scene.precious_file("temp-target");
    let socket = scene.private().join("corral.sock");
    let lock_link = scene.private().join("corral.sock.lock");
    std::os::unix::fs::symlink(&lock_target, &lock_link).expect("plant the lock link");

    let mut daemon = TestDaemon::builder().socket_path(&socket).spawn();
    let status = daemon.wait_for_exit(WAIT);
    assert_untouched(&lock_target);
    assert!(
        status.is_some_and(|status| !status.success()),
        "corrald must refuse a symlinked lock file ({status:?}); stderr:\n{}",
        daemon.stderr()
    );
    let expected = format!(
        "lock file {} is a symbolic link: refusing to follow it",
        lock_link.display()
    );
    assert!(daemon.stderr().contains(&expected), "{}", daemon.stderr());

    std::fs::remove_file(&lock_link).expect("remove the lock link");
    let temp_link = scene.private().join("corral.sock.tmp");
    std::os::unix::fs::symlink(&temp_target, &temp_link).expect("plant the temp link");
    let daemon = TestDaemon::builder().socket_path(&socket).start();
    let record = scene.private().join("corral.sock.children");
    // The socket accepts from `listen()` on; the record is written just after
    // (holding the lock, before the accept loop runs): wait for it, bounded.
    let deadline = std::time::Instant::now() + WAIT;
    while std::fs::symlink_metadata(&record).is_err() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let metadata = std::fs::symlink_metadata(&record).expect("the children record");
    assert!(metadata.is_file(), "the record is a regular file");
    assert_eq!(metadata.mode() & 0o7777, 0o600, "the record is private");
    assert_untouched(&temp_target);
    assert!(
        std::fs::symlink_metadata(&temp_link).is_err(),
        "the planted temp link was replaced and the temp file renamed away"
    );
    drop(daemon);
}

// ---------------------------------------------------------------------------
// S3: the children record

/// A process that must survive: `sleep`, optionally carrying a server marker.
struct Bystander(Child);

impl Bystander {
    fn spawn(marker: Option<&str>) -> Bystander {
        let mut command = Command::new("sleep");
        command.arg("600").stdin(Stdio::null());
        command.env_remove("CORRAL_SERVER_MARKER");
        if let Some(marker) = marker {
            command.env("CORRAL_SERVER_MARKER", marker);
        }
        Bystander(command.spawn().expect("spawn sleep"))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn start_time(&self) -> u64 {
        process_stat(self.pid()).expect("the bystander's stat").1
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A record naming `pid` with `start_time`, for daemon instance `instance`.
fn record_json(instance: &str, pid: u32, start_time: u64) -> String {
    format!(
        r#"{{"instance":"{instance}","daemonPid":1,"children":[{{"server":"planted","pid":{pid},"startTime":{start_time}}}]}}"#
    )
}

/// The issue's attack: next to a shared `--socket`, the attacker writes a
/// record with `startTime: 0`, which used to match any process.
#[test]
fn a_record_planted_in_a_shared_directory_kills_nothing() {
    let scene = Scene::new();
    let bystander = Bystander::spawn(None);
    let shared = scene.shared();
    let record = shared.join("corral.sock.children");
    let json = record_json("1-1", bystander.pid(), 0);
    let script = format!("printf '%s' '{json}' > {}", record.display());
    as_user(ATTACKER, "sh", &["-c", &script]);

    let mut daemon = TestDaemon::builder().socket_path(shared.join("corral.sock")).spawn();
    let status = daemon.wait_for_exit(WAIT);
    assert_all_alive(&[bystander.pid()], "a process named in a planted record");
    assert!(
        status.is_some_and(|status| !status.success()),
        "corrald must refuse the shared directory ({status:?}); stderr:\n{}",
        daemon.stderr()
    );
}

/// In the daemon's own directory, only a record of ours (owner, writable by
/// nobody else) is read, and of the processes of a record without a boot id
/// (one written before boot ids were recorded) only those with the exact
/// start time *and* the record's marker are killed.
#[tokio::test]
async fn only_a_record_of_ours_kills_and_only_the_processes_it_marked() {
    let scene = Scene::new();
    let socket = scene.private().join("corral.sock");
    let record = scene.private().join("corral.sock.children");
    let instance = "4000000-12345";
    let marker = format!("{instance}/planted/1");

    // (owner, mode, marked, exact start time, what must be said)
    let cases: [(u32, u32, bool, bool, Option<String>); 4] = [
        (
            ATTACKER,
            0o600,
            true,
            true,
            Some(format!("belongs to uid {ATTACKER}, not to you (uid 0)")),
        ),
        (
            0,
            0o664,
            true,
            true,
            Some("it has mode 664: other users can write it".to_owned()),
        ),
        (0, 0o600, false, false, None),
        (0, 0o600, false, true, None),
    ];
    for (owner, file_mode, marked, exact, said) in cases {
        let context = format!("record of uid {owner}, mode {file_mode:o}, marked {marked}, exact start time {exact}");
        let bystander = Bystander::spawn(marked.then_some(marker.as_str()));
        let start_time = if exact { bystander.start_time() } else { 0 };
        std::fs::write(&record, record_json(instance, bystander.pid(), start_time)).expect("write the record");
        std::os::unix::fs::chown(&record, Some(owner), Some(owner)).expect("chown the record");
        std::fs::set_permissions(&record, std::fs::Permissions::from_mode(file_mode)).expect("chmod the record");

        let daemon = TestDaemon::builder().socket_path(&socket).start();
        wait_for_own_record(&daemon, &record).await;
        assert_all_alive(&[bystander.pid()], &context);
        if let Some(said) = said {
            assert!(
                daemon.stderr().contains(&said),
                "{context}: the daemon says why it ignored the record:\n{}",
                daemon.stderr()
            );
        }
        drop(daemon);
    }

    // The control: our record, 0600, exact start time, marked: killed.
    let bystander = Bystander::spawn(Some(&marker));
    std::fs::write(&record, record_json(instance, bystander.pid(), bystander.start_time())).expect("write");
    std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let daemon = TestDaemon::builder().socket_path(&socket).start();
    assert_all_gone(
        &[bystander.pid()],
        Duration::from_secs(5),
        "a process our own record names and marked",
    )
    .await;
    drop(daemon);
}

/// Wait until `daemon` has written its own record at `record`: it does so
/// after it dealt with its predecessor's (which it may serve before), so the
/// checks that follow see what it killed and said.
async fn wait_for_own_record(daemon: &TestDaemon, record: &Path) {
    let pid = daemon.pid();
    poll_until(
        &format!("corrald {pid} to write its record {}", record.display()),
        || async {
            let written: Value = serde_json::from_slice(&std::fs::read(record).ok()?).ok()?;
            (written["daemonPid"] == pid).then_some(())
        },
    )
    .await;
}

/// `/proc/sys/kernel/random/boot_id`: which boot a record was written in.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .expect("read /proc/sys/kernel/random/boot_id")
        .trim()
        .to_owned()
}

/// Like [`record_json`], with the boot the record says it was written in.
fn record_json_with_boot(instance: &str, pid: u32, start_time: u64, boot_id: &str) -> String {
    format!(
        r#"{{"instance":"{instance}","daemonPid":1,"bootId":"{boot_id}","children":[{{"server":"planted","pid":{pid},"startTime":{start_time}}}]}}"#
    )
}

/// U2: a record the previous corrald wrote (mode 0644 under the usual umask,
/// no boot id) is still ours to act on: only the owner can write it.
#[tokio::test]
async fn a_record_left_by_the_previous_version_with_mode_644_still_kills_what_it_marked() {
    let scene = Scene::new();
    let socket = scene.private().join("corral.sock");
    let record = scene.private().join("corral.sock.children");
    let instance = "4000001-12345";
    let bystander = Bystander::spawn(Some(&format!("{instance}/planted/1")));
    std::fs::write(&record, record_json(instance, bystander.pid(), bystander.start_time())).expect("write");
    std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o644)).expect("chmod 644");

    let daemon = TestDaemon::builder().socket_path(&socket).start();
    assert_all_gone(
        &[bystander.pid()],
        Duration::from_secs(5),
        "a marked process named by our own 0644 record",
    )
    .await;
    wait_for_own_record(&daemon, &record).await;
    assert_eq!(mode(&record), 0o600, "the new record is written 0600");
    drop(daemon);
}

/// U1: a recorded leader without the marker is killed when the record was
/// written in this boot (exact start time, same boot id), and only then.
#[tokio::test]
async fn an_unmarked_recorded_leader_is_killed_only_in_the_boot_that_recorded_it() {
    let scene = Scene::new();
    let socket = scene.private().join("corral.sock");
    let record = scene.private().join("corral.sock.children");
    let instance = "4000002-12345";

    let other_boot = "00000000-0000-4000-8000-000000000000";
    assert_ne!(boot_id(), other_boot);
    let bystander = Bystander::spawn(None);
    std::fs::write(
        &record,
        record_json_with_boot(instance, bystander.pid(), bystander.start_time(), other_boot),
    )
    .expect("write");
    std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let daemon = TestDaemon::builder().socket_path(&socket).start();
    wait_for_own_record(&daemon, &record).await;
    assert_all_alive(&[bystander.pid()], "named by a record of another boot");
    assert!(
        daemon.stderr().contains("it was written in another boot"),
        "the daemon says why it ignored the record:\n{}",
        daemon.stderr()
    );
    drop(daemon);

    std::fs::write(
        &record,
        record_json_with_boot(instance, bystander.pid(), bystander.start_time(), &boot_id()),
    )
    .expect("write");
    std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let daemon = TestDaemon::builder().socket_path(&socket).start();
    assert_all_gone(
        &[bystander.pid()],
        Duration::from_secs(5),
        "an unmarked process our record of this boot names with its exact start time",
    )
    .await;
    drop(daemon);
}

/// U1, end to end: a server that clears its environment (`env -i`, as a
/// wrapper script or a sandbox would) carries no marker, yet it and its
/// process group are killed by the next daemon after corrald was SIGKILLed.
#[tokio::test]
async fn a_leader_that_cleared_its_environment_is_killed_after_a_daemon_sigkill() {
    let scratch = scratch_dir();
    let pid_file = scratch.path().join("clean.pids");
    let mut cleanup = KillSurvivorsOnDrop::new([pid_file.clone()]);
    let args = [
        "-i".to_owned(),
        fixture_python().display().to_string(),
        fixture_script().display().to_string(),
        "--ignore-stdin-close".to_owned(),
        "--spawn-child".to_owned(),
        "--pid-file".to_owned(),
        pid_file.display().to_string(),
    ];
    let config = format!(
        "\n[servers.clean]\ncommand = {}\nargs = {}\n",
        toml_string("env"),
        toml_string_array(&args)
    );
    let mut first = TestDaemon::start_with_config(&config);
    let client = first.connect_client().await;
    let leader = wait_for_status(&client, "clean", ServerStatus::Ready, SERVER_WAIT)
        .await
        .pid
        .expect("a ready server has a pid");
    let pids = wait_for_pid_file(&pid_file, 2).await;
    for pid in &pids {
        cleanup.also(*pid);
    }
    assert_eq!(pids[0], leader, "the fixture runs as the leader (env execs it)");
    for pid in &pids {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("read environ");
        assert!(
            !environ
                .split(|byte| *byte == 0)
                .any(|entry| entry.starts_with(b"CORRAL_SERVER_MARKER=")),
            "process {pid} must carry no marker for this test to mean anything"
        );
    }
    drop(client);

    first.sigkill_and_wait();
    assert_all_alive(&pids, "right after SIGKILL of corrald (they ignore stdin close)");
    let socket = first.socket_path().to_path_buf();
    let second = TestDaemon::builder().socket_path(&socket).start();
    assert_all_gone(
        &pids,
        Duration::from_secs(5),
        "the unmarked leader and its group, once a new daemon serves the socket",
    )
    .await;
    drop(second);
    drop(first);
}

// ---------------------------------------------------------------------------
// U3, U4: the socket directory's parent, and what locks a user out

/// U3: `--socket /shared/proj/.corral/d.sock` with `/shared/proj` writable by
/// others and not sticky: they could rename `.corral` and put their own in its
/// place, so the daemon refuses it, naming the parent.
#[test]
fn the_daemon_refuses_a_socket_directory_whose_parent_others_can_write() {
    let scene = Scene::new();
    let project = scene.path().join("proj");
    std::fs::create_dir(&project).expect("create the project dir");
    std::fs::set_permissions(&project, std::fs::Permissions::from_mode(0o777)).expect("chmod 777");
    let dir = project.join(".corral");
    std::fs::create_dir(&dir).expect("create .corral");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod 700");

    let mut daemon = TestDaemon::builder().socket_path(dir.join("d.sock")).spawn();
    let status = daemon.wait_for_exit(WAIT);
    assert!(
        status.is_some_and(|status| !status.success()),
        "corrald must refuse ({status:?}); stderr:\n{}",
        daemon.stderr()
    );
    let expected = format!(
        "refusing to serve a socket in {}: its parent directory {} has mode 777 and is not sticky",
        dir.display(),
        project.display()
    );
    assert!(daemon.stderr().contains(&expected), "{}", daemon.stderr());

    // Sticky (like /tmp), others cannot rename a directory of ours: accepted.
    std::fs::set_permissions(&project, std::fs::Permissions::from_mode(0o1777)).expect("chmod 1777");
    let daemon = TestDaemon::builder().socket_path(dir.join("d.sock")).start();
    drop(daemon);
}

/// U4: a lock file of another uid (root's, left by `sudo -E corrald` of an
/// earlier version; here, since the tests run as root, the attacker's uid)
/// in a directory private to us no longer locks us out: nobody holds it, so
/// it is replaced by our own. One that a live process holds is refused,
/// naming its owner.
#[test]
fn a_lock_file_of_another_uid_in_our_private_directory_is_replaced_unless_held() {
    let scene = Scene::new();
    let socket = scene.private().join("corral.sock");
    let lock = scene.private().join("corral.sock.lock");
    std::fs::write(&lock, "12345\n").expect("write the lock file");
    std::os::unix::fs::chown(&lock, Some(ATTACKER), Some(ATTACKER)).expect("chown the lock file");
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).expect("chmod 644");

    // Held by a live process: refused, naming who owns the file.
    let mut holder = Command::new("python3")
        .arg("-c")
        .arg("import fcntl, sys\nf = open(sys.argv[1])\nfcntl.flock(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\nsys.stdin.read()")
        .arg(&lock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("python3 is needed (`apt-get install python3`): {error}"));
    let mut line = String::new();
    BufReader::new(holder.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the holder's first line");
    assert_eq!(line.trim(), "locked");
    let mut daemon = TestDaemon::builder().socket_path(&socket).spawn();
    let status = daemon.wait_for_exit(WAIT);
    drop(holder.stdin.take());
    let _ = holder.wait();
    assert!(
        status.is_some_and(|status| !status.success()),
        "a held lock of another uid is refused ({status:?}); stderr:\n{}",
        daemon.stderr()
    );
    let expected = format!(
        "lock file {} belongs to uid {ATTACKER} and a process holds it",
        lock.display()
    );
    assert!(daemon.stderr().contains(&expected), "{}", daemon.stderr());

    // Nobody holds it any more: replaced.
    let daemon = TestDaemon::builder().socket_path(&socket).start();
    let metadata = std::fs::symlink_metadata(&lock).expect("the lock file");
    assert_eq!(metadata.uid(), 0, "the lock file is now ours");
    assert_eq!(metadata.mode() & 0o7777, 0o600);
    drop(daemon);
}

/// U4, as it happens: a user's corrald (here uid 65533) finds root's 0644
/// lock file in its private directory. It cannot open it for writing (the
/// path the root-run test above does not take), so it locks it read-only,
/// sees nobody holds it, and replaces it.
#[test]
fn a_users_daemon_replaces_a_lock_file_root_left_in_its_directory() {
    let scene = Scene::new();
    let home = scene.path().join("victim-home");
    std::fs::create_dir(&home).expect("create the victim's home");
    std::os::unix::fs::chown(&home, Some(OTHER_VICTIM), Some(OTHER_VICTIM)).expect("chown");
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).expect("chmod 700");
    let socket = home.join("corral.sock");
    let lock = home.join("corral.sock.lock");
    std::fs::write(&lock, "1\n").expect("root's lock file");
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).expect("chmod 644");

    let stderr_path = scene.path().join("corrald.stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("create the stderr file");
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--reuid={OTHER_VICTIM}"))
        .arg(format!("--regid={OTHER_VICTIM}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(corral_tests::binary("corrald"))
        .arg("--socket")
        .arg(&socket)
        .arg("--config")
        .arg(home.join("config.toml"))
        .env_remove("CORRAL_SOCKET")
        .env_remove("CORRAL_CONFIG")
        .env_remove("XDG_RUNTIME_DIR")
        .env("CORRAL_DATA_DIR", home.join("data"))
        .env("CORRAL_NO_BUILTIN_SERVER", "1")
        .env("HOME", &home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let mut daemon = command.spawn().expect("spawn setpriv corrald");
    let deadline = std::time::Instant::now() + WAIT;
    let served = loop {
        if std::fs::symlink_metadata(&socket).is_ok_and(|metadata| metadata.uid() == OTHER_VICTIM) {
            break true;
        }
        if daemon.try_wait().expect("try_wait").is_some() || std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let lock_owner = std::fs::symlink_metadata(&lock).map(|metadata| metadata.uid());
    let _ = daemon.kill();
    let _ = daemon.wait();
    let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        served,
        "the user's corrald must serve despite root's lock file; its stderr:\n{log}"
    );
    assert_eq!(
        lock_owner.ok(),
        Some(OTHER_VICTIM),
        "the lock file is now the user's:\n{log}"
    );
    assert!(
        log.contains("removed a lock file of another user that no process holds"),
        "says what it did:\n{log}"
    );
}

/// U4: our own directory, group-writable because of a umask of 002, is
/// refused (we did not necessarily create it), and the error says exactly
/// what to run.
#[test]
fn the_daemon_refuses_its_own_group_writable_directory_and_says_what_to_run() {
    let scene = Scene::new();
    let dir = scene.private();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o775)).expect("chmod 775");
    let mut daemon = TestDaemon::builder().socket_path(dir.join("corral.sock")).spawn();
    let status = daemon.wait_for_exit(WAIT);
    assert!(
        status.is_some_and(|status| !status.success()),
        "corrald must refuse ({status:?}); stderr:\n{}",
        daemon.stderr()
    );
    let expected = format!("if you made it, run `chmod 700 {}`", dir.display());
    assert!(daemon.stderr().contains(&expected), "{}", daemon.stderr());
    assert_eq!(mode(&dir), 0o775, "the mode is left for the user to change");
}

// ---------------------------------------------------------------------------
// R4: a record that cannot be written

/// A directory in the way of the record makes every write fail (renaming a
/// file onto a directory is `EISDIR`) as a full disk would, with no mount or
/// quota needed and no dependence on file permissions, which root ignores.
#[tokio::test]
async fn a_record_that_cannot_be_written_is_reported_and_written_once_it_can() {
    let scene = Scene::new();
    let socket = scene.private().join("corral.sock");
    let record = scene.private().join("corral.sock.children");
    std::fs::create_dir(&record).expect("a directory in the record's way");
    std::fs::write(record.join("keep"), "").expect("a file inside it");

    let daemon = TestDaemon::builder()
        .socket_path(&socket)
        .config(&fixture_config("good", &[]))
        .start();
    let client = daemon.connect_client().await;
    let good = wait_for_status(&client, "good", ServerStatus::Ready, SERVER_WAIT).await;
    let leader = good.pid.expect("the server's pid");

    let error = client
        .daemon_status()
        .await
        .expect("daemon/status")
        .children_record_error
        .expect("daemon/status reports the failing record");
    assert!(
        error.contains(&format!("cannot write the children record {}", record.display())),
        "{error}"
    );

    let mut doctor = corral_command();
    doctor
        .arg("doctor")
        .arg("--socket")
        .arg(&socket)
        .env("CORRAL_SERVICE_DIR", scene.path().join("units"))
        .env("HOME", scene.path());
    let text = run_command(&mut doctor, WAIT);
    assert_eq!(text.status.code(), Some(1), "an error makes doctor exit 1: {text:?}");
    let line = format!(
        "error  children-record: cannot write the children record {}",
        record.display()
    );
    assert!(
        text.stdout.lines().any(|got| got.starts_with(&line)),
        "{line:?} in:\n{}",
        text.stdout
    );
    let json = run_command(doctor.arg("--json"), WAIT);
    let report: Value = serde_json::from_str(&json.stdout).expect("doctor --json");
    let check = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|check| check["check"] == "children-record")
        .unwrap_or_else(|| panic!("no children-record check in {report}"));
    assert_eq!(check["level"], "error", "{check}");

    std::fs::remove_dir_all(&record).expect("clear the way");
    poll_until("the record to be written again", || async {
        let status = client.daemon_status().await.expect("daemon/status");
        status.children_record_error.is_none().then_some(())
    })
    .await;
    let metadata = std::fs::symlink_metadata(&record).expect("the record");
    assert!(metadata.is_file() && metadata.mode() & 0o7777 == 0o600, "{metadata:?}");
    let written: Value = serde_json::from_slice(&std::fs::read(&record).expect("read the record")).expect("JSON");
    let pids: Vec<u64> = written["children"]
        .as_array()
        .expect("children")
        .iter()
        .filter_map(|child| child["pid"].as_u64())
        .collect();
    assert_eq!(pids, [u64::from(leader)], "the retried record lists the running server");
    let mut doctor_again = corral_command();
    doctor_again
        .arg("doctor")
        .arg("--socket")
        .arg(&socket)
        .env("HOME", scene.path());
    let after = run_command(&mut doctor_again, WAIT);
    assert!(!after.stdout.contains("children-record"), "{}", after.stdout);
    drop(client);
    drop(daemon);
}
