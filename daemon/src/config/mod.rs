//! The daemon's side of its config file: watching it and applying a new one
//! live ([`reload`]). The file format and its validation are the protocol
//! crate's (`corral_protocol::config`), shared with `corral config check`.

pub mod reload;
