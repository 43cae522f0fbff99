"""The storage service against a real SeaweedFS S3 server and the real
llm_core (embeddings), in-process on free ports.

One SeaweedFS stack for the module; each test works in its own agent's
space. The restart test runs its own stack so it can stop and restart it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from aios.sdk import AsyncClient, InvalidArgumentError, PermissionDeniedError
from aios.storage.v1 import storage_service_pb2 as pb
from aios.storage.v1 import storage_service_pb2_grpc as pb_grpc
from services.runtime.server import start_server
from services.runtime.status import from_rpc_error
from services.storage.app import build
from services.storage.config import Config
from services.local.seaweed import start_seaweed
from tests.support.cut_off import cut_off, handled
from tests.support.polling import until

MiB = 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parents[1]


def storage_config(s3, qdrant_path, llm_addr="127.0.0.1:1", **env) -> Config:
    return Config.from_env({
        "AIOS_STORAGE_S3_ENDPOINT": s3.endpoint, "AIOS_STORAGE_S3_ACCESS_KEY": s3.access_key,
        "AIOS_STORAGE_S3_SECRET_KEY": s3.secret_key, "AIOS_STORAGE_QDRANT_PATH": str(qdrant_path),
        "AIOS_LLM_ADDR": llm_addr, **{f"AIOS_STORAGE_{k.upper()}": str(v) for k, v in env.items()}})


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    stack = start_seaweed(tmp_path_factory.mktemp("storage-s3"))
    yield stack
    stack.stop(graceful=False)


@pytest_asyncio.fixture(scope="module")
async def storage_addr(s3, llm_core_addr, start_service, tmp_path_factory):
    config = storage_config(s3, tmp_path_factory.mktemp("storage-index"), llm_core_addr,
                            max_versions=4, quota_bytes=64 * MiB, quota_files=200)
    server = await start_service(build, config)
    return f"127.0.0.1:{server.port}"


@pytest_asyncio.fixture(scope="module")
async def unindexed(s3, start_service, tmp_path_factory):
    """A storage service with no index: a write commits as soon as its stream ends."""
    config = storage_config(s3, tmp_path_factory.mktemp("unused"), bucket="aios-unindexed", index="false")
    return await start_service(build, config)


@pytest_asyncio.fixture(scope="module")
async def quota_addr(s3, start_service, tmp_path_factory):
    """A second storage service over its own bucket with tiny quotas (no index)."""
    config = storage_config(s3, tmp_path_factory.mktemp("unused"), bucket="aios-quota", index="false",
                            quota_bytes=2_500_000, quota_files=3)
    server = await start_service(build, config)
    return f"127.0.0.1:{server.port}"


@pytest_asyncio.fixture
async def stub(storage_addr):
    async with grpc.aio.insecure_channel(storage_addr) as channel:
        yield pb_grpc.StorageServiceStub(channel)


async def write(stub, owner, path, data: bytes, *, content_type="", chunk=MiB, if_version_id="", request_id=""):
    async def parts():
        yield pb.WriteFileRequest(header=pb.WriteFileHeader(
            owner=owner, path=path, content_type=content_type, if_version_id=if_version_id,
            request_id=request_id))
        for i in range(0, len(data), chunk):
            yield pb.WriteFileRequest(chunk=data[i:i + chunk])
        yield pb.WriteFileRequest(end=pb.WriteFileEnd())

    return (await stub.WriteFile(parts(), timeout=120)).file


async def read(stub, owner, path, version_id="") -> tuple[pb.FileInfo, bytes, list[int]]:
    info, parts = None, []
    async for part in stub.ReadFile(pb.ReadFileRequest(owner=owner, path=path, version_id=version_id),
                                    timeout=120):
        if part.HasField("info"):
            info = part.info
        else:
            parts.append(part.chunk)
    return info, b"".join(parts), [len(p) for p in parts]


async def failure(call) -> tuple[grpc.StatusCode, str, str]:
    """(code, reason, field) of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call
    err = from_rpc_error(exc.value)
    return exc.value.code(), err.reason, err.field


