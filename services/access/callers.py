"""Who may call the access service, decided before any handler runs.

- The kernel, by its service credential: the methods it needs to enforce
  access (KERNEL_METHODS). Other services are refused (PERMISSION_DENIED).
- An administrator, by an admin token: every method.
- With service trust off (no service credentials configured, development and
  tests), KERNEL_METHODS admit any caller; administration still needs an
  admin token.
Agents' own tokens are never accepted here.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass

from services.runtime import errors, trust
from services.runtime.trust import Authorize, Trust

KERNEL_METHODS = frozenset({
    "Authenticate", "Check",
    "CreateConfirmation", "GetConfirmation", "WaitConfirmation",
    # ShareFile syscalls: the kernel grants on behalf of the calling agent.
    "CreateGrant", "RevokeGrant", "ListGrants",
    # Events the kernel decides itself (soft quota limits passed).
    "RecordAuditEvent",
})

ADMIN, SERVICE, ANONYMOUS = "admin", "service", "anonymous"


@dataclass(frozen=True)
class Caller:
    kind: str  # ADMIN, SERVICE or ANONYMOUS
    name: str = ""


current: contextvars.ContextVar[Caller] = contextvars.ContextVar("access_caller",
                                                                 default=Caller(ANONYMOUS))


def make_authorize(service_trust: Trust, admin_name: Callable[[str], str]) -> Authorize:
    """`admin_name(token)` names the administrator holding `token` ("" if none)."""

    def authorize(method: str, metadata) -> None:
        short = method.rsplit("/", 1)[-1]
        token = trust.bearer(metadata)
        if token:
            service = service_trust.identify(token) if service_trust.enabled else ""
            if service:
                if service == trust.KERNEL and short in KERNEL_METHODS:
                    current.set(Caller(SERVICE, service))
                    return
                raise errors.PermissionDenied(f"service {service!r} may not call {method}",
                                              reason="CALLER_NOT_ALLOWED")
            admin = admin_name(token)
            if admin:
                current.set(Caller(ADMIN, admin))
                return
        if not service_trust.enabled and short in KERNEL_METHODS:
            current.set(Caller(ANONYMOUS))
            return
        if token:
            raise errors.Unauthenticated("the credential is neither the kernel's nor an administrator's",
                                         reason="UNKNOWN_CREDENTIAL")
        what = "an administrator credential" if short not in KERNEL_METHODS else "a service credential"
        raise errors.Unauthenticated(f"{method} needs {what}", reason="MISSING_CREDENTIAL")

    return authorize
