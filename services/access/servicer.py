"""AccessService: thin, proto -> AccessControl -> proto.

Who may call which method is decided earlier (services/access/callers.py);
here the caller only names the actor in the audit log and, for the kernel
acting for an agent (x-aios-agent), limits grant changes to that agent's own.
"""

from __future__ import annotations

from collections.abc import Callable

from aios.access.v1 import access_service_pb2 as pb
from aios.access.v1 import access_service_pb2_grpc as pb_grpc
from services.access import callers
from services.access import convert as cv
from services.access import model as m
from services.access.control import AccessControl
from services.runtime import context as rctx
from services.runtime import errors


def _actor() -> str:
    """The name the audit log records for an administrative change."""
    caller = callers.current.get()
    if caller.kind == callers.ADMIN:
        return caller.name
    return rctx.agent.get() or caller.name or "anonymous"


def _acting_agent() -> str:
    """The agent a kernel call acts for, "" for an administrator."""
    if callers.current.get().kind == callers.ADMIN:
        return ""
    return rctx.agent.get()


class AccessServicer(pb_grpc.AccessServiceServicer):
    def __init__(self, control: AccessControl,
                 decided: Callable[[str, str], None] = lambda action, decision: None) -> None:
        self.control = control
        # Told the action and decision of every Check (model.ACTIONS, ALLOW,
        # DENY or NEEDS_CONFIRMATION), for the metrics.
        self.decided = decided

    async def Authenticate(self, request, context):
        principal = await self.control.authenticate(request.token)
        return pb.AuthenticateResponse(principal=cv.principal_pb(principal))

    async def Check(self, request, context):
        action = cv.action(request.action)
        decision = await self.control.check(
            request.principal.name, action, cv.resource(request.resource),
            irreversible=request.irreversible, syscall_id=request.syscall_id)
        self.decided(action, decision.decision)
        return pb.CheckResponse(decision=cv.DECISIONS[decision.decision], reason=decision.reason)

    # -- agents
    async def CreateAgent(self, request, context):
        agent, token = await self.control.create_agent(request.name, list(request.groups),
                                                       request.tenant, by=_actor())
        return pb.CreateAgentResponse(agent=cv.agent_pb(agent), token=token)

    async def GetAgent(self, request, context):
        return pb.GetAgentResponse(agent=cv.agent_pb(await self.control.get_agent(request.name)))

    async def ListAgents(self, request, context):
        agents, token = await self.control.list_agents(request.page_size, request.page_token)
        return pb.ListAgentsResponse(agents=[cv.agent_pb(a) for a in agents], next_page_token=token)

    async def IssueToken(self, request, context):
        return pb.IssueTokenResponse(token=await self.control.issue_token(request.name, by=_actor()))

    async def RevokeAgent(self, request, context):
        agent = await self.control.revoke_agent(request.name, by=_actor())
        return pb.RevokeAgentResponse(agent=cv.agent_pb(agent))

    # -- groups
    async def PutGroup(self, request, context):
        group = await self.control.put_group(cv.group(request.group), by=_actor())
        return pb.PutGroupResponse(group=cv.group_pb(group))

    async def ListGroups(self, request, context):
        return pb.ListGroupsResponse(groups=[cv.group_pb(g) for g in await self.control.list_groups()])

    # -- grants
    async def CreateGrant(self, request, context):
        g = request.grant
        grantor = g.grantor
        acting = _acting_agent()
        if acting:
            grantor = grantor or acting
            if grantor != acting:
                raise errors.PermissionDenied(f"agent {acting!r} may only grant on its own space",
                                              reason="NOT_GRANTOR")
        expire = cv.seconds(g.expire_time) if g.HasField("expire_time") else None
        grant = await self.control.create_grant(
            grantor, g.grantee, cv.RESOURCE_KIND_NAMES.get(g.kind, ""), g.path_prefix,
            cv.PERMISSION_NAMES.get(g.permission, ""), expire, by=_actor())
        return pb.CreateGrantResponse(grant=cv.grant_pb(grant))

    async def RevokeGrant(self, request, context):
        await self.control.revoke_grant(request.id, grantor=_acting_agent(), by=_actor())
        return pb.RevokeGrantResponse()

    async def ListGrants(self, request, context):
        grants = await self.control.list_grants(request.grantor, request.grantee)
        acting = _acting_agent()
        if acting:  # an agent sees the grants it gave or holds
            grants = [g for g in grants if acting in (g.grantor, g.grantee)]
        return pb.ListGrantsResponse(grants=[cv.grant_pb(g) for g in grants])

    # -- confirmations
    async def CreateConfirmation(self, request, context):
        ttl = request.ttl.ToNanoseconds() / 1e9 if request.HasField("ttl") else None
        conf = await self.control.create_confirmation(
            request.agent, cv.action(request.action), cv.resource(request.resource),
            summary=request.summary, syscall_id=request.syscall_id, ttl=ttl)
        return pb.CreateConfirmationResponse(confirmation=cv.confirmation_pb(conf))

    async def GetConfirmation(self, request, context):
        conf = await self.control.get_confirmation(request.id)
        return pb.GetConfirmationResponse(confirmation=cv.confirmation_pb(conf))

    async def WaitConfirmation(self, request, context):
        conf = await self.control.wait_confirmation(request.id, context.time_remaining())
        return pb.WaitConfirmationResponse(confirmation=cv.confirmation_pb(conf))

    async def ListConfirmations(self, request, context):
        state = cv.STATE_NAMES.get(request.state, m.PENDING)
        confs = await self.control.list_confirmations(state)
        return pb.ListConfirmationsResponse(confirmations=[cv.confirmation_pb(c) for c in confs])

    async def ResolveConfirmation(self, request, context):
        conf = await self.control.resolve_confirmation(request.id, request.approve, by=_actor())
        return pb.ResolveConfirmationResponse(confirmation=cv.confirmation_pb(conf))

    # -- audit
    async def ListAuditEvents(self, request, context):
        events, token = await self.control.list_audit(request.principal, request.page_size,
                                                      request.page_token)
        return pb.ListAuditEventsResponse(events=[cv.audit_event_pb(e) for e in events],
                                          next_page_token=token)

    async def RecordAuditEvent(self, request, context):
        e = request.event
        event = await self.control.record_audit(
            e.principal, cv.action(e.action), cv.resource(e.resource),
            cv.DECISION_NAMES.get(e.decision, ""), e.reason, e.syscall_id)
        return pb.RecordAuditEventResponse(event=cv.audit_event_pb(event))
