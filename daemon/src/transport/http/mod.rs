//! Streamable-HTTP MCP servers (see [`connect`] for now).

mod connect;

pub(crate) use connect::*;
