"""Embeddings for memory and storage: the local all-MiniLM-L6-v2 (NumPy, in
process, off the event loop) or any OpenAI-compatible /v1/embeddings endpoint."""

from __future__ import annotations

import asyncio

import openai

from aios.common.v1 import llm_pb2 as lc
from aios.llm.v1 import llm_service_pb2 as pb
from services.llm_core.config import EndpointConfig
from services.llm_core.engine import Endpoint, map_error
from services.runtime import errors

LOCAL = "local"
LOCAL_MODEL_NAME = "all-MiniLM-L6-v2"
# Inputs per Embed call; larger batches should be split by the caller.
MAX_INPUTS = 2048


class Embeddings:
    def __init__(self, default_model: str, endpoints: list[EndpointConfig]) -> None:
        self.default_model = default_model
        self.remote = {c.model: Endpoint(c) for c in endpoints if c.kind == "embedding"}
        self._local = None
        self._lock = asyncio.Lock()

    def models(self) -> list[str]:
        return [*self.local_models(), *self.remote]

    def local_models(self) -> list[str]:
        return [LOCAL_MODEL_NAME]

    async def _local_embedder(self):
        async with self._lock:
            if self._local is None:
                from services.llm_core.embedder import LocalEmbedder

                self._local = await asyncio.to_thread(LocalEmbedder)
        return self._local

    async def embed(self, request: pb.EmbedRequest, timeout: float | None = None) -> pb.EmbedResponse:
        if not request.inputs:
            raise errors.InvalidArgument("inputs must not be empty", field="inputs")
        if len(request.inputs) > MAX_INPUTS:
            raise errors.InvalidArgument(f"at most {MAX_INPUTS} inputs per call", field="inputs")
        model = request.model or self.default_model
        if model in (LOCAL, LOCAL_MODEL_NAME):
            embedder = await self._local_embedder()
            vectors, tokens = await asyncio.to_thread(embedder.embed_counted, list(request.inputs))
            return pb.EmbedResponse(
                embeddings=[pb.Embedding(values=v.tolist()) for v in vectors],
                dimensions=vectors.shape[1], model=LOCAL_MODEL_NAME,
                usage=lc.Usage(prompt_tokens=tokens, total_tokens=tokens))
        ep = self.remote.get(model)
        if ep is None:
            raise errors.NotFound(f"unknown embedding model {model!r}", reason="UNKNOWN_MODEL", field="model")
        try:
            resp = await ep.next_client().embeddings.create(model=ep.config.model_id, input=list(request.inputs),
                                                     timeout=timeout)
        except openai.APIError as exc:
            raise map_error(exc, ep) from exc
        if len(resp.data) != len(request.inputs):
            raise errors.Unavailable(f"endpoint {ep.name} returned {len(resp.data)} vectors "
                                     f"for {len(request.inputs)} inputs", reason="BACKEND_ERROR")
        data = sorted(resp.data, key=lambda d: d.index)
        dims = len(data[0].embedding) if data else 0
        return pb.EmbedResponse(
            embeddings=[pb.Embedding(values=d.embedding) for d in data], dimensions=dims,
            model=resp.model or model,
            usage=lc.Usage(prompt_tokens=getattr(resp.usage, "prompt_tokens", 0) or 0,
                           total_tokens=getattr(resp.usage, "total_tokens", 0) or 0))

    async def close(self) -> None:
        for ep in self.remote.values():
            await ep.close()
