//! Binding the daemon's Unix socket: one daemon per socket, stale sockets
//! replaced, private permissions.
//!
//! Exclusivity comes from an advisory lock (`flock`) on `<socket>.lock`, held
//! for the daemon's whole life. The kernel drops the lock when the holder
//! dies, however it dies, so a socket file found while *we* hold the lock is
//! known to be stale and can be replaced without racing a live daemon. The
//! lock file is never removed: a daemon that unlinked it while holding it
//! would let one contender lock the unlinked file and the next create and lock
//! a new one, both believing they own the socket.
//!
//! Everything lives in one directory that must be private to us
//! ([`corral_protocol::paths::check_private_dir`], checked with `lstat`): we
//! create it (0700) when it is missing and never change the mode of one we
//! did not create. The lock file is opened with `O_NOFOLLOW`, so a symbolic
//! link planted in its place is refused rather than followed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{
    DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// The bound socket. Dropping it removes the socket file (unless the service
/// manager owns it) and releases the lock; the lock file stays (see the module doc).
#[derive(Debug)]
pub struct SocketGuard {
    path: PathBuf,
    /// Whether the socket file is ours to remove: not when a socket-activating
    /// service manager created it and keeps listening on it after we exit.
    remove_socket: bool,
    // Held open for the lock's sake; closed (and the lock released) on drop.
    _lock: File,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        // Remove the socket before releasing the lock, so that a daemon starting
        // right now never sees our socket as its own stale leftover.
        if self.remove_socket {
            let _ = fs::remove_file(&self.path);
        }
        // The lock file is not removed: see the module doc.
    }
}

/// The lock file that guards `socket`.
pub fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    socket.with_file_name(name)
}

/// Bind `path` for this daemon, or explain why another daemon has it.
pub fn bind(path: &Path) -> anyhow::Result<(std::os::unix::net::UnixListener, SocketGuard)> {
    if !corral_protocol::paths::fits_socket_address(path) {
        bail!(
            "socket path {} is {} bytes, longer than the {} a Unix socket address holds: choose a shorter --socket",
            path.display(),
            path.as_os_str().len(),
            corral_protocol::paths::MAX_SOCKET_PATH_BYTES
        );
    }
    prepare_dir(corral_protocol::paths::socket_dir(path))?;
    let (lock, lock_path) = take_lock(path)?;

    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "{} is served by a process that does not hold {}: stop it, or choose another --socket",
                    path.display(),
                    lock_path.display()
                );
            }
            tracing::info!(socket = %path.display(), "replacing a stale socket left by a daemon that died");
            fs::remove_file(path).with_context(|| format!("cannot remove stale socket {}", path.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket: move it away or choose another --socket",
            path.display()
        ),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("cannot inspect {}", path.display())),
    }

    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("cannot bind socket {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot set permissions of {}", path.display()))?;
    listener.set_nonblocking(true)?;
    Ok((
        listener,
        SocketGuard {
            path: path.to_path_buf(),
            remove_socket: true,
            _lock: lock,
        },
    ))
}

/// Serve a listening socket a service manager passed (socket activation)
/// instead of binding one. Returns the listener, its guard and the path it
/// listens on (from the socket itself; `requested` is only compared).
///
/// The manager owns the socket file: it created it (with the unit's
/// `SocketMode=`), keeps listening while corrald is down, and removes it when
/// the socket unit stops, so corrald never removes or replaces it. corrald
/// still takes `<socket>.lock`, exactly as when it binds: a second corrald
/// started by hand on the same path is refused with the activated one's pid,
/// and the children record next to the socket keeps one owner.
pub fn adopt(
    fd: std::os::fd::OwnedFd,
    requested: &Path,
) -> anyhow::Result<(std::os::unix::net::UnixListener, SocketGuard, PathBuf)> {
    use std::os::fd::AsFd as _;
    // SAFETY: getsockopt on a descriptor we own, into a correctly sized int.
    let (socket_type, listening) = unsafe {
        let raw = fd.as_fd().as_raw_fd();
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let type_ok = libc::getsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&raw mut value).cast(),
            &raw mut len,
        );
        let socket_type = (type_ok == 0).then_some(value);
        let mut accepting: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let accept_ok = libc::getsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&raw mut accepting).cast(),
            &raw mut len,
        );
        (socket_type, accept_ok == 0 && accepting != 0)
    };
    if socket_type != Some(libc::SOCK_STREAM) || !listening {
        bail!(
            "the socket passed by the service manager (LISTEN_FDS) is not a listening stream socket: \
             use `ListenStream=` in the .socket unit and do not set `Accept=yes`"
        );
    }
    let listener = std::os::unix::net::UnixListener::from(fd);
    let address = listener
        .local_addr()
        .context("the socket passed by the service manager (LISTEN_FDS) is not a Unix socket")?;
    let Some(path) = address.as_pathname().map(Path::to_path_buf) else {
        bail!(
            "the socket passed by the service manager (LISTEN_FDS) has no path (abstract or unnamed): \
             front-ends could not find it; use a file system path in `ListenStream=`"
        );
    };
    if path != requested {
        tracing::warn!(
            activated = %path.display(),
            configured = %requested.display(),
            "serving the socket the service manager passed, not the configured path"
        );
    }
    // The lock file and the children record live next to the socket.
    check_dir(corral_protocol::paths::socket_dir(&path))?;
    let (lock, _) = take_lock(&path)?;
    listener.set_nonblocking(true)?;
    Ok((
        listener,
        SocketGuard {
            path: path.clone(),
            remove_socket: false,
            _lock: lock,
        },
        path,
    ))
}

