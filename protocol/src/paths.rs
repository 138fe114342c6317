//! Where the daemon's socket and config file live, so that the daemon and
//! every client find the same place without being told.
//!
//! Socket, in order: an explicit path (flag), `$CORRAL_SOCKET`,
//! `$XDG_RUNTIME_DIR/corral/corral.sock` (without the variable, on Linux, the
//! login session's `/run/user/<uid>` when it is the user's private directory:
//! MCP clients start `corral mcp` with a short environment), then
//! `$TMPDIR/corral-<uid>/corral.sock` (on macOS without `TMPDIR`, the per-user
//! temp directory), falling back to `/tmp` when that would be too long for a
//! socket address.
//! On Windows a named pipe `\\.\pipe\corral-<user>`.
//!
//! Config, in order: an explicit path, `$CORRAL_CONFIG`, then
//! `config.toml` in the user's config directory (`~/.config/corral/` on Linux).
//!
//! Trust (Unix): a socket is only used when its directory is private to the
//! user ([`check_private_dir`]: a real directory, not a symbolic link, owned by
//! the effective uid, writable by nobody else), because whoever can write that
//! directory can put their own socket (or lock file, or children record) in
//! its place. The daemon refuses to bind in any other directory, and clients
//! refuse to connect through one; clients also check the serving process's uid
//! ([`UntrustedSocket::PeerIsOtherUser`]). The daemon keeps the directory open
//! ([`open_private_dir`]) and reaches its files only relative to that
//! descriptor, so a directory swapped in at the same path afterwards is never
//! used.

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

/// Where logs of a daemon started in the background go (`corral mcp` starts
/// corrald when none runs): the user's state directory (`$XDG_STATE_HOME/corral`,
/// `~/.local/state/corral` on Linux), else the local data directory where a
/// platform has no state directory (macOS, Windows).
pub fn state_dir() -> PathBuf {
    match directories::ProjectDirs::from("", "", "corral") {
        Some(dirs) => dirs.state_dir().unwrap_or_else(|| dirs.data_local_dir()).to_path_buf(),
        // No home directory at all: use the working directory rather than fail.
        None => PathBuf::from("corral-state"),
    }
}

#[cfg(unix)]
fn default_socket_path() -> PathBuf {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let runtime = non_empty_env("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .or_else(|| session_runtime_dir(uid));
    socket_in(runtime.as_deref(), &user_temp_dir(), uid)
}

/// The default socket given the runtime directory (if any), the user's
/// temp directory and uid: `RUNTIME/corral/corral.sock` when that is an
/// absolute path short enough, else `TEMP/corral-UID/corral.sock`, else the
/// same under `/tmp`.
#[cfg(unix)]
fn socket_in(runtime: Option<&Path>, temp: &Path, uid: u32) -> PathBuf {
    if let Some(runtime) = runtime {
        let candidate = runtime.join("corral").join("corral.sock");
        if runtime.is_absolute() && fits_socket_address(&candidate) {
            return candidate;
        }
    }
    let dir_name = format!("corral-{uid}");
    let candidate = temp.join(&dir_name).join("corral.sock");
    if fits_socket_address(&candidate) {
        candidate
    } else {
        PathBuf::from("/tmp").join(dir_name).join("corral.sock")
    }
}

/// The login session's runtime directory when `XDG_RUNTIME_DIR` is not in
/// the environment. MCP clients start their servers (`corral mcp` among
/// them) with a short environment of their own (`HOME`, `PATH`, `USER`…),
/// while the daemon runs as a service that has the variable: without this,
/// such a `corral mcp` would look for the socket elsewhere, find none, and
/// start a second daemon with a second copy of every server. On Linux that
/// is `/run/user/UID`, what systemd-logind makes and gives the user's
/// services as `XDG_RUNTIME_DIR`, used only when it is the user's own
/// directory that nobody else can enter.
#[cfg(target_os = "linux")]
fn session_runtime_dir(uid: u32) -> Option<PathBuf> {
    private_dir_of(Path::new(&format!("/run/user/{uid}")), uid)
}

#[cfg(all(unix, not(target_os = "linux")))]
fn session_runtime_dir(_uid: u32) -> Option<PathBuf> {
    None
}

/// `dir` if it is a directory (not a link to one) owned by `uid` with no
/// permission for group or others.
#[cfg(unix)]
fn private_dir_of(dir: &Path, uid: u32) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let metadata = std::fs::symlink_metadata(dir).ok()?;
    (metadata.is_dir() && metadata.uid() == uid && metadata.mode() & 0o077 == 0).then(|| dir.to_path_buf())
}

