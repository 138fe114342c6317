#!/usr/bin/env bash
# Install the test peers and run every test: the command the README gives and CI runs.
#
# Needs: the Rust toolchain, Node.js with npm (real front-end libraries and real
# MCP servers), Python 3 with venv (fixture MCP servers on the official SDK),
# systemd's tools (socket activation and unit verification; installed with apt
# when running as root).
# Peers are pinned in tests/peers/ (package-lock.json, requirements.txt) and
# installed into tests/peers/node_modules and tests/peers/.venv (git-ignored);
# see tests/peers/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> installing test peers (tests/peers)"
# npm peers (front-end libraries, real MCP servers): pinned by package-lock.json.
if [ ! -d tests/peers/node_modules ] || [ tests/peers/package-lock.json -nt tests/peers/node_modules/.package-lock.json ]; then
  npm ci --prefix tests/peers --no-audit --no-fund --loglevel=error
fi
# Python peers (the official MCP SDK, for tests/peers/fixture_server.py): pinned by
# requirements.txt, installed into a fresh venv whenever it is missing or stale.
peers_venv=tests/peers/.venv
peers_stamp=$peers_venv/.installed
if [ ! -x "$peers_venv/bin/python" ] || [ ! -f "$peers_stamp" ] || [ tests/peers/requirements.txt -nt "$peers_stamp" ]; then
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "error: python3 cannot create virtual environments (no venv/ensurepip module)." >&2
    echo "error: install it first, e.g. 'apt-get install python3-venv', then rerun $0." >&2
    exit 1
  fi
  rm -rf "$peers_venv"
  python3 -m venv "$peers_venv"
  "$peers_venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r tests/peers/requirements.txt
  touch "$peers_stamp"
fi

# systemd's tools (systemd-socket-activate, systemd-analyze) for tests/tests/service.rs:
# Debian's systemd package, installed (without being booted into) when missing.
if ! command -v systemd-socket-activate >/dev/null 2>&1 || ! command -v systemd-analyze >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing systemd's tools (apt package systemd)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
  else
    echo "error: systemd-socket-activate and systemd-analyze are needed by tests/tests/service.rs." >&2
    echo "error: install them first, e.g. 'sudo apt-get install --no-install-recommends systemd', then rerun $0." >&2
    exit 1
  fi
fi

echo "==> building corrald and corral"
cargo build --workspace --bins --locked

echo "==> running the tests"
cargo test --workspace --locked "$@"
