"""An MCP client written with the official Python SDK (`stdio_client` +
`ClientSession`), using Corral as an MCP server: it spawns `CORRAL mcp ARGS...`,
initializes, lists the tools, calls `everything__echo`, and prints ONE JSON
line with what it saw. The Rust test (tests/tests/e2e/bridge.rs) asserts on it.

Usage: python mcp_bridge_client.py CORRAL [ARGS...]

Any failure, or the overall timeout, prints the reason on stderr and exits 1.
"""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

OVERALL_TIMEOUT_S = 60


async def run(corral: str, args: list[str]) -> dict:
    params = StdioServerParameters(command=corral, args=["mcp", *args], env=dict(os.environ))
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            initialized = await session.initialize()
            tools = await session.list_tools()
            echo = await session.call_tool("everything__echo", {"message": "from python"})
            return {
                "protocolVersion": initialized.protocol_version,
                "serverName": initialized.server_info.name,
                "names": [tool.name for tool in tools.tools],
                "echo": echo.model_dump(mode="json", by_alias=True, exclude_none=True),
            }


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: python mcp_bridge_client.py CORRAL [ARGS...]", file=sys.stderr)
        return 2
    try:
        summary = asyncio.run(asyncio.wait_for(run(sys.argv[1], sys.argv[2:]), OVERALL_TIMEOUT_S))
    except Exception as error:  # noqa: BLE001 - the reason goes to the test's output
        print(f"mcp_bridge_client: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
