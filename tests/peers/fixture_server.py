#!/usr/bin/env python3
"""A stdio MCP server for Corral's end-to-end tests, built on the official MCP SDK.

It misbehaves on request: each command-line flag turns on one behaviour that no
real MCP server shows on demand (crash on start, ignore SIGTERM, leave
grandchildren behind, flood stderr, ...), and flags combine. With no flag it is
a normal server named "fixture" with the tools `echo`, `pid` and `sleep`.

Run it with the interpreter of tests/peers/.venv (installed by tests/run.sh):

    tests/peers/.venv/bin/python tests/peers/fixture_server.py [FLAGS]

See tests/peers/README.md for every flag, its exit code and what it writes.

Start-up runs in this order, so a test can rely on it: --require-env checks,
--crash-on-start, grandchildren (--spawn-child, --spawn-setsid-child,
--spawn-unmarked-setsid-child, --double-fork) and the --pid-file lines,
--ignore-sigterm, --stderr-flood, --garbage-stdout, then serving (or
--hang-on-initialize, --invalid-initialize-answer). Everything that
writes the pid file is done before the server reads its first byte of stdin,
so once `initialize` has been answered the pid file is complete.

Every wait in here ends when the process is killed (SIGKILL always works), and
every sleep is finite: grandchildren run `sleep 1000`, and the "keep running
after stdin closes" modes give up after 1000 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

# How long anything here waits at most: grandchildren's `sleep` and the
# "keep running after stdin closes" modes. Long for a test, but finite, so a
# leaked process still goes away on its own.
LONG_SLEEP_SECONDS = 1000

EXIT_CRASH_ON_START = 3
EXIT_AFTER_CALLS = 4
EXIT_REQUIRE_ENV = 5
EXIT_AFTER_HANDSHAKE = 6
EXIT_REFUSED_INITIALIZE = 7


def log(message: str) -> None:
    """One line on stderr, written at once (stderr may be a pipe nobody reads quickly)."""
    try:
        os.write(2, f"fixture: {message}\n".encode("utf-8", "backslashreplace"))
    except OSError:
        pass


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="fixture_server.py",
        description="stdio MCP fixture server for Corral's tests (official Python MCP SDK)",
    )
    p.add_argument("--crash-on-start", action="store_true",
                   help=f"print a line to stderr and exit({EXIT_CRASH_ON_START}) before reading stdin")
    p.add_argument("--exit-after-calls", type=int, metavar="N",
                   help=f"exit({EXIT_AFTER_CALLS}) right after the answer to the Nth tools/call is written")
    p.add_argument("--hang-on-initialize", action="store_true",
                   help="read stdin and never answer anything (not even initialize); exit 0 on stdin EOF")
    p.add_argument("--ignore-sigterm", action="store_true",
                   help="ignore SIGTERM, and keep running after stdin EOF (only SIGKILL ends it)")
    p.add_argument("--ignore-stdin-close", action="store_true",
                   help="keep running after stdin EOF until signalled")
    p.add_argument("--spawn-child", action="store_true",
                   help="spawn a grandchild `sleep 1000` in the server's process group")
    p.add_argument("--spawn-setsid-child", action="store_true",
                   help="spawn a grandchild `sleep 1000` that calls setsid() (leaves the process group)")
    p.add_argument("--spawn-unmarked-setsid-child", action="store_true",
                   help="spawn a grandchild `sleep 1000` that calls setsid() and runs with an empty "
                        "environment (os.execve with env={}): no Corral marker, not in the process group")
    p.add_argument("--exit-after-handshake", action="store_true",
                   help=f"exit({EXIT_AFTER_HANDSHAKE}) right after the answer to the first tools/list is flushed "
                        "(the moment corrald's startup, initialize + tools/list, is complete)")
    p.add_argument("--close-stdout-after-handshake", action="store_true",
                   help="right after the answer to the first tools/list is flushed, close stdout (fd 1 becomes "
                        "/dev/null) and keep serving stdin: the MCP transport is closed, the process runs on")
    p.add_argument("--invalid-initialize-answer", action="store_true",
                   help="answer initialize with a line that is not valid JSON (a truncated response), "
                        "then read stdin answering nothing; exit 0 on stdin EOF")
    p.add_argument("--double-fork", action="store_true",
                   help="double-fork a daemon (fork, setsid, fork, parent exits) that runs `sleep 1000`")
    p.add_argument("--child-inherits-stdio", action="store_true",
                   help="grandchildren keep the server's stdin/stdout/stderr (default: /dev/null), "
                        "so a survivor holds the server's pipes open")
    p.add_argument("--pid-file", metavar="PATH",
                   help="append the server's pid, then each grandchild's pid, one per line")
    p.add_argument("--stderr-flood", type=float, metavar="MB",
                   help="write MB megabytes of text lines to stderr from a background thread, while serving")
    p.add_argument("--garbage-stdout", action="store_true",
                   help="print non-JSON lines to stdout before serving")
    p.add_argument("--require-env", action="append", default=[], metavar="NAME=VALUE",
                   help=f"exit({EXIT_REQUIRE_ENV}) unless the environment has NAME with exactly VALUE (bytes); repeatable")
    p.add_argument("--require-env-hex", action="append", default=[], metavar="NAME=HEX",
                   help="like --require-env, with the value's bytes given in hex (for non-UTF-8 values); repeatable")
    p.add_argument("--print-env", action="store_true",
                   help="add the tools `env {name}` and `cwd`")
    p.add_argument("--changing-tools", action="store_true",
                   help="add the tool `add_tool {name}`: it adds a tool `name` (after the others, with "
                        "`execution`; it answers \"{name}: {message}\" to `{message}`), then sends "
                        "notifications/tools/list_changed")
    p.add_argument("--no-initialize", action="store_true",
                   help="a stateless server of MCP 2026-07-28 only: answer `initialize` with the JSON-RPC "
                        "error -32601 \"Method not found: initialize\" and read on (the SDK serves everything "
                        "else in 2026-07-28); adds the MRTR tool `confirm {topic}`")
    p.add_argument("--no-initialize-then-exit", action="store_true",
                   help=f"like --no-initialize, but exit({EXIT_REFUSED_INITIALIZE}) right after the refusal "
                        "is flushed, as servers of rmcp do (a launch that starts with server/discover is served)")
    p.add_argument("--supported-versions", metavar="V,V...",
                   help="answer an `initialize` offering a protocol version not among these with the "
                        "UnsupportedProtocolVersionError (-32022) of MCP 2026-07-28 listing them, and read on")
    p.add_argument("--record", metavar="FILE",
                   help="append one JSON line per message read on stdin: its method, id, params._meta, "
                        "the protocolVersion param of an initialize and the notifications of a subscriptions/listen")
    p.add_argument("--catalog", action="store_true",
                   help="add the prompt `greeting {name}`, the resource `fixture://note`, and the tools "
                        "`touch_note` (the note changed: notifications/resources/updated) and `add_prompt {name}` "
                        "(notifications/prompts/list_changed), in whichever era the client speaks")
    p.add_argument("--log-tool", action="store_true",
                   help="add the tool `log {level, message}`: it sends `message` as an MCP log message "
                        "(notifications/message) at `level`, then answers \"logged\"")
    p.add_argument("--custom-methods", action="store_true",
                   help="serve the custom request `fixture/echo` (answers {\"echoed\": its params without "
                        "_meta, \"kept\": {\"n\": 2.5, \"list\": [1, \"two\"], \"none\": null}}, after sending the custom notification "
                        "`fixture/event` {\"about\": \"fixture/echo\", \"params\": …}); on the custom "
                        "notification `fixture/poke` it sends `fixture/poked` with the same params; the custom "
                        "request `fixture/ask {question}` elicits {answer: string} with the message "
                        "\"fixture/ask: {question}\" and answers {\"action\": …, \"content\": …}")
    args = p.parse_args(argv)
    if args.exit_after_calls is not None and args.exit_after_calls < 1:
        p.error("--exit-after-calls needs N >= 1")
    if args.exit_after_handshake and args.close_stdout_after_handshake:
        p.error("--exit-after-handshake and --close-stdout-after-handshake exclude each other")
    if args.exit_after_handshake and args.exit_after_calls is not None:
        p.error("--exit-after-handshake and --exit-after-calls exclude each other")
    if args.no_initialize_then_exit:
        args.no_initialize = True
    args.supported_versions = args.supported_versions.split(",") if args.supported_versions else None
    if (args.spawn_child or args.spawn_setsid_child or args.spawn_unmarked_setsid_child
            or args.double_fork) and not args.pid_file:
        log("warning: grandchildren spawned without --pid-file; nobody will know their pids")
    return args


# ---------------------------------------------------------------------------
# Start-up behaviours


def check_required_env(args: argparse.Namespace) -> None:
    wanted: list[tuple[bytes, bytes]] = []
    for spec in args.require_env:
        name, sep, value = spec.partition("=")
        if not sep or not name:
            log(f"bad --require-env {spec!r}: expected NAME=VALUE")
            sys.exit(2)
        # argv was decoded with surrogateescape: fsencode gives back the exact bytes.
        wanted.append((os.fsencode(name), os.fsencode(value)))
    for spec in args.require_env_hex:
        name, sep, hexvalue = spec.partition("=")
        try:
            value = bytes.fromhex(hexvalue)
        except ValueError:
            sep = ""
        if not sep or not name:
            log(f"bad --require-env-hex {spec!r}: expected NAME=HEX")
            sys.exit(2)
        wanted.append((os.fsencode(name), value))
    for name, value in wanted:
        actual = os.environb.get(name)
        if actual != value:
            log(f"required environment variable {name!r} is {actual!r}, wanted {value!r}; exiting")
            sys.exit(EXIT_REQUIRE_ENV)


def grandchild_stdio(args: argparse.Namespace):
    return None if args.child_inherits_stdio else subprocess.DEVNULL


def spawn_grandchildren(args: argparse.Namespace) -> list[int]:
    """Starts the requested grandchildren and returns their pids (in flag order)."""
    pids: list[int] = []
    stdio = grandchild_stdio(args)
    if args.spawn_child:
        child = subprocess.Popen(["sleep", str(LONG_SLEEP_SECONDS)],
                                 stdin=stdio, stdout=stdio, stderr=stdio)
        pids.append(child.pid)
    if args.spawn_setsid_child:
        # start_new_session=True: the child calls setsid() before exec.
        child = subprocess.Popen(["sleep", str(LONG_SLEEP_SECONDS)],
                                 stdin=stdio, stdout=stdio, stderr=stdio, start_new_session=True)
        pids.append(child.pid)
    if args.spawn_unmarked_setsid_child:
        # env={}: execve with an empty environment, so the child carries no
        # CORRAL_SERVER_MARKER; start_new_session: it leaves the process group.
        sleep = shutil.which("sleep") or "/bin/sleep"
        child = subprocess.Popen([sleep, str(LONG_SLEEP_SECONDS)], env={},
                                 stdin=stdio, stdout=stdio, stderr=stdio, start_new_session=True)
        pids.append(child.pid)
    if args.double_fork:
        pids.append(double_fork_daemon(args))
    return pids


def double_fork_daemon(args: argparse.Namespace) -> int:
    """fork, setsid, fork, the middle process exits: the daemon is reparented to init."""
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:
        try:
            os.close(read_end)
            os.setsid()
            daemon = os.fork()
            if daemon == 0:
                if not args.child_inherits_stdio:
                    devnull = os.open(os.devnull, os.O_RDWR)
                    for fd in (0, 1, 2):
                        os.dup2(devnull, fd)
                    os.close(devnull)
                os.write(write_end, f"{os.getpid()}\n".encode())
                os.close(write_end)
                os.execvp("sleep", ["sleep", str(LONG_SLEEP_SECONDS)])
            os._exit(0)
        except BaseException:
            os._exit(1)
    os.close(write_end)
    os.waitpid(middle, 0)
    with os.fdopen(read_end, "rb") as f:
        line = f.readline()
    if not line.strip():
        log("double fork failed")
        sys.exit(1)
    return int(line)


def write_pid_file(path: str, pids: list[int]) -> None:
    # One write with O_APPEND, so restarts of the same server add lines atomically.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, "".join(f"{pid}\n" for pid in pids).encode())
    finally:
        os.close(fd)


def start_stderr_flood(megabytes: float) -> None:
    total = int(megabytes * 1024 * 1024)

    def flood() -> None:
        line_no = 0
        written = 0
        filler = "x" * 100
        try:
            while written < total:
                chunk = []
                size = 0
                while size < 65536 and written + size < total:
                    line = f"fixture: stderr flood line {line_no:09d} {filler}\n"
                    chunk.append(line)
                    size += len(line)
                    line_no += 1
                data = "".join(chunk).encode()
                view = memoryview(data)
                while view:  # os.write may write less than asked on a pipe
                    n = os.write(2, view)
                    view = view[n:]
                written += len(data)
            log(f"stderr flood done: {written} bytes in {line_no} lines")
        except OSError:
            pass  # stderr closed: nobody is reading any more

    threading.Thread(target=flood, name="stderr-flood", daemon=True).start()


def write_garbage_stdout() -> None:
    os.write(1, b"this is not json\n{broken\n")


def block_after_stdin_close(reason: str) -> None:
    log(f"stdin closed; {reason}: still running (up to {LONG_SLEEP_SECONDS} s)")
    deadline = time.monotonic() + LONG_SLEEP_SECONDS
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(left)
    log("gave up waiting to be killed; exiting")


def hang_on_initialize() -> None:
    """Reads and ignores stdin until EOF: never answers initialize."""
    log("hanging: reading stdin, answering nothing")
    while True:
        data = os.read(0, 65536)
        if not data:
            return


def answer_initialize_with_invalid_json() -> None:
    """Answers `initialize` with a truncated JSON line, then reads stdin answering nothing until EOF."""
    log("answering initialize with invalid JSON")
    pending = b""
    while True:
        data = os.read(0, 65536)
        if not data:
            return
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict) and msg.get("method") == "initialize" and "id" in msg:
                broken = '{"jsonrpc": "2.0", "id": %s, "result": {"protocolVersion": ' % json.dumps(msg["id"])
                os.write(1, broken.encode() + b"\n")


# ---------------------------------------------------------------------------
# The MCP server


def build_server(args: argparse.Namespace):
    from mcp.server.mcpserver import MCPServer

    server = MCPServer(name="fixture", version="1.0.0", log_level="WARNING")

    @server.tool()
    def echo(message: str) -> str:
        """Returns the message, prefixed with "echo: "."""
        return f"echo: {message}"

    @server.tool()
    def pid() -> str:
        """Returns the server's own process id."""
        return str(os.getpid())

    @server.tool()
    async def sleep(seconds: float) -> str:
        """Sleeps for the given number of seconds, then returns "slept"."""
        import anyio

        # Said on stderr so that tests can see a call reach the server and
        # see the server honour notifications/cancelled.
        print(f"fixture: sleeping {seconds} s", file=sys.stderr, flush=True)
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            print("fixture: sleep cancelled", file=sys.stderr, flush=True)
            raise
        return "slept"

    if args.print_env:

        @server.tool()
        def env(name: str) -> str:
            """Returns the value of an environment variable, or "<unset>"."""
            value = os.environb.get(os.fsencode(name))
            if value is None:
                return "<unset>"
            return value.decode("utf-8", "backslashreplace")

        @server.tool()
        def cwd() -> str:
            """Returns the server's working directory."""
            return os.getcwd()

    if args.log_tool:
        from mcp.server.mcpserver import Context

        async def log(level: str, message: str, ctx: Context) -> str:
            """Sends `message` as a log message at `level`, then answers "logged"."""
            await ctx.log(level, message)
            return "logged"

        # As for add_tool below: the SDK finds the Context parameter by its type.
        log.__annotations__ = {"level": str, "message": str, "ctx": Context, "return": str}
        server.add_tool(log)

    if args.changing_tools:
        from mcp.server.mcpserver import Context

        async def add_tool(name: str, ctx: Context) -> str:
            """Adds a tool `name`, then says the tool list changed."""

            def added(message: str) -> str:
                return f"{name}: {message}"

            server.add_tool(added, name=name, description=f"Added at run time as {name}.",
                            meta={"zeta": 1, "alpha": [1.5, "two"]})
            await announce(ctx, "tools")
            return "added"

        # The SDK finds the Context parameter by its type; with postponed annotations it
        # would look `Context` up in this module's globals, where it is not.
        add_tool.__annotations__ = {"name": str, "ctx": Context, "return": str}
        server.add_tool(add_tool)

        # Added tools also carry `execution`, a field rmcp's model has no room for: a client
        # that passes tools on as the server wrote them keeps it.
        from mcp_types import ToolExecution

        builtin = {tool.name for tool in server._tool_manager.list_tools()}
        list_tools = server.list_tools

        async def list_tools_with_execution():
            return [
                tool if tool.name in builtin
                else tool.model_copy(update={"execution": ToolExecution(task_support="optional")})
                for tool in await list_tools()
            ]

        server.list_tools = list_tools_with_execution

    if args.custom_methods:
        add_custom_methods(server)

    if args.catalog:
        from mcp.server.mcpserver import Context

        @server.prompt()
        def greeting(name: str) -> str:
            """A greeting for `name`."""
            return f"Say hello to {name}."

        @server.resource("fixture://note", mime_type="text/plain")
        def note() -> str:
            """A short note."""
            return "a note from the fixture"

        async def touch_note(ctx: Context) -> str:
            """Says the note changed (notifications/resources/updated), then answers "touched"."""
            await announce(ctx, "note")
            return "touched"

        async def add_prompt(name: str, ctx: Context) -> str:
            """Adds a prompt `name`, then says the prompt list changed."""

            def added() -> str:
                return f"the prompt {name}"

            server.add_prompt(mcp_prompt(added, name))
            await announce(ctx, "prompts")
            return "added"

        touch_note.__annotations__ = {"ctx": Context, "return": str}
        add_prompt.__annotations__ = {"name": str, "ctx": Context, "return": str}
        server.add_tool(touch_note)
        server.add_tool(add_prompt)

    if args.no_initialize:
        from mcp.server.mcpserver import Context
        from mcp_types import ElicitRequest, ElicitRequestFormParams, InputRequiredResult

        async def confirm(topic: str, ctx: Context):
            """Asks whether to go ahead with `topic` in an `input_required` result (MCP 2026-07-28, MRTR),
            then says what came back."""
            answers = ctx.input_responses or {}
            if "sure" not in answers:
                schema = {"type": "object", "properties": {"sure": {"type": "boolean"}}, "required": ["sure"]}
                asked = {"sure": ElicitRequest(params=ElicitRequestFormParams(message=f"Go ahead with {topic}?",
                                                                              requested_schema=schema))}
                return InputRequiredResult(input_requests=asked, request_state=f"asked about {topic}")
            if ctx.request_state != f"asked about {topic}":
                return f"wrong request state: {ctx.request_state!r}"
            sure = answers["sure"]
            return f"{topic}: {sure.action} {json.dumps(sure.content, sort_keys=True)}"

        confirm.__annotations__ = {"topic": str, "ctx": Context, "return": str | InputRequiredResult}
        server.add_tool(confirm)

    return server


