"""Quotas: budgets and rate limits per agent and group, enforced at admission.

An administrator sets limits on a subject, "agent:NAME" or "group:NAME":
LLM requests, prompt, completion or all tokens, tool calls and cost per
window; LLM calls in flight at once; memory records held. An agent is bound
by its own limits and by each of its groups': the tightest decides. A
group's windowed and parallel limits are shared by its members (their calls
count together); its memory-records limit binds each member on its own.

Admission (the kernel's last check before its queues) refuses a call that
would pass a hard limit: RESOURCE_EXHAUSTED with a QuotaFailure naming each
limit and RetryInfo for when the window resets (none when waiting cannot
help). Past a soft limit the call goes on and the kernel warns once per
window (a log line, a metric and an audit event). A call already running is
never cut.

Counting: requests and tool calls when admitted; tokens and cost as each run
of an LLM call ends, at its real usage. Until then an admitted LLM call holds
an estimate (BYTES_PER_TOKEN bytes of prompt a token, and max_tokens or
COMPLETION_ESTIMATE completion tokens), so calls admitted together cannot
overrun a window between them; the real usage replaces the estimate. Windows
are fixed and aligned to the Unix epoch: a minute window resets at every full
minute, a day window at 00:00 UTC. A limit counts from when it is set.

Counts live in the kernel's database (the journal's SQLite file or
PostgreSQL), so they survive restarts and kernels sharing one database share
them; each kernel re-reads the limits every DEFINITIONS_TTL seconds. The
estimates held and the calls in flight are per process.
"""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from google.protobuf.duration_pb2 import Duration

from aios.sdk import quota as sdk_quota
from services.runtime import errors, logs, sql
from services.scheduler.db import Database

log = logs.get("quotas")

# Metric names, as the CLI and error details spell them.
REQUESTS = "requests"
PROMPT_TOKENS = "prompt_tokens"
COMPLETION_TOKENS = "completion_tokens"
TOKENS = "tokens"
TOOL_CALLS = "tool_calls"
COST = "cost"
PARALLEL = "parallel"
MEMORY_RECORDS = "memory_records"
METRICS = (REQUESTS, PROMPT_TOKENS, COMPLETION_TOKENS, TOKENS, TOOL_CALLS, COST, PARALLEL, MEMORY_RECORDS)
WINDOWLESS = (PARALLEL, MEMORY_RECORDS)
# Counted when a call is admitted, and when its runs report usage.
AT_ADMISSION = (REQUESTS, TOOL_CALLS)
BY_USAGE = (PROMPT_TOKENS, COMPLETION_TOKENS, TOKENS, COST)

