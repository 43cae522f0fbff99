"""`aios ps`, `aios syscalls`, `aios policy`: the kernel's process table and
scheduling policy."""

from __future__ import annotations

import sys

from services.cli.main import client


def _seconds(d) -> float:
    return d.ToNanoseconds() / 1e9


def cmd_ps(args) -> int:
    from aios.sdk import AiosError

    try:
        with client(args) as kernel:
            agents = kernel.list_agents()
    except AiosError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{'AGENT':<24} {'RUN':>4} {'QUEUED':>6} {'DONE':>6} {'FAILED':>6} {'PROMPT':>8} {'OUTPUT':>8} {'MEAN WAIT':>10}")
    for a in agents:
        print(f"{a.agent:<24} {a.running:>4} {a.queued:>6} {a.completed:>6} {a.failed:>6} "
              f"{a.prompt_tokens:>8} {a.completion_tokens:>8} {_seconds(a.mean_waiting) * 1000:>8.1f}ms")
    return 0


def cmd_syscalls(args) -> int:
    from aios.kernel.v1 import syscall_pb2 as ks
    from aios.sdk import AiosError

    filters = {"page_size": args.limit}
    if args.agent:
        filters["agent"] = args.agent
    if args.state:
        filters["state"] = ks.SyscallState.Value(f"SYSCALL_STATE_{args.state.upper()}")
    try:
        with client(args) as kernel:
            page = kernel.list_syscalls(**filters)
    except AiosError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{'ID':<17} {'AGENT':<16} {'KIND':<8} {'RESOURCE':<18} {'STATE':<10} {'WAIT':>9} {'TURNAROUND':>11} {'TOKENS':>7}")
    for r in page.syscalls:
        kind = ks.SyscallKind.Name(r.kind).removeprefix("SYSCALL_KIND_").lower()
        state = ks.SyscallState.Name(r.state).removeprefix("SYSCALL_STATE_").lower()
        print(f"{r.id:<17} {r.agent[:16]:<16} {kind:<8} {r.resource[:18]:<18} {state:<10} "
              f"{_seconds(r.waiting) * 1000:>7.1f}ms {_seconds(r.turnaround) * 1000:>9.1f}ms "
              f"{r.usage.total_tokens:>7}")
    return 0


def cmd_policy(args) -> int:
    from aios.kernel.v1 import kernel_service_pb2 as kpb
    from aios.sdk import AiosError

    try:
        with client(args) as kernel:
            policy = kernel.set_policy(args.name, slice_tokens=args.slice_tokens) if args.name \
                else kernel.get_policy()
    except AiosError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    name = kpb.PolicyKind.Name(policy.kind).removeprefix("POLICY_KIND_").lower()
    print(f"policy {name} (round-robin slice {policy.slice_tokens} tokens, "
          f"priority aging {_seconds(policy.aging_interval):g}s per level)")
    return 0


def register(sub, client_args) -> None:
    ps = sub.add_parser("ps", help="the process table: each agent's calls, tokens and waiting")
    client_args(ps)
    ps.set_defaults(func=cmd_ps)

    sc = sub.add_parser("syscalls", help="recent syscalls with state, waiting and turnaround")
    sc.add_argument("--agent", default="")
    sc.add_argument("--state", default="", choices=["", "queued", "running", "preempted", "succeeded",
                                                     "failed", "cancelled", "awaiting_confirmation"])
    sc.add_argument("--limit", type=int, default=30)
    client_args(sc)
    sc.set_defaults(func=cmd_syscalls)

    pol = sub.add_parser("policy", help="show the scheduling policy, or switch it")
    pol.add_argument("name", nargs="?", choices=["fifo", "round_robin", "priority", "fair_share", "agent_aware"])
    pol.add_argument("--slice-tokens", type=int, default=0, help="round-robin slice in tokens")
    client_args(pol)
    pol.set_defaults(func=cmd_policy)
