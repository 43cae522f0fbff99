"""The Markdown report and its PNG plots, built from the results file (JSON
lines). Hand-written findings live in bench/findings.md (full run) and are
included as they are; everything else is generated."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
FINDINGS = HERE / "findings.md"
WAY_ORDER = ["direct", "kernel:fifo", "kernel:agent_aware", "kernel:fair_share", "kernel:priority",
             "kernel:round_robin", "door:fifo"]
SERVICES = ["kernel", "llm_core", "simulator", "memory", "storage", "seaweedfs", "llm_core_embed", "load_generator"]


def load(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            rows.append(json.loads(line))
    return rows


def _f(x, digits=2, pct=False) -> str:
    if x is None:
        return "–"
    if pct:
        return f"{x * 100:.{max(0, digits - 2)}f}%"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _label(r: dict) -> str:
    lab = r["label"]
    if r.get("note"):
        lab += f" ({r['note']})"
    return lab


def _order(r: dict) -> tuple:
    lab = r["label"]
    return (WAY_ORDER.index(lab) if lab in WAY_ORDER else 99, r.get("note", ""))


def run_table(runs: list[dict]) -> str:
    rows = []
    for r in sorted(runs, key=lambda r: (r["agents"], r["backend"], _order(r))):
        ac = r["agent_completion_s"]
        rows.append([
            r["agents"], _label(r), _f(r["makespan_s"], 1), _f(r.get("ideal_s"), 1),
            _f(r.get("makespan_over_ideal"), 2), _f(ac["mean"], 1), _f(ac["p50"], 1), _f(ac["p95"], 1),
            _f(ac["p99"], 1), _f(r["llm_calls_per_s"], 1), _f(r["output_tokens_per_s"], 0),
            _f(r["tokens_per_s"], 0), _f(r["jain_fairness"], 3), r["errors"], r.get("backend_503", "–"),
            r["agents_failed"], _f(r.get("kernel_cpu_ms_per_syscall"), 2),
        ])
    return _table(["N", "way", "makespan s", "ideal s", "× ideal", "agent mean s", "p50", "p95", "p99",
                   "LLM calls/s", "output tok/s", "all tok/s", "Jain", "errors", "engine 503s",
                   "agents failed", "kernel CPU ms/syscall"], rows)


def _by(runs, key):
    out = defaultdict(list)
    for r in runs:
        out[key(r)].append(r)
    return out


def plot_vs_n(runs: list[dict], metric, ylabel: str, title: str, path: Path, ideal=False, logy=True) -> None:
    # Runs where over 1% of agents gave up did less work; they are in the tables, not the plots.
    runs = [r for r in runs if r["agents_failed"] <= 0.01 * r["agents"]]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    groups = _by(runs, _label)
    for lab in sorted(groups, key=lambda k: (WAY_ORDER.index(k) if k in WAY_ORDER else 99, k)):
        pts = sorted((r["agents"], metric(r)) for r in groups[lab] if metric(r) is not None)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=lab)
    if ideal:
        best = {}
        for r in runs:
            if r.get("ideal_s"):
                best[r["agents"]] = min(best.get(r["agents"], 1e18), r["ideal_s"])
        pts = sorted(best.items())
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "k--", label="ideal bound")
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("concurrent agents (N)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bars(runs: list[dict], metrics: list[tuple[str, callable]], title: str, path: Path,
              ylabel: str = "seconds") -> None:
    runs = sorted((r for r in runs if r["agents_failed"] <= 0.01 * r["agents"]), key=lambda r: (r["agents"], _order(r)))
    ns = sorted({r["agents"] for r in runs})
    labels = sorted({_label(r) for r in runs}, key=lambda k: (WAY_ORDER.index(k) if k in WAY_ORDER else 99, k))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4.2), squeeze=False)
    width = 0.8 / max(1, len(labels))
    for ax, (name, fn) in zip(axes[0], metrics):
        for j, lab in enumerate(labels):
            xs, ys = [], []
            for i, n in enumerate(ns):
                match = [r for r in runs if r["agents"] == n and _label(r) == lab]
                if match and fn(match[0]) is not None:
                    xs.append(i + j * width)
                    ys.append(fn(match[0]))
            ax.bar(xs, ys, width, label=lab)
        ax.set_xticks([i + width * (len(labels) - 1) / 2 for i in range(len(ns))])
        ax.set_xticklabels([f"N={n}" for n in ns])
        ax.set_title(name)
        ax.set_ylabel(ylabel if "rate" not in name else "fraction")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_overhead(rows: list[dict], path: Path) -> None:
    rows = sorted(rows, key=lambda r: r["agents"])
    if not rows:
        return
    ns = [r["agents"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    a.plot(ns, [r["kernel_cpu_ms_per_syscall"] for r in rows], marker="o", label="kernel CPU per syscall")
    a.plot(ns, [r["kernel"]["cpu_ms_per_call"]["llm_core"] for r in rows], marker="s",
           label="llm_core CPU per call (via kernel)")
    a.set_xscale("log")
    a.set_xlabel("concurrent agents (N)")
    a.set_ylabel("CPU ms")
    a.set_title("CPU per call, instant backend")
    a.grid(True, which="both", alpha=0.3)
    a.legend(fontsize=8)
    b.plot(ns, [r["kernel"]["calls_per_s"] for r in rows], marker="o", label="through the kernel")
    b.plot(ns, [r["llm_core"]["calls_per_s"] for r in rows], marker="s", label="straight to llm_core")
    b.set_xscale("log")
    b.set_xlabel("concurrent agents (N)")
    b.set_ylabel("calls/s")
    b.set_title("throughput, instant backend (2 shared cores)")
    b.grid(True, which="both", alpha=0.3)
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _profile_section(runs: list[dict]) -> str:
    prof = [r for r in runs if r.get("profile")]
    if not prof:
        return "No profile in this run.\n"
    r = max(prof, key=lambda r: r["agents"])
    p = r["profile"]
    out = [f"Kernel process sampled with {p.get('tool')} during the {r['backend']} {_label(r)} run at "
           f"N = {r['agents']} ({p.get('samples', '?')} busy samples at {p.get('rate_hz', '?')} Hz; "
           f"the kernel used {_f(r['cpu_s'].get('kernel'), 1)} CPU s for "
           f"{r['llm_calls'] + r['other_syscalls']} syscalls, "
           f"{_f(r.get('kernel_cpu_ms_per_syscall'), 2)} ms each). Shares are of the busy samples.\n"]
    if p.get("error"):
        return out[0] + f"\nProfile failed: {p['error']}\n"
    if p.get("by_area_self"):
        out.append("Where the time is spent (leaf frame, by part of the system):\n")
        out.append(_table(["part", "share"], [[a, _f(s, 3, pct=True)] for a, s in p["by_area_self"][:12]]))
    if p.get("top_inclusive_kernel_code"):
        out.append("\nKernel and runtime functions, inclusive (time spent in them and what they call):\n")
        out.append(_table(["function", "share"], [[f"`{a}`", _f(s, 3, pct=True)]
                                                  for a, s in p["top_inclusive_kernel_code"][:18]]))
    if p.get("top_self"):
        out.append("\nHottest functions (self time):\n")
        out.append(_table(["function", "share"], [[f"`{a}`", _f(s, 3, pct=True)] for a, s in p["top_self"][:15]]))
    return "\n".join(out) + "\n"


def _variant_section(rows: list[dict]) -> str:
    """The same instant-backend sweep with the kernel as it is and with a
    proposed change (bench/kernel_variant.py), run back to back."""
    names = sorted({r.get("variant", "") for r in rows})
    out = ["### The proposed change, measured\n",
           "The instant-backend sweep run back to back with the kernel as it is and with the change applied at "
           "start-up by `bench/kernel_variant.py` (`python -m bench --overhead-only --kernel-variant NAME`):\n"]
    seqs = {r.get("variant", ""): r for r in rows if r["kind"] == "overhead_sequential"}
    if seqs:
        out.append(_table(["kernel", "sequential p50 ms", "p99 ms", "kernel CPU ms/syscall", "overhead p50 ms"],
                          [[v or "as it is", seqs[v]["kernel"]["p50_ms"], seqs[v]["kernel"]["p99_ms"],
                            seqs[v]["kernel_cpu_ms_per_syscall"], seqs[v]["kernel_overhead_p50_ms"]]
                           for v in names if v in seqs]) + "\n")
    conc = [r for r in rows if r["kind"] == "overhead_concurrent"]
    ns = sorted({r["agents"] for r in conc})
    table = []
    for v in names:
        for metric, fn in (("kernel CPU ms/syscall", lambda r: r["kernel_cpu_ms_per_syscall"]),
                           ("calls/s through the kernel", lambda r: r["kernel"]["calls_per_s"])):
            table.append([v or "as it is", metric] + [
                _f(next((fn(r) for r in conc if r["agents"] == n and r.get("variant", "") == v), None), 2)
                for n in ns])
    out.append(_table(["kernel", "metric"] + [f"N={n}" for n in ns], table))
    return "\n".join(out) + "\n"


PATHS = {"http_engine": "http_engine (openai client straight to the engine)",
         "llm_core": "llm_core (gRPC)", "grpc_hop": "grpc_hop (llm_core behind a bare gRPC relay)",
         "kernel": "kernel (SDK → kernel → llm_core)"}


def overhead_section(seq: dict | None, conc: list[dict], img: Path, prefix: str) -> list[str]:
    """The instant-backend sweep: what the kernel adds per syscall."""
    md: list[str] = []
    md.append("## Kernel overhead per syscall and its growth with N\n")
    if seq:
        paths = [k for k in PATHS if k in seq]
        md.append(f"Sequential one-token calls on an instant backend (the simulator at time scale 0), "
                  f"{seq['calls']} calls each, one caller"
                  + (", the paths interleaved call by call" if "grpc_hop" in seq else "") + ":\n")
        md.append(_table(["path", "p50 ms", "p99 ms", "mean ms"],
                         [[PATHS.get(k, k), seq[k]["p50_ms"], seq[k]["p99_ms"], seq[k]["mean_ms"]] for k in paths]))
        md.append(f"\nKernel overhead (kernel − llm_core): p50 **{seq['kernel_overhead_p50_ms']} ms**, "
                  f"p99 **{seq['kernel_overhead_p99_ms']} ms**; kernel CPU {seq['kernel_cpu_ms_per_syscall']} ms "
                  "per syscall.\n")
        if "grpc_hop" in seq:
            own = seq["kernel_overhead_p50_ms"] - seq["grpc_hop_overhead_p50_ms"]
            md.append(f"One bare grpc.aio hop in front of llm_core (`bench/grpc_relay.py`: bytes passed on, no "
                      f"interceptors) adds p50 **{seq['grpc_hop_overhead_p50_ms']} ms**, p99 "
                      f"{seq['grpc_hop_overhead_p99_ms']} ms on this machine: the floor of any gRPC hop in Python "
                      f"here. The kernel is one such hop, so its own work (intake, queues, process table, "
                      f"metrics, tracing; no journal here, `bench.journal_overhead` measures that) adds "
                      f"{own:.3f} ms at p50 above that floor.\n")
    if conc:
        md.append("N agents issuing one-token calls back to back on the instant backend, straight to llm_core "
                  "(gRPC) and through the kernel (SDK). With 2 cores shared by the callers, the kernel, llm_core "
                  "and the simulator, latency at large N is mostly waiting for a CPU; the kernel's CPU per "
                  "syscall is the number that shows how its own cost grows.\n")
        md.append(_table(["N", "calls", "kernel calls/s", "llm_core calls/s", "kernel CPU ms/syscall",
                          "llm_core CPU ms/call", "load generator CPU ms/call (kernel path)",
                          "latency p50 via kernel ms", "p50 direct to llm_core ms", "added p50 ms", "added mean ms",
                          "failed calls"],
                         [[r["agents"], r["agents"] * r["calls_per_agent"], r["kernel"]["calls_per_s"],
                           r["llm_core"]["calls_per_s"], r["kernel_cpu_ms_per_syscall"],
                           r["kernel"]["cpu_ms_per_call"]["llm_core"], r["kernel"]["load_generator_cpu_ms_per_call"],
                           r["kernel"]["p50_ms"], r["llm_core"]["p50_ms"], r["added_latency_p50_ms"],
                           r["added_latency_mean_ms"], json.dumps(r.get("failures") or {}) if r.get("failures") else "–"]
                          for r in sorted(conc, key=lambda r: r["agents"])]) + "\n")
        plot_overhead(conc, img / f"{prefix}overhead.png")
        md.append(f"![overhead](img/{prefix}overhead.png)\n")
    return md


def build(results: Path, out: Path, command: str) -> None:
    rows = load(results)
    meta = next((r for r in rows if r["kind"] == "meta"), {})
    end = {"seconds": sum(r.get("seconds", 0) for r in rows if r["kind"] == "meta_end")}
    runs = [r for r in rows if r["kind"] == "run"]
    failed = [r for r in rows if r["kind"] == "run_failed"]
    seq = next((r for r in rows if r["kind"] == "overhead_sequential" and not r.get("separate_run")), None)
    conc = [r for r in rows if r["kind"] == "overhead_concurrent" and not r.get("separate_run")]
    variants = [r for r in rows if r.get("separate_run")]
    if seq is None:  # no sweep in the main run: the separate sweep's kernel as it is
        seq = next((r for r in variants if r["kind"] == "overhead_sequential" and not r.get("variant")), None)
    if not conc:
        conc = [r for r in variants if r["kind"] == "overhead_concurrent" and not r.get("variant")]
    img = out.parent / "img"
    img.mkdir(parents=True, exist_ok=True)
    quick = bool(meta.get("quick"))
    prefix = "quick-" if quick else ""
    md: list[str] = []
    md.append("# Benchmarks: many agents on shared LLMs, the kernel against direct calls\n")
    md.append(f"Produced by `make bench{' QUICK=1' if quick else ''}` (= `.venv/bin/{meta.get('command', command)}`), "
              f"started {meta.get('started', '?')}, {_f((end.get('seconds') or 0) / 60, 1)} minutes of runs, on "
              f"{meta.get('machine', {}).get('cpus', '?')} CPU cores shared by the load generator, the kernel, "
              "llm_core, memory, storage, SeaweedFS and the simulator (and, at times, other work on the machine: "
              "see the noise table at the end). Raw results: `bench/results/"
              f"{results.name}` (JSON lines, not committed).\n")
    if quick:
        md.append("**Quick mode**: a smoke run at time scale 0.25 (every simulated duration and the ideal bound "
                  "are scaled alike) with small N; the numbers show that every path works, not how they scale. "
                  "The committed report is the full run's, in docs/benchmarks.md.\n")
    if FINDINGS.exists() and not quick:
        md.append(FINDINGS.read_text().rstrip() + "\n")
    backends = {r["backend"]: r["backend_config"] for r in runs}
    md.append("## Setup\n")
    md.append(_table(["backend", "replicas", "batch (max seqs)", "KV tokens", "engine queue bound (503 past it)",
                      "prefix cache", "peak output tok/s", "time scale"],
                     [[b, c.get("replicas"), c.get("max_num_seqs", "–"), c.get("kv_tokens", "–"),
                       c.get("max_waiting") or "none", "on" if c.get("prefix_cache") else "off",
                       c.get("peak_output_tokens_per_s", "–"), c.get("time_scale")] for b, c in backends.items()]))
    wl = runs[0]["workload"] if runs else {}
    md.append(f"""
