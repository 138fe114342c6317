//! The way out to front-ends: daemon-wide notifications ([`events`]), the
//! daemon's side of one front-end connection (`link`), and what goes to one
//! front-end rather than all (`routes`). Speaks protocol types only.

pub mod events;
pub(crate) mod link;
pub(crate) mod routes;
