//! Per-connection state: who the front-end is, which protocol it speaks
//! (its link's dialect) and its place in the event stream.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use corral_protocol::{ClientCapabilities, ClientInfo};

use crate::hub::events::{EventHub, Subscription};
use crate::hub::link::Link;

/// One front-end connection. Shared between the connection task and the
/// method handlers (through jsonrpsee `Extensions`).
#[derive(Debug)]
pub(crate) struct Session {
    /// Daemon-unique connection id.
    pub(crate) id: u64,
    /// The daemon's requests and targeted notifications to this front-end.
    pub(crate) link: Arc<Link>,
    state: Mutex<SessionState>,
}

#[derive(Debug, Default)]
struct SessionState {
    client: Option<(ClientInfo, ClientCapabilities)>,
    /// Taken by the connection's writer right after a successful `initialize`.
    start: Option<WriterStart>,
}

/// What the connection's writer starts forwarding once the answer to
/// `initialize` is written.
#[derive(Debug)]
pub(crate) enum WriterStart {
    /// A Corral front-end: the daemon's notifications, and the link's messages.
    Events(Subscription),
    /// An MCP client: only what is routed to it through its link (never
    /// Corral's daemon-wide notifications).
    LinkOnly,
}

impl Session {
    pub(crate) fn new(id: u64, link: Arc<Link>) -> Self {
        Self {
            id,
            link,
            state: Mutex::new(SessionState::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SessionState> {
        // Plain data with no invariants spanning fields: usable after a panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Record the client and subscribe it to notifications; `Err` if already initialized.
    ///
    /// Returns the sequence number after which this session receives notifications.
    pub(crate) fn initialize(
        &self,
        client: ClientInfo,
        capabilities: ClientCapabilities,
        events: &EventHub,
    ) -> Result<u64, ()> {
        let mut state = self.lock();
        if state.client.is_some() {
            return Err(());
        }
        tracing::info!(connection = self.id, client = %client.name, version = ?client.version, "front-end initialized");
        let subscription = events.subscribe();
        let last_seq = subscription.last_seq;
        state.client = Some((client, capabilities));
        state.start = Some(WriterStart::Events(subscription));
        Ok(last_seq)
    }

    /// Record an MCP client (its MCP `initialize` was answered with success);
    /// `Err` if already initialized. It takes no part in the event stream.
    pub(crate) fn initialize_mcp(&self, client: ClientInfo) -> Result<(), ()> {
        let mut state = self.lock();
        if state.client.is_some() {
            return Err(());
        }
        tracing::info!(connection = self.id, client = %client.name, version = ?client.version, "MCP client initialized");
        state.client = Some((client, ClientCapabilities::default()));
        state.start = Some(WriterStart::LinkOnly);
        Ok(())
    }

    pub(crate) fn is_initialized(&self) -> bool {
        self.lock().client.is_some()
    }

    pub(crate) fn take_writer_start(&self) -> Option<WriterStart> {
        self.lock().start.take()
    }
}
