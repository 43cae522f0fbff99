"""LlmService over the engine: proto in, domain call, proto out."""

from __future__ import annotations

import asyncio
import time

from aios.llm.v1 import llm_service_pb2 as pb
from aios.llm.v1 import llm_service_pb2_grpc as pb_grpc
from services.llm_core import convert
from services.llm_core.embeddings import Embeddings
from services.llm_core.engine import LlmEngine


def deadline_of(context) -> float | None:
    """The caller's gRPC deadline as a time.monotonic() instant."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class LlmServicer(pb_grpc.LlmServiceServicer):
    def __init__(self, engine: LlmEngine, embeddings: Embeddings) -> None:
        self.engine = engine
        self.embeddings = embeddings

    async def Generate(self, request, context):
        completion = await self.engine.generate(convert.chat_request(request), deadline_of(context))
        return convert.generate_response(completion)

    async def GenerateStream(self, request, context):
        async for delta in self.engine.stream(convert.chat_request(request), deadline_of(context)):
            if delta.final is not None:
                yield convert.final_chunk(delta.final)
            else:
                yield pb.GenerateStreamResponse(delta=delta.text)

    async def Embed(self, request, context):
        return await self.embeddings.embed(request)

    async def ListModels(self, request, context):
        eps = self.engine.endpoints
        up = await asyncio.gather(*(self.engine.probe(ep) for ep in eps))
        models: dict[str, pb.Model] = {}
        for ep, healthy in zip(eps, up):
            model = models.setdefault(ep.config.model, pb.Model(name=ep.config.model, kind=pb.MODEL_KIND_CHAT))
            model.endpoints.append(pb.Endpoint(
                name=ep.name, base_url=ep.config.base_url, model_id=ep.config.model_id,
                healthy=healthy, max_concurrency=ep.config.max_concurrency,
                in_flight=ep.in_flight, native_tools=ep.config.native_tools,
                last_error="" if healthy else ep.last_error,
            ))
        for name in self.embeddings.models():
            models.setdefault(name, pb.Model(name=name, kind=pb.MODEL_KIND_EMBEDDING))
        return pb.ListModelsResponse(models=list(models.values()))
