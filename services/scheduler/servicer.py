"""KernelService: the agents' front door. Thin: authenticate, validate and
build an entry, hand it to the kernel, and turn the outcome into protos."""

from __future__ import annotations

import asyncio
import time

from google.protobuf import json_format

from aios.kernel.v1 import kernel_service_pb2 as kpb
from aios.kernel.v1 import kernel_service_pb2_grpc as kpb_grpc
from aios.kernel.v1 import syscall_pb2 as ks
from services.runtime import context as rctx
from services.runtime import errors
from services.scheduler import queues, records
from services.scheduler.kernel import Kernel
from services.scheduler.queues import PolicySettings
from services.scheduler.table import SUCCEEDED, Entry

POLICY_KINDS = {
    queues.FIFO: kpb.POLICY_KIND_FIFO,
    queues.ROUND_ROBIN: kpb.POLICY_KIND_ROUND_ROBIN,
    queues.PRIORITY: kpb.POLICY_KIND_PRIORITY,
    queues.FAIR_SHARE: kpb.POLICY_KIND_FAIR_SHARE,
    queues.AGENT_AWARE: kpb.POLICY_KIND_AGENT_AWARE,
}
POLICY_NAMES = {v: k for k, v in POLICY_KINDS.items()}
DEFAULT_PAGE = 100
MAX_PAGE = 1000


