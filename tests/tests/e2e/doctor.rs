//! `corral doctor` on deliberately broken setups, checked line by line: a
//! running daemon with a failed, a crashed, a disabled and a healthy server,
//! a missing executable, a socket others may open and a service file whose
//! corrald is gone; then no daemon at all with an invalid config file.

use std::path::Path;
use std::process::Command;

use corral_client::protocol::ServerStatus;
use corral_tests::{
    CommandOutput, SERVER_WAIT, TestDaemon, WAIT, corral_command, fixture_config, get_server, run_command, scratch_dir,
    wait_for_status,
};
use serde_json::Value;

/// A line of doctor's output: exactly this, or starting with this.
enum Line {
    Exact(String),
    Prefix(String),
}

fn exact(text: impl Into<String>) -> Line {
    Line::Exact(text.into())
}

fn prefix(text: impl Into<String>) -> Line {
    Line::Prefix(text.into())
}

fn assert_lines(output: &str, expected: &[Line]) {
    let lines: Vec<&str> = output.lines().collect();
    for (index, want) in expected.iter().enumerate() {
        let got = lines.get(index).copied().unwrap_or("<no line>");
        let ok = match want {
            Line::Exact(text) => got == text,
            Line::Prefix(text) => got.starts_with(text.as_str()),
        };
        let want = match want {
            Line::Exact(text) => format!("exactly {text:?}"),
            Line::Prefix(text) => format!("starting with {text:?}"),
        };
        assert!(
            ok,
            "line {} of doctor's output should be {want}, is {got:?}; whole output:\n{output}",
            index + 1
        );
    }
    assert_eq!(
        lines.len(),
        expected.len(),
        "doctor printed more lines than expected:\n{output}"
    );
}

fn doctor(socket: &Path, env: &[(&str, &Path)], json: bool) -> CommandOutput {
    let mut command: Command = corral_command();
    command.arg("doctor").arg("--socket").arg(socket);
    if json {
        command.arg("--json");
    }
    for (name, value) in env {
        command.env(name, value);
    }
    run_command(&mut command, WAIT)
}

