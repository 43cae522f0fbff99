"""TLS on the gRPC ports and mutual TLS between services (services/runtime/tls.py),
on real servers: the kernel (development auth) and the storage service over a
real SeaweedFS, with a CA and certificates made here (cryptography). Also the
plain health port the kubelet probes, and round-robin channels over several
addresses (services/runtime/channels.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aios.sdk import AsyncClient, UnavailableError
from aios.storage.v1 import storage_service_pb2 as spb
from aios.storage.v1 import storage_service_pb2_grpc as spb_grpc
from services.runtime import channels
from services.runtime.config import ConfigError
from services.runtime.server import Service, start_server
from services.runtime.tls import PLAIN, TlsConfig
from tests.conftest import kernel_config
from tests.support.pki import make_ca, make_leaf, write_pem
from tests.support.polling import until

NOBODY = "127.0.0.1:1"  # where no llm_core listens: these tests make no LLM calls
REPO_ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path
    # A client certificate of another CA, which the servers must not trust.
    rogue_cert: Path
    rogue_key: Path

    def env(self, **extra) -> dict[str, str]:
        return {"AIOS_TLS_CERT": str(self.cert), "AIOS_TLS_KEY": str(self.key), "AIOS_TLS_CA": str(self.ca),
                **extra}

    def config(self, **extra) -> TlsConfig:
        return TlsConfig.from_env(self.env(**extra))


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = make_ca("aios test CA")
    ca_path, _ = write_pem(folder, "ca", ca_key, ca_cert)
    cert, key = write_pem(folder, "service", *make_leaf(ca_key, ca_cert, "service"))
    rogue_ca_key, rogue_ca = make_ca("someone else's CA")
    rogue_cert, rogue_key = write_pem(folder, "rogue", *make_leaf(rogue_ca_key, rogue_ca, "rogue"))
    return Pki(ca_path, cert, key, rogue_cert, rogue_key)


@contextlib.contextmanager
def _env(values: dict[str, str]):
    """The environment a service's build() reads its channels' (and door's) TLS from."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in values.items():
            patch.setenv(name, value)
        yield


async def _health(address: str, credentials: grpc.ChannelCredentials | None = None) -> str:
    """The status name of health "" at address, or the failing call's code name."""
    channel = (grpc.aio.insecure_channel(address) if credentials is None
               else grpc.aio.secure_channel(address, credentials))
    async with channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


# --------------------------------------------------------------------------- configuration


def test_no_variables_is_plain():
    config = TlsConfig.from_env({})
    assert config == PLAIN
    assert config.server_credentials() is None and config.channel_credentials() is None
    assert config.http_context() is None


def test_a_cert_manager_folder_is_read(pki, tmp_path):
    for name, source in (("tls.crt", pki.cert), ("tls.key", pki.key), ("ca.crt", pki.ca)):
        (tmp_path / name).write_bytes(source.read_bytes())
    config = TlsConfig.from_env({"AIOS_TLS_DIR": str(tmp_path), "AIOS_TLS_CLIENT_AUTH": "require"})
    assert (config.cert, config.key, config.ca) == (pki.cert.read_bytes(), pki.key.read_bytes(), pki.ca.read_bytes())
    assert config.require_client_auth and config.server_credentials() is not None
    # A single variable wins over the folder.
    assert TlsConfig.from_env({"AIOS_TLS_DIR": str(tmp_path), "AIOS_TLS_CA": str(pki.rogue_cert)}).ca == \
        pki.rogue_cert.read_bytes()


@pytest.mark.parametrize("env, message", [
    ({"AIOS_TLS_CERT": "{cert}"}, "AIOS_TLS_CERT and AIOS_TLS_KEY go together"),
    ({"AIOS_TLS_CERT": "{cert}", "AIOS_TLS_KEY": "{key}", "AIOS_TLS_CLIENT_AUTH": "require"},
     "needs a certificate and key to serve TLS and AIOS_TLS_CA"),
    ({"AIOS_TLS_CLIENT_AUTH": "optional"}, "is not one of none, require"),
    ({"AIOS_TLS_CA": "{missing}"}, "No such file"),
    ({"AIOS_TLS_CA": "{not_pem}"}, "is not a PEM file"),
])
def test_bad_settings_stop_the_service_with_a_clear_message(pki, tmp_path, env, message):
    (tmp_path / "notes.txt").write_text("not a certificate")
    names = {"cert": pki.cert, "key": pki.key, "missing": tmp_path / "absent.crt", "not_pem": tmp_path / "notes.txt"}
    with pytest.raises(ConfigError, match=message):
        TlsConfig.from_env({k: v.format(**names) for k, v in env.items()})


def test_loopback_stack_drops_tls_settings_of_the_shell(monkeypatch, tmp_path):
    from services.cli.stack import Stack, StackConfig

    monkeypatch.setenv("AIOS_TLS_CA", "/somewhere/ca.crt")
    monkeypatch.setenv("AIOS_TLS", "true")
    env = Stack(StackConfig(data_dir=tmp_path)).env()
    assert not [k for k in env if k.startswith("AIOS_TLS")]


# --------------------------------------------------------------------------- the kernel's agent-facing port


@pytest_asyncio.fixture(scope="module")
async def tls_kernel(pki):
    """The kernel in development auth on TLS, client certificates optional, and
    its OpenAI-compatible door on HTTPS with the same certificate."""
    from services.scheduler.app import build

    with _env(pki.env()):
        service = await build(kernel_config(NOBODY, http_port=0))
    running = await start_server(service, tls=pki.config())
    yield running
    await running.stop(grace=1)


async def test_an_sdk_client_with_the_ca_gets_through(tls_kernel, pki):
    address = f"127.0.0.1:{tls_kernel.port}"
    async with AsyncClient(address, token="agent-tls", timeout=10, ca=str(pki.ca)) as aios:
        status = await aios.get_status()
    assert status.auth == "dev"
    # The CA from the environment, as an agent's pod has it.
    with _env({"AIOS_TLS_CA": str(pki.ca)}):
        async with AsyncClient(address, token="agent-tls", timeout=10) as aios:
            assert (await aios.get_status()).auth == "dev"


async def test_a_plain_client_and_an_unverified_server_are_refused(tls_kernel, pki):
    address = f"127.0.0.1:{tls_kernel.port}"
    async with AsyncClient(address, token="agent-tls", timeout=3, retries=0) as aios:
        with pytest.raises(UnavailableError):
            await aios.get_status()
    # TLS, but the system's roots do not know the test CA.
    async with AsyncClient(address, token="agent-tls", timeout=3, retries=0, tls=True) as aios:
        with pytest.raises(UnavailableError, match="(?i)handshake|certificate"):
            await aios.get_status()


async def test_the_http_door_serves_https_on_the_same_certificate(tls_kernel, pki):
    url = f"https://127.0.0.1:{tls_kernel.service.http_port}/v1/models"

    def get(url: str, context: ssl.SSLContext | None = None) -> int:
        request = urllib.request.Request(url, headers={"Authorization": "Bearer agent-tls"})
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    status = await asyncio.to_thread(get, url, ssl.create_default_context(cafile=str(pki.ca)))
    assert status in (200, 503)  # 503: no llm_core answers; the door did, over TLS
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        await asyncio.to_thread(get, url, ssl.create_default_context())  # the system's roots
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        await asyncio.to_thread(get, url.replace("https:", "http:"))


async def test_the_cli_takes_tls_options(tls_kernel, pki, tmp_path):
    """`aios status` (its own health check, then the SDK) with --ca, without it, and with a bad file."""

    async def aios(*argv) -> tuple[int, str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIOS_")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli.main", "status", "--kernel", f"127.0.0.1:{tls_kernel.port}",
            "--token", "agent-cli", "--data", str(tmp_path), "--timeout", "5", *argv, cwd=REPO_ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        return proc.returncode, out.decode(), err.decode()

    _, out, err = await aios("--ca", str(pki.ca))
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["kernel"][2] == "SERVING" and "auth dev" in err, (out, err)
    assert "UNREACHABLE" in rows["storage"]  # nothing listens there; the call itself got through
    rc, out, _ = await aios()
    assert rc == 1 and "DOWN (UNAVAILABLE)" in out
    rc, _, err = await aios("--ca", str(tmp_path / "absent.crt"))
    assert rc == 1 and "error: CA" in err and "No such file" in err


def test_sdk_tls_arguments(pki, monkeypatch):
    from aios.sdk import channel_credentials

    assert channel_credentials() is None
    assert channel_credentials(ca=pki.ca.read_bytes()) is not None
    monkeypatch.setenv("AIOS_TLS_CA", str(pki.ca))
    assert channel_credentials() is not None
    assert channel_credentials(tls=False) is None  # the argument wins over the environment
    with pytest.raises(ValueError, match="go together"):
        channel_credentials(client_cert=str(pki.cert))
    monkeypatch.setenv("AIOS_TLS", "maybe")
    monkeypatch.delenv("AIOS_TLS_CA")
    with pytest.raises(ValueError, match="AIOS_TLS='maybe'"):
        channel_credentials()


# --------------------------------------------------------------------------- client certificates required


async def test_client_auth_refuses_callers_without_a_ca_signed_certificate(pki):
    from services.scheduler.app import build

    service = await build(kernel_config(NOBODY))
    running = await start_server(service, tls=pki.config(AIOS_TLS_CLIENT_AUTH="require"))
    address = f"127.0.0.1:{running.port}"
    try:
        async def status(**tls) -> str:
            async with AsyncClient(address, token="agent-mtls", timeout=3, retries=0, **tls) as aios:
                try:
                    return (await aios.get_status()).auth
                except UnavailableError:
                    return "refused"

        assert await status(ca=str(pki.ca)) == "refused"
        assert await status(ca=str(pki.ca), client_cert=str(pki.rogue_cert), client_key=str(pki.rogue_key)) == "refused"
        assert await status(ca=str(pki.ca), client_cert=str(pki.cert), client_key=str(pki.key)) == "dev"
    finally:
        await running.stop(grace=1)


# --------------------------------------------------------------------------- service to service


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    from services.local.seaweed import start_seaweed

    stack = start_seaweed(tmp_path_factory.mktemp("tls-s3"))
    yield stack
    stack.stop(graceful=False)


@pytest_asyncio.fixture(scope="module")
async def mtls_storage(s3, pki, tmp_path_factory):
    """The storage service on mutual TLS (a caller must present a certificate the CA signed)."""
    from services.storage.app import build
    from services.storage.config import Config

    config = Config.from_env({
        "AIOS_STORAGE_S3_ENDPOINT": s3.endpoint, "AIOS_STORAGE_S3_ACCESS_KEY": s3.access_key,
        "AIOS_STORAGE_S3_SECRET_KEY": s3.secret_key, "AIOS_STORAGE_INDEX": "false",
        "AIOS_STORAGE_QDRANT_PATH": str(tmp_path_factory.mktemp("tls-index")), "AIOS_LLM_ADDR": NOBODY})
    with _env(pki.env()):
        service = await build(config)
    running = await start_server(service, tls=pki.config(AIOS_TLS_CLIENT_AUTH="require"), health_port=0)
    yield running
    await running.stop(grace=1)


async def test_storage_takes_only_mutual_tls(mtls_storage, pki):
    address = f"127.0.0.1:{mtls_storage.port}"
    ca = pki.ca.read_bytes()
    assert await _health(address) == "UNAVAILABLE"
    assert await _health(address, grpc.ssl_channel_credentials(ca)) == "UNAVAILABLE"
    # The one channel factory of the services, configured as a pod's environment says.
    async with channels.channel(address, tls=pki.config()) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await spb_grpc.StorageServiceStub(ch).StatFile(spb.StatFileRequest(owner="nobody", path="absent.txt"),
                                                           timeout=5)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND  # storage itself answered


async def test_a_peer_dialled_by_address_is_verified_by_the_name_given(mtls_storage, pki):
    """How a kernel replica reaches another at its pod IP: the certificate
    must carry the name the caller expects, not the IP."""
    address = f"127.0.0.1:{mtls_storage.port}"

    async def check(server_name: str) -> str:
        async with channels.channel(address, tls=pki.config(), server_name=server_name) as ch:
            try:
                await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            except grpc.aio.AioRpcError as exc:
                return exc.code().name
        return "OK"

    assert await check("localhost") == "OK"  # a name the test certificate carries
    assert await check("kernel") == "UNAVAILABLE"  # one it does not


async def test_the_plain_health_port_serves_health_only(mtls_storage):
    address = f"127.0.0.1:{mtls_storage.health_port}"
    assert await _health(address) == "SERVING"
    async with grpc.aio.insecure_channel(address) as ch:
        liveness = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="liveness"),
                                                              timeout=5)
        assert liveness.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await spb_grpc.StorageServiceStub(ch).StatFile(spb.StatFileRequest(owner="a", path="b"), timeout=5)
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_kernel_to_storage_over_mutual_tls(mtls_storage, pki):
    """An agent's file syscalls: SDK -TLS-> kernel -mTLS-> storage, and the
    kernel's status sees storage through the same channel."""
    from services.scheduler.app import build

    storage = f"127.0.0.1:{mtls_storage.port}"
    with _env(pki.env()):
        service = await build(kernel_config(NOBODY, AIOS_STORAGE_ADDR=storage))
    kernel = await start_server(service, tls=pki.config())
    try:
        async with AsyncClient(f"127.0.0.1:{kernel.port}", token="agent-files", timeout=20, ca=str(pki.ca)) as aios:
            await aios.files.write("notes/secret.txt", "over mutual TLS")
            assert await aios.files.read("notes/secret.txt") == b"over mutual TLS"
            rows = {s.name: s.status for s in (await aios.get_status()).services}
            assert rows["storage"] == "SERVING"
    finally:
        await kernel.stop(grace=1)

    # The same kernel without a certificate of its own cannot reach storage.
    service = await build(kernel_config(NOBODY, AIOS_STORAGE_ADDR=storage))
    plain = await start_server(service)
    try:
        async with AsyncClient(f"127.0.0.1:{plain.port}", token="agent-files", timeout=5, retries=0) as aios:
            rows = {s.name: s for s in (await aios.get_status()).services}
            assert rows["storage"].status == "UNREACHABLE", rows["storage"]
            with pytest.raises(UnavailableError):
                await aios.files.read("notes/secret.txt")
    finally:
        await plain.stop(grace=1)


