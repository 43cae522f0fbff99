"""`aios ps`, `aios syscalls`, `aios policy`: the kernel's process table
(with each agent's cost and tightest quota) and scheduling policy."""

from __future__ import annotations

from services.cli import common
from services.cli.commands.quota import describe_left, money


def _ms(d) -> str:
    return f"{d.ToNanoseconds() / 1e6:.1f}ms"


PS_HEADER = ("AGENT", "RUN", "QUEUED", "DONE", "FAILED", "PROMPT", "OUTPUT", "MEAN WAIT", "COST", "QUOTA LEFT")
SYSCALLS_HEADER = ("ID", "AGENT", "SESSION", "KIND", "RESOURCE", "STATE", "WAIT", "TURNAROUND", "TOKENS")


def ps_row(a) -> tuple:
    """One agent's row of `aios ps`; QUOTA LEFT is its tightest limit."""
    return (a.agent, a.running, a.queued, a.completed, a.failed, a.prompt_tokens, a.completion_tokens,
            _ms(a.mean_waiting), money(a.cost), describe_left(a.quota[0]) if a.quota else "-")


def syscall_row(r) -> tuple:
    """One SyscallRecord's row of `aios syscalls`."""
    from aios.kernel.v1 import syscall_pb2 as ks

    kind = ks.SyscallKind.Name(r.kind).removeprefix("SYSCALL_KIND_").lower()
    state = ks.SyscallState.Name(r.state).removeprefix("SYSCALL_STATE_").lower()
    if r.confirmation_id:
        state = f"{state} ({r.confirmation_id})"
    return (r.id, r.agent[:16], r.session_id[:16] or "-", kind, r.resource[:18], state, _ms(r.waiting),
            _ms(r.turnaround), r.usage.total_tokens)


def _ps(kernel, args) -> None:
    common.table(PS_HEADER, [ps_row(a) for a in kernel.list_agents()], right=range(1, 9),
                 empty="no agents have made syscalls yet")


def _syscalls(kernel, args) -> None:
    from aios.kernel.v1 import syscall_pb2 as ks

    filters = {"page_size": args.limit}
    if args.agent:
        filters["agent"] = args.agent
    if args.session:
        filters["session_id"] = args.session
    if args.state:
        filters["state"] = ks.SyscallState.Value(f"SYSCALL_STATE_{args.state.upper()}")
    page = kernel.list_syscalls(**filters)
    common.table(SYSCALLS_HEADER, [syscall_row(r) for r in page.syscalls], right=(6, 7, 8),
                 empty="no syscalls match")


def _policy(kernel, args) -> None:
    from aios.kernel.v1 import kernel_service_pb2 as kpb

    policy = kernel.set_policy(args.name, slice_tokens=args.slice_tokens) if args.name else kernel.get_policy()
    name = kpb.PolicyKind.Name(policy.kind).removeprefix("POLICY_KIND_").lower()
    print(f"policy {name} (round-robin slice {policy.slice_tokens} tokens, "
          f"priority aging {policy.aging_interval.ToNanoseconds() / 1e9:g}s per level)")


STATES = ["queued", "running", "preempted", "succeeded", "failed", "cancelled", "awaiting_confirmation"]
POLICIES = ["fifo", "round_robin", "priority", "fair_share", "agent_aware"]


def register(sub, client_args) -> None:
    ps = sub.add_parser("ps", help="the process table: each agent's calls, tokens and waiting")
    client_args(ps)
    ps.set_defaults(func=common.command(_ps))

    sc = sub.add_parser("syscalls", help="recent syscalls with state, waiting and turnaround")
    sc.add_argument("--agent", default="", help="only this agent's (an agent sees only its own; admins all)")
    sc.add_argument("--session", default="", metavar="RUN",
                    help="only this agent run's (the session id; X-AIOS-Session at the HTTP door)")
    sc.add_argument("--state", default="", choices=STATES, metavar="STATE",
                    help=f"only calls in this state: {', '.join(STATES)}")
    sc.add_argument("--limit", type=int, default=30, metavar="N", help="the newest N (default 30)")
    client_args(sc)
    sc.set_defaults(func=common.command(_syscalls))

    pol = sub.add_parser("policy", help="show the scheduling policy, or switch it (admin)")
    pol.add_argument("name", nargs="?", choices=POLICIES, metavar="POLICY",
                     help=f"switch to this policy: {', '.join(POLICIES)}")
    pol.add_argument("--slice-tokens", type=int, default=0, metavar="N", help="round-robin slice in tokens")
    client_args(pol)
    pol.set_defaults(func=common.command(_policy))

