"""Chat generation over OpenAI-compatible endpoints: routing, failover, retries
of what is safe to retry, streaming, resume from a snapshot and time slices.

- Retried elsewhere (with backoff, inside the deadline): connection failures,
  429 and 503, i.e. requests the backend did not run or dropped unanswered.
- A free-text stream the backend drops mid-way continues on another endpoint
  as a resume of what was already produced.
- Tool calls on endpoints without native tool calling are emulated
  (emulated_tools.py); their streams deliver the answer at the end, since the
  raw JSON is no text to show.
- Output under a grammar (JSON formats, tools) is never sliced or resumed.
- A call holds one of this replica's slots of an endpoint while it runs
  there (Endpoint.slots: its share of max_concurrency); when every endpoint
  of the model is at its share, calls wait for a slot, first come first
  served, until their deadline.

Plain domain code: it speaks `openai` and raises AiosError; no gRPC here.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import httpx
import openai
from openai._base_client import make_request_options
from opentelemetry import trace

from services.llm_core import emulated_tools, prefix
from services.llm_core.config import DEFAULT_CACHE_TOKENS, ROUTING_MODES, EndpointConfig
from services.llm_core.emulated_tools import ToolPlan
from services.runtime import errors, logs, rendezvous, tracing

log = logs.get("llm_core")

# How long an endpoint that refused a connection is skipped (its circuit is
# open); then calls try it again (half-open) and the first success closes it.
DOWN_BACKOFF_SECONDS = 2.0
# A connection that drops a call unanswered is no sign of a server down on
# its own: servers close idle kept-alive connections, and a call sent on one
# just as it closes meets that. So the call is sent again, and only this many
# dropped calls in a row, with no call answered between, open the circuit.
DROPS_TO_OPEN = 3
# Idle connections are closed by us before llama.cpp's and uvicorn's servers
# close theirs (5 s each), so a call rarely goes out on one they just closed.
KEEPALIVE_SECONDS = 4.0
# Prefix routing: a call goes where the longest part of its prompt is cached,
# when that part is at least MATCH_RATIO of the prompt (SGLang's cache_aware
# router uses 0.3), unless that endpoint is out of balance: more than
# BALANCE_ABS of its max concurrency (at least one call) above the least
# loaded endpoint's in flight and more than BALANCE_REL times it (SGLang: 64
# requests and 1.5x). A miss of a long history stalls one engine's whole
# batch for its prefill; a good deal more load on it costs less.
BALANCE_ABS = 0.25
BALANCE_REL = 1.5
MATCH_RATIO = 0.3
# Session routing: sessions remembered, and how much more loaded than the
# least loaded endpoint a session's last one may be and still take it.
AFFINITY_ENTRIES = 100_000
AFFINITY_SLACK = 0.5
# Rounds over all endpoints of a model when each fails retryably, with
# exponential backoff between rounds (0.05 s doubling up to 1 s: ~4.5 s).
MAX_ROUNDS = 8
FIRST_BACKOFF_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 1.0
# Background probes (LlmEngine.watch, GET /models): endpoints that failed
# theirs or that a call marked down every second, the others every 5 s.
PROBE_DOWN_SECONDS = 1.0
PROBE_UP_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 2.0

T = TypeVar("T")


@dataclass
class ChatRequest:
    """One generation, in OpenAI's vocabulary."""

    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    sampling: dict[str, Any] = field(default_factory=dict)  # temperature, top_p, stop, seed
    max_tokens: int | None = None  # of the whole generation, snapshot included
    session_id: str = ""
    # A snapshot of an interrupted generation to continue.
    resume_text: str = ""
    resume_tokens: int = 0
    # Stop after this many new tokens (the scheduler's time slice); 0 = none.
    slice_tokens: int = 0
    # The prompt as prefix routing reads it, and its block hashes (set once
    # per call by LlmEngine).
    prefix_text: str = field(default="", repr=False)
    prefix_hashes: list[int] = field(default_factory=list, repr=False)

    @property
    def constrained(self) -> bool:
        """Output under a grammar (JSON formats, tools). Such output is never
        sliced: a grammar restarts at its root, so it cannot resume mid-way."""
        return self.response_format is not None or (bool(self.tools) and self.tool_choice != "none")


@dataclass
class Completion:
    text: str = ""
    tool_calls: list[dict[str, str]] = field(default_factory=list)
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    model: str = ""
    endpoint: str = ""


@dataclass
class Delta:
    """A piece of a streamed generation; the last one has `final` set."""

    text: str = ""
    final: Completion | None = None


