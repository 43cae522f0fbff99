"""Prometheus metrics of the kernel, on its service registry
(services/runtime/metrics.py, which serves it).

Queue depth, running calls and capacity are read from the kernel at scrape
time; the rest is counted as syscalls finish or are refused. Labels are
bounded: kinds, states, resources (one per model, service and tool), reasons.
Per-agent usage is the process table's (`aios ps`); `top_agents` > 0 exports
the K agents that used the most tokens, and the rest as agent="other".
"""

from __future__ import annotations

import heapq

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from services.runtime.metrics import BUCKETS
from services.scheduler.table import SUCCEEDED, Entry

OTHER_AGENTS = "other"


class _QueueCollector:
    def __init__(self, kernel) -> None:
        self.kernel = kernel

    def collect(self):
        depth = GaugeMetricFamily("aios_queue_depth",
                                  "Syscalls waiting per resource queue (held for room in the caches included)",
                                  labels=["resource"])
        running = GaugeMetricFamily("aios_running", "Syscalls running per resource", labels=["resource"])
        capacity = GaugeMetricFamily("aios_capacity", "In-flight bound per resource", labels=["resource"])
        for name, res in list(self.kernel.resources.items()):
            depth.add_metric([name], res.waiting)
            running.add_metric([name], res.running)
            capacity.add_metric([name], res.capacity)
        yield depth
        yield running
        yield capacity


class _TopAgentsCollector:
    """Tokens of the K agents that used the most since the kernel started,
    and of all the others together. A gauge, not a counter: an agent that
    enters the top K takes its tokens out of "other"."""

    def __init__(self, kernel, k: int) -> None:
        self.kernel, self.k = kernel, k

    def collect(self):
        family = GaugeMetricFamily("aios_agent_tokens", f"LLM tokens used by the top {self.k} agents "
                                   f"(by prompt + completion tokens) and by the others together",
                                   labels=["agent", "type"])
        agents = list(self.kernel.table.agents.values())
        top = heapq.nlargest(self.k, agents, key=lambda s: s.prompt_tokens + s.completion_tokens)
        for stats in top:
            family.add_metric([stats.agent, "prompt"], stats.prompt_tokens)
            family.add_metric([stats.agent, "completion"], stats.completion_tokens)
        if len(agents) > len(top):
            named = {id(s) for s in top}
            rest = [s for s in agents if id(s) not in named]
            family.add_metric([OTHER_AGENTS, "prompt"], sum(s.prompt_tokens for s in rest))
            family.add_metric([OTHER_AGENTS, "completion"], sum(s.completion_tokens for s in rest))
        yield family


class KernelMetrics:
    def __init__(self, kernel, registry: CollectorRegistry | None = None, top_agents: int = 0) -> None:
        self.registry = registry or CollectorRegistry()
        self.registry.register(_QueueCollector(kernel))
        if top_agents > 0:
            self.registry.register(_TopAgentsCollector(kernel, top_agents))
        self.syscalls = Counter("aios_syscalls", "Finished syscalls", ["kind", "state"], registry=self.registry)
        self.waiting = Histogram("aios_syscall_waiting_seconds", "Time queued", ["kind"],
                                 buckets=BUCKETS, registry=self.registry)
        self.turnaround = Histogram("aios_syscall_turnaround_seconds", "Time from submit to finish", ["kind"],
                                    buckets=BUCKETS, registry=self.registry)
        self.tokens = Counter("aios_tokens", "LLM tokens used", ["type"], registry=self.registry)
        self._prompt, self._completion = self.tokens.labels("prompt"), self.tokens.labels("completion")
        self.preemptions = Counter("aios_preemptions", "Generations preempted at the end of a slice",
                                   registry=self.registry)
        self.rejections = Counter("aios_rejections", "Syscalls refused at admission, by reason (a limit, an unreachable journal)", ["reason"],
                                  registry=self.registry)
        self.quota_warnings = Counter("aios_quota_warnings", "Soft quota limits passed (once per window)",
                                      ["metric"], registry=self.registry)

    def finished(self, entry: Entry) -> None:
        self.syscalls.labels(entry.kind, entry.state).inc()
        self.waiting.labels(entry.kind).observe(entry.waiting)
        if entry.state == SUCCEEDED:
            self.turnaround.labels(entry.kind).observe(entry.finish_wall - entry.create_wall)
        if entry.prompt_tokens:
            self._prompt.inc(entry.prompt_tokens)
        if entry.completion_tokens:
            self._completion.inc(entry.completion_tokens)
        if entry.preemptions:
            self.preemptions.inc(entry.preemptions)

    def rejected(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def quota_warning(self, metric: str) -> None:
        self.quota_warnings.labels(metric).inc()
