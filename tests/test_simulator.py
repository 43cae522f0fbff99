"""Tests for the serving simulator (bench/simulator).

Servers run in-process on port 0 with small time scales; nothing waits on a
fixed sleep -- conditions are polled with a deadline (``wait_until``).
"""

from __future__ import annotations

import asyncio
import functools
import math

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from bench.simulator.engine import (
    Engine,
    EngineConfig,
    PrefixCache,
    block_hashes,
    output_text,
    parse_messages,
)
from bench.simulator.server import SimulatorServer
from tests.support.polling import until

FAST = 0.01   # 100x faster than "real": a default step is ~0.1 ms


def client_for(srv: SimulatorServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=srv.url, api_key="sim", max_retries=0, timeout=30)


# Polled often: the engine's states under test last a few steps.
wait_until = functools.partial(until, timeout=10.0, interval=0.002)


async def get_metrics(session: aiohttp.ClientSession, srv: SimulatorServer) -> dict:
    async with session.get(f"http://127.0.0.1:{srv.port}/metrics") as r:
        assert r.status == 200
        return await r.json()


USER = [{"role": "user", "content": "Tell me about continuous batching."}]


# --------------------------------------------------------------- pure model


def test_peak_throughput_formula():
    e = Engine(EngineConfig())           # defaults: 10 ms + 0.1 ms x 256
    assert e.peak_throughput_tokens_per_s() == pytest.approx(256 / 0.0356)
    # KV-limited batch: 400k tokens / 4000 tokens per sequence = 100 seqs.
    assert e.max_batch(4000) == 100
    assert e.peak_throughput_tokens_per_s(4000) == pytest.approx(100 / 0.020)
    # Time scale divides wall-clock time.
    fast = Engine(EngineConfig(time_scale=0.5))
    assert fast.peak_throughput_tokens_per_s() == pytest.approx(2 * 256 / 0.0356)
    ideal = e.ideal_time_s(prompt_tokens=10_000, output_tokens=7191)
    assert ideal == pytest.approx(10_000 * 0.05e-3 + 7191 / (256 / 0.0356))
    assert math.isinf(Engine(EngineConfig(time_scale=0)).peak_throughput_tokens_per_s())


def test_text_helpers():
    p = parse_messages([{"role": "user", "content": "hi"}])
    p2 = parse_messages([{"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "a b c"}])
    assert p2.seed == p.seed and p2.resume_words == 3 and p2.first_space
    assert p2.prompt_tokens > p.prompt_tokens
    full = output_text(p.seed, 0, 10, False)
    assert len(full.split()) == 10
    assert output_text(p.seed, 0, 4, False) + output_text(p.seed, 4, 6, True) == full
    # Prefix blocks: equal prefixes give equal cumulative hashes.
    a = block_hashes("x" * 200 + "A" * 100, 4, 16)
    b = block_hashes("x" * 200 + "B" * 100, 4, 16)
    assert len(a) == 4 and a[:3] == b[:3] and a[3] != b[3]
    c = PrefixCache(capacity_blocks=3)
    c.insert(a)
    assert len(c) == 3 and c.match(a) == 0 and c.match(a[1:]) == 3


# ------------------------------------------------------------------- server


async def test_openai_client_non_stream_and_stream():
    async with SimulatorServer(EngineConfig(time_scale=FAST)) as srv:
        client = client_for(srv)
        models = await client.models.list()
        assert models.data[0].id == srv.config.model

        resp = await client.chat.completions.create(model="m", messages=USER, max_tokens=12)
        assert resp.object == "chat.completion"
        assert resp.choices[0].message.role == "assistant"
        assert resp.choices[0].finish_reason == "length"
        text = resp.choices[0].message.content
        assert len(text.split()) == 12
        assert resp.usage.completion_tokens == 12
        assert resp.usage.prompt_tokens == parse_messages(USER).prompt_tokens
        assert resp.usage.total_tokens == resp.usage.prompt_tokens + 12
        assert resp.usage.prompt_tokens_details.cached_tokens == 0

        stream = await client.chat.completions.create(
            model="m", messages=USER, max_tokens=12, stream=True,
            stream_options={"include_usage": True})
        pieces, finish, usage, roles = [], None, None, []
        async for chunk in stream:
            assert chunk.object == "chat.completion.chunk"
            if chunk.usage is not None:
                assert chunk.choices == []
                usage = chunk.usage
                continue
            delta = chunk.choices[0].delta
            if delta.role:
                roles.append(delta.role)
            if delta.content:
                pieces.append(delta.content)
            if chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        assert roles == ["assistant"]
        assert len(pieces) == 12                  # one chunk per token
        assert "".join(pieces) == text            # stream == non-stream
        assert finish == "length"
        assert usage.completion_tokens == 12 and usage.prompt_tokens == resp.usage.prompt_tokens

        # Without include_usage there is no usage chunk.
        stream = await client.chat.completions.create(
            model="m", messages=USER, max_tokens=3, stream=True)
        chunks = [c async for c in stream]
        assert all(c.usage is None for c in chunks)
        await client.close()


async def test_determinism_and_default_length():
    cfg = EngineConfig(time_scale=FAST, default_output_tokens=9)
    async with SimulatorServer(cfg) as srv:
        client = client_for(srv)
        r1, r2, r3 = await asyncio.gather(
            client.chat.completions.create(model="m", messages=USER, max_tokens=20),
            client.chat.completions.create(model="m", messages=USER, max_tokens=20),
            client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "something else"}],
                max_tokens=20))
        assert r1.choices[0].message.content == r2.choices[0].message.content
        assert r1.choices[0].message.content != r3.choices[0].message.content
        # No max_tokens: default_output_tokens words, finish_reason "stop",
        # and the text is a prefix of the longer generation.
        r4 = await client.chat.completions.create(model="m", messages=USER)
        assert r4.choices[0].finish_reason == "stop"
        assert r4.usage.completion_tokens == 9
        assert r1.choices[0].message.content.startswith(r4.choices[0].message.content)
        await client.close()


