"""The local stack behind `aios up`: the embedded LLM server, a SeaweedFS S3
server and the five services as child processes on loopback, data under one
folder.

Every child is started with its own environment and log file, waited for
(bounded polling of its health or ready line), restarted on the same port
when it dies (services/cli/supervisor.py) and stopped by its PID.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.cli.supervisor import Child, Supervisor
from services.local.llm_server import LocalServer, start_local_server
from services.local.ports import port_is_free

# Context of the embedded LLM server, in tokens (split over its slots).
LOCAL_CTX = 8192
from services.local.seaweed import SeaweedProcess, start_seaweed
from services.runtime import trust

SERVICES = ("access", "llm_core", "memory", "storage", "scheduler")
DEFAULT_PORTS = {"scheduler": 50051, "llm_core": 50052, "memory": 50053, "storage": 50054, "access": 50055}
# The env prefix each service reads its HOST/PORT from.
ENV_PREFIX = {"scheduler": "AIOS_KERNEL_", "llm_core": "AIOS_LLM_", "memory": "AIOS_MEMORY_",
              "storage": "AIOS_STORAGE_", "access": "AIOS_ACCESS_"}
LOCAL_MODEL = "smollm2"
REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to, for a server a child process binds later.

    Drawn below the system's ephemeral range (ip_local_port_range), where the
    OS never puts the local end of an outgoing connection: a port from that
    range (what binding port 0 gives) can be taken by any connection made
    before the child binds it, which then fails with "address in use"."""
    low = _ephemeral_low()
    for _ in range(500):
        port = random.randrange(max(1024, low - 16384), low)
        if port not in _handed_out and port_is_free(host, port):
            _handed_out.add(port)
            return port
    with socket.socket() as s:  # that whole range busy: the OS's choice
        s.bind((host, 0))
        return s.getsockname()[1]


# Ports free_port returned in this process: not handed out twice before they are bound.
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def wait_healthy(address: str, timeout: float = 60.0, proc: subprocess.Popen | None = None,
                 service: str = "") -> None:
    """Poll grpc.health.v1 (readiness, or `service`, e.g. "liveness") until
    SERVING, the process dies, or the time is up."""
    end = time.monotonic() + timeout
    last = "no answer"
    with grpc.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < end:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode} before serving on {address}")
            try:
                resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0, wait_for_ready=True)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
            except grpc.RpcError as exc:
                last = exc.code().name
    raise TimeoutError(f"{address} not serving after {timeout:.0f}s (last: {last})")


@dataclass
class StackConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    # Port of the embedded LLM server (0 = any free one).
    llm_server_port: int = 0
    # JSON endpoints for llm_core; empty = the embedded SmolLM2 server.
    llm_endpoints: str = ""
    llm_parallel: int = 4
    policy: str = "fifo"
    # Prometheus metrics of the kernel over HTTP; -1 = off (for every
    # service), 0 = any free port. The other services serve theirs on free
    # ports (Stack.metrics_ports).
    metrics_port: int = -1
    # The kernel's OpenAI-compatible HTTP door; -1 = off.
    http_port: int = -1
    extra_env: dict[str, str] = field(default_factory=dict)


