"""Checks of the benchmark's own measuring tools (not part of `make test`):

    .venv/bin/python -m pytest -q bench/test_bench.py
"""

from __future__ import annotations

import asyncio

import pytest

from bench.backends import Backend, best_hit_rate, ideal_bound
from bench.profiling import summarize_raw
from bench.simulator import EngineConfig, SimulatorServer
from bench.stats import jain, pct, summary
from bench.ways import DirectWay
from bench.workload import Call, Workload, run_agent


def test_jain_index_bounds():
    assert jain([3.0, 3.0, 3.0]) == pytest.approx(1.0)
    assert jain([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)
    assert 0.25 < jain([4.0, 1.0, 1.0, 1.0]) < 1.0


def test_percentiles_are_nearest_rank():
    values = list(range(1, 101))
    assert pct(values, 0.5) == 50
    assert pct(values, 0.99) == 99
    assert pct(values, 1.0) == 100
    assert summary([1.0, 2.0, 3.0])["mean"] == 2.0


def test_agents_are_deterministic_and_mixed():
    w = Workload(agents=64)
    assert w.agent(5) == w.agent(5)
    assert w.agent(5).task != w.agent(6).task
    specs = [w.agent(i) for i in range(64)]
    assert sum(s.uses_tools for s in specs) == 8
    assert sum(s.priority for s in specs) == 8
    assert all(32 <= t <= 64 for s in specs for t in s.output_tokens)


def _calls(agents: int, steps: int, prompt0: int, growth: int, out: int) -> list[Call]:
    return [Call(agent=a, step=k, start=0, end=0, prompt_tokens=prompt0 + k * growth, completion_tokens=out)
            for a in range(agents) for k in range(steps)]


def test_ideal_bound_single_agent_is_its_critical_path():
    b = Backend("t", time_scale=1.0)
    bound = ideal_bound(b, _calls(1, 2, 100, 150, 10), agents=1)
    cfg = EngineConfig()
    step = cfg.base_step_ms + cfg.per_seq_ms  # batch of one
    expected = ((100 + 250) * cfg.prefill_ms_per_token + 20 * step) / 1000
    assert bound["critical_path_s"] == pytest.approx(expected, abs=1e-3)
    assert bound["ideal_s"] == pytest.approx(expected, abs=1e-3)


def test_ideal_bound_grows_with_agents_and_shrinks_with_cache_and_replicas():
    calls = _calls(512, 4, 300, 200, 48)
    one = ideal_bound(Backend("one"), calls, agents=512)
    four = ideal_bound(Backend("four", replicas=4), calls, agents=512)
    cached = ideal_bound(Backend("cached", replicas=4, prefix_cache=True), calls, agents=512, system_tokens=100)
    assert one["throughput_bound_s"] > one["critical_path_s"]
    assert four["throughput_bound_s"] == pytest.approx(one["throughput_bound_s"] / 4, abs=1e-3)
    assert cached["prefill_tokens"] < four["prefill_tokens"]
    assert cached["ideal_s"] < four["ideal_s"]


async def test_no_run_beats_the_ideal_bound():
    """Agents calling the simulator directly never finish before the bound."""
    backend = Backend("t", time_scale=0.05, max_num_seqs=8)
    async with SimulatorServer(backend.engine_config()) as srv:
        way = DirectWay([srv.url], "sim", 16, "t")
        gate = asyncio.Event()
        workload = Workload(agents=16, steps=2, tool_every=0)
        loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(run_agent(workload.agent(i), way, gate)) for i in range(16)]
        t0 = loop.time()
        gate.set()
        results = await asyncio.gather(*tasks)
        makespan = loop.time() - t0
        await way.close()
    assert not any(r.failed or r.errors for r in results)
    calls = [c for r in results for c in r.calls]
    assert len(calls) == 32
    bound = ideal_bound(backend, calls, agents=16, system_tokens=workload.shared_prefix_tokens())
    assert makespan >= bound["ideal_s"]


def test_system_prompts_share_what_their_type_shares():
    own = Workload(agents=8, system_chars=2000)
    typed = Workload(agents=8, system_chars=2000, shared_chars=1500, agent_types=4)
    assert len(own.agent(0).system) == 2000 and own.agent(0).system[:64] != own.agent(4).system[:64]
    a, b, c = typed.agent(1), typed.agent(5), typed.agent(2)
    assert a.system[:1500] == b.system[:1500] != c.system[:1500]  # types 1, 1, 2
    assert a.system[1500:] != b.system[1500:]  # each agent's own part
    assert Workload(agents=1).agent(0).system == Workload(agents=1).agent(3).system  # the default: one prompt


