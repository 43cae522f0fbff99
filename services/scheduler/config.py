"""Kernel (scheduler) configuration from AIOS_KERNEL_* variables."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path

from services.runtime import sql, trust
from services.runtime.config import ConfigError, Env, metrics_port, server_address
from services.scheduler import queues

DEFAULT_PORT = 50051


@dataclass(frozen=True)
class Config:
    host: str
    port: int
    llm_addr: str
    memory_addr: str
    storage_addr: str
    access_addr: str
    policy: str = queues.FIFO
    # "access" (the access service authenticates and authorizes every
    # syscall) or "dev" (the token is the agent's name; no checks).
    auth: str = "access"
    # Seconds an authenticated token is trusted before asking access again
    # (the longest a revoked token keeps working).
    auth_cache_seconds: float = 5.0
    # This kernel's service credential, sent on every call to another service
    # ("" when service trust is off).
    service_token: str = ""
    slice_tokens: int = 64
    aging_seconds: float = 5.0
    quantum_tokens: int = 4096
    per_agent_outstanding: int = 64
    queue_capacity: int = 10_000
    # In-flight calls per memory, storage and tool queue (LLM capacity comes
    # from llm_core's endpoints).
    service_capacity: int = 64
    default_llm_capacity: int = 8
    history: int = 10_000
    # Seconds a syscall may take when neither it nor its gRPC call set a deadline.
    default_timeout: float = 600.0
    # The model of LLM syscalls that name none; "" = the first chat model
    # llm_core lists.
    default_model: str = ""
    # Prometheus metrics over HTTP; -1 = off, 0 = any free port.
    metrics_port: int = -1
    # Agents with series of their own in the metrics (the K that used the
    # most tokens, the rest as agent="other"); 0 = none: per-agent usage is
    # the process table's (`aios ps`), and agent labels are unbounded.
    metrics_top_agents: int = 0
    # The OpenAI-compatible HTTP door; -1 = off, 0 = any free port.
    http_port: int = -1
    # MCP servers whose tools the kernel offers (JSON, see tools_config()).
    tools_json: str = ""
    # The durable syscall journal: a SQLite file's path or a postgresql://
    # URL; "" = none (the process table and queues then live only in memory).
    journal_path: str = ""
    journal_max_age: float = 7 * 86400.0
    journal_max_rows: int = 100_000
    # The currency of endpoint prices and cost quotas (a label: no conversion).
    currency: str = "USD"
    # Cache-aware admission (services/scheduler/cache.py): new agent runs of
    # a model wait while the active ones fill its engines' prefix caches; a
    # run stops counting this long after its last call ended.
    cache_aware: bool = True
    cache_idle_seconds: float = 0.5
    # Replicas (services/scheduler/cluster.py): the address the other
    # replicas reach this one at ("" = a lone kernel), its id (unique among
    # the replicas; a restarted replica with the same id resumes its own
    # calls), and how long its lease lasts without renewal.
    advertise_address: str = ""
    replica_id: str = ""
    lease_seconds: float = 5.0

    @classmethod
    def from_env(cls, environ=None) -> "Config":
        env = Env("AIOS_KERNEL_", environ)
        host, port = server_address(env, DEFAULT_PORT)
        auth = env.str("AUTH", "access").lower()
        if auth not in ("access", "dev"):
            raise ConfigError(f"AIOS_KERNEL_AUTH={auth!r} is not 'access' or 'dev'")
        advertise = env.str("ADVERTISE_ADDRESS", "")
        if advertise and not _journal_path(env).startswith(("postgresql://", "postgres://")):
            raise ConfigError("AIOS_KERNEL_ADVERTISE_ADDRESS (kernel replicas) needs AIOS_KERNEL_JOURNAL to be a "
                              "postgresql:// URL: the replicas share their journal and leases there")
        policy = env.str("POLICY", queues.FIFO).lower()
        if policy not in queues.POLICIES:
            raise ConfigError(f"AIOS_KERNEL_POLICY={policy!r} is not one of {', '.join(queues.POLICIES)}")
        return cls(
            host=host,
            port=port,
            llm_addr=env.str("AIOS_LLM_ADDR", "127.0.0.1:50052"),
            memory_addr=env.str("AIOS_MEMORY_ADDR", "127.0.0.1:50053"),
            storage_addr=env.str("AIOS_STORAGE_ADDR", "127.0.0.1:50054"),
            access_addr=env.str("AIOS_ACCESS_ADDR", "127.0.0.1:50055"),
            policy=policy,
            auth=auth,
            service_token=trust.Trust.from_env(trust.KERNEL, env.environ).token,
            auth_cache_seconds=env.float("AUTH_CACHE_SECONDS", 5.0, minimum=0.0),
            slice_tokens=env.int("SLICE_TOKENS", 64, minimum=1),
            aging_seconds=env.float("AGING_SECONDS", 5.0, minimum=0.001),
            quantum_tokens=env.int("AGENT_QUANTUM_TOKENS", 4096, minimum=1),
            per_agent_outstanding=env.int("PER_AGENT_OUTSTANDING", 64, minimum=1),
            queue_capacity=env.int("QUEUE_CAPACITY", 10_000, minimum=1),
            service_capacity=env.int("SERVICE_CAPACITY", 64, minimum=1),
            default_llm_capacity=env.int("DEFAULT_LLM_CAPACITY", 8, minimum=1),
            history=env.int("HISTORY", 10_000, minimum=10),
            default_timeout=env.float("DEFAULT_TIMEOUT", 600.0, minimum=0.1),
            default_model=env.str("DEFAULT_MODEL", ""),
            metrics_port=metrics_port(env),
            metrics_top_agents=env.int("METRICS_TOP_AGENTS", 0, minimum=0),
            http_port=env.int("HTTP_PORT", -1),
            tools_json=_tools_json(env),
            journal_path=_journal_path(env),
            journal_max_age=env.float("JOURNAL_MAX_AGE_SECONDS", 7 * 86400.0, minimum=1.0),
            journal_max_rows=env.int("JOURNAL_MAX_ROWS", 100_000, minimum=100),
            currency=env.str("CURRENCY", "USD"),
            cache_aware=env.bool("CACHE_AWARE", True),
            cache_idle_seconds=env.float("CACHE_IDLE_SECONDS", 0.5, minimum=0.0),
            advertise_address=advertise,
            replica_id=env.str("REPLICA_ID", "") or (socket.gethostname() if advertise else ""),
            lease_seconds=env.float("LEASE_SECONDS", 5.0, minimum=0.1),
        )

    def mcp_servers(self) -> list[dict]:
        """[{"name": "fs", "command": ["python", "server.py"] | "url": "http://...", "env": {...},
        "tools": {"write": {"irreversible": true, "max_concurrency": 1,
        "conflicts_with": ["fs.delete"], "timeout": 10}}}]"""
        return json.loads(self.tools_json)["mcp_servers"] if self.tools_json else []


def _journal_path(env: Env) -> str:
    """AIOS_KERNEL_JOURNAL (a path, a postgresql:// URL, or "off"); by default a file in the data
    folder when there is one (AIOS_DATA_DIR, as `aios up` sets)."""
    value = env.str("JOURNAL", "")
    if value.lower() == "off":
        return ""
    if value.startswith(("postgresql://", "postgres://")):
        try:
            sql.check_tls(value)
        except ValueError as exc:
            raise ConfigError(f"AIOS_KERNEL_JOURNAL: {exc}") from None
    if value:
        return value
    data = env.str("AIOS_DATA_DIR", "")
    return str(Path(data) / "kernel-journal.sqlite3") if data else ""


def _tools_json(env: Env) -> str:
    path = env.str("TOOLS_FILE", "")
    raw = Path(path).read_text() if path else env.str("TOOLS", "")
    if not raw:
        return ""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"AIOS_KERNEL_TOOLS is not valid JSON: {exc}") from None
    servers = data.get("mcp_servers") if isinstance(data, dict) else None
    if not isinstance(servers, list):
        raise ConfigError('AIOS_KERNEL_TOOLS must be {"mcp_servers": [...]}')
    for i, server in enumerate(servers):
        if not isinstance(server, dict) or not server.get("name"):
            raise ConfigError(f"AIOS_KERNEL_TOOLS mcp_servers[{i}] needs a name")
        if bool(server.get("command")) == bool(server.get("url")):
            raise ConfigError(f"AIOS_KERNEL_TOOLS mcp_servers[{i}] needs exactly one of command or url")
        if server.get("command") and not isinstance(server["command"], list):
            raise ConfigError(f"AIOS_KERNEL_TOOLS mcp_servers[{i}].command must be a list of strings")
    return raw
