//! Streamable-HTTP MCP servers: building the request headers, the HTTP
//! client and rmcp's streamable-HTTP transport, the start of a session with a
//! server of either MCP era, and connecting with retries.
//! Its errors are turned into `FailureReason`s by `mcp::classify`.
//!
//! The lifecycle (starting → ready → reconnect after the server went away)
//! is `server`'s, shared with stdio servers; this module only knows HTTP:
//! `session` opens, renews and probes sessions and returns what happened.
//!
//! **The seam for authentication.** Everything here is generic over rmcp's
//! `StreamableHttpClient`; which client a server gets is decided in one
//! place, [`HttpBackend`]: a plain `reqwest::Client` whose only timeout is
//! the connect timeout (10 s; an overall timeout would cut the long-lived
//! SSE `GET`, [`HttpBackend::plain`]), rmcp's OAuth-managed
//! `AuthClient<reqwest::Client>` (whose error type is also
//! `reqwest::Error`), chosen by the server task when stored credentials
//! exist, or the same over [`DpopClient`] when the stored token is
//! DPoP-bound (`Authorization: DPoP` and a proof on every request, the
//! server's nonce learned and the request sent once more; see `dpop`);
//! or a [`TokenClient`] whose tokens come from a [`TokenSource`] (the
//! grants for machines of `auth::grants`, which this room never names);
//! [`HttpBackend::connect`] dispatches all three to the same generic
//! `connect_with`. Static headers, env headers (an unset or blank variable
//! skips its header, with a warning) and a bearer env var (unset, empty or
//! not Unicode fails, naming the variable) are resolved by [`prepare`]; a
//! stored token must never be used when the config has an `Authorization`
//! header (static or from the environment, set or not) or
//! `bearer_token_env_var` ([`Prepared::has_explicit_authorization`]).
//!
//! **Health.** Every request goes through `Observed`, a
//! `StreamableHttpClient` wrapper over either client that tells the server
//! task (`HealthSignal`) when the server could not be reached, when the event
//! stream's `GET` got 404 (the session is gone and no request is waiting to
//! recover it), and when a 401 outlived the OAuth client's refresh
//! (`AuthRequired`). rmcp's SSE reconnect policy is ours too
//! (`EventStreamRetry`, the same delays as below), and reports failed
//! reconnects. What the task does with them is `server`'s: a failed `ping`
//! after "unreachable" is a crash, a 401 fails the server until a new login.
//!
//! **MCP versions.** A session starts with `initialize` offering 2025-11-25,
//! the newest version with a handshake, carrying MCP 2026-07-28's
//! `MCP-Protocol-Version` and `Mcp-Method` headers (`Observed`) and its
//! per-request `_meta` (`McpClientHandler::offering`), so servers of either
//! era read it; a dual-era server answers it and the session is the
//! 2025-11-25 one corrald drives fully (event stream, server requests,
//! logging). A server that refuses it gets at most one more start, chosen by
//! `transport::era` from the refusal: the 2026-07-28 start (`server/discover`, then
//! every request with its `_meta` and headers, rmcp's own, including
//! `Mcp-Name` and the `Mcp-Param-*` of `x-mcp-header` parameters; no session)
//! for a server of 2026-07-28 only, or `initialize` at an older version the
//! server names; the choice and the starts are `transport::era`'s, the same
//! for stdio servers. Why handshake first rather than `server/discover` first
//! (the order 2026-07-28 suggests): the first message every server gets stays
//! the `initialize` it always got.
//!
//! **Retries.** `initialize` and the first `tools/list` are retried after
//! transient failures (connect errors, no response, HTTP
//! 408/429/500/502/503/504) with short backoff (`RETRY_DELAYS`: 0.25, 0.5,
//! 1, then 2 s) until the startup deadline, with a fresh transport for every
//! `initialize` attempt. Nothing else is replayed here: `tools/call` and
//! every other request go out once (session recovery after a 404, which
//! retries once, is `server::session` + `mcp::forward`). rmcp's own
//! `reinit_on_expired_session` is off: it would re-initialize inside the
//! transport and replay every failed POST without telling anyone.
//!
//! Invariant: no secret (header value, token) appears in an error message or
//! a log line; URLs are not quoted either (they may carry a token).

mod client;
mod connect;
mod dpop;
mod headers;
mod session;
mod token_client;

// What the rest of the daemon uses; the files are this room's own layout.
pub(crate) use client::{HealthSignal, HttpBackend};
pub(crate) use connect::list_tools;
pub(crate) use dpop::{DpopClient, ProofSigner};
pub(crate) use headers::{Prepared, configures_authorization, prepare};
pub(crate) use session::{ConnectionSpec, HttpConnection, Probe, probe};
pub(crate) use token_client::{TokenClient, TokenError, TokenSource};
