"""Storage service configuration, read from AIOS_STORAGE_* variables."""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime import trust
from services.runtime.config import ConfigError, Env, metrics_port, server_address

DEFAULT_PORT = 50054
MiB = 1024 * 1024


@dataclass(frozen=True)
class Config:
    host: str
    port: int
    # S3 object store (SeaweedFS locally, MinIO in Kubernetes).
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    # Host:port presigned URLs name, when agents reach the store elsewhere;
    # empty = s3_endpoint. Either way the URL points at the configured store.
    s3_public_endpoint: str = ""
    bucket: str = "aios-files"
    # Versions kept per file (the current one included); older ones are deleted.
    max_versions: int = 10
    # Per-agent quotas over current files; 0 = unlimited.
    quota_bytes: int = 1024 * MiB
    quota_files: int = 10_000
    # Semantic index of text files (Qdrant): local folder or server URL.
    qdrant_path: str = ""
    qdrant_url: str = ""
    index_enabled: bool = True
    # Text files above this size are stored but not indexed.
    index_max_bytes: int = 256 * 1024
    llm_addr: str = "127.0.0.1:50052"
    embedding_model: str = ""
    # This service's own credential for calls to llm_core (default: its entry
    # in the service credentials, see services/runtime/trust.py).
    service_token: str = ""
    # Service credentials: who may call this service (the kernel only).
    service_tokens: tuple[tuple[str, str], ...] = ()
    # Prometheus metrics over HTTP; -1 = off, 0 = any free port.
    metrics_port: int = -1

    @classmethod
    def from_env(cls, environ=None) -> "Config":
        env = Env("AIOS_STORAGE_", environ)
        host, port = server_address(env, DEFAULT_PORT)
        qdrant_path = env.str("QDRANT_PATH", "")
        qdrant_url = env.str("QDRANT_URL", "")
        index_enabled = env.bool("INDEX", True)
        if index_enabled and not (qdrant_path or qdrant_url):
            raise ConfigError("AIOS_STORAGE_QDRANT_PATH or AIOS_STORAGE_QDRANT_URL is required "
                              "(or AIOS_STORAGE_INDEX=false)")
        bucket = env.str("BUCKET", "aios-files")
        if not (3 <= len(bucket) <= 63) or not all(c.islower() or c.isdigit() or c in "-." for c in bucket):
            raise ConfigError(f"AIOS_STORAGE_BUCKET={bucket!r} is not a valid S3 bucket name")
        return cls(
            host=host,
            port=port,
            s3_endpoint=env.str("S3_ENDPOINT"),
            s3_access_key=env.secret("S3_ACCESS_KEY"),
            s3_secret_key=env.secret("S3_SECRET_KEY"),
            s3_secure=env.bool("S3_SECURE", False),
            s3_region=env.str("S3_REGION", "us-east-1"),
            s3_public_endpoint=env.str("S3_PUBLIC_ENDPOINT", ""),
            bucket=bucket,
            max_versions=env.int("MAX_VERSIONS", 10, minimum=1),
            quota_bytes=env.int("QUOTA_BYTES", 1024 * MiB, minimum=0),
            quota_files=env.int("QUOTA_FILES", 10_000, minimum=0),
            qdrant_path=qdrant_path,
            qdrant_url=qdrant_url,
            index_enabled=index_enabled,
            index_max_bytes=env.int("INDEX_MAX_BYTES", 256 * 1024, minimum=0),
            llm_addr=env.str("AIOS_LLM_ADDR", "127.0.0.1:50052"),
            embedding_model=env.str("EMBEDDING_MODEL", ""),
            service_token=env.secret("SERVICE_TOKEN", ""),
            service_tokens=tuple(sorted(trust.load_tokens(environ).items())),
            metrics_port=metrics_port(env),
        )