/// Take `<socket>.lock` for this daemon, or explain who holds it.
fn take_lock(path: &Path) -> anyhow::Result<(File, PathBuf)> {
    let lock_path = lock_path(path);
    let mut lock = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        // Never through a symbolic link (ELOOP), never block on a FIFO.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&lock_path)
    {
        Ok(lock) => lock,
        Err(error) if error.raw_os_error() == Some(libc::ELOOP) => bail!(
            "lock file {} is a symbolic link: refusing to follow it; remove it if you made it, \
             otherwise someone else can write to your socket directory",
            lock_path.display()
        ),
        Err(error) => return Err(error).with_context(|| format!("cannot open lock file {}", lock_path.display())),
    };
    let metadata = lock
        .metadata()
        .with_context(|| format!("cannot inspect lock file {}", lock_path.display()))?;
    let own_uid = corral_protocol::paths::effective_uid();
    if !metadata.is_file() || metadata.uid() != own_uid {
        bail!(
            "lock file {} is not a regular file of yours (uid {}, you are uid {own_uid}): remove it",
            lock_path.display(),
            metadata.uid()
        );
    }
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut holder = String::new();
            let _ = lock.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                "another corrald".to_owned()
            } else {
                format!("another corrald (pid {holder})")
            };
            bail!(
                "{who} is already serving {}: stop it first, or choose another --socket",
                path.display()
            );
        }
        return Err(error).with_context(|| format!("cannot lock {}", lock_path.display()));
    }
    lock.set_len(0)?;
    lock.rewind()?;
    writeln!(lock, "{}", std::process::id())?;
    Ok((lock, lock_path))
}

/// Create the socket's directory private (0700), or check an existing one.
///
/// Only a directory private to us is accepted (see
/// [`corral_protocol::paths::check_private_dir`]): in one another user can
/// write (a shared `/tmp`, or a `corral-<uid>` directory someone created
/// first), they could plant symbolic links or a children record, or serve a
/// socket of their own. An existing directory's mode is never changed: we may
/// not have created it, and it may not be what its path says (a symlink).
fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    match fs::symlink_metadata(dir) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .with_context(|| format!("cannot create socket directory {}", parent.display()))?;
            }
            // Not recursive: if someone creates the directory between our
            // `lstat` and this `mkdir`, it fails, and the check below judges
            // what is there instead of us adopting it.
            match fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
                Err(error) => {
                    return Err(error).with_context(|| format!("cannot create socket directory {}", dir.display()));
                }
            }
        }
        Err(error) => {
            return Err(error).with_context(|| format!("cannot inspect socket directory {}", dir.display()));
        }
        Ok(_) => {}
    }
    check_dir(dir)
}

/// Refuse a socket directory that is not private to us, naming it and its owner.
fn check_dir(dir: &Path) -> anyhow::Result<()> {
    corral_protocol::paths::check_private_dir(dir).map_err(|problem| {
        anyhow::anyhow!(
            "refusing to serve a socket in {}: {problem}; choose a --socket in a directory only you can write \
             (the default is $XDG_RUNTIME_DIR/corral)",
            dir.display()
        )
    })
}

/// Whether the front-end on `stream` has closed the connection entirely
/// (`POLLHUP`: it can neither send nor receive), as opposed to shutting down
/// only its sending half (end of stream, but still reading). Asked once the
/// reader saw end of stream, while the stream is still open.
pub(crate) fn hang_up_probe(stream: &tokio::net::UnixStream) -> super::connection::HungUp {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    Box::new(move || {
        let mut pollfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd and a zero timeout; `fd` belongs to the
        // connection's stream, which lives as long as the connection task
        // that calls this.
        let ready = unsafe { libc::poll(&raw mut pollfd, 1, 0) };
        ready > 0 && pollfd.revents & libc::POLLHUP != 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_is_private_and_exclusive() {
        let dir = std::env::temp_dir().join(format!("corrald-socket-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("corral").join("d.sock");
        let (_listener, guard) = bind(&path).expect("first bind");
        let dir_mode = fs::metadata(path.parent().expect("dir")).expect("dir metadata").mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(fs::metadata(&path).expect("socket metadata").mode() & 0o777, 0o600);
        let error = bind(&path).expect_err("second bind must fail").to_string();
        let expected = format!("another corrald (pid {}) is already serving", std::process::id());
        assert!(error.contains(&expected), "{error}");
        drop(guard);
        assert!(!path.exists(), "socket removed on drop");
        assert!(lock_path(&path).exists(), "the lock file is never removed");
        let (_listener, guard) = bind(&path).expect("a new daemon takes the lock file that was left");
        drop(guard);
        let _ = fs::remove_dir_all(dir);
    }
}
