"""Backends the agents share, and the ideal bound of a run on each.

- `gpu1`: the serving simulator configured like one GPU serving an 8B model
  (the simulator's defaults: 256 sequences per batch, 400k KV tokens, 10 ms
  + 0.1 ms/sequence per decode step, 0.05 ms per prefilled token), with a
  bounded waiting queue that answers 503 past it;
- `gpu4`: four such engines with prefix caching, each its own endpoint;
- `url`: any OpenAI-compatible endpoint (no ideal bound: its speed is unknown).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench import procs
from bench.simulator.engine import Engine, EngineConfig
from bench.workload import MODEL


@dataclass(frozen=True)
class Backend:
    name: str
    replicas: int = 1
    max_num_seqs: int = 256
    kv_tokens: int = 400_000
    # Requests an engine queues before answering 503 (0 = no bound).
    max_waiting: int = 0
    prefix_cache: bool = False
    # Prefix-cache capacity of each engine in tokens (0: its KV size).
    prefix_cache_tokens: int = 0
    time_scale: float = 1.0
    # A real endpoint instead of the simulator.
    url: str = ""
    model_id: str = "sim-llama-3-8b"
    api_key_env: str = ""
    # Calls llm_core sends to one engine at once (0 = its batch, max_num_seqs).
    kernel_capacity: int = 0
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    @property
    def simulated(self) -> bool:
        return not self.url

    def engine_config(self) -> EngineConfig:
        return EngineConfig(max_num_seqs=self.max_num_seqs, kv_tokens=self.kv_tokens,
                            max_waiting=self.max_waiting, prefix_cache=self.prefix_cache,
                            prefix_cache_tokens=self.prefix_cache_tokens, time_scale=self.time_scale)

    def sim_args(self) -> list[str]:
        args = ["--max-num-seqs", str(self.max_num_seqs), "--kv-tokens", str(self.kv_tokens),
                "--max-waiting", str(self.max_waiting), "--time-scale", str(self.time_scale),
                "--replicas", str(self.replicas), "--model", self.model_id, *self.extra_args]
        if self.prefix_cache:
            args += ["--prefix-cache", "--prefix-cache-tokens", str(self.prefix_cache_tokens)]
        return args

    def start(self) -> tuple[procs.Child | None, list[str]]:
        if not self.simulated:
            return None, [self.url]
        return procs.start_simulator(*self.sim_args())

    def endpoints(self, urls: list[str]) -> list[dict]:
        """llm_core's endpoints: one per replica, as many in flight as the
        engine batches, and the size of its prefix cache when it has one."""
        cache = (self.prefix_cache_tokens or self.kv_tokens) if self.prefix_cache else 0
        return [{"name": f"{self.name}-{i}", "model": MODEL, "base_url": url, "model_id": self.model_id,
                 "max_concurrency": self.kernel_capacity or self.max_num_seqs, "api_key_env": self.api_key_env,
                 **({"cache_tokens": cache} if cache else {})}
                for i, url in enumerate(urls)]

    def describe(self) -> dict:
        out = {"name": self.name, "replicas": self.replicas, "time_scale": self.time_scale,
               "kernel_capacity_per_engine": self.kernel_capacity or self.max_num_seqs}
        if self.simulated:
            c = self.engine_config()
            out.update(max_num_seqs=c.max_num_seqs, kv_tokens=c.kv_tokens, max_waiting=c.max_waiting,
                       prefix_cache=c.prefix_cache, prefix_cache_tokens=c.prefix_cache_tokens or c.kv_tokens,
                       base_step_ms=c.base_step_ms, per_seq_ms=c.per_seq_ms,
                       prefill_ms_per_token=c.prefill_ms_per_token,
                       peak_output_tokens_per_s=round(Engine(c).peak_throughput_tokens_per_s() * self.replicas))
        else:
            out["url"] = self.url
        return out


def ideal_bound(backend: Backend, calls: list, agents: int, system_tokens: int = 0) -> dict | None:
    """The least makespan any schedule could reach on this backend for the
    calls the run made (measured usage), with zero overhead:

    - throughput: every prompt token prefilled (with a prefix cache, only what
      no earlier call of the same agent could have left in the cache) plus
      every output token at the engine's peak rate for a batch of
      min(agents, what fits), spread perfectly over the replicas;
    - critical path: the slowest agent alone, its steps one after another,
      each paying its prefill and one decode step per output token.

    The larger of the two is a valid lower bound."""
    if not backend.simulated or not calls:
        return None
    engine = Engine(backend.engine_config())
    c = engine.config
    scale = c.time_scale / 1000.0
    by_agent: dict[int, list] = {}
    for call in calls:
        by_agent.setdefault(call.agent, []).append(call)
    prefill_total = 0
    out_total = 0
    critical = 0.0
    seq_tokens = 0
    for agent_calls in by_agent.values():
        agent_calls.sort(key=lambda x: x.step)
        path = 0.0
        prev = None
        for call in agent_calls:
            if backend.prefix_cache:
                if prev is None:
                    new = call.prompt_tokens - system_tokens
                else:
                    new = call.prompt_tokens - (prev.prompt_tokens + prev.completion_tokens)
                prefill = max(1, new)
            else:
                prefill = call.prompt_tokens
            prefill_total += prefill
            out_total += call.completion_tokens
            seq_tokens += call.prompt_tokens + call.completion_tokens
            path += (prefill * c.prefill_ms_per_token
                     + call.completion_tokens * engine.step_ms(1)) * scale
            prev = call
        critical = max(critical, path)
    avg_seq = seq_tokens / len(calls)
    batch = max(1, min(agents, engine.max_batch(avg_seq)))
    step_s = engine.step_ms(batch) * scale
    if step_s <= 0:
        return None
    peak = batch / step_s
    throughput = (prefill_total * c.prefill_ms_per_token * scale + out_total / peak) / backend.replicas
    return {"ideal_s": round(max(throughput, critical), 3), "throughput_bound_s": round(throughput, 3),
            "critical_path_s": round(critical, 3), "batch": batch,
            "prefill_tokens": prefill_total, "output_tokens": out_total,
            "peak_output_tokens_per_s": round(peak * backend.replicas, 1)}


def best_hit_rate(calls: list, block_size: int = 16) -> float | None:
    """The workload's best possible prefix-cache hit rate: the calls as they
    were made, on one engine with an unbounded cache, counted the way the
    simulator counts (full blocks of all but the last prompt token; a
    finished call caches its conversation with the answer). No routing and
    no order can hit more, since every call's prefix that any earlier call
    sent is found."""
    from bench.simulator.engine import PrefixCache, block_hashes, parse_messages, render_message

    if not calls:
        return None
    events = []
    for c in calls:
        events += [(c.start, 0, c), (c.end, 1, c)]
    events.sort(key=lambda e: (e[0], e[1]))
    cache = PrefixCache(capacity_blocks=1 << 62)  # the simulator's cache, unbounded
    queried = hit_tokens = 0
    for _, kind, c in events:
        prompt = parse_messages(c.messages)
        if kind == 0:
            hashes = block_hashes(prompt.text, (prompt.prompt_tokens - 1) // block_size, block_size)
            hit_tokens += cache.match(hashes) * block_size
            cache.insert(hashes)
            queried += prompt.prompt_tokens
        else:
            text = prompt.base_text + render_message("assistant", c.answer)
            cache.insert(block_hashes(text, len(text) // 4 // block_size, block_size))
    return round(hit_tokens / queried, 4) if queried else None


def finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else x
