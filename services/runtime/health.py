"""Health that tells the truth: a service's readiness follows its backends.

A service may give the runtime a readiness check (an async callable that
returns None when its backends answer, else a short reason). `Readiness`
runs it every couple of seconds, bounded by a timeout, and sets the
grpc.health.v1 status of "" and the service's names to SERVING or
NOT_SERVING, logging each change once. It recovers by itself: the next check
that passes sets SERVING again.

`LIVENESS` is a health name of its own that stays SERVING while the process
runs. A liveness probe must not fail because a backend is away: that would
restart-loop pods whose S3 or model server is down, which no restart fixes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from grpc_health.v1 import health, health_pb2

from services.runtime import logs

LIVENESS = "liveness"
READY_EVERY_SECONDS = 2.0
READY_TIMEOUT_SECONDS = 1.0

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# None when ready, else why not (a few words, for the log).
Check = Callable[[], Awaitable[str | None]]

log = logs.get("health")


async def check_once(ready: Check, timeout: float = READY_TIMEOUT_SECONDS) -> str | None:
    """Why the service is not ready, or None. A check that fails or does not
    answer within `timeout` is a reason too: it never raises."""
    try:
        async with asyncio.timeout(timeout):
            return await ready()
    except TimeoutError:
        return f"readiness check did not answer within {timeout:g} s"
    except Exception as exc:  # noqa: BLE001 - any failure of the check means not ready
        return f"readiness check failed: {type(exc).__name__}: {exc}"[:300]


class Readiness:
    """Keeps the health of "" and `names` in step with a readiness check."""

    def __init__(self, servicer: health.aio.HealthServicer, names: Sequence[str], ready: Check, *,
                 every: float = READY_EVERY_SECONDS, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        self.servicer = servicer
        self.names = ["", *names]
        self.ready = ready
        self.every = every
        self.timeout = timeout
        # A fresh HealthServicer says SERVING; only a change is logged.
        self.serving = True
        self.reason: str | None = None

    async def update(self) -> None:
        self.reason = await check_once(self.ready, self.timeout)
        serving = self.reason is None
        if serving == self.serving:
            return
        self.serving = serving
        for name in self.names:
            await self.servicer.set(name, SERVING if serving else NOT_SERVING)
        if serving:
            log.info("ready again", services=self.names[1:])
        else:
            log.warning("not ready", services=self.names[1:], reason=self.reason)

    async def run(self) -> None:
        """Check every `every` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.every)
            await self.update()
