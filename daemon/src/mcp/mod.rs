//! Everything that speaks MCP to a server, on corrald's client side of
//! each session:
//! - `classify`: what a failed exchange means (a failure reason, a
//!   sentence without secrets, retry or not);
//! - `forward`: a front-end's request, sent on to one server (one function
//!   per method, the one retry after an expired session, cancel on drop),
//!   answered with the server's JSON or a plain `route::RouteError`;
//! - `handler`: how corrald introduces itself at `initialize` and what it
//!   does with a server's notifications and requests;
//! - `passthrough`: MCP requests and notifications corrald does not model,
//!   passed to one server for a front-end (which methods may not be, and
//!   which need a capability the server declared);
//! - `request_headers`: HTTP headers a front-end attaches to one request for
//!   a streamable-HTTP server, checked, carried to its HTTP client;
//! - `modern`: what a session with a server of MCP 2026-07-28 needs beyond
//!   its start: `subscriptions/listen` for its change notifications, the
//!   log level in each request's `_meta`;
//! - `rounds`: multi round-trip requests (MRTR): an `input_required`
//!   answer driven to the final result, the input asked of the front-end
//!   whose call it is;
//! - [`route`]: the way in to a ready session, as types (what the
//!   supervisor hands out for a request);
//! - `skills`: a server's skills (MCP's skills extension): listed without
//!   reading a file, one file loaded and verified against the skill's entry
//!   (size, digest, frontmatter);
//! - `tasks`: a call the server runs as a task, followed until it ends
//!   (either generation of MCP tasks), cancelled when left behind;
//! - `tool_catalog`: a ready server's tools, one immutable value per
//!   listing: rmcp's typed tool and the server's JSON joined once, the
//!   config's filters applied once;
//! - `wire_tee`: a stdio server's wire, read and written by corrald (rmcp's
//!   transport of the session sits on it): every line parsed once, the
//!   answers as the server wrote them, progress in order, and the direct
//!   lane `forward` sends `tools/call` on without rmcp.
//!
//! With `transport/` and `auth/`, this is where rmcp is used; the front-end
//! API (`api/`) never is. This room depends only on `hub` (the way out to
//! front-ends) and the protocol crate.

pub(crate) mod classify;
pub(crate) mod forward;
pub(crate) mod handler;
pub(crate) mod modern;
pub(crate) mod passthrough;
pub(crate) mod request_headers;
pub(crate) mod rounds;
pub mod route;
pub(crate) mod skills;
pub(crate) mod tasks;
pub(crate) mod tool_catalog;
pub(crate) mod wire_tee;