def bucket_versions(s3, bucket="aios-files", prefix="") -> list[tuple[str, str]]:
    return sorted((o.object_name, o.version_id) for o in s3.client().list_objects(
        bucket, prefix=prefix, recursive=True, include_version=True))


# -- files --------------------------------------------------------------


async def test_20_mib_round_trip_keeps_the_checksum(stub):
    data = os.urandom(20 * MiB)
    digest = hashlib.sha256(data).hexdigest()
    t0 = time.perf_counter()
    info = await write(stub, "big", "blobs/twenty.bin", data)
    t_write = time.perf_counter() - t0
    assert (info.owner, info.path, info.size, info.sha256) == ("big", "blobs/twenty.bin", 20 * MiB, digest)
    assert info.version_id and info.content_type == "application/octet-stream"

    t0 = time.perf_counter()
    got, content, sizes = await read(stub, "big", "blobs/twenty.bin")
    t_read = time.perf_counter() - t0
    assert hashlib.sha256(content).hexdigest() == digest
    assert (got.size, got.sha256, got.version_id) == (20 * MiB, digest, info.version_id)
    assert len(sizes) >= 20 and max(sizes) <= MiB
    stat = (await stub.StatFile(pb.StatFileRequest(owner="big", path="blobs/twenty.bin"))).file
    assert stat.sha256 == digest and stat.update_time.seconds > 0
    print(f"20 MiB: write {t_write:.2f}s, read {t_read:.2f}s")


async def test_empty_files_are_files(stub):
    info = await write(stub, "empty", "nothing.txt", b"")
    assert (info.size, info.sha256) == (0, hashlib.sha256(b"").hexdigest())
    got, content, sizes = await read(stub, "empty", "nothing.txt")
    assert (got.size, content, sizes) == (0, b"", [])


async def test_chunks_over_1_mib_and_a_missing_header_are_refused(stub):
    code, _, field = await failure(write(stub, "chunky", "a.bin", b"x" * (MiB + 1), chunk=MiB + 1))
    assert (code, field) == (grpc.StatusCode.INVALID_ARGUMENT, "chunk")

    async def no_header():
        yield pb.WriteFileRequest(chunk=b"abc")

    code, _, field = await failure(stub.WriteFile(no_header()))
    assert (code, field) == (grpc.StatusCode.INVALID_ARGUMENT, "header")
    code, _, _ = await failure(stub.StatFile(pb.StatFileRequest(owner="chunky", path="a.bin")))
    assert code == grpc.StatusCode.NOT_FOUND


async def test_a_write_whose_client_dies_mid_stream_writes_nothing(unindexed):
    """The client's process is killed after the header (the content not yet
    sent): the stream ends there, with no end message, and nothing is
    written; a retry with the same request id then writes the whole file."""
    address, method = f"127.0.0.1:{unindexed.port}", "/aios.storage.v1.StorageService/WriteFile"
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.StorageServiceStub(channel)
        before = handled(unindexed, method)
        await cut_off(address, method, [
            pb.WriteFileRequest(header=pb.WriteFileHeader(owner="cut", path="half.txt", request_id="cut-1"))])
        await until(lambda: handled(unindexed, method) > before, "storage to finish the cut-off stream")
        code, _, _ = await failure(stub.StatFile(pb.StatFileRequest(owner="cut", path="half.txt")))
        assert code == grpc.StatusCode.NOT_FOUND

        whole = b"the whole content"
        info = await write(stub, "cut", "half.txt", whole, request_id="cut-1")
        assert (info.size, info.sha256) == (len(whole), hashlib.sha256(whole).hexdigest())
        _, content, _ = await read(stub, "cut", "half.txt")
        assert content == whole


