"""Request-scoped facts, read once per call by the server interceptor.

Handlers and logs read them from here; outgoing calls to other services copy
them into metadata so a request id follows a syscall through every service.
"""

from __future__ import annotations

import contextvars

REQUEST_ID_KEY = "x-request-id"
# The agent a service-to-service call acts for (set by the kernel only).
AGENT_KEY = "x-aios-agent"
AUTHORIZATION_KEY = "authorization"
# The kernel replica that forwarded a call to the agent's owner (services/scheduler/cluster.py).
FORWARDED_KEY = "x-aios-forwarded-by"
# "1" when the forwarded call's own caller reads its tokens as they come.
FORWARDED_STREAM_KEY = "x-aios-forwarded-stream"

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
agent: contextvars.ContextVar[str] = contextvars.ContextVar("agent", default="")
