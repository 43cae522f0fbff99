"""Kernel (scheduler) configuration from AIOS_KERNEL_* variables."""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.config import ConfigError, Env, server_address
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
    metrics_port: int = -1

    @classmethod
    def from_env(cls, environ=None) -> "Config":
        env = Env("AIOS_KERNEL_", environ)
        host, port = server_address(env, DEFAULT_PORT)
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
            slice_tokens=env.int("SLICE_TOKENS", 64, minimum=1),
            aging_seconds=env.float("AGING_SECONDS", 5.0, minimum=0.001),
            quantum_tokens=env.int("AGENT_QUANTUM_TOKENS", 4096, minimum=1),
            per_agent_outstanding=env.int("PER_AGENT_OUTSTANDING", 64, minimum=1),
            queue_capacity=env.int("QUEUE_CAPACITY", 10_000, minimum=1),
            service_capacity=env.int("SERVICE_CAPACITY", 64, minimum=1),
            default_llm_capacity=env.int("DEFAULT_LLM_CAPACITY", 8, minimum=1),
            history=env.int("HISTORY", 10_000, minimum=10),
            default_timeout=env.float("DEFAULT_TIMEOUT", 600.0, minimum=0.1),
            metrics_port=env.int("METRICS_PORT", -1),
        )