Workload: N agents start together; each runs {wl.get('steps')} ReAct-like LLM steps (Thought/Action over a
shared system prompt with tool descriptions, then a tool observation of {wl.get('observation_chars')} characters
appended), so its context grows with its history; {wl.get('output_tokens')} output tokens per step.
Every {wl.get('tool_every')}th agent also searches its memory before each step, adds the observation to memory
after it, and at the end writes its report as a file and reads it back (real memory service on embedded
Qdrant with llm_core's local embeddings; real storage service on SeaweedFS). Every {wl.get('priority_every')}th
agent (offset by half) asks for priority 1. Agents are deterministic: every way sends the same prompts.

Ways: **direct** = the `openai` client straight at the engine(s), round robin over replicas (as a Kubernetes
Service spreads requests), the client's own retries (2, exponential backoff, Retry-After honoured), then the agent
retries the step itself with backoff from 1 s doubling to 30 s (up to 10 attempts); memory and files by gRPC straight
to those services. **kernel:POLICY** = the SDK through the kernel under that policy (llm_core routes over the
replicas, cache-affine by session). **door:fifo** = the `openai` client at the kernel's OpenAI-compatible door
(API key = the agent's token, X-AIOS-Session = its session). Kernel in development authentication (token = agent
name, no access service), llm_core capacity per endpoint = the engine's batch (256).

Figures: makespan = until the last agent finished; agent completion = each agent's time from the common start to
its end; LLM calls/s and tokens/s over the makespan; Jain's index over per-agent service rate (tokens of prompt and
output the agent got, divided by its completion time); errors = failed attempts after the client's own retries;
engine 503s = requests the engine refused; kernel CPU ms/syscall = the kernel process's CPU time over the run / its
syscalls (LLM, memory and file calls). **Ideal bound** = the least makespan any schedule could reach with zero
overhead for the calls the run made: every prompt token prefilled (with a prefix cache: only the tokens no earlier
call of the same agent could have left in the cache) plus every output token at the engine's peak rate for a batch of
min(N, what fits), spread perfectly over the replicas; or the slowest agent alone step after step, whichever is larger.
""")
    if failed:
        md.append("Runs that failed: " + "; ".join(f"{r['backend']} {r['label']} N={r['agents']}: {r['error']}"
                                                   for r in failed) + "\n")

    gpu1 = [r for r in runs if r["backend"] in ("gpu1", "gpu1-unbounded", "gpu1-headroom")]
    if gpu1:
        md.append("## One GPU: direct against the kernel, side by side\n")
        md.append(run_table(gpu1) + "\n")
        core = [r for r in gpu1 if r["label"] in ("direct", "kernel:fifo", "kernel:agent_aware", "door:fifo")
                and r["backend"] == "gpu1"]
        plot_vs_n(core, lambda r: r["makespan_s"], "seconds", "makespan (one GPU)", img / f"{prefix}makespan.png",
                  ideal=True)
        plot_vs_n(core, lambda r: r["agent_completion_s"]["mean"], "seconds", "mean agent completion (one GPU)",
                  img / f"{prefix}agent_mean.png", ideal=True)
        plot_vs_n(core, lambda r: r["llm_calls_per_s"], "LLM calls/s", "throughput (one GPU)",
                  img / f"{prefix}throughput.png", logy=False)
        plot_vs_n(gpu1, lambda r: r["jain_fairness"], "Jain's index", "fairness of per-agent service (one GPU)",
                  img / f"{prefix}fairness.png", logy=False)
        md.append(f"![makespan](img/{prefix}makespan.png) ![mean agent completion](img/{prefix}agent_mean.png)\n")
        md.append(f"![throughput](img/{prefix}throughput.png) ![fairness](img/{prefix}fairness.png)\n")
        big = max(r["agents"] for r in gpu1)
        at = [r for r in gpu1 if r["agents"] == big or r["agents"] == 1000]
        if at:
            plot_bars(at, [("agent completion mean", lambda r: r["agent_completion_s"]["mean"]),
                           ("agent completion p99", lambda r: r["agent_completion_s"]["p99"]),
                           ("makespan", lambda r: r["makespan_s"])],
                      "every way and policy, one GPU", img / f"{prefix}policies.png")
            md.append(f"![policies](img/{prefix}policies.png)\n")
        prio = [r for r in gpu1 if r.get("priority_agents_mean_s") is not None and r["agents"] >= 64]
        if prio:
            md.append("Agents asking for priority 1 against the others (mean completion, s):\n")
            md.append(_table(["N", "way", "priority-1 agents", "others"],
                             [[r["agents"], _label(r), _f(r["priority_agents_mean_s"], 1), _f(r["other_agents_mean_s"], 1)]
                              for r in sorted(prio, key=lambda r: (r["agents"], _order(r)))]) + "\n")

    gpu4 = [r for r in runs if r["backend"] == "gpu4-prefix"]
    if gpu4:
        md.append("## Four replicas with prefix caching: round robin against cache-affine routing\n")
        wl4 = gpu4[0]["workload"]
        md.append(f"These runs use long tool observations ({wl4.get('observation_chars')} characters per step, "
                  "like fetched pages), so prompts are dominated by each agent's history: what a prefix cache "
                  "saves. Direct callers go round robin over the four engines (a Kubernetes Service); the kernel's "
                  "llm_core sends a session to the engine that served it before while its load allows. Cache hit "
                  "rate = prompt tokens found in an engine's prefix cache / prompt tokens looked up.\n")
        rep_rows = []
        for r in sorted(gpu4, key=lambda r: (r["agents"], _order(r))):
            eng = r.get("engine", {})
            rep_rows.append([r["agents"], _label(r), _f(r["makespan_s"], 1), _f(r.get("ideal_s"), 1),
                         _f(r.get("makespan_over_ideal"), 2), _f(r["agent_completion_s"]["mean"], 1),
                         _f(r["agent_completion_s"]["p99"], 1), _f(r.get("engine_cache_hit_rate"), 3, pct=True),
                         _f(r.get("cache_hit_rate"), 3, pct=True), int(eng.get("prefill_tokens_total", 0)),
                         "/".join(str(x) for x in eng.get("requests_served_per_replica", [])),
                         _f(r["llm_calls_per_s"], 1), _f(r.get("engine", {}).get("lag_seconds_total"), 2)])
        md.append(_table(["N", "way", "makespan s", "ideal s", "× ideal", "agent mean s", "agent p99 s",
                          "cache hit rate (engine, prompt tokens)", "cached share seen by agents",
                          "tokens prefilled", "calls per replica", "LLM calls/s", "simulator lag s"], rep_rows) + "\n")
        plot_bars(gpu4, [("makespan", lambda r: r["makespan_s"]),
                         ("agent completion mean", lambda r: r["agent_completion_s"]["mean"]),
                         ("cache hit rate", lambda r: r.get("engine_cache_hit_rate"))],
                  "four replicas with prefix caching", img / f"{prefix}replicas.png")
        md.append(f"![four replicas](img/{prefix}replicas.png)\n")
        md.append(run_table(gpu4) + "\n")

    other = [r for r in runs if r["backend"] not in ("gpu1", "gpu1-unbounded", "gpu1-headroom", "gpu4-prefix")]
    if other:
        md.append("## A real endpoint\n")
        md.append(run_table(other) + "\n")

    md.append("## Errors and retries\n")
    err_rows = [[r["backend"], r["agents"], _label(r), r["errors"], json.dumps(r["error_kinds"]) if r["error_kinds"] else "–",
                 r.get("http_error_responses", "–"), r.get("backend_503", "–"), r["agents_failed"]]
                for r in sorted(runs, key=lambda r: (r["backend"], r["agents"], _order(r)))
                if r["errors"] or r.get("http_error_responses") or r.get("backend_503") or r["agents_failed"]]
    if err_rows:
        md.append(_table(["backend", "N", "way", "failed attempts (after client retries)", "by kind",
                          "HTTP 429/5xx seen by the client", "engine 503s", "agents that gave up"], err_rows) + "\n")
    else:
        md.append("No errors in any run.\n")

    md += overhead_section(seq, conc, img, prefix)
    kr = [r for r in runs if r.get("kernel_cpu_ms_per_syscall") is not None and r["backend"] == "gpu1"]
    if kr:
        md.append("Kernel CPU per syscall in the real-time runs (one GPU), by N and policy (at N = 1 a handful of "
                  "syscalls share the kernel's fixed background work, hence the larger number):\n")
        ns = sorted({r["agents"] for r in kr})
        labs = sorted({_label(r) for r in kr}, key=lambda k: (WAY_ORDER.index(k) if k in WAY_ORDER else 99, k))
        md.append(_table(["way"] + [f"N={n}" for n in ns],
                         [[lab] + [_f(next((r["kernel_cpu_ms_per_syscall"] for r in kr
                                            if r["agents"] == n and _label(r) == lab), None), 2) for n in ns]
                          for lab in labs]) + "\n")
    md.append("## Where the kernel spends its time\n")
    md.append(_profile_section(runs))
    if variants:
        md.append(_variant_section(variants))

    md.append("## Memory (peak RSS, MiB) of each service\n")
    md.append("Peak resident memory of each process (VmHWM; memory, storage, SeaweedFS and the embedding llm_core "
              "live for the whole suite, so theirs is the peak so far; the load generator's is its RSS at the end "
              "of the run).\n")
    mem_rows = []
    for r in sorted(runs, key=lambda r: (r["backend"], r["agents"], _order(r))):
        if r["backend"] == "gpu1" and r["label"] in ("direct", "kernel:fifo", "door:fifo") or r["backend"] != "gpu1":
            mem_rows.append([r["backend"], r["agents"], _label(r)]
                            + [_f(r["peak_rss_mib"].get(s), 0) for s in SERVICES])
    md.append(_table(["backend", "N", "way"] + SERVICES, mem_rows) + "\n")
    md.append("CPU seconds of each process during each run:\n")
    md.append(_table(["backend", "N", "way"] + SERVICES + ["makespan s"],
                     [[r["backend"], r["agents"], _label(r)] + [_f(r["cpu_s"].get(s), 1) for s in SERVICES]
                      + [_f(r["makespan_s"], 1)]
                      for r in sorted(runs, key=lambda r: (r["backend"], r["agents"], _order(r)))]) + "\n")

    md.append("## Memory and file syscalls\n")
    md.append(_table(["backend", "N", "way", "memory search p50/p99 s", "memory add p50/p99 s",
                      "file write p50/p99 s", "file read p50/p99 s"],
                     [[r["backend"], r["agents"], _label(r)]
                      + [f"{_f(r['tool_op_latency_s'][op]['p50'], 3)} / {_f(r['tool_op_latency_s'][op]['p99'], 3)}"
                         for op in ("memory_search", "memory_add", "file_write", "file_read")]
                      for r in sorted(runs, key=lambda r: (r["backend"], r["agents"], _order(r)))
                      if r.get("tool_op_latency_s")]) + "\n")

    md.append("## Noise: other work on the machine during each run\n")
    md.append(_table(["backend", "N", "way", "machine busy CPU s", "of it, processes outside this benchmark",
                      "load average start/end", "simulator lag s"],
                     [[r["backend"], r["agents"], _label(r), r["machine"]["busy_cpu_s"],
                       r["machine"]["other_processes_cpu_s"],
                       f"{r['machine']['loadavg_start']} / {r['machine']['loadavg_end']}",
                       _f(r.get("engine", {}).get("lag_seconds_total"), 2)]
                      for r in sorted(runs, key=lambda r: (r["backend"], r["agents"], _order(r)))]) + "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(md))
