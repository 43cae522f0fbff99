"""Cache-aware admission: the kernel over llm_core and a serving simulator
with a prefix cache. New agent runs wait while the active ones fill the
model's cache (the endpoints' cache_tokens); calls of active runs go first."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timezone

import pytest

from aios.kernel.v1 import syscall_pb2 as ks
from aios.sdk import AsyncClient
from bench.simulator.engine import EngineConfig
from services.scheduler.cache import CacheGate
from tests.test_scheduler import MODEL, sim_stack, wait_until  # noqa: F401 - sim_stack is a fixture

PROMPT_CHARS = 1200  # about 300 tokens as the kernel estimates them (4 bytes a token)


@pytest.fixture
def gated(sim_stack):
    """gated(cache_tokens, idle) -> (client factory by run name, simulator):
    one engine, the kernel sending it at most 4 calls at once."""

    async def make(cache_tokens: int, idle: float, time_scale: float = 0.2, **env):
        client, sim = await sim_stack(
            capacity=4, engine=EngineConfig(time_scale=time_scale, max_num_seqs=64, prefix_cache=True),
            endpoint={"cache_tokens": cache_tokens}, cache_idle_seconds=idle, **env)
        return (lambda run: client(run, session_id=run)), sim

    return make


def turn(client: AsyncClient, run: str, tokens: int):
    return client.llm.syscall([{"role": "system", "content": (run + " ") * (PROMPT_CHARS // (len(run) + 1))},
                               {"role": "user", "content": "next step"}], model=MODEL, max_tokens=tokens)


async def submit(client: AsyncClient, syscall) -> tuple[str, asyncio.Task]:
    """Send a syscall without waiting for it: its id, and a task that drains its events."""
    events = client.stream(syscall).__aiter__()
    first = await events.__anext__()
    assert first.HasField("queued")

    async def drain():
        with contextlib.suppress(Exception):
            async for _ in events:
                pass
    return first.syscall_id, asyncio.create_task(drain())


async def state(client: AsyncClient, syscall_id: str) -> str:
    return ks.SyscallState.Name((await client.get_syscall(syscall_id)).state).removeprefix("SYSCALL_STATE_")


async def test_new_runs_wait_while_active_ones_fill_the_cache(gated):
    client, _ = await gated(cache_tokens=1000, idle=0.5)
    runs = {name: client(name) for name in ("r1", "r2", "r3", "r4")}

    async def in_state(name: str, syscall_id: str, want: str) -> bool:
        return await state(runs[name], syscall_id) == want

    # Three runs of ~300 tokens each fill the 1,000-token cache; long calls
    # keep them active.
    long = {name: (await submit(runs[name], turn(runs[name], name, 20_000)))[0] for name in ("r1", "r2", "r3")}
    for name, syscall_id in long.items():
        await wait_until(lambda n=name, i=syscall_id: in_state(n, i, "RUNNING"))
    # A fourth run does not fit: it waits, though a slot is free.
    r4, _ = await submit(runs["r4"], turn(runs["r4"], "r4", 5))
    # An active run's next call goes ahead of it.
    again, _ = await submit(runs["r1"], turn(runs["r1"], "r1", 5))
    await wait_until(lambda: in_state("r1", again, "SUCCEEDED"))
    assert await in_state("r4", r4, "QUEUED")
    # Once r2 has been idle for idle_seconds it stops counting, and r4
    # starts with no call ending to wake the queue; r1 and r3 still run.
    ended = time.time()
    await runs["r2"].cancel(long["r2"])
    await wait_until(lambda: in_state("r4", r4, "SUCCEEDED"))
    started = (await runs["r4"].get_syscall(r4)).start_time.ToDatetime(tzinfo=timezone.utc).timestamp()
    assert started >= ended + 0.45
    assert await in_state("r3", long["r3"], "RUNNING")
    for name in ("r1", "r3"):
        await runs[name].cancel(long[name])


async def test_a_run_larger_than_the_cache_is_served_alone(gated):
    client, _ = await gated(cache_tokens=100, idle=30)
    big = client("big")
    record = await big.submit(turn(big, "big", 3))
    assert record.llm.usage.completion_tokens == 3  # nothing else ran: the cache does not stop it


def test_the_gate_counts_runs_by_their_last_context():
    gate = CacheGate(budget_tokens=1000, idle_seconds=1.0)
    gate.start("a", 300)
    gate.start("b", 300)
    assert gate.used == 600 and gate.fits(400, now=0.0) and not gate.fits(401, now=0.0)
    gate.end("a", 700, now=10.0)  # a's history grew with its answer
    assert gate.used == 1000 and not gate.fits(1, now=10.5)
    assert gate.fits(700, now=11.0)  # a idle for idle_seconds: it no longer counts
    assert not gate.active("a", now=11.0) and gate.active("b", now=11.0)  # b still runs
    gate.end("b", 300, now=11.0)
    assert gate.fits(1000, now=12.0) and len(gate) == 0


def test_the_room_follows_what_the_caches_keep():
    """A run's next call should find its last context cached: while calls
    do, and runs are held, the room grows; when they do not, it shrinks."""
    gate = CacheGate(budget_tokens=1000, idle_seconds=1.0)

    def turn(run: str, cached: int) -> None:
        gate.start(run, 100)
        gate.end(run, 400, now=0.0, cached_tokens=cached)

    turn("a", 0)  # a first call tells nothing (nothing of it could be cached)
    assert gate.scale == 1.0
    turn("a", 390)  # kept, but no run is held: no reason to grow
    assert gate.scale == 1.0
    gate.hold(type("Held", (), {})())
    for _ in range(10):
        turn("a", 390)
    assert gate.scale == pytest.approx(1.02 ** 10)
    for _ in range(20):
        turn("a", 100)  # 25% of its history found: evicted before reuse
    assert gate.scale == pytest.approx(1.02 ** -10)
    assert gate.room == pytest.approx(1000 * 1.02 ** -10)
    gate.end("a", 400, now=0.0, cached_tokens=-1)  # a call cut short tells nothing
    assert gate.scale == pytest.approx(1.02 ** -10)
