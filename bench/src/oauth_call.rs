//! `tools/call` through corrald to an OAuth-protected streamable-HTTP server, once per credential
//! store: every request of such a server asks the store for its access token (rmcp's `AuthClient`
//! loads the credentials before each request), so this row shows what the store costs a call.
//!
//! One TS SDK example server with `--oauth` on loopback (as in `oauth_login`); per store, a daemon
//! with that `credentials_store`, logged in through `tests/peers/follow_url.py` and waited for until
//! `ready`; then `warmup` unmeasured and `requests` measured sequential `tools/call` of its `greet`
//! tool on one raw connection per daemon, each answer checked. The stores: `file`; `encrypted-file` with its
//! key in a 0600 key file (no keyring); and, on a private session bus with gnome-keyring's Secret
//! Service (as the tests start it), `encrypted-file` with its key in the keyring and `keyring`.
//! Without `dbus-daemon`/`gnome-keyring-daemon` the last two are skipped and say why.
//!
//! The yardstick (issue #13: each store within 10 % of it): in the `file` store's daemon, once
//! logged in, the same server is added by a reload under a second name with the access token the
//! login stored as a static `Authorization: Bearer` header, so its calls read no store. All the
//! stores' daemons run at once against one server process, each logged in; every setup is warmed
//! up, then called in blocks of 100 in an order rotated each round, and every store's p50 is given
//! as a multiple of the bearer server's.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use corral_protocol::ServerStatus;
use tokio::io::AsyncBufReadExt as _;

use crate::oauth_login::{follow_url_opener, start_sdk_oauth_server, wait_for};
use crate::peers::Peers;
use crate::servers::{ServedDaemon, call};
use crate::stats::Summary;
use crate::survivors::Survivor;

const SERVER: &str = "demo";
/// The same server with a static bearer token.
const BEARER: &str = "demo-bearer";

/// What the phase can be asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    pub(crate) warmup: usize,
    pub(crate) requests: usize,
}

/// One store's calls.
#[derive(Debug)]
pub(crate) struct StoreCalls {
    pub(crate) store: &'static str,
    pub(crate) samples: Vec<Duration>,
}

/// What the phase measured.
#[derive(Debug)]
pub(crate) struct OauthCalls {
    pub(crate) options: Options,
    pub(crate) stores: Vec<StoreCalls>,
    /// `tools/call` to the same server with the same access token as a static
    /// `Authorization: Bearer` header (no credential store), in the rotation with the stores.
    pub(crate) bearer: Vec<Duration>,
    /// Why the keyring stores were not measured, if they were not.
    pub(crate) keyring_skipped: Option<String>,
    pub(crate) survivors: Vec<Survivor>,
}

/// A private session bus with gnome-keyring's Secret Service on it; both killed on drop.
struct SecretService {
    _bus: tokio::process::Child,
    _keyring: tokio::process::Child,
    address: String,
    _home: tempfile::TempDir,
}

impl SecretService {
    async fn start() -> anyhow::Result<Self> {
        let home = tempfile::Builder::new()
            .prefix("corral-bench-keyring-")
            .tempdir()
            .context("creating the keyring's home")?;
        let mut bus = tokio::process::Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting dbus-daemon (apt-get install dbus)")?;
        let mut address = String::new();
        let bus_out = bus.stdout.take().context("dbus-daemon's stdout")?;
        tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::BufReader::new(bus_out).read_line(&mut address),
        )
        .await
        .context("dbus-daemon printed no address within 10 s")?
        .context("reading the bus address")?;
        let address = address.trim().to_owned();
        if address.is_empty() {
            bail!("dbus-daemon printed no address");
        }
        let mut keyring = tokio::process::Command::new("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env("HOME", home.path())
            .env("XDG_DATA_HOME", home.path().join("share"))
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting gnome-keyring-daemon (apt-get install gnome-keyring)")?;
        // An empty password unlocks a new login keyring; closing stdin ends the prompt.
        drop(keyring.stdin.take());
        let keyring_out = keyring.stdout.take().context("gnome-keyring's stdout")?;
        let mut ready = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::BufReader::new(keyring_out).read_line(&mut ready),
        )
        .await
        .context("gnome-keyring did not start within 10 s")?
        .context("reading gnome-keyring's start line")?;
        if !ready.contains("GNOME_KEYRING_CONTROL") {
            bail!("gnome-keyring did not start: {ready:?}");
        }
        // No login keyring means no `default` collection: point it at the unlocked session one.
        let alias = tokio::process::Command::new("dbus-send")
            .args([
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.secrets",
                "/org/freedesktop/secrets",
                "org.freedesktop.Secret.Service.SetAlias",
                "string:default",
                "objpath:/org/freedesktop/secrets/collection/session",
            ])
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .context("running dbus-send")?;
        if !alias.success() {
            bail!("dbus-send SetAlias default failed: {alias}");
        }
        Ok(Self {
            _bus: bus,
            _keyring: keyring,
            address,
            _home: home,
        })
    }
}

