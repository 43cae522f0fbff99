"""Several llm_core replicas over one set of engines: "hash" routing sends an
agent run (the session id the kernel sends) to the same engine through any
replica, by rendezvous hashing with bounded loads (services/runtime/
rendezvous.py), and AIOS_LLM_REPLICAS gives each replica its share of every
engine's slots.

Engines are serving simulators (bench/simulator) in process on free ports;
llm_core replicas run in process on port 0 and are called over gRPC. The
simulators say what they ran (running, peak_running, requests_received, the
prompt tokens their prefix cache served); conditions are polled with a
deadline, never slept on. The router's own rules are tested on the plain
Router, without servers.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aios.llm.v1 import llm_service_pb2 as pb
from bench.simulator.engine import EngineConfig
from services.llm_core import prefix
from services.llm_core.config import Config, ConfigError, EndpointConfig
from services.llm_core.engine import ChatRequest, Endpoint, LlmEngine, Router
from services.runtime import errors
from tests.test_llm_core_prefix import CACHED, call, words
from tests.test_llm_core_routing import MODEL, REPO, _collect, endpoint, request, simulators, wait_until
from tests.test_llm_core_routing import served as replica  # one llm_core replica: (stub, server)

KEYS = [f"run-{i}" for i in range(1000)]
FAST = EngineConfig(time_scale=0.01)
SLOW = EngineConfig(time_scale=1.0)  # 10 ms a token: calls stay in flight


def endpoints(*names: str, concurrency: int = 8, replicas: int = 1, **extra) -> list[Endpoint]:
    return [Endpoint(EndpointConfig(name=n, model=MODEL, base_url="http://127.0.0.1:9/v1", model_id="m",
                                    max_concurrency=concurrency, **extra), replicas) for n in names]


def first(router: Router, key: str) -> str:
    return router.candidates(MODEL, key)[0].name


def named(router: Router) -> dict[str, Endpoint]:
    return {ep.name: ep for ep in router.by_model[MODEL]}


# ------------------------------------------------------ the router (plain)


def test_a_run_has_one_order_of_endpoints_whatever_order_they_are_listed_in():
    names = ["a", "b", "c", "d"]
    one, other = Router(endpoints(*names), "hash"), Router(endpoints(*reversed(names)), "hash")
    for key in KEYS[:200]:
        assert [e.name for e in one.candidates(MODEL, key)] == [e.name for e in other.candidates(MODEL, key)]
    spread = Counter(first(one, key) for key in KEYS)
    assert set(spread) == set(names) and min(spread.values()) > 200, spread  # 250 each, give or take
    # Capacity weighs: an endpoint with 3 times the slots is first for about 3 times the runs.
    weighted = Router(endpoints("small", concurrency=4) + endpoints("big", concurrency=12), "hash")
    share = Counter(first(weighted, key) for key in KEYS)["big"] / len(KEYS)
    assert 0.7 < share < 0.8, share


def test_the_order_is_the_same_in_every_process():
    """A stable hash (blake2b), not Python's hash(), which is salted per process."""
    script = ("from services.runtime import rendezvous\n"
              "keys = [f'run-{i}' for i in range(100)]\n"
              "print(' '.join(rendezvous.order(key, 'abcd', str, lambda _: 8)[0] for key in keys))\n")
    here = Router(endpoints("a", "b", "c", "d"), "hash")
    expected = " ".join(first(here, key) for key in KEYS[:100])
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                             env={**os.environ, "PYTHONHASHSEED": seed}, timeout=60, check=True)
        assert out.stdout.strip() == expected


