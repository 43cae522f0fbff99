"""LlmService over the engine: proto in, domain call, proto out."""

from __future__ import annotations

import asyncio
import contextlib
import time

from aios.llm.v1 import llm_service_pb2 as pb
from aios.llm.v1 import llm_service_pb2_grpc as pb_grpc
from services.llm_core import convert
from services.llm_core.config import Prices
from services.llm_core.embeddings import Embeddings
from services.llm_core.engine import Endpoint, LlmEngine, probe


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
        return convert.completion(completion)

    async def GenerateStream(self, request, context):
        # aclosing: leaving early (the caller cancelled) closes the backend stream at once.
        stream = self.engine.stream(convert.chat_request(request), deadline_of(context))
        async with contextlib.aclosing(stream) as deltas:
            async for delta in deltas:
                if delta.final is not None:
                    yield convert.final_chunk(delta.final)
                else:
                    yield pb.GenerateStreamResponse(delta=delta.text)

    async def Embed(self, request, context):
        return await self.embeddings.embed(request, context.time_remaining())

    async def ListModels(self, request, context):
        chat = [(ep, pb.MODEL_KIND_CHAT) for ep in self.engine.endpoints]
        embedding = [(ep, pb.MODEL_KIND_EMBEDDING) for ep in self.embeddings.remote.values()]
        everything = chat + embedding
        up = await asyncio.gather(*(probe(ep) for ep, _ in everything))
        models: dict[str, pb.Model] = {}
        for (ep, kind), healthy in zip(everything, up):
            model = models.setdefault(ep.config.model, pb.Model(name=ep.config.model, kind=kind))
            model.endpoints.append(_endpoint(ep, healthy))
            model.available |= healthy
        for name in self.embeddings.local_models():
            # In process: no endpoint to be down.
            models.setdefault(name, pb.Model(name=name, kind=pb.MODEL_KIND_EMBEDDING, available=True))
        return pb.ListModelsResponse(models=list(models.values()))


def _endpoint(ep: Endpoint, healthy: bool) -> pb.Endpoint:
    return pb.Endpoint(
        name=ep.name, base_url=ep.config.base_url, model_id=ep.config.model_id,
        healthy=healthy, max_concurrency=ep.config.max_concurrency,
        in_flight=ep.in_flight, native_tools=ep.config.native_tools,
        last_error="" if healthy else ep.last_error, prices=_prices(ep.config.prices),
        cache_tokens=ep.config.cache_tokens or 0,
    )


def _prices(prices: Prices | None) -> pb.Prices | None:
    if prices is None:
        return None
    # cached_prompt stays unset when not configured: it then costs what prompt does.
    return pb.Prices(prompt=prices.prompt, completion=prices.completion,
                     cached_prompt=prices.cached_prompt)
