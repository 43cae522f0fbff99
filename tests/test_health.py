"""Health that tells the truth: readiness follows the backends, liveness does not.

On real parts: storage over a real SeaweedFS that is killed and started
again on its port and data folder; llm_core over a real llama.cpp server
that is stopped and started again on its port, with no generation in
between (only the background probes can see it come back); the runtime's
readiness loop with checks that fail, hang and recover. No Qdrant server
ships on PyPI, so memory's check is run directly on an address where nothing
listens, and memory over embedded Qdrant is shown ready. Every wait is a
bounded poll.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from urllib.parse import urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aios.llm.v1 import llm_service_pb2 as llm_pb
from aios.llm.v1 import llm_service_pb2_grpc as llm_grpc
from aios.common.v1 import llm_pb2 as lc
from services.local.llm_server import MODEL_ALIAS, start_local_server
from services.local.seaweed import start_seaweed
from services.runtime.health import LIVENESS, check_once
from services.runtime.server import Service, start_server
from tests.conftest import local_endpoint
from tests.support.llm import generate

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
Status = health_pb2.HealthCheckResponse.ServingStatus


async def status(address: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        resp = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2)
    return resp.status


async def wait_status(address: str, want: int, timeout: float, service: str = "") -> float:
    """Poll health until it is `want`; the seconds it took."""
    t0 = time.monotonic()
    while (got := await status(address, service)) != want:
        assert time.monotonic() - t0 < timeout, \
            f"{address} {service!r} still {Status.Name(got)} after {timeout:.0f}s, want {Status.Name(want)}"
        await asyncio.sleep(0.1)
    return time.monotonic() - t0


def closed_port() -> int:
    """A loopback port where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the runtime ------------------------------------------------------------


async def test_health_follows_a_readiness_check_that_fails_hangs_and_recovers():
    state = {"reason": None, "hang": False}

    async def ready() -> str | None:
        if state["hang"]:
            await asyncio.Event().wait()  # never answers: the timeout must end it
        return state["reason"]

    names = ["test.v1.ThingService"]
    running = await start_server(Service(names=names, register=lambda server: None, ready=ready,
                                         ready_every=0.05, ready_timeout=0.2))
    address = f"127.0.0.1:{running.port}"
    try:
        for name in ("", *names, LIVENESS):
            assert await status(address, name) == SERVING
        state["reason"] = "the backend is away"
        await wait_status(address, NOT_SERVING, 10)
        assert await status(address, names[0]) == NOT_SERVING
        assert running.readiness.reason == "the backend is away"
        assert await status(address, LIVENESS) == SERVING
        state["reason"] = None
        await wait_status(address, SERVING, 10)
        assert await status(address, names[0]) == SERVING

        state["hang"] = True
        await wait_status(address, NOT_SERVING, 10)
        assert "did not answer within 0.2 s" in running.readiness.reason
        state["hang"] = False
        await wait_status(address, SERVING, 10)
    finally:
        await running.stop(grace=0)


async def test_a_check_that_raises_means_not_ready_and_a_service_without_one_serves():
    async def broken() -> str | None:
        raise ConnectionResetError("reset by peer")

    assert await check_once(broken) == "readiness check failed: ConnectionResetError: reset by peer"
    # Without a check: SERVING from the start, liveness too.
    running = await start_server(Service(names=["test.v1.Plain"], register=lambda server: None))
    try:
        address = f"127.0.0.1:{running.port}"
        for name in ("", "test.v1.Plain", LIVENESS):
            assert await status(address, name) == SERVING
    finally:
        await running.stop(grace=0)


# -- storage over SeaweedFS ---------------------------------------------------


async def test_storage_is_not_ready_while_seaweedfs_is_down_and_ready_again_after(tmp_path):
    from services.storage.app import SERVICE_NAME, build
    from services.storage.config import Config

    data = tmp_path / "s3"
    s3 = await asyncio.to_thread(start_seaweed, data)
    s3_port = int(s3.endpoint.rpartition(":")[2])
    config = Config.from_env({
        "AIOS_STORAGE_S3_ENDPOINT": s3.endpoint, "AIOS_STORAGE_S3_ACCESS_KEY": s3.access_key,
        "AIOS_STORAGE_S3_SECRET_KEY": s3.secret_key, "AIOS_STORAGE_INDEX": "false"})
    running = await start_server(await build(config))
    address = f"127.0.0.1:{running.port}"
    try:
        assert await status(address) == SERVING and await status(address, SERVICE_NAME) == SERVING

        await asyncio.to_thread(s3.stop, graceful=False)
        took = await wait_status(address, NOT_SERVING, 15)
        print(f"storage NOT_SERVING {took:.2f}s after SeaweedFS died")
        assert await status(address, SERVICE_NAME) == NOT_SERVING
        assert "unreachable" in running.readiness.reason
        assert await status(address, LIVENESS) == SERVING

        s3 = await asyncio.to_thread(start_seaweed, data, "127.0.0.1", s3_port)
        took = await wait_status(address, SERVING, 30)
        print(f"storage SERVING {took:.2f}s after SeaweedFS answered again")
        assert await status(address, SERVICE_NAME) == SERVING
        assert await status(address, LIVENESS) == SERVING
    finally:
        await running.stop(grace=0)
        await asyncio.to_thread(s3.stop, graceful=False)