# --------------------------------------------------------------------------- round robin


def _counting_service(calls: list[int], index: int) -> Service:
    """A server whose one method, /test.Count/Hit, records which server answered."""

    async def hit(request: bytes, context) -> bytes:
        calls.append(index)
        return b""

    handler = grpc.method_handlers_generic_handler(
        "test.Count", {"Hit": grpc.unary_unary_rpc_method_handler(hit)})
    return Service(names=["test.Count"], register=lambda server: server.add_generic_rpc_handlers((handler,)))


async def test_one_target_of_two_servers_spreads_calls_over_both():
    calls: list[int] = []
    servers = [await start_server(_counting_service(calls, i)) for i in range(2)]
    target = "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in servers)
    try:
        async with channels.channel(target, tls=PLAIN) as ch:
            hit = ch.unary_unary("/test.Count/Hit")

            async def both() -> bool:
                await hit(b"", timeout=5)
                return set(calls) == {0, 1}

            await until(both, "calls on both servers behind one target", timeout=10)
            calls.clear()
            for _ in range(20):
                await hit(b"", timeout=5)
            # Once both are connected, round robin alternates.
            assert calls.count(0) == calls.count(1) == 10, calls
        # gRPC's default policy, for contrast: every call to the first address.
        calls.clear()
        async with grpc.aio.insecure_channel(target) as ch:
            for _ in range(20):
                await ch.unary_unary("/test.Count/Hit")(b"", timeout=5)
        assert len(set(calls)) == 1, calls
        # One address: unchanged.
        calls.clear()
        async with channels.channel(f"127.0.0.1:{servers[1].port}", tls=PLAIN) as ch:
            for _ in range(3):
                await ch.unary_unary("/test.Count/Hit")(b"", timeout=5)
        assert calls == [1, 1, 1]
    finally:
        for s in servers:
            await s.stop(grace=1)
