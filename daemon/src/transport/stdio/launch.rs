//! Launching stdio MCP servers: the one audited place where corrald starts a
//! child process.
//!
//! - The environment is built, not inherited: a short allow-list of the
//!   daemon's variables, then the names in `env_vars`, then the literal `env`
//!   map, all as `OsString` so that non-UTF-8 values survive.
//! - The working directory is the configured `cwd` (checked to exist), else
//!   the user's home directory: never whatever directory the daemon happened
//!   to be started in.
//! - The program is resolved before spawning, on the *child's* PATH (and
//!   PATHEXT on Windows, so `npx` finds `npx.cmd`); a missing program is a
//!   typed error naming the program and the PATH searched, and a `command`
//!   that exists but cannot be run (a directory, a file without execute
//!   permission) says what it is and where.
//! - The child leads its own process group (a Job Object on Windows), so the
//!   whole tree can be signalled at once; it is spawned through process-wrap
//!   and registered as a leader under the process registry's lock.
//! - With a cgroup leaf (`--server-cgroups`), the child moves itself into it
//!   between fork and exec: a `pre_exec` that only calls `write(2)` on an fd
//!   the parent opened, so nothing it starts is ever outside the leaf.
//! - rmcp gets only the pipes, never the child, so the teardown and its
//!   timing are corrald's (`process::teardown`), not rmcp's.
//! - stderr is always drained (a full pipe would block the server, `stderr.rs`) into a
//!   bounded ring of the last 50 lines and into the log, rate-limited.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use corral_protocol::config::StdioConfig;
use process_wrap::tokio::{ChildWrapper, CommandWrap};
use tokio::process::{ChildStdin, ChildStdout};

/// Variables copied from the daemon's environment into every child.
#[cfg(unix)]
pub const DEFAULT_ENV_VARS: &[&str] = &[
    "HOME", "LOGNAME", "PATH", "SHELL", "USER", "LANG", "LC_ALL", "TERM", "TMPDIR", "TZ",
];

/// Variables copied from the daemon's environment into every child.
#[cfg(windows)]
pub const DEFAULT_ENV_VARS: &[&str] = &[
    "PATH",
    "PATHEXT",
    "COMSPEC",
    "SYSTEMROOT",
    "SYSTEMDRIVE",
    "USERNAME",
    "USERDOMAIN",
    "USERPROFILE",
    "HOMEDRIVE",
    "HOMEPATH",
    "PROGRAMFILES",
    "PROGRAMFILES(X86)",
    "PROGRAMW6432",
    "PROGRAMDATA",
    "LOCALAPPDATA",
    "APPDATA",
    "TEMP",
    "TMP",
];

/// Why a server could not be launched.
#[derive(Debug)]
pub enum LaunchError {
    /// The program is not on the child's PATH (or the given path does not exist).
    ExecutableNotFound {
        /// The configured command.
        program: String,
        /// The PATH that was searched, lossily decoded.
        searched: String,
    },
    /// The command exists but cannot be run: a directory, or a file without execute permission.
    NotExecutable {
        /// The configured command.
        program: String,
        /// What was found.
        path: PathBuf,
        /// What it is, e.g. `is a directory`.
        problem: String,
    },
    /// The configured `cwd` does not exist or is not a directory.
    BadWorkingDirectory {
        /// The directory.
        cwd: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The OS refused to start the process.
    Spawn {
        /// The resolved program.
        program: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
}

impl std::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ExecutableNotFound { program, searched } => {
                write!(f, "executable `{program}` not found on the server's PATH ({searched})")
            }
            Self::NotExecutable { program, path, problem } => {
                if Path::new(program) == path {
                    write!(f, "command {} {problem}", path.display())
                } else {
                    write!(
                        f,
                        "command `{program}` found at {} on the server's PATH, which {problem}",
                        path.display()
                    )
                }
            }
            Self::BadWorkingDirectory { cwd, problem } => {
                write!(f, "working directory {} {problem}", cwd.display())
            }
            Self::Spawn { program, error } => write!(f, "cannot start {}: {error}", program.display()),
        }
    }
}

impl std::error::Error for LaunchError {}

/// A started server: its process and the pipes rmcp will speak MCP over.
pub struct Launched {
    /// The child, leader of its own process group.
    pub child: Box<dyn ChildWrapper>,
    /// Its process id (= process group id on Unix).
    pub pid: u32,
    /// The child's stdout: MCP messages from the server.
    pub stdout: ChildStdout,
    /// The child's stdin: MCP messages to the server.
    pub stdin: ChildStdin,
}

impl std::fmt::Debug for Launched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launched")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// The environment of a child: allow-list, then `env_vars`, then `env`.
pub fn child_env(config: &StdioConfig, lookup: impl Fn(&str) -> Option<OsString>) -> BTreeMap<OsString, OsString> {
    let mut env = BTreeMap::new();
    for name in DEFAULT_ENV_VARS
        .iter()
        .copied()
        .chain(config.env_vars.iter().map(String::as_str))
    {
        if let Some(value) = lookup(name) {
            env.insert(OsString::from(name), value);
        }
    }
    for (name, value) in &config.env {
        env.insert(OsString::from(name), OsString::from(value));
    }
    env
}

