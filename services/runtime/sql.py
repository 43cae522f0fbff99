"""SQL helpers the services share: PostgreSQL connections (pg8000, the
`postgres` extra), targets without their passwords for logs, and versioned
schema migrations on SQLite or PostgreSQL.

A schema is written once, in SQLite's types; on PostgreSQL `postgres_types`
turns BLOB into BYTEA, REAL into DOUBLE PRECISION and INTEGER PRIMARY KEY
AUTOINCREMENT into BIGSERIAL PRIMARY KEY.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

# execute(sql, params=()) runs one statement on a connection in autocommit
# mode, with `?` placeholders, and returns its cursor.
Execute = Callable[..., object]

_TYPES = [(re.compile(r"\bINTEGER\s+PRIMARY\s+KEY\s+AUTOINCREMENT\b", re.I), "BIGSERIAL PRIMARY KEY"),
          (re.compile(r"\bBLOB\b"), "BYTEA"),
          (re.compile(r"\bREAL\b"), "DOUBLE PRECISION")]
# What a `;` may hide in: comments, quoted strings and names, $$ bodies.
_LEXEME = re.compile(r"--[^\n]*|'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\$\$.*?\$\$|;", re.S)
_COMMENT = re.compile(r"--[^\n]*")


def is_postgres(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def redacted(target: str) -> str:
    """A database path or URL without its password, for logs."""
    parts = urlsplit(target)
    if parts.password:
        return target.replace(f":{parts.password}@", ":***@", 1)
    return target


# libpq's sslmode values (https://www.postgresql.org/docs/current/libpq-ssl.html).
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def connect_postgres(url: str, timeout: float | None = None):
    """postgresql://user:password@host:port/database, or ?host=/socket/dir
    for a Unix socket (as libpq reads it). TLS as libpq's sslmode says:
    prefer (the default: encrypted when the server offers TLS, the server
    not checked), disable, require (encrypted or refused), verify-ca and
    verify-full (the server's certificate checked against sslrootcert, a CA
    file, or the system's CAs without it or with "system"); sslcert and
    sslkey give a client certificate. `timeout`: seconds any one network
    operation may take (None: no limit)."""
    import pg8000.dbapi

    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    host = query.get("host") or parts.hostname or "127.0.0.1"
    port = parts.port or int(query.get("port", 5432))
    args = {"user": unquote(parts.username or "postgres"), "password": unquote(parts.password or "") or None,
            "database": (parts.path or "/postgres").lstrip("/") or "postgres",
            "ssl_context": _ssl_context(query), "timeout": timeout}
    if host.startswith("/"):  # no TLS on a Unix socket (libpq ignores sslmode there too)
        return pg8000.dbapi.connect(unix_sock=f"{host}/.s.PGSQL.{port}", **{**args, "ssl_context": False})
    return pg8000.dbapi.connect(host=host, port=port, **args)


def connection_lost(exc: Exception) -> bool:
    """Whether a pg8000 error means the connection to PostgreSQL is gone (a
    restart, a failover, a network cut) rather than a statement failing."""
    import pg8000.exceptions

    if isinstance(exc, (pg8000.exceptions.InterfaceError, OSError)):
        return True
    detail = exc.args[0] if isinstance(exc, pg8000.exceptions.DatabaseError) and exc.args else None
    # SQLSTATE class 08: connection exception; 57P01-57P03: the server shut down or restarts.
    code = detail.get("C", "") if isinstance(detail, dict) else ""
    return code.startswith("08") or code in ("57P01", "57P02", "57P03")


def check_tls(url: str) -> None:
    """ValueError, saying what is wrong, when a PostgreSQL URL's ssl*
    parameters cannot be used (an unknown sslmode, a CA or certificate file
    that cannot be read): for the services to refuse at configuration."""
    import ssl

    query = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
    for name in ("sslrootcert", "sslcert", "sslkey"):
        path = query.get(name, "")
        if path and not (name == "sslrootcert" and path == "system") and not os.access(path, os.R_OK):
            raise ValueError(f"{name}={path} cannot be read")
    try:
        _ssl_context(query)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"its TLS files cannot be used: {exc}") from None


def _ssl_context(query: dict[str, str]):
    """pg8000's ssl_context for a URL's ssl* parameters: False for no TLS,
    None for TLS when the server offers it, else the context to use."""
    import ssl

    mode = query.get("sslmode", "prefer")
    if mode not in SSL_MODES:
        raise ValueError(f"sslmode={mode!r} in the database URL: expected one of {', '.join(SSL_MODES)}")
    root = query.get("sslrootcert", "")
    if mode == "require" and root:
        mode = "verify-ca"  # as libpq does when it is given a CA
    if mode == "disable":
        return False
    if mode in ("allow", "prefer") and not query.get("sslcert"):
        return None
    if mode in ("verify-ca", "verify-full"):
        context = ssl.create_default_context(cafile=None if root in ("", "system") else root)
        context.check_hostname = mode == "verify-full"
    else:  # encrypted, the server not checked
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if query.get("sslcert"):
        context.load_cert_chain(query["sslcert"], query.get("sslkey") or None)
    return context


def advisory_key(name: str) -> int:
    """A signed 64-bit key for pg_advisory_xact_lock, the same in every process."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big", signed=True)


