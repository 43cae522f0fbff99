"""`aios quota set|clear|show`: the budgets and rate limits the kernel holds
agents and groups to, and what is used and left of each.

Limits are written `[soft:]METRIC=MAX[/WINDOW]` (aios.sdk.quota says how);
`aios quota set` replaces every limit of its subject. Setting and clearing
take the administrator credential, like `aios agent`; `show` an agent's own
token shows what binds that agent.
"""

from __future__ import annotations

import argparse
import sys
import time

from aios.kernel.v1 import kernel_service_pb2 as kpb
from aios.sdk import quota

from services.cli import common


def compact(value: float) -> str:
    """A count as a person skims it: 950, 1.2k, 12.3k, 1.5M."""
    magnitude = abs(value)
    if magnitude < 1000:
        return f"{round(value, 1):g}"
    for suffix, size in (("k", 1e3), ("M", 1e6), ("G", 1e9)):
        scaled = round(value / size, 1)
        if abs(scaled) < 1000 or suffix == "G":
            return f"{scaled:g}{suffix}"
    raise AssertionError("unreachable")


def money(value: float) -> str:
    """An amount of money: 4 significant digits (0.001235, 2.5), whole
    units from 1000 on."""
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return quota.format_max(float(f"{value:.4g}"))


def amount(metric: int, value: float) -> str:
    return money(value) if metric == kpb.QUOTA_METRIC_COST else compact(value)


def until(reset_time, now: float) -> str:
    """Time left until a window resets, in its two largest units: 42s,
    4min12s, 5h12min, 1day3h; "-" for a limit without a window."""
    if not reset_time.seconds and not reset_time.nanos:
        return "-"
    left = max(0, int(reset_time.ToNanoseconds() / 1e9 - now + 0.5))
    parts = []
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
        if len(parts) == 2 or (parts and not left):
            break
    return "".join(parts)


def describe_left(usage: kpb.QuotaUsage) -> str:
    """One limit's headroom for `aios ps`: "requests 3/10 per 1min"."""
    limit = usage.limit
    name = quota.METRIC_NAMES.get(limit.metric, f"metric_{limit.metric}")
    window = quota.format_window(limit.window) if limit.HasField("window") else ""
    text = (f"{'soft:' if limit.soft else ''}{name} "
            f"{amount(limit.metric, usage.remaining)}/{amount(limit.metric, limit.max)}")
    return f"{text} per {window}" if window else text


def usage_rows(reply: kpb.GetQuotaResponse, now: float) -> list[tuple[str, str, str, str, str]]:
    """SUBJECT, LIMIT, USED, LEFT, RESETS per limit; a limit the kernel
    reports no usage of shows "-" there."""
    rows, counted = [], set()
    for u in reply.usage:
        counted.add((u.subject, u.limit.SerializeToString(deterministic=True)))
        rows.append((u.subject, quota.format_limit(u.limit), amount(u.limit.metric, u.used),
                     amount(u.limit.metric, u.remaining), until(u.reset_time, now)))
    for q in reply.quotas:
        for limit in q.limits:
            if (q.subject, limit.SerializeToString(deterministic=True)) not in counted:
                rows.append((q.subject, quota.format_limit(limit), "-", "-", "-"))
    return rows


def _show(kernel, args) -> None:
    reply = kernel.get_quota(agent=args.agent, group=args.group)
    common.table(("SUBJECT", "LIMIT", "USED", "LEFT", "RESETS"), usage_rows(reply, time.time()),
                 right=(2, 3, 4), empty="no quota limits apply")
    has_cost = any(limit.metric == kpb.QUOTA_METRIC_COST for q in reply.quotas for limit in q.limits) or any(
        u.limit.metric == kpb.QUOTA_METRIC_COST for u in reply.usage)
    if has_cost and reply.currency:
        print(f"cost in {reply.currency}", file=sys.stderr)


def _set(kernel, args) -> None:
    kept = kernel.set_quota(agent=args.agent, group=args.group, limits=args.specs)
    print(f"quota of {kept.subject}: {', '.join(quota.format_limit(x) for x in kept.limits)}")


def _clear(kernel, args) -> None:
    kernel.set_quota(agent=args.agent, group=args.group, limits=[])
    print(f"quota of {quota.subject(agent=args.agent, group=args.group)} removed")


def _spec(text: str):
    """argparse's reader of a SPEC: a bad one exits 2 with the parse error."""
    try:
        return quota.parse_limit(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _subject_args(p, *, required: bool) -> None:
    who = p.add_mutually_exclusive_group(required=required)
    who.add_argument("--agent", default="", metavar="NAME", help="the agent the limits are for")
    who.add_argument("--group", default="", metavar="NAME", help="the privilege group the limits are for")


def register(sub, client_args) -> None:
    q = sub.add_parser("quota", help="budgets and rate limits of agents and groups: set, clear, show",
                       description=f"Limits are written {quota.SYNTAX}.")
    verbs = q.add_subparsers(dest="quota_command", required=True, metavar="COMMAND")

    p = verbs.add_parser("set", help="replace the limits of an agent or group (admin)",
                         description=f"Replace every limit of one agent or group. SPEC: {quota.SYNTAX}.")
    _subject_args(p, required=True)
    p.add_argument("specs", nargs="+", type=_spec, metavar="SPEC",
                   help="a limit, e.g. requests=10/1min, tokens=100k/h, soft:cost=5/day, parallel=4")
    client_args(p, admin=True)
    p.set_defaults(func=common.command(_set))

    p = verbs.add_parser("clear", help="remove every limit of an agent or group (admin)")
    _subject_args(p, required=True)
    client_args(p, admin=True)
    p.set_defaults(func=common.command(_clear))

    p = verbs.add_parser("show", help="the limits that apply, with what is used and left in each window")
    _subject_args(p, required=False)
    client_args(p)
    p.set_defaults(func=common.command(_show))
