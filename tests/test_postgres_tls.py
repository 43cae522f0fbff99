"""The services' PostgreSQL connections over TLS, against a real server
that takes TLS connections only, as managed PostgreSQL services do
(tests/support/postgres_tls.py), with certificates made here."""

from __future__ import annotations

import ssl
import time
from urllib.parse import quote

import pg8000.dbapi
import pytest

from aios.kernel.v1 import syscall_pb2 as ks
from services.runtime.sql import connect_postgres
from services.scheduler.journal import Journal
from services.scheduler.table import Entry
from tests.support.pki import make_ca, make_leaf, write_pem
from tests.support.postgres_tls import TlsPostgres


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(the server's TCP port, the CA file, a CA file the server's certificate is not from)."""
    folder = tmp_path_factory.mktemp("pg-tls")
    ca_key, ca_cert = make_ca("aios test CA")
    ca, _ = write_pem(folder, "ca", ca_key, ca_cert)
    cert, key = write_pem(folder, "server", *make_leaf(ca_key, ca_cert, "postgres"))
    rogue, _ = write_pem(folder, "rogue", *make_ca("someone else's CA"))
    pg = TlsPostgres(folder, cert, key)
    try:
        yield pg.port, ca, rogue
    finally:
        pg.stop()


def url(port: int, host: str = "127.0.0.1", **params) -> str:
    query = "&".join(f"{k}={quote(str(v))}" for k, v in params.items())
    return f"postgresql://postgres@{host}:{port}/postgres" + (f"?{query}" if query else "")


def encrypted(conn) -> bool:
    cursor = conn.cursor()
    cursor.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    return cursor.fetchone()[0]


def test_the_server_refuses_a_plain_connection(server):
    port, _, _ = server
    with pytest.raises(pg8000.dbapi.DatabaseError, match="no encryption"):
        connect_postgres(url(port, sslmode="disable"))


@pytest.mark.parametrize("params", [
    {},  # prefer, as libpq: TLS since the server offers it
    {"sslmode": "require"},
    {"sslmode": "verify-ca", "sslrootcert": "CA"},
    {"sslmode": "verify-full", "sslrootcert": "CA"},
], ids=["prefer", "require", "verify-ca", "verify-full"])
def test_each_sslmode_that_encrypts_gets_an_encrypted_connection(server, params):
    port, ca, _ = server
    params = {k: (ca if v == "CA" else v) for k, v in params.items()}
    conn = connect_postgres(url(port, **params))
    try:
        assert encrypted(conn)
    finally:
        conn.close()


def test_verify_full_refuses_a_server_whose_certificate_another_ca_signed(server):
    port, _, rogue = server
    with pytest.raises(ssl.SSLCertVerificationError):
        connect_postgres(url(port, sslmode="verify-full", sslrootcert=rogue))
    with pytest.raises(ssl.SSLCertVerificationError):  # require given a CA checks it, as libpq does
        connect_postgres(url(port, sslmode="require", sslrootcert=rogue))


def test_verify_full_checks_the_name_and_verify_ca_does_not(server):
    port, ca, _ = server
    # The certificate names localhost and 127.0.0.1, not 127.0.0.2 (also this machine).
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        connect_postgres(url(port, host="127.0.0.2", sslmode="verify-full", sslrootcert=ca))
    conn = connect_postgres(url(port, host="127.0.0.2", sslmode="verify-ca", sslrootcert=ca))
    conn.close()


def test_an_unknown_sslmode_is_refused_with_the_ones_there_are(server):
    port, _, _ = server
    with pytest.raises(ValueError) as exc:
        connect_postgres(url(port, sslmode="verify"))
    assert all(mode in str(exc.value) for mode in ("disable", "allow", "prefer", "require", "verify-ca",
                                                   "verify-full"))


@pytest.mark.parametrize("query, says", [
    ("sslmode=verify", "sslmode='verify'"),
    ("sslmode=verify-full&sslrootcert=/nonexistent/ca.crt", "/nonexistent/ca.crt"),
])
def test_the_kernel_and_access_refuse_tls_settings_they_cannot_use_at_configuration(query, says):
    from services.access.config import Config as AccessConfig
    from services.runtime.config import ConfigError
    from services.scheduler.config import Config as KernelConfig

    target = f"postgresql://aios@db.example:5432/aios?{query}"
    with pytest.raises(ConfigError) as kernel:
        KernelConfig.from_env({"AIOS_KERNEL_JOURNAL": target})
    with pytest.raises(ConfigError) as access:
        AccessConfig.from_env({"AIOS_ACCESS_DATABASE_URL": target})
    assert str(kernel.value).startswith("AIOS_KERNEL_JOURNAL: ") and says in str(kernel.value)
    assert str(access.value).startswith("AIOS_ACCESS_DATABASE_URL: ") and says in str(access.value)


def test_the_kernel_journal_runs_on_a_server_that_takes_tls_only(server):
    port, ca, _ = server
    journal = Journal(url(port, sslmode="verify-full", sslrootcert=ca))
    try:
        assert encrypted(journal.db.conn)
        syscall = ks.Syscall(request_id="r1", tool=ks.ToolCall(name="calculator"))
        entry = Entry(agent="ann", kind="tool", resource="tool", syscall=syscall, request_id="r1",
                      fingerprint=b"r1", deadline=time.monotonic() + 60)
        journal.accepted(entry)
        assert journal.lookup("ann", "r1").entry.id == entry.id
    finally:
        journal.close()
