"""An agent in another language: examples/shell_agent.sh calls the real
kernel with grpcurl through server reflection (no SDK, no generated code),
and the kernel accounts for it like any other agent."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import uuid
from pathlib import Path

import pytest

from aios.kernel.v1 import syscall_pb2 as ks
from aios.sdk import AsyncClient

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "shell_agent.sh"
GRPCURL = Path(sys.executable).parent / "grpcurl"

JSON_TOOLS = ["python3"] + (["jq"] if shutil.which("jq") else [])


async def run_script(kernel: str, token: str, question: str, json_tool: str) -> tuple[int, str]:
    env = {**os.environ, "AIOS_KERNEL": kernel, "AIOS_TOKEN": token, "GRPCURL": str(GRPCURL),
           "SHELL_AGENT_JSON": json_tool}
    proc = await asyncio.create_subprocess_exec("sh", str(SCRIPT), question, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 180)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode, out.decode()


@pytest.mark.parametrize("json_tool", JSON_TOOLS)
async def test_shell_agent_uses_the_kernel_through_grpcurl(kernel_addr, json_tool):
    agent = f"shell-agent-{uuid.uuid4().hex[:6]}"
    code, out = await run_script(kernel_addr, agent, "What is 17*23+4?", json_tool)
    assert code == 0, out
    assert "kernel " + kernel_addr + ": SERVING" in out
    assert "calculator" in out.split("tools:", 1)[1].splitlines()[0]
    assert "tool calculator(17*23+4) -> 395" in out
    answer = next(line for line in out.splitlines() if line.startswith("answer: "))
    assert "395" in answer
    assert f"process table: {agent} completed 2, tokens " in out
    assert int(out.split(f"process table: {agent} completed 2, tokens ")[1].split()[0]) > 0

    # The kernel ran the tool and the LLM call as this agent's syscalls.
    async with AsyncClient(kernel_addr, token=agent, timeout=30) as aios:
        records = (await aios.list_syscalls(agent=agent)).syscalls
    assert sorted(ks.SyscallKind.Name(r.kind) for r in records) == ["SYSCALL_KIND_LLM", "SYSCALL_KIND_TOOL"]
    assert all(r.state == ks.SYSCALL_STATE_SUCCEEDED and r.agent == agent for r in records)


async def test_shell_agent_reports_the_kernels_status_on_failure(kernel_addr):
    code, out = await run_script(kernel_addr, "not a valid token!", "What is 1+1?", "python3")
    assert code != 0
    assert "Unauthenticated" in out