async def test_a_stream_must_end_with_its_end_message_and_nothing_after_it(stub):
    header = pb.WriteFileRequest(header=pb.WriteFileHeader(owner="ends", path="a.txt"))

    async def unended():
        yield header
        yield pb.WriteFileRequest(chunk=b"abc")

    async def past_the_end():
        yield header
        yield pb.WriteFileRequest(end=pb.WriteFileEnd())
        yield pb.WriteFileRequest(chunk=b"abc")

    for parts in (unended, past_the_end):
        code, _, field = await failure(stub.WriteFile(parts()))
        assert (code, field) == (grpc.StatusCode.INVALID_ARGUMENT, "end"), parts.__name__
    code, _, _ = await failure(stub.StatFile(pb.StatFileRequest(owner="ends", path="a.txt")))
    assert code == grpc.StatusCode.NOT_FOUND


async def test_versions_and_rollback_to_a_version_and_to_a_time(stub):
    owner, path = "versioned", "notes/plan.txt"
    v1 = await write(stub, owner, path, b"one")
    after_v1 = time.time()
    v2 = await write(stub, owner, path, b"two")
    after_v2 = time.time()
    v3 = await write(stub, owner, path, b"three")
    assert len({v1.version_id, v2.version_id, v3.version_id}) == 3

    versions = (await stub.ListFileVersions(pb.ListFileVersionsRequest(owner=owner, path=path))).versions
    assert [v.version_id for v in versions] == [v3.version_id, v2.version_id, v1.version_id]
    assert [v.is_latest for v in versions] == [True, False, False]
    assert versions[2].sha256 == hashlib.sha256(b"one").hexdigest()
    assert (await read(stub, owner, path, v1.version_id))[1] == b"one"

    # To a version: its content becomes current, as a new version.
    rolled = (await stub.RollbackFile(pb.RollbackFileRequest(owner=owner, path=path,
                                                             version_id=v1.version_id))).file
    assert rolled.version_id not in (v1.version_id, v2.version_id, v3.version_id)
    assert rolled.sha256 == v1.sha256
    info, content, _ = await read(stub, owner, path)
    assert content == b"one" and info.version_id == rolled.version_id

    # To a time: the version current then (v2 was current just after it was written).
    rolled2 = (await stub.RollbackFile(pb.RollbackFileRequest(
        owner=owner, path=path, time=_ts(after_v2)))).file
    assert (await read(stub, owner, path))[1] == b"two"

    # Five versions now, four kept: the original "one" is gone, so no version
    # was current at after_v1 any more.
    versions = (await stub.ListFileVersions(pb.ListFileVersionsRequest(owner=owner, path=path))).versions
    assert [v.version_id for v in versions] == [rolled2.version_id, rolled.version_id, v3.version_id,
                                                v2.version_id]
    code, reason, _ = await failure(stub.RollbackFile(pb.RollbackFileRequest(
        owner=owner, path=path, time=_ts(after_v1))))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "NO_VERSION_AT_TIME")
    code, reason, _ = await failure(read(stub, owner, path, v1.version_id))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "VERSION_NOT_FOUND")
    code, _, field = await failure(stub.RollbackFile(pb.RollbackFileRequest(
        owner=owner, path=path, version_id="no-such-version")))
    assert (code, field) == (grpc.StatusCode.NOT_FOUND, "version_id")


def _ts(seconds: float):
    from google.protobuf.timestamp_pb2 import Timestamp

    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


async def test_if_version_id_guards_against_lost_updates(stub):
    first = await write(stub, "careful", "doc.txt", b"a")
    await write(stub, "careful", "doc.txt", b"b", if_version_id=first.version_id)
    code, reason, _ = await failure(write(stub, "careful", "doc.txt", b"c", if_version_id=first.version_id))
    assert (code, reason) == (grpc.StatusCode.ABORTED, "VERSION_MISMATCH")
    assert (await read(stub, "careful", "doc.txt"))[1] == b"b"


