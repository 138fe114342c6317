//! `corrald`: parse arguments, set up logging, run the daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use corrald::logging::{self, LogFormat};
use tokio_util::sync::CancellationToken;

/// The Corral daemon: supervises your MCP servers and serves front-ends on a local socket.
#[derive(Debug, Parser)]
#[command(name = "corrald", version, about)]
struct Args {
    /// Socket to serve [default: $XDG_RUNTIME_DIR/corral/corral.sock, else $TMPDIR/corral-$UID/corral.sock].
    #[arg(long, env = "CORRAL_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Config file [default: ~/.config/corral/config.toml]; a missing file means no servers.
    #[arg(long, env = "CORRAL_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Directory of stored credentials [default: ~/.local/share/corral].
    #[arg(long, env = "CORRAL_DATA_DIR", value_name = "PATH")]
    data_dir: Option<PathBuf>,
    /// Log format on stderr (filter with CORRAL_LOG or RUST_LOG, e.g. `debug`).
    #[arg(long, env = "CORRAL_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Do not run the built-in `corral` MCP server (which reports corrald's own state).
    #[arg(long, env = "CORRAL_NO_BUILTIN_SERVER", value_parser = clap::builder::FalseyValueParser::new())]
    no_builtin_server: bool,
    /// Put each stdio server in its own cgroup v2 leaf below corrald's cgroup, so that every
    /// process it starts is killed with it (Linux; needs a delegated cgroup: `Delegate=yes`
    /// under systemd). Without a usable cgroup corrald warns and runs servers without one.
    #[arg(long, env = "CORRAL_SERVER_CGROUPS", value_parser = clap::builder::FalseyValueParser::new())]
    server_cgroups: bool,
    /// Seconds a front-end has to answer a server's elicitation (or sampling)
    /// request before it is withdrawn and the server told it was cancelled.
    #[arg(
        long,
        env = "CORRAL_ELICITATION_TIMEOUT_SEC",
        value_name = "SECONDS",
        default_value_t = 600
    )]
    elicitation_timeout_sec: u64,
    /// Serve the loopback streamable-HTTP MCP endpoint at this address (e.g. 127.0.0.1:7767; port 0
    /// picks a free one), whatever `[mcp_endpoint]` in the config says about `enabled` and `listen`.
    /// An address that is not loopback is refused unless the config sets `allow_non_loopback`.
    #[arg(long, env = "CORRAL_MCP_ENDPOINT", value_name = "ADDR")]
    mcp_endpoint: Option<std::net::SocketAddr>,
    /// Milliseconds an MCP endpoint session may be idle before it is closed (tests shorten it).
    #[arg(long, env = "CORRAL_MCP_ENDPOINT_IDLE_MS", hide = true)]
    mcp_endpoint_idle_ms: Option<u64>,
    /// Milliseconds a connection has to complete `initialize` (tests shorten it).
    #[arg(long, env = "CORRAL_HANDSHAKE_TIMEOUT_MS", hide = true)]
    handshake_timeout_ms: Option<u64>,
    /// Milliseconds a started message has to be completed (tests shorten it).
    #[arg(long, env = "CORRAL_FRAME_TIMEOUT_MS", hide = true)]
    frame_timeout_ms: Option<u64>,
    /// Bytes of unfinished messages all connections may hold together (tests lower it).
    #[arg(long, env = "CORRAL_PARTIAL_FRAME_BYTES", hide = true)]
    partial_frame_bytes: Option<usize>,
    /// Register `debug/*` methods used by Corral's own tests and benchmarks.
    #[arg(long, env = "CORRAL_TEST_HOOKS", hide = true, value_parser = clap::builder::FalseyValueParser::new())]
    enable_test_hooks: bool,
}

/// `pow` for the executable, so that glibc's libm is not loaded: it is the only libm function
/// corrald calls (`f64::powf` in tokio's multi-threaded scheduler, its poll-time average), and
/// loading libm.so maps about 0.5 MiB of it into every corrald, for its relocations and the
/// IFUNC resolvers of functions corrald never calls. The linker resolves `pow` here, before
/// the shared libraries, and leaves libm.so out (`--as-needed`); should another libm function
/// ever be called, libm.so is simply loaded again. `libm::pow` is musl's, as accurate.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[unsafe(no_mangle)]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

fn main() -> ExitCode {
    // SAFETY: first thing in main: no other thread exists yet.
    let inherited = unsafe { corrald::service::Inherited::take() };
    let args = Args::parse();
    logging::init(args.log_format);
    let inherited = match inherited {
        Ok(inherited) => inherited,
        Err(error) => {
            tracing::error!("{error:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut options = corrald::Options::new(
        corral_protocol::paths::socket_path(args.socket.as_deref()),
        corral_protocol::paths::config_path(args.config.as_deref()),
    );
    options.test_hooks = args.enable_test_hooks;
    options.builtin_server = !args.no_builtin_server;
    options.server_cgroups = args.server_cgroups;
    options.inherited = inherited;
    options.data_dir = corral_protocol::paths::data_dir(args.data_dir.as_deref());
    options.answer_deadline = std::time::Duration::from_secs(args.elicitation_timeout_sec);
    options.mcp_endpoint = args.mcp_endpoint;
    if let Some(ms) = args.mcp_endpoint_idle_ms {
        options.mcp_endpoint_idle = std::time::Duration::from_millis(ms);
    }
    if let Some(ms) = args.handshake_timeout_ms {
        options.connection_limits.handshake = std::time::Duration::from_millis(ms);
    }
    if let Some(ms) = args.frame_timeout_ms {
        options.connection_limits.frame = std::time::Duration::from_millis(ms);
    }
    if let Some(bytes) = args.partial_frame_bytes {
        options.connection_limits.partial_frame_bytes = bytes;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(corrald::run(options, CancellationToken::new())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
