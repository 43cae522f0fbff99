"""Access service configuration from AIOS_ACCESS_* variables.

| variable | default | meaning |
|---|---|---|
| AIOS_ACCESS_HOST / _PORT | 127.0.0.1 / 50055 | listener |
| AIOS_ACCESS_DB_PATH | <AIOS_DATA_DIR>/access.sqlite3 | the SQLite store (one replica) |
| AIOS_ACCESS_DATABASE_URL (or _FILE) | none | PostgreSQL instead, which replicas share: postgresql://user:password@host:port/db or postgresql://user@/db?host=/socket/dir; wins over DB_PATH; needs pg8000 (the `postgres` extra) |
| AIOS_ACCESS_ADMIN_TOKEN_FILE | <AIOS_DATA_DIR>/admin.token | written once at first start, mode 0600; a file already there is adopted (with replicas: the same Secret on each) |
| AIOS_ACCESS_ADMIN_NAME | admin | the bootstrap administrator |
| AIOS_ACCESS_CONFIRMATION_TTL | 300 | seconds a confirmation waits when the caller sets no ttl |
| AIOS_ACCESS_CONFIRMATION_MAX_TTL | 86400 | upper bound of a requested ttl |
| AIOS_ACCESS_DB_SYNC_FULL | false | fsync every commit (audit survives power loss; slower) |
| AIOS_ACCESS_METRICS_PORT | -1 (off) | Prometheus metrics over HTTP (0: any free port) |
| AIOS_DATA_DIR | .aios | the data folder |
Service credentials: see services/runtime/trust.py (AIOS_SERVICE_TOKENS_FILE, ...).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from services.access import model
from services.runtime import sql, trust
from services.runtime.config import ConfigError, Env, metrics_port, server_address

DEFAULT_PORT = 50055


@dataclass(frozen=True)
class Config:
    host: str
    port: int
    db_path: Path
    admin_token_file: Path
    admin_name: str = "admin"
    confirmation_ttl: float = 300.0
    max_confirmation_ttl: float = 86400.0
    db_sync_full: bool = False
    # PostgreSQL instead of db_path; it holds a password, so it is not in repr().
    database_url: str = field(default="", repr=False)
    # Service credentials, name -> token (or sha256:<hex>); empty = trust off.
    service_tokens: tuple[tuple[str, str], ...] = ()
    # Prometheus metrics over HTTP; -1 = off, 0 = any free port.
    metrics_port: int = -1

    @classmethod
    def from_env(cls, environ=None) -> "Config":
        env = Env("AIOS_ACCESS_", environ)
        host, port = server_address(env, DEFAULT_PORT)
        data_dir = Path(env.str("AIOS_DATA_DIR", ".aios"))
        admin_name = env.str("ADMIN_NAME", "admin")
        if not model.NAME_RE.match(admin_name):
            raise ConfigError(f"AIOS_ACCESS_ADMIN_NAME={admin_name!r} is not a valid name")
        ttl = env.float("CONFIRMATION_TTL", 300.0, minimum=0.001)
        max_ttl = env.float("CONFIRMATION_MAX_TTL", 86400.0, minimum=0.001)
        if max_ttl < ttl:
            raise ConfigError("AIOS_ACCESS_CONFIRMATION_MAX_TTL is below AIOS_ACCESS_CONFIRMATION_TTL")
        database_url = env.secret("DATABASE_URL", "")
        if database_url and not sql.is_postgres(database_url):
            raise ConfigError("AIOS_ACCESS_DATABASE_URL must be a postgresql:// URL")
        if database_url:
            try:
                sql.check_tls(database_url)
            except ValueError as exc:
                raise ConfigError(f"AIOS_ACCESS_DATABASE_URL: {exc}") from None
        if database_url and importlib.util.find_spec("pg8000") is None:
            raise ConfigError("AIOS_ACCESS_DATABASE_URL needs pg8000: pip install 'aios-kernel[postgres]'")
        return cls(
            host=host,
            port=port,
            db_path=Path(env.str("DB_PATH", str(data_dir / "access.sqlite3"))),
            admin_token_file=Path(env.str("ADMIN_TOKEN_FILE", str(data_dir / "admin.token"))),
            admin_name=admin_name,
            confirmation_ttl=ttl,
            max_confirmation_ttl=max_ttl,
            db_sync_full=env.bool("DB_SYNC_FULL", False),
            database_url=database_url,
            service_tokens=tuple(sorted(trust.load_tokens(environ).items())),
            metrics_port=metrics_port(env),
        )

    @property
    def store_target(self) -> str:
        """Where the store is: the PostgreSQL URL when set, else the SQLite file."""
        return self.database_url or str(self.db_path)
