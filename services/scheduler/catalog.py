"""The models llm_core serves and how many calls each takes at once.

Asked of llm_core's ListModels and cached; an unknown model triggers a
refresh (at most every REFRESH_SECONDS) before it is refused with NOT_FOUND.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from aios.llm.v1 import llm_service_pb2 as llm
from aios.llm.v1 import llm_service_pb2_grpc as llm_grpc
from services.runtime import errors
from services.runtime.status import from_rpc_error

REFRESH_SECONDS = 2.0


class ModelCatalog:
    def __init__(self, channel: grpc.aio.Channel, default_capacity: int) -> None:
        self._stub = llm_grpc.LlmServiceStub(channel)
        self._default = default_capacity
        self.capacity: dict[str, int] = {}
        self._refreshed = 0.0
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        try:
            resp = await self._stub.ListModels(llm.ListModelsRequest(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        self._refreshed = time.monotonic()
        self.capacity = {
            m.name: sum(e.max_concurrency for e in m.endpoints) or self._default
            for m in resp.models if m.kind != llm.MODEL_KIND_EMBEDDING
        }

    async def check(self, model: str) -> None:
        if model in self.capacity:
            return
        # One refresh at a time: a burst of agents at a cold kernel must not
        # each ask llm_core (which probes every endpoint) at once.
        async with self._lock:
            if model not in self.capacity and (
                    time.monotonic() - self._refreshed >= REFRESH_SECONDS or not self.capacity):
                await self.refresh()
        if model not in self.capacity:
            known = ", ".join(sorted(self.capacity)) or "none"
            raise errors.NotFound(f"unknown model {model!r} (served: {known})",
                                  reason="UNKNOWN_MODEL", field="syscall.llm.model")

    def capacity_of(self, resource: str) -> int:
        return self.capacity.get(resource.removeprefix("llm:"), self._default)
