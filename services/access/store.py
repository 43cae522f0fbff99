"""The access service's durable store: one SQLite file (WAL).

One connection, used only from one worker thread: `await store.run(fn, ...)`
runs `fn` there, off the event loop, so calls are serialised and each
domain operation can be one transaction. Methods other than `run` and
`close` must only be called from inside `run`.

The audit table is append-only: triggers refuse UPDATE and DELETE.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from services.access import model as m

T = TypeVar("T")

SCHEMA_VERSION = 1

SCHEMA = """
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
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


def _rule_to_json(rule: m.Rule) -> dict:
    return {"kind": rule.kind, "actions": list(rule.actions), "name_pattern": rule.name_pattern,
            "effect": rule.effect, "irreversible_only": rule.irreversible_only}


def _rule_from_json(raw: dict) -> m.Rule:
    return m.Rule(kind=raw.get("kind", ""), actions=tuple(raw.get("actions", ())),
                  name_pattern=raw.get("name_pattern", "*"), effect=raw["effect"],
                  irreversible_only=bool(raw.get("irreversible_only", False)))


class Store:
    def __init__(self, path: Path, *, sync_full: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.sync_full = sync_full
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="access-db")
        # Opened in the worker thread, the only thread that ever uses it.
        self._db: sqlite3.Connection = self._executor.submit(self._open).result()

    def _open(self) -> sqlite3.Connection:
        # Private to the service's user; SQLite gives -wal and -shm the same mode.
        try:
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL (the default): a commit survives a crash of this process, not
        # necessarily a power loss, and costs no fsync; FULL fsyncs every
        # commit (about ten times slower per Check on an ordinary disk).
        db.execute(f"PRAGMA synchronous={'FULL' if self.sync_full else 'NORMAL'}")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(SCHEMA)
        db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                   (str(SCHEMA_VERSION),))
        return db

    async def run(self, fn: Callable[..., T], *args) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.submit(self._db.close).result()
        self._executor.shutdown(wait=True)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- meta
    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row["value"]

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    # -- principals and tokens
    def _agent(self, row: sqlite3.Row, count_tokens: bool = True) -> m.Agent:
        active = self._db.execute(
            "SELECT COUNT(*) FROM tokens WHERE principal = ? AND revoke_time IS NULL",
            (row["name"],)).fetchone()[0] if count_tokens else 0
        return m.Agent(name=row["name"], groups=tuple(json.loads(row["groups"])), tenant=row["tenant"],
                       create_time=row["create_time"], revoked=bool(row["revoked"]),
                       active_tokens=active, kind=row["kind"])

    def principal(self, name: str, count_tokens: bool = True) -> m.Agent | None:
        row = self._db.execute("SELECT * FROM principals WHERE name = ?", (name,)).fetchone()
        return None if row is None else self._agent(row, count_tokens)

    def insert_principal(self, name: str, kind: str, groups: tuple[str, ...], tenant: str,
                         now: float) -> None:
        self._db.execute("INSERT INTO principals(name, kind, groups, tenant, create_time) "
                         "VALUES (?, ?, ?, ?, ?)", (name, kind, json.dumps(list(groups)), tenant, now))

    def list_principals(self, kind: str, after: str, limit: int) -> list[m.Agent]:
        rows = self._db.execute("SELECT * FROM principals WHERE kind = ? AND name > ? "
                                "ORDER BY name LIMIT ?", (kind, after, limit)).fetchall()
        return [self._agent(r) for r in rows]

    def set_revoked(self, name: str, revoked: bool) -> None:
        self._db.execute("UPDATE principals SET revoked = ? WHERE name = ?", (int(revoked), name))

    def insert_token(self, token_hash: str, principal: str, now: float) -> None:
        self._db.execute("INSERT INTO tokens(hash, principal, create_time) VALUES (?, ?, ?)",
                         (token_hash, principal, now))

    def token(self, token_hash: str) -> sqlite3.Row | None:
        return self._db.execute("SELECT * FROM tokens WHERE hash = ?", (token_hash,)).fetchone()

    def revoke_tokens(self, principal: str, now: float) -> int:
        cur = self._db.execute("UPDATE tokens SET revoke_time = ? "
                               "WHERE principal = ? AND revoke_time IS NULL", (now, principal))
        return cur.rowcount

    def active_token_hashes(self, kind: str) -> dict[str, str]:
        """hash -> principal name, for the active tokens of principals of `kind`."""
        rows = self._db.execute(
            "SELECT t.hash, t.principal FROM tokens t JOIN principals p ON p.name = t.principal "
            "WHERE p.kind = ? AND p.revoked = 0 AND t.revoke_time IS NULL", (kind,)).fetchall()
        return {r["hash"]: r["principal"] for r in rows}

    # -- groups
    def groups(self) -> dict[str, m.Group]:
        rows = self._db.execute("SELECT * FROM groups ORDER BY name").fetchall()
        return {r["name"]: m.Group(r["name"], r["description"],
                                   tuple(_rule_from_json(x) for x in json.loads(r["rules"])))
                for r in rows}

    def put_group(self, group: m.Group) -> None:
        rules = json.dumps([_rule_to_json(r) for r in group.rules])
        self._db.execute("INSERT INTO groups(name, description, rules) VALUES (?, ?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET description = excluded.description, "
                         "rules = excluded.rules", (group.name, group.description, rules))

    # -- grants
    @staticmethod
    def _grant(row: sqlite3.Row) -> m.Grant:
        return m.Grant(id=row["id"], grantor=row["grantor"], grantee=row["grantee"], kind=row["kind"],
                       path_prefix=row["path_prefix"], permission=row["permission"],
                       create_time=row["create_time"], expire_time=row["expire_time"])

    def insert_grant(self, grant: m.Grant) -> None:
        self._db.execute(
            "INSERT INTO grants(id, grantor, grantee, kind, path_prefix, permission, create_time, "
            "expire_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (grant.id, grant.grantor, grant.grantee, grant.kind, grant.path_prefix, grant.permission,
             grant.create_time, grant.expire_time))

    def grant(self, grant_id: str) -> m.Grant | None:
        row = self._db.execute("SELECT * FROM grants WHERE id = ? AND revoke_time IS NULL",
                               (grant_id,)).fetchone()
        return None if row is None else self._grant(row)

    def revoke_grant(self, grant_id: str, now: float) -> bool:
        cur = self._db.execute("UPDATE grants SET revoke_time = ? WHERE id = ? AND revoke_time IS NULL",
                               (now, grant_id))
        return cur.rowcount == 1

    def active_grants(self, now: float, grantor: str = "", grantee: str = "") -> list[m.Grant]:
        sql = ("SELECT * FROM grants WHERE revoke_time IS NULL "
               "AND (expire_time IS NULL OR expire_time > ?)")
        args: list = [now]
        if grantor:
            sql += " AND grantor = ?"
            args.append(grantor)
        if grantee:
            sql += " AND grantee = ?"
            args.append(grantee)
        rows = self._db.execute(sql + " ORDER BY create_time, id", args).fetchall()
        return [self._grant(r) for r in rows]

    # -- confirmations
    @staticmethod
    def _confirmation(row: sqlite3.Row) -> m.Confirmation:
        return m.Confirmation(
            id=row["id"], agent=row["agent"], action=row["action"],
            resource=m.Resource(row["kind"], row["owner"], row["name"]), summary=row["summary"],
            syscall_id=row["syscall_id"], state=row["state"], create_time=row["create_time"],
            expire_time=row["expire_time"], resolved_by=row["resolved_by"])

    def insert_confirmation(self, c: m.Confirmation) -> None:
        self._db.execute(
            "INSERT INTO confirmations(id, agent, action, kind, owner, name, summary, syscall_id, "
            "state, create_time, expire_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (c.id, c.agent, c.action, c.resource.kind, c.resource.owner, c.resource.name, c.summary,
             c.syscall_id, c.state, c.create_time, c.expire_time))

    def confirmation(self, confirmation_id: str) -> m.Confirmation | None:
        row = self._db.execute("SELECT * FROM confirmations WHERE id = ?", (confirmation_id,)).fetchone()
        return None if row is None else self._confirmation(row)

    def confirmation_for_syscall(self, agent: str, syscall_id: str) -> m.Confirmation | None:
        row = self._db.execute("SELECT * FROM confirmations WHERE agent = ? AND syscall_id = ? "
                               "ORDER BY create_time DESC LIMIT 1", (agent, syscall_id)).fetchone()
        return None if row is None else self._confirmation(row)

    def list_confirmations(self, state: str, limit: int = 1000) -> list[m.Confirmation]:
        rows = self._db.execute("SELECT * FROM confirmations WHERE state = ? "
                                "ORDER BY create_time LIMIT ?", (state, limit)).fetchall()
        return [self._confirmation(r) for r in rows]

    def resolve_confirmation(self, confirmation_id: str, state: str, resolved_by: str,
                             now: float) -> bool:
        """Moves a pending confirmation to `state`; False when it was not pending."""
        cur = self._db.execute(
            "UPDATE confirmations SET state = ?, resolved_by = ?, resolve_time = ? "
            "WHERE id = ? AND state = ?", (state, resolved_by, now, confirmation_id, m.PENDING))
        return cur.rowcount == 1

    def overdue_confirmations(self, now: float) -> list[m.Confirmation]:
        rows = self._db.execute("SELECT * FROM confirmations WHERE state = ? AND expire_time <= ?",
                                (m.PENDING, now)).fetchall()
        return [self._confirmation(r) for r in rows]

    # -- audit
    def append_audit(self, now: float, principal: str, action: str, resource: m.Resource,
                     decision: str, reason: str, syscall_id: str = "") -> int:
        cur = self._db.execute(
            "INSERT INTO audit(time, principal, action, kind, owner, name, decision, reason, syscall_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (now, principal, action, resource.kind, resource.owner, resource.name, decision, reason,
             syscall_id))
        return int(cur.lastrowid)

    def audit_events(self, principal: str, before_id: int | None, limit: int) -> list[m.AuditEvent]:
        """Newest first."""
        sql, args = "SELECT * FROM audit WHERE 1 = 1", []
        if principal:
            sql += " AND principal = ?"
            args.append(principal)
        if before_id is not None:
            sql += " AND id < ?"
            args.append(before_id)
        rows = self._db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [m.AuditEvent(id=r["id"], time=r["time"], principal=r["principal"], action=r["action"],
                             resource=m.Resource(r["kind"], r["owner"], r["name"]),
                             decision=r["decision"], reason=r["reason"], syscall_id=r["syscall_id"])
                for r in rows]
