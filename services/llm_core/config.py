"""llm_core configuration: the model endpoints it drives.

AIOS_LLM_ENDPOINTS (or a file named by AIOS_LLM_ENDPOINTS_FILE) holds a JSON
list; each entry is one OpenAI-compatible endpoint serving one model name:

    [{"name": "local", "model": "smollm2",
      "base_url": "http://127.0.0.1:50060/v1", "model_id": "smollm2",
      "api_key_env": "", "max_concurrency": 4, "native_tools": false}]

Several entries may share a model name; the router spreads calls over them.
`api_key_env` names the environment variable holding the key, so keys never
sit in configuration files; it must be set when llm_core starts.
`native_tools: false` makes llm_core emulate tool calls with a JSON-schema
constrained answer (see emulated_tools.py) instead of passing `tools` on.
`kind: "embedding"` entries serve Embed (AIOS_LLM_EMBEDDING_MODEL names one).
`prices` (optional) is what the endpoint's tokens cost per million, in the
operator's currency: {"prompt": 0.15, "completion": 0.6, "cached_prompt": 0.075};
"prompt" and "completion" are required; "cached_prompt" (prompt tokens served
from the prefix cache) may be left out, and then costs what "prompt" does.
ListModels reports them, for the kernel's cost budgets.
`cache_tokens` (optional) is how many tokens the engine's prefix cache holds
(vLLM logs it as its KV cache size at start); prefix routing keeps its view
of the endpoint's cache to that size, and the kernel keeps the agent runs it
serves at once within the model's total. 0: the engine caches no prefixes
(it is then routed by load alone). Left out: routing assumes
DEFAULT_CACHE_TOKENS, and the kernel holds no run back for a cache it was
not told of.

AIOS_LLM_ROUTING picks how calls are spread over a model's endpoints:
"prefix" (default: by the longest cached prefix, traded against load),
"session" (least loaded, a session kept on its last endpoint) or "hash"
(each session on the endpoint its hash picks, within a load bound: the same
in every llm_core replica, for several of them behind one kernel); see
engine.Router and docs/routing.md.

AIOS_LLM_REPLICAS (default 1) is how many llm_core replicas share the
endpoints: each keeps at most max_concurrency // replicas calls (at least
one) in flight on an endpoint, so together they never exceed its
max_concurrency; calls beyond wait for a slot until their deadline.
ListModels still reports each endpoint's whole max_concurrency.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.runtime import trust
from services.runtime.config import ConfigError, Env, metrics_port, server_address

DEFAULT_PORT = 50052
# How calls are spread over a model's endpoints (engine.Router).
ROUTING_MODES = ("prefix", "session", "hash")
# The cache prefix routing assumes for an endpoint that does not say: a
# modest GPU's worth.
DEFAULT_CACHE_TOKENS = 65_536


@dataclass(frozen=True)
class Prices:
    """Cost per million tokens, in the operator's currency."""

    prompt: float
    completion: float
    cached_prompt: float | None = None  # None = prompt's

    @classmethod
    def from_dict(cls, raw, where: str) -> "Prices":
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be an object")
        unknown = set(raw) - {"prompt", "completion", "cached_prompt"}
        if unknown:
            raise ConfigError(f"{where} has unknown keys: {sorted(unknown)}")

        def price(key: str) -> float:
            value = raw[key]
            # bool is an int to Python, and json.loads accepts NaN and Infinity.
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{where}.{key} must be a non-negative number, not {value!r}")
            return float(value)

        for key in ("prompt", "completion"):
            if key not in raw:
                raise ConfigError(f"{where}.{key} is required")
        return cls(prompt=price("prompt"), completion=price("completion"),
                   cached_prompt=price("cached_prompt") if "cached_prompt" in raw else None)


