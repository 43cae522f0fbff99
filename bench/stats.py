"""Small statistics for benchmark results: percentiles, summaries and Jain's
fairness index."""

from __future__ import annotations

import math
import statistics


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summary(values: list[float], digits: int = 3) -> dict:
    """mean, p50, p95, p99 and max of a list of seconds."""
    if not values:
        return {"mean": None, "p50": None, "p95": None, "p99": None, "max": None}
    return {"mean": round(statistics.fmean(values), digits), "p50": round(pct(values, 0.50), digits),
            "p95": round(pct(values, 0.95), digits), "p99": round(pct(values, 0.99), digits),
            "max": round(max(values), digits)}


def jain(values: list[float]) -> float | None:
    """Jain's fairness index (sum x)^2 / (n * sum x^2): 1 when all equal,
    1/n when one gets everything."""
    if not values:
        return None
    square_sum = sum(x * x for x in values)
    if square_sum == 0:
        return 1.0
    return sum(values) ** 2 / (len(values) * square_sum)
