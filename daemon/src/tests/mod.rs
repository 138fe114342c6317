//! The in-process test tier: the front-end API served over
//! `tokio::io::duplex` by a real supervisor (no built-in server, stdio
//! servers only as config entries that are never started), with no socket,
//! no child process and no D-Bus, so protocol-level cases (framing, batches,
//! the handshake rules, error codes) run in milliseconds. The end-to-end
//! suite (`tests/tests/e2e/`) keeps what needs the real binary: sockets,
//! signals, processes, peers. Test hooks (`debug/*`) are on, as in the
//! end-to-end daemon when a test asks for them.
//!
//! The front-end side is the end-to-end tests' own hand-written client,
//! [`corral_tests::RawConnection`], so a case reads the same in both tiers.

mod dispatch;
mod framing;
mod handshake;
mod mcp_clients;
mod notifications;

use std::sync::Arc;
use std::time::Instant;

use corral_client::{Client, ConnectOptions};
use corral_tests::{RawConnection, WAIT, WireFraming};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, DaemonContext};

/// Bytes a duplex buffers in each direction: more than any message a case sends at once.
const DUPLEX_BUFFER: usize = 1024 * 1024;

/// A daemon without a socket: [`crate::run`]'s own wiring ([`crate::boot::wire`]) minus the listener,
/// the credential store and the service manager.
pub(crate) struct InProcessDaemon {
    context: Arc<DaemonContext>,
    methods: api::router::MethodTables,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    next_connection: u64,
    _dir: tempfile::TempDir,
}

impl InProcessDaemon {
    /// A daemon with no config file.
    pub(crate) async fn start() -> Self {
        Self::start_with_config(None).await
    }

    /// A daemon reading `config` (TOML) as its config file.
    pub(crate) async fn start_with_config(config: Option<&str>) -> Self {
        Self::start_with(config, api::ConnectionLimits::default()).await
    }

    /// A daemon reading `config` (TOML), serving connections under `limits`.
    pub(crate) async fn start_with(config: Option<&str>, limits: api::ConnectionLimits) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config_path = dir.path().join("config.toml");
        if let Some(config) = config {
            std::fs::write(&config_path, config).expect("writing the config file");
        }
        let snapshot = crate::config::reload::FileSnapshot::take(&config_path);
        let config = corral_protocol::config::load(&config_path).expect("a valid test config");
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let wired = crate::boot::wire(
            crate::boot::Wiring {
                config: &config,
                config_path,
                snapshot,
                config_error: None,
                socket_path: dir.path().join("in-process.sock"),
                started: Instant::now(),
                builtin_server: false,
                credentials: None,
                processes: crate::process::reaper::Registry::without_record(),
                // Silent: never a service manager's, whatever the environment says.
                notifier: crate::service::Notifier::default(),
                poll_interval: crate::config::reload::POLL_INTERVAL,
                answer_deadline: crate::hub::routes::DEFAULT_ANSWER_DEADLINE,
                connection_limits: limits,
                test_hooks: true,
            },
            &shutdown,
            &tracker,
        );
        let context = wired.context;
        let methods = api::router::tables(context.clone()).expect("registering the front-end methods");
        Self {
            context,
            methods,
            shutdown,
            tracker,
            next_connection: 1,
            _dir: dir,
        }
    }

    /// One end of a new connection; a task of this daemon serves the other.
    fn open(&mut self) -> tokio::io::DuplexStream {
        self.open_with_buffer(DUPLEX_BUFFER)
    }

    /// [`InProcessDaemon::open`] with a duplex of `buffer` bytes each way.
    fn open_with_buffer(&mut self, buffer: usize) -> tokio::io::DuplexStream {
        let (front_end, daemon_side) = tokio::io::duplex(buffer);
        let id = self.next_connection;
        self.next_connection += 1;
        self.tracker.spawn(api::serve_stream(
            daemon_side,
            id,
            self.methods.clone(),
            self.context.clone(),
            self.shutdown.child_token(),
        ));
        front_end
    }

    /// A new hand-written front-end connection (not initialized).
    pub(crate) fn connect(&mut self, framing: WireFraming) -> RawConnection {
        RawConnection::from_stream(self.open(), framing)
    }

    /// A connection with newline-delimited JSON.
    pub(crate) fn line_connection(&mut self) -> RawConnection {
        self.connect(WireFraming::Lines)
    }

    /// A connection with LSP `Content-Length` framing.
    pub(crate) fn content_length_connection(&mut self) -> RawConnection {
        self.connect(WireFraming::ContentLength)
    }

    /// A connected, initialized [`Client`] (the SDK) over a new connection.
    pub(crate) async fn connect_client(&mut self) -> Client {
        let options = ConnectOptions::new("corral-in-process-tests", env!("CARGO_PKG_VERSION"))
            .with_connect_timeout(WAIT)
            .with_request_timeout(WAIT);
        Client::connect_with_stream(self.open(), options)
            .await
            .unwrap_or_else(|error| panic!("corral_client cannot connect in-process: {error}"))
    }

    /// The pid `initialize` reports: this test process's.
    pub(crate) fn pid(&self) -> u32 {
        std::process::id()
    }
}

impl Drop for InProcessDaemon {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.tracker.close();
    }
}

impl InProcessDaemon {
    /// A hand-written connection whose stream holds at most `buffer` bytes
    /// each way, as a socket's buffers do: a front-end that does not read
    /// stops the daemon's writer for it once that much is waiting.
    pub(crate) fn connect_with_buffer(&mut self, framing: WireFraming, buffer: usize) -> RawConnection {
        RawConnection::from_stream(self.open_with_buffer(buffer), framing)
    }
}
