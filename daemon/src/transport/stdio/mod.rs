//! Stdio MCP servers: the child process (`launch`, the one audited place
//! that starts a server), its stderr (`stderr`), starting a server and
//! tearing its run down as values the server task acts on (`start`), the
//! MCP transport over the pipes, lent to each start of a session (`pipe`),
//! and the OAuth opener (`opener`, the other spawn point).
//!
//! Callers use the items re-exported here: the files are this room's own
//! layout.

mod launch;
mod opener;
mod pipe;
mod start;
mod stderr;

pub use launch::{DEFAULT_ENV_VARS, LaunchError, Launched, child_env, launch, resolve_program, working_directory};
#[cfg(windows)]
pub use opener::shell_open_url;
pub use opener::spawn_opener;
pub(crate) use start::{LaunchSpec, ServerProcess, StartFailure, Started, Startup, launch_process};
pub use stderr::{StderrTail, drain_stderr};