# -- llm_core over llama.cpp ---------------------------------------------------


async def models(address: str) -> dict[str, llm_pb.Model]:
    async with grpc.aio.insecure_channel(address) as channel:
        resp = await llm_grpc.LlmServiceStub(channel).ListModels(llm_pb.ListModelsRequest(), timeout=30)
    return {m.name: m for m in resp.models}


async def test_llm_core_readiness_and_availability_follow_the_llm_server_without_traffic():
    from services.llm_core.app import SERVICE_NAME, build
    from services.llm_core.config import Config

    srv = await asyncio.to_thread(start_local_server, "127.0.0.1", 0, parallel=2, timeout=120)
    port = urlsplit(srv.base_url).port
    config = Config.from_env({"AIOS_LLM_ENDPOINTS": json.dumps([local_endpoint(srv.base_url)])})
    running = await start_server(await build(config))
    address = f"127.0.0.1:{running.port}"
    try:
        assert await status(address) == SERVING and await status(address, SERVICE_NAME) == SERVING
        up = await models(address)
        assert up[MODEL_ALIAS].available and up[MODEL_ALIAS].endpoints[0].healthy
        assert up["all-MiniLM-L6-v2"].available  # in process: never down

        await asyncio.to_thread(srv.stop)
        took = await wait_status(address, NOT_SERVING, 15)
        print(f"llm_core NOT_SERVING {took:.2f}s after the LLM server stopped")
        assert await status(address, SERVICE_NAME) == NOT_SERVING
        assert "no chat endpoint is reachable" in running.readiness.reason
        assert await status(address, LIVENESS) == SERVING
        down = await models(address)
        (ep,) = down[MODEL_ALIAS].endpoints
        assert not down[MODEL_ALIAS].available and not ep.healthy and ep.last_error
        assert down["all-MiniLM-L6-v2"].available

        # Back on its port; nothing calls llm_core until its health says so.
        srv = await asyncio.to_thread(start_local_server, "127.0.0.1", port, parallel=2, timeout=120)
        took = await wait_status(address, SERVING, 30)
        print(f"llm_core SERVING {took:.2f}s after the LLM server answered again")
        assert await status(address, SERVICE_NAME) == SERVING
        assert await status(address, LIVENESS) == SERVING
        again = await models(address)
        assert again[MODEL_ALIAS].available and again[MODEL_ALIAS].endpoints[0].healthy
        # The probe closed the circuit: the first call goes through.
        async with grpc.aio.insecure_channel(address) as channel:
            reply = await llm_grpc.LlmServiceStub(channel).Generate(generate(
                model=MODEL_ALIAS, messages=[lc.Message(role=lc.ROLE_USER, content="Say hi.")],
                max_tokens=4, temperature=0), timeout=60)
        assert reply.text and reply.endpoint == "local"
    finally:
        await running.stop(grace=0)
        await asyncio.to_thread(srv.stop)


async def test_llm_core_without_a_reachable_endpoint_is_not_ready_from_the_start():
    from services.llm_core.app import build
    from services.llm_core.config import Config

    eps = [local_endpoint(f"http://127.0.0.1:{closed_port()}/v1", name="gone")]
    running = await start_server(await build(Config.from_env({"AIOS_LLM_ENDPOINTS": json.dumps(eps)})))
    try:
        address = f"127.0.0.1:{running.port}"
        assert await status(address) == NOT_SERVING  # no SERVING moment before the first probe
        assert running.readiness.reason.startswith("no chat endpoint is reachable: gone: unreachable")
        assert await status(address, LIVENESS) == SERVING
    finally:
        await running.stop(grace=0)


# -- memory ---------------------------------------------------------------------


async def test_memory_check_reports_an_unreachable_qdrant_server():
    from services.memory.app import QdrantCheck

    url = f"http://127.0.0.1:{closed_port()}"
    check = QdrantCheck(url)
    try:
        reason = await check_once(check)
    finally:
        await check.close()
    assert reason == f"Qdrant at {url} is unreachable: ConnectError"


async def test_memory_over_embedded_qdrant_is_always_ready(tmp_path):
    from services.memory.app import SERVICE_NAME, build
    from services.memory.config import Config

    config = Config.from_env({"AIOS_MEMORY_QDRANT_PATH": str(tmp_path / "qdrant"),
                              "AIOS_LLM_ADDR": f"127.0.0.1:{closed_port()}"})
    service = await build(config)
    assert service.ready is None  # in process: nothing to be away
    running = await start_server(service)
    try:
        address = f"127.0.0.1:{running.port}"
        for name in ("", SERVICE_NAME, LIVENESS):
            assert await status(address, name) == SERVING
    finally:
        await running.stop(grace=0)


# -- Kubernetes -------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/prod"])
def test_k8s_liveness_asks_for_liveness_and_readiness_for_the_service(overlay):
    from tests.test_k8s import SERVICES, aios_module, containers, of_kind, render

    seen = set()
    for workload in of_kind(render(overlay), "Deployment"):
        for c in containers(workload):
            if aios_module(c) not in SERVICES:
                continue
            seen.add(aios_module(c))
            assert c["livenessProbe"]["grpc"].get("service") == LIVENESS, workload["metadata"]["name"]
            assert c["readinessProbe"]["grpc"].get("service", "") == "", workload["metadata"]["name"]
    assert seen == set(SERVICES)
