"""The kernel's added latency per syscall, before and after a change, side
by side in one run (benchmark tool):

    python -m bench.overhead_ab --base HEAD~3          # that commit against the working tree
    python -m bench.overhead_ab --base main --calls 3000 --rounds 3

One simulator at time scale 0 (an instant backend) and one llm_core, both
from the working tree; in front of them a bare gRPC relay (the floor of any
hop, bench/grpc_relay.py), the kernel of `--base` (checked out into a
temporary git worktree) and the kernel of the working tree. One caller
sends one-token calls through each path in turn, call by call, so every
path sees the same moments of a noisy machine. Added latency is a path's
percentile minus llm_core's own; CPU is the kernel process's per syscall.
Each kernel is also called through the bare generated stub with one
prebuilt request ("base_stub", "change_stub"): the difference to its SDK
path is the SDK's own cost in the caller. Both kernels take the same calls,
so neither is kept warmer than the other.
Prints a table and writes it as JSON (bench/results/overhead-ab.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from aios.common.v1 import llm_pb2 as lc
from aios.kernel.v1 import kernel_service_pb2 as kpb
from aios.kernel.v1 import kernel_service_pb2_grpc as kpb_grpc
from aios.kernel.v1 import syscall_pb2 as ks
from aios.llm.v1 import llm_service_pb2 as llm
from aios.llm.v1 import llm_service_pb2_grpc as llm_grpc
from aios.sdk import AsyncClient
from bench import procs
from bench.stats import pct
from bench.workload import MODEL

ROOT = Path(__file__).resolve().parent.parent
PATHS = ("grpc_hop", "base", "change", "base_stub", "change_stub")


async def measure(base_root: Path, calls: int, warmup: int = 100) -> dict:
    sim, urls = procs.start_simulator("--time-scale", "0", "--max-num-seqs", "4096", "--kv-tokens", "10000000")
    children = [sim]
    try:
        core = procs.start_llm_core([{"name": "instant", "model": MODEL, "base_url": urls[0],
                                      "max_concurrency": 4096}])
        children.append(core)
        relay = procs.start_relay(core.address)
        children.append(relay)
        kernels = {"base": procs.start_kernel(core.address, root=base_root),
                   "change": procs.start_kernel(core.address)}
        children += kernels.values()
        req = llm.GenerateRequest(call=lc.LlmCall(model=MODEL, max_tokens=1,
                                                  messages=[lc.Message(role=lc.ROLE_USER, content="ping")]))
        submit = kpb.SubmitRequest(syscall=ks.Syscall(llm=req.call))
        bearer = [("authorization", "Bearer bench")]
        channels = {name: grpc.aio.insecure_channel(k.address) for name, k in kernels.items()}
        async with grpc.aio.insecure_channel(core.address) as ch, grpc.aio.insecure_channel(relay.address) as rch:
            direct, hop = llm_grpc.LlmServiceStub(ch), llm_grpc.LlmServiceStub(rch)
            stubs = {f"{name}_stub": kpb_grpc.KernelServiceStub(c) for name, c in channels.items()}
            clients = {name: AsyncClient(k.address, token="bench", timeout=60, retries=0)
                       for name, k in kernels.items()}
            paths = {"llm_core": lambda: direct.Generate(req), "grpc_hop": lambda: hop.Generate(req),
                     **{name: (lambda c=c: c.llm.chat("ping", model=MODEL, max_tokens=1))
                        for name, c in clients.items()},
                     **{name: (lambda s=s: s.Submit(submit, metadata=bearer, timeout=60))
                        for name, s in stubs.items()}}
            for _ in range(warmup):
                for call in paths.values():
                    await call()
            lat: dict[str, list[float]] = {name: [] for name in paths}
            cpu0 = {name: k.cpu_seconds() for name, k in kernels.items()}
            for _ in range(calls):
                for name, call in paths.items():
                    t = time.perf_counter()
                    await call()
                    lat[name].append(time.perf_counter() - t)
            # Two syscalls per kernel and round: its SDK path and its stub path.
            cpu = {name: (k.cpu_seconds() - cpu0[name]) / (2 * calls) * 1000 for name, k in kernels.items()}
            for c in clients.values():
                await c.close()
            for c in channels.values():
                await c.close()
        floor = {q: pct(lat["llm_core"], q) for q in (0.5, 0.99)}
        out = {}
        for name in PATHS:
            out[name] = {"added_p50_ms": round((pct(lat[name], 0.5) - floor[0.5]) * 1000, 3),
                         "added_p99_ms": round((pct(lat[name], 0.99) - floor[0.99]) * 1000, 3)}
            if name in cpu:
                out[name]["kernel_cpu_ms_per_syscall"] = round(cpu[name], 3)
        out["llm_core_p50_ms"] = round(floor[0.5] * 1000, 3)
        return out
    finally:
        for child in reversed(children):
            child.stop()


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.overhead_ab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the git revision to compare the working tree with")
    p.add_argument("--calls", type=int, default=2000, help="calls per path and round (default 2000)")
    p.add_argument("--rounds", type=int, default=2, help="rounds, each with fresh processes (default 2)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "overhead-ab.json"))
    args = p.parse_args()
    rev = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="aios-base-") as tmp:
        base_root = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base_root), rev], cwd=ROOT, check=True)
        try:
            for i in range(args.rounds):
                r = asyncio.run(measure(base_root, args.calls))
                rounds.append(r)
                print(f"round {i + 1}: llm_core p50 {r['llm_core_p50_ms']} ms", flush=True)
                for name in PATHS:
                    row = r[name]
                    cpu = row.get("kernel_cpu_ms_per_syscall")
                    cpu = f", kernel CPU {cpu} ms/syscall" if cpu is not None else ""
                    print(f"  {name:11} added p50 {row['added_p50_ms']} ms, p99 {row['added_p99_ms']} ms{cpu}",
                          flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_root)], cwd=ROOT, check=False)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"base": rev, "calls": args.calls, "rounds": rounds,
                                          "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                                         indent=1) + "\n")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
