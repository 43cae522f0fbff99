"""The kernel's tool manager with built-in tools and a real MCP server."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from aios.kernel.v1 import kernel_service_pb2 as kpb
from aios.sdk import AsyncClient, DeadlineExceededError, InvalidArgumentError, NotFoundError
from tests.conftest import kernel_config

SERVER = str(Path(__file__).parent / "support" / "mcp_tool_server.py")


@pytest.fixture(scope="module")
def mark_log(tmp_path_factory):
    return tmp_path_factory.mktemp("mcp") / "marks.log"


@pytest.fixture
async def client(llm_core_addr, start_service, mark_log):
    from services.scheduler.app import build

    tools = {"mcp_servers": [{
        "name": "t", "command": [sys.executable, SERVER], "env": {"MCP_MARK_LOG": str(mark_log)},
        "tools": {
            "hang": {"timeout": 0.5},
            "mark_a": {"max_concurrency": 1, "conflicts_with": ["t.mark_b"]},
            "mark_b": {"max_concurrency": 1, "conflicts_with": ["t.mark_a"]},
        },
    }]}
    server = await start_service(build, kernel_config(llm_core_addr, AIOS_KERNEL_TOOLS=json.dumps(tools)))
    async with AsyncClient(f"127.0.0.1:{server.port}", token="tool-user", timeout=30, retries=0) as c:
        yield c


async def test_lists_builtin_and_mcp_tools_with_schemas(client):
    listing = await client._rpc("ListTools", kpb.ListToolsRequest())
    tools = {t.name: t for t in listing.tools}
    assert {"calculator", "files.read", "files.write", "memory.add", "memory.search",
            "t.echo", "t.hang", "t.mark_a", "t.mark_b"} <= set(tools)
    assert tools["t.echo"].source == "mcp:t" and "text" in tools["t.echo"].parameters["properties"]
    assert list(tools["t.mark_a"].conflicts_with) == ["t.mark_b"]


async def test_calculator(client):
    assert await client.tools.call("calculator", {"expression": "(17*23)+4"}) == "395"
    with pytest.raises(InvalidArgumentError) as exc:
        await client.tools.call("calculator", {"expression": "__import__('os').system('x')"})
    assert exc.value.reason == "BAD_EXPRESSION"


async def test_a_calculator_bomb_is_refused_before_it_is_computed(client):
    """((9**999)**999)**9 passes the exponent check but has ~8.9 million
    digits; computed, it held the GIL for seconds and outlived its timeout.
    Each step's size is bounded before it runs, so it is refused at once and
    the kernel keeps answering."""
    from services.scheduler.tools import MAX_DIGITS

    bomb = asyncio.ensure_future(client.tools.call("calculator", {"expression": "((9**999)**999)**9"}))
    listing = await client._rpc("ListTools", kpb.ListToolsRequest())
    assert any(t.name == "calculator" for t in listing.tools)
    with pytest.raises(InvalidArgumentError) as exc:
        await bomb
    assert exc.value.reason == "BAD_EXPRESSION" and f"more than {MAX_DIGITS} digits" in exc.value.message
    # A result past Python's 4,300-digit str limit was INTERNAL; now it is refused too.
    with pytest.raises(InvalidArgumentError) as exc:
        await client.tools.call("calculator", {"expression": "(9**999)*(9**999)*(9**999)*(9**999)*(9**999)"})
    assert exc.value.reason == "BAD_EXPRESSION"
    # What fits is still computed exactly.
    assert len(await client.tools.call("calculator", {"expression": "9**999"})) == 954


async def test_mcp_tool_is_called_for_real(client):
    assert await client.tools.call("t.echo", {"text": "hello"}) == "echo: hello"


async def test_schema_violations_are_refused_before_running(client, mark_log):
    before = mark_log.read_text() if mark_log.exists() else ""
    for bad in ({}, {"hold": "long"}, {"hold": None}):
        with pytest.raises(InvalidArgumentError) as exc:
            await client.tools.call("t.mark_a", bad)
        assert exc.value.reason == "TOOL_ARGUMENTS_INVALID"
    assert (mark_log.read_text() if mark_log.exists() else "") == before  # nothing ran
    with pytest.raises(NotFoundError):
        await client.tools.call("no.such.tool", {})


async def test_a_hanging_tool_is_cut_at_its_timeout(client):
    with pytest.raises(DeadlineExceededError) as exc:
        await client.tools.call("t.hang", {"seconds": 30})
    assert exc.value.reason == "TOOL_TIMEOUT"
    # The kernel keeps serving tools.
    assert await client.tools.call("t.echo", {"text": "still here"}) == "echo: still here"


async def test_conflicting_tools_never_overlap(client, mark_log):
    mark_log.write_text("")
    calls = [client.tools.call("t.mark_a" if i % 2 else "t.mark_b", {"hold": 0.15}) for i in range(6)]
    assert sorted(await asyncio.gather(*calls)) == ["a", "a", "a", "b", "b", "b"]
    intervals = sorted((float(s), float(e), n) for n, s, e in
                       (line.split() for line in mark_log.read_text().splitlines()))
    assert len(intervals) == 6
    for (s1, e1, n1), (s2, e2, n2) in zip(intervals, intervals[1:]):
        assert e1 <= s2, f"{n1} [{s1}, {e1}] overlaps {n2} [{s2}, {e2}]"
