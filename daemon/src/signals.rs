//! The signals that end or reload the daemon, installed first thing in
//! [`run`](crate::run): from the moment the socket exists, SIGTERM and SIGINT
//! (Ctrl-C on Windows) mean a clean shutdown and SIGHUP a reload, never the
//! default action (which would leave the socket behind, or kill the daemon).

#[cfg(unix)]
use anyhow::Context as _;

/// SIGTERM and SIGINT, caught from the start of [`run`](crate::run).
#[cfg(unix)]
pub(crate) struct ShutdownSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl ShutdownSignals {
    pub(crate) fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// Wait for either signal; returns its name.
    pub(crate) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// SIGHUP, the conventional "read your config again" (`systemctl reload`, `kill -HUP`).
#[cfg(unix)]
pub(crate) struct ReloadSignals(tokio::signal::unix::Signal);

#[cfg(unix)]
impl ReloadSignals {
    pub(crate) fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self(
            signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        ))
    }

    pub(crate) async fn recv(&mut self) {
        if self.0.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

/// Windows has no SIGHUP: reloads come from the file watcher and `config/reload`.
#[cfg(windows)]
pub(crate) struct ReloadSignals;

#[cfg(windows)]
impl ReloadSignals {
    pub(crate) fn install() -> anyhow::Result<Self> {
        Ok(Self)
    }

    pub(crate) async fn recv(&mut self) {
        std::future::pending::<()>().await;
    }
}

/// Ctrl-C, caught from the start of [`run`](crate::run) (Windows has no SIGTERM).
#[cfg(windows)]
pub(crate) struct ShutdownSignals;

#[cfg(windows)]
impl ShutdownSignals {
    pub(crate) fn install() -> anyhow::Result<Self> {
        Ok(Self)
    }

    pub(crate) async fn recv(&mut self) -> &'static str {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Ctrl-C",
            // Without a console handler the daemon can still be stopped by the
            // service manager; never return, so the daemon keeps serving.
            Err(_) => std::future::pending().await,
        }
    }
}