def add_custom_methods(server) -> None:
    """`fixture/echo`, `fixture/ask` and `fixture/poke` (see --custom-methods), on the SDK's low-level server,
    which takes a handler for any method; notifications go out through the connection's
    `notify`, which takes any method too."""
    import mcp_types as types
    from pydantic import ConfigDict

    class AnyParams(types.RequestParams):
        model_config = ConfigDict(extra="allow")

    class AnyNotificationParams(types.NotificationParams):
        model_config = ConfigDict(extra="allow")

    def plain(params) -> dict:
        return params.model_dump(by_alias=True, exclude={"meta"}, exclude_none=True, mode="json")

    async def echo(ctx, params: AnyParams) -> dict:
        await ctx.session._connection.notify("fixture/event", {"about": "fixture/echo", "params": plain(params)})
        return {"echoed": plain(params), "kept": {"n": 2.5, "list": [1, "two"], "none": None}}

    async def ask(ctx, params: AnyParams) -> dict:
        schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
        question = plain(params).get("question", "")
        result = await ctx.session.elicit_form(f"fixture/ask: {question}", schema, related_request_id=ctx.request_id)
        return {"action": result.action, "content": result.content}

    async def poke(ctx, params: AnyNotificationParams) -> None:
        await ctx.session._connection.notify("fixture/poked", plain(params))

    lowlevel = server._lowlevel_server
    lowlevel.add_request_handler("fixture/echo", AnyParams, echo)
    lowlevel.add_request_handler("fixture/ask", AnyParams, ask)
    lowlevel.add_notification_handler("fixture/poke", AnyNotificationParams, poke)


