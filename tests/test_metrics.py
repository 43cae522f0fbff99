"""Prometheus metrics of every service, and the logs around them.

The five services run in-process with service trust on and a metrics port
each (port 0); a few calls go through the kernel (chat, a streamed chat,
memory, files, a refused read, the HTTP door), then every /metrics page is
read over HTTP and parsed: names and labels follow the rules of
services/runtime/metrics_lint.py, and what was called shows up with sane
values. The series counts per family are printed (pytest -s).

Logs: the HTTP door writes one access line per request, and a server fault
is logged at error or warning while a client's mistake stays at info.
"""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import aiohttp
import grpc
import pytest
import pytest_asyncio
import structlog
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aios.access.v1 import access_service_pb2 as apb
from aios.access.v1 import access_service_pb2_grpc as apb_grpc
from aios.sdk import AsyncClient, NotFoundError
from services.runtime import errors, interceptors, metrics_lint, trust
from services.runtime.metrics import ServiceMetrics, version
from services.runtime.server import Service, start_server
from services.scheduler import http_door
from services.scheduler.metrics import KernelMetrics
from services.scheduler.table import AgentStats
from services.cli.stack import free_port
from tests.conftest import kernel_config, local_endpoint
from tests.support.polling import until

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy/k8s/components/monitoring/grafana-dashboard.json"
SERVICES = ("kernel", "llm_core", "memory", "storage", "access")


async def scrape(port: int) -> str:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=10)) as r:
            assert r.status == 200
            return await r.text()


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)]."""
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(text: str, name: str, **labels) -> float:
    """The sum of a sample over the series matching `labels`."""
    return sum(v for lab, v in samples(text).get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


@pytest_asyncio.fixture(scope="module")
async def world(tmp_path_factory, llm_server, start_service):
    from services.access.app import build as access_build
    from services.access.config import Config as AccessConfig
    from services.llm_core.app import build as llm_build
    from services.llm_core.config import Config as LlmConfig
    from services.local.seaweed import start_seaweed
    from services.memory.app import build as memory_build
    from services.memory.config import Config as MemoryConfig
    from services.scheduler.app import build as kernel_build
    from services.storage.app import build as storage_build
    from services.storage.config import Config as StorageConfig

    data = tmp_path_factory.mktemp("metrics")
    tokens_file = data / "service-tokens.json"
    trust.ensure_tokens_file(tokens_file)
    env = {"AIOS_SERVICE_TOKENS_FILE": str(tokens_file), "AIOS_DATA_DIR": str(data)}
    llm = await start_service(llm_build, LlmConfig.from_env({
        **env, "AIOS_LLM_ENDPOINTS": json.dumps([local_endpoint(llm_server.base_url)]),
        "AIOS_LLM_METRICS_PORT": "0"}))
    llm_addr = f"127.0.0.1:{llm.port}"
    access = await start_service(access_build, AccessConfig.from_env({**env, "AIOS_ACCESS_METRICS_PORT": "0"}))
    memory = await start_service(memory_build, MemoryConfig.from_env({
        **env, "AIOS_MEMORY_QDRANT_PATH": str(data / "qdrant"), "AIOS_LLM_ADDR": llm_addr,
        "AIOS_MEMORY_METRICS_PORT": "0"}))
    s3 = start_seaweed(data / "s3")
    storage = await start_service(storage_build, StorageConfig.from_env({
        **env, "AIOS_STORAGE_S3_ENDPOINT": s3.endpoint, "AIOS_STORAGE_S3_ACCESS_KEY": s3.access_key,
        "AIOS_STORAGE_S3_SECRET_KEY": s3.secret_key, "AIOS_STORAGE_QDRANT_PATH": str(data / "index"),
        "AIOS_LLM_ADDR": llm_addr, "AIOS_STORAGE_METRICS_PORT": "0"}))
    door = free_port()
    kernel = await start_service(kernel_build, kernel_config(
        llm_addr, auth="access", auth_cache_seconds=0, metrics_port=0, http_port=door, journal="off",
        AIOS_ACCESS_ADDR=f"127.0.0.1:{access.port}", AIOS_MEMORY_ADDR=f"127.0.0.1:{memory.port}",
        AIOS_STORAGE_ADDR=f"127.0.0.1:{storage.port}", **env))
    admin_token = (data / "admin.token").read_text().strip()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{access.port}") as ch:
        token = (await apb_grpc.AccessServiceStub(ch).CreateAgent(
            apb.CreateAgentRequest(name="meter", groups=["agents"]),
            metadata=[("authorization", f"Bearer {admin_token}")])).token
    servers = {"kernel": kernel, "llm_core": llm, "memory": memory, "storage": storage, "access": access}
    yield {"servers": servers, "ports": {name: s.metrics_port for name, s in servers.items()},
           "kernel": f"127.0.0.1:{kernel.port}", "token": token, "door": door}
    s3.stop(graceful=False)


async def exercise(world) -> None:
    """A few calls of every kind through the kernel, one of them refused."""
    async with AsyncClient(world["kernel"], token=world["token"], timeout=120, retries=0) as aios:
        assert (await aios.llm.chat("Say hello.", max_tokens=8, temperature=0)).text
        streamed = [x async for x in aios.chat_stream("Count to three.", max_tokens=8, temperature=0)]
        assert streamed
        await aios.memory.add("the meter reads forty-two")
        assert await aios.memory.search("what does the meter read", k=1)
        await aios.files.write("notes/meter.txt", "forty-two")
        assert await aios.files.read("notes/meter.txt") == b"forty-two"
        with pytest.raises(NotFoundError):
            await aios.files.read("notes/absent.txt")
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{world['door']}/v1/models",
                         headers={"Authorization": f"Bearer {world['token']}"}) as r:
            assert r.status == 200


@pytest_asyncio.fixture(scope="module")
async def pages(world):
    """Every service's /metrics page once the calls above are counted."""
    await exercise(world)
    ports = world["ports"]

    async def counted():
        texts = {name: await scrape(ports[name]) for name in SERVICES}
        # The kernel counts a syscall when it finishes; the last may still be settling.
        done = value(texts["kernel"], "aios_syscalls_total")
        return texts if done >= 7 else None

    return await until(counted, "the kernel to count the syscalls", timeout=15.0)


