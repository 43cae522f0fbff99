"""Files of any size through the kernel: UploadFile and DownloadFile stream
in chunks end to end (agent -> kernel -> storage -> S3) as storage syscalls."""

from __future__ import annotations

import hashlib
import os

import grpc
import pytest
import pytest_asyncio

from aios.kernel.v1 import kernel_service_pb2 as kpb
from aios.kernel.v1 import kernel_service_pb2_grpc as kpb_grpc
from aios.kernel.v1 import syscall_pb2 as ks
from aios.storage.v1 import storage_service_pb2 as st
from tests.conftest import kernel_config
from tests.support.cut_off import cut_off, handled
from tests.support.polling import until

CHUNK = 1024 * 1024


@pytest_asyncio.fixture(scope="module")
async def kernel_server(tmp_path_factory, llm_core_addr, start_service):
    from services.scheduler.app import build as kernel_build
    from services.storage.app import build as storage_build
    from services.storage.config import Config as StorageConfig
    from services.local.seaweed import start_seaweed

    data = tmp_path_factory.mktemp("kernel-files")
    s3 = start_seaweed(data / "s3")
    # No index: a write that storage let through would commit at once.
    storage = await start_service(storage_build, StorageConfig.from_env({
        "AIOS_STORAGE_S3_ENDPOINT": s3.endpoint, "AIOS_STORAGE_S3_ACCESS_KEY": s3.access_key,
        "AIOS_STORAGE_S3_SECRET_KEY": s3.secret_key, "AIOS_STORAGE_INDEX": "false"}))
    yield await start_service(kernel_build, kernel_config(
        llm_core_addr, AIOS_STORAGE_ADDR=f"127.0.0.1:{storage.port}"))
    s3.stop(graceful=False)


@pytest_asyncio.fixture(scope="module")
async def kernel_channel(kernel_server):
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{kernel_server.port}")
    yield channel
    await channel.close()


@pytest.fixture
def kernel(kernel_channel):
    return kpb_grpc.KernelServiceStub(kernel_channel)


MD = [("authorization", "Bearer uploader")]


async def upload(stub, path: str, data: bytes, header: bool = True):
    async def parts():
        if header:
            yield kpb.UploadFileRequest(header=kpb.UploadFileHeader(path=path, request_id=f"up-{path}"))
        for i in range(0, len(data), CHUNK):
            yield kpb.UploadFileRequest(chunk=data[i:i + CHUNK])
        yield kpb.UploadFileRequest(end=st.WriteFileEnd())

    return await stub.UploadFile(parts(), metadata=MD, timeout=120)


async def test_a_20_mib_file_round_trips_through_the_kernel(kernel):
    data = os.urandom(20 * CHUNK + 12345)
    reply = await upload(kernel, "big/blob.bin", data)
    record = reply.syscall
    assert record.kind == ks.SYSCALL_KIND_STORAGE and record.state == ks.SYSCALL_STATE_SUCCEEDED
    assert record.storage.write.file.size == len(data)
    assert record.storage.write.file.sha256 == hashlib.sha256(data).hexdigest()

    info, received, biggest = None, bytearray(), 0
    async for part in kernel.DownloadFile(kpb.DownloadFileRequest(path="big/blob.bin"), metadata=MD, timeout=120):
        if part.HasField("info"):
            info = part.info
        else:
            biggest = max(biggest, len(part.chunk))
            received += part.chunk
    assert info is not None and info.size == len(data)
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(data).hexdigest()
    assert biggest <= CHUNK  # streamed, never one huge message


