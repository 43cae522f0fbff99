"""The kernel as an MCP server: `mcp`'s own client, at /mcp on the kernel's
HTTP door, lists the kernel's tools and calls them as the agent its bearer
token names, under the kernel's rules, confirmations and process table.

Both eras of MCP's streamable HTTP are exercised: the 2026 single-exchange
POSTs (`mode="auto"` against this server) and the initialize handshake of
the clients in the field (`mode="legacy"`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

import httpx2
import pytest
import pytest_asyncio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from aios.access.v1 import access_service_pb2 as apb
from aios.access.v1 import access_service_pb2_grpc as apb_grpc
from aios.kernel.v1 import syscall_pb2 as ks
from aios.sdk import AsyncClient
from services.local.seaweed import start_seaweed
from tests.conftest import kernel_config
from tests.support.polling import until

SERVER = str(Path(__file__).parent / "support" / "mcp_tool_server.py")
BUILTIN = {"calculator", "files.read", "files.write", "files.list", "memory.add", "memory.search"}


@contextlib.asynccontextmanager
async def mcp(url: str, token: str | None, mode: str = "auto", session: str = ""):
    """An MCP client of the kernel, as a desktop assistant or IDE would be."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if session:
        headers["X-AIOS-Session"] = session
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120))
    async with http, Client(streamable_http_client(url, http_client=http), mode=mode) as client:
        yield client


def text(result) -> str:
    return "\n".join(c.text for c in result.content)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = start_seaweed(tmp_path_factory.mktemp("mcp-s3"))
    yield server
    server.stop(graceful=False)


async def _storage(start_service, s3, llm_core_addr, index: Path, env: dict | None = None) -> str:
    from services.storage.app import build
    from services.storage.config import Config

    server = await start_service(build, Config.from_env({
        **(env or {}), "AIOS_STORAGE_S3_ENDPOINT": s3.endpoint, "AIOS_STORAGE_S3_ACCESS_KEY": s3.access_key,
        "AIOS_STORAGE_S3_SECRET_KEY": s3.secret_key, "AIOS_LLM_ADDR": llm_core_addr,
        "AIOS_STORAGE_QDRANT_PATH": str(index)}))
    return f"127.0.0.1:{server.port}"


@pytest_asyncio.fixture(scope="module")
async def kernel(s3, llm_core_addr, start_service, tmp_path_factory):
    """A kernel in development auth (the token is the agent's name) over
    memory, storage and a real MCP tool server, with its HTTP door."""
    from services.memory.app import build as build_memory
    from services.memory.config import Config as MemoryConfig
    from services.scheduler.app import build as build_kernel

    data = tmp_path_factory.mktemp("mcp-door")
    memory = await start_service(build_memory, MemoryConfig.from_env({
        "AIOS_LLM_ADDR": llm_core_addr, "AIOS_MEMORY_QDRANT_PATH": str(data / "memory")}))
    storage = await _storage(start_service, s3, llm_core_addr, data / "index")
    tools = {"mcp_servers": [{"name": "t", "command": [sys.executable, SERVER], "tools": {"hang": {"timeout": 120}}}]}
    server = await start_service(build_kernel, kernel_config(
        llm_core_addr, http_port=0, AIOS_MEMORY_ADDR=f"127.0.0.1:{memory.port}",
        AIOS_STORAGE_ADDR=storage, AIOS_KERNEL_TOOLS=json.dumps(tools)))
    return {"grpc": f"127.0.0.1:{server.port}", "mcp": f"http://127.0.0.1:{server.service.http_port}/mcp"}


@pytest.fixture(params=["auto", "legacy"])
def mode(request):
    return request.param


async def test_both_eras_of_the_transport_are_served(kernel):
    async with mcp(kernel["mcp"], "era-agent", "auto") as modern, mcp(kernel["mcp"], "era-agent", "legacy") as old:
        assert modern.protocol_version != old.protocol_version
        assert modern.server_info is None or modern.server_info.name == "aios-kernel"
        assert old.server_info.name == "aios-kernel"


