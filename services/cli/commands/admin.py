"""`aios agent|grant|confirm|audit|group`: administration through the access service.

They take the options of every command (--kernel, --data, --token,
--timeout) and use the administrator credential: --token, else
$AIOS_ADMIN_TOKEN, else <data>/admin.token, which the access service wrote
at its first start. The access service is found at --access-addr, else
$AIOS_ACCESS_ADDR, else where the kernel at --kernel says it is, else
127.0.0.1:50055.
"""

from __future__ import annotations

import os
import sys
import time

from services.cli import common
from services.cli.common import CliError

ACCESS_ADDR = "127.0.0.1:50055"


def admin_token(args) -> str:
    return common.credential(args)


def access_address(args) -> str:
    """--access-addr, $AIOS_ACCESS_ADDR, the kernel's word, or the default."""
    explicit = args.access_addr or os.environ.get("AIOS_ACCESS_ADDR", "")
    if explicit:
        return explicit
    from aios.sdk import AiosError, Client

    try:
        with Client(common.kernel_address(args), admin_token(args), timeout=min(args.timeout, 5.0),
                    **common.tls_options(args)) as kernel:
            for service in kernel.get_status().services:
                if service.name == "access" and service.address:
                    return service.address
    except AiosError:
        pass  # an older or unreachable kernel: the default then
    except ValueError as exc:  # a TLS option names a file that cannot be read
        raise CliError(str(exc)) from None
    return ACCESS_ADDR


def _stub(args):
    from aios.access.v1 import access_service_pb2_grpc as pb_grpc

    # The same TLS options as for the kernel (one CA signs both in a cluster).
    channel = common.grpc_channel(args, args.resolved_access_addr)
    return channel, pb_grpc.AccessServiceStub(channel)


def _call(args, method: str, request):
    """One admin RPC; returns the reply or raises CliError with the status."""
    import grpc

    token = admin_token(args)
    if not getattr(args, "resolved_access_addr", ""):
        args.resolved_access_addr = access_address(args)
    channel, stub = _stub(args)
    try:
        return getattr(stub, method)(request, timeout=args.timeout,
                                     metadata=[("authorization", f"Bearer {token}")])
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            raise CliError(f"no access service answers at {args.resolved_access_addr} ({exc.details()}); "
                           "start the stack with `aios up`, or point at it with --access-addr, "
                           "AIOS_ACCESS_ADDR or --kernel") from None
        raise CliError(f"{exc.code().name}: {exc.details()}") from None
    finally:
        channel.close()


def _run(fn):
    def wrapped(args) -> int:
        try:
            return fn(args) or 0
        except CliError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    return wrapped


def _when(ts) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts.seconds))


