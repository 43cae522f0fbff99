"""Who is calling: the agent behind a syscall's bearer token.

The body of a request never names the caller; only the credential does.
"""

from __future__ import annotations

import re

from services.runtime import errors

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def bearer_token(metadata) -> str:
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise errors.Unauthenticated("authorization metadata must be 'Bearer <token>'",
                                             reason="MALFORMED_CREDENTIAL")
            return token.strip()
    return ""


class DevAuthenticator:
    """Development mode, without the access service: the token is taken as the
    agent's name (no secret is checked), and a call without one runs as
    'anonymous'. Never use it where agents are not trusted."""

    async def agent(self, metadata) -> str:
        token = bearer_token(metadata)
        if not token:
            return "anonymous"
        if not _NAME.match(token):
            raise errors.Unauthenticated("in development mode the token is the agent name: "
                                         "letters, digits, '_', '.', '-'", reason="MALFORMED_CREDENTIAL")
        return token
