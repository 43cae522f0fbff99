"""The S3 object store behind the storage service, through the `minio` client.

Synchronous (minio is); the domain calls it from worker threads. Every
method turns S3 and network failures into AiosErrors: a missing object or
version becomes `Missing` (the caller knows which path it was), an
unreachable store Unavailable.

The bucket keeps S3 versions. Each object this service writes carries two
metadata fields: its sha256 and the write time with sub-second precision,
because S3 listings stamp versions only to the second on some servers
(SeaweedFS), too coarse to order versions or to roll back to a time. A third,
the request id of the write (or rollback) that made it, when it had one,
lets a retry of that call find it.

A write may carry a condition (create only, or only over the version with a
given ETag), sent as If-None-Match / If-Match for the store to evaluate as it
commits the object; a refusal is `PreconditionFailed`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import BinaryIO

import urllib3
from minio import Minio
from minio.commonconfig import REPLACE, CopySource
from minio.datatypes import CompleteMultipartUploadResult, parse_list_objects
from minio.error import MinioException, S3Error, ServerError
from minio.versioningconfig import ENABLED, VersioningConfig

from services.runtime import errors

SHA256_META = "sha256"
TIME_META = "aios-time"
REQUEST_META = "aios-request"
PART_SIZE = 8 * 1024 * 1024
_MISSING_CODES = {"NoSuchKey", "NoSuchVersion", "MethodNotAllowed"}
# A conditional write refused; AWS answers 409 ConditionalRequestConflict when
# a concurrent write or delete of the key got in the way.
_PRECONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}
# 5xx answers with an S3 error body: worth retrying, not the caller's fault.
_BUSY_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"}


class Missing(Exception):
    """The object (or the version asked for) does not exist."""


class PreconditionFailed(Exception):
    """A conditional write's condition did not hold when the store committed it."""


@dataclass
class ObjectMeta:
    key: str
    size: int
    sha256: str
    content_type: str
    modified: float  # Unix seconds
    version_id: str
    etag: str = ""  # without quotes
    request_id: str = ""  # of the call that wrote this version


@dataclass
class Version:
    version_id: str
    size: int
    modified: float
    is_latest: bool
    is_delete_marker: bool
    sha256: str = ""
    content_type: str = ""


@dataclass
class Entry:
    """One listing entry: an object, or a folder (a common prefix ending in "/")."""

    key: str
    size: int
    modified: float | None
    is_folder: bool


@contextlib.contextmanager
def _mapped(version_id: str | None = None):
    try:
        yield
    except S3Error as exc:
        # A malformed version id is a version that does not exist.
        if exc.code in _MISSING_CODES or (version_id and exc.code == "InvalidArgument"):
            raise Missing(exc.code) from None
        if exc.code in _BUSY_CODES:
            raise errors.Unavailable(f"object store unavailable: {exc.code}",
                                     reason="OBJECT_STORE_UNAVAILABLE", retry_after=1.0) from None
        if exc.code == "NoSuchBucket":
            raise errors.Unavailable("the storage bucket is missing", reason="BUCKET_MISSING") from None
        raise errors.Internal(f"object store refused the request: {exc.code}",
                              reason="OBJECT_STORE_ERROR") from None
    except (ServerError, urllib3.exceptions.HTTPError, MinioException, ConnectionError) as exc:
        raise errors.Unavailable(f"object store unavailable: {type(exc).__name__}: {exc}",
                                 reason="OBJECT_STORE_UNAVAILABLE", retry_after=1.0) from None


def _header_time(headers, fallback: str = "") -> float:
    precise = headers.get(f"x-amz-meta-{TIME_META}")
    if precise:
        with contextlib.suppress(ValueError):
            return float(precise)
    stamp = headers.get("last-modified") or fallback
    return parsedate_to_datetime(stamp).timestamp() if stamp else 0.0


def _is_true(value) -> bool:
    return str(value).lower() == "true"


def _now() -> float:
    # To the microsecond, as TIME_META keeps it: a version's info reads the
    # same when it is written and when it is stat'ed later.
    return round(time.time(), 6)


