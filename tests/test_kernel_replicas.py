"""Kernel replicas on one PostgreSQL journal: agents spread by rendezvous
hashing, calls forwarded to the owner, capacity shared, calls of a replica
that is gone taken over (services/scheduler/cluster.py)."""

from __future__ import annotations

import pytest

from aios.kernel.v1 import syscall_pb2 as ks
from aios.sdk import AsyncClient
from services.cli.stack import free_port
from services.local.llm_server import MODEL_ALIAS
from services.runtime.server import start_server
from services.scheduler import cluster
from services.scheduler.journal import Journal
from services.scheduler.table import Entry
from tests.conftest import kernel_config
from tests.support.polling import until
from tests.test_journal import new_database, postgres  # noqa: F401 - postgres: the fixture


def test_an_agent_moves_only_when_its_replica_joins_or_leaves():
    agents = [f"agent-{i}" for i in range(2000)]
    three = {a: cluster.owner(a, ["k1", "k2", "k3"]) for a in agents}
    assert {k: list(three.values()).count(k) for k in ("k1", "k2", "k3")} == pytest.approx(
        {"k1": 667, "k2": 667, "k3": 667}, rel=0.15)
    two = {a: cluster.owner(a, ["k3", "k1"]) for a in agents}  # k2 left; order is irrelevant
    assert all(two[a] == three[a] for a in agents if three[a] != "k2")
    assert {two[a] for a in agents if three[a] == "k2"} == {"k1", "k3"}


def test_the_shares_of_a_capacity_add_up_to_it():
    members = ["k2", "k3", "k1"]
    for total in (1, 2, 3, 4, 7, 32):
        parts = [cluster.share(total, m, members) for m in members]
        assert sum(parts) == max(total, 3)  # fewer slots than replicas: one each
        assert max(parts) - min(parts) <= 1
    assert cluster.share(8, "k9", members) == 8  # not a member (yet): the whole


@pytest.fixture
def journal_url(postgres):  # noqa: F811
    return new_database(postgres, "replicas")


@pytest.fixture
async def replicas(llm_core_addr, journal_url):
    """replicas(n) -> ["127.0.0.1:port", ...]: kernel replicas on one journal
    (lease 1 s), each serving by the time it is returned; stopped at the end."""
    servers = []

    async def start(*ids: str, **env) -> list[str]:
        from services.scheduler.app import build

        addresses = []
        for rid in ids:
            port = free_port()  # advertised before the server binds it
            config = kernel_config(llm_core_addr, JOURNAL=journal_url, REPLICA_ID=rid,
                                   ADVERTISE_ADDRESS=f"127.0.0.1:{port}", LEASE_SECONDS=1, **env)
            servers.append(await start_server(await build(config), "127.0.0.1", port))
            addresses.append(f"127.0.0.1:{port}")
        return addresses

    start.servers = servers

    yield start
    for server in reversed(servers):
        await server.stop(grace=1)


async def seen(address: str, count: int) -> None:
    """Until the replica at `address` counts `count` live replicas."""
    async with AsyncClient(address) as admin:
        async def ok():
            return len((await admin.get_status()).replicas) == count
        await until(ok, timeout=15)


def calculator(expression: str, request_id: str) -> ks.Syscall:
    syscall = ks.Syscall(request_id=request_id, tool=ks.ToolCall(name="calculator"))
    syscall.tool.arguments.update({"expression": expression})
    return syscall


def agent_of(replica: str, members: list[str], n: int = 0) -> str:
    """The n-th agent name that `replica` owns among `members`."""
    names = (f"agent-{i}" for i in range(10_000))
    return [a for a in names if cluster.owner(a, members) == replica][:n + 1][n]


async def ids_on(address: str) -> set[str]:
    async with AsyncClient(address) as admin:  # development mode: no token is an admin
        return {r.id for r in (await admin.list_syscalls(page_size=1000)).syscalls}


async def test_a_call_to_another_replica_runs_on_the_agents_owner(replicas):
    a1, a2 = await replicas("k1", "k2")
    await seen(a1, 2)
    await seen(a2, 2)
    agent = agent_of("k2", ["k1", "k2"])
    async with AsyncClient(a1, token=agent) as c:
        first = await c.submit(calculator("6 * 7", "once"))
        assert first.tool.output == "42"
        # Unary calls about it, asked of the replica that does not hold it.
        assert (await c.get_syscall(first.id)).id == first.id
        assert first.id in {r.id for r in (await c.list_syscalls(agent=agent)).syscalls}
        streamed = [e async for e in c.stream(calculator("1 + 1", "streamed"))]
    assert streamed[-1].finished.tool.output == "2"
    assert {first.id, streamed[-1].syscall_id} <= await ids_on(a2)
    assert not await ids_on(a1) & {first.id, streamed[-1].syscall_id}
    # A retry through either replica is the first call, run once.
    async with AsyncClient(a2, token=agent) as c:
        assert (await c.submit(calculator("6 * 7", "once"))).id == first.id


