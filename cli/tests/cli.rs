//! The `corral` binary as a user runs it: config commands on temp files, the
//! daemon-not-running path, and the daemon commands against a scripted fake
//! daemon on a real Unix socket (answers are the committed protocol examples),
//! and what `corral mcp` sends a daemon (its options in `initialize`) or that
//! it connects to none when its `--config` cannot be used. Tests against the
//! real `corrald` live in the workspace's `tests/` crate.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Run, WAIT, corral_command, path_str, run_bounded};
use serde_json::{Value, json};

/// Run `corral` with `args` (and no inherited `CORRAL_*` variables), killing it after [`WAIT`].
fn corral(args: &[&str], env: &[(&str, &Path)]) -> Run {
    let mut command = corral_command(args);
    for (name, value) in env {
        command.env(name, value);
    }
    run_bounded(command, args)
}

// ---------------------------------------------------------------------------
// corral config

#[test]
fn config_check_accepts_a_valid_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "[servers.fs]\ncommand = \"npx\"\nargs = [\"-y\", \"server-filesystem\"]\n",
    )
    .expect("write");
    let run = corral(&["config", "check", path_str(&path)], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, format!("ok: {} (1 server)\n", path.display()));
}

#[test]
fn config_check_lists_every_problem_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[servers.fs]\ncommand = 3\nbogus = 1\n").expect("write");
    let run = corral(&["config", "check", path_str(&path)], &[]);
    assert_eq!(run.code, 1);
    let problems: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(problems.len(), 2, "{}", run.stderr);
    for problem in problems {
        assert!(problem.starts_with(&format!("{}:", path.display())), "{problem}");
        assert!(problem.contains("server `fs`"), "{problem}");
    }

    let run = corral(&["--json", "config", "check", path_str(&path)], &[]);
    assert_eq!(run.code, 1);
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON report");
    assert_eq!(report["ok"], false);
    assert_eq!(report["problems"].as_array().map(Vec::len), Some(2));
}

#[test]
fn config_check_of_a_missing_file_is_fine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    // The default path comes from $CORRAL_CONFIG.
    let run = corral(&["config", "check"], &[("CORRAL_CONFIG", &path)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        format!("{} does not exist: corrald will run with no servers\n", path.display())
    );
}

#[test]
fn config_check_of_an_unreadable_path_fails_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = corral(&["config", "check", path_str(dir.path())], &[]);
    assert_eq!(run.code, 1);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.starts_with("cannot read config file"), "{}", run.stderr);
}

#[test]
fn config_schema_is_json() {
    let run = corral(&["config", "schema"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let schema: Value = serde_json::from_str(&run.stdout).expect("schema is JSON");
    assert!(schema.is_object());
}

// ---------------------------------------------------------------------------
// Daemon not running

#[test]
fn every_daemon_command_says_the_daemon_is_not_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("corral.sock");
    for args in [
        &["status"][..],
        &["list"],
        &["get", "fs"],
        &["events"],
        &["--json", "list"],
    ] {
        let mut full_args = vec!["--socket", path_str(&socket)];
        full_args.extend_from_slice(args);
        let run = corral(&full_args, &[]);
        assert_eq!(run.code, 3, "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout, "");
        assert_eq!(
            run.stderr,
            format!(
                "corrald is not running at {}: start it with `corrald` or `systemctl --user start corral`\n",
                socket.display()
            )
        );
    }
    // The socket can also come from the environment.
    let run = corral(&["status"], &[("CORRAL_SOCKET", &socket)]);
    assert_eq!(run.code, 3);
    assert!(run.stderr.contains(path_str(&socket)), "{}", run.stderr);
}

// ---------------------------------------------------------------------------
// A scripted fake daemon

fn example(name: &str) -> Value {
    let path = format!("{}/../protocol/examples/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {path}: {error}"));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("parse {path}: {error}"))
}

