"""Traces with OpenTelemetry: one trace per syscall, from the agent (the SDK,
or a `traceparent` header at the HTTP door) through the kernel to the
service that runs it and that service's backend.

W3C trace context travels in gRPC metadata (`traceparent`, `tracestate`):
the shared client interceptors inject the current span's context
(`inject`), the server interceptor extracts the caller's and starts the
call's server span (`start_rpc`, interceptors.py). Log lines carry the
current span's trace and span ids (logs.py).

Export is off unless the standard variables turn it on: `setup` (once per
process, from server.run) installs a tracer provider with a
BatchSpanProcessor and the OTLP/gRPC exporter when OTEL_TRACES_EXPORTER
names otlp, or names nothing and OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set; OTEL_SDK_DISABLED=true wins.
The exporter, batching and sampler read their own OTEL_* variables; the
service name is OTEL_SERVICE_NAME, else aios-<service>. A provider
installed before (a test's in-memory one) is left as it is.

Off, the tracer is OpenTelemetry's no-op one: a span is one small object,
and a call that arrives with a trace context passes it on unchanged, so
the spans of a traced agent and of the services that do export still join.
A call that arrives with none gets a trace id anyway (not sampled), so
every service's log lines of one syscall share a trace id, exported or not.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import SpanKind, Status, StatusCode

tracer = trace.get_tracer("aios")

# Server-side codes that make a gRPC server span an error (OTel's semantic
# conventions); the others are the caller's doing.
_SERVER_ERRORS = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE",
                            "DATA_LOSS"})
_CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
    "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
    "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}

_installed: str | None = None


def exporter_of(env: Mapping[str, str]) -> str:
    """The span exporter the OTEL_* variables ask for: "otlp", "console" or "" (none)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ""
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return "otlp" if endpoint else ""
    for name in ("otlp", "console"):
        if name in names:
            return name
    return ""


def setup(service: str, env: Mapping[str, str] | None = None) -> str:
    """Install this process's tracer provider if the OTEL_* variables turn
    export on; returns the exporter ("" when off). Idempotent."""
    global _installed
    if _installed is not None:
        return _installed
    env = os.environ if env is None else env
    exporter = exporter_of(env)
    if not exporter or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        # Off, or a provider is in place already (a test's): keep it.
        _installed = exporter if exporter else ""
        return _installed
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create(
        {SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or f"aios-{service}"}))
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)  # flushed and shut down at exit
    _installed = exporter
    return exporter


# --- context in gRPC metadata ------------------------------------------------

class _MetadataGetter(Getter):
    def get(self, carrier, key: str):
        values = [v for k, v in carrier or () if k == key]
        return values or None

    def keys(self, carrier):
        return [k for k, _ in carrier or ()]


class _MetadataSetter(Setter):
    def set(self, carrier: list, key: str, value: str) -> None:
        carrier.append((key, value))


_GETTER, _SETTER = _MetadataGetter(), _MetadataSetter()
_EMPTY = otel_context.Context()
_textmap_fields: tuple = (None, frozenset())


def _fields() -> frozenset:
    """The metadata keys the global propagator reads (traceparent, ...)."""
    global _textmap_fields
    textmap = propagate.get_global_textmap()
    if _textmap_fields[0] is not textmap:
        _textmap_fields = (textmap, frozenset(textmap.fields))
    return _textmap_fields[1]


def extract(metadata) -> otel_context.Context:
    """The caller's trace context from gRPC metadata (or HTTP headers)."""
    fields = _fields()
    if isinstance(metadata, Mapping) or hasattr(metadata, "getall"):  # headers
        return propagate.extract(metadata) if any(f in metadata for f in fields) else _EMPTY
    if not any(k in fields for k, _ in metadata or ()):
        return _EMPTY  # the common case untraced: no propagator to run
    return propagate.extract(metadata, getter=_GETTER)


def inject(metadata: list[tuple[str, str]], context: otel_context.Context | None = None) -> None:
    """Append the current (or the given) trace context to gRPC metadata."""
    propagate.inject(metadata, context=context, setter=_SETTER)


