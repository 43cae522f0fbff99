"""Configuration from environment variables, validated at start-up.

Each service declares a frozen dataclass and builds it with `Env`; a missing
or malformed variable stops the service at once with a message that names it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


class ConfigError(ValueError):
    """A configuration variable is missing or malformed."""


class Env:
    """Typed reads of `AIOS_<SERVICE>_<NAME>` variables (or any full name)."""

    def __init__(self, prefix: str, environ: Mapping[str, str] | None = None) -> None:
        self.prefix = prefix
        self.environ = os.environ if environ is None else environ

    def _name(self, name: str) -> str:
        return name if name.startswith("AIOS_") else f"{self.prefix}{name}"

    def str(self, name: str, default: str | None = None) -> str:
        full = self._name(name)
        value = self.environ.get(full)
        if value is None or value == "":
            if default is None:
                raise ConfigError(f"{full} is required")
            return default
        return value

    def int(self, name: str, default: int, *, minimum: int | None = None) -> int:
        full = self._name(name)
        raw = self.environ.get(full)
        if raw in (None, ""):
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{full}={raw!r} is not an integer") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{full}={value} must be at least {minimum}")
        return value

    def float(self, name: str, default: float, *, minimum: float | None = None) -> float:
        full = self._name(name)
        raw = self.environ.get(full)
        if raw in (None, ""):
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{full}={raw!r} is not a number") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{full}={value} must be at least {minimum}")
        return value

    def bool(self, name: str, default: bool) -> bool:
        full = self._name(name)
        raw = self.environ.get(full)
        if raw in (None, ""):
            return default
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{full}={raw!r} is not a boolean (true/false)")

    def secret(self, name: str, default: str | None = None) -> str:
        """A secret from the variable itself or from a file named by NAME_FILE
        (how Kubernetes mounts Secrets)."""
        full = self._name(name)
        path = self.environ.get(f"{full}_FILE")
        if path:
            try:
                with open(path, encoding="utf-8") as fh:
                    return fh.read().strip()
            except OSError as exc:
                raise ConfigError(f"{full}_FILE={path!r}: {exc.strerror}") from None
        return self.str(name, default)


def server_address(env: Env, default_port: int) -> tuple[str, int]:
    """HOST and PORT of a service's gRPC listener."""
    host = env.str("HOST", "127.0.0.1")
    port = env.int("PORT", default_port, minimum=0)
    if port > 65535:
        raise ConfigError(f"{env.prefix}PORT={port} is not a port")
    return host, port


def metrics_port(env: Env) -> int:
    """METRICS_PORT of a service's Prometheus metrics over HTTP: -1 = off
    (the default), 0 = any free port."""
    port = env.int("METRICS_PORT", -1, minimum=-1)
    if port > 65535:
        raise ConfigError(f"{env.prefix}METRICS_PORT={port} is not a port")
    return port