async def test_list_pages_through_files_and_folders(stub):
    owner = "lister"
    await asyncio.gather(*(write(stub, owner, f"page/f{i:02d}.txt", b"x" * i) for i in range(25)))
    await write(stub, owner, "page/sub/a.txt", b"a")
    await write(stub, owner, "page/sub/b.txt", b"b")
    await write(stub, owner, "pages.txt", b"not in the folder")

    seen, token, pages = [], "", 0
    while True:
        resp = await stub.ListFiles(pb.ListFilesRequest(owner=owner, prefix="page/", page_size=10,
                                                        page_token=token))
        seen.extend(resp.files)
        pages += 1
        token = resp.next_page_token
        if not token:
            break
    assert pages == 3
    names = [f.path for f in seen]
    assert names == [f"page/f{i:02d}.txt" for i in range(25)] + ["page/sub"]
    assert [f.is_folder for f in seen].count(True) == 1
    assert seen[7].size == 7 and seen[7].update_time.seconds > 0

    everything = await stub.ListFiles(pb.ListFilesRequest(owner=owner, recursive=True, page_size=1000))
    assert len(everything.files) == 28 and not everything.next_page_token
    top = await stub.ListFiles(pb.ListFilesRequest(owner=owner))
    assert [(f.path, f.is_folder) for f in top.files] == [("page", True), ("pages.txt", False)]

    code, _, field = await failure(stub.ListFiles(pb.ListFilesRequest(owner=owner, page_token="%%bad")))
    assert (code, field) == (grpc.StatusCode.INVALID_ARGUMENT, "page_token")
    code, _, field = await failure(stub.ListFiles(pb.ListFilesRequest(owner=owner, page_size=-1)))
    assert (code, field) == (grpc.StatusCode.INVALID_ARGUMENT, "page_size")


async def test_delete_files_and_folders(stub):
    owner = "deleter"
    first = await write(stub, owner, "keep/old.txt", b"old content")
    await write(stub, owner, "tree/a.txt", b"a")
    await write(stub, owner, "tree/deep/b.txt", b"b")

    assert (await stub.DeleteFile(pb.DeleteFileRequest(owner=owner, path="keep/old.txt"))).deleted_count == 1
    for call in (stub.StatFile(pb.StatFileRequest(owner=owner, path="keep/old.txt")),
                 read(stub, owner, "keep/old.txt"),
                 stub.DeleteFile(pb.DeleteFileRequest(owner=owner, path="keep/old.txt"))):
        code, reason, _ = await failure(call)
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "FILE_NOT_FOUND")
    # Its versions stay: the deletion is the newest, and rollback undoes it.
    versions = (await stub.ListFileVersions(pb.ListFileVersionsRequest(owner=owner, path="keep/old.txt"))).versions
    assert versions[0].is_delete_marker and versions[0].is_latest
    assert versions[1].version_id == first.version_id
    await stub.RollbackFile(pb.RollbackFileRequest(owner=owner, path="keep/old.txt", version_id=first.version_id))
    assert (await read(stub, owner, "keep/old.txt"))[1] == b"old content"

    stat = (await stub.StatFile(pb.StatFileRequest(owner=owner, path="tree"))).file
    assert stat.is_folder
    code, reason, _ = await failure(stub.DeleteFile(pb.DeleteFileRequest(owner=owner, path="tree")))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IS_A_FOLDER")
    resp = await stub.DeleteFile(pb.DeleteFileRequest(owner=owner, path="tree", recursive=True))
    assert resp.deleted_count == 2
    left = await stub.ListFiles(pb.ListFilesRequest(owner=owner, recursive=True))
    assert [f.path for f in left.files] == ["keep/old.txt"]


async def test_traversal_attempts_are_refused_and_nothing_is_written(stub, s3):
    before = bucket_versions(s3)
    bad_paths = ["../x", "/etc/passwd", "a/../../b", "a\x00b", "..", "", "a/\x07b", "a\\..\\b",
                 "x" * 300, "../../other-agent/secret.txt"]
    for bad in bad_paths:
        code, reason, field = await failure(write(stub, "intruder", bad, b"payload"))
        assert (code, reason, field) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PATH", "header.path"), bad
        code, _, field = await failure(read(stub, "intruder", bad))
        assert (code, field) == (grpc.StatusCode.INVALID_ARGUMENT, "path"), bad
    for bad_owner in ("../intruder", "a/b", "", "x\x00"):
        code, _, field = await failure(write(stub, bad_owner, "x.txt", b"payload"))
        assert (code, field) == (grpc.StatusCode.INVALID_ARGUMENT, "header.owner"), bad_owner
    code, _, field = await failure(stub.ListFiles(pb.ListFilesRequest(owner="intruder", prefix="../")))
    assert (code, field) == (grpc.StatusCode.INVALID_ARGUMENT, "prefix")
    assert bucket_versions(s3) == before

    # Harmless spellings are normalised, and stay inside the agent's space.
    info = await write(stub, "intruder", "./notes//ok.txt", b"fine")
    assert info.path == "notes/ok.txt"
    assert bucket_versions(s3, prefix="intruder/") == [("intruder/notes/ok.txt", info.version_id)]


