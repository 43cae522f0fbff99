"""The memory service against the real embedded Qdrant and llm_core's real
embeddings (all-MiniLM-L6-v2), in-process on port 0; and memory syscalls
through the kernel with the SDK and the CLI."""

from __future__ import annotations

import asyncio
import socket
import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2

from aios.memory.v1 import memory_service_pb2 as pb
from aios.memory.v1 import memory_service_pb2_grpc as pb_grpc
from aios.sdk import AsyncClient, NotFoundError, PermissionDeniedError
from services.memory.app import build
from services.memory.config import Config
from services.runtime import errors
from services.runtime.status import from_rpc_error
from tests.conftest import kernel_config

WORKING, LONG_TERM = pb.MEMORY_TIER_WORKING, pb.MEMORY_TIER_LONG_TERM

FACTS = {
    "budget": "The quarterly budget meeting moved to Thursday at 3pm",
    "birthday": "My sister's birthday is on the 14th of June",
    "wifi": "The wifi password for the office is printed under the router",
    "garden": "Remember to water the tomato plants every morning",
    "car": "The car needs an oil change before the road trip",
}


def new_owner() -> str:
    return f"agent-{uuid.uuid4().hex[:8]}"


class Mem:
    """A MemoryService stub with shorthands; every call has a deadline."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = pb_grpc.MemoryServiceStub(self.channel)

    async def add(self, owner, content, *, tags=(), metadata=None, tenant=""):
        resp = await self.stub.AddMemory(pb.AddMemoryRequest(
            owner=owner, tenant=tenant,
            memory=pb.MemoryInput(content=content, tags=list(tags), metadata=metadata or {})), timeout=30)
        return resp.memory

    async def get(self, owner, id, tenant=""):
        return (await self.stub.GetMemory(pb.GetMemoryRequest(owner=owner, tenant=tenant, id=id),
                                          timeout=30)).memory

    async def search(self, owner, query, k=5, filter="", threshold=None, tenant=""):
        req = pb.SearchMemoriesRequest(owner=owner, tenant=tenant, query=query, top_k=k, filter=filter)
        if threshold is not None:
            req.score_threshold = threshold
        return list((await self.stub.SearchMemories(req, timeout=30)).results)

    async def list(self, owner, filter="", tier=0, page_size=0, page_token="", tenant=""):
        return await self.stub.ListMemories(pb.ListMemoriesRequest(
            owner=owner, tenant=tenant, filter=filter, tier=tier, page_size=page_size,
            page_token=page_token), timeout=30)

    async def list_all(self, owner, filter="", tier=0, page_size=100, tenant=""):
        out, token = [], ""
        while True:
            page = await self.list(owner, filter, tier, page_size, token, tenant)
            out.extend(page.memories)
            token = page.next_page_token
            if not token:
                return out

    async def contents(self, owner, **kwargs) -> set[str]:
        return {m.content for m in await self.list_all(owner, **kwargs)}

    async def close(self):
        await self.channel.close()


async def failure(coro) -> errors.AiosError:
    """The domain error behind a failed call (code, reason, field)."""
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await coro
    return from_rpc_error(exc.value)


@pytest.fixture(scope="module")
async def start_memory(start_service, llm_core_addr, tmp_path_factory):
    """start_memory(path=None, **env) -> (RunningServer, Mem); env names are
    AIOS_MEMORY_<NAME> settings or full variable names."""
    clients = []

    async def start(path=None, **env):
        values = {
            "AIOS_LLM_ADDR": llm_core_addr,
            "AIOS_MEMORY_QDRANT_PATH": str(path or tmp_path_factory.mktemp("memory-qdrant")),
            **{(k if k.startswith("AIOS_") else f"AIOS_MEMORY_{k.upper()}"): str(v) for k, v in env.items()},
        }
        server = await start_service(build, Config.from_env(values))
        mem = Mem(f"127.0.0.1:{server.port}")
        clients.append(mem)
        return server, mem

    yield start
    for mem in clients:
        await mem.close()


@pytest.fixture(scope="module")
async def mem(start_memory):
    _, client = await start_memory(max_content_bytes=2048, max_batch=16)
    return client


# --- semantic search ---------------------------------------------------------------

async def test_search_finds_the_closest_meaning_first(mem):
    owner = new_owner()
    ids = {key: (await mem.add(owner, text)).id for key, text in FACTS.items()}
    for query, key in [("vehicle maintenance", "car"), ("gardening chores", "garden"),
                       ("how do I get online at work", "wifi"), ("family celebration date", "birthday"),
                       ("when is the finance discussion", "budget")]:
        results = await mem.search(owner, query, k=3)
        assert results[0].memory.id == ids[key], (query, [r.memory.content for r in results])
        assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    # Appearing in results is an access.
    top = (await mem.search(owner, "vehicle maintenance", k=1))[0].memory
    assert top.access_count >= 3 and top.tier == WORKING
    assert top.last_access_time.ToNanoseconds() > top.create_time.ToNanoseconds()


async def test_added_record_is_returned_whole(mem):
    owner = new_owner()
    rec = await mem.add(owner, "Alice likes green tea", tags=["people", "drinks"], metadata={"source": "chat"})
    assert uuid.UUID(rec.id) and rec.owner == owner and rec.tier == WORKING
    assert list(rec.tags) == ["people", "drinks"] and dict(rec.metadata) == {"source": "chat"}
    assert rec.access_count == 1 and rec.create_time.seconds > 0
    got = await mem.get(owner, rec.id)
    assert got.content == rec.content and got.access_count == 2
    assert got.create_time == rec.create_time


# --- filters and paging ---------------------------------------------------------------

async def test_filters_on_tags_and_metadata(mem):
    owner = new_owner()
    specs = [("Standup notes: ship the parser", ["work"], {"kind": "note"}),
             ("Dentist appointment next Tuesday", ["personal"], {"kind": "event"}),
             ("Quarterly planning: hire two engineers", ["work", "plan"], {"kind": "note"}),
             ("Buy oat milk and bread at the grocery store", ["personal"], {"kind": "todo"}),
             ("Code review for the scheduler", ["work"], {"kind": "todo", "team": "kernel core"})]
    for content, tags, meta in specs:
        await mem.add(owner, content, tags=tags, metadata=meta)
    by = {c: (t, m) for c, t, m in specs}

    def expect(pred):
        return {c for c, (t, m) in by.items() if pred(t, m)}

    assert await mem.contents(owner, filter="tag:work") == expect(lambda t, m: "work" in t)
    assert await mem.contents(owner, filter='metadata.kind="todo"') == expect(lambda t, m: m["kind"] == "todo")
    assert await mem.contents(owner, filter='tag:work AND metadata.kind=note') == \
        expect(lambda t, m: "work" in t and m["kind"] == "note")
    assert await mem.contents(owner, filter='metadata.team="kernel core"') == \
        {"Code review for the scheduler"}
    assert await mem.contents(owner, filter="tag:nothing") == set()

    results = await mem.search(owner, "groceries to buy", k=5, filter="tag:work")
    assert results and all("work" in r.memory.tags for r in results)
    results = await mem.search(owner, "groceries to buy", k=5, filter="tag:personal")
    assert results[0].memory.content.startswith("Buy oat milk")
    # A threshold drops the weak matches but keeps the strong one.
    everything = await mem.search(owner, "groceries to buy", k=5)
    assert len(everything) == 5
    strong = await mem.search(owner, "groceries to buy", k=5, threshold=everything[0].score - 0.01)
    assert [r.memory.id for r in strong] == [everything[0].memory.id]


async def test_paging_returns_every_record_once(mem):
    owner = new_owner()
    resp = await mem.stub.BatchAddMemories(pb.BatchAddMemoriesRequest(
        owner=owner, memories=[pb.MemoryInput(content=f"note number {i}", tags=["even" if i % 2 == 0 else "odd"])
                               for i in range(11)]), timeout=30)
    added = {m.id for m in resp.memories}
    assert len(added) == 11
    seen, token, pages = [], "", 0
    while True:
        page = await mem.list(owner, page_size=3, page_token=token)
        assert len(page.memories) <= 3
        seen += [m.id for m in page.memories]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 4 and len(seen) == 11 and set(seen) == added
    evens = await mem.list_all(owner, filter="tag:even", page_size=2)
    assert {m.content for m in evens} == {f"note number {i}" for i in range(0, 11, 2)}

    first = await mem.list(owner, page_size=3)
    err = await failure(mem.list(owner, page_size=3, page_token=first.next_page_token, filter="tag:odd"))
    assert err.code == "INVALID_ARGUMENT" and err.field == "page_token"
    err = await failure(mem.list(owner, page_token="not-a-token"))
    assert err.code == "INVALID_ARGUMENT" and err.field == "page_token"


# --- update and delete -------------------------------------------------------------------

async def test_update_re_embeds_the_content(mem):
    owner = new_owner()
    rec = await mem.add(owner, "The meeting with Alice is on Monday morning", tags=["calendar"])
    other = await mem.add(owner, "Alice likes green tea")
    resp = await mem.stub.UpdateMemory(pb.UpdateMemoryRequest(
        owner=owner, id=rec.id, update_mask=field_mask_pb2.FieldMask(paths=["content"]),
        memory=pb.MemoryInput(content="Buy oat milk and bread at the grocery store")), timeout=30)
    updated = resp.memory
    assert updated.content.startswith("Buy oat milk") and list(updated.tags) == ["calendar"]
    assert updated.update_time.ToNanoseconds() > rec.update_time.ToNanoseconds()
    assert updated.create_time == rec.create_time

    assert (await mem.search(owner, "shopping list", k=1))[0].memory.id == rec.id
    top = await mem.search(owner, "when do I see Alice", k=2)
    assert top[0].memory.id == other.id
    assert top[1].score < 0.3  # the old meaning is gone from the vector

    # Tags only: content and vector stay.
    resp = await mem.stub.UpdateMemory(pb.UpdateMemoryRequest(
        owner=owner, id=rec.id, update_mask=field_mask_pb2.FieldMask(paths=["tags"]),
        memory=pb.MemoryInput(tags=["errands"])), timeout=30)
    assert list(resp.memory.tags) == ["errands"] and resp.memory.content == updated.content
    assert (await mem.search(owner, "shopping list", k=1, filter="tag:errands"))[0].memory.id == rec.id
    # An empty mask updates what is given.
    resp = await mem.stub.UpdateMemory(pb.UpdateMemoryRequest(
        owner=owner, id=rec.id, memory=pb.MemoryInput(metadata={"store": "corner shop"})), timeout=30)
    assert dict(resp.memory.metadata) == {"store": "corner shop"} and list(resp.memory.tags) == ["errands"]

    err = await failure(mem.stub.UpdateMemory(pb.UpdateMemoryRequest(
        owner=owner, id=rec.id, update_mask=field_mask_pb2.FieldMask(paths=["owner"]),
        memory=pb.MemoryInput(content="x")), timeout=30))
    assert err.code == "INVALID_ARGUMENT" and err.field == "update_mask"
    err = await failure(mem.stub.UpdateMemory(pb.UpdateMemoryRequest(
        owner=owner, id=rec.id, update_mask=field_mask_pb2.FieldMask(paths=["content"]),
        memory=pb.MemoryInput(content="")), timeout=30))
    assert err.code == "INVALID_ARGUMENT" and err.field == "memory.content"
    assert (await mem.get(owner, rec.id)).content == updated.content


async def test_delete_removes_from_search(mem):
    owner = new_owner()
    car = await mem.add(owner, FACTS["car"])
    await mem.add(owner, FACTS["garden"])
    assert (await mem.search(owner, "vehicle maintenance", k=1))[0].memory.id == car.id
    await mem.stub.DeleteMemory(pb.DeleteMemoryRequest(owner=owner, id=car.id), timeout=30)
    assert car.id not in {r.memory.id for r in await mem.search(owner, "vehicle maintenance", k=5)}
    assert car.id not in {m.id for m in await mem.list_all(owner)}
    assert (await failure(mem.get(owner, car.id))).code == "NOT_FOUND"
    err = await failure(mem.stub.DeleteMemory(pb.DeleteMemoryRequest(owner=owner, id=car.id), timeout=30))
    assert err.code == "NOT_FOUND" and err.reason == "MEMORY_NOT_FOUND"


# --- isolation ------------------------------------------------------------------------

async def test_agents_never_see_each_others_records(mem):
    a, b = new_owner(), new_owner()
    text = "The launch code hint is the name of my first cat"
    rec_a = await mem.add(a, text, tags=["secret"])
    rec_b = await mem.add(b, text, tags=["secret"])
    for owner, mine, theirs in ((a, rec_a, rec_b), (b, rec_b, rec_a)):
        hits = await mem.search(owner, "what is the launch code hint", k=10)
        assert [h.memory.id for h in hits] == [mine.id]
        assert [m.id for m in await mem.list_all(owner, filter="tag:secret")] == [mine.id]
        assert (await failure(mem.get(owner, theirs.id))).code == "NOT_FOUND"
        err = await failure(mem.stub.DeleteMemory(pb.DeleteMemoryRequest(owner=owner, id=theirs.id), timeout=30))
        assert err.code == "NOT_FOUND"
        err = await failure(mem.stub.UpdateMemory(pb.UpdateMemoryRequest(
            owner=owner, id=theirs.id, memory=pb.MemoryInput(content="overwritten")), timeout=30))
        assert err.code == "NOT_FOUND"
    assert (await mem.get(a, rec_a.id)).content == text and (await mem.get(b, rec_b.id)).content == text
    # Tenants split one owner's memory too.
    t1 = await mem.add(a, text, tenant="acme")
    assert [h.memory.id for h in await mem.search(a, "launch code hint", tenant="acme")] == [t1.id]
    assert [h.memory.id for h in await mem.search(a, "launch code hint")] == [rec_a.id]
    assert (await failure(mem.get(a, t1.id))).code == "NOT_FOUND"


# --- bad input ----------------------------------------------------------------------------

async def test_bad_input_gets_clear_statuses_and_stores_nothing(mem):
    owner = new_owner()
    for content in ("", "   \n"):
        err = await failure(mem.add(owner, content))
        assert (err.code, err.field, err.reason) == ("INVALID_ARGUMENT", "memory.content", "EMPTY_CONTENT")
    err = await failure(mem.add(owner, "x" * 2049))
    assert (err.code, err.field, err.reason) == ("INVALID_ARGUMENT", "memory.content", "CONTENT_TOO_LARGE")
    assert (await mem.add(owner, "é" * 1024)).content  # 2048 bytes: at the limit
    err = await failure(mem.add(owner, "fine", tags=[""]))
    assert err.code == "INVALID_ARGUMENT" and err.field == "memory.tags"
    err = await failure(mem.add("", "no owner"))
    assert err.code == "INVALID_ARGUMENT" and err.field == "owner"

    # A batch is all or nothing.
    before = await mem.contents(owner)
    err = await failure(mem.stub.BatchAddMemories(pb.BatchAddMemoriesRequest(
        owner=owner, memories=[pb.MemoryInput(content="good one"), pb.MemoryInput(content=""),
                               pb.MemoryInput(content="good two")]), timeout=30))
    assert (err.code, err.field) == ("INVALID_ARGUMENT", "memories[1].content")
    err = await failure(mem.stub.BatchAddMemories(pb.BatchAddMemoriesRequest(
        owner=owner, memories=[pb.MemoryInput(content=f"m{i}") for i in range(17)]), timeout=30))
    assert (err.code, err.field, err.reason) == ("INVALID_ARGUMENT", "memories", "BATCH_TOO_LARGE")
    err = await failure(mem.stub.BatchAddMemories(pb.BatchAddMemoriesRequest(owner=owner), timeout=30))
    assert (err.code, err.field) == ("INVALID_ARGUMENT", "memories")
    assert await mem.contents(owner) == before

    err = await failure(mem.get(owner, str(uuid.uuid4())))
    assert (err.code, err.reason) == ("NOT_FOUND", "MEMORY_NOT_FOUND")
    err = await failure(mem.get(owner, "not-an-id"))
    assert (err.code, err.field) == ("INVALID_ARGUMENT", "id")
    for bad in ("tag:a OR tag:b", "kind=note", "tag:a AND"):
        err = await failure(mem.list(owner, filter=bad))
        assert (err.code, err.field, err.reason) == ("INVALID_ARGUMENT", "filter", "BAD_FILTER")
        err = await failure(mem.search(owner, "anything", filter=bad))
        assert (err.code, err.field) == ("INVALID_ARGUMENT", "filter")
    err = await failure(mem.search(owner, ""))
    assert (err.code, err.field) == ("INVALID_ARGUMENT", "query")
    err = await failure(mem.search(owner, "anything", k=1000))
    assert (err.code, err.field) == ("INVALID_ARGUMENT", "top_k")


async def test_embedding_service_down_is_unavailable_and_stores_nothing(start_memory):
    # A port nobody listens on: bound but not listening for the whole test, so
    # no other process can start listening there while it runs.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
        _, mem = await start_memory(AIOS_LLM_ADDR=dead, embed_timeout=5)
        owner = new_owner()
        err = await failure(mem.add(owner, "this cannot be embedded"))
        assert (err.code, err.reason) == ("UNAVAILABLE", "EMBEDDINGS_UNAVAILABLE")
        assert await mem.list_all(owner) == []


async def test_only_the_kernel_may_call_when_service_trust_is_on(start_memory):
    from services.runtime import trust

    kernel, storage = trust.new_token(), trust.new_token()
    _, mem = await start_memory(AIOS_SERVICE_TOKEN_SCHEDULER=kernel, AIOS_SERVICE_TOKEN_STORAGE=storage,
                                AIOS_SERVICE_TOKEN_MEMORY=trust.new_token())
    owner = new_owner()
    request = pb.AddMemoryRequest(owner=owner, memory=pb.MemoryInput(content="only through the kernel"))
    err = await failure(mem.stub.AddMemory(request, timeout=30))
    assert (err.code, err.reason) == ("UNAUTHENTICATED", "MISSING_SERVICE_CREDENTIAL")
    err = await failure(mem.stub.AddMemory(request, timeout=30, metadata=[("authorization", f"Bearer {storage}")]))
    assert (err.code, err.reason) == ("PERMISSION_DENIED", "CALLER_NOT_ALLOWED")
    resp = await mem.stub.AddMemory(request, timeout=30, metadata=[("authorization", f"Bearer {kernel}")])
    assert resp.memory.owner == owner


# --- persistence ---------------------------------------------------------------------------

async def test_restart_on_the_same_folder_keeps_everything(start_memory, tmp_path):
    path = tmp_path / "qdrant"
    first, mem = await start_memory(path, working_limit=3, lru_k=2)
    owner = new_owner()
    ids = {}
    for key in ("budget", "birthday", "garden", "wifi", "car"):
        ids[key] = (await mem.add(owner, FACTS[key], tags=[key])).id
        if key == "garden":
            await mem.get(owner, ids["garden"])  # used twice, before wifi and car were added
    before = {m.id: m for m in await mem.list_all(owner)}
    assert {m.id for m in before.values() if m.tier == WORKING} == {ids["garden"], ids["wifi"], ids["car"]}

    # One process owns an embedded Qdrant folder.
    with pytest.raises(errors.FailedPrecondition):
        await start_memory(path)

    await first.stop(grace=1)
    _, mem = await start_memory(path, working_limit=3, lru_k=2)
    after = {m.id: m for m in await mem.list_all(owner)}
    assert after == before
    assert (await mem.search(owner, "vehicle maintenance", k=1))[0].memory.id == ids["car"]
    # The access history came back too: the next eviction spares garden
    # (2 accesses, the last before wifi was added; plain LRU would drop it)
    # and takes wifi, the oldest record used only once.
    await mem.add(owner, "A sixth thing to remember")
    working = {m.id for m in await mem.list_all(owner, tier=WORKING)}
    assert ids["garden"] in working and ids["car"] in working and ids["wifi"] not in working


# --- working memory ------------------------------------------------------------------------

async def test_eviction_keeps_all_records_and_the_recent_and_frequent_working(start_memory):
    n = 4
    _, mem = await start_memory(working_limit=n, lru_k=2)
    owner = new_owner()
    recs = [await mem.add(owner, f"Memory number {i}: the {word} is on the table")
            for i, word in enumerate("apple pear plum fig kiwi lime lemon mango peach cherry grape melon".split())]
    assert len(recs) == 3 * n

    async def tiers():
        working = {m.id for m in await mem.list_all(owner, tier=WORKING)}
        long_term = {m.id for m in await mem.list_all(owner, tier=LONG_TERM)}
        return working, long_term

    working, long_term = await tiers()
    assert working == {r.id for r in recs[-n:]}  # the most recent
    assert long_term == {r.id for r in recs[:-n]} and len(working | long_term) == 3 * n

    # Used again, old records come back; the once-used recent ones give way.
    assert (await mem.get(owner, recs[0].id)).tier == WORKING
    assert (await mem.get(owner, recs[1].id)).tier == WORKING
    assert (await tiers())[0] == {recs[0].id, recs[1].id, recs[10].id, recs[11].id}
    # New records push out records used once, even recent ones, not the ones
    # used twice (plain LRU would end with the four new records).
    new = [await mem.add(owner, f"Fresh memory {i} about the weather") for i in range(4)]
    assert (await tiers())[0] == {recs[0].id, recs[1].id, new[2].id, new[3].id}

    # Appearing in search results is an access too.
    hit = (await mem.search(owner, "Where is the plum?", k=1))[0].memory
    assert hit.id == recs[2].id and hit.tier == WORKING
    working, long_term = await tiers()
    assert len(working) == n and recs[2].id in working

    # Nothing is lost: every record reads back, whatever its tier.
    everything = await mem.list_all(owner)
    assert len(everything) == 3 * n + 4
    for rec in recs + new:
        assert (await mem.get(owner, rec.id)).content == rec.content
    assert len((await tiers())[0]) == n


async def test_a_batch_larger_than_the_working_set(start_memory):
    _, mem = await start_memory(working_limit=4, lru_k=2)
    owner = new_owner()
    resp = await mem.stub.BatchAddMemories(pb.BatchAddMemoriesRequest(
        owner=owner, memories=[pb.MemoryInput(content=f"batch item {i}") for i in range(6)]), timeout=30)
    tiers = [m.tier for m in resp.memories]
    assert tiers == [LONG_TERM] * 2 + [WORKING] * 4
    assert {m.id for m in await mem.list_all(owner, tier=WORKING)} == {m.id for m in resp.memories[2:]}


# --- through the kernel ---------------------------------------------------------------------

@pytest.fixture(scope="module")
async def kernel_with_memory(start_service, start_memory, llm_core_addr):
    from services.scheduler.app import build as kernel_build

    _, mem = await start_memory()
    server = await start_service(kernel_build, kernel_config(llm_core_addr, AIOS_MEMORY_ADDR=mem.address))
    return f"127.0.0.1:{server.port}"


async def test_memory_syscalls_through_the_kernel(kernel_with_memory):
    async with AsyncClient(kernel_with_memory, token="agent-a", timeout=60) as a, \
            AsyncClient(kernel_with_memory, token="agent-b", timeout=60) as b:
        rec = await a.memory.add(FACTS["wifi"], tags=["office"], metadata={"room": "2.14"})
        assert rec.owner == "agent-a" and rec.tier == WORKING
        batch = await a.memory.batch_add([FACTS["car"], {"content": FACTS["garden"], "tags": ["home"]}])
        assert [m.content for m in batch] == [FACTS["car"], FACTS["garden"]]
        hits = await a.memory.search("how do I get online at work", k=2)
        assert hits[0].memory.id == rec.id
        assert (await a.memory.get(rec.id)).access_count >= 3
        page = await a.memory.list(filter="tag:home")
        assert [m.content for m in page.memories] == [FACTS["garden"]]
        updated = await a.memory.update(rec.id, tags=["office", "network"])
        assert list(updated.tags) == ["office", "network"] and updated.content == FACTS["wifi"]

        # Another agent sees none of it, and may not name a's memory.
        assert await b.memory.search("how do I get online at work") == []
        with pytest.raises(NotFoundError):
            await b.memory.get(rec.id)
        with pytest.raises(PermissionDeniedError):
            await b.memory.get(rec.id, owner="agent-a")

        await a.memory.delete(rec.id)
        with pytest.raises(NotFoundError):
            await a.memory.get(rec.id)


async def test_cli_memory_commands(kernel_with_memory, capsys):
    from services.cli.main import main

    def aios(*argv) -> tuple[int, str, str]:
        code = main(["memory", *argv, "--kernel", kernel_with_memory, "--token", "cli-agent", "--timeout", "60"])
        out = capsys.readouterr()
        return code, out.out, out.err

    # The CLI's client is synchronous: run it off the event loop the servers share.
    code, out, _ = await asyncio.to_thread(aios, "add", FACTS["birthday"], "--tag", "family", "--tag", "dates")
    assert code == 0
    rec_id = out.strip()
    assert uuid.UUID(rec_id)
    code, out, _ = await asyncio.to_thread(aios, "add", FACTS["budget"], "--meta", "kind=meeting")
    assert code == 0
    code, out, _ = await asyncio.to_thread(aios, "search", "family celebration date", "-k", "1")
    header, *rows = out.strip().splitlines()
    assert code == 0 and header.split() == ["SCORE", "ID", "CONTENT"]
    assert len(rows) == 1 and rec_id in rows[0] and "birthday" in rows[0]
    code, out, _ = await asyncio.to_thread(aios, "ls")
    header, *rows = out.strip().splitlines()
    assert code == 0 and header.split() == ["ID", "TIER", "TAGS", "CONTENT"]
    assert len(rows) == 2 and rec_id in out and "family,dates" in out
    code, out, _ = await asyncio.to_thread(aios, "ls", "--filter", 'metadata.kind="meeting"')
    assert code == 0 and "budget" in out and rec_id not in out
    code, out, err = await asyncio.to_thread(aios, "ls", "--agent", "someone-else")
    assert code == 1 and "PERMISSION_DENIED" in err
    code, out, _ = await asyncio.to_thread(aios, "rm", rec_id)
    assert code == 0 and rec_id in out
    code, out, err = await asyncio.to_thread(aios, "rm", rec_id)
    assert code == 1 and "NOT_FOUND" in err
    code, out, err = await asyncio.to_thread(aios, "ls", "--filter", "tag:a OR tag:b")
    assert code == 1 and "INVALID_ARGUMENT" in err
