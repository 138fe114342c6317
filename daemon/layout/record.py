#!/usr/bin/env python3
"""Record which functions of corrald boot, idle and first requests run, and write `boot.ld`.

`boot.ld` is the linker script `daemon/build.rs` hands the linker for the corrald executable: it
puts those functions next to each other, so the kernel maps a few 64 KiB windows of code for
them instead of windows all over a 15 MB `.text` (see docs/benchmarks.md, "Less code mapped").
The functions are named as the compiler mangled them, which depends on the toolchain, the
dependencies' versions and features, and the profile: recorded names another build lacks match
nothing there, so a stale script costs memory, never correctness. A name only one function has
is written without its hash, so it finds that function in any build; the instances of a generic
function share a name and differ by their hash, so they are named exactly, and after every phase
once more without the hash (all instances), for builds whose hashes differ.

Record again after a toolchain, `Cargo.lock` or profile change (needs valgrind and binutils):

    cargo build --release -p corrald && cp target/release/corrald /tmp/corrald-alone
    cargo build --release -p corrald -p corral-cli -p corral-bench
    python3 daemon/layout/record.py /tmp/corrald-alone target/release/corrald
    cargo build --release -p corrald          # links with the new script

(Two builds because cargo unifies dependency features over the packages of one command: the
benchmark's corrald and the one built alone, as `cargo run --release -p corrald` builds it,
differ in their names.)

Whether the script fits a binary: it runs the binary through the phases below under callgrind
(a few minutes) and counts the functions that ran and that no line of the script names (a
function the compiler did not put in a section of its own, e.g. assembly, cannot be placed even
when named). A script
that names functions a build still has can miss the new ones its hot paths run (a build of
session 10's code with the script of the session before idled 3 MiB higher): only a run tells.

    python3 daemon/layout/record.py --check target/release/corrald

Each binary is run under `valgrind --tool=callgrind` as corral-bench runs it (`--only
idle-builtin`: built-in server on, no config servers, a private socket and data directory, no
D-Bus) and what it executed is read in four phases, each phase's new functions after the
previous phase's:
  1. boot, and 5 s idle;
  2. one front-end's `initialize`, `daemon/status`, `mcpServer/list`, `tools/list` and a call to
     the built-in server;
  3. a stdio server added by a config reload (this script, `--serve-echo`), its `tools/list`
     and calls, and an MCP client's `initialize`, `tools/list` and call on the socket;
  4. in a second run, with `--no-builtin-server` (corral-bench's `idle` and `tool-call`
     measurements start it so): boot, 5 s idle, one front-end's `initialize`, `daemon/status` and
     `mcpServer/list`.

`--serve-echo` is that server: newline-delimited JSON-RPC on stdin/stdout, tool `echo`.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "boot.ld"
PHASES = ("boot and idle", "first requests", "a stdio server and an MCP client", "boot without the built-in server")
# The share of the functions the phases run that the script may leave unplaced and still fit.
UNPLACED_FITS = 0.02
# A legacy-mangled Rust symbol's hash: `17h` + 16 hex digits + `E`.
HASH = re.compile(r"17h[0-9a-f]{16}E$")
# Generous: everything runs about 50 times slower under callgrind.
WAIT = 120.0


def serve_echo() -> None:
    """A minimal MCP server over stdio with one tool, `echo`."""
    for line in sys.stdin:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if "id" not in message:
            continue
        method = message.get("method")
        params = message.get("params") or {}
        if method == "initialize":
            result = {
                "protocolVersion": params.get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {"listChanged": False}},
                "serverInfo": {"name": "echo", "version": "1"},
            }
        elif method == "tools/list":
            result = {
                "tools": [
                    {
                        "name": "echo",
                        "description": "Echoes back the input",
                        "inputSchema": {
                            "type": "object",
                            "properties": {"message": {"type": "string"}},
                            "required": ["message"],
                        },
                    }
                ]
            }
        elif method == "tools/call":
            text = "Echo: " + str((params.get("arguments") or {}).get("message", ""))
            result = {"content": [{"type": "text", "text": text}]}
        elif method == "ping":
            result = {}
        else:
            answer = {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": "no such method"}}
            print(json.dumps(answer), flush=True)
            continue
        print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}), flush=True)


class Connection:
    """One front-end on the daemon's socket: newline-delimited JSON-RPC."""

    def __init__(self, path: Path) -> None:
        self.socket = socket.socket(socket.AF_UNIX)
        self.socket.settimeout(WAIT)
        self.socket.connect(str(path))
        self.file = self.socket.makefile("rwb")
        self.next_id = 0

    def call(self, method: str, params: dict | None = None) -> dict:
        self.next_id += 1
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            message["params"] = params
        self.file.write((json.dumps(message) + "\n").encode())
        self.file.flush()
        while True:
            line = self.file.readline()
            if not line:
                raise RuntimeError(f"corrald closed the connection during {method}")
            answer = json.loads(line)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def notify(self, method: str) -> None:
        self.file.write((json.dumps({"jsonrpc": "2.0", "method": method}) + "\n").encode())
        self.file.flush()

    def close(self) -> None:
        self.file.close()
        self.socket.close()


