//! Where the daemon's socket and config file live, so that the daemon and
//! every client find the same place without being told.
//!
//! Socket, in order: an explicit path (flag), `$CORRAL_SOCKET`,
//! `$XDG_RUNTIME_DIR/corral/corral.sock`, then `$TMPDIR/corral-<uid>/corral.sock`
//! (falling back to `/tmp` when that would be too long for a socket address).
//! On Windows a named pipe `\\.\pipe\corral-<user>`.
//!
//! Config, in order: an explicit path, `$CORRAL_CONFIG`, then
//! `config.toml` in the user's config directory (`~/.config/corral/` on Linux).

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Environment variable that overrides the socket path.
pub const SOCKET_ENV: &str = "CORRAL_SOCKET";
/// Environment variable that overrides the config file path.
pub const CONFIG_ENV: &str = "CORRAL_CONFIG";
/// Environment variable that overrides the data directory (stored credentials).
pub const DATA_DIR_ENV: &str = "CORRAL_DATA_DIR";

/// Longest socket path that fits `sockaddr_un.sun_path` on every Unix we
/// support (macOS has 104 bytes including the terminating NUL).
pub const MAX_SOCKET_PATH_BYTES: usize = 103;

/// The socket path a daemon or client uses when given `explicit` (or none).
pub fn socket_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_path_buf();
    }
    if let Some(path) = non_empty_env(SOCKET_ENV) {
        return PathBuf::from(path);
    }
    default_socket_path()
}

/// The config path a daemon or `corral config check` uses when given `explicit` (or none).
pub fn config_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_path_buf();
    }
    if let Some(path) = non_empty_env(CONFIG_ENV) {
        return PathBuf::from(path);
    }
    default_config_path()
}

/// `config.toml` in the user's config directory.
pub fn default_config_path() -> PathBuf {
    match directories::ProjectDirs::from("", "", "corral") {
        Some(dirs) => dirs.config_dir().join("config.toml"),
        // No home directory at all: use the working directory rather than fail.
        None => PathBuf::from("corral.toml"),
    }
}

/// The data directory (credentials files) a daemon uses when given `explicit` (or none):
/// `$CORRAL_DATA_DIR`, then the user's data directory (`~/.local/share/corral` on Linux).
pub fn data_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_path_buf();
    }
    if let Some(path) = non_empty_env(DATA_DIR_ENV) {
        return PathBuf::from(path);
    }
    match directories::ProjectDirs::from("", "", "corral") {
        Some(dirs) => dirs.data_dir().to_path_buf(),
        // No home directory at all: use the working directory rather than fail.
        None => PathBuf::from("corral-data"),
    }
}

#[cfg(unix)]
fn default_socket_path() -> PathBuf {
    if let Some(runtime) = non_empty_env("XDG_RUNTIME_DIR").map(PathBuf::from) {
        let candidate = runtime.join("corral").join("corral.sock");
        if runtime.is_absolute() && fits_socket_address(&candidate) {
            return candidate;
        }
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let dir_name = format!("corral-{uid}");
    let tmp = env::temp_dir();
    let candidate = tmp.join(&dir_name).join("corral.sock");
    if fits_socket_address(&candidate) {
        candidate
    } else {
        PathBuf::from("/tmp").join(dir_name).join("corral.sock")
    }
}

#[cfg(windows)]
fn default_socket_path() -> PathBuf {
    let user = non_empty_env("USERNAME").unwrap_or_else(|| OsString::from("default"));
    let mut name = OsString::from(r"\\.\pipe\corral-");
    name.push(user);
    PathBuf::from(name)
}

/// Whether `path` fits in a Unix socket address.
pub fn fits_socket_address(path: &Path) -> bool {
    path.as_os_str().len() <= MAX_SOCKET_PATH_BYTES
}

fn non_empty_env(name: &str) -> Option<OsString> {
    env::var_os(name).filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_paths_win() {
        let explicit = Path::new("/somewhere/else.sock");
        assert_eq!(socket_path(Some(explicit)), explicit);
        let explicit = Path::new("/somewhere/config.toml");
        assert_eq!(config_path(Some(explicit)), explicit);
    }

    #[cfg(unix)]
    #[test]
    fn default_socket_fits_an_address() {
        assert!(fits_socket_address(&default_socket_path()));
        assert!(default_socket_path().ends_with("corral.sock"));
    }
}
