"""Kernel replicas that share the work.

Replicas on one journal database (PostgreSQL) find each other by leases: each
writes its id, the address the others reach it at and a lease end into the
`kernels` table every LEASE/3 seconds, and counts as live while its lease
lasts. An agent belongs to one live replica, chosen by rendezvous hashing of
the agent's name over the live ids (when a replica joins or leaves, only the
agents that move to or from it change owner). A call that reaches another
replica is forwarded to the owner (one hop, with the caller's own
credential, so the owner runs the whole intake); a forwarded call is never
forwarded again, so replicas whose views differ for a moment cannot pass a
call around.

Each replica keeps a share of every model's capacity (its engines' slots
divided over the live replicas, the remainder to the first ids), so all
replicas together put no more calls in flight than the engines batch.

When a replica's lease runs out (it died), the others take over what it had
accepted and not finished: each claims from the journal the calls of the
agents it now owns (a compare-and-set on the row's kernel column, so a call
is taken over once) and queues or parks them again, as a restarted kernel
does with its own. A retry that reaches the new owner before that sweep
claims its call there and then.

A replica that cannot renew its lease stops taking calls (UNAVAILABLE):
the others will soon take its agents, and it must not serve them too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

import grpc

from aios.kernel.v1 import kernel_service_pb2 as kpb
from aios.kernel.v1 import kernel_service_pb2_grpc as kpb_grpc
from services.runtime import errors, logs, rendezvous, sql, status
from services.runtime.channels import channel
from services.runtime.context import AUTHORIZATION_KEY, FORWARDED_KEY, FORWARDED_STREAM_KEY
from services.scheduler import events as ev
from services.scheduler.db import Database
from services.scheduler.table import FAILED, SUCCEEDED, Entry

log = logs.get("scheduler")

SCHEMA = """
CREATE TABLE IF NOT EXISTS kernels (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    lease_until REAL NOT NULL,
    joined REAL NOT NULL
)
"""
# Rows of replicas whose lease ended this long ago are dropped.
FORGET_AFTER = 3600.0
# Seconds a forwarder waits for the owner to cancel a call its caller left.
CANCEL_TIMEOUT = 5.0
# The name a replica's TLS certificate carries.
TLS_NAME = "kernel"


def owner(agent: str, members: Iterable[str]) -> str:
    """The member an agent belongs to, by rendezvous hashing of its name."""
    return rendezvous.winner(agent, members)


def share(total: int, me: str, members: Iterable[str]) -> int:
    """This member's part of `total` slots: an equal split, the remainder to
    the first ids; at least 1 (a model with fewer slots than replicas is
    overfilled by the difference rather than unusable on some replicas)."""
    ranked = sorted(members)
    if me not in ranked:
        return max(1, total)
    n = len(ranked)
    return max(1, total // n + (1 if ranked.index(me) < total % n else 0))


class Cluster:
    """This replica's view of the live replicas, kept by its lease loop."""

    def __init__(self, db: Database, replica_id: str, address: str, lease_seconds: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.id = replica_id
        self.address = address
        self.lease = lease_seconds
        self.clock = clock
        self.members: dict[str, str] = {}  # live id -> address
        self._renewed = 0.0  # monotonic time of the last renewal
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._task: asyncio.Task | None = None
        self.closing = False
        # Called with (joined, left) ids after the view changed.
        self.on_change: Callable[[set[str], set[str]], None] = lambda joined, left: None
        sql.migrate(db.execute, "kernels", [SCHEMA], postgres=db.postgres)

    # -- membership

    def renew(self) -> tuple[set[str], set[str]]:
        """Extend this replica's lease and read the live ones; returns the ids
        that joined and left since the last read."""
        now = self.clock()
        self.db.execute(
            "INSERT INTO kernels (id, address, lease_until, joined) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET address = excluded.address, lease_until = excluded.lease_until",
            (self.id, self.address, now + self.lease, now))
        rows = self.db.execute("SELECT id, address FROM kernels WHERE lease_until > ?", (now,)).fetchall()
        self._renewed = time.monotonic()
        live = {row[0]: row[1] for row in rows}
        joined, left = set(live) - set(self.members), set(self.members) - set(live)
        self.members = live
        return joined, left

    def live(self) -> bool:
        """Whether this replica's lease still holds (it renewed within it)."""
        return time.monotonic() - self._renewed < self.lease

    async def start(self) -> None:
        self.renew()
        log.info("kernel replica joined", replica=self.id, address=self.address, members=sorted(self.members))
        self._task = asyncio.ensure_future(self._leases())

    async def _leases(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                joined, left = self.renew()
                self.db.execute("DELETE FROM kernels WHERE lease_until < ?", (self.clock() - FORGET_AFTER,))
            except Exception as exc:  # noqa: BLE001 - the database is away: retry next round
                log.warning("kernel lease not renewed", error=str(exc), live=self.live())
                continue
            if joined or left:
                log.info("kernel replicas changed", joined=sorted(joined), left=sorted(left),
                         members=sorted(self.members))
            try:
                self.on_change(joined, left)
            except Exception:  # noqa: BLE001 - a failed takeover is tried again next round
                log.exception("kernel replica change not applied")

    async def stop(self) -> None:
        """Leave at once (the others take over now, not at the lease's end)."""
        self.closing = True
        if self._task is not None:
            self._task.cancel()
        try:
            self.db.execute("DELETE FROM kernels WHERE id = ?", (self.id,))
        except Exception as exc:  # noqa: BLE001 - the lease then simply runs out
            log.warning("kernel lease not released", error=str(exc))
        for ch in self._channels.values():
            await ch.close()

    # -- placement

    def owner_address(self, agent: str) -> str | None:
        """The address of the replica that owns `agent`, or None for this one."""
        if not self.live():
            raise errors.Unavailable(f"kernel replica {self.id} lost its lease; retry (another replica "
                                     "serves the agent)", retry_after=self.lease)
        if len(self.members) <= 1:
            return None
        held = owner(agent, self.members)
        return None if held == self.id else self.members[held]

    def owns(self, agent: str) -> bool:
        return len(self.members) <= 1 or owner(agent, self.members) == self.id

    def share(self, total: int) -> int:
        return share(total, self.id, self.members or [self.id])

    # -- forwarding

    def _stub(self, address: str) -> kpb_grpc.KernelServiceStub:
        ch = self._channels.get(address)
        if ch is None:
            # Replicas are dialled by pod IP; with TLS their certificate
            # names the kernel's Service (deploy/k8s/components/tls).
            ch = self._channels[address] = channel(address, "", server_name=TLS_NAME)
        return kpb_grpc.KernelServiceStub(ch)

    def metadata(self, credential: str, stream: bool = False) -> list[tuple[str, str]]:
        md = [(FORWARDED_KEY, self.id), (FORWARDED_STREAM_KEY, "1" if stream else "0")]
        if credential:
            md.append((AUTHORIZATION_KEY, f"Bearer {credential}"))
        return md

    async def forward(self, address: str, credential: str, entry: Entry) -> Entry:
        """Run `entry`'s syscall on the replica at `address`: `entry` becomes
        its local stand-in, fed with the owner's events and finished with the
        owner's record (or error). Returns once the owner accepted the call
        (its first event), raising what the owner refused it with."""
        timeout = None if entry.deadline is None else max(0.0, entry.deadline - time.monotonic())
        call = self._stub(address).SubmitStream(kpb.SubmitRequest(syscall=entry.syscall),
                                                metadata=self.metadata(credential, entry.stream),
                                                timeout=timeout)
        entry.remote = address
        reader = call.__aiter__()
        try:
            first = await anext(reader)
        except StopAsyncIteration:
            raise errors.Unavailable(f"kernel replica {address} ended the call without an answer; retry") from None
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, address) from None
        entry.id = first.syscall_id
        _take(entry, first)
        if not entry.done:
            entry.task = asyncio.ensure_future(self._follow(entry, reader, call, address, credential))
        return entry

    async def _follow(self, entry: Entry, reader, call, address: str, credential: str) -> None:
        try:
            async for event in reader:
                _take(entry, event)
                if entry.done:
                    return
            entry.settle(FAILED, errors.Unavailable(f"kernel replica {address} ended the call without an "
                                                   "answer; retry with the same request id"))
        except grpc.aio.AioRpcError as exc:
            entry.settle(FAILED, _error(exc, address))
        except asyncio.CancelledError:
            # The owner keeps a forwarded call when its stream ends (this
            # replica might have died): cancel it there in so many words.
            call.cancel()
            entry.settle(FAILED, errors.Cancelled("the caller went away"))
            if not self.closing:  # a replica shutting down leaves its forwarded calls running
                asyncio.ensure_future(self._cancel(address, credential, entry.id))
            raise

    async def _cancel(self, address: str, credential: str, syscall_id: str) -> None:
        try:
            await self.relay(address, "Cancel", kpb.CancelRequest(id=syscall_id), credential, CANCEL_TIMEOUT)
        except errors.AiosError as err:  # it ends at its deadline there
            log.warning("forwarded call not cancelled", replica=address, syscall_id=syscall_id, error=err.message)

    async def relay(self, address: str, method: str, request, credential: str, timeout: float | None):
        """A unary KernelService call answered by the replica at `address`."""
        try:
            return await getattr(self._stub(address), method)(request, metadata=self.metadata(credential),
                                                              timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, address) from None


def _error(exc: grpc.aio.AioRpcError, address: str) -> errors.AiosError:
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        return errors.Unavailable(f"kernel replica {address} is unreachable ({exc.details() or 'no details'});"
                                  " retry with the same request id", retry_after=0.5)
    return status.from_rpc_error(exc)


def _take(entry: Entry, event: kpb.SyscallEvent) -> None:
    """One of the owner's events, passed on to the stand-in's subscribers."""
    which = event.WhichOneof("event")
    if which == "finished":
        entry.final_record = event.finished.SerializeToString()
        entry.settle(SUCCEEDED, None)
        return
    if which == "queued":
        entry.publish(ev.Queued, position=event.queued.position)
    elif which == "started":
        entry.publish(ev.Started, endpoint=event.started.endpoint)
    elif which == "resumed":
        entry.publish(ev.Resumed, endpoint="")
    elif which == "delta":
        entry.publish(ev.Delta, text=event.delta.text)
    elif which == "preempted":
        entry.publish(ev.Preempted, snapshot_tokens=event.preempted.snapshot_tokens)
    elif which == "awaiting_confirmation":
        entry.confirmation_id = event.awaiting_confirmation.confirmation_id
        entry.publish(ev.AwaitingConfirmation, confirmation_id=entry.confirmation_id)
