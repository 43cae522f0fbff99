"""One trace per syscall: the agent's span (SDK) or the caller's
`traceparent` (HTTP door), the kernel's intake, queue and dispatch, the
service that runs the call and its backend share one trace id, their parent
links form one tree, the SyscallRecord names the trace, and every service's
log lines for the call carry its trace id and request id.

The stack runs in this process (one tracer provider, with an in-memory
exporter, sees every service's spans), but the trace context travels as it
does between pods: in gRPC metadata between real servers on loopback ports.
A kernel in a subprocess with no tracer provider shows that tracing off
breaks nothing and still hands its trace id on.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import sys
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, ALWAYS_ON, Sampler

from aios.kernel.v1 import syscall_pb2 as ks
from aios.sdk import AsyncClient, ChatResult
from services.runtime import interceptors, tracing
from tests.conftest import kernel_config
from tests.support import polling
from tests.test_memory import start_memory  # noqa: F401 - the memory service fixture, shared

REPO = Path(__file__).resolve().parents[1]
KERNEL_SUBMIT = "aios.kernel.v1.KernelService/Submit"
LLM_GENERATE = "aios.llm.v1.LlmService/Generate"
# Spans and log lines arrive within moments of the call that makes them.
until = functools.partial(polling.until, timeout=10.0, interval=0.02)


class _Switch(Sampler):
    """Samples as OTel's default (parent-based, always on) while on; after
    this module, off, so later tests record nothing."""

    def __init__(self) -> None:
        self.on = True
        self._default = ParentBased(ALWAYS_ON)

    def should_sample(self, *args, **kwargs):
        return (self._default if self.on else ALWAYS_OFF).should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return "tests/test_tracing.py"


@pytest.fixture(scope="module")
def spans():
    """Every span the services of this process end, in memory."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    switch = None
    if not isinstance(provider, TracerProvider):
        switch = _Switch()
        provider = TracerProvider(sampler=switch)
        trace.set_tracer_provider(provider)
        assert trace.get_tracer_provider() is provider, "another tracer provider is installed"
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    if switch is not None:
        switch.on = False
    exporter.shutdown()


@pytest.fixture
def rpc_lines(monkeypatch):
    """The log lines of every service's RPC interceptor (the line each call
    ends with), as the configured structlog chain makes them, at any level."""
    lines: list[dict] = []

    def keep(_, __, event_dict):
        lines.append(dict(event_dict))
        raise structlog.DropEvent

    chain = [p for p in structlog.get_config()["processors"]
             if not isinstance(p, (structlog.processors.JSONRenderer, structlog.dev.ConsoleRenderer))]
    logger = structlog.wrap_logger(structlog.ReturnLogger(), processors=[*chain, keep],
                                   wrapper_class=structlog.make_filtering_bound_logger(0),
                                   cache_logger_on_first_use=False)
    monkeypatch.setattr(interceptors, "log", logger)
    return lines


@pytest_asyncio.fixture(scope="module")
async def stack(spans, start_service, start_memory, llm_core_addr):  # noqa: F811
    """A kernel over llm_core and memory, with its HTTP door: (gRPC address, door URL)."""
    from services.scheduler.app import build

    _, mem = await start_memory()
    server = await start_service(build, kernel_config(llm_core_addr, AIOS_MEMORY_ADDR=mem.address,
                                                      http_port=0))
    return f"127.0.0.1:{server.port}", f"http://127.0.0.1:{server.service.http_port}"


def _hex(span_id: int) -> str:
    return format(span_id, "016x")


def of_trace(exporter: InMemorySpanExporter, trace_id: str) -> list:
    return [s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]


def one_tree(spans: list, root_parent: int | None = None):
    """The spans' root, after checking that every other span's parent is
    one of them (one tree); the root's parent is `root_parent` (an outside
    caller's span id) or none."""
    ids = {s.context.span_id for s in spans}
    roots = [s for s in spans if s.parent is None or s.parent.span_id not in ids]
    assert len(roots) == 1, f"not one tree: roots {[r.name for r in roots]}"
    root = roots[0]
    assert (root.parent.span_id if root.parent else None) == root_parent
    return root


