"""Memory service configuration from AIOS_MEMORY_* variables.

Qdrant is either embedded (AIOS_MEMORY_QDRANT_PATH, default
$AIOS_DATA_DIR/memory-qdrant or ./.aios/memory-qdrant; one process owns the
folder) or a server (AIOS_MEMORY_QDRANT_URL, which wins when set).
Embeddings come from llm_core at AIOS_LLM_ADDR.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from services.runtime import trust
from services.runtime.config import ConfigError, Env, metrics_port, server_address

DEFAULT_PORT = 50053


@dataclass(frozen=True)
class Config:
    host: str
    port: int
    # Embedded Qdrant folder; ignored when qdrant_url is set.
    qdrant_path: str
    qdrant_url: str = ""
    qdrant_api_key: str = ""
    collection: str = "aios_memory"
    llm_addr: str = "127.0.0.1:50052"
    # Embedding model name at llm_core; empty selects llm_core's default.
    embedding_model: str = ""
    # Dimensions of that model's vectors (all-MiniLM-L6-v2: 384).
    vector_size: int = 384
    # This service's credential for calls to llm_core (default: its entry in
    # the service credential table, see services/runtime/trust.py).
    service_token: str = ""
    # The service credential table: who may call this service (the kernel).
    service_tokens: tuple[tuple[str, str], ...] = ()
    # Records per agent in the working tier, and the K of LRU-K.
    working_limit: int = 64
    lru_k: int = 2
    max_content_bytes: int = 64 * 1024
    max_batch: int = 256
    embed_timeout: float = 60.0
    # Prometheus metrics over HTTP; -1 = off, 0 = any free port.
    metrics_port: int = -1

    @classmethod
    def from_env(cls, environ=None) -> "Config":
        env = Env("AIOS_MEMORY_", environ)
        host, port = server_address(env, DEFAULT_PORT)
        data_dir = env.str("AIOS_DATA_DIR", ".aios")
        url = env.str("QDRANT_URL", "")
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(f"AIOS_MEMORY_QDRANT_URL={url!r} must be an http(s) URL")
        return cls(
            host=host,
            port=port,
            qdrant_path=env.str("QDRANT_PATH", os.path.join(data_dir, "memory-qdrant")),
            qdrant_url=url,
            qdrant_api_key=env.secret("QDRANT_API_KEY", ""),
            collection=env.str("COLLECTION", "aios_memory"),
            llm_addr=env.str("AIOS_LLM_ADDR", "127.0.0.1:50052"),
            embedding_model=env.str("EMBEDDING_MODEL", ""),
            vector_size=env.int("VECTOR_SIZE", 384, minimum=1),
            service_token=env.secret("SERVICE_TOKEN", ""),
            service_tokens=tuple(sorted(trust.load_tokens(environ).items())),
            working_limit=env.int("WORKING_LIMIT", 64, minimum=1),
            lru_k=env.int("LRU_K", 2, minimum=1),
            max_content_bytes=env.int("MAX_CONTENT_BYTES", 64 * 1024, minimum=1),
            max_batch=env.int("MAX_BATCH", 256, minimum=1),
            embed_timeout=env.float("EMBED_TIMEOUT", 60.0, minimum=0.1),
            metrics_port=metrics_port(env),
        )
