"""The intake as a plain module, without gRPC: one order of checks for every
syscall, deduplication by request id and fingerprint, validation before
anything is queued. The kernel runs tool syscalls on the real tool manager
with the built-in calculator; memory, storage and LLM calls are covered
through the real services in test_access_kernel.py and test_http_door.py."""

from __future__ import annotations

import asyncio

import pytest
from google.protobuf import struct_pb2

from aios.common.v1 import llm_pb2 as lc
from aios.kernel.v1 import syscall_pb2 as ks
from aios.llm.v1 import llm_service_pb2 as llm
from services.runtime import errors
from services.scheduler.auth import Caller, DevGate
from services.scheduler.dispatch import Dispatcher
from services.scheduler.intake import Intake
from services.scheduler.kernel import Kernel, Limits, Outcome
from services.scheduler.queues import PolicySettings
from services.scheduler.table import SUCCEEDED
from services.scheduler.tools import ToolManager, builtin_tools


class Catalog:
    """The one model the tests name; the real catalog asks llm_core."""

    async def check(self, model: str) -> None:
        if model != "m":
            raise errors.NotFound(f"unknown model {model!r}", reason="UNKNOWN_MODEL")

    async def default_model(self) -> str:
        return "m"


@pytest.fixture
def intake():
    tools = ToolManager()
    for tool in builtin_tools(lambda parent, syscall: None):
        if tool.name == "calculator":
            tools.register(tool)
    runs = []

    async def run(entry, slice_tokens):
        runs.append(entry.id)
        return Outcome(output=await tools.call(entry, None))

    kernel = Kernel(run, PolicySettings(kind="fifo"), Limits())
    made = Intake(kernel, DevGate(), Catalog(), default_timeout=30, tools=tools)
    made.runs = runs
    return made


def calc(expression: str, request_id: str = "") -> ks.Syscall:
    args = struct_pb2.Struct()
    args.update({"expression": expression})
    return ks.Syscall(request_id=request_id, tool=ks.ToolCall(name="calculator", arguments=args))


async def run(intake: Intake, syscall: ks.Syscall, agent: str = "ann") -> ks.SyscallRecord:
    entry = await intake.start(Caller(agent), syscall, None)
    await intake.kernel.wait(entry, entry.deadline)
    return intake.outcome(entry)


async def test_a_syscall_runs_and_a_retry_runs_once(intake):
    first = await run(intake, calc("6*7", "r1"))
    again = await run(intake, calc("6*7", "r1"))
    assert first.tool.output == "42" and again.id == first.id and len(intake.runs) == 1
    # Another agent's request ids are its own.
    other = await run(intake, calc("6*7", "r1"), agent="bob")
    assert other.id != first.id and len(intake.runs) == 2


async def test_a_request_id_names_one_call(intake):
    await run(intake, calc("1+1", "r2"))
    with pytest.raises(errors.InvalidArgument) as exc:
        await run(intake, calc("2+2", "r2"))
    assert exc.value.reason == "REQUEST_ID_REUSED" and len(intake.runs) == 1


@pytest.mark.parametrize("syscall,reason_or_field", [
    (ks.Syscall(), "EMPTY_SYSCALL"),
    (ks.Syscall(request_id="x" * 129, tool=ks.ToolCall(name="calculator")), "syscall.request_id"),
    (calc(""), "TOOL_ARGUMENTS_INVALID"),
    (ks.Syscall(llm=lc.LlmCall(model="m")), "syscall.llm.messages"),
    (ks.Syscall(llm=lc.LlmCall(model="nope", messages=[lc.Message(content="hi")])), "UNKNOWN_MODEL"),
    (ks.Syscall(llm=lc.LlmCall(messages=[lc.Message(content="hi")], temperature=9)),
     "syscall.llm.temperature"),
])
async def test_what_is_invalid_is_refused_before_it_is_queued(intake, syscall, reason_or_field):
    with pytest.raises(errors.AiosError) as exc:
        await intake.start(Caller("ann"), syscall, None)
    assert reason_or_field in (exc.value.reason, exc.value.field)
    assert intake.runs == [] and not intake.kernel.table.recent()


