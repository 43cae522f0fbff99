"""`aios run-agent PATH --task "..."`: load an agent from a module file or
folder, run it against the kernel and print its steps as they happen."""

from __future__ import annotations

import asyncio
import json
import os
import sys


def format_step(step) -> str:
    timing = ""
    if step.syscall_id:
        timing = f"  [wait {step.waiting * 1000:.0f} ms, turnaround {step.turnaround:.2f} s"
        timing += f", {step.tokens} tokens]" if step.tokens else "]"
    mark = f" ({step.error})" if step.error and step.kind != "error" else ""
    return f"{step.index:>3}  {step.action:<22} {step.detail}{mark}{timing}"


async def _run(agent, args, show):
    from aios.agents import run_agent
    from aios.sdk import AsyncClient

    from services.cli import common

    # The token: --token, else $AIOS_TOKEN, else the agent's name (the
    # kernel's development mode takes the token as the name).
    token = args.token or os.environ.get("AIOS_TOKEN") or agent.name
    async with AsyncClient(common.kernel_address(args), token, timeout=args.timeout,
                           on_confirmation=common.say_parked, **common.tls_options(args)) as client:
        return await run_agent(agent, args.task, client=client, on_step=show)


def cmd_run_agent(args) -> int:
    from aios.agents import AgentLoadError, load_agent
    from aios.sdk import UnauthenticatedError

    options = {"name": args.name} if args.name else {}
    try:
        agent = load_agent(args.path, args.agent, **options)
    except AgentLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    def show(step) -> None:
        if args.json:
            print(json.dumps(vars(step)), flush=True)
        elif step.kind != "answer":
            print(format_step(step), flush=True)

    if not args.json:
        print(f"agent {agent.name}: {agent.description or type(agent).__name__}"
              + (f" (tools: {', '.join(agent.tools)})" if agent.tools else ""), flush=True)
    try:
        run = asyncio.run(_run(agent, args, show))
    except KeyboardInterrupt:
        print("interrupted: the agent's syscalls were cancelled", file=sys.stderr)
        return 130
    summary = f"-- {len(run.steps)} steps in {run.seconds:.1f} s"
    if run.ok:
        if not args.json:
            print(f"answer: {run.answer}", flush=True)
        print(summary, file=sys.stderr)
        return 0
    print(f"error: {run.error}", file=sys.stderr)
    print(f"{summary}, failed", file=sys.stderr)
    if isinstance(run.error, UnauthenticatedError):
        print("hint: pass the agent's token with --token or AIOS_TOKEN (aios agent create NAME prints one)",
              file=sys.stderr)
    return 1


def register(sub, client_args) -> None:
    p = sub.add_parser("run-agent", help="run an agent (a .py file or a folder) against the kernel, printing its steps")
    p.add_argument("path", help="the agent: a .py file, or a folder with __init__.py or agent.py")
    p.add_argument("--task", required=True, help="what the agent should do")
    p.add_argument("--agent", default=None, help="which Agent class, when the module defines several")
    p.add_argument("--name", default=None, help="run under this agent name instead of the class's")
    p.add_argument("--json", action="store_true", help="print each step as a JSON line")
    client_args(p, timeout=300.0)
    p.set_defaults(func=cmd_run_agent)
