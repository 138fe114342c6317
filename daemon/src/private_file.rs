//! Files only this user may read (the children record, the MCP endpoint's
//! bearer token) and the private directories they live in: created so that
//! nothing planted at their name can redirect the write.
//!
//! A file is created relative to a directory descriptor that
//! `corral_protocol::paths::open_private_dir` checked (a real directory of
//! ours nobody else can write), with `O_CREAT|O_EXCL|O_NOFOLLOW` and mode
//! 0600 whatever the umask: nothing already at that name, least of all a
//! symbolic link, is ever written through. Reading such a file back is
//! `corral_protocol::paths::read_private_file`, the same checks for the
//! daemon and the clients. A leaf: it names no other room.

use std::path::Path;

use anyhow::Context as _;

/// Create `dir` (and its parents) with mode 0700 where missing; an existing
/// directory is left as it is (whoever uses it checks it).
pub(crate) fn create_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}

/// Create `name` in `dir` anew, open for writing, mode exactly 0600: with
/// `O_CREAT|O_EXCL|O_NOFOLLOW`, so nothing already there is written through.
/// Something already at the name (a temp file left by a daemon killed
/// mid-write, or something planted) is unlinked first, which never follows a
/// link: the directory is ours, checked on this descriptor.
#[cfg(unix)]
pub(crate) fn create_anew(dir: &std::os::fd::OwnedFd, name: &Path) -> std::io::Result<std::fs::File> {
    use rustix::fs::{AtFlags, Mode, OFlags};
    let create = || {
        rustix::fs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
    };
    let file = match create() {
        Ok(file) => file,
        Err(rustix::io::Errno::EXIST) => {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
            create()?
        }
        Err(error) => return Err(error.into()),
    };
    // Exactly 0600 whatever the umask.
    rustix::fs::fchmod(&file, Mode::from_raw_mode(0o600))?;
    Ok(std::fs::File::from(file))
}
