//! Windows: the front-end API on a named pipe (`\\.\pipe\corral-<user>`).
//!
//! Kept deliberately small, and not compiled on the Linux machines Corral is
//! developed on: it reuses the platform-neutral connection code and only
//! replaces binding and accepting. Exclusivity comes from
//! `first_pipe_instance(true)`, which fails while another daemon owns the
//! name; remote clients are rejected. Access control is the pipe's default
//! DACL (the creating user, administrators and SYSTEM may write); a check of
//! the client's user SID, like `SO_PEERCRED` on Unix, is not done yet.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use jsonrpsee::Methods;
use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{DaemonContext, router};

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

/// Accept and serve pipe clients until `shutdown` is cancelled.
pub async fn serve(
    name: std::path::PathBuf,
    mut server: NamedPipeServer,
    context: Arc<DaemonContext>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> anyhow::Result<()> {
    let methods: Methods = router::build(context.clone())
        .context("registering the front-end methods")?
        .into();
    let mut next_id: u64 = 1;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            connected = server.connect() => connected.context("accepting a pipe client")?,
        }
        // A new instance must exist before the connected one is handed off,
        // or a client arriving in between would find no pipe.
        let next = ServerOptions::new()
            .reject_remote_clients(true)
            .create(&name)
            .with_context(|| format!("cannot create named pipe {}", name.display()))?;
        let connected = std::mem::replace(&mut server, next);
        let Some(guard) = context.admit_or_wait().await else {
            tracing::warn!(
                limit = crate::api::MAX_CONNECTIONS,
                "refused a connection: too many open connections"
            );
            continue;
        };
        tracker.spawn(crate::api::run_connection(
            connected,
            // Named pipes tell no half-close from a close: always allow the grace.
            Box::new(|| false),
            next_id,
            methods.clone(),
            context.clone(),
            shutdown.clone(),
            guard,
        ));
        next_id += 1;
    }
    Ok(())
}
