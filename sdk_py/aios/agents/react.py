"""A ReAct agent: the model sees the agent's tools; each tool call it makes
runs as a tool syscall, and the output goes back to it as a "tool" message,
until it answers or runs out of turns (the last turn allows no tools).

Small models need help, so the loop has hooks: `prompt` (the user message),
`tool_choice` (e.g. force a tool on the first turn), `review` (check a tool
call's arguments before it runs), `repair` (fix a tool call that failed),
`finish` (check or complete the answer).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from aios.agents.base import Agent
from aios.sdk import AiosError

# Tool names as OpenAI-compatible models accept them ("files.read" -> "files_read").
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass
class Observation:
    tool: str
    arguments: dict[str, Any]
    output: str
    ok: bool


class ReActAgent(Agent):
    system: str = ("You are a helpful assistant. Use a tool when it helps, "
                   "then answer in one short sentence.")
    max_turns: int = 4
    # Completion tokens per model turn (a tool call in JSON needs ~40).
    max_tokens: int = 96
    temperature: float = 0.0

    def prompt(self, task: str) -> str:
        """The user message that starts the conversation."""
        return task

    def tool_choice(self, task: str, turn: int, observations: list[Observation]) -> str:
        """"auto", "none", "required" or a tool name, for this turn."""
        return "auto"

    def review(self, task: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """The arguments a tool call the model asked for runs with."""
        return arguments

    async def repair(self, task: str, tool: str, arguments: dict[str, Any],
                     error: AiosError) -> dict[str, Any] | None:
        """Arguments to retry a failed tool call with once, or None."""
        return None

    async def finish(self, task: str, answer: str, observations: list[Observation]) -> str:
        """The final answer from the model's last reply."""
        if answer.strip():
            return answer.strip()
        done = [o for o in observations if o.ok]
        return done[-1].output if done else ""

    async def run(self, task: str) -> str:
        schemas = await self.tool_schemas()
        to_model = {s["name"]: _UNSAFE.sub("_", s["name"]) for s in schemas}
        to_kernel = {v: k for k, v in to_model.items()}
        llm_tools = [{**s, "name": to_model[s["name"]]} for s in schemas]
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.system},
                                          {"role": "user", "content": self.prompt(task)}]
        observations: list[Observation] = []
        tools_usable = bool(llm_tools)
        answer = ""
        for turn in range(self.max_turns):
            last = turn == self.max_turns - 1
            choice = "none" if last or not tools_usable else self.tool_choice(task, turn, observations)
            if choice not in ("auto", "none", "required"):
                choice = to_model.get(choice, choice)
            try:
                reply = await self.chat(messages, tools=llm_tools or None, tool_choice=choice,
                                        max_tokens=self.max_tokens, temperature=self.temperature)
            except AiosError as err:
                if err.reason != "MALFORMED_TOOL_CALL":
                    raise
                # The model could not produce a valid call: go on without tools.
                self.note("the model's tool call was malformed; continuing without tools")
                tools_usable = False
                continue
            if not reply.tool_calls:
                answer = reply.text
                break
            messages.append({"role": "assistant", "content": reply.text, "tool_calls": [
                {"id": c.id, "name": c.name, "arguments": c.arguments} for c in reply.tool_calls]})
            seen: dict[str, str] = {}
            for call in reply.tool_calls:
                tool = to_kernel.get(call.name, call.name)
                # Small models repeat a call; run each distinct one once.
                key = tool + json.dumps(call.arguments, sort_keys=True)
                if key not in seen:
                    obs = await self._act(task, tool, call.arguments, call.id)
                    observations.append(obs)
                    seen[key] = obs.output
                messages.append({"role": "tool", "tool_call_id": call.id, "name": call.name,
                                 "content": seen[key]})
        return await self.finish(task, answer, observations)

    async def _act(self, task: str, tool: str, arguments: dict[str, Any], call_id: str) -> Observation:
        reviewed = self.review(task, tool, arguments)
        if reviewed != arguments:
            self.note(f"{tool}: using {json.dumps(reviewed)} instead of the model's {json.dumps(arguments)}")
            arguments = reviewed
        try:
            return Observation(tool, arguments, await self.call_tool(tool, arguments, tool_call_id=call_id), True)
        except AiosError as err:
            fixed = await self.repair(task, tool, arguments, err)
            if fixed is None or fixed == arguments:
                return Observation(tool, arguments, f"error: {err.message}", False)
            self.note(f"retrying {tool} with {json.dumps(fixed)}")
            try:
                return Observation(tool, fixed, await self.call_tool(tool, fixed, tool_call_id=call_id), True)
            except AiosError as again:
                return Observation(tool, fixed, f"error: {again.message}", False)