class Endpoint:
    def __init__(self, config: EndpointConfig, replicas: int = 1) -> None:
        self.config = config
        # This replica's share of the engine's slots, so that `replicas`
        # llm_core replicas together never run more than max_concurrency
        # calls on it (at least one each: a share of nothing serves no one).
        self.slots = max(1, config.max_concurrency // replicas)
        # Several connection pools, calls spread over them in turn: httpcore
        # looks at every connection of its pool whenever a request starts or
        # ends, which with 256 calls in flight on one pool was a third of
        # llm_core's CPU. Each pool may still open every connection needed.
        self.clients = [openai.AsyncOpenAI(
            base_url=config.base_url,
            api_key=config.api_key or "unused",
            max_retries=0,  # retries are ours: only the safe ones, inside the deadline
            http_client=openai.DefaultAsyncHttpxClient(limits=_limits(config.max_concurrency)),
        ) for _ in range(-(-config.max_concurrency // POOL_CONNECTIONS))]
        self.client = self.clients[0]  # probes
        self._turn = 0
        self.in_flight = 0
        self.down_until = 0.0
        self.last_error = ""
        self.drops = 0  # calls dropped unanswered since one was answered
        # What the last probe found (None before the first) and when.
        self.reachable: bool | None = None
        self.probed_at = 0.0

    @property
    def name(self) -> str:
        return self.config.name

    def next_client(self) -> openai.AsyncOpenAI:
        """The client (connection pool) for the next call."""
        self._turn = (self._turn + 1) % len(self.clients)
        return self.clients[self._turn]

    async def close(self) -> None:
        for client in self.clients:
            await client.close()

    def healthy(self, now: float) -> bool:
        return now >= self.down_until

    def load(self) -> float:
        return self.in_flight / self.slots

    def free(self) -> bool:
        """Whether this replica may send it one more call."""
        return self.in_flight < self.slots

    def mark_down(self, why: str) -> None:
        self.down_until = time.monotonic() + DOWN_BACKOFF_SECONDS
        self.last_error = why

    def dropped(self, exc: BaseException, why: str) -> None:
        """A call's connection failed: a refused or failed connection opens
        the circuit at once, a connection dropped unanswered at the
        DROPS_TO_OPEN-th in a row."""
        self.drops += 1
        if self.drops >= DROPS_TO_OPEN or _refused(exc):
            self.mark_down(why)

    def mark_up(self) -> None:
        self.down_until = 0.0
        self.last_error = ""
        self.drops = 0


class Router:
    """The order in which to try a model's endpoints for one call.

    Healthy endpoints before ones marked down, then by routing mode:

    - "prefix" (the default): a run stays on the endpoint that served its
      session while that one holds the longest part of the prompt (its
      history, or nothing known anywhere) and its load is within
      AFFINITY_SLACK of the least loaded. Otherwise, among the endpoints in
      balance with the least loaded one (BALANCE_ABS, BALANCE_REL), the one
      believed to hold the longest part of the prompt (prefix.py), when that
      is at least MATCH_RATIO of it. Else the prompt is new everywhere and
      goes to the one whose cache holds least (a new conversation goes where
      it evicts least), ties to the least loaded; but with several replicas
      (`replicas` > 1) a call with a session goes to the session's
      rendezvous choice among those (rendezvous.py), the endpoint any
      replica picks for a run it never saw, which one replica's view of the
      caches would not give. An agent run's history is a prefix of its next
      prompt, so session affinity is the special case of a run that shares
      its prompt with no one; prompts many agents share (one agent type's
      instructions and tools) stay where they are cached.
    - "session": the least loaded, preferring the endpoint that served the
      same session before while its load is within AFFINITY_SLACK.
    - "hash": the session (the kernel's agent run) is the routing key. The
      key's rendezvous order of the endpoints (weighted by max_concurrency),
      and in it the first healthy endpoint with a free slot whose calls in
      flight, this one included, stay within rendezvous.bound: at most
      LOAD_FACTOR (1.25) times its share of all in flight. Other endpoints
      follow in the key's order, so failover too goes where every replica
      sends the key. A call without a key goes to the least loaded. Nothing
      is remembered: every llm_core replica with the same endpoints sends a
      key to the same endpoint while loads are within the bound. The loads
      are each replica's own view, though (the calls it has in flight), so
      under overload two replicas may place a key differently.
    """

    def __init__(self, endpoints: list[Endpoint], mode: str = "prefix", replicas: int = 1) -> None:
        if mode not in ROUTING_MODES:
            raise ValueError(f"unknown routing mode {mode!r}")
        self.mode = mode
        self.replicas = replicas
        self.by_model: dict[str, list[Endpoint]] = {}
        for ep in endpoints:
            self.by_model.setdefault(ep.config.model, []).append(ep)
        self._affinity: OrderedDict[str, str] = OrderedDict()
        # Prefix routing's view of each endpoint's cache (none in the other modes).
        self.index: dict[str, prefix.PrefixIndex] = {
            ep.name: prefix.PrefixIndex(DEFAULT_CACHE_TOKENS if ep.config.cache_tokens is None else ep.config.cache_tokens)
            for ep in endpoints if ep.config.cache_tokens != 0} if mode == "prefix" else {}

    def models(self) -> list[str]:
        return list(self.by_model)

    def candidates(self, model: str, session_id: str = "", hashes: list[int] | None = None) -> list[Endpoint]:
        """Endpoints of `model` in the order to try them."""
        eps = self.by_model.get(model)
        if not eps:
            known = ", ".join(sorted(self.by_model)) or "none"
            raise errors.NotFound(
                f"unknown model {model!r} (configured: {known})", reason="UNKNOWN_MODEL", field="model"
            )
        now = time.monotonic()
        if self.mode == "hash" and session_id and len(eps) > 1:
            return self._by_hash(eps, session_id, now)
        # Healthy ones by load (random tie-break), then the ones marked down,
        # which are still worth a try when nothing else is left. Among the
        # healthy, one that failed its last background probe goes last: a
        # call need not find out again that it refuses connections.
        ranked = sorted(eps, key=lambda e: (not e.healthy(now), e.reachable is False, e.load(), random.random()))
        if len(ranked) == 1 or self.mode == "hash":
            return ranked
        if hashes:  # only prefix routing hashes prompts
            chosen = self._by_prefix(ranked, hashes, now, session_id)
        else:
            chosen = self._session_endpoint(ranked, session_id, ranked[0].load(), now)
        if chosen is not None and chosen is not ranked[0]:
            ranked.remove(chosen)
            ranked.insert(0, chosen)
        return ranked

    def _by_hash(self, eps: list[Endpoint], key: str, now: float) -> list[Endpoint]:
        # The key's order, the ones marked down or failing their probe last
        # (sorted is stable: each group stays in the key's order).
        order = _rendezvous(key, eps)
        order.sort(key=lambda e: (not e.healthy(now), e.reachable is False))
        open_ = [e for e in order if e.healthy(now) and e.reachable is not False]
        total = sum(e.in_flight for e in open_)
        weights = sum(e.config.max_concurrency for e in open_)
        for ep in open_:
            if ep.free() and ep.in_flight < rendezvous.bound(total, ep.config.max_concurrency, weights):
                if ep is not order[0]:
                    order.remove(ep)
                    order.insert(0, ep)
                break
        return order

    def _by_prefix(self, ranked: list[Endpoint], hashes: list[int], now: float,
                   session_id: str = "") -> Endpoint | None:
        open_ = [e for e in ranked if e.healthy(now) and e.reachable is not False
                 and e.free() and e.name in self.index]
        if not open_:
            return None
        held = {e.name: self.index[e.name].match(hashes) for e in open_}
        # A run's own endpoint keeps it as long as session routing would
        # (AFFINITY_SLACK): a history lost costs the same either way.
        own = self._session_endpoint(open_, session_id, min(e.load() for e in open_), now)
        if own is not None and held[own.name] == max(held.values()):
            return own
        least = min(e.in_flight for e in open_)
        near = [e for e in open_ if e.in_flight <= least + max(1.0, BALANCE_ABS * e.slots)
                or e.in_flight <= BALANCE_REL * least]
        # ranked is by load already: max() keeps the least loaded of equals.
        best = max(near, key=lambda e: held[e.name])
        if held[best.name] >= MATCH_RATIO * len(hashes):
            return best
        # Nothing of it is known to be cached. Among replicas, a run's
        # rendezvous choice: one that never saw the run picks the same
        # endpoint, so the run keeps its history there whichever replica its
        # calls reach. Alone, where the cache holds least: new runs spread
        # evenly over the caches, not as a hash happens to fall.
        if session_id and self.replicas > 1:
            return _rendezvous(session_id, near)[0]
        return min(near, key=lambda e: (len(self.index[e.name]), e.load()))

    def _session_endpoint(self, eps: list[Endpoint], session_id: str, lightest: float,
                          now: float) -> Endpoint | None:
        """The endpoint that last served the session, if it is among `eps`,
        healthy, has a free slot and a load within AFFINITY_SLACK of `lightest`."""
        preferred = self._affinity.get(session_id) if session_id else None
        if not preferred:
            return None
        for ep in eps:
            if (ep.name == preferred and ep.healthy(now) and ep.free()
                    and ep.load() - lightest <= AFFINITY_SLACK):
                return ep
        return None

    def sent(self, endpoint: Endpoint, hashes: list[int]) -> None:
        """A call's prompt went to `endpoint`: its cache will hold it."""
        index = self.index.get(endpoint.name)
        if index is not None and hashes:
            index.insert(hashes)

    def remember(self, session_id: str, endpoint: Endpoint) -> None:
        if not session_id or self.mode == "hash":  # hash routing needs no memory
            return
        self._affinity[session_id] = endpoint.name
        self._affinity.move_to_end(session_id)
        while len(self._affinity) > AFFINITY_ENTRIES:
            self._affinity.popitem(last=False)

    def answered(self, endpoint: Endpoint, req: "ChatRequest", text: str) -> None:
        """A call ended with `text`: the engine caches the conversation with
        its answer, the start of the run's next prompt."""
        index = self.index.get(endpoint.name)
        if index is None or not text:
            return
        conversation = req.prefix_text + prefix.prompt_text([{"role": "assistant", "content": text}])
        index.insert(prefix.block_hashes(conversation, req.prefix_hashes))


def _rendezvous(key: str, eps: list[Endpoint]) -> list[Endpoint]:
    """`eps` in `key`'s preference order, each weighted by its capacity (the
    engine's, the same in every replica)."""
    return rendezvous.order(key, eps, lambda e: e.name, lambda e: e.config.max_concurrency)


def _open(eps: list[Endpoint]) -> bool:
    """Whether a call may go ahead now: an endpoint not marked down has a
    free slot, or none is up (nothing to wait for)."""
    now = time.monotonic()
    up = [ep for ep in eps if ep.healthy(now)]
    return not up or any(ep.free() for ep in up)


# About how many calls in flight share one connection pool (Endpoint.clients).
POOL_CONNECTIONS = 32


def _limits(max_concurrency: int):
    """Connections to one endpoint: as many kept open as calls may be in
    flight to it. openai's default keeps 100, so past 100 concurrent calls
    every call that ends closes its connection and the next opens one anew,
    a TCP handshake and a new pool entry each time."""
    default = openai.DEFAULT_CONNECTION_LIMITS  # openai's own HTTP library's type
    return type(default)(max_connections=max(default.max_connections, max_concurrency),
                         max_keepalive_connections=max(default.max_keepalive_connections, max_concurrency),
                         keepalive_expiry=KEEPALIVE_SECONDS)


def _refused(exc: BaseException) -> bool:
    """A connection that could not be made (refused, no route, failed TLS),
    as opposed to one that was dropped after it was made."""
    return isinstance(exc.__cause__, httpx.ConnectError)


def _retryable(exc: BaseException) -> bool:
    """Safe to send again elsewhere: the backend did not run it (refused,
    rate limited, overloaded) or dropped it before answering."""
    if isinstance(exc, openai.APITimeoutError):
        return False
    if isinstance(exc, openai.APIConnectionError):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code in (429, 503)


def map_error(exc: BaseException, endpoint: Endpoint) -> errors.AiosError:
    """An openai (or transport) exception as the status the caller should see."""
    if isinstance(exc, errors.AiosError):
        return exc
    name = endpoint.name
    if isinstance(exc, openai.APITimeoutError):
        return errors.DeadlineExceeded(f"endpoint {name} did not answer within the deadline")
    if isinstance(exc, (openai.APIConnectionError, httpx.TransportError)):
        return errors.Unavailable(f"endpoint {name} is unreachable or dropped the connection",
                                  reason="ENDPOINT_UNREACHABLE", metadata={"endpoint": name},
                                  retry_after=DOWN_BACKOFF_SECONDS)
    if isinstance(exc, openai.APIStatusError):
        status, detail = exc.status_code, _scrub(_backend_message(exc), endpoint)
        meta = {"endpoint": name, "http_status": str(status)}
        if status in (401, 403):
            where = f" (key from ${endpoint.config.api_key_env})" if endpoint.config.api_key_env else ""
            return errors.FailedPrecondition(
                f"endpoint {name} refused our credentials{where}: HTTP {status}",
                reason="BACKEND_AUTH", metadata=meta)
        if status == 404:
            return errors.NotFound(f"endpoint {name}: {detail}", reason="BACKEND_NOT_FOUND", metadata=meta)
        if status == 429:
            return errors.ResourceExhausted(f"endpoint {name} is rate limited: {detail}",
                                            reason="BACKEND_RATE_LIMITED", metadata=meta,
                                            retry_after=_retry_after(exc) or 1.0)
        if 400 <= status < 500:
            return errors.InvalidArgument(f"endpoint {name} rejected the request: {detail}",
                                          reason="BACKEND_REJECTED", metadata=meta)
        return errors.Unavailable(f"endpoint {name} failed (HTTP {status}): {detail}",
                                  reason="BACKEND_ERROR", metadata=meta)
    if isinstance(exc, openai.APIError):  # an error event inside a stream
        return errors.Unavailable(f"endpoint {name} failed: {_scrub(str(exc.message), endpoint)[:500]}",
                                  reason="BACKEND_ERROR", metadata={"endpoint": name})
    return errors.Internal(f"endpoint {name}: {type(exc).__name__}")


def _backend_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error")
        msg = inner.get("message") if isinstance(inner, dict) else body.get("message")
        if msg:
            return str(msg)[:500]
    return str(exc.message)[:500]


def _scrub(text: str, endpoint: Endpoint) -> str:
    """Never let a backend echo our key back to a caller."""
    key = endpoint.config.api_key
    return text.replace(key, "***") if key else text


def _retry_after(exc: openai.APIStatusError) -> float | None:
    try:
        return float(exc.response.headers.get("retry-after", ""))
    except (TypeError, ValueError):
        return None


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


@dataclass
class _Call:
    """What one attempt sends to one endpoint, and how to read the answer."""

    params: dict[str, Any]
    tools: ToolPlan | None  # tool calls emulated with a JSON schema
    sliceable: bool
    # The attempt's span (a streamed one ends when its stream is read).
    span: Any = None


@dataclass
class _StreamState:
    """A streamed generation so far, across failovers."""

    text: str  # snapshot + every new piece yielded
    new_tokens: int = 0  # new completion tokens in this call
    buffer: str = ""  # emulated tool-call JSON, not yielded
    finish_reason: str | None = None
    usage: Any = None
    tool_parts: dict[int, dict[str, str]] = field(default_factory=dict)


class _StreamBroken(Exception):
    """The backend dropped a stream it had started."""

    def __init__(self, error: errors.AiosError) -> None:
        super().__init__(error.message)
        self.error = error


# How one attempt on an endpoint ended (Observer.attempt).
OK = "ok"
UNAVAILABLE = "unavailable"  # refused, dropped, 429 or 503: tried elsewhere or again when safe
ERROR = "error"  # any other failure of the backend
TIMEOUT = "timeout"
CANCELLED = "cancelled"  # the caller went away
OUTCOMES = (OK, UNAVAILABLE, ERROR, TIMEOUT, CANCELLED)


class Observer:
    """Told what the engine's endpoints do (llm_core's metrics); this one
    ignores it. Seconds count from the request to the event."""

    def attempt(self, endpoint: Endpoint, outcome: str) -> None:
        pass

    def first_token(self, endpoint: Endpoint, seconds: float) -> None:
        pass

    def generated(self, endpoint: Endpoint, tokens: int, seconds: float) -> None:
        pass


class LlmEngine:
    def __init__(self, endpoints: list[EndpointConfig], routing: str = "prefix",
                 observer: Observer | None = None, replicas: int = 1) -> None:
        self.replicas = replicas
        self.endpoints = [Endpoint(c, replicas) for c in endpoints if c.kind == "chat"]
        self.router = Router(self.endpoints, routing, replicas)
        self.observer = observer or Observer()
        # Per model, the calls waiting for a free slot, in arrival order; a
        # done future is one woken and about to take a slot. (Made once:
        # metrics read it from their own thread.)
        self._waiting: dict[str, deque[asyncio.Future]] = {model: deque() for model in self.router.by_model}
        for ep in self.endpoints:
            if ep.config.max_concurrency < replicas:
                log.warning("endpoint has fewer slots than there are llm_core replicas: each keeps one, "
                            "so together they may exceed its max_concurrency", endpoint=ep.name,
                            max_concurrency=ep.config.max_concurrency, replicas=replicas)

    def waiting(self) -> dict[str, int]:
        """Calls waiting for a free slot, per model."""
        return {model: len(queue) for model, queue in self._waiting.items()}

    def _prepare(self, req: ChatRequest) -> None:
        # A model with one endpoint has nothing to choose: no view to keep.
        if self.router.index and not req.prefix_hashes and len(self.router.by_model.get(req.model, ())) > 1:
            req.prefix_text = prefix.prompt_text(req.messages)
            req.prefix_hashes = prefix.block_hashes(req.prefix_text)

    async def close(self) -> None:
        for ep in self.endpoints:
            await ep.close()

    def _call(self, req: ChatRequest, ep: Endpoint) -> _Call:
        messages = list(req.messages)
        response_format = req.response_format
        tools: ToolPlan | None = None
        params: dict[str, Any] = {"model": ep.config.model_id, **req.sampling}
        if ep.config.native_tools:
            if req.tools:
                params["tools"] = req.tools
                if req.tool_choice is not None:
                    params["tool_choice"] = req.tool_choice
        else:
            messages = emulated_tools.plain_history(messages)
            tools = emulated_tools.plan(req.tools, req.tool_choice, req.response_format)
            if tools is not None:
                messages = emulated_tools.instruct(tools, messages)
                response_format = emulated_tools.response_format(tools)
        if req.resume_text:
            # Assistant prefill: the engine continues the partial answer.
            messages.append({"role": "assistant", "content": req.resume_text})
        params["messages"] = messages
        if response_format:
            params["response_format"] = response_format
        if req.max_tokens is not None:
            params["max_tokens"] = req.max_tokens - req.resume_tokens
        return _Call(params=params, tools=tools, sliceable=not req.constrained)

    async def _with_endpoint(self, req: ChatRequest, deadline: float | None,
                             attempt: Callable[[Endpoint, float | None], Awaitable[T]], hold: bool = False) -> T:
        """Run `attempt(endpoint, timeout)` on the best endpoint with a free
        slot, waiting for one if need be, failing over to the next on what is
        safe to retry, with backoff inside the deadline. With `hold`, an
        attempt that succeeds keeps its slot (a stream being read; _read
        frees it)."""
        last: errors.AiosError | None = None
        backoff = FIRST_BACKOFF_SECONDS
        for _ in range(MAX_ROUNDS):
            await self._slot(req.model, deadline)
            tried = 0
            for ep in self.router.candidates(req.model, req.session_id, req.prefix_hashes):
                if not ep.healthy(time.monotonic()):
                    # Circuit open: it refused a connection moments ago. It
                    # is tried again once DOWN_BACKOFF_SECONDS have passed.
                    continue
                if not ep.free():
                    # This replica's share of it is in flight (the free one
                    # _slot found is another, or went while this call failed
                    # over): never more than the share.
                    continue
                tried += 1
                timeout = _remaining(deadline)
                if timeout is not None and timeout <= 0:
                    raise last or errors.DeadlineExceeded("the deadline passed before a model answered")
                ep.in_flight += 1
                self.router.sent(ep, req.prefix_hashes)
                kept = False
                try:
                    async with asyncio.timeout(timeout):
                        result = await attempt(ep, timeout)
                    kept = hold
                except TimeoutError:
                    self.observer.attempt(ep, TIMEOUT)
                    raise errors.DeadlineExceeded(
                        f"endpoint {ep.name} did not answer within the deadline") from None
                except errors.AiosError:
                    self.observer.attempt(ep, ERROR)
                    raise
                except asyncio.CancelledError:
                    self.observer.attempt(ep, CANCELLED)
                    raise
                except Exception as exc:  # noqa: BLE001 - mapped below
                    mapped = map_error(exc, ep)
                    if not _retryable(exc):
                        self.observer.attempt(ep, ERROR)
                        raise mapped from exc
                    self.observer.attempt(ep, UNAVAILABLE)
                    if isinstance(exc, openai.APIConnectionError):
                        ep.dropped(exc, mapped.message)
                    log.warning("endpoint failed, trying the next", endpoint=ep.name, error=mapped.message)
                    last = mapped
                    continue
                finally:
                    if not kept:
                        self._release(ep)
                ep.mark_up()
                self.router.remember(req.session_id, ep)
                return result
            if not tried:
                # No endpoint of the model is reachable: say so at once
                # rather than at the deadline.
                raise self._unreachable(req.model, last)
            # Every endpoint failed retryably: back off and go round again,
            # unless the wait would not fit before the deadline.
            timeout = _remaining(deadline)
            if timeout is not None and timeout <= backoff:
                break
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        assert last is not None
        raise last

    async def _slot(self, model: str, deadline: float | None) -> None:
        """Return once a call of `model` may take a slot: an endpoint not
        marked down has one free of this replica's share and no call that came
        first is waiting for one (FIFO); or none is up, which the caller then
        reports. DEADLINE_EXCEEDED when the deadline passes first."""
        eps = self.router.by_model.get(model)
        if not eps:
            return  # an unknown model: candidates() says so
        queue = self._waiting[model]
        if not queue and _open(eps):
            return
        loop = asyncio.get_running_loop()
        at = None if deadline is None else loop.time() + _remaining(deadline)
        waiter = loop.create_future()
        queue.append(waiter)
        try:
            while True:
                try:
                    async with asyncio.timeout_at(at):
                        await waiter
                except TimeoutError:
                    raise self._busy(model) from None
                queue.remove(waiter)
                if _open(eps):
                    return  # the caller takes the slot before it next awaits
                # A call failing over took the slot first: wait again, first in line.
                waiter = loop.create_future()
                queue.appendleft(waiter)
        except BaseException:
            with contextlib.suppress(ValueError):
                queue.remove(waiter)
            self._wake(model)  # the slot it was woken for goes to the next in line
            raise

    def _release(self, ep: Endpoint) -> None:
        ep.in_flight -= 1
        self._wake(ep.config.model)

    def _wake(self, model: str) -> None:
        """Wake as many of the calls waiting for `model`, first first, as it
        has free slots (all when no endpoint is up: they fail at once)."""
        queue = self._waiting.get(model)
        if not queue:
            return
        now = time.monotonic()
        up = [ep for ep in self.router.by_model[model] if ep.healthy(now)]
        free = sum(max(0, ep.slots - ep.in_flight) for ep in up) if up else len(queue)
        for woken, waiter in enumerate(queue):
            if woken >= free:
                break
            if not waiter.done():
                waiter.set_result(None)

    def _busy(self, model: str) -> errors.DeadlineExceeded:
        eps = self.router.by_model[model]
        now = time.monotonic()
        held = ", ".join(f"{ep.name} {ep.in_flight}/{ep.slots}" if ep.healthy(now) else f"{ep.name} down"
                         for ep in eps)
        shared = (f"; {self.replicas} llm_core replicas share each endpoint's max_concurrency "
                  "(AIOS_LLM_REPLICAS)") if self.replicas > 1 else ""
        return errors.DeadlineExceeded(
            f"the deadline passed while the call waited for a free slot of model {model}: its endpoints "
            f"that are up have all the calls this llm_core may send them in flight ({held}{shared})",
            reason="ENDPOINTS_BUSY", metadata={"model": model})

    def _unreachable(self, model: str, last: errors.AiosError | None) -> errors.AiosError:
        eps = self.router.by_model.get(model, [])
        now = time.monotonic()
        why = "; ".join(f"{ep.name}: {ep.last_error or 'down'}" for ep in eps)
        retry = max(0.1, min((ep.down_until - now for ep in eps), default=DOWN_BACKOFF_SECONDS))
        return errors.Unavailable(f"no endpoint of model {model} is reachable ({why})",
                                  reason="ENDPOINT_UNREACHABLE", retry_after=retry,
                                  metadata={"model": model, **(last.metadata if last else {})})

    async def generate(self, req: ChatRequest, deadline: float | None = None) -> Completion:
        _validate(req)
        if (done := _nothing_left(req)) is not None:
            return done
        self._prepare(req)
        if req.slice_tokens and not req.constrained:
            # A time slice needs to watch tokens as they come.
            final = None
            async for delta in self.stream(req, deadline):
                final = delta.final or final
            assert final is not None
            return final

        async def attempt(ep: Endpoint, timeout: float | None) -> Completion:
            started = time.monotonic()
            call = self._call(req, ep)
            resp = await _post_chat(ep.next_client(), call.params, timeout)
            choices = resp.get("choices") if isinstance(resp, dict) else None
            if not choices or not isinstance(choices[0], dict):
                raise errors.Unavailable(f"endpoint {ep.name} answered without a choice",
                                         reason="BACKEND_ERROR", metadata={"endpoint": ep.name})
            choice = choices[0]
            message = choice.get("message") or {}
            content = message.get("content") or ""
            if req.resume_text and content.startswith(req.resume_text):
                # Some engines (llama.cpp) echo the prefilled part in a
                # non-streamed reply; streamed replies carry only new text.
                content = content[len(req.resume_text):]
            finish = choice.get("finish_reason") or "stop"
            if call.tools is not None:
                content, calls, finish = emulated_tools.parse(call.tools, content, finish, ep.name)
            else:
                calls = [_tool_call(tc.get("id"), fn.get("name") or "", fn.get("arguments"))
                         for tc in (message.get("tool_calls") or []) for fn in [tc.get("function") or {}]]
            out = Completion(text=req.resume_text + content, tool_calls=calls, finish_reason=finish,
                             model=resp.get("model") or ep.config.model_id, endpoint=ep.name)
            _account(out, req, resp.get("usage"))
            self.router.answered(ep, req, out.text)
            self.observer.attempt(ep, OK)
            if out.completion_tokens > req.resume_tokens:
                self.observer.generated(ep, out.completion_tokens - req.resume_tokens, time.monotonic() - started)
            return out

        return await self._with_endpoint(req, deadline, _spanned(attempt, req))

    async def stream(self, req: ChatRequest, deadline: float | None = None) -> AsyncIterator[Delta]:
        """Token deltas, then a Delta with `final`. A stream the backend drops
        after tokens went out continues on another endpoint from what was
        already produced (free text), so the caller sees one generation."""
        _validate(req)
        if (done := _nothing_left(req)) is not None:
            yield Delta(final=done)
            return
        self._prepare(req)
        st = _StreamState(text=req.resume_text)
        failovers = 0
        sub = req
        while True:
            ep, call, stream, started = await self._with_endpoint(sub, deadline, _spanned(self._opener(sub), sub),
                                                                  hold=True)
            try:
                async with contextlib.aclosing(self._read(ep, call, stream, sub, deadline, st, started)) as pieces:
                    async for text in pieces:
                        yield Delta(text=text)
            except _StreamBroken as broken:
                # Free text continues from what went out; a buffered answer
                # (emulated tools) starts over; other constrained output cannot.
                if call.tools is not None:
                    st.new_tokens, st.buffer = 0, ""
                if (failovers >= len(self.router.by_model[req.model])
                        or (req.constrained and st.new_tokens) or st.tool_parts):
                    raise broken.error from None
                ep.mark_down(broken.error.message)
                failovers += 1
                st.finish_reason, st.usage = None, None
                log.warning("stream dropped, continuing on another endpoint",
                            endpoint=ep.name, error=broken.error.message)
                if st.new_tokens:
                    sub = replace(req, resume_text=st.text, resume_tokens=req.resume_tokens + st.new_tokens,
                                  slice_tokens=req.slice_tokens - st.new_tokens if req.slice_tokens else 0)
                    if (done := _nothing_left(sub)) is not None:
                        done.endpoint = ep.name
                        yield Delta(final=done)
                        return
                continue
            final = self._finish(ep, call, sub, req, st)
            self.router.answered(ep, req, final.text)
            yield Delta(final=final)
            return

    def _opener(self, req: ChatRequest):
        # The call's slot stays taken while the stream is read (_read frees it).
        async def attempt(ep: Endpoint, timeout: float | None):
            started = time.monotonic()
            call = self._call(req, ep)
            stream = await _post_chat(ep.next_client(), {**call.params, "stream_options": {"include_usage": True}},
                                      timeout, stream=True)
            return ep, call, stream, started
        return attempt

    async def _read(self, ep: Endpoint, call: _Call, stream, req: ChatRequest, deadline: float | None,
                    st: _StreamState, started: float) -> AsyncIterator[str]:
        """Read one backend stream into `st`, yielding text as it comes."""
        slice_left = req.slice_tokens if call.sliceable else 0
        chunks = aiter(stream)
        loop_deadline = None if deadline is None else asyncio.get_running_loop().time() + _remaining(deadline)
        # CANCELLED unless it ends otherwise: a consumer that leaves closes the generator.
        outcome, tokens, first = CANCELLED, 0, True
        try:
            while True:
                # The deadline bounds each wait, never a yield (a timeout
                # spanning a yield would cancel the consumer instead).
                try:
                    async with asyncio.timeout_at(loop_deadline):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                if not isinstance(chunk, dict):
                    continue  # not a chunk of a chat completion
                if chunk.get("usage") is not None:
                    st.usage = chunk["usage"]
                choices = chunk.get("choices")
                if not choices:
                    continue
                choice = choices[0]
                delta = choice.get("delta") or {}
                content, tool_calls, finish = delta.get("content"), delta.get("tool_calls"), choice.get("finish_reason")
                if first and (content or tool_calls):
                    first = False
                    self.observer.first_token(ep, time.monotonic() - started)
                    _first_token(call.span, time.monotonic() - started)
                for tc in tool_calls or []:
                    part = st.tool_parts.setdefault(tc.get("index", 0), {"id": "", "name": "", "arguments": ""})
                    part["id"] = tc.get("id") or part["id"]
                    if function := tc.get("function"):
                        part["name"] += function.get("name") or ""
                        part["arguments"] += function.get("arguments") or ""
                if content:
                    st.new_tokens += 1
                    tokens += 1
                    if call.tools is not None:
                        st.buffer += content
                    else:
                        st.text += content
                        yield content
                    if slice_left:
                        slice_left -= 1
                        if slice_left == 0 and not finish:
                            st.finish_reason = "preempted"
                            outcome = OK
                            return
                if finish:
                    st.finish_reason = finish
            outcome = OK if st.finish_reason is not None else UNAVAILABLE
        except (TimeoutError, httpx.TimeoutException, openai.APITimeoutError):
            outcome = TIMEOUT
            raise errors.DeadlineExceeded(f"endpoint {ep.name} did not finish within the deadline") from None
        except (openai.APIConnectionError, httpx.TransportError) as exc:
            outcome = UNAVAILABLE
            raise _StreamBroken(map_error(exc, ep)) from exc
        except openai.APIError as exc:
            outcome = ERROR
            raise map_error(exc, ep) from exc
        except Exception:
            outcome = ERROR
            raise
        finally:
            # Closing the response aborts the HTTP request, freeing the engine's
            # slot; ours is freed even if closing fails (a slot lost is lost for good).
            try:
                await stream.close()
            finally:
                self._release(ep)
            self.observer.attempt(ep, outcome)
            _stream_read(call.span, outcome, st)
            if tokens:
                self.observer.generated(ep, tokens, time.monotonic() - started)
        if st.finish_reason is None:
            raise _StreamBroken(errors.Unavailable(f"endpoint {ep.name} ended the stream before the model finished",
                                                   reason="BACKEND_ERROR", metadata={"endpoint": ep.name}))

    def _finish(self, ep: Endpoint, call: _Call, sub: ChatRequest, req: ChatRequest,
                st: _StreamState) -> Completion:
        out = Completion(text=st.text, finish_reason=st.finish_reason or "stop",
                         model=call.params["model"], endpoint=ep.name)
        if call.tools is not None:
            content, out.tool_calls, out.finish_reason = emulated_tools.parse(
                call.tools, st.buffer, out.finish_reason, ep.name)
            out.text += content
        else:
            out.tool_calls = [_tool_call(p["id"], p["name"], p["arguments"])
                              for _, p in sorted(st.tool_parts.items())]
        if out.finish_reason == "preempted" or st.usage is None:
            # The backend reports usage only at the end of a stream; a slice
            # stops before it. Prompt tokens come with the run that finishes.
            out.completion_tokens = req.resume_tokens + st.new_tokens
        else:
            _account(out, sub, st.usage)
        return out

    async def probe(self, ep: Endpoint, timeout: float = 2.0) -> bool:
        return await probe(ep, timeout)

    async def probe_due(self) -> None:
        """Probe the endpoints that failed their last probe (or were never
        probed) or that a call marked down, and the others every
        PROBE_UP_SECONDS. Background probes never open a circuit (that is for
        what calls see); one that succeeds closes it, so a server that came
        back takes calls without a call having to find out first."""
        now = time.monotonic()
        due = [ep for ep in self.endpoints
               if not ep.reachable or not ep.healthy(now) or now - ep.probed_at >= PROBE_UP_SECONDS]
        await asyncio.gather(*(probe(ep, PROBE_TIMEOUT_SECONDS, trip=False) for ep in due))

    async def watch(self) -> None:
        """Keep endpoint health current while idle: `probe_due` every
        PROBE_DOWN_SECONDS, until cancelled."""
        while True:
            await asyncio.sleep(PROBE_DOWN_SECONDS)
            await self.probe_due()


async def probe(ep: Endpoint, timeout: float = 2.0, *, trip: bool = True) -> bool:
    """Whether an endpoint answers /models with our credentials now; the
    reason it does not lands in `ep.last_error`, the answer in `ep.reachable`.
    An unreachable endpoint is marked down unless `trip` is False."""
    ep.probed_at = time.monotonic()
    try:
        await asyncio.wait_for(_list_models(ep, timeout), timeout)
    except openai.APIStatusError as exc:
        ep.last_error = map_error(exc, ep).message
        # It answered: reachable. Only an auth failure makes it unusable.
        ep.reachable = exc.status_code not in (401, 403)
        return ep.reachable
    except Exception as exc:  # noqa: BLE001 - any other failure means unreachable
        why = f"unreachable: {type(exc).__name__}: {_scrub(str(exc), ep)[:200]}"
        if trip:
            ep.mark_down(why)
        else:
            ep.last_error = why
        ep.reachable = False
        return False
    ep.mark_up()
    ep.reachable = True
    return True


async def _list_models(ep: Endpoint, timeout: float) -> None:
    """GET /models, sent once more on a new connection when the kept-alive
    one it went out on was dropped unanswered: servers close idle ones after
    a few seconds, and one closed just as the check was sent says nothing
    about the server's health."""
    try:
        await ep.client.models.list(timeout=timeout)
    except openai.APIConnectionError as exc:
        if isinstance(exc, openai.APITimeoutError) or _refused(exc):
            raise
        await ep.client.models.list(timeout=timeout)  # the pool has let the dropped connection go


async def _post_chat(client: openai.AsyncOpenAI, params: dict[str, Any], timeout: float | None,
                     stream: bool = False):
    """POST /chat/completions with the client's transport, retries off, auth
    and response types. `chat.completions.create` would first walk every
    message through openai's typed-dict transform, a third of llm_core's CPU
    per call (py-spy, 256 callers); our params are plain JSON already."""
    body = {**params, "stream": True} if stream else params
    # A reply, and each chunk of a stream, as parsed JSON (cast_to=object),
    # not openai's response models: building those was the next largest part
    # of that CPU (about a fifth of it, bench/llm_core_cpu.py).
    return await client.post("/chat/completions", body=body, cast_to=object,
                             options=make_request_options(timeout=timeout, security={"bearer_auth": True}),
                             stream=stream, stream_cls=openai.AsyncStream[object])


def _spanned(attempt: Callable[[Endpoint, float | None], Awaitable[T]], req: ChatRequest
             ) -> Callable[[Endpoint, float | None], Awaitable[T]]:
    """`attempt` in a span per call to an endpoint ("chat MODEL"): a
    Completion ends it; a stream opener's (endpoint, _Call, ...) keeps it
    open on the _Call until the stream is read (_stream_read)."""
    async def spanned(ep: Endpoint, timeout: float | None) -> T:
        span = tracing.tracer.start_span(f"chat {req.model}", kind=trace.SpanKind.CLIENT, attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": req.model, "aios.endpoint": ep.name,
            "aios.base_url": ep.config.base_url, "aios.resumed_tokens": req.resume_tokens})
        try:
            result = await attempt(ep, timeout)
        except BaseException as exc:
            _failed(span, exc)
            span.end()
            raise
        if isinstance(result, Completion):
            if span.is_recording():
                span.set_attributes({
                    "gen_ai.response.model": result.model, "gen_ai.response.finish_reasons": [result.finish_reason],
                    "gen_ai.usage.input_tokens": result.prompt_tokens,
                    "gen_ai.usage.output_tokens": result.completion_tokens})
            span.end()
        else:
            result[1].span = span
        return result
    return spanned


def _failed(span, exc: BaseException) -> None:
    if not span.is_recording():
        return
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        span.set_attribute("aios.cancelled", True)
    elif isinstance(exc, errors.AiosError):
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"{exc.code}: {exc.message}"))
    else:  # a backend's own exception: its type only (its text may carry a URL or key)
        span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))


