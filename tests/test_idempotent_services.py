"""Memory and storage apply a mutation at most once per request id.

The kernel re-runs a syscall whose service call may have been applied but
not answered; these tests send the same call twice, as that retry does, to
the real services: memory over embedded Qdrant (with llm_core's embeddings),
storage over a real SeaweedFS; and through the kernel, which passes its
syscall id as the key.
"""

from __future__ import annotations

import uuid

import grpc
import pytest
import pytest_asyncio
from google.protobuf import field_mask_pb2

from aios.kernel.v1 import kernel_service_pb2 as kpb
from aios.kernel.v1 import kernel_service_pb2_grpc as kpb_grpc
from aios.kernel.v1 import syscall_pb2 as ks
from aios.memory.v1 import memory_service_pb2 as mpb
from aios.memory.v1 import memory_service_pb2_grpc as mpb_grpc
from aios.storage.v1 import storage_service_pb2 as spb
from aios.storage.v1 import storage_service_pb2_grpc as spb_grpc
from services.local.seaweed import start_seaweed
from services.runtime.status import from_rpc_error
from tests.conftest import kernel_config

TIMEOUT = 60


def new_owner() -> str:
    return f"agent-{uuid.uuid4().hex[:8]}"


async def failure(call) -> tuple[grpc.StatusCode, str]:
    """(code, reason) of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call
    return exc.value.code(), from_rpc_error(exc.value).reason


@pytest_asyncio.fixture(scope="module")
async def memory_addr(start_service, llm_core_addr, tmp_path_factory):
    from services.memory.app import build
    from services.memory.config import Config

    server = await start_service(build, Config.from_env({
        "AIOS_LLM_ADDR": llm_core_addr,
        "AIOS_MEMORY_QDRANT_PATH": str(tmp_path_factory.mktemp("idempotent-qdrant"))}))
    return f"127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    stack = start_seaweed(tmp_path_factory.mktemp("idempotent-s3"))
    yield stack
    stack.stop(graceful=False)


@pytest_asyncio.fixture(scope="module")
async def storage_addr(start_service, s3):
    from services.storage.app import build
    from services.storage.config import Config

    server = await start_service(build, Config.from_env({
        "AIOS_STORAGE_S3_ENDPOINT": s3.endpoint, "AIOS_STORAGE_S3_ACCESS_KEY": s3.access_key,
        "AIOS_STORAGE_S3_SECRET_KEY": s3.secret_key, "AIOS_STORAGE_INDEX": "false"}))
    return f"127.0.0.1:{server.port}"


@pytest_asyncio.fixture
async def memory(memory_addr):
    async with grpc.aio.insecure_channel(memory_addr) as channel:
        yield mpb_grpc.MemoryServiceStub(channel)


@pytest_asyncio.fixture
async def storage(storage_addr):
    async with grpc.aio.insecure_channel(storage_addr) as channel:
        yield spb_grpc.StorageServiceStub(channel)


# -- memory ----------------------------------------------------------------

async def add(memory, owner: str, content: str, request_id: str = "") -> mpb.MemoryRecord:
    return (await memory.AddMemory(mpb.AddMemoryRequest(
        owner=owner, memory=mpb.MemoryInput(content=content), request_id=request_id), timeout=TIMEOUT)).memory


async def contents(memory, owner: str) -> list[str]:
    page = await memory.ListMemories(mpb.ListMemoriesRequest(owner=owner, page_size=100), timeout=TIMEOUT)
    return sorted(m.content for m in page.memories)


async def test_an_add_retried_with_its_key_stores_one_record_and_returns_it(memory):
    owner = new_owner()
    first = await add(memory, owner, "The spare key is under the blue flower pot", "add-1")
    again = await add(memory, owner, "The spare key is under the blue flower pot", "add-1")
    assert again == first
    assert await contents(memory, owner) == ["The spare key is under the blue flower pot"]


async def test_adds_with_different_keys_or_none_are_different_records(memory):
    owner = new_owner()
    ids = {(await add(memory, owner, "Lunch is at noon", key)).id for key in ("a", "b", "", "")}
    assert len(ids) == 4
    assert await contents(memory, owner) == ["Lunch is at noon"] * 4


async def test_the_same_key_of_another_owner_is_another_record(memory):
    a, b = new_owner(), new_owner()
    assert (await add(memory, a, "Water the plants", "k")).id != (await add(memory, b, "Water the plants", "k")).id


async def test_a_batch_retried_with_its_key_adds_nothing_more(memory):
    owner = new_owner()
    request = mpb.BatchAddMemoriesRequest(owner=owner, request_id="batch-1", memories=[
        mpb.MemoryInput(content="The train leaves at 8:15"), mpb.MemoryInput(content="Platform 4"),
        mpb.MemoryInput(content="Platform 4")])
    first = (await memory.BatchAddMemories(request, timeout=TIMEOUT)).memories
    again = (await memory.BatchAddMemories(request, timeout=TIMEOUT)).memories
    assert len({m.id for m in first}) == 3
    assert list(again) == list(first)
    assert await contents(memory, owner) == ["Platform 4", "Platform 4", "The train leaves at 8:15"]
    # A single add with the same key is not one of the batch's items.
    assert (await add(memory, owner, "Platform 4", "batch-1")).id not in {m.id for m in first}


async def test_a_memory_delete_retried_with_its_key_succeeds_again(memory):
    owner = new_owner()
    rec = await add(memory, owner, "The meeting room code is 4711")
    delete = mpb.DeleteMemoryRequest(owner=owner, id=rec.id, request_id="del-1")
    await memory.DeleteMemory(delete, timeout=TIMEOUT)
    await memory.DeleteMemory(delete, timeout=TIMEOUT)
    assert await contents(memory, owner) == []
    # Only its own key: without one, or with another, the record is gone.
    for key in ("", "del-2"):
        code, reason = await failure(memory.DeleteMemory(
            mpb.DeleteMemoryRequest(owner=owner, id=rec.id, request_id=key), timeout=TIMEOUT))
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "MEMORY_NOT_FOUND")
    # Another owner cannot borrow the key to learn about the record.
    code, _ = await failure(memory.DeleteMemory(
        mpb.DeleteMemoryRequest(owner=new_owner(), id=rec.id, request_id="del-1"), timeout=TIMEOUT))
    assert code == grpc.StatusCode.NOT_FOUND


async def test_an_update_retried_with_its_key_does_not_undo_a_later_update(memory):
    owner = new_owner()
    rec = await add(memory, owner, "Dinner with Sam on Friday")

    def update(content: str, key: str) -> mpb.UpdateMemoryRequest:
        return mpb.UpdateMemoryRequest(owner=owner, id=rec.id, memory=mpb.MemoryInput(content=content),
                                       update_mask=field_mask_pb2.FieldMask(paths=["content"]), request_id=key)

    first = (await memory.UpdateMemory(update("Dinner with Sam on Saturday", "up-1"), timeout=TIMEOUT)).memory
    assert first.content == "Dinner with Sam on Saturday"
    await memory.UpdateMemory(update("Dinner with Sam on Sunday", "up-2"), timeout=TIMEOUT)
    again = (await memory.UpdateMemory(update("Dinner with Sam on Saturday", "up-1"), timeout=TIMEOUT)).memory
    assert again.content == "Dinner with Sam on Sunday"
    assert await contents(memory, owner) == ["Dinner with Sam on Sunday"]


async def test_a_request_id_that_is_not_printable_ascii_is_refused(memory):
    for key in ("x" * 129, "with space", "caf\u00e9"):
        code, _ = await failure(memory.AddMemory(mpb.AddMemoryRequest(
            owner=new_owner(), memory=mpb.MemoryInput(content="x"), request_id=key), timeout=TIMEOUT))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, key


# -- storage -----------------------------------------------------------------

async def write(storage, owner: str, path: str, data: bytes, request_id: str = "", **conditions) -> spb.FileInfo:
    async def parts():
        yield spb.WriteFileRequest(header=spb.WriteFileHeader(
            owner=owner, path=path, request_id=request_id, **conditions))
        yield spb.WriteFileRequest(chunk=data)
        yield spb.WriteFileRequest(end=spb.WriteFileEnd())

    return (await storage.WriteFile(parts(), timeout=TIMEOUT)).file


async def versions(storage, owner: str, path: str) -> list[str]:
    found = await storage.ListFileVersions(spb.ListFileVersionsRequest(owner=owner, path=path), timeout=TIMEOUT)
    return [v.version_id for v in found.versions]


async def test_a_write_retried_with_its_key_is_one_version(storage):
    owner = new_owner()
    first = await write(storage, owner, "notes.txt", b"first draft", "w-1")
    again = await write(storage, owner, "notes.txt", b"first draft", "w-1")
    assert again == first
    assert await versions(storage, owner, "notes.txt") == [first.version_id]
    # A new key is a new write.
    second = await write(storage, owner, "notes.txt", b"second draft", "w-2")
    assert await versions(storage, owner, "notes.txt") == [second.version_id, first.version_id]


async def test_a_create_retried_with_its_key_returns_its_own_version_not_file_exists(storage):
    owner = new_owner()
    first = await write(storage, owner, "claim.txt", b"mine", "c-1", if_absent=True)
    again = await write(storage, owner, "claim.txt", b"mine", "c-1", if_absent=True)
    assert again == first
    assert await versions(storage, owner, "claim.txt") == [first.version_id]
    code, reason = await failure(write(storage, owner, "claim.txt", b"theirs", "c-2", if_absent=True))
    assert (code, reason) == (grpc.StatusCode.ABORTED, "FILE_EXISTS")


async def test_a_version_matched_write_retried_with_its_key_is_not_a_mismatch(storage):
    owner = new_owner()
    base = await write(storage, owner, "counter.txt", b"1")
    first = await write(storage, owner, "counter.txt", b"2", "v-1", if_version_id=base.version_id)
    assert await write(storage, owner, "counter.txt", b"2", "v-1", if_version_id=base.version_id) == first
    code, reason = await failure(write(storage, owner, "counter.txt", b"3", "v-2", if_version_id=base.version_id))
    assert (code, reason) == (grpc.StatusCode.ABORTED, "VERSION_MISMATCH")


async def test_a_rollback_retried_with_its_key_makes_one_version(storage):
    owner = new_owner()
    old = await write(storage, owner, "plan.md", b"plan A")
    await write(storage, owner, "plan.md", b"plan B")
    rollback = spb.RollbackFileRequest(owner=owner, path="plan.md", version_id=old.version_id, request_id="r-1")
    first = (await storage.RollbackFile(rollback, timeout=TIMEOUT)).file
    again = (await storage.RollbackFile(rollback, timeout=TIMEOUT)).file
    assert again == first and first.sha256 == old.sha256
    assert len(await versions(storage, owner, "plan.md")) == 3


async def test_a_file_delete_retried_with_its_key_succeeds_again(storage):
    owner = new_owner()
    await write(storage, owner, "old/a.txt", b"a")
    await write(storage, owner, "old/b.txt", b"b")
    for recursive, path in ((False, "old/a.txt"), (True, "old")):
        delete = spb.DeleteFileRequest(owner=owner, path=path, recursive=recursive, request_id=f"d-{path}")
        assert (await storage.DeleteFile(delete, timeout=TIMEOUT)).deleted_count == 1
        assert (await storage.DeleteFile(delete, timeout=TIMEOUT)).deleted_count == 0
        # Without a key, deleting what is gone is still NOT_FOUND.
        code, reason = await failure(storage.DeleteFile(
            spb.DeleteFileRequest(owner=owner, path=path, recursive=recursive), timeout=TIMEOUT))
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "FILE_NOT_FOUND")
    # A key does not make a file that never existed deletable.
    code, _ = await failure(storage.DeleteFile(
        spb.DeleteFileRequest(owner=owner, path="never.txt", request_id="d-never"), timeout=TIMEOUT))
    assert code == grpc.StatusCode.NOT_FOUND


# -- through the kernel --------------------------------------------------------

@pytest_asyncio.fixture(scope="module")
async def kernel_addr(start_service, llm_core_addr, memory_addr, storage_addr):
    from services.scheduler.app import build

    server = await start_service(build, kernel_config(
        llm_core_addr, AIOS_MEMORY_ADDR=memory_addr, AIOS_STORAGE_ADDR=storage_addr))
    return f"127.0.0.1:{server.port}"


async def submit(kernel_addr: str, agent: str, syscall: ks.Syscall) -> ks.SyscallRecord:
    async with grpc.aio.insecure_channel(kernel_addr) as channel:
        reply = await kpb_grpc.KernelServiceStub(channel).Submit(
            kpb.SubmitRequest(syscall=syscall), metadata=[("authorization", f"Bearer {agent}")], timeout=TIMEOUT)
    assert reply.syscall.state == ks.SYSCALL_STATE_SUCCEEDED, reply.syscall
    return reply.syscall


async def test_the_kernel_keys_memory_adds_with_its_syscall_id_or_the_agents_request_id(
        kernel_addr, memory):
    agent = new_owner()
    record = await submit(kernel_addr, agent, ks.Syscall(memory=ks.MemoryCall(add=mpb.AddMemoryRequest(
        memory=mpb.MemoryInput(content="The office closes at six")))))
    stored = record.memory.add.memory
    # The retry the kernel's journal will make: the same call with the same key.
    assert (await add(memory, agent, "The office closes at six", record.id)).id == stored.id

    # With a request id, the key comes from it (and the agent): a retry after
    # UNAVAILABLE, which is a new syscall, applies once too. A key the agent
    # put in the inner request is the kernel's to set.
    from services.scheduler.dispatch import _key
    from services.scheduler.table import Entry

    chosen = await submit(kernel_addr, agent, ks.Syscall(request_id="lights", memory=ks.MemoryCall(
        add=mpb.AddMemoryRequest(memory=mpb.MemoryInput(content="Lights off at seven"), request_id="forged"))))
    key = _key(Entry(agent=agent, kind="memory", resource="memory", syscall=None, request_id="lights"))
    assert (await add(memory, agent, "Lights off at seven", key)).id == chosen.memory.add.memory.id
    assert len(await contents(memory, agent)) == 2


async def test_the_kernel_keys_file_writes_with_its_syscall_id(kernel_addr, storage):
    agent = new_owner()
    record = await submit(kernel_addr, agent, ks.Syscall(storage=ks.StorageCall(write=ks.WriteFileInline(
        path="report.txt", content=b"all good"))))
    written = record.storage.write.file
    # The kernel wrote it as a create; its retry is not refused by its own write.
    again = await write(storage, agent, "report.txt", b"all good", record.id, if_absent=True)
    assert again == written
    assert await versions(storage, agent, "report.txt") == [written.version_id]