async def test_lists_the_kernels_tools_with_their_schemas(kernel, mode):
    async with mcp(kernel["mcp"], "lister", mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert BUILTIN | {"t.echo", "t.hang"} <= set(tools)
    read = tools["files.read"]
    assert read.input_schema["required"] == ["path"] and {"path", "owner"} <= set(read.input_schema["properties"])
    assert read.annotations.read_only_hint is True
    assert tools["files.write"].annotations.read_only_hint is False
    # Not irreversible: the kernel itself asks to confirm an overwrite.
    assert tools["files.write"].annotations.destructive_hint is False
    assert "text" in tools["t.echo"].input_schema["properties"]
    assert tools["calculator"].description


async def test_tool_calls_are_syscalls_of_the_calling_agent(kernel, mode):
    alice, session = f"alice-{mode}", f"mcp-run-{mode}"
    async with mcp(kernel["mcp"], alice, mode, session=session) as client, \
            AsyncClient(kernel["grpc"], token=alice, timeout=30, retries=0) as sdk:
        result = await client.call_tool("calculator", {"expression": "(17*23)+4"})
        assert not result.is_error and text(result) == "395"
        # Memory: stored under alice.
        fact = f"alice's cat is called Miso ({mode})"
        result = await client.call_tool("memory.add", {"content": fact, "tags": ["pets"]})
        assert not result.is_error, text(result)
        record = await sdk.memory.get(json.loads(text(result))["id"])
        assert record.owner == alice and record.content == fact
        found = await client.call_tool("memory.search", {"query": "what is the cat called", "k": 2})
        assert not found.is_error and fact in [m["content"] for m in json.loads(text(found))]
        # Files: one written over MCP, one with the SDK; both read over MCP.
        result = await client.call_tool("files.write", {"path": "notes/todo.txt", "content": "buy milk"})
        assert not result.is_error and json.loads(text(result))["path"] == "notes/todo.txt"
        assert await sdk.files.read("notes/todo.txt") == b"buy milk"
        await sdk.files.write("notes/from-sdk.txt", "written with the SDK")
        assert text(await client.call_tool("files.read", {"path": "notes/from-sdk.txt"})) == "written with the SDK"
        listing = await client.call_tool("files.list", {"prefix": "notes/"})
        assert {"notes/todo.txt", "notes/from-sdk.txt"} <= set(json.loads(text(listing)))
    # In the process table, under alice, in the session the header named.
    async with AsyncClient(kernel["grpc"], token="observer", timeout=30, retries=0) as observer:
        agents = {a.agent: a for a in await observer.list_agents()}
        calls = (await observer.list_syscalls(agent=alice, session_id=session, page_size=100)).syscalls
    tool_calls = [c for c in calls if c.kind == ks.SYSCALL_KIND_TOOL and not c.parent_id]
    assert len(tool_calls) == 6 and all(c.agent == alice and c.state == ks.SYSCALL_STATE_SUCCEEDED
                                        for c in tool_calls)
    # ... each with its inner memory and storage calls, made as alice too.
    assert {c.kind for c in calls if c.parent_id} == {ks.SYSCALL_KIND_MEMORY, ks.SYSCALL_KIND_STORAGE}
    assert agents[alice].completed >= len(calls)


async def test_kernel_errors_are_tool_results_with_is_error(kernel, mode):
    alice, bob = f"owner-{mode}", f"bob-{mode}"
    async with AsyncClient(kernel["grpc"], token=alice, timeout=30, retries=0) as sdk:
        await sdk.files.write("shared/plan.txt", "alice's plan")
    async with mcp(kernel["mcp"], bob, mode) as client:
        # Another agent's files: the access rules decide (development mode has no grants).
        for name, args in (("files.read", {"path": "shared/plan.txt", "owner": alice}),
                           ("files.list", {"prefix": "shared/", "owner": alice}),
                           ("files.write", {"path": "shared/plan.txt", "content": "bob's", "owner": alice})):
            result = await client.call_tool(name, args)
            assert result.is_error, (name, text(result))
            assert result.structured_content["error"]["code"] == "PERMISSION_DENIED"
            assert text(result).startswith("PERMISSION_DENIED")
            assert f"may not access the files of {alice!r}" in text(result)
        # Refused before anything runs: bad arguments, an unknown tool.
        result = await client.call_tool("calculator", {"expression": "__import__('os')"})
        assert result.is_error and result.structured_content["error"]["reason"] == "BAD_EXPRESSION"
        result = await client.call_tool("files.read", {"path": "x", "mode": "rb"})
        assert result.is_error and result.structured_content["error"]["reason"] == "TOOL_ARGUMENTS_INVALID"
        result = await client.call_tool("no.such.tool", {})
        assert result.is_error and result.structured_content["error"]["code"] == "NOT_FOUND"
        # The kernel keeps serving the agent.
        assert text(await client.call_tool("calculator", {"expression": "2**10"})) == "1024"
    async with AsyncClient(kernel["grpc"], token=alice, timeout=30, retries=0) as sdk:
        assert await sdk.files.read("shared/plan.txt") == b"alice's plan"


@pytest.mark.parametrize("authorization", [None, "Bearer", "Basic YWxpY2U6eA==", "Bearer not a name!"])
async def test_no_valid_token_is_a_401_before_any_mcp(kernel, authorization):
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if authorization is not None:
        headers["Authorization"] = authorization
    async with httpx2.AsyncClient() as http:
        for body in (json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}), "not even JSON"):
            resp = await http.post(kernel["mcp"], content=body, headers=headers)
            assert resp.status_code == 401, resp.text
            challenge = resp.headers["WWW-Authenticate"]
            assert challenge.startswith("Bearer")
            # RFC 6750: no error code when no credential came at all.
            if authorization is None:
                assert resp.json()["error"] == "unauthorized" and "error=" not in challenge
            else:
                assert resp.json()["error"] == "invalid_token" and 'error="invalid_token"' in challenge


