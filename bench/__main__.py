"""Benchmarks: many agents on shared LLMs, the kernel against direct calls.

    .venv/bin/python -m bench            # the full run (about an hour), report in docs/benchmarks.md
    .venv/bin/python -m bench --quick    # a smoke run (< 5 min), report in bench/results/quick/
    .venv/bin/python -m bench --url http://host:8000/v1 --url-model MODEL [--url-key-env VAR]
                                         # also run on a real OpenAI-compatible endpoint
    .venv/bin/python -m bench --report-only   # rebuild the report from the results file

Results are JSON lines (one per run) in bench/results/; the Markdown report
with its PNG plots is rebuilt from them at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import signal
import sys
import time
from pathlib import Path

from bench import report
from bench.backends import Backend
from bench.suite import Plan, Scenario, SharedServices, overhead_sweep, run_scenario
from bench.workload import Workload

ROOT = Path(__file__).resolve().parent.parent
# Long tool observations (web pages, files): prompts dominated by history,
# where a prefix cache pays off. Used on the four-replica backend.
HEADROOM = "kernel capacity 288"
PENDING = "pending limit raised"
LONG = (("observation_chars", (1600, 3200)),)
POLICIES = ("fifo", "round_robin", "priority", "fair_share", "agent_aware")


def full_plan(url_backend: Backend | None) -> tuple[Plan, Workload]:
    gpu1 = Backend("gpu1", max_waiting=256)
    gpu1u = Backend("gpu1-unbounded", max_waiting=0)
    gpu4 = Backend("gpu4-prefix", replicas=4, prefix_cache=True)
    # The same engine, llm_core allowed 12.5% more calls in flight than the
    # batch holds, so a freed slot is refilled from the engine's own queue.
    gpu1h = Backend("gpu1-headroom", max_waiting=256, kernel_capacity=288)
    s: list[Scenario] = []
    # The side-by-side core first: direct vs kernel at each N on one GPU.
    for n in (64, 256, 1000, 2000):
        s += [Scenario(gpu1, "direct", n), Scenario(gpu1, "kernel", n, "fifo", profile=(n == 1000)),
              Scenario(gpu1, "kernel", n, "agent_aware")]
    for n in (256, 1000, 2000):
        s += [Scenario(gpu4, "direct", n, workload=LONG), Scenario(gpu4, "kernel", n, "fifo", workload=LONG),
              Scenario(gpu4, "kernel", n, "agent_aware", workload=LONG)]
    overhead_after = len(s)
    s += [Scenario(gpu1h, "kernel", 1000, "fifo", note=HEADROOM),
          Scenario(gpu1h, "kernel", 1000, "agent_aware", note=HEADROOM)]
    # N = 2000 through the kernel again, with the kernel's gRPC server taking
    # every call of the burst (grpc.server.max_pending_requests raised).
    for b, extra in ((gpu1, ()), (gpu4, LONG)):
        s += [Scenario(b, "kernel", 2000, p, workload=extra, variant="pending_requests", note=PENDING)
              for p in ("fifo", "agent_aware")]
    s += [Scenario(gpu1, "direct", 1), Scenario(gpu1, "kernel", 1, "fifo"), Scenario(gpu1, "door", 1, "fifo")]
    for n in (256, 1000):
        s += [Scenario(gpu1, "kernel", n, p) for p in ("fair_share", "priority", "round_robin")]
        s.append(Scenario(gpu1, "door", n, "fifo"))
    s += [Scenario(gpu1u, "direct", 2000, note="engine queue unbounded"),
          Scenario(gpu1, "kernel", 2000, "fair_share", variant="pending_requests", note=PENDING),
          # Twice the batch in flight: the engine's own queue holds a full batch.
          Scenario(Backend("gpu1-headroom", max_waiting=256, kernel_capacity=512), "kernel", 1000, "fifo",
                   note="kernel capacity 512"),
          # Fair share again after its queue stopped scanning idle agents (commit 4cb2c2f).
          Scenario(gpu1, "kernel", 2000, "fair_share", variant="pending_requests",
                   note="pending limit raised, fair-share fix")]
    if url_backend is not None:
        s += [Scenario(url_backend, "direct", 64), Scenario(url_backend, "kernel", 64, "fifo"),
              Scenario(url_backend, "kernel", 64, "agent_aware")]
    plan = Plan(scenarios=s, overhead_ns=[1, 16, 64, 256, 1000, 2000], overhead_calls=3000,
                sequential_calls=500, overhead_after=overhead_after)
    return plan, Workload(agents=0)


# Prefix-aware routing and cache-aware scheduling: four engines with a
# 100k-token prefix cache each; every agent's system prompt is 2,000
# characters, of which some are shared: (a) none, (b) 1,500 by all agents,
# (c) 1,500 by each of four agent types. LLM calls only (no tools), so the
# runs measure where calls land and in what order.
PREFIX_WORKLOADS = {
    "a": (("steps", 5), ("system_chars", 2000), ("tool_every", 0)),
    "b": (("steps", 5), ("system_chars", 2000), ("shared_chars", 1500), ("tool_every", 0)),
    "c": (("steps", 5), ("system_chars", 2000), ("shared_chars", 1500), ("agent_types", 4), ("tool_every", 0)),
}
# The kernel before: session affinity in llm_core, no cache-aware order.
TODAY = (("routing", "session"),)
TODAY_KERNEL = (("cache_aware", "false"),)


# The four engines run at a third of real speed. At real speed their
# 256 agents finish calls faster than this machine's two cores can turn
# them round: in the load generator (sticky callers, the openai client) or
# in llm_core (the kernel's ways) each call costs about 10 ms of one core, so
# a burst of finished calls waits up to seconds for its next turn, the
# engines' LRU caches evict histories meanwhile, and the tables measured the
# CPU, not the routing (hit rates moved between 20% and 72% from run to run).
FOUR_ENGINES_SCALE = 3.0


def prefix_scenarios(scale: float = 1.0, n: int = 256) -> list[Scenario]:
    gpu4 = Backend("gpu4-cache100k", replicas=4, prefix_cache=True, prefix_cache_tokens=100_000,
                   time_scale=scale * FOUR_ENGINES_SCALE)
    s: list[Scenario] = []
    # The same three with long tool observations (fetched pages): the
    # histories of 64 agents per engine then outgrow its cache.
    workloads = {**PREFIX_WORKLOADS, **{f"{k}-long": (*wl, *LONG) for k, wl in PREFIX_WORKLOADS.items()}}
    for name, wl in workloads.items():
        s += [Scenario(gpu4, "direct", n, workload=wl, note=f"prefix-{name}"),
              Scenario(gpu4, "sticky", n, workload=wl, note=f"prefix-{name}"),
              Scenario(gpu4, "kernel", n, "fifo", workload=wl, note=f"prefix-{name} session affinity",
                       llm_settings=TODAY, kernel_settings=TODAY_KERNEL),
              Scenario(gpu4, "kernel", n, "fifo", workload=wl, note=f"prefix-{name} prefix-aware")]
    # One engine whose cache is smaller than the agents' working set: with a
    # batch of 64 the 256 agents take turns (the order decides what stays
    # cached); with 256 every agent runs at once and nothing waits.
    wl = PREFIX_WORKLOADS["a"]
    for batch in (64, 256):
        small = Backend(f"gpu1-cache50k-batch{batch}", max_num_seqs=batch, prefix_cache=True,
                        prefix_cache_tokens=50_000, time_scale=scale)
        s += [Scenario(small, "direct", n, workload=wl, note="cache-small"),
              Scenario(small, "kernel", n, "fifo", workload=wl, note="cache-small FIFO",
                       llm_settings=TODAY, kernel_settings=TODAY_KERNEL),
              Scenario(small, "kernel", n, "fifo", workload=wl, note="cache-small cache-aware")]
        if batch == 64:
            s.append(Scenario(small, "kernel", n, "agent_aware", workload=wl, note="cache-small cache-aware"))
    return s


def batch32_scenarios(scale: float = 1.0, ns=(64, 256, 1000)) -> list[Scenario]:
    """One engine, batch 32, no cache: how full the kernel keeps it."""
    batch32 = Backend("gpu1-batch32", max_num_seqs=32, max_waiting=0, time_scale=scale)
    wl = (("steps", 5),)
    return [Scenario(batch32, way, n, policy, workload=wl, note="batch32")
            for n in ns for way, policy in (("direct", ""), ("kernel", "fifo"), ("kernel", "agent_aware"))]


def prefix_plan(url_backend: Backend | None) -> tuple[Plan, Workload]:
    s = prefix_scenarios()
    # One engine, batch 32, no cache: how full the kernel keeps it.
    s += batch32_scenarios()
    plan = Plan(scenarios=s, overhead_ns=[1, 64, 256, 1000], overhead_calls=2000, sequential_calls=500,
                overhead_after=len(s))
    return plan, Workload(agents=0, steps=5)


def quick_plan(url_backend: Backend | None) -> tuple[Plan, Workload]:
    scale = 0.25
    gpu1 = Backend("gpu1", max_waiting=256, time_scale=scale)
    gpu4 = Backend("gpu4-prefix", replicas=4, prefix_cache=True, time_scale=scale)
    s: list[Scenario] = [Scenario(gpu1, "direct", 32)]
    s += [Scenario(gpu1, "kernel", 32, p) for p in POLICIES]
    s.append(Scenario(gpu1, "door", 32, "fifo"))
    s += [Scenario(gpu1, "direct", 384), Scenario(gpu1, "kernel", 384, "fifo", profile=True),
          Scenario(gpu1, "kernel", 384, "agent_aware"),
          Scenario(gpu4, "direct", 384, workload=LONG), Scenario(gpu4, "kernel", 384, "fifo", workload=LONG)]
    if url_backend is not None:
        s += [Scenario(url_backend, "direct", 16), Scenario(url_backend, "kernel", 16, "fifo")]
    plan = Plan(scenarios=s, overhead_ns=[1, 64, 384], overhead_calls=400, sequential_calls=100,
                overhead_after=len(s))
    return plan, Workload(agents=0, steps=3)


PLANS = {"full": full_plan, "quick": quick_plan, "prefix": prefix_plan}
REPORTS = {"full": "docs/benchmarks.md", "quick": "bench/results/quick/benchmarks.md",
           "prefix": "docs/benchmarks-prefix.md"}


def _report(plan: str):
    if plan == "prefix":
        from bench import report_prefix
        return report_prefix.build
    return report.build


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _line(rec: dict) -> str:
    ideal = f" ideal {rec['ideal_s']:.1f}s (x{rec['makespan_over_ideal']:.2f})" if rec.get("ideal_s") else ""
    ac = rec["agent_completion_s"]
    extra = ""
    if rec.get("kernel_cpu_ms_per_syscall") is not None:
        extra += f" kernel {rec['kernel_cpu_ms_per_syscall']} ms CPU/syscall"
    if rec.get("engine_cache_hit_rate") is not None:
        extra += f" cache hits {rec['engine_cache_hit_rate']:.0%}"
    return (f"{rec['backend']:>15} N={rec['agents']:<5} {rec['label']:<18} makespan {rec['makespan_s']:.1f}s{ideal}"
            f" | agents mean {ac['mean']}s p50 {ac['p50']}s p99 {ac['p99']}s | {rec['llm_calls_per_s']} calls/s"
            f" {rec['output_tokens_per_s']} out tok/s | Jain {rec['jain_fairness']} | errors {rec['errors']}"
            f" 503s {rec.get('backend_503', '-')} failed {rec['agents_failed']}{extra}")


async def run(args) -> int:
    url_backend = None
    if args.url:
        url_backend = Backend("url", url=args.url, model_id=args.url_model or "default",
                              api_key_env=args.url_key_env, max_num_seqs=args.url_concurrency)
    plan, base = PLANS[args.plan](url_backend)
    if args.only:
        keys = [k.strip() for k in args.only.split(",") if k.strip()]
        plan.scenarios = [s for s in plan.scenarios
                          if any(k in f"{s.backend.name}:{s.label}:{s.agents}:{s.note}" for k in keys)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    profile_dir = out.parent / "profiles"
    started = time.time()
    command = ("python -m bench" + (f" --plan {args.plan}" if args.plan != "full" else "")
               + (f" --only {args.only}" if args.only else ""))
    mode = "a" if args.append else "w"
    with out.open(mode) as f:
        def emit(rec: dict) -> None:
            f.write(json.dumps(rec) + "\n")
            f.flush()

        emit({"kind": "meta", "command": command, "quick": args.quick,
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
              "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()}})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # First signal: finish the current run, then stop; a second one kills.
            loop.add_signal_handler(sig, lambda s=sig: (stop.set(), loop.remove_signal_handler(s)))
        shared = SharedServices()
        print("starting memory, storage, SeaweedFS and the embedding llm_core ...", flush=True)
        await asyncio.to_thread(shared.start)
        try:

            async def sweep():
                if not plan.overhead_ns or args.skip_overhead:
                    return
                print("kernel overhead on an instant backend:", flush=True)
                for rec in await overhead_sweep(plan.overhead_ns, plan.overhead_calls, plan.sequential_calls):
                    emit(rec)

            for i, sc in enumerate(plan.scenarios):
                if i < args.start:
                    continue
                if stop.is_set():
                    print("stopping on request", flush=True)
                    break
                if i == plan.overhead_after and i >= args.start:
                    await sweep()
                base_workload = Workload(**{"agents": sc.agents, "steps": base.steps, **dict(sc.workload)})
                tag = f"r{i}t{int(time.time()) % 100000}"
                try:
                    rec = await run_scenario(sc, base_workload, shared, tag, profile_dir)
                except Exception as exc:  # noqa: BLE001 - record and go on with the next run
                    print(f"RUN FAILED {sc.backend.name} {sc.label} N={sc.agents}: {type(exc).__name__}: {exc}",
                          flush=True)
                    emit({"kind": "run_failed", "backend": sc.backend.name, "label": sc.label,
                          "agents": sc.agents, "error": f"{type(exc).__name__}: {exc}"})
                    continue
                emit(rec)
                print(_line(rec), flush=True)
            if plan.overhead_after >= len(plan.scenarios):
                await sweep()
        finally:
            await asyncio.to_thread(shared.stop)
        emit({"kind": "meta_end", "seconds": round(time.time() - started, 1)})
    print(f"results: {out} ({time.time() - started:.0f} s)", flush=True)
    _report(args.plan)(out, Path(args.report), command)
    print(f"report: {args.report}", flush=True)
    return 0


async def overhead_only(args) -> int:
    plan, _ = PLANS[args.plan](None)
    with Path(args.out).open("a") as f:
        for variant in ("", args.kernel_variant) if args.kernel_variant else ("",):
            print(f"kernel overhead on an instant backend{' with ' + variant if variant else ''}:", flush=True)
            for rec in await overhead_sweep(plan.overhead_ns, plan.overhead_calls, plan.sequential_calls, variant):
                rec["separate_run"] = True
                f.write(json.dumps(rec) + "\n")
                f.flush()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run in under five minutes (= --plan quick)")
    p.add_argument("--plan", choices=sorted(PLANS), default="full",
                   help="full (default); quick; prefix: the prefix-routing and cache-aware scheduling "
                        "runs and the one-engine batch-32 table (about 50 minutes)")
    p.add_argument("--out", help="JSON lines results (default bench/results/bench[-quick].jsonl)")
    p.add_argument("--report", help="Markdown report (default docs/benchmarks.md; quick: bench/results/quick/)")
    p.add_argument("--only", default="", help="comma-separated substrings of 'backend:label:N:note' to run")
    p.add_argument("--append", action="store_true", help="append to the results file instead of replacing it")
    p.add_argument("--from", dest="start", type=int, default=0,
                   help="resume the plan at this scenario index (with --append)")
    p.add_argument("--skip-overhead", action="store_true", help="skip the instant-backend overhead sweep")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from the results file")
    p.add_argument("--overhead-only", action="store_true",
                   help="only the instant-backend overhead sweep, appended to the results file")
    p.add_argument("--kernel-variant", default="",
                   help="with --overhead-only: also sweep the kernel with this change (bench/kernel_variant.py)")
    p.add_argument("--url", default="", help="also benchmark this OpenAI-compatible endpoint")
    p.add_argument("--url-model", default="", help="model id at --url")
    p.add_argument("--url-key-env", default="", help="environment variable holding --url's API key")
    p.add_argument("--url-concurrency", type=int, default=64, help="calls in flight the kernel sends to --url")
    args = p.parse_args()
    if args.quick:
        args.plan = "quick"
    suffix = "" if args.plan == "full" else f"-{args.plan}"
    args.out = args.out or str(ROOT / "bench" / "results" / f"bench{suffix}.jsonl")
    args.report = args.report or str(ROOT / REPORTS[args.plan])
    if args.overhead_only:
        _raise_fd_limit()
        return asyncio.run(overhead_only(args))
    if args.report_only:
        command = "python -m bench" + (f" --plan {args.plan}" if args.plan != "full" else "")
        _report(args.plan)(Path(args.out), Path(args.report), command)
        print(f"report: {args.report}")
        return 0
    _raise_fd_limit()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
