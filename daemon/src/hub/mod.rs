//! The way out to front-ends: daemon-wide notifications ([`events`]), the
//! daemon's side of one front-end connection (`link`), what goes to one
//! front-end rather than all (`routes`), and an MCP client's roots for the
//! servers it started for itself (`roots`). Speaks protocol types only.
//!
//! [`Hub`] holds the two side by side: boot creates one and shares it
//! (`Arc`) with the supervisor, the servers, the reloader, the watchdog and
//! the API. The event hub knows nothing of front-ends; whoever must reach
//! one front-end takes the hub (or its routes).

use std::sync::Arc;

pub mod events;
pub(crate) mod link;
pub(crate) mod roots;
pub(crate) mod routes;

use events::EventHub;
use routes::FrontEnds;

/// The daemon's way out to front-ends: what goes to all of them and what
/// goes to one.
#[derive(Debug)]
pub struct Hub {
    /// Daemon-wide notifications: sequence numbers, fan-out and replay.
    pub events: EventHub,
    /// The front-ends and what is routed to one of them (servers' requests,
    /// progress, subscriptions). Shared on its own with the raw wire.
    pub(crate) routes: Arc<FrontEnds>,
}

impl Hub {
    /// A hub whose event history keeps the last `capacity` notifications,
    /// with no front-end yet.
    pub fn new(capacity: usize) -> Self {
        Self {
            events: EventHub::new(capacity),
            routes: Arc::new(FrontEnds::default()),
        }
    }
}
