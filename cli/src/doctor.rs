//! `corral doctor`: everything that can be wrong with a Corral setup, checked
//! in one go and reported one finding per line, each problem with the next
//! step that fixes it.
//!
//! It asks the daemon what it can (status, servers) and looks at the rest
//! itself (the config file, executables on the servers' PATH, the socket's
//! permissions, the service files), so it is useful exactly when the daemon
//! is not running.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_client::protocol::config::{self, TransportConfig};
use corral_client::protocol::{CredentialsBackend, DaemonStatus, FailureReason, McpServerStatus, ServerStatus, paths};
use corral_client::{Client, ClientError, ConnectOptions};
use serde::Serialize;

use crate::service;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Level {
    /// All good.
    Ok,
    /// Worth knowing, nothing to fix.
    Info,
    /// Works, but probably not as intended.
    Warning,
    /// Broken: something does not work until fixed.
    Error,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Info => "info",
            Self::Warning => "warn",
            Self::Error => "error",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Check {
    /// What was checked: `daemon`, `children-record`, `config`, `server:NAME`, `executable:NAME`, `socket`,
    /// `service`, `credentials`.
    pub(crate) check: String,
    pub(crate) level: Level,
    /// What was found, one line (a config error may add lines).
    pub(crate) message: String,
    /// The next step, when there is something to do.
    pub(crate) fix: Option<String>,
}

impl Check {
    fn new(check: impl Into<String>, level: Level, message: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            level,
            message: message.into(),
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Report {
    /// `false` if any check is an error.
    pub(crate) ok: bool,
    pub(crate) checks: Vec<Check>,
}

impl Report {
    /// Plain text: `LEVEL  CHECK: MESSAGE`, then `       fix: …`.
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            let mut lines = check.message.lines();
            out.push_str(&format!(
                "{:<5}  {}: {}\n",
                check.level.label(),
                check.check,
                lines.next().unwrap_or_default()
            ));
            for line in lines {
                out.push_str(&format!("       {line}\n"));
            }
            if let Some(fix) = &check.fix {
                out.push_str(&format!("       fix: {fix}\n"));
            }
        }
        let errors = self.checks.iter().filter(|check| check.level == Level::Error).count();
        let warnings = self.checks.iter().filter(|check| check.level == Level::Warning).count();
        out.push_str(&match (errors, warnings) {
            (0, 0) => "all good\n".to_owned(),
            (errors, warnings) => format!("{errors} error(s), {warnings} warning(s)\n"),
        });
        out
    }
}

/// How long doctor waits for the daemon: it must answer fast or it is part of the problem.
const DAEMON_WAIT: Duration = Duration::from_secs(5);

/// Run every check.
pub(crate) async fn run(socket: Option<&Path>) -> Report {
    let mut checks = Vec::new();
    let socket_path = paths::socket_path(socket);
    let service_target = service::Target::resolve(None, None).ok();
    let service_status = service_target.as_ref().map(service::status);

    let mut options = ConnectOptions::new("corral-doctor", env!("CARGO_PKG_VERSION"))
        .with_connect_timeout(DAEMON_WAIT)
        .with_request_timeout(DAEMON_WAIT)
        .with_socket_path(&socket_path);
    options = options.with_notification_buffer(16);
    let connected = Client::connect(options).await;
    let mut daemon: Option<(Client, DaemonStatus)> = None;
    match connected {
        Ok(client) => match client.daemon_status().await {
            Ok(status) => {
                checks.push(version_check(&status));
                checks.extend(children_record_check(&status));
                daemon = Some((client, status));
            }
            Err(error) => checks.push(
                Check::new(
                    "daemon",
                    Level::Error,
                    format!("corrald at {} does not answer: {error}", socket_path.display()),
                )
                .fix("restart it: `systemctl --user restart corral` (or stop it and run `corrald`)"),
            ),
        },
        Err(ClientError::VersionMismatch(data)) => checks.push(
            Check::new(
                "daemon",
                Level::Error,
                format!("corrald at {} speaks another protocol version", socket_path.display()),
            )
            .fix(data.advice()),
        ),
        #[cfg(unix)]
        Err(error @ ClientError::UntrustedSocket { .. }) => {
            checks.push(Check::new("daemon", Level::Error, error.to_string()).fix(
                "do not use this socket: whoever controls it receives what you send; run corrald with a --socket \
                 in a directory only you can write (the default is $XDG_RUNTIME_DIR/corral), and find out who made it",
            ));
        }
        Err(error @ ClientError::DaemonNotRunning { .. }) => {
            let installed = service_status
                .as_ref()
                .is_some_and(|status| status.files.first().is_some_and(|file| file.installed));
            let fix = if installed {
                "start it: `systemctl --user start corral` (macOS: `launchctl kickstart gui/$(id -u)/dev.corral.corrald`)"
            } else {
                "start it: run `corrald`, or `corral service install` to have it start at login"
            };
            checks.push(Check::new("daemon", Level::Error, error.to_string()).fix(fix));
        }
        Err(error) => checks.push(
            Check::new(
                "daemon",
                Level::Error,
                format!("cannot talk to corrald at {}: {error}", socket_path.display()),
            )
            .fix("check the socket path (`--socket`, $CORRAL_SOCKET) and corrald's log"),
        ),
    }

    let config_path = daemon.as_ref().map_or_else(
        || paths::config_path(None),
        |(_, status)| PathBuf::from(&status.config_path),
    );
    let config = config_checks(&config_path, daemon.as_ref().map(|(_, status)| status), &mut checks);

    if let Some((client, _)) = &daemon {
        match client.mcp_server_list().await {
            Ok(list) => {
                for server in &list.servers {
                    checks.push(server_check(server));
                }
            }
            Err(error) => checks.push(
                Check::new(
                    "servers",
                    Level::Error,
                    format!("corrald did not list its servers: {error}"),
                )
                .fix("look at corrald's log (`journalctl --user -u corral`)"),
            ),
        }
    }

    if let Some(config) = &config {
        let daemon_pid = daemon.as_ref().map(|(_, status)| status.daemon_info.pid);
        executable_checks(config, daemon_pid, &mut checks);
    }

    checks.push(socket_check(&socket_path, daemon.is_some()));
    if let Some(status) = &service_status {
        checks.push(service_check(status, daemon.is_some()));
    }
    checks.push(credential_check(daemon.as_ref().map(|(_, status)| status)));

    Report {
        ok: checks.iter().all(|check| check.level != Level::Error),
        checks,
    }
}

/// Only a problem is reported: a daemon that cannot write its children record
/// leaves its servers running if it is killed with SIGKILL.
fn children_record_check(status: &DaemonStatus) -> Option<Check> {
    let error = status.children_record_error.as_deref()?;
    Some(Check::new("children-record", Level::Error, error).fix(
        "free space in (or fix) the socket's directory; corrald retries on its own, and this goes away once a \
             write succeeds",
    ))
}

fn version_check(status: &DaemonStatus) -> Check {
    let ours = env!("CARGO_PKG_VERSION");
    let info = &status.daemon_info;
    let found = format!(
        "corrald {} (pid {}) answers on {}",
        info.version, info.pid, status.socket_path
    );
    if info.version == ours {
        Check::new("daemon", Level::Ok, found)
    } else {
        Check::new("daemon", Level::Warning, format!("{found}, but this corral is {ours}"))
            .fix("install corral and corrald from the same version, then restart corrald")
    }
}

/// Check the config file; returns it when valid.
fn config_checks(path: &Path, daemon: Option<&DaemonStatus>, checks: &mut Vec<Check>) -> Option<config::Config> {
    match config::load(path) {
        Ok(config) if !path.exists() => {
            checks.push(
                Check::new(
                    "config",
                    Level::Info,
                    format!("{} does not exist: no servers configured", path.display()),
                )
                .fix("add servers there (see `corral config schema`); corrald picks the file up by itself"),
            );
            Some(config)
        }
        Ok(config) => {
            let count = config.servers.len();
            checks.push(Check::new(
                "config",
                Level::Ok,
                format!(
                    "{} is valid ({count} server{})",
                    path.display(),
                    if count == 1 { "" } else { "s" }
                ),
            ));
            Some(config)
        }
        Err(error) => {
            let running = if daemon.is_some() {
                "corrald keeps running the last valid config and applies the file as soon as it is valid"
            } else {
                "corrald starts with no config servers until the file is valid"
            };
            checks.push(
                Check::new(
                    "config",
                    Level::Error,
                    format!("{} is invalid:\n{error}", path.display()),
                )
                .fix(format!(
                    "correct the lines above (`corral config check` repeats them); {running}"
                )),
            );
            None
        }
    }
}

/// The next step for a failed server.
fn failure_fix(name: &str, reason: Option<FailureReason>) -> String {
    match reason {
        Some(FailureReason::ConfigInvalid) => format!("correct the entry `[servers.{name}]` in the config file"),
        Some(FailureReason::ExecutableNotFound) => {
            "install the program, give `command` as an absolute path, or add its directory to the PATH corrald runs with (`corral service install` again from a shell that finds it)".to_owned()
        }
        Some(FailureReason::SpawnFailed) => format!("check that `[servers.{name}]`'s command is executable by you, then `corral start {name}`"),
        Some(FailureReason::StartupTimeout) => format!(
            "raise `startup_timeout_sec` for `{name}` if it is just slow (first `npx` runs download), then `corral start {name}`"
        ),
        Some(FailureReason::ProcessExited | FailureReason::ProtocolError) => {
            format!("run its command by hand to see why it fails (`corral get {name}` shows its stderr), then `corral start {name}`")
        }
        Some(FailureReason::CrashLoop) => {
            format!("see why it keeps crashing with `corral get {name}`, fix it, then `corral start {name}`")
        }
        Some(FailureReason::Unreachable | FailureReason::HttpError) => {
            format!("check the server's `url` and your network, then `corral start {name}`")
        }
        Some(FailureReason::AuthenticationRequired | FailureReason::ReauthenticationRequired) => {
            format!("run `corral login {name}`")
        }
        Some(FailureReason::InsufficientScope) => {
            format!("add the missing scope to `scopes` for `{name}`, then run `corral login {name}`")
        }
        _ => format!("`corral get {name}` shows what happened; `corral start {name}` tries again"),
    }
}

fn server_check(server: &McpServerStatus) -> Check {
    let id = format!("server:{}", server.name);
    let name = &server.name;
    match server.status {
        ServerStatus::Ready => {
            let tools = server
                .tool_count
                .map(|count| format!(" ({count} tools)"))
                .unwrap_or_default();
            Check::new(id, Level::Ok, format!("ready{tools}"))
        }
        ServerStatus::Starting => Check::new(id, Level::Info, "starting"),
        ServerStatus::Stopped if !server.enabled => {
            Check::new(id, Level::Info, "disabled in the config (`enabled = false`)").fix(format!(
                "`corral start {name}` runs it until corrald restarts; set `enabled = true` to keep it on"
            ))
        }
        ServerStatus::Stopped => Check::new(id, Level::Warning, "stopped").fix(format!("`corral start {name}`")),
        ServerStatus::Cancelled => {
            Check::new(id, Level::Warning, "start was cancelled").fix(format!("`corral start {name}`"))
        }
        ServerStatus::Failed => {
            let reason = server
                .failure_reason
                .map(|reason| reason.to_string())
                .unwrap_or_else(|| "unknown".to_owned());
            let error = server
                .error
                .as_deref()
                .and_then(|error| error.lines().next())
                .unwrap_or("no detail");
            Check::new(id, Level::Error, format!("failed ({reason}): {error}"))
                .fix(failure_fix(name, server.failure_reason))
        }
        _ => Check::new(id, Level::Info, server.status.to_string()),
    }
}

/// PATH of the running corrald (Linux: `/proc/PID/environ`), else this process's.
fn daemon_path(daemon_pid: Option<u32>) -> (Option<OsString>, &'static str) {
    #[cfg(target_os = "linux")]
    if let Some(pid) = daemon_pid
        && let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ"))
    {
        use std::os::unix::ffi::OsStrExt as _;
        let path = environ
            .split(|byte| *byte == 0)
            .find_map(|entry| entry.strip_prefix(b"PATH="))
            .map(|value| std::ffi::OsStr::from_bytes(value).to_os_string());
        return (path, "corrald's PATH");
    }
    let _ = daemon_pid;
    (
        std::env::var_os("PATH"),
        "this shell's PATH (corrald's could not be read)",
    )
}

fn executable_checks(config: &config::Config, daemon_pid: Option<u32>, checks: &mut Vec<Check>) {
    let (daemon_path, source) = daemon_path(daemon_pid);
    for server in config.servers.values() {
        let TransportConfig::Stdio(stdio) = &server.transport else {
            continue;
        };
        // The child's PATH: `env.PATH` if the entry sets it, else the daemon's (see stdio.rs).
        let (path, source) = match stdio.env.get("PATH") {
            Some(path) => (Some(OsString::from(path)), "the PATH in its `env`"),
            None => (daemon_path.clone(), source),
        };
        let cwd = stdio
            .cwd
            .clone()
            .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/"));
        let id = format!("executable:{}", server.name);
        match which::which_in(&stdio.command, path.as_ref(), &cwd) {
            Ok(found) => checks.push(Check::new(id, Level::Ok, format!("`{}` is {}", stdio.command, found.display()))),
            Err(_) => checks.push(
                Check::new(id, Level::Error, format!("`{}` is not found on {source}", stdio.command)).fix(
                    "install it, give `command` as an absolute path, or add its directory to the PATH corrald runs with \
                     (`corral service install` again from a shell that finds it)",
                ),
            ),
        }
    }
}

fn socket_check(path: &Path, reachable: bool) -> Check {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        let metadata = match std::fs::symlink_metadata(path) {
            Ok(metadata) => metadata,
            Err(_) if !reachable => {
                return Check::new(
                    "socket",
                    Level::Info,
                    format!("{} does not exist (corrald is not running)", path.display()),
                );
            }
            Err(error) => {
                return Check::new(
                    "socket",
                    Level::Warning,
                    format!("cannot inspect {}: {error}", path.display()),
                );
            }
        };
        if !metadata.file_type().is_socket() {
            return Check::new(
                "socket",
                Level::Error,
                format!("{} exists but is not a socket", path.display()),
            )
            .fix("move that file away, or choose another socket path (`--socket`, $CORRAL_SOCKET)");
        }
        if metadata.uid() != uid {
            return Check::new(
                "socket",
                Level::Error,
                format!(
                    "{} belongs to uid {}, not to you (uid {uid})",
                    path.display(),
                    metadata.uid()
                ),
            )
            .fix("use your own socket path (the default is in your runtime directory)");
        }
        let mode = metadata.mode() & 0o777;
        let dir_mode = path
            .parent()
            .and_then(|dir| std::fs::metadata(dir).ok())
            .map(|dir| (dir.mode() & 0o777, dir.uid()));
        if mode & 0o077 != 0 {
            return Check::new(
                "socket",
                Level::Warning,
                format!(
                    "{} has mode {mode:o}: other users can try to connect (corrald refuses them)",
                    path.display()
                ),
            )
            .fix("make it 0600: set `SocketMode=0600` in corral.socket, or restart corrald, which creates it 0600");
        }
        if let Some((dir_mode, dir_uid)) = dir_mode
            && dir_uid == uid
            && dir_mode & 0o077 != 0
        {
            return Check::new(
                "socket",
                Level::Warning,
                format!(
                    "{} is private (0{mode:o}) but its directory has mode {dir_mode:o}",
                    path.display()
                ),
            )
            .fix(format!("chmod 700 {}", path.parent().unwrap_or(path).display()));
        }
        let stale = if reachable {
            ""
        } else {
            " but nothing answers on it (left by a daemon that died; the next corrald replaces it)"
        };
        Check::new(
            "socket",
            if reachable { Level::Ok } else { Level::Info },
            format!("{} is yours and private (0{mode:o}){stale}", path.display()),
        )
    }
    #[cfg(not(unix))]
    {
        let _ = reachable;
        Check::new(
            "socket",
            Level::Info,
            format!(
                "{} is a named pipe; permissions are not checked on this platform",
                path.display()
            ),
        )
    }
}

