//! How corrald reaches an MCP server: a child process over stdio
//! ([`stdio`]) or streamable HTTP (`http`). The lifecycle around a
//! transport is `server`'s, the same for every transport.

pub(crate) mod http;
pub mod stdio;
