"""Agents through a real kernel with real memory (embedded Qdrant), real
storage (SeaweedFS S3) and the real llama.cpp: the Agent base and runner,
the example agents run concurrently, and `aios run-agent`."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import pytest_asyncio

from aios.agents import Agent, AgentLoadError, load_agent, run_agent
from aios.sdk import AsyncClient, NotFoundError, PermissionDeniedError, UnavailableError
from services.local.seaweed import start_seaweed
from tests.conftest import kernel_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "agents"
AIOS = str(Path(sys.executable).parent / "aios")


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = start_seaweed(tmp_path_factory.mktemp("agents-s3"))
    yield server
    server.stop(graceful=False)


@pytest_asyncio.fixture(scope="module")
async def kernel(s3, llm_core_addr, start_service, tmp_path_factory):
    """A kernel over llm_core, memory and storage, all in-process on port 0."""
    from services.memory.app import build as build_memory
    from services.memory.config import Config as MemoryConfig
    from services.scheduler.app import build as build_kernel
    from services.storage.app import build as build_storage
    from services.storage.config import Config as StorageConfig

    memory = await start_service(build_memory, MemoryConfig.from_env({
        "AIOS_LLM_ADDR": llm_core_addr,
        "AIOS_MEMORY_QDRANT_PATH": str(tmp_path_factory.mktemp("agents-memory"))}))
    storage = await start_service(build_storage, StorageConfig.from_env({
        "AIOS_STORAGE_S3_ENDPOINT": s3.endpoint, "AIOS_STORAGE_S3_ACCESS_KEY": s3.access_key,
        "AIOS_STORAGE_S3_SECRET_KEY": s3.secret_key, "AIOS_LLM_ADDR": llm_core_addr,
        "AIOS_STORAGE_QDRANT_PATH": str(tmp_path_factory.mktemp("agents-index"))}))
    server = await start_service(build_kernel, kernel_config(
        llm_core_addr, auth="dev", AIOS_MEMORY_ADDR=f"127.0.0.1:{memory.port}",
        AIOS_STORAGE_ADDR=f"127.0.0.1:{storage.port}"))
    return f"127.0.0.1:{server.port}"


def actions(run) -> list[str]:
    return [s.action for s in run.steps]


# --- the example agents, concurrently -----------------------------------------------

async def test_example_agents_run_concurrently_through_the_kernel(kernel):
    calc = load_agent(EXAMPLES / "calculator.py", name=unique("calc"))
    keeper = load_agent(EXAMPLES / "memory_keeper.py", name=unique("keeper"))
    notes = load_agent(EXAMPLES / "note_taker.py", name=unique("notes"))
    reported = []
    runs = await asyncio.gather(
        run_agent(calc, "What is 17*23+4? Use the calculator.", address=kernel, on_step=reported.append),
        run_agent(keeper, "Remember: Bob plays the cello. Remember: Ada's favourite colour is green. "
                          "Remember: The office wifi password is under the router. "
                          "Which instrument does Bob play?", address=kernel, on_step=reported.append),
        run_agent(notes, "how the kernel schedules LLM calls", address=kernel, on_step=reported.append),
    )
    for run in runs:
        assert run.ok, (run.agent, run.error, [(s.action, s.detail) for s in run.steps])
        assert [s.index for s in run.steps] == list(range(1, len(run.steps) + 1))
        assert run.steps[-1].kind == "answer"
    assert len(reported) == sum(len(r.steps) for r in runs)  # every step was reported as it happened
    calc_run, keeper_run, notes_run = runs

    # ReAct: the model's tool call ran as a tool syscall, and the answer holds its result.
    tool_steps = [s for s in calc_run.steps if s.action == "tool calculator"]
    assert tool_steps and tool_steps[0].detail.endswith("-> 395") and tool_steps[0].syscall_id
    assert any(s.kind == "llm" and s.detail.startswith("calls calculator") for s in calc_run.steps)
    assert "395" in calc_run.answer

    # Memory: three facts kept, the right one recalled by meaning and used.
    assert actions(keeper_run)[:4] == ["memory.add"] * 3 + ["memory.search"]
    assert "Bob plays the cello" in keeper_run.steps[3].detail
    assert "cello" in keeper_run.answer

    # Files: written, found by meaning, revised into a second version, the first kept.
    assert actions(notes_run).count("files.write") == 2
    search = next(s for s in notes_run.steps if s.action == "files.search")
    assert "notes/how-the-kernel-schedules-llm-calls.md" in search.detail
    assert "2 versions" in notes_run.answer and "first one kept" in notes_run.answer

    # The kernel saw each agent under its own name, with its syscalls and tokens.
    async with AsyncClient(kernel, token="observer", timeout=30) as aios:
        stats = {a.agent: a for a in await aios.list_agents()}
    for run in runs:
        syscalls = [s for s in run.steps if s.syscall_id]
        assert stats[run.agent].completed == len(syscalls)
        assert stats[run.agent].prompt_tokens > 0


# --- the Agent base -----------------------------------------------------------------------

class Plain(Agent):
    name = "plain"
    tools = ("calculator",)

    async def run(self, task: str) -> str:
        return await self.call_tool(task, {"expression": "1+1"})


async def test_an_agent_may_call_only_the_tools_it_declared(kernel):
    agent = Plain(name=unique("plain"))
    run = await run_agent(agent, "files.read", address=kernel)
    assert isinstance(run.error, PermissionDeniedError) and run.error.reason == "TOOL_NOT_DECLARED"
    assert [s.kind for s in run.steps] == ["error"]  # refused before any syscall

    ok = await run_agent(Plain(name=unique("plain")), "calculator", address=kernel)
    assert ok.ok and ok.answer == "2" and ok.steps[0].action == "tool calculator"


async def test_a_declared_tool_the_kernel_lacks_fails_the_run_clearly(kernel):
    calc = load_agent(EXAMPLES / "calculator.py", name=unique("calc"), tools=("calculator", "no.such.tool"))
    run = await run_agent(calc, "What is 2+2?", address=kernel)
    assert isinstance(run.error, NotFoundError) and run.error.reason == "UNKNOWN_TOOL"
    assert "no.such.tool" in str(run.error)


async def test_a_service_that_is_down_ends_the_run_with_a_clear_error(llm_core_addr, start_service):
    import socket

    from services.scheduler.app import build as build_kernel

    # A port bound but not listening for the whole run: connections are
    # refused, and no other process can start listening on it meanwhile.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{closed.getsockname()[1]}"
        server = await start_service(build_kernel, kernel_config(
            llm_core_addr, auth="dev", AIOS_MEMORY_ADDR=nowhere, AIOS_STORAGE_ADDR=nowhere))
        keeper = load_agent(EXAMPLES / "memory_keeper.py", name=unique("keeper"))
        run = await run_agent(keeper, "Remember: the sky is blue. What colour is the sky?",
                              address=f"127.0.0.1:{server.port}", timeout=20)
    assert isinstance(run.error, UnavailableError)
    assert run.steps[0].action == "memory.add" and run.steps[0].error == "UNAVAILABLE"
    assert run.steps[-1].kind == "error" and "UNAVAILABLE" in run.steps[-1].detail


# --- loading agents -------------------------------------------------------------------------

def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_load_agent_from_a_file_a_package_folder_and_an_agent_py_folder(tmp_path):
    assert type(load_agent(EXAMPLES / "calculator.py")).__name__ == "CalculatorAgent"

    pkg = tmp_path / "greeter"
    write(pkg / "helpers.py", "def shout(text):\n    return text.upper()\n")
    write(pkg / "__init__.py", """
        from aios.agents import Agent
        from .helpers import shout

        class Greeter(Agent):
            name = "greeter"
            async def run(self, task):
                return shout(task)
    """)
    agent = load_agent(pkg)
    assert agent.name == "greeter" and type(agent).__name__ == "Greeter"

    write(tmp_path / "plain" / "agent.py", """
        from aios.agents import Agent
        class Echo(Agent):
            async def run(self, task):
                return task
        agent = Echo(name="echo-1")
    """)
    assert load_agent(tmp_path / "plain").name == "echo-1"


def test_load_agent_errors_are_clear(tmp_path):
    two = write(tmp_path / "two.py", """
        from aios.agents import Agent, ReActAgent
        class A(Agent):
            async def run(self, task):
                return "a"
        class B(Agent):
            name = "bee"
            async def run(self, task):
                return "b"
    """)
    with pytest.raises(AgentLoadError, match="found A, B.*--agent"):
        load_agent(two)
    assert load_agent(two, "bee").name == "bee" and type(load_agent(two, "A")).__name__ == "A"
    with pytest.raises(AgentLoadError, match="no such file"):
        load_agent(tmp_path / "missing.py")
    with pytest.raises(AgentLoadError, match="__init__.py or agent.py"):
        load_agent(tmp_path)
    with pytest.raises(TypeError, match="no option 'colour'"):
        load_agent(two, "A", colour="red")


# --- the command line ------------------------------------------------------------------------

async def run_cli(*args: str, timeout: float = 120) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(AIOS, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, cwd=str(ROOT))
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode, out.decode(), err.decode()


async def test_aios_run_agent_prints_the_steps_and_the_answer(kernel):
    name = unique("cli-keeper")
    code, out, err = await run_cli(
        "run-agent", str(EXAMPLES / "memory_keeper.py"), "--kernel", kernel, "--name", name,
        "--task", "Remember: The meeting room is called Orion. Which room do we meet in?")
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0].startswith(f"agent {name}: Keeps facts")
    assert "memory.add" in lines[1] and "The meeting room is called Orion" in lines[1]
    assert "memory.search" in lines[2] and "turnaround" in lines[2]
    assert "llm.chat smollm2" in lines[3]
    assert lines[-1].startswith("answer: ") and "Orion" in lines[-1]

    code, out, err = await run_cli("run-agent", "no/such/agent.py", "--kernel", kernel, "--task", "x")
    assert code == 2 and "no such file" in err


# --- make demo's table ---------------------------------------------------------------------

def test_demo_agents_load_and_the_table_follows_their_steps():
    from services.cli.demo import DEMO_AGENTS, Board, Row, render

    agents = [load_agent(EXAMPLES / file, name=name) for file, name, _ in DEMO_AGENTS]
    assert len({a.name for a in agents}) == len(DEMO_AGENTS) >= 4
    board = Board({a.name: Row("task") for a in agents})
    first, second = agents[0], agents[1]
    first.bind(None, board.on_step)
    second.bind(None, board.on_step)
    first.step("tool", "tool calculator", '{"expression":"17*23+4"} -> 395', syscall_id="s1", turnaround=0.5)
    first.step("answer", "answer", "395")
    second.step("error", "error", "UNAVAILABLE: memory is down", error="UNAVAILABLE")
    lines = render(board, "fifo", width=100)
    rows = {line.split()[0]: line for line in lines[2:]}
    assert rows[first.name].split()[1:3] == ["done", "2"] and "tool calculator" in rows[first.name]
    assert rows[second.name].split()[1] == "failed" and "UNAVAILABLE" in rows[second.name]
    assert rows[agents[2].name].split()[1] == "starting"
    assert all(len(line) <= 100 for line in lines)
