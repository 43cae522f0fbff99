"""Process-table entries as protos."""

from __future__ import annotations

from google.protobuf import duration_pb2, timestamp_pb2

from aios.common.v1 import llm_pb2 as lc
from aios.kernel.v1 import kernel_service_pb2 as kpb
from aios.kernel.v1 import syscall_pb2 as ks
from services.runtime import errors
from services.scheduler import quotas, table
from services.scheduler.table import Entry

STATES = {
    table.QUEUED: ks.SYSCALL_STATE_QUEUED,
    table.RUNNING: ks.SYSCALL_STATE_RUNNING,
    table.PREEMPTED: ks.SYSCALL_STATE_PREEMPTED,
    table.AWAITING_CONFIRMATION: ks.SYSCALL_STATE_AWAITING_CONFIRMATION,
    table.SUCCEEDED: ks.SYSCALL_STATE_SUCCEEDED,
    table.FAILED: ks.SYSCALL_STATE_FAILED,
    table.CANCELLED: ks.SYSCALL_STATE_CANCELLED,
}
STATE_NAMES = {v: k for k, v in STATES.items()}

KINDS = {
    "llm": ks.SYSCALL_KIND_LLM,
    "memory": ks.SYSCALL_KIND_MEMORY,
    "storage": ks.SYSCALL_KIND_STORAGE,
    "tool": ks.SYSCALL_KIND_TOOL,
    "embed": ks.SYSCALL_KIND_EMBED,
}

_CODES = {
    "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
    "ABORTED": 10, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14, "UNAUTHENTICATED": 16,
}


def timestamp(seconds: float) -> timestamp_pb2.Timestamp | None:
    if not seconds:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def record(entry: Entry, *, with_output: bool = True) -> ks.SyscallRecord:
    import time

    if entry.final_record is not None:  # read back from the journal
        rec = ks.SyscallRecord.FromString(entry.final_record)
        if not with_output:
            rec.ClearField("output")
        return rec

    rec = ks.SyscallRecord(
        id=entry.id,
        request_id=entry.request_id,
        agent=entry.agent,
        session_id=entry.session_id,
        kind=KINDS.get(entry.kind, ks.SYSCALL_KIND_UNSPECIFIED),
        resource=entry.resource,
        state=STATES[entry.state],
        priority=entry.priority,
        preemptions=entry.preemptions,
        confirmation_id=entry.confirmation_id,
        parent_id=entry.parent_id,
        cost=entry.cost,
        trace_id=entry.trace_id,
        usage=lc.Usage(
            prompt_tokens=entry.prompt_tokens,
            completion_tokens=entry.completion_tokens,
            total_tokens=entry.prompt_tokens + entry.completion_tokens,
            cached_prompt_tokens=entry.cached_tokens,
        ),
    )
    for name, seconds in (("create_time", entry.create_wall), ("queue_time", entry.queue_wall),
                          ("start_time", entry.start_wall), ("finish_time", entry.finish_wall)):
        ts = timestamp(seconds)
        if ts is not None:
            getattr(rec, name).CopyFrom(ts)
    if entry.deadline is not None:
        rec.deadline.CopyFrom(timestamp(time.time() + (entry.deadline - time.monotonic())))
    waiting = entry.waiting
    if entry.queued:
        waiting += time.monotonic() - entry.queued_at
    rec.waiting.CopyFrom(duration(waiting))
    end = entry.finish_wall or time.time()
    rec.turnaround.CopyFrom(duration(end - entry.create_wall))
    if entry.error is not None:
        rec.error.code = _CODES.get(entry.error.code, 2)
        rec.error.message = entry.error.message
    if with_output and entry.output is not None:
        getattr(rec, entry.kind).CopyFrom(entry.output)
    return rec


def agent_stats(stats) -> kpb.AgentStats:
    done = stats.completed + stats.failed
    out = kpb.AgentStats(
        agent=stats.agent, running=stats.running, queued=stats.queued,
        completed=stats.completed, failed=stats.failed,
        prompt_tokens=stats.prompt_tokens, completion_tokens=stats.completion_tokens, cost=stats.cost,
        total_waiting=duration(stats.total_waiting),
        mean_waiting=duration(stats.total_waiting / done if done else 0.0),
    )
    ts = timestamp(stats.last_seen)
    if ts is not None:
        out.last_seen_time.CopyFrom(ts)
    return out


def queues(resources: dict) -> list[kpb.ResourceQueue]:
    """Each resource's queue as of now (services/scheduler/kernel.py Resource), by name."""
    return [kpb.ResourceQueue(resource=name, capacity=res.capacity, running=res.running, queued=res.waiting,
                              held=res.gate.held_live if res.gate is not None else 0)
            for name, res in sorted(resources.items())]


_METRICS = {
    quotas.REQUESTS: kpb.QUOTA_METRIC_LLM_REQUESTS,
    quotas.PROMPT_TOKENS: kpb.QUOTA_METRIC_PROMPT_TOKENS,
    quotas.COMPLETION_TOKENS: kpb.QUOTA_METRIC_COMPLETION_TOKENS,
    quotas.TOKENS: kpb.QUOTA_METRIC_TOKENS,
    quotas.TOOL_CALLS: kpb.QUOTA_METRIC_TOOL_CALLS,
    quotas.COST: kpb.QUOTA_METRIC_COST,
    quotas.PARALLEL: kpb.QUOTA_METRIC_PARALLEL_LLM_CALLS,
    quotas.MEMORY_RECORDS: kpb.QUOTA_METRIC_MEMORY_RECORDS,
}
_METRIC_NAMES = {v: k for k, v in _METRICS.items()}


def quota_limit(lim: quotas.Limit) -> kpb.QuotaLimit:
    out = kpb.QuotaLimit(metric=_METRICS[lim.metric], max=lim.max, soft=lim.soft)
    if lim.window:
        out.window.FromSeconds(lim.window)
    return out


def limit_of(msg: kpb.QuotaLimit, where: str) -> quotas.Limit:
    """A QuotaLimit as the quotas module takes it (checked there)."""
    seconds = msg.window.ToNanoseconds() / 1e9 if msg.HasField("window") else 0.0
    if seconds != int(seconds):
        raise errors.InvalidArgument(f"{where}.window must be whole seconds", field=f"{where}.window")
    return quotas.Limit(_METRIC_NAMES.get(msg.metric, ""), int(seconds), msg.max, msg.soft)


def quota(subject: str, limits: list[quotas.Limit]) -> kpb.Quota:
    return kpb.Quota(subject=subject, limits=[quota_limit(lim) for lim in limits])


def quota_usage(u: quotas.Usage) -> kpb.QuotaUsage:
    out = kpb.QuotaUsage(subject=u.subject, limit=quota_limit(u.limit), used=u.used, remaining=u.remaining)
    ts = timestamp(u.reset_wall) if u.reset_wall else None
    if ts is not None:
        out.reset_time.CopyFrom(ts)
    return out