async def test_a_client_that_goes_away_cancels_its_call(kernel, mode):
    agent = f"leaver-{mode}"

    async def call() -> None:
        async with mcp(kernel["mcp"], agent, mode) as client:
            await client.call_tool("t.hang", {"seconds": 60})

    task = asyncio.create_task(call())
    async with AsyncClient(kernel["grpc"], token="observer", timeout=30, retries=0) as observer:
        async def calls(state):
            return [c for c in (await observer.list_syscalls(agent=agent, state=state)).syscalls
                    if c.kind == ks.SYSCALL_KIND_TOOL]

        running = await until(lambda: calls(ks.SYSCALL_STATE_RUNNING), "the tool call runs")
        task.cancel()  # the client closes its connection
        with contextlib.suppress(asyncio.CancelledError):
            await task
        gone = time.monotonic()
        ended = await until(lambda: calls(ks.SYSCALL_STATE_CANCELLED), "the kernel cancels the call")
        assert [c.id for c in ended] == [c.id for c in running]
        # At once, not when a keep-alive write (every 15 s) would find the connection closed.
        assert time.monotonic() - gone < 5, time.monotonic() - gone


# --- with the access service: grants and confirmations ---------------------------

@pytest_asyncio.fixture(scope="module")
async def world(s3, llm_core_addr, start_service, tmp_path_factory):
    from services.access.app import build as access_build
    from services.access.config import Config as AccessConfig
    from services.runtime import trust
    from services.scheduler.app import build as kernel_build

    data = tmp_path_factory.mktemp("mcp-access")
    tokens_file = data / "service-tokens.json"
    trust.ensure_tokens_file(tokens_file)
    env = {"AIOS_SERVICE_TOKENS_FILE": str(tokens_file), "AIOS_DATA_DIR": str(data)}
    access = await start_service(access_build, AccessConfig.from_env(env))
    storage = await _storage(start_service, s3, llm_core_addr, data / "index", env)
    kernel = await start_service(kernel_build, kernel_config(
        llm_core_addr, auth="access", auth_cache_seconds=0, http_port=0,
        AIOS_ACCESS_ADDR=f"127.0.0.1:{access.port}", AIOS_STORAGE_ADDR=storage,
        AIOS_SERVICE_TOKENS_FILE=str(tokens_file)))
    channel = grpc_channel(f"127.0.0.1:{access.port}")
    admin = apb_grpc.AccessServiceStub(channel)
    md = [("authorization", f"Bearer {(data / 'admin.token').read_text().strip()}")]

    async def create(name: str) -> str:
        return (await admin.CreateAgent(apb.CreateAgentRequest(name=name, groups=["agents"]), metadata=md)).token

    yield {"grpc": f"127.0.0.1:{kernel.port}", "mcp": f"http://127.0.0.1:{kernel.service.http_port}/mcp",
           "admin": admin, "md": md, "create": create}
    await channel.close()


def grpc_channel(address: str):
    import grpc

    return grpc.aio.insecure_channel(address)


