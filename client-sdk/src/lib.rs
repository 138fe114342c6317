//! Async Rust client for `corrald`, the Corral daemon, and the `corral` command-line tool.
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
//! - module [`error`] has [`ClientError`];
//! - the private module `transport` frames newline-delimited JSON under jsonrpsee's client.
//!
//! Architecture invariants: the wire types are `corral-protocol`'s (re-exported
//! as [`protocol`]), never redefined here; the library never prints; every
//! buffer is bounded and an overflow ends the notification stream with a
//! reason instead of dropping notifications silently. [`Client::connect`]
//! opens the daemon's Unix socket, or its named pipe on Windows (not compiled
//! on the Linux development machines); the rest is transport-agnostic.

pub mod client;
pub mod error;
pub mod notifications;
mod transport;

pub use client::{Client, ConnectOptions};
pub use error::ClientError;
pub use notifications::{ClientNotification, Notifications, NotificationsEnd};

/// The wire types (`corral-protocol`), so that callers use the same version as this crate.
pub use corral_protocol as protocol;

#[cfg(test)]
mod tests;
