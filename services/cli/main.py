"""The `aios` command line."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys
import threading
from pathlib import Path

from services.cli import commands
from services.cli import stack as stack_mod

DEFAULT_DATA = Path(os.environ.get("AIOS_DATA_DIR", ".aios"))


def _port_args(p: argparse.ArgumentParser) -> None:
    for svc, port in stack_mod.DEFAULT_PORTS.items():
        flag = "--kernel-port" if svc == "scheduler" else f"--{svc.replace('_', '-')}-port"
        p.add_argument(flag, type=int, default=port, dest=f"port_{svc}",
                       help=f"port of {svc} (default {port})")


def cmd_up(args) -> int:
    ports = {svc: getattr(args, f"port_{svc}") for svc in stack_mod.SERVICES}
    config = stack_mod.StackConfig(
        data_dir=Path(args.data).resolve(), host=args.host, ports=ports,
        llm_server_port=args.llm_server_port, llm_endpoints=args.llm_endpoints or "",
        llm_parallel=args.llm_parallel, policy=args.policy, metrics_port=args.metrics_port,
        http_port=args.http_port,
    )
    stack = stack_mod.Stack(config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"starting the AIOS kernel (data in {config.data_dir})", flush=True)
    try:
        stack.start(on_ready=lambda name, where: print(f"  {name:<11} {where}", flush=True))
    except Exception as exc:  # noqa: BLE001 - reported, children already stopped
        print(f"aios up failed: {exc}", file=sys.stderr)
        return 1
    if args.metrics_port >= 0:
        print(f"  metrics     http://{args.host}:{args.metrics_port}/metrics", flush=True)
    if args.http_port >= 0:
        print(f"  openai door http://{args.host}:{args.http_port}/v1", flush=True)
    print(f"ready: the kernel listens on {stack.address('scheduler')}; Ctrl-C stops everything", flush=True)
    try:
        while not stop.wait(0.5):
            dead = [svc for svc, p in stack.procs.items() if p.poll() is not None]
            if dead:
                print(f"service exited: {', '.join(dead)} (logs in {stack.logs})", file=sys.stderr)
                return 1
        return 0
    finally:
        print("stopping...", flush=True)
        stack.stop()
        print("stopped", flush=True)


def cmd_status(args) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    ok = True
    print(f"{'SERVICE':<11} {'ADDRESS':<21} STATUS")
    for svc in stack_mod.SERVICES:
        address = f"{args.host}:{getattr(args, f'port_{svc}')}"
        try:
            with grpc.insecure_channel(address) as ch:
                resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
        except grpc.RpcError as exc:
            status = f"DOWN ({exc.code().name})"
        ok = ok and status == "SERVING"
        name = "kernel" if svc == "scheduler" else svc
        print(f"{name:<11} {address:<21} {status}")
    return 0 if ok else 1


def default_token(data: Path | str | None = None) -> str:
    """$AIOS_TOKEN, else the admin credential `aios up` keeps in the data folder."""
    token = os.environ.get("AIOS_TOKEN", "")
    if token:
        return token
    path = Path(data or DEFAULT_DATA) / "admin.token"
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def client(args):
    """An SDK client from the --kernel/--token/--timeout arguments."""
    from aios.sdk import Client

    token = args.token if args.token is not None else default_token(getattr(args, "data", None))
    return Client(args.kernel, token, timeout=args.timeout)


def with_client(fn, args) -> int:
    """Run fn(kernel, args) with an SDK client; a kernel error (or a local
    file error) is printed and exits 1."""
    from aios.sdk import AiosError

    try:
        with client(args) as kernel:
            fn(kernel, args)
    except (AiosError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def cmd_chat(args) -> int:
    from aios.sdk import AiosError, ChatResult

    kwargs = dict(model=args.model, max_tokens=args.max_tokens, system=args.system,
                  temperature=args.temperature)
    try:
        with client(args) as kernel:
            if args.stream:
                result = None
                for item in kernel.chat_stream(args.prompt, **kwargs):
                    if isinstance(item, ChatResult):
                        result = item
                    else:
                        print(item, end="", flush=True)
                print()
            else:
                result = kernel.llm.chat(args.prompt, **kwargs)
                print(result.text)
    except AiosError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if result is not None:
        print(f"-- waiting {result.waiting * 1000:.1f} ms, turnaround {result.turnaround * 1000:.1f} ms, "
              f"tokens {result.prompt_tokens} prompt + {result.completion_tokens} completion",
              file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aios", description="The AIOS kernel for LLM agents.")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the LLM server and the five services on localhost")
    up.add_argument("--data", default=str(DEFAULT_DATA), help="data folder (default .aios)")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--llm-server-port", type=int, default=0,
                    help="port of the embedded LLM server (default: any free port)")
    up.add_argument("--llm-endpoints", default=os.environ.get("AIOS_LLM_ENDPOINTS", ""),
                    help="JSON list of OpenAI-compatible endpoints instead of the embedded model")
    up.add_argument("--llm-parallel", type=int, default=4, help="parallel slots of the embedded LLM")
    up.add_argument("--policy", default=os.environ.get("AIOS_KERNEL_POLICY", "fifo"),
                    help="scheduling policy: fifo, round_robin, priority, fair_share, agent_aware")
    up.add_argument("--metrics-port", type=int, default=9464,
                    help="Prometheus metrics of the kernel at http://HOST:PORT/metrics (-1: off)")
    up.add_argument("--http-port", type=int, default=50080,
                    help="the kernel's OpenAI-compatible door at http://HOST:PORT/v1 (-1: off)")
    _port_args(up)
    up.set_defaults(func=cmd_up)

    status = sub.add_parser("status", help="health of the five services; exit 0 when all serve")
    status.add_argument("--host", default="127.0.0.1")
    _port_args(status)
    status.set_defaults(func=cmd_status)

    def client_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--kernel", default=None, help="kernel address (default $AIOS_KERNEL or 127.0.0.1:50051)")
        p.add_argument("--token", default=None,
                       help="agent token (default $AIOS_TOKEN, else the admin token in --data)")
        p.add_argument("--data", default=str(DEFAULT_DATA), help="data folder of `aios up` (for its admin token)")
        p.add_argument("--timeout", type=float, default=120.0, help="seconds before giving up")

    chat = sub.add_parser("chat", help="send one LLM syscall through the kernel")
    chat.add_argument("prompt")
    chat.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    chat.add_argument("--model", default="smollm2")
    chat.add_argument("--system", default=None)
    chat.add_argument("--max-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=None)
    client_args(chat)
    chat.set_defaults(func=cmd_chat)

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{info.name}").register(sub, client_args)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
