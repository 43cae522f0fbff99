"""The client other services use for llm_core's Embed RPC (memory and
storage index text by meaning): batches, a deadline per call, this
service's own credential, and errors as domain errors, with llm_core down
or slow reported as UNAVAILABLE EMBEDDINGS_UNAVAILABLE (retry later)."""

from __future__ import annotations

import grpc

from aios.llm.v1 import llm_service_pb2 as llm
from aios.llm.v1 import llm_service_pb2_grpc as llm_grpc
from services.runtime import errors
from services.runtime.channels import channel
from services.runtime.metrics import Latencies
from services.runtime.status import from_rpc_error


class EmbeddingClient:
    def __init__(self, address: str, *, model: str = "", service_token: str = "", timeout: float = 120.0,
                 batch: int = 32, dimensions: int | None = None, latencies: Latencies | None = None) -> None:
        self._channel = channel(address, service_token)
        self._stub = llm_grpc.LlmServiceStub(self._channel)
        self.model = model
        self.timeout = timeout
        self.batch = batch
        # When set, every vector must have this many dimensions.
        self.dimensions = dimensions
        # Each Embed call's seconds, as op "embed".
        self.latencies = latencies or Latencies()

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch):
            part = texts[start:start + self.batch]
            try:
                with self.latencies.time("embed"):
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
                if self.dimensions is not None and len(emb.values) != self.dimensions:
                    raise errors.FailedPrecondition(
                        f"model {resp.model!r} gives {len(emb.values)}-dimension vectors, the collection "
                        f"holds {self.dimensions}", reason="VECTOR_SIZE_MISMATCH")
                vectors.append(list(emb.values))
        return vectors

    __call__ = embed

    async def close(self) -> None:
        await self._channel.close()
