#!/usr/bin/env bash
# Install the test peers and run every test: the command the README gives and CI runs.
#
# Needs: the Rust toolchain, Node.js with npm (for real front-end libraries and,
# later, real MCP servers), Python 3. Peers are pinned in tests/peers/ and
# installed into tests/peers/node_modules (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> installing test peers (tests/peers)"
if [ ! -d tests/peers/node_modules ] || [ tests/peers/package-lock.json -nt tests/peers/node_modules/.package-lock.json ]; then
  npm ci --prefix tests/peers --no-audit --no-fund --loglevel=error
fi

echo "==> building corrald and corral"
cargo build --workspace --bins --locked

echo "==> running the tests"
cargo test --workspace --locked "$@"