def wait_for(what: str, check) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"gave up waiting for {what}")


def corral_client(socket_path: Path) -> Connection:
    connection = Connection(socket_path)
    connection.call(
        "initialize",
        {"protocolVersion": 1, "clientInfo": {"name": "layout-record", "version": "1"}, "capabilities": {}},
    )
    return connection


def record_run(binary: Path, workdir: Path) -> list[Path]:
    """Run `binary` under callgrind through phases 1 to 3; the dump of each, in order."""
    socket_path = workdir / "corral.sock"
    config = workdir / "config.toml"
    with under_callgrind(binary, workdir, []) as daemon:
        time.sleep(5)
        dump(daemon.pid, "boot")

        front_end = corral_client(socket_path)
        front_end.call("daemon/status")
        front_end.call("mcpServer/list")
        front_end.call("tools/list", {})
        front_end.call("tools/call", {"server": "corral", "name": "list_servers", "arguments": {}})
        front_end.close()
        time.sleep(2)
        dump(daemon.pid, "use")

        config.write_text(
            "[servers.echo]\n"
            f"command = {json.dumps(sys.executable)}\n"
            f"args = [{json.dumps(str(Path(__file__).resolve()))}, \"--serve-echo\"]\n"
        )
        front_end = corral_client(socket_path)
        front_end.call("config/reload")

        def echo_ready() -> bool:
            servers = front_end.call("mcpServer/list")["servers"]
            return any(server["name"] == "echo" and server["status"] == "ready" for server in servers)

        wait_for("the echo server", echo_ready)
        front_end.call("tools/list", {"server": "echo"})
        for _ in range(20):
            front_end.call("tools/call", {"server": "echo", "name": "echo", "arguments": {"message": "hi"}})
        front_end.close()
        mcp = Connection(socket_path)
        mcp.call(
            "initialize",
            {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "layout-record", "version": "1"}},
        )
        mcp.notify("notifications/initialized")
        tools = mcp.call("tools/list")["tools"]
        echo = next(tool["name"] for tool in tools if tool["name"].endswith("echo"))
        for _ in range(20):
            mcp.call("tools/call", {"name": echo, "arguments": {"message": "hi"}})
        mcp.close()
        time.sleep(2)
        dump(daemon.pid, "calls")
    return dumps_of(workdir, 3)


def record_plain_boot(binary: Path, workdir: Path) -> Path:
    """Phase 4: `binary` with `--no-builtin-server` under callgrind, booted, idle, asked its status."""
    with under_callgrind(binary, workdir, ["--no-builtin-server"]) as daemon:
        time.sleep(5)
        front_end = corral_client(workdir / "corral.sock")
        front_end.call("daemon/status")
        front_end.call("mcpServer/list")
        front_end.close()
        time.sleep(2)
        dump(daemon.pid, "plain")
    return dumps_of(workdir, 1)[0]


