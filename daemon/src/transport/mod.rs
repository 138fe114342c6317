//! How corrald reaches an MCP server: a child process over stdio
//! ([`stdio`]), streamable HTTP (`http`), or a server inside corrald
//! ([`in_process`]). The lifecycle around a transport is `server`'s, the
//! same for every transport: the functions here return values (a started
//! session or a failure) and never write a server's state. How a session
//! starts with a server of either MCP era (`initialize`, or MCP
//! 2026-07-28's `server/discover`) is one piece for every transport
//! (`era`).

pub(crate) mod era;
pub(crate) mod http;
pub mod in_process;
pub mod stdio;

use rmcp::RoleClient;
use rmcp::service::RunningService;

use crate::mcp::handler::McpClientHandler;

/// corrald's MCP session with one server, whatever the transport.
pub(crate) type McpSession = RunningService<RoleClient, McpClientHandler>;
