"""The Python SDK against a real kernel over the real llama.cpp: errors as
exceptions with code, message, reason and field; retries that never run a
call twice; deadlines; cancellation; configuration from the environment.

Async clients only here: the servers run on the test's event loop. The sync
client is exercised from a worker thread (asyncio.to_thread), which leaves
the loop free to serve it.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import pytest

from aios.kernel.v1 import syscall_pb2 as ks
from aios.sdk import (
    AsyncClient, CancelledError, ChatResult, Client, DeadlineExceededError, InvalidArgumentError,
    NotFoundError, UnauthenticatedError, UnavailableError, tool_schemas,
)

LONG = "Write a very long story about a lighthouse keeper and the sea, with many details."


def new_agent(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def poll(fn, until, timeout: float = 30.0, interval: float = 0.02):
    """Call fn() until until(result) holds; NOT_FOUND counts as not yet."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = await fn()
            if until(last):
                return last
        except NotFoundError:
            pass
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last: {last}")


# --- a fault injector: the one fake here -------------------------------------

class DropFirstReply:
    """A gRPC proxy in front of the real kernel that forwards every call but
    answers the first Submit with UNAVAILABLE after the kernel ran it: the
    reply lost on the way back, as when a connection drops. It is the only
    way to produce that fault on demand."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.aio.insecure_channel(target)
        self.submits = 0
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((self,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def service(self, details):
        method = details.method

        async def forward(request: bytes, context):
            metadata = [(k, v) for k, v in context.invocation_metadata() if k == "authorization"]
            reply = await self.channel.unary_unary(method)(request, metadata=metadata,
                                                          timeout=context.time_remaining())
            if method.endswith("/Submit"):
                self.submits += 1
                if self.submits == 1:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "fault injected: the reply was dropped")
            return reply

        return grpc.unary_unary_rpc_method_handler(forward)

    async def __aenter__(self) -> "DropFirstReply":
        await self.server.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.server.stop(grace=None)
        await self.channel.close()


# --- errors ---------------------------------------------------------------------

async def test_errors_are_exceptions_with_code_message_reason_and_field(kernel_addr):
    async with AsyncClient(kernel_addr, token=new_agent("sdk-errors"), timeout=60) as aios:
        with pytest.raises(InvalidArgumentError) as empty:
            await aios.submit(ks.Syscall(request_id=uuid.uuid4().hex))
        err = empty.value
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT
        assert err.reason == "EMPTY_SYSCALL" and err.field == "syscall.call"
        assert "no call" in err.message and str(err).startswith("INVALID_ARGUMENT: ")

        with pytest.raises(NotFoundError) as model:
            await aios.llm.chat("hello", model="no-such-model", max_tokens=4)
        assert model.value.code == grpc.StatusCode.NOT_FOUND and model.value.reason == "UNKNOWN_MODEL"
        assert "no-such-model" in model.value.message

        with pytest.raises(NotFoundError) as syscall:
            await aios.get_syscall("no-such-syscall")
        assert syscall.value.reason == "UNKNOWN_SYSCALL"

        # A tool's arguments are checked against its schema before it runs.
        with pytest.raises(InvalidArgumentError) as args:
            await aios.tools.call("calculator", {"expression": 12})
        assert args.value.reason == "TOOL_ARGUMENTS_INVALID" and args.value.field == "syscall.tool.arguments"

    async with AsyncClient(kernel_addr, token="not a valid name!", timeout=10) as bad:
        with pytest.raises(UnauthenticatedError) as unauth:
            await bad.list_agents()
        assert unauth.value.code == grpc.StatusCode.UNAUTHENTICATED


async def test_sync_client_raises_the_same_exceptions(kernel_addr):
    def call():
        with Client(kernel_addr, token=new_agent("sdk-sync"), timeout=30) as aios:
            assert aios.tools.call("calculator", {"expression": "6*7"}) == "42"
            aios.submit(ks.Syscall())

    with pytest.raises(InvalidArgumentError) as err:
        await asyncio.to_thread(call)
    assert err.value.reason == "EMPTY_SYSCALL"


async def test_unreachable_kernel_is_unavailable_after_bounded_retries():
    import socket

    # Bound but not listening for the whole test: refused, and no other
    # process can start listening on it meanwhile.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
        async with AsyncClient(address, token="nobody", retries=2, timeout=10) as aios:
            started = time.monotonic()
            with pytest.raises(UnavailableError):
                await aios.tools.call("calculator", {"expression": "1+1"})
            # Gave up within the deadline (retries take ~0.3 s, 30x headroom).
            assert time.monotonic() - started < 10


# --- retries and idempotency --------------------------------------------------------

async def test_two_submits_with_one_request_id_make_one_syscall(kernel_addr):
    async with AsyncClient(kernel_addr, token=new_agent("sdk-idem"), timeout=60) as aios:
        syscall = aios.llm.syscall("Say one word.", max_tokens=8, temperature=0,
                                   request_id=f"req-{uuid.uuid4().hex}")
        first = await aios.submit(syscall)
        second = await aios.submit(syscall)
        assert second.id == first.id and second.llm.text == first.llm.text
        listing = await aios.list_syscalls(session_id=aios.session_id)
        assert [r.id for r in listing.syscalls] == [first.id]
        assert (await aios.get_syscall(syscall.request_id)).id == first.id


@pytest.mark.parametrize("flavour", ["async", "sync"])
async def test_a_retry_after_a_lost_reply_does_not_run_the_call_again(kernel_addr, flavour):
    agent = new_agent(f"sdk-retry-{flavour}")
    async with DropFirstReply(kernel_addr) as proxy:
        address = f"127.0.0.1:{proxy.port}"
        if flavour == "async":
            async with AsyncClient(address, token=agent, timeout=60) as aios:
                reply = await aios.llm.chat("Say one word.", max_tokens=8, temperature=0)
        else:
            def call():
                with Client(address, token=agent, timeout=60) as aios:
                    return aios.llm.chat("Say one word.", max_tokens=8, temperature=0)
            reply = await asyncio.to_thread(call)
    assert proxy.submits == 2  # the first reply was dropped; the SDK retried
    async with AsyncClient(kernel_addr, token=agent, timeout=30) as direct:
        calls = await direct.list_syscalls(agent=agent)
        assert [r.id for r in calls.syscalls] == [reply.record.id]
        stats = {a.agent: a for a in await direct.list_agents()}[agent]
        assert stats.completed == 1 and stats.completion_tokens == reply.completion_tokens


# --- deadlines and cancellation ------------------------------------------------------

async def test_a_call_past_its_deadline_fails_and_the_kernel_stops_it(kernel_addr):
    async with AsyncClient(kernel_addr, token=new_agent("sdk-deadline"), timeout=60) as aios:
        rid = uuid.uuid4().hex
        with pytest.raises(DeadlineExceededError) as err:
            await aios.llm.chat(LONG, max_tokens=400, temperature=0, request_id=rid, timeout=0.3)
        assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        record = await poll(lambda: aios.get_syscall(rid), lambda r: r.state in (
            ks.SYSCALL_STATE_FAILED, ks.SYSCALL_STATE_CANCELLED))
        assert record.usage.completion_tokens < 400

        # The same through a view with a shorter default timeout; the client
        # it came from stays usable.
        view = aios.with_options(timeout=0.3)
        with pytest.raises(DeadlineExceededError):
            await view.llm.chat(LONG, max_tokens=400, temperature=0)
        await view.close()
        assert await aios.tools.call("calculator", {"expression": "2+2"}) == "4"


async def test_cancelling_the_awaiting_task_cancels_the_syscall(kernel_addr):
    async with AsyncClient(kernel_addr, token=new_agent("sdk-cancel"), timeout=60) as aios:
        rid = uuid.uuid4().hex
        task = asyncio.ensure_future(aios.llm.chat(LONG, max_tokens=400, temperature=0, request_id=rid))
        await poll(lambda: aios.get_syscall(rid), lambda r: r.state in (
            ks.SYSCALL_STATE_QUEUED, ks.SYSCALL_STATE_RUNNING))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        record = await poll(lambda: aios.get_syscall(rid), lambda r: r.state == ks.SYSCALL_STATE_CANCELLED)
        assert record.error.message


async def test_cancel_by_request_id_ends_the_waiting_call_with_cancelled(kernel_addr):
    agent = new_agent("sdk-cancel-id")
    async with AsyncClient(kernel_addr, token=agent, timeout=60) as aios, \
            AsyncClient(kernel_addr, token=agent, timeout=60) as other:
        rid = uuid.uuid4().hex
        task = asyncio.ensure_future(aios.llm.chat(LONG, max_tokens=400, temperature=0, request_id=rid))
        await poll(lambda: other.get_syscall(rid), lambda r: r.state in (
            ks.SYSCALL_STATE_QUEUED, ks.SYSCALL_STATE_RUNNING))
        await other.cancel(rid)
        with pytest.raises(CancelledError) as err:
            await task
        assert err.value.code == grpc.StatusCode.CANCELLED


async def test_leaving_a_stream_early_cancels_the_syscall(kernel_addr):
    seen = []
    async with AsyncClient(kernel_addr, token=new_agent("sdk-stream"), timeout=60,
                           on_syscall=lambda s, r, e: seen.append((r, e))) as aios:
        rid = uuid.uuid4().hex
        stream = aios.chat_stream(LONG, max_tokens=400, temperature=0, request_id=rid)
        async for piece in stream:
            assert isinstance(piece, str)
            break
        await stream.aclose()
        await poll(lambda: aios.get_syscall(rid), lambda r: r.state == ks.SYSCALL_STATE_CANCELLED)

        pieces = [p async for p in aios.chat_stream("Say hello.", max_tokens=12, temperature=0)]
        result = pieces[-1]
        assert isinstance(result, ChatResult) and "".join(pieces[:-1]) == result.text
        assert seen and seen[-1][0].id == result.record.id  # the hook saw the finished record


# --- configuration and helpers ----------------------------------------------------------

async def test_from_env_reads_address_token_and_timeout(kernel_addr, monkeypatch):
    agent = new_agent("sdk-env")
    monkeypatch.setenv("AIOS_KERNEL", kernel_addr)
    monkeypatch.setenv("AIOS_TOKEN", agent)
    monkeypatch.setenv("AIOS_TIMEOUT", "30")
    async with AsyncClient.from_env() as aios:
        assert (aios.address, aios.token, aios.timeout) == (kernel_addr, agent, 30.0)
        rid = uuid.uuid4().hex
        assert await aios.tools.call("calculator", {"expression": "(17*23)+4"}, request_id=rid) == "395"
        assert (await aios.get_syscall(rid)).agent == agent
    monkeypatch.setenv("AIOS_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="AIOS_TIMEOUT"):
        Client.from_env()


async def test_tool_schemas_are_ready_for_llm_chat(kernel_addr):
    async with AsyncClient(kernel_addr, token=new_agent("sdk-tools"), timeout=30) as aios:
        specs = await aios.list_tools()
        assert {"calculator", "files.read", "memory.search"} <= {s.name for s in specs}
        [calc] = await aios.tools.schemas(["calculator"])
        assert calc["name"] == "calculator" and calc["parameters"]["required"] == ["expression"]
        # Integral numbers come back as ints (JSON schema wants minLength: 1, not 1.0).
        assert calc["parameters"]["properties"]["expression"]["minLength"] == 1
        with pytest.raises(NotFoundError) as err:
            tool_schemas(specs, ["calculator", "no-such-tool"])
        assert err.value.reason == "UNKNOWN_TOOL" and "calculator" in err.value.message
