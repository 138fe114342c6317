//! corrald under a service manager: the `sd_notify` messages it sends and
//! their order (a datagram socket owned by the test stands in for systemd),
//! the watchdog withheld while the supervisor is wedged, socket activation
//! under `systemd-socket-activate`, the unit files checked by
//! `systemd-analyze verify`, the LaunchAgent parsed by Python's `plistlib`,
//! and `corral service install|uninstall|status`.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_client::protocol::ServerStatus;
use corral_tests::{
    SERVER_WAIT, TestDaemon, WAIT, binary, corral_command, fixture_config, run_command, scratch_dir, send_signal,
    wait_for_status, workspace_root,
};
use serde_json::{Value, json};

/// A stand-in for systemd's notification socket: the test owns it, and a
/// thread reads what corrald sends (one datagram per `sd_notify` call) as
/// promptly as systemd would, into a queue the test consumes in order.
struct FakeManager {
    socket: UnixDatagram,
    path: PathBuf,
    messages: std::sync::mpsc::Receiver<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Every message consumed so far, in order.
    received: Vec<String>,
}

impl FakeManager {
    fn bind(dir: &Path) -> FakeManager {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        let reading = socket.try_clone().expect("clone the notify socket");
        reading
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set a read timeout");
        let (sender, messages) = std::sync::mpsc::channel();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let reader = std::thread::spawn(move || {
            let mut buffer = vec![0u8; 4096];
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(length) = reading.recv(&mut buffer)
                    && sender
                        .send(String::from_utf8_lossy(&buffer[..length]).into_owned())
                        .is_err()
                {
                    return;
                }
            }
        });
        FakeManager {
            socket,
            path,
            messages,
            stop,
            reader: Some(reader),
            received: Vec::new(),
        }
    }

    /// The next message, waiting at most `limit`.
    fn try_next(&mut self, limit: Duration) -> Option<String> {
        let message = self.messages.recv_timeout(limit).ok()?;
        self.received.push(message.clone());
        Some(message)
    }

    /// The next message, failing the test after [`WAIT`].
    fn next(&mut self) -> String {
        self.try_next(WAIT).unwrap_or_else(|| {
            panic!(
                "corrald sent nothing to NOTIFY_SOCKET within {WAIT:?}; received so far: {:?}",
                self.received
            )
        })
    }

    /// Read messages until one satisfies `done` (bounded by [`WAIT`] in all); returns those read, that one last.
    fn until(&mut self, what: &str, mut done: impl FnMut(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut read = Vec::new();
        while Instant::now() < deadline {
            let Some(message) = self.try_next(deadline.saturating_duration_since(Instant::now())) else {
                break;
            };
            read.push(message.clone());
            if done(&message) {
                return read;
            }
        }
        panic!("no {what} from corrald within {WAIT:?}; received: {:?}", self.received);
    }

    /// Once the sender has exited: every message it sent, up to the last.
    fn drain_after_exit(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the reader thread");
        }
        while let Ok(message) = self.messages.try_recv() {
            self.received.push(message);
        }
        // What the reader had not picked up yet is still in the socket.
        self.socket.set_nonblocking(true).expect("non-blocking");
        let mut buffer = vec![0u8; 4096];
        while let Ok(length) = self.socket.recv(&mut buffer) {
            self.received
                .push(String::from_utf8_lossy(&buffer[..length]).into_owned());
        }
    }
}

