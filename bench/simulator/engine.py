"""Pure model of a continuous-batching LLM serving engine (vLLM-like).

This module has no HTTP in it.  It models, in simulated time:

* **Continuous batching.**  One engine loop (an asyncio task) advances in
  *steps*.  In each step every running sequence produces exactly one output
  token.  A step lasts::

      step_ms = base_step_ms + per_seq_ms * batch + prefill_ms_per_token * new_uncached_prompt_tokens

  where ``batch`` is the number of sequences in the step and the last term is
  the prefill of the sequences admitted for this step (chunked-prefill style:
  the prefill is folded into the step, which also yields their first token).
  Every duration is multiplied by ``time_scale`` before sleeping.

* **Admission** is FIFO (head-of-line blocking, like vLLM's FCFS policy): the
  head of the waiting queue is admitted when a sequence slot
  (``max_num_seqs``) *and* KV room for ``prompt_tokens + max_new_tokens`` are
  free.  The KV reservation is made up front, so there is never preemption.

* **Prefix cache** (optional): prompts are cut into blocks of ``block_size``
  tokens hashed cumulatively (block *i*'s hash covers blocks 0..i).  At
  admission, the leading blocks found in an LRU cache are not prefilled again.
  The cache is a separate LRU bounded by ``prefix_cache_tokens`` (it does not
  compete with the running sequences' KV budget -- a simplification).

* **Tokens** are approximated from text: 4 characters per token
  (``count_tokens``); output tokens are *words* drawn deterministically from a
  fixed vocabulary as a function of (prompt hash, token index), see
  ``output_word``.

The engine only counts tokens; turning counts into text is done by the caller
(``server.py``) with the helpers below, so per-step work is O(batch) integer
updates and at most one future wake-up per streaming sequence.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import hashlib
import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence as Seq

# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------

#: Characters per prompt token (cheap, deterministic approximation of a BPE
#: tokenizer; English text is ~4 chars/token for Llama-3 / GPT tokenizers).
CHARS_PER_TOKEN = 4


@dataclass
class EngineConfig:
    """All knobs of the simulated engine (see bench/simulator/README.md)."""

    #: Model name reported by /v1/models (requests may use any model name).
    model: str = "sim-llama-3-8b"
    #: Maximum number of sequences in a batch (vLLM ``--max-num-seqs``).
    max_num_seqs: int = 256
    #: KV-cache capacity in tokens.  Default: Llama-3-8B in bf16 on one 80 GB
    #: GPU at 0.9 memory utilisation: 72 GB - 16 GB weights - ~4 GB
    #: activations/graphs = ~52 GB; at 128 KiB/token (32 layers x 8 KV heads x
    #: 128 dims x K,V x 2 bytes) that is ~400k tokens.
    kv_tokens: int = 400_000
    #: Longest prompt + output a single request may ask for.
    max_model_len: int = 131_072
    #: Fixed cost of one decode step in ms (weights read once per step).
    base_step_ms: float = 10.0
    #: Extra cost per sequence in the batch, in ms.
    per_seq_ms: float = 0.1
    #: Prefill cost per uncached prompt token in ms (~20k tokens/s).
    prefill_ms_per_token: float = 0.05
    #: Multiplies every simulated duration (0.01 = 100x faster than real).
    time_scale: float = 1.0
    #: Output length when the request gives no max_tokens.
    default_output_tokens: int = 128
    #: Enable the prefix cache.
    prefix_cache: bool = False
    #: Prefix-cache capacity in tokens (LRU); 0 means "same as kv_tokens".
    prefix_cache_tokens: int = 0
    #: Prefix-cache block size in tokens.
    block_size: int = 16
    #: Max number of queued (not yet admitted) requests; 0 = unbounded.
    #: Past it submit() raises EngineOverloaded (HTTP 503).
    max_waiting: int = 0

    def validate(self) -> None:
        if self.max_num_seqs < 1:
            raise ValueError("max_num_seqs must be >= 1")
        if self.kv_tokens < 1:
            raise ValueError("kv_tokens must be >= 1")
        if self.block_size < 1:
            raise ValueError("block_size must be >= 1")
        if self.time_scale < 0:
            raise ValueError("time_scale must be >= 0")
        for name in ("base_step_ms", "per_seq_ms", "prefill_ms_per_token"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.default_output_tokens < 1:
            raise ValueError("default_output_tokens must be >= 1")
        if self.max_waiting < 0:
            raise ValueError("max_waiting must be >= 0")

    @property
    def context_limit(self) -> int:
        """Largest prompt+output a request may need (never above the KV size)."""
        return min(self.max_model_len, self.kv_tokens)


# --------------------------------------------------------------------------
# Tokens and deterministic text
# --------------------------------------------------------------------------

#: Output vocabulary.  Output token i of a prompt is one of these words.
WORDS: tuple[str, ...] = tuple(
    """
    the of and to in is was for on that with as by at from his her an which
    it be are this had not but were they their have one all been has there
    who more when other into its time two first after new some would also
    can could people over only many these then years where most may made
    than system kernel agent memory queue batch token cache model request
    server engine thread process signal socket buffer stream packet window
    river mountain forest ocean valley desert island meadow canyon glacier
    red orange yellow green blue violet silver golden amber crimson azure
    apple bread cheese honey lemon olive pepper rice salt sugar tea water
    quick slow bright dark calm brave gentle proud quiet rapid steady wise
    run walk jump read write build move carry hold open close start stop
    north south east west under above behind beyond near far inside outside
    alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega
    circle square line point plane angle curve vector matrix graph tree node
    morning evening night noon winter summer spring autumn today tomorrow
    """.split()
)
# Pre-encoded JSON string literals for the SSE fast path: [no-space, space].
WORD_JSON: tuple[tuple[bytes, bytes], ...] = tuple(
    (f'"{w}"'.encode(), f'" {w}"'.encode()) for w in WORDS
)

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix64(x: int) -> int:
    """splitmix64 finaliser: a cheap, well-mixed 64-bit hash of an integer."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _M64
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _M64
    return x ^ (x >> 31)