def children(spans: list, parent, name: str | None = None) -> list:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id
            and (name is None or s.name == name)]


def only(items: list, what: str):
    assert len(items) == 1, f"{what}: {len(items)} ({[getattr(i, 'name', i) for i in items]})"
    return items[0]


def kernel_intake(spans: list, server) -> dict[str, object]:
    """The kernel's spans under one syscall's server span, by name, with the
    intake steps and the queue wait checked."""
    below = {s.name: s for s in children(spans, server)}
    for step in ("kernel.authenticate", "kernel.authorize", "kernel.admit", "kernel.queue", "kernel.dispatch"):
        assert step in below, f"no {step} under {server.name}: {sorted(below)}"
    queue = below["kernel.queue"]
    assert queue.start_time <= queue.end_time <= below["kernel.dispatch"].start_time + 1_000_000
    assert below["kernel.dispatch"].kind == trace.SpanKind.CLIENT
    return below


async def test_an_llm_syscall_from_the_sdk_is_one_trace_across_services(stack, spans, rpc_lines):
    kernel, _ = stack
    records: list[ks.SyscallRecord] = []
    tracer = trace.get_tracer("tests")
    async with AsyncClient(kernel, token="traced-agent", timeout=120,
                           on_syscall=lambda syscall, record, error: records.append(record)) as client:
        with tracer.start_as_current_span("agent step") as step:
            reply = await client.llm.chat("Say hello in one word.", max_tokens=8, temperature=0)
            streamed = [item async for item in client.chat_stream("Name a colour.", max_tokens=8, temperature=0)]
    trace_id = tracing.trace_id(step)
    assert isinstance(streamed[-1], ChatResult) and reply.text
    assert [r.trace_id for r in records] == [trace_id, trace_id]

    mine = await until(lambda: (s := of_trace(spans, trace_id)) and
                       sum(x.name == "syscall llm" for x in s) == 2 and s, "the SDK's spans")
    root = one_tree(mine)
    assert root.name == "agent step"
    syscalls = children(mine, root, "syscall llm")
    assert {s.attributes["rpc.method"] for s in syscalls} == {"Submit", "SubmitStream"}
    assert {s.attributes["aios.syscall.id"] for s in syscalls} == {r.id for r in records}
    for sdk_span in syscalls:
        method = sdk_span.attributes["rpc.method"]
        server = only(children(mine, sdk_span, f"aios.kernel.v1.KernelService/{method}"), "kernel server span")
        assert server.kind == trace.SpanKind.SERVER and server.attributes["aios.agent"] == "traced-agent"
        below = kernel_intake(mine, server)
        llm_method = "GenerateStream" if method == "SubmitStream" else "Generate"
        llm = only(children(mine, below["kernel.dispatch"], f"aios.llm.v1.LlmService/{llm_method}"),
                   "llm_core server span")
        assert llm.attributes["rpc.grpc.status_code"] == 0
        endpoint = only(children(mine, llm), "endpoint span")
        assert endpoint.name == "chat smollm2" and endpoint.attributes["aios.endpoint"] == "local"
        assert endpoint.attributes["gen_ai.usage.output_tokens"] > 0
        if method == "SubmitStream":
            assert endpoint.attributes["aios.ttft_ms"] > 0
            assert [e.name for e in endpoint.events] == ["first token"]
        else:
            assert "aios.ttft_ms" not in endpoint.attributes

    # The log lines of the kernel's call and llm_core's, for the first syscall.
    submit = await until(lambda: [x for x in rpc_lines if x.get("method") == "/" + KERNEL_SUBMIT
                                  and x.get("trace_id") == trace_id], "the kernel's log line")
    generate = await until(lambda: [x for x in rpc_lines if x.get("method") == "/" + LLM_GENERATE
                                    and x.get("trace_id") == trace_id], "llm_core's log line")
    assert submit[0]["request_id"] and submit[0]["request_id"] == generate[0]["request_id"]
    assert submit[0]["agent"] == generate[0]["agent"] == "traced-agent"
    assert submit[0]["span_id"] != generate[0]["span_id"]