def postgres_types(script: str) -> str:
    for pattern, replacement in _TYPES:
        script = pattern.sub(replacement, script)
    return script


def statements(script: str, *, postgres: bool) -> list[str]:
    """The statements of a `;`-separated script. A `;` in a quoted string, a
    comment or a PostgreSQL $$ body does not end one, nor on SQLite one in a
    trigger's BEGIN ... END (SQLite's parser says when a statement is complete)."""
    found, current, start = [], "", 0
    ends = [t.end() for t in _LEXEME.finditer(script) if t.group() == ";"]
    for end in [*ends, len(script)]:  # the last statement needs no `;`
        current += script[start:end]
        start = end
        if not _COMMENT.sub("", current).strip(" \t\r\n;"):
            current = ""
        elif postgres or sqlite3.complete_statement(current.rstrip().rstrip(";") + ";"):
            found.append(current.strip().rstrip(";"))
            current = ""
    if current:
        raise ValueError(f"the script ends inside a statement: {current.strip()[:80]!r}")
    return found


# Every component's migrations take this one lock: they are rare, and it also
# covers the CREATE TABLE IF NOT EXISTS below, which two sessions racing can
# fail on PostgreSQL.
MIGRATION_LOCK = advisory_key("aios.schema_migrations")

MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    component TEXT NOT NULL,
    version INTEGER NOT NULL,
    applied_at REAL NOT NULL,
    PRIMARY KEY (component, version)
)"""


def migrate(execute: Execute, component: str, steps: Sequence[str], *, postgres: bool) -> int:
    """Apply the steps of `component` above the version the database holds,
    each in one transaction, and return the version it is at now.

    Step N (1-based) is steps[N-1], a `;`-separated script in SQLite types.
    Shipped steps are never edited; a change is a new step at the end. On
    PostgreSQL every transaction here holds MIGRATION_LOCK, so replicas
    starting together apply each step once; on SQLite, BEGIN IMMEDIATE
    (the file's write lock) does the same for processes sharing a file."""

    def begin() -> None:
        if postgres:
            execute("BEGIN")
            execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        else:
            execute("BEGIN IMMEDIATE")

    def in_transaction(fn: Callable[..., int], *args) -> int:
        begin()
        try:
            result = fn(*args)
        except BaseException:
            execute("ROLLBACK")
            raise
        execute("COMMIT")
        return result

    def applied() -> int:
        row = execute("SELECT MAX(version) FROM schema_migrations WHERE component = ?",
                      (component,)).fetchone()
        return row[0] or 0

    def create() -> int:
        execute(postgres_types(MIGRATIONS_TABLE) if postgres else MIGRATIONS_TABLE)
        return applied()

    def apply(version: int, script: str) -> int:
        current = applied()
        if current >= version:  # another process applied it meanwhile
            return current
        for statement in statements(postgres_types(script) if postgres else script, postgres=postgres):
            execute(statement)
        execute("INSERT INTO schema_migrations(component, version, applied_at) VALUES (?, ?, ?)",
                (component, version, time.time()))
        return version

    version = in_transaction(create)
    for number in range(version + 1, len(steps) + 1):
        version = in_transaction(apply, number, steps[number - 1])
    return version
