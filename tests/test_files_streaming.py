"""Files over 4 MiB through the SDK and the CLI: files.upload and
files.download stream them in chunks (UploadFile, DownloadFile) on a
kernel over a real storage service on SeaweedFS.

Binary files are not indexed, so the storage runs without its index and
nothing here needs the LLM.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os

import pytest
import pytest_asyncio

from aios.sdk import AbortedError, AsyncClient, Client, NotFoundError
from tests.conftest import kernel_config
from tests.test_storage import storage_config

MiB = 1024 * 1024
NO_LLM = "127.0.0.1:1"  # never called: these are storage syscalls only


@pytest_asyncio.fixture(scope="module")
async def kernel(tmp_path_factory, start_service):
    """The kernel's address, over storage over SeaweedFS."""
    from services.scheduler.app import build as kernel_build
    from services.storage.app import build as storage_build
    from services.local.seaweed import start_seaweed

    data = tmp_path_factory.mktemp("files-streaming")
    s3 = start_seaweed(data / "s3")
    storage = await start_service(storage_build, storage_config(s3, data / "index", index="false"))
    server = await start_service(kernel_build, kernel_config(
        NO_LLM, AIOS_STORAGE_ADDR=f"127.0.0.1:{storage.port}"))
    yield f"127.0.0.1:{server.port}"
    s3.stop(graceful=False)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def big() -> bytes:
    """9 MiB and a bit: over the inline limit, and not a whole number of chunks."""
    return os.urandom(9 * MiB + 4321)


async def test_sync_client_uploads_and_downloads_a_9_mib_file(kernel, tmp_path):
    data = big()
    local = tmp_path / "blob.bin"
    local.write_bytes(data)
    back = tmp_path / "back.bin"

    def run():
        # A blocking client: off the event loop the servers live on.
        with Client(kernel, token="sync-agent", timeout=120) as aios:
            info = aios.files.upload("big/blob.bin", local, content_type="application/octet-stream")
            got = aios.files.download("big/blob.bin", back)
            with pytest.raises(NotFoundError):
                aios.files.download("big/missing.bin", tmp_path / "missing.bin")
            with pytest.raises(FileNotFoundError):
                aios.files.upload("big/none.bin", tmp_path / "no-such-local-file")
            return info, got, aios.files.stat("big/blob.bin")

    info, got, stat = await asyncio.to_thread(run)
    assert (info.path, info.size, info.sha256) == ("big/blob.bin", len(data), sha(data))
    assert info.content_type == "application/octet-stream"
    assert got.version_id == info.version_id == stat.version_id
    assert sha(back.read_bytes()) == sha(data)
    assert not (tmp_path / "missing.bin").exists()  # a refused download writes nothing


async def test_async_client_uploads_and_downloads_a_9_mib_file(kernel):
    data = big()
    async with AsyncClient(kernel, token="async-agent", timeout=120) as aios:
        first = await aios.files.upload("big/blob.bin", data)
        assert (first.size, first.sha256) == (len(data), sha(data))
        assert sha(await aios.files.download("big/blob.bin")) == sha(data)

        # From a file object, guarded by the version it replaces.
        second = await aios.files.upload("big/blob.bin", io.BytesIO(data[::-1]), if_version_id=first.version_id)
        with pytest.raises(AbortedError):
            await aios.files.upload("big/blob.bin", data, if_version_id=first.version_id)
        sink = io.BytesIO()
        info = await aios.files.download("big/blob.bin", sink)
        assert info.version_id == second.version_id
        assert sha(sink.getvalue()) == sha(data[::-1])
        older = await aios.files.download("big/blob.bin", version_id=first.version_id)
        assert sha(older) == sha(data)


async def test_cli_puts_and_gets_a_9_mib_file(kernel, tmp_path, capsysbinary):
    from services.cli.main import main

    data = big()
    local = tmp_path / "upload.bin"
    local.write_bytes(data)

    async def aios(*argv: str) -> tuple[int, bytes, bytes]:
        capsysbinary.readouterr()
        # main() runs a blocking client: off the event loop the servers live on.
        code = await asyncio.to_thread(main, ["files", *argv, "--kernel", kernel, "--token", "cli-agent"])
        out, err = capsysbinary.readouterr()
        return code, out, err

    code, out, err = await aios("put", str(local), "big/upload.bin")
    assert code == 0, err
    assert out.decode().startswith(f"wrote big/upload.bin ({len(data)} bytes")
    assert sha(data).encode() in out

    code, _, err = await aios("get", "big/upload.bin", str(tmp_path / "download.bin"))
    assert code == 0, err
    assert sha((tmp_path / "download.bin").read_bytes()) == sha(data)

    code, out, err = await aios("get", "big/upload.bin")  # to stdout
    assert code == 0, err
    assert sha(out) == sha(data)


class FailingSource(io.RawIOBase):
    """Two chunks, then a read error: the upload must fail with it and write nothing."""

    def __init__(self) -> None:
        self.left = 2

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if not self.left:
            raise OSError("the disk went away")
        self.left -= 1
        return os.urandom(MiB)


async def test_a_failing_source_fails_the_upload_and_writes_nothing(kernel):
    def run():
        with Client(kernel, token="failing-agent", timeout=60) as aios:
            with pytest.raises(OSError, match="the disk went away"):
                aios.files.upload("big/sync.bin", FailingSource())
            with pytest.raises(NotFoundError):
                aios.files.stat("big/sync.bin")

    await asyncio.to_thread(run)
    async with AsyncClient(kernel, token="failing-agent", timeout=60) as aios:
        with pytest.raises(OSError, match="the disk went away"):
            await aios.files.upload("big/async.bin", FailingSource())
        with pytest.raises(NotFoundError):
            await aios.files.stat("big/async.bin")
