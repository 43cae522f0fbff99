"""`make demo`: start the local stack, run several example agents through the
kernel at once, show their progress and the kernel's scheduling live, then a
summary, and stop.

Free ports and a fresh data folder (<data>/demo-XXXX, removed at the end)
are used, so the demo never collides with a running `aios up` or demo. On a terminal the table is redrawn in
place; otherwise each step is printed as a line, with a line of kernel
figures every few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from services.cli.stack import REPO_ROOT, SERVICES, Stack, StackConfig, free_port

EXAMPLES = REPO_ROOT / "examples" / "agents"

# (agent file, agent name, task)
DEMO_AGENTS = [
    ("calculator.py", "calculator-agent", "What is 17*23+4? Use the calculator."),
    ("calculator.py", "budget-agent", "What is (1200-450)/3? Use the calculator."),
    ("memory_keeper.py", "memory-keeper",
     "Remember: Bob plays the cello. Remember: Ada's favourite colour is green. "
     "Remember: The office wifi password is under the router. Which instrument does Bob play?"),
    ("memory_keeper.py", "travel-memory",
     "Remember: The train to Porto leaves at 9:40. Remember: The hotel is next to the river. "
     "Remember: Breakfast is served until 10. When does the train leave?"),
    ("note_taker.py", "note-taker", "how an operating system schedules programs"),
    ("note_taker.py", "garden-notes", "growing tomatoes on a balcony"),
]
RUN_TIMEOUT = 300.0


@dataclass
class Row:
    task: str
    state: str = "starting"
    steps: int = 0
    last: str = ""
    syscalls: int = 0
    turnaround: float = 0.0
    answer: str = ""


@dataclass
class Board:
    """What the table shows: each agent's progress, the kernel's process
    table, and the operator's confirmations."""

    rows: dict[str, Row]
    kernel: dict = field(default_factory=dict)  # agent -> AgentStats
    events: deque = field(default_factory=lambda: deque(maxlen=3))
    approved: int = 0
    started: float = field(default_factory=time.monotonic)

    def on_step(self, step) -> None:
        row = self.rows[step.agent]
        row.steps = step.index
        row.state = {"answer": "done", "error": "failed"}.get(step.kind, "running")
        if step.syscall_id:
            row.syscalls += 1
            row.turnaround += step.turnaround
        if step.kind == "answer":
            row.answer = step.detail
        else:
            row.last = f"{step.action}: {step.detail}"


def _ms(duration) -> float:
    return duration.ToNanoseconds() / 1e6


def render(board: Board, policy: str, width: int) -> list[str]:
    elapsed = time.monotonic() - board.started
    running = sum(a.running for a in board.kernel.values())
    queued = sum(a.queued for a in board.kernel.values())
    lines = [f"AIOS kernel · policy {policy} · {elapsed:5.1f} s · "
             f"kernel now: {running} running, {queued} queued",
             f"{'AGENT':<17}{'STATE':<9}{'STEP':>4}  {'RUN':>3} {'QUE':>3} {'DONE':>4} {'TOKENS':>6} "
             f"{'WAIT':>7} {'TURN':>6}  LAST ACTION"]
    for name, row in board.rows.items():
        k = board.kernel.get(name)
        run, que, done = (k.running, k.queued, k.completed) if k else (0, 0, 0)
        tokens = k.prompt_tokens + k.completion_tokens if k else 0
        wait = f"{_ms(k.mean_waiting):5.0f}ms" if k else "      -"
        turn = f"{row.turnaround / row.syscalls:5.2f}s" if row.syscalls else "     -"
        lines.append(f"{name:<17}{row.state:<9}{row.steps:>4}  {run:>3} {que:>3} {done:>4} {tokens:>6} "
                     f"{wait} {turn}  {row.last}")
    for event in board.events:
        lines.append(f"  operator: {event}")
    return [line if len(line) <= width else line[:width - 1] + "…" for line in lines]


