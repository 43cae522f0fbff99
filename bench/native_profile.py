"""Where the kernel's CPU goes below Python: py-spy with --native (which
pauses the process at each sample, so it runs apart from the timed runs)
while N agents send one-token calls through the kernel on an instant
backend. Appends a `native_profile` record to the results file.

    .venv/bin/python -m bench.native_profile [--agents 1000] [--seconds 15] [--variant NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from aios.sdk import AsyncClient
from bench import procs
from bench.profiling import _frame, _pyspy, short
from bench.workload import MODEL

ROOT = Path(__file__).resolve().parent.parent


def native_area(func: str, path: str) -> str:
    p = path.replace("\\", "/")
    if "cygrpc" in p or "grpc/_cython" in p:
        return "grpc Cython (cygrpc)"
    if "libgrpc" in p or "grpc_core" in func or func.startswith(("grpc_", "gpr_")) or "/grpc" in p and ".so" in p:
        return "gRPC C core"
    if "_upb" in p or "upb" in func or "protobuf" in p:
        return "protobuf (upb)"
    if "libpython" in p or p.endswith(".c") or "python3" in p and ".so" in p:
        return "CPython interpreter"
    if "libc" in p or "ld-linux" in p or "libpthread" in p:
        return "libc / kernel calls"
    if "services/scheduler/" in p:
        return "kernel: services/scheduler"
    if "services/runtime/" in p:
        return "kernel: services/runtime"
    if "grpc/aio/" in p or "grpc/" in p:
        return "grpc (Python layer)"
    if "asyncio/" in p or "selectors" in p:
        return "asyncio"
    if "aios/" in p:
        return "generated stubs / SDK"
    return "other: " + (p.rsplit("/", 1)[-1] or func)


def summarize_native(text: str) -> dict:
    total = 0
    leaf = Counter()
    leaf_func = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";") if f]
        frames = [f for f in frames if f[1] or f[0]]
        if not frames:
            continue
        n = int(count)
        total += n
        func, path = frames[-1]
        leaf[native_area(func, path)] += n
        leaf_func[short(func, path)] += n
    return {"samples": total,
            "by_area_self": [[k, round(v / max(1, total), 4)] for k, v in leaf.most_common(15)],
            "top_self": [[k, round(v / max(1, total), 4)] for k, v in leaf_func.most_common(20)]}


async def main(args) -> None:
    sim, urls = procs.start_simulator("--time-scale", "0", "--max-num-seqs", "4096", "--kv-tokens", "10000000")
    core = procs.start_llm_core([{"name": "instant", "model": MODEL, "base_url": urls[0], "max_concurrency": 4096}])
    kernel = procs.start_kernel(core.address, variant=args.variant)
    out = ROOT / "bench" / "results" / "profiles" / f"kernel-native{('-' + args.variant) if args.variant else ''}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        client = AsyncClient(kernel.address, token="bench", timeout=600, retries=3)
        views = []
        for i in range(args.agents):
            v = client.with_options(session_id=f"n{i}")
            v.token = f"n{i}"
            views.append(v)
        stop = time.monotonic() + args.seconds + 5
        done = 0

        async def agent(i):
            nonlocal done
            while time.monotonic() < stop:
                try:
                    await views[i].llm.chat([{"role": "user", "content": f"ping {i}"}], model=MODEL, max_tokens=1)
                    done += 1
                except Exception:  # noqa: BLE001 - load only
                    await asyncio.sleep(0.1)

        tasks = [asyncio.create_task(agent(i)) for i in range(args.agents)]
        await asyncio.sleep(3)
        spy = subprocess.Popen([_pyspy(), "record", "--pid", str(kernel.pid), "--native", "--rate", "50",
                                "--format", "raw", "--output", str(out), "--duration", str(args.seconds)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        cpu0, d0 = kernel.cpu_seconds(), done
        spy.wait(timeout=args.seconds + 60)
        cpu = kernel.cpu_seconds() - cpu0
        calls = done - d0
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
    finally:
        for child in (kernel, core, sim):
            child.stop()
    summary = summarize_native(out.read_text()) if out.exists() else {"error": spy.stderr.read().decode()[-300:]}
    rec = {"kind": "native_profile", "agents": args.agents, "seconds": args.seconds, "variant": args.variant,
           "kernel_cpu_s": round(cpu, 2), "syscalls": calls, **summary}
    with open(args.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec, indent=1))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--seconds", type=int, default=15)
    p.add_argument("--variant", default="pending_requests")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "bench.jsonl"))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    asyncio.run(main(p.parse_args()))