/// The user's temp directory: `$TMPDIR`; on macOS without it (an MCP
/// client's short environment, again), the per-user one the system gives
/// every process of the user as `TMPDIR` (`confstr(_CS_DARWIN_USER_TEMP_DIR)`),
/// so that `corral mcp` finds the launchd agent's socket; else the
/// platform's default.
#[cfg(unix)]
fn user_temp_dir() -> PathBuf {
    if let Some(temp) = non_empty_env("TMPDIR") {
        return PathBuf::from(temp);
    }
    #[cfg(target_os = "macos")]
    if let Some(temp) = darwin_user_temp_dir() {
        return temp;
    }
    env::temp_dir()
}

#[cfg(target_os = "macos")]
fn darwin_user_temp_dir() -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt as _;
    let mut buffer = vec![0_u8; 1024];
    // SAFETY: confstr writes at most `buffer.len()` bytes, NUL included, and
    // returns the length it needed (NUL included), 0 on error.
    let needed = unsafe { libc::confstr(libc::_CS_DARWIN_USER_TEMP_DIR, buffer.as_mut_ptr().cast(), buffer.len()) };
    if needed == 0 || needed > buffer.len() {
        return None;
    }
    buffer.truncate(needed - 1);
    Some(PathBuf::from(OsString::from_vec(buffer)))
}

#[cfg(windows)]
fn default_socket_path() -> PathBuf {
    let user = non_empty_env("USERNAME").unwrap_or_else(|| OsString::from("default"));
    let mut name = OsString::from(r"\\.\pipe\corral-");
    name.push(user);
    PathBuf::from(name)
}

/// The directory holding `socket` (`.` for a bare file name).
pub fn socket_dir(socket: &Path) -> &Path {
    socket
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The effective uid of this process: who the daemon runs as, and whom a
/// client expects to find serving its socket.
#[cfg(unix)]
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Why a socket (or the directory of the daemon's files) is not to be trusted.
///
/// Each variant names the directory or the uids involved, so the message says
/// who could have planted what.
#[cfg(unix)]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UntrustedSocket {
    /// The directory is a symbolic link: whoever made it chose where it points.
    #[error("its directory {} is a symbolic link, not a directory of yours", dir.display())]
    DirIsSymlink {
        /// The directory.
        dir: PathBuf,
    },
    /// The path of the directory is not a directory.
    #[error("{} is not a directory", dir.display())]
    DirNotADirectory {
        /// The directory.
        dir: PathBuf,
    },
    /// The directory belongs to another user, who can replace anything in it.
    ///
    /// The message says how to get out: a default directory (`$TMPDIR/corral-<uid>`)
    /// another user created first stays unusable for as long as it exists.
    #[error(
        "its directory {} belongs to uid {owner}, not to you (uid {own_uid}): while {} exists, \
         set XDG_RUNTIME_DIR to a private directory, or pass --socket (or CORRAL_SOCKET) with a path \
         in a directory only you can write",
        dir.display(),
        dir.display()
    )]
    DirOwnedByOther {
        /// The directory.
        dir: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        own_uid: u32,
    },
    /// Group or others may create, rename and delete files in the directory.
    ///
    /// Unless it is sticky (a shared directory like `/tmp`), the message says
    /// which `chmod` makes it private: a umask of 002 makes a user's own new
    /// directories group-writable.
    #[error(
        "its directory {} has mode {mode:o}: other users can create or replace files in it{}",
        dir.display(),
        chmod_hint(dir, *mode)
    )]
    DirWritableByOthers {
        /// The directory.
        dir: PathBuf,
        /// Its permission bits (with setuid/setgid/sticky).
        mode: u32,
    },
    /// The directory could not be inspected (missing: see [`UntrustedSocket::is_missing`]).
    #[error("cannot inspect its directory {}: {error}", dir.display())]
    DirUnreadable {
        /// The directory.
        dir: PathBuf,
        /// What `lstat` said.
        error: std::io::Error,
    },
    /// The process listening on the socket runs as another user.
    #[error(
        "it is served by a process of uid {peer_uid}, not by you (uid {own_uid}): another user may be impersonating corrald"
    )]
    PeerIsOtherUser {
        /// The uid of the process at the other end (`SO_PEERCRED` / `getpeereid`).
        peer_uid: u32,
        /// Our effective uid.
        own_uid: u32,
    },
    /// The kernel would not say who serves the socket.
    #[error("cannot learn which user serves it: {error}")]
    PeerUnknown {
        /// The error of `SO_PEERCRED` / `getpeereid`.
        error: std::io::Error,
    },
}

