"""The kernel's SQL database: a SQLite file (or ":memory:") or PostgreSQL
given a postgresql:// URL, with the same statements (`?` placeholders,
SQLite types; pg8000 for PostgreSQL, the `postgres` extra). The journal, the
quota counters and the replicas' leases share one; each creates its tables
by versioned migrations (services/runtime/sql.py migrate).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from services.runtime.sql import connect_postgres as _connect_postgres
from services.runtime.sql import redacted  # noqa: F401 - services.scheduler.app imports it from here


CHECKPOINT_EVERY = 1.0


class Database:
    """One connection, to SQLite (a path) or PostgreSQL (a postgresql:// URL).

    Writes made in one turn of the event loop commit together, at the end of
    that turn (group commit): before any task the turn scheduled runs, so a
    syscall is on disk before it is dispatched and before its caller hears
    of its end, at one commit per turn however many calls the turn handled.

    A SQLite file's WAL is checkpointed by a thread of its own every
    CHECKPOINT_EVERY seconds rather than by whichever commit passes 1,000
    pages: a checkpoint syncs the file, and on the event loop that stalled
    every call in flight for milliseconds."""

    def __init__(self, target: str) -> None:
        if target.startswith(("postgresql://", "postgres://")):
            self.conn = _connect_postgres(target)
            self.conn.autocommit = True
            self.postgres = True
        else:
            if target != ":memory:":
                Path(target).parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.postgres = False
        self._open = False
        self._closed = False
        self._stop = threading.Event()
        self._checkpointer = None
        if not self.postgres and target != ":memory:":
            self.conn.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = threading.Thread(target=self._checkpoints, args=(target,),
                                                  name="sqlite-checkpoint", daemon=True)
            self._checkpointer.start()

    def _checkpoints(self, target: str) -> None:
        conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        try:
            while not self._stop.wait(CHECKPOINT_EVERY):
                # PASSIVE: copies what no reader needs, never waits for the writer.
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    def execute(self, sql: str, params: tuple = ()):
        if self.postgres:
            cursor = self.conn.cursor()
            cursor.execute(sql.replace("?", "%s"), params)
            return cursor
        return self.conn.execute(sql, params)

    def write(self, sql: str, params: tuple = ()):
        if not self._open:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return self.execute(sql, params)  # no loop: commit at once
            self.execute("BEGIN")
            self._open = True
            loop.call_soon(self.commit)
        return self.execute(sql, params)

    def commit(self) -> None:
        if self._open:
            self._open = False
            self.execute("COMMIT")

    def close(self) -> None:
        """Commit and close; once (a kernel stopped twice closes it once)."""
        if self._closed:
            return
        self._closed = True
        self.commit()
        if self._checkpointer is not None:
            self._stop.set()
            self._checkpointer.join()
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()
