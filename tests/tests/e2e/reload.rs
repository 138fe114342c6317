//! Live config reload against real server processes: the file is rewritten
//! while servers run (one changed, one added, one removed, one untouched with
//! a call in flight), then broken, then restored; every step is checked by
//! pid, by notification, and against `corral config check`.

use std::path::Path;

use corral_client::protocol::{DaemonNotification, ReloadTrigger, ServerStatus};
use corral_client::{Client, ClientNotification, Notifications};
use corral_tests::{
    SERVER_WAIT, TestDaemon, WAIT, assert_all_gone, corral_command, fixture_config, get_server, is_alive,
    next_notification, run_command, send_signal, wait_for_status, within_for,
};
use serde_json::json;

/// The next `config/reloaded` or `config/reloadFailed`, skipping server status traffic.
async fn next_reload(notifications: &mut Notifications) -> DaemonNotification {
    within_for(SERVER_WAIT, "a config reload notification", async {
        loop {
            if let ClientNotification::Daemon(
                notification @ (DaemonNotification::ConfigReloaded(_) | DaemonNotification::ConfigReloadFailed(_)),
            ) = next_notification(notifications).await
            {
                return notification;
            }
        }
    })
    .await
}

/// Replace the file the way editors save: write a new file, rename it over the old one.
fn save_by_rename(path: &Path, text: &str) {
    let temporary = path.with_extension("toml.swp");
    std::fs::write(&temporary, text).expect("write the new config");
    std::fs::rename(&temporary, path).expect("rename it over the config");
}

async fn pid_of(client: &Client, name: &str) -> u32 {
    let server = get_server(client, name).await;
    assert_eq!(server.status, ServerStatus::Ready, "{name} is ready: {server:?}");
    server.pid.unwrap_or_else(|| panic!("{name} has a pid"))
}

/// Wait until `name` is ready with a process other than `old` (the old entry
/// may still show `ready` for a moment after its process is gone).
async fn ready_again(client: &Client, name: &str, old: u32) {
    corral_tests::wait_for_server(client, name, "ready with a new process", SERVER_WAIT, |server| {
        server.status == ServerStatus::Ready && server.pid.is_some_and(|pid| pid != old)
    })
    .await;
}

fn base_config() -> String {
    [
        fixture_config("keep", &[]),
        fixture_config("change", &[]),
        fixture_config("remove", &[]),
    ]
    .concat()
}