def mcp_prompt(fn, name: str):
    from mcp.server.mcpserver.prompts import Prompt

    return Prompt.from_function(fn, name=name, description=f"Added at run time as {name}.")


async def announce(ctx, what: str) -> None:
    """Tells the client something changed, in both eras: on a `subscriptions/listen` stream (MCP
    2026-07-28; a no-op without one) and as the notification of the handshake era (where a
    2026-07-28 connection has no such channel, it is skipped)."""
    if what == "tools":
        await ctx.notify_tools_changed()
        legacy = "send_tool_list_changed"
    elif what == "prompts":
        await ctx.notify_prompts_changed()
        legacy = "send_prompt_list_changed"
    else:
        await ctx.notify_resource_updated("fixture://note")
        legacy = None
    try:
        if legacy is not None:
            await getattr(ctx.session, legacy)()
        else:
            await ctx.session.send_resource_updated("fixture://note")
    except Exception as error:  # a 2026-07-28 connection: the stream above is the way
        log(f"no handshake-era notification for {what}: {type(error).__name__}")


class _CountingStdin:
    """Async line iterator over stdin that notes the ids of tools/call and tools/list requests,
    records every message (--record), and refuses `initialize` itself (--no-initialize)."""

    def __init__(self, inner, call_ids: set, list_ids: set, args: argparse.Namespace, stdout) -> None:
        self._inner = inner
        self._call_ids = call_ids
        self._list_ids = list_ids
        self._args = args
        self._stdout = stdout
        self._record = open(args.record, "a", encoding="utf-8", buffering=1) if args.record else None

    def _note(self, msg: dict) -> None:
        if self._record is None:
            return
        params = msg.get("params") if isinstance(msg.get("params"), dict) else {}
        entry = {"method": msg.get("method"), "id": msg.get("id"), "meta": params.get("_meta")}
        if msg.get("method") == "initialize":
            entry["protocolVersion"] = params.get("protocolVersion")
        if msg.get("method") == "subscriptions/listen":
            entry["notifications"] = params.get("notifications")
        self._record.write(json.dumps(entry) + "\n")

    def _refusal(self, msg: dict) -> dict | None:
        """The error an `initialize` gets instead of the SDK's answer, or None."""
        if self._args.no_initialize:
            return {"code": -32601, "message": "Method not found: initialize"}
        supported = self._args.supported_versions
        params = msg.get("params") if isinstance(msg.get("params"), dict) else {}
        requested = params.get("protocolVersion")
        if supported is not None and requested not in supported:
            return {"code": -32022, "message": "Unsupported protocol version",
                    "data": {"supported": supported, "requested": requested}}
        return None

    async def _refuse(self, msg: dict, error: dict) -> None:
        await self._stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "error": error}) + "\n")
        await self._stdout.flush()
        log(f"refused initialize ({error['code']})")
        if self._args.no_initialize_then_exit:
            log(f"exiting with {EXIT_REFUSED_INITIALIZE} after refusing initialize")
            os._exit(EXIT_REFUSED_INITIALIZE)

    async def __aiter__(self):
        async for line in self._inner:
            try:
                msg = json.loads(line)
            except ValueError:
                msg = None  # not our business: the SDK reports it
            if isinstance(msg, dict):
                self._note(msg)
                if "id" in msg:
                    if msg.get("method") == "tools/call":
                        self._call_ids.add(json.dumps(msg["id"]))
                    elif msg.get("method") == "tools/list":
                        self._list_ids.add(json.dumps(msg["id"]))
                    elif msg.get("method") == "initialize" and (refusal := self._refusal(msg)) is not None:
                        # The SDK has not written anything yet: the refusal cannot interleave with it.
                        await self._refuse(msg, refusal)
                        continue
            yield line


