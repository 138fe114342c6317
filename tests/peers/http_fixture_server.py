#!/usr/bin/env python3
"""A streamable-HTTP MCP server for Corral's tests, built on the official MCP SDK.

It records every HTTP request it receives (one JSON line each in --record:
HTTP method, JSON-RPC method, whether a session id came with it, the status
answered, and the request headers) and fails on request, for the behaviours
no real server shows on demand: answer `initialize` or `tools/call` with an
error status a given number of times, require a bearer token, answer every
POST with one status, forget its sessions (HTTP 404 to them), and refuse
protocol versions the way a server of MCP 2026-07-28 does (which, with
`--supported-versions 2026-07-28`, makes it a server of 2026-07-28 only: the
SDK serves the requests of that version, the fixture refuses the handshake).

Run it with the interpreter of tests/peers/.venv (installed by tests/run.sh);
it listens on 127.0.0.1 only:

    tests/peers/.venv/bin/python tests/peers/http_fixture_server.py --port PORT --record FILE [FLAGS]

With `--no-initialize` it is a stateless server of MCP 2026-07-28 only: `initialize` gets
"Method not found: initialize", and everything else is the SDK's 2026-07-28 serving.

Tools: `echo {message}` → `echo: <message>`; `confirm {topic}` → an `input_required` result
(MRTR) asking an elicitation (`sure`) and the roots, then what came back; `add_tool {name}` → a new
tool `name` and, at 2026-07-28, `notifications/tools/list_changed` on the `subscriptions/listen` stream; `forget_sessions {also_next}`
→ from then on every session created so far is unknown (HTTP 404 to any
request carrying its id), and the next `also_next` sessions created answer
404 to `tools/call` (their handshake succeeds). Prompt `greeting {name}`; resource
`fixture://note`.
See tests/peers/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# Module level: the tools' annotations are strings (postponed), read in this module's globals.
from mcp.server.mcpserver import Context
from mcp_types import InputRequiredResult


def log(message: str) -> None:
    try:
        os.write(2, f"http-fixture: {message}\n".encode("utf-8", "backslashreplace"))
    except OSError:
        pass


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="http_fixture_server.py",
        description="streamable-HTTP MCP fixture server for Corral's tests (official Python MCP SDK)",
    )
    p.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    p.add_argument("--record", required=True, metavar="FILE", help="append one JSON line per HTTP request")
    p.add_argument("--fail-initialize", type=int, default=0, metavar="N",
                   help="answer the first N initialize POSTs with --fail-status")
    p.add_argument("--fail-tools-list", type=int, default=0, metavar="N",
                   help="answer the first N tools/list POSTs with --fail-status")
    p.add_argument("--fail-tools-call", type=int, default=0, metavar="N",
                   help="answer the first N tools/call POSTs with --fail-status")
    p.add_argument("--fail-status", type=int, default=503, metavar="CODE", help="status of those failures (503)")
    p.add_argument("--status", type=int, metavar="CODE", help="answer every POST with this status")
    p.add_argument("--www-authenticate", metavar="VALUE",
                   help="WWW-Authenticate header sent with --status and --require-bearer answers")
    p.add_argument("--require-bearer", metavar="TOKEN",
                   help="answer 401 unless the request has `Authorization: Bearer TOKEN`")
    p.add_argument("--no-initialize", action="store_true",
                   help="a stateless server of MCP 2026-07-28 only: answer `initialize` with the JSON-RPC "
                        "error -32601 \"Method not found: initialize\" (the SDK serves the rest)")
    p.add_argument("--supported-versions", metavar="V,V...",
                   help="answer a POST whose protocol version (its MCP-Protocol-Version header, else the "
                        "protocolVersion of an initialize) is not one of these with HTTP 400 and the "
                        "UnsupportedProtocolVersionError (-32022) of MCP 2026-07-28, listing them")
    args = p.parse_args(argv)
    args.supported_versions = args.supported_versions.split(",") if args.supported_versions else None
    return args


class Fixture:
    """ASGI middleware in front of the SDK's app: records, injects failures, forgets sessions."""

    def __init__(self, app, args: argparse.Namespace) -> None:
        self.app = app
        self.args = args
        self.record_file = open(args.record, "a", encoding="utf-8", buffering=1)
        self.initialize_failures_left = args.fail_initialize
        self.tools_list_failures_left = args.fail_tools_list
        self.tools_call_failures_left = args.fail_tools_call
        self.sessions_seen: set[str] = set()
        self.forgotten: set[str] = set()
        # Sessions that get 404 to `tools/call` only (created after `forget_sessions(also_next)`).
        self.forgotten_for_calls: set[str] = set()
        self.forget_next = 0

    def forget_sessions(self, also_next: int) -> None:
        self.forgotten |= self.sessions_seen
        self.forget_next = also_next
        log(f"forgot {len(self.forgotten)} session(s); forgetting the next {also_next} too")

    def record(self, method: str, rpc: str | None, session: str | None, status: int, headers: dict,
               meta: list[str] | None) -> None:
        entry = {"method": method, "rpc": rpc, "session": session is not None, "status": status, "headers": headers,
                 "meta": meta}
        self.record_file.write(json.dumps(entry) + "\n")

    def refuse_version(self, version: str | None, request_id) -> tuple[int, list, bytes] | None:
        """The answer of a server of 2026-07-28 to a version it does not serve, or None."""
        supported = self.args.supported_versions
        if supported is None or version in supported:
            return None
        error = {"code": -32022, "message": "Unsupported protocol version",
                 "data": {"supported": supported, "requested": version}}
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()
        return 400, [(b"content-type", b"application/json")], body

    def decide(self, method: str, rpc: str | None, headers: dict, session: str | None) -> tuple[int, list] | None:
        """The status to answer instead of the SDK, with extra headers, or None."""
        challenge = []
        if self.args.www_authenticate:
            challenge = [(b"www-authenticate", self.args.www_authenticate.encode())]
        if self.args.require_bearer is not None:
            if headers.get("authorization") != f"Bearer {self.args.require_bearer}":
                return 401, challenge
        if method == "POST" and self.args.status is not None:
            return self.args.status, challenge
        if session is not None and session in self.forgotten:
            return 404, []
        if session is not None and session in self.forgotten_for_calls and rpc == "tools/call":
            return 404, []
        if rpc == "initialize" and self.initialize_failures_left > 0:
            self.initialize_failures_left -= 1
            return self.args.fail_status, []
        if rpc == "tools/list" and self.tools_list_failures_left > 0:
            self.tools_list_failures_left -= 1
            return self.args.fail_status, []
        if rpc == "tools/call" and self.tools_call_failures_left > 0:
            self.tools_call_failures_left -= 1
            return self.args.fail_status, []
        return None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        session = headers.get("mcp-session-id")
        body = b""
        if method == "POST":
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
        rpc = None
        meta = None
        version = headers.get("mcp-protocol-version")
        request_id = None
        try:
            parsed = json.loads(body) if body else None
            if isinstance(parsed, dict):
                rpc = parsed.get("method")
                request_id = parsed.get("id")
                params = parsed.get("params")
                if isinstance(params, dict):
                    if isinstance(params.get("_meta"), dict):
                        meta = sorted(params["_meta"])
                    if version is None and rpc == "initialize":
                        version = params.get("protocolVersion")
        except ValueError:
            pass
        decided = self.decide(method, rpc, headers, session)
        if decided is not None:
            status, extra = decided
            self.record(method, rpc, session, status, headers, meta)
            await send({
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain")] + extra,
            })
            await send({"type": "http.response.body", "body": f"http-fixture: {status}\n".encode()})
            return
        if method == "POST" and rpc == "initialize" and self.args.no_initialize:
            error = {"code": -32601, "message": "Method not found: initialize"}
            body = json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()
            self.record(method, rpc, session, 200, headers, meta)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        refused = self.refuse_version(version, request_id) if method == "POST" else None
        if refused is not None:
            status, response_headers, response = refused
            self.record(method, rpc, session, status, headers, meta)
            await send({"type": "http.response.start", "status": status, "headers": response_headers})
            await send({"type": "http.response.body", "body": response})
            return

        replayed = False

        async def replay():
            nonlocal replayed
            if method == "POST" and not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def observe(message) -> None:
            if message["type"] == "http.response.start":
                for name, value in message.get("headers", []):
                    if name.decode("latin-1").lower() == "mcp-session-id":
                        created = value.decode("latin-1")
                        if created not in self.sessions_seen:
                            self.sessions_seen.add(created)
                            if self.forget_next > 0:
                                self.forget_next -= 1
                                self.forgotten_for_calls.add(created)
                self.record(method, rpc, session, message["status"], headers, meta)
            await send(message)

        await self.app(scope, replay, observe)


