//! `corral service install|uninstall|status`: the systemd user units or the
//! launchd agent for the current user, written from the templates committed
//! in `systemd/` and `launchd/` (compiled in, so there is one source of
//! truth), with the real path of `corrald` and the caller's PATH filled in.
//!
//! Nothing here needs root or runs the service manager: the files are
//! written, and the commands to run are printed. `status` does ask the
//! manager (`systemctl --user`, `launchctl print`), read-only.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use serde::Serialize;

/// The committed systemd service unit.
pub(crate) const SYSTEMD_SERVICE_TEMPLATE: &str = include_str!("../../systemd/corral.service");
/// The committed systemd socket unit.
pub(crate) const SYSTEMD_SOCKET_TEMPLATE: &str = include_str!("../../systemd/corral.socket");
/// The committed launchd agent.
pub(crate) const LAUNCHD_TEMPLATE: &str = include_str!("../../launchd/dev.corral.corrald.plist");

/// Environment variable that overrides where the files go (tests, unusual setups).
pub(crate) const SERVICE_DIR_ENV: &str = "CORRAL_SERVICE_DIR";

/// The launchd label, also the plist's file name.
pub(crate) const LAUNCHD_LABEL: &str = "dev.corral.corrald";

/// Which service manager the files are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Manager {
    /// systemd user units (`corral.service`, `corral.socket`).
    Systemd,
    /// A launchd LaunchAgent (`dev.corral.corrald.plist`).
    Launchd,
}

impl Manager {
    /// This platform's manager.
    pub(crate) fn native() -> Self {
        if cfg!(target_os = "macos") {
            Self::Launchd
        } else {
            Self::Systemd
        }
    }
}

/// Where and for what the files are written.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) manager: Manager,
    pub(crate) dir: PathBuf,
}

impl Target {
    /// `--dir`, else `$CORRAL_SERVICE_DIR`, else the manager's per-user directory.
    pub(crate) fn resolve(manager: Option<Manager>, dir: Option<&Path>) -> anyhow::Result<Self> {
        if cfg!(windows) && manager.is_none() {
            bail!(
                "corral service supports systemd (Linux) and launchd (macOS); on Windows run corrald at logon yourself"
            );
        }
        let manager = manager.unwrap_or_else(Manager::native);
        let dir = match dir {
            Some(dir) => dir.to_path_buf(),
            None => match std::env::var_os(SERVICE_DIR_ENV).filter(|value| !value.is_empty()) {
                Some(dir) => PathBuf::from(dir),
                None => default_dir(manager)?,
            },
        };
        Ok(Self { manager, dir })
    }

    /// The files this target consists of, with their names.
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        match self.manager {
            Manager::Systemd => vec![self.dir.join("corral.service"), self.dir.join("corral.socket")],
            Manager::Launchd => vec![self.dir.join(format!("{LAUNCHD_LABEL}.plist"))],
        }
    }
}

pub(crate) fn home_dir() -> anyhow::Result<PathBuf> {
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
        .context("$HOME is not set: cannot find your per-user service directory; pass --dir")
}

fn default_dir(manager: Manager) -> anyhow::Result<PathBuf> {
    Ok(match manager {
        Manager::Systemd => match std::env::var_os("XDG_CONFIG_HOME").filter(|dir| !dir.is_empty()) {
            Some(config) => PathBuf::from(config).join("systemd").join("user"),
            None => home_dir()?.join(".config").join("systemd").join("user"),
        },
        Manager::Launchd => home_dir()?.join("Library").join("LaunchAgents"),
    })
}

/// The `corrald` to run: `explicit`, else the one next to this `corral`, else the first on PATH.
pub(crate) fn find_corrald(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let name = format!("corrald{}", std::env::consts::EXE_SUFFIX);
    let candidate = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let beside = std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|dir| dir.join(&name)))
                .filter(|path| path.is_file());
            match beside {
                Some(path) => path,
                None => which::which(&name).with_context(|| {
                    format!(
                        "cannot find {name} next to corral or on PATH: install it \
                         (`cargo install --locked --path daemon`) or pass --corrald PATH"
                    )
                })?,
            }
        }
    };
    let path = std::fs::canonicalize(&candidate)
        .with_context(|| format!("corrald at {} does not exist", candidate.display()))?;
    if !path.is_file() {
        bail!(
            "{} is not a file: pass the corrald binary with --corrald",
            path.display()
        );
    }
    Ok(path)
}

