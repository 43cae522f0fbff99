"""The access service's durable store: a SQLite file (WAL), the one-machine
default, or a PostgreSQL database that several replicas share.

One connection, used only from one worker thread: `await store.run(fn, ...)`
runs `fn` there, off the event loop, so a replica's calls are serialised and
each domain operation can be one transaction. Methods other than `run`,
`subscribe` and `close` must only be called from inside `run`.

Both run the same statements (`?` placeholders, SQLite's types; see
services/runtime/sql.py). The schema is versioned: SQLITE_STEPS or
POSTGRES_STEPS, applied at start by sql.migrate. The audit table is append-only: triggers refuse UPDATE and
DELETE (and TRUNCATE on PostgreSQL).

Replicas on one PostgreSQL database: transactions are READ COMMITTED, and an
operation that writes on the strength of a row it read locks that row first
(`lock=True`: SELECT ... FOR UPDATE) or writes conditionally (UPDATE ...
WHERE state = 'pending', INSERT ... ON CONFLICT DO NOTHING) and looks at the
row count. Each of them is about one or two rows it knows by key, so row
locks are enough; SERIALIZABLE would also be correct but would make every
operation retry on a serialisation failure. On SQLite, BEGIN IMMEDIATE takes
the file's write lock, which already excludes every other writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from services.access import changes
from services.access import model as m
from services.runtime import errors, logs, sql

T = TypeVar("T")
Row = Mapping  # a sqlite3.Row, or a dict from PostgreSQL

log = logs.get("access")

TABLES = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS principals (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    groups TEXT NOT NULL,              -- JSON list
    tenant TEXT NOT NULL DEFAULT '',
    create_time REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,             -- SHA-256 hex; the token itself is never stored
    principal TEXT NOT NULL REFERENCES principals(name),
    create_time REAL NOT NULL,
    revoke_time REAL
);
CREATE INDEX IF NOT EXISTS tokens_principal ON tokens(principal);
CREATE TABLE IF NOT EXISTS groups (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    rules TEXT NOT NULL                -- JSON list of rules
);
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY,
    grantor TEXT NOT NULL REFERENCES principals(name),
    grantee TEXT NOT NULL REFERENCES principals(name),
    kind TEXT NOT NULL,
    path_prefix TEXT NOT NULL DEFAULT '',
    permission TEXT NOT NULL,
    create_time REAL NOT NULL,
    expire_time REAL,
    revoke_time REAL
);
CREATE INDEX IF NOT EXISTS grants_grantee ON grants(grantee, grantor);
CREATE TABLE IF NOT EXISTS confirmations (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    action TEXT NOT NULL,
    kind TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '',
    summary TEXT NOT NULL DEFAULT '',
    syscall_id TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    create_time REAL NOT NULL,
    expire_time REAL NOT NULL,
    resolved_by TEXT NOT NULL DEFAULT '',
    resolve_time REAL
);
CREATE INDEX IF NOT EXISTS confirmations_state ON confirmations(state, expire_time);
CREATE INDEX IF NOT EXISTS confirmations_syscall ON confirmations(agent, syscall_id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    principal TEXT NOT NULL,
    action TEXT NOT NULL,
    kind TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '',
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    syscall_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_principal ON audit(principal, id);
"""

