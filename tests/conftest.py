"""Shared fixtures: real servers, started once per session on free ports.

- `llm_server`: llama.cpp (xllamacpp) serving SmolLM2 over HTTP.
- `start_service(build, config)`: any of our services in-process on port 0,
  stopped at the end of the session.
- `llm_core_addr`, `kernel_addr`: llm_core over the local model, and the
  kernel over it. Tests talk gRPC to them with async clients (the servers
  share the test's event loop, so a blocking client would stall them).
"""

from __future__ import annotations

import json

import pytest
import pytest_asyncio

from services.local.llm_server import MODEL_ALIAS, start_local_server
from services.runtime import logs
from services.runtime.server import start_server

logs.configure("tests", "WARNING")


@pytest.fixture(scope="session")
def llm_server():
    srv = start_local_server("127.0.0.1", 0, parallel=4, timeout=120)
    try:
        yield srv
    finally:
        srv.stop()


@pytest_asyncio.fixture(scope="session")
async def start_service():
    """start_service(build, config) -> "127.0.0.1:PORT"; stops them all at the end."""
    running = []

    async def start(build, config):
        server = await start_server(await build(config), "127.0.0.1", 0)
        running.append(server)
        return server

    yield start
    for server in reversed(running):
        await server.stop(grace=1)


def local_endpoint(base_url: str, name: str = "local", concurrency: int = 4) -> dict:
    return {"name": name, "model": MODEL_ALIAS, "base_url": base_url, "model_id": MODEL_ALIAS,
            "max_concurrency": concurrency, "native_tools": False}


@pytest_asyncio.fixture(scope="session")
async def llm_core_addr(llm_server, start_service):
    from services.llm_core.app import build
    from services.llm_core.config import Config

    config = Config.from_env({"AIOS_LLM_ENDPOINTS": json.dumps([local_endpoint(llm_server.base_url)])})
    server = await start_service(build, config)
    return f"127.0.0.1:{server.port}"


def kernel_config(llm_addr: str, **env):
    """Kernel config over llm_addr; keyword names are AIOS_KERNEL_<NAME>
    settings (policy="fair_share") or full variable names (AIOS_MEMORY_ADDR=...)."""
    from services.scheduler.config import Config

    # Development auth (the token is the agent name) unless a test asks for access.
    return Config.from_env({"AIOS_LLM_ADDR": llm_addr, "AIOS_KERNEL_AUTH": "dev", **{
        (k if k.startswith("AIOS_") else f"AIOS_KERNEL_{k.upper()}"): str(v) for k, v in env.items()}})


@pytest_asyncio.fixture(scope="session")
async def kernel_addr(llm_core_addr, start_service):
    from services.scheduler.app import build

    server = await start_service(build, kernel_config(llm_core_addr))
    return f"127.0.0.1:{server.port}"
