//! Binding the daemon's Unix socket: one daemon per socket, stale sockets
//! replaced, private permissions.
//!
//! Exclusivity comes from an advisory lock (`flock`) on `<socket>.lock`, held
//! for the daemon's whole life. The kernel drops the lock when the holder
//! dies, however it dies, so a socket file found while *we* hold the lock is
//! known to be stale and can be replaced without racing a live daemon. A
//! daemon never removes the lock file it holds: one that unlinked it while
//! holding it would let one contender lock the unlinked file and the next
//! create and lock a new one, both believing they own the socket. The one
//! exception is a lock file of *another* uid (left by `sudo -E corrald` of an
//! earlier version) that no process holds: in a directory private to us,
//! only our own daemons (and root) create or remove files, so it is locked,
//! checked to still be the file at that name, removed, and replaced by our
//! own (`take_lock`).
//!
//! Everything lives in one directory that must be private to us
//! ([`corral_protocol::paths::open_private_dir`]): we create it (0700) when
//! it is missing and never change the mode of one we did not create. It is
//! opened once (`O_DIRECTORY|O_NOFOLLOW`) and checked on the descriptor;
//! the lock file, the stale socket, the socket's mode and (in `reaper.rs`)
//! the children record are then reached relative to that descriptor
//! (`openat`, `unlinkat`, `fchmodat`), and on Linux the socket is bound
//! through `/proc/self/fd/<dir>/<name>`, so a directory swapped in at the same
//! path later is never used. Its parent must not be writable by other users
//! unless it is sticky, nor belong to another user than us or root: whoever
//! can rename the directory can put their own in its place for the clients,
//! who find it by path (they would then refuse it: it is not theirs).
//! The lock file is opened with `O_NOFOLLOW`, so a symbolic link planted in
//! its place is refused rather than followed. A missing socket directory is
//! created 0700, its last component by a non-recursive `mkdir`, so a
//! directory someone creates meanwhile is judged, not adopted. The socket is
//! made 0600 (`fchmodat`) right after `bind`; until then another uid's
//! connection is refused on accept anyway (`SO_PEERCRED`, [`UnixAcceptor`]).
//!
//! A foreign lock file some process holds is never removed: the daemon
//! refuses to start and names its owner's uid (`remove_foreign_lock`).
//! A live socket found without the lock (a process that does not hold it
//! serves the path) is refused too, never unlinked.
//!
//! [`adopt`] serves a socket a service manager passed (socket activation)
//! instead: the fd must be a listening stream socket with a path; the same
//! lock is taken next to it (so a corrald started by hand on that path is
//! refused with the activated one's pid), and the socket file, which belongs
//! to the manager and outlives the daemon, is never removed or replaced.
//! Either way the socket is removed (when it is ours) before the lock is
//! released ([`SocketGuard`]'s drop).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read as _, Seek as _, Write as _};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

/// The bound socket. Dropping it removes the socket file (unless the service
/// manager owns it) and releases the lock; the lock file stays (see the module doc).
#[derive(Debug)]
pub struct SocketGuard {
    /// The socket's directory, as checked when it was opened.
    dir: OwnedFd,
    /// The socket's file name in `dir`.
    name: OsString,
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
            let _ = rustix::fs::unlinkat(&self.dir, &self.name, AtFlags::empty());
        }
        // The lock file is not removed: see the module doc.
    }
}

/// The lock file that guards `socket`.
pub fn lock_path(socket: &Path) -> PathBuf {
    socket.with_file_name(lock_name(socket))
}

fn lock_name(socket: &Path) -> OsString {
    let mut name = socket.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    name
}

/// The socket's file name, or why `path` has none.
fn socket_name(path: &Path) -> anyhow::Result<&OsStr> {
    path.file_name()
        .with_context(|| format!("socket path {} does not end in a file name", path.display()))
}

