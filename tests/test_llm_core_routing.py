"""llm_core over the serving simulator: resume and time slices (exactly, the
simulator is deterministic), routing, failover, affinity, retries, deadlines,
cancellation and the error mapping.

Simulators run in-process (bench/simulator SimulatorServer) on free ports with
small time scales; llm_core runs in-process on port 0 and is called over gRPC.
Conditions are polled with a deadline, never slept on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sys
import time
from pathlib import Path

import aiohttp
import grpc
import pytest
from aiohttp import web
from google.rpc import error_details_pb2, status_pb2

from aios.common.v1 import llm_pb2 as lc
from aios.llm.v1 import llm_service_pb2 as pb
from aios.llm.v1 import llm_service_pb2_grpc as pb_grpc
from bench.simulator.engine import EngineConfig
from bench.simulator.server import SimulatorServer
from services.llm_core import emulated_tools
from services.llm_core.app import build
from services.llm_core.config import Config, EndpointConfig
from services.llm_core.engine import ChatRequest, LlmEngine
from services.runtime import errors
from services.runtime.server import start_server
from tests.support.llm import generate
from tests.support.polling import until

REPO = Path(__file__).resolve().parents[1]
MODEL = "sim"
USER = [lc.Message(role=lc.ROLE_USER, content="Tell me about continuous batching.")]


def endpoint(srv_or_url, name: str, concurrency: int = 8, **extra) -> dict:
    url = srv_or_url if isinstance(srv_or_url, str) else srv_or_url.url
    return {"name": name, "model": MODEL, "base_url": url, "model_id": "sim-model",
            "max_concurrency": concurrency, **extra}


@contextlib.asynccontextmanager
async def served(endpoints: list[dict], **env):
    """llm_core over `endpoints` on a free port; yields (stub, server)."""
    config = Config.from_env({"AIOS_LLM_ENDPOINTS": json.dumps(endpoints), **env})
    server = await start_server(await build(config), "127.0.0.1", 0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield pb_grpc.LlmServiceStub(channel), server
    finally:
        await server.stop(grace=0)


@contextlib.asynccontextmanager
async def llm_core(endpoints: list[dict], **env):
    """llm_core over `endpoints` on a free port; yields a stub."""
    async with served(endpoints, **env) as (stub, _):
        yield stub


@contextlib.asynccontextmanager
async def simulators(*configs: EngineConfig):
    servers = [SimulatorServer(c) for c in configs]
    try:
        for s in servers:
            await s.start()
        yield servers
    finally:
        for s in servers:
            await s.stop()


wait_until = functools.partial(until, timeout=10.0, interval=0.005)


def request(max_tokens: int | None = 40, content: str | None = None, **kw) -> pb.GenerateRequest:
    messages = USER if content is None else [lc.Message(role=lc.ROLE_USER, content=content)]
    return generate(model=MODEL, messages=messages, max_tokens=max_tokens, **kw)


def details(exc: grpc.aio.AioRpcError) -> tuple[str, dict, float | None]:
    """(ErrorInfo reason, its metadata, RetryInfo seconds) of a status."""
    raw = dict(exc.trailing_metadata() or ()).get("grpc-status-details-bin")
    status = status_pb2.Status.FromString(raw)
    reason, meta, retry = "", {}, None
    for d in status.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            reason, meta = info.reason, dict(info.metadata)
        if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            ri = error_details_pb2.RetryInfo()
            d.Unpack(ri)
            retry = ri.retry_delay.ToMilliseconds() / 1000
    return reason, meta, retry


FAST = EngineConfig(time_scale=0.01)


# ------------------------------------------------------- resume and slices


async def test_slices_and_resume_give_the_uninterrupted_text_and_count_tokens_once():
    async with simulators(FAST) as (sim,), llm_core([endpoint(sim, "a")]) as stub:
        full = await stub.Generate(request(40))
        assert full.finish_reason == lc.FINISH_REASON_LENGTH and full.usage.completion_tokens == 40

        # Preempt every 15 tokens and resume from the snapshot until done.
        snapshot, tokens, rounds = "", 0, 0
        while True:
            req = request(40, slice_tokens=15)
            if rounds:
                req.resume.text, req.resume.completion_tokens = snapshot, tokens
            part = await stub.Generate(req)
            rounds += 1
            assert part.text.startswith(snapshot)
            snapshot, tokens = part.text, part.usage.completion_tokens
            if part.finish_reason != lc.FINISH_REASON_PREEMPTED:
                break
            assert tokens == 15 * rounds and len(snapshot.split()) == tokens
            assert part.usage.prompt_tokens == 0  # reported by the run that finishes
        assert rounds == 3
        assert snapshot == full.text
        assert tokens == 40  # the snapshot counted once, not again as new output
        assert part.finish_reason == lc.FINISH_REASON_LENGTH
        assert part.usage.prompt_tokens > 0

        # The same through GenerateStream: the deltas of a slice are the snapshot.
        deltas, final = [], None
        async for chunk in stub.GenerateStream(request(40, slice_tokens=15)):
            deltas.append(chunk.delta)
            final = chunk
        assert final.finish_reason == lc.FINISH_REASON_PREEMPTED
        assert "".join(deltas) == " ".join(full.text.split()[:15]) and final.usage.completion_tokens == 15
        resumed = request(40)
        resumed.resume.text, resumed.resume.completion_tokens = "".join(deltas), 15
        rest = [c async for c in stub.GenerateStream(resumed)]
        assert "".join(deltas) + "".join(c.delta for c in rest) == full.text
        assert rest[-1].usage.completion_tokens == 40

        # A snapshot that already used up max_tokens is done without a backend call.
        received = sim.engine.metrics()["requests_received"]
        done = request(40)
        done.resume.text, done.resume.completion_tokens = full.text, 40
        out = await stub.Generate(done)
        assert out.text == full.text and out.finish_reason == lc.FINISH_REASON_LENGTH
        assert out.usage.completion_tokens == 40
        assert sim.engine.metrics()["requests_received"] == received


async def test_constrained_output_is_not_sliced_and_cannot_resume():
    async with simulators(FAST) as (sim,), llm_core([endpoint(sim, "a")]) as stub:
        req = request(20, slice_tokens=5)
        req.call.response_format.type = lc.RESPONSE_FORMAT_TYPE_JSON_OBJECT
        out = await stub.Generate(req)  # the simulator ignores the format; what matters is no slice
        assert out.finish_reason == lc.FINISH_REASON_LENGTH and out.usage.completion_tokens == 20
        req = request(20)
        req.call.response_format.type = lc.RESPONSE_FORMAT_TYPE_JSON_OBJECT
        req.resume.text, req.resume.completion_tokens = '{"a": ', 3
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.Generate(req)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "resume" in exc.value.details()


# ---------------------------------------------------------------- routing


@contextlib.asynccontextmanager
async def simulator_process(*args: str):
    """The simulator as its own process (so it can be killed); yields (proc, base_url)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.simulator", "--port", "0", *args,
        stdout=asyncio.subprocess.PIPE, cwd=str(REPO))
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line.startswith("LISTENING "), line
        yield proc, line.split()[1]
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def running_of(url: str) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.get(url.removesuffix("/v1") + "/metrics") as r:
            return (await r.json())["running"]


