//! Authentication of streamable-HTTP servers. [`Auth`] (in `state`) is the room's one object,
//! made once at boot and shared as an `Arc`: it owns the credential store, the OAuth settings,
//! the logins waiting for the browser, the step-up bookkeeping and the discovery cache, and runs
//! the login flow, logout and `authStatus`. Below it: the OAuth protocol on rmcp and the
//! OAuth-managed HTTP client ([`oauth`]), DPoP keys and proofs ([`dpop`]), the grants for
//! machines that need no login ([`grants`]), and where credentials are stored ([`credentials`]).
//!
//! Architecture invariant: this room never names `supervisor`, `server`, `api` or
//! `config::reload`; a caller hands in a server's config and acts on the outcome (restart,
//! notification). No token, code, client secret or authorization URL in a log line or an error.

mod address_policy;
pub mod credentials;
pub mod dpop;
pub mod grants;
pub mod oauth;
mod state;

pub use state::{
    Auth, LoggedOut, LoginError, LogoutError, MAX_STEP_UPS, STEP_UP_WINDOW, StartedLogin, StepUpsExhausted,
};
