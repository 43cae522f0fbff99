"""OpenAI-compatible HTTP front for the simulated engine (aiohttp).

Endpoints::

    POST /v1/chat/completions   non-streaming, or SSE with "stream": true
    GET  /v1/models
    GET  /health
    GET  /metrics               JSON; Prometheus text if ?format=prometheus or
                                the Accept header asks for text/plain/openmetrics

Streaming handlers do not get a task or queue entry per token: the engine
bumps ``Sequence.generated`` and resolves one future; the handler wakes, turns
every token produced since its last write into pre-encoded SSE chunks and
writes them with a single ``write()`` (so a slow reader gets its tokens
batched instead of piling up wake-ups).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from aiohttp import web

from .engine import (
    WORD_JSON,
    ChatPrompt,
    Engine,
    EngineConfig,
    EngineOverloaded,
    RequestTooLarge,
    SeqState,
    output_text,
    output_word_index,
    parse_messages,
    render_message,
)

ENGINE_KEY = web.AppKey("engine", Engine)

_SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def _error(status: int, message: str, type_: str, code: str | None = None,
           param: str | None = None) -> web.Response:
    """OpenAI-style error body."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status)


def _usage(prompt: ChatPrompt, completion_tokens: int, cached: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt.prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def _parse_max_tokens(body: dict) -> int | None:
    """max_completion_tokens (preferred) or max_tokens; None if absent."""
    for key in ("max_completion_tokens", "max_tokens"):
        v = body.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"'{key}' must be an integer >= 1")
        return v
    return None


async def chat_completions(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    cfg = engine.config
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return _error(400, "request body is not valid JSON", "invalid_request_error")
    if not isinstance(body, dict):
        return _error(400, "request body must be a JSON object", "invalid_request_error")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _error(400, "'messages' must be a non-empty list", "invalid_request_error",
                      param="messages")
    if body.get("n") not in (None, 1):
        return _error(400, "only n=1 is supported", "invalid_request_error", param="n")
    try:
        max_tokens = _parse_max_tokens(body)
        prompt = parse_messages(messages)
    except ValueError as exc:
        return _error(400, str(exc), "invalid_request_error")
    model = body.get("model") if isinstance(body.get("model"), str) else cfg.model
    stream = bool(body.get("stream"))
    include_usage = stream and bool((body.get("stream_options") or {}).get("include_usage"))

    if max_tokens is None:
        # Natural length: default_output_tokens words in total, counting the
        # words a resumed (trailing assistant) prefix already has.
        n_new = cfg.default_output_tokens - prompt.resume_words
        finish_reason = "stop"
    else:
        n_new = max_tokens
        finish_reason = "length"

    rid = "chatcmpl-" + uuid.uuid4().hex[:24]
    created = int(time.time())

    seq = None
    if n_new > 0:
        try:
            seq = engine.submit(
                prompt.prompt_tokens, n_new, stream=stream,
                block_hashes=engine.prompt_block_hashes(prompt.text, prompt.prompt_tokens))
        except EngineOverloaded as exc:
            return _error(503, str(exc), "service_unavailable_error", code="server_overloaded")
        except RequestTooLarge as exc:
            return _error(400, str(exc), "invalid_request_error",
                          code="context_length_exceeded", param="messages")
    else:
        n_new = 0   # resumed past the natural length: nothing left to say

    if stream:
        return await _stream(request, engine, seq, prompt, model, rid, created,
                             n_new, finish_reason, include_usage)

    cached = 0
    if seq is not None:
        try:
            await seq.done
        finally:
            if not seq.finished:      # handler cancelled: client went away
                engine.abort(seq)
        if seq.state is SeqState.ABORTED:
            return _error(503, "server shutting down", "service_unavailable_error")
        cached = seq.cached_tokens
    text = output_text(prompt.seed, prompt.resume_words, n_new, prompt.first_space)
    engine.remember(prompt.base_text + render_message("assistant", prompt.resume_prefix + text))
    return web.json_response({
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": None,
            "finish_reason": finish_reason,
        }],
        "usage": _usage(prompt, n_new, cached),
        "system_fingerprint": None,
    })


async def _stream(request: web.Request, engine: Engine, seq, prompt: ChatPrompt,
                  model: str, rid: str, created: int, n_new: int,
                  finish_reason: str, include_usage: bool) -> web.StreamResponse:
    """SSE in the OpenAI chunk format."""
    head = json.dumps({"id": rid, "object": "chat.completion.chunk", "created": created,
                       "model": model}, separators=(",", ":"))[:-1]                      # drop the closing '}'
    usage_null = ',"usage":null' if include_usage else ""
    # Pre-encoded pieces: a content chunk is tok_pre + "\"word\"" + tok_post.
    tok_pre = ('data: ' + head + ',"choices":[{"index":0,"delta":{"content":').encode()
    tok_post = ('},"logprobs":null,"finish_reason":null}]' + usage_null + '}\n\n').encode()
    role_chunk = ('data: ' + head + ',"choices":[{"index":0,"delta":{"role":"assistant",'
                  '"content":""},"logprobs":null,"finish_reason":null}]'
                  + usage_null + '}\n\n').encode()

    resp = web.StreamResponse(headers=_SSE_HEADERS)
    try:
        await resp.prepare(request)
        seed, base, first_space = prompt.seed, prompt.resume_words, prompt.first_space
        sent = 0
        while True:
            parts: list[bytes] = []
            if seq is not None:
                await seq.wait_progress(sent)
                if seq.state is SeqState.ABORTED:   # engine shutting down
                    return resp
                n = seq.generated
                if sent == 0 and n > 0:
                    parts.append(role_chunk)
                for i in range(sent, n):
                    parts.append(tok_pre)
                    parts.append(WORD_JSON[output_word_index(seed, base + i)][i > 0 or first_space])
                    parts.append(tok_post)
                sent = n
                done = seq.state is SeqState.FINISHED
            else:
                parts.append(role_chunk)
                done = True
            if done:
                cached = seq.cached_tokens if seq is not None else 0
                parts.append(('data: ' + head + ',"choices":[{"index":0,"delta":{},'
                              '"logprobs":null,"finish_reason":' + json.dumps(finish_reason)
                              + '}]' + usage_null + '}\n\n').encode())
                if include_usage:
                    parts.append(('data: ' + head + ',"choices":[],"usage":'
                                  + json.dumps(_usage(prompt, n_new, cached), separators=(",", ":")) + '}\n\n').encode())
                parts.append(b"data: [DONE]\n\n")
                await resp.write(b"".join(parts))
                break
            await resp.write(b"".join(parts))
        await resp.write_eof()
    except ConnectionResetError:    # client closed the stream
        return resp
    finally:
        if seq is not None and not seq.finished:
            engine.abort(seq)       # disconnect / cancellation frees slot + KV now
    if engine.prefix_cache is not None:
        text = output_text(prompt.seed, prompt.resume_words, n_new, prompt.first_space)
        engine.remember(prompt.base_text + render_message("assistant", prompt.resume_prefix + text))
    return resp


