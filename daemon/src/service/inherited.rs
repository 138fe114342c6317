//! What the service manager passed: the socket-activation fd and the
//! watchdog interval, read once at startup.

use std::time::Duration;

/// What the service manager set up for this process, read once at startup
/// (before any thread exists, because reading also removes the variables so
/// that nothing corrald starts inherits them).
#[derive(Debug, Default)]
pub struct Inherited {
    /// The listening socket of socket activation (`LISTEN_FDS`), if any.
    #[cfg(unix)]
    pub listener: Option<std::os::fd::OwnedFd>,
    /// The watchdog interval (`WATCHDOG_USEC`), if the manager wants pings.
    pub watchdog: Option<Duration>,
}

impl Inherited {
    /// Take what the service manager passed.
    ///
    /// # Safety
    ///
    /// Must be called before any other thread exists (it edits the
    /// environment), i.e. first thing in `main`.
    pub unsafe fn take() -> anyhow::Result<Self> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::FromRawFd as _;
            // SAFETY: the caller guarantees no other thread runs.
            let fds: Vec<i32> = unsafe { sd_notify::listen_fds_and_unset_env() }
                .map_err(|error| {
                    anyhow::anyhow!("invalid socket activation variables (LISTEN_FDS/LISTEN_PID): {error}")
                })?
                .collect();
            if fds.len() > 1 {
                anyhow::bail!(
                    "the service manager passed {} sockets (LISTEN_FDS); corrald serves exactly one: check the .socket unit",
                    fds.len()
                );
            }
            // SAFETY: sd_listen_fds semantics: descriptors from 3 on are ours,
            // open, and owned by nobody else in this process.
            let listener = fds.first().map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(*fd) });
            // SAFETY: as above.
            let watchdog = unsafe { sd_notify::watchdog_enabled_and_unset_env() };
            Ok(Self { listener, watchdog })
        }
        #[cfg(not(target_os = "linux"))]
        {
            Ok(Self::default())
        }
    }
}