async def test_one_endpoint_killed_mid_run_then_both_down():
    # `a` is slow (a 40-token call takes ~400 ms there, ~80 ms on `b`), so what
    # it runs when polled below is still running when it is killed a moment
    # later, however busy the machine: `on_a` is then a true lower bound.
    async with simulator_process("--time-scale", "1.0") as (proc, a_url), \
            simulators(EngineConfig(time_scale=0.2)) as (b,), \
            llm_core([endpoint(a_url, "a"), endpoint(b, "b")]) as stub:
        calls = [asyncio.ensure_future(stub.Generate(request(40, content=f"question {i}"), timeout=30))
                 for i in range(12)]
        streams = [stub.GenerateStream(request(40, content=f"story {i}"), timeout=30) for i in range(4)]
        stream_tasks = [asyncio.ensure_future(_collect(s)) for s in streams]
        # Kill `a` while it is generating for some of them.
        end = time.monotonic() + 10
        while (on_a := await running_of(a_url)) < 2 or b.engine.metrics()["running"] < 2:
            assert time.monotonic() < end, "both endpoints never got busy"
            await asyncio.sleep(0.005)
        proc.kill()
        b_before = b.engine.metrics()["requests_received"]
        results = await asyncio.gather(*calls)
        streamed = await asyncio.gather(*stream_tasks)
        assert all(r.usage.completion_tokens == 40 for r in results)
        assert {r.endpoint for r in results} <= {"a", "b"}
        # What `a` was running when killed was redone (or continued) on `b`.
        assert b.engine.metrics()["requests_received"] - b_before >= on_a
        # Streams cut on `a` continued on `b` from what they had produced.
        for i, (text, final) in enumerate(streamed):
            expected = await stub.Generate(request(40, content=f"story {i}"))
            assert text == expected.text and final.usage.completion_tokens == 40
        # New calls all land on the survivor.
        later = await asyncio.gather(*(stub.Generate(request(10, content=f"after {i}")) for i in range(6)))
        assert {r.endpoint for r in later} == {"b"}

        await b.stop()
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.Generate(request(10), timeout=3)
        # UNAVAILABLE, not DEADLINE_EXCEEDED: it answered within the deadline
        # (a stopwatch against the same 3 s would only add a race).
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
        assert details(exc.value)[0] == "ENDPOINT_UNREACHABLE"
        # ListModels says so too.
        models = await stub.ListModels(pb.ListModelsRequest())
        (sim_model,) = [m for m in models.models if m.name == MODEL]
        assert [e.healthy for e in sim_model.endpoints] == [False, False]
        assert all(e.last_error for e in sim_model.endpoints)


