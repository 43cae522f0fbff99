"""The intake: every syscall, from every door (gRPC Submit and its streaming
and file twins, the OpenAI-compatible HTTP door, a built-in tool's inner
operations), passes here in one order before it runs:

1. authenticate: the caller from its credential (the gate);
2. validate: a well-formed call, the default model filled in, LLM settings
   in range, a tool's arguments against its schema;
3. deduplicate: a repeated request id is the first call (its fingerprint
   must match: a request id names one call);
4. authorize: the access rules (the gate), which may ask for confirmations;
5. confirm: a call that could never run is refused first; the rest are
   parked until a person approves, announced on the call (and on the tool
   call it is part of);
6. admit and enqueue: the kernel's limits and the quotas binding the agent
   and its groups, then its queues.

Doors are adapters: they translate their protocol into a Syscall and the
outcome back, and decide nothing. Nothing here imports grpc.

Each step is a span of the call's trace (kernel.authenticate,
kernel.authorize, kernel.confirm, kernel.admit); the entry keeps the trace
context it came in with, so its queue wait and its run join that trace.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time

from google.protobuf import json_format
from opentelemetry import context as otel_context
from opentelemetry import trace

from aios.kernel.v1 import syscall_pb2 as ks
from services.runtime import context as rctx
from services.runtime import errors, logs, tracing
from services.scheduler import events as ev
from services.scheduler import records, validation
from services.scheduler.auth import Caller, Pending, bearer_token
from services.scheduler.journal import Recovered
from services.scheduler.kernel import Kernel
from services.scheduler.table import AWAITING_CONFIRMATION, SUCCEEDED, Entry

# Seconds before a call's deadline at which waiting for a confirmation ends.
CONFIRM_MARGIN = 1.0

log = logs.get("scheduler")


class Intake:
    def __init__(self, kernel: Kernel, auth, catalog, default_timeout: float, tools=None, precheck=None,
                 cluster=None) -> None:
        self.kernel = kernel
        # The kernel replicas sharing the agents (services/scheduler/cluster.py), or None.
        self.cluster = cluster
        # Parked calls read back from the journal, waiting for their confirmations.
        self.resuming: list[asyncio.Task] = []
        self.auth = auth  # DevGate or AccessGate
        self.catalog = catalog
        self.default_timeout = default_timeout
        self.tools = tools
        # async (entry) -> None: refuses a call that could never run before a
        # person is asked to confirm it.
        self.precheck = precheck

    async def caller(self, metadata) -> Caller:
        with tracing.span("kernel.authenticate") as span:
            caller = await self.auth.caller(metadata)
            span.set_attribute("aios.agent", caller.name)
        rctx.agent.set(caller.name)
        if self.cluster is not None:
            md = dict(metadata or ())
            caller = dataclasses.replace(caller, credential=bearer_token(metadata),
                                         forwarded_by=md.get(rctx.FORWARDED_KEY, ""),
                                         forwarded_stream=md.get(rctx.FORWARDED_STREAM_KEY) == "1")
        return caller

    def owner(self, caller: Caller, agent: str = "") -> str | None:
        """The replica that serves the caller's (or `agent`'s) calls, when not this one."""
        if self.cluster is None or caller.forwarded_by:
            return None
        return self.cluster.owner_address(agent or caller.name)

    def _deadline(self, syscall: ks.Syscall, remaining: float | None) -> float:
        now_mono, now_wall = time.monotonic(), time.time()
        candidates = [now_mono + self.default_timeout]
        if remaining is not None:
            candidates.append(now_mono + remaining)
        if syscall.HasField("deadline"):
            candidates.append(now_mono + (syscall.deadline.ToNanoseconds() / 1e9 - now_wall))
        return min(candidates)

    async def build_entry(self, agent: str, syscall: ks.Syscall, remaining: float | None,
                          parent_id: str = "") -> Entry:
        """Validate a syscall and make its process-table entry (not yet queued).
        An empty owner of a memory or storage call means the caller's own;
        `remaining` is the caller's own deadline in seconds, if any."""
        call = syscall.WhichOneof("call")
        if call is None:
            raise errors.InvalidArgument(
                "the syscall has no call: set one of llm, memory, storage, tool or embed",
                reason="EMPTY_SYSCALL", field="syscall.call")
        if len(syscall.request_id) > 128:
            raise errors.InvalidArgument("request_id is longer than 128 characters",
                                         field="syscall.request_id")
        copy = ks.Syscall()
        copy.CopyFrom(syscall)
        # Fields outside the contract (say, an old client's llm_core-only
        # fields) are dropped, never forwarded to a service.
        copy.DiscardUnknownFields()
        if call == "llm":
            if not copy.llm.model:
                copy.llm.model = await self.catalog.default_model()
            if not copy.llm.messages:
                raise errors.InvalidArgument("llm.messages must not be empty",
                                             field="syscall.llm.messages")
            validation.check_llm_call(copy.llm)
            await self.catalog.check(copy.llm.model)
            resource = f"llm:{copy.llm.model}"
        elif call == "embed":
            validation.check_embed(copy.embed)
            if copy.embed.model:  # empty: llm_core's default
                await self.catalog.check(copy.embed.model, embedding=True)
            resource = "embed"
        elif call in ("memory", "storage"):
            inner = getattr(copy, call)
            op = inner.WhichOneof("op")
            if op is None:
                raise errors.InvalidArgument(f"{call} call has no operation", field=f"syscall.{call}")
            request = getattr(inner, op)
            if op == "retrieve":
                if not request.owners:
                    request.owners.append(agent)
            elif hasattr(request, "owner") and not request.owner:
                request.owner = agent
            resource = call
        else:
            if not copy.tool.name:
                raise errors.InvalidArgument("tool.name is required", field="syscall.tool.name")
            if self.tools is None:
                raise errors.Unimplemented("the tool manager is not enabled")
            # Schema violations are refused before anything is queued or run.
            self.tools.validate(copy.tool.name, json_format.MessageToDict(copy.tool.arguments))
            resource = "tool"
        return Entry(
            agent=agent, kind=call, resource=resource, syscall=copy,
            request_id=copy.request_id, session_id=copy.session_id,
            priority=copy.priority, deadline=self._deadline(copy, remaining),
            fingerprint=fingerprint(copy) if copy.request_id else b"", parent_id=parent_id,
        )

    async def start(self, caller: Caller, syscall: ks.Syscall, remaining: float | None,
                    events: asyncio.Queue | None = None, body=None, parent_id: str = "") -> Entry:
        """Validate, authorize, and queue a syscall; an irreversible one first
        waits (parked in the process table) for a person's confirmation.
        Returns the entry to wait for: the first one of a repeated request id."""
        entry = await self.build_entry(caller.name, syscall, remaining, parent_id)
        entry.body = body
        entry.streamed = body is not None
        entry.forwarded_by = caller.forwarded_by
        if events is not None:
            # A forwarder always listens for events; the tokens flow only
            # when its own caller streams them.
            entry.stream = caller.forwarded_stream if caller.forwarded_by else True
            entry.subscribers.append(events)
        owner = self.owner(caller) if not parent_id and body is None else None
        if owner is not None:
            return await self.cluster.forward(owner, caller.credential, entry)
        if entry.request_id:
            first, held = self.kernel.earlier(entry)
            if held is not None and self.cluster is not None:
                first = await self._elsewhere(caller, entry, held)
            if first is not None:  # a retry: no new checks, no second run
                if events is not None:
                    first.subscribers.append(events)
                    if first.done:
                        events.put_nowait(ev.Finished(syscall_id=first.id, time=time.time(), entry=first))
                return first
        _traced(entry)
        with tracing.span("kernel.authorize") as span:
            pending = await self.auth.authorize(caller, entry)
            span.set_attribute("aios.confirmations", len(pending or ()))
        if pending:
            if self.precheck is not None:
                await self.precheck(entry)
            first = self.kernel.park(entry, [need.row() for need in pending])
            if first is not entry:
                return first
            with tracing.span("kernel.confirm"):
                await self._confirm_all(caller, entry, pending)
        return await self._admit(caller, entry)

    async def _admit(self, caller: Caller, entry: Entry) -> Entry:
        with tracing.span("kernel.admit", attributes={"aios.resource": entry.resource}):
            entry.groups = caller.groups
            quotas = self.kernel.quotas
            if quotas is not None:
                try:
                    await quotas.prepare(entry, caller.groups)
                except errors.AiosError as err:
                    if entry.state == AWAITING_CONFIRMATION:
                        self.kernel.refuse(entry, err)
                    raise
            return self.kernel.admit(entry)

    async def _confirm_all(self, caller: Caller, entry: Entry, pending: list) -> None:
        """Wait for a person's approval of each confirmation a parked entry
        needs; a refusal ends the entry (and is raised)."""
        try:
            for need in pending:
                timeout = max(0.0, entry.deadline - time.monotonic())
                # The same syscall id gets back the same confirmation, also
                # in a kernel restarted while the call was parked.
                confirmation = await self.auth.confirm(caller, entry, need, timeout)
                trace.get_current_span().add_event("awaiting confirmation", {"aios.confirmation_id": confirmation})
                self._awaiting(entry, confirmation)
                await self._confirmed(entry, confirmation)
                self._awaiting(entry, "")
        except asyncio.CancelledError:
            if not self.kernel.stopping:
                self.kernel.refuse(entry, errors.Cancelled("the caller went away while awaiting confirmation"))
            raise
        except errors.AiosError as err:
            self.kernel.refuse(entry, err)
            raise

    async def _elsewhere(self, caller: Caller, entry: Entry, held: Recovered) -> Entry | None:
        """A retry of a call another kernel replica accepted and has not
        finished (`held`, its journal row): joined there (forwarded) while
        that replica lives, else taken over from the journal now and joined
        here."""
        if held.kernel == self.cluster.id:
            return None
        address = self.cluster.members.get(held.kernel)
        if address is not None:
            return await self.cluster.forward(address, caller.credential, entry)
        self.recover(self.kernel.journal.claim([held]))
        return self.kernel.first_of(entry)

    def recover(self, recovered: list) -> list[asyncio.Task]:
        """Calls a previous kernel process accepted and did not finish (from
        the journal), in the order it accepted them: queued again, or parked
        again on their confirmations. A retry of their request id joins them."""
        tasks = []
        for item in recovered:
            entry = item.entry
            if entry.streamed:
                self.kernel.lost(entry)
            elif entry.state == AWAITING_CONFIRMATION:
                self.kernel.park(entry, recovered=True)
                tasks.append(asyncio.ensure_future(self._resume_parked(entry, item.pending)))
            else:
                self.kernel.readmit(entry)
        self.resuming = [t for t in self.resuming if not t.done()] + tasks
        if recovered:
            log.info("syscalls recovered from the journal", count=len(recovered),
                     parked=sum(1 for r in recovered if r.entry.state == AWAITING_CONFIRMATION))
        return tasks

    async def _resume_parked(self, entry: Entry, pending: list) -> None:
        try:
            caller = Caller(entry.agent, groups=entry.groups)
            await self._confirm_all(caller, entry, [Pending.from_row(p) for p in pending])
            await self._admit(caller, entry)
        except (errors.AiosError, asyncio.CancelledError):
            pass  # refused: the entry ended with its error (and a retry gets it)

    def _awaiting(self, entry: Entry, confirmation: str) -> None:
        """Show (or clear) the confirmation an entry waits for, also on the
        tool call it is part of: that is the call its agent watches."""
        entry.confirmation_id = confirmation
        if confirmation:
            entry.publish(ev.AwaitingConfirmation, confirmation_id=confirmation)
            if self.kernel.journal is not None:
                self.kernel.journal.parked(entry)
        parent = self.kernel.table.get(entry.parent_id) if entry.parent_id else None
        if parent is not None:
            parent.confirmation_id = confirmation
            if confirmation:
                parent.publish(ev.AwaitingConfirmation, confirmation_id=confirmation)

    async def submit_for(self, parent: Entry, syscall: ks.Syscall) -> ks.SyscallRecord:
        """A syscall a built-in tool makes for the agent that called it: the
        same intake as the agent's own calls, within the tool call's
        deadline, recorded as part of it. Returns the record or raises."""
        syscall.session_id = parent.session_id
        syscall.priority = parent.priority
        # Numbered within the tool call: a tool call run again after a
        # kernel restart makes the same inner calls, which then run once.
        parent.inner_calls += 1
        syscall.request_id = f"{parent.id}/{parent.inner_calls}"
        remaining = None if parent.deadline is None else max(0.0, parent.deadline - time.monotonic())
        entry = await self.start(Caller(parent.agent, groups=parent.groups), syscall, remaining,
                                 parent_id=parent.id)
        await self.kernel.wait(entry, entry.deadline)
        return self.outcome(entry)

    async def _confirmed(self, entry: Entry, confirmation: str) -> None:
        """Wait for a person's approval, unless the parked call is cancelled
        (Cancel) first. Nobody answering ends the wait a little before the
        call's deadline, so the caller hears which confirmation timed out
        rather than a bare deadline of its own."""
        remaining = max(0.0, entry.deadline - time.monotonic())
        approval = asyncio.ensure_future(
            self.auth.wait(confirmation, remaining - min(CONFIRM_MARGIN, remaining / 10)))
        finished = asyncio.ensure_future(entry.finished.wait())
        try:
            await asyncio.wait({approval, finished}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            finished.cancel()
            if not approval.done():
                approval.cancel()
        if entry.done:
            raise entry.error or errors.Cancelled("the syscall was cancelled")
        try:
            approval.result()
        except errors.DeadlineExceeded:
            raise errors.DeadlineExceeded(
                f"nobody approved confirmation {confirmation} before the call's deadline "
                f"(a person approves it with `aios confirm approve {confirmation}`; "
                "give the call a longer timeout to leave more time)",
                reason="CONFIRMATION_TIMEOUT",
                metadata={"confirmation_id": confirmation, "syscall_id": entry.id}) from None

    @staticmethod
    def outcome(entry: Entry) -> ks.SyscallRecord:
        """The finished entry's record, or its error raised."""
        if entry.state != SUCCEEDED:
            raise entry.error or errors.Internal("the syscall ended without a result")
        return records.record(entry)


def _traced(entry: Entry) -> None:
    """Keep the trace an entry comes in with (its door's span, or the tool
    call it is part of) and the request id its log lines carry everywhere;
    the call's span gets the syscall's facts."""
    entry.trace_context = otel_context.get_current()
    span = trace.get_current_span()
    entry.trace_id = tracing.trace_id(span)
    entry.caller_request_id = rctx.request_id.get()
    if span.is_recording():
        span.set_attributes({"aios.syscall.id": entry.id, "aios.syscall.kind": entry.kind,
                             "aios.resource": entry.resource, "aios.agent": entry.agent})


def fingerprint(syscall: ks.Syscall) -> bytes:
    """What a syscall asks for (its call and priority), without the facts a
    retry may change (request id, session, deadline)."""
    call = syscall.WhichOneof("call") or ""
    inner = getattr(syscall, call).SerializeToString(deterministic=True) if call else b""
    return hashlib.sha256(f"{call}:{syscall.priority}:".encode() + inner).digest()


async def drain(events: asyncio.Queue, until: asyncio.Future):
    """Yield queued events until `until` is done and the queue is empty."""
    while True:
        getter = asyncio.ensure_future(events.get())
        try:
            await asyncio.wait({getter, until}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():  # also when the reader is cancelled (its client went away)
                getter.cancel()
        if getter.done() and not getter.cancelled():
            yield getter.result()
            continue
        if events.empty():
            return