def main(argv: list[str]) -> int:
    args = parse_args(argv)

    import uvicorn
    from mcp.server.mcpserver import MCPServer
    from mcp_types import ElicitRequest, ElicitRequestFormParams, ListRootsRequest

    server = MCPServer(name="http-fixture", version="1.0.0", log_level="WARNING")
    fixture: Fixture | None = None

    @server.tool()
    def echo(message: str) -> str:
        """Returns the message, prefixed with "echo: "."""
        return f"echo: {message}"

    @server.tool()
    def forget_sessions(also_next: int = 0) -> str:
        """Forgets every session so far (HTTP 404 to them); the next `also_next` sessions answer 404 to tools/call."""
        assert fixture is not None
        fixture.forget_sessions(also_next)
        return "forgotten"

    @server.tool()
    async def confirm(topic: str, ctx: Context) -> str | InputRequiredResult:
        """Asks whether to go ahead with `topic` and for the client's roots in an `input_required`
        result (MCP 2026-07-28, MRTR), then says what came back."""
        answers = ctx.input_responses or {}
        if "sure" not in answers or "roots" not in answers:
            schema = {"type": "object", "properties": {"sure": {"type": "boolean"}}, "required": ["sure"]}
            asked = {
                "sure": ElicitRequest(params=ElicitRequestFormParams(message=f"Go ahead with {topic}?",
                                                                     requested_schema=schema)),
                "roots": ListRootsRequest(),
            }
            return InputRequiredResult(input_requests=asked, request_state=f"asked about {topic}")
        # The SDK seals the state it sends and verifies the echo: a changed one never gets here.
        if ctx.request_state != f"asked about {topic}":
            return f"wrong request state: {ctx.request_state!r}"
        sure, roots = answers["sure"], answers["roots"]
        uris = [str(root.uri) for root in roots.roots]
        return f"{topic}: {sure.action} {json.dumps(sure.content, sort_keys=True)}; roots {uris}"

    @server.tool()
    async def add_tool(name: str, ctx: Context) -> str:
        """Adds a tool `name` (answering "{name}: {message}"), then says the tool list changed: at
        MCP 2026-07-28 on the client's `subscriptions/listen` stream."""

        def added(message: str) -> str:
            return f"{name}: {message}"

        server.add_tool(added, name=name, description=f"Added at run time as {name}.")
        await ctx.notify_tools_changed()
        return "added"

    @server.prompt()
    def greeting(name: str) -> str:
        """A greeting for `name`."""
        return f"Say hello to {name}."

    @server.resource("fixture://note", mime_type="text/plain")
    def note() -> str:
        """A short note."""
        return "a note from the fixture"

    app = server.streamable_http_app(host="127.0.0.1")
    fixture = Fixture(app, args)
    log(f"listening on 127.0.0.1:{args.port}")
    uvicorn.run(fixture, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
