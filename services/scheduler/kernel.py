"""The kernel's scheduling core: admission, run queues per resource, dispatch
within each resource's capacity, preemption, cancellation and deadlines.

Event-driven: a call is dispatched when it is queued or when a slot frees,
never by polling. Waiting happens here, where the policy orders it, and no
more calls are sent to a backend than its capacity (about what the engine
runs in one batch), so the engine's own FIFO stays empty.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from opentelemetry import context as otel_context
from opentelemetry import trace

from services.runtime import context as rctx
from services.runtime import errors, logs, tracing
from services.scheduler import events as ev
from services.scheduler import queues, quotas, records
from services.scheduler.cache import CacheGate
from services.scheduler.journal import Recovered
from services.scheduler.queues import PolicySettings
from services.scheduler.table import (
    AWAITING_CONFIRMATION, CANCELLED, FAILED, PREEMPTED, QUEUED, RUNNING, SUCCEEDED, Entry, ProcessTable,
    runs_anew,
)

log = logs.get("kernel")

SESSIONS_REMEMBERED = 100_000


@dataclass
class Outcome:
    """What running an entry once produced."""

    output: object = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    # A generation stopped at its slice: the text and tokens so far.
    preempted: bool = False
    snapshot_text: str = ""
    snapshot_tokens: int = 0


# runs one entry once: (entry, slice_tokens) -> Outcome
Runner = Callable[[Entry, int], Awaitable[Outcome]]


@dataclass
class Limits:
    # Calls of one agent queued or running at once.
    per_agent_outstanding: int = 64
    # Calls waiting in one resource's queue.
    queue_capacity: int = 10_000
    default_capacity: int = 8


# Load shedding: a call's wait is estimated once this many calls of its
# resource finished; the estimate follows a moving average of their run times.
SHED_AFTER_SAMPLES = 5
SERVICE_TIME_WEIGHT = 0.2


class Resource:
    def __init__(self, name: str, capacity: int, queue, gate: CacheGate | None = None) -> None:
        self.name = name
        self.capacity = capacity
        self.running = 0
        self.queue = queue
        # An LLM resource whose engines cache prefixes: new agent runs wait
        # for room in the caches (services/scheduler/cache.py).
        self.gate = gate
        self.gate_timer: asyncio.TimerHandle | None = None
        # Seconds a call of this resource runs, on average (exponentially
        # weighted), and how many runs that average has seen.
        self.service_time = 0.0
        self.samples = 0

    @property
    def waiting(self) -> int:
        """Calls queued, including those held for room in the caches."""
        return len(self.queue) + (self.gate.held_live if self.gate is not None else 0)

    def observe(self, seconds: float) -> None:
        self.samples += 1
        w = 1.0 if self.samples == 1 else SERVICE_TIME_WEIGHT
        self.service_time += w * (seconds - self.service_time)

    def expected_wait(self) -> float | None:
        """Seconds a call queued now waits before it starts, from the rate
        the resource has been serving at (None until that is known)."""
        if self.samples < SHED_AFTER_SAMPLES:
            return None
        if self.running + self.waiting < self.capacity:
            return 0.0
        # Calls ahead of it start as slots free; a slot frees every
        # service_time / capacity seconds on average.
        ahead = self.waiting + self.running - self.capacity + 1
        return ahead * self.service_time / self.capacity


class Kernel:
    def __init__(self, runner: Runner, settings: PolicySettings, limits: Limits,
                 history: int = 10_000, capacity_of: Callable[[str], int] | None = None,
                 observer=None, journal=None, quotas=None, prices=None,
                 cache_of: Callable[[str], int] | None = None, cache_idle_seconds: float = 0.5) -> None:
        self.runner = runner
        self.settings = settings
        self.limits = limits
        self.table = ProcessTable(history)
        self.resources: dict[str, Resource] = {}
        self._capacity_of = capacity_of or (lambda name: limits.default_capacity)
        # Tokens the prefix caches of an LLM resource's engines hold (0 or
        # None: no cache-aware admission), and how long an idle run counts.
        self._cache_of = cache_of
        self.cache_idle_seconds = cache_idle_seconds
        # Told of finished and refused syscalls (metrics): finished(entry), rejected(reason).
        self.observer = observer
        # The durable journal (services/scheduler/journal.py), or None.
        self.journal = journal
        # Budgets and rate limits (services/scheduler/quotas.py), or None;
        # prices(model, endpoint) -> aios.llm.v1.Prices or None, for cost.
        self.quotas = quotas
        self.prices = prices
        # Set when the process stops: callers cut off then do not cancel
        # their calls, which stay unfinished for the next kernel process.
        self.stopping = False
        # Fair share: weighted tokens served per agent.
        self.counters: dict[str, float] = {}
        # Agent-aware: tokens attained and start time per agent run.
        self.attained: OrderedDict[str, list[float]] = OrderedDict()
        self._outstanding: dict[str, int] = {}

    # --- policy -----------------------------------------------------------

    def _attained_key(self, session: str) -> tuple:
        served, started = self.attained.get(session, (0.0, time.monotonic()))
        return (served, started)

    def _new_queue(self):
        return queues.make_queue(self.settings, self.counters, self._attained_key)

    def set_policy(self, settings: PolicySettings) -> None:
        """Switch policy at runtime: every waiting call is re-queued in the new order."""
        if settings.kind not in queues.POLICIES:
            raise errors.InvalidArgument(f"unknown policy {settings.kind!r}", field="policy.kind")
        self.settings = settings
        for res in self.resources.values():
            waiting = res.queue.entries()
            res.queue = self._new_queue()
            for e in waiting:
                res.queue.push(e)
        log.info("policy switched", policy=settings.kind)

    def resource(self, name: str) -> Resource:
        res = self.resources.get(name)
        if res is None:
            budget = self._cache_of(name) if self._cache_of is not None and name.startswith("llm:") else 0
            gate = CacheGate(budget, self.cache_idle_seconds) if budget else None
            res = self.resources[name] = Resource(name, max(1, self._capacity_of(name)), self._new_queue(), gate)
        return res

    def resize(self) -> None:
        """Read every queue's capacity again (this replica's share changed):
        a larger one starts waiting calls now, a smaller one lets running
        calls finish and starts fewer."""
        for res in self.resources.values():
            capacity = max(1, self._capacity_of(res.name))
            if capacity != res.capacity:
                log.info("capacity changed", resource=res.name, capacity=capacity, was=res.capacity)
                res.capacity = capacity
                self._pump(res)

    # --- admission --------------------------------------------------------

    def park(self, entry: Entry, pending: list[tuple] = (), *, recovered: bool = False) -> Entry:
        """Enter an entry in the process table while it waits for a person's
        confirmation (not queued, but counted against the agent's limit);
        returns the first entry of a repeated request id instead. `pending`
        (the confirmations it needs) is journaled, so a restarted kernel
        parks it again."""
        if not recovered:
            first = self.first_of(entry)
            if first is not None:
                return first
            self._journal_check()
        self._reserve(entry, limit=not recovered)
        entry.state = AWAITING_CONFIRMATION
        self.table.add(entry)
        if self.journal is not None and not recovered:
            self.journal.accepted(entry, pending)
        return entry

    def refuse(self, entry: Entry, err: errors.AiosError) -> None:
        """A parked entry that will not run (denied, expired, cancelled)."""
        self._complete(entry, None, CANCELLED if isinstance(err, errors.Cancelled) else FAILED, err)

    def first_of(self, entry: Entry) -> Entry | None:
        """The earlier entry in this process of the agent with this entry's
        request id, if any (the journal was read at intake, see earlier());
        INVALID_ARGUMENT when that one asked for something else (a request id
        names one request, never a second one)."""
        if not entry.request_id:
            return None
        return self._same_call(entry, self.table.by_request(entry.agent, entry.request_id))

    def earlier(self, entry: Entry) -> tuple[Entry | None, Recovered | None]:
        """first_of(), then the journal, in one read: (the earlier entry, None)
        when this process has it or the journal has it finished; (None, the
        row) when the journal has it unfinished (another replica's, or a dead
        one's, services/scheduler/cluster.py); (None, None) when it runs anew."""
        first = self.first_of(entry)
        if first is not None or not entry.request_id or self.journal is None:
            return first, None
        # Finished before this process started, fell out of the history, or
        # held by another kernel replica.
        found = self.journal.lookup(entry.agent, entry.request_id)
        if isinstance(found, Recovered):
            return None, found
        if found is None or runs_anew(found):
            return None, None
        self.table.remember(found)
        return self._same_call(entry, found), None

    @staticmethod
    def _same_call(entry: Entry, first: Entry | None) -> Entry | None:
        if first is None or first is entry:
            return None
        if first.fingerprint and entry.fingerprint and first.fingerprint != entry.fingerprint:
            raise errors.InvalidArgument(
                f"request id {entry.request_id!r} was already used by syscall {first.id} for a different "
                f"call ({first.resource}); a retry must repeat the same call, a new call needs a new id",
                reason="REQUEST_ID_REUSED", field="syscall.request_id",
                metadata={"syscall_id": first.id})
        return first


    def _reserve(self, entry: Entry, *, limit: bool = True) -> None:
        """Count the entry against its agent's limit; RESOURCE_EXHAUSTED past
        it (`limit`: a call recovered from the journal was let in before)."""
        outstanding = self._outstanding.get(entry.agent, 0)
        if limit and outstanding >= self.limits.per_agent_outstanding:
            self._rejected("AGENT_LIMIT")
            raise errors.ResourceExhausted(
                f"agent {entry.agent!r} has {outstanding} syscalls queued or running "
                f"(limit {self.limits.per_agent_outstanding})",
                reason="AGENT_LIMIT", retry_after=self._retry_hint(entry.resource),
            )
        self._outstanding[entry.agent] = outstanding + 1

    def admit(self, entry: Entry) -> Entry:
        """Queue a new (or parked and now approved) entry, or return the first
        one of a repeated request id. Past a limit: RESOURCE_EXHAUSTED, and a
        parked entry is refused (nothing stays half-accepted)."""
        first = self.first_of(entry)
        if first is not None:
            return first
        res = self.resource(entry.resource)
        parked = entry.state == AWAITING_CONFIRMATION
        try:
            self._journal_check()
            self._shed(entry, res)
            if res.waiting >= self.limits.queue_capacity:
                self._rejected("QUEUE_FULL")
                raise errors.ResourceExhausted(
                    f"the {entry.resource} queue is full ({self.limits.queue_capacity} waiting)",
                    reason="QUEUE_FULL", retry_after=self._retry_hint(entry.resource),
                )
            if not parked:  # a parked entry holds its place against the agent's limit
                self._reserve(entry)
            if self.quotas is not None:
                # Last: a call refused for anything else is not counted.
                try:
                    self.quotas.admit(entry)
                except errors.AiosError as err:  # over a quota, or its database unreachable
                    if isinstance(err, errors.ResourceExhausted):
                        self._rejected("QUOTA_EXCEEDED")
                    if not parked:
                        self._outstanding[entry.agent] -= 1
                    raise
        except errors.AiosError as err:
            if parked:
                self.refuse(entry, err)
            raise
        entry.state = QUEUED
        if not parked:
            self.table.add(entry)
        if self.journal is not None:
            # Written before it can run: a restarted kernel runs it again.
            if parked:
                self.journal.approved(entry)
            else:
                self.journal.accepted(entry)
        if session := entry.run:
            if session not in self.attained:
                self.attained[session] = [0.0, time.monotonic()]
                while len(self.attained) > SESSIONS_REMEMBERED:
                    self.attained.popitem(last=False)
        self._enqueue(entry, res)
        self._pump(res)
        return entry

    def lost(self, entry: Entry) -> None:
        """End a call read back from the journal whose body streamed through
        its caller's call (an upload, a download): that call ended with the
        process that had it, so it cannot run again. UNAVAILABLE: a retry of
        its request id runs anew (table.runs_anew)."""
        self._reserve(entry, limit=False)
        self.table.add(entry)
        entry.body_ended = True  # unknown; the message below says what is known
        self._complete(entry, None, FAILED, errors.Unavailable(
            "the call streamed through a connection to a kernel process that ended before it finished; "
            "retry with the same request id", reason="STREAM_LOST"))

    def readmit(self, entry: Entry) -> None:
        """Queue again a call a previous kernel process accepted and did not
        finish (from the journal): no limits, nothing journaled anew."""
        self._reserve(entry, limit=False)
        if self.quotas is not None:
            self.quotas.resume(entry)
        entry.state = QUEUED
        self.table.add(entry)
        res = self.resource(entry.resource)
        self._enqueue(entry, res)
        self._pump(res)

    def _journal_check(self) -> None:
        """UNAVAILABLE while the journal cannot be written: nothing is let in
        that a restarted kernel would not know of."""
        if self.journal is None:
            return
        try:
            self.journal.check()
        except errors.Unavailable:
            self._rejected("DATABASE_UNAVAILABLE")
            raise

    def _rejected(self, reason: str) -> None:
        if self.observer is not None:
            self.observer.rejected(reason)

    def _shed(self, entry: Entry, res: Resource) -> None:
        """RESOURCE_EXHAUSTED at once for a call that would start only after
        its deadline, rather than DEADLINE_EXCEEDED once that passed."""
        if entry.deadline is None:
            return
        wait = res.expected_wait()
        left = entry.deadline - time.monotonic()
        if wait is None or wait <= left:
            return
        self._rejected("DEADLINE_UNREACHABLE")
        raise errors.ResourceExhausted(
            f"the {res.name} queue would reach this call in about {wait:.1f} s ({res.waiting} waiting, "
            f"{res.running} running, {res.service_time:.2f} s per call on {res.capacity} slots), after its "
            f"deadline in {max(0.0, left):.1f} s: retry later or with a longer deadline",
            reason="DEADLINE_UNREACHABLE", retry_after=min(60.0, max(0.1, wait - left)),
            metadata={"expected_wait_seconds": f"{wait:.3f}", "deadline_seconds": f"{max(0.0, left):.3f}"})

    def _retry_hint(self, resource: str) -> float:
        # A rough wait: the queue ahead drained at the resource's width, at
        # one call a second per slot. Enough to spread retries, no promise.
        res = self.resources.get(resource)
        if res is None:
            return 1.0
        return min(30.0, max(0.5, res.waiting / max(1, res.capacity)))

    def _enqueue(self, entry: Entry, res: Resource) -> None:
        entry.queued = True
        entry.enqueue_time = time.monotonic()
        entry.queue_wall = entry.queue_wall or time.time()
        entry.queued_at = time.monotonic()
        position = res.waiting
        res.queue.push(entry)
        entry.publish(ev.Queued, position=position)

    # --- dispatch ---------------------------------------------------------

    def _next(self, res: Resource):
        """The next call to start, in policy order. With a cache gate, a call
        of an active run goes before one that would start a new run, which
        waits (held, in policy order) until the caches have room for it (the
        room follows what the caches keep: cache.py)."""
        gate = res.gate
        if gate is None:
            return res.queue.pop()
        now = time.monotonic()
        head = gate.first_held()
        if head is not None:
            tokens = _prompt_tokens(head)
            if res.running == 0 or gate.fits(tokens, now):
                gate.start(head.run, tokens)
                return gate.take()
        while (entry := res.queue.pop()) is not None:
            tokens = _prompt_tokens(entry)
            if gate.active(entry.run, now) or (head is None and (res.running == 0 or gate.fits(tokens, now))):
                gate.start(entry.run, tokens)
                return entry
            gate.hold(entry)
            head = head or entry
        if head is not None and res.gate_timer is None:
            # Idle runs stop counting after a while, with no call ending to
            # say so: look again then.
            def again() -> None:
                res.gate_timer = None
                self._pump(res)
            res.gate_timer = asyncio.get_running_loop().call_later(gate.idle, again)
        return None

    def _gate_end(self, entry: Entry, res: Resource | None) -> None:
        if res is not None and res.gate is not None:
            context = max(entry.prompt_tokens, _prompt_tokens(entry)) + entry.completion_tokens
            # What the engine found cached is known for a call that finished.
            cached = entry.cached_tokens if entry.prompt_tokens else -1
            res.gate.end(entry.run, context, cached_tokens=cached)

    def _pump(self, res: Resource) -> None:
        while res.running < res.capacity:
            entry = self._next(res)
            if entry is None:
                return
            entry.queued = False
            entry.run_started = time.monotonic()
            _queue_span(entry)
            res.running += 1
            entry.waiting += time.monotonic() - entry.queued_at
            resumed = entry.state == PREEMPTED
            entry.state = RUNNING
            if not entry.start_wall:
                entry.start_wall = time.time()
            entry.publish(ev.Resumed if resumed else ev.Started, endpoint=entry.endpoint)
            slice_tokens = 0
            if entry.kind == "llm" and self.settings.kind == queues.ROUND_ROBIN:
                # Every generation gets a slice: a call that arrives later
                # must find the running ones preemptible. Alone in its queue,
                # a preempted call resumes at once (one more prefill, mostly
                # served from the engine's prefix cache).
                slice_tokens = self.settings.slice_tokens
            entry.task = asyncio.get_running_loop().create_task(self._run(entry, res, slice_tokens))

    async def _run(self, entry: Entry, res: Resource, slice_tokens: int) -> None:
        # This task was started from whichever call freed the slot: act (and
        # log, and tell other services) as the entry's own agent and request,
        # in the entry's own trace.
        rctx.agent.set(entry.agent)
        rctx.request_id.set(entry.caller_request_id or entry.request_id or entry.id)
        otel_context.attach(_trace_of(entry))  # this task's own: nothing to detach
        if self.journal is not None and not self.journal.durable(entry):
            # Its acceptance did not reach the database (db.py keeps trying):
            # a restarted kernel would not know of it, so it does not run.
            self._complete(entry, res, FAILED, errors.Unavailable(
                "the kernel's journal could not record this call, so it did not run; "
                "retry with the same request id", reason="DATABASE_UNAVAILABLE", retry_after=1.0))
            return
        try:
            with tracing.span("kernel.dispatch", kind=trace.SpanKind.CLIENT, attributes=lambda: {
                    "aios.syscall.id": entry.id, "aios.syscall.kind": entry.kind,
                    "aios.resource": entry.resource, "aios.agent": entry.agent,
                    "aios.slice_tokens": slice_tokens, "aios.preemptions": entry.preemptions}) as span:
                outcome = await self.runner(entry, slice_tokens)
                if span.is_recording():
                    span.set_attributes({"aios.endpoint": entry.endpoint, "aios.preempted": outcome.preempted,
                                         "aios.prompt_tokens": outcome.prompt_tokens,
                                         "aios.completion_tokens": outcome.completion_tokens})
        except asyncio.CancelledError:
            self._complete(entry, res, CANCELLED, errors.Cancelled("the syscall was cancelled"))
            return
        except errors.AiosError as err:
            self._complete(entry, res, FAILED, err)
            return
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the kernel
            log.exception("syscall crashed", syscall=entry.id)
            self._complete(entry, res, FAILED, errors.Internal(f"internal error: {type(exc).__name__}"))
            return
        self._charge(entry, outcome)
        if outcome.preempted and not entry.done:
            entry.preemptions += 1
            entry.snapshot_text = outcome.snapshot_text
            entry.snapshot_tokens = outcome.snapshot_tokens
            entry.state = PREEMPTED
            res.running -= 1
            self._gate_end(entry, res)
            res.observe(time.monotonic() - entry.run_started)
            entry.publish(ev.Preempted, snapshot_tokens=outcome.snapshot_tokens)
            if self.journal is not None:
                self.journal.preempted(entry)
            self._enqueue(entry, res)
            self._pump(res)
            return
        entry.output = outcome.output
        self._complete(entry, res, SUCCEEDED, None)

    def _charge(self, entry: Entry, outcome: Outcome) -> None:
        entry.prompt_tokens += outcome.prompt_tokens
        entry.completion_tokens += outcome.completion_tokens
        entry.cached_tokens += outcome.cached_tokens
        if entry.kind in ("llm", "embed"):
            # Embedding endpoints carry no prices: their tokens count, at no cost.
            prices = self.prices(entry.syscall.llm.model, entry.endpoint) if self.prices and entry.kind == "llm" else None
            cost = quotas.cost_of(prices, outcome.prompt_tokens, outcome.completion_tokens, outcome.cached_tokens)
            entry.cost += cost
            if self.quotas is not None:
                self.quotas.charge(entry, outcome.prompt_tokens, outcome.completion_tokens, cost)
        served = outcome.prompt_tokens + outcome.completion_tokens
        weighted = (self.settings.prompt_weight * outcome.prompt_tokens
                    + self.settings.completion_weight * outcome.completion_tokens)
        self.counters[entry.agent] = self.counters.get(entry.agent, 0.0) + weighted
        session = entry.run
        if session in self.attained:
            self.attained[session][0] += served
            self.attained.move_to_end(session)

    def _complete(self, entry: Entry, res: Resource | None, state: str,
                  err: errors.AiosError | None) -> None:
        if entry.done:
            return
        journaled = self.journal is not None
        if entry.streamed and not entry.body_ended and state != SUCCEEDED \
                and entry.syscall.storage.WhichOneof("op") == "write" \
                and not isinstance(err, errors.DeadlineExceeded):
            # An upload whose caller went away or never sent its end wrote
            # nothing: a retry of its request id runs anew (table.runs_anew).
            state, err = FAILED, errors.Unavailable(
                "the upload ended before its end message; nothing was written; retry with the same request id",
                reason="UPLOAD_INCOMPLETE")
            # The stop cut its stream: it stays unfinished in the journal,
            # like every call the stop interrupts, and the next process ends it.
            journaled = journaled and not self.stopping
        if entry.queued:
            entry.queued = False
            entry.waiting += time.monotonic() - entry.queued_at
            _queue_span(entry, ended=state)
            if res is not None:
                if entry.held:
                    res.gate.drop(entry)
                else:
                    res.queue.discard(entry)
        elif res is not None and entry.state in (RUNNING,):
            res.running -= 1
            self._gate_end(entry, res)
            if state == SUCCEEDED:
                res.observe(time.monotonic() - entry.run_started)
        entry.done = True
        entry.state = state
        entry.error = err
        entry.finish_wall = time.time()
        self._outstanding[entry.agent] = max(0, self._outstanding.get(entry.agent, 1) - 1)
        if self.quotas is not None:
            self.quotas.release(entry)
        self.table.finish(entry)
        if journaled:
            # Built once: the journal keeps it, and its callers get it from here.
            entry.final_record = records.record(entry).SerializeToString()
            self.journal.finished(entry, entry.final_record)
        entry.publish(ev.Finished, entry=entry)
        entry.finished.set()
        if self.observer is not None:
            self.observer.finished(entry)
        if res is not None:
            self._pump(res)

    # --- waiting and cancelling -------------------------------------------

    def cancel(self, entry: Entry, err: errors.AiosError | None = None) -> None:
        """Stop an entry wherever it is; its slot is free when this returns
        (a running call's task is cancelled, which aborts the backend call)."""
        if entry.done:
            return
        err = err or errors.Cancelled("the syscall was cancelled")
        state = FAILED if isinstance(err, errors.DeadlineExceeded) else CANCELLED
        task = entry.task
        if entry.remote:  # a stand-in: ending its stream (the task) cancels the call on its owner
            entry.settle(state, err)
        else:
            self._complete(entry, self.resources.get(entry.resource), state, err)
        if task is not None and not task.done():
            task.cancel()

    async def wait(self, entry: Entry, deadline: float | None) -> Entry:
        """Wait for an entry to finish. A caller that goes away (task
        cancelled) cancels the call unless another caller still waits for it;
        a passed deadline fails it with DEADLINE_EXCEEDED."""
        entry.waiters += 1
        try:
            if not entry.finished.is_set():
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                # asyncio.timeout, unlike wait_for, runs no task of its own.
                async with asyncio.timeout(timeout):
                    await entry.finished.wait()
        except TimeoutError:
            self.cancel(entry, errors.DeadlineExceeded("the syscall's deadline passed"))
        except asyncio.CancelledError:
            if entry.waiters <= 1 and not self.stopping and not entry.forwarded_by:
                self.cancel(entry, errors.Cancelled("the caller went away"))
            raise
        finally:
            entry.waiters -= 1
        return entry


def _trace_of(entry: Entry):
    """The trace context an entry's spans go under: its intake's, or for a
    call recovered from the journal none (a trace of its own), never that
    of whichever call's task happens to run this."""
    return entry.trace_context if entry.trace_context is not None else otel_context.Context()


def _queue_span(entry: Entry, ended: str = "") -> None:
    """The wait in its queue just ended (it starts, or ended as `ended`): a
    span from when it was queued until now."""
    def attributes() -> dict:
        out = {"aios.resource": entry.resource, "aios.syscall.id": entry.id, "aios.resumed": entry.preemptions > 0}
        if ended:
            out["aios.ended"] = ended
        return out
    tracing.span_between("kernel.queue", _trace_of(entry), entry.queued_at, attributes=attributes)


def _prompt_tokens(entry: Entry) -> int:
    return quotas.prompt_estimate(entry.syscall.llm)
