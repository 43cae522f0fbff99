"""Load check for the serving simulator (benchmark tool).

Starts ``python -m bench.simulator --port 0`` as a subprocess, fires N
concurrent *streaming* chat requests at it from one shared ``AsyncOpenAI``
client (with a connection pool big enough for all of them), and prints the
error count, requests/s, output tokens/s, and how close the run came to the
engine's analytic ideal (``Engine.ideal_time_s``).  Exits non-zero on any
error (HTTP error, wrong token count, missing usage, timeout, bad shutdown).

    .venv/bin/python bench/simulator_load.py                  # 1000 x 64 tokens
    .venv/bin/python bench/simulator_load.py --requests 2000 --max-tokens 32 \\
        --sim-arg=--max-num-seqs=512
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import openai  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402

try:                       # openai >= 3 ships on httpx2; older releases on httpx
    import httpx2 as httpx  # noqa: E402
except ImportError:        # pragma: no cover
    import httpx  # noqa: E402

from bench.simulator.__main__ import build_parser, config_from_args  # noqa: E402
from bench.simulator.engine import Engine, parse_messages  # noqa: E402


def _raise_fd_limit() -> None:
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def start_simulator(sim_args: list[str], timeout: float = 30.0):
    """Start the simulator subprocess; return (process, base_url)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.simulator", "--port", "0", *sim_args,
        cwd=str(ROOT), stdout=asyncio.subprocess.PIPE)
    try:
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
            if not line:
                raise RuntimeError(f"simulator exited early (rc={await proc.wait()})")
            text = line.decode().strip()
            if text.startswith("LISTENING "):
                return proc, text.split(" ", 1)[1]
    except BaseException:
        proc.kill()
        await proc.wait()
        raise


def _proc_cpu_seconds(pid: int) -> float | None:
    """user+system CPU seconds of a process (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run(args: argparse.Namespace) -> int:
    sim_args = ["--time-scale", str(args.time_scale), *args.sim_arg]
    # Same config as the subprocess, for the analytic ideal bound.
    cfg = config_from_args(build_parser().parse_args(sim_args))
    proc, base_url = await start_simulator(sim_args)
    print(f"simulator: {base_url} (args: {' '.join(sim_args)})", flush=True)

    # Room for every in-flight request.  Few *idle* keep-alive connections:
    # the httpcore pool re-checks every idle socket on each request event
    # (O(pool) per event), which dominates client CPU with ~1000 idle ones.
    limits = httpx.Limits(max_connections=args.concurrency + 16,
                          max_keepalive_connections=args.keepalive)
    client = AsyncOpenAI(
        base_url=base_url, api_key="sim", max_retries=0,
        timeout=httpx.Timeout(args.timeout, connect=args.timeout),
        http_client=openai.DefaultAsyncHttpxClient(limits=limits))

    filler = " ".join(f"word{i}" for i in range(args.prompt_words))
    prompts = [[{"role": "user", "content": f"request {i}: {filler}"}] for i in range(args.requests)]
    errors: list[str] = []
    ttfts: list[float] = []
    latencies: list[float] = []
    out_tokens = 0
    sem = asyncio.Semaphore(args.concurrency)

    async def one(i: int) -> None:
        nonlocal out_tokens
        async with sem:
            t0 = time.perf_counter()
            try:
                stream = await client.chat.completions.create(
                    model=cfg.model, messages=prompts[i], max_tokens=args.max_tokens,
                    stream=True, stream_options={"include_usage": True})
                n, usage, first = 0, None, None
                async for chunk in stream:
                    if chunk.usage is not None:
                        usage = chunk.usage
                    if chunk.choices and chunk.choices[0].delta.content:
                        if first is None:
                            first = time.perf_counter()
                        n += 1
                if n != args.max_tokens or usage is None or usage.completion_tokens != n:
                    raise RuntimeError(f"got {n} tokens, usage={usage}")
                out_tokens += n
                ttfts.append(first - t0)
                latencies.append(time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - a load check counts everything
                errors.append(f"request {i}: {type(exc).__name__}: {exc}")

    t_start = time.perf_counter()
    tasks = [asyncio.create_task(one(i)) for i in range(args.requests)]
    done, pending = await asyncio.wait(tasks, timeout=args.timeout)
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
        errors.append(f"{len(pending)} requests still running after {args.timeout}s")
    wall = time.perf_counter() - t_start

    try:
        server = (await client._client.get(base_url.removesuffix("/v1") + "/metrics")).json()
    except Exception as exc:  # noqa: BLE001
        server = {}
        errors.append(f"metrics: {exc}")
    await client.close()
    server_cpu = _proc_cpu_seconds(proc.pid)
    import resource
    ru = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = ru.ru_utime + ru.ru_stime

    proc.send_signal(signal.SIGTERM)
    try:
        rc = await asyncio.wait_for(proc.wait(), 15)
    except asyncio.TimeoutError:
        proc.kill()
        rc = await proc.wait()
    if rc != 0:
        errors.append(f"simulator exit code {rc} after SIGTERM")

    prompt_tokens = sum(parse_messages(p).prompt_tokens for p in prompts)
    engine = Engine(cfg)
    ideal = engine.ideal_time_s(prompt_tokens, args.requests * args.max_tokens,
                                avg_seq_tokens=(prompt_tokens / args.requests + args.max_tokens))
    ok = args.requests - len([e for e in errors if e.startswith("request ")])
    print(f"requests:        {args.requests} (concurrency {args.concurrency}, "
          f"{args.max_tokens} output tokens each, ~{prompt_tokens // args.requests} prompt tokens)")
    print(f"errors:          {len(errors)}")
    print(f"wall time:       {wall:.2f} s (ideal bound {ideal:.2f} s, "
          f"efficiency {ideal / wall:.1%})")
    print(f"requests/s:      {ok / wall:.1f}")
    print(f"tokens/s:        {out_tokens / wall:.0f} output "
          f"(engine peak {engine.peak_throughput_tokens_per_s():.0f})")
    if ttfts:
        print(f"TTFT s:          p50 {statistics.median(ttfts):.3f}  p99 {pct(ttfts, 0.99):.3f}")
        print(f"latency s:       p50 {statistics.median(latencies):.3f}  p99 {pct(latencies, 0.99):.3f}")
    if server:
        print(f"server:          served {server.get('requests_served')}, "
              f"peak running {server.get('peak_running')}, peak waiting {server.get('peak_waiting')}, "
              f"steps {server.get('steps')}, engine busy {server.get('busy_seconds', 0):.2f} s, "
              f"lag {server.get('lag_seconds_total', 0):.2f} s")
    print(f"CPU s:           client {client_cpu:.1f}, simulator "
          f"{server_cpu if server_cpu is None else round(server_cpu, 1)} (wall {wall:.1f})")
    for e in errors[:10]:
        print("ERROR", e, file=sys.stderr)
    return 1 if errors else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=1000, help="max requests in flight")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--keepalive", type=int, default=32,
                   help="max idle keep-alive connections in the client pool")
    p.add_argument("--prompt-words", type=int, default=50, help="filler words per prompt")
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=120.0, help="bound on the whole run (s)")
    p.add_argument("--sim-arg", action="append", default=[],
                   help="extra simulator argument, e.g. --sim-arg=--max-num-seqs=512")
    args = p.parse_args()
    _raise_fd_limit()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
