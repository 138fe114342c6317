//! One front-end can only hurt itself: the daemon's limits against a
//! connection (or many) that holds memory, slots or file descriptors, each
//! attack played against the real daemon over its socket, with memory read
//! from `/proc/<pid>/status` and a real server (the Python fixture) that must
//! keep being supervised.

use std::time::{Duration, Instant};

use corral_protocol::ServerStatus;
use corral_tests::{
    POLL_INTERVAL, RawConnection, RecvError, SERVER_WAIT, TestDaemon, WAIT, error_code, error_message, fixture_config,
    run_corral, wait_for_status, within_for,
};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use tokio::net::UnixStream;

const MIB: u64 = 1024;

/// `count` raw connections, each connected within a second; stops early (and
/// says how many) when the daemon no longer accepts.
async fn open_idle_connections(daemon: &TestDaemon, count: usize) -> Vec<UnixStream> {
    let mut connections = Vec::with_capacity(count);
    for _ in 0..count {
        match tokio::time::timeout(Duration::from_secs(1), UnixStream::connect(daemon.socket_path())).await {
            Ok(Ok(stream)) => connections.push(stream),
            _ => break,
        }
    }
    connections
}

/// Whether the daemon has closed `stream` (end of stream or reset) within `limit`.
async fn closed_by_daemon(stream: &mut UnixStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn unfinished_messages_are_bounded_in_bytes_and_time() {
    // 48 front-ends at once each start a 3 MiB message and never end it
    // (144 MiB). All of them together may hold 32 MiB here (256 MiB by
    // default): the others are not read meanwhile. Each is closed at the
    // frame deadline (1 s here), whether its bytes were read or not.
    const CONNECTIONS: usize = 48;
    const PARTIAL_BYTES: usize = 3 * 1024 * 1024;
    let daemon = TestDaemon::builder()
        .env("CORRAL_FRAME_TIMEOUT_MS", "1000")
        .env("CORRAL_PARTIAL_FRAME_BYTES", (32 * 1024 * 1024).to_string())
        .start();
    let baseline = daemon.peak_rss_kib();
    let mut partial = br#"{"jsonrpc":"2.0","id":1,"method":"daemon/status","params":{"pad":""#.to_vec();
    partial.resize(PARTIAL_BYTES, b'x');
    let partial = std::sync::Arc::new(partial);
    let mut attackers = tokio::task::JoinSet::new();
    for index in 0..CONNECTIONS {
        let mut connection = daemon.raw_line_connection().await;
        connection.initialize().await;
        let partial = partial.clone();
        attackers.spawn(async move {
            // The daemon may close the connection before it read everything.
            let _ = connection.try_send_raw(&partial).await;
            match connection.try_recv(WAIT).await {
                Ok(message) => {
                    assert_eq!(error_code(&message), -32600, "{message}");
                    assert!(error_message(&message).contains("not completed within 1s"), "{message}");
                    match connection.try_recv(WAIT).await {
                        Err(RecvError::Closed) => {}
                        other => panic!("connection {index}: expected the daemon to close it, got {other:?}"),
                    }
                }
                Err(RecvError::Closed) => {}
                Err(error) => panic!("connection {index}: the unfinished message was not given up on: {error:?}"),
            }
        });
    }
    while let Some(joined) = attackers.join_next().await {
        joined.expect("an attacking connection's task");
    }
    let growth = daemon.peak_rss_kib().saturating_sub(baseline);
    let sent = (CONNECTIONS * PARTIAL_BYTES) as u64 / 1024;
    eprintln!("peak memory growth {growth} KiB for {sent} KiB of unfinished messages");
    assert!(
        growth < 80 * MIB,
        "peak memory grew by {growth} KiB while {sent} KiB of unfinished messages were sent"
    );
    // The budget is whole again: a large message from a new front-end goes through.
    let mut connection = daemon.raw_line_connection().await;
    connection.initialize().await;
    let pad = "x".repeat(6 * 1024 * 1024);
    let response = connection.request("daemon/status", json!({"pad": pad})).await;
    assert_eq!(
        error_code(&response),
        -32602,
        "an unknown field, read whole: {response}"
    );
}

#[tokio::test]
async fn answers_a_front_end_does_not_read_are_bounded_in_bytes() {
    let daemon = TestDaemon::start();
    // 1024 notifications of about 4 KiB: each `events/replay` from seq 0 is a 4.5 MB answer.
    let client = daemon.connect_client().await;
    corral_tests::emit_test_events(&client, 1024, &"n".repeat(4096)).await;
    drop(client);
    let mut hog = UnixStream::connect(daemon.socket_path()).await.expect("connect");
    let initialize =
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": corral_tests::initialize_params(1)});
    let mut requests = format!("{initialize}\n");
    for id in 1..=40 {
        requests.push_str(
            &json!({"jsonrpc": "2.0", "id": id, "method": "events/replay", "params": {"afterSeq": 0}}).to_string(),
        );
        requests.push('\n');
    }
    let baseline = daemon.peak_rss_kib();
    hog.write_all(requests.as_bytes()).await.expect("send the requests");
    // The hog never reads. With no bound in bytes, the daemon queued all 40
    // answers (about 180 MB) within seconds; with it, the reader stops
    // after about 16 MiB. There is no event that says "the daemon
    // stopped", so the daemon is watched for this long.
    let watched = Instant::now();
    let mut peak_growth = 0;
    while watched.elapsed() < Duration::from_secs(8) {
        peak_growth = daemon.peak_rss_kib().saturating_sub(baseline);
        if peak_growth > 96 * MIB {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("peak memory growth {peak_growth} KiB with 40 answers of 4.5 MB unread");
    assert!(
        peak_growth < 64 * MIB,
        "peak memory grew by {peak_growth} KiB while a front-end left 40 answers of 4.5 MB unread"
    );
    // The answers come once the front-end reads (the first ten are read: each
    // takes the debug daemon a while to build).
    let mut reader = RawConnection::from_stream(hog, corral_tests::WireFraming::Lines);
    for _ in 0..11 {
        let message = reader.recv().await;
        assert!(
            message.get("result").is_some(),
            "{}",
            &message.to_string()[..200.min(message.to_string().len())]
        );
    }
    let growth = daemon.peak_rss_kib().saturating_sub(baseline);
    assert!(
        growth < 64 * MIB,
        "peak memory grew by {growth} KiB while the answers were read"
    );
}

#[tokio::test]
async fn a_batch_is_bounded_and_its_slow_entries_do_not_stop_the_reader() {
    let daemon = TestDaemon::start_with_config(&fixture_config("slow", &[]));
    let client = daemon.connect_client().await;
    wait_for_status(&client, "slow", ServerStatus::Ready, SERVER_WAIT).await;
    let mut connection = daemon.raw_line_connection().await;
    connection.initialize().await;

    let too_long: Vec<Value> = (0..257)
        .map(|id| json!({"jsonrpc": "2.0", "id": id, "method": "daemon/status"}))
        .collect();
    connection.send(&json!(too_long)).await;
    let response = connection.recv().await;
    assert!(
        response.is_object(),
        "a batch of 257 was run: {} answers",
        response.as_array().map_or(0, Vec::len)
    );
    assert_eq!(error_code(&response), -32600, "{response}");
    assert!(
        error_message(&response).contains("at most 256 requests; this one has 257"),
        "{response}"
    );

    // A slow call in a batch: the reader goes on, a cancel reaches it, and
    // other requests are answered meanwhile.
    connection
        .send(&json!([
            {"jsonrpc": "2.0", "id": "slow", "method": "tools/call",
             "params": {"server": "slow", "name": "sleep", "arguments": {"seconds": 60}}},
            {"jsonrpc": "2.0", "id": "status", "method": "daemon/status"},
        ]))
        .await;
    connection
        .send(&json!({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": "slow"}}))
        .await;
    let status = within_for(
        WAIT,
        "daemon/status after a batch with a slow call",
        connection.request("daemon/status", json!({})),
    )
    .await;
    assert!(status.get("result").is_some(), "{status}");
    let batch = connection.recv().await;
    let answers = batch
        .as_array()
        .unwrap_or_else(|| panic!("expected the batch's answers, got {batch}"));
    assert_eq!(answers.len(), 2, "{batch}");
    let by_id = |id: &str| {
        answers
            .iter()
            .find(|answer| answer["id"] == id)
            .unwrap_or_else(|| panic!("no answer with id {id} in {batch}"))
    };
    assert_eq!(error_code(by_id("slow")), -32800, "cancelled: {batch}");
    assert!(by_id("status").get("result").is_some(), "{batch}");
}

#[tokio::test]
async fn an_answer_too_large_is_message_too_large() {
    let daemon = TestDaemon::start();
    let client = daemon.connect_client().await;
    // About 10 MB of history: more than one message may carry.
    corral_tests::emit_test_events(&client, 1000, &"n".repeat(10 * 1024)).await;
    drop(client);
    let mut connection = daemon.raw_line_connection().await;
    connection.initialize().await;
    let response = connection.request("events/replay", json!({"afterSeq": 0})).await;
    assert_eq!(
        error_code(&response),
        -32005,
        "messageTooLarge, not jsonrpsee's -32008 (our notPermitted): {response}"
    );
    assert!(error_message(&response).contains("events/replay"), "{response}");

    // Three answers of about 4 MB each: each fits, the batch's array does not.
    let replay = |id: u64| json!({"jsonrpc": "2.0", "id": id, "method": "events/replay", "params": {"afterSeq": 600}});
    connection.send(&json!([replay(1), replay(2), replay(3)])).await;
    let response = connection.recv().await;
    assert!(
        response.is_object(),
        "the batch's answers were sent: {} bytes",
        response.to_string().len()
    );
    assert_eq!(error_code(&response), -32005, "{response}");
    assert!(error_message(&response).contains("answers to this batch"), "{response}");
}

#[tokio::test]
async fn server_names_are_at_most_128_bytes_for_config_and_session_servers() {
    let long = "n".repeat(129);
    let daemon = TestDaemon::start_with_config(&format!("[servers.{long}]\ncommand = \"true\"\n"));
    let mut connection = daemon.raw_line_connection().await;
    connection.initialize().await;
    let status = connection.call("daemon/status", json!({})).await;
    let config_error = status["configError"].as_str().unwrap_or_default();
    assert!(
        config_error.contains("server name is 129 bytes long; the limit is 128 bytes"),
        "{status}"
    );

    for name in [long.clone(), "n".repeat(4 * 1024 * 1024)] {
        let response = connection
            .request(
                "mcpServer/add",
                json!({"name": name, "config": {"command": "true", "enabled": false}}),
            )
            .await;
        assert_eq!(error_code(&response), -32602, "{}", &response.to_string()[..300]);
        let text = response.to_string();
        assert!(
            text.contains("the limit is 128 bytes"),
            "{}",
            &text[..300.min(text.len())]
        );
        assert!(text.len() < 1024, "the name is not echoed back: {} bytes", text.len());
    }
    let response = connection
        .request(
            "mcpServer/add",
            json!({"name": "n".repeat(128), "config": {"command": "true", "enabled": false}}),
        )
        .await;
    assert!(response.get("result").is_some(), "128 bytes is allowed: {response}");
}

#[tokio::test]
async fn idle_connections_are_closed_and_status_gets_through() {
    // A low open-file limit (as under `ulimit -n`), and more idle connections
    // than the daemon has slots: `corral status` still gets through while
    // they are open (idle ones hold at most a quarter of the slots; the
    // oldest makes room), and each is closed at the handshake deadline.
    let mut daemon = TestDaemon::builder()
        .open_files_limit(256, 256)
        .env("CORRAL_HANDSHAKE_TIMEOUT_MS", "3000")
        .start();
    let mut idle = open_idle_connections(&daemon, 300).await;
    assert!(idle.len() > 200, "only {} connections could be opened", idle.len());
    let output = run_corral(daemon.socket_path(), &["status"]).await;
    assert!(
        output.status.success(),
        "corral status failed while idle connections were open: {}{}",
        output.stdout,
        output.stderr
    );
    let mut connection = daemon.raw_line_connection().await;
    connection.initialize().await;
    let status = connection.call("daemon/status", json!({})).await;
    assert_eq!(
        status["maxConnections"], 128,
        "256 open files less the reserve: {status}"
    );
    for (index, stream) in idle.iter_mut().enumerate() {
        assert!(
            closed_by_daemon(stream, WAIT).await,
            "idle connection {index} was not closed"
        );
    }
    daemon.assert_running();
    // `corral status` has exited, but its connection's task may still be winding down.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = connection.call("daemon/status", json!({})).await;
        if status["connections"] == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only the initialized connection should be left: {status}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[tokio::test]
async fn a_crashed_server_restarts_while_connections_fill_the_daemon() {
    // Soft limit 128 under a hard limit of 256: the daemon raises it, keeps
    // files in reserve, and a crashed server comes back while front-ends
    // hold every connection slot (initialized ones: no deadline closes them).
    let daemon = TestDaemon::builder()
        .config(&fixture_config("fixture", &[]))
        .open_files_limit(128, 256)
        .start();
    let client = daemon.connect_client().await;
    let ready = wait_for_status(&client, "fixture", ServerStatus::Ready, SERVER_WAIT).await;
    let first_pid = ready.pid.expect("a ready stdio server has a pid");

    let mut held = Vec::new();
    for _ in 0..300 {
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(1), UnixStream::connect(daemon.socket_path())).await
        else {
            break;
        };
        let initialize =
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": corral_tests::initialize_params(1)});
        if stream.write_all(format!("{initialize}\n").as_bytes()).await.is_err() {
            continue;
        }
        held.push(stream);
    }
    assert!(held.len() > 200, "only {} connections could be opened", held.len());

    corral_tests::send_signal(first_pid, libc::SIGKILL);
    let restarted = corral_tests::poll_until_for(SERVER_WAIT, "the crashed server to be ready again", || {
        let client = &client;
        async move {
            let server = corral_tests::get_server(client, "fixture").await;
            if server.status == ServerStatus::Failed {
                panic!("the server could not be restarted: {:?}", server.error);
            }
            (server.status == ServerStatus::Ready && server.pid.is_some_and(|pid| pid != first_pid)).then_some(server)
        }
    })
    .await;
    assert!(restarted.restart_count >= 1, "{restarted:?}");
    let status = client.daemon_status().await.expect("daemon/status");
    assert_eq!(status.max_connections, Some(128), "{status:?}");
    let refused = status.refused_connections.unwrap_or_default();
    assert!(
        refused >= 100,
        "connections beyond the cap are refused and counted: {status:?}"
    );
    let warnings = daemon
        .stderr()
        .lines()
        .filter(|line| line.contains("refused connections"))
        .count();
    assert!(
        (1..=3).contains(&warnings),
        "{refused} refused connections gave {warnings} log lines (at most one per 10 s)"
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.pid())).expect("read limits");
    let open_files = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("a `Max open files` line");
    assert_eq!(
        open_files.split_whitespace().nth(3),
        Some("256"),
        "the soft limit is raised to the hard one: {open_files}"
    );
}

#[tokio::test]
async fn a_full_server_command_queue_is_busy_not_shutting_down() {
    // A server hanging in `initialize` takes no commands; many restarts at
    // once fill its queue.
    let config = format!(
        "{}startup_timeout_sec = 60\n",
        fixture_config("stuck", &["--hang-on-initialize"])
    );
    let daemon = TestDaemon::start_with_config(&config);
    let client = daemon.connect_client().await;
    wait_for_status(&client, "stuck", ServerStatus::Starting, SERVER_WAIT).await;
    let mut connection = daemon.raw_line_connection().await;
    connection.initialize().await;
    let mut batch = String::new();
    for id in 1..=40 {
        batch.push_str(
            &json!({"jsonrpc": "2.0", "id": id, "method": "mcpServer/restart", "params": {"name": "stuck"}})
                .to_string(),
        );
        batch.push('\n');
    }
    connection.send_raw(batch.as_bytes()).await;
    // The refused ones answer at once; the others once the server restarted.
    let mut codes = Vec::new();
    while codes.len() < 20 {
        let response = match connection.try_recv(WAIT).await {
            Ok(response) => response,
            Err(error) => panic!("after {} answers: {error:?}", codes.len()),
        };
        if let Some(code) = response["error"]["code"].as_i64() {
            assert_ne!(code, -32006, "not shuttingDown: {response}");
            assert_eq!(code, -32013, "{response}");
            assert!(
                error_message(&response).contains("`stuck` has too many control commands waiting"),
                "{response}"
            );
        }
        codes.push(response["error"]["code"].as_i64());
    }
    assert!(
        codes.contains(&Some(-32013)),
        "some restarts find the queue full: {codes:?}"
    );
}

/// `Max open files` of `pid` (soft, hard), from /proc/PID/limits.
fn open_files_limit_of(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("/proc/PID/limits");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no `Max open files` line in:\n{limits}"));
    let mut values = line["Max open files".len()..].split_whitespace();
    let soft = values.next().expect("a soft limit").to_owned();
    let hard = values.next().expect("a hard limit").to_owned();
    (soft, hard)
}

#[tokio::test]
async fn servers_start_with_the_open_file_limit_corrald_was_given_not_its_raised_one() {
    // corrald raises its own soft limit (128 → 256) for its sockets and pipes;
    // a server it starts gets 128 back, as if the user had started it.
    let daemon = TestDaemon::builder()
        .config(&fixture_config("fixture", &[]))
        .open_files_limit(128, 256)
        .start();
    let client = daemon.connect_client().await;
    let ready = wait_for_status(&client, "fixture", ServerStatus::Ready, SERVER_WAIT).await;
    let pid = ready.pid.expect("a ready stdio server has a pid");
    assert_eq!(
        open_files_limit_of(daemon.pid()),
        ("256".to_owned(), "256".to_owned()),
        "corrald raised its own soft limit"
    );
    assert_eq!(
        open_files_limit_of(pid),
        ("128".to_owned(), "256".to_owned()),
        "the server starts with corrald's inherited soft limit"
    );
}