/// How the fake daemon answers one method.
enum Answer {
    /// The `result` or `error` of this protocol example.
    Example(&'static str),
    /// This example, then these notifications, then hang up.
    ExampleThenPushAndClose(&'static str, Vec<Value>),
}

/// Serve one connection on `socket`: answer each request by method, until the client leaves.
fn fake_daemon(socket: &Path, answers: Vec<(&'static str, Answer)>) -> std::thread::JoinHandle<Vec<String>> {
    let listener = std::os::unix::net::UnixListener::bind(socket).expect("bind fake daemon");
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        let mut writer = stream.try_clone().expect("clone stream");
        let mut methods = Vec::new();
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let request: Value = serde_json::from_str(&line).expect("client sent JSON");
            let method = request["method"].as_str().expect("request has a method").to_owned();
            methods.push(method.clone());
            let answer = if method == "initialize" {
                &Answer::Example("initialize.response")
            } else {
                &answers
                    .iter()
                    .find(|(name, _)| *name == method)
                    .unwrap_or_else(|| panic!("fake daemon has no answer for {method}"))
                    .1
            };
            let (name, then) = match answer {
                Answer::Example(name) => (*name, None),
                Answer::ExampleThenPushAndClose(name, pushes) => (*name, Some(pushes)),
            };
            let mut response = example(name);
            response["id"] = request["id"].clone();
            writeln!(writer, "{response}").expect("write answer");
            if let Some(pushes) = then {
                for push in pushes {
                    writeln!(writer, "{push}").expect("write notification");
                }
                break;
            }
        }
        methods
    })
}

fn status_update(seq: u64, name: &str, status: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "method": "mcpServer/startupStatus/updated",
        "params": {"seq": seq, "name": name, "status": status, "error": null, "failureReason": null},
    })
}

#[test]
fn list_prints_a_table_and_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("corral.sock");
    let daemon = fake_daemon(
        &socket,
        vec![("mcpServer/list", Answer::Example("mcp-server-list.response"))],
    );
    let run = corral(&["--socket", path_str(&socket), "list"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(daemon.join().expect("fake daemon"), ["initialize", "mcpServer/list"]);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", run.stdout);
    assert!(lines[0].starts_with("NAME"), "{}", run.stdout);
    assert!(
        lines[2].starts_with("github") && lines[2].ends_with("disabled"),
        "{}",
        run.stdout
    );

    // A listener's socket file outlives it, so the second daemon gets its own path.
    let socket = dir.path().join("corral-2.sock");
    let daemon = fake_daemon(
        &socket,
        vec![("mcpServer/list", Answer::Example("mcp-server-list.response"))],
    );
    let run = corral(&["--socket", path_str(&socket), "--json", "list"], &[]);
    daemon.join().expect("fake daemon");
    assert_eq!(run.code, 0, "{}", run.stderr);
    let printed: Value = serde_json::from_str(&run.stdout).expect("JSON output");
    assert_eq!(printed, example("mcp-server-list.response")["result"]);
}

#[test]
fn get_of_an_unknown_server_prints_the_daemon_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("corral.sock");
    let daemon = fake_daemon(
        &socket,
        vec![("mcpServer/get", Answer::Example("error.server-not-found"))],
    );
    let run = corral(&["--socket", path_str(&socket), "get", "filesytem"], &[]);
    daemon.join().expect("fake daemon");
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        "`mcpServer/get` failed: no MCP server named `filesytem` (error -32001)\n"
    );
}

#[test]
fn status_prints_the_daemon_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("corral.sock");
    let daemon = fake_daemon(
        &socket,
        vec![("daemon/status", Answer::Example("daemon-status.response"))],
    );
    let run = corral(&["--socket", path_str(&socket), "status"], &[]);
    daemon.join().expect("fake daemon");
    assert_eq!(run.code, 0, "{}", run.stderr);
    for expected in [
        "corrald 0.1.0 (pid 4242)",
        "1h 0m",
        "/run/user/1000/corral/corral.sock",
        "/home/ada/.config/corral/config.toml",
        "3 servers: 1 ready, 1 failed, 1 stopped",
        "http://127.0.0.1:7767/mcp (`corral mcp url` prints the header it needs)",
    ] {
        assert!(run.stdout.contains(expected), "missing {expected:?} in\n{}", run.stdout);
    }
}

#[test]
fn events_since_replays_then_follows_without_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("corral.sock");
    // The replay example holds seq 17 and 18 (lastSeq 18); 18 also arrives live.
    let daemon = fake_daemon(
        &socket,
        vec![(
            "events/replay",
            Answer::ExampleThenPushAndClose(
                "events-replay.response",
                vec![
                    status_update(18, "linear", "failed"),
                    status_update(19, "filesystem", "ready"),
                ],
            ),
        )],
    );
    let run = corral(&["--socket", path_str(&socket), "events", "--since", "16"], &[]);
    daemon.join().expect("fake daemon");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert_eq!(lines[0], "[17] filesystem: starting");
    assert!(lines[1].starts_with("[18] linear: failed (reauthenticationRequired: stored OAuth"));
    assert_eq!(lines[2], "[19] filesystem: ready");
    // The daemon hung up: that ends the command as a failure.
    assert_eq!(run.code, 1);
    assert_eq!(run.stderr, "the connection to corrald closed\n");
}