def test_a_run_moves_only_when_its_endpoint_goes():
    four = Router(endpoints("a", "b", "c", "d"), "hash")
    before = {key: [e.name for e in four.candidates(MODEL, key)] for key in KEYS}
    three = Router(endpoints("a", "b", "d"), "hash")
    after = {key: first(three, key) for key in KEYS}
    moved = {key for key in KEYS if after[key] != before[key][0]}
    assert moved == {key for key in KEYS if before[key][0] == "c"}
    assert all(after[key] == before[key][1] for key in moved)  # each to its next choice
    assert {after[key] for key in moved} == {"a", "b", "d"}  # spread over those left
    # One added takes only runs it is now first for.
    five = Router(endpoints("a", "b", "c", "d", "e"), "hash")
    assert all(first(five, key) in (before[key][0], "e") for key in KEYS)
    # An endpoint marked down (a refused connection) is the same as gone, and tried last.
    named(four)["c"].mark_down("refused")
    for key in KEYS:
        order = [e.name for e in four.candidates(MODEL, key)]
        assert order[0] == after[key] and order[-1] == "c"


def test_the_load_bound_diverts_a_run_from_an_endpoint_above_it():
    router = Router(endpoints("a", "b"), "hash")  # 8 slots each
    a, b = named(router)["a"], named(router)["b"]
    key = next(k for k in KEYS if first(router, k) == "a")
    # c = 1.25: with t calls in flight, an endpoint may hold ceil(1.25 (t + 1) / 2), the next one included.
    for on_a, on_b, to in ((1, 0, "a"), (2, 0, "b"), (6, 3, "a"), (7, 3, "b"), (7, 5, "a")):
        a.in_flight, b.in_flight = on_a, on_b
        assert [e.name for e in router.candidates(MODEL, key)] == [to, "b" if to == "a" else "a"], (on_a, on_b)
    # Both full: the key's own order (the call waits for a slot: LlmEngine).
    a.in_flight = b.in_flight = 8
    assert first(router, key) == "a"
    # A replica's share of the slots bounds it too: 2 replicas, 8 each, so 4 here.
    shared = Router(endpoints("a", "b", replicas=2), "hash")
    named(shared)["a"].in_flight, named(shared)["b"].in_flight = 4, 3
    assert first(shared, key) == "b"
    # A call without a key goes to the least loaded.
    a.in_flight, b.in_flight = 3, 1
    assert first(router, "") == "b"


def test_prefix_routing_sends_a_run_it_never_saw_where_any_replica_would():
    """Two replicas whose views differ (each saw another prompt go to another
    engine) agree on a new run: its rendezvous choice among the endpoints in
    balance, not whichever cache holds least in one replica's view."""
    def replica(saw: str, replicas: int = 2) -> Router:
        router = Router(endpoints("a", "b", replicas=replicas, cache_tokens=100_000), "prefix", replicas)
        router.sent(named(router)[saw], prefix.block_hashes(words(f"other {saw}", 3000)))
        return router

    one, two = replica("a"), replica("b")
    chosen = set()
    for i in range(20):
        hashes = prefix.block_hashes(words(f"run {i}", 1500))  # new everywhere
        here = one.candidates(MODEL, f"run-{i}", hashes)[0].name
        assert two.candidates(MODEL, f"run-{i}", hashes)[0].name == here, i
        chosen.add(here)
    assert chosen == {"a", "b"}
    # Without a session there is no run to follow: where the cache holds least.
    hashes = prefix.block_hashes(words("anonymous", 1500))
    assert one.candidates(MODEL, "", hashes)[0].name == "b"
    assert two.candidates(MODEL, "", hashes)[0].name == "a"
    # So it is for every call of a lone replica (AIOS_LLM_REPLICAS=1), as before.
    alone = replica("a", replicas=1)
    assert {alone.candidates(MODEL, f"run-{i}", hashes)[0].name for i in range(20)} == {"b"}


def test_hash_routing_and_replicas_are_configured_at_start():
    config = Config.from_env({"AIOS_LLM_ROUTING": "hash", "AIOS_LLM_REPLICAS": "3"})
    assert config.routing == "hash" and config.replicas == 3
    assert Config.from_env({}).replicas == 1
    for bad in ("0", "-1", "two"):
        with pytest.raises(ConfigError, match="AIOS_LLM_REPLICAS"):
            Config.from_env({"AIOS_LLM_REPLICAS": bad})
    # Each replica's share of an endpoint: max_concurrency // replicas, at least one.
    assert [endpoints("a", concurrency=4, replicas=r)[0].slots for r in (1, 2, 3, 8)] == [4, 2, 1, 1]


