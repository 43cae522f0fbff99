"""The process table: every syscall's entry, per-agent accounting, and a
bounded history of finished calls (with the idempotency index over it)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from services.runtime import errors
from services.scheduler import events as ev

QUEUED = "queued"
RUNNING = "running"
PREEMPTED = "preempted"
AWAITING_CONFIRMATION = "awaiting_confirmation"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
FINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)


@dataclass(eq=False)
class Entry:
    agent: str
    kind: str  # "llm", "memory", "storage", "tool"
    resource: str  # the queue it waits in, e.g. "llm:smollm2"
    syscall: Any  # aios.kernel.v1.Syscall
    request_id: str = ""
    session_id: str = ""
    priority: int = 0
    deadline: float | None = None  # time.monotonic()
    # A hash of what the call asks for, so a request id reused for another
    # call is told apart from a retry.
    fingerprint: bytes = b""
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    state: str = QUEUED
    queued: bool = False
    # Waiting in its model's cache gate for room (services/scheduler/cache.py).
    held: bool = False
    done: bool = False
    # Ordering facts (monotonic) and reported times (wall clock).
    enqueue_time: float = 0.0
    queued_at: float = 0.0  # monotonic, when it last entered a queue
    run_started: float = 0.0  # monotonic, when it last started running
    create_wall: float = field(default_factory=time.time)
    queue_wall: float = 0.0
    start_wall: float = 0.0
    finish_wall: float = 0.0
    waiting: float = 0.0
    preemptions: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    # Context snapshot of a preempted generation.
    snapshot_text: str = ""
    snapshot_tokens: int = 0
    output: Any = None
    error: errors.AiosError | None = None
    endpoint: str = ""
    # While parked: the confirmation a person must approve.
    confirmation_id: str = ""
    # A built-in tool's inner syscall: the tool syscall it is part of.
    parent_id: str = ""
    # A file write let through as a create, not an overwrite: storage is
    # told to write only if the file is still absent.
    create_only: bool = False
    # The caller's groups (quotas bind them too), what the call holds
    # against quotas while it runs, and what it cost.
    groups: tuple[str, ...] = ()
    hold: Any = None
    cost: float = 0.0
    # Inner syscalls a built-in tool made so far (their request ids count up).
    inner_calls: int = 0
    # A finished call read back from the journal: its SyscallRecord, serialized.
    final_record: bytes | None = None
    # The number of the journal write that accepted it (journal.durable).
    journaled: int = 0
    # Set by SubmitStream: token deltas are wanted.
    stream: bool = False
    # The trace the call is part of (its intake's span context, the parent
    # of its queue and dispatch spans) and its trace id in hex; the request
    # id of the call that made it, which every service's log lines carry.
    trace_context: Any = None
    trace_id: str = ""
    caller_request_id: str = ""
    # A streamed file body: the upload's chunks (async iterator of bytes), or
    # the queue a download's parts go to.
    body: Any = None
    # Its body streams through its caller's own call (UploadFile,
    # DownloadFile): once that call is gone it cannot run again.
    streamed: bool = False
    # An upload's caller sent its end message (dispatch.py _upload_parts);
    # until then storage has written nothing.
    body_ended: bool = False
    waiters: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    subscribers: list[asyncio.Queue] = field(default_factory=list)
    task: asyncio.Task | None = None
    # The replica that runs it, when this one forwarded it there
    # (services/scheduler/cluster.py): the entry is only a stand-in here.
    remote: str = ""
    # The replica that forwarded it here: its stream ending (that replica
    # died) does not cancel it, so the agent's retry elsewhere joins it; the
    # forwarder cancels it explicitly when its caller goes away.
    forwarded_by: str = ""

    @property
    def run(self) -> str:
        """The agent run the call belongs to: its session, else its agent."""
        return self.session_id or self.agent

    def publish(self, event_type: type[ev.Event], **fields: Any) -> None:
        """Tell every subscriber, e.g. publish(ev.Queued, position=3)."""
        if not self.subscribers:  # the common case: a unary call, nobody listens
            return
        event = event_type(syscall_id=self.id, time=time.time(), **fields)
        for q in self.subscribers:
            q.put_nowait(event)

    def settle(self, state: str, err: errors.AiosError | None) -> None:
        """End a stand-in of a call another replica runs (never in a queue here)."""
        if self.done:
            return
        self.done, self.state, self.error = True, state, err
        self.finish_wall = time.time()
        self.publish(ev.Finished, entry=self)
        self.finished.set()


@dataclass
class AgentStats:
    agent: str
    completed: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    total_waiting: float = 0.0
    last_seen: float = 0.0
    running: int = 0
    queued: int = 0


def runs_anew(entry: Entry) -> bool:
    """A call that failed because a service was unavailable did nothing: a
    retry with its request id runs anew instead of getting that failure."""
    return entry.state == FAILED and entry.error is not None and entry.error.code == "UNAVAILABLE"


class ProcessTable:
    def __init__(self, history: int = 10_000) -> None:
        self.history = history
        self.live: dict[str, Entry] = {}
        self.finished: OrderedDict[str, Entry] = OrderedDict()
        self._by_request: dict[tuple[str, str], str] = {}
        self.agents: dict[str, AgentStats] = {}

    def add(self, entry: Entry) -> None:
        self.live[entry.id] = entry
        if entry.request_id:
            self._by_request[(entry.agent, entry.request_id)] = entry.id
        stats = self.agent(entry.agent)
        stats.last_seen = time.time()

    def agent(self, name: str) -> AgentStats:
        stats = self.agents.get(name)
        if stats is None:
            stats = self.agents[name] = AgentStats(name)
        return stats

    def by_request(self, agent: str, request_id: str) -> Entry | None:
        """The syscall an agent's request id names (see runs_anew)."""
        eid = self._by_request.get((agent, request_id))
        entry = self.get(eid) if eid else None
        return None if entry is None or runs_anew(entry) else entry

    def remember(self, entry: Entry) -> None:
        """A finished entry read back from the journal, for later lookups."""
        self.finished[entry.id] = entry
        if entry.request_id:
            self._by_request[(entry.agent, entry.request_id)] = entry.id
        self._trim()

    def get(self, eid: str) -> Entry | None:
        return self.live.get(eid) or self.finished.get(eid)

    def finish(self, entry: Entry) -> None:
        self.live.pop(entry.id, None)
        self.finished[entry.id] = entry
        stats = self.agent(entry.agent)
        stats.total_waiting += entry.waiting
        stats.prompt_tokens += entry.prompt_tokens
        stats.completion_tokens += entry.completion_tokens
        stats.cost += entry.cost
        if entry.state == SUCCEEDED:
            stats.completed += 1
        else:
            stats.failed += 1
        self._trim()

    def _trim(self) -> None:
        while len(self.finished) > self.history:
            _, old = self.finished.popitem(last=False)
            if old.request_id:
                self._by_request.pop((old.agent, old.request_id), None)

    def recent(self) -> list[Entry]:
        """Live then finished entries, newest first."""
        live = sorted(self.live.values(), key=lambda e: e.create_wall, reverse=True)
        return live + list(reversed(self.finished.values()))

    def agent_stats(self) -> list[AgentStats]:
        for stats in self.agents.values():
            stats.running = stats.queued = 0
        for e in self.live.values():
            stats = self.agent(e.agent)
            if e.state == RUNNING:
                stats.running += 1
            else:
                stats.queued += 1
        return sorted(self.agents.values(), key=lambda s: s.agent)