#[test]
fn events_json_prints_one_object_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("corral.sock");
    let daemon = fake_daemon(
        &socket,
        vec![(
            "events/replay",
            Answer::ExampleThenPushAndClose("events-replay.response", vec![example("events-lagged.notification")]),
        )],
    );
    let run = corral(
        &["--socket", path_str(&socket), "--json", "events", "--since", "16"],
        &[],
    );
    daemon.join().expect("fake daemon");
    let objects: Vec<Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    assert_eq!(objects.len(), 3, "{}", run.stdout);
    assert_eq!(objects[0]["method"], "mcpServer/startupStatus/updated");
    assert_eq!(objects[0]["params"]["seq"], 17);
    assert_eq!(objects[2]["method"], "events/lagged");
    assert_eq!(objects[2]["params"]["missed"], 250);
}

// ---------------------------------------------------------------------------
// corral call on a terminal: a tool's question is asked and answered

/// A fake daemon for one `tools/call` that elicits: it asks `question` during the call, records
/// the initialize params and the answer, then answers the call with a text result.
fn eliciting_daemon(socket: &Path, question: Value) -> std::thread::JoinHandle<(Value, Value)> {
    let listener = std::os::unix::net::UnixListener::bind(socket).expect("bind fake daemon");
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        let mut writer = stream.try_clone().expect("clone stream");
        let mut lines = BufReader::new(stream).lines();
        let mut next = || -> Value {
            let line = lines.next().expect("the CLI sent a message").expect("read");
            serde_json::from_str(&line).expect("the CLI sent JSON")
        };
        let initialize = next();
        let mut response = example("initialize.response");
        response["id"] = initialize["id"].clone();
        writeln!(writer, "{response}").expect("answer initialize");
        let call = next();
        assert_eq!(call["method"], "tools/call", "{call}");
        let params = json!({"server": "everything", "request": question});
        writeln!(
            writer,
            "{}",
            json!({"jsonrpc": "2.0", "id": 900, "method": "mcpServer/elicitation/request", "params": params})
        )
        .expect("ask");
        let answer = next();
        assert_eq!(answer["id"], 900, "{answer}");
        let result = json!({"content": [{"type": "text", "text": "thanks for answering"}]});
        writeln!(
            writer,
            "{}",
            json!({"jsonrpc": "2.0", "id": call["id"], "result": result})
        )
        .expect("result");
        (initialize["params"].clone(), answer)
    })
}

/// `corral` on a pseudo-terminal (stdin and stderr), stdout piped: what a person sees.
struct Terminal {
    child: std::process::Child,
    master: std::fs::File,
    screen: std::sync::mpsc::Receiver<u8>,
    seen: String,
}

impl Terminal {
    fn spawn(args: &[&str]) -> Terminal {
        use std::os::fd::{FromRawFd as _, OwnedFd};
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
        // SAFETY: both descriptors were just opened by openpty and are owned by nobody else.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let child = Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(args)
            .env_remove("CORRAL_SOCKET")
            .stdin(Stdio::from(slave.try_clone().expect("dup the terminal")))
            .stderr(Stdio::from(slave))
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn corral");
        let master = std::fs::File::from(master);
        let mut reader = master.try_clone().expect("dup the master");
        let (bytes, screen) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buffer = [0; 1024];
            // Ends when the child is gone (EIO on the master) or the test dropped the receiver.
            while let Ok(read @ 1..) = reader.read(&mut buffer) {
                if buffer[..read].iter().any(|byte| bytes.send(*byte).is_err()) {
                    return;
                }
            }
        });
        Terminal {
            child,
            master,
            screen,
            seen: String::new(),
        }
    }

    /// Wait until the terminal shows `text` (after what was already matched), failing after WAIT.
    fn expect(&mut self, text: &str) {
        let deadline = Instant::now() + WAIT;
        let start = self.seen.len();
        let mut pending = Vec::new();
        while !self.seen[start..].contains(text) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.screen.recv_timeout(left) {
                Ok(byte) => {
                    pending.push(byte);
                    if let Ok(chunk) = std::str::from_utf8(&pending) {
                        self.seen.push_str(chunk);
                        pending.clear();
                    }
                }
                Err(_) => panic!("the terminal never showed {text:?}; it showed:\n{}", self.seen),
            }
        }
    }

    /// Type a line.
    fn type_line(&mut self, line: &str) {
        writeln!(self.master, "{line}").expect("type into the terminal");
    }

    /// Wait for the exit (bounded) and return the code and stdout.
    fn finish(mut self) -> (i32, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("corral did not exit; the terminal showed:\n{}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .expect("stdout piped")
            .read_to_string(&mut stdout)
            .expect("read stdout");
        (status.code().expect("exited normally"), stdout)
    }
}

