//! Wire contract between `corrald` and its front-ends: JSON-RPC methods and
//! notifications, error codes, the framing codec, socket/config locations and
//! the config file format.
//!
//! Architecture invariant: this crate has no async runtime and no MCP SDK in
//! its dependencies. Front-ends in any language can be written from the JSON
//! Schema this crate generates (`protocol/schema/`), and the Rust types here
//! are the only things the daemon ever serializes for a front-end.

pub mod config;
pub mod error;
pub mod framing;
pub mod jsonrpc;
pub mod messages;
pub mod paths;
pub mod schema;

pub use error::ErrorCode;
pub use messages::*;

/// Version of the front-end protocol spoken by this crate.
///
/// Bumped on every incompatible change. The daemon accepts clients whose
/// version lies in [`MIN_SUPPORTED_PROTOCOL_VERSION`, `PROTOCOL_VERSION`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Oldest client protocol version this crate's daemon still serves.
pub const MIN_SUPPORTED_PROTOCOL_VERSION: u32 = 1;

/// Largest JSON-RPC message (one frame) either side accepts, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