async def test_upload_without_header_and_missing_download_are_refused(kernel):
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await upload(kernel, "x.bin", b"abc", header=False)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        async for _ in kernel.DownloadFile(kpb.DownloadFileRequest(path="no/such.bin"), metadata=MD, timeout=30):
            pass
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        async for _ in kernel.DownloadFile(kpb.DownloadFileRequest(path="../etc/passwd"), metadata=MD, timeout=30):
            pass
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_second_upload_header_is_invalid_argument_and_writes_nothing(kernel):
    async def parts():
        yield kpb.UploadFileRequest(header=kpb.UploadFileHeader(path="two-headers.bin", request_id="two-headers"))
        yield kpb.UploadFileRequest(chunk=b"first part")
        yield kpb.UploadFileRequest(header=kpb.UploadFileHeader(path="elsewhere.bin"))

    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await kernel.UploadFile(parts(), metadata=MD, timeout=60)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "header" in exc.value.details()
    for path in ("two-headers.bin", "elsewhere.bin"):
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await kernel.Submit(kpb.SubmitRequest(syscall=ks.Syscall(storage=ks.StorageCall(
                stat=st.StatFileRequest(path=path)))), metadata=MD, timeout=30)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def stat(kernel, path: str):
    return await kernel.Submit(kpb.SubmitRequest(syscall=ks.Syscall(storage=ks.StorageCall(
        stat=st.StatFileRequest(path=path)))), metadata=MD, timeout=30)


async def test_an_upload_whose_caller_dies_half_way_writes_nothing(kernel, kernel_server):
    """The agent's process is killed after the header and the first chunk:
    the kernel's stream ends there without its end message, so the file is
    not written (and a retry with the request id writes it whole)."""
    address, method = f"127.0.0.1:{kernel_server.port}", "/aios.kernel.v1.KernelService/UploadFile"
    before = handled(kernel_server, method)
    await cut_off(address, method, [
        kpb.UploadFileRequest(header=kpb.UploadFileHeader(path="cut/half.bin", request_id="cut-upload")),
        kpb.UploadFileRequest(chunk=b"the first half, ")], token="uploader")
    await until(lambda: handled(kernel_server, method) > before, "the kernel to finish the cut-off upload")
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stat(kernel, "cut/half.bin")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    whole = b"the first half, then the second"
    async def parts():
        yield kpb.UploadFileRequest(header=kpb.UploadFileHeader(path="cut/half.bin", request_id="cut-upload"))
        yield kpb.UploadFileRequest(chunk=whole)
        yield kpb.UploadFileRequest(end=st.WriteFileEnd())

    reply = await kernel.UploadFile(parts(), metadata=MD, timeout=60)
    assert reply.syscall.storage.write.file.sha256 == hashlib.sha256(whole).hexdigest()
    assert (await stat(kernel, "cut/half.bin")).syscall.storage.stat.file.size == len(whole)


async def test_an_upload_must_end_with_its_end_message_and_nothing_after_it(kernel):
    header = kpb.UploadFileRequest(header=kpb.UploadFileHeader(path="unended.bin"))

    async def unended():
        yield header
        yield kpb.UploadFileRequest(chunk=b"abc")

    async def past_the_end():
        yield header
        yield kpb.UploadFileRequest(end=st.WriteFileEnd())
        yield kpb.UploadFileRequest(chunk=b"abc")

    for parts in (unended, past_the_end):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await kernel.UploadFile(parts(), metadata=MD, timeout=60)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, parts.__name__
        assert "end message" in exc.value.details(), exc.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stat(kernel, "unended.bin")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_undecodable_message_is_invalid_argument(kernel_channel):
    channel = kernel_channel  # raw bytes, no stub
    garbage = b"\x0a\xff\xff\xff\xff\x0f"  # a length prefix running past the end
    submit = channel.unary_unary("/aios.kernel.v1.KernelService/Submit")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await submit(garbage, metadata=MD, timeout=30)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not a valid message" in exc.value.details()

    header = kpb.UploadFileRequest(header=kpb.UploadFileHeader(path="garbled.bin")).SerializeToString()
    upload = channel.stream_unary("/aios.kernel.v1.KernelService/UploadFile")

    async def parts():
        yield header
        yield garbage

    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await upload(parts(), metadata=MD, timeout=30)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