def _metadata(sha256: str, modified: float, request_id: str) -> dict[str, str]:
    """The x-amz-meta-* fields of a new version (without the prefix)."""
    fields = {SHA256_META: sha256, TIME_META: f"{modified:.6f}"}
    if request_id:
        fields[REQUEST_META] = request_id
    return fields


class ObjectStore:
    def __init__(self, endpoint: str, access_key: str, secret_key: str, bucket: str, *,
                 secure: bool = False, region: str = "us-east-1", public_endpoint: str = "",
                 pool_size: int = 16) -> None:
        http = urllib3.PoolManager(
            maxsize=pool_size,
            timeout=urllib3.Timeout(connect=5.0, read=60.0),
            retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[502, 503, 504],
                                  allowed_methods=None),
        )
        self.bucket = bucket
        self._http = http
        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure,
                            region=region, http_client=http)
        # Presigning is local computation (the region is fixed), so a second
        # client for the public name never talks to the network.
        self.presigner = (Minio(public_endpoint, access_key=access_key, secret_key=secret_key,
                                secure=secure, region=region) if public_endpoint else self.client)
        # Readiness checks: timeouts of a second and no retries, so that a
        # check on a store that is away ends quickly.
        self._probe_http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=1.0, read=1.0),
                                               retries=urllib3.Retry(total=0))
        self._probe = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure,
                            region=region, http_client=self._probe_http)
        self.endpoint = endpoint

    def reachable(self) -> str | None:
        """Why S3 does not answer for the bucket, or None when it does (one
        HEAD of the bucket: the region is fixed)."""
        try:
            if self._probe.bucket_exists(self.bucket):
                return None
            return f"bucket {self.bucket} is missing on S3 at {self.endpoint}"
        except S3Error as exc:
            return f"S3 at {self.endpoint} refused the check: {exc.code}"
        except Exception as exc:  # noqa: BLE001 - refused, timed out, reset: unreachable
            why = getattr(exc, "reason", None) or exc  # urllib3 wraps the cause
            return f"S3 at {self.endpoint} is unreachable: {type(why).__name__}"

    def ensure_bucket(self, timeout: float = 30.0) -> None:
        """Create the bucket with versioning on; wait up to `timeout` for the store."""
        deadline = time.monotonic() + timeout
        delay = 0.1
        while True:
            try:
                with _mapped():
                    if not self.client.bucket_exists(self.bucket):
                        with contextlib.suppress(S3Error):  # another replica made it
                            self.client.make_bucket(self.bucket)
                    if self.client.get_bucket_versioning(self.bucket).status != ENABLED:
                        self.client.set_bucket_versioning(self.bucket, VersioningConfig(ENABLED))
                return
            except errors.Unavailable:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def close(self) -> None:
        self._http.clear()
        self._probe_http.clear()

    # -- objects ---------------------------------------------------------

    def stat(self, key: str, version_id: str = "") -> ObjectMeta:
        with _mapped(version_id):
            st = self.client.stat_object(self.bucket, key, version_id=version_id or None)
        meta = st.metadata
        return ObjectMeta(key=key, size=st.size or 0, sha256=meta.get(f"x-amz-meta-{SHA256_META}", ""),
                          content_type=st.content_type or "", modified=_header_time(meta),
                          version_id=st.version_id or "", etag=st.etag or "",
                          request_id=meta.get(f"x-amz-meta-{REQUEST_META}", ""))

    def put(self, key: str, data: BinaryIO, length: int, *, content_type: str, sha256: str,
            if_absent: bool = False, if_etag: str = "", request_id: str = "") -> ObjectMeta:
        """Store data as the key's new version; with if_absent only if the key
        has no current object, with if_etag only over the current object of
        that ETag (else PreconditionFailed)."""
        modified = _now()
        content_type = content_type or "application/octet-stream"
        metadata = _metadata(sha256, modified, request_id)
        data.seek(0)
        with _mapped():
            if if_absent or if_etag:
                condition = {"If-None-Match": "*"} if if_absent else {"If-Match": f'"{if_etag}"'}
                headers = {"Content-Type": content_type, **{f"x-amz-meta-{k}": v for k, v in metadata.items()}}
                try:
                    version_id, etag = self._put_if(key, data, length, headers, condition)
                except S3Error as exc:
                    # A missing object fails If-Match (AWS answers 404 to it).
                    if exc.code in _PRECONDITION_CODES or (if_etag and exc.code == "NoSuchKey"):
                        raise PreconditionFailed(exc.code) from None
                    raise
            else:
                result = self.client.put_object(
                    self.bucket, key, data, length, content_type=content_type, metadata=metadata,
                    part_size=PART_SIZE, num_parallel_uploads=2)
                version_id, etag = result.version_id, result.etag
        return ObjectMeta(key=key, size=length, sha256=sha256, content_type=content_type,
                          modified=modified, version_id=version_id or "", etag=etag or "",
                          request_id=request_id)

    def _put_if(self, key: str, data: BinaryIO, length: int, headers: dict,
                condition: dict) -> tuple[str | None, str | None]:
        """A write with a condition header, as one PUT or, over a part, as a
        multipart upload whose completion carries the condition (S3 evaluates
        it there). (version id, ETag).

        minio's public calls cannot send these headers (put_object turns the
        metadata it is given into x-amz-meta-*, and _complete_multipart_upload
        takes no headers), hence its internals.
        """
        if length <= PART_SIZE:
            response = self.client._execute("PUT", self.bucket, key, body=data.read(length),
                                            headers={**headers, **condition}, no_body_trace=True)
            return response.headers.get("x-amz-version-id"), response.headers.get("etag", "").strip('"')
        upload_id = self.client._create_multipart_upload(self.bucket, key, dict(headers))
        try:
            parts = []
            for number, offset in enumerate(range(0, length, PART_SIZE), start=1):
                chunk = data.read(min(PART_SIZE, length - offset))
                etag = self.client._upload_part(self.bucket, key, chunk, None, upload_id, number)
                parts.append(f"<Part><PartNumber>{number}</PartNumber><ETag>\"{etag}\"</ETag></Part>")
            body = f"<CompleteMultipartUpload>{''.join(parts)}</CompleteMultipartUpload>".encode()
            result = CompleteMultipartUploadResult(self.client._execute(
                "POST", self.bucket, key, body=body, headers={"Content-Type": "application/xml", **condition},
                query_params={"uploadId": upload_id}))
        except BaseException:
            # Refused or failed: drop the parts (the store would keep them).
            with contextlib.suppress(Exception):
                self.client._abort_multipart_upload(self.bucket, key, upload_id)
            raise
        return result.version_id, result.etag

    def restore(self, key: str, version: Version, request_id: str = "") -> ObjectMeta:
        """Copy an earlier version on top, as a new version with a fresh time."""
        modified = _now()
        with _mapped():
            result = self.client.copy_object(
                self.bucket, key, CopySource(self.bucket, key, version_id=version.version_id),
                metadata={**_metadata(version.sha256, modified, request_id),
                          "Content-Type": version.content_type or "application/octet-stream"},
                metadata_directive=REPLACE)
        return ObjectMeta(key=key, size=version.size, sha256=version.sha256,
                          content_type=version.content_type, modified=modified,
                          version_id=result.version_id or "", request_id=request_id)

    def open(self, key: str, version_id: str = ""):
        """(meta, response) of a streaming GET; the caller closes the response."""
        with _mapped(version_id):
            resp = self.client.get_object(self.bucket, key, version_id=version_id or None)
        h = resp.headers
        meta = ObjectMeta(key=key, size=int(h.get("content-length") or 0),
                          sha256=h.get(f"x-amz-meta-{SHA256_META}", ""),
                          content_type=h.get("content-type", ""), modified=_header_time(h),
                          version_id=h.get("x-amz-version-id", ""))
        return meta, resp

    @staticmethod
    def read_chunk(resp, size: int) -> bytes:
        with _mapped():
            return resp.read(size)

    @staticmethod
    def close_response(resp) -> None:
        with contextlib.suppress(Exception):
            resp.close()
            resp.release_conn()

    def delete(self, key: str) -> None:
        """Hide the current version behind a delete marker (versions stay)."""
        with _mapped():
            self.client.remove_object(self.bucket, key)

    def delete_version(self, key: str, version_id: str) -> None:
        with _mapped(version_id):
            self.client.remove_object(self.bucket, key, version_id=version_id)

    def presign(self, key: str, version_id: str, expires: timedelta) -> str:
        with _mapped():
            return self.presigner.presigned_get_object(self.bucket, key, expires=expires,
                                                       version_id=version_id or None)

    # -- listings --------------------------------------------------------

    def list(self, prefix: str, *, recursive: bool, start_after: str = "") -> Iterator[Entry]:
        """Current objects (and folders) under prefix, in key order, lazily."""
        it = self.client.list_objects(self.bucket, prefix=prefix, recursive=recursive,
                                      start_after=start_after or None)
        while True:
            with _mapped():
                obj = next(it, None)
            if obj is None:
                return
            yield Entry(key=obj.object_name, size=obj.size or 0,
                        modified=obj.last_modified.timestamp() if obj.last_modified else None,
                        is_folder=bool(obj.is_dir))

    def list_page(self, prefix: str, *, recursive: bool, max_keys: int,
                  cursor: str = "") -> tuple[list[Entry], str]:
        """One ListObjectsV2 response: up to max_keys entries and the store's
        continuation token ("" at the end).

        Paging is left to the store's own cursor because stores disagree on
        key order (SeaweedFS lists a folder "a/" before "a-b.txt", by its
        directory order), so no cursor computed here could be exact. minio
        has no public call that exposes the token, hence its internals.
        """
        query = {"list-type": "2", "delimiter": "" if recursive else "/", "encoding-type": "url",
                 "max-keys": str(max_keys), "prefix": prefix}
        if cursor:
            query["continuation-token"] = cursor
        with _mapped():
            response = self.client._execute("GET", self.bucket, query_params=query)
            objects, truncated, token, _ = parse_list_objects(response)
        entries = [Entry(key=o.object_name, size=o.size or 0,
                         modified=o.last_modified.timestamp() if o.last_modified else None,
                         is_folder=bool(o.is_dir)) for o in objects]
        entries.sort(key=lambda e: e.key)
        return entries, (token or "") if truncated else ""

    def has_children(self, folder: str) -> bool:
        return next(self.list(folder, recursive=True), None) is not None

    def usage(self, space: str) -> tuple[int, int, dict[str, int]]:
        """(files, bytes) of the current objects under space, and their sizes by key."""
        sizes = {e.key: e.size for e in self.list(space, recursive=True)}
        return len(sizes), sum(sizes.values()), sizes

    def deleted(self, key: str, *, below: bool = False) -> bool:
        """Whether key's newest version is a delete marker (with below, that
        of key or of any key under key + "/")."""
        with _mapped():
            for obj in self.client.list_objects(self.bucket, prefix=key, recursive=True, include_version=True):
                name = obj.object_name
                if (name == key or (below and name.startswith(key + "/"))) and obj.is_delete_marker \
                        and _is_true(obj.is_latest):
                    return True
        return False

    def versions(self, key: str, *, detailed: bool = True) -> list[Version]:
        """Every version of key (delete markers included), newest first.

        `detailed` reads each version's metadata (sha256, precise time), one
        HEAD per version; without it, the order is only as good as the
        listing's timestamps.
        """
        out = []
        with _mapped():
            for obj in self.client.list_objects(self.bucket, prefix=key, include_version=True):
                if obj.object_name != key:
                    continue
                out.append(Version(
                    version_id=obj.version_id or "", size=obj.size or 0,
                    modified=obj.last_modified.timestamp() if obj.last_modified else 0.0,
                    is_latest=_is_true(obj.is_latest), is_delete_marker=bool(obj.is_delete_marker)))
        if detailed:
            for v in list(out):
                if v.is_delete_marker:
                    continue
                try:
                    st = self.stat(key, v.version_id)
                except Missing:  # pruned meanwhile
                    out.remove(v)
                    continue
                v.sha256, v.content_type, v.modified = st.sha256, st.content_type, st.modified
        out.sort(key=lambda v: (v.is_latest, v.modified), reverse=True)
        return out
