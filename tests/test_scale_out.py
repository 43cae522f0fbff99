"""The scale-out acceptance test: a whole cluster on one machine, and one
kernel replica killed with `kill -9` in the middle of the work.

Over embedded PostgreSQL: 3 kernel replicas, 2 llm_core, 2 access, one
storage on SeaweedFS, 2 simulated engines of batch 4 (tests/support/cluster.py).
60 SDK agents, agent i connected to kernel replica i mod 3, each run STEPS
steps of an LLM call then a write of a file of its own (steps/<k>.txt) with
what the LLM said, every operation with a request id of its own. An agent
whose replica fails with UNAVAILABLE retries the same operation, with the
same request id, on the next replica. Once a third of the operations are
acknowledged, replica k1 gets SIGKILL.

The ledger keeps every acknowledged operation. Afterwards:
- every agent did all its steps;
- every acknowledged write is there once: its file has exactly one version,
  the acknowledged one, with the content written (a write applied twice
  would be a second version), and no file has two;
- the engines' own counters: never more in flight than their batch
  (peak_waiting 0), and as many LLM calls served as acknowledged, give or
  take what was in flight when k1 died;
- the kernels split the engines' capacity (their shares add up to it, before
  and after the kill), every replica served agents, each agent ran on one
  replica (its owner, not where it connected), and after the kill only the
  dead replica's agents moved;
- the shared journal ends with no call left unfinished and none run twice.

Every property is checked and reported; the test fails at the end with the
list of those that do not hold. AIOS_SCALE_OUT_AUTH=dev runs the kernels in
development auth (for work on the kernel side); the acceptance run is the
default, access on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pytest

from aios.sdk import AsyncClient, UnavailableError
from tests.support.cluster import MODEL, Cluster, ClusterConfig
from tests.support.polling import until

pytestmark = [pytest.mark.scale_out, pytest.mark.timeout(300)]

AGENTS = 60
STEPS = 6
# Output tokens per LLM call: ~90 ms on an engine at time scale 1.
TOKENS = 8
KILLED = "k1"
# Seconds one operation may take, failovers included.
OP_DEADLINE = 60.0
# Seconds the agents may take after the kill.
RUN_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, request):
    config = ClusterConfig(auth=os.environ.get("AIOS_SCALE_OUT_AUTH", "access"))
    cluster = Cluster(tmp_path_factory.mktemp("scale-out"), config)
    request.addfinalizer(cluster.stop)  # also when start() fails half way
    cluster.start()
    return cluster


@dataclass
class Ack:
    """One acknowledged operation."""

    agent: str
    step: int
    kind: str  # "llm" or "write"
    request_id: str
    started: float  # wall time of its first attempt
    result: str  # the reply's text, or the version id written
    sha256: str = ""  # of the content written
    reply: str = ""  # what the write's reply named: owner/path@sha256


@dataclass
class Ledger:
    acks: list[Ack] = field(default_factory=list)
    failovers: Counter = field(default_factory=Counter)  # agent -> replicas it moved off
    kill_time: float = float("inf")


class Agent:
    """An SDK agent: one client per kernel replica, its own first. A call
    that fails with UNAVAILABLE is sent again, with the same request id, to
    the next replica (the SDK takes one address, so the failover is here)."""

    def __init__(self, name: str, token: str, addresses: list[tuple[str, str]]) -> None:
        self.name = name
        self.replicas = [rid for rid, _ in addresses]
        # retries=0: UNAVAILABLE comes back at once, to move on with.
        self.clients = [AsyncClient(address, token=token, timeout=30, retries=0, session_id=name)
                        for _, address in addresses]
        self.at = 0
        self.steps_done = 0

    @property
    def home(self) -> str:
        return self.replicas[0]

    async def call(self, op, ledger: Ledger | None = None):
        end = time.monotonic() + OP_DEADLINE
        tries = 0
        while True:
            try:
                return await op(self.clients[self.at])
            except UnavailableError:
                if time.monotonic() > end:
                    raise
                self.at = (self.at + 1) % len(self.clients)
                tries += 1
                if ledger is not None:
                    ledger.failovers[self.name] += 1
                if tries % len(self.clients) == 0:
                    await asyncio.sleep(0.2)  # every replica refused: a lease may still be running out

    async def run(self, ledger: Ledger) -> None:
        for step in range(STEPS):
            rid, started = f"{self.name}-llm-{step}", time.time()
            prompt = f"{self.name}, step {step}: say something."
            reply = await self.call(lambda c: c.llm.chat(prompt, model=MODEL, max_tokens=TOKENS, request_id=rid),
                                    ledger)
            ledger.acks.append(Ack(self.name, step, "llm", rid, started, reply.text))
            content = f"{self.name} step {step}: {reply.text}\n".encode()
            rid, started = f"{self.name}-write-{step}", time.time()
            info = await self.call(lambda c: c.files.write(path(step), content, request_id=rid), ledger)
            ledger.acks.append(Ack(self.name, step, "write", rid, started, info.version_id,
                                   hashlib.sha256(content).hexdigest(), f"{info.owner}/{info.path}@{info.sha256[:12]}"))
            self.steps_done = step + 1

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


def path(step: int) -> str:
    return f"steps/{step}.txt"


class Verdict:
    """Every property, held or not; the test fails once, listing all that do not hold."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.failed: list[str] = []

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        line = f"{'ok  ' if ok else 'FAIL'} {what}" + (f" -- {detail}" if detail else "")
        self.lines.append(line)
        if not ok:
            self.failed.append(line)
        return ok

    def note(self, text: str) -> None:
        self.lines.append(f"     {text}")

    def report(self) -> str:
        return "\n".join(self.lines)


