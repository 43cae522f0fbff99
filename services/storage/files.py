"""Per-agent files: the storage service's domain logic (no grpc here).

Every file lives in the S3 bucket under "<owner>/<path>" (see paths.py).
Writes are spooled (memory up to 8 MiB, then a temporary file) while their
sha256 is computed, so the quota is checked against the final size before
anything reaches S3, and the object appears whole or not at all. Mutations
of one owner's space run one at a time (a lock per owner in this process),
which keeps quota checks, version pruning and the index consistent.

A conditional write (`if_absent`, `if_version_id`) is decided by the object
store as it commits the object (If-None-Match / If-Match, see objects.py),
since replicas of this service do not share their locks. The stat before
only refuses early, before the body is sent. MinIO and AWS check and commit
in one step; SeaweedFS 4.48 (the local store) does so for If-None-Match on a
single PUT only: two If-Match writes, or two multipart completions, that
reach it at the same moment can both pass there.

Versions are S3 versions: each write, rollback or delete adds one; at most
`max_versions` data versions of a file are kept, older ones are deleted.
A delete hides the file behind a delete marker, so its versions can still
be listed and rolled back to.

Quotas count an owner's current files (not older versions, which
`max_versions` bounds): `quota_files` files and `quota_bytes` bytes.

A write or rollback with a request id keeps the id with the version it makes
(see objects.py). A retry finds it there while that version is current and
returns it, writing nothing; this comes before the write's conditions, which
its own first try would fail. Once another version is current, a retry
writes again. A delete marker carries no metadata, so a keyed delete of what
is already deleted succeeds (counting 0) rather than proving whose delete it
was. Like the conditions, this is decided under the owner's lock: two
replicas given one retry at the same moment could both write.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import re
import tempfile
import time
import unicodedata
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from services.runtime import errors, logs, tracing
from services.runtime.metrics import Latencies
from services.storage import index as idx
from services.storage import paths
from services.storage.objects import Missing, ObjectMeta, ObjectStore, PreconditionFailed, Version

CHUNK = 1024 * 1024
SPOOL_MEMORY = 8 * 1024 * 1024
DEFAULT_PAGE = 100
MAX_PAGE = 1000
DEFAULT_TOP_K = 5
MAX_TOP_K = 50
MAX_OWNERS = 100
MAX_QUERY_CHARS = 4000
DEFAULT_PRESIGN = 3600
MAX_PRESIGN = 7 * 24 * 3600  # S3 signatures (v4) are valid at most 7 days
MAX_REQUEST_ID_CHARS = 128
# Printable ASCII without spaces: it travels as an S3 metadata header.
_REQUEST_ID = re.compile(r"[!-~]{1,%d}" % MAX_REQUEST_ID_CHARS)

log = logs.get("storage")

Embed = Callable[[list[str]], Awaitable[list[list[float]]]]


@dataclass
class FileInfo:
    owner: str
    path: str
    size: int = 0
    sha256: str = ""
    content_type: str = ""
    modified: float | None = None
    version_id: str = ""
    is_folder: bool = False


def _info(owner: str, rel: str, meta: ObjectMeta) -> FileInfo:
    return FileInfo(owner=owner, path=rel, size=meta.size, sha256=meta.sha256,
                    content_type=meta.content_type, modified=meta.modified, version_id=meta.version_id)


def _not_found(owner: str, rel: str, version_id: str = "") -> errors.NotFound:
    if version_id:
        return errors.NotFound(f"{rel} of {owner!r} has no version {version_id!r}",
                               reason="VERSION_NOT_FOUND", field="version_id")
    return errors.NotFound(f"{owner!r} has no file {rel!r}", reason="FILE_NOT_FOUND")


def _condition_failed(rel: str, current: ObjectMeta | None, if_absent: bool,
                      if_version_id: str) -> errors.Aborted:
    """The error of a conditional write refused, given the file's current version."""
    version = current.version_id if current else ""
    if not if_version_id or (if_absent and version):
        return errors.Aborted(f"{rel} exists (version {version or '(none)'}): this write may only create it",
                              reason="FILE_EXISTS", metadata={"current_version_id": version})
    return errors.Aborted(f"{rel} is at version {version or '(none)'}, not {if_version_id}",
                          reason="VERSION_MISMATCH", metadata={"current_version_id": version})


def _content_type(value: str, rel: str, field: str) -> str:
    if len(value) > 255 or any(unicodedata.category(c) == "Cc" for c in value):
        raise errors.InvalidArgument("content_type is not valid", field=field)
    return value or mimetypes.guess_type(rel)[0] or "application/octet-stream"


