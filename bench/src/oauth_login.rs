//! Time from an OAuth login request to the server being `ready`, against the TS SDK's example
//! server with `--oauth` (its authorization server registers clients dynamically and approves
//! at once) and `tests/peers/follow_url.py` as the opener (the "browser" follows the redirects).
//!
//! Each round: log out, restart the server (it fails with `authenticationRequired`), then
//! `mcpServer/oauthLogin` (what `corral login` sends) and poll `mcpServer/get` until `ready`.
//! Measured: until the authorization URL is answered, and until `ready` (discovery and
//! registration, the browser's round trip, the code exchange, storing the tokens in the 0600
//! file, and the restart: `initialize` and `tools/list` with the new token). The polling adds up
//! to about 1 ms.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use corral_protocol::{McpServerGetResult, ServerStatus};

use crate::peers::Peers;
use crate::servers::{ServedDaemon, call};
use crate::stats::Summary;
use crate::survivors::{self, Survivor};

const SERVER: &str = "demo";
const WAIT: Duration = Duration::from_secs(30);

/// What the phase measured.
#[derive(Debug)]
pub(crate) struct Logins {
    pub(crate) to_url: Vec<Duration>,
    pub(crate) to_ready: Vec<Duration>,
    pub(crate) survivors: Vec<Survivor>,
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).context("binding a loopback port")?;
    Ok(listener.local_addr()?.port())
}

pub(crate) async fn status(
    connection: &mut crate::raw::RawConnection,
) -> anyhow::Result<corral_protocol::McpServerStatus> {
    let text = call(connection, "mcpServer/get", Some(&format!("{{\"name\":\"{SERVER}\"}}"))).await?;
    let got: McpServerGetResult = serde_json::from_str(&text).with_context(|| format!("parsing {text}"))?;
    Ok(got.server)
}

pub(crate) async fn wait_for(
    connection: &mut crate::raw::RawConnection,
    what: &str,
    accept: impl Fn(&corral_protocol::McpServerStatus) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let server = status(connection).await?;
        if accept(&server) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "`{SERVER}` is {} ({:?}), not {what}, after {WAIT:?}",
                server.status,
                server.error
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The TS SDK's example server with `--oauth` on loopback, listening (its MCP and authorization
/// ports); killed on drop.
pub(crate) async fn start_sdk_oauth_server(peers: &Peers) -> anyhow::Result<(tokio::process::Child, u16)> {
    let dir = peers.dir();
    let (mcp_port, auth_port) = (free_port()?, free_port()?);
    let server = tokio::process::Command::new("node")
        .arg("--require")
        .arg(peers.loopback_preload())
        .arg(dir.join("node_modules/@modelcontextprotocol/sdk/dist/esm/examples/server/simpleStreamableHttp.js"))
        .arg("--oauth")
        .env("MCP_PORT", mcp_port.to_string())
        .env("MCP_AUTH_PORT", auth_port.to_string())
        .env(survivors::RUN_TAG_VAR, survivors::run_tag())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the SDK's OAuth example server")?;
    let listening = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", mcp_port)).is_err()
        || std::net::TcpStream::connect(("127.0.0.1", auth_port)).is_err()
    {
        if Instant::now() > listening {
            bail!("the SDK's OAuth example server did not listen within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((server, mcp_port))
}

/// `oauth_opener = [...]`: `follow_url.py`, the "browser" that follows the redirects.
pub(crate) fn follow_url_opener(peers: &Peers) -> anyhow::Result<String> {
    Ok(serde_json::to_string(&[
        peers.python(),
        &peers.dir().join("follow_url.py"),
    ])?)
}

/// The whole phase: `rounds` logins on one daemon.
pub(crate) async fn measure(corrald: &Path, peers: &Peers, rounds: usize) -> anyhow::Result<Logins> {
    let (mut server, mcp_port) = start_sdk_oauth_server(peers).await?;
    let opener = follow_url_opener(peers)?;
    let config = format!(
        "credentials_store = \"file\"\noauth_opener = {opener}\n[servers.{SERVER}]\nurl = \"http://localhost:{mcp_port}/mcp\"\n"
    );
    let mut served = ServedDaemon::start(corrald, &config, 1).await?;
    let measured = rounds_of(&mut served, rounds).await;
    let _ = server.kill().await;
    let _ = server.wait().await;
    let (_, survivors) = served.stop().await?;
    let (to_url, to_ready) = measured?;
    Ok(Logins {
        to_url,
        to_ready,
        survivors,
    })
}

async fn rounds_of(served: &mut ServedDaemon, rounds: usize) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let connection = &mut served.connection;
    let name = format!("{{\"name\":\"{SERVER}\"}}");
    let (mut to_url, mut to_ready) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        call(connection, "mcpServer/logout", Some(&name)).await?;
        call(connection, "mcpServer/restart", Some(&name)).await?;
        wait_for(connection, "failed (not logged in)", |server| {
            server.status == ServerStatus::Failed
        })
        .await?;
        let started = Instant::now();
        call(connection, "mcpServer/oauthLogin", Some(&name)).await?;
        to_url.push(started.elapsed());
        wait_for(connection, "ready", |server| server.status == ServerStatus::Ready).await?;
        to_ready.push(started.elapsed());
    }
    Ok((to_url, to_ready))
}

pub(crate) fn print(out: &mut impl Write, logins: &Logins) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "OAuth login to ready (SDK example server --oauth: DCR + PKCE, auto-approve; {} rounds)",
        logins.to_ready.len()
    )?;
    for (label, samples) in [
        ("  mcpServer/oauthLogin answered (URL)", &logins.to_url),
        ("  login request → server ready", &logins.to_ready),
    ] {
        if let Some(summary) = Summary::of(&mut samples.clone()) {
            writeln!(
                out,
                "{label}: p50 {:.1} ms, min {:.1} ms, max {:.1} ms",
                summary.p50.as_secs_f64() * 1e3,
                summary.min.as_secs_f64() * 1e3,
                summary.max.as_secs_f64() * 1e3
            )?;
        }
    }
    Ok(())
}
