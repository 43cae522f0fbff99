"""The first syscall end to end: SDK -> kernel -> llm_core -> llama.cpp."""

from __future__ import annotations

import grpc
import pytest

from aios.common.v1 import llm_pb2 as lc
from aios.kernel.v1 import kernel_service_pb2 as kpb
from aios.kernel.v1 import kernel_service_pb2_grpc as kpb_grpc
from aios.kernel.v1 import syscall_pb2 as ks
from aios.sdk import AsyncClient, ChatResult, InvalidArgumentError, NotFoundError


@pytest.fixture
async def client(kernel_addr):
    async with AsyncClient(kernel_addr, token="tester", timeout=120) as c:
        yield c


async def test_chat_through_the_kernel(client):
    reply = await client.llm.chat("What is the capital of France? One sentence.",
                                  max_tokens=32, temperature=0)
    assert "paris" in reply.text.lower()
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0
    rec = reply.record
    assert rec.agent == "tester"
    assert rec.state == ks.SYSCALL_STATE_SUCCEEDED
    assert rec.create_time.ToNanoseconds() <= rec.queue_time.ToNanoseconds() \
        <= rec.start_time.ToNanoseconds() <= rec.finish_time.ToNanoseconds()
    assert rec.turnaround.ToNanoseconds() >= rec.waiting.ToNanoseconds()
    fetched = await client.get_syscall(rec.id)
    assert fetched.llm.text == reply.text


async def test_stream_yields_lifecycle_and_deltas(client):
    events = []
    async for ev in client.stream(client.llm.syscall("Write two sentences about the sea.",
                                                     max_tokens=40, temperature=0)):
        events.append(ev.WhichOneof("event"))
        if ev.HasField("finished"):
            final = ev.finished
    assert events[0] == "queued" and events[1] == "started" and events[-1] == "finished"
    deltas = [e for e in events if e == "delta"]
    assert len(deltas) > 1
    assert final.llm.text and final.usage.completion_tokens >= len(deltas)


async def test_chat_stream_helper_joins_to_final_text(client):
    parts, result = [], None
    async for item in client.chat_stream("Say hello.", max_tokens=20, temperature=0):
        if isinstance(item, ChatResult):
            result = item
        else:
            parts.append(item)
    assert result is not None and "".join(parts) == result.text


async def test_empty_syscall_is_invalid_and_kernel_keeps_serving(client):
    with pytest.raises(InvalidArgumentError) as exc:
        await client.submit(ks.Syscall())
    assert exc.value.reason == "EMPTY_SYSCALL" and "llm" in exc.value.message
    with pytest.raises(InvalidArgumentError):
        await client.submit(ks.Syscall(llm=lc.LlmCall(model="smollm2")))
    with pytest.raises(NotFoundError) as exc:
        await client.llm.chat("hi", model="no-such-model")
    assert "no-such-model" in exc.value.message and exc.value.field == "syscall.llm.model"
    reply = await client.llm.chat("Say yes.", max_tokens=8, temperature=0)
    assert reply.text


async def test_errors_carry_typed_details_for_raw_grpc_callers(kernel_addr):
    from google.rpc import error_details_pb2, status_pb2

    async with grpc.aio.insecure_channel(kernel_addr) as ch:
        stub = kpb_grpc.KernelServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.Submit(kpb.SubmitRequest(syscall=ks.Syscall()))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    raw = dict(exc.value.trailing_metadata())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(raw)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.reason == "EMPTY_SYSCALL"


async def test_process_table_lists_the_agent(client):
    # Two calls of its own, so the page of one below has a next page whether
    # or not the other tests of this file ran first (same agent, "tester").
    await client.llm.chat("One word: hi", max_tokens=4, temperature=0)
    await client.llm.chat("One word: bye", max_tokens=4, temperature=0)
    agents = {a.agent: a for a in await client.list_agents()}
    assert agents["tester"].completed >= 1 and agents["tester"].completion_tokens > 0
    page = await client.list_syscalls(agent="tester", page_size=1)
    assert len(page.syscalls) == 1 and page.next_page_token