impl Drop for FakeManager {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn is_watchdog(message: &str) -> bool {
    message == "WATCHDOG=1\n"
}

/// The `STATUS=` value of a message, if it has one.
fn status_of(message: &str) -> Option<&str> {
    message.lines().find_map(|line| line.strip_prefix("STATUS="))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_after_the_socket_accepts_then_status_watchdog_and_stopping_in_order() {
    let scratch = scratch_dir();
    let mut manager = FakeManager::bind(scratch.path());
    let mut daemon = TestDaemon::builder()
        .config(&fixture_config("fixture", &[]))
        .env("NOTIFY_SOCKET", &manager.path)
        .env("WATCHDOG_USEC", "200000")
        .spawn();

    // The very first message is READY=1, with a status line, and by then the
    // socket already accepts: a front-end started on READY never waits.
    let ready = manager.next();
    assert!(
        ready.starts_with("READY=1\n"),
        "first message must be READY=1: {ready:?}"
    );
    let first_status = status_of(&ready).expect("READY=1 comes with STATUS=");
    assert!(
        first_status.starts_with("1 server: "),
        "status counts the config server: {first_status:?}"
    );
    std::os::unix::net::UnixStream::connect(daemon.socket_path())
        .expect("the socket accepts connections once READY=1 is sent");

    // The status line follows the server to `ready`; watchdog pings come meanwhile.
    let client = daemon.connect_client().await;
    wait_for_status(&client, "fixture", ServerStatus::Ready, SERVER_WAIT).await;
    if first_status != "1 server: 1 ready" {
        manager.until("STATUS=1 server: 1 ready", |message| {
            status_of(message) == Some("1 server: 1 ready")
        });
    }
    let mut pings = 0;
    manager.until("two watchdog pings", |message| {
        pings += usize::from(is_watchdog(message));
        pings >= 2
    });

    // Stopping: STOPPING=1 comes, and is the last thing corrald says.
    drop(client);
    let status = daemon.sigterm_and_wait();
    assert!(status.success(), "corrald exits 0 on SIGTERM: {status}");
    manager.drain_after_exit();
    let stopping_at = manager
        .received
        .iter()
        .position(|message| message.starts_with("STOPPING=1\n"))
        .unwrap_or_else(|| panic!("no STOPPING=1 before exit; received: {:?}", manager.received));
    assert_eq!(
        stopping_at,
        manager.received.len() - 1,
        "nothing after STOPPING=1: {:?}",
        manager.received
    );
    assert_eq!(
        manager
            .received
            .iter()
            .filter(|message| message.starts_with("READY=1"))
            .count(),
        1,
        "READY=1 once (no reload happened): {:?}",
        manager.received
    );
    // Every message is one the protocol knows.
    for message in &manager.received {
        for line in message.lines() {
            let key = line.split('=').next().unwrap_or_default();
            assert!(
                ["READY", "STATUS", "WATCHDOG", "STOPPING", "RELOADING", "MONOTONIC_USEC"].contains(&key),
                "unexpected sd_notify line {line:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_is_announced_as_reloading_then_ready() {
    let scratch = scratch_dir();
    let mut manager = FakeManager::bind(scratch.path());
    let daemon = TestDaemon::builder().env("NOTIFY_SOCKET", &manager.path).start();
    let ready = manager.next();
    assert_eq!(ready, "READY=1\nSTATUS=0 servers\n");
    send_signal(daemon.pid(), libc::SIGHUP);
    let reloading = manager.next();
    let mut lines = reloading.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"), "{reloading:?}");
    assert!(
        lines.next().is_some_and(|line| line.starts_with("MONOTONIC_USEC=")),
        "RELOADING=1 carries MONOTONIC_USEC (systemd 253+ requires it): {reloading:?}"
    );
    assert_eq!(manager.next(), "READY=1\nSTATUS=0 servers\n");

    // An invalid file is not applied (no RELOADING=1), and the status line says so.
    std::fs::write(daemon.config_path(), "[servers.x]\ncommand = 5\n").expect("break the config");
    send_signal(daemon.pid(), libc::SIGHUP);
    assert_eq!(
        manager.next(),
        "STATUS=0 servers; config file invalid, see `corral doctor`\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_supervisor_stops_the_watchdog_pings_until_it_answers_again() {
    let scratch = scratch_dir();
    let mut manager = FakeManager::bind(scratch.path());
    let daemon = TestDaemon::builder()
        .env("NOTIFY_SOCKET", &manager.path)
        .env("WATCHDOG_USEC", "200000")
        .start();
    let mut pings = 0;
    manager.until("two watchdog pings", |message| {
        pings += usize::from(is_watchdog(message));
        pings >= 2
    });

    let mut connection = daemon.raw_line_connection().await;
    connection.initialize().await;
    assert_eq!(connection.call("debug/wedgeSupervisor", json!({})).await, json!({}));

    // Once a check is missed, no ping may follow until the supervisor
    // answers again: three missed checks in a row, not one ping among them.
    manager.until("a missed watchdog check", |message| {
        status_of(message).is_some_and(|status| status.contains("has not answered 1 watchdog check"))
    });
    let while_wedged = manager.until("three missed watchdog checks", |message| {
        status_of(message).is_some_and(|status| status.contains("has not answered 3 watchdog check"))
    });
    assert!(
        !while_wedged.iter().any(|message| is_watchdog(message)),
        "a ping was sent while the supervisor did not answer: {while_wedged:?}"
    );
    assert_eq!(
        status_of(&while_wedged[while_wedged.len() - 1]),
        Some("the supervisor has not answered 3 watchdog check(s) in a row; watchdog pings withheld")
    );

    let released = connection.call("debug/releaseSupervisor", json!({})).await;
    assert_eq!(released, json!({ "released": true }));
    let resumed = manager.until("watchdog pings again", is_watchdog);
    assert!(
        resumed.iter().any(|message| status_of(message) == Some("0 servers")),
        "the status line is the server summary again before pings resume: {resumed:?}"
    );
}

/// A program of Debian's systemd package, found on PATH, or a failure naming how to install it.
fn systemd_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not on PATH: install Debian's systemd package \
                 (`apt-get install -y --no-install-recommends systemd`; `bash tests/run.sh` does it when run as root)"
            )
        })
}

fn socket_activate_program() -> PathBuf {
    systemd_tool("systemd-socket-activate")
}

/// Wait for a child, bounded.
trait WaitBounded {
    fn wait_timeout_bounded(&mut self, limit: Duration) -> Option<std::process::ExitStatus>;
}

impl WaitBounded for Child {
    fn wait_timeout_bounded(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait().expect("wait for the child") {
                return Some(status);
            }
            std::thread::sleep(corral_tests::POLL_INTERVAL);
        }
        None
    }
}

/// A child process killed (and reaped) when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activation_serves_the_inherited_socket_and_keeps_it_on_exit() {
    let scratch = scratch_dir();
    let socket = scratch.path().join("activated.sock");
    let config = scratch.path().join("config.toml");
    let stderr = std::fs::File::create(scratch.path().join("corrald.stderr")).expect("stderr file");
    // The service manager (here its test tool) binds and listens; corrald is
    // exec'd in the same process on the first connection, with LISTEN_FDS=1.
    let activator = Command::new(socket_activate_program())
        .arg("-l")
        .arg(&socket)
        .arg(binary("corrald"))
        .arg("--socket")
        .arg(&socket)
        .arg("--config")
        .arg(&config)
        .arg("--no-builtin-server")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("CORRAL_SOCKET")
        .env_remove("CORRAL_CONFIG")
        .env("CORRAL_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("run systemd-socket-activate");
    let mut activator = KillOnDrop(activator);
    let daemon_pid = activator.0.id();
    corral_tests::poll_until("the activation socket", || async { socket.exists().then_some(()) }).await;
    let socket_inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&socket).expect("socket metadata"));

    // The first connection is accepted by the manager's socket and served by corrald.
    let options = corral_client::ConnectOptions::new("corral-tests", env!("CARGO_PKG_VERSION"))
        .with_socket_path(&socket)
        .with_connect_timeout(WAIT);
    let client = corral_client::Client::connect(options).await.unwrap_or_else(|error| {
        panic!(
            "connect through the activated socket: {error}; corrald's stderr:\n{}",
            std::fs::read_to_string(scratch.path().join("corrald.stderr")).unwrap_or_default()
        )
    });
    let status = client.daemon_status().await.expect("daemon/status");
    assert_eq!(
        status.daemon_info.pid, daemon_pid,
        "corrald runs in the activated process"
    );
    assert_eq!(status.socket_path, socket.display().to_string());
    let log = std::fs::read_to_string(scratch.path().join("corrald.stderr")).unwrap_or_default();
    assert!(
        log.contains("serving the socket passed by the service manager"),
        "corrald says it adopted the socket: {log}"
    );

    // The lock still makes corrald exclusive: one started by hand on the same path is refused.
    let mut second = Command::new(binary("corrald"));
    second
        .arg("--socket")
        .arg(&socket)
        .arg("--config")
        .arg(&config)
        .arg("--no-builtin-server")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID");
    let refused = run_command(&mut second, WAIT);
    assert!(!refused.status.success(), "a second corrald must not start");
    assert!(
        refused
            .stderr
            .contains(&format!("another corrald (pid {daemon_pid}) is already serving")),
        "the refusal names the activated daemon: {}",
        refused.stderr
    );

    // On SIGTERM corrald exits cleanly but leaves the socket to its owner, the manager.
    drop(client);
    send_signal(daemon_pid, libc::SIGTERM);
    let exit = activator
        .0
        .wait_timeout_bounded(WAIT)
        .unwrap_or_else(|| panic!("corrald did not exit within {WAIT:?} of SIGTERM"));
    assert!(exit.success(), "corrald exits 0: {exit}");
    let after = std::fs::metadata(&socket).expect("the manager's socket is still there");
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&after),
        socket_inode,
        "the same socket file, never replaced"
    );
    let mut lock = socket.as_os_str().to_owned();
    lock.push(".lock");
    // Never unlinked, so no two daemons can each lock a different file (lifecycle.rs).
    assert!(Path::new(&lock).exists(), "the lock file stays after exit");
}

