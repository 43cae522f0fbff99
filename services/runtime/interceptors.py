"""Server and client interceptors shared by every service.

Server side: read the request id and acting agent from metadata into context
variables once, start the call's server span under the caller's trace
context (tracing.py), log the call's outcome, and turn domain errors
(AiosError) into gRPC statuses with typed details, so servicers stay thin.
Client side: copy those facts and the current trace context, plus this
service's own credential, into the metadata of calls to other services.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence

import grpc
from grpc import aio

from services.runtime import context, errors, logs, tracing
from services.runtime.status import to_grpc_status

log = logs.get("rpc")

# Health checks and reflection are the runtime's, not the service's API:
# neither logged, measured nor subject to service trust.
UNWRAPPED = ("/grpc.health.", "/grpc.reflection.")

# The level a call that failed with a status is logged at: server faults, ours
# or a backend's, as such; the caller's own mistakes and refusals
# (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, RESOURCE_EXHAUSTED, ...) at info.
FAULT_LEVELS = {"INTERNAL": "error", "UNKNOWN": "error", "DATA_LOSS": "error",
                "UNAVAILABLE": "warning", "DEADLINE_EXCEEDED": "warning"}


def log_level(code: str) -> str:
    return FAULT_LEVELS.get(code, "info")


def _metadata_value(metadata, key: str) -> str:
    for k, v in metadata or ():
        if k == key:
            return v
    return ""


class Registrar:
    """The server as a service's registration code sees it: each method
    handler it adds is wrapped once, at start, with what every call needs
    (`wrap_handler`). Unlike a grpc.aio server interceptor, which runs its
    chain and builds a new handler for every call, a call then goes straight
    to its wrapped handler."""

    def __init__(self, server: aio.Server, authorize: Callable[[str, Sequence], None] | None = None,
                 measure: Callable[[str], object] | None = None) -> None:
        self._server = server
        self._authorize = authorize
        self._measure = measure

    def _wrap(self, method: str, handler):
        return wrap_handler(handler, method, self._authorize, self._measure(method) if self._measure else None)

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self._server.add_registered_method_handlers(
            service, {name: self._wrap(f"/{service}/{name}", h) for name, h in handlers.items()})

    def add_generic_rpc_handlers(self, handlers: Sequence) -> None:
        self._server.add_generic_rpc_handlers([_WrappedGeneric(h, self._wrap) for h in handlers])


class _WrappedGeneric(grpc.GenericRpcHandler):
    """A generic handler whose method handlers are wrapped the first time
    each method is looked up."""

    def __init__(self, inner: grpc.GenericRpcHandler, wrap) -> None:
        self._inner, self._wrap = inner, wrap
        self._wrapped: dict[str, tuple] = {}

    def service(self, handler_call_details):
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        known = self._wrapped.get(method)
        if known is None or known[0] is not handler:
            known = self._wrapped[method] = (handler, self._wrap(method, handler))
        return known[1]


def wrap_handler(handler, method: str, authorize: Callable[[str, Sequence], None] | None = None,
                 measured=None):
    """`handler` with what every call of `method` needs: the request id and
    acting agent from metadata in context variables, the caller's trust
    (`authorize(method, metadata)` raises AiosError to refuse it), the
    call's server span, its outcome logged and measured (`measured.done(code,
    started)`, with the status the call really ends with), domain errors
    (AiosError) turned into gRPC statuses with typed details, and an
    undecodable request answered INVALID_ARGUMENT."""
    if method.startswith(UNWRAPPED):
        return handler

    def enter(metadata) -> None:
        context.request_id.set(_metadata_value(metadata, context.REQUEST_ID_KEY) or uuid.uuid4().hex)
        context.agent.set(_metadata_value(metadata, context.AGENT_KEY))
        if authorize is not None:
            authorize(method, metadata)

    async def fail(ctx, started: float, exc: BaseException, span):
        if isinstance(exc, errors.AiosError):
            getattr(log, log_level(exc.code))("rpc", method=method, code=exc.code, error=exc.message,
                                              ms=round((time.perf_counter() - started) * 1000, 2))
            tracing.end_rpc(span, exc.code, exc.message)
            await ctx.abort_with_status(to_grpc_status(exc))
        if isinstance(exc, NotImplementedError):
            # The generated base servicer's answer for an RPC not built yet.
            tracing.end_rpc(span, "UNIMPLEMENTED")
            await ctx.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented yet")
        log.exception("rpc failed", method=method)
        tracing.end_rpc(span, "INTERNAL", type(exc).__name__)
        await ctx.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")

    def ended(ctx, started: float, exc: BaseException | None = None) -> None:
        if measured is not None:
            measured.done(_code(exc, ctx) if exc is not None else (ctx.code() or grpc.StatusCode.OK).name, started)

    async def close(ctx, started: float, span, exc: BaseException | None) -> None:
        """End the call's span, log and measure it; an exception is answered
        with its status (raised again as grpc's abort)."""
        try:
            if exc is None:
                tracing.end_rpc(span, "OK")
                log.debug("rpc", method=method, code="OK", ms=round((time.perf_counter() - started) * 1000, 2))
            elif isinstance(exc, aio.AbortError):
                tracing.end_rpc(span, "UNKNOWN", "aborted by the handler")
            elif isinstance(exc, Exception):
                await fail(ctx, started, exc, span)
            else:  # cancelled (the caller went away), or a stream closed early
                tracing.end_rpc(span, "CANCELLED")
        except BaseException as raised:
            ended(ctx, started, raised)
            raise
        ended(ctx, started, exc)

    streamed_requests = bool(handler.stream_unary or handler.stream_stream)
    decode = _decoding(handler.request_deserializer, method)

    def decoded(request):
        """The request, or its stream with undecodable messages refused."""
        if streamed_requests:
            return _checked(request)
        if isinstance(request, _Undecodable):
            raise request.error()
        return request

    if handler.unary_unary or handler.stream_unary:
        inner = handler.unary_unary or handler.stream_unary

        async def unary(request, ctx):
            started = time.perf_counter()
            metadata = ctx.invocation_metadata()
            span = tracing.start_rpc(method, metadata)
            try:
                enter(metadata)
                result = await inner(decoded(request), ctx)
            except BaseException as exc:
                await close(ctx, started, span, exc)
                raise
            await close(ctx, started, span, None)
            return result

        factory = (grpc.unary_unary_rpc_method_handler if handler.unary_unary
                   else grpc.stream_unary_rpc_method_handler)
        return factory(unary, request_deserializer=decode, response_serializer=handler.response_serializer)

    inner_stream = handler.unary_stream or handler.stream_stream

    async def streaming(request, ctx):
        started = time.perf_counter()
        metadata = ctx.invocation_metadata()
        span = tracing.start_rpc(method, metadata)
        try:
            enter(metadata)
            async for item in inner_stream(decoded(request), ctx):
                yield item
        except BaseException as exc:
            await close(ctx, started, span, exc)
            raise
        await close(ctx, started, span, None)

    factory = (grpc.unary_stream_rpc_method_handler if handler.unary_stream
               else grpc.stream_stream_rpc_method_handler)
    return factory(streaming, request_deserializer=decode, response_serializer=handler.response_serializer)


def _code(exc: BaseException, ctx) -> str:
    """The status a call that raised ends with."""
    if isinstance(exc, aio.AbortError):
        # The handler aborted with the mapped status.
        return (ctx.code() or grpc.StatusCode.UNKNOWN).name
    if isinstance(exc, (GeneratorExit, asyncio.CancelledError)):
        # The caller went away (or cancelled) mid-call.
        return grpc.StatusCode.CANCELLED.name
    return grpc.StatusCode.UNKNOWN.name


class _Undecodable:
    """A request message that did not parse; grpc would answer UNKNOWN for
    it, the handler answers INVALID_ARGUMENT."""

    def __init__(self, method: str, reason: str) -> None:
        self.method, self.reason = method, reason

    def error(self) -> errors.InvalidArgument:
        return errors.InvalidArgument(f"the request is not a valid message for {self.method}: {self.reason}",
                                      reason="UNDECODABLE_REQUEST")


def _decoding(deserialize, method: str):
    if deserialize is None:
        return None

    def decode(data: bytes):
        try:
            return deserialize(data)
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and kin
            return _Undecodable(method, str(exc) or type(exc).__name__)

    return decode


async def _checked(requests):
    async for request in requests:
        if isinstance(request, _Undecodable):
            raise request.error()
        yield request


def outgoing_metadata(service_token: str = "") -> list[tuple[str, str]]:
    """Metadata for a call to another service on behalf of the current request."""
    md: list[tuple[str, str]] = []
    tracing.inject(md)
    rid = context.request_id.get()
    if rid:
        md.append((context.REQUEST_ID_KEY, rid))
    who = context.agent.get()
    if who:
        md.append((context.AGENT_KEY, who))
    if service_token:
        md.append((context.AUTHORIZATION_KEY, f"Bearer {service_token}"))
    return md


class _WithMetadata:
    """A multi-callable whose calls carry the outgoing metadata."""

    __slots__ = ("_callable", "_token")

    def __init__(self, callable_, token: str) -> None:
        self._callable, self._token = callable_, token

    def __call__(self, *args, metadata=None, **kwargs):
        md = outgoing_metadata(self._token)
        if metadata:  # the call's own keys win
            present = {k for k, _ in metadata}
            md = [*metadata, *((k, v) for k, v in md if k not in present)]
        return self._callable(*args, metadata=md, **kwargs)


class MetadataChannel:
    """A grpc.aio channel whose calls carry the caller's service credential
    and request context (`outgoing_metadata`), added as each call starts.
    Unlike grpc.aio client interceptors, it runs no extra task and no
    wrapper call object per call."""

    def __init__(self, channel: aio.Channel, service_token: str = "") -> None:
        self._channel, self._token = channel, service_token

    def unary_unary(self, *args, **kwargs):
        return _WithMetadata(self._channel.unary_unary(*args, **kwargs), self._token)

    def unary_stream(self, *args, **kwargs):
        return _WithMetadata(self._channel.unary_stream(*args, **kwargs), self._token)

    def stream_unary(self, *args, **kwargs):
        return _WithMetadata(self._channel.stream_unary(*args, **kwargs), self._token)

    def stream_stream(self, *args, **kwargs):
        return _WithMetadata(self._channel.stream_stream(*args, **kwargs), self._token)

    def __getattr__(self, name):  # close, get_state, channel_ready, ...
        return getattr(self._channel, name)

    async def __aenter__(self) -> "MetadataChannel":
        return self

    async def __aexit__(self, *exc) -> None:
        await self._channel.close(None)
