"""OpenTelemetry in the agent's process, when it has it: a span around each
syscall ("syscall llm", "syscall memory", ...), and the current trace
context in every call's metadata (W3C `traceparent`), so the kernel's spans
and those of the services it calls join the agent's trace.

The SDK does not depend on opentelemetry: without it installed this does
nothing; installed but without a tracer provider, its spans are no-ops and
only a trace context the agent already has is passed on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

try:
    from opentelemetry import propagate, trace
except ImportError:  # the SDK runs without it
    propagate = trace = None

_tracer = trace.get_tracer("aios.sdk") if trace is not None else None
_KERNEL = "aios.kernel.v1.KernelService"


def syscall_span(method: str, address: str, syscall: Any = None, *, kind: str = "", request_id: str = "",
                 session_id: str = ""):
    """A span for one syscall, not yet current (None without opentelemetry):
    of `syscall`, or of an upload or download with the facts given."""
    if _tracer is None:
        return None
    model = ""
    if syscall is not None:
        kind = syscall.WhichOneof("call") or "unknown"
        request_id, session_id = syscall.request_id, syscall.session_id
        model = syscall.llm.model if kind == "llm" else ""
    attributes = {"rpc.system": "grpc", "rpc.service": _KERNEL, "rpc.method": method, "server.address": address,
                  "aios.syscall.kind": kind, "aios.request_id": request_id, "aios.session_id": session_id}
    if model:
        attributes["gen_ai.request.model"] = model
    return _tracer.start_span(f"syscall {kind}", kind=trace.SpanKind.CLIENT, attributes=attributes)


@contextlib.contextmanager
def current(span) -> Iterator[None]:
    """`span` current in this block (for calls in one thread or task, not
    across a generator's yields), ended when it is left."""
    if span is None:
        yield
        return
    with trace.use_span(span, end_on_exit=True, record_exception=False):
        yield


def finished(span, record=None, error=None) -> None:
    """Note a syscall's record (its id, state, trace) or its error on its span."""
    if span is None or not span.is_recording():
        return
    if record is not None:
        span.set_attribute("aios.syscall.id", record.id)
    if error is not None:
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"{error.code.name}: {error.message}"))
        span.set_attribute("rpc.grpc.status_code", error.code.value[0])


def retried(span, error) -> None:
    if span is not None and span.is_recording():
        span.add_event("retry", {"aios.error": error.code.name})


def end(span) -> None:
    if span is not None:
        span.end()


def inject(metadata: list[tuple[str, str]], span=None) -> list[tuple[str, str]]:
    """Add the trace context (the span's, else the current one) to call metadata."""
    if propagate is None:
        return metadata
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span) if span is not None else None)
    metadata.extend(carrier.items())
    return metadata