#[tokio::test]
async fn an_inherited_socket_that_is_not_listening_is_refused_with_the_fix() {
    // LISTEN_FDS=1 pointing at a file, not a socket: corrald must say what is wrong, not serve garbage.
    let scratch = scratch_dir();
    let file = std::fs::File::create(scratch.path().join("not-a-socket")).expect("a file");
    let mut command = Command::new("sh");
    // fd 3 is the file; LISTEN_PID must be corrald's own pid, which `exec` keeps.
    command
        .arg("-c")
        .arg("export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$0\" --socket \"$1\" --config \"$2\" 3<&0")
        .arg(binary("corrald"))
        .arg(scratch.path().join("x.sock"))
        .arg(scratch.path().join("config.toml"))
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::from(file));
    let output = run_command(&mut command, WAIT);
    assert!(!output.status.success(), "corrald must refuse the fd");
    assert!(
        output
            .stderr
            .contains("the socket passed by the service manager (LISTEN_FDS) is not a listening stream socket"),
        "{}",
        output.stderr
    );
}

// ---------------------------------------------------------------------------
// Service files

fn systemd_analyze() -> PathBuf {
    systemd_tool("systemd-analyze")
}

/// `systemd-analyze --user verify FILES` in a private home and runtime dir; its output.
fn verify_units(home: &Path, units: &[PathBuf]) -> corral_tests::CommandOutput {
    let runtime = home.join("run");
    std::fs::create_dir_all(&runtime).expect("runtime dir");
    let mut command = Command::new(systemd_analyze());
    command
        .arg("--user")
        .arg("verify")
        .args(units)
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", &runtime)
        .env_remove("XDG_CONFIG_HOME");
    run_command(&mut command, WAIT)
}

