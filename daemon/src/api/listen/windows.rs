//! Windows: the front-end API on a named pipe (`\\.\pipe\corral-<user>`).
//!
//! Kept deliberately small, and not compiled on the Linux machines Corral is
//! developed on: it only binds and accepts ([`PipeAcceptor`]); the accept
//! loop, admission and connections are the platform-neutral code. Exclusivity comes from
//! `first_pipe_instance(true)`, which fails while another daemon owns the
//! name; remote clients are rejected. Access control is the pipe's default
//! DACL (the creating user, administrators and SYSTEM may write); a check of
//! the client's user SID, like `SO_PEERCRED` on Unix, is not done yet.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};

/// Create the first instance of the daemon's pipe, or explain who has it.
pub fn bind(name: &Path) -> anyhow::Result<NamedPipeServer> {
    match ServerOptions::new()
        .first_pipe_instance(true)
        .reject_remote_clients(true)
        .create(name)
    {
        Ok(server) => Ok(server),
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
            bail!(
                "another corrald is already serving {}: stop it first, or choose another --socket",
                name.display()
            )
        }
        Err(error) => Err(error).with_context(|| format!("cannot create named pipe {}", name.display())),
    }
}

/// Accepts pipe clients. An error of accepting ends nothing: the accept
/// loop (`api::serve`) backs off and asks again, and an instance
/// that could not be created is created on the next ask.
#[derive(Debug)]
pub struct PipeAcceptor {
    name: PathBuf,
    /// The instance clients connect to next; `None` after creating one failed.
    server: Option<NamedPipeServer>,
}

impl PipeAcceptor {
    /// Accept on `name`, whose first instance [`bind`] created.
    pub fn new(name: PathBuf, first: NamedPipeServer) -> Self {
        Self {
            name,
            server: Some(first),
        }
    }

    fn create_instance(&self) -> std::io::Result<NamedPipeServer> {
        ServerOptions::new().reject_remote_clients(true).create(&self.name)
    }
}

impl super::Accept for PipeAcceptor {
    type Stream = NamedPipeServer;

    async fn accept(&mut self) -> std::io::Result<Option<super::Accepted<Self::Stream>>> {
        let server = match self.server.as_mut() {
            Some(server) => server,
            None => self.server.insert(self.create_instance()?),
        };
        if let Err(error) = server.connect().await {
            // This instance may be unusable: the next ask creates a fresh one.
            self.server = None;
            return Err(error);
        }
        let connected = self.server.take().expect("the instance that just connected");
        // A new instance must exist before the connected one is handed off,
        // or a client arriving in between would find no pipe; if it cannot be
        // created now, the next ask tries again (and reports the error).
        match self.create_instance() {
            Ok(next) => self.server = Some(next),
            Err(error) => {
                tracing::warn!(%error, pipe = %self.name.display(), "cannot create the next pipe instance yet")
            }
        }
        Ok(Some(super::Accepted {
            stream: connected,
            // Named pipes tell no half-close from a close: always allow the grace.
            hung_up: Box::new(|| false),
        }))
    }
}
