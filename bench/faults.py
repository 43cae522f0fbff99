"""The fault suite: agents keep working through a real `aios up` while each
part of it is killed in turn, and nothing acknowledged is lost or applied
twice.

    .venv/bin/python -m bench.faults [--agents 8] [--settle 6] [--faults scheduler,memory,...]
                                     [--postgres [--outage 3]] [--out FILE]

N agents (SDK clients with their own credentials) run memory adds, file
writes, LLM calls and tool calls, each with a unique request id, and keep a
ledger of every operation the kernel acknowledged. Meanwhile each child of
the stack gets `kill -9` in turn (the kernel, llm_core, memory, storage,
access, SeaweedFS, the LLM server), and the whole stack gets SIGTERM once
and is started again on the same data. With --postgres the kernel's journal
and the access service's store are on a real PostgreSQL server, as in
deploy/k8s, and that server crashes once (every process of it quits at
once) and is started again --outage seconds later, as its pod would be.
After each fault the suite waits until a probe agent's four operations all
succeed again (the recovery time). Then every acknowledged memory record and file is looked up: lost
(missing) and applied twice (a second record or version) are counted, per
fault, by when the operation started. Printed as a table and written as
JSON. Nobody touches the stack: `aios up` restarts what dies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

# The PostgreSQL server is started from this process as another user (a
# fork, not a vfork); gRPC's fork handlers, with its threads polling, can
# crash the child (grpc/grpc#43055).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from aios.sdk import AiosError, AsyncClient  # noqa: E402
from services.cli.main import port_flags  # noqa: E402
from services.cli.stack import SERVICES, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# kill -9 targets, by their name in <data>/stack.json, then the whole stack.
FAULTS = ("scheduler", "llm_core", "memory", "storage", "access", "s3", "llm_server", "stack")
# With --postgres, before the whole stack's restart.
POSTGRES_FAULTS = (*FAULTS[:-1], "postgres", FAULTS[-1])
LABEL = {"scheduler": "kill -9 kernel", "llm_core": "kill -9 llm_core", "memory": "kill -9 memory",
         "storage": "kill -9 storage", "access": "kill -9 access", "s3": "kill -9 SeaweedFS",
         "llm_server": "kill -9 LLM server", "stack": "SIGTERM aios up, start again", "baseline": "no fault",
         "postgres": "PostgreSQL crashes, back later"}
KINDS = ("memory", "file", "llm", "tool")


class Stack:
    """`aios up` as a child process on free ports, data in one folder."""

    def __init__(self, data: Path, env: dict[str, str] | None = None) -> None:
        self.data = data
        self.env = {**os.environ, **(env or {})}
        self.ports = {svc: free_port() for svc in SERVICES}
        self.proc: subprocess.Popen | None = None
        self.log = open(data / "aios-up.log", "a")

    @property
    def kernel(self) -> str:
        return f"127.0.0.1:{self.ports['scheduler']}"

    def start(self, timeout: float = 240.0) -> None:
        flags = [*port_flags(self.ports), "--metrics-port", "-1", "--http-port", "-1"]
        self.proc = subprocess.Popen([str(BIN / "aios"), "up", "--data", str(self.data), *flags],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, cwd=ROOT, env=self.env)
        lines: queue.Queue = queue.Queue()

        def pump() -> None:
            for line in self.proc.stdout:
                self.log.write(line)
                self.log.flush()
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if line.startswith("ready"):
                return
        raise RuntimeError(f"aios up did not get ready; see {self.data / 'aios-up.log'}")

    def pid(self, child: str) -> int:
        return json.loads((self.data / "stack.json").read_text())["children"][child]["pid"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def agent_token(self, name: str) -> str:
        made = subprocess.run([str(BIN / "aios"), "agent", "create", name, "--data", str(self.data),
                               "--access-addr", f"127.0.0.1:{self.ports['access']}"],
                              capture_output=True, text=True, timeout=60)
        if made.returncode != 0:
            raise RuntimeError(made.stderr)
        return made.stdout.strip()


@dataclass
class Op:
    kind: str
    agent: str
    key: str  # the memory content or file path it made
    window: str  # the fault in force when it started


@dataclass
class Ledger:
    window: str = "baseline"
    acked: list[Op] = field(default_factory=list)
    failed: Counter = field(default_factory=Counter)


async def _operate(c: AsyncClient, name: str, kind: str, n: int) -> str:
    key = f"{name}-{n}-{uuid.uuid4().hex[:8]}"
    if kind == "memory":
        await c.memory.add(f"fault ledger {key}")
        return f"fault ledger {key}"
    if kind == "file":
        path = f"faults/{key}.txt"
        await c.files.write(path, f"written by {key}")
        return path
    if kind == "llm":
        reply = await c.llm.chat("Say yes.", max_tokens=4, temperature=0)
        if not reply.text:
            raise RuntimeError("an empty reply")
        return key
    result = await c.tools.call("calculator", {"expression": f"{n} * 7"})
    if result != str(n * 7):
        raise RuntimeError(f"calculator said {result}")
    return key


async def agent(c: AsyncClient, name: str, ledger: Ledger, stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        kind = KINDS[n % len(KINDS)]
        window = ledger.window
        try:
            key = await _operate(c, name, kind, n)
            ledger.acked.append(Op(kind, name, key, window))
        except (AiosError, RuntimeError) as err:
            ledger.failed[(window, kind)] += 1
            print(f"  {name} {kind} failed: {getattr(err, 'message', err)}", file=sys.stderr, flush=True)
        n += 1


async def probe(c: AsyncClient, timeout: float = 180.0) -> float:
    """Seconds until one operation of every kind succeeds in a row."""
    t0, last = time.monotonic(), None
    while time.monotonic() - t0 < timeout:
        try:
            for i, kind in enumerate(KINDS):
                await _operate(c, "probe", kind, i)
            return time.monotonic() - t0
        except (AiosError, RuntimeError) as err:
            last = err
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the stack did not recover within {timeout:.0f} s (last: {last})")


async def verify(clients: dict[str, AsyncClient], ledger: Ledger) -> dict[str, Counter]:
    """Look up every acknowledged record and file: lost, applied twice."""
    lost, twice = Counter(), Counter()
    for name, c in clients.items():
        contents, token = Counter(), ""
        while True:
            page = await c.memory.list(page_size=500, page_token=token)
            contents.update(m.content for m in page.memories if m.content.startswith("fault ledger "))
            token = page.next_page_token
            if not token:
                break
        mine = [op for op in ledger.acked if op.agent == name]
        for op in mine:
            if op.kind == "memory":
                if contents[op.key] == 0:
                    lost[op.window] += 1
                elif contents[op.key] > 1:
                    twice[op.window] += 1
            elif op.kind == "file":
                try:
                    versions = await c.files.versions(op.key)
                except AiosError:
                    lost[op.window] += 1
                    continue
                if len(versions) > 1:
                    twice[op.window] += 1
        # Records nobody acknowledged may exist (the call's answer was lost),
        # but never twice.
        acked_keys = {op.key for op in mine}
        twice["unacknowledged"] += sum(1 for k, v in contents.items() if v > 1 and k not in acked_keys)
    return {"lost": lost, "twice": twice}


async def run(args) -> dict:
    data = Path(args.data or tempfile.mkdtemp(prefix="aios-faults-"))
    data.mkdir(parents=True, exist_ok=True)
    pg, env = None, {}
    if args.postgres:
        from services.local.postgres import EmbeddedPostgres

        pg = EmbeddedPostgres(data / "postgres")
        env = {"AIOS_KERNEL_JOURNAL": pg.create_database("journal"),
               "AIOS_ACCESS_DATABASE_URL": pg.create_database("access")}
    stack = Stack(data, env)
    print(f"starting aios up (data in {data}{', journal and access on PostgreSQL' if pg else ''})", flush=True)
    try:
        stack.start()
        return await _exercise(args, stack, pg)
    finally:
        stack.stop()
        if pg is not None:
            pg.stop()


async def _exercise(args, stack: Stack, pg=None) -> dict:
    names = [f"fault-agent-{i}" for i in range(args.agents)]
    tokens = {name: stack.agent_token(name) for name in [*names, "fault-probe"]}

    def client(name: str) -> AsyncClient:
        return AsyncClient(stack.kernel, token=tokens[name], retries=60, timeout=120)

    clients = {name: client(name) for name in names}
    prober = client("fault-probe")
    ledger, stop = Ledger(), asyncio.Event()
    rows = []
    workers = [asyncio.create_task(agent(c, name, ledger, stop)) for name, c in clients.items()]
    try:
        await asyncio.sleep(args.settle)
        for fault in args.faults:
            ledger.window = fault
            t0 = time.monotonic()
            if fault == "stack":
                stack.stop()
                stack.start()
            elif fault == "postgres":
                await asyncio.to_thread(pg.crash)
                await asyncio.sleep(args.outage)  # the outage: agents work on meanwhile
                await asyncio.to_thread(pg.start)
            else:
                os.kill(stack.pid(fault), signal.SIGKILL)
            recovered = await probe(prober)
            # From the fault's start where the stack was down on purpose.
            seconds = time.monotonic() - t0 if fault in ("stack", "postgres") else recovered
            print(f"{LABEL[fault]}: recovered in {seconds:.1f} s", flush=True)
            rows.append({"fault": fault, "recovery_seconds": round(seconds, 2)})
            await asyncio.sleep(args.settle)
        ledger.window = "after"
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
    try:
        checked = await verify(clients, ledger)
    finally:
        for c in [*clients.values(), prober]:
            await c.close()
    acked = Counter(op.window for op in ledger.acked)
    rows = [{"fault": "baseline", "recovery_seconds": None}, *rows]
    for row in rows:
        w = row["fault"]
        row.update(label=LABEL[w], acknowledged=acked[w], lost=checked["lost"][w], applied_twice=checked["twice"][w],
                   failed=sum(v for (win, _), v in ledger.failed.items() if win == w))
    by_kind = defaultdict(int)
    for op in ledger.acked:
        by_kind[op.kind] += 1
    return {"command": "python -m bench.faults " + " ".join(sys.argv[1:]), "agents": args.agents,
            "postgres": bool(pg), "outage_seconds": args.outage if pg else None,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "faults": rows,
            "acknowledged_by_kind": dict(by_kind), "acknowledged_after_last_fault": acked["after"],
            "unacknowledged_applied_twice": checked["twice"]["unacknowledged"],
            "total_lost": sum(checked["lost"].values()), "total_applied_twice": sum(checked["twice"].values())}


def table(report: dict) -> str:
    lines = [f"{'fault':<32} {'acknowledged':>12} {'lost':>5} {'applied twice':>13} {'failed':>6} {'recovery':>9}"]
    for r in report["faults"]:
        rec = "-" if r["recovery_seconds"] is None else f"{r['recovery_seconds']:.1f} s"
        lines.append(f"{r['label']:<32} {r['acknowledged']:>12} {r['lost']:>5} {r['applied_twice']:>13} "
                     f"{r['failed']:>6} {rec:>9}")
    lines.append(f"acknowledged by kind: {report['acknowledged_by_kind']}; lost in all {report['total_lost']}, "
                 f"applied twice in all {report['total_applied_twice']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--settle", type=float, default=6.0, help="seconds of work between faults (default 6)")
    parser.add_argument("--faults", default="",
                        help=f"comma-separated, of: {', '.join(POSTGRES_FAULTS)} (default: all; postgres with --postgres)")
    parser.add_argument("--postgres", action="store_true",
                        help="the kernel's journal and the access store on a real PostgreSQL server, as in deploy/k8s")
    parser.add_argument("--outage", type=float, default=3.0,
                        help="seconds PostgreSQL stays down after it crashes (default 3)")
    parser.add_argument("--data", default="", help="data folder (default: a new temporary one)")
    parser.add_argument("--out", default="bench/results/faults.json")
    args = parser.parse_args(argv)
    known = POSTGRES_FAULTS if args.postgres else FAULTS
    args.faults = [f for f in args.faults.split(",") if f] or list(known)
    unknown = set(args.faults) - set(known)
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}"
                     + (" (postgres needs --postgres)" if "postgres" in unknown else ""))
    report = asyncio.run(run(args))
    print(table(report))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written to {out}")
    return 0 if report["total_lost"] == 0 and report["total_applied_twice"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
