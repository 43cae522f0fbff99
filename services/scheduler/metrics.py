"""Prometheus metrics of the kernel, served over HTTP (prometheus-client).

Queue depth and running calls are read from the kernel at scrape time; the
rest is counted as syscalls finish or are refused.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

from services.scheduler.table import SUCCEEDED, Entry

_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _QueueCollector:
    def __init__(self, kernel) -> None:
        self.kernel = kernel

    def collect(self):
        depth = GaugeMetricFamily("aios_queue_depth", "Syscalls waiting per resource queue", labels=["resource"])
        running = GaugeMetricFamily("aios_running", "Syscalls running per resource", labels=["resource"])
        capacity = GaugeMetricFamily("aios_capacity", "In-flight bound per resource", labels=["resource"])
        for name, res in list(self.kernel.resources.items()):
            depth.add_metric([name], len(res.queue))
            running.add_metric([name], res.running)
            capacity.add_metric([name], res.capacity)
        yield depth
        yield running
        yield capacity


class KernelMetrics:
    def __init__(self, kernel, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.registry.register(_QueueCollector(kernel))
        self.syscalls = Counter("aios_syscalls", "Finished syscalls", ["kind", "state"], registry=self.registry)
        self.waiting = Histogram("aios_syscall_waiting_seconds", "Time queued", ["kind"],
                                 buckets=_BUCKETS, registry=self.registry)
        self.turnaround = Histogram("aios_syscall_turnaround_seconds", "Time from submit to finish", ["kind"],
                                    buckets=_BUCKETS, registry=self.registry)
        self.tokens = Counter("aios_tokens", "LLM tokens used per agent", ["agent", "type"], registry=self.registry)
        self.preemptions = Counter("aios_preemptions", "Generations preempted at the end of a slice",
                                   registry=self.registry)
        self.rejections = Counter("aios_rejections", "Syscalls refused for limits", ["reason"],
                                  registry=self.registry)
        self.quota_warnings = Counter("aios_quota_warnings", "Soft quota limits passed (once per window)",
                                      ["metric"], registry=self.registry)
        self._server = None

    def finished(self, entry: Entry) -> None:
        self.syscalls.labels(entry.kind, entry.state).inc()
        self.waiting.labels(entry.kind).observe(entry.waiting)
        if entry.state == SUCCEEDED:
            self.turnaround.labels(entry.kind).observe(entry.finish_wall - entry.create_wall)
        if entry.prompt_tokens:
            self.tokens.labels(entry.agent, "prompt").inc(entry.prompt_tokens)
        if entry.completion_tokens:
            self.tokens.labels(entry.agent, "completion").inc(entry.completion_tokens)
        if entry.preemptions:
            self.preemptions.inc(entry.preemptions)

    def rejected(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def quota_warning(self, metric: str) -> None:
        self.quota_warnings.labels(metric).inc()

    def serve(self, host: str, port: int) -> int:
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return server.server_port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