@dataclass(frozen=True)
class EndpointConfig:
    name: str
    model: str
    base_url: str
    model_id: str
    api_key_env: str = ""
    max_concurrency: int = 8
    native_tools: bool = False
    kind: str = "chat"  # "chat" or "embedding"
    prices: Prices | None = None  # None = not priced
    # Tokens the engine's prefix cache holds (0: it caches none; None: not said).
    cache_tokens: int | None = None
    # The key itself, read from `api_key_env` at start; never printed.
    api_key: str = field(default="", repr=False, compare=False)

    @classmethod
    def from_dict(cls, raw: dict, index: int, environ: Mapping[str, str] | None = None) -> "EndpointConfig":
        where = f"AIOS_LLM_ENDPOINTS[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be an object")
        # The key itself is never accepted from the file: only its variable's name.
        unknown = set(raw) - {f.name for f in cls.__dataclass_fields__.values()} | ({"api_key"} & set(raw))
        if unknown:
            raise ConfigError(f"{where} has unknown keys: {sorted(unknown)}")
        for key in ("model", "base_url"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise ConfigError(f"{where}.{key} is required")
        if not raw["base_url"].startswith(("http://", "https://")):
            raise ConfigError(f"{where}.base_url must be an http(s) URL")
        max_conc = raw.get("max_concurrency", 8)
        if not isinstance(max_conc, int) or max_conc < 1:
            raise ConfigError(f"{where}.max_concurrency must be a positive integer")
        kind = raw.get("kind", "chat")
        if kind not in ("chat", "embedding"):
            raise ConfigError(f"{where}.kind must be 'chat' or 'embedding'")
        api_key_env = raw.get("api_key_env", "")
        if not isinstance(api_key_env, str):
            raise ConfigError(f"{where}.api_key_env must be the name of an environment variable")
        prices = Prices.from_dict(raw["prices"], f"{where}.prices") if "prices" in raw else None
        cache_tokens = raw.get("cache_tokens")
        if cache_tokens is not None and (isinstance(cache_tokens, bool) or not isinstance(cache_tokens, int)
                                         or cache_tokens < 0):
            raise ConfigError(f"{where}.cache_tokens must be a non-negative integer (tokens), not {cache_tokens!r}")
        api_key = ""
        if api_key_env:
            api_key = (os.environ if environ is None else environ).get(api_key_env, "")
            if not api_key:
                # Fail at start, not on the first call with a confusing 401.
                raise ConfigError(f"{where}.api_key_env names {api_key_env}, which is not set")
        return cls(
            name=raw.get("name") or f"{raw['model']}-{index}",
            model=raw["model"],
            base_url=raw["base_url"].rstrip("/"),
            model_id=raw.get("model_id") or raw["model"],
            api_key_env=api_key_env,
            max_concurrency=max_conc,
            native_tools=bool(raw.get("native_tools", False)),
            kind=kind,
            prices=prices,
            cache_tokens=cache_tokens,
            api_key=api_key,
        )


@dataclass(frozen=True)
class Config:
    host: str
    port: int
    endpoints: tuple[EndpointConfig, ...]
    # Embeddings: "local" (all-MiniLM-L6-v2 in process) or the model name of
    # an endpoint entry with kind "embedding".
    embedding_model: str = "local"
    # Service credentials (services/runtime/trust.py): llm_core admits the
    # kernel, and memory and storage for Embed.
    service_tokens: tuple[tuple[str, str], ...] = ()
    # How calls are spread over a model's endpoints (ROUTING_MODES).
    routing: str = "prefix"
    # llm_core replicas sharing the endpoints: each keeps its share of an
    # endpoint's max_concurrency in flight.
    replicas: int = 1
    # Prometheus metrics over HTTP; -1 = off, 0 = any free port.
    metrics_port: int = -1

    @classmethod
    def from_env(cls, environ=None) -> "Config":
        env = Env("AIOS_LLM_", environ)
        host, port = server_address(env, DEFAULT_PORT)
        path = env.str("ENDPOINTS_FILE", "")
        raw = Path(path).read_text() if path else env.str("ENDPOINTS", "[]")
        try:
            items = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"AIOS_LLM_ENDPOINTS is not valid JSON: {exc}") from None
        if not isinstance(items, list):
            raise ConfigError("AIOS_LLM_ENDPOINTS must be a JSON list")
        endpoints = tuple(EndpointConfig.from_dict(item, i, environ) for i, item in enumerate(items))
        names = [e.name for e in endpoints]
        if len(set(names)) != len(names):
            raise ConfigError("AIOS_LLM_ENDPOINTS has duplicate endpoint names")
        embedding_model = env.str("EMBEDDING_MODEL", "local")
        embedding_models = {e.model for e in endpoints if e.kind == "embedding"}
        if embedding_model != "local" and embedding_model not in embedding_models:
            raise ConfigError(f"AIOS_LLM_EMBEDDING_MODEL={embedding_model!r} is neither 'local' "
                              "nor the model of an endpoint with kind 'embedding'")
        routing = env.str("ROUTING", "prefix")
        if routing not in ROUTING_MODES:
            modes = ", ".join(repr(m) for m in ROUTING_MODES)
            raise ConfigError(f"AIOS_LLM_ROUTING must be one of {modes}, not {routing!r}")
        return cls(host=host, port=port, endpoints=endpoints, embedding_model=embedding_model,
                   service_tokens=tuple(sorted(trust.load_tokens(environ).items())), routing=routing,
                   replicas=env.int("REPLICAS", 1, minimum=1), metrics_port=metrics_port(env))
