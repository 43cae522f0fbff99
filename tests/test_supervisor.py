"""The supervisor of `aios up` on real child processes: a child that dies is
started again after a backoff, its restarts are written for `aios status`,
and only a child that keeps dying past the budget stops the stack."""

from __future__ import annotations

import json
import subprocess
import sys

from services.cli.supervisor import FAILED, RESTARTING, RUNNING, Child, Supervisor, read_state


def _process(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code])


def _halt(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(timeout=10)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_dead_child_is_restarted_and_its_restarts_are_recorded(tmp_path):
    clock = Clock()
    sleeper = Child("sleeper", lambda: _process("import time; time.sleep(120)"), _halt)
    sup = Supervisor([sleeper], tmp_path, clock=clock)
    sup.start(sleeper)
    try:
        sup.tick()
        assert sleeper.state == RUNNING
        first = sleeper.proc
        first.kill()
        first.wait(timeout=10)
        assert sup.tick() is None and sleeper.state == RESTARTING
        # Not before its backoff is over.
        sup.tick()
        assert sleeper.proc is first
        clock.now += 0.5
        sup.tick()
        assert sleeper.proc is not first and sleeper.proc.poll() is None
        sup.tick()
        state = json.loads((tmp_path / "stack.json").read_text())["children"]["sleeper"]
        assert state == {"pid": sleeper.proc.pid, "state": RUNNING, "restarts": 1, "last_exit": -9}
        assert read_state(tmp_path)["children"]["sleeper"]["restarts"] == 1
    finally:
        sup.stop()
    assert sleeper.proc.poll() is not None and read_state(tmp_path) is None  # stopped


def test_a_child_that_keeps_dying_stops_the_stack_with_the_reason(tmp_path):
    clock = Clock()
    crasher = Child("crasher", lambda: _process("raise SystemExit(3)"), _halt, log="logs/crasher.log")
    sleeper = Child("sleeper", lambda: _process("import time; time.sleep(120)"), _halt)
    sup = Supervisor([sleeper, crasher], tmp_path, budget=2, window=60.0, clock=clock)
    sup.start(sleeper)
    sup.start(crasher)
    try:
        backoffs, reason = [], None
        while reason is None:
            crasher.proc.wait(timeout=30)
            reason = sup.tick()
            if reason is None:
                assert crasher.state == RESTARTING and sleeper.proc.poll() is None
                backoffs.append(crasher.retry_at - clock.now)
                clock.now = crasher.retry_at
                assert sup.tick() is None
        assert backoffs == [0.5, 1.0]  # doubling
        assert crasher.state == FAILED and crasher.restarts == 2
        assert "crasher exited with 3" in reason and "budget is 2" in reason and "logs/crasher.log" in reason
        # Deaths older than the window do not count.
        crasher.state, crasher.deaths = RESTARTING, type(crasher.deaths)([0.0, 1.0])
        clock.now += 120
        crasher.retry_at = clock.now
        sup.tick()
        crasher.proc.wait(timeout=30)
        assert sup.tick() is None and crasher.state == RESTARTING
    finally:
        sup.stop()


def test_a_child_that_cannot_start_counts_as_a_death(tmp_path):
    clock = Clock()
    calls = []

    def launch():
        calls.append(1)
        if len(calls) > 1:
            raise OSError("port in use")
        return _process("raise SystemExit(1)")

    child = Child("flaky", launch, _halt)
    sup = Supervisor([child], tmp_path, budget=1, clock=clock)
    sup.start(child)
    child.proc.wait(timeout=30)
    assert sup.tick() is None
    clock.now = child.retry_at
    reason = sup.tick()
    assert reason and "could not start: port in use" in reason and child.state == FAILED
