"""Wires the storage service onto the shared runtime: the S3 store (bucket
created with versioning at start), the Qdrant index, embeddings from
llm_core, and the servicer over them.

Ready while S3 answers for the bucket. The index and embeddings are
best-effort (a file is stored even when it cannot be indexed), so they do not
count.
"""

from __future__ import annotations

import asyncio

from aios.storage.v1 import storage_service_pb2 as pb
from aios.storage.v1 import storage_service_pb2_grpc as pb_grpc
from services.runtime import logs, trust
from services.runtime.metrics import ServiceMetrics
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
    metrics = ServiceMetrics("storage", config.metrics_port)
    # The object store's calls (op "s3.<method>"), the index's ("index.<method>"), llm_core's Embed ("embed").
    latencies = metrics.latencies("aios_storage_operation_seconds", "Seconds per backend operation")
    index = embedder = None
    if config.index_enabled:
        index = FileIndex(config.qdrant_path, config.qdrant_url)
        embedder = EmbeddingClient(config.llm_addr, model=config.embedding_model,
                                   service_token=config.service_token or service_trust.token, latencies=latencies)
    files = FileStore(objects, index, embedder, max_versions=config.max_versions,
                      quota_bytes=config.quota_bytes, quota_files=config.quota_files,
                      index_max_bytes=config.index_max_bytes, latencies=latencies)
    try:
        await files.start()
    except BaseException:
        await files.close()
        if embedder is not None:
            await embedder.close()
        raise
    servicer = StorageServicer(files)

    async def close() -> None:
        await files.close()
        if embedder is not None:
            await embedder.close()

    return Service(
        names=[SERVICE_NAME],
        register=lambda server: pb_grpc.add_StorageServiceServicer_to_server(servicer, server),
        close=close,
        authorize=service_trust.authorize(trust.ACCEPTS[trust.STORAGE]),
        ready=lambda: asyncio.to_thread(objects.reachable),
        metrics=metrics,
    )

