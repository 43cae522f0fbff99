"""AccessClient: how the kernel talks to the access service.

    access = AccessClient(config.access_addr, trust.Trust.from_env(trust.KERNEL).token)
    principal = await access.authenticate(token)           # raises errors.Unauthenticated
    decision = await access.check(principal, m.DELETE, m.Resource(m.FILES, owner, path),
                                  syscall_id=entry.id, irreversible=True)
    if decision.decision == m.NEEDS_CONFIRMATION:
        conf = await access.create_confirmation(principal.name, m.DELETE, resource,
                                                summary=..., syscall_id=entry.id, ttl=remaining)
        ...  # tell the agent: awaiting_confirmation(conf.id)
        await access.wait_approved(conf.id, timeout=remaining)   # raises when not approved
    await access.record_audit(principal.name, m.EXECUTE, m.Resource(m.LLM, "", model), m.ALLOW,
                              "soft token budget passed", syscall_id=entry.id)  # kernel-decided events

Authentication answers are cached in process for `auth_cache_seconds`
(default 5): a revoked token keeps working for at most that long in a
kernel that saw it just before. Check is never cached, so revoking a grant
takes effect on the next syscall. Failures are not cached.

Every error is an services.runtime.errors.AiosError rebuilt from the status
(UNAVAILABLE when the access service is down: the kernel must refuse the
syscall then, never allow it).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict

import grpc
from google.protobuf import duration_pb2

from aios.access.v1 import access_service_pb2 as pb
from aios.access.v1 import access_service_pb2_grpc as pb_grpc
from services.access import convert as cv
from services.access import model as m
# The vocabulary of a check, part of this client's interface: callers use
# these names and never import the access service's domain modules.
from services.access.model import (
    ADMIN, ALLOW, DELETE, DENY, EXECUTE, FILES, KERNEL, LLM, MEMORY, NEEDS_CONFIRMATION, READ, TOOL, WRITE,
    Principal, Resource,
)
from services.runtime import errors
from services.runtime.channels import channel
from services.runtime.status import from_rpc_error

__all__ = ["AccessClient", "ADMIN", "ALLOW", "DELETE", "DENY", "EXECUTE", "FILES", "LLM", "MEMORY",
           "NEEDS_CONFIRMATION", "READ", "TOOL", "WRITE", "Principal", "Resource"]

CACHE_ENTRIES = 10_000


class AccessClient:
    def __init__(self, address: str, service_token: str = "", *, auth_cache_seconds: float = 5.0,
                 timeout: float = 5.0, clock=time.monotonic) -> None:
        self._channel = channel(address, service_token)
        self._stub = pb_grpc.AccessServiceStub(self._channel)
        self.auth_cache_seconds = auth_cache_seconds
        self.timeout = timeout
        self._clock = clock
        # SHA-256 of the token -> (principal, expiry on the monotonic clock).
        self._auth_cache: OrderedDict[bytes, tuple[m.Principal, float]] = OrderedDict()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method, request, timeout: float | None = None, metadata=None):
        try:
            return await method(request, timeout=self.timeout if timeout is None else timeout,
                                metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    # -- identity
    async def authenticate(self, token: str) -> m.Principal:
        """The principal behind a bearer token; errors.Unauthenticated with reason
        MISSING_CREDENTIAL, MALFORMED_CREDENTIAL, UNKNOWN_CREDENTIAL or REVOKED_CREDENTIAL."""
        key = hashlib.sha256(token.encode("utf-8")).digest()
        now = self._clock()
        hit = self._auth_cache.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        reply = await self._call(self._stub.Authenticate, pb.AuthenticateRequest(token=token))
        principal = cv.principal(reply.principal)
        if self.auth_cache_seconds > 0:
            self._auth_cache[key] = (principal, now + self.auth_cache_seconds)
            self._auth_cache.move_to_end(key)
            while len(self._auth_cache) > CACHE_ENTRIES:
                self._auth_cache.popitem(last=False)
        return principal

    @property
    def channel(self) -> grpc.aio.Channel:
        return self._channel

    def forget(self, token: str | None = None) -> None:
        """Drop one cached authentication (or all)."""
        if token is None:
            self._auth_cache.clear()
        else:
            self._auth_cache.pop(hashlib.sha256(token.encode("utf-8")).digest(), None)

    # -- decisions
    async def check(self, principal: m.Principal | str, action: str, resource: m.Resource, *,
                    syscall_id: str = "", irreversible: bool = False) -> m.Decision:
        """Decision ALLOW, DENY or NEEDS_CONFIRMATION with its reason; audited."""
        name = principal if isinstance(principal, str) else principal.name
        request = pb.CheckRequest(principal=pb.Principal(name=name), action=cv.ACTIONS[action],
                                  resource=cv.resource_pb(resource), syscall_id=syscall_id,
                                  irreversible=irreversible)
        reply = await self._call(self._stub.Check, request)
        return m.Decision(cv.DECISION_NAMES.get(reply.decision, m.DENY), reply.reason)

    async def record_audit(self, principal: str, action: str, resource: m.Resource, decision: str,
                           reason: str, syscall_id: str = "") -> None:
        """Append an event the kernel decided to the audit log (e.g. a soft quota
        limit passed); `decision` is ALLOW, DENY or NEEDS_CONFIRMATION."""
        event = pb.AuditEvent(principal=principal, action=cv.ACTIONS[action],
                              resource=cv.resource_pb(resource), decision=cv.DECISIONS[decision],
                              reason=reason, syscall_id=syscall_id)
        await self._call(self._stub.RecordAuditEvent, pb.RecordAuditEventRequest(event=event))

    # -- confirmations
    async def create_confirmation(self, agent: str, action: str, resource: m.Resource, *,
                                  summary: str = "", syscall_id: str = "",
                                  ttl: float | None = None) -> m.Confirmation:
        request = pb.CreateConfirmationRequest(agent=agent, action=cv.ACTIONS[action],
                                               resource=cv.resource_pb(resource), summary=summary,
                                               syscall_id=syscall_id)
        if ttl is not None:
            request.ttl.CopyFrom(_duration(ttl))
        reply = await self._call(self._stub.CreateConfirmation, request)
        return cv.confirmation(reply.confirmation)

    async def get_confirmation(self, confirmation_id: str) -> m.Confirmation:
        reply = await self._call(self._stub.GetConfirmation, pb.GetConfirmationRequest(id=confirmation_id))
        return cv.confirmation(reply.confirmation)

    async def wait_confirmation(self, confirmation_id: str, timeout: float) -> m.Confirmation:
        """The confirmation once approved, denied or expired; errors.DeadlineExceeded
        when it is still pending after `timeout` seconds."""
        if timeout <= 0:
            raise errors.DeadlineExceeded(f"confirmation {confirmation_id} is still pending",
                                          reason="CONFIRMATION_PENDING")
        reply = await self._call(self._stub.WaitConfirmation,
                                 pb.WaitConfirmationRequest(id=confirmation_id), timeout=timeout)
        return cv.confirmation(reply.confirmation)

    async def wait_approved(self, confirmation_id: str, timeout: float) -> m.Confirmation:
        """Returns when a person approved; raises errors.PermissionDenied
        (CONFIRMATION_DENIED) when denied, errors.DeadlineExceeded
        (CONFIRMATION_EXPIRED or CONFIRMATION_PENDING) when nobody answered in time."""
        conf = await self.wait_confirmation(confirmation_id, timeout)
        if conf.state == m.APPROVED:
            return conf
        if conf.state == m.DENIED:
            raise errors.PermissionDenied(
                f"confirmation {conf.id} was denied by {conf.resolved_by or 'an operator'}",
                reason="CONFIRMATION_DENIED")
        raise errors.DeadlineExceeded(f"confirmation {conf.id} expired unanswered",
                                      reason="CONFIRMATION_EXPIRED")

    # The operator's own: these need an administrator's token (the kernel's
    # service credential may not list or answer confirmations), passed on
    # from the person at the kernel's console, who is audited as the resolver.
    async def list_confirmations(self, admin_token: str, state: str = m.PENDING) -> list[m.Confirmation]:
        reply = await self._call(self._stub.ListConfirmations,
                                 pb.ListConfirmationsRequest(state=cv.STATES[state]),
                                 metadata=_as_admin(admin_token))
        return [cv.confirmation(c) for c in reply.confirmations]

    async def resolve_confirmation(self, admin_token: str, confirmation_id: str, approve: bool) -> m.Confirmation:
        reply = await self._call(self._stub.ResolveConfirmation,
                                 pb.ResolveConfirmationRequest(id=confirmation_id, approve=approve),
                                 metadata=_as_admin(admin_token))
        return cv.confirmation(reply.confirmation)

    # -- grants (ShareFile syscalls; the call's x-aios-agent must be the grantor)
    async def create_grant(self, grantor: str, grantee: str, kind: str, *, path_prefix: str = "",
                           write: bool = False, ttl: float | None = None) -> m.Grant:
        grant = pb.Grant(grantor=grantor, grantee=grantee, kind=cv.RESOURCE_KINDS[kind],
                         path_prefix=path_prefix,
                         permission=pb.PERMISSION_READ_WRITE if write else pb.PERMISSION_READ)
        if ttl is not None:
            grant.expire_time.CopyFrom(cv.timestamp(time.time() + ttl))
        reply = await self._call(self._stub.CreateGrant, pb.CreateGrantRequest(grant=grant))
        return cv.grant(reply.grant)

    async def create_grant_pb(self, grant: pb.Grant) -> pb.Grant:
        """The same from a proto Grant (what a ShareFile syscall answers with)."""
        return (await self._call(self._stub.CreateGrant, pb.CreateGrantRequest(grant=grant))).grant

    async def revoke_grant(self, grant_id: str) -> None:
        await self._call(self._stub.RevokeGrant, pb.RevokeGrantRequest(id=grant_id))

    async def list_grants(self, grantor: str = "", grantee: str = "") -> list[m.Grant]:
        reply = await self._call(self._stub.ListGrants, pb.ListGrantsRequest(grantor=grantor, grantee=grantee))
        return [cv.grant(g) for g in reply.grants]


def _as_admin(token: str) -> list[tuple[str, str]]:
    """Metadata that replaces the service credential with an admin's token."""
    return [("authorization", f"Bearer {token}")]


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d