def _request_id(value: str, field: str) -> str:
    if value and not _REQUEST_ID.fullmatch(value):
        raise errors.InvalidArgument(
            f"{field} must be at most {MAX_REQUEST_ID_CHARS} printable ASCII characters without spaces",
            field=field, reason="INVALID_REQUEST_ID")
    return value


def _spool(spool, digest, data: bytes) -> None:
    spool.write(data)
    digest.update(data)


def _head(spool, limit: int) -> bytes:
    spool.seek(0)
    data = spool.read(limit)
    spool.seek(0)
    return data


class FileStore:
    def __init__(self, objects: ObjectStore, index: idx.FileIndex | None = None,
                 embed: Embed | None = None, *, max_versions: int = 10, quota_bytes: int = 0,
                 quota_files: int = 0, index_max_bytes: int = 256 * 1024, io_threads: int = 16,
                 latencies: Latencies | None = None) -> None:
        self.objects = objects
        self.index = index
        self.embed = embed
        self.max_versions = max_versions
        self.quota_bytes = quota_bytes
        self.quota_files = quota_files
        self.index_max_bytes = index_max_bytes
        self._io = ThreadPoolExecutor(io_threads, thread_name_prefix="s3")
        # Embedded Qdrant is not thread-safe: one thread for all index calls.
        self._qdrant = ThreadPoolExecutor(1, thread_name_prefix="qdrant")
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # Seconds per object store and index call: op "s3.<ObjectStore method>", "index.<FileIndex method>".
        self.latencies = latencies or Latencies()

    async def start(self) -> None:
        """Reach the object store (bucket with versioning) and open the index."""
        await self._run(self.objects.ensure_bucket)
        if self.index is not None:
            await self._indexed(self.index.connect)

    async def close(self) -> None:
        await asyncio.to_thread(self._io.shutdown, True)
        if self.index is not None:
            await asyncio.get_running_loop().run_in_executor(self._qdrant, self.index.close)
        self._qdrant.shutdown(wait=True)
        self.objects.close()

    async def _run(self, fn, *args, **kwargs):
        call = asyncio.get_running_loop().run_in_executor(self._io, partial(fn, *args, **kwargs))
        if not getattr(fn, "__qualname__", "").startswith("ObjectStore."):
            return await call  # the spool, not the store
        with self.latencies.time("s3." + fn.__name__), \
                tracing.client_span("s3", fn.__name__, **{"aws.s3.bucket": getattr(self.objects, "bucket", "")}):
            return await call

    async def _indexed(self, fn, *args):
        with self.latencies.time("index." + fn.__name__), tracing.client_span("qdrant", fn.__name__):
            return await asyncio.get_running_loop().run_in_executor(self._qdrant, partial(fn, *args))

    def _lock(self, owner: str) -> asyncio.Lock:
        lock = self._locks.get(owner)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[owner] = lock
        return lock

    # -- write -----------------------------------------------------------

    async def write(self, owner: str, path: str, chunks: AsyncIterator[bytes], *,
                    content_type: str = "", if_version_id: str = "", if_absent: bool = False,
                    request_id: str = "") -> FileInfo:
        owner = paths.owner(owner, "header.owner")
        rel = paths.path(path, "header.path")
        content_type = _content_type(content_type, rel, "header.content_type")
        if if_version_id:
            paths.version_id(if_version_id, "header.if_version_id")
        _request_id(request_id, "header.request_id")
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)
        try:
            digest, size = hashlib.sha256(), 0
            async for chunk in chunks:
                if len(chunk) > CHUNK:
                    raise errors.InvalidArgument(f"a chunk of {len(chunk)} bytes is over the 1 MiB limit",
                                                 field="chunk")
                size += len(chunk)
                if self.quota_bytes and size > self.quota_bytes:
                    raise self._over_bytes(owner, size, self.quota_bytes)
                await self._run(_spool, spool, digest, chunk)
            text = None
            if self.index is not None and self.embed is not None and size <= self.index_max_bytes:
                text = idx.text_of(await self._run(_head, spool, size), content_type)
            texts, vectors = await self._embed_file(rel, text)
        except BaseException:
            spool.close()
            raise
        # Shielded: once committing starts, a cancelled caller does not leave
        # the object written but unpruned or unindexed.
        return await asyncio.shield(self._commit_write(
            owner, rel, spool, size, content_type, digest.hexdigest(), if_version_id, if_absent,
            request_id, texts, vectors))

    async def _commit_write(self, owner, rel, spool, size, content_type, sha256, if_version_id,
                            if_absent, request_id, texts, vectors) -> FileInfo:
        key = paths.key(owner, rel)
        try:
            async with self._lock(owner):
                # The current version, not the one named: a file deleted since
                # is refused here too (MinIO lets If-Match pass over a delete
                # marker).
                current = await self._current(key) if (if_version_id or if_absent or request_id) else None
                if request_id and current and current.request_id == request_id:
                    log.info("file write retried", owner=owner, path=rel, version_id=current.version_id)
                    return _info(owner, rel, current)
                if_etag = ""
                if if_version_id or if_absent:
                    version = current.version_id if current else ""
                    if (if_absent and version) or (if_version_id and version != if_version_id):
                        raise _condition_failed(rel, current, if_absent, if_version_id)
                    # The store compares ETags, not version ids: a newer version
                    # with the same bytes passes too, which is harmless, as the
                    # content the writer expected is what is current.
                    if_etag = current.etag if if_version_id else ""
                await self._check_quota(owner, key, size)
                try:
                    meta = await self._run(self.objects.put, key, spool, size, content_type=content_type,
                                           sha256=sha256, if_absent=if_absent, if_etag=if_etag,
                                           request_id=request_id)
                except PreconditionFailed:
                    # Another write (likely another replica's) came first.
                    raise _condition_failed(rel, await self._current(key), if_absent, if_version_id) from None
                await self._settle(owner, rel, meta.version_id, texts, vectors)
        finally:
            spool.close()
        log.info("file written", owner=owner, path=rel, size=size, version_id=meta.version_id,
                 indexed=vectors is not None)
        return _info(owner, rel, meta)

    async def _current(self, key: str) -> ObjectMeta | None:
        try:
            return await self._run(self.objects.stat, key)
        except Missing:
            return None

    def _over_bytes(self, owner: str, total: int, limit: int) -> errors.ResourceExhausted:
        return errors.ResourceExhausted(
            f"agent {owner!r} would use {total} bytes, over its quota of {limit} bytes",
            reason="QUOTA_BYTES", metadata={"limit": str(limit), "requested": str(total)})

    async def _check_quota(self, owner: str, key: str, new_size: int) -> None:
        if not (self.quota_bytes or self.quota_files):
            return
        files, used, sizes = await self._run(self.objects.usage, paths.space(owner))
        old = sizes.get(key)
        new_files = files + (0 if old is not None else 1)
        new_bytes = used - (old or 0) + new_size
        if self.quota_files and new_files > self.quota_files:
            raise errors.ResourceExhausted(
                f"agent {owner!r} would have {new_files} files, over its quota of {self.quota_files}",
                reason="QUOTA_FILES", metadata={"limit": str(self.quota_files), "used": str(files)})
        if self.quota_bytes and new_bytes > self.quota_bytes:
            raise self._over_bytes(owner, new_bytes, self.quota_bytes)

    async def _settle(self, owner: str, rel: str, version_id: str, texts, vectors) -> None:
        """Prune versions and update the index after a new version is stored.

        The new version is already committed, so a failure here is logged,
        not reported: the next write of the file prunes and indexes again.
        """
        try:
            await self._prune(paths.key(owner, rel))
        except errors.AiosError as exc:
            log.warning("pruning versions failed", owner=owner, path=rel, error=exc.message)
        try:
            await self._reindex(owner, rel, version_id, texts, vectors)
        except Exception as exc:  # noqa: BLE001 - the write stands; the index lags
            log.warning("indexing failed", owner=owner, path=rel, error=repr(exc))

    async def _prune(self, key: str) -> None:
        """Delete data versions beyond the newest max_versions (and older delete markers)."""
        listed = await self._run(self.objects.versions, key, detailed=False)
        if sum(not v.is_delete_marker for v in listed) <= self.max_versions:
            return
        ordered = await self._run(self.objects.versions, key)
        kept = 0
        for v in ordered:
            if kept >= self.max_versions:
                await self._run(self.objects.delete_version, key, v.version_id)
            elif not v.is_delete_marker:
                kept += 1

    # -- index -----------------------------------------------------------

    async def _embed_file(self, rel: str, text: str | None):
        """(passages, vectors) of a text file; (None, None) when it is not indexed."""
        if text is None:
            return None, None
        texts = idx.passages(text)
        if not texts:
            return [], []
        try:
            # The path is embedded with each passage: file names carry meaning.
            vectors = await self.embed([f"{rel}\n{t}" for t in texts])
        except errors.AiosError as exc:
            # The file is still stored; it is just not searchable until rewritten.
            log.warning("indexing failed", path=rel, error=exc.message, code=exc.code)
            return None, None
        return texts, vectors

    async def _reindex(self, owner: str, rel: str, version_id: str, texts, vectors) -> None:
        if self.index is None:
            return
        if vectors is None:
            await self._indexed(self.index.remove, owner, [rel])
        else:
            await self._indexed(self.index.replace, owner, rel, version_id, texts, vectors)

    # -- read ------------------------------------------------------------

    async def read(self, owner: str, path: str, version_id: str = "") -> tuple[FileInfo, AsyncIterator[bytes]]:
        owner, rel = paths.owner(owner), paths.path(path)
        if version_id:
            paths.version_id(version_id)
        try:
            meta, resp = await self._run(self.objects.open, paths.key(owner, rel), version_id)
        except Missing:
            raise _not_found(owner, rel, version_id) from None

        async def body() -> AsyncIterator[bytes]:
            try:
                while True:
                    data = await self._run(ObjectStore.read_chunk, resp, CHUNK)
                    if not data:
                        return
                    yield data
            finally:
                ObjectStore.close_response(resp)

        return _info(owner, rel, meta), body()

    async def stat(self, owner: str, path: str) -> FileInfo:
        owner, rel = paths.owner(owner), paths.path(path)
        key = paths.key(owner, rel)
        try:
            return _info(owner, rel, await self._run(self.objects.stat, key))
        except Missing:
            if await self._run(self.objects.has_children, key + "/"):
                return FileInfo(owner=owner, path=rel, is_folder=True)
            raise _not_found(owner, rel) from None

    async def list(self, owner: str, prefix: str = "", *, page_size: int = 0, page_token: str = "",
                   recursive: bool = False) -> tuple[list[FileInfo], str]:
        owner, pre = paths.owner(owner), paths.prefix(prefix)
        if page_size < 0:
            raise errors.InvalidArgument("page_size must not be negative", field="page_size")
        size = min(page_size or DEFAULT_PAGE, MAX_PAGE)
        space = paths.space(owner)
        listing = f"{owner}\x00{pre}\x00{int(recursive)}"
        cursor = paths.decode_token(page_token, listing) if page_token else ""
        entries, next_cursor = await self._run(self.objects.list_page, space + pre, recursive=recursive,
                                               max_keys=size, cursor=cursor)
        files = [FileInfo(owner=owner, path=paths.relative(owner, e.key).rstrip("/"), size=e.size,
                          modified=e.modified, is_folder=e.is_folder) for e in entries]
        return files, paths.encode_token(listing, next_cursor) if next_cursor else ""

    # -- delete ----------------------------------------------------------

    async def delete(self, owner: str, path: str, *, recursive: bool = False, request_id: str = "") -> int:
        owner, rel = paths.owner(owner), paths.path(path)
        _request_id(request_id, "request_id")
        key = paths.key(owner, rel)
        async with self._lock(owner):
            try:
                await self._run(self.objects.stat, key)
                doomed = [key]
            except Missing:
                doomed = []
            if recursive:
                doomed += [e.key for e in await self._run(lambda: list(self.objects.list(key + "/", recursive=True)))]
            elif not doomed:
                if await self._run(self.objects.has_children, key + "/"):
                    raise errors.FailedPrecondition(f"{rel} is a folder; delete it with recursive",
                                                    reason="IS_A_FOLDER", field="recursive")
            if not doomed:
                if request_id and await self._run(self.objects.deleted, key, below=recursive):
                    # Likely this call's first try; either way, what it asked for holds.
                    return 0
                raise _not_found(owner, rel)
            for k in doomed:
                await self._run(self.objects.delete, k)
            if self.index is not None:
                await self._indexed(self.index.remove, owner, [paths.relative(owner, k) for k in doomed])
        log.info("files deleted", owner=owner, path=rel, count=len(doomed))
        return len(doomed)

    # -- versions --------------------------------------------------------

    async def versions(self, owner: str, path: str) -> list[Version]:
        owner, rel = paths.owner(owner), paths.path(path)
        found = await self._run(self.objects.versions, paths.key(owner, rel))
        if not found:
            raise _not_found(owner, rel)
        return found

    async def rollback(self, owner: str, path: str, *, version_id: str = "",
                       at: float | None = None, request_id: str = "") -> FileInfo:
        """Make an earlier version current again, as a new version."""
        owner, rel = paths.owner(owner), paths.path(path)
        if not version_id and at is None:
            raise errors.InvalidArgument("set version_id or time", field="target")
        if version_id:
            paths.version_id(version_id)
        _request_id(request_id, "request_id")
        key = paths.key(owner, rel)
        async with self._lock(owner):
            current = await self._current(key) if request_id else None
            if current and current.request_id == request_id:
                return _info(owner, rel, current)  # made by this call's first try
            found = await self._run(self.objects.versions, key)
            if not found:
                raise _not_found(owner, rel)
            if version_id:
                target = next((v for v in found if v.version_id == version_id), None)
                if target is None:
                    raise _not_found(owner, rel, version_id)
                if target.is_delete_marker:
                    raise errors.InvalidArgument(f"version {version_id} is a deletion, not content",
                                                 field="version_id", reason="DELETE_MARKER")
            else:
                earlier = [v for v in found if v.modified <= at]
                if not earlier:
                    raise errors.NotFound(f"{rel} had no version at that time", reason="NO_VERSION_AT_TIME",
                                          field="time")
                target = max(earlier, key=lambda v: v.modified)
                if target.is_delete_marker:
                    raise errors.NotFound(f"{rel} was deleted at that time", reason="DELETED_AT_TIME",
                                          field="time")
            if target.is_latest:
                return _info(owner, rel, await self._run(self.objects.stat, key, target.version_id))
            await self._check_quota(owner, key, target.size)
            meta = await self._run(self.objects.restore, key, target, request_id)
            texts, vectors = None, None
            if self.index is not None and self.embed is not None and meta.size <= self.index_max_bytes:
                data = await self._read_all(key, meta.version_id)
                texts, vectors = await self._embed_file(rel, idx.text_of(data, meta.content_type))
            await self._settle(owner, rel, meta.version_id, texts, vectors)
        log.info("file rolled back", owner=owner, path=rel, to=target.version_id, version_id=meta.version_id)
        return _info(owner, rel, meta)

    async def _read_all(self, key: str, version_id: str) -> bytes:
        _, resp = await self._run(self.objects.open, key, version_id)
        try:
            return await self._run(resp.read)
        finally:
            ObjectStore.close_response(resp)

    # -- retrieval and links --------------------------------------------

    async def retrieve(self, owners: list[str], query: str, *, top_k: int = 0,
                       prefix: str = "") -> list[idx.Passage]:
        if not owners:
            raise errors.InvalidArgument("owners must not be empty", field="owners")
        if len(owners) > MAX_OWNERS:
            raise errors.InvalidArgument(f"at most {MAX_OWNERS} owners", field="owners")
        owners = sorted({paths.owner(o, "owners") for o in owners})
        if not query.strip():
            raise errors.InvalidArgument("query is required", field="query")
        if len(query) > MAX_QUERY_CHARS:
            raise errors.InvalidArgument(f"query is over {MAX_QUERY_CHARS} characters", field="query")
        if top_k < 0:
            raise errors.InvalidArgument("top_k must not be negative", field="top_k")
        k = min(top_k or DEFAULT_TOP_K, MAX_TOP_K)
        pre = paths.prefix(prefix)
        if self.index is None or self.embed is None:
            raise errors.FailedPrecondition("semantic retrieval is disabled on this service",
                                            reason="RETRIEVAL_DISABLED")
        vector = (await self.embed([query]))[0]
        return await self._indexed(self.index.search, owners, vector, k, pre)

    async def presign(self, owner: str, path: str, expires_in: float | None = None) -> tuple[str, float]:
        """A URL reading the file's current version from the object store, and when it expires."""
        owner, rel = paths.owner(owner), paths.path(path)
        seconds = DEFAULT_PRESIGN if expires_in is None else expires_in
        if not 1 <= seconds <= MAX_PRESIGN:
            raise errors.InvalidArgument(f"expires_in must be between 1 s and {MAX_PRESIGN} s (7 days)",
                                         field="expires_in")
        key = paths.key(owner, rel)
        try:
            meta = await self._run(self.objects.stat, key)
        except Missing:
            raise _not_found(owner, rel) from None
        expire = time.time() + seconds
        url = await self._run(self.objects.presign, key, meta.version_id, timedelta(seconds=int(seconds)))
        return url, expire
