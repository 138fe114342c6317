//! The daemon's side of its config file: watching it and applying a new one
//! live ([`reload`]), and the daemon-wide keys read once at startup
//! ([`settings`]). The file format and its validation are the protocol
//! crate's (`corral_protocol::config`), shared with `corral config check`.

pub mod reload;
pub mod settings;
