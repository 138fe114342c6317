//! When a crashed server is restarted, when the daemon gives up on it, and how long its
//! teardown may take: the policies of one server, read from its config entry.
//!
//! A crash after `ready` is restarted with capped exponential backoff ([`RestartPolicy`]):
//! the delay doubles with every consecutive crash, and a server that stayed up at least
//! `max_backoff` counts as healthy again. [`CrashHistory`] is the task's memory of recent
//! crashes: `crash_limit` crashes within `crash_window` mark the server `crashLoop`, and it
//! is not restarted until it is started again (which clears the history).

use std::time::{Duration, Instant};

use corral_protocol::config::ServerConfig;

use crate::process::teardown::TeardownPolicy;

/// When a crashed server is restarted, and when the daemon gives up.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    /// Delay before the first restart; doubles with every consecutive crash.
    pub initial_backoff: Duration,
    /// Longest delay between restarts.
    pub max_backoff: Duration,
    /// This many crashes within `crash_window` mark the server `crashLoop`.
    pub crash_limit: usize,
    /// See `crash_limit`.
    pub crash_window: Duration,
}

impl RestartPolicy {
    pub(super) fn from_config(config: &ServerConfig) -> Self {
        Self {
            initial_backoff: config.restart_backoff_initial,
            max_backoff: config.restart_backoff_max,
            crash_limit: usize::try_from(config.crash_loop_limit).unwrap_or(usize::MAX),
            crash_window: corral_protocol::config::CRASH_LOOP_WINDOW,
        }
    }

    fn backoff(&self, consecutive_crashes: u32) -> Duration {
        let factor = 2u32.saturating_pow(consecutive_crashes.saturating_sub(1).min(16));
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// A server's teardown bound (`stop_timeout_sec`), split between stdin EOF and SIGTERM.
pub(super) fn teardown_policy(config: &ServerConfig) -> TeardownPolicy {
    TeardownPolicy::within(config.stop_timeout)
}

/// What the restart policy says after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterCrash {
    /// Restart after this delay.
    Restart(Duration),
    /// It crashed this many times within the window: give up until it is started again.
    CrashLoop(usize),
}

/// The crashes of one server that the restart policy counts.
#[derive(Debug, Default)]
pub(super) struct CrashHistory {
    /// When it crashed, within the last `crash_window`.
    recent: Vec<Instant>,
    /// Crashes in a row, each before the server stayed up `max_backoff`.
    consecutive: u32,
}

impl CrashHistory {
    /// Forget every crash: the server was started on request.
    pub(super) fn clear(&mut self) {
        self.recent.clear();
        self.consecutive = 0;
    }

    /// Count a crash at `now` of a server that had been ready for `ready_for`.
    pub(super) fn record(&mut self, policy: &RestartPolicy, ready_for: Duration, now: Instant) -> AfterCrash {
        if ready_for >= policy.max_backoff {
            // Stayed up long enough to count as healthy again.
            self.consecutive = 0;
        }
        self.recent.retain(|at| now.duration_since(*at) < policy.crash_window);
        self.recent.push(now);
        self.consecutive += 1;
        if self.recent.len() >= policy.crash_limit {
            return AfterCrash::CrashLoop(self.recent.len());
        }
        AfterCrash::Restart(policy.backoff(self.consecutive))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        let config = corral_protocol::config::parse("[servers.s]\ncommand = \"x\"\n", std::path::Path::new("t.toml"))
            .expect("valid");
        RestartPolicy::from_config(&config.servers["s"])
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = policy();
        assert_eq!(policy.backoff(1), Duration::from_millis(500));
        assert_eq!(policy.backoff(2), Duration::from_secs(1));
        assert_eq!(policy.backoff(3), Duration::from_secs(2));
        assert_eq!(policy.backoff(10), Duration::from_secs(30));
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn crashes_back_off_then_loop_and_a_healthy_run_resets_the_backoff() {
        let policy = RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            crash_limit: 4,
            crash_window: Duration::from_secs(60),
        };
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut history = CrashHistory::default();
        let short = Duration::ZERO;
        assert_eq!(
            history.record(&policy, short, at(0)),
            AfterCrash::Restart(Duration::from_millis(100))
        );
        assert_eq!(
            history.record(&policy, short, at(1)),
            AfterCrash::Restart(Duration::from_millis(200))
        );
        // Up long enough: the backoff starts over, the window still counts the crash.
        assert_eq!(
            history.record(&policy, Duration::from_secs(1), at(2)),
            AfterCrash::Restart(Duration::from_millis(100))
        );
        assert_eq!(history.record(&policy, short, at(3)), AfterCrash::CrashLoop(4));
        history.clear();
        assert_eq!(
            history.record(&policy, short, at(4)),
            AfterCrash::Restart(Duration::from_millis(100))
        );
    }

    #[test]
    fn crashes_outside_the_window_are_forgotten() {
        let policy = RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            crash_limit: 2,
            crash_window: Duration::from_secs(10),
        };
        let start = Instant::now();
        let mut history = CrashHistory::default();
        assert!(matches!(
            history.record(&policy, Duration::ZERO, start),
            AfterCrash::Restart(_)
        ));
        let later = start + Duration::from_secs(10);
        assert!(matches!(
            history.record(&policy, Duration::ZERO, later),
            AfterCrash::Restart(_)
        ));
        assert_eq!(
            history.record(&policy, Duration::ZERO, later + Duration::from_secs(1)),
            AfterCrash::CrashLoop(2)
        );
    }
}
