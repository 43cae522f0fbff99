"""A retried request id runs once; one whose first attempt found a service
unavailable (so did nothing) runs again when the service is back."""

from __future__ import annotations

import pytest

from aios.sdk import AsyncClient, UnavailableError
from services.cli.stack import free_port
from services.runtime.server import start_server
from tests.conftest import kernel_config


async def test_retry_after_unavailable_runs_again_once(llm_core_addr, start_service, tmp_path):
    from services.memory.app import build as memory_build
    from services.memory.config import Config as MemoryConfig
    from services.scheduler.app import build as kernel_build

    port = free_port()  # memory will come up here later
    kernel = await start_service(kernel_build, kernel_config(llm_core_addr, AIOS_MEMORY_ADDR=f"127.0.0.1:{port}"))
    async with AsyncClient(f"127.0.0.1:{kernel.port}", token="retrier", retries=0, timeout=30) as c:
        with pytest.raises(UnavailableError):
            await c.memory.add("remember me", request_id="once")
        memory = await start_server(await memory_build(MemoryConfig.from_env({
            "AIOS_MEMORY_QDRANT_PATH": str(tmp_path / "q"), "AIOS_LLM_ADDR": llm_core_addr})), "127.0.0.1", port)
        try:
            # The SDK's own retries (same request id) ride out the reconnect.
            c.retries = 8
            first = await c.memory.add("remember me", request_id="once")
            again = await c.memory.add("remember me", request_id="once")
            assert first.id == again.id
            listing = await c.memory.list()
            assert [m.content for m in listing.memories] == ["remember me"]
        finally:
            await memory.stop(grace=1)
