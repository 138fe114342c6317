//! Admission of front-end connections: the [`Gate`] every accepted
//! connection passes (the connection cap derived from the open-file limit, the
//! queue of connections still waiting for their `initialize`, the daemon-wide
//! budget of unfinished messages), and what a connection takes from it
//! ([`Admission`]).
//!
//! Invariants: at most [`Gate::max_connections`] connections hold a slot at
//! once, and never so many that fewer than [`FD_RESERVE`] open files are left
//! for servers; at most a quarter of the slots wait for a handshake, the
//! oldest is closed to make room for a new one, so a front-end that
//! initializes at once always gets in; a slot is given back when its
//! connection ends, or at once when it is evicted.
//!
//! The cap is [`MAX_CONNECTIONS`] (1024) or the soft open-file limit less
//! [`FD_RESERVE`] (128) and less the files of the daemon's other doors (the
//! MCP endpoint's TCP connections, `ConnectionLimits::other_files`),
//! whichever is lower ([`connection_cap`]; boot raised the soft limit to the
//! hard one before anything was opened): connections never take the files a
//! server spawn needs. Idle connections never hold
//! every slot: the handshake deadline closes them, and the queue evicts the
//! oldest. All connections' unfinished messages together hold at most
//! `ConnectionLimits::partial_frame_bytes` (256 MiB): a semaphore whose
//! permits a connection holds for what its decoder buffers, so its reader
//! waits for room before it reads more.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::connection;
use super::session::Session;

/// How long a connection may wait for a slot at the cap while slots are still
/// being given back by connections closed for an unfinished handshake.
const ADMISSION_WAIT: Duration = Duration::from_secs(1);

/// Most front-end connections served at once; more are refused (and logged).
/// Lower when the open-file limit does not leave room for this many next to
/// [`FD_RESERVE`] (see [`connection_cap`]).
pub(crate) const MAX_CONNECTIONS: usize = 1024;

/// Open files kept free of connections: for spawning servers (three pipes
/// each, and what rmcp and the OS open with them), HTTP servers' sockets,
/// the credential store, the config file and the service manager's socket.
pub(crate) const FD_RESERVE: u64 = 128;

/// Per-connection deadlines, and what all connections share.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A connection that has not completed `initialize` this long after it
    /// was accepted is closed, so idle connections cannot hold every slot.
    pub handshake: Duration,
    /// A message whose first bytes arrived must be complete within this.
    pub frame: Duration,
    /// Bytes of unfinished messages all connections together may hold; a
    /// connection that would pass it is not read until others finish theirs
    /// (or their frame deadline closes them).
    pub partial_frame_bytes: usize,
    /// Requests of one connection running at once; more wait for a slot.
    pub in_flight: usize,
    /// Requests of one connection waiting for a slot (and at most
    /// `connection::WAITING_BYTES` of them); more are answered `tooManyRequests`.
    pub waiting_requests: usize,
    /// Open files the daemon's other doors may hold (the loopback MCP
    /// endpoint's TCP connections and listener), kept out of the connection
    /// cap besides the reserve (`FD_RESERVE`).
    pub other_files: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(10),
            frame: Duration::from_secs(30),
            partial_frame_bytes: 256 * 1024 * 1024,
            in_flight: connection::MAX_IN_FLIGHT,
            waiting_requests: connection::MAX_WAITING_REQUESTS,
            other_files: 0,
        }
    }
}

/// What a connection gets from the accept loop besides its socket.
pub(crate) struct Admission {
    pub(crate) limits: ConnectionLimits,
    /// Cancelled to close the connection if it has not initialized yet.
    pub(crate) evicted: CancellationToken,
    /// The daemon-wide budget of `limits.partial_frame_bytes`.
    pub(crate) partial_frames: Arc<Semaphore>,
}