fn service_command(args: &[&str], env: &[(&str, &Path)]) -> corral_tests::CommandOutput {
    let mut command = corral_command();
    command.arg("service").args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    run_command(&mut command, WAIT)
}

fn assert_success(output: &corral_tests::CommandOutput, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        output.stdout,
        output.stderr
    );
}

#[test]
fn installed_units_pass_systemd_analyze_verify_and_say_what_the_issue_asks() {
    let scratch = scratch_dir();
    let units = scratch.path().join("units");
    let corrald = std::fs::canonicalize(binary("corrald")).expect("corrald");
    let install = service_command(
        &[
            "install",
            "--manager",
            "systemd",
            "--corrald",
            corrald.to_str().expect("utf-8"),
        ],
        &[("CORRAL_SERVICE_DIR", &units), ("HOME", scratch.path())],
    );
    assert_success(&install, "corral service install");
    let service = units.join("corral.service");
    let socket = units.join("corral.socket");
    assert!(
        install.stdout.contains(&format!("wrote {}", service.display())),
        "{}",
        install.stdout
    );
    assert!(
        install.stdout.contains(&format!("wrote {}", socket.display())),
        "{}",
        install.stdout
    );
    assert!(
        install.stdout.contains("systemctl --user enable --now corral.service"),
        "{}",
        install.stdout
    );

    // A verify that finds nothing prints nothing; warnings (unknown keys, bad values) would show here.
    let verified = verify_units(scratch.path(), &[service.clone(), socket.clone()]);
    assert_success(&verified, "systemd-analyze --user verify");
    assert_eq!(verified.stdout.trim(), "", "verify output: {}", verified.stdout);
    assert_eq!(verified.stderr.trim(), "", "verify output: {}", verified.stderr);

    let text = std::fs::read_to_string(&service).expect("read the unit");
    let directives: Vec<&str> = text.lines().filter(|line| !line.starts_with('#')).collect();
    for expected in [
        "Type=notify",
        "Restart=on-failure",
        "WatchdogSec=30",
        "KillMode=mixed",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
    ] {
        assert!(directives.contains(&expected), "{expected} missing from:\n{text}");
    }
    assert!(
        directives.contains(&format!("ExecStart=\"{}\"", corrald.display()).as_str()),
        "ExecStart runs the real corrald:\n{text}"
    );
    for breaking in [
        "ProtectHome=",
        "PrivateNetwork=",
        "MemoryDenyWriteExecute=",
        "ProtectSystem=",
    ] {
        assert!(
            !directives.iter().any(|line| line.starts_with(breaking)),
            "{breaking} would break servers run from $HOME:\n{text}"
        );
    }

    // The socket unit listens where corrald and corral look by default.
    let socket_text = std::fs::read_to_string(&socket).expect("read the socket unit");
    let listen = socket_text
        .lines()
        .find_map(|line| line.strip_prefix("ListenStream="))
        .expect("ListenStream=");
    let runtime = scratch.path().join("rt");
    let mut doctor = corral_command();
    doctor.arg("status").env("XDG_RUNTIME_DIR", &runtime);
    let not_running = run_command(&mut doctor, WAIT);
    let expected = listen.replace("%t", &runtime.display().to_string());
    assert!(
        not_running.stderr.contains(&format!("not running at {expected}")),
        "corral's default socket is the unit's {expected}: {}",
        not_running.stderr
    );
}

