//! Authentication of streamable-HTTP servers: OAuth login, the OAuth-managed
//! HTTP client and `authStatus` ([`oauth`]), and where credentials are stored
//! ([`credentials`]).

pub mod credentials;
pub mod oauth;
