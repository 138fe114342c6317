//! The plain credentials file: one 0600 JSON document in the data directory holding every server's
//! record, rewritten atomically on each change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The document: `{"version": 1, "entries": {KEY: RECORD_JSON}}`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Document {
    pub(crate) version: u32,
    pub(crate) entries: BTreeMap<String, String>,
}

impl Document {
    /// Parse a document, with an error naming `path` and never quoting the content.
    pub(crate) fn parse(bytes: &[u8], path: &Path) -> anyhow::Result<Self> {
        let document: Document = serde_json::from_slice(bytes).map_err(|error| {
            anyhow::anyhow!(
                "credentials file {} is corrupt ({}); fix or remove it, then log in again",
                path.display(),
                super::json_error_position(&error)
            )
        })?;
        if document.version != 1 {
            anyhow::bail!(
                "credentials file {} has format version {}, this corrald reads version 1",
                path.display(),
                document.version
            );
        }
        Ok(document)
    }

    pub(crate) fn encode(&self) -> anyhow::Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).context("cannot encode the credentials file")
    }
}

/// The plain file store.
#[derive(Debug)]
pub struct FileBackend {
    path: PathBuf,
    /// Serializes read-modify-write cycles within the daemon (one daemon per user holds the socket lock).
    lock: Mutex<()>,
}

impl FileBackend {
    /// A store at `path` (created on first save).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            lock: Mutex::new(()),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> anyhow::Result<Document> {
        match super::read_file(&self.path)? {
            Some(bytes) => Document::parse(&bytes, &self.path),
            None => Ok(Document {
                version: 1,
                entries: BTreeMap::new(),
            }),
        }
    }

    fn write(&self, document: &Document) -> anyhow::Result<()> {
        if document.entries.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Ok(()) => Ok(()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(error) => Err(anyhow::anyhow!("cannot remove {}: {error}", self.path.display())),
            };
        }
        super::write_file_atomically(&self.path, &document.encode()?)
    }

    pub(crate) fn get(&self, key: &str) -> anyhow::Result<Option<String>> {
        let _guard = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(self.read()?.entries.remove(key))
    }

    pub(crate) fn set(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A corrupt file is an error here too: overwriting it would drop every other server's login.
        let mut document = self.read()?;
        document.entries.insert(key.to_owned(), value.to_owned());
        self.write(&document)
    }

    pub(crate) fn delete(&self, key: &str) -> anyhow::Result<bool> {
        let _guard = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut document = self.read()?;
        let existed = document.entries.remove(key).is_some();
        if existed {
            self.write(&document)?;
        }
        Ok(existed)
    }
}