#[test]
fn committed_unit_templates_verify_and_a_broken_unit_does_not() {
    let scratch = scratch_dir();
    // The templates run %h/.cargo/bin/corrald (where `cargo install` puts it).
    let bin = scratch.path().join(".cargo").join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    std::os::unix::fs::symlink(binary("corrald"), bin.join("corrald")).expect("link corrald");
    let root = workspace_root().join("systemd");
    let verified = verify_units(
        scratch.path(),
        &[root.join("corral.service"), root.join("corral.socket")],
    );
    assert_success(&verified, "systemd-analyze --user verify of the committed units");
    assert_eq!(
        format!("{}{}", verified.stdout, verified.stderr).trim(),
        "",
        "the committed units verify without a word"
    );

    // The check can fail: a typo in a key is reported.
    let broken = scratch.path().join("corral.service");
    let text = std::fs::read_to_string(root.join("corral.service")).expect("template");
    std::fs::write(&broken, text.replace("WatchdogSec=", "WatchdogSecs=")).expect("write");
    let verified = verify_units(scratch.path(), &[broken]);
    assert!(
        verified.stderr.contains("Unknown key 'WatchdogSecs'"),
        "verify catches a typo: {}",
        verified.stderr
    );
}

#[test]
fn launch_agent_plist_parses_with_plistlib_and_has_the_keys_launchd_needs() {
    let scratch = scratch_dir();
    let agents = scratch.path().join("LaunchAgents");
    let home = scratch.path().join("home");
    let corrald = std::fs::canonicalize(binary("corrald")).expect("corrald");
    // A PATH like a developer's shell: a directory with npx first (as nvm
    // arranges), and a relative entry that must be dropped.
    let node_dir = scratch.path().join("nvm").join("bin");
    std::fs::create_dir_all(&node_dir).expect("node dir");
    let npx = node_dir.join("npx");
    std::fs::write(&npx, "#!/bin/sh\n").expect("write npx");
    std::fs::set_permissions(&npx, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod npx");
    let path = format!("{}:relative/bin:/usr/bin:/bin", node_dir.display());
    let mut command = corral_command();
    command
        .args(["service", "install", "--manager", "launchd", "--dir"])
        .arg(&agents)
        .arg("--corrald")
        .arg(&corrald)
        .env("HOME", &home)
        .env("PATH", &path);
    let install = run_command(&mut command, WAIT);
    assert_success(&install, "corral service install --manager launchd");
    let plist = agents.join("dev.corral.corrald.plist");
    assert!(
        install.stdout.contains("launchctl bootstrap gui/$(id -u)"),
        "{}",
        install.stdout
    );

    let mut python = Command::new("python3");
    python.args([
        "-c",
        "import json, plistlib, sys; print(json.dumps(plistlib.load(open(sys.argv[1], 'rb'))))",
    ]);
    python.arg(&plist);
    let parsed = run_command(&mut python, WAIT);
    assert_success(&parsed, "plistlib.load");
    let agent: Value = serde_json::from_str(parsed.stdout.trim()).expect("plistlib output is JSON");
    let log = format!("{}/Library/Logs/corrald.log", home.display());
    assert_eq!(
        agent,
        json!({
            "Label": "dev.corral.corrald",
            "ProgramArguments": [corrald.display().to_string()],
            "RunAtLoad": true,
            "KeepAlive": { "SuccessfulExit": false },
            "ThrottleInterval": 10,
            "ExitTimeOut": 15,
            "StandardOutPath": log,
            "StandardErrorPath": log,
            "EnvironmentVariables": { "PATH": format!("{}:/usr/bin:/bin", node_dir.display()) },
        })
    );
    // The committed template parses too (placeholders and all).
    let mut python = Command::new("python3");
    python
        .args(["-c", "import plistlib, sys; plistlib.load(open(sys.argv[1], 'rb'))"])
        .arg(workspace_root().join("launchd").join("dev.corral.corrald.plist"));
    assert_success(&run_command(&mut python, WAIT), "plistlib.load of the template");
}

#[test]
fn service_install_status_uninstall_round_trip() {
    let scratch = scratch_dir();
    let units = scratch.path().join("units");
    let corrald = std::fs::canonicalize(binary("corrald")).expect("corrald");
    let env = [("CORRAL_SERVICE_DIR", units.as_path()), ("HOME", scratch.path())];

    let before = service_command(&["status", "--manager", "systemd"], &env);
    assert_success(&before, "corral service status");
    assert!(
        before.stdout.starts_with(&format!(
            "{}: not installed\n{}: not installed\n",
            units.join("corral.service").display(),
            units.join("corral.socket").display()
        )),
        "{}",
        before.stdout
    );

    let install = service_command(
        &[
            "install",
            "--manager",
            "systemd",
            "--corrald",
            corrald.to_str().expect("utf-8"),
        ],
        &env,
    );
    assert_success(&install, "corral service install");
    let after = service_command(&["status", "--manager", "systemd", "--json"], &env);
    assert_success(&after, "corral service status --json");
    let status: Value = serde_json::from_str(&after.stdout).expect("JSON status");
    assert_eq!(status["files"][0]["installed"], json!(true), "{status}");
    assert_eq!(
        status["files"][0]["corrald"],
        json!(corrald.display().to_string()),
        "{status}"
    );
    assert_eq!(status["files"][0]["corraldExists"], json!(true), "{status}");
    assert_eq!(status["files"][1]["installed"], json!(true), "{status}");

    let uninstall = service_command(&["uninstall", "--manager", "systemd"], &env);
    assert_success(&uninstall, "corral service uninstall");
    assert!(
        uninstall
            .stdout
            .contains(&format!("removed {}", units.join("corral.service").display())),
        "{}",
        uninstall.stdout
    );
    assert!(!units.join("corral.service").exists() && !units.join("corral.socket").exists());
}