async def test_quota_exhaustion_is_reported_and_nothing_half_written(quota_addr, s3):
    async with grpc.aio.insecure_channel(quota_addr) as channel:
        q = pb_grpc.StorageServiceStub(channel)
        await write(q, "thrifty", "a.bin", b"a" * 1_000_000)
        await write(q, "thrifty", "b.bin", b"b" * 1_000_000)
        before = bucket_versions(s3, "aios-quota")

        code, reason, _ = await failure(write(q, "thrifty", "c.bin", b"c" * 600_000))
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_BYTES")
        # Streamed past the quota: refused while receiving, before S3 sees anything.
        code, reason, _ = await failure(write(q, "thrifty", "huge.bin", b"h" * (3 * MiB)))
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_BYTES")
        assert bucket_versions(s3, "aios-quota") == before
        for path in ("c.bin", "huge.bin"):
            code, _, _ = await failure(q.StatFile(pb.StatFileRequest(owner="thrifty", path=path)))
            assert code == grpc.StatusCode.NOT_FOUND

        # An overwrite counts only the difference; the files quota counts files.
        await write(q, "thrifty", "a.bin", b"A" * 1_400_000)
        await write(q, "thrifty", "c.bin", b"small")
        code, reason, _ = await failure(write(q, "thrifty", "d.bin", b"d"))
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_FILES")
        # Quotas are per agent.
        await write(q, "someone-else", "d.bin", b"d" * 1_000_000)
        files = (await q.ListFiles(pb.ListFilesRequest(owner="thrifty"))).files
        assert [(f.path, f.size) for f in files] == [("a.bin", 1_400_000), ("b.bin", 1_000_000), ("c.bin", 5)]


async def test_presigned_url_reads_from_the_object_store(stub, s3):
    await write(stub, "sharer", "share/report.txt", b"quarterly numbers")
    req = pb.PresignFileRequest(owner="sharer", path="share/report.txt")
    req.expires_in.FromSeconds(600)
    resp = await stub.PresignFile(req)
    assert resp.url.startswith(f"http://{s3.endpoint}/aios-files/sharer/share/report.txt?")
    assert 590 <= resp.expire_time.seconds - time.time() <= 610
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(resp.url, timeout=10).read())
    assert body == b"quarterly numbers"

    req.expires_in.FromSeconds(8 * 24 * 3600)
    code, _, field = await failure(stub.PresignFile(req))
    assert (code, field) == (grpc.StatusCode.INVALID_ARGUMENT, "expires_in")
    code, _, _ = await failure(stub.PresignFile(pb.PresignFileRequest(owner="sharer", path="nope.txt")))
    assert code == grpc.StatusCode.NOT_FOUND


# -- retrieval ------------------------------------------------------------