class _ExitingStdout:
    """Writes like the SDK's stdout, and acts once an answer is flushed: exits after the
    Nth tools/call answer (--exit-after-calls), exits or closes stdout after the first
    tools/list answer (--exit-after-handshake, --close-stdout-after-handshake)."""

    def __init__(self, inner, call_ids: set, list_ids: set, args: argparse.Namespace) -> None:
        self._inner = inner
        self._call_ids = call_ids
        self._list_ids = list_ids
        self._limit = args.exit_after_calls
        self._exit_after_handshake = args.exit_after_handshake
        self._close_after_handshake = args.close_stdout_after_handshake
        self._answered = 0
        self._exit_now = False
        self._handshake_done = False
        self._closed = False

    async def write(self, text: str) -> None:
        if self._closed:
            return  # stdout is /dev/null now; the SDK may go on writing
        await self._inner.write(text)
        try:
            msg = json.loads(text)
        except ValueError:
            return
        if isinstance(msg, dict) and ("result" in msg or "error" in msg) and "id" in msg:
            key = json.dumps(msg["id"])
            if key in self._call_ids:
                self._call_ids.discard(key)
                self._answered += 1
                if self._limit is not None and self._answered >= self._limit:
                    self._exit_now = True
            elif key in self._list_ids:
                self._list_ids.discard(key)
                self._handshake_done = True

    async def flush(self) -> None:
        if self._closed:
            return
        await self._inner.flush()
        if self._exit_now:
            log(f"answered {self._answered} tool call(s); exiting with {EXIT_AFTER_CALLS}")
            os._exit(EXIT_AFTER_CALLS)
        if self._handshake_done and self._exit_after_handshake:
            log(f"handshake done; exiting with {EXIT_AFTER_HANDSHAKE}")
            os._exit(EXIT_AFTER_HANDSHAKE)
        if self._handshake_done and self._close_after_handshake:
            # dup2 closes the pipe's write end: the reader sees EOF while this process runs on.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)
            self._closed = True
            log("handshake done; closed stdout, still serving stdin")