async def test_resume_continues_uninterrupted_text():
    async with SimulatorServer(EngineConfig(time_scale=FAST, default_output_tokens=30)) as srv:
        client = client_for(srv)
        full = (await client.chat.completions.create(
            model="m", messages=USER, max_tokens=30)).choices[0].message.content
        words = full.split()
        # "Preempted" after 11 tokens: resume with the partial answer as a
        # trailing assistant message and ask for the remaining 19.
        partial = " ".join(words[:11])
        msgs = USER + [{"role": "assistant", "content": partial}]
        cont = (await client.chat.completions.create(
            model="m", messages=msgs, max_tokens=19)).choices[0].message.content
        assert partial + cont == full
        # Same through streaming.
        stream = await client.chat.completions.create(
            model="m", messages=msgs, max_tokens=19, stream=True)
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert partial + streamed == full
        # Partial ending in whitespace: continuation starts without a space.
        cont2 = (await client.chat.completions.create(
            model="m", messages=USER + [{"role": "assistant", "content": partial + " "}],
            max_tokens=19)).choices[0].message.content
        assert partial + " " + cont2 == full
        # No max_tokens: the natural length counts the resumed words.
        cont3 = await client.chat.completions.create(model="m", messages=msgs)
        assert cont3.usage.completion_tokens == 19
        assert partial + cont3.choices[0].message.content == full
        await client.close()


async def test_batching_bound_respected():
    cfg = EngineConfig(time_scale=0.05, max_num_seqs=2)   # step ~0.5 ms
    async with SimulatorServer(cfg) as srv, aiohttp.ClientSession() as session:
        client = client_for(srv)
        seen_running, seen_waiting = [], []

        async def poll():
            while True:
                m = await get_metrics(session, srv)
                seen_running.append(m["running"])
                seen_waiting.append(m["waiting"])
                await asyncio.sleep(0)

        poller = asyncio.create_task(poll())
        results = await asyncio.gather(*[
            client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": f"request {i}"}], max_tokens=40)
            for i in range(6)])
        poller.cancel()
        assert all(r.usage.completion_tokens == 40 for r in results)
        assert max(seen_running) <= 2
        assert max(seen_waiting) >= 1          # the other requests queued
        m = await get_metrics(session, srv)
        assert m["peak_running"] == 2 and m["peak_waiting"] >= 1
        assert m["requests_served"] == 6 and m["running"] == 0 and m["kv_tokens_used"] == 0
        assert m["generation_tokens_total"] == 240
        # One token per sequence per step, at most two sequences per step.
        assert m["steps"] >= 120
        await client.close()


async def test_kv_admission_fifo():
    # Room for one 100-token sequence at a time even though 8 slots are free.
    e = Engine(EngineConfig(time_scale=0, kv_tokens=150, max_num_seqs=8))
    e.start()
    try:
        a = e.submit(50, 50)
        b = e.submit(50, 50)
        assert e.num_running == 1 and e.num_waiting == 1 and e.kv_tokens_used == 100
        await asyncio.wait_for(asyncio.gather(a.done, b.done), 10)
        assert a.generated == b.generated == 50
        assert e.peak_running == 1
    finally:
        await e.stop()