fn service_check(status: &service::ServiceStatus, reachable: bool) -> Check {
    let Some(main) = status.files.first() else {
        return Check::new("service", Level::Info, "no service files for this platform");
    };
    if !main.installed {
        return Check::new(
            "service",
            Level::Info,
            format!("not installed ({} does not exist)", main.path.display()),
        )
        .fix("`corral service install` to start corrald at login");
    }
    if main.corrald_exists == Some(false) {
        return Check::new(
            "service",
            Level::Error,
            format!(
                "{} runs {}, which does not exist",
                main.path.display(),
                main.corrald.as_deref().unwrap_or("?")
            ),
        )
        .fix("`corral service install` again to point it at your corrald");
    }
    let manager = &status.service_manager;
    if let Some(error) = &manager.error {
        return Check::new(
            "service",
            Level::Info,
            format!("installed at {}; {error}", main.path.display()),
        );
    }
    let states = manager.lines.join("; ");
    match manager.active {
        Some(true) => Check::new("service", Level::Ok, format!("installed and active ({states})")),
        _ if reachable => Check::new(
            "service",
            Level::Info,
            format!("installed but not active ({states}); the corrald answering was started another way"),
        ),
        _ => Check::new(
            "service",
            Level::Warning,
            format!("installed but not active ({states})"),
        )
        .fix("`systemctl --user enable --now corral.service` (macOS: `launchctl bootstrap gui/$(id -u) <plist>`)"),
    }
}

