//! The front-end methods, one file per group, each with a `register` that
//! adds its methods to the jsonrpsee [`RpcModule`](jsonrpsee::RpcModule).
//!
//! Handlers get the daemon-wide [`DaemonContext`](super::DaemonContext) and,
//! through jsonrpsee's `Extensions`, the `Session` of the connection that
//! called them. They translate between protocol types and the supervisor's
//! handle and map failures to the documented error codes through `rpc`;
//! they know nothing about sockets or framing.

pub(crate) mod auth;
pub(crate) mod catalog;
pub(crate) mod daemon;
pub(crate) mod debug;
pub(crate) mod passthrough;
pub(crate) mod servers;
pub(crate) mod skills;
pub(crate) mod tools;
