#!/usr/bin/env python3
"""An OAuth-protected streamable-HTTP MCP server for Corral's tests, on the official MCP SDK.

    tests/peers/.venv/bin/python tests/peers/protected_rs.py --port PORT --issuer AS_URL --record FILE

It publishes RFC 9728 protected-resource metadata naming the authorization server AS_URL
(oauth_mock_as.mjs), answers 401 with a challenge to requests without a valid token, and checks
bearer JWTs against the authorization server's JWKS (PyJWT). Each request that carries a token
appends one JSON line to FILE: the JSON-RPC method and a SHA-256 prefix of the token (never the
token). Tool: `echo {message}`. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="protected_rs.py")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--record", required=True)
    args = parser.parse_args(argv)

    import jwt
    import uvicorn
    from mcp.server.auth.provider import AccessToken
    from mcp.server.auth.settings import AuthSettings
    from mcp.server.mcpserver import MCPServer

    jwks = jwt.PyJWKClient(f"{args.issuer}/jwks")

    class JwtVerifier:
        async def verify_token(self, token: str) -> AccessToken | None:
            try:
                key = jwks.get_signing_key_from_jwt(token)
                claims = jwt.decode(token, key.key, algorithms=["RS256"], options={"verify_aud": False})
            except jwt.PyJWTError:
                return None
            scopes = str(claims.get("scope", "")).split()
            return AccessToken(token=token, client_id=str(claims.get("client_id", "corral")), scopes=scopes,
                               expires_at=claims.get("exp"))

    resource = f"http://127.0.0.1:{args.port}/mcp"
    server = MCPServer(
        name="protected-rs",
        version="1.0.0",
        log_level="WARNING",
        token_verifier=JwtVerifier(),
        auth=AuthSettings(issuer_url=args.issuer, resource_server_url=resource, validate_token_resource=False),
    )

    @server.tool()
    def echo(message: str) -> str:
        return f"echo: {message}"

    app = server.streamable_http_app(host="127.0.0.1")

    async def recording(scope, receive, send):
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        body = bytearray()
        messages = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
                if not message.get("more_body"):
                    break
            else:
                break
        method = None
        try:
            method = json.loads(body).get("method") if body else None
        except (ValueError, AttributeError):
            pass
        if authorization.lower().startswith("bearer "):
            token = authorization[7:]
            line = {"http": scope["method"], "rpc": method, "token": hashlib.sha256(token.encode()).hexdigest()[:16]}
            with open(args.record, "a", encoding="utf-8") as out:
                out.write(json.dumps(line) + "\n")
        replay = iter(messages)

        async def replayed():
            try:
                return next(replay)
            except StopIteration:
                return await receive()

        await app(scope, replayed, send)

    uvicorn.run(recording, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
