"""The report of `python -m bench --plan prefix` (docs/benchmarks-prefix.md):
prefix-aware routing and cache-aware admission against direct callers and the
kernel before them, and how full the kernel keeps one engine."""

from __future__ import annotations

import statistics
from pathlib import Path

from bench.report import _f, _table, load, overhead_section

FINDINGS = Path(__file__).resolve().parent / "findings-prefix.md"
WORKLOADS = {
    "a": "(a) every agent with its own 2,000-character system prompt",
    "b": "(b) a 1,500-character prompt shared by all agents, 500 characters their own",
    "c": "(c) four agent types, each sharing 1,500 characters, 500 characters each agent's own",
}
WAYS = [("direct", "direct callers, round robin"), ("direct:sticky", "direct callers, sticky (agent i on replica i mod 4)"),
        ("session affinity", "the kernel before (session affinity, no cache-aware admission)"),
        ("prefix-aware", "the kernel: prefix-aware routing, cache-aware admission")]


def _way(r: dict) -> str:
    if r["way"] in ("direct", "sticky"):
        return r["label"]
    return r["note"].split(" ", 1)[1]


def _pct(x) -> str:
    return _f(x, 3, pct=True)  # one decimal


def _runs_for(runs: list[dict], workload: str) -> list[dict]:
    return [r for r in runs if r.get("note", "").split(" ", 1)[0] == workload]


def _shared_table(runs: list[dict]) -> str:
    """One row per way; with several rounds, medians (and the makespan range)."""
    by_way = {key: [r for r in runs if _way(r) == key] for key, _ in WAYS}
    sticky = by_way.get("direct:sticky") or []
    sticky_ms = statistics.median([r["makespan_s"] for r in sticky]) if sticky else None
    rows = []
    for key, text in WAYS:
        these = by_way[key]
        if not these:
            continue
        ms = [r["makespan_s"] for r in these]
        spread = f" ({min(ms):.1f}-{max(ms):.1f})" if len(these) > 1 else ""
        per = [r.get("engine_cache_hit_rate_per_replica") or [] for r in these]
        per_replica = [statistics.median([p[i] for p in per if len(p) > i and p[i] is not None]) for i in range(len(per[0]))]
        rows.append([text, len(these), _f(statistics.median(ms), 1) + spread,
                     _f(statistics.median(ms) / sticky_ms, 2) if sticky_ms else "–",
                     _f(statistics.median([r["agent_completion_s"]["mean"] for r in these]), 1),
                     _pct(statistics.median([r.get("engine_cache_hit_rate") or 0 for r in these])),
                     " / ".join(_pct(x) for x in per_replica),
                     _pct(statistics.median([r.get("best_cache_hit_rate") or 0 for r in these])),
                     _f(statistics.median([r.get("engine_mean_batch") or 0 for r in these]), 1),
                     _f(statistics.median([r["ideal_s"] for r in these]), 1) if all(r.get("ideal_s") for r in these)
                     else "–",
                     sum(r["errors"] for r in these)])
    return _table(["way", "runs", "makespan s (range)", "× sticky", "agent mean s", "hit rate", "per replica",
                   "best possible", "mean batch", "least possible makespan s", "errors"], rows)