/// The credential store corrald uses (keyring or file), and why when it is
/// not the first choice (e.g. no keyring answers, so `auto` uses the file).
fn credential_check(status: Option<&DaemonStatus>) -> Check {
    let Some(status) = status else {
        return Check::new(
            "credentials",
            Level::Info,
            "not checked: corrald is not running (it decides which store it uses when it starts)",
        );
    };
    let Some(store) = &status.credentials_store else {
        return Check::new(
            "credentials",
            Level::Info,
            "corrald did not say where it keeps credentials",
        );
    };
    let note = store
        .note
        .as_deref()
        .map(|note| format!(" ({note})"))
        .unwrap_or_default();
    let mode = &store.mode;
    match store.backend {
        CredentialsBackend::Keyring => Check::new(
            "credentials",
            Level::Ok,
            format!(
                "the OS keyring ({}), credentials_store = \"{mode}\"{note}",
                store.location
            ),
        ),
        CredentialsBackend::File | CredentialsBackend::EncryptedFile => {
            let kind = if store.backend == CredentialsBackend::File {
                "a 0600 file"
            } else {
                "an encrypted file"
            };
            let check = Check::new(
                "credentials",
                if store.note.is_some() { Level::Info } else { Level::Ok },
                format!("{kind}, {}, credentials_store = \"{mode}\"{note}", store.location),
            );
            if mode == "auto" && store.note.is_some() {
                check.fix(
                    "to keep tokens in the OS keyring instead, run corrald where a Secret Service \
                     (e.g. gnome-keyring) answers on the session bus",
                )
            } else {
                check
            }
        }
        _ => Check::new(
            "credentials",
            Level::Error,
            format!("no usable store, credentials_store = \"{mode}\"{note}"),
        )
        .fix(
            "start a keyring (Secret Service), or set `credentials_store = \"file\"` in the config and restart corrald",
        ),
    }
}
