"""The kernel's policies and limits against llm_core and the serving
simulator, whose speed the tests control (capacity 1 makes order visible)."""

from __future__ import annotations

import asyncio
import functools
import json

import aiohttp
import pytest

from aios.kernel.v1 import syscall_pb2 as ks
from aios.sdk import AsyncClient, DeadlineExceededError, ResourceExhaustedError
from bench.simulator.engine import EngineConfig
from bench.simulator.server import SimulatorServer
from tests.conftest import kernel_config
from tests.support.polling import until

MODEL = "sim"


@pytest.fixture
async def sim_stack(start_service):
    """sim_stack(policy=..., capacity=1, time_scale=0.05, engine=EngineConfig(...),
    endpoint={extra endpoint keys}, **kernel_env) -> (client factory, simulator)."""
    from services.llm_core.app import build as llm_build
    from services.llm_core.config import Config as LlmConfig
    from services.scheduler.app import build as kernel_build

    sims, clients = [], []

    async def make(policy="fifo", capacity=1, time_scale=0.05, engine=None, endpoint=None, **env):
        sim = SimulatorServer(engine or EngineConfig(time_scale=time_scale, max_num_seqs=64))
        await sim.start()
        sims.append(sim)
        endpoints = [{"name": "sim", "model": MODEL, "base_url": sim.url, "max_concurrency": capacity,
                      **(endpoint or {})}]
        llm = await start_service(llm_build, LlmConfig.from_env({"AIOS_LLM_ENDPOINTS": json.dumps(endpoints)}))
        kernel = await start_service(kernel_build, kernel_config(f"127.0.0.1:{llm.port}", policy=policy, **env))
        address = f"127.0.0.1:{kernel.port}"

        def client(agent: str, **kw) -> AsyncClient:
            c = AsyncClient(address, token=agent, timeout=60, **kw)
            clients.append(c)
            return c

        return client, sim

    yield make
    for c in clients:
        await c.close()
    for sim in sims:
        await sim.stop()


def gen(client: AsyncClient, prompt: str, tokens: int, **kw) -> ks.Syscall:
    return client.llm.syscall(prompt, model=MODEL, max_tokens=tokens, **kw)


async def _collect(it, first) -> tuple[ks.SyscallRecord, list[str]]:
    events = [first.WhichOneof("event")]
    record = None
    async for ev in it:
        events.append(ev.WhichOneof("event"))
        if ev.HasField("finished"):
            record = ev.finished
    return record, events


async def submit_in_order(pairs) -> list[asyncio.Task]:
    """Submit (client, syscall) pairs one after another, each once the kernel
    has queued the previous one, so arrival order is known."""
    tasks = []
    for client, syscall in pairs:
        it = client.stream(syscall).__aiter__()
        first = await it.__anext__()
        assert first.HasField("queued")
        tasks.append(asyncio.create_task(_collect(it, first)))
    return tasks


async def sim_metrics(sim: SimulatorServer) -> dict:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{sim.port}/metrics") as r:
            return await r.json()


wait_until = functools.partial(until, interval=0.02)


def started(task) -> int:
    return task.result()[0].start_time.ToNanoseconds()


# A blocker: a call long enough (25 s at the default time scale) that only a
# cancel ends it. Held while the calls under test are queued behind it, it
# makes their order the policy's alone, not a race between their submission
# and the blocker finishing on a busy machine.
HOLD = 50_000


async def release(client: AsyncClient, request_id: str, task: asyncio.Task) -> None:
    """Cancel the blocker; it must still have been running (else the calls
    behind it may have started before the others were queued)."""
    await client.cancel(request_id)
    with pytest.raises(Exception) as exc:
        await task
    assert "CANCELLED" in str(exc.value)


async def test_fifo_runs_calls_in_arrival_order(sim_stack):
    client, _ = await sim_stack("fifo")
    a = client("a")
    tasks = await submit_in_order([(a, gen(a, "blocker", 400))] + [(a, gen(a, f"c{i}", 5)) for i in range(4)])
    await asyncio.gather(*tasks)
    starts = [started(t) for t in tasks]
    assert starts == sorted(starts)


async def test_priority_serves_a_later_high_priority_call_first(sim_stack):
    client, _ = await sim_stack("priority", aging_seconds=3600)
    a = client("a")
    blocker, *tasks = await submit_in_order([
        (a, gen(a, "blocker", HOLD, request_id="blocker")),
        (a, gen(a, "low-1", 5)), (a, gen(a, "low-2", 5)),
        (a, gen(a, "high", 5, priority=10)),
    ])
    await release(a, "blocker", blocker)
    await asyncio.gather(*tasks)
    low1, low2, high = (started(t) for t in tasks)
    assert high < low1 < low2


