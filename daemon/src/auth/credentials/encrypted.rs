//! The encrypted credentials file: the same document as the plain file, sealed with
//! XChaCha20-Poly1305 under a random 256-bit key kept in the OS keyring, or, where there is none,
//! in a 0600 key file next to it (`credentials.key`). The key file only keeps the tokens out of
//! backups and sync tools that copy the credentials file alone; anyone who can read both files
//! can read the tokens, which `docs/configuration.md` says plainly.
//!
//! File layout: the 8-byte magic `CORRALE1`, a 24-byte random nonce, the ciphertext with its
//! 16-byte tag. The magic is also the associated data, so a file of another format never decrypts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

use super::file::Document;
use super::keyring::KeyringBackend;

const MAGIC: &[u8; 8] = b"CORRALE1";
const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;
/// Keyring user of the file's key.
const KEY_ENTRY: &str = "credentials-file-key";

/// Where the key of the encrypted file is kept.
#[derive(Debug)]
pub enum KeySource {
    /// An entry in the OS keyring.
    Keyring(KeyringBackend),
    /// A 0600 file.
    File(PathBuf),
}

/// The encrypted file store.
#[derive(Debug)]
pub struct EncryptedFileBackend {
    path: PathBuf,
    key_source: KeySource,
    lock: Mutex<()>,
}

impl EncryptedFileBackend {
    /// A store at `path` whose key is at `key_source` (both created on first save).
    pub fn new(path: PathBuf, key_source: KeySource) -> Self {
        Self {
            path,
            key_source,
            lock: Mutex::new(()),
        }
    }

    /// The encrypted file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key file, when the key is in one (its changes matter to what the file decrypts to).
    pub(crate) fn key_file(&self) -> Option<&Path> {
        match &self.key_source {
            KeySource::Keyring(_) => None,
            KeySource::File(path) => Some(path),
        }
    }

    /// Where the key is, for status and messages.
    pub fn key_location(&self) -> String {
        match &self.key_source {
            KeySource::Keyring(keyring) => keyring.describe(),
            KeySource::File(path) => path.display().to_string(),
        }
    }

    /// The key, if one exists.
    fn load_key(&self) -> anyhow::Result<Option<Key>> {
        let bytes = match &self.key_source {
            KeySource::Keyring(keyring) => keyring.get_secret(KEY_ENTRY)?,
            KeySource::File(path) => super::read_file(path)?,
        };
        match bytes {
            None => Ok(None),
            Some(bytes) if bytes.len() == KEY_LEN => Ok(Some(*Key::from_slice(&bytes))),
            Some(bytes) => anyhow::bail!(
                "the key of {} in {} has {} bytes, expected {KEY_LEN}",
                self.path.display(),
                self.key_location(),
                bytes.len()
            ),
        }
    }

    fn create_key(&self) -> anyhow::Result<Key> {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        match &self.key_source {
            KeySource::Keyring(keyring) => keyring.set_secret(KEY_ENTRY, key.as_slice())?,
            KeySource::File(path) => super::write_file_atomically(path, key.as_slice())?,
        }
        Ok(key)
    }

    fn read(&self) -> anyhow::Result<(Document, Option<Key>)> {
        let empty = || Document {
            version: 1,
            entries: BTreeMap::new(),
        };
        let Some(sealed) = super::read_file(&self.path)? else {
            return Ok((empty(), self.load_key()?));
        };
        let Some(key) = self.load_key()? else {
            anyhow::bail!(
                "encrypted credentials file {} exists but its key is missing from {}; remove the file and log in again",
                self.path.display(),
                self.key_location()
            );
        };
        let corrupt = || {
            anyhow::anyhow!(
                "encrypted credentials file {} cannot be decrypted with the key in {} (corrupt file or wrong key)",
                self.path.display(),
                self.key_location()
            )
        };
        let Some(rest) = sealed.strip_prefix(MAGIC.as_slice()) else {
            return Err(corrupt());
        };
        if rest.len() < NONCE_LEN {
            return Err(corrupt());
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let plain = XChaCha20Poly1305::new(&key)
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: MAGIC,
                },
            )
            .map_err(|_| corrupt())?;
        Ok((Document::parse(&plain, &self.path)?, Some(key)))
    }

    fn write(&self, document: &Document, key: Option<Key>) -> anyhow::Result<()> {
        let key = match key {
            Some(key) => key,
            None => self.create_key()?,
        };
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let plain = document.encode()?;
        let ciphertext = XChaCha20Poly1305::new(&key)
            .encrypt(
                &nonce,
                Payload {
                    msg: &plain,
                    aad: MAGIC,
                },
            )
            .map_err(|_| anyhow::anyhow!("cannot encrypt {}", self.path.display()))?;
        let mut sealed = Vec::with_capacity(MAGIC.len() + NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(MAGIC);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        super::write_file_atomically(&self.path, &sealed)
    }

    pub(crate) fn get(&self, key: &str) -> anyhow::Result<Option<String>> {
        let _guard = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(self.read()?.0.entries.remove(key))
    }

    pub(crate) fn set(&self, entry: &str, value: &str) -> anyhow::Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut document, key) = self.read()?;
        document.entries.insert(entry.to_owned(), value.to_owned());
        self.write(&document, key)
    }

    pub(crate) fn delete(&self, entry: &str) -> anyhow::Result<bool> {
        let _guard = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut document, key) = self.read()?;
        let existed = document.entries.remove(entry).is_some();
        if existed {
            self.write(&document, key)?;
        }
        Ok(existed)
    }
}