async def test_stream_cut_mid_way_continues_on_another_endpoint():
    b_port = _free_port()  # `b` listens only once the stream runs on `a`
    async with simulator_process("--time-scale", "0.2") as (proc, a_url), \
            llm_core([endpoint(a_url, "a"), endpoint(f"http://127.0.0.1:{b_port}/v1", "b")]) as stub:
        call = stub.GenerateStream(request(200), timeout=30)
        text = "".join([(await call.read()).delta for _ in range(5)])
        b = SimulatorServer(EngineConfig(time_scale=0.2), port=b_port)
        await b.start()
        try:
            proc.kill()
            while (chunk := await call.read()) is not grpc.aio.EOF:
                text += chunk.delta
                final = chunk
            assert final.endpoint == "b" and final.usage.completion_tokens == 200
            # `b` was asked only for the rest: the snapshot went as a prefill.
            assert 0 < b.engine.metrics()["generation_tokens_total"] < 200
            uninterrupted = await stub.Generate(request(200))
            assert text == uninterrupted.text
        finally:
            await b.stop()


async def _collect(call) -> tuple[str, pb.GenerateStreamResponse]:
    text, last = "", None
    async for chunk in call:
        text += chunk.delta
        last = chunk
    return text, last


async def test_session_affinity_holds_while_load_allows():
    slow = EngineConfig(time_scale=1.0)  # 10 ms a token: calls below stay in flight
    async with simulators(slow, slow) as sims, \
            llm_core([endpoint(sims[0], "a", 4), endpoint(sims[1], "b", 4)], AIOS_LLM_ROUTING="session") as stub:
        first = await stub.Generate(request(2, session_id="run-1"))
        same = [await stub.Generate(request(2, content=f"turn {i}", session_id="run-1")) for i in range(6)]
        assert {r.endpoint for r in same} == {first.endpoint}
        # Fill the preferred endpoint: the session stays while its load is
        # within AFFINITY_SLACK (0.5) of the other's, then spills over.
        long_calls, placed = [], []
        for i in range(4):
            call = stub.GenerateStream(request(1000, content=f"long {i}", session_id="run-1"), timeout=30)
            await call.read()  # first token: the call holds its endpoint now
            long_calls.append(call)
            placed.append([s.engine.metrics()["running"] for s in sims])
        preferred = 0 if first.endpoint == "a" else 1
        assert placed[2][preferred] == 3 and placed[2][1 - preferred] == 0
        assert placed[3][preferred] == 3 and placed[3][1 - preferred] == 1
        for call in long_calls:
            call.cancel()
        await wait_until(lambda: all(s.engine.metrics()["running"] == 0 for s in sims), what="slots freed")


