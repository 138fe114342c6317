#!/usr/bin/env bash
# Install the test peers and run every test: the command the README gives and CI runs.
#
# Needs: the Rust toolchain, Node.js with npm (real front-end libraries and real
# MCP servers), Python 3 with venv (fixture MCP servers on the official SDK),
# and a few Debian packages (systemd's tools, gnome-keyring, dbus, iproute2;
# installed with apt when running as root, see below).
# Peers are pinned in tests/peers/ (package-lock.json, requirements.txt) and
# installed into tests/peers/node_modules and tests/peers/.venv (git-ignored);
# see tests/peers/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

# System peers from Debian's packages, installed first (as root, with apt) when missing:
# - Node.js with npm and Python's venv, for the peers below;
# - systemd's tools (systemd-socket-activate, systemd-analyze) for tests/tests/e2e/service.rs,
#   installed without being booted into;
# - a private D-Bus session with gnome-keyring's Secret Service, so the OS-keyring credential
#   store is tested against the real thing (tests/tests/e2e/credentials.rs, oauth.rs);
# - `ip`, to bring up loopback in the private network namespace of the conformance run
#   (tests/tests/e2e/conformance.rs, which runs as root: `unshare -n`).
missing=()
packages=(systemd gnome-keyring dbus iproute2)
for tool in systemd-socket-activate systemd-analyze gnome-keyring-daemon dbus-daemon dbus-send ip; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ! command -v npm >/dev/null 2>&1; then
  missing+=(npm)
  packages+=(nodejs npm)
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
  packages+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing system peers (missing: ${missing[*]}): apt packages ${packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  else
    echo "error: the tests need ${missing[*]}: install them first, e.g." >&2
    echo "error: 'sudo apt-get install --no-install-recommends ${packages[*]}', then rerun $0." >&2
    exit 1
  fi
fi

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

echo "==> building corrald and corral"
cargo build --workspace --bins --locked

echo "==> running the tests"
cargo test --workspace --locked "$@"