/// The whole phase: one server; one daemon per store, all logged in to it at once; the calls of
/// every store and of the bearer-token twin in rotating blocks.
pub(crate) async fn measure(corrald: &Path, peers: &Peers, options: Options) -> anyhow::Result<OauthCalls> {
    let (mut server, mcp_port) = start_sdk_oauth_server(peers).await?;
    // Kept until the daemons are gone: the keyring stores' daemons talk to it.
    let secret_service = SecretService::start().await;
    let mut daemons: Vec<(&'static str, ServedDaemon)> = Vec::new();
    let measured = async {
        let mut stores: Vec<(&'static str, &'static str, Environment)> = vec![
            ("file", "file", Vec::new()),
            ("encrypted-file", "encrypted-file", Vec::new()),
        ];
        if let Ok(secret_service) = &secret_service {
            let env = vec![("DBUS_SESSION_BUS_ADDRESS", OsString::from(&secret_service.address))];
            stores.push(("encrypted-file, key in the keyring", "encrypted-file", env.clone()));
            stores.push(("keyring", "keyring", env));
        }
        for (label, store, env) in &stores {
            let config = config(peers, store, mcp_port)?;
            let mut served = ServedDaemon::start_with_env(corrald, &config, 1, env).await?;
            let logged_in = login(&mut served).await.with_context(|| format!("store `{label}`"));
            if *store == "file" && env.is_empty() && logged_in.is_ok() {
                let added = add_bearer_server(&mut served, &config, mcp_port).await;
                daemons.push((label, served));
                added?;
            } else {
                daemons.push((label, served));
                logged_in?;
            }
        }
        rotate(&mut daemons, options).await
    }
    .await;
    let _ = server.kill().await;
    let _ = server.wait().await;
    // Every daemon stopped first: one still running would be taken for a survivor of another.
    for (label, ServedDaemon { daemon, connection }) in daemons {
        drop(connection);
        let stopped = daemon.stop().await?;
        if !stopped.status.success() {
            bail!(
                "the `{label}` store's corrald exited with {} after SIGTERM",
                stopped.status
            );
        }
    }
    let survivors = crate::survivors::find();
    let (stores, bearer) = measured?;
    Ok(OauthCalls {
        options,
        stores,
        bearer,
        keyring_skipped: secret_service.err().map(|error| format!("{error:#}")),
        survivors,
    })
}

/// The config of a store's daemon: the store, the opener, the server.
fn config(peers: &Peers, store: &str, mcp_port: u16) -> anyhow::Result<String> {
    Ok(format!(
        "credentials_store = \"{store}\"\noauth_opener = {}\n[servers.{SERVER}]\nurl = \"http://localhost:{mcp_port}/mcp\"\n",
        follow_url_opener(peers)?
    ))
}

/// Variables set in a daemon's environment.
type Environment = Vec<(&'static str, OsString)>;

/// Calls per block of the rotation.
const BLOCK: usize = 100;

/// Warm-up of every setup, then blocks of [`BLOCK`] calls of each store's server and of the
/// bearer-token twin (in the first daemon, the `file` store's), the order rotated every round.
async fn rotate(
    daemons: &mut [(&'static str, ServedDaemon)],
    options: Options,
) -> anyhow::Result<(Vec<StoreCalls>, Vec<Duration>)> {
    // Setup `daemons.len()` is the bearer twin.
    let setups = daemons.len() + 1;
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(options.requests); setups];
    let connection = |daemons: &mut [(&'static str, ServedDaemon)], setup: usize| {
        let (index, server) = if setup == daemons.len() {
            (0, BEARER)
        } else {
            (setup, SERVER)
        };
        (index, server)
    };
    for setup in 0..setups {
        let (index, server) = connection(daemons, setup);
        calls(&mut daemons[index].1.connection, server, options.warmup, 0).await?;
    }
    let mut round = 0;
    while samples[0].len() < options.requests {
        let count = BLOCK.min(options.requests - samples[0].len());
        for step in 0..setups {
            let setup = (round + step) % setups;
            let (index, server) = connection(daemons, setup);
            let measured = calls(&mut daemons[index].1.connection, server, 0, count).await?;
            samples[setup].extend(measured);
        }
        round += 1;
    }
    let bearer = samples.pop().unwrap_or_default();
    let stores = daemons
        .iter()
        .zip(samples)
        .map(|((store, _), samples)| StoreCalls { store, samples })
        .collect();
    Ok((stores, bearer))
}

/// The bearer-token server: the same URL, with the access token the login stored in the file
/// as a static `Authorization` header (which corrald sends as is, never touching the store);
/// added by a reload, then waited for until `ready`.
async fn add_bearer_server(served: &mut ServedDaemon, config: &str, mcp_port: u16) -> anyhow::Result<()> {
    let path = served.daemon.dir().join("data").join("credentials.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let document: serde_json::Value = serde_json::from_str(&text).context("parsing the credentials file")?;
    let record = document["entries"]
        .as_object()
        .and_then(|entries| entries.values().next())
        .and_then(|record| record.as_str())
        .context("no record in the credentials file")?;
    let record: serde_json::Value = serde_json::from_str(record).context("parsing the stored record")?;
    let token = record["credentials"]["token_response"]["access_token"]
        .as_str()
        .context("no access token in the stored record")?;
    let bearer = format!(
        "{config}[servers.{BEARER}]\nurl = \"http://localhost:{mcp_port}/mcp\"\nhttp_headers = {{ Authorization = {} }}\n",
        crate::peers::toml_string(&format!("Bearer {token}"))
    );
    std::fs::write(served.daemon.dir().join("config.toml"), bearer).context("writing the config")?;
    call(&mut served.connection, "config/reload", None).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = call(
            &mut served.connection,
            "mcpServer/get",
            Some(&format!("{{\"name\":\"{BEARER}\"}}")),
        )
        .await;
        if text.is_ok_and(|text| text.contains("\"status\":\"ready\"")) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the bearer-token server was not ready within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Log the OAuth server in and wait until it is `ready`.
async fn login(served: &mut ServedDaemon) -> anyhow::Result<()> {
    let connection = &mut served.connection;
    let name = format!("{{\"name\":\"{SERVER}\"}}");
    wait_for(connection, "failed (not logged in)", |server| {
        server.status == ServerStatus::Failed
    })
    .await?;
    call(connection, "mcpServer/oauthLogin", Some(&name)).await?;
    wait_for(connection, "ready", |server| server.status == ServerStatus::Ready).await
}

/// `warmup` unmeasured then `requests` measured `greet` calls to `server`.
async fn calls(
    connection: &mut crate::raw::RawConnection,
    server: &str,
    warmup: usize,
    requests: usize,
) -> anyhow::Result<Vec<Duration>> {
    let params = format!("{{\"server\":\"{server}\",\"name\":\"greet\",\"arguments\":{{\"name\":\"x\"}}}}");
    let mut samples = Vec::with_capacity(requests);
    for index in 0..warmup + requests {
        let started = Instant::now();
        let answer = call(connection, "tools/call", Some(&params)).await?;
        let elapsed = started.elapsed();
        if !answer.contains("Hello, x") || answer.contains("\"isError\":true") {
            bail!("unexpected `tools/call` answer: {answer}");
        }
        if index >= warmup {
            samples.push(elapsed);
        }
    }
    Ok(samples)
}

pub(crate) fn print(out: &mut impl Write, calls: &OauthCalls) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "tools/call to an OAuth server (SDK example --oauth, `greet`), per credential store ({} warm-up, {} measured, µs)",
        calls.options.warmup, calls.options.requests
    )?;
    let bearer = ("bearer token, no store (beside `file`)", calls.bearer.clone());
    let bearer_p50 = Summary::of(&mut calls.bearer.clone()).map(|summary| summary.p50);
    for (label, samples) in calls
        .stores
        .iter()
        .map(|store| (store.store, store.samples.clone()))
        .chain(std::iter::once(bearer))
    {
        if let Some(summary) = Summary::of(&mut samples.clone()) {
            let versus = bearer_p50.map_or_else(String::new, |bearer| {
                format!(
                    "  {:.2}× the bearer p50",
                    summary.p50.as_secs_f64() / bearer.as_secs_f64().max(1e-9)
                )
            });
            writeln!(
                out,
                "  {:<40} p50 {:>8.1}  p90 {:>8.1}  p99 {:>8.1}  max {:>9.1}{versus}",
                label,
                summary.p50.as_secs_f64() * 1e6,
                summary.p90.as_secs_f64() * 1e6,
                summary.p99.as_secs_f64() * 1e6,
                summary.max.as_secs_f64() * 1e6
            )?;
        }
    }
    if let Some(why) = &calls.keyring_skipped {
        writeln!(out, "  keyring stores not measured: {why}")?;
    }
    Ok(())
}
