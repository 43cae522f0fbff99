"""The fault suite, short: a few agents through a real `aios up` while each
of its parts is killed in turn and the whole stack is stopped and started
once. Nothing acknowledged is lost or applied twice, and the stack heals
without anybody (`make faults` is the longer run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_fault_heals_and_nothing_acknowledged_is_lost_or_doubled(tmp_path):
    out = tmp_path / "faults.json"
    run = subprocess.run([sys.executable, "-m", "bench.faults", "--agents", "3", "--settle", "2",
                          "--data", str(tmp_path / "data"), "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    print(run.stdout)
    faults = {row["fault"]: row for row in report["faults"]}
    assert set(faults) == {"baseline", "scheduler", "llm_core", "memory", "storage", "access", "s3",
                           "llm_server", "stack"}
    assert report["total_lost"] == 0 and report["total_applied_twice"] == 0, run.stdout
    # Work went on through every fault, and every kind of operation was done.
    assert all(row["acknowledged"] > 0 for row in faults.values()), run.stdout
    assert set(report["acknowledged_by_kind"]) == {"memory", "file", "llm", "tool"}
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


def test_with_the_journal_and_access_on_postgresql_a_database_crash_heals_too(tmp_path):
    """The deploy/k8s layout: the kernel's journal and the access store on a
    real PostgreSQL server. The server crashes (every process of it at once)
    and is back seconds later, the kernel is killed, the access service is
    killed: work goes on after each, nothing acknowledged is lost or doubled."""
    out = tmp_path / "faults.json"
    run = subprocess.run([sys.executable, "-m", "bench.faults", "--agents", "3", "--settle", "2", "--postgres",
                          "--outage", "3", "--faults", "postgres,scheduler,access",
                          "--data", str(tmp_path / "data"), "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    print(run.stdout)
    assert report["postgres"] and [row["fault"] for row in report["faults"]] == [
        "baseline", "postgres", "scheduler", "access"]
    assert report["total_lost"] == 0 and report["total_applied_twice"] == 0, run.stdout
    # Work went on through each fault.
    assert all(row["acknowledged"] > 0 for row in report["faults"]), run.stdout
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