def stable_hash64(text: str) -> int:
    """Process-independent 64-bit hash of a string (unlike builtin hash())."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def output_word_index(seed: int, index: int) -> int:
    """Index into WORDS of output token ``index`` for a prompt with ``seed``."""
    return _mix64((seed + (index + 1) * _GOLDEN) & _M64) % len(WORDS)


def output_word(seed: int, index: int) -> str:
    return WORDS[output_word_index(seed, index)]


def output_text(seed: int, start: int, count: int, first_space: bool) -> str:
    """Text of output tokens ``start .. start+count-1``.

    Token i is ``word`` if it is the very first token of the text (no leading
    space), else ``" " + word``.  ``first_space`` says whether token ``start``
    gets its leading space.
    """
    words = [output_word(seed, i) for i in range(start, start + count)]
    text = " ".join(words)
    return (" " + text) if (first_space and words) else text


def count_tokens(text: str) -> int:
    """Prompt tokens of a text: ceil(len(text) / 4)."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def message_text(content: Any) -> str:
    """Text of an OpenAI message ``content`` (string, list of parts, or None)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    return str(content)


def render_message(role: str, content: str) -> str:
    """Chat template: ``<|role|>\\ncontent\\n`` (~2 tokens of overhead/message)."""
    return f"<|{role}|>\n{content}\n"


def block_hashes(text: str, n_blocks: int, block_size: int) -> list[int]:
    """Cumulative hashes of the first ``n_blocks`` full token blocks of text.

    Block i covers characters [i*B*4, (i+1)*B*4) and its hash chains the hash
    of block i-1, so equal hashes mean equal prefixes.  Uses builtin hash()
    (fast; only compared within one process).
    """
    step = block_size * CHARS_PER_TOKEN
    n_blocks = min(n_blocks, len(text) // step)
    out = []
    h = 0
    for i in range(n_blocks):
        h = hash((h, text[i * step:(i + 1) * step]))
        out.append(h)
    return out


@dataclass
class ChatPrompt:
    """A parsed chat request prompt (see ``parse_messages``)."""

    #: Rendered prompt text (all messages, including a trailing assistant one).
    text: str
    #: Prompt tokens = count_tokens(text).
    prompt_tokens: int
    #: Rendered messages *without* the trailing assistant message.
    base_text: str
    #: Determinism seed = stable_hash64(base_text).
    seed: int
    #: Content of a trailing assistant message ("" if none).
    resume_prefix: str
    #: Number of output words already produced (words of resume_prefix).
    resume_words: int

    @property
    def first_space(self) -> bool:
        """Does the first generated token start with a space?"""
        return self.resume_words > 0 and not self.resume_prefix[-1:].isspace()


def parse_messages(messages: Seq[dict]) -> ChatPrompt:
    """Turn OpenAI ``messages`` into a ChatPrompt.

    A trailing ``assistant`` message is a *resume* prefill: its content counts
    as prompt tokens, but the determinism seed ignores it and generation
    continues at word index ``k = len(content.split())``, so
    ``content + continuation`` equals the uninterrupted output text.
    """
    rendered = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ValueError("each message must be an object with a string 'role'")
        rendered.append(render_message(m["role"], message_text(m.get("content"))))
    resume_prefix = ""
    n_base = len(rendered)
    if messages and messages[-1]["role"] == "assistant":
        resume_prefix = message_text(messages[-1].get("content"))
        n_base -= 1
    base_text = "".join(rendered[:n_base])
    text = "".join(rendered)
    return ChatPrompt(
        text=text,
        prompt_tokens=max(1, count_tokens(text)),
        base_text=base_text,
        seed=stable_hash64(base_text),
        resume_prefix=resume_prefix,
        resume_words=len(resume_prefix.split()),
    )


# --------------------------------------------------------------------------
# Prefix cache
# --------------------------------------------------------------------------


class PrefixCache:
    """LRU set of cumulative block hashes, bounded in blocks."""

    def __init__(self, capacity_blocks: int) -> None:
        self.capacity = max(0, capacity_blocks)
        self._blocks: collections.OrderedDict[int, None] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def match(self, hashes: Iterable[int]) -> int:
        """Number of leading blocks present (and mark them recently used)."""
        hit = 0
        blocks = self._blocks
        for h in hashes:
            if h not in blocks:
                break
            blocks.move_to_end(h)
            hit += 1
        return hit

    def insert(self, hashes: Iterable[int]) -> None:
        blocks = self._blocks
        for h in hashes:
            if h in blocks:
                blocks.move_to_end(h)
            else:
                blocks[h] = None
        while len(blocks) > self.capacity:
            blocks.popitem(last=False)


# --------------------------------------------------------------------------
# Sequences and the engine
# --------------------------------------------------------------------------


class SeqState(enum.Enum):
    WAITING = "waiting"      # queued, not admitted
    ADMITTED = "admitted"    # holds slot + KV, joins the next step
    RUNNING = "running"      # in the batch, producing a token per step
    FINISHED = "finished"    # produced all its tokens
    ABORTED = "aborted"      # client went away / server shutting down


class EngineOverloaded(Exception):
    """Waiting queue is full (max_waiting); the server answers HTTP 503."""


class RequestTooLarge(ValueError):
    """prompt + output exceeds the context limit; the server answers HTTP 400."""


class Sequence:
    """One request inside the engine.  Only counts tokens."""

    __slots__ = (
        "id", "prompt_tokens", "max_new_tokens", "block_hashes", "cached_tokens",
        "generated", "state", "done", "_waiter", "_prefill", "stream",
    )

    def __init__(self, seq_id: int, prompt_tokens: int, max_new_tokens: int,
                 block_hashes: list[int], stream: bool,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.id = seq_id
        self.prompt_tokens = prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.block_hashes = block_hashes
        self.cached_tokens = 0
        self.generated = 0          # tokens produced so far
        self.state = SeqState.WAITING
        self.stream = stream        # wake the waiter on every token?
        self.done: asyncio.Future[None] = loop.create_future()
        self._waiter: asyncio.Future[None] | None = None
        self._prefill = 0           # uncached prompt tokens charged at admission

    @property
    def finished(self) -> bool:
        return self.state in (SeqState.FINISHED, SeqState.ABORTED)

    def kv_need(self) -> int:
        return self.prompt_tokens + self.max_new_tokens

    async def wait_progress(self, seen: int) -> None:
        """Return once ``generated > seen`` or the sequence is finished."""
        if self.generated > seen or self.finished:
            return
        fut = self.done.get_loop().create_future()
        self._waiter = fut
        await fut

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def _complete(self, state: SeqState) -> None:
        self.state = state
        if not self.done.done():
            self.done.set_result(None)
        self._wake()


class Engine:
    """The simulated engine.  Create inside a running loop, then ``start()``."""

    #: How far (seconds) the loop may fall behind the model before it stops
    #: trying to catch up (the rest is counted in ``lag_seconds_total``).
    MAX_CATCH_UP_S = 0.05

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config = config or EngineConfig()
        config.validate()
        self._ids = itertools.count(1)
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._num_waiting = 0
        self._admitted: dict[int, Sequence] = {}
        self._running: dict[int, Sequence] = {}
        self._pending_prefill = 0
        self._kv_used = 0
        cap = config.prefix_cache_tokens or config.kv_tokens
        self.prefix_cache = PrefixCache(cap // config.block_size) if config.prefix_cache else None
        self._wake_event: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        # Counters (see metrics()).
        self.requests_received = 0
        self.requests_served = 0
        self.requests_aborted = 0
        self.requests_rejected = 0
        self.prompt_tokens_total = 0
        self.prefill_tokens_total = 0
        self.generation_tokens_total = 0
        self.prefix_cache_lookups = 0
        self.prefix_cache_hits = 0
        self.prefix_cache_queried_tokens = 0
        self.prefix_cache_hit_tokens = 0
        self.steps = 0
        self.busy_seconds = 0.0
        self.lag_seconds_total = 0.0
        self.peak_running = 0
        self.peak_waiting = 0

    # ---------------------------------------------------------------- life
    def start(self) -> None:
        if self._task is None:
            self._wake_event = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sim-engine")
            self._task.add_done_callback(self._on_loop_exit)

    def _on_loop_exit(self, task: asyncio.Task) -> None:
        """A crashed engine loop must not leave requests hanging forever."""
        if task.cancelled() or task.exception() is None:
            return
        import traceback
        traceback.print_exception(task.exception())
        for seq in list(self._waiting) + list(self._admitted.values()) + list(self._running.values()):
            if not seq.finished:
                seq._complete(SeqState.ABORTED)

    async def stop(self) -> None:
        """Stop the loop and abort every sequence (their waiters wake up)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for seq in list(self._waiting) + list(self._admitted.values()) + list(self._running.values()):
            if not seq.finished:
                seq._complete(SeqState.ABORTED)
        self._waiting.clear()
        self._admitted.clear()
        self._running.clear()
        self._num_waiting = 0
        self._kv_used = 0
        self._pending_prefill = 0

    # ------------------------------------------------------------- requests
    def submit(self, prompt_tokens: int, max_new_tokens: int, *,
               block_hashes: list[int] | None = None, stream: bool = False) -> Sequence:
        """Queue a request.  Raises RequestTooLarge or EngineOverloaded."""
        cfg = self.config
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if prompt_tokens + max_new_tokens > cfg.context_limit:
            raise RequestTooLarge(
                f"This model's maximum context length is {cfg.context_limit} tokens. "
                f"However, you requested {prompt_tokens + max_new_tokens} tokens "
                f"({prompt_tokens} in the messages, {max_new_tokens} in the completion).")
        if self._task is None:
            raise RuntimeError("engine not started")
        seq = Sequence(next(self._ids), prompt_tokens, max_new_tokens,
                       block_hashes or [], stream, asyncio.get_running_loop())
        self.requests_received += 1
        self._waiting.append(seq)
        self._num_waiting += 1
        self._try_admit()
        if seq.state is SeqState.WAITING and cfg.max_waiting and self._num_waiting > cfg.max_waiting:
            self._waiting.pop()            # it is the rightmost entry
            self._num_waiting -= 1
            self.requests_rejected += 1
            seq.state = SeqState.ABORTED
            raise EngineOverloaded(
                f"waiting queue full ({cfg.max_waiting} requests); retry later")
        if self._num_waiting > self.peak_waiting:
            self.peak_waiting = self._num_waiting
        return seq

    def abort(self, seq: Sequence) -> None:
        """Drop a sequence now (client disconnect): frees its slot and KV."""
        if seq.finished:
            return
        if seq.state is SeqState.WAITING:
            self._num_waiting -= 1          # removed lazily from the deque
        elif seq.state is SeqState.ADMITTED:
            del self._admitted[seq.id]
            self._pending_prefill -= seq._prefill
            self._kv_used -= seq.kv_need()
        elif seq.state is SeqState.RUNNING:
            del self._running[seq.id]
            self._kv_used -= seq.kv_need()
        self.requests_aborted += 1
        seq._complete(SeqState.ABORTED)
        self._try_admit()

    def remember(self, text: str) -> None:
        """Put all full blocks of ``text`` in the prefix cache (no-op if off).

        The server calls this with the conversation *including* the generated
        answer when a request finishes, so the next turn of a multi-turn chat
        hits the cache like vLLM's cached decode blocks would.
        """
        if self.prefix_cache is not None:
            bs = self.config.block_size
            self.prefix_cache.insert(block_hashes(text, count_tokens(text) // bs, bs))

    def prompt_block_hashes(self, text: str, prompt_tokens: int) -> list[int]:
        """Block hashes used for lookup: full blocks of the first prompt_tokens-1
        tokens (the last prompt token is always recomputed, as in vLLM)."""
        if self.prefix_cache is None:
            return []
        bs = self.config.block_size
        return block_hashes(text, (prompt_tokens - 1) // bs, bs)

    # ----------------------------------------------------------- scheduling
    def _try_admit(self) -> None:
        cfg = self.config
        waiting = self._waiting
        while waiting:
            seq = waiting[0]
            if seq.state is not SeqState.WAITING:   # aborted while queued
                waiting.popleft()
                continue
            if len(self._running) + len(self._admitted) >= cfg.max_num_seqs:
                break
            need = seq.kv_need()
            if self._kv_used + need > cfg.kv_tokens:
                break                              # FIFO: head-of-line blocks
            waiting.popleft()
            self._num_waiting -= 1
            self._kv_used += need
            cached = 0
            if self.prefix_cache is not None:
                hit = self.prefix_cache.match(seq.block_hashes)
                self.prefix_cache.insert(seq.block_hashes[hit:])
                cached = hit * cfg.block_size
                self.prefix_cache_lookups += 1
                self.prefix_cache_queried_tokens += seq.prompt_tokens
                if hit:
                    self.prefix_cache_hits += 1
                    self.prefix_cache_hit_tokens += cached
            seq.cached_tokens = cached
            seq._prefill = seq.prompt_tokens - cached
            self._pending_prefill += seq._prefill
            seq.state = SeqState.ADMITTED
            self._admitted[seq.id] = seq
            self.prompt_tokens_total += seq.prompt_tokens
        running_now = len(self._running) + len(self._admitted)
        if running_now > self.peak_running:
            self.peak_running = running_now
        if self._admitted and self._wake_event is not None:
            self._wake_event.set()

    def step_ms(self, batch: int, prefill_tokens: int = 0) -> float:
        """Modelled duration of one step (unscaled ms)."""
        c = self.config
        return c.base_step_ms + c.per_seq_ms * batch + c.prefill_ms_per_token * prefill_tokens

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        scale = self.config.time_scale / 1000.0
        running = self._running
        deadline = loop.time()
        while True:
            if not running and not self._admitted:
                self._wake_event.clear()
                self._try_admit()
                if not self._admitted:
                    await self._wake_event.wait()
                    deadline = loop.time()
                    continue
            # --- step start: newly admitted sequences join the batch.
            prefill = self._pending_prefill
            self._pending_prefill = 0
            self.prefill_tokens_total += prefill
            for seq in self._admitted.values():
                seq.state = SeqState.RUNNING
                running[seq.id] = seq
            self._admitted.clear()
            dur = self.step_ms(len(running), prefill) * scale
            self.busy_seconds += dur
            now = loop.time()
            if deadline < now - self.MAX_CATCH_UP_S:    # too far behind: resync
                self.lag_seconds_total += now - self.MAX_CATCH_UP_S - deadline
                deadline = now - self.MAX_CATCH_UP_S
            deadline += dur
            delay = deadline - now
            await asyncio.sleep(delay if delay > 0 else 0)
            # --- step end: every (still) running sequence emits one token.
            finished = []
            for seq in running.values():
                seq.generated += 1
                if seq.generated >= seq.max_new_tokens:
                    finished.append(seq)
                elif seq.stream:
                    seq._wake()
            self.generation_tokens_total += len(running)
            self.steps += 1
            for seq in finished:
                del running[seq.id]
                self._kv_used -= seq.kv_need()
                self.requests_served += 1
                seq._complete(SeqState.FINISHED)
            self._try_admit()

    # -------------------------------------------------------------- metrics
    @property
    def num_running(self) -> int:
        return len(self._running) + len(self._admitted)

    @property
    def num_waiting(self) -> int:
        return self._num_waiting

    @property
    def kv_tokens_used(self) -> int:
        return self._kv_used

    def metrics(self) -> dict[str, Any]:
        c = self.config
        peak = self.peak_throughput_tokens_per_s()
        return {
            "model": c.model,
            "running": self.num_running,
            "waiting": self._num_waiting,
            "max_num_seqs": c.max_num_seqs,
            "kv_tokens_used": self._kv_used,
            "kv_tokens_total": c.kv_tokens,
            "kv_usage": self._kv_used / c.kv_tokens,
            "prefix_cache_enabled": self.prefix_cache is not None,
            "prefix_cache_blocks": len(self.prefix_cache) if self.prefix_cache is not None else 0,
            "prefix_cache_lookups": self.prefix_cache_lookups,
            "prefix_cache_hits": self.prefix_cache_hits,
            "prefix_cache_queried_tokens": self.prefix_cache_queried_tokens,
            "prefix_cache_hit_tokens": self.prefix_cache_hit_tokens,
            "prompt_tokens_total": self.prompt_tokens_total,
            "prefill_tokens_total": self.prefill_tokens_total,
            "generation_tokens_total": self.generation_tokens_total,
            "tokens_total": self.prompt_tokens_total + self.generation_tokens_total,
            "requests_received": self.requests_received,
            "requests_served": self.requests_served,
            "requests_aborted": self.requests_aborted,
            "requests_rejected_503": self.requests_rejected,
            "steps": self.steps,
            "busy_seconds": self.busy_seconds,
            "lag_seconds_total": self.lag_seconds_total,
            "peak_running": self.peak_running,
            "peak_waiting": self.peak_waiting,
            "peak_throughput_tokens_per_s": peak if math.isfinite(peak) else None,
        }

    # ---------------------------------------------------- analytic helpers
    def max_batch(self, avg_seq_tokens: float | None = None) -> int:
        """Largest batch the engine can run: max_num_seqs, or fewer if KV
        only fits ``kv_tokens // avg_seq_tokens`` sequences of that size."""
        b = self.config.max_num_seqs
        if avg_seq_tokens:
            b = min(b, max(1, int(self.config.kv_tokens // avg_seq_tokens)))
        return b

    def peak_throughput_tokens_per_s(self, avg_seq_tokens: float | None = None) -> float:
        """Peak decode throughput in output tokens per *wall-clock* second::

            B    = max_batch(avg_seq_tokens)
            peak = B / ((base_step_ms + per_seq_ms * B) * time_scale / 1000)

        Tokens per step over step time grows with B, so a full batch is the
        best the engine can do.  ``inf`` when time_scale is 0.
        """
        b = self.max_batch(avg_seq_tokens)
        t = self.step_ms(b) * self.config.time_scale / 1000.0
        return math.inf if t <= 0 else b / t

    def ideal_time_s(self, prompt_tokens: int, output_tokens: int,
                     avg_seq_tokens: float | None = None, cached_tokens: int = 0) -> float:
        """Lower bound on the wall time to serve a workload on this engine::

            ideal = (prompt_tokens - cached_tokens) * prefill_ms_per_token * time_scale / 1000
                    + output_tokens / peak_throughput_tokens_per_s(avg_seq_tokens)

        Every step costs at least its prefill plus ``batch`` tokens at no
        better than peak rate, so no schedule can beat this.  Divide by the
        number of replicas for N identical engines.
        """
        c = self.config
        prefill_s = max(0, prompt_tokens - cached_tokens) * c.prefill_ms_per_token * c.time_scale / 1000.0
        peak = self.peak_throughput_tokens_per_s(avg_seq_tokens)
        return prefill_s + (0.0 if math.isinf(peak) else output_tokens / peak)


def peak_throughput_tokens_per_s(config: EngineConfig | None = None,
                                 avg_seq_tokens: float | None = None) -> float:
    """Module-level convenience: peak throughput of an engine with ``config``."""
    return Engine(config).peak_throughput_tokens_per_s(avg_seq_tokens)
