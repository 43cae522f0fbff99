"""Prometheus metrics of llm_core's chat endpoints, on its service registry
(services/runtime/metrics.py). Every series is labelled with the endpoint
and its model, both from the configuration, so their number is bounded.

- `aios_llm_endpoint_in_flight`, `aios_llm_endpoint_capacity`: calls on the
  endpoint now, and its max_concurrency (read at scrape time)
- `aios_llm_endpoint_up`: 1 while its last probe or call found it serving, else 0
- `aios_llm_endpoint_requests_total{outcome}`: attempts, by how they ended
  (engine.OUTCOMES; a call that fails over counts one per endpoint tried)
- `aios_llm_time_to_first_token_seconds`: request to first token, of streamed calls
- `aios_llm_completion_tokens_total`, `aios_llm_generation_seconds_total`:
  tokens generated and the seconds spent on those calls; their rates' ratio
  is the endpoint's tokens per second per call
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from services.llm_core.engine import Endpoint, Observer

# Time to first token: from a warm cache's few ms to a long prefill under load.
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2.5, 5, 10, 20, 60)
LABELS = ["endpoint", "model"]


def _labels(ep: Endpoint) -> tuple[str, str]:
    return ep.name, ep.config.model


class _EndpointCollector:
    def __init__(self, endpoints: list[Endpoint]) -> None:
        self.endpoints = endpoints

    def collect(self):
        in_flight = GaugeMetricFamily("aios_llm_endpoint_in_flight", "Calls on the endpoint now", labels=LABELS)
        capacity = GaugeMetricFamily("aios_llm_endpoint_capacity", "The endpoint's max_concurrency",
                                     labels=LABELS)
        up = GaugeMetricFamily("aios_llm_endpoint_up",
                               "1 while the endpoint's last probe or call found it serving, else 0", labels=LABELS)
        now = time.monotonic()
        for ep in self.endpoints:
            labels = _labels(ep)
            in_flight.add_metric(labels, ep.in_flight)
            capacity.add_metric(labels, ep.config.max_concurrency)
            up.add_metric(labels, 1 if ep.reachable and ep.healthy(now) else 0)
        yield in_flight
        yield capacity
        yield up


class LlmMetrics(Observer):
    """The engine's observer, counting into `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter("aios_llm_endpoint_requests", "Attempts on the endpoint, by how they ended",
                                [*LABELS, "outcome"], registry=registry)
        self.ttft = Histogram("aios_llm_time_to_first_token_seconds",
                              "From the request to the first token, of streamed calls", LABELS,
                              buckets=TTFT_BUCKETS, registry=registry)
        self.tokens = Counter("aios_llm_completion_tokens", "Completion tokens generated", LABELS,
                              registry=registry)
        self.seconds = Counter("aios_llm_generation_seconds",
                               "Seconds of the calls that generated them, from the request to the last token",
                               LABELS, registry=registry)

    def watch(self, endpoints: list[Endpoint]) -> None:
        """Export the endpoints' in-flight calls, capacity and health."""
        self.registry.register(_EndpointCollector(endpoints))

    def attempt(self, endpoint: Endpoint, outcome: str) -> None:
        self.requests.labels(*_labels(endpoint), outcome).inc()

    def first_token(self, endpoint: Endpoint, seconds: float) -> None:
        self.ttft.labels(*_labels(endpoint)).observe(seconds)

    def generated(self, endpoint: Endpoint, tokens: int, seconds: float) -> None:
        labels = _labels(endpoint)
        self.tokens.labels(*labels).inc(tokens)
        self.seconds.labels(*labels).inc(seconds)
