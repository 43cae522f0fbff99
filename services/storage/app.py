"""Wires the storage service onto the shared runtime: the S3 store (bucket
created with versioning at start), the Qdrant index, embeddings from
llm_core, and the servicer over them.

Ready while S3 answers for the bucket. The index and embeddings are
best-effort (a file is stored even when it cannot be indexed), so they do not
count.
"""

from __future__ import annotations

import asyncio

import urllib3
from minio import Minio
from minio.error import S3Error

from aios.storage.v1 import storage_service_pb2 as pb
from aios.storage.v1 import storage_service_pb2_grpc as pb_grpc
from services.runtime import logs, trust
from services.runtime.server import Service
from services.storage.config import DEFAULT_PORT, Config
from services.llm_core.client import EmbeddingClient
from services.storage.files import FileStore
from services.storage.index import FileIndex
from services.storage.objects import ObjectStore
from services.storage.servicer import StorageServicer

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StorageService"].full_name

__all__ = ["DEFAULT_PORT", "SERVICE_NAME", "Config", "build"]

log = logs.get("storage")


async def build(config: Config) -> Service:
    service_trust = trust.Trust.from_tokens(trust.STORAGE, dict(config.service_tokens))
    if not service_trust.enabled:
        log.warning("no service credentials configured: service trust is off")
    objects = ObjectStore(config.s3_endpoint, config.s3_access_key, config.s3_secret_key, config.bucket,
                          secure=config.s3_secure, region=config.s3_region,
                          public_endpoint=config.s3_public_endpoint)
    index = embedder = None
    if config.index_enabled:
        index = FileIndex(config.qdrant_path, config.qdrant_url)
        embedder = EmbeddingClient(config.llm_addr, model=config.embedding_model,
                                   service_token=config.service_token or service_trust.token)
    files = FileStore(objects, index, embedder, max_versions=config.max_versions,
                      quota_bytes=config.quota_bytes, quota_files=config.quota_files,
                      index_max_bytes=config.index_max_bytes)
    try:
        await files.start()
    except BaseException:
        await files.close()
        if embedder is not None:
            await embedder.close()
        raise
    servicer = StorageServicer(files)
    s3_check = S3Check(config)

    async def close() -> None:
        await files.close()
        if embedder is not None:
            await embedder.close()
        s3_check.close()

    return Service(
        names=[SERVICE_NAME],
        register=lambda server: pb_grpc.add_StorageServiceServicer_to_server(servicer, server),
        close=close,
        authorize=service_trust.authorize(trust.ACCEPTS[trust.STORAGE]),
        ready=s3_check,
    )


class S3Check:
    """Readiness: does S3 answer for the bucket? A client of its own, with
    timeouts of a second and no retries, so that a check on a store that is
    away ends quickly; it runs in a worker thread (minio is synchronous)."""

    def __init__(self, config: Config, timeout: float = 1.0) -> None:
        self.endpoint, self.bucket = config.s3_endpoint, config.bucket
        self._http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=timeout, read=timeout),
                                         retries=urllib3.Retry(total=0))
        # The region is fixed, so the check is a single HEAD of the bucket.
        self._client = Minio(config.s3_endpoint, access_key=config.s3_access_key,
                             secret_key=config.s3_secret_key, secure=config.s3_secure,
                             region=config.s3_region, http_client=self._http)

    async def __call__(self) -> str | None:
        return await asyncio.to_thread(self._check)

    def _check(self) -> str | None:
        try:
            if self._client.bucket_exists(self.bucket):
                return None
            return f"bucket {self.bucket} is missing on S3 at {self.endpoint}"
        except S3Error as exc:
            return f"S3 at {self.endpoint} refused the check: {exc.code}"
        except Exception as exc:  # noqa: BLE001 - refused, timed out, reset: unreachable
            why = getattr(exc, "reason", None) or exc  # urllib3 wraps the cause
            return f"S3 at {self.endpoint} is unreachable: {type(why).__name__}"

    def close(self) -> None:
        self._http.clear()
