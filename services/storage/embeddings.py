"""Embeddings from llm_core (its Embed RPC), with this service's own identity."""

from __future__ import annotations

import grpc

from aios.llm.v1 import llm_service_pb2 as llm
from aios.llm.v1 import llm_service_pb2_grpc as llm_grpc
from services.runtime.interceptors import client_interceptors
from services.runtime.status import from_rpc_error

BATCH = 32
TIMEOUT = 120.0


class LlmEmbedder:
    def __init__(self, address: str, model: str = "", service_token: str = "") -> None:
        self.model = model
        self.channel = grpc.aio.insecure_channel(address, interceptors=client_interceptors(service_token))
        self.stub = llm_grpc.LlmServiceStub(self.channel)

    async def __call__(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for start in range(0, len(texts), BATCH):
            try:
                resp = await self.stub.Embed(
                    llm.EmbedRequest(model=self.model, inputs=texts[start:start + BATCH]), timeout=TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                raise from_rpc_error(exc) from None
            out.extend(list(e.values) for e in resp.embeddings)
        return out

    async def close(self) -> None:
        await self.channel.close()