BYTES_PER_TOKEN = 4
COMPLETION_ESTIMATE = 256
DEFINITIONS_TTL = 5.0
MAX_LIMITS = 32
# A call refused for parallel calls retries after about this long.
PARALLEL_RETRY_SECONDS = 1.0
GROUPS_REMEMBERED = 100_000

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS quota_limits (
    subject TEXT NOT NULL,
    metric TEXT NOT NULL,
    window_seconds INTEGER NOT NULL,
    soft INTEGER NOT NULL,
    max_value REAL NOT NULL,
    PRIMARY KEY (subject, metric, window_seconds, soft)
);
CREATE TABLE IF NOT EXISTS quota_counts (
    subject TEXT NOT NULL,
    metric TEXT NOT NULL,
    window_seconds INTEGER NOT NULL,
    window_start BIGINT NOT NULL,
    used REAL NOT NULL,
    PRIMARY KEY (subject, metric, window_seconds, window_start)
)
"""

_ADD = ("INSERT INTO quota_counts (subject, metric, window_seconds, window_start, used) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (subject, metric, window_seconds, window_start)"
        " DO UPDATE SET used = quota_counts.used + excluded.used")


@dataclass(frozen=True)
class Limit:
    metric: str
    window: int  # seconds; 0 for parallel calls and memory records
    max: float
    soft: bool = False

    def spec(self) -> str:
        """As `aios quota set` takes it, e.g. soft:cost=5/day (the SDK's spelling)."""
        out = f"{'soft:' if self.soft else ''}{self.metric}={sdk_quota.format_max(self.max)}"
        return f"{out}/{sdk_quota.format_window(Duration(seconds=self.window))}" if self.window else out


def window_start(now: float, window: int) -> int:
    return int(now // window) * window


@dataclass
class Usage:
    """One limit of a subject and what is used of it now."""

    subject: str
    limit: Limit
    used: float
    reset_wall: float = 0.0  # when the window resets; 0 = no window

    @property
    def remaining(self) -> float:
        return max(0.0, self.limit.max - self.used)


@dataclass
class Hold:
    """What an admitted call holds against quotas until it ends."""

    # The subjects' limits in force when it was admitted.
    bound: list[tuple[str, Limit]]
    # What it needs of each metric (estimates for usage-counted ones).
    need: dict[str, float]
    # Records of the owner's memory, asked for before admission.
    memory_count: int = 0
    memory_owner: tuple[str, str] | None = None
    # Set once admitted: (subject, metric, window) -> estimate still held.
    reserved: dict[tuple[str, str, int], float] = field(default_factory=dict)
    parallel: list[str] = field(default_factory=list)
    active: bool = False


def subjects_of(agent: str, groups) -> list[str]:
    return [f"agent:{agent}", *(f"group:{g}" for g in groups)]


def check_subject(subject: str) -> None:
    kind, _, name = subject.partition(":")
    if kind not in ("agent", "group") or not _NAME.match(name):
        raise errors.InvalidArgument(
            f"quota subject {subject!r} is not 'agent:NAME' or 'group:NAME' (letters, digits, '_', '.', '-')",
            field="quota.subject")


def check_limits(limits: list[Limit]) -> None:
    if len(limits) > MAX_LIMITS:
        raise errors.InvalidArgument(f"{len(limits)} limits, over the maximum of {MAX_LIMITS}",
                                     field="quota.limits")
    seen = set()
    for i, lim in enumerate(limits):
        where = f"quota.limits[{i}]"
        if lim.metric not in METRICS:
            raise errors.InvalidArgument(f"{where}.metric must be set (one of {', '.join(METRICS)})",
                                         field=f"{where}.metric")
        if lim.metric in WINDOWLESS and lim.window:
            raise errors.InvalidArgument(f"{where}: {lim.metric} is a count at one moment and takes no window",
                                         field=f"{where}.window")
        if lim.metric not in WINDOWLESS and lim.window < 1:
            raise errors.InvalidArgument(f"{where}: {lim.metric} needs a window of at least one whole second",
                                         field=f"{where}.window")
        if not math.isfinite(lim.max) or lim.max < 0:
            raise errors.InvalidArgument(f"{where}.max must be a number of at least 0", field=f"{where}.max")
        key = (lim.metric, lim.window, lim.soft)
        if key in seen:
            raise errors.InvalidArgument(f"{where} repeats {lim.spec()}: one hard and one soft limit per "
                                         "metric and window", field=where)
        seen.add(key)


# (entry, subject, limit, used) -> None: told of a soft limit passed.
OnWarning = Callable[[object, str, Limit, float], None]


class Quotas:
    def __init__(self, db: Database, *, currency: str = "USD",
                 estimate_price: Callable[[str], tuple[float, float]] | None = None,
                 count_memories: Callable[[str, str], Awaitable[int]] | None = None,
                 on_warning: OnWarning | None = None, clock: Callable[[], float] = time.time) -> None:
        """`estimate_price(model)`: the highest (prompt, completion) price per
        million tokens over the model's endpoints; `count_memories(owner,
        tenant)`: the records an agent holds."""
        self.db = db
        sql.migrate(db.execute, "quotas", [SCHEMA], postgres=db.postgres)
        self.currency = currency
        self.estimate_price = estimate_price
        self.count_memories = count_memories
        self.on_warning = on_warning
        self.clock = clock
        self._limits: dict[str, list[Limit]] = {}
        self._loaded = -math.inf
        self._reserved: dict[tuple[str, str, int], float] = {}
        self._parallel: dict[str, int] = {}
        self._memory_pending: dict[tuple[str, str], int] = {}
        # (subject, limit, window start) of soft limits already warned of.
        self._warned: set[tuple[str, Limit, int]] = set()
        # Each agent's groups as its last call showed them (for listings).
        self.groups: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._pruned = 0.0

    # --- limits -------------------------------------------------------------

    def limits(self) -> dict[str, list[Limit]]:
        """Every subject's limits, re-read from the database every
        DEFINITIONS_TTL seconds (another kernel may have changed them)."""
        now = time.monotonic()
        if now - self._loaded >= DEFINITIONS_TTL:
            self._loaded = now
            limits: dict[str, list[Limit]] = {}
            for subject, metric, window, soft, top in self.db.execute(
                    "SELECT subject, metric, window_seconds, soft, max_value FROM quota_limits"
                    " ORDER BY subject, metric, window_seconds, soft").fetchall():
                limits.setdefault(subject, []).append(Limit(metric, int(window), float(top), bool(soft)))
            self._limits = limits
        return self._limits

    def set(self, subject: str, limits: list[Limit]) -> list[Limit]:
        """Replace a subject's limits (none: remove them)."""
        check_subject(subject)
        check_limits(limits)
        self.db.write("DELETE FROM quota_limits WHERE subject = ?", (subject,))
        for lim in limits:
            self.db.write("INSERT INTO quota_limits (subject, metric, window_seconds, soft, max_value)"
                          " VALUES (?, ?, ?, ?, ?)", (subject, lim.metric, lim.window, int(lim.soft), lim.max))
        self.limits()  # loaded copy, then this change on top
        if limits:
            self._limits[subject] = list(limits)
        else:
            self._limits.pop(subject, None)
        log.info("quota set", subject=subject, limits=[lim.spec() for lim in limits])
        return limits

    def bound(self, subjects) -> list[tuple[str, Limit]]:
        """The limits of these subjects, each with its subject."""
        limits = self.limits()
        return [(s, lim) for s in subjects for lim in limits.get(s, ())]

    # --- admission ------------------------------------------------------------

    async def prepare(self, entry, groups) -> None:
        """Before admission: note what the call needs of the limits that bind
        its agent (and ask memory how many records the agent holds, when a
        limit on them applies). Nothing is counted yet."""
        self.groups[entry.agent] = tuple(groups)
        self.groups.move_to_end(entry.agent)
        while len(self.groups) > GROUPS_REMEMBERED:
            self.groups.popitem(last=False)
        bound = self.bound(subjects_of(entry.agent, groups))
        if not bound:
            return
        need = self._need(entry)
        bound = [(s, lim) for s, lim in bound if need.get(lim.metric)]
        if not bound:
            return
        hold = Hold(bound=bound, need=need)
        if need.get(MEMORY_RECORDS):
            req = _memory_request(entry)
            hold.memory_owner = (req.owner, req.tenant)
            hold.memory_count = await self.count_memories(req.owner, req.tenant) if self.count_memories else 0
        entry.hold = hold

    def admit(self, entry) -> None:
        """Refuse the call past a hard limit, else count it (requests, tool
        calls), hold its estimates and warn of soft limits it passes. No
        await in here: nothing changes between the check and the count."""
        hold = entry.hold
        if hold is None or hold.active:
            return
        now = self.clock()
        counts = self._counts({s for s, _ in hold.bound}, now)
        memory = hold.memory_count + self._memory_pending.get(hold.memory_owner, 0)
        over, soft = [], []
        for subject, lim in hold.bound:
            amount = hold.need[lim.metric]
            used = self._used(subject, lim, counts, memory)
            if used + amount > lim.max:
                (soft if lim.soft else over).append((subject, lim, used, amount))
        if over:
            entry.hold = None
            raise self._refusal(over, now)
        for subject, lim in _distinct(hold.bound):
            key = (subject, lim.metric, lim.window)
            amount = hold.need[lim.metric]
            if lim.metric in AT_ADMISSION:
                self.db.write(_ADD, (subject, lim.metric, lim.window, window_start(now, lim.window), amount))
            elif lim.metric in BY_USAGE:
                hold.reserved[key] = amount
                _add(self._reserved, key, amount)
            elif lim.metric == PARALLEL:
                hold.parallel.append(subject)
                _add(self._parallel, subject, 1)
        if hold.memory_owner is not None:
            _add(self._memory_pending, hold.memory_owner, hold.need[MEMORY_RECORDS])
        hold.active = True
        for subject, lim, used, amount in soft:
            self._warn(entry, subject, lim, used + amount, now)
        self._maybe_prune(now)

    def resume(self, entry) -> None:
        """A call recovered from the journal (admitted by an earlier process):
        its usage is counted against its agent's limits, nothing is held."""
        bound = [(s, lim) for s, lim in self.bound(subjects_of(entry.agent, ())) if lim.metric in BY_USAGE]
        if bound:
            entry.hold = Hold(bound=bound, need={}, active=True)

    def charge(self, entry, prompt: int, completion: int, cost: float) -> None:
        """Count what one run of an admitted LLM call used; it replaces as
        much of the call's estimate."""
        hold = entry.hold
        if hold is None or not hold.active:
            return
        used = {PROMPT_TOKENS: prompt, COMPLETION_TOKENS: completion, TOKENS: prompt + completion, COST: cost}
        now = self.clock()
        for subject, lim in _distinct(hold.bound):
            if lim.metric not in BY_USAGE:
                continue
            key = (subject, lim.metric, lim.window)
            amount = used[lim.metric]
            held = hold.reserved.get(key, 0.0)
            if held:
                take = min(held, amount)
                hold.reserved[key] = held - take
                _add(self._reserved, key, -take)
            if amount:
                self.db.write(_ADD, (subject, lim.metric, lim.window, window_start(now, lim.window), amount))

    def release(self, entry) -> None:
        """The call ended: what it still held goes back."""
        hold, entry.hold = entry.hold, None
        if hold is None or not hold.active:
            return
        for key, held in hold.reserved.items():
            _add(self._reserved, key, -held)
        for subject in hold.parallel:
            _add(self._parallel, subject, -1)
        if hold.memory_owner is not None:
            _add(self._memory_pending, hold.memory_owner, -hold.need[MEMORY_RECORDS])

    # --- what is used ---------------------------------------------------------

    async def usage(self, subjects, agent: str = "") -> list[Usage]:
        """The limits of these subjects, tightest first, with what is used of
        each now (memory records: `agent`'s own; none without an agent)."""
        bound = self.bound(subjects)
        memory = 0
        if agent and self.count_memories is not None and any(lim.metric == MEMORY_RECORDS for _, lim in bound):
            try:
                memory = await self.count_memories(agent, "")
            except errors.AiosError:
                pass  # memory is away: shown as none held
            memory += self._memory_pending.get((agent, ""), 0)
        now = self.clock()
        counts = self._counts({s for s, _ in bound}, now)
        out = []
        for s, lim in bound:
            used = self._used(s, lim, counts, memory)
            reset = window_start(now, lim.window) + lim.window if lim.window else 0.0
            out.append(Usage(s, lim, used, reset))
        out.sort(key=lambda u: (u.limit.soft, u.remaining / u.limit.max if u.limit.max else 0.0))
        return out

    def _counts(self, subjects, now: float) -> dict[tuple[str, str, int], float]:
        """Counts of the current windows of these subjects."""
        if not subjects:
            return {}
        marks = ", ".join("?" * len(subjects))
        rows = self.db.execute(
            "SELECT subject, metric, window_seconds, window_start, used FROM quota_counts"
            f" WHERE subject IN ({marks}) AND window_start + window_seconds > ?", (*subjects, int(now))).fetchall()
        return {(s, m, int(w)): float(u) for s, m, w, start, u in rows if int(start) == window_start(now, int(w))}

    def _used(self, subject: str, lim: Limit, counts, memory: float) -> float:
        """Used of a limit now: the window's count and the estimates held, the
        calls in flight, or `memory`, the records held and being added."""
        key = (subject, lim.metric, lim.window)
        if lim.metric == PARALLEL:
            return float(self._parallel.get(subject, 0))
        if lim.metric == MEMORY_RECORDS:
            return float(memory)
        return counts.get(key, 0.0) + self._reserved.get(key, 0.0)

    def _need(self, entry) -> dict[str, float]:
        if entry.kind == "tool":
            return {TOOL_CALLS: 1.0}
        if entry.kind == "memory":
            req = _memory_request(entry)
            if req is None or req.owner != entry.agent:
                return {}
            n = len(req.memories) if entry.syscall.memory.WhichOneof("op") == "batch_add" else 1
            return {MEMORY_RECORDS: float(n)}
        if entry.kind == "embed":
            prompt = float(math.ceil(sum(len(t.encode()) for t in entry.syscall.embed.inputs) / BYTES_PER_TOKEN))
            return {REQUESTS: 1.0, PARALLEL: 1.0, PROMPT_TOKENS: prompt, COMPLETION_TOKENS: 0.0, TOKENS: prompt,
                    COST: 0.0}
        if entry.kind != "llm":
            return {}
        call = entry.syscall.llm
        prompt = float(prompt_estimate(call))
        completion = float(call.max_tokens if call.HasField("max_tokens") else COMPLETION_ESTIMATE)
        prompt_price, completion_price = self.estimate_price(call.model) if self.estimate_price else (0.0, 0.0)
        return {REQUESTS: 1.0, PARALLEL: 1.0, PROMPT_TOKENS: prompt, COMPLETION_TOKENS: completion,
                TOKENS: prompt + completion, COST: (prompt * prompt_price + completion * completion_price) / 1e6}

    def _refusal(self, over, now: float) -> errors.ResourceExhausted:
        waits = []
        for _, lim, _, amount in over:
            if amount > lim.max or lim.metric == MEMORY_RECORDS:
                waits = None  # waiting does not make room: never with this call, or records stay
                break
            waits.append(window_start(now, lim.window) + lim.window - now if lim.window else PARALLEL_RETRY_SECONDS)
        quota = [(s, f"{lim.spec()}: {_num(used)} used, this call needs {_num(amount)}")
                 for s, lim, used, amount in over]
        first_subject, first, used, amount = over[0]
        if amount > first.max:
            hint = (" (lower max_tokens, or send less)" if first.metric in BY_USAGE else "")
            why = f"this call alone needs {_num(amount)}, over the limit{hint}"
        else:
            why = f"{_num(used)} used"
        message = f"quota of {first_subject} exceeded: {first.spec()}, {why}"
        if len(over) > 1:
            message += f" (and {len(over) - 1} more limit{'s' if len(over) > 2 else ''})"
        retry = max(waits) if waits else None
        if retry is not None:
            message += f"; room again in {retry:.1f} s"
        return errors.ResourceExhausted(
            message, reason="QUOTA_EXCEEDED", retry_after=None if retry is None else max(0.05, retry),
            quota=quota, metadata={"subject": first_subject, "limit": first.spec()})

    def _warn(self, entry, subject: str, lim: Limit, used: float, now: float) -> None:
        mark = (subject, lim, window_start(now, lim.window) if lim.window else 0)
        if mark in self._warned:
            return
        self._warned.add(mark)
        log.warning("soft quota limit passed", subject=subject, limit=lim.spec(), used=round(used, 6),
                    syscall=entry.id)
        if self.on_warning is not None:
            self.on_warning(entry, subject, lim, used)

    def _maybe_prune(self, now: float) -> None:
        """Drop counts of windows that ended, and warnings of those (each minute)."""
        if now - self._pruned < 60.0:
            return
        self._pruned = now
        self.db.write("DELETE FROM quota_counts WHERE window_start + window_seconds <= ?", (int(now),))
        self._warned = {m for m in self._warned if not m[1].window or m[2] + m[1].window >= now}


def _distinct(bound):
    """The limits as counted: a hard and a soft limit on one metric and
    window of a subject count once."""
    seen = set()
    for subject, lim in bound:
        key = (subject, lim.metric, lim.window)
        if key not in seen:
            seen.add(key)
            yield subject, lim


def _add(counts: dict, key, amount: float) -> None:
    """Add to an in-process count, dropping it at zero (floats: within 1e-9)."""
    left = counts.get(key, 0) + amount
    if left > 1e-9:
        counts[key] = left
    else:
        counts.pop(key, None)


def prompt_estimate(call) -> int:
    """Prompt tokens an LLM call is taken to need before the engine counts
    them: its messages and tool definitions at BYTES_PER_TOKEN bytes a token."""
    size = sum(m.ByteSize() for m in call.messages) + sum(t.ByteSize() for t in call.tools)
    return math.ceil(size / BYTES_PER_TOKEN)


def _memory_request(entry):
    call = entry.syscall.memory
    op = call.WhichOneof("op")
    return getattr(call, op) if op in ("add", "batch_add") else None


def cost_of(prices, prompt: int, completion: int, cached: int) -> float:
    """What a call cost at an endpoint's prices (per million tokens)."""
    if prices is None:
        return 0.0
    cached_price = prices.cached_prompt if prices.HasField("cached_prompt") else prices.prompt
    return ((prompt - cached) * prices.prompt + cached * cached_price + completion * prices.completion) / 1e6


def _num(x: float) -> str:
    return f"{x:.6g}"
