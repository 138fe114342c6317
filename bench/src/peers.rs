//! The real MCP servers the server measurements put under corrald: the
//! peers of the end-to-end tests (`tests/peers/README.md`), found in the
//! source tree, and the `config.toml` entries that start them.

use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::survivors;

/// `startup_timeout_sec` of every generated server: far above what a start
/// takes, so that a slow start on a loaded machine is measured as slow
/// rather than reported as failed (the daemon's default is 30 s).
const STARTUP_TIMEOUT_SEC: u64 = 170;

/// Which server, with which flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    /// `@modelcontextprotocol/server-everything` on Node, `stdio` mode.
    Everything,
    /// `fixture_server.py` on the official Python SDK, no flags.
    Fixture,
    /// `fixture_server.py --ignore-sigterm`: keeps running after stdin closes
    /// and ignores SIGTERM, so only SIGKILL ends it.
    FixtureIgnoringSigterm,
}

impl Peer {
    /// How the report names it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Everything => "server-everything",
            Self::Fixture => "fixture",
            Self::FixtureIgnoringSigterm => "fixture --ignore-sigterm",
        }
    }

    /// Server names in the config start with this.
    pub(crate) fn name_prefix(self) -> &'static str {
        match self {
            Self::Everything => "everything",
            Self::Fixture => "fixture",
            Self::FixtureIgnoringSigterm => "fixture-ignoring-sigterm",
        }
    }
}

/// Where the peers are installed.
#[derive(Debug, Clone)]
pub(crate) struct Peers {
    /// `node_modules/@modelcontextprotocol/server-everything/dist/index.js`.
    everything: PathBuf,
    /// The venv's interpreter, which has the MCP SDK the fixture imports.
    python: PathBuf,
    /// `fixture_server.py`.
    fixture: PathBuf,
    /// `loopback.cjs`: pins a Node server to 127.0.0.1 (`node --require`).
    loopback: PathBuf,
}

impl Peers {
    /// `tests/peers` of the source tree this benchmark was built from.
    pub(crate) fn default_dir() -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("tests")
            .join("peers");
        dir.canonicalize().unwrap_or(dir)
    }

    /// Find the peers in `dir`, failing with the install command if one is missing.
    pub(crate) fn locate(dir: &Path) -> anyhow::Result<Self> {
        let peers = Self {
            everything: dir
                .join("node_modules")
                .join("@modelcontextprotocol")
                .join("server-everything")
                .join("dist")
                .join("index.js"),
            python: dir.join(".venv").join("bin").join("python"),
            fixture: dir.join("fixture_server.py"),
            loopback: dir.join("loopback.cjs"),
        };
        for path in [&peers.everything, &peers.python, &peers.fixture, &peers.loopback] {
            if !path.is_file() {
                bail!(
                    "{} does not exist: install the test peers with `bash tests/run.sh` \
                     (it runs `npm ci` and creates the venv in tests/peers), or pass --peers-dir",
                    path.display()
                );
            }
        }
        Ok(peers)
    }

    /// server-everything's `dist/index.js` (run as `node <it> stdio`).
    pub(crate) fn everything(&self) -> &Path {
        &self.everything
    }

    /// The peers directory (`tests/peers`).
    pub(crate) fn dir(&self) -> &Path {
        self.loopback.parent().unwrap_or(Path::new("."))
    }

    /// The venv's Python interpreter.
    pub(crate) fn python(&self) -> &Path {
        &self.python
    }

    /// `loopback.cjs`, to preload into server-everything's `streamableHttp` mode.
    pub(crate) fn loopback_preload(&self) -> &Path {
        &self.loopback
    }

    /// The files whose presence in a command line identifies a peer process.
    pub(crate) fn paths(&self) -> [&Path; 2] {
        [&self.everything, &self.fixture]
    }

    /// A `config.toml` with these servers, all enabled.
    pub(crate) fn config<'a>(&self, servers: impl IntoIterator<Item = (&'a str, Peer)>) -> String {
        servers
            .into_iter()
            .map(|(name, peer)| self.server_entry(name, peer))
            .collect()
    }

    /// One `[servers.NAME]` table.
    fn server_entry(&self, name: &str, peer: Peer) -> String {
        let (command, args) = match peer {
            // `node` is looked up on the server's PATH, which is the daemon's.
            Peer::Everything => ("node".to_owned(), vec![path_text(&self.everything), "stdio".to_owned()]),
            Peer::Fixture => (path_text(&self.python), vec![path_text(&self.fixture)]),
            Peer::FixtureIgnoringSigterm => (
                path_text(&self.python),
                vec![path_text(&self.fixture), "--ignore-sigterm".to_owned()],
            ),
        };
        let args: Vec<String> = args.iter().map(|arg| toml_string(arg)).collect();
        format!(
            "\n[servers.{name}]\ncommand = {}\nargs = [{}]\nstartup_timeout_sec = {STARTUP_TIMEOUT_SEC}\n\
             env = {{ {} = {} }}\n",
            toml_string(&command),
            args.join(", "),
            survivors::RUN_TAG_VAR,
            toml_string(survivors::run_tag()),
        )
    }
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

/// `text` as a TOML basic string (JSON's string escapes are a subset of TOML's).
pub(crate) fn toml_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}