async def test_a_streamed_call_at_the_http_door_joins_the_callers_trace(stack, spans):
    kernel, door = stack
    trace_id, parent = f"{random.getrandbits(128):032x}", random.getrandbits(64)
    headers = {"Authorization": "Bearer door-agent", "traceparent": f"00-{trace_id}-{_hex(parent)}-01"}
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Write a sentence about rain."}],
            "max_tokens": 16, "temperature": 0, "stream": True}
    chunks = []
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{door}/v1/chat/completions", json=body, headers=headers) as resp:
            assert resp.status == 200
            async for line in resp.content:
                if line.startswith(b"data: {"):
                    chunks.append(json.loads(line[len(b"data: "):]))
    syscall_id = chunks[0]["id"].removeprefix("chatcmpl-")
    async with AsyncClient(kernel, token="door-agent") as client:
        assert (await client.get_syscall(syscall_id)).trace_id == trace_id

    mine = await until(lambda: (s := of_trace(spans, trace_id)) and
                       any(x.name == "POST /v1/chat/completions" for x in s) and s, "the door's span")
    root = one_tree(mine, root_parent=parent)
    assert root.name == "POST /v1/chat/completions" and root.kind == trace.SpanKind.SERVER
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["aios.syscall.id"] == syscall_id
    below = kernel_intake(mine, root)
    llm = only(children(mine, below["kernel.dispatch"], "aios.llm.v1.LlmService/GenerateStream"), "llm_core span")
    endpoint = only(children(mine, llm, "chat smollm2"), "endpoint span")
    assert endpoint.attributes["aios.ttft_ms"] > 0 and endpoint.attributes["aios.outcome"] == "ok"


async def test_a_memory_syscall_reaches_qdrant_in_one_trace(stack, spans):
    kernel, _ = stack
    records: list[ks.SyscallRecord] = []
    async with AsyncClient(kernel, token="memory-agent", timeout=60,
                           on_syscall=lambda syscall, record, error: records.append(record)) as client:
        with trace.get_tracer("tests").start_as_current_span("remember") as step:
            await client.memory.add("The tracing test was here", tags=["trace"])
    trace_id = tracing.trace_id(step)
    assert records[0].trace_id == trace_id

    mine = await until(lambda: (s := of_trace(spans, trace_id)) and
                       any(x.name == "syscall memory" for x in s) and s, "the SDK's span")
    root = one_tree(mine)
    sdk_span = only(children(mine, root, "syscall memory"), "SDK span")
    server = only(children(mine, sdk_span, KERNEL_SUBMIT), "kernel server span")
    below = kernel_intake(mine, server)
    memory = only(children(mine, below["kernel.dispatch"], "aios.memory.v1.MemoryService/AddMemory"), "memory span")
    qdrant = [s for s in children(mine, memory) if s.name.startswith("qdrant ")]
    assert qdrant and all(s.attributes["db.system.name"] == "qdrant" for s in qdrant)
    assert "qdrant batch_update_points" in {s.name for s in qdrant}
    # The content's embedding: memory calls llm_core within the same trace.
    assert children(mine, memory, "aios.llm.v1.LlmService/Embed")


_UNTRACED = """
import asyncio, json, sys
from opentelemetry import trace
from aios.sdk import AsyncClient
from services.runtime.server import start_server
from services.scheduler.app import build
from tests.conftest import kernel_config

async def main():
    server = await start_server(await build(kernel_config(sys.argv[1])), "127.0.0.1", 0)
    try:
        async with AsyncClient(f"127.0.0.1:{server.port}", token="untraced-agent", timeout=60) as client:
            reply = await client.llm.chat("Say yes.", max_tokens=4, temperature=0)
    finally:
        await server.stop(grace=1)
    print(json.dumps({"trace_id": reply.record.trace_id, "text": reply.text,
                      "provider": type(trace.get_tracer_provider()).__name__}))

asyncio.run(main())
"""


