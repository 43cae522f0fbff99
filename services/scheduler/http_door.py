"""An OpenAI-compatible HTTP door on the kernel (/v1/chat/completions,
/v1/embeddings, /v1/models, /v1/models/{id}), so an agent built on any
framework that speaks the OpenAI API runs through the kernel by changing its
base URL; its API key is its agent token. Each request becomes a syscall:
same authentication, policy, limits, accounting and process table as gRPC
callers.

Every error, on every path (unknown ones included), is an OpenAI error
object: {"error": {"message", "type", "code", "param"}} with the type OpenAI
clients expect for the HTTP status and `param` in the request's own terms.
The `X-AIOS-Session` header names the agent run a request belongs to (one
process may carry several), else the body's `user`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from typing import Any

import numpy as np
from aiohttp import web

from aios.common.v1 import llm_pb2 as lc
from aios.kernel.v1 import syscall_pb2 as ks
from services.runtime import context as rctx
from services.runtime import errors, logs, tracing
from services.scheduler import events as ev
from services.scheduler import validation
from services.scheduler.intake import drain
from services.scheduler.mcp_door import McpDoor
from services.scheduler.table import Entry

log = logs.get("http")

_HTTP_STATUS = {
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "ABORTED": 409, "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499, "UNIMPLEMENTED": 501, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
}
_ROLES = {"system": lc.ROLE_SYSTEM, "developer": lc.ROLE_SYSTEM, "user": lc.ROLE_USER,
          "assistant": lc.ROLE_ASSISTANT, "tool": lc.ROLE_TOOL}
_FINISH = {lc.FINISH_REASON_STOP: "stop", lc.FINISH_REASON_LENGTH: "length",
           lc.FINISH_REASON_TOOL_CALLS: "tool_calls", lc.FINISH_REASON_CONTENT_FILTER: "content_filter"}


# OpenAI's error types by HTTP status (what its clients and frameworks read).
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "invalid_request_error", 409: "invalid_request_error", 429: "rate_limit_error",
                499: "invalid_request_error", 501: "invalid_request_error"}
# The kernel's reasons that have an OpenAI code of their own.
_ERROR_CODES = {"UNKNOWN_MODEL": "model_not_found", "NO_DEFAULT_MODEL": "model_not_found",
                "MISSING_CREDENTIAL": "invalid_api_key", "MALFORMED_CREDENTIAL": "invalid_api_key",
                "UNKNOWN_CREDENTIAL": "invalid_api_key", "REVOKED_CREDENTIAL": "invalid_api_key",
                "QUOTA_EXCEEDED": "rate_limit_exceeded",
                "AGENT_LIMIT": "rate_limit_exceeded", "QUEUE_FULL": "rate_limit_exceeded"}
# Fields of the syscall as the door's requests name them.
_PARAMS = {"syscall.request_id": "Idempotency-Key", "syscall.session_id": "X-AIOS-Session"}


def _param(field: str, params: dict[str, str]) -> str | None:
    if not field:
        return None
    if field in params:
        return params[field]
    if field in _PARAMS:
        return _PARAMS[field]
    for prefix in ("syscall.llm.", "syscall.embed."):
        if field.startswith(prefix):
            field = field[len(prefix):]
            return params.get(field, field)
    return field


def error_body(err: errors.AiosError, params: dict[str, str] | None = None) -> dict[str, Any]:
    """The error as OpenAI's API shapes it; `params` renames the syscall's
    fields into the request's (say "inputs" -> "input")."""
    reason = err.reason or err.code
    return {"error": {"message": err.message, "type": _ERROR_TYPES.get(_HTTP_STATUS.get(err.code, 500), "server_error"),
                      "code": _ERROR_CODES.get(reason, reason.lower()), "param": _param(err.field, params or {})}}


def _error(err: errors.AiosError, params: dict[str, str] | None = None) -> web.Response:
    headers = {"Retry-After": str(max(1, round(err.retry_after)))} if err.retry_after else {}
    return web.json_response(error_body(err, params), status=_HTTP_STATUS.get(err.code, 500), headers=headers)