async def process_table(address: str, admin: str) -> list:
    """Every syscall record in one replica's process table."""
    async with AsyncClient(address, token=admin, timeout=10, retries=0) as client:
        records, token = [], ""
        while True:
            page = await client.list_syscalls(page_size=1000, page_token=token)
            records += page.syscalls
            token = page.next_page_token
            if not token:
                return records


async def status(address: str, admin: str):
    async with AsyncClient(address, token=admin, timeout=10, retries=0) as client:
        return await client.get_status()


def llm_capacity(reply) -> int:
    return sum(q.capacity for q in reply.queues if q.resource == f"llm:{MODEL}")


async def statuses(cluster: Cluster, replicas: list[str]) -> dict:
    admin = cluster.admin_token
    return dict(zip(replicas, await asyncio.gather(*(status(cluster.kernel(r), admin) for r in replicas))))


def ran_on(tables: dict[str, list], request_ids: set[str] | None = None) -> dict[str, set[str]]:
    """agent -> the replicas whose process tables hold its syscalls (those
    of `request_ids` only, when given)."""
    out = defaultdict(set)
    for rid, records in tables.items():
        for record in records:
            if request_ids is None or record.request_id in request_ids:
                out[record.agent].add(rid)
    return out


@dataclass
class BeforeKill:
    """What the replicas showed just before the kill."""

    tables: dict  # replica -> its process table (syscall records)
    statuses: dict  # replica -> GetStatusResponse
    acknowledged: int