class Screen:
    """Redraws the table in place on a terminal; elsewhere prints steps as
    lines and the kernel's figures every few seconds."""

    def __init__(self, board: Board, policy: str, tty: bool) -> None:
        self.board, self.policy, self.tty = board, policy, tty
        self.drawn = 0
        self.last_line = 0.0

    def step(self, step) -> None:
        self.board.on_step(step)
        if not self.tty:
            print(f"[{step.agent}] {step.index:>2} {step.action}: {step.detail}", flush=True)

    def event(self, text: str) -> None:
        self.board.events.append(text)
        if not self.tty:
            print(f"  operator: {text}", flush=True)

    def refresh(self, final: bool = False) -> None:
        if self.tty:
            width = shutil.get_terminal_size((120, 24)).columns
            lines = render(self.board, self.policy, width)
            out = (f"\x1b[{self.drawn}F" if self.drawn else "") + "\x1b[J" + "\n".join(lines) + "\n"
            sys.stdout.write(out)
            sys.stdout.flush()
            self.drawn = len(lines)
        elif final or time.monotonic() - self.last_line >= 5:
            self.last_line = time.monotonic()
            k = self.board.kernel.values()
            print(f"-- kernel at {time.monotonic() - self.board.started:.0f} s: "
                  f"{sum(a.running for a in k)} running, {sum(a.queued for a in k)} queued, "
                  f"{sum(a.completed for a in k)} syscalls done, "
                  f"{sum(a.prompt_tokens + a.completion_tokens for a in k)} tokens", flush=True)


async def watch_kernel(kernel, board: Board, screen: Screen, stop: asyncio.Event) -> None:
    from aios.sdk import AiosError

    while not stop.is_set():
        try:
            board.kernel = {a.agent: a for a in await kernel.list_agents() if a.agent in board.rows}
        except AiosError:
            pass  # shown as stale figures; the agents report their own errors
        screen.refresh()
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass


async def approve_confirmations(access_addr: str, admin_token: str, board: Board, screen: Screen,
                                stop: asyncio.Event) -> None:
    """The demo's operator: approves what the demo agents ask to confirm
    (a note revised overwrites the file, which the access policy makes a
    person confirm)."""
    import grpc

    from aios.access.v1 import access_service_pb2 as apb
    from aios.access.v1 import access_service_pb2_grpc as apb_grpc

    metadata = [("authorization", f"Bearer {admin_token}")]
    async with grpc.aio.insecure_channel(access_addr) as channel:
        stub = apb_grpc.AccessServiceStub(channel)
        while not stop.is_set():
            try:
                pending = await stub.ListConfirmations(apb.ListConfirmationsRequest(), metadata=metadata, timeout=5)
                for c in pending.confirmations:
                    if c.agent in board.rows:
                        await stub.ResolveConfirmation(apb.ResolveConfirmationRequest(id=c.id, approve=True),
                                                       metadata=metadata, timeout=5)
                        board.approved += 1
                        screen.event(f"approved {c.agent}: {c.summary}")
            except grpc.aio.AioRpcError as exc:
                screen.event(f"confirmations unavailable: {exc.code().name}")
            try:
                await asyncio.wait_for(stop.wait(), 0.3)
            except TimeoutError:
                pass


async def agent_tokens(stack: Stack, names: list[str], access: bool) -> dict[str, str]:
    """Each agent's credential: created in the access service, or, when the
    kernel runs in development mode, its name."""
    if not access:
        return {n: n for n in names}
    import grpc

    from aios.access.v1 import access_service_pb2 as apb
    from aios.access.v1 import access_service_pb2_grpc as apb_grpc

    metadata = [("authorization", f"Bearer {stack.admin_token()}")]
    async with grpc.aio.insecure_channel(stack.address("access")) as channel:
        stub = apb_grpc.AccessServiceStub(channel)
        tokens = {}
        for name in names:
            reply = await stub.CreateAgent(apb.CreateAgentRequest(name=name), metadata=metadata, timeout=10)
            tokens[name] = reply.token
        return tokens


def summary(board: Board, runs, policy: str) -> list[str]:
    lines = [f"\n== {len(runs)} agents in {time.monotonic() - board.started:.1f} s, policy {policy} "
             f"(tokens and waiting from the kernel's process table) ==",
             f"{'AGENT':<17}{'RESULT':<8}{'SYSCALLS':>8} {'TOKENS':>7} {'MEAN WAIT':>10} {'MEAN TURN':>10}  ANSWER"]
    kinds: dict[str, int] = {}
    for run in runs:
        k = board.kernel.get(run.agent)
        row = board.rows[run.agent]
        for s in run.steps:
            if s.syscall_id:
                kinds[s.kind] = kinds.get(s.kind, 0) + 1
        tokens = k.prompt_tokens + k.completion_tokens if k else 0
        wait = f"{_ms(k.mean_waiting):8.0f}ms" if k else "         -"
        turn = f"{row.turnaround / row.syscalls:9.2f}s" if row.syscalls else "         -"
        result = "ok" if run.ok else "FAILED"
        answer = run.answer if run.ok else str(run.error)
        lines.append(f"{run.agent:<17}{result:<8}{row.syscalls:>8} {tokens:>7} {wait:>10} {turn:>10}  {answer}")
    total = sum(kinds.values())
    lines.append(f"syscalls: {total} ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}); "
                 f"confirmations approved by the operator: {board.approved}")
    return lines