# ----------------------------------------------- replicas over real engines


async def gauge(server, name: str, **labels) -> float | None:
    """A sample of llm_core's Prometheus metrics, as scraped."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{server.metrics_port}/metrics") as r:
            text = await r.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return sample.value
    return None


@pytest.mark.parametrize("routing", ["hash", "prefix"])
async def test_two_replicas_send_each_run_to_one_engine(routing: str):
    """40 agent runs over three engines with prefix caches, each run's turns
    sent alternately through two llm_core replicas: every run stays on one
    engine, which finds the run's history cached on every later turn, and
    the runs are spread over all three. Prefix routing agrees too while the
    runs share no prompt: a replica that never saw a run finds nothing of it
    cached and takes the run's rendezvous choice, as the other did."""
    async with simulators(CACHED, CACHED, CACHED) as sims:
        eps = [endpoint(sim, name, 8, cache_tokens=100_000) for sim, name in zip(sims, "abc")]
        env = {"AIOS_LLM_ROUTING": routing, "AIOS_LLM_REPLICAS": "2"}
        async with replica(eps, **env) as (one, _), replica(eps[::-1], **env) as (two, _):
            runs = {f"run-{i}": [("system", words(f"own-{i}", 600)), ("user", f"task {i}")] for i in range(40)}
            served: dict[str, set[str]] = {run: set() for run in runs}
            last: dict[str, int] = {}
            for turn in range(3):
                for i, (run, messages) in enumerate(runs.items()):
                    stub = (one, two)[(i + turn) % 2]  # half the runs start on each replica
                    reply = await stub.Generate(call(messages, session_id=run))
                    served[run].add(reply.endpoint)
                    if turn:
                        # The whole previous prompt is cached (to the block).
                        assert reply.usage.cached_prompt_tokens >= last[run] - 16, (run, turn)
                    last[run] = reply.usage.prompt_tokens
                    messages += [("assistant", reply.text), ("user", f"observation {turn}")]
        assert all(len(engines) == 1 for engines in served.values()), served
        runs_per_engine = Counter(engine for engines in served.values() for engine in engines)
        assert set(runs_per_engine) == {"a", "b", "c"} and min(runs_per_engine.values()) >= 5, runs_per_engine
        # The engines ran what the replies say: three turns of each of their runs.
        assert [s.engine.metrics()["requests_served"] for s in sims] == [3 * runs_per_engine[n] for n in "abc"]


async def test_a_run_whose_engine_goes_moves_to_the_same_engine_through_either_replica():
    async with simulators(FAST, FAST, FAST) as sims:
        eps = [endpoint(sim, name) for sim, name in zip(sims, "abc")]
        async with replica(eps, AIOS_LLM_ROUTING="hash") as (one, _), \
                replica(eps, AIOS_LLM_ROUTING="hash") as (two, _):
            runs = [f"run-{i}" for i in range(30)]

            async def through_both(run: str) -> set[str]:
                return {(await stub.Generate(request(4, content=f"task {run}", session_id=run),
                                             timeout=10)).endpoint for stub in (one, two)}

            before = {run: await through_both(run) for run in runs}
            assert all(len(engines) == 1 for engines in before.values())
            await sims[1].stop()  # "b" goes
            after = {run: await through_both(run) for run in runs}
    assert {"a", "b", "c"} == {e for engines in before.values() for e in engines}
    for run in runs:
        if before[run] != {"b"}:
            assert after[run] == before[run], run  # the others stay
        else:
            assert len(after[run]) == 1 and after[run] != {"b"}, run  # both replicas agree on the next
    assert {run for run in runs if before[run] == {"b"}}, "no run was on b"