/// An address for `name` in `dir` that goes through the open directory, not
/// its path: `/proc/self/fd/<dir>/<name>` on Linux when `/proc` is there and
/// the result fits a socket address; `path` itself otherwise.
fn address_in(dir: &OwnedFd, name: &OsStr, path: &Path) -> PathBuf {
    #[cfg(target_os = "linux")]
    {
        let fd_dir = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        let address = fd_dir.join(name);
        if corral_protocol::paths::fits_socket_address(&address) && fd_dir.is_dir() {
            return address;
        }
    }
    let _ = (dir, name);
    path.to_path_buf()
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
    let name = socket_name(path)?;
    let dir = prepare_dir(corral_protocol::paths::socket_dir(path))?;
    let (lock, lock_path) = take_lock(&dir, path)?;
    let address = address_in(&dir, name, path);

    match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Socket => {
            if std::os::unix::net::UnixStream::connect(&address).is_ok() {
                bail!(
                    "{} is served by a process that does not hold {}: stop it, or choose another --socket",
                    path.display(),
                    lock_path.display()
                );
            }
            tracing::info!(socket = %path.display(), "replacing a stale socket left by a daemon that died");
            rustix::fs::unlinkat(&dir, name, AtFlags::empty())
                .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket: move it away or choose another --socket",
            path.display()
        ),
        Err(Errno::NOENT) => {}
        Err(error) => return Err(io::Error::from(error)).with_context(|| format!("cannot inspect {}", path.display())),
    }

    let listener = std::os::unix::net::UnixListener::bind(&address)
        .with_context(|| format!("cannot bind socket {}", path.display()))?;
    // Relative to the directory we checked, which only we can write: the
    // name is the socket we just bound, not a link someone put there.
    // (Until this runs the socket has the umask's mode; a connection of
    // another uid is refused on accept anyway: see `api::mod`.)
    rustix::fs::chmodat(&dir, name, Mode::from_raw_mode(0o600), AtFlags::empty())
        .with_context(|| format!("cannot set permissions of {}", path.display()))?;
    listener.set_nonblocking(true)?;
    Ok((
        listener,
        SocketGuard {
            dir,
            name: name.to_os_string(),
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
    let name = socket_name(&path)?.to_os_string();
    let dir = open_dir(corral_protocol::paths::socket_dir(&path))?;
    let (lock, _) = take_lock(&dir, &path)?;
    listener.set_nonblocking(true)?;
    Ok((
        listener,
        SocketGuard {
            dir,
            name,
            remove_socket: false,
            _lock: lock,
        },
        path,
    ))
}

/// Take `<socket>.lock` in `dir` for this daemon, or explain who holds it.
///
/// A lock file of another uid is replaced when no process holds it (see the
/// module doc and [`remove_foreign_lock`]).
fn take_lock(dir: &OwnedFd, socket: &Path) -> anyhow::Result<(File, PathBuf)> {
    let lock_path = lock_path(socket);
    let name = lock_name(socket);
    let own_uid = corral_protocol::paths::effective_uid();
    // Bounded: each round takes the lock, fails, or removes a lock file of
    // another uid; only someone who can write our private directory (root)
    // putting one there again makes for another round.
    for _ in 0..3 {
        let opened = rustix::fs::openat(
            dir,
            &name,
            // Never through a symbolic link (ELOOP), never block on a FIFO.
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        );
        let mut lock = match opened {
            Ok(fd) => File::from(fd),
            Err(Errno::LOOP) => bail!(
                "lock file {} is a symbolic link: refusing to follow it; remove it if you made it, \
                 otherwise someone else can write to your socket directory",
                lock_path.display()
            ),
            // Not writable by us: another user's file, or (no file) a directory we cannot write.
            Err(Errno::ACCESS)
                if rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|stat| stat.st_uid != own_uid) =>
            {
                remove_foreign_lock(dir, &name, &lock_path, socket)?;
                continue;
            }
            Err(error) => {
                return Err(io::Error::from(error))
                    .with_context(|| format!("cannot open lock file {}", lock_path.display()));
            }
        };
        let stat =
            rustix::fs::fstat(&lock).with_context(|| format!("cannot inspect lock file {}", lock_path.display()))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            bail!("lock file {} is not a regular file: remove it", lock_path.display());
        }
        if stat.st_uid != own_uid {
            drop(lock);
            remove_foreign_lock(dir, &name, &lock_path, socket)?;
            continue;
        }
        match rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
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
                    socket.display()
                );
            }
            Err(error) => {
                return Err(io::Error::from(error)).with_context(|| format!("cannot lock {}", lock_path.display()));
            }
        }
        lock.set_len(0)?;
        lock.rewind()?;
        writeln!(lock, "{}", std::process::id())?;
        return Ok((lock, lock_path));
    }
    bail!(
        "cannot take lock file {}: it was replaced by a lock file of another user each time",
        lock_path.display()
    )
}

