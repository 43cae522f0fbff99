"""Wires the memory service onto the shared runtime.

With a Qdrant server (AIOS_MEMORY_QDRANT_URL) it is ready while that server
answers /readyz; embedded Qdrant runs in process and is always ready.
"""

from __future__ import annotations

import httpx

from aios.memory.v1 import memory_service_pb2 as pb
from aios.memory.v1 import memory_service_pb2_grpc as pb_grpc
from services.memory.config import Config
from services.llm_core.client import EmbeddingClient
from services.memory.memory import Memory, WorkingPolicy
from services.memory.records import Limits
from services.memory.servicer import MemoryServicer
from services.memory.store import QdrantStore
from services.runtime import logs, trust
from services.runtime.metrics import ServiceMetrics
from services.runtime.server import Service

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["MemoryService"].full_name

__all__ = ["Config", "SERVICE_NAME", "build"]

log = logs.get("memory")


async def build(config: Config) -> Service:
    service_trust = trust.Trust.from_tokens(trust.MEMORY, dict(config.service_tokens))
    if not service_trust.enabled:
        log.warning("no service credentials configured: service trust is off")
    metrics = ServiceMetrics("memory", config.metrics_port)
    # Qdrant's calls (op "qdrant.<method>") and llm_core's Embed ("embed").
    latencies = metrics.latencies("aios_memory_operation_seconds", "Seconds per backend operation")
    store = await QdrantStore.open(
        path=config.qdrant_path, url=config.qdrant_url, api_key=config.qdrant_api_key,
        collection=config.collection, vector_size=config.vector_size, latencies=latencies)
    # 64 inputs a call: llm_core accepts more; smaller calls keep each short.
    embeddings = EmbeddingClient(
        config.llm_addr, model=config.embedding_model, dimensions=config.vector_size,
        service_token=config.service_token or service_trust.token, timeout=config.embed_timeout, batch=64,
        latencies=latencies)
    memory = Memory(store, embeddings,
                    Limits(max_content_bytes=config.max_content_bytes, max_batch=config.max_batch),
                    WorkingPolicy(limit=config.working_limit, k=config.lru_k))
    servicer = MemoryServicer(memory)
    qdrant_check = QdrantCheck(config.qdrant_url, config.qdrant_api_key) if config.qdrant_url else None

    async def close() -> None:
        await embeddings.close()
        await store.close()
        if qdrant_check is not None:
            await qdrant_check.close()

    return Service(
        names=[SERVICE_NAME],
        register=lambda server: pb_grpc.add_MemoryServiceServicer_to_server(servicer, server),
        close=close,
        # Only the kernel calls memory; it has checked the agent's right to `owner`.
        authorize=service_trust.authorize(trust.ACCEPTS[trust.MEMORY]),
        ready=qdrant_check,
        metrics=metrics,
    )


class QdrantCheck:
    """Readiness of a Qdrant server: GET /readyz, with a client of its own
    (the store's calls queue on one worker thread; a check must not wait
    behind them)."""

    def __init__(self, url: str, api_key: str = "", timeout: float = 1.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(timeout=timeout, headers={"api-key": api_key} if api_key else None)

    async def __call__(self) -> str | None:
        try:
            resp = await self._http.get(f"{self.url}/readyz")
        except httpx.HTTPError as exc:
            return f"Qdrant at {self.url} is unreachable: {type(exc).__name__}"
        if resp.status_code != 200:
            return f"Qdrant at {self.url} is not ready: HTTP {resp.status_code}"
        return None

    async def close(self) -> None:
        await self._http.aclose()