async def test_overloaded_backend_503_is_retried():
    # One sequence at a time and one waiting: concurrent calls past that get 503.
    cfg = EngineConfig(time_scale=0.1, max_num_seqs=1, max_waiting=1)
    async with simulators(cfg) as (sim,), llm_core([endpoint(sim, "a")]) as stub:
        results = await asyncio.gather(*(stub.Generate(request(10, content=f"q{i}"), timeout=20)
                                         for i in range(6)))
        assert all(r.usage.completion_tokens == 10 for r in results)
        assert sim.engine.metrics()["requests_rejected_503"] > 0


# --------------------------------------------- deadlines and cancellation


async def test_deadline_aborts_the_backend_request():
    slow = EngineConfig(time_scale=1.0)  # 2000 tokens would take 20 s
    async with simulators(slow) as (sim,), llm_core([endpoint(sim, "a")]) as stub:
        m = sim.engine.metrics
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.Generate(request(2000), timeout=0.5)
        assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await wait_until(lambda: m()["running"] == 0 and m()["requests_aborted"] == 1, what="request aborted")

        call = stub.GenerateStream(request(2000), timeout=0.5)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            async for _ in call:
                pass
        assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await wait_until(lambda: m()["running"] == 0 and m()["requests_aborted"] == 2, what="stream aborted")

    # The engine itself maps its own deadline (not only gRPC's) to DEADLINE_EXCEEDED.
    async with simulators(slow) as (sim,):
        engine = LlmEngine([EndpointConfig(**endpoint(sim, "a"))])
        req = ChatRequest(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2000)
        for run in (engine.generate, lambda r, d: _drain(engine.stream(r, d))):
            with pytest.raises(errors.DeadlineExceeded):
                await run(req, time.monotonic() + 0.3)
        await wait_until(lambda: sim.engine.metrics()["requests_aborted"] == 2, what="engine aborted both")
        await engine.close()


async def _drain(stream):
    async for _ in stream:
        pass


async def test_cancelling_a_stream_frees_the_backend_slot():
    slow = EngineConfig(time_scale=1.0)
    async with simulators(slow) as (sim,), llm_core([endpoint(sim, "a")]) as stub:
        call = stub.GenerateStream(request(2000), timeout=30)
        for _ in range(3):
            assert (await call.read()).delta
        assert sim.engine.metrics()["running"] == 1
        call.cancel()
        await wait_until(lambda: sim.engine.metrics()["running"] == 0, what="slot freed")
        assert sim.engine.metrics()["requests_aborted"] == 1


# --------------------------------------------------------------- errors


class FakeBackend:
    """A fake OpenAI-compatible server answering every chat call with one
    HTTP status: for faults no real local server produces (429 with
    Retry-After, 500, a 404 for an unknown model id)."""

    def __init__(self, status: int, body: dict, headers: dict | None = None) -> None:
        self.status, self.body, self.headers, self.hits = status, body, headers or {}, 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> "FakeBackend":
        async def chat(_request):
            self.hits += 1
            return web.json_response(self.body, status=self.status, headers=self.headers)

        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self

    async def __aexit__(self, *exc) -> None:
        await self._runner.cleanup()


