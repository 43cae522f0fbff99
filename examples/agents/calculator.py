"""A ReAct agent that answers arithmetic with the kernel's calculator tool.

    aios run-agent examples/agents/calculator.py --task "What is 17*23+4? Use the calculator."

A 135M-parameter model is weak at arithmetic and at tool calls, so the agent
makes the tool call happen and keeps it honest: when the task holds
arithmetic, the prompt names the expression and the first turn forces the
calculator (tool_choice); a call whose expression is not the task's is run
with the task's; a failed call is retried with it; an answer that lost the
result gets it back.
"""

from __future__ import annotations

import re

from aios.agents import Observation, ReActAgent
from aios.sdk import AiosError

_WORDS = [(r"\bmultiplied by\b|\btimes\b", "*"), (r"\bdivided by\b|\bover\b", "/"),
          (r"\bplus\b", "+"), (r"\bminus\b", "-"), (r"\bto the power of\b", "**")]
_EXPRESSION = re.compile(r"[\d(][\d\s.()+\-*/%^]*[\d)]")


def arithmetic_in(text: str) -> str | None:
    """The first arithmetic expression in text ("17 times 23" -> "17 * 23")."""
    for pattern, symbol in _WORDS:
        text = re.sub(pattern, f" {symbol} ", text, flags=re.IGNORECASE)
    for match in _EXPRESSION.finditer(text):
        expr = " ".join(match.group().split()).replace("^", "**")
        if re.search(r"\d\s*[-+*/%]", expr):
            return expr
    return None


def _same(a: str, b: str) -> bool:
    return re.sub(r"[\s{}]", "", a) == re.sub(r"[\s{}]", "", b)


class CalculatorAgent(ReActAgent):
    name = "calculator-agent"
    description = "Answers arithmetic questions with the kernel's calculator tool."
    tools = ("calculator",)
    system = ("You are a careful assistant. Use the calculator tool for arithmetic. "
              "After the tool answers, reply in one short sentence that states the result.")
    max_turns = 3
    # A tool call in JSON takes ~50 tokens.
    max_tokens = 96

    def prompt(self, task: str) -> str:
        expr = arithmetic_in(task)
        return f"{task}\nCall the calculator with the expression {expr}" if expr else task

    def tool_choice(self, task: str, turn: int, observations: list[Observation]) -> str:
        if turn == 0 and arithmetic_in(task):
            return "calculator"
        if any(o.ok for o in observations):
            return "none"  # the result is in; time to answer
        return "auto"

    def review(self, task: str, tool: str, arguments: dict) -> dict:
        expr = arithmetic_in(task)
        if tool == "calculator" and expr and not _same(str(arguments.get("expression", "")), expr):
            return {"expression": expr}
        return arguments

    async def repair(self, task, tool, arguments, error: AiosError):
        expr = arithmetic_in(task)
        return {"expression": expr} if tool == "calculator" and expr else None

    async def finish(self, task: str, answer: str, observations: list[Observation]) -> str:
        results = [o for o in observations if o.tool == "calculator" and o.ok]
        expr = arithmetic_in(task)
        if not results and expr:
            self.note("the model answered without the calculator; calling it myself")
            try:
                value = await self.call_tool("calculator", {"expression": expr})
            except AiosError as err:
                return f"{answer.strip()} (the calculator could not evaluate {expr!r}: {err.message})"
            results = [Observation("calculator", {"expression": expr}, value, True)]
        answer = answer.strip()
        if not results:
            return answer
        last = results[-1]
        # A reply that echoes tool-call JSON, or lost the number, is no answer.
        if last.output not in answer or answer.startswith(("{", "[")):
            return f"{last.arguments['expression']} = {last.output}"
        return answer