async def models(request: web.Request) -> web.Response:
    cfg = request.app[ENGINE_KEY].config
    return web.json_response({"object": "list", "data": [{
        "id": cfg.model, "object": "model", "created": 0, "owned_by": "bench-simulator",
        "max_model_len": cfg.context_limit,
    }]})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


# vLLM-compatible Prometheus names for the metrics vLLM also has.
_VLLM_NAMES = {
    "running": ("vllm:num_requests_running", "gauge"),
    "waiting": ("vllm:num_requests_waiting", "gauge"),
    "kv_usage": ("vllm:kv_cache_usage_perc", "gauge"),
    "prefix_cache_queried_tokens": ("vllm:prefix_cache_queries_total", "counter"),
    "prefix_cache_hit_tokens": ("vllm:prefix_cache_hits_total", "counter"),
    "prompt_tokens_total": ("vllm:prompt_tokens_total", "counter"),
    "generation_tokens_total": ("vllm:generation_tokens_total", "counter"),
    "requests_served": ("vllm:request_success_total", "counter"),
}


_COUNTERS = {
    "prefix_cache_lookups", "prefix_cache_hits", "prefix_cache_queried_tokens",
    "prefix_cache_hit_tokens", "prompt_tokens_total", "prefill_tokens_total",
    "generation_tokens_total", "tokens_total", "requests_received", "requests_served",
    "requests_aborted", "requests_rejected_503", "steps", "busy_seconds", "lag_seconds_total",
}


def prometheus_text(m: dict[str, Any]) -> str:
    """Every numeric metric as ``sim_<key>``, plus vLLM-named aliases."""
    label = '{model_name=%s}' % json.dumps(m["model"])
    lines = []
    for key, value in m.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        lines.append(f"# TYPE sim_{key} {'counter' if key in _COUNTERS else 'gauge'}")
        lines.append(f"sim_{key} {value}")
        if key in _VLLM_NAMES:
            name, kind = _VLLM_NAMES[key]
            lines.append(f"# TYPE {name} {kind}")
            lines.append(f"{name}{label} {value}")
    return "\n".join(lines) + "\n"


async def metrics(request: web.Request) -> web.Response:
    m = request.app[ENGINE_KEY].metrics()
    accept = request.headers.get("Accept", "")
    fmt = request.query.get("format")
    if fmt == "prometheus" or (fmt != "json" and ("text/plain" in accept or "openmetrics" in accept)):
        return web.Response(text=prometheus_text(m), content_type="text/plain")
    return web.json_response(m)


def make_app(engine: Engine) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[ENGINE_KEY] = engine
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app


class SimulatorServer:
    """One engine + its HTTP server, bound to 127.0.0.1.

    Usage (e.g. in tests)::

        async with SimulatorServer(EngineConfig(time_scale=0.01)) as srv:
            client = AsyncOpenAI(base_url=srv.url, api_key="x")
    """

    def __init__(self, config: EngineConfig | None = None, port: int = 0,
                 host: str = "127.0.0.1") -> None:
        self.config = config or EngineConfig()
        self.host = host
        self.port = port
        self.engine: Engine | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """OpenAI base URL, e.g. http://127.0.0.1:8000/v1"""
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> str:
        self.engine = Engine(self.config)
        self.engine.start()
        self._runner = web.AppRunner(make_app(self.engine), access_log=None,
                                     handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=4096)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self.url

    async def stop(self) -> None:
        if self.engine is not None:
            await self.engine.stop()     # aborts sequences -> handlers return
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "SimulatorServer":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()


async def serve(configs: list[EngineConfig], port: int, stop: asyncio.Event) -> None:
    """Run one server per config on ports port, port+1, ... (or all on
    ephemeral ports if port == 0); print LISTENING lines; wait for ``stop``."""
    servers = []
    try:
        for i, cfg in enumerate(configs):
            srv = SimulatorServer(cfg, port=(port + i) if port else 0)
            servers.append(srv)
            await srv.start()
        for srv in servers:
            print(f"LISTENING {srv.url}", flush=True)
        await stop.wait()
    finally:
        for srv in servers:
            await srv.stop()