/// The PATH written into the service: the caller's, so servers find npx/uvx
/// as in the caller's terminal. Relative entries are dropped (they would
/// depend on the service's working directory).
pub(crate) fn service_path(from: Option<OsString>) -> String {
    let path = from.unwrap_or_default();
    let entries: Vec<String> = std::env::split_paths(&path)
        .filter(|entry| entry.is_absolute())
        .map(|entry| entry.display().to_string())
        .fold(Vec::new(), |mut kept, entry| {
            if !kept.contains(&entry) {
                kept.push(entry);
            }
            kept
        });
    if entries.is_empty() {
        "/usr/local/bin:/usr/bin:/bin".to_owned()
    } else {
        entries.join(":")
    }
}

/// What goes into the files.
#[derive(Debug, Clone)]
pub(crate) struct Fill {
    pub(crate) corrald: PathBuf,
    pub(crate) home: PathBuf,
    pub(crate) path: String,
}

/// Quote a value for a systemd unit line: `%` and `$` are specifiers and
/// variables there, `"` and `\` need escaping inside quotes.
fn systemd_quote(value: &str) -> String {
    let mut out = String::from("\"");
    for character in value.chars() {
        match character {
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            other => out.push(other),
        }
    }
    out.push('"');
    out
}

/// Replace the one line starting with `key` in `template`.
fn replace_line(template: &str, key: &str, line: &str) -> anyhow::Result<String> {
    let mut found = 0;
    let text: Vec<&str> = template
        .lines()
        .map(|existing| {
            if existing.starts_with(key) {
                found += 1;
                line
            } else {
                existing
            }
        })
        .collect();
    if found != 1 {
        bail!("the built-in template has {found} lines starting with `{key}`, expected one (a bug in corral)");
    }
    Ok(text.join("\n") + "\n")
}

