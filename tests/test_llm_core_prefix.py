"""Prefix-aware routing: llm_core over serving simulators with prefix caches
(bench/simulator, in process, on free ports). The simulator reports the
prompt tokens its cache served, so each test reads from the engines
themselves whether a call landed where its prefix was.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from aios.common.v1 import llm_pb2 as lc
from bench.simulator.engine import EngineConfig
from services.llm_core import prefix
from services.llm_core.config import Config, ConfigError
from tests.support.llm import generate
from tests.test_llm_core_routing import MODEL, endpoint, llm_core, simulators, wait_until

CACHED = EngineConfig(time_scale=0.0, prefix_cache=True)
SLOW_CACHED = EngineConfig(time_scale=1.0, prefix_cache=True)  # 10 ms a token: calls stay in flight


def words(seed: str, chars: int) -> str:
    rng = random.Random(seed)
    out = ""
    while len(out) < chars:
        out += rng.choice(("alpha", "beta", "gamma", "delta", "omega", "kernel", "batch")) + " "
    return out[:chars]


def call(messages: list[tuple[str, str]], max_tokens: int = 8, **kw):
    roles = {"system": lc.ROLE_SYSTEM, "user": lc.ROLE_USER, "assistant": lc.ROLE_ASSISTANT}
    return generate(model=MODEL, messages=[lc.Message(role=roles[r], content=c) for r, c in messages],
                    max_tokens=max_tokens, **kw)


def test_block_hashes_name_prefixes():
    a = prefix.block_hashes("x" * 64 + "y" * 64 + "z" * 10)
    b = prefix.block_hashes("x" * 64 + "y" * 64 + "w" * 70)
    c = prefix.block_hashes("q" * 64 + "y" * 64)
    assert len(a) == 2 and len(b) == 3  # whole blocks only
    assert a == b[:2]  # the same prefix, the same names
    assert c[1] != a[1]  # a block is named by everything before it too
    longer = "x" * 64 + "y" * 64 + "z" * 200
    assert prefix.block_hashes(longer, a) == prefix.block_hashes(longer)  # a known prefix is not hashed again


def test_the_index_forgets_least_recently_used_blocks_first():
    index = prefix.PrefixIndex(capacity_tokens=10 * prefix.BLOCK_CHARS // prefix.CHARS_PER_TOKEN)
    old = prefix.block_hashes(words("old", 6 * 64))
    new = prefix.block_hashes(words("new", 6 * 64))
    index.insert(old)
    assert index.match(old) == 6 and len(index) == 6
    index.insert(new)
    assert len(index) == 10  # bounded by the engine's cache
    assert index.match(new) == 6
    assert index.match(old) == 0  # its first blocks went first
    index.evict(new[3:])
    assert index.match(new) == 3


def test_cache_tokens_and_routing_are_checked_at_start():
    base = {"name": "a", "model": "m", "base_url": "http://127.0.0.1:1/v1"}
    for bad in (-1, "100k", True, 1.5):
        with pytest.raises(ConfigError, match="cache_tokens"):
            Config.from_env({"AIOS_LLM_ENDPOINTS": __import__("json").dumps([{**base, "cache_tokens": bad}])})
    with pytest.raises(ConfigError, match="AIOS_LLM_ROUTING"):
        Config.from_env({"AIOS_LLM_ROUTING": "random"})
    config = Config.from_env({"AIOS_LLM_ENDPOINTS": __import__("json").dumps([{**base, "cache_tokens": 0}, {**base, "name": "b"}])})
    assert config.endpoints[0].cache_tokens == 0 and config.endpoints[1].cache_tokens is None
    assert config.routing == "prefix"


async def test_conversations_stay_where_their_history_is_cached():
    """Four conversations without session ids, turns interleaved: each stays
    on one engine (its history is a prefix of its next prompt), new ones
    spread over the engines, and every later turn finds its history cached."""
    async with simulators(CACHED, CACHED) as sims, \
            llm_core([endpoint(sims[0], "a", cache_tokens=100_000),
                      endpoint(sims[1], "b", cache_tokens=100_000)]) as stub:
        talks = {i: [("system", words(f"own-{i}", 1500)), ("user", f"task {i}")] for i in range(4)}
        seen: dict[int, set[str]] = {i: set() for i in talks}
        last: dict[int, int] = {}
        for turn in range(4):
            for i, messages in talks.items():
                reply = await stub.Generate(call(messages))
                seen[i].add(reply.endpoint)
                if turn:
                    # The whole previous prompt is cached (to the block).
                    assert reply.usage.cached_prompt_tokens >= last[i] - 16, (i, turn)
                last[i] = reply.usage.prompt_tokens
                messages += [("assistant", reply.text), ("user", f"observation {turn}: " + words(f"o{i}{turn}", 100))]
        assert all(len(s) == 1 for s in seen.values()), seen
        assert {e for s in seen.values() for e in s} == {"a", "b"}  # spread, not piled on one


async def test_agents_that_share_a_prompt_go_where_it_is_cached():
    """Different agent runs sharing a long prompt (one agent type's
    instructions and tools) find it cached: they go to the engine that holds
    it while its load allows, though the other engine is idle."""
    shared = words("instructions", 2000)
    async with simulators(CACHED, CACHED) as sims, \
            llm_core([endpoint(sims[0], "a", cache_tokens=100_000),
                      endpoint(sims[1], "b", cache_tokens=100_000)]) as stub:
        first = await stub.Generate(call([("system", shared), ("user", "task 0")], session_id="run-0"))
        others = [await stub.Generate(call([("system", shared), ("user", f"task {i}")], session_id=f"run-{i}"))
                  for i in range(1, 7)]
        assert {r.endpoint for r in others} == {first.endpoint}
        assert all(r.usage.cached_prompt_tokens >= 480 for r in others)  # the 500-token prompt, in blocks
        served = [s.engine.metrics()["requests_served"] for s in sims]
        assert sorted(served) == [0, 7]


async def test_a_loaded_holder_gives_way_to_an_idle_engine():
    """The endpoint holding the prefix takes the call while it is in balance
    with the least loaded one (here: at most BALANCE_ABS x 8 = 2 calls more
    in flight), not beyond."""
    shared = words("instructions", 2000)
    async with simulators(SLOW_CACHED, SLOW_CACHED) as sims, \
            llm_core([endpoint(sims[0], "a", 8, cache_tokens=100_000),
                      endpoint(sims[1], "b", 8, cache_tokens=100_000)]) as stub:
        first = await stub.Generate(call([("system", shared), ("user", "warm")], max_tokens=1))
        held = []

        async def hold(i: int) -> str:
            stream = stub.GenerateStream(call([("system", shared), ("user", f"long {i}")], 2000), timeout=60)
            held.append(stream)
            await stream.read()  # its first token: it holds a slot now
            return [s.engine.metrics()["running"] for s in sims]

        holder = 0 if first.endpoint == "a" else 1
        assert (await hold(0))[holder] == 1
        within = await stub.Generate(call([("system", shared), ("user", "within")], max_tokens=1))
        assert within.endpoint == first.endpoint and within.usage.cached_prompt_tokens >= 480
        assert (await hold(1))[holder] == 2
        assert (await hold(2))[holder] == 3  # 2 more than the other: still in balance
        beyond = await stub.Generate(call([("system", shared), ("user", "beyond")], max_tokens=1))
        assert beyond.endpoint != first.endpoint  # 3 against 0: out of balance
        for stream in held:
            stream.cancel()
        await wait_until(lambda: all(s.engine.metrics()["running"] == 0 for s in sims), what="slots freed")


async def test_session_routing_is_kept_for_engines_without_a_prefix_cache():
    async with simulators(CACHED, CACHED) as sims, \
            llm_core([endpoint(sims[0], "a", cache_tokens=0), endpoint(sims[1], "b", cache_tokens=0)]) as stub:
        replies = await asyncio.gather(*(stub.Generate(call([("user", f"q{i}")], session_id=f"s{i}"))
                                         for i in range(8)))
        assert {r.endpoint for r in replies} == {"a", "b"}  # by load alone
