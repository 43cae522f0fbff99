"""Runs the benchmark matrix: N agents on a backend, each way of reaching it,
every service a child process on loopback, the load generated here.

One run = fresh simulator (and llm_core and kernel for the kernel ways);
memory, storage, SeaweedFS and the llm_core that embeds for them live for the
whole suite (each run's agents have their own names, so runs do not share
data). Every run appends one JSON line to the results file as it finishes.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import openai

from aios.common.v1 import llm_pb2 as lc
from aios.llm.v1 import llm_service_pb2 as llm
from aios.llm.v1 import llm_service_pb2_grpc as llm_grpc
from aios.memory.v1 import memory_service_pb2 as mem
from aios.memory.v1 import memory_service_pb2_grpc as mem_grpc
from aios.sdk import AsyncClient
from bench import procs, profiling
from bench.backends import Backend, best_hit_rate, ideal_bound
from bench.stats import jain, pct, summary
from bench.ways import DirectWay, DoorWay, KernelWay
from bench.workload import MODEL, Workload, run_agent
from services.cli.stack import free_port


@dataclass(frozen=True)
class Scenario:
    backend: Backend
    way: str  # "direct", "sticky" (direct, agent i on replica i mod R), "kernel", "door"
    agents: int
    policy: str = ""  # kernel ways
    profile: bool = False
    note: str = ""
    # Workload fields that differ from the suite's (name, value) pairs.
    workload: tuple = ()
    # A proposed kernel change applied at start-up (bench/kernel_variant.py).
    variant: str = ""
    # Settings of llm_core (AIOS_LLM_<NAME>) and the kernel (AIOS_KERNEL_<NAME>)
    # that differ from their defaults, as (name, value) pairs.
    llm_settings: tuple = ()
    kernel_settings: tuple = ()

    @property
    def label(self) -> str:
        if self.way == "direct":
            return "direct"
        if self.way == "sticky":
            return "direct:sticky"
        return f"{self.way}:{self.policy}"


class SharedServices:
    """SeaweedFS and the llm_core that embeds for memory and storage live for
    the whole suite; memory and storage start fresh for every run (their
    embedded Qdrant filters points in Python, so a store that kept every
    earlier run's records would make each later run pay for them)."""

    def __init__(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="aios-bench-"))
        self.children: list[procs.Child] = []
        self.embedder = self.seaweed = None
        self.memory = self.storage = None
        self._warm_storage = False

    def start(self) -> None:
        try:
            self.seaweed = procs.start_seaweed(self.data_dir)
            self.children.append(self.seaweed)
            self.embedder = procs.start_llm_core([], name="llm_core_embed")
            self.children.append(self.embedder)
        except BaseException:
            self.stop()
            raise

    def start_run(self, tag: str) -> None:
        """Fresh memory and storage for one run."""
        run_dir = self.data_dir / tag
        run_dir.mkdir(parents=True, exist_ok=True)
        self.memory = procs.start_memory(self.embedder.address, run_dir)
        try:
            self.storage = procs.start_storage(self.embedder.address, self.seaweed, run_dir)
        except BaseException:
            self.memory.stop()
            self.memory = None
            raise

    def stop_run(self) -> None:
        for child in (self.storage, self.memory):
            if child is not None:
                child.stop()
        self.memory = self.storage = None

    def run_children(self) -> list[procs.Child]:
        return [c for c in (self.memory, self.storage) if c is not None] + self.children

    async def warm_up(self) -> None:
        """Load the embedding model (first time) and open the stores before a run is timed."""
        async with grpc.aio.insecure_channel(self.memory.address) as ch:
            stub = mem_grpc.MemoryServiceStub(ch)
            await stub.AddMemory(mem.AddMemoryRequest(owner="warmup", memory=mem.MemoryInput(content="hello")),
                                 timeout=300)
            await stub.SearchMemories(mem.SearchMemoriesRequest(owner="warmup", query="hello", top_k=1), timeout=60)
        # The first write creates the bucket's volume (about a second).
        way = DirectWay(["http://127.0.0.1:9/v1"], "unused", 1, "warmup", storage_addr=self.storage.address)
        try:
            agent = way.agent(Workload(agents=1).agent(0))
            await agent.file_write("warmup.txt", "hello")
            await agent.file_read("warmup.txt")
        finally:
            await way.close()

    def stop(self) -> None:
        self.stop_run()
        for child in reversed(self.children):
            try:
                child.stop()
            except Exception:  # noqa: BLE001 - stop the rest regardless
                pass
        self.children.clear()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores), /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _self_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _sim_metrics(urls: list[str]) -> list[dict]:
    out = []
    for url in urls:
        try:
            with urllib.request.urlopen(url.removesuffix("/v1") + "/metrics?format=json", timeout=10) as r:
                out.append(json.loads(r.read()))
        except OSError as exc:
            out.append({"error": str(exc)})
    return out


