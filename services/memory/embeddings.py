"""Vectors for memory content, from llm_core's Embed RPC.

Calls carry this service's credential and the current request's id and agent
(the shared client interceptors).
"""

from __future__ import annotations

import grpc

from aios.llm.v1 import llm_service_pb2 as llm
from aios.llm.v1 import llm_service_pb2_grpc as llm_grpc
from services.runtime import errors
from services.runtime.interceptors import client_interceptors
from services.runtime.status import from_rpc_error

# Inputs per Embed call (llm_core accepts more; smaller calls keep each short).
CHUNK = 64


class LlmEmbeddings:
    def __init__(self, address: str, *, model: str, dimensions: int, service_token: str,
                 timeout: float) -> None:
        self._channel = grpc.aio.insecure_channel(address, interceptors=client_interceptors(service_token))
        self._stub = llm_grpc.LlmServiceStub(self._channel)
        self.model = model
        self.dimensions = dimensions
        self.timeout = timeout

    async def embed(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), CHUNK):
            part = texts[start:start + CHUNK]
            try:
                resp = await self._stub.Embed(llm.EmbedRequest(model=self.model, inputs=part),
                                              timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise errors.Unavailable(f"the embedding service is unavailable: {exc.details()}",
                                             reason="EMBEDDINGS_UNAVAILABLE", retry_after=1.0) from None
                raise from_rpc_error(exc) from None
            if len(resp.embeddings) != len(part):
                raise errors.Internal(f"llm_core returned {len(resp.embeddings)} embeddings for {len(part)} inputs")
            for emb in resp.embeddings:
                if len(emb.values) != self.dimensions:
                    raise errors.FailedPrecondition(
                        f"model {resp.model!r} gives {len(emb.values)}-dimension vectors, the memory "
                        f"collection holds {self.dimensions}", reason="VECTOR_SIZE_MISMATCH")
                vectors.append(list(emb.values))
        return vectors

    async def close(self) -> None:
        await self._channel.close()