async def test_round_robin_interleaves_and_resumes_exactly(sim_stack):
    client, sim = await sim_stack("round_robin", slice_tokens=8)
    a, b, holder = client("a"), client("b"), client("holder")
    # Round robin slices every generation, but never output under a grammar
    # (llm_core), so a JSON call is a blocker here: a and b are both queued
    # before either starts, whatever the time b's submission takes.
    (blocker,) = await submit_in_order([(holder, gen(holder, "blocker", HOLD, request_id="blocker",
                                                     json_object=True))])
    tasks = await submit_in_order([(a, gen(a, "first long story", 40)), (b, gen(b, "second long story", 40))])
    await release(holder, "blocker", blocker)
    results = await asyncio.gather(*tasks)
    for record, events in results:
        assert record.preemptions >= 2 and "preempted" in events and "resumed" in events
        assert record.usage.completion_tokens == 40  # nothing generated twice
    # Interleaved: each started before the other finished.
    (ra, _), (rb, _) = results
    assert rb.start_time.ToNanoseconds() < ra.finish_time.ToNanoseconds()
    # The resumed texts equal uninterrupted generations of the same length.
    fifo_client, _ = await sim_stack("fifo")
    c = fifo_client("c")
    for (record, _), prompt in zip(results, ["first long story", "second long story"]):
        whole = await c.llm.chat(prompt, model=MODEL, max_tokens=40)
        assert whole.record.preemptions == 0 and record.llm.text == whole.text


async def test_fair_share_serves_a_light_agent_while_a_heavy_one_floods(sim_stack):
    client, _ = await sim_stack("fair_share")
    heavy, light, holder = client("heavy"), client("light"), client("holder")
    # Everything queues behind the blocker first: otherwise the heavy calls
    # drain while the light ones are still being submitted on a slow machine.
    (blocker,) = await submit_in_order([(holder, gen(holder, "blocker", HOLD, request_id="blocker"))])
    tasks = await submit_in_order([(heavy, gen(heavy, f"h{i}", 30)) for i in range(12)])
    light_tasks = await submit_in_order([(light, gen(light, f"l{i}", 30)) for i in range(3)])
    await release(holder, "blocker", blocker)
    await asyncio.gather(*tasks, *light_tasks)
    heavy_starts = sorted(started(t) for t in tasks)
    # Under FIFO the light calls would start after all 12 heavy ones; with
    # fair share each of them starts before most of the heavy backlog.
    for t in light_tasks:
        ahead = sum(1 for h in heavy_starts if h < started(t))
        assert ahead <= 6, ahead


async def test_cancel_frees_queued_and_running_slots(sim_stack):
    client, sim = await sim_stack("fifo", time_scale=0.5)
    a = client("a")
    tasks = await submit_in_order([(a, gen(a, "long", 5000, request_id="run")),
                                   (a, gen(a, "waiting", 5, request_id="wait"))])
    await wait_until(lambda: _running(sim, 1))
    queued = await a.cancel("wait")
    assert queued.state == ks.SYSCALL_STATE_CANCELLED
    running = await a.cancel("run")
    assert running.state == ks.SYSCALL_STATE_CANCELLED
    # The backend's sequence is aborted, not left to finish.
    await wait_until(lambda: _running(sim, 0))
    for t in tasks:
        with pytest.raises(Exception) as exc:
            await t
        assert "CANCELLED" in str(exc.value)
    agents = {s.agent: s for s in await a.list_agents()}
    assert agents["a"].running == 0 and agents["a"].queued == 0
    # The slot is free: the next call runs at once.
    reply = await a.llm.chat("after", model=MODEL, max_tokens=3)
    assert reply.completion_tokens == 3


async def test_a_cancel_in_grpcs_blind_moment_still_aborts_the_backend(sim_stack, monkeypatch):
    """Forced timing (a fault nothing real produces on demand): the kernel
    cancels a running call in the very loop turn in which a stream's first
    message (the grpc.aio step the dispatch awaits) has just arrived. grpc
    then raises the CancelledError outside the code that cancels the RPC;
    the kernel must cancel it itself, or llm_core generates on for a call
    nobody waits for."""
    import contextvars

    from grpc.aio import _call as grpc_call

    from services.scheduler.dispatch import Dispatcher

    client, sim = await sim_stack("fifo", time_scale=0.5)
    a = client("a")
    dispatching = contextvars.ContextVar("dispatching", default=None)
    cancelled = []
    llm = Dispatcher._llm

    async def marked_llm(self, entry, slice_tokens):
        dispatching.set(asyncio.current_task())  # grpc's tasks for the call inherit it
        return await llm(self, entry, slice_tokens)

    def cancel_when_done(future):
        task = dispatching.get()
        if task is not None:  # runs before the task's own wake-up: the blind moment
            future.add_done_callback(lambda _: cancelled.append(task.cancel()))

    monkeypatch.setattr(Dispatcher, "_llm", marked_llm)
    init_stream = grpc_call.UnaryStreamCall._init_stream_response_mixin

    def watched_stream(self, preparation):
        init_stream(self, preparation)
        cancel_when_done(preparation)
    monkeypatch.setattr(grpc_call.UnaryStreamCall, "_init_stream_response_mixin", watched_stream)

    with pytest.raises(Exception) as exc:
        (task,) = await submit_in_order([(a, gen(a, "long", 5000, request_id="run"))])
        await asyncio.wait_for(task, 10)
    assert "CANCELLED" in str(exc.value) and cancelled == [True]
    monkeypatch.undo()
    await wait_until(lambda: _running(sim, 0), timeout=5)


