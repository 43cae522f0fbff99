"""CountMemories against the real embedded Qdrant: the exact number of an
agent's records in both tiers, confined to one (owner, tenant) namespace."""

from __future__ import annotations

from aios.memory.v1 import memory_service_pb2 as pb
from services.runtime import trust
from tests.test_memory import LONG_TERM, WORKING, failure, mem, new_owner, start_memory  # noqa: F401


async def count(mem, owner, tenant="", **kwargs) -> int:
    resp = await mem.stub.CountMemories(pb.CountMemoriesRequest(owner=owner, tenant=tenant),
                                        timeout=30, **kwargs)
    return resp.count


async def test_count_follows_adds_batch_adds_and_deletes(mem):
    owner = new_owner()
    assert await count(mem, owner) == 0
    first = await mem.add(owner, "The spare key is in the blue flowerpot")
    await mem.add(owner, "The dentist appointment is next Tuesday")
    assert await count(mem, owner) == 2
    batch = await mem.stub.BatchAddMemories(pb.BatchAddMemoriesRequest(
        owner=owner, memories=[pb.MemoryInput(content=f"batch note {i}") for i in range(5)]), timeout=30)
    assert len(batch.memories) == 5 and await count(mem, owner) == 7
    await mem.stub.DeleteMemory(pb.DeleteMemoryRequest(owner=owner, id=first.id), timeout=30)
    # A keyed delete writes the namespace's remembered-keys point; it is not a record.
    await mem.stub.DeleteMemory(pb.DeleteMemoryRequest(
        owner=owner, id=batch.memories[0].id, request_id="del-1"), timeout=30)
    assert await count(mem, owner) == 5 == len(await mem.list_all(owner))


async def test_count_includes_both_tiers(start_memory):
    _, small = await start_memory(working_limit=2, lru_k=2)
    owner = new_owner()
    for i in range(5):
        await small.add(owner, f"Fact number {i} about the {['moon', 'sea', 'forest', 'desert', 'city'][i]}")
    working = await small.list_all(owner, tier=WORKING)
    long_term = await small.list_all(owner, tier=LONG_TERM)
    assert (len(working), len(long_term)) == (2, 3)
    assert await count(small, owner) == 5


async def test_count_is_per_owner_and_tenant(mem):
    a, b = new_owner(), new_owner()
    for i in range(3):
        await mem.add(a, f"a's note {i}")
    await mem.add(b, "b's only note")
    for i in range(2):
        await mem.add(a, f"a's acme note {i}", tenant="acme")
    assert await count(mem, a) == 3
    assert await count(mem, a, tenant="acme") == 2
    assert await count(mem, a, tenant="globex") == 0
    assert await count(mem, b) == 1
    assert await count(mem, b, tenant="acme") == 0


async def test_count_without_owner_is_invalid_argument(mem):
    err = await failure(count(mem, ""))
    assert (err.code, err.field) == ("INVALID_ARGUMENT", "owner")
    err = await failure(count(mem, "", tenant="acme"))
    assert (err.code, err.field) == ("INVALID_ARGUMENT", "owner")


async def test_only_the_kernel_may_count_when_service_trust_is_on(start_memory):
    kernel, storage = trust.new_token(), trust.new_token()
    _, guarded = await start_memory(AIOS_SERVICE_TOKEN_SCHEDULER=kernel, AIOS_SERVICE_TOKEN_STORAGE=storage,
                                    AIOS_SERVICE_TOKEN_MEMORY=trust.new_token())
    owner = new_owner()
    err = await failure(count(guarded, owner))
    assert (err.code, err.reason) == ("UNAUTHENTICATED", "MISSING_SERVICE_CREDENTIAL")
    err = await failure(count(guarded, owner, metadata=[("authorization", f"Bearer {storage}")]))
    assert (err.code, err.reason) == ("PERMISSION_DENIED", "CALLER_NOT_ALLOWED")
    as_kernel = [("authorization", f"Bearer {kernel}")]
    await guarded.stub.AddMemory(pb.AddMemoryRequest(owner=owner, memory=pb.MemoryInput(content="counted")),
                                 timeout=30, metadata=as_kernel)
    assert await count(guarded, owner, metadata=as_kernel) == 1