def build(results: Path, out: Path, command: str) -> None:
    rows = load(results)
    meta = next((r for r in rows if r["kind"] == "meta"), {})
    runs = [r for r in rows if r["kind"] == "run"]
    failed = [r for r in rows if r["kind"] == "run_failed"]
    seconds = sum(r.get("seconds", 0) for r in rows if r["kind"] == "meta_end")
    md = ["# Benchmarks: prefix-aware routing and cache-aware admission\n",
          f"Produced by `make bench-prefix` (= `.venv/bin/{meta.get('command', command)}`), started "
          f"{meta.get('started', '?')}, {_f(seconds / 60, 1)} minutes of runs, on "
          f"{meta.get('machine', {}).get('cpus', '?')} CPU cores shared by the load generator, the kernel, llm_core "
          f"and the simulator. Raw results: `bench/results/{results.name}` (JSON lines, not committed). "
          "How the routing and the admission work: docs/routing.md.\n",
          "Workload: 256 agents start together; each runs 5 LLM steps over its system prompt and task, "
          "appending its answer and a tool observation after each, so each prompt holds the agent's whole "
          "history; 32-64 output tokens a step; no memory or file calls. **Hit rate** = prompt tokens "
          "the engines found in their prefix caches / prompt tokens looked up; **best possible** = the same calls "
          "on one engine with an unbounded cache, where every prefix any earlier call sent is found "
          "(`bench/backends.py:best_hit_rate`); **mean batch** = sequences per engine step.\n"]
    if FINDINGS.exists():
        md.append(FINDINGS.read_text().rstrip() + "\n")
    if failed:
        md.append("Runs that failed: " + "; ".join(f"{r['backend']} {r['label']} ({r.get('note', '')}) N={r['agents']}: "
                                                   f"{r['error']}" for r in failed) + "\n")
    four = [r for r in runs if r["backend"] == "gpu4-cache100k"]
    if four:
        scale = four[0]["backend_config"].get("time_scale")
        md.append(f"## Four engines, a 100k-token prefix cache each (time scale {scale})\n")
        md.append("\"The kernel before\" is this kernel with routing by session affinity "
                  "(`AIOS_LLM_ROUTING=session`) and no cache-aware admission (`AIOS_KERNEL_CACHE_AWARE=false`); "
                  "with 4 x 256 slots for 256 agents no call waits for a slot, so the admission holds nothing "
                  "back here and the rows differ by routing alone. Runs alternate by way, several rounds where "
                  "noted. **Least possible makespan** = `bench/backends.py:ideal_bound` for the calls the run "
                  "made: every token a perfect schedule must prefill and decode at the engines' peak rate, spread "
                  "evenly over the four, or the slowest agent's own steps one after another, whichever is "
                  "longer; no way can finish sooner.\n")
        for long in (True, False):
            if long:
                md.append("### Long tool observations (1,600-3,200 characters a step)\n")
                md.append("Each agent's history grows to about 4,000 tokens: the 64 agents of an engine hold more "
                          "than its 100k-token cache, so where each call lands and which prefixes stay cached "
                          "decide the prefill.\n")
            else:
                md.append("### Short tool observations (120-280 characters a step)\n")
                md.append("Every history fits its engine's cache: once each agent stays on one engine, nothing "
                          "is left to gain from routing, and the rows differ by what the machine's CPUs allow.\n")
            for key, text in WORKLOADS.items():
                these = _runs_for(four, f"prefix-{key}" + ("-long" if long else ""))
                if these:
                    md.append(f"#### {text}\n")
                    md.append(_shared_table(these) + "\n")
    small = [r for r in runs if r["backend"].startswith("gpu1-cache50k")]
    if small:
        md.append("## One engine whose cache is smaller than the working set (50k tokens, 256 agents)\n")
        md.append("The agents' histories together exceed the cache. With a batch of 64 the agents take turns, "
                  "so which runs go at once decides whether a history is still cached at its next turn; with a "
                  "batch of 256 every agent runs at once and no call waits for a slot; the kernel holds runs back "
                  "only as far as the hit rate its gate follows asks (docs/routing.md).\n")
        md.append(_table(["engine batch", "way", "makespan s", "agent mean s", "agent p99 s", "hit rate",
                          "best possible", "mean batch"],
                         [[r["backend_config"].get("max_num_seqs"),
                           r["label"] + (f" ({r['note'].split(' ', 1)[1]})" if " " in r["note"] else ""),
                           _f(r["makespan_s"], 1), _f(r["agent_completion_s"]["mean"], 1),
                           _f(r["agent_completion_s"]["p99"], 1), _pct(r.get("engine_cache_hit_rate")),
                           _pct(r.get("best_cache_hit_rate")), _f(r.get("engine_mean_batch"), 1)]
                          for r in small]) + "\n")
    one = [r for r in runs if r["backend"] == "gpu1-batch32"]
    if one:
        scale = one[0]["backend_config"].get("time_scale")
        wl = one[0]["workload"]
        md.append(f"## One engine, batch 32, no cache: how full the kernel keeps it (time scale {scale})\n")
        md.append(f"The suite's own workload here (docs/benchmarks.md): {wl.get('steps')} steps over the shared "
                  f"travel-agent prompt, every {wl.get('tool_every')}th agent also using memory and files, every "
                  f"{wl.get('priority_every')}th asking for priority 1.\n")
        out_rows = []
        for n in sorted({r["agents"] for r in one}):
            at = [r for r in one if r["agents"] == n]
            direct = next((r for r in at if r["way"] == "direct"), None)
            for r in at:
                ac = r["agent_completion_s"]["mean"]
                out_rows.append([n, r["label"], _f(r["makespan_s"], 1),
                                 _f(r["makespan_s"] / direct["makespan_s"], 3) if direct else "–", _f(ac, 1),
                                 _f(ac / direct["agent_completion_s"]["mean"], 2) if direct else "–",
                                 _f(r.get("engine_mean_batch"), 1), _f(r.get("kernel_cpu_ms_per_syscall"), 2)])
        md.append(_table(["N", "way", "makespan s", "× direct", "agent mean s", "× direct", "mean batch",
                          "kernel CPU ms/syscall"], out_rows) + "\n")
    seq = next((r for r in rows if r["kind"] == "overhead_sequential"), None)
    conc = [r for r in rows if r["kind"] == "overhead_concurrent"]
    img = out.parent / "img"
    img.mkdir(parents=True, exist_ok=True)
    md += overhead_section(seq, conc, img, "prefix-")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(md))