async def _running(sim, n):
    return (await sim_metrics(sim))["running"] == n


async def test_deadline_fails_the_call_and_frees_the_backend(sim_stack):
    client, sim = await sim_stack("fifo", time_scale=0.5)
    a = client("a", retries=0)
    with pytest.raises(DeadlineExceededError):
        await a.submit(gen(a, "too long", 5000), timeout=0.5)
    await wait_until(lambda: _running(sim, 0))
    reply = await a.llm.chat("next", model=MODEL, max_tokens=3)
    assert reply.text


async def test_per_agent_limit_answers_resource_exhausted_and_keeps_serving(sim_stack):
    client, _ = await sim_stack("fifo", per_agent_outstanding=2)
    a, b, holder = client("a"), client("b"), client("holder")
    # Behind the blocker, a's two calls stay outstanding until it is released,
    # however long the third submission takes to arrive.
    blocker, *tasks = await submit_in_order([(holder, gen(holder, "blocker", HOLD, request_id="blocker")),
                                             (a, gen(a, "x", 30)), (a, gen(a, "y", 5))])
    with pytest.raises(ResourceExhaustedError) as exc:
        await a.submit(gen(a, "z", 5))
    assert exc.value.reason == "AGENT_LIMIT" and exc.value.retry_after and exc.value.retry_after > 0
    # Other agents are not affected (b's call is accepted), and nothing accepted was lost.
    others = await submit_in_order([(b, gen(b, "other", 3))])
    await release(holder, "blocker", blocker)
    results = await asyncio.gather(*tasks, *others)
    assert all(r.state == ks.SYSCALL_STATE_SUCCEEDED for r, _ in results)
    assert results[-1][0].llm.text


async def test_repeated_request_id_runs_once(sim_stack):
    client, sim = await sim_stack("fifo")
    a = client("a")
    before = (await sim_metrics(sim))["requests_served"]
    syscall = gen(a, "only once", 20, request_id="same-id")
    first, second = await asyncio.gather(a.submit(syscall), a.submit(syscall))
    third = await a.submit(syscall)
    assert first.id == second.id == third.id and first.llm.text == third.llm.text
    assert (await sim_metrics(sim))["requests_served"] - before == 1


async def test_policy_switch_at_runtime(sim_stack):
    client, _ = await sim_stack("fifo")
    a = client("a")
    policy = await a.set_policy("agent_aware")
    from aios.kernel.v1 import kernel_service_pb2 as kpb

    assert policy.kind == kpb.POLICY_KIND_AGENT_AWARE
    assert (await a.llm.chat("works", model=MODEL, max_tokens=3)).text


async def test_disconnected_caller_stops_its_call(sim_stack):
    client, sim = await sim_stack("fifo", time_scale=0.5)
    a = client("a", retries=0)
    call = asyncio.create_task(a.submit(gen(a, "abandoned", 5000, request_id="gone")))
    await wait_until(lambda: _running(sim, 1))
    call.cancel()  # the client goes away mid-call
    with pytest.raises(asyncio.CancelledError):
        await call
    await wait_until(lambda: _running(sim, 0))
    record = await a.get_syscall("gone")
    assert record.state == ks.SYSCALL_STATE_CANCELLED


async def test_a_call_that_cannot_start_before_its_deadline_is_told_at_once(sim_stack):
    """Load shedding: from the rate a resource serves at, the kernel sees that
    a call would wait past its deadline and refuses it at once with
    RESOURCE_EXHAUSTED and RetryInfo, instead of queueing it to fail later."""
    client, _ = await sim_stack("fifo", capacity=1, time_scale=1.0)
    c = client("shed", retries=0)
    for i in range(6):  # enough finished calls for the kernel to know the rate
        await c.submit(gen(c, f"warm {i}", 40))
    backlog = [asyncio.create_task(client(f"busy-{i}").submit(gen(c, f"busy {i}", 40))) for i in range(8)]
    await wait_until(lambda: _queued_at_least(c, 7))
    with pytest.raises(ResourceExhaustedError) as exc:
        await c.submit(gen(c, "in a hurry", 40), timeout=0.5)
    assert exc.value.reason == "DEADLINE_UNREACHABLE" and exc.value.retry_after and exc.value.retry_after > 0
    assert "would reach this call" in exc.value.message
    assert not [r for r in (await c.list_syscalls()).syscalls if r.agent == "shed" and
                r.state == ks.SYSCALL_STATE_QUEUED]
    # A call that has the time waits its turn and runs.
    patient = await c.submit(gen(c, "patient", 40), timeout=120)
    assert patient.state == ks.SYSCALL_STATE_SUCCEEDED
    assert all(r.state == ks.SYSCALL_STATE_SUCCEEDED for r in await asyncio.gather(*backlog))


async def _queued_at_least(c: AsyncClient, n: int) -> bool:
    listing = await c.list_syscalls(state=ks.SYSCALL_STATE_QUEUED)
    return len(listing.syscalls) >= n