CORPUS = {
    "sourdough": "Keeping a sourdough starter healthy: discard half of it every day and refresh it with equal "
                 "weights of flour and water. Kept in the fridge, it needs refreshing only once a week.",
    "tire": "Changing a flat tire: park on level ground, loosen the lug nuts, lift the car with the jack, "
            "swap in the spare wheel and tighten the nuts in a star pattern.",
    "photosynthesis": "Photosynthesis lets plants turn sunlight, water and carbon dioxide into glucose and "
                      "oxygen inside their chloroplasts.",
    "taxes": "Income tax returns are due in April; file for an extension if your paperwork is not ready, "
             "but pay the estimated amount owed to avoid penalties.",
    "dog": "Teaching a dog to come when called: reward it with treats every time it returns, start indoors "
           "and never punish it for coming back late.",
    "ssh": "Log in to remote machines with SSH keys: generate a key pair with ssh-keygen and copy the public "
           "key into the server's authorized_keys file; no password is needed afterwards.",
    "rome": "The Western Roman Empire fell in 476 when Odoacer deposed Romulus Augustulus, after decades of "
            "invasions, economic decline and political instability.",
    "marathon": "Marathon training plans build weekly mileage slowly, with one long run each weekend and a "
                "taper during the last three weeks before race day.",
    "houseplants": "Most houseplants die from overwatering: yellow leaves and soggy soil mean the roots are "
                   "rotting. Let the top of the soil dry out before watering again.",
    "coffee": "Pour-over coffee: use a medium-fine grind, water just off the boil, and pour slowly in circles "
              "for about three minutes.",
    "mortgage": "Refinancing a mortgage makes sense when interest rates drop well below your current rate and "
                "you plan to stay in the house long enough to recover the closing costs.",
    "volcano": "Volcanoes erupt when magma rises through cracks in the crust; explosive eruptions happen when "
               "gas trapped in thick magma is released suddenly.",
    "chess": "The Sicilian Defence is a popular chess opening for black, answering white's king pawn move "
             "with the c-pawn to fight for the centre.",
    "passwords": "A password manager generates a unique long password for every website and stores them in an "
                 "encrypted vault unlocked by one master password.",
    "knitting": "To knit a simple scarf, cast on thirty stitches with thick wool and work the garter stitch, "
                "knitting every row, until it is long enough.",
    "black_holes": "A black hole forms when a massive star collapses; its gravity is so strong that not even "
                   "light escapes past the event horizon.",
    "compost": "Compost heaps need a mix of green kitchen scraps and brown material like dry leaves, kept "
               "moist and turned every few weeks.",
    "guitar": "Beginners on the guitar should learn the open chords G, C, D and E minor first and practise "
              "switching between them slowly.",
    "vaccines": "Vaccines train the immune system by exposing it to a harmless piece of a pathogen, so "
                "antibodies are ready when the real infection comes.",
    "batteries": "Used batteries must not go in household trash; take them to a collection point so the "
                 "metals can be recovered safely.",
    "sleep": "Good sleep hygiene: go to bed at the same time every night, keep the bedroom dark and cool, and "
             "avoid screens and caffeine in the evening.",
    "bicycle": "Clean and lubricate your bicycle chain every few hundred kilometres; a dry or rusty chain "
               "wears out the gears quickly.",
}
QUESTIONS = {
    "How often do I need to feed the yeast culture I use for baking bread?": "sourdough",
    "What should I do when my car gets a puncture on the road?": "tire",
    "My fern has yellowing leaves and the pot stays wet, what is wrong?": "houseplants",
    "Tips for resting better at night": "sleep",
    "How can I connect to a server without typing my password each time?": "ssh",
    "Why did ancient Rome collapse?": "rome",
}


