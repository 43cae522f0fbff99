"""Load an agent from a module file or folder and run it against the kernel,
reporting each syscall it makes as a Step while it runs."""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import json_format

from aios.agents.base import Agent, Step, StepCallback
from aios.kernel.v1 import syscall_pb2 as ks
from aios.sdk import AiosError, AsyncClient

DETAIL_CHARS = 96


@dataclass
class AgentRun:
    """How one run of an agent ended."""

    agent: str
    task: str
    answer: str = ""
    steps: list[Step] = field(default_factory=list)
    # The exception that ended the run, if any.
    error: BaseException | None = None
    started: float = 0.0
    finished: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def seconds(self) -> float:
        return self.finished - self.started


class AgentLoadError(Exception):
    pass


def load_agent(path: str | Path, pick: str | None = None, **options) -> Agent:
    """An agent from a .py file, or a folder holding __init__.py or agent.py.
    The module may define `agent` (an Agent) or `create_agent(**options)`;
    otherwise the Agent subclass it defines is used (`pick` chooses one by
    class name or agent name when it defines several). Options (name=,
    tools=, model=, ...) override the class attributes."""
    module = _import(Path(path))
    if pick is None and isinstance(getattr(module, "agent", None), Agent):
        agent = module.agent
        for key, value in options.items():
            setattr(agent, key, value)
        return agent
    if pick is None and callable(getattr(module, "create_agent", None)):
        return module.create_agent(**options)
    classes = [c for c in vars(module).values()
               if inspect.isclass(c) and issubclass(c, Agent) and c.__module__ == module.__name__
               and not inspect.isabstract(c) and "run" in _defined(c)]
    if pick is not None:
        classes = [c for c in classes if pick in (c.__name__, c.name)]
    if len(classes) != 1:
        found = ", ".join(c.__name__ for c in classes) or "none"
        want = f" named {pick!r}" if pick else ""
        raise AgentLoadError(f"{path}: expected one Agent subclass{want}, found {found}"
                             + (" (pick one with --agent)" if len(classes) > 1 else ""))
    return classes[0](**options)