@web.middleware
async def openai_errors(request: web.Request, handler):
    """Unknown paths and methods, and anything unforeseen, answer with an
    OpenAI error object too (never a plain-text page)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404 and request.path.rstrip("/") == "/v1/completions":
            err: errors.AiosError = errors.NotFound(
                "the legacy completions API is not served: the kernel's LLM calls are chat calls "
                "(POST /v1/chat/completions or /v1/responses)", reason="UNKNOWN_URL")
        elif exc.status == 404:
            err = errors.NotFound(
                f"no such endpoint: {request.method} {request.path} (this door serves /v1/chat/completions, "
                "/v1/responses, /v1/embeddings, /v1/models, /mcp and /console)", reason="UNKNOWN_URL")
        elif exc.status == 405:
            err = errors.InvalidArgument(f"method {request.method} is not allowed on {request.path}",
                                         reason="METHOD_NOT_ALLOWED")
        elif exc.status == 413:
            err = errors.InvalidArgument(f"the body is larger than {request.client_max_size} bytes",
                                         reason="BODY_TOO_LARGE")
        else:
            err = errors.InvalidArgument(exc.reason or "bad request")
        resp = _error(err)
        resp.set_status(exc.status)
        if exc.status == 405:
            resp.headers["Allow"] = exc.headers.get("Allow", "")
        return resp
    except errors.AiosError as err:
        return _error(err)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("the HTTP door failed on a request", path=request.path)
        return _error(errors.Internal("the kernel failed on this request; it is logged"))


@web.middleware
async def observed(request: web.Request, handler):
    """Each request's server span, in the trace its `traceparent` header names
    (W3C trace context) if it has one, current while it is handled (the
    syscall it makes joins that trace); and one log line for it: method,
    path, status, milliseconds, with the request id and agent as the handler
    knew them (logs.py adds both)."""
    started = time.perf_counter()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else ""
    span = tracing.start_server_span(f"{request.method} {route}".rstrip(), tracing.extract(request.headers), {
        "http.request.method": request.method, "url.path": request.path, "http.route": route})
    rctx.request_id.set(request.headers.get("X-Request-Id") or uuid.uuid4().hex)
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away
        raise
    finally:
        getattr(log, "warning" if status >= 500 else "info")(
            "http request", method=request.method, path=request.path, status=status,
            ms=round((time.perf_counter() - started) * 1000, 2))
        if span.is_recording():
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(tracing.Status(tracing.StatusCode.ERROR))
        span.end()


def let_go(entry: Entry, events: asyncio.Queue, waiter: asyncio.Future) -> None:
    """A stream's end: stop listening to the call; if it is still running,
    its client went away, and the kernel cancels it."""
    if events in entry.subscribers:
        entry.subscribers.remove(events)
    if not waiter.done():
        waiter.cancel()


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or INVALID_ARGUMENT."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise errors.InvalidArgument("the body is not JSON") from None
    if not isinstance(body, dict):
        raise errors.InvalidArgument("the body must be a JSON object")
    return body


def _content(value: Any) -> str:
    """OpenAI content: a string or a list of parts (text parts are kept)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(p.get("text", "") for p in value if isinstance(p, dict) and p.get("type") == "text")
    raise errors.InvalidArgument("message content must be a string or a list of parts", field="messages")


