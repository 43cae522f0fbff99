"""Service-to-service trust: which service is calling, by its credential.

Every service has a service credential (a bearer token) from configuration.
Callers send it as `authorization: Bearer <token>` (`channels.channel(address, token)`
does this); a server admits only the services it names, before any handler
runs (`Service.authorize`).

Where the credentials come from, in order:
- `AIOS_SERVICE_TOKENS_FILE`: a JSON object {"scheduler": "<token>", "memory": ...},
  one entry per service (`aios up` writes one into the data folder, mode 0600);
- `AIOS_SERVICE_TOKEN_<NAME>` (or `AIOS_SERVICE_TOKEN_<NAME>_FILE`, how Kubernetes
  mounts a Secret) for one service, e.g. AIOS_SERVICE_TOKEN_SCHEDULER; these win
  over the file.
A peer entry may also be `sha256:<hex digest>` so a verifier need not hold
the caller's secret (only the caller itself needs the plain token).

When no credential is configured at all, trust is OFF: every caller is
admitted and calls carry no service credential. That is the development and
unit-test mode; `aios up` always configures credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.runtime import errors
from services.runtime.config import ConfigError
from services.runtime.context import AUTHORIZATION_KEY

# Service identities: the module names under services/.
KERNEL = "scheduler"
LLM_CORE = "llm_core"
MEMORY = "memory"
STORAGE = "storage"
ACCESS = "access"
SERVICES = (KERNEL, LLM_CORE, MEMORY, STORAGE, ACCESS)

TOKENS_FILE_VAR = "AIOS_SERVICE_TOKENS_FILE"
TOKEN_VAR_PREFIX = "AIOS_SERVICE_TOKEN_"
DIGEST_PREFIX = "sha256:"

# Who may call whom: the RPC method's short name ("Embed") or "*" -> callers.
ACCEPTS: dict[str, dict[str, frozenset[str]]] = {
    LLM_CORE: {"*": frozenset({KERNEL}), "Embed": frozenset({KERNEL, MEMORY, STORAGE})},
    MEMORY: {"*": frozenset({KERNEL})},
    STORAGE: {"*": frozenset({KERNEL})},
    # Access's own admission (admin credentials besides the kernel) lives in
    # services/access/callers.py; this entry is its service part.
    ACCESS: {"*": frozenset({KERNEL})},
}

Authorize = Callable[[str, Sequence[tuple[str, str]]], None]


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_token() -> str:
    """A fresh service credential (for `aios up` and tests)."""
    return "aios_svc_" + secrets.token_urlsafe(32)


def bearer(metadata: Sequence[tuple[str, str]] | None) -> str:
    """The bearer token of a call's metadata, "" when there is none.

    Raises Unauthenticated for an authorization header that is not a bearer token."""
    for key, value in metadata or ():
        if key == AUTHORIZATION_KEY:
            scheme, _, token = value.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise errors.Unauthenticated("authorization metadata must be 'Bearer <token>'",
                                             reason="MALFORMED_CREDENTIAL")
            return token
    return ""


def _digest_of_entry(name: str, value: str) -> bytes:
    if value.startswith(DIGEST_PREFIX):
        try:
            raw = bytes.fromhex(value[len(DIGEST_PREFIX):])
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ConfigError(f"service credential of {name!r} is not 'sha256:<64 hex digits>'")
        return raw
    return digest(value)


@dataclass(frozen=True)
class Trust:
    """This service's own credential and the credentials of its peers."""

    name: str
    # Sent on calls to other services; "" = none.
    token: str = ""
    # Peer name -> SHA-256 of its credential.
    peers: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.peers)

    @classmethod
    def from_tokens(cls, name: str, tokens: Mapping[str, str]) -> "Trust":
        """From a table name -> token (or sha256:<hex>), as in the tokens file."""
        own = tokens.get(name, "")
        if own.startswith(DIGEST_PREFIX):
            own = ""  # a digest cannot be sent; this service just makes no calls
        peers = {peer: _digest_of_entry(peer, value) for peer, value in tokens.items() if value}
        return cls(name=name, token=own, peers=peers)

    @classmethod
    def from_env(cls, name: str, environ: Mapping[str, str] | None = None) -> "Trust":
        return cls.from_tokens(name, load_tokens(environ))

    def identify(self, token: str) -> str:
        """The peer whose credential `token` is, "" when none (constant time per peer)."""
        presented = digest(token)
        found = ""
        for peer, expected in self.peers.items():
            if hmac.compare_digest(presented, expected) and not found:
                found = peer
        return found

    def authorize(self, accepts: Mapping[str, Collection[str]]) -> Authorize | None:
        """An authorize hook admitting the callers `accepts` names per method
        ({"*": {...}, "Embed": {...}}); None (admit all) when trust is off."""
        if not self.enabled:
            return None
        table = {method: frozenset(callers) for method, callers in accepts.items()}

        def authorize(method: str, metadata) -> None:
            token = bearer(metadata)
            if not token:
                raise errors.Unauthenticated(f"{method} needs a service credential",
                                             reason="MISSING_SERVICE_CREDENTIAL")
            caller = self.identify(token)
            if not caller:
                raise errors.Unauthenticated("the credential is not a service credential",
                                             reason="UNKNOWN_SERVICE_CREDENTIAL")
            short = method.rsplit("/", 1)[-1]
            allowed = table.get(short, table.get("*", frozenset()))
            if caller not in allowed:
                raise errors.PermissionDenied(f"service {caller!r} may not call {method}",
                                              reason="CALLER_NOT_ALLOWED")

        return authorize


