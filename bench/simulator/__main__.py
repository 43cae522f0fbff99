"""CLI: ``python -m bench.simulator --port N [knobs]``.

Prints ``LISTENING http://127.0.0.1:PORT/v1`` (one line per replica, flushed)
once every replica accepts connections; exits cleanly on SIGTERM / SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import resource
import signal
import sys

from .engine import EngineConfig
from .server import serve


def build_parser() -> argparse.ArgumentParser:
    d = EngineConfig()
    p = argparse.ArgumentParser(
        prog="python -m bench.simulator",
        description="Simulated OpenAI-compatible LLM serving engine (benchmark tool).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--port", type=int, default=8000,
                   help="port of the first replica (0 = pick free ports)")
    p.add_argument("--replicas", type=int, default=1,
                   help="engines in this process, on ports PORT..PORT+N-1")
    p.add_argument("--model", default=d.model, help="model name served")
    p.add_argument("--max-num-seqs", type=int, default=d.max_num_seqs,
                   help="max sequences in a batch")
    p.add_argument("--kv-tokens", type=int, default=d.kv_tokens,
                   help="KV-cache capacity in tokens")
    p.add_argument("--max-model-len", type=int, default=d.max_model_len,
                   help="max prompt+output tokens of one request")
    p.add_argument("--base-step-ms", type=float, default=d.base_step_ms,
                   help="fixed cost of one decode step (ms)")
    p.add_argument("--per-seq-ms", type=float, default=d.per_seq_ms,
                   help="extra step cost per sequence in the batch (ms)")
    p.add_argument("--prefill-ms-per-token", type=float, default=d.prefill_ms_per_token,
                   help="prefill cost per uncached prompt token (ms)")
    p.add_argument("--time-scale", type=float, default=d.time_scale,
                   help="multiplies all simulated times (0.01 = 100x faster)")
    p.add_argument("--default-output-tokens", type=int, default=d.default_output_tokens,
                   help="output length when a request has no max_tokens")
    p.add_argument("--prefix-cache", action="store_true", help="enable the prefix cache")
    p.add_argument("--prefix-cache-tokens", type=int, default=d.prefix_cache_tokens,
                   help="prefix-cache capacity in tokens (0 = same as --kv-tokens)")
    p.add_argument("--block-size", type=int, default=d.block_size,
                   help="prefix-cache block size in tokens")
    p.add_argument("--max-waiting", type=int, default=d.max_waiting,
                   help="max queued requests before HTTP 503 (0 = unbounded)")
    return p


def config_from_args(args: argparse.Namespace) -> EngineConfig:
    names = {f.name for f in dataclasses.fields(EngineConfig)}
    cfg = EngineConfig(**{k: v for k, v in vars(args).items() if k in names})
    cfg.validate()
    return cfg


def _raise_fd_limit() -> None:
    """Thousands of connections need thousands of file descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
        except (ValueError, OSError):
            pass


async def _main(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    configs = [dataclasses.replace(cfg) for _ in range(max(1, args.replicas))]
    await serve(configs, args.port, stop)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config_from_args(args)
    except (TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _raise_fd_limit()
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