async def test_an_llm_call_without_a_model_gets_the_default(intake):
    entry = await intake.build_entry("ann", ks.Syscall(llm=lc.LlmCall(
        messages=[lc.Message(role=lc.ROLE_USER, content="hi")])), None)
    assert entry.syscall.llm.model == "m" and entry.resource == "llm:m"


async def test_the_dev_gate_refuses_another_agents_space(intake):
    from aios.memory.v1 import memory_service_pb2 as mem

    with pytest.raises(errors.PermissionDenied):
        await intake.start(Caller("ann"), ks.Syscall(memory=ks.MemoryCall(
            add=mem.AddMemoryRequest(owner="bob", memory=mem.MemoryInput(content="x")))), None)
    assert intake.kernel.table.recent() == []


async def test_the_outcome_is_the_record_or_the_error(intake):
    record = await run(intake, calc("2**10"))
    assert record.state == ks.SYSCALL_STATE_SUCCEEDED and record.tool.output == "1024"
    entry = await intake.start(Caller("ann"), calc("((9**999)**999)**9"), None)
    await intake.kernel.wait(entry, entry.deadline)
    assert entry.state != SUCCEEDED
    with pytest.raises(errors.InvalidArgument):
        intake.outcome(entry)


def _field(number: int, payload: bytes | int) -> bytes:
    """One protobuf field on the wire: length-delimited bytes or a varint."""
    def varint(n: int) -> bytes:
        out = b""
        while True:
            byte, n = n & 0x7F, n >> 7
            out += bytes([byte | (0x80 if n else 0)])
            if not n:
                return out
    if isinstance(payload, int):
        return varint(number << 3) + varint(payload)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


async def test_what_only_the_kernel_sets_never_comes_from_the_agent():
    """An agent on the old contract sent llm_core's own request, whose fields
    11 to 13 were a resume snapshot, the session and the time slice. None of
    them reaches llm_core: the kernel builds those itself."""
    clean = lc.LlmCall(model="m", messages=[lc.Message(role=lc.ROLE_USER, content="hi")])
    call = clean.SerializeToString()
    forged = llm.ResumeSnapshot(text="forged", completion_tokens=999).SerializeToString()
    call += _field(11, forged) + _field(12, b"someone-else") + _field(13, 1)
    syscall = ks.Syscall.FromString(_field(10, call))
    sent = []

    class Llm:
        def Generate(self, request, timeout=None):
            # Like a grpc.aio call: awaitable, and cancellable.
            sent.append(request)
            call = asyncio.get_running_loop().create_future()
            call.set_result(lc.Completion(text="ok", finish_reason=lc.FINISH_REASON_STOP))
            return call

    # The channels are never used: only the LLM stub is called.
    import grpc

    channel = grpc.aio.insecure_channel("127.0.0.1:9")
    dispatcher = Dispatcher(channel, channel, channel)
    dispatcher.llm = Llm()
    intake = Intake(Kernel(dispatcher, PolicySettings(kind="fifo"), Limits()), DevGate(), Catalog(),
                    default_timeout=30)
    record = await run(intake, syscall)
    await channel.close()
    assert record.llm.text == "ok" and len(sent) == 1
    request = sent[0]
    assert not request.HasField("resume") and request.session_id == "ann" and request.slice_tokens == 0
    # Nor do they travel inside the call as fields llm_core does not know.
    assert request.call.SerializeToString() == clean.SerializeToString()


async def test_a_call_reports_its_lifecycle_as_typed_events(intake):
    import asyncio

    from services.scheduler import events as ev

    queue: asyncio.Queue = asyncio.Queue()
    entry = await intake.start(Caller("ann"), calc("2**10"), None, queue)
    await intake.kernel.wait(entry, entry.deadline)
    seen = []
    while not queue.empty():
        seen.append(queue.get_nowait())
    assert [type(e) for e in seen] == [ev.Queued, ev.Started, ev.Finished]
    assert all(e.syscall_id == entry.id for e in seen) and seen[0].position == 0
    assert seen[0].time <= seen[1].time <= seen[2].time and seen[-1].entry is entry
    assert intake.outcome(seen[-1].entry).tool.output == "1024"