def _defined(cls) -> set[str]:
    """Attributes defined by cls or a base class other than Agent itself."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is Agent:
            break
        names.update(vars(klass))
    return names


def _import(path: Path):
    if not path.exists():
        raise AgentLoadError(f"{path}: no such file or folder")
    package = None
    if path.is_dir():
        if (path / "__init__.py").exists():
            package, path = path, path / "__init__.py"
        elif (path / "agent.py").exists():
            path = path / "agent.py"
        else:
            raise AgentLoadError(f"{path}: a folder agent needs __init__.py or agent.py")
    elif path.suffix != ".py":
        raise AgentLoadError(f"{path}: not a Python file")
    module_name = f"aios_agent_{(package or path).stem}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(
        module_name, path, submodule_search_locations=[str(package)] if package else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and relative imports need it
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[module_name]
        raise
    return module


# --- steps from syscalls -------------------------------------------------

def _short(text: str, limit: int = DETAIL_CHARS) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


def _args(struct) -> str:
    return json.dumps(json_format.MessageToDict(struct), separators=(",", ":"))


def describe(syscall: ks.Syscall, record: ks.SyscallRecord | None) -> tuple[str, str, str]:
    """(kind, action, detail) of a syscall and, when it succeeded, its result."""
    kind = syscall.WhichOneof("call") or "?"
    if kind == "llm":
        # An empty model is the kernel's default: its record names the one used.
        model = syscall.llm.model or (record.resource.removeprefix("llm:") if record is not None else "")
        action = f"llm.chat {model or '(default)'}"
        if record is None:
            return kind, action, _short(syscall.llm.messages[-1].content) if syscall.llm.messages else ""
        calls = record.llm.tool_calls
        if calls:
            return kind, action, _short("calls " + ", ".join(f"{c.name}({c.arguments_json})" for c in calls))
        return kind, action, _short(record.llm.text)
    if kind == "tool":
        action = f"tool {syscall.tool.name}"
        out = f" -> {record.tool.output}" if record is not None else ""
        return kind, action, _short(_args(syscall.tool.arguments) + out)
    if kind == "memory":
        op = syscall.memory.WhichOneof("op")
        req = getattr(syscall.memory, op)
        action = f"memory.{op}"
        res = getattr(record.memory, op) if record is not None else None
        if op == "add":
            return kind, action, _short(req.memory.content)
        if op == "batch_add":
            return kind, action, f"{len(req.memories)} records"
        if op == "search":
            top = f" -> {res.results[0].memory.content!r} ({res.results[0].score:.2f})" \
                if res is not None and res.results else (" -> nothing" if res is not None else "")
            return kind, action, _short(f"{req.query!r}{top}")
        if op == "list" and res is not None:
            return kind, action, f"{len(res.memories)} records"
        return kind, action, _short(getattr(req, "id", ""))
    if kind == "storage":
        op = syscall.storage.WhichOneof("op")
        req = getattr(syscall.storage, op)
        res = getattr(record.storage, op) if record is not None else None
        name = {"list_versions": "versions", "retrieve": "search"}.get(op, op)
        action = f"files.{name}"
        if op == "write":
            ver = f" (version {res.file.version_id[:10]})" if res is not None else ""
            return kind, action, _short(f"{req.path}, {len(req.content)} bytes{ver}")
        if op == "retrieve":
            top = f" -> {res.passages[0].path} ({res.passages[0].score:.2f})" \
                if res is not None and res.passages else (" -> nothing" if res is not None else "")
            return kind, action, _short(f"{req.query!r}{top}")
        if op == "list_versions" and res is not None:
            return kind, action, f"{req.path}: {len(res.versions)} versions"
        if op == "list" and res is not None:
            return kind, action, f"{req.prefix or '/'}: {len(res.files)} files"
        if op == "read" and res is not None:
            return kind, action, f"{req.path}, {len(res.content)} bytes"
        return kind, action, _short(getattr(req, "path", ""))
    return kind, kind, ""


def syscall_step(agent: Agent, syscall: ks.Syscall, record: ks.SyscallRecord | None,
                 error: AiosError | None) -> Step:
    kind, action, detail = describe(syscall, record)
    facts = {}
    if record is not None:
        facts = dict(syscall_id=record.id, waiting=record.waiting.ToNanoseconds() / 1e9,
                     turnaround=record.turnaround.ToNanoseconds() / 1e9, tokens=record.usage.total_tokens)
    if error is not None:
        facts["error"] = error.code.name
        detail = _short(f"{detail} -> {error}" if detail else str(error))
    return agent.step(kind, action, detail, **facts)


# --- running -------------------------------------------------------------

async def run_agent(agent: Agent, task: str, *, address: str | None = None, token: str | None = None,
                    on_step: StepCallback | None = None, timeout: float = 120.0,
                    client: AsyncClient | None = None) -> AgentRun:
    """Run `agent` on `task` through the kernel at `address` (default
    $AIOS_KERNEL). The token defaults to $AIOS_TOKEN, else the agent's name
    (the kernel's development mode takes the token as the agent's name).
    Never raises for the agent's own failure: see AgentRun.error."""
    import os

    own = client is None
    if own:
        client = AsyncClient(address, token or os.environ.get("AIOS_TOKEN") or agent.name, timeout=timeout)
    kernel = client.with_options(on_syscall=lambda s, r, e: syscall_step(agent, s, r, e))
    agent.bind(kernel, on_step)
    run = AgentRun(agent=agent.name, task=task, steps=agent.steps, started=time.time())
    try:
        run.answer = (await agent.run(task)) or ""
        agent.step("answer", "answer", _short(run.answer, 400))
    except AiosError as err:
        run.error = err
        agent.step("error", "error", str(err), error=err.code.name)
    except Exception as exc:  # noqa: BLE001 - the agent's bug ends its run, reported
        run.error = exc
        agent.step("error", "error", f"{type(exc).__name__}: {exc}")
    finally:
        run.finished = time.time()
        if own:
            await client.close()
    return run
