"""The agents: ReAct-like loops of K LLM steps whose context grows with their
history; some of them also keep memory and write files.

Every agent is deterministic (its task, output lengths and observations come
from its index and the workload seed), so each way of running the workload
sends exactly the same prompts. The way (direct, kernel, door) only decides
how a call reaches the model; retries and errors are counted here.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

MODEL = "sim"

_WORDS = ("search lookup weather flight hotel price budget city museum train ticket schedule review "
          "restaurant distance route weekend morning evening cheapest nearest available booking "
          "confirm compare total cost currency exchange rate summary option result").split()

# A ReAct agent's shared instructions and tool list (the same for every agent:
# a prompt prefix that every engine's prefix cache can share).
SYSTEM_PROMPT = (
    "You are a travel agent. Answer by thinking step by step. At each step write "
    "Thought: your reasoning, then Action: one tool call as JSON, or Final Answer: the result. "
    "Tools: search(query) finds web pages; weather(city, date) gives a forecast; "
    "flights(from, to, date) lists flights with prices; hotels(city, nights) lists hotels; "
    "calculator(expression) evaluates arithmetic. Keep answers short and exact."
)


@dataclass(frozen=True)
class Workload:
    agents: int
    steps: int = 4
    # Output tokens of one step, drawn per agent and step.
    output_tokens: tuple[int, int] = (32, 64)
    # Characters of a tool observation appended after each step.
    observation_chars: tuple[int, int] = (120, 280)
    # Every tool_every-th agent also searches and adds memory each step and
    # writes and reads a file at the end (0 = none).
    tool_every: int = 8
    # Every priority_every-th agent (offset by half) asks for priority 1.
    priority_every: int = 8
    seed: int = 7
    # Characters of each agent's system prompt (0: the one SYSTEM_PROMPT every
    # agent shares). Of them, `shared_chars` are common to every agent of one
    # type (agent i is of type i mod `agent_types`), the rest its own: the
    # prompts many agents of one kind share (instructions, tool descriptions)
    # that a prefix-aware router can keep on one engine.
    system_chars: int = 0
    shared_chars: int = 0
    agent_types: int = 1

    def agent(self, index: int) -> "AgentSpec":
        rng = random.Random(self.seed * 1_000_003 + index)
        task = (f"Task {index}: plan a {rng.randint(2, 9)}-day trip to "
                + " ".join(rng.choice(_WORDS) for _ in range(12)) + " and report the total cost.")
        outputs = tuple(rng.randint(*self.output_tokens) for _ in range(self.steps))
        observations = tuple(_text(rng, rng.randint(*self.observation_chars)) for _ in range(self.steps))
        half = max(1, self.priority_every // 2)
        return AgentSpec(
            index=index, task=task, output_tokens=outputs, observations=observations,
            system=self.system_prompt(index), agent_type=index % max(1, self.agent_types),
            uses_tools=bool(self.tool_every) and index % self.tool_every == 0,
            priority=1 if self.priority_every and index % self.priority_every == half else 0,
        )

    def system_prompt(self, index: int) -> str:
        if not self.system_chars:
            return SYSTEM_PROMPT
        shared = min(self.shared_chars, self.system_chars)
        kind = index % max(1, self.agent_types)
        common = _text(random.Random(f"type-{self.seed}-{kind}"), shared) if shared else ""
        own = _text(random.Random(f"own-{self.seed}-{index}"), self.system_chars - shared)
        # The common part first: a prefix the agents of one type share.
        return common + own

    def shared_prefix_tokens(self) -> int:
        """Prompt tokens at the start of every agent's first call that other
        agents of its type send too (what a warm cache could hold for it)."""
        from bench.simulator.engine import count_tokens, render_message

        if not self.system_chars:
            return count_tokens(render_message("system", SYSTEM_PROMPT))
        shared = min(self.shared_chars, self.system_chars)
        return count_tokens(render_message("system", "")[:-1]) + shared // 4 if shared else 0

    def describe(self) -> dict:
        out = {"agents": self.agents, "steps": self.steps, "output_tokens": list(self.output_tokens),
               "observation_chars": list(self.observation_chars), "tool_every": self.tool_every,
               "priority_every": self.priority_every, "seed": self.seed}
        if self.system_chars:
            out.update(system_chars=self.system_chars, shared_chars=self.shared_chars,
                       agent_types=self.agent_types)
        return out


def _text(rng: random.Random, chars: int) -> str:
    words, size = [], 0
    while size < chars:
        w = rng.choice(_WORDS)
        words.append(w)
        size += len(w) + 1
    return " ".join(words)[:chars]


@dataclass(frozen=True)
class AgentSpec:
    index: int
    task: str
    output_tokens: tuple[int, ...]
    observations: tuple[str, ...]
    uses_tools: bool
    priority: int
    system: str = SYSTEM_PROMPT
    agent_type: int = 0

    @property
    def name(self) -> str:
        return f"agent-{self.index}"


@dataclass
class Call:
    """One LLM call as the agent saw it."""

    agent: int
    step: int
    start: float
    end: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    # Seconds queued in the kernel (kernel ways only).
    kernel_waiting: float = 0.0
    # What was sent and answered, for the workload's best possible cache
    # hit rate (backends.best_hit_rate).
    messages: list = field(default_factory=list, repr=False)
    answer: str = ""


@dataclass
class AgentResult:
    index: int
    priority: int
    uses_tools: bool
    start: float = 0.0
    end: float = 0.0
    calls: list[Call] = field(default_factory=list)
    other_syscalls: int = 0
    # Failed attempts (after the client's own retries) and whether it gave up.
    errors: int = 0
    failed: bool = False
    error_kinds: dict[str, int] = field(default_factory=dict)
    error_examples: dict[str, str] = field(default_factory=dict)
    # Seconds per memory/file operation, by operation.
    op_seconds: dict[str, list[float]] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def tokens(self) -> int:
        return sum(c.prompt_tokens + c.completion_tokens for c in self.calls)


class GiveUp(Exception):
    """An operation failed and retrying it will not help."""


# An agent retries a failed step itself after the client's own retries, as
# agent frameworks do, with exponential backoff and jitter, and gives up
# after MAX_ATTEMPTS.
MAX_ATTEMPTS = 10
NOTE_CHARS = 240
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0


async def _with_retries(result: AgentResult, way, fn, op: str = "llm"):
    delay = FIRST_BACKOFF_S
    for attempt in range(MAX_ATTEMPTS):
        try:
            return await fn()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is counted
            kind, retryable = way.classify(exc)
            kind = f"{op}:{kind}"
            result.errors += 1
            result.error_kinds[kind] = result.error_kinds.get(kind, 0) + 1
            result.error_examples.setdefault(kind, str(exc)[:300])
            if not retryable or attempt == MAX_ATTEMPTS - 1:
                raise GiveUp(f"{type(exc).__name__}: {exc}") from exc
            await asyncio.sleep(delay * (1 - 0.25 * random.random()))
            delay = min(MAX_BACKOFF_S, delay * 2)
    raise AssertionError("unreachable")


async def _timed(result: AgentResult, op: str, way, fn):
    t0 = time.perf_counter()
    out = await _with_retries(result, way, fn, op)
    result.op_seconds.setdefault(op, []).append(time.perf_counter() - t0)
    result.other_syscalls += 1
    return out


async def run_agent(spec: AgentSpec, way, start_gate: asyncio.Event) -> AgentResult:
    result = AgentResult(index=spec.index, priority=spec.priority, uses_tools=spec.uses_tools)
    agent = way.agent(spec)
    await start_gate.wait()
    result.start = time.perf_counter()
    messages = [{"role": "system", "content": spec.system}, {"role": "user", "content": spec.task}]
    try:
        for step in range(len(spec.output_tokens)):
            if spec.uses_tools:
                # Results are not put in the prompt, so every way sends the same prompts.
                await _timed(result, "memory_search", way, lambda: agent.memory_search(spec.task))
            t0 = time.perf_counter()
            reply = await _with_retries(
                result, way, lambda: agent.chat(messages, spec.output_tokens[step], spec.priority))
            call = Call(agent=spec.index, step=step, start=t0, end=time.perf_counter(),
                        prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                        cached_tokens=reply.cached_tokens, kernel_waiting=reply.kernel_waiting,
                        messages=messages, answer=reply.text)
            result.calls.append(call)
            observation = spec.observations[step]
            messages = [*messages, {"role": "assistant", "content": reply.text},
                        {"role": "user", "content": f"Observation: {observation}"}]
            if spec.uses_tools:
                # The agent keeps a note of what it saw, not the whole page.
                await _timed(result, "memory_add", way, lambda: agent.memory_add(observation[:NOTE_CHARS]))
        if spec.uses_tools:
            report = "\n".join(m["content"] for m in messages if m["role"] == "assistant")
            await _timed(result, "file_write", way, lambda: agent.file_write("trip/report.txt", report))
            data = await _timed(result, "file_read", way, lambda: agent.file_read("trip/report.txt"))
            if data != report.encode():
                raise GiveUp("file read back differs from what was written")
    except GiveUp:
        result.failed = True
    result.end = time.perf_counter()
    return result


@dataclass
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    kernel_waiting: float = 0.0
