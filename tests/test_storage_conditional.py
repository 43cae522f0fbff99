"""Conditional writes across storage replicas, against a real SeaweedFS.

Two FileStores over one bucket stand for two replicas of the storage
service: each has its own per-owner lock, so only the object store can keep
their create-only and if-version writes apart. A replica's object store
can hold its writes just before the PUT (after every check the replica makes
itself), which lines the two replicas' writes up without sleeping.
"""

from __future__ import annotations

import asyncio
import itertools
import threading

import pytest
import pytest_asyncio

from services.local.seaweed import start_seaweed
from services.runtime import errors
from services.storage.files import CHUNK, FileStore
from services.storage.objects import PART_SIZE, ObjectStore

BUCKET = "aios-conditional"
WAIT = 30.0  # seconds; a bound on every wait, never a pause
SIZES = pytest.mark.parametrize("size", [100, PART_SIZE + 1], ids=["one-put", "multipart"])


class Replica(ObjectStore):
    """The real object store, running `before_put` (in its I/O thread) before each put."""

    def __init__(self, s3) -> None:
        super().__init__(s3.endpoint, s3.access_key, s3.secret_key, BUCKET)
        self.before_put = lambda: None

    def put(self, *args, **kwargs):
        self.before_put()
        return super().put(*args, **kwargs)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    stack = start_seaweed(tmp_path_factory.mktemp("conditional-s3"))
    yield stack
    stack.stop(graceful=False)


@pytest_asyncio.fixture
async def replicas(s3):
    stores = [FileStore(Replica(s3)) for _ in range(2)]
    for store in stores:
        await store.start()
    yield stores
    for store in stores:
        await store.close()


async def write(store: FileStore, owner: str, path: str, data: bytes, **conditions):
    async def chunks():
        for i in range(0, len(data), CHUNK):
            yield data[i:i + CHUNK]

    return await store.write(owner, path, chunks(), **conditions)


def body(label: str, size: int) -> bytes:
    return (label.encode() * (size // len(label) + 1))[:size]


async def read(store: FileStore, owner: str, path: str) -> bytes:
    _, parts = await store.read(owner, path)
    return b"".join([p async for p in parts])


async def waited(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, WAIT), "the replica's write never reached the store"


def uploads_in_progress(s3) -> bytes:
    # No public minio call lists multipart uploads.
    return s3.client()._execute("GET", BUCKET, query_params={"uploads": ""}).data


async def test_create_only_writes_from_two_replicas_let_exactly_one_through(replicas):
    owner, path = "racer", "claims/slot.txt"
    # Each replica's first write waits at the store for the other's, so both
    # are past their own checks when they write.
    meet = threading.Barrier(2, timeout=WAIT)
    for store in replicas:
        calls = itertools.count()
        store.objects.before_put = lambda calls=calls: next(calls) == 0 and meet.wait()

    results = await asyncio.gather(
        *(write(replicas[i % 2], owner, path, f"writer {i}".encode(), if_absent=True) for i in range(8)),
        return_exceptions=True)

    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1, results
    assert all(isinstance(e, errors.Aborted) and e.reason == "FILE_EXISTS" for e in lost), lost
    assert {e.metadata["current_version_id"] for e in lost} == {won[0].version_id}
    assert [v.version_id for v in await replicas[0].versions(owner, path)] == [won[0].version_id]
    assert await read(replicas[1], owner, path) == f"writer {results.index(won[0])}".encode()


@SIZES
async def test_a_create_only_write_loses_to_another_replica_that_created_the_file_first(replicas, s3, size):
    a, b = replicas
    owner, path = "creator", f"first-{size}.bin"
    at_store, release = threading.Event(), threading.Event()

    def hold():
        at_store.set()
        assert release.wait(WAIT)

    b.objects.before_put = hold
    late = asyncio.create_task(write(b, owner, path, body("b", size), if_absent=True))
    await waited(at_store)  # b found no file and is about to write
    first = await write(a, owner, path, body("a", size), if_absent=True)
    release.set()

    with pytest.raises(errors.Aborted) as exc:
        await late
    assert exc.value.reason == "FILE_EXISTS"
    assert exc.value.metadata["current_version_id"] == first.version_id
    assert [v.version_id for v in await a.versions(owner, path)] == [first.version_id]
    assert await read(b, owner, path) == body("a", size)
    assert b"<Upload>" not in uploads_in_progress(s3)  # the refused multipart upload was aborted


@SIZES
async def test_a_write_if_version_loses_to_another_replica_that_wrote_that_version_over_first(replicas, size):
    a, b = replicas
    owner, path = "editor", f"doc-{size}.bin"
    base = await write(a, owner, path, body("0", size))
    at_store, release = threading.Event(), threading.Event()

    def hold():
        at_store.set()
        assert release.wait(WAIT)

    b.objects.before_put = hold
    late = asyncio.create_task(write(b, owner, path, body("b", size), if_version_id=base.version_id))
    await waited(at_store)  # b saw base current and is about to write
    won = await write(a, owner, path, body("a", size), if_version_id=base.version_id)
    release.set()

    with pytest.raises(errors.Aborted) as exc:
        await late
    assert exc.value.reason == "VERSION_MISMATCH"
    assert exc.value.metadata["current_version_id"] == won.version_id
    assert [v.version_id for v in await a.versions(owner, path)] == [won.version_id, base.version_id]
    assert await read(b, owner, path) == body("a", size)