def _enum(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


# -- agents
@_run
def cmd_agent_create(args):
    from aios.access.v1 import access_service_pb2 as pb

    reply = _call(args, "CreateAgent", pb.CreateAgentRequest(name=args.name, groups=args.group or [],
                                                             tenant=args.tenant))
    print(f"agent {reply.agent.name!r} created in groups {list(reply.agent.groups)}; "
          "its token is shown only now:", file=sys.stderr)
    print(reply.token)


@_run
def cmd_agent_token(args):
    from aios.access.v1 import access_service_pb2 as pb

    reply = _call(args, "IssueToken", pb.IssueTokenRequest(name=args.name))
    print(f"new token for {args.name!r} (earlier ones stay valid until `aios agent revoke`):",
          file=sys.stderr)
    print(reply.token)


@_run
def cmd_agent_ls(args):
    from aios.access.v1 import access_service_pb2 as pb

    agents, token = [], ""
    while True:
        reply = _call(args, "ListAgents", pb.ListAgentsRequest(page_size=1000, page_token=token))
        agents += reply.agents
        token = reply.next_page_token
        if not token:
            break
    common.table(("AGENT", "GROUPS", "TOKENS", "STATE", "CREATED"),
                 [(a.name, ",".join(a.groups), a.active_tokens, "revoked" if a.revoked else "active",
                   _when(a.create_time)) for a in agents], right=(2,), empty="no agents")


@_run
def cmd_agent_revoke(args):
    from aios.access.v1 import access_service_pb2 as pb

    reply = _call(args, "RevokeAgent", pb.RevokeAgentRequest(name=args.name))
    print(f"agent {reply.agent.name!r} revoked: every token refused from now "
          "(kernels may accept a cached one for a few seconds)")


# -- grants
@_run
def cmd_grant_create(args):
    from aios.access.v1 import access_service_pb2 as pb

    grant = pb.Grant(grantor=args.grantor, grantee=args.grantee,
                     kind=pb.RESOURCE_KIND_MEMORY if args.kind == "memory" else pb.RESOURCE_KIND_FILES,
                     path_prefix=args.path,
                     permission=pb.PERMISSION_READ_WRITE if args.write else pb.PERMISSION_READ)
    if args.ttl is not None:
        grant.expire_time.FromNanoseconds(int((time.time() + args.ttl) * 1e9))
    reply = _call(args, "CreateGrant", pb.CreateGrantRequest(grant=grant))
    print(reply.grant.id)


@_run
def cmd_grant_ls(args):
    from aios.access.v1 import access_service_pb2 as pb

    reply = _call(args, "ListGrants", pb.ListGrantsRequest(grantor=args.grantor, grantee=args.grantee))
    common.table(("ID", "FROM", "TO", "KIND", "PERMISSION", "PATH", "EXPIRES"), [
        (g.id, g.grantor, g.grantee, _enum(pb.ResourceKind.Name(g.kind), "RESOURCE_KIND_"),
         _enum(pb.Permission.Name(g.permission), "PERMISSION_"), g.path_prefix or "*",
         _when(g.expire_time) if g.HasField("expire_time") else "never") for g in reply.grants],
        empty="no grants")


@_run
def cmd_grant_revoke(args):
    from aios.access.v1 import access_service_pb2 as pb

    _call(args, "RevokeGrant", pb.RevokeGrantRequest(id=args.id))
    print(f"grant {args.id} revoked")


# -- confirmations
def _resource(pb, r) -> str:
    kind = _enum(pb.ResourceKind.Name(r.kind), "RESOURCE_KIND_")
    if r.owner:
        return f"{kind}:{r.owner}:{r.name}" if r.name else f"{kind}:{r.owner}"
    return f"{kind}:{r.name}"


@_run
def cmd_confirm_ls(args):
    from aios.access.v1 import access_service_pb2 as pb

    state = pb.ConfirmationState.Value(f"CONFIRMATION_STATE_{args.state.upper()}")
    reply = _call(args, "ListConfirmations", pb.ListConfirmationsRequest(state=state))
    common.table(("ID", "AGENT", "ACTION", "RESOURCE", "EXPIRES", "SUMMARY"), [
        (c.id, c.agent, _enum(pb.Action.Name(c.action), "ACTION_"), _resource(pb, c.resource)[:32],
         _when(c.expire_time), c.summary) for c in reply.confirmations], empty=f"no {args.state} confirmations")


def _resolve(args, approve: bool):
    from aios.access.v1 import access_service_pb2 as pb

    reply = _call(args, "ResolveConfirmation", pb.ResolveConfirmationRequest(id=args.id, approve=approve))
    state = _enum(pb.ConfirmationState.Name(reply.confirmation.state), "CONFIRMATION_STATE_")
    print(f"confirmation {args.id} {state}")


@_run
def cmd_confirm_approve(args):
    _resolve(args, True)


@_run
def cmd_confirm_deny(args):
    _resolve(args, False)


# -- audit and groups
@_run
def cmd_audit(args):
    from aios.access.v1 import access_service_pb2 as pb

    reply = _call(args, "ListAuditEvents", pb.ListAuditEventsRequest(principal=args.agent,
                                                                     page_size=args.limit))
    common.table(("ID", "TIME", "PRINCIPAL", "ACTION", "RESOURCE", "DECISION", "REASON"), [
        (e.id, _when(e.time), e.principal or "?", _enum(pb.Action.Name(e.action), "ACTION_") if e.action else "-",
         _resource(pb, e.resource)[:32], _enum(pb.Decision.Name(e.decision), "DECISION_"), e.reason)
        for e in reversed(reply.events)], right=(0,), empty="no audit events")  # oldest first, like a log


@_run
def cmd_group_ls(args):
    from aios.access.v1 import access_service_pb2 as pb

    reply = _call(args, "ListGroups", pb.ListGroupsRequest())
    for g in reply.groups:
        print(f"{g.name}: {g.description}")
        for r in g.rules:
            kind = _enum(pb.ResourceKind.Name(r.kind), "RESOURCE_KIND_") if r.kind else "any"
            actions = ",".join(_enum(pb.Action.Name(a), "ACTION_") for a in r.actions) or "any"
            effect = _enum(pb.Effect.Name(r.effect), "EFFECT_")
            only = " (irreversible only)" if r.irreversible_only else ""
            print(f"  {effect:<8} {actions:<20} {kind:<7} {r.name_pattern or '*'}{only}")


def _access_args(p) -> None:
    common.common_args(p, admin=True, timeout=30.0)
    p.add_argument("--access-addr", default="", metavar="ADDR",
                   help="access service address (default $AIOS_ACCESS_ADDR, else where the kernel says, "
                        f"else {ACCESS_ADDR})")


def _leaf(parent, name: str, func, help_text: str):
    p = parent.add_parser(name, help=help_text)
    _access_args(p)
    p.set_defaults(func=func)
    return p


def register(sub, client_args) -> None:
    agent = sub.add_parser("agent", help="agent identities and tokens")
    asub = agent.add_subparsers(dest="agent_command", required=True)
    p = _leaf(asub, "create", cmd_agent_create, "register an agent and print its token")
    p.add_argument("name", help="the agent's name (letters, digits, '_', '.', '-')")
    p.add_argument("--group", action="append", help="privilege group (repeatable; default agents)")
    p.add_argument("--tenant", default="", help="the tenant whose part of memory it uses (default none)")
    _leaf(asub, "ls", cmd_agent_ls, "list agents")
    p = _leaf(asub, "revoke", cmd_agent_revoke, "revoke every token of an agent")
    p.add_argument("name", help="the agent")
    p = _leaf(asub, "token", cmd_agent_token, "issue another token (after a revoke: rotation)")
    p.add_argument("name", help="the agent")

    grant = sub.add_parser("grant", help="grants between agents on memory or files")
    gsub = grant.add_subparsers(dest="grant_command", required=True)
    p = _leaf(gsub, "create", cmd_grant_create, "let one agent use another's memory or files")
    p.add_argument("--from", dest="grantor", required=True, help="the owner of the space")
    p.add_argument("--to", dest="grantee", required=True, help="the agent receiving access")
    p.add_argument("--kind", required=True, choices=["memory", "files"], help="memory or files")
    p.add_argument("--path", default="", help="path or folder prefix (default: everything)")
    p.add_argument("--write", action="store_true", help="read and write (default read only)")
    p.add_argument("--ttl", type=float, default=None, help="seconds until it expires (default never)")
    p = _leaf(gsub, "ls", cmd_grant_ls, "list active grants")
    p.add_argument("--from", dest="grantor", default="", help="only grants of this owner")
    p.add_argument("--to", dest="grantee", default="", help="only grants to this agent")
    p = _leaf(gsub, "revoke", cmd_grant_revoke, "revoke a grant")
    p.add_argument("id", help="the grant's id (aios grant ls)")

    confirm = sub.add_parser("confirm", help="operations waiting for a person's approval")
    csub = confirm.add_subparsers(dest="confirm_command", required=True)
    p = _leaf(csub, "ls", cmd_confirm_ls, "list confirmations (pending by default)")
    p.add_argument("--state", default="pending", choices=["pending", "approved", "denied", "expired"],
                   help="which ones (default pending)")
    p = _leaf(csub, "approve", cmd_confirm_approve, "approve a parked operation")
    p.add_argument("id", help="the confirmation's id (aios confirm ls)")
    p = _leaf(csub, "deny", cmd_confirm_deny, "deny a parked operation")
    p.add_argument("id", help="the confirmation's id (aios confirm ls)")

    p = _leaf(sub, "audit", cmd_audit, "the audit log, oldest first")
    p.add_argument("--agent", default="", help="only this principal's events")
    p.add_argument("--limit", type=int, default=100, help="the most recent N events (default 100)")

    group = sub.add_parser("group", help="privilege groups")
    grsub = group.add_subparsers(dest="group_command", required=True)
    _leaf(grsub, "ls", cmd_group_ls, "list groups and their rules")
