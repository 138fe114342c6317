//! The endpoint's bearer token: 32 random bytes, URL-safe base64, generated
//! the first time the endpoint starts and kept in `mcp-endpoint.token` in the
//! data directory, readable by this user only.
//!
//! The file is published whole or not at all: written to a temp file created
//! anew (`private_file::create_anew`: `O_CREAT|O_EXCL|O_NOFOLLOW`, 0600),
//! then hard-linked to its name (`linkat`, which fails rather than replace
//! anything there), all relative to the data directory's checked descriptor.
//! It is read back with `paths::read_private_file` (no symbolic link, a
//! regular file of ours nobody else can read or write), as `corral mcp url`
//! reads it. To change the token: delete the file and restart corrald.
//!
//! Invariant: the token never appears in a log line, an error or a
//! notification: [`Token`]'s `Debug` says only that it is redacted, errors
//! name the file, and requests are compared without formatting it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use chacha20poly1305::aead::OsRng;
use chacha20poly1305::aead::rand_core::RngCore as _;
use subtle::ConstantTimeEq as _;

/// The token file's name in the data directory.
pub(crate) const TOKEN_FILE: &str = "mcp-endpoint.token";
/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;
/// Characters of a token: 32 bytes in base64 without padding.
const TOKEN_CHARS: usize = 43;
/// The largest token file read back (a token and a newline, with room to spare).
const MAX_TOKEN_FILE: u64 = 1024;

/// The bearer token every request must carry.
pub(crate) struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// The token in `data_dir`, made (and the directory, 0700) if there is none
    /// yet; with the file's path. An error names the file and what to do.
    #[cfg(unix)]
    pub(crate) fn load_or_create(data_dir: &Path) -> anyhow::Result<(Self, PathBuf)> {
        let path = data_dir.join(TOKEN_FILE);
        if let Some(token) = Self::load(&path)? {
            return Ok((token, path));
        }
        crate::private_file::create_dir(data_dir)?;
        // Worded as the file's problem, with a file's way out (not a socket's).
        let dir = corral_protocol::paths::open_private_dir(data_dir)
            .map_err(|reason| corral_protocol::paths::UntrustedFile::Dir {
                path: path.clone(),
                reason,
            })
            .context("cannot keep the MCP endpoint's token")?;
        let token = Self::generate();
        let temporary = PathBuf::from(format!(".{TOKEN_FILE}.{}.tmp", std::process::id()));
        let published = publish(&dir, &temporary, &token.0);
        let _ = rustix::fs::unlinkat(&dir, &temporary, rustix::fs::AtFlags::empty());
        match published {
            Ok(()) => {
                tracing::info!(file = %path.display(), "made a new bearer token for the MCP endpoint");
                Ok((token, path))
            }
            // Another corrald sharing this data directory published one first: use it.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => match Self::load(&path)? {
                Some(token) => Ok((token, path)),
                None => anyhow::bail!(
                    "{} appeared and vanished while corrald wrote it; restart corrald",
                    path.display()
                ),
            },
            Err(error) => Err(error).with_context(|| format!("cannot write {}", path.display())),
        }
    }

    /// The token in the file at `path`, if there is one; an error when the
    /// file is not safe (a link, another user's, readable by others) or does
    /// not hold a token.
    #[cfg(unix)]
    fn load(path: &Path) -> anyhow::Result<Option<Self>> {
        let Some(bytes) = corral_protocol::paths::read_private_file(path, MAX_TOKEN_FILE)? else {
            return Ok(None);
        };
        let text = String::from_utf8(bytes).unwrap_or_default();
        let text = text.trim();
        let well_formed = text.len() == TOKEN_CHARS
            && text
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
        if !well_formed {
            anyhow::bail!(
                "{} does not hold a token corrald wrote: remove it (corrald then writes a new one)",
                path.display()
            );
        }
        Ok(Some(Self(text.to_owned())))
    }

    /// A new random token.
    fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        OsRng.fill_bytes(&mut bytes);
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A token with this text, for tests of what checks it.
    #[cfg(test)]
    pub(crate) fn for_tests(text: &str) -> Self {
        Self(text.to_owned())
    }

    /// Whether `presented` is this token, compared in constant time (a
    /// different length is told apart at once: every token has the same one).
    pub(crate) fn matches(&self, presented: &[u8]) -> bool {
        bool::from(self.0.as_bytes().ct_eq(presented))
    }
}

/// Write `token` to `temporary` (created anew) and link it to the token
/// file's name; `AlreadyExists` when something is there already.
#[cfg(unix)]
fn publish(dir: &std::os::fd::OwnedFd, temporary: &Path, token: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = crate::private_file::create_anew(dir, temporary)?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    drop(file);
    rustix::fs::linkat(dir, temporary, dir, TOKEN_FILE, rustix::fs::AtFlags::empty())?;
    // The link is only durable once the directory is.
    let _ = rustix::fs::fsync(dir);
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_token_is_made_once_kept_private_and_read_back() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let data = dir.path().join("data");
        let (made, path) = Token::load_or_create(&data).expect("a new token");
        assert_eq!(path, data.join(TOKEN_FILE));
        assert_eq!(made.0.len(), TOKEN_CHARS);
        let mode = std::fs::metadata(&path).expect("the file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = std::fs::metadata(&data).expect("the dir").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let (again, _) = Token::load_or_create(&data).expect("the same token");
        assert!(again.matches(made.0.as_bytes()));
        assert!(!again.matches(b"wrong"));
        assert!(!again.matches(&made.0.as_bytes()[1..]));
        assert_eq!(format!("{again:?}"), "Token(<redacted>)");
        let leftovers: Vec<_> = std::fs::read_dir(&data)
            .expect("list")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(leftovers, [TOKEN_FILE], "no temp file left");
        assert_ne!(Token::generate().0, Token::generate().0);
    }

    #[test]
    fn a_planted_link_or_a_file_others_can_read_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let data = dir.path().join("data");
        crate::private_file::create_dir(&data).expect("the data dir");
        let target = dir.path().join("target");
        std::fs::write(&target, "").expect("the link's target");
        std::os::unix::fs::symlink(&target, data.join(TOKEN_FILE)).expect("plant a link");
        let error = Token::load_or_create(&data).expect_err("a link");
        assert!(format!("{error:#}").contains("is a symbolic link"), "{error:#}");
        assert_eq!(
            std::fs::read(&target).expect("target"),
            b"",
            "nothing written through the link"
        );
        std::fs::remove_file(data.join(TOKEN_FILE)).expect("remove the link");
        std::fs::write(data.join(TOKEN_FILE), "x".repeat(TOKEN_CHARS)).expect("a token file");
        std::fs::set_permissions(data.join(TOKEN_FILE), std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = Token::load_or_create(&data).expect_err("readable by others");
        assert!(format!("{error:#}").contains("other users can read"), "{error:#}");
        std::fs::set_permissions(data.join(TOKEN_FILE), std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(data.join(TOKEN_FILE), "short").expect("not a token");
        let error = Token::load_or_create(&data).expect_err("not a token");
        assert!(format!("{error:#}").contains("does not hold a token"), "{error:#}");
    }
}
