"""A real MCP server (stdio) for the tool manager's tests.

Its `mark_*` tools append (tool, start, end) lines to the file named by
MCP_MARK_LOG, so a test can check which calls overlapped.
"""

from __future__ import annotations

import os
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("test-tools")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return f"echo: {text}"


@server.tool()
def hang(seconds: float) -> str:
    """Sleep for a while (a tool that hangs)."""
    time.sleep(seconds)
    return "woke up"


def _mark(name: str, hold: float) -> str:
    # The monotonic clock: the test compares intervals, which a wall-clock
    # step (NTP) could make overlap or reorder.
    start = time.monotonic()
    time.sleep(hold)
    end = time.monotonic()
    with open(os.environ["MCP_MARK_LOG"], "a") as fh:
        fh.write(f"{name} {start} {end}\n")
    return name


@server.tool()
def mark_a(hold: float) -> str:
    """Record a timed interval as tool a."""
    return _mark("a", hold)


@server.tool()
def mark_b(hold: float) -> str:
    """Record a timed interval as tool b."""
    return _mark("b", hold)


if __name__ == "__main__":
    server.run("stdio")