fn xml_escape(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The content of each file of `target`, in [`Target::files`] order.
pub(crate) fn render(target: &Target, fill: &Fill) -> anyhow::Result<Vec<String>> {
    match target.manager {
        Manager::Systemd => {
            let corrald = fill.corrald.display().to_string();
            let service = replace_line(
                SYSTEMD_SERVICE_TEMPLATE,
                "ExecStart=",
                &format!("ExecStart={}", systemd_quote(&corrald)),
            )?;
            let service = replace_line(
                &service,
                "Environment=PATH=",
                &format!("Environment={}", systemd_quote(&format!("PATH={}", fill.path))),
            )?;
            Ok(vec![service, SYSTEMD_SOCKET_TEMPLATE.to_owned()])
        }
        Manager::Launchd => {
            let plist = LAUNCHD_TEMPLATE
                .replace("@CORRALD@", &xml_escape(&fill.corrald.display().to_string()))
                .replace("@HOME@", &xml_escape(&fill.home.display().to_string()))
                .replace("@PATH@", &xml_escape(&fill.path));
            Ok(vec![plist])
        }
    }
}

/// The commands a user runs after install, for `target`.
pub(crate) fn next_steps(target: &Target, files: &[PathBuf]) -> Vec<String> {
    let default_dir = default_dir(target.manager).ok();
    let custom_dir = default_dir.as_deref() != Some(target.dir.as_path());
    match target.manager {
        Manager::Systemd => {
            let mut steps = Vec::new();
            if custom_dir {
                steps.push(format!(
                    "{} is not systemd's user unit directory: link the files with `systemctl --user link {}`",
                    target.dir.display(),
                    files
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
            }
            steps.push("systemctl --user daemon-reload".to_owned());
            steps.push("systemctl --user enable --now corral.service   # start at login".to_owned());
            steps.push("systemctl --user enable --now corral.socket    # or: start on the first connection".to_owned());
            steps.push("systemctl --user status corral                 # check".to_owned());
            steps
        }
        Manager::Launchd => {
            let plist = files.first().map(|f| f.display().to_string()).unwrap_or_default();
            vec![
                format!("launchctl bootstrap gui/$(id -u) {plist}"),
                format!("launchctl print gui/$(id -u)/{LAUNCHD_LABEL}   # check"),
            ]
        }
    }
}

/// `corral service install`: write the files; returns what was written.
pub(crate) fn install(target: &Target, fill: &Fill) -> anyhow::Result<Vec<PathBuf>> {
    let contents = render(target, fill)?;
    std::fs::create_dir_all(&target.dir).with_context(|| format!("cannot create {}", target.dir.display()))?;
    let files = target.files();
    for (path, content) in files.iter().zip(contents) {
        // Write then rename: a manager reading the file never sees half of it.
        let mut temporary = path.as_os_str().to_os_string();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        std::fs::write(&temporary, content).with_context(|| format!("cannot write {}", temporary.display()))?;
        std::fs::rename(&temporary, path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(files)
}

/// `corral service uninstall`: remove the files; returns those that existed.
pub(crate) fn uninstall(target: &Target) -> anyhow::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for path in target.files() {
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error).with_context(|| format!("cannot remove {}", path.display())),
        }
    }
    Ok(removed)
}

/// One installed (or missing) file.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FileState {
    pub(crate) path: PathBuf,
    pub(crate) installed: bool,
    /// The `corrald` it runs, when it names one.
    pub(crate) corrald: Option<String>,
    /// Whether that `corrald` exists.
    pub(crate) corrald_exists: Option<bool>,
}

/// What the service manager says, if it could be asked.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ManagerState {
    /// e.g. `corral.service: enabled, active`.
    pub(crate) lines: Vec<String>,
    /// Whether the daemon's unit/agent is running, when known.
    pub(crate) active: Option<bool>,
    /// Why the manager could not be asked.
    pub(crate) error: Option<String>,
}

/// `corral service status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceStatus {
    pub(crate) manager: Manager,
    pub(crate) dir: PathBuf,
    pub(crate) files: Vec<FileState>,
    pub(crate) service_manager: ManagerState,
}

fn corrald_of(manager: Manager, text: &str) -> Option<String> {
    match manager {
        Manager::Systemd => text
            .lines()
            .find_map(|line| line.strip_prefix("ExecStart="))
            .map(|value| value.trim().trim_matches('"').replace("%%", "%").replace("$$", "$"))
            .filter(|value| !value.contains("%h")),
        Manager::Launchd => {
            let start = text.find("<key>ProgramArguments</key>")?;
            let rest = &text[start..];
            let open = rest.find("<string>")? + "<string>".len();
            let close = rest[open..].find("</string>")?;
            Some(
                rest[open..open + close]
                    .replace("&amp;", "&")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">"),
            )
        }
    }
}

pub(crate) fn status(target: &Target) -> ServiceStatus {
    let files = target
        .files()
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).ok();
            let corrald = text.as_deref().and_then(|text| corrald_of(target.manager, text));
            let corrald_exists = corrald.as_deref().map(|corrald| Path::new(corrald).is_file());
            FileState {
                installed: text.is_some(),
                path,
                corrald,
                corrald_exists,
            }
        })
        .collect();
    ServiceStatus {
        manager: target.manager,
        dir: target.dir.clone(),
        files,
        service_manager: ask_manager(target.manager),
    }
}

/// Run a read-only query of the service manager; its trimmed stdout, or why not.
fn query(program: &str, args: &[&str]) -> Result<(bool, String), String> {
    match Command::new(program).args(args).output() {
        Ok(output) => {
            let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            if stdout.is_empty() && !stderr.is_empty() {
                Err(stderr.lines().next().unwrap_or_default().to_owned())
            } else {
                Ok((output.status.success(), stdout))
            }
        }
        Err(error) => Err(format!("cannot run {program}: {error}")),
    }
}

