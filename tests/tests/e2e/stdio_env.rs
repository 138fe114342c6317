//! What a stdio server is launched with: its environment (an allow-list of
//! the daemon's variables, then `env_vars`, then the literal `env`, all as
//! bytes), its working directory (`cwd`, else `$HOME`), and its program
//! (looked up on the server's own PATH).
//!
//! The fixture's `--require-env NAME=VALUE` / `--require-env-hex NAME=HEX`
//! exit with status 5 unless the variable has exactly that value, so a
//! server that gets `ready` proves its environment; `/proc/<pid>/environ`
//! and `/proc/<pid>/cwd` show the rest.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use corral_client::Client;
use corral_client::protocol::{FailureReason, McpServerStatus, ServerStatus};
use corral_tests::{
    SERVER_WAIT, TestDaemon, fixture_config, fixture_python, fixture_script, get_server, scratch_dir, toml_string,
    toml_string_array, wait_for_pid_file, wait_for_status,
};

use ServerStatus::{Failed, Ready};

/// The daemon's variables every server gets, when set (`daemon/src/stdio.rs`).
const ALLOW_LIST: [&str; 10] = [
    "HOME", "LOGNAME", "PATH", "SHELL", "USER", "LANG", "LC_ALL", "TERM", "TMPDIR", "TZ",
];

/// Non-UTF-8 bytes: `ÿþ caf` and a Latin-1 `é`.
const NON_UTF8: [u8; 7] = [0xff, 0xfe, 0x20, b'c', b'a', b'f', 0xe9];

/// The names in `/proc/<pid>/environ`.
fn environment_names(pid: u32) -> BTreeSet<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("read /proc/<pid>/environ");
    environ
        .split(|byte| *byte == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let name = entry.split(|byte| *byte == b'=').next().unwrap_or_default();
            String::from_utf8_lossy(name).into_owned()
        })
        .collect()
}

/// A server that must fail because `--require-env*` did not find its variable.
///
/// (Only what proves the environment is asserted here: the `failureReason`
/// of a server that exits at start is covered by `stdio_failures.rs`.)
async fn assert_failed_on_missing_env(client: &Client, name: &str, variable: &str) -> McpServerStatus {
    let server = wait_for_status(client, name, Failed, SERVER_WAIT).await;
    assert_eq!(server.last_exit.as_deref(), Some("exit status: 5"), "{server:#?}");
    assert!(
        server
            .stderr_tail
            .iter()
            .any(|line| line.contains("required environment variable") && line.contains(variable)),
        "the fixture said which variable was wrong: {server:#?}"
    );
    server
}

#[tokio::test]
async fn a_literal_env_entry_reaches_the_server_and_without_it_the_server_fails() {
    let require = ["--require-env", "CORRAL_E2E_LITERAL=literal value"];
    let config = format!(
        "{}env = {{ CORRAL_E2E_LITERAL = \"literal value\" }}\n{}",
        fixture_config("with-env", &require),
        fixture_config("without-env", &require),
    );
    // The daemon's own value must not matter: the literal is what counts.
    let daemon = TestDaemon::builder()
        .config(&config)
        .env("CORRAL_E2E_LITERAL", "from the daemon")
        .start();
    let client = daemon.connect_client().await;
    wait_for_status(&client, "with-env", Ready, SERVER_WAIT).await;
    assert_failed_on_missing_env(&client, "without-env", "CORRAL_E2E_LITERAL").await;
}

#[tokio::test]
async fn env_vars_passes_the_named_daemon_variables_as_bytes_and_nothing_else() {
    let config = [
        format!(
            "{}env_vars = [\"CORRAL_E2E_PASSED\"]\n",
            fixture_config("passed", &["--require-env", "CORRAL_E2E_PASSED=from the daemon"])
        ),
        // Set on the daemon, but named nowhere: the server must not see it.
        format!(
            "{}env_vars = [\"CORRAL_E2E_PASSED\"]\n",
            fixture_config("secret", &["--require-env", "CORRAL_E2E_SECRET=hunter2"])
        ),
        // Non-UTF-8 bytes survive the trip.
        format!(
            "{}env_vars = [\"CORRAL_E2E_BYTES\"]\n",
            fixture_config("bytes", &["--require-env-hex", "CORRAL_E2E_BYTES=fffe20636166e9"])
        ),
        // `env` is applied after `env_vars`: the literal wins.
        format!(
            "{}env_vars = [\"CORRAL_E2E_BOTH\"]\nenv = {{ CORRAL_E2E_BOTH = \"literal\" }}\n",
            fixture_config("literal-wins", &["--require-env", "CORRAL_E2E_BOTH=literal"])
        ),
    ]
    .concat();
    let daemon = TestDaemon::builder()
        .config(&config)
        .env("CORRAL_E2E_PASSED", "from the daemon")
        .env("CORRAL_E2E_SECRET", "hunter2")
        .env("CORRAL_E2E_BYTES", OsString::from_vec(NON_UTF8.to_vec()))
        .env("CORRAL_E2E_BOTH", "from the daemon")
        .start();
    let client = daemon.connect_client().await;
    let passed = wait_for_status(&client, "passed", Ready, SERVER_WAIT).await;
    wait_for_status(&client, "bytes", Ready, SERVER_WAIT).await;
    wait_for_status(&client, "literal-wins", Ready, SERVER_WAIT).await;
    assert_failed_on_missing_env(&client, "secret", "CORRAL_E2E_SECRET").await;

    // The whole environment: the allow-list, env_vars, the marker; nothing
    // else of the daemon's (which has CORRAL_LOG, CORRAL_TEST_HOOKS, CARGO_*...).
    let names = environment_names(passed.pid.expect("pid"));
    let allowed: BTreeSet<String> = ALLOW_LIST
        .iter()
        .copied()
        .chain(["CORRAL_E2E_PASSED", "CORRAL_SERVER_MARKER"])
        .map(str::to_owned)
        .collect();
    let extra: Vec<&String> = names.difference(&allowed).collect();
    assert!(extra.is_empty(), "variables the server should not have: {extra:?}");
    for expected in ["PATH", "HOME", "CORRAL_E2E_PASSED", "CORRAL_SERVER_MARKER"] {
        assert!(names.contains(expected), "{expected} missing from {names:?}");
    }
}