async def serve_watching_answers(server, args: argparse.Namespace) -> None:
    """The SDK's stdio transport, over stdin/stdout wrappers that watch tools/call and tools/list answers
    (and record what comes in, and refuse `initialize`).

    MCPServer.run_stdio_async() takes no streams, so this repeats its two lines
    with our own; `_lowlevel_server` is the SDK's (pinned) internal server.
    """
    from io import TextIOWrapper

    import anyio
    from mcp.server.stdio import stdio_server

    call_ids: set = set()
    list_ids: set = set()
    stdout = _ExitingStdout(anyio.wrap_file(TextIOWrapper(sys.stdout.buffer, encoding="utf-8")),
                            call_ids, list_ids, args)
    stdin = _CountingStdin(anyio.wrap_file(TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")),
                           call_ids, list_ids, args, stdout)
    lowlevel = server._lowlevel_server
    async with stdio_server(stdin=stdin, stdout=stdout) as (read_stream, write_stream):
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


def main(argv: list[str]) -> int:
    args = parse_args(argv)

    check_required_env(args)

    if args.crash_on_start:
        log("crashing on start")
        return EXIT_CRASH_ON_START

    # Grandchildren come before any thread or signal change: fork is then safe,
    # and they keep the default SIGTERM disposition.
    grandchildren = spawn_grandchildren(args)
    if args.pid_file:
        write_pid_file(args.pid_file, [os.getpid(), *grandchildren])

    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    if args.stderr_flood:
        start_stderr_flood(args.stderr_flood)

    if args.garbage_stdout:
        write_garbage_stdout()

    if args.hang_on_initialize:
        hang_on_initialize()
    elif args.invalid_initialize_answer:
        answer_initialize_with_invalid_json()
    else:
        server = build_server(args)
        if (args.exit_after_calls is not None or args.exit_after_handshake
                or args.close_stdout_after_handshake or args.no_initialize or args.record
                or args.supported_versions):
            import anyio

            anyio.run(serve_watching_answers, server, args)
        else:
            server.run("stdio")

    if args.ignore_sigterm:
        block_after_stdin_close("ignoring SIGTERM")
    elif args.ignore_stdin_close:
        block_after_stdin_close("ignoring stdin close")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