class DroppingBackend:
    """A fake OpenAI-compatible server that closes the connections of the
    first `drops` chat calls without an answer, then answers every call (a
    chat completion, or one streamed chunk) over kept-alive connections. The
    fault a server produces when it closes an idle kept-alive connection just
    as a client sends on it, or dies mid-request, on demand. With
    `reused_lists`, every GET /models sent on a kept-alive connection is
    dropped (counted in `dropped_lists`); one on a new connection is answered."""

    REPLY = {"id": "c", "object": "chat.completion", "created": 0, "model": "dropper",
             "choices": [{"index": 0, "finish_reason": "stop",
                          "message": {"role": "assistant", "content": "still here"}}],
             "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}

    def __init__(self, drops: int, reused_lists: bool = False) -> None:
        self.drops, self.chats = drops, 0
        self.reused_lists, self.dropped_lists = reused_lists, 0
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> "DroppingBackend":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0  # requests answered on this connection
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                line, *fields = head.decode().split("\r\n")
                path = line.split()[1]
                size = next((int(f.split(":", 1)[1]) for f in fields if f.lower().startswith("content-length:")), 0)
                body = json.loads(await reader.readexactly(size)) if size else {}
                if self.reused_lists and served and path.endswith("/models"):
                    self.dropped_lists += 1
                    return  # closed unanswered
                served += 1
                if path.endswith("/chat/completions"):
                    self.chats += 1
                    if self.chats <= self.drops:
                        return  # closed unanswered
                if body.get("stream"):
                    chunk = {**self.REPLY, "object": "chat.completion.chunk", "choices": [
                        {"index": 0, "finish_reason": "stop", "delta": {"content": "still here"}}]}
                    payload, kind = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode(), "text/event-stream"
                else:
                    reply = self.REPLY if "/chat/" in path else {"object": "list", "data": []}
                    payload, kind = json.dumps(reply).encode(), "application/json"
                writer.write(f"HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\n"
                             f"content-length: {len(payload)}\r\n\r\n".encode() + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_a_connection_dropped_once_is_sent_again_and_does_not_open_the_circuit():
    """A backend that drops one call's connection unanswered (a kept-alive
    connection it closed just as the call went out) is still up: the call
    is sent again and answered, and the calls after it are served, not
    refused as if the endpoint were down. Streamed calls too."""
    async with DroppingBackend(drops=1) as once, DroppingBackend(drops=1) as streamed:
        eps = [{**endpoint(once, "once"), "model": "once"}, {**endpoint(streamed, "streamed"), "model": "streamed"}]
        async with llm_core(eps) as stub:
            for _ in range(3):
                r = await stub.Generate(generate(model="once", messages=USER, max_tokens=10), timeout=10)
                assert r.text == "still here" and r.endpoint == "once"
            assert once.chats == 4  # the dropped call and its second sending, then two
            for _ in range(3):
                text = "".join([m.delta async for m in stub.GenerateStream(
                    generate(model="streamed", messages=USER, max_tokens=10), timeout=10)])
                assert text == "still here"
            assert streamed.chats == 4


async def test_a_health_check_on_a_dropped_kept_alive_connection_does_not_take_the_endpoint_down():
    """ListModels checks each endpoint with GET /models. One sent on a
    kept-alive connection that the server has just closed (servers close
    idle ones after a few seconds) is sent again on a new connection: the
    endpoint is reported healthy, and the calls after it are served, not
    refused for seconds as if the endpoint were down."""
    async with DroppingBackend(drops=0, reused_lists=True) as backend:
        async with llm_core([{**endpoint(backend, "kept"), "model": "kept"}]) as stub:
            for _ in range(3):
                r = await stub.Generate(generate(model="kept", messages=USER, max_tokens=10), timeout=10)
                assert r.text == "still here"
                dropped = backend.dropped_lists
                models = {m.name: m for m in (await stub.ListModels(pb.ListModelsRequest(), timeout=10)).models}
                assert backend.dropped_lists > dropped  # the check did meet a dropped connection
                assert models["kept"].available and models["kept"].endpoints[0].healthy, models["kept"]
            r = await stub.Generate(generate(model="kept", messages=USER, max_tokens=10), timeout=10)
            assert r.text == "still here"


async def test_a_backend_that_drops_every_call_opens_the_circuit_and_says_when_to_retry():
    """A backend that accepts connections but answers none is down: calls
    end UNAVAILABLE ENDPOINT_UNREACHABLE with a retry hint, well inside
    their deadline, and once the circuit is open new calls are refused
    without reaching it."""
    async with DroppingBackend(drops=10**6) as dead:
        async with llm_core([{**endpoint(dead, "dead"), "model": "dead"}]) as stub:
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as exc:
                    await stub.Generate(generate(model="dead", messages=USER, max_tokens=10), timeout=20)
                assert exc.value.code() == grpc.StatusCode.UNAVAILABLE, exc.value.details()
                reason, meta, retry = details(exc.value)
                assert reason == "ENDPOINT_UNREACHABLE" and meta["model"] == "dead" and retry and retry > 0
            sent = dead.chats
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.Generate(generate(model="dead", messages=USER, max_tokens=10), timeout=20)
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE and "no endpoint" in exc.value.details()
            assert dead.chats == sent  # refused by the open circuit


def _err(message: str, type_: str) -> dict:
    return {"error": {"message": message, "type": type_, "code": None}}


async def test_a_reply_read_as_json_keeps_its_facts_and_a_malformed_one_is_a_backend_error():
    """llm_core reads a reply as plain JSON: text, finish reason, tool calls
    and cached tokens come through; a reply with no choice, or JSON that is
    not an object, is the backend's error (UNAVAILABLE), never an internal one."""
    reply = {"id": "c", "object": "chat.completion", "created": 0, "model": "served-as",
             "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                 "role": "assistant", "content": None, "tool_calls": [
                     {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}]}}],
             "usage": {"prompt_tokens": 40, "completion_tokens": 3, "total_tokens": 43,
                       "prompt_tokens_details": {"cached_tokens": 32}}}
    async with FakeBackend(200, reply) as good, FakeBackend(200, {"object": "chat.completion", "choices": []}) as empty, \
            FakeBackend(200, [1, 2]) as listed:
        eps = [{**endpoint(good, "good"), "model": "good"}, {**endpoint(empty, "empty"), "model": "empty"},
               {**endpoint(listed, "listed"), "model": "listed"}]
        async with llm_core(eps) as stub:
            r = await stub.Generate(generate(model="good", messages=USER, max_tokens=10), timeout=10)
            assert r.finish_reason == lc.FINISH_REASON_TOOL_CALLS and r.text == "" and r.model == "served-as"
            (call,) = r.tool_calls
            assert (call.id, call.name, json.loads(call.arguments_json)) == ("call_1", "add", {"a": 1})
            assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.cached_prompt_tokens) == (40, 3, 32)
            for model in ("empty", "listed"):
                with pytest.raises(grpc.aio.AioRpcError) as exc:
                    await stub.Generate(generate(model=model, messages=USER, max_tokens=10), timeout=10)
                assert exc.value.code() == grpc.StatusCode.UNAVAILABLE, (model, exc.value.details())
                assert details(exc.value)[0] == "BACKEND_ERROR"


