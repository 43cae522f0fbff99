"""llm_core's own CPU per call: N callers send non-streamed calls back to
back through llm_core to the simulator at time scale 0 (an instant engine),
so llm_core's Python is all there is to measure. With --profile, py-spy
samples llm_core and the hottest functions are printed.

    .venv/bin/python -m bench.llm_core_cpu [--callers 256] [--calls 8] [--stream] [--profile]

--stream sends GenerateStream calls (a chunk per token from the engine)
instead of Generate.

Prints the figures and appends them to bench/results/llm_core_cpu.jsonl.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import grpc

from aios.common.v1 import llm_pb2 as lc
from aios.llm.v1 import llm_service_pb2 as pb
from aios.llm.v1 import llm_service_pb2_grpc as pb_grpc
from bench import procs, profiling
from bench.workload import MODEL

OUT = Path(__file__).resolve().parent / "results" / "llm_core_cpu.jsonl"


def _request(i: int, tokens: int) -> pb.GenerateRequest:
    return pb.GenerateRequest(session_id=f"s{i}", call=lc.LlmCall(model=MODEL, max_tokens=tokens, messages=[
        lc.Message(role=lc.ROLE_SYSTEM, content="x" * 2000), lc.Message(role=lc.ROLE_USER, content=f"task {i}")]))


async def measure(callers: int, calls: int, tokens: int, profile: bool, stream: bool = False) -> dict:
    sim, urls = procs.start_simulator("--time-scale", "0", "--max-num-seqs", "4096", "--kv-tokens", "10000000")
    core = procs.start_llm_core([{"name": "instant", "model": MODEL, "base_url": urls[0], "model_id": "sim",
                                  "max_concurrency": 4096}])
    try:
        async with grpc.aio.insecure_channel(core.address) as channel:
            stub = pb_grpc.LlmServiceStub(channel)
            await stub.Generate(_request(0, tokens))
            spy = profiling.PySpy(core.proc.pid, OUT.parent / "profiles" / "llm_core.txt") if profile else None
            cpu0, t0 = core.cpu_seconds(), time.perf_counter()

            async def caller(i: int) -> None:
                for _ in range(calls):
                    if stream:
                        async for _chunk in stub.GenerateStream(_request(i, tokens)):
                            pass
                    else:
                        await stub.Generate(_request(i, tokens))

            await asyncio.gather(*(caller(i) for i in range(callers)))
            seconds, cpu = time.perf_counter() - t0, core.cpu_seconds() - cpu0
            if spy is not None:
                spy.stop()
    finally:
        core.stop()
        sim.stop()
    total = callers * calls
    rec = {"callers": callers, "calls": total, "stream": stream, "seconds": round(seconds, 2), "calls_per_s": round(total / seconds, 1),
           "llm_core_cpu_ms_per_call": round(cpu * 1000 / total, 3)}
    if spy is not None:
        rec["profile_top_self"] = spy.summary().get("top_self", [])[:15]
    return rec


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.llm_core_cpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--callers", type=int, default=256)
    p.add_argument("--calls", type=int, default=8, help="calls per caller")
    p.add_argument("--tokens", type=int, default=48, help="output tokens per call")
    p.add_argument("--stream", action="store_true", help="streamed calls (GenerateStream)")
    p.add_argument("--profile", action="store_true", help="sample llm_core with py-spy")
    args = p.parse_args()
    rec = asyncio.run(measure(args.callers, args.calls, args.tokens, args.profile, args.stream))
    print(json.dumps(rec, indent=1))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("a") as f:
        f.write(json.dumps(rec) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
