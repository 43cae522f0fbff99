"""Cache-aware admission for LLM queues: keep the agent runs a model serves
at once within what its engines' prefix caches hold.

An engine with a prefix cache computes only the part of a prompt it has not
seen, and an agent run's next prompt starts with its whole history. When more
runs take turns than the caches hold, each run's history is evicted by the
others' before its next turn comes, and every turn pays its whole prompt
again; the engines spend their steps on prefill. Fewer runs at a time, each
finishing its turns while its history is cached, does the same work with a
fraction of the prefill.

So when a model's queue has more calls than slots, it admits a call of a
run that is active (it has a call running, or its last one ended within
`idle_seconds`) at once, in policy order; a call that would make a new run
active waits, in policy order too, until the active runs' footprints (their
last context: prompt plus answer, in tokens) leave room for its prompt in
the model's cache (the sum of its endpoints' cache_tokens). Nothing waits
for room while the model runs nothing (a run larger than the caches is
still served), nor when every waiting call would find a slot (no run then
waits for its turn, so none loses its history to the others'). A run that
ends its last call stops counting `idle_seconds` later: the kernel cannot
tell a finished run from one between turns, and a turn's gap is short.
The policy is in Kernel._next (kernel.py); this module keeps the counts.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass


@dataclass
class _Run:
    tokens: int = 0
    busy: int = 0
    last: float = 0.0


class CacheGate:
    def __init__(self, budget_tokens: int, idle_seconds: float) -> None:
        self.budget = budget_tokens
        self.idle = idle_seconds
        # Active runs, the least recently busy first.
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self.used = 0
        # Calls of new runs waiting for room, in the order the policy gave them.
        self.held: deque = deque()
        self.held_live = 0

    def active(self, session: str, now: float) -> bool:
        run = self._runs.get(session)
        return run is not None and (run.busy > 0 or now - run.last < self.idle)

    def fits(self, tokens: int, now: float) -> bool:
        if self.used + tokens <= self.budget:
            return True
        self._expire(now)  # only when it matters: the scan is over the active runs
        return self.used + tokens <= self.budget

    def _expire(self, now: float) -> None:
        runs = self._runs
        for _ in range(len(runs)):
            session, run = next(iter(runs.items()))
            if run.busy:
                runs.move_to_end(session)  # active while it runs; look behind it
                continue
            if now - run.last < self.idle:
                return  # the rest were busy more recently
            del runs[session]
            self.used -= run.tokens

    def start(self, session: str, tokens: int) -> None:
        """A call of `session` starts; `tokens` is its prompt's estimate."""
        run = self._runs.get(session)
        if run is None:
            run = self._runs[session] = _Run()
        if tokens > run.tokens:
            self.used += tokens - run.tokens
            run.tokens = tokens
        run.busy += 1
        self._runs.move_to_end(session)

    def end(self, session: str, context_tokens: int, now: float | None = None) -> None:
        """A call of `session` ended; its run's history is `context_tokens`."""
        run = self._runs.get(session)
        if run is None:
            return
        run.busy = max(0, run.busy - 1)
        run.last = time.monotonic() if now is None else now
        if context_tokens:
            self.used += context_tokens - run.tokens
            run.tokens = context_tokens
        self._runs.move_to_end(session)

    def hold(self, entry) -> None:
        entry.held = True
        self.held.append(entry)
        self.held_live += 1

    def first_held(self):
        """The next held call still waiting, or None."""
        while self.held and not self.held[0].held:
            self.held.popleft()
        return self.held[0] if self.held else None

    def take(self):
        entry = self.held.popleft()
        entry.held = False
        self.held_live -= 1
        return entry

    def drop(self, entry) -> None:
        """A held call left (cancelled, deadline): skipped when it reaches the head."""
        entry.held = False
        self.held_live -= 1

    def __len__(self) -> int:
        return len(self._runs)