/// Remove the lock file `name` of another uid from `dir` (private to us) if no
/// process holds it: typically root's, left by `sudo -E corrald` of a version
/// that did not check the directory's owner, which would otherwise lock the
/// user out for good. The file is locked first (a read-only descriptor is
/// enough for `flock`) and checked to still be the one at `name`, so a lock
/// some process holds is never removed and a concurrent replacement by
/// another of our daemons is never undone. One we cannot even open is
/// removed: no daemon can hold a lock file it cannot open either, and a
/// daemon still serving the socket is found by the connect check in [`bind`].
fn remove_foreign_lock(dir: &OwnedFd, name: &OsStr, lock_path: &Path, socket: &Path) -> anyhow::Result<()> {
    let opened = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    );
    let file = match opened {
        Ok(fd) => Some(fd),
        // Gone meanwhile: nothing to remove.
        Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ACCESS) => None,
        Err(Errno::LOOP) => bail!(
            "lock file {} is a symbolic link: refusing to follow it; remove it if you made it, \
             otherwise someone else can write to your socket directory",
            lock_path.display()
        ),
        Err(error) => {
            return Err(io::Error::from(error))
                .with_context(|| format!("cannot open lock file {}", lock_path.display()));
        }
    };
    let stat = match &file {
        Some(fd) => rustix::fs::fstat(fd),
        None => rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW),
    }
    .with_context(|| format!("cannot inspect lock file {}", lock_path.display()))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        bail!("lock file {} is not a regular file: remove it", lock_path.display());
    }
    let owner = stat.st_uid;
    if owner == corral_protocol::paths::effective_uid() {
        // Replaced by one of ours meanwhile: the caller takes it.
        return Ok(());
    }
    if let Some(fd) = &file {
        match rustix::fs::flock(fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => bail!(
                "lock file {} belongs to uid {owner} and a process holds it: a corrald of that user may be \
                 serving {}; stop it (as that user), or choose another --socket",
                lock_path.display(),
                socket.display()
            ),
            Err(error) => {
                return Err(io::Error::from(error)).with_context(|| format!("cannot lock {}", lock_path.display()));
            }
        }
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(now) if now.st_dev == stat.st_dev && now.st_ino == stat.st_ino => {}
            // Replaced or removed meanwhile: not ours to remove.
            _ => return Ok(()),
        }
    }
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(error) => {
            return Err(io::Error::from(error))
                .with_context(|| format!("cannot remove lock file {} of uid {owner}", lock_path.display()));
        }
    }
    tracing::warn!(
        lock = %lock_path.display(),
        owner,
        "removed a lock file of another user that no process holds (left by a corrald run with sudo?)"
    );
    Ok(())
}

/// Open the socket's directory, creating it private (0700) when it is missing,
/// and check it and its parent.
///
/// Only a directory private to us is accepted (see
/// [`corral_protocol::paths::open_private_dir`]): in one another user can
/// write (a shared `/tmp`, or a `corral-<uid>` directory someone created
/// first), they could plant symbolic links or a children record, or serve a
/// socket of their own. An existing directory's mode is never changed: we may
/// not have created it, and it may not be what its path says (a symlink).
fn prepare_dir(dir: &Path) -> anyhow::Result<OwnedFd> {
    match corral_protocol::paths::open_private_dir(dir) {
        Err(problem) if problem.is_missing() => {
            if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .with_context(|| format!("cannot create socket directory {}", parent.display()))?;
            }
            // Not recursive: if someone creates the directory between our
            // `open` and this `mkdir`, it fails, and the check below judges
            // what is there instead of us adopting it.
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
                Err(error) => {
                    return Err(error).with_context(|| format!("cannot create socket directory {}", dir.display()));
                }
            }
        }
        Err(problem) => return Err(refusal(dir, &problem)),
        Ok(fd) => {
            check_parent(&fd, dir)?;
            return Ok(fd);
        }
    }
    open_dir(dir)
}

/// Open an existing socket directory and check it and its parent.
fn open_dir(dir: &Path) -> anyhow::Result<OwnedFd> {
    let fd = corral_protocol::paths::open_private_dir(dir).map_err(|problem| refusal(dir, &problem))?;
    check_parent(&fd, dir)?;
    Ok(fd)
}