class under_callgrind:
    """`binary` run under callgrind in `workdir` (its socket, config, data and log there) with
    `flags`, as corral-bench runs it (no D-Bus, test hooks on); entered once its socket accepts,
    stopped with SIGTERM on exit."""

    def __init__(self, binary: Path, workdir: Path, flags: list[str]) -> None:
        self.binary, self.workdir, self.flags = binary, workdir, flags

    def __enter__(self) -> subprocess.Popen:
        workdir = self.workdir
        socket_path = workdir / "corral.sock"
        env = {key: value for key, value in os.environ.items() if key not in ("DBUS_SESSION_BUS_ADDRESS", "CORRAL_LOG", "RUST_LOG", "CORRAL_LOG_FORMAT")}
        env["CORRAL_TEST_HOOKS"] = "1"
        env["CORRAL_DATA_DIR"] = str(workdir / "data")
        with open(workdir / "corrald.log", "wb") as log:
            self.daemon = subprocess.Popen(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={workdir / 'callgrind.out'}", "--dump-instr=yes",
                 "--compress-strings=no", "--compress-pos=no",
                 str(self.binary.resolve()), "--socket", str(socket_path), "--config", str(workdir / "config.toml"),
                 *self.flags],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            )

        def accepting() -> bool:
            if self.daemon.poll() is not None:
                raise RuntimeError(f"corrald exited: see {workdir / 'corrald.log'}")
            try:
                Connection(socket_path).close()
                return True
            except OSError:
                return False

        try:
            wait_for("the socket", accepting)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.daemon

    def __exit__(self, *_) -> None:
        self.daemon.send_signal(signal.SIGTERM)
        try:
            self.daemon.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait()


def dumps_of(workdir: Path, count: int) -> list[Path]:
    """The first `count` dumps callgrind wrote in `workdir`."""
    dumps = [workdir / f"callgrind.out.{n}" for n in range(1, count + 1)]
    for path in dumps:
        if not path.exists():
            raise RuntimeError(f"callgrind wrote no {path.name}")
    return dumps


