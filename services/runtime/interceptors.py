"""Server and client interceptors shared by every service.

Server side: read the request id and acting agent from metadata into context
variables once, start the call's server span under the caller's trace
context (tracing.py), log the call's outcome, and turn domain errors
(AiosError) into gRPC statuses with typed details, so servicers stay thin.
Client side: copy those facts and the current trace context, plus this
service's own credential, into the metadata of calls to other services.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence

import grpc
from grpc import aio

from services.runtime import context, errors, logs, tracing
from services.runtime.status import to_grpc_status

log = logs.get("rpc")

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


class ServerInterceptor(aio.ServerInterceptor):
    def __init__(self, authorize: Callable[[str, Sequence], None] | None = None) -> None:
        # authorize(method, metadata) raises AiosError to refuse a caller
        # (service-to-service trust); None admits every caller.
        self._authorize = authorize

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if method.startswith(("/grpc.health.", "/grpc.reflection.")):
            return handler
        metadata = handler_call_details.invocation_metadata
        rid = _metadata_value(metadata, context.REQUEST_ID_KEY) or uuid.uuid4().hex
        who = _metadata_value(metadata, context.AGENT_KEY)
        authorize = self._authorize

        def enter(ctx) -> float:
            context.request_id.set(rid)
            context.agent.set(who)
            if authorize is not None:
                authorize(method, metadata)
            return time.perf_counter()

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

        def done(started: float) -> None:
            log.debug("rpc", method=method, code="OK",
                      ms=round((time.perf_counter() - started) * 1000, 2))

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
                span = tracing.start_rpc(method, metadata)
                try:
                    enter(ctx)
                    result = await inner(decoded(request), ctx)
                except aio.AbortError:
                    tracing.end_rpc(span, "UNKNOWN", "aborted by the handler")
                    raise
                except Exception as exc:  # noqa: BLE001 - mapped to a status
                    await fail(ctx, started, exc, span)
                except BaseException:  # cancelled: the caller went away
                    tracing.end_rpc(span, "CANCELLED")
                    raise
                tracing.end_rpc(span, "OK")
                done(started)
                return result

            factory = (grpc.unary_unary_rpc_method_handler if handler.unary_unary
                       else grpc.stream_unary_rpc_method_handler)
            return factory(unary, request_deserializer=decode, response_serializer=handler.response_serializer)

        inner_stream = handler.unary_stream or handler.stream_stream

        async def streaming(request, ctx):
            started = time.perf_counter()
            span = tracing.start_rpc(method, metadata)
            try:
                enter(ctx)
                async for item in inner_stream(decoded(request), ctx):
                    yield item
            except aio.AbortError:
                tracing.end_rpc(span, "UNKNOWN", "aborted by the handler")
                raise
            except Exception as exc:  # noqa: BLE001 - mapped to a status
                await fail(ctx, started, exc, span)
            except BaseException:  # cancelled, or the stream closed early
                tracing.end_rpc(span, "CANCELLED")
                raise
            tracing.end_rpc(span, "OK")
            done(started)

        factory = (grpc.unary_stream_rpc_method_handler if handler.unary_stream
                   else grpc.stream_stream_rpc_method_handler)
        return factory(streaming, request_deserializer=decode, response_serializer=handler.response_serializer)


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


class _ClientMetadata:
    def __init__(self, service_token: str) -> None:
        self._token = service_token

    def _details(self, details: aio.ClientCallDetails) -> aio.ClientCallDetails:
        md = list(details.metadata or ())
        present = {k for k, _ in md}
        md.extend((k, v) for k, v in outgoing_metadata(self._token) if k not in present)
        return aio.ClientCallDetails(details.method, details.timeout, md,
                                     details.credentials, details.wait_for_ready)


class _UnaryUnary(_ClientMetadata, aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(self._details(details), request)


class _UnaryStream(_ClientMetadata, aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(self._details(details), request)


class _StreamUnary(_ClientMetadata, aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, details, request_iterator):
        return await continuation(self._details(details), request_iterator)


class _StreamStream(_ClientMetadata, aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, details, request_iterator):
        return await continuation(self._details(details), request_iterator)


def client_interceptors(service_token: str = "") -> list:
    return [cls(service_token) for cls in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]