class RunStack:
    """The per-run processes: backend, and for kernel ways llm_core + kernel."""

    def __init__(self, sc: Scenario, shared: SharedServices | None) -> None:
        self.sc = sc
        self.shared = shared
        self.sim: procs.Child | None = None
        self.urls: list[str] = []
        self.llm_core: procs.Child | None = None
        self.kernel: procs.Child | None = None
        self.door_url = ""
        self.cprofile_out = ""

    def start(self, cprofile_out: str = "") -> None:
        sc = self.sc
        try:
            self.sim, self.urls = sc.backend.start()
            if sc.way in ("kernel", "door"):
                self.llm_core = procs.start_llm_core(sc.backend.endpoints(self.urls),
                                                     settings=dict(sc.llm_settings))
                settings = {"policy": sc.policy, **dict(sc.kernel_settings)}
                if sc.way == "door":
                    port = free_port()
                    settings["http_port"] = port
                    self.door_url = f"http://127.0.0.1:{port}/v1"
                self.cprofile_out = cprofile_out
                self.kernel = procs.start_kernel(
                    self.llm_core.address,
                    memory_addr=self.shared.memory.address if self.shared else "",
                    storage_addr=self.shared.storage.address if self.shared else "",
                    cprofile_out=cprofile_out, variant=sc.variant, **settings)
        except BaseException:
            self.stop()
            raise

    def children(self) -> list[procs.Child]:
        own = [c for c in (self.sim, self.llm_core, self.kernel) if c is not None]
        return own + (self.shared.run_children() if self.shared else [])

    def stop(self) -> None:
        for child in (self.kernel, self.llm_core, self.sim):
            if child is not None:
                child.stop()


def _way(sc: Scenario, stack: RunStack, tag: str):
    shared = stack.shared
    if sc.way in ("direct", "sticky"):
        return DirectWay(stack.urls, sc.backend.model_id, sc.agents, tag, sticky=sc.way == "sticky",
                         memory_addr=shared.memory.address if shared else "",
                         storage_addr=shared.storage.address if shared else "",
                         api_key=os.environ.get(sc.backend.api_key_env, "x") if sc.backend.api_key_env else "x")
    if sc.way == "kernel":
        return KernelWay(stack.kernel.address, tag)
    return DoorWay(stack.door_url, stack.kernel.address, sc.agents, tag)


async def run_scenario(sc: Scenario, workload: Workload, shared: SharedServices | None, tag: str,
                       profile_dir: Path | None = None) -> dict:
    stack = RunStack(sc, shared)
    use_pyspy = sc.profile and profiling.pyspy_available()
    cprofile_out = ""
    if sc.profile and not use_pyspy and profile_dir is not None:
        cprofile_out = str(profile_dir / f"kernel-{tag}.prof")
    if shared is not None:
        await asyncio.to_thread(shared.start_run, tag)
    way = None
    sampler = None
    try:
        if shared is not None:
            await shared.warm_up()
        await asyncio.to_thread(stack.start, cprofile_out)
        if stack.kernel is not None:
            # A kernel in service knows its models: one call first, so the run
            # does not start with every agent asking llm_core for the catalog.
            async with AsyncClient(stack.kernel.address, token="warmup", timeout=120) as c:
                await c.llm.chat("ping", model=MODEL, max_tokens=1)
        way = _way(sc, stack, tag)
        gate = asyncio.Event()
        specs = [workload.agent(i) for i in range(sc.agents)]
        tasks = [asyncio.create_task(run_agent(s, way, gate)) for s in specs]
        await asyncio.sleep(0.2)  # every agent waits at the gate
        children = stack.children()
        cpu0 = {c.name: c.cpu_seconds() for c in children}
        self0, busy0, load0 = _self_cpu(), _machine_busy_seconds(), os.getloadavg()[0]
        if use_pyspy and stack.kernel is not None and profile_dir is not None:
            sampler = profiling.PySpy(stack.kernel.pid, profile_dir / f"kernel-{tag}.txt")
        t0 = time.perf_counter()
        gate.set()
        results = await asyncio.gather(*tasks)
        t1 = time.perf_counter()
        if sampler is not None:
            sampler.stop()
        cpu = {c.name: round(c.cpu_seconds() - cpu0.get(c.name, 0.0), 2) for c in children}
        cpu["load_generator"] = round(_self_cpu() - self0, 2)
        busy = _machine_busy_seconds() - busy0
        load1 = os.getloadavg()[0]
        rss = {c.name: round(c.peak_rss_mib(), 1) for c in children}
        rss["load_generator"] = round(_self_rss_mib(), 1)
        sims = _sim_metrics(stack.urls) if sc.backend.simulated else []
        counters = way.counters()
    finally:
        if sampler is not None:
            sampler.stop()
        if way is not None:
            await way.close()
        await asyncio.to_thread(stack.stop)
        if shared is not None:
            await asyncio.to_thread(shared.stop_run)
    record = _record(sc, workload, results, t0, t1, cpu, rss, sims, counters)
    record["tag"] = tag
    record["machine"] = {"busy_cpu_s": round(busy, 1),
                         "other_processes_cpu_s": round(busy - sum(cpu.values()), 1),
                         "loadavg_start": round(load0, 2), "loadavg_end": round(load1, 2)}
    if sampler is not None:
        record["profile"] = sampler.summary()
    elif cprofile_out:
        record["profile"] = profiling.cprofile_summary(cprofile_out)
    return record