class Stack:
    def __init__(self, config: StackConfig, say=lambda _: None) -> None:
        self.config = config
        self.llm_server: LocalServer | None = None
        self.s3: SeaweedProcess | None = None
        self.logs = config.data_dir / "logs"
        self.supervisor = Supervisor([], config.data_dir, say=say)
        self._env: dict[str, str] = {}
        # Where each service serves /metrics, kept across restarts: the kernel
        # where asked, the others on free ports; -1 = off.
        self.metrics_ports = dict.fromkeys(SERVICES, -1)
        if config.metrics_port >= 0:
            for svc in SERVICES:
                asked = config.metrics_port if svc == "scheduler" else 0
                self.metrics_ports[svc] = asked or free_port(config.host)

    @property
    def procs(self) -> dict[str, subprocess.Popen]:
        """The five services' processes, by service name."""
        return {c.name: c.proc for c in self.supervisor.children if c.name in SERVICES and c.proc is not None}

    @property
    def admin_token_file(self) -> Path:
        return self.config.data_dir / "admin.token"

    def admin_token(self) -> str:
        return self.admin_token_file.read_text().strip()

    def address(self, service: str) -> str:
        return f"{self.config.host}:{self.config.ports[service]}"

    def env(self) -> dict[str, str]:
        cfg = self.config
        # Loopback stays plain: TLS settings a shell keeps for a remote kernel
        # (AIOS_TLS_CA ...) would turn on TLS in services that serve none.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIOS_TLS")}
        env = {**env, **cfg.extra_env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
        env["AIOS_DATA_DIR"] = str(cfg.data_dir)
        # The local embedder's BLAS threads spin while they wait; on a small
        # machine shared by every service one thread does better.
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        for svc in SERVICES:
            env[f"{ENV_PREFIX[svc]}HOST"] = cfg.host
            env[f"{ENV_PREFIX[svc]}PORT"] = str(cfg.ports[svc])
        env["AIOS_LLM_ADDR"] = self.address("llm_core")
        env["AIOS_MEMORY_ADDR"] = self.address("memory")
        env["AIOS_STORAGE_ADDR"] = self.address("storage")
        env["AIOS_ACCESS_ADDR"] = self.address("access")
        env.setdefault("AIOS_KERNEL_POLICY", cfg.policy)
        for svc in SERVICES:
            env[f"{ENV_PREFIX[svc]}METRICS_PORT"] = str(self.metrics_ports[svc])
        env["AIOS_KERNEL_HTTP_PORT"] = str(cfg.http_port)
        # Each embedded store in its own folder: one process owns a Qdrant path.
        env["AIOS_MEMORY_QDRANT_PATH"] = str(cfg.data_dir / "memory-qdrant")
        env["AIOS_STORAGE_QDRANT_PATH"] = str(cfg.data_dir / "storage-index")
        env["AIOS_ACCESS_DB_PATH"] = str(cfg.data_dir / "access.sqlite3")
        # Service-to-service credentials, made once (mode 0600) and kept; the
        # admin credential is written by the access service at first start.
        tokens_file = cfg.data_dir / "service-tokens.json"
        trust.ensure_tokens_file(tokens_file)
        env["AIOS_SERVICE_TOKENS_FILE"] = str(tokens_file)
        env["AIOS_ACCESS_ADMIN_TOKEN_FILE"] = str(self.admin_token_file)
        if self.s3 is not None:
            env["AIOS_STORAGE_S3_ENDPOINT"] = self.s3.endpoint
            env["AIOS_STORAGE_S3_ACCESS_KEY"] = self.s3.access_key
            env["AIOS_STORAGE_S3_SECRET_KEY"] = self.s3.secret_key
        return env

    # -- children: each started again on the same port when it dies

    def _launch_llm_server(self) -> subprocess.Popen:
        cfg = self.config
        port = urlsplit(self.llm_server.base_url).port if self.llm_server is not None else cfg.llm_server_port
        self.llm_server = start_local_server(cfg.host, port, parallel=cfg.llm_parallel, ctx=LOCAL_CTX,
                                             log_path=str(self.logs / "llm_server.log"))
        return self.llm_server.proc

    def _launch_s3(self) -> subprocess.Popen:
        port = int(self.s3.endpoint.rpartition(":")[2]) if self.s3 is not None else None
        self.s3 = start_seaweed(self.config.data_dir / "s3", self.config.host, port)
        return self.s3.process

    def _launch_service(self, svc: str) -> subprocess.Popen:
        with open(self.logs / f"{svc}.log", "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", f"services.{svc}"], env=self._env, cwd=str(REPO_ROOT),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us; we stop children ourselves
            )

    def _serving(self, svc: str) -> bool:
        with grpc.insecure_channel(self.address(svc)) as ch:
            try:
                resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=0.3)
            except grpc.RpcError:
                return False
        return resp.status == health_pb2.HealthCheckResponse.SERVING

    def start(self, on_ready=None) -> None:
        cfg = self.config
        self.logs.mkdir(parents=True, exist_ok=True)
        sup = self.supervisor
        try:
            endpoints = cfg.llm_endpoints
            if not endpoints:
                child = Child("llm_server", self._launch_llm_server, lambda _: self.llm_server.stop(),
                              log=str(self.logs / "llm_server.log"))
                sup.children.append(child)
                sup.start(child)
                endpoints = json.dumps([{
                    "name": "local", "model": LOCAL_MODEL, "base_url": self.llm_server.base_url,
                    "model_id": LOCAL_MODEL, "max_concurrency": cfg.llm_parallel, "native_tools": False,
                    # llama.cpp keeps each slot's last prompt: its whole context, split over the slots.
                    "cache_tokens": LOCAL_CTX,
                }])
                if on_ready:
                    on_ready("llm server", self.llm_server.base_url)
            # The filer waits 15 s for connections to drain; acknowledged
            # writes are durable, so 5 s of grace before the kill is enough.
            child = Child("s3", self._launch_s3, lambda _: self.s3.stop(timeout=5),
                          log=str(cfg.data_dir / "s3"))
            sup.children.append(child)
            sup.start(child)
            if on_ready:
                on_ready("s3", self.s3.url)
            self._env = self.env()
            self._env["AIOS_LLM_ENDPOINTS"] = endpoints
            for svc in SERVICES:
                child = Child(svc, lambda svc=svc: self._launch_service(svc), _halt,
                              ready=lambda svc=svc: self._serving(svc), log=str(self.logs / f"{svc}.log"))
                sup.children.append(child)
                sup.start(child)
            for svc in SERVICES:
                # llm_core is ready once a model server answers: one given by
                # --llm-endpoints may come up later, so only wait for it to run.
                service = "liveness" if svc == "llm_core" and cfg.llm_endpoints else ""
                try:
                    wait_healthy(self.address(svc), proc=self.procs[svc], service=service)
                except (RuntimeError, TimeoutError) as exc:
                    raise RuntimeError(f"{svc}: {exc}\n{_tail(self.logs / f'{svc}.log')}") from None
                if on_ready:
                    on_ready(svc, self.address(svc))
            sup.tick()
        except BaseException:
            self.stop()
            raise

    def supervise(self) -> str | None:
        """Restart what died; the reason to stop the stack, if any."""
        return self.supervisor.tick()

    def stop(self, timeout: float = 15.0) -> None:
        self.supervisor.stop()
        self.llm_server = None
        self.s3 = None


def _halt(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