def test_every_service_serves_its_metrics_port(world):
    for name, port in world["ports"].items():
        assert isinstance(port, int) and port > 0, name


def test_names_and_labels_follow_the_rules(pages):
    """Lint every page (services/runtime/metrics_lint.py) and print the series per family."""
    for name, text in pages.items():
        report = metrics_lint.lint(text)
        print(metrics_lint.render(report, f"{name}: {len(text)} bytes"))
        assert report.problems == [], name
        assert report.families, name
        # No agent or request id anywhere by default, in names or values.
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                assert not {"agent", "request_id"} & set(s.labels), (name, s)
                assert "meter" not in s.labels.values(), (name, s)


def test_build_info_of_every_service(pages):
    for name, text in pages.items():
        [(labels, v)] = samples(text)["aios_build_info"]
        assert v == 1 and labels["service"] == name and labels["version"] == version(), labels
        assert re.fullmatch(r"3\.\d+\.\d+", labels["python"])


def test_grpc_calls_are_counted_and_timed_by_method_and_code(pages):
    handled = "aios_grpc_server_handled_total"
    seconds = "aios_grpc_server_handling_seconds_count"
    expected = {
        "llm_core": ["/aios.llm.v1.LlmService/Generate", "/aios.llm.v1.LlmService/GenerateStream",
                     "/aios.llm.v1.LlmService/Embed"],
        "memory": ["/aios.memory.v1.MemoryService/AddMemory", "/aios.memory.v1.MemoryService/SearchMemories"],
        # WriteFile streams requests, ReadFile responses.
        "storage": ["/aios.storage.v1.StorageService/WriteFile", "/aios.storage.v1.StorageService/ReadFile"],
        "access": ["/aios.access.v1.AccessService/Authenticate", "/aios.access.v1.AccessService/Check"],
    }
    for name, methods in expected.items():
        for method in methods:
            assert value(pages[name], handled, service=name, method=method, code="OK") >= 1, (name, method)
            assert value(pages[name], seconds, service=name, method=method) >= 1, (name, method)
    # The refused read: NOT_FOUND from storage, through the kernel.
    assert value(pages["storage"], handled, method="/aios.storage.v1.StorageService/ReadFile",
                 code="NOT_FOUND") >= 1
    kernel_ok = [lab for lab, v in samples(pages["kernel"])[handled] if lab["code"] == "OK" and v >= 1]
    assert kernel_ok and all(lab["service"] == "kernel" for lab in kernel_ok)
    assert value(pages["kernel"], handled, code="NOT_FOUND") >= 1
    # Health checks and reflection are not the services' API.
    for text in pages.values():
        assert not any("grpc.health" in lab["method"] for lab, _ in samples(text).get(handled, []))
    # Latency sums are positive and below a minute.
    total = value(pages["llm_core"], "aios_grpc_server_handling_seconds_sum",
                  method="/aios.llm.v1.LlmService/Generate")
    assert 0 < total < 60