/// The directory a server runs in.
pub fn working_directory(config: &StdioConfig) -> Result<PathBuf, LaunchError> {
    let Some(cwd) = &config.cwd else {
        // No cwd configured: the home directory is predictable for the user;
        // the daemon's own cwd (often `/` under a service manager) is not.
        return Ok(std::env::home_dir().unwrap_or_else(std::env::temp_dir));
    };
    match std::fs::metadata(cwd) {
        Ok(metadata) if metadata.is_dir() => Ok(cwd.clone()),
        Ok(_) => Err(LaunchError::BadWorkingDirectory {
            cwd: cwd.clone(),
            problem: "is not a directory".to_owned(),
        }),
        Err(error) => Err(LaunchError::BadWorkingDirectory {
            cwd: cwd.clone(),
            problem: format!("cannot be used: {error}"),
        }),
    }
}

/// Find `program` on the child's PATH (relative paths are relative to `cwd`).
pub fn resolve_program(program: &str, env: &BTreeMap<OsString, OsString>, cwd: &Path) -> Result<PathBuf, LaunchError> {
    let path = env.get(OsStr::new("PATH")).cloned();
    which::which_in(program, path.as_ref(), cwd).map_err(|_| {
        // `which` says only "not found"; something by that name may be there
        // and unusable, and the user must be told which.
        if let Some((found, problem)) = unusable_candidate(program, path.as_deref(), cwd) {
            return LaunchError::NotExecutable {
                program: program.to_owned(),
                path: found,
                problem,
            };
        }
        LaunchError::ExecutableNotFound {
            program: program.to_owned(),
            searched: path.map_or_else(
                || "PATH is not set".to_owned(),
                |p| format!("PATH={}", p.to_string_lossy()),
            ),
        }
    })
}

/// The first file or directory `program` names (a path: itself, relative to
/// `cwd`; a bare name: the first match on `path`) and why it cannot be run.
fn unusable_candidate(program: &str, path: Option<&OsStr>, cwd: &Path) -> Option<(PathBuf, String)> {
    let candidates: Vec<PathBuf> = if Path::new(program).components().count() > 1 || Path::new(program).is_absolute() {
        vec![PathBuf::from(program)]
    } else {
        path.map(|path| std::env::split_paths(path).map(|dir| dir.join(program)).collect())
            .unwrap_or_default()
    };
    candidates.into_iter().find_map(|candidate| {
        let metadata = std::fs::metadata(cwd.join(&candidate)).ok()?;
        Some((candidate, why_not_executable(&metadata)))
    })
}

fn why_not_executable(metadata: &std::fs::Metadata) -> String {
    if metadata.is_dir() {
        return "is a directory, not a program".to_owned();
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = metadata.permissions().mode() & 0o7777;
        if metadata.is_file() {
            format!("is not executable (mode {mode:04o})")
        } else {
            format!("is not a regular file (mode {mode:04o})")
        }
    }
    #[cfg(not(unix))]
    "cannot be run".to_owned()
}

