"""Wake-ups for callers waiting on a confirmation.

The state lives in the store; this only tells waiters in this process that
it may have changed, so they re-read it instead of polling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class Waiters:
    def __init__(self) -> None:
        self._events: dict[str, tuple[asyncio.Event, int]] = {}

    @contextlib.contextmanager
    def watch(self, confirmation_id: str) -> Iterator[asyncio.Event]:
        """An event set when the confirmation changes; enter it BEFORE reading
        the state, so a change between the read and the wait is not missed."""
        event, count = self._events.get(confirmation_id, (None, 0))
        if event is None:
            event = asyncio.Event()
        self._events[confirmation_id] = (event, count + 1)
        try:
            yield event
        finally:
            current = self._events.get(confirmation_id)
            if current is not None and current[0] is event:
                if current[1] <= 1:
                    del self._events[confirmation_id]
                else:
                    self._events[confirmation_id] = (event, current[1] - 1)

    def wake(self, confirmation_id: str) -> None:
        entry = self._events.pop(confirmation_id, None)
        if entry is not None:
            entry[0].set()

    def __len__(self) -> int:
        return len(self._events)