def dump(pid: int, label: str) -> None:
    subprocess.run(
        ["callgrind_control", "--dump=" + label, str(pid)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def executed_addresses(dump_file: Path, binary: Path) -> set[int]:
    """Instruction addresses of `binary` that the dump counts (virtual addresses of the ELF file)."""
    target = str(binary.resolve())
    addresses = set()
    current = None
    with open(dump_file, errors="replace") as lines:
        for line in lines:
            if line.startswith("ob="):
                current = line[3:].strip()
            elif line.startswith("0x") and current == target:
                addresses.add(int(line.split()[0], 16))
    return addresses


def functions(binary: Path) -> list[tuple[int, int, str]]:
    """(address, size, mangled name) of the binary's functions, by address."""
    listing = subprocess.run(["nm", "-n", "-S", "--defined-only", str(binary)], capture_output=True, text=True, check=True)
    found = []
    for line in listing.stdout.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[2] in "tTwW":
            found.append((int(fields[0], 16), int(fields[1], 16), fields[3]))
    found.sort()
    return found


def names_by_phase(binary: Path) -> tuple[list[list[str]], collections.Counter]:
    """The functions each phase ran first, by address; and how many functions share each hashless name."""
    table = functions(binary)
    starts = [entry[0] for entry in table]
    with tempfile.TemporaryDirectory(prefix="corral-layout-") as directory, \
            tempfile.TemporaryDirectory(prefix="corral-layout-plain-") as plain:
        dumps = record_run(binary, Path(directory)) + [record_plain_boot(binary, Path(plain))]
        seen: set[int] = set()
        ran_first = []
        for dump_file in dumps:
            ran = set()
            for address in executed_addresses(dump_file, binary):
                index = bisect.bisect_right(starts, address) - 1
                if index >= 0 and starts[index] <= address < starts[index] + max(table[index][1], 1):
                    ran.add(index)
            ran_first.append([table[index][2] for index in sorted(ran - seen)])
            seen |= ran
    instances = collections.Counter(HASH.sub("", name) for _, _, name in table)
    return ran_first, instances


def write_script(binaries: list[Path], phases: list[list[str]], instances: collections.Counter, exact: list[int]) -> None:
    """Each phase's functions in turn; then the generic ones of every phase with any hash.

    A name with a hash is written without it (`17h*E`) where only one function has that name:
    the pattern finds the same function in this build and, in any other, the function of that
    name. A generic function has one name for all its instances (the hash tells them apart), so
    its exact names come first, then, after every phase, the name with any hash: in a build whose
    hashes differ that still gathers its instances, with the fewest first."""
    lines = [
        "/* The functions corrald runs at boot, idle and in its first requests, first in `.text`.",
        "   Generated by daemon/layout/record.py (read it before editing); linked in by daemon/build.rs.",
        f"   Recorded with {rustc_version()} from {len(binaries)} build(s), whose functions named exactly"
        f" here number {' and '.join(str(count) for count in exact)}.",
        "   A name a build does not have matches nothing: a stale script costs memory, never correctness. */",
        "SECTIONS {",
        "  .text : {",
    ]
    written = set()

    def add(pattern: str) -> None:
        if pattern not in written:
            written.add(pattern)
            lines.append(f"    *(.text.{pattern} .text.unlikely.{pattern})")

    generic = []
    for number, names in enumerate(phases):
        lines.append(f"    /* phase {number + 1}, {PHASES[number]} */")
        for name in names:
            if HASH.search(name):
                pattern = HASH.sub("17h*E", name)
                count = instances[HASH.sub("", name)]
                if count == 1:
                    add(pattern)
                    continue
                generic.append((count, len(generic), pattern))
            add(name)
    lines.append("    /* generic functions of every phase, with any hash */")
    for _, _, pattern in sorted(generic):
        add(pattern)
    lines += [
        "  }",
        # Inserted where lld puts `.text` anyway; every other function joins this `.text` after
        # these, as without the script (one `.text`, as valgrind and other tools expect).
        "} INSERT BEFORE .init;",
        "",
    ]
    SCRIPT.write_text("\n".join(lines))
    print(f"wrote {SCRIPT}: {len(written)} patterns for {sum(len(names) for names in phases)} functions")


def rustc_version() -> str:
    try:
        return subprocess.run(["rustc", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "an unknown rustc"


def check(binary: Path) -> bool:
    """Whether the script places the functions `binary` runs in the phases: they are run under
    callgrind and matched against the script's patterns."""
    patterns = set(re.findall(r"^\s*\*\(\.text\.(\S+) ", SCRIPT.read_text(), re.MULTILINE))
    phases, _ = names_by_phase(binary)
    ran = [name for names in phases for name in names]
    unplaced = [name for name in ran if name not in patterns and HASH.sub("17h*E", name) not in patterns]
    share = len(unplaced) / max(len(ran), 1)
    fits = share <= UNPLACED_FITS
    print(f"{binary}: {len(unplaced)} of the {len(ran)} functions the phases run are not"
          f" named by {SCRIPT.name} ({share:.1%}): "
          + ("the script fits this build" if fits else "stale: record again (see the top of this file)"))
    for name in unplaced[:20]:
        print(f"  not named: {name}")
    return fits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binaries", nargs="*", type=Path, help="release corrald builds to record")
    parser.add_argument("--check", type=Path, metavar="BINARY",
                        help="whether the script places what BINARY runs in the phases (exit 1 if not)")
    parser.add_argument("--serve-echo", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo:
        serve_echo()
        return 0
    if not args.check and not args.binaries:
        parser.error("name at least one corrald binary")
    for tool in ("valgrind", "callgrind_control", "nm"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (valgrind; binutils for nm)")
    if args.check:
        return 0 if check(args.check) else 1
    merged: list[list[str]] = [[] for _ in PHASES]
    instances: collections.Counter = collections.Counter()
    placed: set[str] = set()
    exact = []
    for binary in args.binaries:
        phases, counts = names_by_phase(binary)
        exact.append(sum(1 for names in phases for name in names if counts[HASH.sub("", name)] != 1 or not HASH.search(name)))
        for number, names in enumerate(phases):
            new = [name for name in names if name not in placed]
            placed.update(new)
            merged[number].extend(new)
            print(f"{binary}: phase {number + 1} ({PHASES[number]}): {len(names)} functions, {len(new)} new")
        for name, count in counts.items():
            instances[name] = max(instances[name], count)
    write_script(args.binaries, merged, instances, exact)
    return 0


if __name__ == "__main__":
    sys.exit(main())