const EXECUTABLE_FIX: &str = "       fix: install it, give `command` as an absolute path, or add its directory to the PATH corrald \
runs with (`corral service install` again from a shell that finds it)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_each_problem_of_a_running_setup_with_its_fix() {
    let config = [
        fixture_config("good", &[]),
        fixture_config("crashes", &["--crash-on-start"]),
        "\n[servers.missing]\ncommand = \"corral-no-such-program\"\n".to_owned(),
        fixture_config("off", &[]) + "enabled = false\n",
    ]
    .concat();
    let daemon = TestDaemon::start_with_config(&config);
    let client = daemon.connect_client().await;
    wait_for_status(&client, "good", ServerStatus::Ready, SERVER_WAIT).await;
    let crashed = wait_for_status(&client, "crashes", ServerStatus::Failed, SERVER_WAIT).await;
    let missing = wait_for_status(&client, "missing", ServerStatus::Failed, SERVER_WAIT).await;
    let good = get_server(&client, "good").await;

    // A socket other users may open, and a service whose corrald was deleted.
    std::fs::set_permissions(
        daemon.socket_path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod the socket");
    let scratch = scratch_dir();
    let units = scratch.path().join("units");
    let gone = scratch.path().join("corrald");
    std::fs::write(&gone, "").expect("a stand-in corrald");
    let mut install = corral_command();
    install
        .args(["service", "install", "--manager", "systemd", "--corrald"])
        .arg(&gone)
        .env("CORRAL_SERVICE_DIR", &units);
    assert!(run_command(&mut install, WAIT).status.success());
    std::fs::remove_file(&gone).expect("delete the stand-in");

    let env = [("CORRAL_SERVICE_DIR", units.as_path()), ("HOME", scratch.path())];
    let output = doctor(daemon.socket_path(), &env, false);
    assert_eq!(output.status.code(), Some(1), "errors make doctor exit 1: {output:?}");
    let socket = daemon.socket_path().display().to_string();
    let config_path = daemon.config_path().display().to_string();
    let first_line = |error: &Option<String>| error.as_deref().and_then(|e| e.lines().next()).unwrap_or("").to_owned();
    let python = corral_tests::fixture_python().display().to_string();
    assert_lines(
        &output.stdout,
        &[
            exact(format!(
                "ok     daemon: corrald {} (pid {}) answers on {socket}",
                env!("CARGO_PKG_VERSION"),
                daemon.pid()
            )),
            exact(format!("ok     config: {config_path} is valid (4 servers)")),
            exact(format!(
                "error  server:crashes: failed (processExited): {}",
                first_line(&crashed.error)
            )),
            exact(
                "       fix: run its command by hand to see why it fails (`corral get crashes` shows its stderr), \
                 then `corral start crashes`",
            ),
            exact(format!(
                "ok     server:good: ready ({} tools)",
                good.tool_count.expect("tool count")
            )),
            exact(format!(
                "error  server:missing: failed (executableNotFound): {}",
                first_line(&missing.error)
            )),
            exact(
                "       fix: install the program, give `command` as an absolute path, or add its directory to the PATH \
                 corrald runs with (`corral service install` again from a shell that finds it)",
            ),
            exact("info   server:off: disabled in the config (`enabled = false`)"),
            exact("       fix: `corral start off` runs it until corrald restarts; set `enabled = true` to keep it on"),
            prefix(format!("ok     executable:crashes: `{python}` is ")),
            prefix(format!("ok     executable:good: `{python}` is ")),
            exact("error  executable:missing: `corral-no-such-program` is not found on corrald's PATH"),
            exact(EXECUTABLE_FIX),
            prefix(format!("ok     executable:off: `{python}` is ")),
            exact(format!(
                "warn   socket: {socket} has mode 644: other users can try to connect (corrald refuses them)"
            )),
            exact(
                "       fix: make it 0600: set `SocketMode=0600` in corral.socket, or restart corrald, which creates it 0600",
            ),
            exact(format!(
                "error  service: {} runs {}, which does not exist",
                units.join("corral.service").display(),
                gone.display()
            )),
            exact("       fix: `corral service install` again to point it at your corrald"),
            // The test daemon has no session bus, so `auto` uses the file and says why.
            prefix(format!(
                "info   credentials: a 0600 file, {}, credentials_store = \"auto\" (no OS keyring (",
                daemon.dir().join("data/credentials.json").display()
            )),
            exact(
                "       fix: to keep tokens in the OS keyring instead, run corrald where a Secret Service \
                 (e.g. gnome-keyring) answers on the session bus",
            ),
            exact("4 error(s), 1 warning(s)"),
        ],
    );

    // The same findings for tools.
    let json = doctor(daemon.socket_path(), &env, true);
    assert_eq!(json.status.code(), Some(1));
    let report: Value = serde_json::from_str(&json.stdout).expect("doctor --json prints JSON");
    assert_eq!(report["ok"], Value::Bool(false));
    let levels: Vec<(String, String)> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|check| {
            (
                check["check"].as_str().unwrap_or_default().to_owned(),
                check["level"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("daemon", "ok"),
        ("config", "ok"),
        ("server:crashes", "error"),
        ("server:good", "ok"),
        ("server:missing", "error"),
        ("server:off", "info"),
        ("executable:crashes", "ok"),
        ("executable:good", "ok"),
        ("executable:missing", "error"),
        ("executable:off", "ok"),
        ("socket", "warning"),
        ("service", "error"),
        ("credentials", "info"),
    ]
    .iter()
    .map(|(check, level)| ((*check).to_owned(), (*level).to_owned()))
    .collect();
    assert_eq!(levels, expected);
}

#[test]
fn doctor_without_a_daemon_still_checks_the_config_socket_and_service() {
    let scratch = scratch_dir();
    let socket = scratch.path().join("none.sock");
    let config = scratch.path().join("config.toml");
    std::fs::write(&config, "[servers.one]\ncommand = 5\n").expect("write an invalid config");
    let units = scratch.path().join("units");
    let env = [
        ("CORRAL_SERVICE_DIR", units.as_path()),
        ("CORRAL_CONFIG", config.as_path()),
        ("HOME", scratch.path()),
    ];
    let output = doctor(&socket, &env, false);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let socket = socket.display().to_string();
    let config = config.display().to_string();
    assert_lines(
        &output.stdout,
        &[
            exact(format!(
                "error  daemon: corrald is not running at {socket}: start it with `corrald` or `systemctl --user start corral`"
            )),
            exact("       fix: start it: run `corrald`, or `corral service install` to have it start at login"),
            exact(format!("error  config: {config} is invalid:")),
            exact(format!(
                "       {config}:2:11: server `one`, field `command`: expected a string, found an integer"
            )),
            exact(
                "       fix: correct the lines above (`corral config check` repeats them); corrald starts with no config \
                 servers until the file is valid",
            ),
            exact(format!(
                "info   socket: {socket} does not exist (corrald is not running)"
            )),
            exact(format!(
                "info   service: not installed ({} does not exist)",
                units.join("corral.service").display()
            )),
            exact("       fix: `corral service install` to start corrald at login"),
            exact(
                "info   credentials: not checked: corrald is not running (it decides which store it uses when it starts)",
            ),
            exact("2 error(s), 0 warning(s)"),
        ],
    );
}
