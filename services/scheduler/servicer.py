"""KernelService: the agents' gRPC door. Thin: each syscall goes through the
intake (services/scheduler/intake.py); this turns protos into its calls and
its outcomes (and the process table) back into protos."""

from __future__ import annotations

import asyncio
import time

from aios.kernel.v1 import kernel_service_pb2 as kpb
from aios.kernel.v1 import kernel_service_pb2_grpc as kpb_grpc
from aios.kernel.v1 import syscall_pb2 as ks
from aios.storage.v1 import storage_service_pb2 as st
from services.runtime import errors, file_stream
from services.scheduler import events as ev
from services.scheduler import queues, records
from services.scheduler.auth import Caller
from services.scheduler.queues import PolicySettings
from services.scheduler.quotas import subjects_of as quota_subjects
from services.scheduler.intake import Intake, drain
from services.scheduler.table import Entry

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
    def __init__(self, intake: Intake, services: dict[str, tuple[str, object]] | None = None,
                 auth_mode: str = "access") -> None:
        self.intake = intake
        self.kernel = intake.kernel
        self.auth = intake.auth
        self.catalog = intake.catalog
        self.tools = intake.tools
        # name -> (address, grpc.aio channel or None when unused), for GetStatus.
        self.services = services or {}
        self.auth_mode = auth_mode

    async def caller(self, metadata) -> Caller:
        return await self.intake.caller(metadata)

    def start(self, *args, **kwargs):
        return self.intake.start(*args, **kwargs)

    @staticmethod
    def outcome(entry: Entry) -> ks.SyscallRecord:
        return Intake.outcome(entry)

    async def Submit(self, request, context):
        caller = await self.caller(context.invocation_metadata())
        entry = await self.start(caller, request.syscall, context.time_remaining())
        await self.kernel.wait(entry, entry.deadline)
        return kpb.SubmitResponse(syscall=self.outcome(entry))

    async def SubmitStream(self, request, context):
        caller = await self.caller(context.invocation_metadata())
        events: asyncio.Queue = asyncio.Queue()
        # Events flow while the call is still being admitted (a confirmation
        # request must reach the agent before anybody approves it).
        starter = asyncio.ensure_future(self.start(caller, request.syscall, context.time_remaining(), events))
        waiter: asyncio.Future | None = None
        entry: Entry | None = None
        try:
            async for event in drain(events, starter):
                if not isinstance(event, ev.Finished):  # that one comes with the outcome below
                    yield _event(event)
            entry = starter.result()
            waiter = asyncio.ensure_future(self.kernel.wait(entry, entry.deadline))
            async for event in drain(events, waiter):
                if isinstance(event, ev.Finished):
                    break
                yield _event(event)
            await waiter
            yield ks.SyscallEvent(syscall_id=entry.id, time=records.timestamp(time.time()),
                                  finished=self.outcome(entry))
        finally:
            if entry is not None and events in entry.subscribers:
                entry.subscribers.remove(events)
            for task in (starter, waiter):
                # A forwarded call outlives the replica that forwarded it
                # (Entry.forwarded_by), also while it is being admitted.
                if task is not None and not task.done() and not (task is starter and caller.forwarded_by):
                    task.cancel()

    async def UploadFile(self, request_iterator, context):
        caller = await self.caller(context.invocation_metadata())
        h = await file_stream.header(request_iterator)
        syscall = ks.Syscall(request_id=h.request_id, session_id=h.session_id, priority=h.priority,
                             storage=ks.StorageCall(write=ks.WriteFileInline(
                                 owner=h.owner, path=h.path, content_type=h.content_type,
                                 if_version_id=h.if_version_id)))

        # A bad part ends the storage stream, which grpc reports as a bare
        # cancellation; the caller is told what was wrong instead.
        bad: list[errors.AiosError] = []

        async def chunks():
            try:
                async for chunk in file_stream.chunks(request_iterator):
                    yield chunk
            except errors.AiosError as err:
                bad.append(err)
                raise

        entry = await self.start(caller, syscall, context.time_remaining(), body=chunks())
        await self.kernel.wait(entry, entry.deadline)
        if bad:
            raise bad[0]
        return kpb.UploadFileResponse(syscall=self.outcome(entry))

    async def DownloadFile(self, request, context):
        caller = await self.caller(context.invocation_metadata())
        syscall = ks.Syscall(request_id=request.request_id, session_id=request.session_id,
                             priority=request.priority, storage=ks.StorageCall(read=st.ReadFileRequest(
                                 owner=request.owner, path=request.path, version_id=request.version_id)))
        # A few parts in flight: the storage stream waits for a slow reader.
        parts: asyncio.Queue = asyncio.Queue(maxsize=4)
        entry = await self.start(caller, syscall, context.time_remaining(), body=parts)
        waiter = asyncio.ensure_future(self.kernel.wait(entry, entry.deadline))
        try:
            async for part in drain(parts, waiter):
                if part is None:
                    break
                yield part
            await waiter
            self.outcome(entry)  # raises the syscall's error, if any
        finally:
            if not waiter.done():
                waiter.cancel()

    def _find(self, caller: Caller, ident: str) -> Entry:
        """A syscall by id or request id; an agent sees only its own, an admin any."""
        if not ident:
            raise errors.InvalidArgument("id is required", field="id")
        entry = self.kernel.table.get(ident) or self.kernel.table.by_request(caller.name, ident)
        if entry is None or (entry.agent != caller.name and not caller.admin):
            raise errors.NotFound(f"no syscall {ident!r} of agent {caller.name!r}", reason="UNKNOWN_SYSCALL")
        return entry

    async def _on_owner(self, caller: Caller, method: str, request, context, agent: str = ""):
        """The answer of the replica that owns the caller (or `agent`), when
        that is not this one (services/scheduler/cluster.py), else None."""
        address = self.intake.owner(caller, agent)
        if address is None:
            return None
        return await self.intake.cluster.relay(address, method, request, caller.credential,
                                               context.time_remaining())

    async def _here_or_owner(self, method: str, request, context) -> tuple[Entry | None, object]:
        """The syscall `request.id` names, from this replica's table, or
        (None, the owner's answer) when only the agent's owner holds it."""
        caller = await self.caller(context.invocation_metadata())
        try:
            return self._find(caller, request.id), None
        except errors.NotFound:
            answer = await self._on_owner(caller, method, request, context)
            if answer is None:
                raise
            return None, answer

    async def Cancel(self, request, context):
        entry, answer = await self._here_or_owner("Cancel", request, context)
        if entry is None:
            return answer
        self.kernel.cancel(entry)
        return kpb.CancelResponse(syscall=records.record(entry, with_output=False))

    async def GetSyscall(self, request, context):
        entry, answer = await self._here_or_owner("GetSyscall", request, context)
        if entry is None:
            return answer
        return kpb.GetSyscallResponse(syscall=records.record(entry))

    async def ListSyscalls(self, request, context):
        caller = await self.caller(context.invocation_metadata())
        # One agent's calls are on its owner; an admin's listing of every
        # agent is this replica's.
        if request.agent or not caller.admin:
            answer = await self._on_owner(caller, "ListSyscalls", request, context, request.agent)
            if answer is not None:
                return answer
        if request.agent and request.agent != caller.name and not caller.admin:
            raise errors.PermissionDenied(
                f"agent {caller.name!r} may list only its own syscalls, not those of {request.agent!r} "
                "(an admin credential lists every agent's)", reason="ADMIN_ONLY")
        agent = request.agent if caller.admin else caller.name
        size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        try:
            offset = int(request.page_token or 0)
        except ValueError:
            raise errors.InvalidArgument("page_token is not valid", field="page_token") from None
        state = records.STATE_NAMES.get(request.state) if request.state else None
        matches = [
            e for e in self.kernel.table.recent()
            if (not agent or e.agent == agent)
            and (state is None or e.state == state)
            and (not request.session_id or e.session_id == request.session_id)
        ]
        page = matches[offset:offset + size]
        next_token = str(offset + size) if offset + size < len(matches) else ""
        return kpb.ListSyscallsResponse(
            syscalls=[records.record(e, with_output=False) for e in page], next_page_token=next_token)

    async def ListAgents(self, request, context):
        caller = await self.caller(context.invocation_metadata())
        stats = [s for s in self.kernel.table.agent_stats() if caller.admin or s.agent == caller.name]
        out = kpb.ListAgentsResponse(agents=[records.agent_stats(s) for s in stats])
        quotas = self.kernel.quotas
        if quotas.limits():
            for row in out.agents:
                groups = caller.groups if row.agent == caller.name else quotas.groups.get(row.agent, ())
                usage = await quotas.usage(quota_subjects(row.agent, groups), row.agent)
                row.quota.extend(records.quota_usage(u) for u in usage)
        return out

    async def SetQuota(self, request, context):
        caller = await self.caller(context.invocation_metadata())
        if not caller.admin:
            raise errors.PermissionDenied("setting quotas needs an admin credential", reason="ADMIN_ONLY")
        subject = request.quota.subject
        limits = [records.limit_of(lim, f"quota.limits[{i}]") for i, lim in enumerate(request.quota.limits)]
        return kpb.SetQuotaResponse(quota=records.quota(subject, self.kernel.quotas.set(subject, limits)))

    async def GetQuota(self, request, context):
        caller = await self.caller(context.invocation_metadata())
        quotas = self.kernel.quotas
        limits = quotas.limits()
        agent, usage = "", None  # whose memory records count; the usage, unless of every subject
        if request.agent and request.group:
            raise errors.InvalidArgument("give agent or group, not both", field="group")
        if request.group:
            if not caller.admin and request.group not in caller.groups:
                raise errors.PermissionDenied(f"agent {caller.name!r} is not in group {request.group!r}",
                                              reason="ADMIN_ONLY")
            subjects = [f"group:{request.group}"]
        elif request.agent and request.agent != caller.name:
            if not caller.admin:
                raise errors.PermissionDenied(
                    f"agent {caller.name!r} may see only its own quota, not that of {request.agent!r}",
                    reason="ADMIN_ONLY")
            agent = request.agent
            subjects = quota_subjects(agent, quotas.groups.get(agent, ()))
        elif not request.agent and caller.admin:  # every quota set, one subject after another
            subjects = sorted(limits)
            usage = [u for s in subjects for u in await quotas.usage([s])]
        else:
            agent = caller.name
            subjects = quota_subjects(agent, caller.groups)
        if usage is None:
            usage = await quotas.usage(subjects, agent)
        return kpb.GetQuotaResponse(quotas=[records.quota(s, limits[s]) for s in subjects if s in limits],
                                    usage=[records.quota_usage(u) for u in usage], currency=quotas.currency)

    async def ListTools(self, request, context):
        await self.caller(context.invocation_metadata())
        return kpb.ListToolsResponse(tools=self.tools.specs() if self.tools is not None else [])

    async def ListModels(self, request, context):
        caller = await self.caller(context.invocation_metadata())
        models = await self.catalog.listing()
        default = await self.catalog.default_model()
        out = kpb.ListModelsResponse(default_model=default)
        for model in models:
            if not await self.auth.may_use_model(caller, model.name):
                continue
            info = out.models.add(name=model.name, is_default=model.name == default)
            for ep in model.endpoints:
                info.endpoints.add(name=ep.name, healthy=ep.healthy, last_error=ep.last_error,
                                   in_flight=ep.in_flight, max_concurrency=ep.max_concurrency,
                                   base_url=ep.base_url if caller.admin else "")
        return out

    async def GetStatus(self, request, context):
        await self.caller(context.invocation_metadata())
        out = kpb.GetStatusResponse(policy=self._policy(), auth=self.auth_mode)
        probes = [probe(name, address, ch) for name, (address, ch) in self.services.items()]
        out.services.extend(await asyncio.gather(*probes))
        try:
            out.default_model = await self.catalog.default_model()
        except errors.AiosError:
            pass  # llm_core's own row says why
        out.queues.extend(records.queues(self.kernel.resources))
        cluster = self.intake.cluster
        if cluster is not None:
            out.replicas.extend(kpb.KernelReplica(id=rid, address=address, answering=rid == cluster.id)
                                for rid, address in sorted(cluster.members.items()))
        return out

    def _policy(self) -> kpb.Policy:
        s = self.kernel.settings
        return kpb.Policy(kind=POLICY_KINDS[s.kind], slice_tokens=s.slice_tokens,
                          aging_interval=records.duration(s.aging_seconds))

    async def GetPolicy(self, request, context):
        await self.caller(context.invocation_metadata())
        return kpb.GetPolicyResponse(policy=self._policy())

    async def SetPolicy(self, request, context):
        caller = await self.caller(context.invocation_metadata())
        if not caller.admin:
            raise errors.PermissionDenied("switching the scheduling policy needs an admin credential",
                                          reason="ADMIN_ONLY")
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


