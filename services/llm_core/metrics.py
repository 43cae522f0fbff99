"""Prometheus metrics of llm_core's chat endpoints, on its service registry
(services/runtime/metrics.py). Every series is labelled with the endpoint
and its model, both from the configuration, so their number is bounded.

- `aios_llm_endpoint_in_flight`, `aios_llm_endpoint_capacity`: calls on the
  endpoint now (from this replica), and its max_concurrency (read at scrape
  time); summed over replicas, in_flight is the engine's, capacity is not
- `aios_llm_endpoint_slots`: the calls this replica may keep in flight on it,
  its share of max_concurrency (AIOS_LLM_REPLICAS)
- `aios_llm_waiting_calls{model}`: calls waiting for a free slot of the model
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

from services.llm_core.engine import Endpoint, LlmEngine, Observer

# Time to first token: from a warm cache's few ms to a long prefill under load.
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2.5, 5, 10, 20, 60)
LABELS = ["endpoint", "model"]


def _labels(ep: Endpoint) -> tuple[str, str]:
    return ep.name, ep.config.model


class _EndpointCollector:
    def __init__(self, engine: LlmEngine) -> None:
        self.engine = engine

    def collect(self):
        in_flight = GaugeMetricFamily("aios_llm_endpoint_in_flight", "Calls on the endpoint now", labels=LABELS)
        capacity = GaugeMetricFamily("aios_llm_endpoint_capacity", "The endpoint's max_concurrency",
                                     labels=LABELS)
        slots = GaugeMetricFamily("aios_llm_endpoint_slots",
                                  "Calls this replica may keep in flight on the endpoint", labels=LABELS)
        up = GaugeMetricFamily("aios_llm_endpoint_up",
                               "1 while the endpoint's last probe or call found it serving, else 0", labels=LABELS)
        waiting = GaugeMetricFamily("aios_llm_waiting_calls", "Calls waiting for a free slot of the model",
                                    labels=["model"])
        now = time.monotonic()
        for ep in self.engine.endpoints:
            labels = _labels(ep)
            in_flight.add_metric(labels, ep.in_flight)
            capacity.add_metric(labels, ep.config.max_concurrency)
            slots.add_metric(labels, ep.slots)
            up.add_metric(labels, 1 if ep.reachable and ep.healthy(now) else 0)
        counts = self.engine.waiting()
        for model in self.engine.router.models():
            waiting.add_metric([model], counts.get(model, 0))
        yield from (in_flight, capacity, slots, up, waiting)


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

    def watch(self, engine: LlmEngine) -> None:
        """Export the endpoints' in-flight calls, capacity, slots and health,
        and the calls waiting for a slot."""
        self.registry.register(_EndpointCollector(engine))

    def attempt(self, endpoint: Endpoint, outcome: str) -> None:
        self.requests.labels(*_labels(endpoint), outcome).inc()

    def first_token(self, endpoint: Endpoint, seconds: float) -> None:
        self.ttft.labels(*_labels(endpoint)).observe(seconds)

    def generated(self, endpoint: Endpoint, tokens: int, seconds: float) -> None:
        labels = _labels(endpoint)
        self.tokens.labels(*labels).inc(tokens)
        self.seconds.labels(*labels).inc(seconds)
