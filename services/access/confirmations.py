"""Wake-ups for callers waiting on a confirmation.

The state lives in the store; this only tells waiters in this process that
it may have changed, so they re-read it instead of polling. A change made
through another replica is told from the store's thread (the *_threadsafe
methods).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class Waiters:
    def __init__(self) -> None:
        self._events: dict[str, tuple[asyncio.Event, int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # the waiters', once one watched

    @contextlib.contextmanager
    def watch(self, confirmation_id: str) -> Iterator[asyncio.Event]:
        """An event set when the confirmation changes; enter it BEFORE reading
        the state, so a change between the read and the wait is not missed."""
        self._loop = asyncio.get_running_loop()
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

    def wake_all(self) -> None:
        events, self._events = self._events, {}
        for event, _ in events.values():
            event.set()

    def wake_threadsafe(self, confirmation_id: str) -> None:
        self._on_loop(self.wake, confirmation_id)

    def wake_all_threadsafe(self) -> None:
        self._on_loop(self.wake_all)

    def _on_loop(self, fn, *args) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                self._loop.call_soon_threadsafe(fn, *args)

    def __len__(self) -> int:
        return len(self._events)