async def test_retrieval_finds_the_right_file_for_a_paraphrased_question(stub):
    owner = "reader"
    await asyncio.gather(*(write(stub, owner, f"kb/{name}.txt", text.encode(), content_type="text/plain")
                           for name, text in CORPUS.items()))
    await write(stub, owner, "archive/bread.md", CORPUS["sourdough"].encode())  # guessed text/markdown
    await write(stub, owner, "kb/image.bin", os.urandom(2048))  # binary: stored, not indexed
    await write(stub, "stranger", "kb/sourdough.txt", CORPUS["sourdough"].encode())

    async def search(query, k=3, owners=(owner,), prefix=""):
        resp = await stub.RetrieveFiles(pb.RetrieveFilesRequest(owners=list(owners), query=query, top_k=k,
                                                                prefix=prefix), timeout=60)
        return resp.passages

    for question, name in QUESTIONS.items():
        hits = await search(question)
        assert hits[0].path in (f"kb/{name}.txt", "archive/bread.md"), (question, [h.path for h in hits])
        assert hits[0].owner == owner and hits[0].text and hits[0].score > 0
    bread = "How often do I need to feed the yeast culture I use for baking bread?"
    assert {h.path for h in await search(bread, k=2)} == {"kb/sourdough.txt", "archive/bread.md"}
    # Only the owners asked for, only under the prefix asked for.
    assert all(h.owner == owner for h in await search(bread, k=25))
    assert {h.owner for h in await search(bread, k=3, owners=(owner, "stranger"))} == {owner, "stranger"}
    assert [h.path for h in await search(bread, k=1, prefix="kb/")] == ["kb/sourdough.txt"]
    assert all(h.path.startswith("kb/s") for h in await search(bread, k=5, prefix="kb/s"))

    # Overwrite and delete keep the index in step with the files.
    await write(stub, owner, "kb/sleep.txt", CORPUS["knitting"].encode(), content_type="text/plain")
    hits = await search("Tips for resting better at night", k=25)
    assert all("bedroom" not in h.text for h in hits)
    await stub.DeleteFile(pb.DeleteFileRequest(owner=owner, path="kb/tire.txt"))
    hits = await search("What should I do when my car gets a puncture on the road?", k=25)
    assert "kb/tire.txt" not in {h.path for h in hits}

    code, _, field = await failure(stub.RetrieveFiles(pb.RetrieveFilesRequest(query="x")))
    assert (code, field) == (grpc.StatusCode.INVALID_ARGUMENT, "owners")


# -- durability -------------------------------------------------------------


@contextlib.asynccontextmanager
async def storage_on(stack, index, llm_addr):
    """A storage service of its own over `stack`, stopped on exit."""
    running = await start_server(await build(storage_config(stack, index, llm_addr)))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield pb_grpc.StorageServiceStub(channel)
    finally:
        await running.stop(grace=1)


async def test_restart_of_storage_and_seaweedfs_keeps_files_and_versions(tmp_path, llm_core_addr):
    data, index = tmp_path / "s3", tmp_path / "index"
    stack = start_seaweed(data)
    try:
        async with storage_on(stack, index, llm_core_addr) as st:
            written = [await write(st, "durable", "diary.txt", f"day {i}".encode()) for i in range(3)]
            big = await write(st, "durable", "bin/blob", os.urandom(3 * MiB))
            await write(st, "durable", "notes/sourdough.txt", CORPUS["sourdough"].encode())
            await st.DeleteFile(pb.DeleteFileRequest(owner="durable", path="diary.txt"))
            before = (await st.ListFileVersions(pb.ListFileVersionsRequest(owner="durable", path="diary.txt"))).versions
            stack.stop(graceful=False)  # SIGKILL: acknowledged writes must survive it
            t0 = time.monotonic()
            code, reason, _ = await failure(st.StatFile(pb.StatFileRequest(owner="durable", path="bin/blob")))
            assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "OBJECT_STORE_UNAVAILABLE")
            print(f"object store down reported in {time.monotonic() - t0:.2f}s")
    finally:
        stack.stop(graceful=False)

    stack = start_seaweed(data)
    try:
        async with storage_on(stack, index, llm_core_addr) as st:
            after = (await st.ListFileVersions(pb.ListFileVersionsRequest(owner="durable", path="diary.txt"))).versions
            assert [(v.version_id, v.is_delete_marker, v.sha256) for v in after] == \
                [(v.version_id, v.is_delete_marker, v.sha256) for v in before]
            assert [v.version_id for v in after[1:]] == [w.version_id for w in reversed(written)]
            for i, w in enumerate(written):
                assert (await read(st, "durable", "diary.txt", w.version_id))[1] == f"day {i}".encode()
            info, content, _ = await read(st, "durable", "bin/blob")
            assert hashlib.sha256(content).hexdigest() == big.sha256 == info.sha256
            await st.RollbackFile(pb.RollbackFileRequest(owner="durable", path="diary.txt",
                                                         version_id=written[1].version_id))
            assert (await read(st, "durable", "diary.txt"))[1] == b"day 1"
            hits = (await st.RetrieveFiles(pb.RetrieveFilesRequest(
                owners=["durable"], query="feeding a bread starter", top_k=1))).passages
            assert [h.path for h in hits] == ["notes/sourdough.txt"]
    finally:
        stack.stop(graceful=False)