async def test_without_a_tracer_provider_calls_still_share_a_trace_id(stack, spans, rpc_lines, llm_core_addr):
    """A kernel with no tracer provider (its own process) serves as ever; its
    calls get a trace id all the same, which it hands on: llm_core (here,
    with a provider) logs it, and records no span for a parent that is not sampled."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _UNTRACED, llm_core_addr, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["provider"] == "ProxyTracerProvider" and result["text"]
    trace_id = result["trace_id"]
    assert len(trace_id) == 32 and int(trace_id, 16) != 0
    lines = await until(lambda: [x for x in rpc_lines if x.get("method") == "/" + LLM_GENERATE
                                 and x.get("trace_id") == trace_id], "llm_core's log line")
    assert lines[0]["agent"] == "untraced-agent"
    assert of_trace(spans, trace_id) == []


def test_export_is_off_unless_the_otel_variables_turn_it_on(spans, monkeypatch):
    assert tracing.exporter_of({}) == ""
    assert tracing.exporter_of({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}) == "otlp"
    assert tracing.exporter_of({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}) == "otlp"
    assert tracing.exporter_of({"OTEL_TRACES_EXPORTER": "otlp"}) == "otlp"
    assert tracing.exporter_of({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}) == ""
    assert tracing.exporter_of({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}) == ""
    # A provider in place (this module's) is kept, and setup runs once.
    monkeypatch.setattr(tracing, "_installed", None)
    provider = trace.get_tracer_provider()
    assert tracing.setup("kernel", {"OTEL_TRACES_EXPORTER": "otlp"}) == "otlp"
    assert tracing.setup("kernel", {}) == "otlp"
    assert trace.get_tracer_provider() is provider


_EXPORTING = """
import asyncio, json, sys
from aios.sdk import AsyncClient
from services.runtime import tracing
from services.runtime.server import start_server
from services.scheduler.app import build
from tests.conftest import kernel_config

assert tracing.setup("scheduler") == "otlp"

async def main():
    server = await start_server(await build(kernel_config(sys.argv[1])), "127.0.0.1", 0)
    try:
        async with AsyncClient(f"127.0.0.1:{server.port}", token="exported-agent", timeout=60) as client:
            reply = await client.llm.chat("Say yes.", max_tokens=4, temperature=0)
    finally:
        await server.stop(grace=1)
    print(json.dumps({"trace_id": reply.record.trace_id}))

asyncio.run(main())  # the provider flushes its batch at exit
"""


async def test_a_kernel_with_otlp_on_exports_its_spans_and_its_calls_join_them(stack, spans, llm_core_addr):
    """The kernel in its own process, with OTEL_EXPORTER_OTLP_ENDPOINT set,
    sends its spans over OTLP/gRPC (to a collector stand-in here) as
    aios-scheduler; llm_core (this process) records its own under them."""
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tsp
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as tsg

    received: list = []

    class Collector(tsg.TraceServiceServicer):
        async def Export(self, request, context):
            received.append(request)
            return tsp.ExportTraceServiceResponse()

    collector = grpc.aio.server()
    tsg.add_TraceServiceServicer_to_server(Collector(), collector)
    port = collector.add_insecure_port("127.0.0.1:0")
    await collector.start()
    try:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
               "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _EXPORTING, llm_core_addr, cwd=REPO, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        await collector.stop(None)
    assert proc.returncode == 0, err.decode()[-2000:]
    trace_id = json.loads(out.decode().strip().splitlines()[-1])["trace_id"]

    exported = {}
    for request in received:
        for resource_spans in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    if span.trace_id.hex() == trace_id:
                        exported[span.name] = (service, span)
    assert {service for service, _ in exported.values()} == {"aios-scheduler"}
    assert {KERNEL_SUBMIT, "kernel.authenticate", "kernel.queue", "kernel.dispatch"} <= set(exported)
    dispatch = exported["kernel.dispatch"][1]
    generate = await until(lambda: [s for s in of_trace(spans, trace_id) if s.name == LLM_GENERATE],
                           "llm_core's span of the exported trace")
    assert generate[0].parent.span_id == int.from_bytes(dispatch.span_id, "big")
