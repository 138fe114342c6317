//! Living under a service manager: readiness, status, watchdog and stopping
//! notifications (systemd's `sd_notify` protocol), and the listening socket a
//! socket-activating manager hands over.
//!
//! On Linux these talk to `$NOTIFY_SOCKET` through the `sd-notify` crate, on
//! the one thread a [`Notifier`] owns (created at boot, cloned to the
//! reloader, the watchdog task and shutdown); without that variable (a
//! terminal, launchd, tests) every notification is a no-op and nothing
//! changes. Other platforms compile the same API as no-ops:
//! launchd has no readiness protocol, and starts corrald with `KeepAlive`.
//!
//! What is sent, in order:
//! - `READY=1` with a `STATUS=` once the socket accepts connections and every
//!   config server has been launched (not when they are ready: startup never
//!   waits for the slowest server);
//! - `STATUS=` again whenever the one-line summary changes ("5 servers: 4
//!   ready, 1 failed");
//! - `RELOADING=1` (with `MONOTONIC_USEC=`) and then `READY=1` around applying
//!   a reloaded config file;
//! - `WATCHDOG=1` every half watchdog interval, but only after the supervisor
//!   actually answered a question: a wedged supervisor stops the pings, and
//!   the service manager restarts the daemon;
//! - `STOPPING=1` when shutdown begins; the notifier is flushed (for at most
//!   1 s) before the process exits, so it is not lost.
//!
//! The watchdog check is `counts` asked of the supervisor actor, answered
//! within half the interval (at most 2 s); the status line is refreshed only
//! on a status change or a reload, not on every notification. What the
//! manager passed (`LISTEN_FDS`, `WATCHDOG_USEC`) is read by `Inherited::take`
//! first thing in `main`, before any thread exists, and unset, so no server
//! inherits it. Invariant: no async task ever blocks on the service manager
//! (the notifier's thread does the blocking writes; see `notify`).

mod inherited;
mod notify;
mod watchdog;

pub use inherited::Inherited;
pub use notify::{Notice, Notifier};
pub use watchdog::{run, status_line};
