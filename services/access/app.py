"""Wires the access service onto the shared runtime."""

from __future__ import annotations

import asyncio

from prometheus_client import Counter

from aios.access.v1 import access_service_pb2 as pb
from aios.access.v1 import access_service_pb2_grpc as pb_grpc
from services.access import callers
from services.access import model as m
from services.access.config import Config
from services.access.control import AccessControl
from services.access.servicer import AccessServicer
from services.access.store import Store
from services.runtime import logs, sql, trust
from services.runtime.metrics import ServiceMetrics
from services.runtime.server import Service

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AccessService"].full_name

log = logs.get("access")


async def build(config: Config) -> Service:
    # Off the event loop: on PostgreSQL it may wait for another replica's migration.
    store = await asyncio.to_thread(Store, config.store_target, sync_full=config.db_sync_full)
    log.info("access store", target=sql.redacted(config.store_target), schema_version=store.schema_version)
    control = AccessControl(store, confirmation_ttl=config.confirmation_ttl,
                            max_confirmation_ttl=config.max_confirmation_ttl)
    try:
        if await control.bootstrap(config.admin_name, config.admin_token_file):
            log.info("wrote the administrator token", path=str(config.admin_token_file))
        elif not config.admin_token_file.exists():
            # Replicas on separate volumes: the one that bootstrapped holds the file.
            log.warning("the administrator token was issued by another replica and is not here; "
                        "mount one Secret as AIOS_ACCESS_ADMIN_TOKEN_FILE on every replica",
                        path=str(config.admin_token_file))
    except BaseException:
        store.close()
        raise
    service_trust = trust.Trust.from_tokens(trust.ACCESS, dict(config.service_tokens))
    if not service_trust.enabled:
        log.warning("no service credentials configured: service trust is off")
    metrics = ServiceMetrics("access", config.metrics_port)
    checks = Counter("aios_access_checks", "Check decisions", ["action", "decision"], registry=metrics.registry)
    for action in m.ACTIONS:
        for decision in (m.ALLOW, m.DENY, m.NEEDS_CONFIRMATION):
            checks.labels(action, decision)  # 0 before the first, so rates start at once
    servicer = AccessServicer(control, decided=lambda action, decision: checks.labels(action, decision).inc())

    async def close() -> None:
        store.close()

    return Service(
        names=[SERVICE_NAME],
        register=lambda server: pb_grpc.add_AccessServiceServicer_to_server(servicer, server),
        close=close,
        authorize=callers.make_authorize(service_trust, control.admin_name),
        metrics=metrics,
    )
