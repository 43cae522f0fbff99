"""Who is calling and what they may do.

The body of a request never names the caller; only its credential does. Two
gates share one interface:

- `AccessGate` (the default): tokens are authenticated by the access service
  (cached for a few seconds), and every syscall is Checked before it is
  queued; irreversible operations wait for a person's confirmation.
- `DevGate` (development only, AIOS_KERNEL_AUTH=dev): the bearer token is
  taken as the agent's name, no secret is checked, and an agent may use only
  its own memory and files.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

from google.protobuf import timestamp_pb2

from aios.access.v1 import access_service_pb2 as apb
from services.access import client as access
from services.runtime import errors, logs
from services.scheduler.needs import needs

log = logs.get("scheduler")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Caller:
    name: str
    admin: bool = False
    # The access groups it belongs to (their quotas bind it too).
    groups: tuple[str, ...] = ()
    # Its bearer token, passed on when its call is forwarded to the replica
    # that owns the agent; the replica that forwarded it, if one did.
    credential: str = field(default="", repr=False)
    forwarded_by: str = ""
    # Whether the caller that the forwarder serves streams the call's tokens.
    forwarded_stream: bool = False


@dataclass
class Pending:
    """A check that needs a person's confirmation before the call may run."""

    action: str
    resource: object  # services.access.client.Resource
    summary: str

    def row(self) -> tuple:
        """As the journal keeps it."""
        r = self.resource
        return (self.action, r.kind, r.owner, r.name, self.summary)

    @classmethod
    def from_row(cls, row) -> "Pending":
        action, kind, owner, name, summary = row
        return cls(action, access.Resource(kind, owner, name), summary)


def bearer_token(metadata) -> str:
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise errors.Unauthenticated("authorization metadata must be 'Bearer <token>'",
                                             reason="MALFORMED_CREDENTIAL")
            return token.strip()
    return ""


class DevGate:
    mode = "dev"  # AIOS_KERNEL_AUTH

    async def caller(self, metadata) -> Caller:
        token = bearer_token(metadata)
        if not token:
            return Caller("anonymous", admin=True)
        if not _NAME.match(token):
            raise errors.Unauthenticated("in development mode the token is the agent name: "
                                         "letters, digits, '_', '.', '-'", reason="MALFORMED_CREDENTIAL")
        return Caller(token, admin=True)

    async def authorize(self, caller: Caller, entry) -> list[Pending]:
        for owner in _owners(entry.syscall):
            if owner != caller.name:
                what = "memory" if entry.kind == "memory" else "files"
                raise errors.PermissionDenied(
                    f"agent {caller.name!r} may not access the {what} of {owner!r} "
                    "(development mode has no grants)", reason="NO_GRANT")
        return []

    async def overwrites(self, entry) -> bool:
        return False

    async def may_use_model(self, caller: Caller, model: str) -> bool:
        return True

    async def confirm(self, caller: Caller, entry, pending: Pending, timeout: float) -> str:
        raise errors.Internal("development mode asks for no confirmations")

    async def share(self, caller: Caller, request):
        raise errors.Unimplemented("sharing needs the access service (AIOS_KERNEL_AUTH=access)")

    async def confirmations(self, admin_token: str) -> None:
        return None  # none are ever asked for

    async def resolve(self, admin_token: str, confirmation_id: str, approve: bool):
        raise errors.FailedPrecondition("development mode asks for no confirmations",
                                        reason="NO_CONFIRMATIONS")

    def quota_warning(self, entry, subject: str, limit, used: float) -> None:
        return None  # no audit log in development mode (the kernel's log has it)

    async def close(self) -> None:
        return None


def _owners(syscall) -> list[str]:
    call = syscall.WhichOneof("call")
    if call not in ("memory", "storage"):
        return []
    inner = getattr(syscall, call)
    op = inner.WhichOneof("op")
    req = getattr(inner, op)
    if op == "retrieve":
        return list(req.owners)
    return [req.owner] if hasattr(req, "owner") else []