async def run_demo(stack: Stack, policy: str, access: bool, tty: bool) -> int:
    from aios.agents import load_agent, run_agent
    from aios.sdk import AiosError, AsyncClient

    names = [name for _, name, _ in DEMO_AGENTS]
    board = Board({name: Row(task) for _, name, task in DEMO_AGENTS})
    screen = Screen(board, policy, tty)
    tokens = await agent_tokens(stack, names, access)
    kernel_address = stack.address("scheduler")
    # The process table of every agent needs the administrator's view.
    observer_token = stack.admin_token() if access else "demo-observer"
    stop = asyncio.Event()
    print(f"\nrunning {len(DEMO_AGENTS)} agents at once through the kernel:", flush=True)
    for file, name, task in DEMO_AGENTS:
        print(f"  {name:<17} ({file}) {task}", flush=True)
    print(flush=True)
    async with AsyncClient(kernel_address, token=observer_token, timeout=10) as observer:
        helpers = [asyncio.ensure_future(watch_kernel(observer, board, screen, stop))]
        if access:
            helpers.append(asyncio.ensure_future(
                approve_confirmations(stack.address("access"), stack.admin_token(), board, screen, stop)))
        agents = [load_agent(EXAMPLES / file, name=name) for file, name, _ in DEMO_AGENTS]
        work = asyncio.gather(*[
            run_agent(agent, task, address=kernel_address, token=tokens[agent.name], on_step=screen.step)
            for agent, (_, _, task) in zip(agents, DEMO_AGENTS)])
        try:
            runs = await asyncio.wait_for(work, RUN_TIMEOUT)
        finally:
            stop.set()
            try:
                board.kernel = {a.agent: a for a in await observer.list_agents() if a.agent in board.rows}
            except AiosError:
                pass  # the last figures seen stay
            await asyncio.gather(*helpers, return_exceptions=True)
            screen.refresh(final=True)
    width = shutil.get_terminal_size((120, 24)).columns if tty else 10_000
    for line in summary(board, runs, policy):
        print(line if len(line) <= width else line[:width - 1] + "…", flush=True)
    return 0 if all(r.ok for r in runs) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aios-demo")
    parser.add_argument("--data", default=".aios")
    parser.add_argument("--policy", default="fifo",
                        help="scheduling policy: fifo, round_robin, priority, fair_share, agent_aware")
    parser.add_argument("--llm-parallel", type=int, default=2,
                        help="slots of the embedded LLM: fewer than agents, so the kernel queues and schedules")
    args = parser.parse_args(argv)

    # A scratch folder and free ports of its own, so the demo runs beside
    # `aios up` or another demo; removed at the end.
    Path(args.data).mkdir(parents=True, exist_ok=True)
    data = Path(tempfile.mkdtemp(prefix="demo-", dir=Path(args.data).resolve()))
    ports = {svc: free_port() for svc in SERVICES}
    config = StackConfig(data_dir=data, ports=ports, policy=args.policy, llm_parallel=args.llm_parallel)
    access = (config.extra_env.get("AIOS_KERNEL_AUTH") or os.environ.get("AIOS_KERNEL_AUTH") or "access") != "dev"
    stack = Stack(config)
    started = time.monotonic()
    print("starting the kernel on embedded defaults...", flush=True)
    stack.start(on_ready=lambda name, where: print(f"  {name:<11} {where}", flush=True))
    print(f"stack ready in {time.monotonic() - started:.1f} s", flush=True)
    code = 1
    try:
        code = asyncio.run(run_demo(stack, args.policy, access, sys.stdout.isatty()))
        return code
    except TimeoutError:
        print(f"the agents did not finish within {RUN_TIMEOUT:.0f} s", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        stack.stop()
        if code == 0:
            shutil.rmtree(data, ignore_errors=True)
            print("stack stopped", flush=True)
        else:
            print(f"stack stopped; its logs are in {data / 'logs'}", flush=True)

if __name__ == "__main__":
    sys.exit(main())