async def probe(name: str, address: str, channel, timeout: float = 2.0) -> kpb.ServiceHealth:
    """One service's grpc.health.v1 status as the kernel sees it."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    row = kpb.ServiceHealth(name=name, address=address)
    if channel is None:
        row.status, row.detail = "NOT_USED", "development mode (AIOS_KERNEL_AUTH=dev)"
        return row
    try:
        resp = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        row.status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    except grpc.aio.AioRpcError as exc:
        row.status, row.detail = "UNREACHABLE", f"{exc.code().name}: {exc.details() or ''}".rstrip(": ")
    return row


def _event(event: ev.Event) -> ks.SyscallEvent:
    out = ks.SyscallEvent(syscall_id=event.syscall_id, time=records.timestamp(event.time))
    match event:
        case ev.Queued(position=position):
            out.queued.position = position
        case ev.Started(endpoint=endpoint):
            out.started.endpoint = endpoint or ""
        case ev.Resumed():
            out.resumed.SetInParent()
        case ev.Delta(text=text):
            out.delta.text = text
        case ev.Preempted(snapshot_tokens=tokens):
            out.preempted.snapshot_tokens = tokens
        case ev.AwaitingConfirmation(confirmation_id=confirmation):
            out.awaiting_confirmation.confirmation_id = confirmation
    return out
