"""Prometheus metrics of every service, on the shared runtime.

Each service owns one registry (`ServiceMetrics`) and the runtime serves it
over HTTP (prometheus-client) on the service's AIOS_<SERVICE>_METRICS_PORT
(-1 = off, 0 = any free port). What the runtime measures for all of them:

- `aios_build_info{service,version,python}` = 1
- `aios_grpc_server_handled_total{service,method,code}`: calls finished, by
  gRPC status code
- `aios_grpc_server_handling_seconds{service,method}`: their latency (a
  stream's until its last message)

A service adds its own to the same registry (e.g. `latencies("op")` for the
operations of its backends). Label values come from bounded sets only:
services, method names, status codes, endpoints, operations. Agents, paths
and ids are never labels; per-agent usage is the process table's.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import platform
import time
from collections.abc import Iterator

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Seconds, from a millisecond RPC to a long generation.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

# The `*_created` series prometheus-client adds to every counter and
# histogram would double the series for a timestamp nobody graphs.
prometheus_client.disable_created_metrics()


def version() -> str:
    try:
        return importlib.metadata.version("aios-kernel")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class ServiceMetrics:
    """One service's registry, with what the runtime measures for every
    service. `port` is where to serve it (-1: nowhere)."""

    def __init__(self, service: str, port: int = -1) -> None:
        self.service = service
        self.port = port
        self.registry = CollectorRegistry()
        Gauge("aios_build_info", "The running release (always 1)", ["service", "version", "python"],
              registry=self.registry).labels(service, version(), platform.python_version()).set(1)
        self.handled = Counter("aios_grpc_server_handled", "gRPC calls finished, by status code",
                               ["service", "method", "code"], registry=self.registry)
        self.handling = Histogram("aios_grpc_server_handling_seconds",
                                  "gRPC call latency (a stream's until its last message)",
                                  ["service", "method"], buckets=BUCKETS, registry=self.registry)
        self._server = None

    def latencies(self, name: str, documentation: str) -> Latencies:
        """A histogram of seconds per operation (label `op`)."""
        return Latencies(Histogram(name, documentation, ["op"], buckets=BUCKETS, registry=self.registry))

    def method(self, name: str) -> "_Method":
        """What the runtime measures of one RPC method ("/pkg.Service/Method")."""
        return _Method(self, name)

    def serve(self, host: str) -> int | None:
        """Serve /metrics on host:port in a thread; the bound port (None when off)."""
        if self.port < 0:
            return None
        server, _thread = prometheus_client.start_http_server(self.port, addr=host, registry=self.registry)
        self._server = server
        return server.server_port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class Latencies:
    """Seconds per operation, failed ones included; `Latencies()` measures nothing."""

    def __init__(self, histogram: Histogram | None = None) -> None:
        self._histogram = histogram
        self._children: dict[str, object] = {}

    @contextlib.contextmanager
    def time(self, op: str) -> Iterator[None]:
        if self._histogram is None:
            yield
            return
        started = time.perf_counter()
        try:
            yield
        finally:
            child = self._children.get(op)
            if child is None:
                child = self._children[op] = self._histogram.labels(op)
            child.observe(time.perf_counter() - started)


class _Method:
    """The metric children of one method, looked up once."""

    def __init__(self, metrics: ServiceMetrics, method: str) -> None:
        self._metrics, self._method = metrics, method
        self._seconds = metrics.handling.labels(metrics.service, method)
        self._codes: dict[str, object] = {}

    def done(self, code: str, started: float) -> None:
        self._seconds.observe(time.perf_counter() - started)
        counter = self._codes.get(code)
        if counter is None:
            counter = self._codes[code] = self._metrics.handled.labels(self._metrics.service, self._method, code)
        counter.inc()
