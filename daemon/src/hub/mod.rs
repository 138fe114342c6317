//! The way out to front-ends: daemon-wide notifications ([`events`]) and what
//! goes to one front-end rather than all (`routes`). Speaks protocol types
//! only.

pub mod events;
pub(crate) mod routes;