def make_authorize(allowed: Collection[str], tokens: Mapping[str, str],
                   per_method: Mapping[str, Collection[str]] | None = None) -> Authorize | None:
    """An authorize hook for `Service.authorize`: admits the services in
    `allowed` (plus, for a method's short name in `per_method`, those named
    there) by their tokens; None (admit all) when `tokens` is empty."""
    accepts: dict[str, Collection[str]] = {"*": allowed}
    for method, callers in (per_method or {}).items():
        accepts[method] = set(allowed) | set(callers)
    return Trust.from_tokens("", tokens).authorize(accepts)


def authorize_for(name: str, environ: Mapping[str, str] | None = None) -> Authorize | None:
    """The standard hook of service `name` (see ACCEPTS), from the environment."""
    return Trust.from_env(name, environ).authorize(ACCEPTS[name])


def load_tokens(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The service credential table from the environment (see the module doc)."""
    env = os.environ if environ is None else environ
    tokens: dict[str, str] = {}
    path = env.get(TOKENS_FILE_VAR, "")
    if path:
        tokens.update(read_tokens_file(Path(path)))
    for var, value in env.items():
        if not var.startswith(TOKEN_VAR_PREFIX) or not value:
            continue
        name = var[len(TOKEN_VAR_PREFIX):].lower()
        if name.endswith("_file"):
            name = name[: -len("_file")]
            try:
                value = Path(value).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"{var}={value!r}: {exc.strerror}") from None
        tokens[name] = value
    return tokens


def read_tokens_file(path: Path) -> dict[str, str]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{TOKENS_FILE_VAR}={str(path)!r}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{TOKENS_FILE_VAR}={str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                            for k, v in raw.items()):
        raise ConfigError(f"{TOKENS_FILE_VAR}={str(path)!r} must be a JSON object of strings")
    return raw


def ensure_tokens_file(path: Path, names: Collection[str] = SERVICES) -> dict[str, str]:
    """Create the credential file for `names` once (mode 0600) and return its
    table; an existing file is kept, and only missing names are added."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens = read_tokens_file(path) if path.exists() else {}
    missing = [n for n in names if not tokens.get(n)]
    if not missing and path.exists():
        return tokens
    for n in missing:
        tokens[n] = new_token()
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            json.dump(tokens, fh, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tokens