class KernelServicer(kpb_grpc.KernelServiceServicer):
    def __init__(self, kernel: Kernel, auth, catalog, default_timeout: float, tools=None) -> None:
        self.kernel = kernel
        self.auth = auth
        self.catalog = catalog
        self.default_timeout = default_timeout
        self.tools = tools

    async def _agent(self, context) -> str:
        agent = await self.auth.agent(context.invocation_metadata())
        rctx.agent.set(agent)
        return agent

    def _deadline(self, syscall: ks.Syscall, remaining: float | None) -> float:
        now_mono, now_wall = time.monotonic(), time.time()
        candidates = [now_mono + self.default_timeout]
        if remaining is not None:
            candidates.append(now_mono + remaining)
        if syscall.HasField("deadline"):
            candidates.append(now_mono + (syscall.deadline.ToNanoseconds() / 1e9 - now_wall))
        return min(candidates)

    async def build_entry(self, agent: str, syscall: ks.Syscall, remaining: float | None) -> Entry:
        """Validate a syscall and make its process-table entry (not yet queued).
        `remaining` is the caller's own deadline in seconds, if any."""
        call = syscall.WhichOneof("call")
        if call is None:
            raise errors.InvalidArgument(
                "the syscall has no call: set one of llm, memory, storage or tool",
                reason="EMPTY_SYSCALL", field="syscall.call")
        if len(syscall.request_id) > 128:
            raise errors.InvalidArgument("request_id is longer than 128 characters",
                                         field="syscall.request_id")
        copy = ks.Syscall()
        copy.CopyFrom(syscall)
        if call == "llm":
            if not copy.llm.model:
                raise errors.InvalidArgument("llm.model is required", field="syscall.llm.model")
            if not copy.llm.messages:
                raise errors.InvalidArgument("llm.messages must not be empty",
                                             field="syscall.llm.messages")
            await self.catalog.check(copy.llm.model)
            resource = f"llm:{copy.llm.model}"
        elif call == "memory":
            op = copy.memory.WhichOneof("op")
            if op is None:
                raise errors.InvalidArgument("memory call has no operation", field="syscall.memory")
            self._own(agent, getattr(copy.memory, op), "memory")
            resource = "memory"
        elif call == "storage":
            op = copy.storage.WhichOneof("op")
            if op is None:
                raise errors.InvalidArgument("storage call has no operation", field="syscall.storage")
            inner = getattr(copy.storage, op)
            if op == "retrieve":
                if not inner.owners:
                    inner.owners.append(agent)
                for owner in inner.owners:
                    if owner != agent:
                        self._deny_foreign(agent, owner, "files")
            elif hasattr(inner, "owner"):
                self._own(agent, inner, "files")
            resource = "storage"
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
        )

    def _own(self, agent: str, request, what: str) -> None:
        """Address the caller's own space unless another owner is named."""
        if not request.owner:
            request.owner = agent
        elif request.owner != agent:
            self._deny_foreign(agent, request.owner, what)

    def _deny_foreign(self, agent: str, owner: str, what: str) -> None:
        raise errors.PermissionDenied(f"agent {agent!r} may not access the {what} of {owner!r}",
                                      reason="NO_GRANT")

    @staticmethod
    def outcome(entry: Entry) -> ks.SyscallRecord:
        """The finished entry's record, or its error raised."""
        if entry.state != SUCCEEDED:
            raise entry.error or errors.Internal("the syscall ended without a result")
        return records.record(entry)

    async def Submit(self, request, context):
        agent = await self._agent(context)
        entry = self.kernel.admit(await self.build_entry(agent, request.syscall, context.time_remaining()))
        await self.kernel.wait(entry, entry.deadline)
        return kpb.SubmitResponse(syscall=self.outcome(entry))

    async def SubmitStream(self, request, context):
        agent = await self._agent(context)
        new = await self.build_entry(agent, request.syscall, context.time_remaining())
        new.stream = True
        events: asyncio.Queue = asyncio.Queue()
        new.subscribers.append(events)
        entry = self.kernel.admit(new)
        if entry is not new:  # a repeated request id: watch the first call
            entry.subscribers.append(events)
            if entry.done:
                events.put_nowait(("finished", entry, time.time()))
        waiter = asyncio.ensure_future(self.kernel.wait(entry, entry.deadline))
        try:
            while True:
                getter = asyncio.ensure_future(events.get())
                await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    # Finished without a final event (deadline): drain, then end.
                    if events.empty():
                        break
                    continue
                kind, payload, when = getter.result()
                event = ks.SyscallEvent(syscall_id=entry.id, time=records.timestamp(when))
                if kind == "queued":
                    event.queued.position = payload
                elif kind == "started":
                    event.started.endpoint = payload or ""
                elif kind == "resumed":
                    event.resumed.SetInParent()
                elif kind == "delta":
                    event.delta.text = payload
                elif kind == "preempted":
                    event.preempted.snapshot_tokens = payload
                elif kind == "awaiting_confirmation":
                    event.awaiting_confirmation.confirmation_id = payload
                elif kind == "finished":
                    break
                yield event
            await waiter
            record = self.outcome(entry)
            yield ks.SyscallEvent(syscall_id=entry.id, time=records.timestamp(time.time()),
                                  finished=record)
        finally:
            if events in entry.subscribers:
                entry.subscribers.remove(events)
            if not waiter.done():
                waiter.cancel()

    def _find(self, agent: str, ident: str) -> Entry:
        if not ident:
            raise errors.InvalidArgument("id is required", field="id")
        entry = self.kernel.table.get(ident) or self.kernel.table.by_request(agent, ident)
        if entry is None or entry.agent != agent:
            raise errors.NotFound(f"no syscall {ident!r} of agent {agent!r}", reason="UNKNOWN_SYSCALL")
        return entry

    async def Cancel(self, request, context):
        agent = await self._agent(context)
        entry = self._find(agent, request.id)
        self.kernel.cancel(entry)
        return kpb.CancelResponse(syscall=records.record(entry, with_output=False))

    async def GetSyscall(self, request, context):
        agent = await self._agent(context)
        return kpb.GetSyscallResponse(syscall=records.record(self._find(agent, request.id)))

    async def ListSyscalls(self, request, context):
        await self._agent(context)
        size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        try:
            offset = int(request.page_token or 0)
        except ValueError:
            raise errors.InvalidArgument("page_token is not valid", field="page_token") from None
        state = records.STATE_NAMES.get(request.state) if request.state else None
        matches = [
            e for e in self.kernel.table.recent()
            if (not request.agent or e.agent == request.agent)
            and (state is None or e.state == state)
            and (not request.session_id or e.session_id == request.session_id)
        ]
        page = matches[offset:offset + size]
        next_token = str(offset + size) if offset + size < len(matches) else ""
        return kpb.ListSyscallsResponse(
            syscalls=[records.record(e, with_output=False) for e in page], next_page_token=next_token)

    async def ListAgents(self, request, context):
        await self._agent(context)
        return kpb.ListAgentsResponse(agents=[records.agent_stats(s) for s in self.kernel.table.agent_stats()])

    async def ListTools(self, request, context):
        await self._agent(context)
        return kpb.ListToolsResponse(tools=self.tools.specs() if self.tools is not None else [])

    def _policy(self) -> kpb.Policy:
        s = self.kernel.settings
        return kpb.Policy(kind=POLICY_KINDS[s.kind], slice_tokens=s.slice_tokens,
                          aging_interval=records.duration(s.aging_seconds))

    async def GetPolicy(self, request, context):
        await self._agent(context)
        return kpb.GetPolicyResponse(policy=self._policy())

    async def SetPolicy(self, request, context):
        await self._agent(context)
        p = request.policy
        if p.kind not in POLICY_NAMES:
            raise errors.InvalidArgument("policy.kind must be set", field="policy.kind")
        current = self.kernel.settings
        self.kernel.set_policy(PolicySettings(
            kind=POLICY_NAMES[p.kind],
            slice_tokens=p.slice_tokens or current.slice_tokens,
            aging_seconds=(p.aging_interval.ToNanoseconds() / 1e9) if p.HasField("aging_interval")
            else current.aging_seconds,
            prompt_weight=current.prompt_weight,
            completion_weight=current.completion_weight,
            quantum_tokens=current.quantum_tokens,
        ))
        return kpb.SetPolicyResponse(policy=self._policy())