#[test]
fn call_on_a_terminal_asks_the_servers_question_field_by_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("corral.sock");
    let question = json!({
        "mode": "form",
        "message": "Please provide inputs",
        "requestedSchema": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "title": "Name"},
                "integer": {"type": "integer", "title": "Favorite integer"},
                "check": {"type": "boolean", "title": "Agree"},
                "color": {"type": "string", "oneOf": [{"const": "red", "title": "Red"}, {"const": "blue", "title": "Blue"}]},
                "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}},
                "note": {"type": "string", "default": "none"},
            },
            "required": ["name"],
        },
    });
    let daemon = eliciting_daemon(&socket, question);
    let mut terminal = Terminal::spawn(&["--socket", path_str(&socket), "call", "everything", "ask", "{}"]);
    terminal.expect("everything asks: Please provide inputs");
    terminal.expect("answer? [Y]es, [n]o (decline), [c]ancel: ");
    terminal.type_line("");
    // Fields in the schema's key order (alphabetical as JSON objects are read here).
    terminal.expect("Agree [y/n] (optional): ");
    terminal.type_line("yes");
    terminal.expect("color [1) Red, 2) Blue] (optional): ");
    terminal.type_line("2");
    terminal.expect("Favorite integer (optional): ");
    terminal.type_line("forty-two");
    terminal.expect("a whole number, please");
    terminal.expect("Favorite integer (optional): ");
    terminal.type_line("42");
    terminal.expect("Name: ");
    terminal.type_line("");
    terminal.expect("required");
    terminal.expect("Name: ");
    terminal.type_line("Ada");
    terminal.expect("note (default \"none\"): ");
    terminal.type_line("");
    terminal.expect("tags [1) a, 2) b, 3) c] (numbers or values, comma-separated) (optional): ");
    terminal.type_line("a, 3");
    let (code, stdout) = terminal.finish();
    let (initialize, answer) = daemon.join().expect("fake daemon");
    assert_eq!(initialize["capabilities"]["elicitation"], true, "{initialize}");
    assert_eq!(
        answer["result"],
        json!({"action": "accept", "content": {
            "check": true, "color": "blue", "integer": 42, "name": "Ada", "note": "none", "tags": ["a", "c"],
        }})
    );
    assert_eq!(code, 0);
    assert!(
        stdout.contains("thanks for answering"),
        "the result goes to stdout: {stdout}"
    );
}

#[test]
fn call_on_a_terminal_can_decline_and_without_one_asks_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("corral.sock");
    let question = json!({"mode": "url", "message": "Sign in", "url": "https://example.com/authorize"});
    let daemon = eliciting_daemon(&socket, question);
    let mut terminal = Terminal::spawn(&["--socket", path_str(&socket), "call", "everything", "ask", "{}"]);
    terminal.expect("open this URL: https://example.com/authorize");
    terminal.type_line("n");
    let (code, _) = terminal.finish();
    assert_eq!(code, 0);
    let (_, answer) = daemon.join().expect("fake daemon");
    assert_eq!(answer["result"], json!({"action": "decline"}));

    // Not a terminal (a script): nothing is declared, so corrald declines for it.
    let socket = dir.path().join("second.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let recorder = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        let line = BufReader::new(stream)
            .lines()
            .next()
            .expect("initialize")
            .expect("read");
        serde_json::from_str::<Value>(&line).expect("JSON")
    });
    let _ = corral(&["--socket", path_str(&socket), "call", "everything", "ask", "{}"], &[]);
    let initialize = recorder.join().expect("recorder");
    assert_ne!(
        initialize["params"]["capabilities"]["elicitation"], true,
        "{initialize}"
    );
}