async def test_prefix_cache_hits_reported():
    cfg = EngineConfig(time_scale=FAST, prefix_cache=True)
    system = {"role": "system", "content": "You are a helpful agent. " * 40}   # ~250 tokens
    async with SimulatorServer(cfg) as srv, aiohttp.ClientSession() as session:
        client = client_for(srv)
        r1 = await client.chat.completions.create(
            model="m", messages=[system, {"role": "user", "content": "first question"}],
            max_tokens=8)
        assert r1.usage.prompt_tokens_details.cached_tokens == 0
        r2 = await client.chat.completions.create(
            model="m", messages=[system, {"role": "user", "content": "second question"}],
            max_tokens=8)
        cached = r2.usage.prompt_tokens_details.cached_tokens
        assert cached > 200 and cached % cfg.block_size == 0
        assert cached < r2.usage.prompt_tokens
        # Multi-turn: the previous answer is cached too, so the next turn
        # hits beyond the system prompt.
        turn2 = [system, {"role": "user", "content": "first question"},
                 {"role": "assistant", "content": r1.choices[0].message.content},
                 {"role": "user", "content": "follow-up"}]
        stream = await client.chat.completions.create(
            model="m", messages=turn2, max_tokens=8, stream=True,
            stream_options={"include_usage": True})
        usage = [c.usage async for c in stream if c.usage][0]
        assert usage.prompt_tokens_details.cached_tokens > cached
        m = await get_metrics(session, srv)
        assert m["prefix_cache_lookups"] == 3 and m["prefix_cache_hits"] == 2
        assert m["prefix_cache_hit_tokens"] == cached + usage.prompt_tokens_details.cached_tokens
        assert m["prefill_tokens_total"] == m["prompt_tokens_total"] - m["prefix_cache_hit_tokens"]
        async with session.get(f"http://127.0.0.1:{srv.port}/metrics?format=prometheus") as r:
            text = await r.text()
        assert "vllm:prefix_cache_hits_total" in text and "sim_prefix_cache_hits 2" in text
        await client.close()


async def test_503_past_max_waiting_and_disconnect_frees_slot():
    cfg = EngineConfig(time_scale=0.1, max_num_seqs=1, max_waiting=1)
    async with SimulatorServer(cfg) as srv, aiohttp.ClientSession() as session:
        client = client_for(srv)
        # A: a long streaming request occupying the only slot.
        stream_a = await client.chat.completions.create(
            model="m", messages=USER, max_tokens=50_000, stream=True)
        it = stream_a.__aiter__()
        await it.__anext__()                      # A is running
        # B: queued (non-streaming), sent raw so we can drop the connection.
        task_b = asyncio.create_task(session.post(
            srv.url + "/chat/completions",
            json={"model": "m", "messages": USER, "max_tokens": 5}))
        await wait_until(lambda: srv.engine.num_waiting == 1, what="B queued")
        # C: past max_waiting -> 503 with an OpenAI error body.
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(model="m", messages=USER, max_tokens=5)
        assert info.value.status_code == 503
        assert info.value.body["code"] == "server_overloaded"
        m = await get_metrics(session, srv)
        assert m["requests_rejected_503"] == 1 and m["running"] == 1 and m["waiting"] == 1

        # Drop B (non-stream disconnect while queued) -> leaves the queue.
        task_b.cancel()
        await wait_until(lambda: srv.engine.num_waiting == 0, what="B dropped")
        # Close A's stream -> its slot and KV are freed at once.
        await stream_a.close()
        await wait_until(lambda: srv.engine.num_running == 0, what="A dropped")
        m = await get_metrics(session, srv)
        assert m["kv_tokens_used"] == 0 and m["requests_aborted"] == 2
        assert m["generation_tokens_total"] < 50_000

        # D: a non-stream request that disconnects while running.
        task_d = asyncio.create_task(session.post(
            srv.url + "/chat/completions",
            json={"model": "m", "messages": USER, "max_tokens": 50_000}))
        await wait_until(lambda: srv.engine.num_running == 1, what="D running")
        task_d.cancel()
        await wait_until(lambda: srv.engine.num_running == 0, what="D dropped")
        assert srv.engine.kv_tokens_used == 0 and srv.engine.requests_aborted == 3

        # The slot is usable again.
        r = await client.chat.completions.create(model="m", messages=USER, max_tokens=5)
        assert r.usage.completion_tokens == 5
        await client.close()


async def test_bad_requests():
    cfg = EngineConfig(time_scale=FAST, kv_tokens=1000)
    async with SimulatorServer(cfg) as srv, aiohttp.ClientSession() as session:
        url = srv.url + "/chat/completions"
        for body, code in [
            ({"messages": []}, None),
            ({"messages": USER, "max_tokens": 0}, None),
            ({"messages": USER, "max_tokens": 5000}, "context_length_exceeded"),
        ]:
            async with session.post(url, json=body) as r:
                assert r.status == 400
                err = (await r.json())["error"]
                assert err["type"] == "invalid_request_error" and err["code"] == code
        async with session.get(f"http://127.0.0.1:{srv.port}/health") as r:
            assert r.status == 200


async def test_cli_replicas_and_sigterm():
    """`python -m bench.simulator --port 0 --replicas 2` prints one LISTENING
    line per replica, both serve, and SIGTERM exits cleanly."""
    import signal
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.simulator", "--port", "0", "--replicas", "2",
        "--time-scale", "0.01", cwd=str(root), stdout=asyncio.subprocess.PIPE)
    try:
        urls = []
        while len(urls) < 2:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line, "simulator exited early"
            if line.startswith("LISTENING "):
                urls.append(line.split()[1])
        assert len(set(urls)) == 2 and all(u.startswith("http://127.0.0.1:") for u in urls)
        for url in urls:
            client = AsyncOpenAI(base_url=url, api_key="sim", max_retries=0, timeout=30)
            r = await client.chat.completions.create(model="m", messages=USER, max_tokens=3)
            assert r.usage.completion_tokens == 3
            await client.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
