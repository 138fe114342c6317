#!/usr/bin/env python3
"""Records what an MCP client writes to a stdio server, for Corral's tests: runs COMMAND with its
stdin piped through this process and its stdout and stderr its own, and appends one JSON line
per message the client wrote to RECORD (its `method`, `id`, `params._meta`, the
`protocolVersion` param of an `initialize` and the `notifications` of a `subscriptions/listen`),
before passing the message on unchanged.

Standard library only. The server is this process's child in its process group, so a signal to
the group reaches both; closing this process's stdin closes the server's, and this process
exits with the server's status (a signal that ended the server ends it with the same signal).

    python3 tests/peers/stdio_recorder.py RECORD COMMAND [ARGS...]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys


def note(record, line: bytes) -> None:
    try:
        message = json.loads(line)
    except ValueError:
        return
    if not isinstance(message, dict):
        return
    params = message.get("params") if isinstance(message.get("params"), dict) else {}
    entry = {"method": message.get("method"), "id": message.get("id"), "meta": params.get("_meta")}
    if message.get("method") == "initialize":
        entry["protocolVersion"] = params.get("protocolVersion")
    if message.get("method") == "subscriptions/listen":
        entry["notifications"] = params.get("notifications")
    record.write(json.dumps(entry) + "\n")
    record.flush()


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.stderr.write("usage: stdio_recorder.py RECORD COMMAND [ARGS...]\n")
        return 2
    record_path, command = argv[0], argv[1:]
    server = subprocess.Popen(command, stdin=subprocess.PIPE)
    with open(record_path, "a", encoding="utf-8") as record:
        try:
            for line in sys.stdin.buffer:
                note(record, line)
                server.stdin.write(line)
                server.stdin.flush()
        except BrokenPipeError:
            pass  # the server is gone: its status says why
        finally:
            try:
                server.stdin.close()
            except BrokenPipeError:
                pass
    status = server.wait()
    if status < 0:
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