def _record(sc: Scenario, workload: Workload, results, t0, t1, cpu, rss, sims, counters) -> dict:
    makespan = t1 - t0
    calls = [c for r in results for c in r.calls]
    done = [r for r in results if not r.failed]
    durations = [r.end - t0 for r in results]  # every agent starts at t0
    prompt = sum(c.prompt_tokens for c in calls)
    completion = sum(c.completion_tokens for c in calls)
    cached = sum(c.cached_tokens for c in calls)
    other = sum(r.other_syscalls for r in results)
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r.error_kinds.items():
            errors[k] = errors.get(k, 0) + v
    # Service each agent got: its tokens over its time in the system.
    rates = [r.tokens / max(1e-9, r.end - t0) for r in results if r.calls]
    prio = [r.end - t0 for r in results if r.priority > 0]
    rest = [r.end - t0 for r in results if r.priority == 0]
    rec = {
        "kind": "run",
        "backend": sc.backend.name,
        "backend_config": sc.backend.describe(),
        "way": sc.way,
        "policy": sc.policy,
        "label": sc.label,
        "note": sc.note,
        "variant": sc.variant,
        "agents": sc.agents,
        "workload": workload.describe(),
        "makespan_s": round(makespan, 3),
        "llm_calls": len(calls),
        "other_syscalls": other,
        "llm_calls_per_s": round(len(calls) / makespan, 2),
        "tokens_per_s": round((prompt + completion) / makespan, 1),
        "output_tokens_per_s": round(completion / makespan, 1),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": cached,
        "cache_hit_rate": round(cached / prompt, 4) if prompt else None,
        "agent_completion_s": summary(durations),
        "priority_agents_mean_s": round(statistics.fmean(prio), 3) if prio else None,
        "other_agents_mean_s": round(statistics.fmean(rest), 3) if rest else None,
        "call_latency_s": summary([c.end - c.start for c in calls]),
        "kernel_waiting_s": (summary([c.kernel_waiting for c in calls])
                             if sc.way not in ("direct", "sticky") else None),
        "jain_fairness": round(jain(rates), 4) if rates else None,
        "tool_op_latency_s": {op: summary([x for r in results for x in r.op_seconds.get(op, [])])
                              for op in ("memory_search", "memory_add", "file_write", "file_read")},
        "agents_failed": len(results) - len(done),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "error_examples": {k: v for r in results for k, v in r.error_examples.items()},
        "cpu_s": cpu,
        "peak_rss_mib": rss,
    }
    rec.update(counters)
    if "kernel" in cpu:
        syscalls = len(calls) + other
        rec["kernel_cpu_ms_per_syscall"] = round(cpu["kernel"] / max(1, syscalls) * 1000, 3)
    if "llm_core" in cpu:
        rec["llm_core_cpu_ms_per_call"] = round(cpu["llm_core"] / max(1, len(calls)) * 1000, 3)
    if sims:
        keys = ("requests_received", "requests_served", "requests_rejected_503", "requests_aborted",
                "prefix_cache_queried_tokens", "prefix_cache_hit_tokens", "prefill_tokens_total",
                "generation_tokens_total", "steps", "busy_seconds", "lag_seconds_total", "peak_running", "peak_waiting")
        total = {k: round(sum(float(s.get(k, 0) or 0) for s in sims), 3) for k in keys}
        total["peak_running"] = [s.get("peak_running") for s in sims]
        total["peak_waiting"] = [s.get("peak_waiting") for s in sims]
        total["requests_served_per_replica"] = [s.get("requests_served") for s in sims]
        rec["engine"] = total
        if total["prefix_cache_queried_tokens"]:
            rec["engine_cache_hit_rate"] = round(total["prefix_cache_hit_tokens"]
                                                 / total["prefix_cache_queried_tokens"], 4)
            rec["engine_cache_hit_rate_per_replica"] = [
                round(float(s.get("prefix_cache_hit_tokens", 0)) / float(s["prefix_cache_queried_tokens"]), 4)
                if s.get("prefix_cache_queried_tokens") else None for s in sims]
            rec["best_cache_hit_rate"] = best_hit_rate(calls)
        rec["backend_503"] = int(total["requests_rejected_503"])
        # Sequences per engine step on average: how full the batches were.
        if total["steps"]:
            rec["engine_mean_batch"] = round(total["generation_tokens_total"] / total["steps"], 2)
        # Engine utilisation: modelled busy time over the run, per replica.
        rec["engine_busy_fraction"] = round(total["busy_seconds"] / (makespan * len(sims)), 4)
    ideal = ideal_bound(sc.backend, calls, sc.agents, workload.shared_prefix_tokens())
    if ideal:
        rec["ideal"] = ideal
        rec["ideal_s"] = ideal["ideal_s"]
        rec["makespan_over_ideal"] = round(makespan / ideal["ideal_s"], 3)
    return rec