def _first_token(span, seconds: float) -> None:
    if span is not None and span.is_recording():
        span.set_attribute("aios.ttft_ms", round(seconds * 1000, 3))
        span.add_event("first token")


def _stream_read(span, outcome: str, st: "_StreamState") -> None:
    """End a streamed attempt's span, as the stream ended."""
    if span is None:
        return
    if span.is_recording():
        span.set_attribute("aios.outcome", outcome)
        if st.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [st.finish_reason])
        if st.usage is not None:
            span.set_attributes({"gen_ai.usage.input_tokens": st.usage.get("prompt_tokens") or 0,
                                 "gen_ai.usage.output_tokens": st.usage.get("completion_tokens") or 0})
        if outcome == CANCELLED:
            span.set_attribute("aios.cancelled", True)
        elif outcome != OK:
            span.set_status(trace.Status(trace.StatusCode.ERROR, outcome))
    span.end()


def _validate(req: ChatRequest) -> None:
    if req.resume_text and req.constrained:
        raise errors.InvalidArgument(
            "resume applies to free text only: output under response_format or tools starts over",
            field="resume")
    if req.resume_tokens < 0:
        raise errors.InvalidArgument("resume.completion_tokens must not be negative",
                                     field="resume.completion_tokens")


def _nothing_left(req: ChatRequest) -> Completion | None:
    """A resumed generation whose snapshot already used up max_tokens."""
    if req.max_tokens is None or req.resume_tokens < req.max_tokens:
        return None
    return Completion(text=req.resume_text, finish_reason="length", completion_tokens=req.resume_tokens)


def _tool_call(call_id: str | None, name: str, arguments: str | None) -> dict[str, str]:
    return {"id": call_id or emulated_tools.new_call_id(), "name": name, "arguments": arguments or "{}"}


def _account(out: Completion, req: ChatRequest, usage) -> None:
    """Token counts of the whole generation, a resumed snapshot counted once."""
    if not isinstance(usage, dict):  # none reported
        return
    new = usage.get("completion_tokens") or 0
    out.completion_tokens = req.resume_tokens + new
    # The snapshot was sent back as prompt; it is already counted as output.
    out.prompt_tokens = max(0, (usage.get("prompt_tokens") or 0) - req.resume_tokens)
    details = usage.get("prompt_tokens_details")
    out.cached_tokens = (details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