async def test_a_call_needing_confirmation_is_parked_until_a_person_approves(world, mode):
    name = f"carol-{mode}"
    token = await world["create"](name)
    async with mcp(world["mcp"], token, mode) as client, \
            AsyncClient(world["grpc"], token=token, timeout=30, retries=0) as sdk:
        first = await client.call_tool("files.write", {"path": "report.txt", "content": "v1"})
        assert not first.is_error, text(first)  # a new file: nothing to confirm
        for approve, content in ((True, "v2"), (False, "v3")):
            announced: asyncio.Future = asyncio.get_running_loop().create_future()

            async def progress(value, total, message, announced=announced):
                if message and message.startswith("awaiting confirmation") and not announced.done():
                    announced.set_result(message.split()[2].rstrip(":"))

            # Overwriting is irreversible: the call waits, announced as MCP progress.
            call = asyncio.create_task(client.call_tool(
                "files.write", {"path": "report.txt", "content": content}, progress_callback=progress))
            confirmation = await asyncio.wait_for(announced, 30)
            parked = (await sdk.list_syscalls(state=ks.SYSCALL_STATE_AWAITING_CONFIRMATION)).syscalls
            # (the tool's inner write is the parked call; the tool call shows what it waits for)
            assert [c.confirmation_id for c in parked] == [confirmation] and parked[0].parent_id
            assert not call.done()
            await world["admin"].ResolveConfirmation(apb.ResolveConfirmationRequest(
                id=confirmation, approve=approve), metadata=world["md"])
            result = await asyncio.wait_for(call, 30)
            if approve:
                assert not result.is_error, text(result)
            else:
                assert result.is_error and result.structured_content["error"]["reason"] == "CONFIRMATION_DENIED"
        assert text(await client.call_tool("files.read", {"path": "report.txt"})) == "v2"


async def test_a_grant_lets_another_agent_read_its_files(world, mode):
    fay, gus = f"fay-{mode}", f"gus-{mode}"
    fay_token, gus_token = await world["create"](fay), await world["create"](gus)
    async with mcp(world["mcp"], fay_token, mode) as fay_mcp, mcp(world["mcp"], gus_token, mode) as gus_mcp:
        wrote = await gus_mcp.call_tool("files.write", {"path": "plans/trip.txt", "content": "sail Monday"})
        assert not wrote.is_error, text(wrote)
        refused = await fay_mcp.call_tool("files.read", {"path": "plans/trip.txt", "owner": gus})
        assert refused.is_error and refused.structured_content["error"]["code"] == "PERMISSION_DENIED"
        async with AsyncClient(world["grpc"], token=gus_token, timeout=30, retries=0) as sdk:
            await sdk.submit(ks.Syscall(storage=ks.StorageCall(share=ks.ShareFileRequest(
                path="plans/", grantee=fay, permission=apb.PERMISSION_READ))))
        read = await fay_mcp.call_tool("files.read", {"path": "plans/trip.txt", "owner": gus})
        assert not read.is_error and text(read) == "sail Monday"
        listing = await fay_mcp.call_tool("files.list", {"prefix": "plans/", "owner": gus})
        assert not listing.is_error and json.loads(text(listing)) == ["plans/trip.txt"], text(listing)
        # Only what was shared: the rest of gus's space is not.
        assert (await fay_mcp.call_tool("files.list", {"owner": gus})).is_error
        # Read, not write: the grant says so.
        write = await fay_mcp.call_tool("files.write", {"path": "plans/trip.txt", "content": "x", "owner": gus})
        assert write.is_error and write.structured_content["error"]["code"] == "PERMISSION_DENIED"


async def test_an_unknown_token_is_a_401(world):
    async with httpx2.AsyncClient() as http:
        resp = await http.post(world["mcp"], json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                               headers={"Authorization": "Bearer aios_not_a_real_token",
                                        "Accept": "application/json, text/event-stream"})
    assert resp.status_code == 401 and 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


async def test_the_openai_agents_sdk_uses_the_kernels_tools(kernel):
    from agents.mcp import MCPServerStreamableHttp

    params = {"url": kernel["mcp"], "headers": {"Authorization": "Bearer agents-sdk"}}
    async with MCPServerStreamableHttp(params=params, client_session_timeout_seconds=30) as server:
        assert BUILTIN <= {t.name for t in await server.list_tools()}
        assert text(await server.call_tool("calculator", {"expression": "6*7"})) == "42"
        refused = await server.call_tool("files.read", {"path": "x", "owner": "someone-else"})
        assert refused.is_error and refused.structured_content["error"]["code"] == "PERMISSION_DENIED"
    async with AsyncClient(kernel["grpc"], token="observer", timeout=30, retries=0) as observer:
        assert {a.agent: a for a in await observer.list_agents()}["agents-sdk"].completed >= 1