@dataclass
class AccessGate:
    mode = "access"  # AIOS_KERNEL_AUTH (a class attribute, not a field)
    client: object  # services.access.client.AccessClient
    irreversible_tools: set[str] = field(default_factory=set)
    stat_file: object = None  # async (owner, path) -> bool: does the file exist?
    # Audit records on their way (a call never waits for one).
    _audits: set = field(default_factory=set)

    async def caller(self, metadata) -> Caller:
        token = bearer_token(metadata)
        if not token:
            raise errors.Unauthenticated("this call needs 'authorization: Bearer <token>' metadata",
                                         reason="MISSING_CREDENTIAL")
        principal = await self.client.authenticate(token)
        return Caller(principal.name, admin=principal.kind == access.ADMIN, groups=tuple(principal.groups))

    async def may_use_model(self, caller: Caller, model: str) -> bool:
        """Whether LLM syscalls of the caller on this model would be allowed."""
        if caller.admin:
            return True
        decision = await self.client.check(caller.name, access.EXECUTE, access.Resource(access.LLM, "", model))
        return decision.decision != access.DENY

    async def overwrites(self, entry) -> bool:
        """Whether a file write replaces an existing file (irreversible)."""
        call = entry.syscall
        if call.WhichOneof("call") != "storage" or call.storage.WhichOneof("op") != "write":
            return False
        req = call.storage.write
        if req.if_version_id:
            return True
        return await self.stat_file(req.owner, req.path) if self.stat_file else False

    async def authorize(self, caller: Caller, entry) -> list[Pending]:
        pending = []
        overwrite = await self.overwrites(entry)
        call = entry.syscall
        entry.create_only = (call.WhichOneof("call") == "storage" and call.storage.WhichOneof("op") == "write"
                             and not overwrite)
        for need in needs(caller.name, entry.syscall, irreversible_tools=self.irreversible_tools,
                          overwrite=overwrite):
            decision = await self.client.check(caller.name, need.action, need.resource,
                                               syscall_id=entry.id, irreversible=need.irreversible)
            if decision.decision == access.DENY:
                raise errors.PermissionDenied(decision.reason or "denied by access control",
                                              reason="ACCESS_DENIED")
            if decision.decision == access.NEEDS_CONFIRMATION:
                pending.append(Pending(need.action, need.resource, need.summary))
        return pending

    async def confirm(self, caller: Caller, entry, pending: Pending, timeout: float) -> str:
        """Ask for a confirmation; returns its id once created (the caller
        publishes it), then waits via `wait`."""
        conf = await self.client.create_confirmation(
            caller.name, pending.action, pending.resource, summary=pending.summary,
            syscall_id=entry.id, ttl=max(1.0, timeout))
        return conf.id

    async def wait(self, confirmation_id: str, timeout: float) -> None:
        await self.client.wait_approved(confirmation_id, timeout)

    async def confirmations(self, admin_token: str) -> list:
        """The pending confirmations, as the administrator holding `admin_token`
        may see them (the kernel's own credential may not)."""
        return await self.client.list_confirmations(admin_token)

    async def resolve(self, admin_token: str, confirmation_id: str, approve: bool):
        """Approve or deny one, as that administrator (audited under their name)."""
        return await self.client.resolve_confirmation(admin_token, confirmation_id, approve)

    async def share(self, caller: Caller, request):
        grant = apb.Grant(grantor=caller.name, grantee=request.grantee, kind=apb.RESOURCE_KIND_FILES,
                          path_prefix=request.path, permission=request.permission or apb.PERMISSION_READ)
        if request.HasField("ttl"):
            expire = timestamp_pb2.Timestamp()
            expire.FromNanoseconds(int((time.time() + request.ttl.ToNanoseconds() / 1e9) * 1e9))
            grant.expire_time.CopyFrom(expire)
        return await self.client.create_grant_pb(grant)

    def quota_warning(self, entry, subject: str, limit, used: float) -> None:
        """A soft quota limit passed: an audit event, in the background."""
        task = asyncio.ensure_future(self._audit_quota(entry.agent, entry.id, subject, limit, used))
        self._audits.add(task)
        task.add_done_callback(self._audits.discard)

    async def _audit_quota(self, agent: str, syscall_id: str, subject: str, limit, used: float) -> None:
        try:
            await self.client.record_audit(
                agent, access.EXECUTE, access.Resource(access.KERNEL, "", f"quota {subject} {limit.spec()}"),
                access.ALLOW, f"soft quota limit passed: {subject} {limit.spec()}, {used:.6g} used",
                syscall_id=syscall_id)
        except errors.AiosError as err:
            log.warning("quota warning not audited", subject=subject, error=err.message)

    async def close(self) -> None:
        for task in list(self._audits):
            task.cancel()
        await self.client.close()