def test_llm_core_endpoints(pages):
    text = pages["llm_core"]
    ep = {"endpoint": "local", "model": "smollm2"}
    assert value(text, "aios_llm_time_to_first_token_seconds_count", **ep) >= 1
    ttft = value(text, "aios_llm_time_to_first_token_seconds_sum", **ep)
    assert 0 < ttft < 60
    assert value(text, "aios_llm_endpoint_up", **ep) == 1
    assert value(text, "aios_llm_endpoint_in_flight", **ep) == 0
    assert value(text, "aios_llm_endpoint_capacity", **ep) == 4
    assert value(text, "aios_llm_endpoint_requests_total", outcome="ok", **ep) >= 2
    tokens = value(text, "aios_llm_completion_tokens_total", **ep)
    spent = value(text, "aios_llm_generation_seconds_total", **ep)
    assert tokens >= 2 and spent > 0 and tokens / spent > 0.1


def test_backend_operations_of_memory_and_storage(pages):
    for name, metric, ops in (
            ("memory", "aios_memory_operation_seconds_count", ("embed", "qdrant.batch_update_points",
                                                               "qdrant.query_points")),
            ("storage", "aios_storage_operation_seconds_count", ("embed", "s3.put", "s3.open", "index.replace"))):
        for op in ops:
            assert value(pages[name], metric, op=op) >= 1, (name, op)


def test_access_counts_check_decisions(pages):
    assert value(pages["access"], "aios_access_checks_total", decision="allow") >= 5
    # Every action and decision has its series from the start.
    assert len(samples(pages["access"])["aios_access_checks_total"]) == 15


def test_the_kernel_queues_syscalls_and_tokens(pages):
    text = pages["kernel"]
    assert value(text, "aios_syscalls_total", kind="llm", state="succeeded") >= 2
    assert value(text, "aios_syscalls_total", kind="storage", state="failed") >= 1
    assert value(text, "aios_tokens_total", type="completion") >= 2
    assert value(text, "aios_tokens_total", type="prompt") >= 2
    queues = {lab["resource"] for lab, _ in samples(text)["aios_queue_depth"]}
    assert {"llm:smollm2", "memory", "storage"} <= queues
    assert value(text, "aios_queue_depth") == 0 and value(text, "aios_running") == 0


def test_the_dashboard_graphs_only_exported_metrics(pages):
    exported = set()
    for text in pages.values():
        for fam in text_string_to_metric_families(text):
            exported.add(f"{fam.name}_total" if fam.type == "counter" else fam.name)
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for e in exprs for m in re.findall(r"\baios_\w+", e)}
    assert used - exported == set(), "graphed but not exported"
    assert exported - used == set(), "exported but not on the dashboard"


