"""The kernel's SQL database: a SQLite file (or ":memory:") or PostgreSQL
given a postgresql:// URL, with the same statements (`?` placeholders,
SQLite types; pg8000 for PostgreSQL, the `postgres` extra). The journal, the
quota counters and the replicas' leases share one; each creates its tables
by versioned migrations (services/runtime/sql.py migrate).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import time
from pathlib import Path

from services.runtime import errors, logs, sql
from services.runtime.sql import redacted  # noqa: F401 - services.scheduler.app imports it from here

log = logs.get("scheduler")

CHECKPOINT_EVERY = 1.0
# Seconds one PostgreSQL operation may hold the event loop before the
# connection counts as lost.
NETWORK_TIMEOUT = 5.0
# Seconds between attempts to reach a PostgreSQL that cannot be reached,
# doubling up to the second value while it stays away.
RECONNECT_FIRST, RECONNECT_MOST = 0.5, 15.0
# Distinct statements prepared per PostgreSQL connection; others run unprepared.
PREPARED_MOST = 256


class Database:
    """One connection, to SQLite (a path) or PostgreSQL (a postgresql:// URL).

    Writes made in one turn of the event loop are sent and committed
    together, at the end of that turn (group commit): before any task the
    turn scheduled runs, so a syscall is on disk before it is dispatched and
    before its caller hears of its end, at one commit per turn however many
    calls the turn handled. A turn that wrote one statement sends just that
    statement (on PostgreSQL one round trip, not three); a read first sends
    the turn's writes, in the turn's transaction, so it sees them.

    A lost PostgreSQL connection (a restart, a failover, a network cut) is
    opened again and the open transaction sent again, so a write is never
    lost to it; a SQLite file that cannot take writes (full, read-only, an
    I/O error) is treated alike. While the database cannot be reached, reads fail with
    UNAVAILABLE, the turn's writes are kept and retried (`failure` says why
    they wait), and `available()` refuses what would need new ones. Writes
    are idempotent for that: a commit whose answer was lost may have
    happened.

    A SQLite file's WAL is checkpointed by a thread of its own every
    CHECKPOINT_EVERY seconds rather than by whichever commit passes 1,000
    pages: a checkpoint syncs the file, and on the event loop that stalled
    every call in flight for milliseconds."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.postgres = sql.is_postgres(target)
        self._statements: dict[str, tuple] = {}
        if self.postgres:
            self.conn = self._connect()
        else:
            if target != ":memory:":
                Path(target).parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        # The turn's writes not yet sent; those sent in the open transaction
        # (sent again on a new connection); whether BEGIN was sent.
        self._batch: list[tuple[str, tuple]] = []
        self._sent: list[tuple[str, tuple]] = []
        self._open = False
        self._due = False
        # Writes are numbered; every one up to `committed` is committed.
        self.written = 0
        self.committed = 0
        self.failure: errors.Unavailable | None = None
        self._retry_at = 0.0
        self._backoff = RECONNECT_FIRST
        self._closed = False
        self._stop = threading.Event()
        self._checkpointer = None
        if not self.postgres and target != ":memory:":
            self.conn.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = threading.Thread(target=self._checkpoints, args=(target,),
                                                  name="sqlite-checkpoint", daemon=True)
            self._checkpointer.start()

    def _connect(self):
        conn = sql.connect_postgres(self.target, timeout=NETWORK_TIMEOUT)
        conn.autocommit = True  # transactions are explicit: BEGIN ... COMMIT
        self._statements = {}  # prepared on this connection
        return conn

    def _checkpoints(self, target: str) -> None:
        conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        try:
            while not self._stop.wait(CHECKPOINT_EVERY):
                # PASSIVE: copies what no reader needs, never waits for the writer.
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    # -- statements

    def execute(self, sql: str, params: tuple = ()):
        """Run one statement now and return its cursor: a read, or a write
        whose result is used. Within the turn's transaction when the turn
        wrote (it sees those writes, and commits with them)."""
        return self._attempt(lambda: self._now(sql, params))

    def write(self, sql: str, params: tuple = ()) -> int:
        """A write whose result nobody reads: sent with the turn's others at
        its end (at once with no event loop running). Returns its number,
        committed once `committed` reaches it."""
        self._batch.append((sql, params))
        self.written += 1
        number = self.written
        self._schedule()
        return number

    def _schedule(self, delay: float = 0.0) -> None:
        if self._due:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.commit()  # no loop: commit at once
            return
        self._due = True
        if delay:
            loop.call_later(delay, self._end_of_turn)
        else:
            loop.call_soon(self._end_of_turn)

    def _now(self, sql: str, params: tuple):
        if self._batch:
            self._send_batch()
        cursor = self._raw(sql, params)
        if self._open:
            self._sent.append((sql, params))
        return cursor

    def _raw(self, sql: str, params: tuple = ()):
        if not self.postgres:
            return self.conn.execute(sql, params)
        if params and (len(self._statements) < PREPARED_MOST or sql in self._statements):
            return self._prepared(sql, params)
        cursor = self.conn.cursor()
        # Without parameters pg8000 sends the text as it is: one round trip.
        cursor.execute(sql.replace("?", "%s") if params else sql, params)
        return cursor

    def _prepared(self, sql: str, params: tuple) -> "_Rows":
        """A statement with parameters, prepared on this connection the first
        time: one round trip a call where pg8000's unnamed statements take
        three (parse, describe, execute)."""
        from pg8000.core import make_params

        found = self._statements.get(sql)
        if found is None:
            numbered = iter(range(1, len(params) + 1))
            text = re.sub(r"\?", lambda _: f"${next(numbered)}", sql)
            name, columns, funcs = self.conn.prepare_statement(text, ())
            found = self._statements[sql] = (name, columns, funcs, text)
        name, columns, funcs, text = found
        context = self.conn.execute_named(name, make_params(self.conn.py_types, params), columns, funcs, text)
        return _Rows(context.rows or [], context.row_count)

    def _send_batch(self) -> None:
        if not self._open:
            self._raw("BEGIN")
            self._open = True
        while self._batch:
            self._raw(*self._batch[0])
            self._sent.append(self._batch.pop(0))

    # -- commits

    def commit(self) -> None:
        """Commit the turn's writes now; UNAVAILABLE (the writes kept) when
        the database cannot be reached."""
        if not self._batch and not self._open:
            return
        upto = self.written
        self._attempt(self._finish)
        self.committed = upto
        if self.failure is not None:
            log.info("kernel database reachable again", database=sql.redacted(self.target))
            self.failure = None

    def _finish(self) -> None:
        if not self._open and len(self._batch) == 1:
            self._raw(*self._batch[0])  # autocommit: one statement, one round trip
            self._batch.clear()
            return
        self._send_batch()
        self._raw("COMMIT")
        self._open = False
        self._sent.clear()

    def _end_of_turn(self) -> None:
        self._due = False
        try:
            self.commit()
        except errors.Unavailable as err:
            if self.failure is None:
                log.warning("kernel database unreachable; its writes wait", error=err.message,
                            waiting=len(self._batch) + len(self._sent))
            self.failure = err
            self._schedule(max(0.05, self._retry_at - time.monotonic()))
        except Exception:  # noqa: BLE001 - a statement failed: keep the others
            log.exception("a kernel database write failed; writing the turn's others one by one")
            self._one_by_one()

    def _one_by_one(self) -> None:
        self._turn_again()
        statements, self._batch = self._batch, []
        upto = self.written
        for i, statement in enumerate(statements):
            try:
                self._raw(*statement)
            except Exception as exc:  # noqa: BLE001
                if self.postgres and sql.connection_lost(exc):
                    # Not this statement's fault: the rest wait for the database.
                    self._drop()
                    self._batch = statements[i:] + self._batch
                    self.failure = self._unreachable(exc)
                    self._schedule(RECONNECT_FIRST)
                    return
                log.exception("kernel database write dropped", statement=statement[0])
        self.committed = upto

    def available(self) -> None:
        """UNAVAILABLE, with when to retry, while earlier writes wait for a
        database that cannot be reached (tried again here when it is time)."""
        if self.failure is None:
            return
        try:
            self.commit()
        except errors.Unavailable as err:
            self.failure = err
            raise

    # -- lost connections

    def _attempt(self, step):
        """`step()`, once more on a new connection (the open transaction sent
        again first) if PostgreSQL dropped this one."""
        lost = None
        for _ in range(2):
            try:
                if self.conn is None:
                    self._reconnect()
                    if self._open:
                        self._raw("BEGIN")
                        for statement in self._sent:
                            self._raw(*statement)
                return step()
            except errors.Unavailable:
                raise
            except Exception as exc:
                if not self.postgres and _cannot_write(exc):
                    self._turn_again()
                    self._back_off()
                    raise self._unreachable(exc) from exc
                if not (self.postgres and sql.connection_lost(exc)):
                    raise
                self._drop()
                lost = exc
        raise self._unreachable(lost) from lost

    def _turn_again(self) -> None:
        """After a write failed mid-transaction (which the database may have
        rolled back itself): everything the turn wrote waits to be sent anew."""
        if self._open:
            self._open = False
            try:
                self._raw("ROLLBACK")
            except Exception:  # noqa: BLE001 - rolled back already, or gone with its connection
                pass
        self._batch, self._sent = self._sent + self._batch, []

    def _back_off(self) -> None:
        """The next attempt waits, twice as long as the last up to RECONNECT_MOST."""
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(RECONNECT_MOST, self._backoff * 2)

    def _reconnect(self) -> None:
        now = time.monotonic()
        if now < self._retry_at:
            raise self._unreachable(None)
        try:
            self.conn = self._connect()
        except Exception as exc:
            self._back_off()
            raise self._unreachable(exc) from exc
        self._retry_at, self._backoff = 0.0, RECONNECT_FIRST
        log.info("kernel database connection opened again", database=sql.redacted(self.target))

    def _drop(self) -> None:
        conn, self.conn = self.conn, None
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - already gone
            pass

    def _unreachable(self, exc: Exception | None) -> errors.Unavailable:
        why = f": {exc}" if exc is not None else ""
        return errors.Unavailable(
            f"the kernel's database ({sql.redacted(self.target)}) cannot be reached{why}; "
            "retry with the same request id", reason="DATABASE_UNAVAILABLE",
            retry_after=round(max(0.1, self._retry_at - time.monotonic()), 1))

    def close(self) -> None:
        """Commit and close; once (a kernel stopped twice closes it once)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.commit()
        except errors.Unavailable as err:
            log.warning("kernel database writes lost at close", error=err.message,
                        lost=len(self._batch) + len(self._sent))
        if self._checkpointer is not None:
            self._stop.set()
            self._checkpointer.join()
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if self.conn is not None:
            self.conn.close()


# SQLite's primary result codes of a file that cannot take a write now (busy,
# locked, read-only, I/O error, full, cannot open), as opposed to a statement
# that is wrong.
_TRANSIENT = {5, 6, 8, 10, 13, 14}


def _cannot_write(exc: Exception) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _TRANSIENT


class _Rows:
    """A prepared statement's result, read as a cursor's."""

    def __init__(self, rows: list, rowcount: int) -> None:
        self._rows, self.rowcount = iter(rows), rowcount

    def fetchone(self):
        return next(self._rows, None)

    def fetchall(self) -> list:
        return list(self._rows)

    def __iter__(self):
        return self._rows
