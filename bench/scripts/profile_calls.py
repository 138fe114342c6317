#!/usr/bin/env python3
"""Count what corrald (or corral-bench's do-nothing relay) does per `tools/call`:
instructions under callgrind, system calls under strace. See docs/benchmarks.md,
"Against a do-nothing relay".

usage: profile_calls.py MODE BINARY OUTDIR [--warmup W] [--calls N] [--protocol corral|mcp]
                        [--relay] [--idle] [--gap-ms G]

One server-everything (tests/peers, installed by tests/run.sh), one connection, W
unmeasured then N measured sequential calls of `echo {message: "x"}`, each answer checked.

MODE: callgrind  BINARY runs under valgrind --tool=callgrind (children not traced);
                 the counters are zeroed after the warm-up and dumped after the N calls
                 (OUTDIR/callgrind.out.PID.1: those calls only; the `summary:` line is
                 the total, divide by N); with --idle a second dump counts an idle
                 interval as long as the calls took (OUTDIR/callgrind.out.PID.2)
      strace     BINARY runs plainly; `strace -c -f` attaches to every thread after the
                 warm-up and is detached after the N calls (OUTDIR/strace.txt)
      plain      neither (a check of the script)
--protocol mcp   the calls go through the bridge (MCP on the socket, `everything__echo`)
--relay          BINARY is corral-bench: its do-nothing relay (`--serve-relay`) is what runs
--gap-ms G       a pause of G ms after each measured call, so that each finds the daemon idle
                 (as a front-end's calls do, seconds apart, and as in `tool-call`'s turns)
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time

EVERYTHING = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "peers", "node_modules",
    "@modelcontextprotocol", "server-everything", "dist", "index.js")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["callgrind", "strace", "plain"])
    p.add_argument("corrald")
    p.add_argument("outdir")
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--protocol", choices=["corral", "mcp"], default="corral")
    p.add_argument("--relay", action="store_true", help="CORRALD is corral-bench: profile its do-nothing relay")
    p.add_argument("--idle", action="store_true", help="callgrind: also count an idle interval as long as the calls took")
    p.add_argument("--gap-ms", type=float, default=0.0,
                   help="sleep this long between measured calls (each call finds the daemon idle)")
    args = p.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    sock = os.path.join(args.outdir, "corral.sock")
    config = os.path.join(args.outdir, "config.toml")
    with open(config, "w") as f:
        f.write(f'[servers.everything]\ncommand = "node"\nargs = ["{EVERYTHING}", "stdio"]\n'
                'startup_timeout_sec = 170\ntool_timeout_sec = 600\n')
    daemon_cmd = [args.corrald, "--socket", sock, "--config", config, "--no-builtin-server",
                  "--data-dir", os.path.join(args.outdir, "data")]
    if args.relay:
        daemon_cmd = [args.corrald, "--serve-relay", sock, "--", "node", EVERYTHING, "stdio"]
        args.protocol = "relay"
    if args.mode == "callgrind":
        out = os.path.join(args.outdir, "callgrind.out.%p")
        daemon_cmd = ["valgrind", "--tool=callgrind", "--trace-children=no", f"--callgrind-out-file={out}",
                      "--dump-instr=no", "--collect-atstart=yes"] + daemon_cmd
    log = open(os.path.join(args.outdir, "corrald.log"), "w")
    env = dict(os.environ)
    env.pop("CORRAL_LOG", None)
    env.pop("RUST_LOG", None)
    daemon = subprocess.Popen(daemon_cmd, stdout=log, stderr=log, env=env)
    try:
        deadline = time.time() + 120
        while not os.path.exists(sock):
            if time.time() > deadline or daemon.poll() is not None:
                sys.exit("corrald did not start")
            time.sleep(0.05)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock)
        f = s.makefile("rwb", buffering=0)
        reader = s.makefile("rb")
        next_id = [1]

        def call(method, params):
            i = next_id[0]
            next_id[0] += 1
            f.write((json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}) + "\n").encode())
            while True:
                line = reader.readline()
                if not line:
                    sys.exit("corrald closed the connection")
                m = json.loads(line)
                if m.get("id") == i and "method" not in m:
                    if "error" in m:
                        raise RuntimeError(f"{method}: {m['error']}")
                    return m["result"]

        if args.protocol == "corral":
            call("initialize", {"protocolVersion": 1, "clientInfo": {"name": "profile", "version": "0"}})
            while True:
                servers = call("mcpServer/list", {})["servers"]
                if servers and servers[0]["status"] == "ready":
                    break
                if servers and servers[0]["status"] == "failed":
                    sys.exit(f"server failed: {servers[0]}")
                time.sleep(0.2)
            method, params = "tools/call", {"server": "everything", "name": "echo", "arguments": {"message": "x"}}
        elif args.protocol == "relay":
            call("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                "clientInfo": {"name": "profile", "version": "0"}})
            f.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
            method, params = "tools/call", {"name": "echo", "arguments": {"message": "x"}}
        else:
            call("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                "clientInfo": {"name": "profile", "version": "0"}})
            f.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
            while True:
                tools = call("tools/list", {})["tools"]
                if any(t["name"] == "everything__echo" for t in tools):
                    break
                time.sleep(0.2)
            method, params = "tools/call", {"name": "everything__echo", "arguments": {"message": "x"}}

        def echo():
            r = call(method, params)
            assert "Echo: x" in json.dumps(r), r

        for _ in range(args.warmup):
            echo()
        pid = daemon.pid
        tracer = None
        if args.mode == "callgrind":
            subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
        elif args.mode == "strace":
            tids = os.listdir(f"/proc/{pid}/task")
            cmd = ["strace", "-c", "-f", "-o", os.path.join(args.outdir, "strace.txt")]
            for t in tids:
                cmd += ["-p", t]
            tracer = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        started = time.time()
        for _ in range(args.calls):
            echo()
            if args.gap_ms > 0:
                time.sleep(args.gap_ms / 1000)
        took = time.time() - started
        if args.mode == "callgrind":
            subprocess.run(["callgrind_control", "-d", "measured", str(pid)], check=True, capture_output=True)
            if args.idle:
                time.sleep(took)
                subprocess.run(["callgrind_control", "-d", "idle", str(pid)], check=True, capture_output=True)
        elif tracer is not None:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=30)
        print(json.dumps({"calls": args.calls, "seconds": took, "pid": pid}))
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            daemon.kill()


if __name__ == "__main__":
    main()