# --- kernel overhead on an instant backend ---------------------------------


async def overhead_sweep(ns: list[int], total_calls: int, sequential_calls: int, variant: str = "") -> list[dict]:
    """Per-syscall cost on an instant backend (the simulator at time scale 0):
    N agents each issuing one-token calls back to back, straight to llm_core
    over gRPC and through the kernel (SDK), plus N=1 over plain HTTP to the
    engine. Latency differences are the kernel's overhead (for large N they
    include waiting for the CPU, which the load generator shares)."""
    sim, urls = procs.start_simulator("--time-scale", "0", "--max-num-seqs", "4096", "--kv-tokens", "10000000")
    core = procs.start_llm_core([{"name": "instant", "model": MODEL, "base_url": urls[0],
                                  "max_concurrency": 4096}])
    kernel = procs.start_kernel(core.address, per_agent_outstanding=64, queue_capacity=100_000, variant=variant)
    relay = procs.start_relay(core.address)
    out = []
    try:
        # Warm up every path.
        direct = openai.AsyncOpenAI(base_url=urls[0], api_key="x", max_retries=0)
        async with grpc.aio.insecure_channel(core.address) as ch, grpc.aio.insecure_channel(relay.address) as rch:
            stub = llm_grpc.LlmServiceStub(ch)
            hop = llm_grpc.LlmServiceStub(rch)
            client = AsyncClient(kernel.address, token="bench", timeout=600, retries=0)
            req = llm.GenerateRequest(call=lc.LlmCall(model=MODEL, max_tokens=1,
                                      messages=[lc.Message(role=lc.ROLE_USER, content="ping")]))
            msgs = [{"role": "user", "content": "ping"}]
            for _ in range(20):
                await direct.chat.completions.create(model=MODEL, messages=msgs, max_tokens=1)
                await stub.Generate(req)
                await hop.Generate(req)
                await client.llm.chat("ping", model=MODEL, max_tokens=1)
            # Sequential: the clean per-call cost of each hop; "grpc_hop" is
            # llm_core behind one bare grpc.aio relay, the floor of any hop.
            seq = {}
            paths = {
                "http_engine": lambda: direct.chat.completions.create(model=MODEL, messages=msgs, max_tokens=1),
                "llm_core": lambda: stub.Generate(req),
                "grpc_hop": lambda: hop.Generate(req),
                "kernel": lambda: client.llm.chat("ping", model=MODEL, max_tokens=1),
            }
            lat: dict[str, list[float]] = {name: [] for name in paths}
            k0 = kernel.cpu_seconds()
            for _ in range(sequential_calls):  # interleaved: every path sees the same moments of the machine
                for name, call in paths.items():
                    t = time.perf_counter()
                    await call()
                    lat[name].append(time.perf_counter() - t)
            for name, xs in lat.items():
                seq[name] = {"p50_ms": round(pct(xs, 0.5) * 1000, 3), "p99_ms": round(pct(xs, 0.99) * 1000, 3),
                             "mean_ms": round(statistics.fmean(xs) * 1000, 3)}
            seq["kernel_cpu_ms_per_syscall"] = round((kernel.cpu_seconds() - k0) / sequential_calls * 1000, 3)
            seq["kernel_overhead_p50_ms"] = round(seq["kernel"]["p50_ms"] - seq["llm_core"]["p50_ms"], 3)
            seq["kernel_overhead_p99_ms"] = round(seq["kernel"]["p99_ms"] - seq["llm_core"]["p99_ms"], 3)
            seq["grpc_hop_overhead_p50_ms"] = round(seq["grpc_hop"]["p50_ms"] - seq["llm_core"]["p50_ms"], 3)
            seq["grpc_hop_overhead_p99_ms"] = round(seq["grpc_hop"]["p99_ms"] - seq["llm_core"]["p99_ms"], 3)
            out.append({"kind": "overhead_sequential", "calls": sequential_calls, "variant": variant, **seq})
            print("  sequential:", json.dumps(seq), flush=True)
            await direct.close()

            for n in ns:
                per_agent = max(1, total_calls // n)
                row = {"kind": "overhead_concurrent", "agents": n, "calls_per_agent": per_agent, "variant": variant}
                views = []
                for i in range(n):
                    v = client.with_options(session_id=f"o{n}-{i}")
                    v.token = f"o{n}-{i}"
                    views.append(v)

                failures: dict[str, int] = {}

                async def via_core(i):
                    lat = []
                    for _ in range(per_agent):
                        t = time.perf_counter()
                        try:
                            await stub.Generate(req)
                        except grpc.aio.AioRpcError as exc:
                            key = f"llm_core:{exc.code().name}"
                            failures[key] = failures.get(key, 0) + 1
                        lat.append(time.perf_counter() - t)
                    return lat

                async def via_kernel(i):
                    lat = []
                    for _ in range(per_agent):
                        t = time.perf_counter()
                        try:
                            await views[i].llm.chat("ping", model=MODEL, max_tokens=1)
                        except Exception as exc:  # noqa: BLE001 - counted
                            key = f"kernel:{getattr(getattr(exc, 'code', None), 'name', type(exc).__name__)}"
                            failures[key] = failures.get(key, 0) + 1
                        lat.append(time.perf_counter() - t)
                    return lat

                for name, fn in (("llm_core", via_core), ("kernel", via_kernel)):
                    c0 = {c.name: c.cpu_seconds() for c in (kernel, core, sim)}
                    s0 = _self_cpu()
                    t = time.perf_counter()
                    lats = [x for part in await asyncio.gather(*(fn(i) for i in range(n))) for x in part]
                    wall = time.perf_counter() - t
                    calls = n * per_agent
                    row[name] = {"calls_per_s": round(calls / wall, 1),
                                 "mean_ms": round(statistics.fmean(lats) * 1000, 3),
                                 "p50_ms": round(pct(lats, 0.5) * 1000, 3),
                                 "p99_ms": round(pct(lats, 0.99) * 1000, 3),
                                 "cpu_ms_per_call": {c.name: round((c.cpu_seconds() - c0[c.name]) / calls * 1000, 3)
                                                     for c in (kernel, core, sim)},
                                 "load_generator_cpu_ms_per_call": round((_self_cpu() - s0) / calls * 1000, 3)}
                row["kernel_cpu_ms_per_syscall"] = row["kernel"]["cpu_ms_per_call"]["kernel"]
                row["failures"] = failures
                row["added_latency_p50_ms"] = round(row["kernel"]["p50_ms"] - row["llm_core"]["p50_ms"], 3)
                row["added_latency_mean_ms"] = round(row["kernel"]["mean_ms"] - row["llm_core"]["mean_ms"], 3)
                out.append(row)
                print(f"  N={n}: kernel {row['kernel']['calls_per_s']}/s, llm_core {row['llm_core']['calls_per_s']}/s, "
                      f"kernel CPU {row['kernel_cpu_ms_per_syscall']} ms/syscall, "
                      f"added latency p50 {row['added_latency_p50_ms']} ms, failures {failures}", flush=True)
            await client.close()
    finally:
        for child in (relay, kernel, core, sim):
            child.stop()
    return out


def stop_process(proc: subprocess.Popen, sig=signal.SIGINT, timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass
class Plan:
    scenarios: list[Scenario] = field(default_factory=list)
    overhead_ns: list[int] = field(default_factory=list)
    overhead_calls: int = 2000
    sequential_calls: int = 300
    # Where the overhead sweep goes in the order (index into scenarios).
    overhead_after: int = 0