# -- through the kernel ------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def kernel_with_storage(llm_core_addr, storage_addr, start_service):
    from services.scheduler.app import build as build_kernel
    from tests.conftest import kernel_config

    server = await start_service(build_kernel, kernel_config(llm_core_addr, AIOS_STORAGE_ADDR=storage_addr))
    return f"127.0.0.1:{server.port}"


async def test_files_through_the_kernel(kernel_with_storage):
    async with AsyncClient(kernel_with_storage, token="agent-a", timeout=60) as aios:
        info = await aios.files.write("notes/hello.txt", "hello from agent a")
        assert (info.owner, info.path, info.content_type) == ("agent-a", "notes/hello.txt",
                                                             "text/plain; charset=utf-8")
        assert await aios.files.read("notes/hello.txt") == b"hello from agent a"
        page = await aios.files.list("notes/")
        assert [f.path for f in page.files] == ["notes/hello.txt"]
        await aios.files.write("notes/hello.txt", "second draft")
        versions = await aios.files.versions("notes/hello.txt")
        assert len(versions) == 2 and versions[0].is_latest
        await aios.files.rollback("notes/hello.txt", version_id=versions[1].version_id)
        assert await aios.files.read("notes/hello.txt") == b"hello from agent a"
        hits = await aios.files.search("a greeting from an agent", k=1)
        assert hits[0].owner == "agent-a" and hits[0].path == "notes/hello.txt"
        link = await aios.files.presign("notes/hello.txt", expires_in=60)
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(link.url, timeout=10).read())
        assert body == b"hello from agent a"
        with pytest.raises(InvalidArgumentError):
            await aios.files.write("../agent-b/x.txt", "escape")
        with pytest.raises(PermissionDeniedError):
            await aios.files.read("notes/hello.txt", owner="agent-b")
        assert await aios.files.delete("notes", recursive=True) == 1


async def test_cli_files_commands(kernel_with_storage, tmp_path):
    async def aios(*argv) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli.main", "files", *argv, "--kernel", kernel_with_storage,
            "--token", "agent-cli", cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
        return proc.returncode, out.decode(), err.decode()

    local = tmp_path / "todo.md"
    local.write_text("buy flour and feed the sourdough starter\n")
    rc, out, err = await aios("put", str(local), "lists/todo.md")
    assert rc == 0 and out.startswith(f"wrote lists/todo.md ({local.stat().st_size} bytes"), err
    local.write_text("call the plumber\n")
    assert (await aios("put", str(local), "lists/todo.md"))[0] == 0
    rc, out, _ = await aios("ls", "lists/")
    assert rc == 0 and out.split()[-1] == "lists/todo.md"
    rc, out, _ = await aios("versions", "lists/todo.md")
    header, *lines = out.splitlines()
    assert header.split() == ["VERSION", "UPDATED", "SIZE", "SHA256", "FLAGS"]
    assert rc == 0 and len(lines) == 2 and lines[0].endswith("current")
    oldest = lines[1].split()[0]
    rc, out, err = await aios("rollback", "lists/todo.md", "--version", oldest)
    assert rc == 0, err
    rc, out, _ = await aios("get", "lists/todo.md", str(tmp_path / "back.md"))
    assert rc == 0 and (tmp_path / "back.md").read_text() == "buy flour and feed the sourdough starter\n"
    rc, out, _ = await aios("search", "bread baking chores", "-k", "1")
    assert rc == 0 and "lists/todo.md#0" in out
    rc, out, err = await aios("get", "../etc/passwd")
    assert rc == 1 and "error:" in err
    rc, out, _ = await aios("rm", "lists/todo.md")
    assert rc == 0 and out.strip() == "deleted 1 file"
