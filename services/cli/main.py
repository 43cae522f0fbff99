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

from services.cli import commands, common
from services.cli import stack as stack_mod
from services.cli import supervisor


def port_flag(svc: str) -> str:
    """The `aios up` option of a service's port, e.g. --kernel-port."""
    return "--kernel-port" if svc == "scheduler" else f"--{svc.replace('_', '-')}-port"


def port_flags(ports: dict[str, int]) -> list[str]:
    """`aios up` arguments for these ports (by service name)."""
    return [arg for svc, port in ports.items() for arg in (port_flag(svc), str(port))]


def _port_args(p: argparse.ArgumentParser) -> None:
    for svc, port in stack_mod.DEFAULT_PORTS.items():
        flag = port_flag(svc)
        name = "the kernel" if svc == "scheduler" else svc
        p.add_argument(flag, type=int, default=port, dest=f"port_{svc}", metavar="PORT",
                       help=f"port of {name} (default {port})")


def busy_ports(host: str, ports: dict[str, int]) -> list[tuple[str, int]]:
    """The (name, port) pairs another process already listens on."""
    from services.local.ports import port_is_free

    return [(name, port) for name, port in ports.items() if port > 0 and not port_is_free(host, port)]


def cmd_up(args) -> int:
    ports = {svc: getattr(args, f"port_{svc}") for svc in stack_mod.SERVICES}
    wanted = {("kernel" if svc == "scheduler" else svc): port for svc, port in ports.items()}
    wanted.update({"metrics": args.metrics_port, "openai door": args.http_port, "llm server": args.llm_server_port})
    busy = busy_ports(args.host, wanted)
    if busy:
        names = ", ".join(f"{port} ({name})" for name, port in busy)
        print(f"aios up: {args.host} port{'s' if len(busy) > 1 else ''} {names} already in use, "
              "perhaps by another `aios up`: stop it, or choose free ports (--kernel-port, --llm-core-port, "
              "--memory-port, --storage-port, --access-port, --metrics-port, --http-port)", file=sys.stderr)
        return 1
    config = stack_mod.StackConfig(
        data_dir=Path(args.data).resolve(), host=args.host, ports=ports,
        llm_server_port=args.llm_server_port, llm_endpoints=args.llm_endpoints or "",
        llm_parallel=args.llm_parallel, policy=args.policy, metrics_port=args.metrics_port,
        http_port=args.http_port,
    )
    stack = stack_mod.Stack(config, say=lambda line: print(line, file=sys.stderr, flush=True))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"starting the AIOS kernel (data in {config.data_dir})", flush=True)
    try:
        stack.start(on_ready=lambda name, where: print(f"  {name:<11} {where}", flush=True))
    except Exception as exc:  # noqa: BLE001 - reported, children already stopped
        print(f"aios up failed: {exc}", file=sys.stderr)
        return 1
    for svc, port in stack.metrics_ports.items():
        if port >= 0:
            name = "kernel" if svc == "scheduler" else svc
            print(f"  metrics     http://{args.host}:{port}/metrics ({name})", flush=True)
    if args.http_port >= 0:
        print(f"  openai door http://{args.host}:{args.http_port}/v1", flush=True)
        print(f"  console     http://{args.host}:{args.http_port}/console (sign in with the admin token)", flush=True)
    print(f"ready: the kernel listens on {stack.address('scheduler')}; Ctrl-C stops everything", flush=True)
    if stack.address("scheduler") != common.DEFAULT_KERNEL:
        print(f"  for other commands: export AIOS_KERNEL={stack.address('scheduler')} "
              f"AIOS_DATA_DIR={config.data_dir}", flush=True)
    try:
        while not stop.wait(0.5):
            reason = stack.supervise()
            if reason:
                print(f"aios up: giving up: {reason}", file=sys.stderr)
                return 1
        return 0
    finally:
        print("stopping...", flush=True)
        stack.stop()
        print("stopped", flush=True)