/// Connections served at once with a soft open-file limit of `open_files`
/// of which `other_files` are the other doors' (the MCP endpoint's TCP
/// connections): [`MAX_CONNECTIONS`], but never more than leaves
/// [`FD_RESERVE`] files free besides those (half of the rest on a very low
/// limit).
pub(crate) fn connection_cap(open_files: Option<u64>, other_files: u64) -> usize {
    let Some(open_files) = open_files else {
        return MAX_CONNECTIONS;
    };
    let open_files = open_files.saturating_sub(other_files);
    let room = if open_files > 2 * FD_RESERVE {
        open_files - FD_RESERVE
    } else {
        open_files / 2
    };
    usize::try_from(room).unwrap_or(usize::MAX).clamp(1, MAX_CONNECTIONS)
}

/// The soft open-file limit now, if there is one (boot raised it to the hard
/// limit before anything was opened).
pub(crate) fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct passed.
        (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } == 0).then_some(limit.rlim_cur)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// A connection's slot under the cap: given back when the connection ends, or
/// earlier when it is closed for not completing its handshake in time.
type Slot = Arc<Mutex<Option<OwnedSemaphorePermit>>>;

/// The door of the daemon's socket: who gets in, and what all connections
/// share. One per daemon, in the [`DaemonContext`](super::DaemonContext).
#[derive(Debug)]
pub(crate) struct Gate {
    /// Open connections.
    connections: AtomicU32,
    /// One permit per open connection, at most [`Gate::max_connections`].
    connection_slots: Arc<Semaphore>,
    /// The connection cap (from [`connection_cap`]).
    max_connections: usize,
    /// Connections refused because the cap was reached, since start.
    refused_connections: AtomicU64,
    /// The number of the next connection admitted, whatever its transport.
    next_id: AtomicU64,
    /// Connections admitted whose task has not yet registered its handshake
    /// (see [`Gate::admit_or_wait`]).
    unregistered: AtomicU32,
    /// Deadlines of every connection.
    limits: ConnectionLimits,
    /// Permits for the bytes of unfinished messages, shared by all connections.
    partial_frames: Arc<Semaphore>,
    /// Connections that have not completed `initialize` yet, oldest first,
    /// with the token that closes each (see [`Gate::awaiting_handshake`]).
    handshakes: Mutex<VecDeque<(Weak<Session>, CancellationToken, Slot)>>,
}

impl Gate {
    /// A gate for connections with these `limits`, capped by the open-file
    /// limit in force now.
    pub(crate) fn new(limits: ConnectionLimits) -> Self {
        let max_connections = connection_cap(open_file_limit(), limits.other_files);
        Self {
            connections: AtomicU32::new(0),
            connection_slots: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            refused_connections: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            unregistered: AtomicU32::new(0),
            limits,
            partial_frames: Arc::new(Semaphore::new(limits.partial_frame_bytes.min(Semaphore::MAX_PERMITS))),
            handshakes: Mutex::default(),
        }
    }

    /// Most connections served at once.
    pub(crate) fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Connections refused at the cap since start.
    pub(crate) fn refused_connections(&self) -> u64 {
        self.refused_connections.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub(crate) fn open_connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }

    /// A daemon-unique number for a connection just admitted: its link's id,
    /// and the owner of the session servers it adds.
    pub(super) fn next_connection_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Count a connection refused at the cap.
    pub(super) fn refused(&self) {
        self.refused_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// What the connection of `session`, admitted under `guard`, is given:
    /// the limits, the partial-frame budget and its place among the
    /// connections waiting for a handshake.
    pub(super) fn admission(&self, session: &Arc<Session>, guard: &ConnectionGuard) -> Admission {
        Admission {
            limits: self.limits,
            evicted: self.awaiting_handshake(session, &guard.slot),
            partial_frames: self.partial_frames.clone(),
        }
    }

    /// Most connections that may wait for their `initialize` at once: a
    /// quarter of the slots, so that idle connections never hold them all.
    fn max_handshakes(&self) -> usize {
        (self.max_connections / 4).max(1)
    }

    /// `session` was just accepted and has not said `initialize`: count it
    /// among the waiting handshakes. When they are at [`Self::max_handshakes`],
    /// the oldest one still waiting is closed to make room, so a front-end that
    /// initializes at once (like `corral status`) always gets in, however many
    /// idle connections are open. The returned token is cancelled to close
    /// this connection the same way.
    ///
    /// A closed one gives its connection slot back at once, not when its task
    /// has wound down: under a flood of idle connects the slots would otherwise
    /// fill with connections already being closed, and the front-end that
    /// initializes at once was refused at the cap (seen under load). Its file
    /// descriptor is covered by the reserve until the task ends.
    fn awaiting_handshake(&self, session: &Arc<Session>, slot: &Slot) -> CancellationToken {
        let token = CancellationToken::new();
        let mut handshakes = self.handshakes.lock().unwrap_or_else(PoisonError::into_inner);
        self.unregistered.fetch_sub(1, Ordering::Relaxed);
        handshakes.retain(|(waiting, _, _)| waiting.upgrade().is_some_and(|waiting| !waiting.is_initialized()));
        while handshakes.len() >= self.max_handshakes() {
            let Some((_, oldest, oldest_slot)) = handshakes.pop_front() else {
                break;
            };
            oldest.cancel();
            drop(oldest_slot.lock().unwrap_or_else(PoisonError::into_inner).take());
        }
        handshakes.push_back((Arc::downgrade(session), token.clone(), slot.clone()));
        token
    }

    /// Count a new connection if there is room for it; the guard uncounts it.
    fn admit(self: &Arc<Self>) -> Option<ConnectionGuard> {
        let permit = self.connection_slots.clone().try_acquire_owned().ok()?;
        Some(self.admitted(permit))
    }

    fn admitted(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> ConnectionGuard {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.unregistered.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard {
            gate: self.clone(),
            slot: Arc::new(Mutex::new(Some(permit))),
        }
    }

    /// A slot for a new connection, or `None` at the cap. When connections
    /// admitted just before have not yet registered their handshakes (their
    /// tasks have not run: the accept loop outpaces them in a burst of
    /// connects), the cap is not final yet: registering closes the oldest idle
    /// ones and gives their slots back, so this waits for that (at most
    /// [`ADMISSION_WAIT`]) rather than refusing a front-end that would have
    /// fitted (seen under load: `corral status` refused amid idle connects).
    pub(super) async fn admit_or_wait(self: &Arc<Self>) -> Option<ConnectionGuard> {
        if let Some(guard) = self.admit() {
            return Some(guard);
        }
        if self.unregistered.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let permit = tokio::time::timeout(ADMISSION_WAIT, self.connection_slots.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        Some(self.admitted(permit))
    }
}

/// Decrements the open-connection count when a connection task ends (and
/// gives its slot back, if eviction did not already).
pub(super) struct ConnectionGuard {
    gate: Arc<Gate>,
    slot: Slot,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        // Taken, not just dropped with this handle: the handshake list may hold another.
        drop(self.slot.lock().unwrap_or_else(PoisonError::into_inner).take());
        self.gate.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_the_fd_reserve_free() {
        assert_eq!(connection_cap(None, 0), MAX_CONNECTIONS);
        assert_eq!(connection_cap(Some(1_048_576), 0), MAX_CONNECTIONS);
        assert_eq!(connection_cap(Some(1024), 0), 1024 - 128);
        assert_eq!(connection_cap(Some(257), 0), 129);
        assert_eq!(connection_cap(Some(256), 0), 128, "half of a low limit");
        assert_eq!(connection_cap(Some(10), 0), 5);
        assert_eq!(connection_cap(Some(0), 0), 1, "never zero: corral status must get in");
    }

    #[test]
    fn the_mcp_endpoints_connections_are_kept_out_of_the_cap() {
        assert_eq!(connection_cap(Some(1024), 257), 1024 - 257 - 128);
        assert_eq!(connection_cap(Some(1_048_576), 257), MAX_CONNECTIONS);
        assert_eq!(
            connection_cap(Some(128), 33),
            (128 - 33) / 2,
            "half of what is left of a low limit"
        );
        assert_eq!(connection_cap(Some(10), 257), 1, "never zero");
    }
}
