"""Kernel benchmark: per-syscall overhead, syscall throughput, and agents on a
contended serving engine (FIFO vs agent-aware vs agents calling directly).

    .venv/bin/python -m bench.kernel_bench [--quick] [--out FILE]

Everything runs on loopback in child processes (simulator, llm_core, kernel)
with the load generated here; results are printed and written as JSON.
Measured side by side in one run: compare ratios, not absolute times (the
machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import grpc
import openai

from aios.common.v1 import llm_pb2 as lc
from aios.llm.v1 import llm_service_pb2 as llm
from aios.llm.v1 import llm_service_pb2_grpc as llm_grpc
from aios.sdk import AsyncClient
from bench import procs

MODEL = "sim"


def write_report(path: str, report: dict) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out}")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def ms(values: list[float]) -> dict:
    return {"p50_ms": round(pct(values, 0.50) * 1000, 3), "p99_ms": round(pct(values, 0.99) * 1000, 3),
            "mean_ms": round(statistics.fmean(values) * 1000, 3)}


async def overhead(n: int) -> dict:
    """Sequential one-token calls on an instant backend, three ways."""
    sim, _ = procs.start_simulator("--time-scale", "0")
    core = procs.start_llm_core([{"name": "sim", "model": MODEL, "base_url": sim.address,
                                  "max_concurrency": 256}])
    kernel = procs.start_kernel(core.address)
    try:
        direct = openai.AsyncOpenAI(base_url=sim.address, api_key="x", max_retries=0)
        msgs = [{"role": "user", "content": "ping"}]
        req = llm.GenerateRequest(call=lc.LlmCall(model=MODEL, max_tokens=1,
                                  messages=[lc.Message(role=lc.ROLE_USER, content="ping")]))
        out: dict = {}
        async with grpc.aio.insecure_channel(core.address) as ch, \
                AsyncClient(kernel.address, token="bench") as client:
            stub = llm_grpc.LlmServiceStub(ch)
            syscall = client.llm.syscall("ping", model=MODEL, max_tokens=1)
            for _ in range(20):  # warm up connections and caches
                await direct.chat.completions.create(model=MODEL, messages=msgs, max_tokens=1)
                await stub.Generate(req)
                syscall.request_id = ""
                await client.submit(syscall)
            for name, call in (
                ("direct_http", lambda: direct.chat.completions.create(model=MODEL, messages=msgs, max_tokens=1)),
                ("llm_core", lambda: stub.Generate(req)),
                ("kernel", lambda: client.submit(client.llm.syscall("ping", model=MODEL, max_tokens=1))),
            ):
                cpu0 = kernel.cpu_seconds()
                lat = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    await call()
                    lat.append(time.perf_counter() - t0)
                out[name] = ms(lat)
                if name == "kernel":
                    out["kernel_cpu_ms_per_syscall"] = round((kernel.cpu_seconds() - cpu0) / n * 1000, 3)
        out["kernel_overhead_p50_ms"] = round(out["kernel"]["p50_ms"] - out["llm_core"]["p50_ms"], 3)
        out["kernel_overhead_p99_ms"] = round(out["kernel"]["p99_ms"] - out["llm_core"]["p99_ms"], 3)
        await direct.close()
        return out
    finally:
        for child in (kernel, core, sim):
            child.stop()


async def throughput(agents: int, calls: int) -> dict:
    """Concurrent agents issuing one-token calls back to back (instant backend)."""
    sim, _ = procs.start_simulator("--time-scale", "0", "--max-num-seqs", "1024")
    core = procs.start_llm_core([{"name": "sim", "model": MODEL, "base_url": sim.address,
                                  "max_concurrency": 1024}])
    kernel = procs.start_kernel(core.address)
    try:
        clients = [AsyncClient(kernel.address, token=f"agent-{i}") for i in range(agents)]

        async def run(c: AsyncClient):
            for _ in range(calls):
                await c.llm.chat("ping", model=MODEL, max_tokens=1)

        cpu0 = kernel.cpu_seconds()
        t0 = time.perf_counter()
        await asyncio.gather(*(run(c) for c in clients))
        elapsed = time.perf_counter() - t0
        total = agents * calls
        for c in clients:
            await c.close()
        return {"agents": agents, "syscalls": total, "seconds": round(elapsed, 3),
                "syscalls_per_s": round(total / elapsed, 1),
                "kernel_cpu_ms_per_syscall": round((kernel.cpu_seconds() - cpu0) / total * 1000, 3)}
    finally:
        for child in (kernel, core, sim):
            child.stop()


def task_messages(i: int, history: list[str]) -> list[dict]:
    msgs = [{"role": "system", "content": "You are agent %d. Think step by step and use tools." % i},
            {"role": "user", "content": f"Task {i}: plan a trip and report the cost."}]
    for step, text in enumerate(history):
        msgs.append({"role": "assistant", "content": text})
        msgs.append({"role": "user", "content": f"Observation {step}: tool returned {len(text)} bytes."})
    return msgs


async def agents_on_engine(n: int, steps: int, out_tokens: int, seqs: int, time_scale: float) -> dict:
    """n identical ReAct-like agents (steps LLM calls each, growing context) on
    one engine running `seqs` sequences at a time: direct vs kernel policies."""
    results: dict = {"agents": n, "steps": steps, "output_tokens": out_tokens, "engine_max_seqs": seqs}

    async def drive(call) -> dict:
        async def agent(i: int) -> float:
            t0 = time.perf_counter()
            history: list[str] = []
            for _ in range(steps):
                history.append(await call(i, task_messages(i, history)))
            return time.perf_counter() - t0

        t0 = time.perf_counter()
        durations = await asyncio.gather(*(agent(i) for i in range(n)))
        return {"makespan_s": round(time.perf_counter() - t0, 2),
                "mean_agent_completion_s": round(statistics.fmean(durations), 2),
                "p50_agent_completion_s": round(pct(durations, 0.5), 2)}

    sim_args = ("--time-scale", str(time_scale), "--max-num-seqs", str(seqs))
    # Direct: every agent calls the engine itself (the engine queues FIFO).
    sim, _ = procs.start_simulator(*sim_args)
    try:
        direct = openai.AsyncOpenAI(base_url=sim.address, api_key="x", max_retries=5)

        async def call_direct(i, msgs):
            r = await direct.chat.completions.create(model=MODEL, messages=msgs, max_tokens=out_tokens)
            return r.choices[0].message.content

        results["direct"] = await drive(call_direct)
        await direct.close()
    finally:
        sim.stop()
    for policy in ("fifo", "agent_aware"):
        sim, _ = procs.start_simulator(*sim_args)
        core = procs.start_llm_core([{"name": "sim", "model": MODEL, "base_url": sim.address,
                                      "max_concurrency": seqs}])
        kernel = procs.start_kernel(core.address, policy=policy)
        try:
            clients = [AsyncClient(kernel.address, token=f"agent-{i}", timeout=3600) for i in range(n)]

            async def call_kernel(i, msgs):
                reply = await clients[i].llm.chat(msgs, model=MODEL, max_tokens=out_tokens)
                return reply.text

            cpu0 = kernel.cpu_seconds()
            results[f"kernel_{policy}"] = await drive(call_kernel)
            results[f"kernel_{policy}"]["kernel_cpu_ms_per_syscall"] = round(
                (kernel.cpu_seconds() - cpu0) / (n * steps) * 1000, 3)
            for c in clients:
                await c.close()
        finally:
            for child in (kernel, core, sim):
                child.stop()
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    parser.add_argument("--out", default="bench/results/kernel_bench.json")
    args = parser.parse_args()
    q = args.quick
    report = {"command": "python -m bench.kernel_bench" + (" --quick" if q else ""),
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    report["overhead"] = await overhead(100 if q else 500)
    print("overhead (instant backend, sequential):", json.dumps(report["overhead"], indent=1), flush=True)
    report["throughput"] = await throughput(16 if q else 64, 10 if q else 30)
    print("throughput:", json.dumps(report["throughput"]), flush=True)
    report["agents"] = await agents_on_engine(64 if q else 256, 3 if q else 4, 64, 16 if q else 64,
                                              0.2 if q else 1.0)
    print("agents on a contended engine:", json.dumps(report["agents"], indent=1), flush=True)
    write_report(args.out, report)


if __name__ == "__main__":
    asyncio.run(main())