async def test_backend_statuses_map_to_grpc_codes():
    async with FakeBackend(429, _err("slow down", "rate_limit_error"), {"Retry-After": "7"}) as f429, \
            FakeBackend(500, _err("boom", "server_error")) as f500, \
            FakeBackend(404, _err("model 'x' not found", "not_found_error")) as f404, \
            simulators(EngineConfig(time_scale=0.01, max_model_len=64)) as (small,), \
            _closed_port() as closed_port:
        closed = f"http://127.0.0.1:{closed_port}/v1"
        eps = [{**endpoint(f429, "limited"), "model": "limited"},
               {**endpoint(f500, "broken"), "model": "broken"},
               {**endpoint(f404, "missing"), "model": "missing"},
               {**endpoint(small, "small"), "model": "small"},
               {**endpoint(closed, "closed"), "model": "closed"}]
        async with llm_core(eps) as stub:
            async def fails(model: str, timeout: float = 5, max_tokens: int = 10):
                req = generate(model=model, messages=USER, max_tokens=max_tokens)
                with pytest.raises(grpc.aio.AioRpcError) as exc:
                    await stub.Generate(req, timeout=timeout)
                return exc.value

            e = await fails("limited", timeout=1.0)
            # RESOURCE_EXHAUSTED, not DEADLINE_EXCEEDED: the retries stopped
            # inside the deadline (no stopwatch against the same 1 s).
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            reason, meta, retry = details(e)
            assert reason == "BACKEND_RATE_LIMITED" and retry == 7.0 and meta["endpoint"] == "limited"
            assert f429.hits > 1  # retried with backoff inside the deadline

            e = await fails("broken")
            assert e.code() == grpc.StatusCode.UNAVAILABLE and details(e)[0] == "BACKEND_ERROR"
            assert f500.hits == 1  # a 500 may have run: not retried

            e = await fails("missing")
            assert e.code() == grpc.StatusCode.NOT_FOUND and "not found" in e.details()

            e = await fails("small", max_tokens=100)  # past the simulator's max_model_len: HTTP 400
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and details(e)[0] == "BACKEND_REJECTED"

            e = await fails("closed", timeout=1.0)
            assert e.code() == grpc.StatusCode.UNAVAILABLE and "closed" in e.details()

            e = await fails("no-such-model")
            assert e.code() == grpc.StatusCode.NOT_FOUND and details(e)[0] == "UNKNOWN_MODEL"

            models = {m.name: m for m in (await stub.ListModels(pb.ListModelsRequest())).models}
            assert models["small"].endpoints[0].healthy
            closed_ep = models["closed"].endpoints[0]
            assert not closed_ep.healthy and "unreachable" in closed_ep.last_error


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def _closed_port():
    """A loopback port bound but not listening while held: connections are
    refused, and no other process can start listening on it meanwhile."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


async def test_malformed_tool_call_is_a_clear_error():
    # The simulator ignores response_format, so its words are no tool-call JSON
    # (and, with no max_tokens, it stops by itself: no answer cut short).
    async with simulators(FAST) as (sim,), llm_core([endpoint(sim, "a")]) as stub:
        req = request(None, tools=[lc.Tool(name="lookup", description="Look a word up")])
        for run in (stub.Generate(req), _collect(stub.GenerateStream(req))):
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await run
            assert exc.value.code() == grpc.StatusCode.INTERNAL
            reason, meta, _ = details(exc.value)
            assert reason == "MALFORMED_TOOL_CALL" and meta["endpoint"] == "a"
            assert "not JSON" in exc.value.details()
        assert (await stub.Generate(request(5))).usage.completion_tokens == 5  # still serving


# ----------------------------------------------- tool emulation (plain code)


def test_tool_plan_schema_and_parse():
    import jsonschema

    tools = [{"type": "function", "function": {"name": "add", "description": "Add", "parameters": {
        "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"]}}},
             {"type": "function", "function": {"name": "now", "parameters": {}}}]
    auto = emulated_tools.plan(tools, None, None)
    schema = emulated_tools.schema(auto)
    jsonschema.Draft202012Validator.check_schema(schema)
    ok = {"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}, {"name": "now", "arguments": {}}]}
    jsonschema.validate(ok, schema)
    jsonschema.validate({"content": "hello"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"tool_calls": [{"name": "add", "arguments": {"a": "x"}}]}, schema)

    content, calls, finish = emulated_tools.parse(auto, json.dumps(ok), "stop", "ep")
    assert content == "" and finish == "tool_calls"
    assert [c["name"] for c in calls] == ["add", "now"] and json.loads(calls[0]["arguments"]) == {"a": 1, "b": 2}
    assert len({c["id"] for c in calls}) == 2
    assert emulated_tools.parse(auto, '{"content": "hi"}', "stop", "ep") == ("hi", [], "stop")

    forced = emulated_tools.plan(tools, {"type": "function", "function": {"name": "now"}}, None)
    assert forced.required and "anyOf" not in json.dumps(emulated_tools.schema(forced))
    bad = [("words", "not JSON"), ('{"content": "x"}', "neither"),
           ('{"tool_calls": [{"name": "add", "arguments": {}}]}', "offered"),
           ('{"tool_calls": [{"name": "now", "arguments": []}]}', "not a JSON object")]
    for text, why in bad:
        with pytest.raises(errors.Internal) as exc:
            emulated_tools.parse(forced, text, "stop", "ep")
        assert exc.value.reason == "MALFORMED_TOOL_CALL" and why in exc.value.message
    with pytest.raises(errors.Internal) as exc:
        emulated_tools.parse(auto, '{"tool_calls": [{"name": "add", "arguments": {"a": 1}}]}', "stop", "ep")
    assert "do not match its schema" in exc.value.message
    # Cut at max_tokens: like OpenAI, an answer that ran out of tokens, not an error.
    assert emulated_tools.parse(auto, '{"tool_calls": [{"na', "length", "ep") == ("", [], "length")
    assert emulated_tools.plan(tools, "none", None) is None

    history = emulated_tools.plain_history([
        {"role": "user", "content": "1+2 and the time?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a":1,"b":2}'}},
            {"id": "c2", "type": "function", "function": {"name": "now", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "3"},
        {"role": "tool", "tool_call_id": "c2", "content": "noon"}])
    assert [m["role"] for m in history] == ["user", "assistant", "user"]
    assert json.loads(history[1]["content"])["tool_calls"][0] == {"name": "add", "arguments": {"a": 1, "b": 2}}
    assert "add (c1)" in history[2]["content"] and "noon" in history[2]["content"]


def test_native_tool_endpoints_get_tools_passed_through():
    tools = [{"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}]
    native = EndpointConfig(name="n", model=MODEL, base_url="http://127.0.0.1:9/v1", model_id="m",
                            native_tools=True)
    engine = LlmEngine([native])
    req = ChatRequest(model=MODEL, messages=[{"role": "user", "content": "time?"}], tools=tools,
                      tool_choice="required")
    call = engine._call(req, engine.endpoints[0])
    assert call.params["tools"] == tools and call.params["tool_choice"] == "required"
    assert "response_format" not in call.params and call.tools is None


def test_api_key_env_is_read_at_start_and_never_printed():
    raw = [{"name": "k", "model": "m", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "MY_KEY"}]
    with pytest.raises(Exception) as exc:
        Config.from_env({"AIOS_LLM_ENDPOINTS": json.dumps(raw)})
    assert "MY_KEY" in str(exc.value) and "not set" in str(exc.value)
    config = Config.from_env({"AIOS_LLM_ENDPOINTS": json.dumps(raw), "MY_KEY": "sk-secret-123"})
    assert config.endpoints[0].api_key == "sk-secret-123"
    assert "sk-secret-123" not in repr(config)


async def test_an_endpoint_keeps_a_connection_open_for_each_call_it_may_run_at_once():
    """As many connections stay open to an endpoint as calls may be in flight
    to it: a second wave of max_concurrency calls opens none (openai's default
    pool keeps 100, so 120 at once would reopen 20 on every wave)."""
    concurrency = 120
    peers: set = set()
    arrived = 0
    release = asyncio.Event()

    async def chat(request: web.Request) -> web.Response:
        nonlocal arrived
        peers.add(request.transport.get_extra_info("peername"))
        await request.json()
        arrived += 1
        if arrived % concurrency == 0:
            release.set()
        await release.wait()  # every call of a wave is in flight at once
        return web.json_response({
            "id": "c", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    try:
        async with llm_core([endpoint(url, "wide", concurrency=concurrency)]) as stub:
            for wave in range(2):
                release.clear()
                replies = await asyncio.wait_for(asyncio.gather(*(
                    stub.Generate(generate(model=MODEL, messages=USER, max_tokens=4))
                    for _ in range(concurrency))), 60)
                assert all(r.text == "ok" for r in replies)
                assert len(peers) == concurrency, f"wave {wave}: {len(peers)} connections for {concurrency} calls"
    finally:
        await runner.cleanup()
