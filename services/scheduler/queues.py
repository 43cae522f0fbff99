"""Run queues and the scheduling policies that order them.

A queue holds the syscalls waiting for one resource. Every policy but fair
share has an order that does not change while a call waits, so it is a heap
keyed once at enqueue:

- FIFO: arrival order.
- round robin: arrival order; a preempted call re-enters at the tail.
- priority with aging: a call gains one level per `aging` seconds waited.
  Comparing p_a + (now - t_a)/A with p_b + (now - t_b)/A is comparing
  p_a - t_a/A with p_b - t_b/A, so the key is fixed at enqueue.
- agent-aware (Autellix's program-level attained service, discretised):
  a call's level is log2(1 + tokens its agent run has attained / quantum);
  lower levels go first, and within a level the run that started first. Runs
  below one quantum are served in program order, so they finish one after
  another instead of all at the end, while a run that has consumed a lot
  drops a level and cannot hold short runs behind it.

Fair share (the Virtual Token Counter of "Fairness in Serving Large Language
Models", OSDI'24) orders by per-agent counters that move while calls wait,
so it keeps a FIFO per agent and picks the agent with the smallest counter.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

FIFO = "fifo"
ROUND_ROBIN = "round_robin"
PRIORITY = "priority"
FAIR_SHARE = "fair_share"
AGENT_AWARE = "agent_aware"
POLICIES = (FIFO, ROUND_ROBIN, PRIORITY, FAIR_SHARE, AGENT_AWARE)


@dataclass
class PolicySettings:
    kind: str = FIFO
    # Round robin slice in generated tokens.
    slice_tokens: int = 64
    # Priority aging: seconds of waiting worth one priority level.
    aging_seconds: float = 5.0
    # Fair share weights of prompt and completion tokens (VTC's w_p, w_q).
    prompt_weight: float = 1.0
    completion_weight: float = 2.0
    # Agent-aware: attained tokens of one level (levels grow geometrically).
    quantum_tokens: int = 4096


class Waiting:
    """What a queue needs to know of a waiting call (the kernel's entry)."""

    agent: str
    session_id: str
    priority: int
    enqueue_time: float
    done: bool


_seq = itertools.count()


@dataclass(order=True)
class _Item:
    key: tuple
    seq: int
    entry: Any = field(compare=False)


class HeapQueue:
    def __init__(self, key: Callable[[Any], tuple]) -> None:
        self._key = key
        self._heap: list[_Item] = []
        self._live = 0

    def push(self, entry) -> None:
        heapq.heappush(self._heap, _Item(self._key(entry), next(_seq), entry))
        self._live += 1

    def pop(self):
        while self._heap:
            item = heapq.heappop(self._heap)
            if not item.entry.done and getattr(item.entry, "queued", True):
                self._live -= 1
                return item.entry
        return None

    def discard(self, entry) -> None:
        # Lazy removal: the entry is marked done (or no longer queued) by the
        # caller and skipped when it reaches the top.
        self._live -= 1

    def __len__(self) -> int:
        return self._live

    def entries(self) -> list:
        return [i.entry for i in sorted(self._heap) if not i.entry.done and getattr(i.entry, "queued", True)]


class FairShareQueue:
    """VTC: serve the backlogged agent with the least weighted tokens served."""

    def __init__(self, counters: dict[str, float]) -> None:
        self._per_agent: dict[str, deque] = {}
        self._counters = counters
        self._live = 0

    def push(self, entry) -> None:
        q = self._per_agent.get(entry.agent)
        if q is None:
            q = self._per_agent[entry.agent] = deque()
        if not q:
            # An agent returning from idle starts at the least counter among
            # the backlogged ones, so idling earns it no credit (VTC's lift).
            active = [self._counters.get(a, 0.0) for a, d in self._per_agent.items() if d]
            if active:
                self._counters[entry.agent] = max(self._counters.get(entry.agent, 0.0), min(active))
        q.append(entry)
        self._live += 1

    def pop(self):
        while self._live > 0:
            best_agent, best = None, None
            for agent, q in list(self._per_agent.items()):
                while q and (q[0].done or not getattr(q[0], "queued", True)):
                    q.popleft()
                if not q:
                    # Only backlogged agents stay: the scan is over them, not
                    # over every agent ever seen.
                    del self._per_agent[agent]
                    continue
                c = self._counters.get(agent, 0.0)
                if best is None or c < best:
                    best_agent, best = agent, c
            if best_agent is None:
                self._live = 0
                return None
            self._live -= 1
            q = self._per_agent[best_agent]
            entry = q.popleft()
            if not q:
                del self._per_agent[best_agent]
            return entry
        return None

    def discard(self, entry) -> None:
        self._live -= 1

    def __len__(self) -> int:
        return self._live

    def entries(self) -> list:
        return [e for q in self._per_agent.values() for e in q
                if not e.done and getattr(e, "queued", True)]


def make_queue(settings: PolicySettings, counters: dict[str, float], attained: Callable[[str], tuple]):
    kind = settings.kind
    if kind in (FIFO, ROUND_ROBIN):
        return HeapQueue(lambda e: (e.enqueue_time,))
    if kind == PRIORITY:
        aging = max(settings.aging_seconds, 1e-6)
        return HeapQueue(lambda e: (-(e.priority - e.enqueue_time / aging), e.enqueue_time))
    if kind == AGENT_AWARE:
        quantum = max(1, settings.quantum_tokens)

        def key(e):
            served, started = attained(e.session_id or e.agent)
            return (int(math.log2(1 + served / quantum)), started, e.enqueue_time)

        return HeapQueue(key)
    if kind == FAIR_SHARE:
        return FairShareQueue(counters)
    raise ValueError(f"unknown policy {kind!r}")
