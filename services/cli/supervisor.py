"""Keeps the children of `aios up` alive.

A child that dies is started again after a backoff (0.5 s, doubling to 10 s
while it keeps dying), on the same port, while the others keep serving. A
child that died more than `budget` times within `window` seconds is given
up on, and only then does the stack stop, with that reason. The state of
every child (pid, state, restarts, last exit) is written to a JSON file in
the data folder after each change, for `aios status`.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FIRST_BACKOFF = 0.5
MAX_BACKOFF = 10.0
STATE_FILE = "stack.json"

STARTING, RUNNING, RESTARTING, FAILED = "starting", "running", "restarting", "failed"


@dataclass(eq=False)
class Child:
    name: str
    # Starts the child and returns its process (anything with pid and poll()).
    launch: Callable[[], Any]
    # Stops it by its pid; called with the process `launch` returned.
    halt: Callable[[Any], None]
    # A quick check (well under a second) that it serves.
    ready: Callable[[], bool] = lambda: True
    log: str = ""
    proc: Any = None
    state: str = STARTING
    restarts: int = 0
    last_exit: int | None = None
    retry_at: float = 0.0
    backoff: float = FIRST_BACKOFF
    deaths: deque = field(default_factory=deque)


class Supervisor:
    def __init__(self, children: list[Child], state_dir: Path, *, budget: int = 5, window: float = 300.0,
                 clock: Callable[[], float] = time.monotonic, say: Callable[[str], None] = lambda _: None) -> None:
        self.children = children
        self.state_file = state_dir / STATE_FILE
        self.budget = budget
        self.window = window
        self.clock = clock
        self.say = say

    def start(self, child: Child) -> None:
        """First start of a child (raises what its launcher raises)."""
        child.proc = child.launch()
        child.state = STARTING
        self.write()

    def tick(self) -> str | None:
        """One round of supervision; the reason to stop the stack, if any."""
        now = self.clock()
        changed = False
        for child in self.children:
            if child.state == RESTARTING:
                if now >= child.retry_at:
                    changed = True
                    try:
                        child.proc = child.launch()
                        child.state = STARTING
                        self.say(f"{child.name} restarted (pid {child.proc.pid})")
                    except Exception as exc:  # noqa: BLE001 - a failed start counts as a death
                        reason = self._died(child, None, now, f"could not start: {exc}")
                        if reason:
                            return reason
                continue
            if child.proc is None or child.state == FAILED:
                continue
            code = child.proc.poll()
            if code is not None:
                changed = True
                reason = self._died(child, code, now, f"exited with {code}")
                if reason:
                    return reason
            elif child.state == STARTING and child.ready():
                child.state, child.backoff = RUNNING, FIRST_BACKOFF
                changed = True
        if changed:
            self.write()
        return None

    def _died(self, child: Child, code: int | None, now: float, how: str) -> str | None:
        child.last_exit = code
        while child.deaths and now - child.deaths[0] > self.window:
            child.deaths.popleft()
        child.deaths.append(now)
        if len(child.deaths) > self.budget:
            child.state = FAILED
            self.write()
            where = f"; its log: {child.log}" if child.log else ""
            return (f"{child.name} {how}, its {len(child.deaths)}th death within {self.window:.0f} s "
                    f"(the restart budget is {self.budget}){where}")
        child.restarts += 1
        child.state, child.retry_at = RESTARTING, now + child.backoff
        self.say(f"{child.name} {how}; restarting in {child.backoff:g} s")
        child.backoff = min(child.backoff * 2, MAX_BACKOFF)
        return None

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.proc is not None and child.proc.poll() is None:
                child.halt(child.proc)
        self.write(stopped=True)

    def write(self, stopped: bool = False) -> None:
        state = {"pid": os.getpid(), "stopped": stopped, "updated": time.time(), "children": {
            c.name: {"pid": c.proc.pid if c.proc is not None else None, "state": c.state,
                     "restarts": c.restarts, "last_exit": c.last_exit} for c in self.children}}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_file)


def read_state(data_dir: Path) -> dict | None:
    """What the supervisor of a running `aios up` on this folder wrote, or
    None when there is none (or it stopped)."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if state.get("stopped"):
        return None
    try:
        os.kill(int(state["pid"]), 0)
    except (OSError, KeyError, ValueError, TypeError):
        return None
    return state