async def test_the_openai_door_of_any_replica_serves_every_agent(replicas):
    import openai

    a1, a2 = await replicas("k1", "k2", http_port=0)
    await seen(a1, 2)
    await seen(a2, 2)
    door = f"http://127.0.0.1:{replicas.servers[0].service.http_port}/v1"  # k1's
    agent = agent_of("k2", ["k1", "k2"])
    client = openai.AsyncOpenAI(base_url=door, api_key=agent, max_retries=0)
    try:
        reply = await client.chat.completions.create(
            model=MODEL_ALIAS, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4)
        chunks = [c async for c in await client.chat.completions.create(
            model=MODEL_ALIAS, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4, stream=True)]
    finally:
        await client.close()
    assert reply.choices[0].message.content
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    async with AsyncClient(a2) as admin:
        on_owner = [r for r in (await admin.list_syscalls(agent=agent)).syscalls]
    assert len(on_owner) == 2 and not await ids_on(a1)


async def test_each_replica_holds_a_share_of_a_models_slots(replicas):
    async def llm_capacity(address: str) -> int:
        async with AsyncClient(address, token=agent_of(address_ids[address], sorted(address_ids.values()))) as c:
            await c.llm.chat("Say hi.", model=MODEL_ALIAS, max_tokens=1)  # the model's queue exists from here
            status = await c.get_status()
        return {q.resource: q.capacity for q in status.queues}[f"llm:{MODEL_ALIAS}"]

    a1, a2 = await replicas("k1", "k2")
    address_ids = {a1: "k1", a2: "k2"}
    await seen(a1, 2)
    await seen(a2, 2)
    # The local endpoint runs 4 calls at once (tests/conftest.py): 2 each.
    assert [await llm_capacity(a1), await llm_capacity(a2)] == [2, 2]
    (a3,) = await replicas("k3")
    address_ids[a3] = "k3"
    await seen(a1, 3)

    async def split() -> bool:
        return sorted([await llm_capacity(a) for a in (a1, a2, a3)]) == [1, 1, 2]
    await until(split, timeout=15)


async def test_the_calls_of_a_replica_that_is_gone_are_taken_over_once(replicas, journal_url):
    # What replica k9 accepted before it died: a call no one finished.
    dead = Journal(journal_url, kernel_id="k9")
    syscall = calculator("2 ** 10", "left-behind")
    entry = Entry(agent="orphan", kind="tool", resource="tool", syscall=syscall, request_id="left-behind")
    dead.accepted(entry)
    dead.close()

    (a1,) = await replicas("k1")
    async with AsyncClient(a1, token="orphan") as c:
        # k1 took it over at start (k9 holds no lease) and ran it; the retry
        # gets that run, under the id k9 gave it.
        record = await c.submit(calculator("2 ** 10", "left-behind"))
    assert record.id == entry.id
    assert record.tool.output == "1024"
    check = Journal(journal_url)
    try:
        assert check.unfinished() == []
        assert check.holders() == set()
    finally:
        check.close()


async def test_a_retry_of_a_call_a_dead_replica_accepted_while_this_one_ran_joins_it(replicas, journal_url):
    (a1,) = await replicas("k1")
    # Accepted by k9 after k1 started (its sweep or the retry, whichever is first, claims it).
    dead = Journal(journal_url, kernel_id="k9")
    syscall = calculator("3 * 3", "race")
    entry = Entry(agent="orphan", kind="tool", resource="tool", syscall=syscall, request_id="race")
    dead.accepted(entry)
    dead.close()
    async with AsyncClient(a1, token="orphan") as c:
        record = await c.submit(calculator("3 * 3", "race"))
    assert record.id == entry.id
    assert record.tool.output == "9"


async def test_a_forwarded_call_outlives_the_replica_that_forwarded_it(replicas):
    import grpc

    from aios.kernel.v1 import kernel_service_pb2 as kpb
    from aios.kernel.v1 import kernel_service_pb2_grpc as kpb_grpc

    (a1,) = await replicas("k1")
    async with AsyncClient(a1, token="far") as c:
        syscall = c.llm.syscall("Count from one to forty in words.", model=MODEL_ALIAS, max_tokens=48,
                                request_id="outlives")
        # A forwarder's stream, cut while the call runs (as when that replica is killed).
        async with grpc.aio.insecure_channel(a1) as ch:
            stream = kpb_grpc.KernelServiceStub(ch).SubmitStream(
                kpb.SubmitRequest(syscall=syscall),
                metadata=[("x-aios-forwarded-by", "k9"), ("authorization", "Bearer far")])
            async for event in stream:
                if event.WhichOneof("event") == "delta":
                    break
            stream.cancel()
        # The agent's retry, through another way in, gets the call's result.
        record = await c.submit(syscall)
    assert record.id == event.syscall_id
    assert record.state == ks.SYSCALL_STATE_SUCCEEDED and record.llm.text