async def test_a_replica_keeps_to_its_share_of_an_engine():
    """AIOS_LLM_REPLICAS=2 and max_concurrency 4: one replica never has more
    than 2 calls on the engine; a third waits in llm_core and is served when
    a slot frees; a waiting call whose deadline passes gets DEADLINE_EXCEEDED
    without reaching the engine. ListModels still says 4, the engine's."""
    async with simulators(SLOW) as (sim,), \
            replica([endpoint(sim, "a", 4)], AIOS_LLM_REPLICAS="2", AIOS_LLM_METRICS_PORT="0") as (stub, server):
        m = sim.engine.metrics
        # 300 tokens, 3 s: they finish by themselves, the engine's slot freed
        # before the answer reaches llm_core.
        held = [asyncio.ensure_future(stub.Generate(request(300, content="long"), timeout=60)),
                asyncio.ensure_future(_collect(stub.GenerateStream(request(300, content="long stream"), timeout=60)))]
        await wait_until(lambda: m()["running"] == 2, what="both held")
        third = asyncio.ensure_future(stub.Generate(request(3, content="third"), timeout=60))
        await wait_until(lambda: gauge(server, "aios_llm_waiting_calls", model=MODEL), what="the third waiting")
        assert m()["requests_received"] == 2
        assert await gauge(server, "aios_llm_endpoint_in_flight", endpoint="a") == 2
        assert await gauge(server, "aios_llm_endpoint_slots", endpoint="a") == 2
        assert await gauge(server, "aios_llm_endpoint_capacity", endpoint="a") == 4
        listed = (await stub.ListModels(pb.ListModelsRequest())).models
        (ep,) = [model.endpoints[0] for model in listed if model.name == MODEL]
        assert ep.max_concurrency == 4 and ep.in_flight == 2

        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.Generate(request(3, content="late"), timeout=0.3)
        assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await wait_until(lambda: _equals(gauge(server, "aios_llm_waiting_calls", model=MODEL), 1),
                         what="the late call gone from the queue")
        assert m()["requests_received"] == 2 and not third.done()

        reply = await third
        assert reply.endpoint == "a" and reply.usage.completion_tokens == 3
        assert [r.usage.completion_tokens for r in (await held[0], (await held[1])[1])] == [300, 300]
        assert m()["peak_running"] == 2 and m()["requests_received"] == 3
        await wait_until(lambda: _equals(gauge(server, "aios_llm_endpoint_in_flight", endpoint="a"), 0),
                         what="every slot freed")


async def test_calls_wait_for_a_slot_in_arrival_order_until_their_deadline():
    """One slot (max_concurrency 2 shared by 2 replicas): calls beyond wait,
    first come first served; one whose deadline passes says why."""
    async with simulators(SLOW) as (sim,):
        engine = LlmEngine([EndpointConfig(**endpoint(sim, "a", 2))], replicas=2)
        try:
            def chat(content: str, tokens: int) -> ChatRequest:
                return ChatRequest(model=MODEL, messages=[{"role": "user", "content": content}], max_tokens=tokens)

            hold = asyncio.ensure_future(engine.generate(chat("hold", 200)))  # 2 s
            await wait_until(lambda: sim.engine.metrics()["running"] == 1, what="the slot taken")
            done: list[int] = []
            waiters = []
            for i in range(3):
                waiters.append(asyncio.ensure_future(engine.generate(chat(f"waiter {i}", 3))))
                waiters[-1].add_done_callback(lambda _, i=i: done.append(i))
                await wait_until(lambda: engine.waiting()[MODEL] == len(waiters), what=f"waiter {i} queued")
            with pytest.raises(errors.DeadlineExceeded) as exc:
                await engine.generate(chat("late", 3), time.monotonic() + 0.2)
            assert exc.value.reason == "ENDPOINTS_BUSY" and "waited for a free slot" in exc.value.message
            assert "a 1/1" in exc.value.message and "AIOS_LLM_REPLICAS" in exc.value.message
            assert engine.waiting()[MODEL] == 3
            await asyncio.gather(hold, *waiters)
            assert done == [0, 1, 2]
            assert sim.engine.metrics()["peak_running"] == 1
            assert engine.endpoints[0].in_flight == 0 and engine.waiting()[MODEL] == 0
        finally:
            await engine.close()


async def _equals(value, expected) -> bool:
    return await value == expected