def cmd_status(args) -> int:
    """The kernel's health, then every service as the kernel sees it; exit 0
    when all serve."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from aios.sdk import AiosError

    address = common.kernel_address(args)
    try:
        with common.grpc_channel(args, address) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=args.timeout)
        kernel = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    except common.CliError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except grpc.RpcError as exc:
        common.table(("SERVICE", "ADDRESS", "STATUS"), [("kernel", address, f"DOWN ({exc.code().name})")])
        print(f"hint: no kernel answers at {address}; start one with `aios up`, or point at yours "
              "with --kernel or AIOS_KERNEL", file=sys.stderr)
        return 1
    rows = [("kernel", address, kernel, "")]
    try:
        with common.client(args) as k:
            status = k.get_status()
    except AiosError as err:
        common.table(("SERVICE", "ADDRESS", "STATUS", "DETAIL"), rows)
        print(f"the other services: unknown ({common.explain(err, args)})", file=sys.stderr)
        return 1
    rows += [(s.name, s.address, s.status, s.detail) for s in status.services]
    healthy = all(r[2] in ("SERVING", "NOT_USED") for r in rows)
    supervised = supervisor.read_state(common.data_dir(args))
    if supervised is None:
        common.table(("SERVICE", "ADDRESS", "STATUS", "DETAIL"), rows)
    else:
        # The stack `aios up` keeps on this data folder: restarts per child,
        # and the children the kernel does not see (S3, the LLM server).
        children = supervised["children"]

        def restarts(name: str) -> str:
            child = children.get("scheduler" if name == "kernel" else name)
            if child is None:
                return "-"
            last = f" (last exit {child['last_exit']})" if child["last_exit"] is not None else ""
            return f"{child['restarts']}{last}"

        rows = [(*r[:3], restarts(r[0]), r[3]) for r in rows]
        for name in ("s3", "llm_server"):
            if name in children:
                state = children[name]["state"]
                rows.append((name, f"pid {children[name]['pid']}", state.upper(), restarts(name), ""))
                healthy = healthy and state == "running"
        common.table(("SERVICE", "ADDRESS", "STATUS", "RESTARTS", "DETAIL"), rows)
    if status.replicas:
        print()
        common.table(("REPLICA", "ADDRESS", ""),
                     [(r.id, r.address, "(answered)" if r.answering else "") for r in status.replicas])
    print(f"default model {status.default_model or '(none)'}, auth {status.auth}", file=sys.stderr)
    return 0 if healthy else 1


def cmd_chat(args) -> int:
    from aios.sdk import ChatResult

    kwargs = dict(model=args.model, max_tokens=args.max_tokens, system=args.system,
                  temperature=args.temperature)
    result = None

    def chat(kernel, args) -> None:
        nonlocal result
        if args.stream:
            for item in kernel.chat_stream(args.prompt, **kwargs):
                if isinstance(item, ChatResult):
                    result = item
                else:
                    print(item, end="", flush=True)
            print()
        else:
            result = kernel.llm.chat(args.prompt, **kwargs)
            print(result.text)

    code = common.with_client(chat, args)
    if result is not None:
        print(f"-- {result.record.resource.removeprefix('llm:')}: waiting {result.waiting * 1000:.1f} ms, "
              f"turnaround {result.turnaround * 1000:.1f} ms, "
              f"tokens {result.prompt_tokens} prompt + {result.completion_tokens} completion", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = common.Parser(prog="aios", description="The AIOS kernel for LLM agents.",
                           epilog="Every command that talks to a stack takes --kernel, --data, --token "
                                  "and --timeout (or AIOS_KERNEL, AIOS_DATA_DIR, AIOS_TOKEN).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=common.Parser)

    up = sub.add_parser("up", help="start the LLM server and the five services on localhost")
    up.add_argument("--data", default=os.environ.get("AIOS_DATA_DIR") or common.DEFAULT_DATA, metavar="DIR",
                    help="data folder (default $AIOS_DATA_DIR, else .aios)")
    up.add_argument("--host", default="127.0.0.1", help="address every service binds (default 127.0.0.1)")
    up.add_argument("--llm-server-port", type=int, default=0, metavar="PORT",
                    help="port of the embedded LLM server (default: any free port)")
    up.add_argument("--llm-endpoints", default=os.environ.get("AIOS_LLM_ENDPOINTS", ""), metavar="JSON",
                    help="JSON list of OpenAI-compatible endpoints instead of the embedded model")
    up.add_argument("--llm-parallel", type=int, default=4, metavar="N",
                    help="parallel slots of the embedded LLM (default 4)")
    up.add_argument("--policy", default=os.environ.get("AIOS_KERNEL_POLICY", "fifo"),
                    help="scheduling policy: fifo, round_robin, priority, fair_share, agent_aware")
    up.add_argument("--metrics-port", type=int, default=9464, metavar="PORT",
                    help="Prometheus metrics of the kernel at http://HOST:PORT/metrics, the other "
                         "services' on free ports (printed at start; -1: all off)")
    up.add_argument("--http-port", type=int, default=50080, metavar="PORT",
                    help="the kernel's OpenAI-compatible door at http://HOST:PORT/v1 (-1: off)")
    _port_args(up)
    up.set_defaults(func=cmd_up)

    status = sub.add_parser("status", help="health of the kernel and of every service it calls; exit 0 when all serve")
    common.common_args(status, timeout=5.0)
    status.set_defaults(func=cmd_status)

    chat = sub.add_parser("chat", help="send one LLM syscall through the kernel")
    chat.add_argument("prompt", help="what to ask")
    chat.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    chat.add_argument("--model", default=None, help="model name (default: the kernel's default, see `aios models`)")
    chat.add_argument("--system", default=None, help="a system message")
    chat.add_argument("--max-tokens", type=int, default=256, metavar="N", help="most tokens to generate (default 256)")
    chat.add_argument("--temperature", type=float, default=None, help="sampling temperature")
    common.common_args(chat)
    chat.set_defaults(func=cmd_chat)

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{info.name}").register(sub, common.common_args)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