fn edited_config() -> String {
    [
        fixture_config("keep", &[]),
        fixture_config("change", &[]) + "env = { CORRAL_TEST_EDIT = \"2\" }\n",
        fixture_config("add", &[]),
    ]
    .concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_restarts_only_what_changed_and_an_invalid_file_changes_nothing() {
    let daemon = TestDaemon::start_with_config(&base_config());
    let mut client = daemon.connect_client().await;
    let mut notifications = client.take_notifications().expect("notification stream");
    for name in ["keep", "change", "remove"] {
        wait_for_status(&client, name, ServerStatus::Ready, SERVER_WAIT).await;
    }
    let keep = pid_of(&client, "keep").await;
    let change = pid_of(&client, "change").await;
    let remove = pid_of(&client, "remove").await;

    // A call in flight on the untouched server when the file changes.
    let caller = daemon.connect_client().await;
    let call = tokio::spawn(async move {
        let arguments = json!({ "seconds": 6 }).as_object().cloned();
        caller.tools_call("keep", "sleep", arguments, WAIT * 3).await
    });
    corral_tests::poll_until("the call to reach `keep`", || async {
        let tail = client.mcp_server_get("keep").await.ok()?.server.stderr_tail;
        tail.iter().any(|line| line.contains("fixture: sleeping")).then_some(())
    })
    .await;

    // 1. Change one, add one, remove one; saved as editors do (rename).
    save_by_rename(daemon.config_path(), &edited_config());
    let DaemonNotification::ConfigReloaded(reloaded) = next_reload(&mut notifications).await else {
        panic!("the edited file is valid and must be applied");
    };
    assert!(
        !call.is_finished(),
        "precondition: the call on `keep` is still in flight"
    );
    assert_eq!(reloaded.trigger, ReloadTrigger::File);
    assert_eq!(reloaded.path, daemon.config_path().display().to_string());
    assert_eq!(
        (
            reloaded.added.clone(),
            reloaded.removed.clone(),
            reloaded.changed.clone()
        ),
        (
            vec!["add".to_owned()],
            vec!["remove".to_owned()],
            vec!["change".to_owned()]
        )
    );
    assert!(reloaded.warnings.is_empty(), "{:?}", reloaded.warnings);

    // By pid: the removed server's and the changed server's old processes are gone,
    // the changed one runs again with a new pid, the added one runs, `keep` is the same process.
    assert_all_gone(
        &[remove, change],
        WAIT,
        "the removed and the changed server's old processes",
    )
    .await;
    ready_again(&client, "change", change).await;
    wait_for_status(&client, "add", ServerStatus::Ready, SERVER_WAIT).await;
    let new_change = pid_of(&client, "change").await;
    let add = pid_of(&client, "add").await;
    assert_ne!(new_change, change, "`change` was restarted");
    assert_eq!(pid_of(&client, "keep").await, keep, "`keep` was not touched");
    assert!(is_alive(keep));
    let names: Vec<String> = client
        .mcp_server_list()
        .await
        .expect("list")
        .servers
        .into_iter()
        .map(|server| server.name)
        .collect();
    assert_eq!(names, ["add", "change", "keep"], "`remove` is gone from the registry");
    // `keep` published no status change since the reload, and its call completes.
    let replay = client.events_replay(reloaded.seq).await.expect("events/replay");
    assert!(
        !replay.notifications.iter().any(|notification| matches!(
            notification,
            DaemonNotification::StartupStatusUpdated(update) if update.name == "keep"
        )),
        "`keep` changed status: {:?}",
        replay.notifications
    );
    let result = call
        .await
        .expect("call task")
        .expect("the in-flight call on `keep` succeeds");
    assert_eq!(result["content"][0]["text"], json!("slept"), "{result}");

    // 2. A broken file: nothing changes, and front-ends get the exact problems.
    let broken = edited_config() + "\n[servers.typo]\ncommand = \"x\"\ntimeout_sec = 5\n";
    std::fs::write(daemon.config_path(), &broken).expect("write the broken config in place");
    let DaemonNotification::ConfigReloadFailed(failed) = next_reload(&mut notifications).await else {
        panic!("the broken file must be refused");
    };
    assert_eq!(failed.trigger, ReloadTrigger::File);
    let mut check = corral_command();
    check.args(["config", "check"]).arg(daemon.config_path());
    let check = run_command(&mut check, WAIT);
    assert!(!check.status.success());
    assert_eq!(
        failed.error,
        check.stderr.trim_end(),
        "the same text as `corral config check`"
    );
    assert!(
        failed.error.contains("server `typo`, field `timeout_sec`"),
        "{}",
        failed.error
    );
    let status = client.daemon_status().await.expect("daemon/status");
    assert_eq!(status.config_error.as_deref(), Some(failed.error.as_str()));
    for (name, pid) in [("keep", keep), ("change", new_change), ("add", add)] {
        assert_eq!(
            pid_of(&client, name).await,
            pid,
            "`{name}` untouched by the invalid file"
        );
    }
    assert!(
        client.mcp_server_get("typo").await.is_err(),
        "nothing of the broken file was applied"
    );

    // 3. SIGHUP rereads the (still broken) file: refused again, said again.
    send_signal(daemon.pid(), libc::SIGHUP);
    let DaemonNotification::ConfigReloadFailed(again) = next_reload(&mut notifications).await else {
        panic!("the broken file must be refused on SIGHUP too");
    };
    assert_eq!(again.trigger, ReloadTrigger::Signal);
    assert_eq!(again.error, failed.error);

    // 4. The file restored to what runs: applied, and nothing to restart.
    save_by_rename(daemon.config_path(), &edited_config());
    let result = client.config_reload().await.expect("config/reload");
    assert!(result.applied, "{result:?}");
    assert_eq!(result.error, None);
    assert!(
        result.added.is_empty() && result.removed.is_empty() && result.changed.is_empty(),
        "{result:?}"
    );
    assert_eq!(client.daemon_status().await.expect("status").config_error, None);
    for (name, pid) in [("keep", keep), ("change", new_change), ("add", add)] {
        assert_eq!(
            pid_of(&client, name).await,
            pid,
            "`{name}` untouched by a reload that changes nothing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reload_request_reports_the_problems_and_the_cli_exits_1() {
    let daemon = TestDaemon::start_with_config(&fixture_config("one", &[]));
    let client = daemon.connect_client().await;
    wait_for_status(&client, "one", ServerStatus::Ready, SERVER_WAIT).await;
    let pid = pid_of(&client, "one").await;
    std::fs::write(daemon.config_path(), "[servers.one]\ncommand = 5\n").expect("break the file");
    let result = client.config_reload().await.expect("config/reload");
    assert!(!result.applied);
    let error = result.error.expect("the problems");
    assert_eq!(
        error,
        format!(
            "{}:2:11: server `one`, field `command`: expected a string, found an integer",
            daemon.config_path().display()
        )
    );
    let cli = corral_tests::run_corral(daemon.socket_path(), &["config", "reload"]).await;
    assert_eq!(cli.status.code(), Some(1), "{cli:?}");
    assert_eq!(
        cli.stdout,
        format!("not reloaded, the running config stays:\n{error}\n")
    );
    assert_eq!(pid_of(&client, "one").await, pid);

    // Removing the file means no config servers: `one` is stopped and removed.
    std::fs::remove_file(daemon.config_path()).expect("remove the file");
    let cli = corral_tests::run_corral(daemon.socket_path(), &["config", "reload"]).await;
    assert_eq!(cli.stdout, "reloaded: removed one\n", "{cli:?}");
    assert_all_gone(&[pid], WAIT, "the server of the removed file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_created_after_startup_is_picked_up_and_touch_reloads_nothing() {
    // No config file at startup: no config servers, and the watcher waits for one.
    let daemon = TestDaemon::start();
    let mut client = daemon.connect_client().await;
    let mut notifications = client.take_notifications().expect("notification stream");
    save_by_rename(daemon.config_path(), &fixture_config("late", &[]));
    let DaemonNotification::ConfigReloaded(reloaded) = next_reload(&mut notifications).await else {
        panic!("the new file is valid and must be applied");
    };
    assert_eq!(reloaded.trigger, ReloadTrigger::File);
    assert_eq!(reloaded.added, ["late"]);
    wait_for_status(&client, "late", ServerStatus::Ready, SERVER_WAIT).await;
    let pid = pid_of(&client, "late").await;

    // Same bytes, new modification time: read, found identical, nothing applied.
    let file = std::fs::File::options()
        .append(true)
        .open(daemon.config_path())
        .expect("open the config");
    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .expect("touch the config");
    drop(file);
    corral_tests::poll_until("corrald to read the touched file", || async {
        daemon
            .stderr()
            .contains("config file touched but its content is the same")
            .then_some(())
    })
    .await;
    // A later real change is the next reload notification: the touch published none.
    let text = std::fs::read_to_string(daemon.config_path()).expect("read the config");
    save_by_rename(daemon.config_path(), &(text + "startup_timeout_sec = 20\n"));
    let DaemonNotification::ConfigReloaded(next) = next_reload(&mut notifications).await else {
        panic!("the edited file is valid");
    };
    assert_eq!(
        next.changed,
        ["late"],
        "the touch caused no reload of its own: {next:?}"
    );
    assert_all_gone(&[pid], WAIT, "the changed server's old process").await;
}

#[tokio::test]
async fn a_new_entry_whose_name_a_session_server_holds_is_reported_not_started() {
    let daemon = TestDaemon::start();
    let client = daemon.connect_client().await;
    let entry = json!({ "command": "corral-session-server", "enabled": false });
    client.mcp_server_add("shared", entry).await.expect("mcpServer/add");
    std::fs::write(
        daemon.config_path(),
        "[servers.shared]\ncommand = \"corral-file-server\"\nenabled = false\n",
    )
    .expect("write the config");
    let result = client.config_reload().await.expect("config/reload");
    assert!(result.applied, "{result:?}");
    assert!(result.added.is_empty(), "{result:?}");
    assert_eq!(
        result.warnings,
        [
            "server `shared` was not started: the name is taken by a server a front-end added; once that one is \
             removed (or its connection closes), `corral config reload` starts the file's entry"
        ]
    );
    let server = get_server(&client, "shared").await;
    assert_eq!(
        server.origin,
        corral_client::protocol::ServerOrigin::Session,
        "the session's server stays"
    );

    // Once the session's server is gone, a reload starts the file's entry.
    client.mcp_server_remove("shared").await.expect("mcpServer/remove");
    let result = client.config_reload().await.expect("config/reload");
    assert_eq!(result.added, ["shared"], "{result:?}");
    let server = get_server(&client, "shared").await;
    assert_eq!(server.origin, corral_client::protocol::ServerOrigin::Config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_changed_again_while_its_old_process_stops_starts_once_with_the_newest_entry() {
    // A server that ignores stdin EOF: its teardown waits for the SIGTERM
    // step, which leaves room for a second reload while it is stopping.
    let entry = |value: &str| {
        fixture_config("slow", &["--ignore-stdin-close", "--print-env"])
            + &format!("stop_timeout_sec = 4\nenv = {{ CORRAL_TEST_EDIT = \"{value}\" }}\n")
    };
    let daemon = TestDaemon::start_with_config(&entry("1"));
    let client = daemon.connect_client().await;
    wait_for_status(&client, "slow", ServerStatus::Ready, SERVER_WAIT).await;
    let old = pid_of(&client, "slow").await;

    std::fs::write(daemon.config_path(), entry("2")).expect("first edit");
    let first = client.config_reload().await.expect("config/reload");
    assert_eq!(first.changed, ["slow"], "{first:?}");
    std::fs::write(daemon.config_path(), entry("3")).expect("second edit");
    let second = client.config_reload().await.expect("config/reload");
    assert_eq!(second.changed, ["slow"], "{second:?}");
    assert!(
        is_alive(old),
        "precondition: the second edit came while the old process was still stopping"
    );

    assert_all_gone(&[old], WAIT, "the old process").await;
    ready_again(&client, "slow", old).await;
    let arguments = json!({ "name": "CORRAL_TEST_EDIT" }).as_object().cloned();
    let value = client
        .tools_call("slow", "env", arguments, WAIT)
        .await
        .expect("env tool");
    assert_eq!(
        value["content"][0]["text"],
        json!("3"),
        "the newest entry runs: {value}"
    );
    // Started once: exactly one `starting` after the first reload.
    let replay = client.events_replay(first.seq).await.expect("events/replay");
    let starts = replay
        .notifications
        .iter()
        .filter(|notification| {
            matches!(notification, DaemonNotification::StartupStatusUpdated(update)
                if update.name == "slow" && update.status == ServerStatus::Starting)
        })
        .count();
    assert_eq!(starts, 1, "{:?}", replay.notifications);
}

#[tokio::test]
async fn daemon_wide_keys_changed_by_a_reload_are_reported_as_needing_a_restart() {
    let daemon = TestDaemon::start_with_config(&fixture_config("one", &[]));
    let client = daemon.connect_client().await;
    wait_for_status(&client, "one", ServerStatus::Ready, SERVER_WAIT).await;
    let pid = pid_of(&client, "one").await;
    // The credential store and the OAuth settings are fixed when corrald starts.
    std::fs::write(
        daemon.config_path(),
        format!(
            "credentials_store = \"file\"\noauth_callback_port = 48211\n{}",
            fixture_config("one", &[])
        ),
    )
    .expect("edit the file");
    let result = client.config_reload().await.expect("config/reload");
    assert!(result.applied, "{result:?}");
    assert_eq!(
        result.warnings,
        vec![
            "`credentials_store` changed: it is read when corrald starts; restart corrald to apply it".to_owned(),
            "`oauth_callback_port` changed: it is read when corrald starts; restart corrald to apply it".to_owned(),
        ]
    );
    let status = client.daemon_status().await.expect("daemon/status");
    let store = status.credentials_store.expect("a credential store");
    assert_eq!(store.mode, "auto", "still the store corrald started with");
    assert_eq!(pid_of(&client, "one").await, pid, "servers are untouched");
}
