"""Cache-aware admission for LLM queues: keep the agent runs a model serves
at once within what its engines' prefix caches hold.

An engine with a prefix cache computes only the part of a prompt it has not
seen, and an agent run's next prompt starts with its whole history. When more
runs take turns than the caches hold, each run's history is evicted by the
others' before its next turn comes, and every turn pays its whole prompt
again; the engines spend their steps on prefill. Fewer runs at a time, each
finishing its turns while its history is cached, does the same work with a
fraction of the prefill.

So a model's queue admits a call of a run that is active (it has a call
running, or its last one ended within `idle_seconds`) at once, in policy
order; a call that would make a new run active waits, in policy order too,
until the active runs' footprints (their last context: prompt plus answer,
in tokens) leave room for its prompt. The room is the model's cache (the
sum of its endpoints' cache_tokens) times a scale that follows what the
caches keep (CacheGate). Nothing waits for room while the model runs
nothing, so a run larger than the caches is still served. A run that ends
its last call stops counting `idle_seconds` later: the kernel cannot tell a
finished run from one between turns, and a turn's gap is short. The order
is in Kernel._next (kernel.py); this module keeps the counts.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass


# How much of its last context a run's next call must find cached for the
# caches to count as holding; below LOW the room shrinks by STEP a call,
# above HIGH (while runs are held) it grows by STEP, within SCALE_RANGE
# times the caches' size.
LOW, HIGH = 0.8, 0.9
STEP = 1.02
SCALE_RANGE = (0.25, 8.0)


@dataclass
class _Run:
    tokens: int = 0
    busy: int = 0
    last: float = 0.0
    context: int = 0  # the last ended call's prompt and answer, in tokens (0: none ended yet)


class CacheGate:
    """The active runs and their footprints, and the room for them: the
    caches' size times a scale that follows what the caches actually hold.
    The engines report the prompt tokens they found cached; a run's next
    call should find its whole last context. While it does, the engines'
    caches keep up (their own eviction spares what is about to be reused,
    or turns are quick) and more runs may go at once; when it does not,
    histories are being evicted before they are reused, and fewer may."""

    def __init__(self, budget_tokens: int, idle_seconds: float) -> None:
        self.budget = budget_tokens
        self.idle = idle_seconds
        self.scale = 1.0
        # Active runs, the least recently busy first.
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self.used = 0
        # Calls of new runs waiting for room, in the order the policy gave them.
        self.held: deque = deque()
        self.held_live = 0

    def active(self, session: str, now: float) -> bool:
        run = self._runs.get(session)
        return run is not None and (run.busy > 0 or now - run.last < self.idle)

    @property
    def room(self) -> float:
        return self.budget * self.scale

    def fits(self, tokens: int, now: float) -> bool:
        if self.used + tokens <= self.room:
            return True
        self._expire(now)  # only when it matters: the scan is over the active runs
        return self.used + tokens <= self.room

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

    def end(self, session: str, context_tokens: int, now: float | None = None, cached_tokens: int = -1) -> None:
        """A call of `session` ended; its run's history is `context_tokens`,
        and the engine found `cached_tokens` of its prompt cached (-1: not
        known, as for a call cut short)."""
        run = self._runs.get(session)
        if run is None:
            return
        if run.context and cached_tokens >= 0:
            self._observe(min(1.0, cached_tokens / run.context))
        run.busy = max(0, run.busy - 1)
        run.last = time.monotonic() if now is None else now
        if context_tokens:
            run.context = context_tokens
            self.used += context_tokens - run.tokens
            run.tokens = context_tokens
        self._runs.move_to_end(session)

    def _observe(self, kept: float) -> None:
        low, high = SCALE_RANGE
        if kept < LOW:
            self.scale = max(low, self.scale / STEP)
        elif kept >= HIGH and self.held_live:
            self.scale = min(high, self.scale * STEP)

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