/// Start a stdio server. The only function in corrald that starts a process.
///
/// `marker` goes into the child's environment as [`crate::process::reaper::MARKER_VAR`],
/// so that every process of the server's tree can be found at teardown. With
/// a `leaf`, the child moves itself into that cgroup between fork and exec,
/// so everything it ever starts is in it too.
pub fn launch(
    server: &str,
    config: &StdioConfig,
    marker: &str,
    leaf: Option<&crate::process::cgroup::Leaf>,
    processes: &crate::process::reaper::Registry,
) -> Result<(Launched, tokio::process::ChildStderr), LaunchError> {
    let cwd = working_directory(config)?;
    let mut env = child_env(config, |name| std::env::var_os(name));
    env.insert(
        OsString::from(crate::process::reaper::MARKER_VAR),
        OsString::from(marker),
    );
    let program = resolve_program(&config.command, &env, &cwd)?;

    #[allow(clippy::disallowed_methods)] // The audited spawn point (see daemon/clippy.toml).
    let mut command = tokio::process::Command::new(&program);
    command
        .args(&config.args)
        .env_clear()
        .envs(&env)
        .current_dir(&cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Last resort if a Launched is dropped without teardown.
        .kill_on_drop(true);
    // Kept open until the spawn is done; the child's copy closes at exec.
    let leaf_procs = match leaf.map(crate::process::cgroup::Leaf::procs_for_writing).transpose() {
        Ok(procs) => procs,
        Err(error) => {
            tracing::warn!(server, %error, "cannot open the server's cgroup; it runs without one");
            None
        }
    };
    // corrald raised its own soft open-file limit; the server gets the one
    // corrald was given (a program that needs more raises it itself).
    #[cfg(unix)]
    let open_files = processes
        .child_open_files()
        .map(|(soft, hard)| rustix::process::Rlimit {
            current: Some(soft),
            maximum: hard,
        });
    #[cfg(target_os = "linux")]
    let leaf_fd = leaf_procs.as_ref().map(|procs| {
        use std::os::fd::AsRawFd as _;
        procs.as_raw_fd()
    });
    #[cfg(unix)]
    if open_files.is_some() || cfg!(target_os = "linux") && leaf_procs.is_some() {
        // SAFETY: the closure runs in the child between fork and exec. It
        // does not allocate and makes only two system calls: setrlimit(2)
        // with a value computed before the fork, and write(2) on an fd the
        // parent keeps open until the spawn returned. Failures are not fatal
        // here (the parent checks the cgroup after the spawn; a server with
        // corrald's higher limit works as before).
        unsafe {
            command.pre_exec(move || {
                if let Some(limit) = &open_files {
                    let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, *limit);
                }
                #[cfg(target_os = "linux")]
                if let Some(fd) = leaf_fd {
                    let _ = libc::write(fd, b"0".as_ptr().cast(), 1);
                }
                Ok(())
            });
        }
    }
    let mut wrapped = CommandWrap::from(command);
    #[cfg(unix)]
    wrapped.wrap(process_wrap::tokio::ProcessGroup::leader());
    #[cfg(windows)]
    wrapped.wrap(process_wrap::tokio::JobObject);

    let mut child = processes
        .spawn_leader(server, || {
            let child = wrapped.spawn()?;
            let pid = child.id().unwrap_or_default();
            Ok((child, pid))
        })
        .map_err(|error| LaunchError::Spawn {
            program: program.clone(),
            error,
        })?;
    drop(leaf_procs);
    let pid = child.id().unwrap_or_default();
    if let Some(leaf) = leaf
        && !leaf.holds(pid)
    {
        tracing::warn!(server, pid, cgroup = %leaf.path().display(), "the server did not move into its cgroup; it runs without one");
    }
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin().take(), child.stdout().take(), child.stderr().take())
    else {
        let _ = child.start_kill();
        return Err(LaunchError::Spawn {
            program,
            error: std::io::Error::other("the child's pipes were not created"),
        });
    };
    Ok((
        Launched {
            child,
            pid,
            stdout,
            stdin,
        },
        stderr,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stdio(command: &str) -> StdioConfig {
        let text = format!("[servers.s]\ncommand = {command:?}\nenv = {{ A = \"literal\" }}\nenv_vars = [\"EXTRA\"]\n");
        let config = corral_protocol::config::parse(&text, Path::new("t.toml")).expect("valid config");
        match &config.servers["s"].transport {
            corral_protocol::config::TransportConfig::Stdio(stdio) => stdio.clone(),
            corral_protocol::config::TransportConfig::StreamableHttp(_) => panic!("expected stdio"),
        }
    }

    #[cfg(unix)]
    #[test]
    fn env_is_built_from_allow_list_env_vars_and_literals_and_keeps_non_utf8() {
        use std::os::unix::ffi::OsStringExt as _;
        let non_utf8 = OsString::from_vec(vec![b'/', 0xff, b'b', b'i', b'n']);
        let parent: BTreeMap<&str, OsString> = [
            ("PATH", non_utf8.clone()),
            ("EXTRA", OsString::from("x")),
            ("SECRET", OsString::from("leak")),
            ("A", OsString::from("from-parent")),
        ]
        .into();
        let env = child_env(&stdio("srv"), |name| parent.get(name).cloned());
        assert_eq!(env.get(OsStr::new("PATH")), Some(&non_utf8));
        assert_eq!(env.get(OsStr::new("EXTRA")), Some(&OsString::from("x")));
        assert_eq!(env.get(OsStr::new("A")), Some(&OsString::from("literal")));
        assert!(!env.contains_key(OsStr::new("SECRET")), "not on the allow-list");
    }

    #[test]
    fn a_missing_program_names_the_program_and_the_path() {
        let env: BTreeMap<OsString, OsString> = [(OsString::from("PATH"), OsString::from("/nonexistent-dir"))].into();
        let error = resolve_program("definitely-not-a-program", &env, Path::new("/")).expect_err("not found");
        assert_eq!(
            error.to_string(),
            "executable `definitely-not-a-program` not found on the server's PATH (PATH=/nonexistent-dir)"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_or_a_non_executable_file_says_what_it_is() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("corral-stdio-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let file = dir.join("tool");
        std::fs::write(&file, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let env: BTreeMap<OsString, OsString> = [(OsString::from("PATH"), dir.clone().into_os_string())].into();
        let as_directory = resolve_program(&dir.display().to_string(), &env, Path::new("/")).expect_err("a directory");
        assert_eq!(
            as_directory.to_string(),
            format!("command {} is a directory, not a program", dir.display())
        );
        let as_path = resolve_program(&file.display().to_string(), &env, Path::new("/")).expect_err("not executable");
        assert_eq!(
            as_path.to_string(),
            format!("command {} is not executable (mode 0640)", file.display())
        );
        let on_path = resolve_program("tool", &env, Path::new("/")).expect_err("not executable");
        assert_eq!(
            on_path.to_string(),
            format!(
                "command `tool` found at {} on the server's PATH, which is not executable (mode 0640)",
                file.display()
            )
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
