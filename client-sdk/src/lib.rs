//! Async Rust client for `corrald`, the Corral daemon. The `corral` command-line tool
//! (crate `corral-cli`, in `cli/`) is built on it.
//!
//! ```no_run
//! # async fn example() -> Result<(), corral_client::ClientError> {
//! use corral_client::{Client, ConnectOptions};
//!
//! let mut client = Client::connect(ConnectOptions::new("my-front-end", "0.1.0")).await?;
//! let mut notifications = client.take_notifications().expect("taken once");
//! for server in client.mcp_server_list().await?.servers {
//!     println!("{}: {}", server.name, server.status);
//! }
//! while let Some(notification) = notifications.next().await {
//!     println!("{:?}", notification?);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Code map:
//! - module [`client`] has [`Client`] and [`ConnectOptions`]: connect,
//!   `initialize`, the generic typed [`Client::request`] and one thin wrapper
//!   per method;
//! - module [`notifications`] has the typed notification stream;
//! - module [`requests`] has the daemon's requests to this front-end
//!   (elicitation, sampling), each answered through an [`IncomingRequest`];
//! - module [`error`] has [`ClientError`];
//! - the private module `connection` is the transport loop: newline-delimited
//!   JSON-RPC (the protocol crate's envelope and framing) with a reader task, a
//!   writer task, and requests matched by id in both directions.
//!
//! Architecture invariants: the wire types are `corral-protocol`'s (re-exported
//! as [`protocol`]), never redefined here; the library never prints; every
//! buffer is bounded and an overflow ends the notification stream with a
//! reason instead of dropping notifications silently; every request from the
//! daemon gets exactly one answer (an unanswered one is refused when dropped). [`Client::connect`]
//! opens the daemon's Unix socket, or its named pipe on Windows (not compiled
//! on the Linux development machines); the rest is transport-agnostic.

pub mod client;
mod connection;
pub mod error;
pub mod notifications;
pub mod requests;

pub use client::{Client, ConnectOptions};
pub use error::ClientError;
pub use notifications::{ClientNotification, Notifications, NotificationsEnd};
pub use requests::{DaemonRequests, IncomingRequest};

/// The wire types (`corral-protocol`), so that callers use the same version as this crate.
pub use corral_protocol as protocol;

#[cfg(test)]
mod tests;
