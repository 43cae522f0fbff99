"""Proto <-> domain values of the access service (used by servicer and client)."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from aios.access.v1 import access_service_pb2 as pb
from services.access import model as m

PRINCIPAL_KINDS = {m.AGENT: pb.PRINCIPAL_KIND_AGENT, m.ADMIN: pb.PRINCIPAL_KIND_ADMIN,
                   m.SERVICE: pb.PRINCIPAL_KIND_SERVICE}
RESOURCE_KINDS = {m.LLM: pb.RESOURCE_KIND_LLM, m.MEMORY: pb.RESOURCE_KIND_MEMORY,
                  m.FILES: pb.RESOURCE_KIND_FILES, m.TOOL: pb.RESOURCE_KIND_TOOL,
                  m.KERNEL: pb.RESOURCE_KIND_KERNEL}
ACTIONS = {m.READ: pb.ACTION_READ, m.WRITE: pb.ACTION_WRITE, m.DELETE: pb.ACTION_DELETE,
           m.EXECUTE: pb.ACTION_EXECUTE, m.ADMINISTER: pb.ACTION_ADMIN}
DECISIONS = {m.ALLOW: pb.DECISION_ALLOW, m.DENY: pb.DECISION_DENY,
             m.NEEDS_CONFIRMATION: pb.DECISION_NEEDS_CONFIRMATION}
EFFECTS = {m.ALLOW: pb.EFFECT_ALLOW, m.DENY: pb.EFFECT_DENY, m.CONFIRM: pb.EFFECT_CONFIRM}
PERMISSIONS = {m.PERMIT_READ: pb.PERMISSION_READ, m.PERMIT_READ_WRITE: pb.PERMISSION_READ_WRITE}
STATES = {m.PENDING: pb.CONFIRMATION_STATE_PENDING, m.APPROVED: pb.CONFIRMATION_STATE_APPROVED,
          m.DENIED: pb.CONFIRMATION_STATE_DENIED, m.EXPIRED: pb.CONFIRMATION_STATE_EXPIRED}


def _inverse(table: dict) -> dict:
    return {v: k for k, v in table.items()}


PRINCIPAL_KIND_NAMES = _inverse(PRINCIPAL_KINDS)
RESOURCE_KIND_NAMES = _inverse(RESOURCE_KINDS)
ACTION_NAMES = _inverse(ACTIONS)
DECISION_NAMES = _inverse(DECISIONS)
EFFECT_NAMES = _inverse(EFFECTS)
PERMISSION_NAMES = _inverse(PERMISSIONS)
STATE_NAMES = _inverse(STATES)


def timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def seconds(ts: timestamp_pb2.Timestamp) -> float:
    return ts.ToNanoseconds() / 1e9


# -- domain -> proto
def principal_pb(p: m.Principal) -> pb.Principal:
    return pb.Principal(name=p.name, kind=PRINCIPAL_KINDS.get(p.kind, pb.PRINCIPAL_KIND_UNSPECIFIED),
                        groups=list(p.groups), tenant=p.tenant)


def resource_pb(r: m.Resource) -> pb.Resource:
    return pb.Resource(kind=RESOURCE_KINDS.get(r.kind, pb.RESOURCE_KIND_UNSPECIFIED), owner=r.owner,
                       name=r.name)


def rule_pb(r: m.Rule) -> pb.Rule:
    return pb.Rule(kind=RESOURCE_KINDS.get(r.kind, pb.RESOURCE_KIND_UNSPECIFIED),
                   actions=[ACTIONS[a] for a in r.actions], name_pattern=r.name_pattern,
                   effect=EFFECTS[r.effect], irreversible_only=r.irreversible_only)


def group_pb(g: m.Group) -> pb.Group:
    return pb.Group(name=g.name, description=g.description, rules=[rule_pb(r) for r in g.rules])


def agent_pb(a: m.Agent) -> pb.Agent:
    return pb.Agent(name=a.name, groups=list(a.groups), tenant=a.tenant,
                    create_time=timestamp(a.create_time), revoked=a.revoked,
                    active_tokens=a.active_tokens)


def grant_pb(g: m.Grant) -> pb.Grant:
    out = pb.Grant(id=g.id, grantor=g.grantor, grantee=g.grantee, kind=RESOURCE_KINDS[g.kind],
                   path_prefix=g.path_prefix, permission=PERMISSIONS[g.permission],
                   create_time=timestamp(g.create_time))
    if g.expire_time is not None:
        out.expire_time.CopyFrom(timestamp(g.expire_time))
    return out


def confirmation_pb(c: m.Confirmation) -> pb.Confirmation:
    return pb.Confirmation(
        id=c.id, agent=c.agent, action=ACTIONS.get(c.action, pb.ACTION_UNSPECIFIED),
        resource=resource_pb(c.resource), summary=c.summary, syscall_id=c.syscall_id,
        state=STATES[c.state], create_time=timestamp(c.create_time),
        expire_time=timestamp(c.expire_time), resolved_by=c.resolved_by)


def audit_event_pb(e: m.AuditEvent) -> pb.AuditEvent:
    return pb.AuditEvent(
        id=e.id, time=timestamp(e.time), principal=e.principal,
        action=ACTIONS.get(e.action, pb.ACTION_UNSPECIFIED), resource=resource_pb(e.resource),
        decision=DECISIONS.get(e.decision, pb.DECISION_UNSPECIFIED), reason=e.reason,
        syscall_id=e.syscall_id)


# -- proto -> domain (unknown enum values become "", which the domain refuses)
def principal(p: pb.Principal) -> m.Principal:
    return m.Principal(name=p.name, kind=PRINCIPAL_KIND_NAMES.get(p.kind, ""), groups=tuple(p.groups),
                       tenant=p.tenant)


def resource(r: pb.Resource) -> m.Resource:
    return m.Resource(kind=RESOURCE_KIND_NAMES.get(r.kind, ""), owner=r.owner, name=r.name)


def action(a: int) -> str:
    return ACTION_NAMES.get(a, "")


def rule(r: pb.Rule) -> m.Rule:
    return m.Rule(kind=RESOURCE_KIND_NAMES.get(r.kind, ""),
                  actions=tuple(ACTION_NAMES.get(a, "") for a in r.actions),
                  name_pattern=r.name_pattern or "*", effect=EFFECT_NAMES.get(r.effect, ""),
                  irreversible_only=r.irreversible_only)


def group(g: pb.Group) -> m.Group:
    return m.Group(name=g.name, description=g.description, rules=tuple(rule(r) for r in g.rules))


def agent(a: pb.Agent) -> m.Agent:
    return m.Agent(name=a.name, groups=tuple(a.groups), tenant=a.tenant,
                   create_time=seconds(a.create_time), revoked=a.revoked, active_tokens=a.active_tokens)


def grant(g: pb.Grant) -> m.Grant:
    return m.Grant(id=g.id, grantor=g.grantor, grantee=g.grantee,
                   kind=RESOURCE_KIND_NAMES.get(g.kind, ""), path_prefix=g.path_prefix,
                   permission=PERMISSION_NAMES.get(g.permission, ""),
                   create_time=seconds(g.create_time),
                   expire_time=seconds(g.expire_time) if g.HasField("expire_time") else None)


def confirmation(c: pb.Confirmation) -> m.Confirmation:
    return m.Confirmation(id=c.id, agent=c.agent, action=action(c.action), resource=resource(c.resource),
                          summary=c.summary, syscall_id=c.syscall_id, state=STATE_NAMES.get(c.state, ""),
                          create_time=seconds(c.create_time), expire_time=seconds(c.expire_time),
                          resolved_by=c.resolved_by)
