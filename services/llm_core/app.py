"""Wires llm_core onto the shared runtime.

Ready while at least one chat endpoint answered its last probe; the engine
probes them in the background, so readiness follows a server that went away
or came back without waiting for traffic.
"""

from __future__ import annotations

import asyncio

from aios.llm.v1 import llm_service_pb2 as pb
from aios.llm.v1 import llm_service_pb2_grpc as pb_grpc
from services.llm_core.config import Config
from services.llm_core.embeddings import Embeddings
from services.llm_core.engine import LlmEngine
from services.llm_core.metrics import LlmMetrics
from services.llm_core.servicer import LlmServicer
from services.runtime import trust
from services.runtime.metrics import ServiceMetrics
from services.runtime.server import Service

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["LlmService"].full_name


async def build(config: Config) -> Service:
    metrics = ServiceMetrics("llm_core", config.metrics_port)
    observer = LlmMetrics(metrics.registry)
    engine = LlmEngine(list(config.endpoints), config.routing, observer=observer, replicas=config.replicas)
    observer.watch(engine)
    embeddings = Embeddings(config.embedding_model, list(config.endpoints))
    servicer = LlmServicer(engine, embeddings)
    # The first round now, so health is true from the first call on.
    await engine.probe_due()
    watch = asyncio.create_task(engine.watch(), name="llm-endpoint-probes")

    async def ready() -> str | None:
        return unreachable(engine)

    async def close() -> None:
        await engine.close()
        await embeddings.close()

    service_trust = trust.Trust.from_tokens(trust.LLM_CORE, dict(config.service_tokens))
    return Service(
        names=[SERVICE_NAME],
        register=lambda server: pb_grpc.add_LlmServiceServicer_to_server(servicer, server),
        close=close,
        authorize=service_trust.authorize(trust.ACCEPTS[trust.LLM_CORE]),
        ready=ready,
        extra_tasks=[watch],  # cancelled by the runtime before close()
        metrics=metrics,
    )


def unreachable(engine: LlmEngine) -> str | None:
    """Why no chat model can be served, or None. Without chat endpoints
    there is nothing to wait for (embeddings are computed in process)."""
    if not engine.endpoints or any(ep.reachable for ep in engine.endpoints):
        return None
    return "no chat endpoint is reachable: " + "; ".join(
        f"{ep.name}: {ep.last_error or 'not probed yet'}" for ep in engine.endpoints)