def _bad(field: str, what: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(f"{field} must be {what}", field=field)


def _number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(key, "a number")
    return value


def _integer(body: dict[str, Any], key: str, bits: int = 32) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not -2 ** (bits - 1) <= value < 2 ** (bits - 1):
        raise _bad(key, f"an integer of {bits} bits")
    return value


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(field, "an object")
    return value


def llm_call(body: dict[str, Any]) -> lc.LlmCall:
    """An OpenAI chat-completions body as the agent's LlmCall; a
    field of the wrong type or out of range is INVALID_ARGUMENT naming it."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise errors.InvalidArgument("model is required", field="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise errors.InvalidArgument("messages must be a non-empty list", field="messages")
    if _integer(body, "n") not in (None, 1):
        raise errors.InvalidArgument("n must be 1: the kernel returns one choice per call", field="n")
    req = lc.LlmCall(model=body["model"])
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise errors.InvalidArgument(f"messages[{i}].role must be one of {sorted(_ROLES)}",
                                         field=f"messages[{i}].role")
        msg = req.messages.add(role=_ROLES[m["role"]], content=_content(m.get("content")),
                               name=str(m.get("name") or ""), tool_call_id=str(m.get("tool_call_id") or ""))
        calls = m.get("tool_calls") or []
        if not isinstance(calls, list):
            raise _bad(f"messages[{i}].tool_calls", "a list")
        for j, tc in enumerate(calls):
            where = f"messages[{i}].tool_calls[{j}]"
            fn = _object(_object(tc, where).get("function") or {}, f"{where}.function")
            arguments = fn.get("arguments", "")
            if not isinstance(arguments, str):
                raise _bad(f"{where}.function.arguments", "a string of JSON")
            msg.tool_calls.add(id=str(tc.get("id", "")), name=str(fn.get("name", "")), arguments_json=arguments)
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise _bad("tools", "a list")
    for i, t in enumerate(tools):
        fn = _object(_object(t, f"tools[{i}]").get("function"), f"tools[{i}].function")
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise _bad(f"tools[{i}].function.name", "a non-empty string")
        tool = req.tools.add(name=fn["name"], description=str(fn.get("description", "")))
        if fn.get("parameters"):
            tool.parameters.update(_object(fn["parameters"], f"tools[{i}].function.parameters"))
    choice = body.get("tool_choice")
    if choice in ("auto", "none", "required"):
        req.tool_choice.mode = {"auto": lc.TOOL_CHOICE_MODE_AUTO, "none": lc.TOOL_CHOICE_MODE_NONE,
                                "required": lc.TOOL_CHOICE_MODE_REQUIRED}[choice]
    elif isinstance(choice, dict):
        req.tool_choice.mode = lc.TOOL_CHOICE_MODE_FUNCTION
        req.tool_choice.name = str(_object(choice.get("function"), "tool_choice.function").get("name", ""))
    elif choice is not None:
        raise _bad("tool_choice", '"auto", "none", "required" or {"type": "function", "function": {"name": ...}}')
    fmt = _object(body.get("response_format") or {}, "response_format")
    if fmt.get("type") == "json_object":
        req.response_format.type = lc.RESPONSE_FORMAT_TYPE_JSON_OBJECT
    elif fmt.get("type") == "json_schema":
        schema = _object(fmt.get("json_schema") or {}, "response_format.json_schema")
        req.response_format.type = lc.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
        req.response_format.schema_name = str(schema.get("name", ""))
        req.response_format.strict = bool(schema.get("strict", False))
        req.response_format.json_schema.update(_object(schema.get("schema") or {}, "response_format.json_schema.schema"))
    elif fmt.get("type") not in (None, "text"):
        raise _bad("response_format.type", '"text", "json_object" or "json_schema"')
    for key in ("temperature", "top_p"):
        if (value := _number(body, key)) is not None:
            setattr(req, key, value)
    if (seed := _integer(body, "seed", bits=64)) is not None:
        req.seed = seed
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    if (max_tokens := _integer(body, key)) is not None:
        req.max_tokens = max_tokens
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(x, str) for x in stop):
            raise _bad("stop", "a string or a list of strings")
        req.stop.extend(stop)
    validation.check_llm_call(req, prefix="")
    return req


def _message(resp: lc.Completion) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": resp.text or None}
    if resp.tool_calls:
        msg["tool_calls"] = [{"id": tc.id, "type": "function",
                              "function": {"name": tc.name, "arguments": tc.arguments_json}}
                             for tc in resp.tool_calls]
    return msg


def _usage(record: ks.SyscallRecord) -> dict[str, int]:
    u = record.usage
    out = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
           "total_tokens": u.prompt_tokens + u.completion_tokens}
    if u.cached_prompt_tokens:
        out["prompt_tokens_details"] = {"cached_tokens": u.cached_prompt_tokens}
    return out


class HttpDoor:
    def __init__(self, intake) -> None:
        self.intake = intake  # every check and the kernel: this door only translates
        self.kernel = intake.kernel
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _caller(self, request: web.Request):
        header = request.headers.get("Authorization", "")
        return await self.intake.caller([("authorization", header)] if header else [])

    @staticmethod
    def envelope(request: web.Request, body: dict[str, Any], **call) -> ks.Syscall:
        """The syscall of a request: its call, idempotency key and agent run."""
        return ks.Syscall(request_id=request.headers.get("Idempotency-Key", ""),
                          session_id=request.headers.get("X-AIOS-Session", "") or str(body.get("user") or ""),
                          **call)

    async def _models(self, request: web.Request) -> list[dict[str, Any]]:
        await self._caller(request)
        catalog = self.intake.catalog
        await catalog.refresh()
        now = int(time.time())
        return [{"id": name, "object": "model", "created": now, "owned_by": "aios"}
                for name in sorted({*catalog.capacity, *catalog.embedding_models})]

    async def models(self, request: web.Request) -> web.Response:
        try:
            return web.json_response({"object": "list", "data": await self._models(request)})
        except errors.AiosError as err:
            return _error(err)

    async def model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        try:
            for model in await self._models(request):
                if model["id"] == name:
                    return web.json_response(model)
            raise errors.NotFound(f"the model {name!r} does not exist", reason="UNKNOWN_MODEL", field="model")
        except errors.AiosError as err:
            return _error(err)

    async def embeddings(self, request: web.Request) -> web.Response:
        rctx.request_id.set(request.headers.get("X-Request-Id") or uuid.uuid4().hex)
        params = {"inputs": "input"}
        try:
            caller = await self._caller(request)
            body = await json_body(request)
            if not isinstance(body.get("model"), str) or not body["model"]:
                raise errors.InvalidArgument("model is required", field="model")
            inputs = body.get("input")
            if isinstance(inputs, str):
                inputs = [inputs]
            if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
                raise errors.InvalidArgument(
                    "input must be a string or a list of strings (token arrays are not taken: "
                    "the kernel's embedding models read text)", field="input")
            fmt = body.get("encoding_format") or "float"
            if fmt not in ("float", "base64"):
                raise _bad("encoding_format", '"float" or "base64"')
            dimensions = _integer(body, "dimensions")
            call = ks.EmbedCall(model=body["model"], inputs=inputs)
            entry = await self.intake.start(caller, self.envelope(request, body, embed=call), None)
            await self.kernel.wait(entry, entry.deadline)
            record = self.intake.outcome(entry)
        except errors.AiosError as err:
            return _error(err, params)
        result = record.embed
        if dimensions is not None and dimensions != result.dimensions:
            return _error(errors.InvalidArgument(
                f"model {result.model} gives {result.dimensions} dimensions, not {dimensions}",
                field="dimensions"))

        def vector(values) -> Any:
            if fmt == "float":
                return list(values)
            return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()

        tokens = record.usage.prompt_tokens
        return web.json_response({
            "object": "list", "model": result.model,
            "data": [{"object": "embedding", "index": i, "embedding": vector(e.values)}
                     for i, e in enumerate(result.embeddings)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        rctx.request_id.set(request.headers.get("X-Request-Id") or uuid.uuid4().hex)
        try:
            caller = await self._caller(request)
            body = await json_body(request)
            syscall = self.envelope(request, body, llm=llm_call(body))
            stream = bool(body.get("stream"))
            events: asyncio.Queue = asyncio.Queue()
            entry = await self.intake.start(caller, syscall, None, events if stream else None)
        except errors.AiosError as err:
            return _error(err)
        if not stream:
            try:
                await self.kernel.wait(entry, entry.deadline)
                record = self.intake.outcome(entry)
            except errors.AiosError as err:
                return _error(err)
            return web.json_response(self._completion(entry, record))
        return await self._stream(request, entry, events, body)

    def _completion(self, entry: Entry, record: ks.SyscallRecord) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{entry.id}", "object": "chat.completion", "created": int(entry.create_wall),
            "model": record.llm.model or entry.syscall.llm.model,
            "choices": [{"index": 0, "message": _message(record.llm),
                         "finish_reason": _FINISH.get(record.llm.finish_reason, "stop")}],
            "usage": _usage(record),
        }

    async def _stream(self, request, entry: Entry, events: asyncio.Queue, body) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        base = {"id": f"chatcmpl-{entry.id}", "object": "chat.completion.chunk",
                "created": int(entry.create_wall), "model": entry.syscall.llm.model}

        async def send(choice_delta: dict, finish=None, usage=None) -> None:
            chunk = {**base, "choices": [{"index": 0, "delta": choice_delta, "finish_reason": finish}]}
            if usage is not None:
                chunk = {**base, "choices": [], "usage": usage}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())

        waiter = asyncio.ensure_future(self.kernel.wait(entry, entry.deadline))
        try:
            await send({"role": "assistant", "content": ""})
            async for event in drain(events, waiter):
                if isinstance(event, ev.Delta):
                    await send({"content": event.text})
                elif isinstance(event, ev.Finished):
                    break
            await waiter
            try:
                record = self.intake.outcome(entry)
            except errors.AiosError as err:
                await resp.write(f"data: {json.dumps(error_body(err))}\n\n".encode())
            else:
                tool_calls = _message(record.llm).get("tool_calls")
                if tool_calls:
                    await send({"tool_calls": [{**tc, "index": i} for i, tc in enumerate(tool_calls)]})
                await send({}, finish=_FINISH.get(record.llm.finish_reason, "stop"))
                if (body.get("stream_options") or {}).get("include_usage"):
                    await send({}, usage=_usage(record))
            await resp.write(b"data: [DONE]\n\n")
        finally:
            let_go(entry, events, waiter)
        return resp

    async def start(self, host: str, port: int, ssl_context=None) -> int:
        """Listen on host:port (HTTPS with `ssl_context`); the bound port."""
        app = web.Application(client_max_size=8 * 1024 * 1024, middlewares=[observed, openai_errors])
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/models/{model}", self.model)
        app.router.add_post("/v1/chat/completions", self.chat)
        from services.scheduler.responses import Responses  # here: it imports this module
        Responses(self).register(app)
        app.router.add_post("/v1/embeddings", self.embeddings)
        # The kernel's tools over MCP at /mcp, started and stopped with this app.
        McpDoor(self.intake).mount(app, host)
        from services.scheduler.console import Console  # here: it imports this module
        Console(self.intake).register(app)  # the operator's page at /console
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=4096, ssl_context=ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
