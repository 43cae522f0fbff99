"""Access service configuration from AIOS_ACCESS_* variables.

| variable | default | meaning |
|---|---|---|
| AIOS_ACCESS_HOST / _PORT | 127.0.0.1 / 50055 | listener |
| AIOS_ACCESS_DB_PATH | <AIOS_DATA_DIR>/access.sqlite3 | the SQLite store |
| AIOS_ACCESS_ADMIN_TOKEN_FILE | <AIOS_DATA_DIR>/admin.token | written once at first start, mode 0600 |
| AIOS_ACCESS_ADMIN_NAME | admin | the bootstrap administrator |
| AIOS_ACCESS_CONFIRMATION_TTL | 300 | seconds a confirmation waits when the caller sets no ttl |
| AIOS_ACCESS_CONFIRMATION_MAX_TTL | 86400 | upper bound of a requested ttl |
| AIOS_ACCESS_DB_SYNC_FULL | false | fsync every commit (audit survives power loss; slower) |
| AIOS_ACCESS_METRICS_PORT | -1 (off) | Prometheus metrics over HTTP (0: any free port) |
| AIOS_DATA_DIR | .aios | the data folder |
Service credentials: see services/runtime/trust.py (AIOS_SERVICE_TOKENS_FILE, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.access import model
from services.runtime import trust
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
        return cls(
            host=host,
            port=port,
            db_path=Path(env.str("DB_PATH", str(data_dir / "access.sqlite3"))),
            admin_token_file=Path(env.str("ADMIN_TOKEN_FILE", str(data_dir / "admin.token"))),
            admin_name=admin_name,
            confirmation_ttl=ttl,
            max_confirmation_ttl=max_ttl,
            db_sync_full=env.bool("DB_SYNC_FULL", False),
            service_tokens=tuple(sorted(trust.load_tokens(environ).items())),
            metrics_port=metrics_port(env),
        )
