"""Wires the kernel onto the shared runtime."""

from __future__ import annotations

from aios.kernel.v1 import kernel_service_pb2 as kpb
from aios.kernel.v1 import kernel_service_pb2_grpc as kpb_grpc
from services.runtime.channels import channel
from services.runtime import errors, logs
from services.runtime.metrics import ServiceMetrics
from services.runtime.server import Service
from services.runtime.tls import TlsConfig
from services.access.client import AccessClient
from services.scheduler.auth import AccessGate, DevGate
from services.scheduler.catalog import ModelCatalog
from services.scheduler.cluster import Cluster
from services.scheduler.config import Config
from services.scheduler.db import Database, redacted
from services.scheduler.dispatch import Dispatcher
from services.scheduler.kernel import Kernel, Limits
from services.scheduler.http_door import HttpDoor
from services.scheduler.intake import Intake
from services.scheduler.journal import Journal
from services.scheduler.metrics import KernelMetrics
from services.scheduler.queues import PolicySettings
from services.scheduler.quotas import Quotas
from services.scheduler.servicer import KernelServicer
from services.scheduler.tools import ToolManager, builtin_tools

log = logs.get("scheduler")
SERVICE_NAME = kpb.DESCRIPTOR.services_by_name["KernelService"].full_name


async def build(config: Config) -> Service:
    # The kernel's own service credential goes with every call it makes.
    token = config.service_token
    llm_ch = channel(config.llm_addr, token)
    mem_ch = channel(config.memory_addr, token)
    st_ch = channel(config.storage_addr, token)
    catalog = ModelCatalog(llm_ch, config.default_llm_capacity, config.default_model)

    cluster: Cluster | None = None

    def capacity_of(resource: str) -> int:
        if resource.startswith("llm:"):
            # Replicas split the engines' slots; memory, storage and tools
            # scale on their own, so each replica keeps its full queue.
            total = catalog.capacity_of(resource)
            return cluster.share(total) if cluster is not None else total
        return config.service_capacity

    dispatcher = Dispatcher(llm_ch, mem_ch, st_ch)
    tools = ToolManager()
    # The built-in tools' file and memory operations go through the intake
    # (made below, once the kernel is) as syscalls of the calling agent.
    for tool in builtin_tools(lambda parent, syscall: intake.submit_for(parent, syscall)):
        tools.register(tool)
    for server in config.mcp_servers():
        await tools.add_mcp_server(server["name"], command=server.get("command"), url=server.get("url"),
                                   env=server.get("env"), overrides=server.get("tools"))
    dispatcher.tools = tools
    kernel = Kernel(
        dispatcher,
        PolicySettings(kind=config.policy, slice_tokens=config.slice_tokens,
                       aging_seconds=config.aging_seconds, quantum_tokens=config.quantum_tokens),
        Limits(per_agent_outstanding=config.per_agent_outstanding,
               queue_capacity=config.queue_capacity,
               default_capacity=config.service_capacity),
        history=config.history,
        capacity_of=capacity_of,
        cache_of=catalog.cache_of if config.cache_aware else None,
        cache_idle_seconds=config.cache_idle_seconds,
        journal=Journal(config.journal_path, max_age=config.journal_max_age, max_rows=config.journal_max_rows,
                        kernel_id=config.replica_id) if config.journal_path else None,
    )
    if config.advertise_address:
        cluster = Cluster(kernel.journal.db, config.replica_id, config.advertise_address, config.lease_seconds)
    service_metrics = ServiceMetrics("kernel", config.metrics_port)
    metrics = KernelMetrics(kernel, service_metrics.registry, top_agents=config.metrics_top_agents)
    kernel.observer = metrics
    # Quota counts share the journal's database (without one, they last as
    # long as the process).
    quota_db = kernel.journal.db if kernel.journal is not None else Database(":memory:")

    def quota_warning(entry, subject, limit, used) -> None:
        metrics.quota_warning(limit.metric)
        gate.quota_warning(entry, subject, limit, used)

    kernel.quotas = Quotas(quota_db, currency=config.currency, estimate_price=catalog.estimate_price,
                           count_memories=dispatcher.count_memories, on_warning=quota_warning)
    kernel.prices = catalog.prices
    if config.auth == "dev":
        gate = DevGate()
    else:
        gate = AccessGate(AccessClient(config.access_addr, token, auth_cache_seconds=config.auth_cache_seconds),
                          irreversible_tools={t.name for t in tools.tools.values() if t.irreversible},
                          stat_file=dispatcher.exists)
    dispatcher.share = gate.share
    # The services GetStatus probes (access is not called in development mode).
    services = {"llm_core": (config.llm_addr, llm_ch), "memory": (config.memory_addr, mem_ch),
                "storage": (config.storage_addr, st_ch),
                "access": (config.access_addr, gate.client.channel if config.auth == "access" else None)}
    intake = Intake(kernel, gate, catalog, config.default_timeout, tools, precheck=dispatcher.precheck,
                    cluster=cluster)
    servicer = KernelServicer(intake, services=services, auth_mode=config.auth)
    journal = kernel.journal
    if journal is not None:
        log.info("journal", target=redacted(config.journal_path))
    if cluster is not None:
        await cluster.start()
        # What this replica held in an earlier life, then what replicas that
        # are gone held for the agents it owns now.
        intake.recover(journal.unfinished([cluster.id]))

        def changed(joined: set[str], left: set[str]) -> None:
            if joined or left:
                kernel.resize()
            gone = journal.holders() - set(cluster.members)
            if gone:
                mine = [r for r in journal.unfinished(gone) if cluster.owns(r.entry.agent)]
                taken = journal.claim(mine)
                if taken:
                    log.info("calls taken over", count=len(taken), replicas=sorted(gone))
                    intake.recover(taken)

        cluster.on_change = changed
        changed(set(), set())
    elif journal is not None:
        intake.recover(journal.unfinished())
    door = HttpDoor(intake)
    http_port = None
    if config.http_port >= 0:
        # HTTPS on the gRPC port's certificate, when one is mounted (services/runtime/tls.py).
        ssl_context = TlsConfig.from_env().http_context()
        http_port = await door.start(config.host, config.http_port, ssl_context)
        scheme = "https" if ssl_context else "http"
        log.info("openai-compatible door", address=f"{scheme}://{config.host}:{http_port}/v1")

    async def close() -> None:
        await door.stop()
        # What is still queued, running or parked stays unfinished in the
        # journal, for the next kernel process; its callers are told to retry.
        kernel.journal = None
        if cluster is not None:
            await cluster.stop()
        for task in intake.resuming:
            task.cancel()
        for entry in list(kernel.table.live.values()):
            kernel.cancel(entry, errors.Unavailable("the kernel is shutting down: retry with the same request id"))
        for ch in (llm_ch, mem_ch, st_ch):
            await ch.close()
        await tools.close()
        await gate.close()
        if journal is not None:
            journal.close()
        else:
            quota_db.close()

    def drain() -> None:
        kernel.stopping = True

    return Service(
        names=[SERVICE_NAME],
        register=lambda server: kpb_grpc.add_KernelServiceServicer_to_server(servicer, server),
        close=close,
        drain=drain,
        metrics=service_metrics,
        http_port=http_port,
    )
