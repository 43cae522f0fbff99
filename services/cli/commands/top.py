"""`aios top`: the kernel's live view in a terminal, what the console at
http://HOST:PORT/console shows: each agent's calls, tokens and cost, each
resource's queue, the confirmations waiting for a person and the newest
syscalls, redrawn every --interval seconds until q or Ctrl-C. `--once`
prints one plain frame and exits (for scripts).

Over gRPC with the SDK (GetStatus, ListAgents, ListSyscalls), plus the
access service's ListConfirmations when the credential is an admin's; an
agent's token sees only its own calls and no confirmations. Plain ANSI, no
curses.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field

from services.cli import common
from services.cli.commands import admin
from services.cli.commands.kernel import PS_HEADER, SYSCALLS_HEADER, ps_row, syscall_row
from services.cli.commands.quota import money

QUEUES_HEADER = ("RESOURCE", "CAPACITY", "RUNNING", "QUEUED", "HELD")
CONFIRMATIONS_HEADER = ("CONFIRMATION", "AGENT", "ACTION", "RESOURCE", "SYSCALL", "SUMMARY")
BOLD, RESET = "\x1b[1m", "\x1b[0m"


@dataclass
class Snapshot:
    status: object = None  # GetStatusResponse
    agents: list = field(default_factory=list)
    syscalls: list = field(default_factory=list)
    confirmations: list | None = None  # access Confirmations, None when not shown
    note: str = ""  # why they are not shown


def snapshot(kernel, args, limit: int) -> Snapshot:
    """One look at the kernel (and at the access service's confirmations)."""
    from aios.access.v1 import access_service_pb2 as apb

    snap = Snapshot(status=kernel.get_status(), agents=kernel.list_agents(),
                    syscalls=list(kernel.list_syscalls(page_size=limit).syscalls))
    if snap.status.auth == "dev":
        snap.note = "none in development mode (AIOS_KERNEL_AUTH=dev)"
        return snap
    try:
        reply = admin._call(args, "ListConfirmations", apb.ListConfirmationsRequest())
        snap.confirmations = sorted(reply.confirmations, key=lambda c: c.create_time.ToNanoseconds())
    except common.CliError as err:
        snap.note = f"not shown ({err}); an admin credential shows them"
    return snap


def frame(snap: Snapshot, where: str) -> list[tuple[str, bool]]:
    """The screen as lines, each with whether it is a heading."""
    from aios.access.v1 import access_service_pb2 as apb
    from aios.kernel.v1 import kernel_service_pb2 as kpb
    from aios.kernel.v1 import syscall_pb2 as ks

    status = snap.status
    policy = kpb.PolicyKind.Name(status.policy.kind).removeprefix("POLICY_KIND_").lower()
    tokens = sum(a.prompt_tokens + a.completion_tokens for a in snap.agents)
    parked = sum(1 for r in snap.syscalls if r.state == ks.SYSCALL_STATE_AWAITING_CONFIRMATION)
    lines: list[tuple[str, bool]] = [
        (f"aios top - kernel {where}, auth {status.auth}, policy {policy}, {time.strftime('%H:%M:%S')}", True),
        (f"agents {len(snap.agents)}  running {sum(a.running for a in snap.agents)}  "
         f"queued {sum(q.queued for q in status.queues)}  awaiting a person {parked}  "
         f"tokens {tokens}  cost {money(sum(a.cost for a in snap.agents))}", False),
    ]

    def section(header, rows, right, empty: str) -> None:
        lines.append(("", False))
        table = common.table_lines(header, rows, right=right)
        lines.append((table[0], True))
        lines.extend((line, False) for line in table[1:])
        if not rows:
            lines.append((f"  ({empty})", False))

    section(PS_HEADER, [ps_row(a) for a in snap.agents], range(1, 9), "no agents have made syscalls yet")
    section(QUEUES_HEADER, [(q.resource, q.capacity, q.running, q.queued, q.held) for q in status.queues],
            range(1, 5), "no queue yet")
    if snap.confirmations is None:
        lines += [("", False), (f"CONFIRMATIONS  {snap.note}", True)]
    else:
        section(CONFIRMATIONS_HEADER, [
            (c.id, c.agent, admin._enum(apb.Action.Name(c.action), "ACTION_"), admin._resource(apb, c.resource)[:32],
             c.syscall_id, c.summary) for c in snap.confirmations], (), "nothing waits for a person")
    section((*SYSCALLS_HEADER, "TRACE"), [(*syscall_row(r), r.trace_id[:16] or "-") for r in snap.syscalls],
            (6, 7, 8), "no syscalls yet")
    return lines


def screen(lines: list[tuple[str, bool]], width: int, height: int, ansi: bool) -> str:
    """The lines cut to the terminal (headings in bold when `ansi`)."""
    out = []
    for text, heading in lines[:height]:
        text = text[:width]
        out.append(f"{BOLD}{text}{RESET}" if ansi and heading else text)
    return "\n".join(out)


class Keys:
    """The terminal's keys, read one at a time (cbreak: Ctrl-C still
    interrupts); without a terminal there are none to read."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self._saved = None

    def __enter__(self) -> "Keys":
        if sys.stdin is not None and sys.stdin.isatty():
            try:
                import termios
                import tty
            except ImportError:  # not a POSIX terminal
                return self
            self.fd = sys.stdin.fileno()
            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)

    def quit_within(self, seconds: float) -> bool:
        """Whether q is pressed in the next `seconds`."""
        if self.fd is None:
            time.sleep(seconds)
            return False
        import select

        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready and os.read(self.fd, 1) in (b"q", b"Q", b"\x03"):  # \x03: Ctrl-C read as a key
                return True
        return False


def cmd_top(args) -> int:
    from aios.sdk import AiosError

    where = common.kernel_address(args)
    if args.once:
        try:
            with common.client(args) as kernel:
                lines = frame(snapshot(kernel, args, args.limit), where)
        except AiosError as err:
            print(f"error: {common.explain(err, args)}", file=sys.stderr)
            return 1
        except common.CliError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(screen(lines, 10_000, len(lines), ansi=False))
        return 0
    if args.interval <= 0:
        print("error: --interval must be more than 0 seconds", file=sys.stderr)
        return 2
    out, failure = sys.stdout, ""
    out.write("\x1b[?1049h\x1b[?25l")  # the alternate screen, no cursor
    try:
        with Keys() as keys, common.client(args) as kernel:
            while True:
                size = shutil.get_terminal_size()
                try:
                    lines = frame(snapshot(kernel, args, max(args.limit, size.lines)), where)
                except AiosError as err:  # shown, and tried again at the next refresh
                    lines = [(f"aios top - kernel {where}", True), (f"error: {common.explain(err, args)}", False)]
                lines.append((f"(every {args.interval:g}s; q quits)", False))
                out.write("\x1b[H\x1b[2J" + screen(lines, size.columns, size.lines - 1, ansi=True))
                out.flush()
                if keys.quit_within(args.interval):
                    break
    except KeyboardInterrupt:
        pass
    except common.CliError as err:
        failure = str(err)
    finally:
        out.write("\x1b[?25h\x1b[?1049l")
        out.flush()
    if failure:  # after the screen is back, or nobody would see it
        print(f"error: {failure}", file=sys.stderr)
        return 1
    return 0


def register(sub, client_args) -> None:
    p = sub.add_parser("top", help="a live view of agents, queues, confirmations and syscalls (q quits)")
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                   help="seconds between refreshes (default 1)")
    p.add_argument("--once", action="store_true", help="print one frame, without terminal codes, and exit")
    p.add_argument("--limit", type=int, default=20, metavar="N",
                   help="the newest N syscalls (default 20; a live view fills the terminal)")
    p.add_argument("--access-addr", default="", metavar="ADDR",
                   help="access service address, for confirmations (default $AIOS_ACCESS_ADDR, else where "
                        f"the kernel says, else {admin.ACCESS_ADDR})")
    client_args(p, timeout=10.0)
    p.set_defaults(func=cmd_top)
