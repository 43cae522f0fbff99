"""Quota limits written as specs, `[soft:]METRIC=MAX[/WINDOW]`: how the SDK
and the `aios quota` command read and show them.

    requests=10/1min      at most 10 LLM calls per minute
    tokens=100k/h         100,000 prompt and completion tokens per hour
    soft:cost=2.50/day    past 2.50 a day calls go on, and the kernel records it
    parallel=4            at most 4 LLM calls queued or running at once

MAX takes k, M and G suffixes (1.5M); WINDOW is `s`, `min`, `h` or `day`
with an optional count (`10s`, `5min`, `7day`). Parallel calls and memory
records are counted at each moment and take no window; every other metric
needs one.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from google.protobuf import duration_pb2

from aios.kernel.v1 import kernel_service_pb2 as kpb

METRICS: dict[str, int] = {
    "requests": kpb.QUOTA_METRIC_LLM_REQUESTS,
    "prompt_tokens": kpb.QUOTA_METRIC_PROMPT_TOKENS,
    "completion_tokens": kpb.QUOTA_METRIC_COMPLETION_TOKENS,
    "tokens": kpb.QUOTA_METRIC_TOKENS,
    "tool_calls": kpb.QUOTA_METRIC_TOOL_CALLS,
    "cost": kpb.QUOTA_METRIC_COST,
    "parallel": kpb.QUOTA_METRIC_PARALLEL_LLM_CALLS,
    "memory_records": kpb.QUOTA_METRIC_MEMORY_RECORDS,
}
METRIC_NAMES: dict[int, str] = {value: name for name, value in METRICS.items()}
# Counted at each moment rather than per window.
WINDOWLESS = frozenset({kpb.QUOTA_METRIC_PARALLEL_LLM_CALLS, kpb.QUOTA_METRIC_MEMORY_RECORDS})

SYNTAX = ("[soft:]METRIC=MAX[/WINDOW], e.g. requests=10/1min, tokens=100k/h, soft:cost=2.50/day, parallel=4 "
          f"(METRIC: {', '.join(METRICS)}; MAX may end in k, M or G; WINDOW: [N]s, [N]min, [N]h or [N]day)")

_SUFFIXES = {"": 1, "k": 1000, "K": 1000, "M": 1000 ** 2, "G": 1000 ** 3}
_UNITS = {unit: seconds for seconds, units in ((1, "s sec secs second seconds"),
                                               (60, "m min mins minute minutes"),
                                               (3600, "h hour hours"), (86400, "d day days"))
          for unit in units.split()}
# Largest first: how a window is written back.
_CANONICAL = (("day", 86400), ("h", 3600), ("min", 60), ("s", 1))
_MAX = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([kKMG]?)")
_WINDOW = re.compile(r"(\d*)([a-z]+)")


def _bad(spec: str, why: str) -> ValueError:
    return ValueError(f"bad quota limit {spec!r}: {why}; write {SYNTAX}")


def parse_limit(spec: str) -> kpb.QuotaLimit:
    """The QuotaLimit a spec such as `soft:tokens=100k/h` stands for;
    ValueError naming the spec and the syntax when it is malformed."""
    text = spec.strip()
    soft = text.startswith("soft:")
    text = text.removeprefix("soft:")
    name, sep, rest = text.partition("=")
    if not sep:
        raise _bad(spec, "no '='")
    name = name.strip()
    metric = METRICS.get(name)
    if metric is None:
        raise _bad(spec, f"unknown metric {name!r}")
    amount, slash, window = rest.partition("/")
    limit = kpb.QuotaLimit(metric=metric, max=_parse_max(spec, name, metric, amount.strip()), soft=soft)
    if metric in WINDOWLESS:
        if slash:
            raise _bad(spec, f"{name} is counted at each moment and takes no window")
    elif not slash:
        raise _bad(spec, f"{name} needs a window, e.g. {name}={amount.strip() or 'MAX'}/1h")
    else:
        limit.window.CopyFrom(_parse_window(spec, window.strip()))
    return limit


def _parse_max(spec: str, name: str, metric: int, text: str) -> float:
    found = _MAX.fullmatch(text)
    if not found:
        raise _bad(spec, f"MAX {text!r} is not a non-negative number")
    value = Decimal(found.group(1)) * _SUFFIXES[found.group(2)]
    if metric != kpb.QUOTA_METRIC_COST and value != value.to_integral_value():
        raise _bad(spec, f"{name} counts whole units, and {text} is not a whole number")
    return float(value)


def _parse_window(spec: str, text: str) -> duration_pb2.Duration:
    found = _WINDOW.fullmatch(text.lower())
    unit = _UNITS.get(found.group(2)) if found else None
    if unit is None:
        raise _bad(spec, f"window {text!r} is not [N]s, [N]min, [N]h or [N]day")
    count = int(found.group(1) or 1)
    if count <= 0:
        raise _bad(spec, f"window {text!r} is empty")
    return duration_pb2.Duration(seconds=count * unit)


def format_window(window: duration_pb2.Duration) -> str:
    """A window as a spec writes it, in its largest whole unit: `10s`,
    `5min`, `1h`, `day`, `7day`; "" for none."""
    if window.nanos:
        return f"{window.seconds + window.nanos / 1e9:g}s"
    seconds = window.seconds
    if seconds <= 0:
        return ""
    unit, size = next((u, n) for u, n in _CANONICAL if seconds % n == 0)
    count = seconds // size
    return unit if unit == "day" and count == 1 else f"{count}{unit}"


def format_max(value: float) -> str:
    """A limit's MAX as a spec writes it, exactly: `100k`, `1.5M`, `2.5`."""
    if not math.isfinite(value):
        return repr(value)
    exact = Decimal(repr(value))
    for suffix, size in (("G", 1000 ** 3), ("M", 1000 ** 2), ("k", 1000)):
        scaled = exact / size
        if scaled >= 1 and scaled == scaled.quantize(Decimal("0.01")):
            return f"{_plain(scaled)}{suffix}"
    return _plain(exact)


def _plain(d: Decimal) -> str:
    return format(d.normalize(), "f")


def format_limit(limit: kpb.QuotaLimit) -> str:
    """The spec of a QuotaLimit; parse_limit reads it back to the same limit."""
    name = METRIC_NAMES.get(limit.metric, f"metric_{limit.metric}")
    window = format_window(limit.window) if limit.HasField("window") else ""
    return f"{'soft:' if limit.soft else ''}{name}={format_max(limit.max)}{'/' + window if window else ''}"


def subject(*, agent: str = "", group: str = "") -> str:
    """The quota subject of an agent or a group ("agent:NAME", "group:NAME");
    ValueError unless exactly one is given."""
    if bool(agent) == bool(group):
        raise ValueError("name exactly one of agent= and group=")
    return f"agent:{agent}" if agent else f"group:{group}"


__all__ = ["METRICS", "METRIC_NAMES", "SYNTAX", "WINDOWLESS", "format_limit", "format_max", "format_window",
           "parse_limit", "subject"]
