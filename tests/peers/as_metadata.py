#!/usr/bin/env python3
"""An authorization server that only publishes metadata, for Corral's tests of what corrald does
with the `authorization_endpoint` it discovers (nothing here issues a token).

    tests/peers/.venv/bin/python tests/peers/as_metadata.py --port PORT --endpoint-file FILE

Serves RFC 8414 (`/.well-known/oauth-authorization-server`) and OIDC
(`/.well-known/openid-configuration`) metadata for the issuer http://127.0.0.1:PORT/, whose
`authorization_endpoint` is the content of FILE, read on every request (so one peer serves every
case of a test). Every other request gets 404. Put it behind `protected_rs.py --issuer` so that
discovery starts from a real resource server. Listens on 127.0.0.1 only; standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="as_metadata.py")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--endpoint-file", required=True)
    args = parser.parse_args(argv)
    issuer = f"http://127.0.0.1:{args.port}/"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if not path.startswith(("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")):
                self.send_error(404)
                return
            with open(args.endpoint_file, encoding="utf-8") as file:
                endpoint = file.read().strip()
            body = json.dumps({
                "issuer": issuer,
                "authorization_endpoint": endpoint,
                "token_endpoint": f"{issuer}token",
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["none"],
            }).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's name)
            sys.stderr.write(f"as_metadata: {format % args}\n")

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