SQLITE_APPEND_ONLY = """
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""

POSTGRES_APPEND_ONLY = """
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit
FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
"""

# The schema's versions: step N takes a database from version N-1 to N. Never
# edit a shipped step; add one. Step 1 is the schema of the files made before
# there were versions (their `meta` table said schema_version 1): IF NOT
# EXISTS lets it run over them unchanged.
SQLITE_STEPS = [TABLES + SQLITE_APPEND_ONLY]
POSTGRES_STEPS = [TABLES + POSTGRES_APPEND_ONLY]
SCHEMA_VERSION = len(SQLITE_STEPS)


def _rule_to_json(rule: m.Rule) -> dict:
    return {"kind": rule.kind, "actions": list(rule.actions), "name_pattern": rule.name_pattern,
            "effect": rule.effect, "irreversible_only": rule.irreversible_only}


def _rule_from_json(raw: dict) -> m.Rule:
    return m.Rule(kind=raw.get("kind", ""), actions=tuple(raw.get("actions", ())),
                  name_pattern=raw.get("name_pattern", "*"), effect=raw["effect"],
                  irreversible_only=bool(raw.get("irreversible_only", False)))


class Store:
    def __init__(self, target: Path | str, *, sync_full: bool = False) -> None:
        """`target`: a SQLite file, or a postgresql:// URL."""
        self.target = str(target)
        self.postgres = sql.is_postgres(self.target)
        self.sync_full = sync_full
        self._subscribers: list[Callable[[str], None]] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="access-db")
        # Opened in the worker thread, the only thread that ever uses it;
        # None after the connection to PostgreSQL was lost, until the next call.
        self._db = None
        try:
            self.schema_version = self._executor.submit(self._open).result()
        except BaseException:
            self._executor.shutdown()
            raise
        self._listener = None
        if self.postgres:
            self._listener = changes.Listener(self.target, self._heard)
            # Serve once other replicas' changes are heard (or, failing that,
            # without caching: see hearing_changes).
            self._listener.listening.wait(changes.START_WAIT)

    def _connect(self):
        if self.postgres:
            db = sql.connect_postgres(self.target)
            db.autocommit = True  # transactions are explicit: BEGIN ... COMMIT
            return db
        path = Path(self.target)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Private to the service's user; SQLite gives -wal and -shm the same mode.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL (the default): a commit survives a crash of this process, not
        # necessarily a power loss, and costs no fsync; FULL fsyncs every
        # commit (about ten times slower per Check on an ordinary disk).
        db.execute(f"PRAGMA synchronous={'FULL' if self.sync_full else 'NORMAL'}")
        db.execute("PRAGMA foreign_keys=ON")
        return db

    def _open(self) -> int:
        self._db = self._connect()
        try:
            steps = POSTGRES_STEPS if self.postgres else SQLITE_STEPS
            return sql.migrate(self._execute, "access", steps, postgres=self.postgres)
        except BaseException:
            self._db.close()
            raise

    async def run(self, fn: Callable[..., T], *args) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn, args)

    def _call(self, fn: Callable[..., T], args: tuple) -> T:
        try:
            if self._db is None:
                self._db = self._connect()
            return fn(*args)
        except Exception as exc:
            if not (self.postgres and sql.connection_lost(exc)):
                raise
            # What happened to a transaction in flight is unknown; the caller
            # hears UNAVAILABLE, and the next call connects again.
            self._drop()
            raise errors.Unavailable("the access database is unreachable",
                                     reason="DATABASE_UNAVAILABLE") from exc

    def _drop(self) -> None:
        if self._db is not None:
            with contextlib.suppress(Exception):
                self._db.close()
            self._db = None

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
        self._executor.submit(self._drop).result()
        self._executor.shutdown(wait=True)

    # -- statements
    def _execute(self, statement: str, params: Sequence = ()):
        if not self.postgres:
            return self._db.execute(statement, params)
        cursor = self._db.cursor()
        # Without parameters pg8000 sends the text as it is (several statements may be in it).
        cursor.execute(statement.replace("?", "%s") if params else statement, params)
        return cursor

    def _all(self, statement: str, params: Sequence = ()) -> list[Row]:
        cursor = self._execute(statement, params)
        if not self.postgres:
            return cursor.fetchall()
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def _one(self, statement: str, params: Sequence = ()) -> Row | None:
        rows = self._all(statement, params)
        return rows[0] if rows else None

    def _for_update(self, lock: bool) -> str:
        return " FOR UPDATE" if lock and self.postgres else ""

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self._execute("BEGIN" if self.postgres else "BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._execute("ROLLBACK")
            raise
        self._execute("COMMIT")

    def lock(self, name: str) -> None:
        """Hold `name` until this transaction ends, against every replica (an
        advisory lock; on SQLite the transaction already excludes all writers)."""
        if self.postgres:
            self._execute(f"SELECT pg_advisory_xact_lock({sql.advisory_key(name)})")

    # -- changes other replicas make
    def notify(self, what: str) -> None:
        """Tell every replica, once this transaction commits, that `what`
        changed (services/access/changes.py); one process on SQLite needs no telling."""
        if self.postgres:
            self._execute("SELECT pg_notify(?, ?)", (changes.CHANNEL, what))

    @property
    def hearing_changes(self) -> bool:
        """Whether every change another replica makes is heard (nothing is
        cached while not: the listener is reconnecting)."""
        return self._listener is None or self._listener.listening.is_set()

    def subscribe(self, fn: Callable[[str], None]) -> None:
        """fn(what) runs in the store's thread for each change heard
        (changes.ANY: anything may have changed)."""
        self._subscribers.append(fn)

    def _heard(self, what: str) -> None:
        with contextlib.suppress(RuntimeError):  # closing: nobody to tell
            self._executor.submit(self._tell, what)

    def _tell(self, what: str) -> None:
        for fn in self._subscribers:
            try:
                self._call(fn, (what,))
            except Exception as exc:  # the next change, or ANY after a reconnect, tries again
                log.warning("could not apply another replica's change", change=what, error=str(exc))

    # -- meta
    def meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else row["value"]

    def set_meta(self, key: str, value: str) -> None:
        self._execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                      "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    # -- principals and tokens
    def _agent(self, row: Row, count_tokens: bool = True) -> m.Agent:
        active = self._one(
            "SELECT COUNT(*) AS n FROM tokens WHERE principal = ? AND revoke_time IS NULL",
            (row["name"],))["n"] if count_tokens else 0
        return m.Agent(name=row["name"], groups=tuple(json.loads(row["groups"])), tenant=row["tenant"],
                       create_time=row["create_time"], revoked=bool(row["revoked"]),
                       active_tokens=active, kind=row["kind"])

    def principal(self, name: str, count_tokens: bool = True, *, lock: bool = False) -> m.Agent | None:
        row = self._one("SELECT * FROM principals WHERE name = ?" + self._for_update(lock), (name,))
        return None if row is None else self._agent(row, count_tokens)

    def insert_principal(self, name: str, kind: str, groups: tuple[str, ...], tenant: str,
                         now: float) -> bool:
        """False when the name is taken (by a replica's concurrent insert too)."""
        cur = self._execute("INSERT INTO principals(name, kind, groups, tenant, create_time) "
                            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO NOTHING",
                            (name, kind, json.dumps(list(groups)), tenant, now))
        return cur.rowcount == 1

    def list_principals(self, kind: str, after: str, limit: int) -> list[m.Agent]:
        rows = self._all("SELECT * FROM principals WHERE kind = ? AND name > ? "
                         "ORDER BY name LIMIT ?", (kind, after, limit))
        return [self._agent(r) for r in rows]

    def set_revoked(self, name: str, revoked: bool) -> None:
        self._execute("UPDATE principals SET revoked = ? WHERE name = ?", (int(revoked), name))

    def insert_token(self, token_hash: str, principal: str, now: float) -> None:
        self._execute("INSERT INTO tokens(hash, principal, create_time) VALUES (?, ?, ?)",
                      (token_hash, principal, now))

    def token(self, token_hash: str) -> Row | None:
        return self._one("SELECT * FROM tokens WHERE hash = ?", (token_hash,))

    def revoke_tokens(self, principal: str, now: float) -> int:
        cur = self._execute("UPDATE tokens SET revoke_time = ? "
                            "WHERE principal = ? AND revoke_time IS NULL", (now, principal))
        return cur.rowcount

    def active_token_hashes(self, kind: str) -> dict[str, str]:
        """hash -> principal name, for the active tokens of principals of `kind`."""
        rows = self._all(
            "SELECT t.hash, t.principal FROM tokens t JOIN principals p ON p.name = t.principal "
            "WHERE p.kind = ? AND p.revoked = 0 AND t.revoke_time IS NULL", (kind,))
        return {r["hash"]: r["principal"] for r in rows}

    # -- groups
    def groups(self) -> dict[str, m.Group]:
        rows = self._all("SELECT * FROM groups ORDER BY name")
        return {r["name"]: m.Group(r["name"], r["description"],
                                   tuple(_rule_from_json(x) for x in json.loads(r["rules"])))
                for r in rows}

    def put_group(self, group: m.Group) -> None:
        rules = json.dumps([_rule_to_json(r) for r in group.rules])
        self._execute("INSERT INTO groups(name, description, rules) VALUES (?, ?, ?) "
                      "ON CONFLICT(name) DO UPDATE SET description = excluded.description, "
                      "rules = excluded.rules", (group.name, group.description, rules))

    # -- grants
    @staticmethod
    def _grant(row: Row) -> m.Grant:
        return m.Grant(id=row["id"], grantor=row["grantor"], grantee=row["grantee"], kind=row["kind"],
                       path_prefix=row["path_prefix"], permission=row["permission"],
                       create_time=row["create_time"], expire_time=row["expire_time"])

    def insert_grant(self, grant: m.Grant) -> None:
        self._execute(
            "INSERT INTO grants(id, grantor, grantee, kind, path_prefix, permission, create_time, "
            "expire_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (grant.id, grant.grantor, grant.grantee, grant.kind, grant.path_prefix, grant.permission,
             grant.create_time, grant.expire_time))

    def grant(self, grant_id: str, *, lock: bool = False) -> m.Grant | None:
        row = self._one("SELECT * FROM grants WHERE id = ? AND revoke_time IS NULL" + self._for_update(lock),
                        (grant_id,))
        return None if row is None else self._grant(row)

    def revoke_grant(self, grant_id: str, now: float) -> bool:
        cur = self._execute("UPDATE grants SET revoke_time = ? WHERE id = ? AND revoke_time IS NULL",
                            (now, grant_id))
        return cur.rowcount == 1

    def active_grants(self, now: float, grantor: str = "", grantee: str = "") -> list[m.Grant]:
        statement = ("SELECT * FROM grants WHERE revoke_time IS NULL "
                     "AND (expire_time IS NULL OR expire_time > ?)")
        args: list = [now]
        if grantor:
            statement += " AND grantor = ?"
            args.append(grantor)
        if grantee:
            statement += " AND grantee = ?"
            args.append(grantee)
        return [self._grant(r) for r in self._all(statement + " ORDER BY create_time, id", args)]

    # -- confirmations
    @staticmethod
    def _confirmation(row: Row) -> m.Confirmation:
        return m.Confirmation(
            id=row["id"], agent=row["agent"], action=row["action"],
            resource=m.Resource(row["kind"], row["owner"], row["name"]), summary=row["summary"],
            syscall_id=row["syscall_id"], state=row["state"], create_time=row["create_time"],
            expire_time=row["expire_time"], resolved_by=row["resolved_by"])

    def insert_confirmation(self, c: m.Confirmation) -> None:
        self._execute(
            "INSERT INTO confirmations(id, agent, action, kind, owner, name, summary, syscall_id, "
            "state, create_time, expire_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (c.id, c.agent, c.action, c.resource.kind, c.resource.owner, c.resource.name, c.summary,
             c.syscall_id, c.state, c.create_time, c.expire_time))

    def confirmation(self, confirmation_id: str, *, lock: bool = False) -> m.Confirmation | None:
        row = self._one("SELECT * FROM confirmations WHERE id = ?" + self._for_update(lock),
                        (confirmation_id,))
        return None if row is None else self._confirmation(row)

    def confirmation_for_syscall(self, agent: str, syscall_id: str) -> m.Confirmation | None:
        row = self._one("SELECT * FROM confirmations WHERE agent = ? AND syscall_id = ? "
                        "ORDER BY create_time DESC LIMIT 1", (agent, syscall_id))
        return None if row is None else self._confirmation(row)

    def list_confirmations(self, state: str, limit: int = 1000) -> list[m.Confirmation]:
        rows = self._all("SELECT * FROM confirmations WHERE state = ? "
                         "ORDER BY create_time LIMIT ?", (state, limit))
        return [self._confirmation(r) for r in rows]

    def resolve_confirmation(self, confirmation_id: str, state: str, resolved_by: str,
                             now: float) -> bool:
        """Moves a pending confirmation to `state`; False when it was not pending
        (also when another replica resolved it first)."""
        cur = self._execute(
            "UPDATE confirmations SET state = ?, resolved_by = ?, resolve_time = ? "
            "WHERE id = ? AND state = ?", (state, resolved_by, now, confirmation_id, m.PENDING))
        return cur.rowcount == 1

    def overdue_confirmations(self, now: float) -> list[m.Confirmation]:
        # By id: replicas expiring the same rows lock them in one order (no deadlock).
        rows = self._all("SELECT * FROM confirmations WHERE state = ? AND expire_time <= ? ORDER BY id",
                         (m.PENDING, now))
        return [self._confirmation(r) for r in rows]

    # -- audit
    def append_audit(self, now: float, principal: str, action: str, resource: m.Resource,
                     decision: str, reason: str, syscall_id: str = "") -> int:
        statement = ("INSERT INTO audit(time, principal, action, kind, owner, name, decision, reason, "
                     "syscall_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
        args = (now, principal, action, resource.kind, resource.owner, resource.name, decision, reason,
                syscall_id)
        if self.postgres:  # pg8000 has no lastrowid
            return int(self._execute(statement + " RETURNING id", args).fetchone()[0])
        return int(self._execute(statement, args).lastrowid)

    def audit_events(self, principal: str, before_id: int | None, limit: int) -> list[m.AuditEvent]:
        """Newest first."""
        statement, args = "SELECT * FROM audit WHERE 1 = 1", []
        if principal:
            statement += " AND principal = ?"
            args.append(principal)
        if before_id is not None:
            statement += " AND id < ?"
            args.append(before_id)
        rows = self._all(statement + " ORDER BY id DESC LIMIT ?", (*args, limit))
        return [m.AuditEvent(id=r["id"], time=r["time"], principal=r["principal"], action=r["action"],
                             resource=m.Resource(r["kind"], r["owner"], r["name"]),
                             decision=r["decision"], reason=r["reason"], syscall_id=r["syscall_id"])
                for r in rows]