def test_metrics_lint_command(world, capsys):
    urls = [f"http://127.0.0.1:{world['ports'][name]}/metrics" for name in SERVICES]
    assert metrics_lint.main(urls) == 0
    out = capsys.readouterr().out
    assert out.count("0 problems") == len(urls) and "aios_grpc_server_handled_total" in out


def test_metrics_lint_catches_broken_names():
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    registry = CollectorRegistry()
    Counter("llm_calls", "not ours", registry=registry).inc()
    Histogram("aios_latency_ms", "not in seconds", registry=registry).observe(1)
    Gauge("aios_agent_calls", "per agent", ["agent"], registry=registry).labels("ann").set(1)
    Gauge("aios_queued_total", "a gauge named like a counter", registry=registry).set(1)
    problems = "\n".join(metrics_lint.lint(generate_latest(registry).decode()).problems)
    for expected in ("llm_calls: not an aios_* name", "aios_latency_ms: a histogram is in base units",
                     "aios_agent_calls: label 'agent' is not bounded", "aios_queued_total: only counters"):
        assert expected in problems
    assert "label 'agent'" not in "\n".join(metrics_lint.lint(generate_latest(registry).decode(),
                                                              frozenset({"agent"})).problems)


# --------------------------------------------------------------------------- top agents


class _Table:
    def __init__(self, tokens: dict[str, int]) -> None:
        self.agents = {a: AgentStats(a, prompt_tokens=t, completion_tokens=t // 2) for a, t in tokens.items()}


class _Kernel:
    def __init__(self, tokens: dict[str, int]) -> None:
        self.resources: dict = {}
        self.table = _Table(tokens)


def test_top_agents_are_bounded_and_the_rest_is_other():
    kernel = _Kernel({"ann": 1000, "bob": 500, "cy": 10, "dee": 1})
    off = ServiceMetrics("kernel")
    KernelMetrics(kernel, off.registry)
    assert "aios_agent_tokens" not in generate_latest(off.registry).decode()
    on = ServiceMetrics("kernel")
    KernelMetrics(kernel, on.registry, top_agents=2)
    text = generate_latest(on.registry).decode()
    agents = {lab["agent"] for lab, _ in samples(text)["aios_agent_tokens"]}
    assert agents == {"ann", "bob", "other"}
    assert value(text, "aios_agent_tokens", agent="other", type="prompt") == 11
    assert value(text, "aios_agent_tokens", agent="ann", type="completion") == 500
    assert metrics_lint.lint(text, frozenset({"agent"})).problems == []
    kernel.table.agents["dee"].prompt_tokens = 5000  # dee overtakes: bob joins the others
    agents = {lab["agent"] for lab, _ in samples(generate_latest(on.registry).decode())["aios_agent_tokens"]}
    assert agents == {"dee", "ann", "other"}


# --------------------------------------------------------------------------- logs


def capturing(monkeypatch, module) -> list[dict]:
    """Replace a module's logger by one that runs the configured processors
    (request id, agent, level, ...) into a list, at every level."""
    from structlog.testing import LogCapture

    cap = LogCapture()
    renderers = (structlog.processors.JSONRenderer, structlog.dev.ConsoleRenderer)
    processors = [p for p in structlog.get_config()["processors"] if not isinstance(p, renderers)]
    logger = structlog.wrap_logger(structlog.PrintLogger(io.StringIO()), processors=[*processors, cap],
                                   wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    monkeypatch.setattr(module, "log", logger)
    return cap.entries


async def test_the_http_door_logs_one_line_per_request(world, monkeypatch):
    lines = capturing(monkeypatch, http_door)
    base = f"http://127.0.0.1:{world['door']}"
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {world['token']}",
                                                       "X-Request-Id": "rid-models"}) as r:
            assert r.status == 200
        async with s.post(f"{base}/v1/chat/completions", json={"model": "smollm2", "messages": []},
                          headers={"Authorization": f"Bearer {world['token']}"}) as r:
            assert r.status == 400
        async with s.get(f"{base}/v1/nowhere") as r:
            assert r.status == 404
    access = [e for e in lines if e["event"] == "http request"]
    assert [(e["method"], e["path"], e["status"]) for e in access] == [
        ("GET", "/v1/models", 200), ("POST", "/v1/chat/completions", 400), ("GET", "/v1/nowhere", 404)]
    models, chat, nowhere = access
    assert models["request_id"] == "rid-models" and models["agent"] == "meter"
    assert chat["agent"] == "meter" and len(chat["request_id"]) == 32
    assert "agent" not in nowhere and nowhere["request_id"] != chat["request_id"]
    assert all(e["log_level"] == "info" and 0 <= e["ms"] < 60_000 for e in access)


async def test_server_faults_are_logged_as_errors_client_errors_as_info(monkeypatch):
    lines = capturing(monkeypatch, interceptors)
    failures = {"Internal": errors.Internal("a bug"), "Unknown": errors.AiosError("who knows"),
                "Down": errors.Unavailable("the backend is down"), "Bad": errors.InvalidArgument("no"),
                "Missing": errors.NotFound("nothing"), "Denied": errors.PermissionDenied("not yours"),
                "Crash": RuntimeError("unexpected")}

    handlers = {name: grpc.unary_unary_rpc_method_handler(_raiser(exc)) for name, exc in failures.items()}
    service = Service(names=["test.Faults"], register=lambda server: server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Faults", handlers),)))
    server = await start_server(service)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            for name in failures:
                with pytest.raises(grpc.aio.AioRpcError):
                    await ch.unary_unary(f"/test.Faults/{name}")(b"", timeout=5)
        counted = generate_latest(server.metrics.registry).decode()
    finally:
        await server.stop(grace=0)
    levels = {e["method"].rsplit("/", 1)[1]: e["log_level"] for e in lines if "method" in e}
    assert levels == {"Internal": "error", "Unknown": "error", "Down": "warning", "Bad": "info",
                      "Missing": "info", "Denied": "info", "Crash": "error"}
    codes = {lab["method"].rsplit("/", 1)[1]: lab["code"]
             for lab, v in samples(counted)["aios_grpc_server_handled_total"] if v}
    assert codes == {"Internal": "INTERNAL", "Unknown": "UNKNOWN", "Down": "UNAVAILABLE", "Bad": "INVALID_ARGUMENT",
                     "Missing": "NOT_FOUND", "Denied": "PERMISSION_DENIED", "Crash": "INTERNAL"}


def _raiser(exc: BaseException):
    async def handler(request, context):
        raise exc
    return handler


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("prefix", ["AIOS_KERNEL_", "AIOS_LLM_", "AIOS_MEMORY_", "AIOS_STORAGE_", "AIOS_ACCESS_"])
def test_every_service_reads_its_metrics_port(prefix, tmp_path):
    from services.access.config import Config as AccessConfig
    from services.llm_core.config import Config as LlmConfig
    from services.memory.config import Config as MemoryConfig
    from services.runtime.config import ConfigError
    from services.scheduler.config import Config as KernelConfig
    from services.storage.config import Config as StorageConfig

    configs = {"AIOS_KERNEL_": KernelConfig, "AIOS_LLM_": LlmConfig, "AIOS_MEMORY_": MemoryConfig,
               "AIOS_STORAGE_": StorageConfig, "AIOS_ACCESS_": AccessConfig}
    base = {"AIOS_DATA_DIR": str(tmp_path), "AIOS_STORAGE_S3_ENDPOINT": "127.0.0.1:1",
            "AIOS_STORAGE_S3_ACCESS_KEY": "k", "AIOS_STORAGE_S3_SECRET_KEY": "s", "AIOS_STORAGE_INDEX": "false"}
    config = configs[prefix]
    assert config.from_env(base).metrics_port == -1  # off unless asked
    assert config.from_env({**base, f"{prefix}METRICS_PORT": "0"}).metrics_port == 0
    for bad in ("-2", "70000", "nine"):
        with pytest.raises(ConfigError, match=f"{prefix}METRICS_PORT"):
            config.from_env({**base, f"{prefix}METRICS_PORT": bad})
