"""The one server runtime every service runs on.

`start_server` builds a grpc.aio server whose method handlers are wrapped with
what every call needs (services/runtime/interceptors.py), health
(grpc.health.v1) and server reflection, binds host:port (port 0 picks a free
one, for tests) and starts it. Health "" and the service's names follow its
readiness check, when it has one (services/runtime/health.py); "liveness"
stays SERVING while the process runs. Every call is counted and timed, and a
service's Prometheus registry is served over HTTP when it names a port
(services/runtime/metrics.py). `run` is what a service's `__main__` calls:
config from the environment, JSON logs, and a graceful stop on SIGTERM/SIGINT.

With TLS configured (services/runtime/tls.py) the port speaks TLS only. The
kubelet's gRPC probes cannot do TLS, so a service may also serve its health,
and nothing else, plainly on a port of its own (AIOS_HEALTH_PORT; -1, the
default, = none): the probes' port in Kubernetes (deploy/k8s/components/tls).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.runtime import logs, tracing
from services.runtime.config import ConfigError, Env
from services.runtime.health import LIVENESS, READY_EVERY_SECONDS, READY_TIMEOUT_SECONDS, Check, Readiness
from services.runtime.interceptors import Registrar
from services.runtime.metrics import ServiceMetrics
from services.runtime.tls import PLAIN, TlsConfig

# Inline file writes are up to 4 MiB; leave room for the envelope.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
GRACE_SECONDS = 5.0
HEALTH_PORT_VAR = "AIOS_HEALTH_PORT"

# Registers servicers on a server (the generated add_XServicer_to_server
# bound to a servicer instance).
Register = Callable[[aio.Server], None]


@dataclass
class Service:
    """What a service contributes to the runtime."""

    # Full names of its gRPC services, for health and reflection.
    names: Sequence[str]
    register: Register
    # Called after the server stopped accepting calls.
    close: Callable[[], Awaitable[None]] | None = None
    # Called first when the server stops, before calls in flight are cut.
    drain: Callable[[], None] | None = None
    # Refuses callers before any handler runs (service-to-service trust).
    authorize: Callable | None = None
    extra_tasks: list[asyncio.Task] = field(default_factory=list)
    # Whether its backends answer (None, or why not); polled every
    # `ready_every` seconds, each check bounded by `ready_timeout`.
    ready: Check | None = None
    ready_every: float = READY_EVERY_SECONDS
    ready_timeout: float = READY_TIMEOUT_SECONDS
    # The port its HTTP listener bound, if it has one (the kernel's door;
    # configured as 0, a free one).
    http_port: int | None = None
    # Its Prometheus registry and where to serve it (services/runtime/metrics.py);
    # None: the runtime's RPC metrics only, not served.
    metrics: ServiceMetrics | None = None


@dataclass
class RunningServer:
    server: aio.Server
    port: int
    health: health.aio.HealthServicer
    service: Service
    readiness: Readiness | None = None
    readiness_task: asyncio.Task | None = None
    metrics: ServiceMetrics | None = None
    # Where /metrics is served (None: not served).
    metrics_port: int | None = None
    # The plain health-only server and its port (None: none).
    health_server: aio.Server | None = None
    health_port: int | None = None

    async def stop(self, grace: float = GRACE_SECONDS) -> None:
        if self.service.drain is not None:
            self.service.drain()
        if self.readiness_task is not None:
            # Before close(): a check must not run on closed backends.
            self.readiness_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.readiness_task
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(None)
        for task in self.service.extra_tasks:
            task.cancel()
        # Ended before close(): none may still use what close() releases.
        await asyncio.gather(*self.service.extra_tasks, return_exceptions=True)
        if self.service.close is not None:
            await self.service.close()
        if self.metrics is not None:
            self.metrics.close()


async def start_server(service: Service, host: str = "127.0.0.1", port: int = 0, *,
                       tls: TlsConfig = PLAIN, health_port: int = -1) -> RunningServer:
    """Serve `service` on host:port (TLS when `tls` has a certificate) and,
    with `health_port` >= 0 (0: any free one), its health plainly there too."""
    metrics = service.metrics or ServiceMetrics(service.names[0] if service.names else "")
    server = aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            # Clients reconnect every few minutes, so replicas added behind a
            # Kubernetes Service get their share of calls (gRPC balances per
            # connection); the grace outlives the longest syscall deadline.
            ("grpc.max_connection_age_ms", 5 * 60 * 1000),
            ("grpc.max_connection_age_grace_ms", 15 * 60 * 1000),
            # gRPC core cancels calls past 1000 waiting to be picked up, which a
            # burst of 2,000 agents exceeds; admission and backpressure are the
            # kernel's queue limits (RESOURCE_EXHAUSTED), not silent CANCELLED.
            ("grpc.server.max_pending_requests", 100_000),
            ("grpc.server.max_pending_requests_hard_limit", 100_000),
        ],
    )
    service.register(Registrar(server, service.authorize, metrics.method))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = list(service.names)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    credentials = tls.server_credentials()
    if credentials is None:
        bound = server.add_insecure_port(f"{host}:{port}")
    else:
        bound = server.add_secure_port(f"{host}:{port}", credentials)
    if bound == 0:
        raise OSError(f"cannot bind {host}:{port}")
    health_server, health_bound = None, None
    if health_port >= 0:
        # Plain, and health only: what an unauthenticated prober may see.
        health_server = aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        health_bound = health_server.add_insecure_port(f"{host}:{health_port}")
        if health_bound == 0:
            raise OSError(f"cannot bind the health port {host}:{health_port}")
    serving = health_pb2.HealthCheckResponse.SERVING
    for name in ("", LIVENESS, *names):
        await health_servicer.set(name, serving)
    readiness = None
    if service.ready is not None:
        readiness = Readiness(health_servicer, names, service.ready,
                              every=service.ready_every, timeout=service.ready_timeout)
        # The first check before the first call: health is true from the start.
        await readiness.update()
    await server.start()
    try:
        if health_server is not None:
            await health_server.start()
        metrics_port = metrics.serve(host)
    except BaseException:
        await server.stop(None)
        if health_server is not None:
            await health_server.stop(None)
        raise
    running = RunningServer(server, bound, health_servicer, service, readiness,
                            metrics=metrics, metrics_port=metrics_port, health_server=health_server,
                            health_port=health_bound)
    if readiness is not None:
        running.readiness_task = asyncio.create_task(readiness.run(), name="readiness")
    return running


def run(
    name: str,
    load_config: Callable[[], object],
    build: Callable[[object], Awaitable[Service]],
) -> None:
    """Entry point of `python -m services.<name>`."""
    import os

    logs.configure(name, os.environ.get("AIOS_LOG_LEVEL", "INFO"),
                   json=os.environ.get("AIOS_LOG_FORMAT", "json") == "json")
    log = logs.get(name)
    try:
        config = load_config()
        tls = TlsConfig.from_env()
        health_port = Env("AIOS_").int(HEALTH_PORT_VAR, -1, minimum=-1)
        if health_port > 65535:
            raise ConfigError(f"{HEALTH_PORT_VAR}={health_port} is not a port")
    except ConfigError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # Off unless the OTEL_* variables turn export on (services/runtime/tracing.py).
    if exporter := tracing.setup(name.replace("_", "-")):
        log.info("traces", exporter=exporter)

    async def main() -> None:
        service = await build(config)
        running = await start_server(service, config.host, config.port, tls=tls, health_port=health_port)
        log.info("listening", address=f"{config.host}:{running.port}", services=list(service.names),
                 tls="mutual" if tls.require_client_auth else "on" if tls.serves_tls else "off")
        if running.health_port is not None:
            log.info("health", address=f"{config.host}:{running.health_port}")
        if running.metrics_port is not None:
            log.info("metrics", address=f"http://{config.host}:{running.metrics_port}/metrics")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
        await running.stop()
        log.info("stopped")

    asyncio.run(main())
