//! MCP server peers (`tests/peers/`): config entries for the fixture server and the npm
//! reference servers, and a scratch directory per test.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tempfile::TempDir;

use crate::process::workspace_root;

pub(crate) mod http;
pub(crate) mod keyring;
pub(crate) mod oauth;

/// A private scratch directory for one test (pid files, working directories, a fake `$HOME`).
pub fn scratch_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("e2e-corral-scratch-")
        .tempdir()
        .expect("create a scratch dir")
}

/// `tests/peers/`.
pub fn peers_dir() -> PathBuf {
    workspace_root().join("tests").join("peers")
}

/// The interpreter of the peers' venv, which has the official MCP SDK the fixture needs.
///
/// Panics with the install command when it is missing.
pub fn fixture_python() -> PathBuf {
    let python = peers_dir().join(".venv").join("bin").join("python");
    assert!(
        python.is_file(),
        "{} does not exist: install the test peers with `bash tests/run.sh` (it creates tests/peers/.venv)",
        python.display()
    );
    python
}

/// A Python 3 from `PATH`, for the peers that need only the standard library
/// (`tests/peers/follow_url.py`): they run without the peers' venv, so `corral-conformance`
/// works from a clean checkout.
///
/// Panics when there is none.
pub fn stdlib_python() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("python3"))
                .find(|python| python.is_file())
        })
        .expect("no python3 on PATH: install Python 3 (tests/peers/follow_url.py needs only its standard library)")
}

/// `tests/peers/fixture_server.py`.
pub fn fixture_script() -> PathBuf {
    peers_dir().join("fixture_server.py")
}

/// An npm peer's entry point under `tests/peers/node_modules`, panicking with the install command if missing.
pub(crate) fn npm_peer(relative: &str) -> PathBuf {
    let path = peers_dir().join("node_modules").join(relative);
    assert!(
        path.is_file(),
        "{} does not exist: install the test peers with `bash tests/run.sh` (it runs `npm ci` in tests/peers)",
        path.display()
    );
    path
}

/// `text` as a TOML basic string (every escape serde_json writes is also a TOML escape).
pub fn toml_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// `values` as a TOML array of strings.
pub fn toml_string_array<S: AsRef<str>>(values: &[S]) -> String {
    let items: Vec<String> = values.iter().map(|value| toml_string(value.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

/// A `[servers.NAME]` entry running the fixture server with `flags`
/// (`tests/peers/fixture_server.py`, see `tests/peers/README.md`).
///
/// The table is left open: append more `key = value` lines to it.
pub fn fixture_config(name: &str, flags: &[&str]) -> String {
    let script = fixture_script().display().to_string();
    let mut args = vec![script.as_str()];
    args.extend_from_slice(flags);
    format!(
        "\n[servers.{name}]\ncommand = {}\nargs = {}\n",
        toml_string(&fixture_python().display().to_string()),
        toml_string_array(&args)
    )
}

/// A `[servers.NAME]` entry running `tests/peers/skills_server.py` (a Python-SDK server
/// offering skills, MCP's skills extension) with `flags` (`--tamper digest|size|frontmatter`).
///
/// The table is left open: append more `key = value` lines to it.
pub fn skills_server_config(name: &str, flags: &[&str]) -> String {
    let script = peers_dir().join("skills_server.py").display().to_string();
    let mut args = vec![script.as_str()];
    args.extend_from_slice(flags);
    format!(
        "\n[servers.{name}]\ncommand = {}\nargs = {}\n",
        toml_string(&fixture_python().display().to_string()),
        toml_string_array(&args)
    )
}

/// The text items of an MCP `CallToolResult`, joined by line breaks.
pub fn text_of(result: &Value) -> String {
    result["content"]
        .as_array()
        .unwrap_or_else(|| panic!("no content in {result}"))
        .iter()
        .filter_map(|item| item["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `[servers.NAME]` entry running `@modelcontextprotocol/server-everything` over stdio
/// (`node` found on the server's PATH, which is the daemon's).
pub fn everything_config(name: &str) -> String {
    let entry = npm_peer("@modelcontextprotocol/server-everything/dist/index.js");
    format!(
        "\n[servers.{name}]\ncommand = \"node\"\nargs = {}\n",
        toml_string_array(&[entry.display().to_string(), "stdio".to_owned()])
    )
}

/// A `[servers.NAME]` entry running `@modelcontextprotocol/server-filesystem` on `dir`.
pub fn filesystem_config(name: &str, dir: &Path) -> String {
    let entry = npm_peer("@modelcontextprotocol/server-filesystem/dist/index.js");
    format!(
        "\n[servers.{name}]\ncommand = \"node\"\nargs = {}\n",
        toml_string_array(&[entry.display().to_string(), dir.display().to_string()])
    )
}
