"""The kernel's durable syscall journal.

Every accepted syscall is written before it is dispatched (its validated
Syscall, request id, payload fingerprint, agent, deadline), and again when it
is parked (the confirmations it needs), preempted (its snapshot) and
finished (its record or error). After a crash the next kernel process:

- answers a retried request id from the journal (the recorded result, or
  the call itself, resumed), so a side effect never runs twice;
- puts calls that were queued, running or preempted back in their queues in
  the order they were accepted (an LLM call from its snapshot), and calls
  that were parked back to waiting for the same confirmation.

The database is a SQLite file (WAL, synchronous=NORMAL: a write survives the
kernel process dying at any point, though not the machine losing power
before the OS flushed it), or PostgreSQL given a postgresql:// URL (the same
statements; pg8000, the `postgres` extra). Writes happen on the event loop,
in order, committed at the end of each turn of it (db.py): a few tens of
microseconds on SQLite, a round trip on PostgreSQL. The journal's database
being unreachable loses nothing: what was written waits for it, and new
calls are refused with UNAVAILABLE until it is back. Finished calls are kept for `max_age` seconds
and at most `max_rows` of them (oldest dropped first), pruned every minute.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from collections.abc import Iterable
from pathlib import Path

from aios.kernel.v1 import syscall_pb2 as ks
from services.runtime import errors, logs, sql
from services.scheduler.db import Database
from services.scheduler.table import AWAITING_CONFIRMATION, QUEUED, Entry

log = logs.get("scheduler")

SCHEMA = """
CREATE TABLE IF NOT EXISTS syscalls (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    request_id TEXT,
    fingerprint BLOB,
    kind TEXT NOT NULL,
    resource TEXT NOT NULL,
    syscall BLOB NOT NULL,
    parent_id TEXT NOT NULL DEFAULT '',
    create_wall REAL NOT NULL,
    deadline_wall REAL,
    state TEXT NOT NULL,
    create_only INTEGER NOT NULL DEFAULT 0,
    pending TEXT NOT NULL DEFAULT '[]',
    confirmation_id TEXT NOT NULL DEFAULT '',
    snapshot_text TEXT NOT NULL DEFAULT '',
    snapshot_tokens INTEGER NOT NULL DEFAULT 0,
    record BLOB,
    error TEXT,
    finish_wall REAL
);
CREATE INDEX IF NOT EXISTS syscalls_by_request ON syscalls (agent, request_id);
CREATE INDEX IF NOT EXISTS syscalls_unfinished ON syscalls (finish_wall, create_wall);
"""
# Versioned steps (services/runtime/sql.py migrate): 1 is the table as it
# first was; 2 records which kernel replica holds each call; 3 marks calls
# whose body streamed through their caller's call (uploads, downloads).
STEPS = [
    SCHEMA,
    "ALTER TABLE syscalls ADD COLUMN kernel TEXT NOT NULL DEFAULT '';",
    "ALTER TABLE syscalls ADD COLUMN streamed INTEGER NOT NULL DEFAULT 0;",
]

PRUNE_EVERY = 60.0
_COLUMNS = ("id", "agent", "request_id", "fingerprint", "kind", "resource", "syscall", "parent_id", "create_wall",
            "deadline_wall", "state", "create_only", "pending", "kernel", "streamed")


# A commit whose answer was lost is sent again (db.py): the row may be there.
_INSERT = (f"INSERT INTO syscalls ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
           " ON CONFLICT (id) DO NOTHING")


@dataclass
class Recovered:
    """An unfinished syscall read back after a restart."""

    entry: Entry
    # (action, resource kind, owner, name, summary) of each confirmation it
    # needs; non-empty only for a call that was parked.
    pending: list[tuple]
    # The kernel replica that held it.
    kernel: str = ""


class Journal:
    def __init__(self, target: str | Path, *, max_age: float = 7 * 86400.0, max_rows: int = 100_000,
                 clock=time.time, kernel_id: str = "") -> None:
        """`target`: a SQLite file's path or a postgresql:// URL; `kernel_id`:
        the replica writing (services/scheduler/cluster.py), "" for a lone kernel."""
        self.max_age = max_age
        self.max_rows = max_rows
        self.clock = clock
        self.kernel_id = kernel_id
        self.db = Database(str(target))
        sql.migrate(self.db.execute, "journal", STEPS, postgres=self.db.postgres)
        self._pruned = 0.0

    def close(self) -> None:
        self.db.close()

    # -- writes, in the order the kernel makes them

    def accepted(self, entry: Entry, pending: list[tuple] = ()) -> None:
        """A syscall let in (queued, or parked when `pending` is given)."""
        deadline = None if entry.deadline is None else self.clock() + (entry.deadline - time.monotonic())
        entry.journaled = self.db.write(
            _INSERT,
            (entry.id, entry.agent, entry.request_id or None, entry.fingerprint or None, entry.kind,
             entry.resource, entry.syscall.SerializeToString(deterministic=True), entry.parent_id,
             entry.create_wall, deadline, AWAITING_CONFIRMATION if pending else QUEUED, int(entry.create_only),
             json.dumps([list(p) for p in pending]), self.kernel_id, int(entry.streamed)))
        self._maybe_prune()

    def check(self) -> None:
        """UNAVAILABLE while the journal's database cannot be reached and
        what was written waits for it: a call let in now could not be
        written before it runs."""
        self.db.available()

    def durable(self, entry: Entry) -> bool:
        """Whether the call's acceptance is committed (the kernel runs nothing
        a restarted kernel would not know of)."""
        return self.db.committed >= entry.journaled

    def parked(self, entry: Entry) -> None:
        """The confirmation a parked call waits for now."""
        self.db.write("UPDATE syscalls SET confirmation_id = ? WHERE id = ?", (entry.confirmation_id, entry.id))

    def approved(self, entry: Entry) -> None:
        """A parked call let through: queued now, nothing left to confirm."""
        self.db.write("UPDATE syscalls SET state = ?, pending = '[]', confirmation_id = '', create_only = ?"
                        " WHERE id = ?", (QUEUED, int(entry.create_only), entry.id))

    def preempted(self, entry: Entry) -> None:
        self.db.write("UPDATE syscalls SET snapshot_text = ?, snapshot_tokens = ? WHERE id = ?",
                        (entry.snapshot_text, entry.snapshot_tokens, entry.id))

    def finished(self, entry: Entry, record: bytes) -> None:
        """The call's end: `record` is its serialized SyscallRecord."""
        err = entry.error
        error = None if err is None else json.dumps(
            {"code": err.code, "message": err.message, "reason": err.reason, "field": err.field,
             "metadata": err.metadata})
        self.db.write("UPDATE syscalls SET state = ?, record = ?, error = ?, finish_wall = ?, pending = '[]'"
                        " WHERE id = ?",
                        (entry.state, record, error, entry.finish_wall or self.clock(),
                         entry.id))

    # -- reads

    def lookup(self, agent: str, request_id: str) -> Entry | Recovered | None:
        """The newest syscall of an agent's request id, in one read: finished,
        as a finished entry (its record in `entry.final_record`); unfinished,
        as what a takeover needs (Recovered, with the replica holding it)."""
        row = self.db.execute(
            f"SELECT {_ENTRY_COLUMNS}, {_UNFINISHED_COLUMNS}, record, error, finish_wall FROM syscalls"
            " WHERE agent = ? AND request_id = ? ORDER BY create_wall DESC LIMIT 1", (agent, request_id)).fetchone()
        if row is None:
            return None
        record, error, finished = row[_N + _U:]
        if finished is None:
            return self._recovered(row, self.clock(), time.monotonic())
        entry = _entry(row, state=row[_N + 1], final_record=record, error=_error(error), finish_wall=finished,
                       done=True)
        entry.finished.set()
        return entry

    def unfinished(self, kernels: Iterable[str] | None = None) -> list[Recovered]:
        """Every syscall that was accepted and not finished, oldest first; only
        those `kernels` held, when given."""
        where, params = "finish_wall IS NULL", ()
        if kernels is not None:
            kernels = sorted(kernels)
            if not kernels:
                return []
            where += f" AND kernel IN ({', '.join('?' * len(kernels))})"
            params = tuple(kernels)
        rows = self.db.execute(
            f"SELECT {_ENTRY_COLUMNS}, {_UNFINISHED_COLUMNS} FROM syscalls WHERE {where}"
            " ORDER BY create_wall, id", params).fetchall()
        now_wall, now_mono = self.clock(), time.monotonic()
        return [self._recovered(row, now_wall, now_mono) for row in rows]

    @staticmethod
    def _recovered(row, now_wall: float, now_mono: float) -> Recovered:
        """An unfinished row (_ENTRY_COLUMNS, then _UNFINISHED_COLUMNS) as a call to queue or park again."""
        (deadline, state, create_only, pending, confirmation_id, snapshot_text, snapshot_tokens, kernel,
         streamed) = row[_N:_N + _U]
        entry = _entry(row, deadline=None if deadline is None else now_mono + (deadline - now_wall),
                       state=AWAITING_CONFIRMATION if state == AWAITING_CONFIRMATION else QUEUED,
                       create_only=bool(create_only), confirmation_id=confirmation_id,
                       snapshot_text=snapshot_text, snapshot_tokens=snapshot_tokens, streamed=bool(streamed))
        entry.session_id, entry.priority = entry.syscall.session_id, entry.syscall.priority
        return Recovered(entry, [tuple(p) for p in json.loads(pending)], kernel)

    def holders(self) -> set[str]:
        """The kernel replicas holding unfinished calls."""
        return {row[0] for row in self.db.execute("SELECT DISTINCT kernel FROM syscalls WHERE finish_wall IS NULL")}

    def claim(self, items: list[Recovered]) -> list[Recovered]:
        """Take calls over from the replicas that held them: the ones this
        replica got (another may have been first), in id order so that two
        claimers lock rows in one order."""
        won = []
        for item in sorted(items, key=lambda r: r.entry.id):
            moved = self.db.execute("UPDATE syscalls SET kernel = ? WHERE id = ? AND kernel = ? AND finish_wall IS NULL",
                                  (self.kernel_id, item.entry.id, item.kernel)).rowcount
            if moved == 1:
                item.kernel = self.kernel_id
                won.append(item)
        won.sort(key=lambda r: (r.entry.create_wall, r.entry.id))
        return won

    # -- bounds

    def _maybe_prune(self) -> None:
        now = self.clock()
        if now - self._pruned >= PRUNE_EVERY:
            self._pruned = now
            self.prune()

    def prune(self) -> int:
        """Drop finished calls past max_age, then the oldest past max_rows."""
        now = self.clock()
        gone = self.db.execute("DELETE FROM syscalls WHERE finish_wall IS NOT NULL AND finish_wall < ?",
                               (now - self.max_age,)).rowcount
        (finished,) = self.db.execute("SELECT COUNT(*) FROM syscalls WHERE finish_wall IS NOT NULL").fetchone()
        if finished > self.max_rows:
            gone += self.db.execute(
                "DELETE FROM syscalls WHERE id IN (SELECT id FROM syscalls WHERE finish_wall IS NOT NULL"
                " ORDER BY finish_wall LIMIT ?)", (finished - self.max_rows,)).rowcount
        if gone:
            log.info("journal pruned", removed=gone)
        return gone


# The columns every read makes an Entry of, first in its SELECT; then, for
# an unfinished call, what queueing or parking it again takes.
_ENTRY_COLUMNS = "id, agent, request_id, fingerprint, kind, resource, syscall, parent_id, create_wall"
_N = len(_ENTRY_COLUMNS.split(","))
_UNFINISHED_COLUMNS = ("deadline_wall, state, create_only, pending, confirmation_id, snapshot_text, snapshot_tokens,"
                       " kernel, streamed")
_U = len(_UNFINISHED_COLUMNS.split(","))


def _entry(row, **more) -> Entry:
    eid, agent, request_id, fingerprint, kind, resource, syscall, parent_id, created = row[:_N]
    return Entry(agent=agent, kind=kind, resource=resource, syscall=ks.Syscall.FromString(syscall),
                 request_id=request_id or "", fingerprint=fingerprint or b"", id=eid, parent_id=parent_id,
                 create_wall=created, **more)


def _error(raw: str | None) -> errors.AiosError | None:
    if not raw:
        return None
    data = json.loads(raw)
    return errors.of_code(data["code"], data["message"], reason=data.get("reason", ""),
                         field=data.get("field", ""), metadata=data.get("metadata") or {})


