"""The working set of one agent, bounded and evicted by LRU-K.

LRU-K (O'Neil et al., 1993) evicts the record whose K-th most recent access
is oldest; records with fewer than K accesses have an infinite backward
K-distance and go first, the one with the oldest access first. A record keeps
only its last K access times, oldest first (kept in the record, so the
working set survives a restart).

The records used by the current call are evicted only if nothing else can
go: a record that was just added or read must not drop out before the agent
could use it again (LRU-K's "correlated reference period").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Set


def record_access(history: list[float], now: float, k: int) -> list[float]:
    """The history after one more access at `now`: the last k times, oldest first."""
    return [*history, now][-k:]


def _key(history: list[float], k: int) -> tuple[bool, float]:
    # False sorts first: fewer than K accesses means infinite K-distance.
    if len(history) >= k:
        return (True, history[-k])
    return (False, history[0] if history else float("-inf"))


def choose_victims(working: Mapping[str, list[float]], in_use: Set[str], limit: int, k: int) -> list[str]:
    """Ids to move to long-term memory so that at most `limit` stay working.

    `working` maps every working record of the agent to its access history.
    """
    excess = len(working) - limit
    if excess <= 0:
        return []
    order = sorted(working, key=lambda rid: (rid in in_use, _key(working[rid], k), rid))
    return order[:excess]


class Clock:
    """Strictly increasing wall-clock seconds, so accesses in one burst still
    have an order (LRU-K needs one)."""

    def __init__(self) -> None:
        self._last = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            now = time.time()
            if now <= self._last:
                now = self._last + 1e-6
            self._last = now
            return now
