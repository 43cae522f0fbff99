"""The Agent base: a name, a description, the kernel tools the agent may use,
and an async `run(task)` that asks the kernel for everything through syscalls.

    from aios.agents import Agent

    class Greeter(Agent):
        name = "greeter"
        description = "Says hello."

        async def run(self, task: str) -> str:
            reply = await self.chat(f"Greet {task} in one sentence.", max_tokens=32)
            return reply.text

The runner (`aios.agents.run_agent`, `aios run-agent`) gives the agent a
connected `AsyncClient` as `self.kernel` and turns every syscall the agent
makes into a Step it reports as it happens.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aios.sdk import AsyncClient, ChatResult, PermissionDeniedError
from aios.sdk.client import DEFAULT_MODEL, tool_schemas


@dataclass
class Step:
    """One thing an agent did: a syscall (llm, memory, storage, tool) or a
    note of its own (note, answer, error)."""

    agent: str
    index: int
    kind: str
    action: str
    detail: str = ""
    syscall_id: str = ""
    # From the kernel's record: seconds queued and from submit to finish.
    waiting: float = 0.0
    turnaround: float = 0.0
    tokens: int = 0
    # The status code name when the syscall failed.
    error: str = ""
    time: float = 0.0


StepCallback = Callable[[Step], None]


class Agent:
    """Subclass it: set `name`, `description`, `tools`, and write `run`."""

    name: str = ""
    description: str = ""
    # Names of the kernel tools this agent may call (see `aios tools` or
    # AsyncClient.list_tools()); call_tool refuses any other.
    tools: tuple[str, ...] | list[str] = ()
    model: str = DEFAULT_MODEL

    def __init__(self, **options: Any) -> None:
        # Options override the class attributes (name="calc-2", model=...).
        for key, value in options.items():
            if not hasattr(type(self), key):
                raise TypeError(f"{type(self).__name__} has no option {key!r}")
            setattr(self, key, value)
        if not self.name:
            self.name = type(self).__name__
        self.kernel: AsyncClient | None = None
        self.steps: list[Step] = []
        self._on_step: StepCallback | None = None
        self._schemas: list[dict[str, Any]] | None = None

    async def run(self, task: str) -> str:
        """Do the task through the kernel; return the answer."""
        raise NotImplementedError(f"{type(self).__name__} must define async run(task)")

    # --- set up by the runner ----------------------------------------------

    def bind(self, kernel: AsyncClient, on_step: StepCallback | None = None) -> None:
        self.kernel = kernel
        self._on_step = on_step
        self._schemas = None

    def step(self, kind: str, action: str, detail: str = "", **facts: Any) -> Step:
        """Record (and report) a step; syscalls are recorded by the runner."""
        step = Step(agent=self.name, index=len(self.steps) + 1, kind=kind, action=action,
                    detail=detail, time=time.time(), **facts)
        self.steps.append(step)
        if self._on_step is not None:
            self._on_step(step)
        return step

    def note(self, text: str) -> Step:
        """A step that is the agent's own reasoning, not a syscall."""
        return self.step("note", "note", text)

    # --- helpers over the kernel -------------------------------------------

    def _client(self) -> AsyncClient:
        if self.kernel is None:
            raise RuntimeError(f"agent {self.name!r} is not bound to a kernel; run it with aios.agents.run_agent")
        return self.kernel

    async def chat(self, prompt, **kwargs) -> ChatResult:
        """An LLM syscall with this agent's model (see AsyncClient.llm.chat)."""
        kwargs.setdefault("model", self.model)
        return await self._client().llm.chat(prompt, **kwargs)

    async def tool_schemas(self) -> list[dict[str, Any]]:
        """The declared tools as the kernel describes them, for llm.chat(tools=...).
        A declared tool the kernel does not have raises NotFoundError."""
        if self._schemas is None:
            specs = await self._client().list_tools() if self.tools else []
            self._schemas = tool_schemas(specs, list(self.tools))
        return self._schemas

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None, *,
                        tool_call_id: str = "", timeout: float | None = None) -> str:
        """A tool syscall; only tools this agent declared may be called."""
        if name not in self.tools:
            raise PermissionDeniedError(
                f"agent {self.name!r} did not declare the tool {name!r} (declared: {', '.join(self.tools) or 'none'})",
                reason="TOOL_NOT_DECLARED")
        return await self._client().tools.call(name, arguments or {}, tool_call_id=tool_call_id, timeout=timeout)
