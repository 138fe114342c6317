//! The `corral` command-line tool against the real daemon.

use std::process::Stdio;

use corral_tests::{
    THREE_DISABLED_SERVERS, TestDaemon, WAIT, corral_command, emit_test_events, run_command, run_corral, within,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::net::UnixStream;

/// Run `corral ARGS --socket <daemon's socket>`; returns (exit code, stdout, stderr).
fn corral(daemon: &TestDaemon, args: &[&str]) -> (i32, String, String) {
    let mut command = corral_command();
    command.args(args).arg("--socket").arg(daemon.socket_path());
    let output = run_command(&mut command, WAIT);
    let code = output.status.code().expect("corral exited by itself, not by a signal");
    (code, output.stdout, output.stderr)
}

#[test]
fn status_shows_the_daemon_socket_config_and_counts() {
    let daemon = TestDaemon::start_with_config(THREE_DISABLED_SERVERS);
    let (code, stdout, stderr) = corral(&daemon, &["status"]);
    assert_eq!(code, 0, "{stderr}");
    for expected in [
        format!("(pid {})", daemon.pid()),
        daemon.socket_path().display().to_string(),
        daemon.config_path().display().to_string(),
        "3 servers: 3 stopped".to_owned(),
    ] {
        assert!(stdout.contains(&expected), "missing {expected:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("config error"), "{stdout}");

    let (code, stdout, stderr) = corral(&daemon, &["status", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let status: Value = serde_json::from_str(&stdout).expect("corral status --json prints JSON");
    assert_eq!(status["daemonInfo"]["pid"], daemon.pid());
    assert_eq!(status["servers"]["total"], 3);
}

#[tokio::test]
async fn status_shows_the_connection_cap_and_refused_connections_only_when_there_are_some() {
    // 256 open files: at most 128 connections (the rest is the fd reserve).
    let daemon = TestDaemon::builder().open_files_limit(256, 256).start();
    let output = run_corral(daemon.socket_path(), &["status"]).await;
    assert!(output.status.success(), "{}", output.stderr);
    assert!(output.stdout.contains("1 (at most 128)"), "{}", output.stdout);
    assert!(
        !output.stdout.contains("refused"),
        "none refused yet:\n{}",
        output.stdout
    );

    // Every slot taken by an initialized front-end: the next is refused.
    let mut open = Vec::new();
    for _ in 0..128 {
        let mut connection = daemon.raw_line_connection().await;
        connection.initialize().await;
        open.push(connection);
    }
    let mut refused = within("connecting past the cap", UnixStream::connect(daemon.socket_path()))
        .await
        .expect("connect");
    let mut byte = [0u8; 1];
    let read = within("the refused connection to close", refused.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the 129th connection was served: {read:?}"
    );

    // One slot freed (and the daemon has seen it go): `corral status` takes it.
    drop(open.pop());
    let observer = &mut open[0];
    for attempt in 0.. {
        let status = observer.call("daemon/status", serde_json::json!({})).await;
        if status["connections"] == 127 {
            break;
        }
        assert!(attempt < 100, "the daemon still counts 128 connections: {status}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let output = run_corral(daemon.socket_path(), &["status"]).await;
    assert!(output.status.success(), "{}", output.stderr);
    assert!(output.stdout.contains("128 (at most 128)"), "{}", output.stdout);
    assert!(
        output.stdout.contains("refused:") && output.stdout.contains("1 connections since start"),
        "{}",
        output.stdout
    );
    let output = run_corral(daemon.socket_path(), &["status", "--json"]).await;
    let status: Value = serde_json::from_str(&output.stdout).expect("corral status --json prints JSON");
    assert_eq!(status["maxConnections"], 128, "{status}");
    assert_eq!(status["refusedConnections"], 1, "{status}");
}

#[test]
fn list_shows_one_row_per_server_in_name_order() {
    let daemon = TestDaemon::start_with_config(THREE_DISABLED_SERVERS);
    let (code, stdout, stderr) = corral(&daemon, &["list"]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three rows:\n{stdout}");
    assert!(lines[0].starts_with("NAME"), "{stdout}");
    let rows: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0][..4], ["alpha-http", "streamableHttp", "config", "stopped"]);
    assert_eq!(rows[1][..4], ["middle-disabled", "stdio", "config", "stopped"]);
    assert_eq!(rows[1].last(), Some(&"disabled"), "{stdout}");
    assert_eq!(rows[2][..4], ["zeta-stdio", "stdio", "config", "stopped"]);
}

#[test]
fn list_json_is_the_protocol_result() {
    let daemon = TestDaemon::start_with_config(THREE_DISABLED_SERVERS);
    let (code, stdout, stderr) = corral(&daemon, &["list", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let list: Value = serde_json::from_str(&stdout).expect("corral list --json prints JSON");
    let servers = list["servers"].as_array().expect("servers array");
    let names: Vec<&str> = servers.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["alpha-http", "middle-disabled", "zeta-stdio"]);
    assert_eq!(servers[0]["transport"], "streamableHttp");
    assert!(servers.iter().all(|s| s["enabled"] == false));
    assert!(
        servers
            .iter()
            .all(|s| s["status"] == "stopped" && s["origin"] == "config")
    );
}

#[test]
fn get_shows_one_server_and_fails_for_an_unknown_one() {
    let daemon = TestDaemon::start_with_config(THREE_DISABLED_SERVERS);
    let (code, stdout, stderr) = corral(&daemon, &["get", "middle-disabled"]);
    assert_eq!(code, 0, "{stderr}");
    let fields: Vec<Vec<&str>> = stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    for expected in [
        ["name:", "middle-disabled"],
        ["status:", "stopped"],
        ["enabled:", "no"],
        ["transport:", "stdio"],
        ["origin:", "config"],
    ] {
        assert!(
            fields.iter().any(|f| f[..] == expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }

    let (code, stdout, stderr) = corral(&daemon, &["get", "nope"]);
    assert_eq!(code, 1, "stdout: {stdout}");
    assert!(stderr.contains("-32001") && stderr.contains("nope"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[tokio::test]
async fn events_json_prints_replayed_and_live_notifications() {
    let daemon = TestDaemon::start();
    let emitter = daemon.connect_client().await;
    assert_eq!(emit_test_events(&emitter, 2, "before").await, 2);

    let mut child = tokio::process::Command::new(corral_tests::binary("corral"))
        .args(["events", "--json", "--since", "0", "--socket"])
        .arg(daemon.socket_path())
        .env_remove("CORRAL_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn corral events");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    let mut next_event = async || -> Value {
        let line = within("a line from `corral events`", lines.next_line())
            .await
            .expect("read corral events output")
            .expect("corral events keeps running");
        serde_json::from_str(&line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"))
    };
    // The two replayed ones prove the command is connected and subscribed.
    for expected in 1..=2u64 {
        let event = next_event().await;
        assert_eq!(event["method"], "mcpServer/startupStatus/updated", "{event}");
        assert_eq!(event["params"]["seq"], expected, "{event}");
        assert_eq!(event["params"]["name"], "before", "{event}");
    }
    assert_eq!(emit_test_events(&emitter, 3, "live").await, 5);
    for expected in 3..=5u64 {
        let event = next_event().await;
        assert_eq!(
            event["params"]["seq"], expected,
            "each live event once, in order: {event}"
        );
        assert_eq!(event["params"]["name"], "live", "{event}");
        assert_eq!(event["params"]["status"], "starting", "{event}");
    }
    child.start_kill().expect("kill corral events");
    within("corral events to exit", child.wait()).await.expect("wait");
}

#[test]
fn without_a_daemon_corral_says_it_is_not_running_and_exits_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("nobody-here.sock");
    let mut command = corral_command();
    command.arg("list").arg("--socket").arg(&socket);
    let output = run_command(&mut command, WAIT);
    assert_eq!(output.status.code(), Some(3), "stderr: {}", output.stderr);
    assert_eq!(output.stdout, "");
    assert_eq!(output.stderr.lines().count(), 1, "one line: {}", output.stderr);
    assert!(output.stderr.contains("not running"), "{}", output.stderr);
    assert!(
        output.stderr.contains(&socket.display().to_string()),
        "{}",
        output.stderr
    );
}

/// `corral call` on a pseudo-terminal, as a person runs it, of server-everything's tool that asks
/// the user for their details: the CLI asks field by field on the terminal, the answers reach the
/// real server through the real daemon, and the server's reply (which repeats them) is printed.
#[test]
fn call_on_a_terminal_answers_server_everythings_question() {
    use std::io::{Read as _, Write as _};
    use std::os::fd::{FromRawFd as _, OwnedFd};

    let daemon = TestDaemon::start_with_config(&corral_tests::everything_config("everything"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = daemon.connect_client().await;
        corral_tests::wait_for_status(
            &client,
            "everything",
            corral_client::protocol::ServerStatus::Ready,
            corral_tests::SERVER_WAIT,
        )
        .await;
    });

    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two new descriptors into the given integers; no buffers are passed.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened by openpty and belong to nobody else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut child = corral_command()
        .args(["call", "everything", "trigger-elicitation-request", "{}", "--socket"])
        .arg(daemon.socket_path())
        .stdin(Stdio::from(slave.try_clone().expect("dup the terminal")))
        .stderr(Stdio::from(slave))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn corral");
    let mut terminal = std::fs::File::from(master);
    let mut reader = terminal.try_clone().expect("dup the master");
    let (screen_tx, screen) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buffer = [0; 4096];
        // Ends when corral is gone (EIO on the master) or the test stopped listening.
        while let Ok(read @ 1..) = reader.read(&mut buffer) {
            if screen_tx.send(buffer[..read].to_vec()).is_err() {
                return;
            }
        }
    });

    // Answer each prompt as it appears: yes to answering, a name where the name is asked, and
    // Enter (the default, or nothing for an optional field) everywhere else. Bounded in prompts
    // and in time.
    let deadline = std::time::Instant::now() + WAIT;
    let mut shown = String::new();
    let mut answered = 0;
    while answered < 40 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(bytes) = screen.recv_timeout(left) else { break };
        shown.push_str(&String::from_utf8_lossy(&bytes));
        // A prompt is the last, unfinished line ending in ": " (the question's own message line ends
        // in ":" and a line break).
        let Some(prompt) = shown.rsplit('\n').next().filter(|line| line.ends_with(": ")) else {
            continue;
        };
        let answer = if prompt.contains("answer?") {
            "y"
        } else if prompt.contains("legal name") {
            "Grace Hopper"
        } else {
            ""
        };
        writeln!(terminal, "{answer}").expect("type into the terminal");
        shown.push('\n');
        answered += 1;
    }
    let exit_deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for corral") {
            break status;
        }
        if std::time::Instant::now() > exit_deadline {
            let _ = child.kill();
            panic!("corral call did not exit; the terminal showed:\n{shown}");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("read stdout");
    assert!(
        shown.contains("everything asks:"),
        "the question was asked on the terminal:\n{shown}"
    );
    assert_eq!(status.code(), Some(0), "terminal:\n{shown}\nstdout:\n{stdout}");
    assert!(stdout.contains("User provided the requested information"), "{stdout}");
    assert!(stdout.contains("- Name: Grace Hopper"), "{stdout}");
}