/// Refuse the directory `dir` (opened as `fd`) if whoever can rename it is
/// not only us (or root): its parent, the one the open directory really sits
/// in (`..` of the descriptor, not of the path), must not be writable by group
/// or others unless it is sticky (like `/tmp`: there only the owner of an
/// entry may rename it), and must belong to us or root.
fn check_parent(fd: &OwnedFd, dir: &Path) -> anyhow::Result<()> {
    let parent_path = match dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        Some(parent) => parent.to_path_buf(),
        None => dir.join(".."),
    };
    let parent = rustix::fs::openat(
        fd,
        "..",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .and_then(rustix::fs::fstat)
    .with_context(|| {
        format!(
            "cannot inspect {}, the parent of socket directory {}",
            parent_path.display(),
            dir.display()
        )
    })?;
    #[allow(clippy::useless_conversion, reason = "`st_mode` is a u16 on macOS")]
    let mode = u32::from(parent.st_mode) & 0o7777;
    let own_uid = corral_protocol::paths::effective_uid();
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        bail!(
            "refusing to serve a socket in {}: its parent directory {} has mode {mode:o} and is not sticky: \
             other users can rename {} and put a directory of theirs in its place; \
             run `chmod go-w {}` (or `chmod +t` for a shared one), or choose a --socket elsewhere",
            dir.display(),
            parent_path.display(),
            dir.display(),
            parent_path.display()
        );
    }
    if parent.st_uid != own_uid && parent.st_uid != 0 {
        bail!(
            "refusing to serve a socket in {}: its parent directory {} belongs to uid {}, who can rename {} \
             and put a directory of theirs in its place; choose a --socket in a directory of yours",
            dir.display(),
            parent_path.display(),
            parent.st_uid,
            dir.display()
        );
    }
    Ok(())
}

/// Why a socket directory that is not private to us is refused, naming it and
/// what to do.
fn refusal(dir: &Path, problem: &corral_protocol::paths::UntrustedSocket) -> anyhow::Error {
    use corral_protocol::paths::UntrustedSocket;
    // The owner and mode problems carry their own way out; a non-sticky
    // directory of ours gets a `chmod`, so this is the other way.
    let way_out = match problem {
        UntrustedSocket::DirOwnedByOther { .. } => "",
        UntrustedSocket::DirWritableByOthers { mode, .. } if mode & 0o1000 == 0 => {
            "; otherwise choose a --socket in a directory only you can write (the default is $XDG_RUNTIME_DIR/corral)"
        }
        _ => "; choose a --socket in a directory only you can write (the default is $XDG_RUNTIME_DIR/corral)",
    };
    anyhow::anyhow!("refusing to serve a socket in {}: {problem}{way_out}", dir.display())
}

/// Whether the front-end on `stream` has closed the connection entirely
/// (`POLLHUP`: it can neither send nor receive), as opposed to shutting down
/// only its sending half (end of stream, but still reading). Asked once the
/// reader saw end of stream, while the stream is still open.
pub(crate) fn hang_up_probe(stream: &tokio::net::UnixStream) -> crate::api::connection::HungUp {
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
    use std::fs;
    use std::os::unix::fs::MetadataExt as _;

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
        assert!(
            std::os::unix::net::UnixStream::connect(&path).is_ok(),
            "bound through the directory's descriptor, served at its path"
        );
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

/// Accepts connections on the daemon's Unix socket, only from its own user
/// (`SO_PEERCRED`): another user's connection is closed at once.
#[derive(Debug)]
pub struct UnixAcceptor {
    listener: tokio::net::UnixListener,
    own_uid: u32,
    /// Refusals of other users' connections, logged at most once per interval.
    refusals: crate::api::RefusalLog,
}

impl UnixAcceptor {
    /// Accept on `listener` for the user the daemon runs as.
    pub fn new(listener: tokio::net::UnixListener) -> Self {
        Self {
            listener,
            own_uid: rustix::process::geteuid().as_raw(),
            refusals: crate::api::RefusalLog::default(),
        }
    }
}

impl super::Accept for UnixAcceptor {
    type Stream = tokio::net::UnixStream;

    async fn accept(&mut self) -> io::Result<Option<super::Accepted<Self::Stream>>> {
        let (stream, _) = self.listener.accept().await?;
        match stream.peer_cred() {
            Ok(credentials) if credentials.uid() == self.own_uid => {}
            Ok(credentials) => {
                self.refusals.foreign(Some(credentials.uid()));
                return Ok(None);
            }
            Err(error) => {
                tracing::debug!(%error, "cannot read a connection's peer credentials");
                self.refusals.foreign(None);
                return Ok(None);
            }
        }
        let hung_up = hang_up_probe(&stream);
        Ok(Some(super::Accepted { stream, hung_up }))
    }
}