# --- spans ---------------------------------------------------------------------

def _own_trace() -> trace.Span:
    """A span context with fresh ids, not sampled: the trace id a call's log
    lines and downstream calls share when nothing records spans."""
    return trace.NonRecordingSpan(trace.SpanContext(
        trace_id=random.getrandbits(128) or 1, span_id=random.getrandbits(64) or 1, is_remote=False))


_provider = False


def _recording() -> bool:
    """Whether a tracer provider is installed (spans may record); once it
    is, it stays."""
    global _provider
    if not _provider:
        _provider = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    return _provider


def start_server_span(name: str, parent: otel_context.Context, attributes) -> trace.Span:
    """The span of an incoming call, made current for the rest of the
    calling task (the call's own: gRPC and aiohttp run each in a task).
    `attributes`: a dict, or a function making it (called only if spans record)."""
    if _recording():
        span = tracer.start_span(name, context=parent, kind=SpanKind.SERVER,
                                 attributes=attributes() if callable(attributes) else attributes)
    else:  # what the no-op tracer would answer, without its cost
        span = trace.get_current_span(parent)
    if not span.get_span_context().is_valid:
        span = _own_trace()
    otel_context.attach(trace.set_span_in_context(span, parent))
    return span


def start_rpc(method: str, metadata) -> trace.Span:
    """The server span of a gRPC call, "/pkg.Service/Method", made current."""
    full = method.lstrip("/")

    def attributes() -> dict:
        service, _, name = full.rpartition("/")
        return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

    return start_server_span(full, extract(metadata), attributes)


def end_rpc(span: trace.Span, code: str, message: str = "") -> None:
    """End a gRPC server span with the call's status code name."""
    if span.is_recording():
        span.set_attribute("rpc.grpc.status_code", _CODES.get(code, 2))
        if code in _SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, f"{code}: {message}" if message else code))
    span.end()


def span(name: str, *, kind: SpanKind = SpanKind.INTERNAL, attributes=None):
    """A span around a step of a call, made current; with nothing recording
    spans, the current span stays current at no cost (the no-op tracer would
    make a stand-in of it on every call). `attributes`: a dict, or a
    function making it (called only if spans record)."""
    if not _recording():
        return contextlib.nullcontext(trace.get_current_span())
    return tracer.start_as_current_span(name, kind=kind, record_exception=False,
                                        attributes=attributes() if callable(attributes) else attributes)


def span_between(name: str, parent: otel_context.Context | None, started: float, ended: float | None = None,
                 attributes=None) -> None:
    """A span of what already happened: from `started` to `ended` (time.monotonic()
    instants; ended None: now), under `parent` (None: a trace of its own).
    `attributes`: a dict, or a function making it."""
    if not _recording():
        return
    if callable(attributes):
        attributes = attributes()
    now = time.monotonic()
    wall = time.time_ns()
    start_ns = wall - int((now - started) * 1e9)
    end_ns = wall - int((now - ended) * 1e9) if ended is not None else wall
    span = tracer.start_span(name, context=parent if parent is not None else otel_context.Context(),
                             attributes=attributes, start_time=start_ns)
    span.end(end_time=max(start_ns, end_ns))


def trace_id(span: trace.Span | None = None) -> str:
    """The (current) span's trace id as 32 hex digits, "" if it has none."""
    ctx = (span if span is not None else trace.get_current_span()).get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


def ids() -> tuple[str, str] | None:
    """The current span's (trace id, span id) in hex, for log lines."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def client_span(system: str, operation: str, **attributes):
    """A span (made current) around one call to a backend, "SYSTEM OPERATION",
    e.g. client_span("qdrant", "query_points", **{"db.collection.name": "memories"})."""
    return span(f"{system} {operation}", kind=SpanKind.CLIENT,
                attributes=lambda: {"db.system.name": system, "db.operation.name": operation, **attributes})