fn ask_manager(manager: Manager) -> ManagerState {
    match manager {
        Manager::Systemd => {
            let mut lines = Vec::new();
            let mut active = None;
            for unit in ["corral.service", "corral.socket"] {
                let enabled = query("systemctl", &["--user", "is-enabled", unit]);
                let state = query("systemctl", &["--user", "is-active", unit]);
                match (enabled, state) {
                    (Ok((_, enabled)), Ok((is_active, state))) => {
                        if unit == "corral.service" {
                            active = Some(is_active);
                        }
                        lines.push(format!("{unit}: {enabled}, {state}"));
                    }
                    (Err(error), _) | (_, Err(error)) => {
                        return ManagerState {
                            lines,
                            active: None,
                            error: Some(format!("cannot ask systemd (systemctl --user): {error}")),
                        };
                    }
                }
            }
            ManagerState {
                lines,
                active,
                error: None,
            }
        }
        Manager::Launchd => {
            #[cfg(unix)]
            // SAFETY: getuid has no preconditions and cannot fail.
            let uid = unsafe { libc::getuid() };
            #[cfg(not(unix))]
            let uid = "?";
            let service = format!("gui/{uid}/{LAUNCHD_LABEL}");
            match query("launchctl", &["print", &service]) {
                Ok((true, output)) => {
                    let running = output.lines().any(|line| line.trim() == "state = running");
                    ManagerState {
                        lines: vec![format!(
                            "{service}: loaded, {}",
                            if running { "running" } else { "not running" }
                        )],
                        active: Some(running),
                        error: None,
                    }
                }
                Ok((false, _)) => ManagerState {
                    lines: vec![format!("{service}: not loaded")],
                    active: Some(false),
                    error: None,
                },
                Err(error) => ManagerState {
                    lines: Vec::new(),
                    active: None,
                    error: Some(format!("cannot ask launchd: {error}")),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill() -> Fill {
        Fill {
            corrald: PathBuf::from("/opt/my tools/corrald"),
            home: PathBuf::from("/home/ada"),
            path: "/home/ada/.nvm/versions/node/v22/bin:/usr/bin:/bin".to_owned(),
        }
    }

    #[test]
    fn systemd_unit_gets_the_binary_and_path_quoted() {
        let target = Target {
            manager: Manager::Systemd,
            dir: PathBuf::from("/tmp/x"),
        };
        let files = render(&target, &fill()).expect("render");
        assert!(
            files[0].contains("\nExecStart=\"/opt/my tools/corrald\"\n"),
            "{}",
            files[0]
        );
        assert!(
            files[0].contains("\nEnvironment=\"PATH=/home/ada/.nvm/versions/node/v22/bin:/usr/bin:/bin\"\n"),
            "{}",
            files[0]
        );
        assert_eq!(files[1], SYSTEMD_SOCKET_TEMPLATE);
        assert_eq!(
            corrald_of(Manager::Systemd, &files[0]).as_deref(),
            Some("/opt/my tools/corrald")
        );
        assert_eq!(systemd_quote("50%$x"), "\"50%%$$x\"");
    }

    #[test]
    fn plist_gets_every_placeholder_filled() {
        let target = Target {
            manager: Manager::Launchd,
            dir: PathBuf::from("/tmp/x"),
        };
        let files = render(&target, &fill()).expect("render");
        assert!(!files[0].contains('@'), "{}", files[0]);
        assert_eq!(
            corrald_of(Manager::Launchd, &files[0]).as_deref(),
            Some("/opt/my tools/corrald")
        );
    }

    #[test]
    fn service_path_keeps_absolute_entries_once() {
        let path = std::env::join_paths(["/a", "rel", "/b", "/a"]).expect("join");
        assert_eq!(service_path(Some(path)), "/a:/b");
        assert_eq!(service_path(None), "/usr/local/bin:/usr/bin:/bin");
    }
}
