"""The scheduling policies' orders, on plain entries (no servers)."""

from __future__ import annotations

from dataclasses import dataclass

from services.scheduler import queues
from services.scheduler.queues import PolicySettings, make_queue


@dataclass(eq=False)
class E:
    name: str
    agent: str = "a"
    session_id: str = ""
    priority: int = 0
    enqueue_time: float = 0.0
    done: bool = False
    queued: bool = True


def drain(q) -> list[str]:
    out = []
    while (e := q.pop()) is not None:
        out.append(e.name)
    return out


def test_fifo_serves_in_arrival_order():
    q = make_queue(PolicySettings(queues.FIFO), {}, lambda s: (0, 0))
    for i, name in enumerate("abcd"):
        q.push(E(name, enqueue_time=float(i)))
    assert drain(q) == list("abcd")


def test_priority_serves_higher_first_and_ties_by_arrival():
    q = make_queue(PolicySettings(queues.PRIORITY, aging_seconds=1000), {}, lambda s: (0, 0))
    q.push(E("low1", priority=0, enqueue_time=0))
    q.push(E("low2", priority=0, enqueue_time=1))
    q.push(E("high", priority=5, enqueue_time=2))
    assert drain(q) == ["high", "low1", "low2"]


def test_priority_aging_lets_an_old_low_call_overtake():
    # aging 10 s per level: a call waiting since t=0 at priority 0 is worth
    # level 10 at t=100, more than a priority-1 call that arrives then.
    q = make_queue(PolicySettings(queues.PRIORITY, aging_seconds=10), {}, lambda s: (0, 0))
    q.push(E("old-low", priority=0, enqueue_time=0))
    q.push(E("new-high", priority=1, enqueue_time=100))
    assert drain(q) == ["old-low", "new-high"]


def test_cancelled_entries_are_skipped_and_not_counted():
    q = make_queue(PolicySettings(queues.FIFO), {}, lambda s: (0, 0))
    a, b = E("a", enqueue_time=0), E("b", enqueue_time=1)
    q.push(a)
    q.push(b)
    a.done = True
    q.discard(a)
    assert len(q) == 1 and drain(q) == ["b"] and len(q) == 0


def test_fair_share_serves_the_agent_with_the_least_service():
    counters: dict[str, float] = {}
    q = make_queue(PolicySettings(queues.FAIR_SHARE), counters, lambda s: (0, 0))
    for i in range(5):
        q.push(E(f"h{i}", agent="heavy", enqueue_time=i))
    q.push(E("l0", agent="light", enqueue_time=10))
    q.push(E("l1", agent="light", enqueue_time=11))
    # Both backlogged; heavy has been served more since.
    counters["heavy"] = 1000.0
    assert q.pop().name == "l0"
    counters["light"] = 2000.0
    assert q.pop().name == "h0"


def test_fair_share_lifts_a_returning_agent_to_the_backlog_minimum():
    # An idle agent earns no credit: when it comes back its counter is raised
    # to the least counter among backlogged agents (VTC).
    counters = {"busy": 500.0, "idle": 0.0}
    q = make_queue(PolicySettings(queues.FAIR_SHARE), counters, lambda s: (0, 0))
    q.push(E("b0", agent="busy"))
    q.push(E("i0", agent="idle"))
    assert counters["idle"] == 500.0


def test_agent_aware_serves_runs_in_program_order_within_a_level():
    # All below one quantum: the run that started first goes first, whatever
    # it has attained, so identical runs finish one after another.
    attained = {"run-1": (900.0, 1.0), "run-2": (10.0, 2.0), "run-3": (0.0, 3.0)}
    q = make_queue(PolicySettings(queues.AGENT_AWARE, quantum_tokens=4096), {}, lambda s: attained[s])
    q.push(E("third", session_id="run-3", enqueue_time=0))
    q.push(E("second", session_id="run-2", enqueue_time=1))
    q.push(E("first", session_id="run-1", enqueue_time=2))
    assert drain(q) == ["first", "second", "third"]


def test_agent_aware_demotes_a_run_that_attained_a_lot():
    # A run past several quanta drops levels: a short run that started later
    # is not held behind it.
    attained = {"long": (50_000.0, 0.0), "short": (100.0, 9.0)}
    q = make_queue(PolicySettings(queues.AGENT_AWARE, quantum_tokens=4096), {}, lambda s: attained[s])
    q.push(E("long-call", session_id="long", enqueue_time=0))
    q.push(E("short-call", session_id="short", enqueue_time=1))
    assert drain(q) == ["short-call", "long-call"]