#[cfg(unix)]
impl UntrustedSocket {
    /// Whether the directory does not exist (nothing to trust or distrust yet).
    pub fn is_missing(&self) -> bool {
        matches!(self, Self::DirUnreadable { error, .. } if error.kind() == std::io::ErrorKind::NotFound)
    }
}

/// What to run to make `dir` private, unless it is sticky (a shared
/// directory, which must not be made private: choose another one).
#[cfg(unix)]
fn chmod_hint(dir: &Path, mode: u32) -> String {
    if mode & 0o1000 == 0 {
        format!("; if you made it, run `chmod 700 {}`", dir.display())
    } else {
        String::new()
    }
}

/// Check that `dir` is private to this user: not a symbolic link, a
/// directory, owned by the effective uid, and writable by nobody else (no
/// group or other write bit, sticky or not). See [`open_private_dir`].
#[cfg(unix)]
pub fn check_private_dir(dir: &Path) -> Result<(), UntrustedSocket> {
    open_private_dir(dir).map(drop)
}

/// Open `dir` (`O_DIRECTORY|O_NOFOLLOW`: a symbolic link as its last
/// component is refused, not followed) and check, on the open descriptor
/// (`fstat`), that it is private to this user as [`check_private_dir`] says.
///
/// The descriptor is the directory that was checked, whatever happens to its
/// path afterwards: open, create, rename and remove files relative to it
/// (`openat`, `renameat`, `unlinkat`) and a directory swapped in at the same
/// path by someone who can write its parent is never used.
///
/// Only the last component is checked: the directories above it are where the
/// user (or the default: the runtime directory, or `$TMPDIR`) put it. The
/// daemon also refuses a parent that others can write unless it is sticky
/// (`daemon/src/api/socket.rs`).
#[cfg(unix)]
pub fn open_private_dir(dir: &Path) -> Result<std::os::fd::OwnedFd, UntrustedSocket> {
    use rustix::fs::{Mode, OFlags};
    let unreadable = |error: std::io::Error| UntrustedSocket::DirUnreadable {
        dir: dir.to_path_buf(),
        error,
    };
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(dir, flags, Mode::empty()) {
        Ok(fd) => fd,
        // ELOOP (a link) or ENOTDIR (not a directory, or a link on some
        // systems): say which, from the entry itself.
        Err(errno) if errno == rustix::io::Errno::LOOP || errno == rustix::io::Errno::NOTDIR => {
            return Err(match std::fs::symlink_metadata(dir) {
                Ok(metadata) if metadata.file_type().is_symlink() => {
                    UntrustedSocket::DirIsSymlink { dir: dir.to_path_buf() }
                }
                Ok(_) => UntrustedSocket::DirNotADirectory { dir: dir.to_path_buf() },
                Err(error) => unreadable(error),
            });
        }
        Err(errno) => return Err(unreadable(errno.into())),
    };
    let stat = rustix::fs::fstat(&fd).map_err(|errno| unreadable(errno.into()))?;
    let own_uid = effective_uid();
    if stat.st_uid != own_uid {
        return Err(UntrustedSocket::DirOwnedByOther {
            dir: dir.to_path_buf(),
            owner: stat.st_uid,
            own_uid,
        });
    }
    #[allow(clippy::useless_conversion, reason = "`st_mode` is a u16 on macOS")]
    let mode = u32::from(stat.st_mode);
    if mode & 0o022 != 0 {
        return Err(UntrustedSocket::DirWritableByOthers {
            dir: dir.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    Ok(fd)
}

/// Why a file that must be private to this user (a token) is not to be trusted or cannot be read.
///
/// Each variant names the file; the message says what to do.
#[cfg(unix)]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UntrustedFile {
    /// The directory holding it is not private to this user. The message
    /// gives a file's way out, not a socket's (`XDG_RUNTIME_DIR`, `--socket`).
    #[error("cannot trust {}: {}", path.display(), file_dir_problem(reason))]
    Dir {
        /// The file.
        path: PathBuf,
        /// What is wrong with its directory.
        reason: UntrustedSocket,
    },
    /// The file is a symbolic link: whoever made it chose what it points to.
    #[error("{} is a symbolic link, not a file of yours: remove it (corrald then writes a new one)", path.display())]
    Symlink {
        /// The file.
        path: PathBuf,
    },
    /// Not a regular file.
    #[error("{} is not a regular file: remove it (corrald then writes a new one)", path.display())]
    NotAFile {
        /// The file.
        path: PathBuf,
    },
    /// The file belongs to another user.
    #[error("{} belongs to uid {owner}, not to you (uid {own_uid}): remove it (corrald then writes a new one)", path.display())]
    OwnedByOther {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        own_uid: u32,
    },
    /// Group or others may read or write the file.
    #[error("{} has mode {mode:o}: other users can read or change it; remove it (corrald then writes a new one)", path.display())]
    OpenToOthers {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Larger than such a file can be.
    #[error("{} is larger than {max} bytes: not a file corrald wrote; remove it", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The most it may hold.
        max: u64,
    },
    /// It could not be opened or read.
    #[error("cannot read {}: {error}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
}

/// What is wrong with the directory of a private file, and the way out: one
/// only the user can write (such files are corrald's, in its data
/// directory, which [`DATA_DIR_ENV`] moves).
#[cfg(unix)]
fn file_dir_problem(reason: &UntrustedSocket) -> String {
    let elsewhere = format!("start corrald with {DATA_DIR_ENV} set to a directory only you can write");
    match reason {
        UntrustedSocket::DirOwnedByOther { dir, owner, own_uid } => format!(
            "its directory {} belongs to uid {owner}, not to you (uid {own_uid}): {elsewhere}",
            dir.display()
        ),
        UntrustedSocket::DirWritableByOthers { dir, mode } if mode & 0o1000 == 0 => format!(
            "its directory {} has mode {mode:o}: other users can create or replace files in it; if you made it, \
             run `chmod 700 {}`, else {elsewhere}",
            dir.display(),
            dir.display()
        ),
        UntrustedSocket::DirWritableByOthers { dir, mode } => format!(
            "its directory {} has mode {mode:o}: other users can create or replace files in it; {elsewhere}",
            dir.display()
        ),
        UntrustedSocket::DirIsSymlink { dir } => format!(
            "its directory {} is a symbolic link, not a directory of yours: {elsewhere}",
            dir.display()
        ),
        UntrustedSocket::DirNotADirectory { dir } => {
            format!("{} is not a directory: {elsewhere}", dir.display())
        }
        other => other.to_string(),
    }
}

/// Read a file that must be private to this user, at most `max` bytes: `None` when it does
/// not exist. Its directory must pass [`open_private_dir`]; the file is opened relative to
/// that descriptor with `O_NOFOLLOW` (a symbolic link at its name is refused, never
/// followed), and must be a regular file of ours that nobody else can read or write
/// (checked with `fstat` on what was opened). One check for the daemon, which wrote it, and
/// the clients that read it (`corral mcp url` reads the MCP endpoint's token).
#[cfg(unix)]
pub fn read_private_file(path: &Path, max: u64) -> Result<Option<Vec<u8>>, UntrustedFile> {
    use rustix::fs::{FileType, Mode, OFlags};
    use std::io::Read as _;
    let unreadable = |error: std::io::Error| UntrustedFile::Unreadable {
        path: path.to_path_buf(),
        error,
    };
    let Some(name) = path.file_name() else {
        return Err(unreadable(std::io::Error::other("the path names no file")));
    };
    let dir = match open_private_dir(socket_dir(path)) {
        Ok(dir) => dir,
        Err(reason) if reason.is_missing() => return Ok(None),
        Err(reason) => {
            return Err(UntrustedFile::Dir {
                path: path.to_path_buf(),
                reason,
            });
        }
    };
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let file = match rustix::fs::openat(&dir, name, flags, Mode::empty()) {
        Ok(file) => file,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) => {
            return Err(UntrustedFile::Symlink {
                path: path.to_path_buf(),
            });
        }
        Err(errno) => return Err(unreadable(errno.into())),
    };
    let stat = rustix::fs::fstat(&file).map_err(|errno| unreadable(errno.into()))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(UntrustedFile::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let own_uid = effective_uid();
    if stat.st_uid != own_uid {
        return Err(UntrustedFile::OwnedByOther {
            path: path.to_path_buf(),
            owner: stat.st_uid,
            own_uid,
        });
    }
    #[allow(clippy::useless_conversion, reason = "`st_mode` is a u16 on macOS")]
    let mode = u32::from(stat.st_mode) & 0o7777;
    if mode & 0o077 != 0 {
        return Err(UntrustedFile::OpenToOthers {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut bytes = Vec::new();
    std::fs::File::from(file)
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > max {
        return Err(UntrustedFile::TooLarge {
            path: path.to_path_buf(),
            max,
        });
    }
    Ok(Some(bytes))
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
    fn only_a_private_directory_of_ours_is_trusted() {
        use std::os::unix::fs::PermissionsExt as _;
        let base = std::env::temp_dir().join(format!("corral-paths-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let private = base.join("private");
        std::fs::create_dir_all(&private).expect("create the test dirs");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod 700");
        assert!(check_private_dir(&private).is_ok());
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).expect("chmod 755");
        assert!(check_private_dir(&private).is_ok(), "readable by others is fine");
        for mode in [0o770, 0o1777, 0o702] {
            std::fs::set_permissions(&private, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let error = check_private_dir(&private).expect_err("writable by others");
            assert!(matches!(error, UntrustedSocket::DirWritableByOthers { .. }), "{error}");
            assert!(error.to_string().contains(&format!("mode {mode:o}")), "{error}");
            let chmod = format!("run `chmod 700 {}`", private.display());
            assert_eq!(
                error.to_string().contains(&chmod),
                mode & 0o1000 == 0,
                "a chmod hint unless sticky: {error}"
            );
        }
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod 700");
        let file = private.join("file");
        std::fs::write(&file, "").expect("a file");
        let error = check_private_dir(&file).expect_err("a file");
        assert!(matches!(error, UntrustedSocket::DirNotADirectory { .. }), "{error}");
        let link = base.join("link");
        std::os::unix::fs::symlink(&private, &link).expect("symlink");
        let error = check_private_dir(&link).expect_err("a symlink");
        assert!(matches!(error, UntrustedSocket::DirIsSymlink { .. }), "{error}");
        assert!(
            check_private_dir(&base.join("missing"))
                .expect_err("missing")
                .is_missing()
        );
        let _ = std::fs::remove_dir_all(base);
    }

    /// The descriptor stays the directory that was checked after its path is
    /// renamed away and something else is put there.
    #[cfg(unix)]
    #[test]
    fn an_open_private_dir_is_the_checked_directory_whatever_its_path_becomes() {
        use std::os::unix::fs::PermissionsExt as _;
        let base = std::env::temp_dir().join(format!("corral-paths-swap-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("dir");
        std::fs::create_dir_all(&dir).expect("create the test dirs");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod 700");
        std::fs::write(dir.join("record"), "checked").expect("write");
        let fd = open_private_dir(&dir).expect("a private dir");
        std::fs::rename(&dir, base.join("moved")).expect("rename the dir away");
        std::fs::create_dir(&dir).expect("a new dir at the path");
        std::fs::write(dir.join("record"), "swapped in").expect("write");
        let file =
            rustix::fs::openat(&fd, "record", rustix::fs::OFlags::RDONLY, rustix::fs::Mode::empty()).expect("openat");
        let text = std::io::read_to_string(std::fs::File::from(file)).expect("read");
        assert_eq!(text, "checked");
        let _ = std::fs::remove_dir_all(base);
    }

    #[cfg(unix)]
    #[test]
    fn a_private_file_is_read_only_when_nobody_else_could_have_written_or_read_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let base = std::env::temp_dir().join(format!("corral-private-file-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).expect("create the test dir");
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700)).expect("chmod 700");
        let token = base.join("token");
        assert!(read_private_file(&token, 64).expect("missing is fine").is_none());
        assert!(
            read_private_file(&base.join("no-dir/token"), 64)
                .expect("a missing directory is fine")
                .is_none()
        );
        std::fs::write(&token, "secret").expect("write");
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
        assert_eq!(
            read_private_file(&token, 64).expect("ours").as_deref(),
            Some(&b"secret"[..])
        );
        let error = read_private_file(&token, 3).expect_err("too large");
        assert!(matches!(error, UntrustedFile::TooLarge { .. }), "{error}");
        for mode in [0o640, 0o604, 0o622] {
            std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let error = read_private_file(&token, 64).expect_err("open to others");
            assert!(matches!(error, UntrustedFile::OpenToOthers { .. }), "{error}");
            assert!(error.to_string().contains("remove it"), "{error}");
        }
        let elsewhere = base.join("elsewhere");
        std::fs::write(&elsewhere, "planted").expect("write");
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
        let link = base.join("link");
        std::os::unix::fs::symlink(&elsewhere, &link).expect("symlink");
        let error = read_private_file(&link, 64).expect_err("a symlink");
        assert!(matches!(error, UntrustedFile::Symlink { .. }), "{error}");
        assert!(error.to_string().contains(&link.display().to_string()), "{error}");
        std::fs::create_dir(base.join("sub")).expect("a directory");
        let error = read_private_file(&base.join("sub"), 64).expect_err("a directory");
        assert!(matches!(error, UntrustedFile::NotAFile { .. }), "{error}");
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o770)).expect("chmod 770");
        let error = read_private_file(&elsewhere, 64).expect_err("a shared directory");
        assert!(matches!(error, UntrustedFile::Dir { .. }), "{error}");
        assert!(
            error
                .to_string()
                .contains(&format!("run `chmod 700 {}`", base.display())),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(base);
    }

    /// A private file's directory gets a file's way out, never a socket's.
    #[cfg(unix)]
    #[test]
    fn a_private_files_untrusted_directory_says_how_to_use_another() {
        let path = PathBuf::from("/shared/data/mcp-endpoint.token");
        let dir = PathBuf::from("/shared/data");
        for reason in [
            UntrustedSocket::DirOwnedByOther {
                dir: dir.clone(),
                owner: 1001,
                own_uid: 1000,
            },
            UntrustedSocket::DirWritableByOthers {
                dir: dir.clone(),
                mode: 0o1777,
            },
            UntrustedSocket::DirIsSymlink { dir: dir.clone() },
            UntrustedSocket::DirNotADirectory { dir: dir.clone() },
        ] {
            let error = UntrustedFile::Dir {
                path: path.clone(),
                reason,
            }
            .to_string();
            assert!(
                error.starts_with("cannot trust /shared/data/mcp-endpoint.token: ")
                    && error.contains("/shared/data")
                    && error.contains("start corrald with CORRAL_DATA_DIR set to a directory only you can write"),
                "{error}"
            );
            assert!(
                !error.contains("XDG_RUNTIME_DIR") && !error.contains("--socket"),
                "a socket's advice: {error}"
            );
        }
    }

    #[test]
    fn the_socket_dir_of_a_bare_name_is_the_working_directory() {
        assert_eq!(socket_dir(Path::new("d.sock")), Path::new("."));
        assert_eq!(socket_dir(Path::new("/run/c/d.sock")), Path::new("/run/c"));
    }

    #[cfg(unix)]
    #[test]
    fn the_runtime_dir_wins_then_the_temp_dir_then_tmp() {
        let runtime = Path::new("/run/user/1000");
        assert_eq!(
            socket_in(Some(runtime), Path::new("/tmp"), 1000),
            Path::new("/run/user/1000/corral/corral.sock")
        );
        assert_eq!(
            socket_in(None, Path::new("/var/tmp"), 1000),
            Path::new("/var/tmp/corral-1000/corral.sock")
        );
        assert_eq!(
            socket_in(Some(Path::new("relative")), Path::new("/var/tmp"), 7),
            Path::new("/var/tmp/corral-7/corral.sock"),
            "a relative runtime dir is not used"
        );
        let long = PathBuf::from(format!("/{}", "d".repeat(120)));
        assert_eq!(
            socket_in(Some(&long), &long, 7),
            Path::new("/tmp/corral-7/corral.sock"),
            "too long for a socket address"
        );
    }

    #[cfg(unix)]
    #[test]
    fn only_a_private_directory_of_the_user_stands_for_the_runtime_dir() {
        use std::os::unix::fs::PermissionsExt as _;
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let base = std::env::temp_dir().join(format!("corral-paths-runtime-{}", std::process::id()));
        let private = base.join("private");
        std::fs::create_dir_all(&private).expect("create");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        assert_eq!(private_dir_of(&private, uid), Some(private.clone()));
        assert_eq!(private_dir_of(&private, uid + 1), None, "someone else's");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(private_dir_of(&private, uid), None, "others may enter");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let link = base.join("link");
        std::os::unix::fs::symlink(&private, &link).expect("symlink");
        assert_eq!(private_dir_of(&link, uid), None, "a link to it");
        assert_eq!(private_dir_of(&base.join("missing"), uid), None);
        let _ = std::fs::remove_dir_all(base);
    }

    #[cfg(unix)]
    #[test]
    fn default_socket_fits_an_address() {
        assert!(fits_socket_address(&default_socket_path()));
        assert!(default_socket_path().ends_with("corral.sock"));
    }
}
