//! Harness for Corral's end-to-end tests: start the real `corrald` binary in a
//! private temp dir, talk to it through the client SDK or raw socket bytes, and
//! never leave a process behind.
//!
//! - [`TestDaemon`] owns one `corrald` child process, its temp dir (config,
//!   socket, captured stderr) and its shutdown: `Drop` sends SIGTERM, waits,
//!   then SIGKILLs, so a failing test cannot leak a daemon.
//! - [`RawConnection`] is a hand-written front-end with nothing but a socket:
//!   it frames one JSON value per message in newline or `Content-Length`
//!   framing, with its own parser (not the protocol crate's codec, which is
//!   what is under test).
//! - Every wait is bounded ([`WAIT`]); reaching a bound is a test failure
//!   that says what was being waited for.
//! - MCP server peers (`tests/peers/`): config entries for the fixture server
//!   and the npm reference servers ([`fixture_config`], [`everything_config`],
//!   [`filesystem_config`]), polling a server's status ([`wait_for_status`]),
//!   recording its status notifications in order ([`StatusRecorder`]), and
//!   checking by pid that processes are gone ([`assert_all_gone`]), with
//!   [`KillSurvivorsOnDrop`] so that a failing test leaves nothing running.
//!
//! The harness is split by what it drives (`daemon`, `raw`, `wait`, `process`,
//! `recorder`, `peers::{http, oauth, keyring}`); everything is re-exported here, so
//! tests `use corral_tests::*` or name items at the crate root.
//!
//! The binaries are found next to the test executable
//! (`target/<profile>/deps/<test>` → `target/<profile>/corrald`): `bash
//! tests/run.sh` builds them with `cargo build --workspace --bins` first.

mod daemon;
mod peers;
mod process;
mod raw;
mod recorder;
mod wait;

pub use daemon::*;
pub use peers::http::*;
pub use peers::keyring::*;
pub use peers::oauth::*;
pub use peers::*;
pub use process::*;
pub use raw::*;
pub use recorder::*;
pub use wait::*;
