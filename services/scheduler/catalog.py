"""The models llm_core serves, how many calls each takes at once, and the
kernel's default model.

Asked of llm_core's ListModels and cached; an unknown model triggers a
refresh (at most every REFRESH_SECONDS) before it is refused with NOT_FOUND.
The default model is the configured one, else the first chat model llm_core
lists (its first configured endpoint's). Each endpoint's prices come along,
for what calls cost.
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
    def __init__(self, channel: grpc.aio.Channel, default_capacity: int, default_model: str = "") -> None:
        self._stub = llm_grpc.LlmServiceStub(channel)
        self._default = default_capacity
        self._default_model = default_model
        self.capacity: dict[str, int] = {}
        # The chat models as llm_core last listed them, in its order.
        self.models: list[llm.Model] = []
        self.embedding_models: list[str] = []
        self._refreshed = 0.0
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        try:
            resp = await self._stub.ListModels(llm.ListModelsRequest(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        self._refreshed = time.monotonic()
        self.models = [m for m in resp.models if m.kind != llm.MODEL_KIND_EMBEDDING]
        self.embedding_models = [m.name for m in resp.models if m.kind == llm.MODEL_KIND_EMBEDDING]
        self.capacity = {m.name: sum(e.max_concurrency for e in m.endpoints) or self._default
                         for m in self.models}

    async def listing(self) -> list[llm.Model]:
        """The chat models with their endpoints' health as of now."""
        await self.refresh()
        return self.models

    async def default_model(self) -> str:
        """The model an LLM syscall without one gets; NOT_FOUND when llm_core
        serves no chat model."""
        if self._default_model:
            return self._default_model
        if not self.models:
            async with self._lock:
                if not self.models:
                    await self.refresh()
        if not self.models:
            raise errors.NotFound("llm_core serves no chat model, so there is no default model",
                                  reason="NO_DEFAULT_MODEL", field="syscall.llm.model")
        return self.models[0].name

    async def check(self, model: str, embedding: bool = False) -> None:
        """NOT_FOUND unless llm_core serves `model` (a chat model, or an
        embedding model with `embedding`)."""
        def served():
            return self.embedding_models if embedding else self.capacity

        def known() -> bool:
            return model in served()

        if known():
            return
        # One refresh at a time: a burst of agents at a cold kernel must not
        # each ask llm_core (which probes every endpoint) at once.
        async with self._lock:
            if not known() and (time.monotonic() - self._refreshed >= REFRESH_SECONDS or not served()):
                await self.refresh()
        if not known():
            what = "embedding model" if embedding else "model"
            names = ", ".join(sorted(served())) or "none"
            raise errors.NotFound(f"unknown {what} {model!r} (served: {names})", reason="UNKNOWN_MODEL",
                                  field="syscall.embed.model" if embedding else "syscall.llm.model")

    def capacity_of(self, resource: str) -> int:
        return self.capacity.get(resource.removeprefix("llm:"), self._default)

    def cache_of(self, resource: str) -> int:
        """Tokens the prefix caches of an LLM resource's endpoints hold in all;
        0 unless every endpoint says what its cache holds."""
        sizes = [ep.cache_tokens for ep in self._endpoints(resource.removeprefix("llm:"))]
        return sum(sizes) if sizes and all(sizes) else 0

    def _endpoints(self, model: str):
        return next((m.endpoints for m in self.models if m.name == model), ())

    def prices(self, model: str, endpoint: str) -> llm.Prices | None:
        """What the endpoint that served a call charges (None: not priced)."""
        for ep in self._endpoints(model):
            if ep.name == endpoint:
                return ep.prices if ep.HasField("prices") else None
        return None

    def estimate_price(self, model: str) -> tuple[float, float]:
        """The highest prompt and completion prices over a model's endpoints:
        what a call may cost before it is known where it runs."""
        eps = [ep.prices for ep in self._endpoints(model) if ep.HasField("prices")]
        return (max((p.prompt for p in eps), default=0.0), max((p.completion for p in eps), default=0.0))