/// A script named `corral-e2e-python` in `dir` that runs the fixture's interpreter.
fn python_wrapper(dir: &Path) -> PathBuf {
    let path = dir.join("corral-e2e-python");
    let script = format!("#!/bin/sh\nexec {} \"$@\"\n", fixture_python().display());
    std::fs::write(&path, script).expect("write the wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod the wrapper");
    path
}

#[tokio::test]
async fn the_program_is_looked_up_on_the_servers_path_not_the_daemons() {
    let scratch = scratch_dir();
    python_wrapper(scratch.path());
    let script = fixture_script().display().to_string();
    let server_path = format!("{}:/usr/bin:/bin", scratch.path().display());
    let config = format!(
        r#"
[servers.on-server-path]
command = "corral-e2e-python"
args = {args}
env = {{ PATH = {server_path} }}

[servers.not-on-daemon-path]
command = "corral-e2e-python"
args = {args}

[servers.empty-path]
command = "python3"
args = {args}
env = {{ PATH = "/nonexistent-corral-e2e-dir" }}
"#,
        args = toml_string_array(&[script]),
        server_path = toml_string(&server_path),
    );
    let daemon = TestDaemon::start_with_config(&config);
    let client = daemon.connect_client().await;
    wait_for_status(&client, "on-server-path", Ready, SERVER_WAIT).await;

    let hidden = wait_for_status(&client, "not-on-daemon-path", Failed, SERVER_WAIT).await;
    assert_eq!(
        hidden.failure_reason,
        Some(FailureReason::ExecutableNotFound),
        "{hidden:#?}"
    );
    let error = hidden.error.unwrap_or_default();
    assert!(error.contains("`corral-e2e-python`"), "{error}");

    // python3 is on the daemon's PATH, but not on this server's.
    let empty = wait_for_status(&client, "empty-path", Failed, SERVER_WAIT).await;
    assert_eq!(
        empty.failure_reason,
        Some(FailureReason::ExecutableNotFound),
        "{empty:#?}"
    );
    let error = empty.error.unwrap_or_default();
    assert!(error.contains("`python3`"), "{error}");
    assert!(
        error.contains("PATH=/nonexistent-corral-e2e-dir"),
        "names the PATH searched: {error}"
    );
}

/// `/proc/<pid>/cwd`.
fn working_directory(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/cwd")).expect("read /proc/<pid>/cwd")
}

#[tokio::test]
async fn a_server_runs_in_its_cwd_else_in_home_never_in_the_daemons_directory() {
    let workdir = scratch_dir();
    let home = scratch_dir();
    let daemon_dir = scratch_dir();
    // Relative pid files land in the server's working directory.
    let config = format!(
        "{}cwd = {}\n{}",
        fixture_config("in-cwd", &["--pid-file", "cwd.pids"]),
        toml_string(&workdir.path().display().to_string()),
        fixture_config("in-home", &["--pid-file", "home.pids"]),
    );
    let daemon = TestDaemon::builder()
        .config(&config)
        .env("HOME", home.path())
        .current_dir(daemon_dir.path())
        .start();
    let client = daemon.connect_client().await;

    let in_cwd = wait_for_status(&client, "in-cwd", Ready, SERVER_WAIT).await;
    let pid = in_cwd.pid.expect("pid");
    assert_eq!(
        working_directory(pid),
        workdir.path().canonicalize().expect("canonical")
    );
    assert_eq!(wait_for_pid_file(&workdir.path().join("cwd.pids"), 1).await, [pid]);

    let in_home = wait_for_status(&client, "in-home", Ready, SERVER_WAIT).await;
    let pid = in_home.pid.expect("pid");
    assert_eq!(working_directory(pid), home.path().canonicalize().expect("canonical"));
    assert_eq!(wait_for_pid_file(&home.path().join("home.pids"), 1).await, [pid]);

    let in_daemon_dir: Vec<_> = std::fs::read_dir(daemon_dir.path())
        .expect("read the daemon's directory")
        .collect();
    assert!(
        in_daemon_dir.is_empty(),
        "nothing ran in corrald's own directory: {in_daemon_dir:?}"
    );
    assert_eq!(get_server(&client, "in-home").await.status, Ready);
}