// ---------------------------------------------------------------------------
// corral mcp: what the daemon receives

/// `corral mcp ARGS` on `socket`, stdin and stdout piped (stderr too).
fn corral_mcp(socket: &Path, args: &[&str]) -> std::process::Child {
    let mut full = vec!["--socket", path_str(socket), "mcp"];
    full.extend_from_slice(args);
    let mut command = corral_command(&full);
    command.stdin(Stdio::piped());
    command.spawn().expect("spawn corral mcp")
}

/// The lines `child` writes on stdout, read on a thread.
fn stdout_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

/// Wait (bounded) for `child` to exit.
fn wait_bounded(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("corral mcp did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn corral_mcp_puts_its_options_into_the_initialize_the_daemon_receives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("corral.sock");
    let config = dir.path().join("project.toml");
    std::fs::write(
        &config,
        "[servers.local]\ncommand = \"python3\"\nargs = [\"server.py\"]\nenv = { MODE = \"dev\" }\n",
    )
    .expect("write");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    // The daemon's side: every line as received; `initialize` answered.
    let recorder = std::thread::spawn(move || {
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + WAIT;
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(error) => panic!("corral mcp did not connect: {error}"),
            }
        };
        stream.set_nonblocking(false).expect("blocking");
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        let mut writer = stream.try_clone().expect("clone");
        let mut received = Vec::new();
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let message: Value = serde_json::from_str(&line).expect("JSON");
            if message["method"] == "initialize" {
                let answer = json!({"jsonrpc": "2.0", "id": message["id"], "result": {
                    "protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {"name": "corral", "version": "0"}}});
                writeln!(writer, "{answer}").expect("answer");
            }
            received.push(line);
        }
        received
    });
    let mut bridge = corral_mcp(
        &socket,
        &[
            "--servers",
            "a,b",
            "--exclude",
            "c",
            "--separator",
            ".",
            "--no-builtin",
            "--config",
            path_str(&config),
        ],
    );
    let mut stdin = bridge.stdin.take().expect("stdin");
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"},
        "_meta": {"client/own": 1, "corral/bridge": {"servers": ["z"]}}}});
    writeln!(stdin, "{initialize}").expect("write initialize");
    let stdout = stdout_lines(&mut bridge);
    let answer = stdout.recv_timeout(WAIT).expect("the answer to initialize");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).expect("JSON")["id"],
        1,
        "{answer}"
    );
    // The next line goes byte for byte.
    let ping = "{\"jsonrpc\":\"2.0\", \"method\":\"notifications/initialized\" }";
    writeln!(stdin, "{ping}").expect("write");
    drop(stdin);
    let received = recorder.join().expect("recorder");
    let status = wait_bounded(&mut bridge);
    assert!(status.success(), "{status}");

    assert_eq!(received.len(), 2, "{received:?}");
    let sent: Value = serde_json::from_str(&received[0]).expect("JSON");
    let mut expected = initialize.clone();
    expected["params"]["_meta"] = json!({"client/own": 1, "corral/bridge": {
        "servers": ["a", "b"], "exclude": ["c"], "separator": ".", "builtin": false,
        "sessionServers": {"local": {"command": "python3", "args": ["server.py"], "env": {"MODE": "dev"}}},
    }});
    assert_eq!(
        sent, expected,
        "the client's own _meta kept, its corral/bridge replaced"
    );
    assert_eq!(received[1], ping);
}

#[test]
fn corral_mcp_with_an_unusable_config_exits_2_before_connecting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("corral.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let config = dir.path().join(".mcp.json");
    std::fs::write(
        &config,
        "{\"mcpServers\": {\n  \"x\": {\"command\": \"a\"}\n  \"y\": {}\n}}\n",
    )
    .expect("write");
    let run = corral(
        &["--socket", path_str(&socket), "mcp", "--config", path_str(&config)],
        &[],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.stdout, "", "nothing for the client");
    assert!(
        run.stderr.starts_with(&format!("corral mcp: {}:3:", config.display())),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("nothing was started"), "{}", run.stderr);
    listener.set_nonblocking(true).expect("nonblocking");
    assert_eq!(
        listener.accept().map(|_| ()).map_err(|error| error.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "no connection was made"
    );

    let run = corral(&["--socket", path_str(&socket), "mcp", "--separator", "::"], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("1 to 8 characters"), "{}", run.stderr);
}
