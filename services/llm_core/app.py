"""Wires llm_core onto the shared runtime."""

from __future__ import annotations

from aios.llm.v1 import llm_service_pb2 as pb
from aios.llm.v1 import llm_service_pb2_grpc as pb_grpc
from services.llm_core.config import Config
from services.llm_core.embeddings import Embeddings
from services.llm_core.engine import LlmEngine
from services.llm_core.servicer import LlmServicer
from services.runtime import trust
from services.runtime.server import Service

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["LlmService"].full_name


async def build(config: Config) -> Service:
    engine = LlmEngine(list(config.endpoints))
    embeddings = Embeddings(config.embedding_model, list(config.endpoints))
    servicer = LlmServicer(engine, embeddings)

    async def close() -> None:
        await engine.close()
        await embeddings.close()

    service_trust = trust.Trust.from_tokens(trust.LLM_CORE, dict(config.service_tokens))
    return Service(
        names=[SERVICE_NAME],
        register=lambda server: pb_grpc.add_LlmServiceServicer_to_server(servicer, server),
        close=close,
        authorize=service_trust.authorize(trust.ACCEPTS[trust.LLM_CORE]),
    )