async def test_agents_carry_on_through_a_killed_kernel_replica_and_nothing_acknowledged_is_lost_or_doubled(
        cluster):
    verdict = Verdict()
    t0 = time.monotonic()
    if cluster.config.auth == "dev":
        verdict.note("AIOS_SCALE_OUT_AUTH=dev: the kernels do not use access (not the acceptance run)")
    agents = await _agents(cluster, verdict)
    ledger = Ledger()
    tasks = [asyncio.create_task(agent.run(ledger), name=agent.name) for agent in agents]
    try:
        before = await _kill_midway(cluster, verdict, ledger, tasks)
        _check_steps(verdict, agents, tasks)
        await _check_writes(verdict, agents, ledger)
        await _check_engines(verdict, cluster, ledger)
        await _check_capacity(verdict, cluster, before)
        await _check_placement(verdict, cluster, agents, ledger, before)
        await _check_journal(verdict, cluster, ledger)
        verdict.check(not cluster.fallbacks, "the cluster ran as configured", "; ".join(cluster.fallbacks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for agent in agents:
            await agent.close()
    verdict.note(f"the test took {time.monotonic() - t0:.1f} s after the cluster started")
    print(verdict.report())
    assert not verdict.failed, "\n" + verdict.report()


async def _agents(cluster: Cluster, verdict: Verdict) -> list[Agent]:
    """The agents' identities, and the agents, agent i connected to replica
    i mod 3 first, once every replica sees the others."""
    cfg, replicas = cluster.config, cluster.replica_ids
    names = [f"agent-{i:02d}" for i in range(AGENTS)]
    tokens = await asyncio.to_thread(cluster.create_agents, names)
    if cfg.auth == "access":
        knowing = await asyncio.to_thread(cluster.access_replicas_knowing, names[-1])
        # Without it half the kernels refuse half the agents: nothing else would mean anything.
        assert len(knowing) == cfg.accesses, (
            f"an agent made on access-1 is known only to {knowing}: the access replicas do not share "
            "their store (AIOS_ACCESS_DATABASE_URL)")

    async def every_replica_sees_all() -> bool:
        return all(len(s.replicas) == len(replicas) for s in (await statuses(cluster, replicas)).values())

    what = f"every replica sees {len(replicas)} live replicas"
    try:
        await until(every_replica_sees_all, "every replica seeing the others", timeout=15)
        verdict.check(True, what)
    except AssertionError:
        views = {r: sorted(x.id for x in s.replicas) for r, s in (await statuses(cluster, replicas)).items()}
        verdict.check(False, what, f"their views: {views}")
    agents = []
    for i, name in enumerate(names):
        order = [replicas[(i + j) % len(replicas)] for j in range(len(replicas))]
        agents.append(Agent(name, tokens[name], [(r, cluster.kernel(r)) for r in order]))
    return agents


async def _kill_midway(cluster: Cluster, verdict: Verdict, ledger: Ledger, tasks: list) -> BeforeKill:
    """kill -9 KILLED once a third of the operations are acknowledged, then
    let the agents finish (bounded)."""
    total = AGENTS * STEPS * 2
    started = time.monotonic()
    await until(lambda: len(ledger.acks) >= total // 3 or all(t.done() for t in tasks),
                "a third of the operations acknowledged", timeout=90)
    replicas, admin = cluster.replica_ids, cluster.admin_token
    tables = dict(zip(replicas, await asyncio.gather(*(process_table(cluster.kernel(r), admin) for r in replicas))))
    before = BeforeKill(tables, await statuses(cluster, replicas), len(ledger.acks))
    cluster.kill(KILLED)
    ledger.kill_time = time.time()
    killed_after = time.monotonic() - started
    _, unfinished = await asyncio.wait(tasks, timeout=RUN_TIMEOUT)
    for task in unfinished:
        task.cancel()
    verdict.note(f"{before.acknowledged} of {total} operations acknowledged when {KILLED} was killed "
                 f"({killed_after:.1f} s in); the run took {time.monotonic() - started:.1f} s; "
                 f"{sum(ledger.failovers.values())} failovers by {len(ledger.failovers)} agents")
    verdict.check(0 < before.acknowledged < total, f"{KILLED} was killed in the middle of the work")
    return before


def _check_steps(verdict: Verdict, agents: list[Agent], tasks: list) -> None:
    failed = {}
    for agent, task in zip(agents, tasks):
        if not task.done() or task.cancelled():
            failed[agent.name] = f"still running at step {agent.steps_done}"
        elif task.exception() is not None:
            failed[agent.name] = f"step {agent.steps_done}: {task.exception()!r}"
    verdict.check(not failed, f"every agent did all its {STEPS} steps",
                  f"{len(failed)} did not: {dict(list(failed.items())[:5])}")


async def _check_capacity(verdict: Verdict, cluster: Cluster, before: BeforeKill) -> None:
    """The replicas' shares of the model's capacity add up to the engines'
    batches, before the kill and (once the survivors noticed) after it."""
    capacity = cluster.config.engines * cluster.config.engine_batch
    shares = {r: llm_capacity(s) for r, s in before.statuses.items()}
    verdict.check(sum(shares.values()) == capacity,
                  f"the replicas' shares of {MODEL}'s capacity add up to the engines' {capacity}", f"shares {shares}")
    survivors = [r for r in cluster.replica_ids if r != KILLED]

    async def shares_now() -> dict:
        return {r: llm_capacity(s) for r, s in (await statuses(cluster, survivors)).items()}

    async def added_up() -> dict | None:
        now = await shares_now()
        return now if sum(now.values()) == capacity else None

    what = f"after the kill the survivors' shares add up to {capacity}"
    try:
        verdict.check(True, what, f"shares {await until(added_up, what, timeout=4 * cluster.config.lease_seconds + 5)}")
    except AssertionError:
        verdict.check(False, what, f"shares {await shares_now()}")


async def _check_placement(verdict: Verdict, cluster: Cluster, agents: list[Agent], ledger: Ledger,
                           before: BeforeKill) -> None:
    """Every replica served agents; each agent ran on one replica, which for
    most is not the one it connected to (the owner); after the kill only
    the dead replica's agents moved, each to one survivor."""
    served_by = {r: {rec.agent for rec in records} for r, records in before.tables.items()}
    verdict.check(all(served_by.values()), "every kernel replica served agents before the kill",
                  f"agents per replica: {({r: len(a) for r, a in served_by.items()})}")
    home = {agent.name: agent.home for agent in agents}
    where = ran_on(before.tables)
    split = {a: sorted(rs) for a, rs in where.items() if len(rs) != 1}
    verdict.check(not split, "before the kill each agent's calls ran on one replica",
                  f"{len(split)} ran on several: {dict(list(split.items())[:5])}")
    away = [a for a, rs in where.items() if len(rs) == 1 and home[a] not in rs]
    verdict.check(len(away) >= AGENTS // 6,
                  "agents ran on the replica that owns them, not on the one they connected to",
                  f"{len(away)} of {len(where)} ran away from the replica they connected to "
                  "(rendezvous hashing over 3 replicas moves about 2/3)")

    survivors = [r for r in cluster.replica_ids if r != KILLED]
    admin = cluster.admin_token
    tables = dict(zip(survivors, await asyncio.gather(*(process_table(cluster.kernel(r), admin)
                                                        for r in survivors))))
    later = {a.request_id for a in ledger.acks if a.started > ledger.kill_time}
    where_after = ran_on(tables, later)
    moved = {a: (sorted(where[a]), sorted(rs)) for a, rs in where_after.items()
             if len(where.get(a, ())) == 1 and KILLED not in where[a] and rs != where[a]}
    verdict.check(not moved, "after the kill the survivors' agents stayed where they were",
                  f"{len(moved)} moved: {dict(list(moved.items())[:5])}")
    # The dead replica's agents that had work left after the kill.
    orphans = {a for a, rs in where.items() if rs == {KILLED}} & {ack.agent for ack in ledger.acks
                                                                    if ack.request_id in later}
    rehomed = {a: sorted(where_after.get(a, ())) for a in orphans}
    verdict.check(bool(orphans) and all(len(rs) == 1 for rs in rehomed.values()),
                  f"after the kill each of {KILLED}'s {len(orphans)} agents ran on one survivor",
                  f"{ {a: rs for a, rs in rehomed.items() if len(rs) != 1} }")


async def _check_writes(verdict: Verdict, agents: list[Agent], ledger: Ledger) -> None:
    """Every acknowledged write is its file's only version, with its content;
    no file of any agent has two versions."""
    acked = {(a.agent, a.step): a for a in ledger.acks if a.kind == "write"}
    lost, wrong, doubled, unacked = [], [], [], []

    async def look(agent: Agent) -> None:
        page = await agent.call(lambda c: c.files.list("steps/", recursive=True, page_size=100))
        present = {f.path for f in page.files if not f.is_folder}
        mine = {step: ack for (name, step), ack in acked.items() if name == agent.name}
        unacked.extend(f"{agent.name}/{p}" for p in present - {path(s) for s in mine})
        for step, ack in mine.items():
            if path(step) not in present:
                lost.append(ack.request_id)
        for p in sorted(present):
            versions = [v for v in await agent.call(lambda c, p=p: c.files.versions(p)) if not v.is_delete_marker]
            if len(versions) > 1:
                doubled.append(f"{agent.name}/{p}: {len(versions)} versions")
            ack = next((a for s, a in mine.items() if path(s) == p), None)
            if ack is not None and versions and (versions[0].version_id, versions[0].sha256) != (
                    ack.result, ack.sha256):
                wrong.append(f"{agent.name}/{p}: acknowledged {ack.result} sha {ack.sha256[:12]} "
                             f"(the reply named {ack.reply}), stored {versions[0].version_id} "
                             f"sha {versions[0].sha256[:12]} ({ack.request_id})")

    await asyncio.gather(*(look(agent) for agent in agents))
    verdict.note(f"{len(acked)} writes acknowledged")
    verdict.check(not lost, "no acknowledged write is lost", f"{len(lost)} lost: {lost[:5]}")
    verdict.check(not doubled, "no write was applied twice (every file has one version)",
                  f"{len(doubled)}: {doubled[:5]}")
    verdict.check(not wrong, "each file is the version acknowledged, with the content written",
                  f"{len(wrong)} differ: {wrong[:5]}")
    if unacked:
        verdict.note(f"{len(unacked)} files written but never acknowledged (an agent gave up): {unacked[:5]}")


async def _check_engines(verdict: Verdict, cluster: Cluster, ledger: Ledger) -> None:
    """The engines' own counters: never more in flight than a batch, and
    each acknowledged LLM call served once."""
    stats = await asyncio.to_thread(cluster.engine_stats)
    batch = cluster.config.engine_batch
    capacity = cluster.config.engines * batch
    peaks = [(s["peak_running"], s["peak_waiting"]) for s in stats]
    verdict.check(all(running <= batch and waiting == 0 for running, waiting in peaks),
                  f"no engine ever had more in flight than its batch of {batch}",
                  f"(peak_running, peak_waiting) per engine: {peaks}")
    served = sum(s["requests_served"] for s in stats)
    acked = sum(1 for a in ledger.acks if a.kind == "llm")
    # A call running on an engine when its kernel died may still be served,
    # unacknowledged; at most what the engines had in flight then.
    verdict.check(acked <= served <= acked + capacity,
                  "the engines served each acknowledged LLM call once",
                  f"{served} served for {acked} acknowledged (at most {capacity} more were in flight at the kill); "
                  f"{sum(s['requests_aborted'] for s in stats)} aborted")


async def _check_journal(verdict: Verdict, cluster: Cluster, ledger: Ledger) -> None:
    """The shared journal ends with nothing unfinished (the dead replica's
    calls were taken over), and no request id ran twice."""
    acked = {(a.agent, a.request_id) for a in ledger.acks}

    def open_rows():
        rows = cluster.journal_rows()
        return None if any(not finished for *_, finished in rows) else rows

    try:
        rows = await until(lambda: asyncio.to_thread(open_rows), "the journal's calls all finished",
                           timeout=4 * cluster.config.lease_seconds + 5, interval=0.5)
        verdict.check(True, "no call is left unfinished in the shared journal")
    except AssertionError:
        rows = await asyncio.to_thread(cluster.journal_rows)
        left = [(agent, rid, state) for agent, rid, state, finished in rows if not finished]
        verdict.check(False, "no call is left unfinished in the shared journal",
                      f"{len(left)} unfinished: {left[:5]}")
    succeeded = Counter((agent, rid) for agent, rid, state, finished in rows if finished and state == "succeeded")
    twice = [key for key, n in succeeded.items() if n > 1]
    verdict.check(not twice, "the journal ran no request id twice", f"{len(twice)}: {twice[:5]}")
    missing = [key for key in acked if key not in succeeded]
    verdict.check(not missing, "every acknowledged operation succeeded in the journal",
                  f"{len(missing)} not there: {missing[:5]}")