async def test_sticky_callers_and_the_best_hit_rate():
    """Sticky callers keep agent i on replica i mod 2; no run's cache hits
    exceed the workload's best possible hit rate, and sharing a prompt raises it."""
    backend = Backend("t", time_scale=0.0, prefix_cache=True)
    rates = {}
    for shared in (0, 1500):
        async with SimulatorServer(backend.engine_config()) as one, SimulatorServer(backend.engine_config()) as two:
            way = DirectWay([one.url, two.url], "sim", 8, "t", sticky=True)
            workload = Workload(agents=8, steps=3, tool_every=0, system_chars=2000, shared_chars=shared)
            gate = asyncio.Event()
            tasks = [asyncio.create_task(run_agent(workload.agent(i), way, gate)) for i in range(8)]
            gate.set()
            results = await asyncio.gather(*tasks)
            await way.close()
            served = [s.engine.metrics()["requests_served"] for s in (one, two)]
            hit = sum(s.engine.metrics()["prefix_cache_hit_tokens"] for s in (one, two))
        calls = [c for r in results for c in r.calls]
        assert served == [12, 12]
        best = best_hit_rate(calls)
        prompt = sum(c.prompt_tokens for c in calls)
        assert hit / prompt <= best + 1e-9
        rates[shared] = best
    assert rates[1500] > rates[0] > 0


def test_profile_summary_groups_samples():
    raw = "\n".join([
        "run (services/runtime/server.py:127);Kernel._run (services/scheduler/kernel.py:256);"
        "record (services/scheduler/records.py:60) 3",
        "run (services/runtime/server.py:127);UnaryUnaryCall._invoke (grpc/aio/_call.py:595) 1",
    ])
    s = summarize_raw(raw)
    assert s["samples"] == 4
    areas = dict(s["by_area_self"])
    assert areas["kernel: services/scheduler"] == pytest.approx(0.75)
    assert areas["grpc (Python layer)"] == pytest.approx(0.25)
    inclusive = dict(s["top_inclusive_kernel_code"])
    assert inclusive["Kernel._run (services/scheduler/kernel.py)"] == pytest.approx(0.75)


def test_overhead_section_sets_the_kernel_against_a_bare_grpc_hop(tmp_path):
    from bench.report import overhead_section
    path = {"p50_ms": 1.0, "p99_ms": 2.0, "mean_ms": 1.2}
    seq = {"calls": 10, "http_engine": path, "llm_core": path, "grpc_hop": path, "kernel": path,
           "kernel_overhead_p50_ms": 3.0, "kernel_overhead_p99_ms": 4.0, "kernel_cpu_ms_per_syscall": 2.5,
           "grpc_hop_overhead_p50_ms": 1.75, "grpc_hop_overhead_p99_ms": 2.0}
    text = "\n".join(overhead_section(seq, [], tmp_path, "t-"))
    assert "grpc_hop (llm_core behind a bare gRPC relay)" in text
    assert "adds p50 **1.75 ms**" in text
    assert "adds 1.250 ms at p50 above that floor" in text


def test_the_replica_model_adds_the_hop_and_the_commit_wait():
    from bench.report_replicas import Costs, best_split

    c = Costs(kernel_owner=2.0, hop=2.0, llm_core=1.0, postgres=0.5, load=0.1, commits=2.0, commit_wait=0.5,
              fast_commit_wait=0.1, replicas_measured=[1, 2])
    assert c.kernel(2, "any") == pytest.approx(3.0) and c.kernel(2, "owner") == 2.0
    assert c.replica_rate(2, "owner") == pytest.approx(1000 / 3)  # 2 ms of CPU + 2 commits of 0.5 ms
    split = best_split(c, 4, "owner")  # at most 2 kernel cores: llm_core and PostgreSQL need one each
    assert (split.kernels, split.llm_cores, split.postgres, split.bound) == (2, 1, 1, "kernel replicas")
    assert split.rate == pytest.approx(2000 / 3)


@pytest.mark.timeout(600)
async def test_a_tiny_replicas_run_measures_and_reports(tmp_path):
    """bench/replicas.py with N = 1 and 2 and four agents: every call
    succeeds, only the calls of agents owned elsewhere are forwarded, and
    the report with its model is written."""
    from bench import replicas, report_replicas
    from services.scheduler.cluster import owner

    results = await replicas.run(agents=4, calls=3, rounds=1, replicas=(1, 2), two_llm_cores=False)
    rows = {r["label"]: r for r in results["runs"]}
    assert list(rows) == ["1 replica, sqlite", "1 replica, postgresql", "2 replicas, postgresql, via any replica",
                          "2 replicas, postgresql, to the owner"]
    for r in rows.values():
        assert r["succeeded"] == r["syscalls"] == 12 and not r["errors"]
        assert r["kernel_cpu_ms_per_syscall"] > 0 and len(r["replica_cpu_ms_per_syscall"]) == r["replicas"]
    elsewhere = sum(owner(f"agent-{i}", ["k1", "k2"]) != f"k{i % 2 + 1}" for i in range(4)) / 4
    assert rows["2 replicas, postgresql, via any replica"]["forwarded_fraction"] == elsewhere
    assert rows["2 replicas, postgresql, to the owner"]["forwarded_fraction"] == 0
    assert rows["1 replica, postgresql"]["journal_commits_per_syscall"] > 0
    report_replicas.build({"command": "test", "time": "now", **results}, tmp_path / "report.md")
    text = (tmp_path / "report.md").read_text()
    assert "2 replicas, postgresql, to the owner" in text and "A model for larger machines" in text
