"""Tool calls for models without native tool calling (SmolLM2 among them).

The tools are described in a system message and the answer is constrained
with a JSON schema (`response_format`, which llama.cpp turns into a grammar):

    {"tool_calls": [{"name": <one tool>, "arguments": <that tool's parameters>}, ...]}

or, when the model may also answer in words (tool choice auto),
`{"content": ...}`. The reply is parsed back into ordinary tool calls. Past
tool calls and tool results in the history become plain assistant and user
messages, since such chat templates know no tool role.

Plain domain code: no gRPC, no HTTP.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import jsonschema

from services.runtime import errors

SCHEMA_NAME = "tool_calls"
# Calls in one answer; a bound keeps a small model from listing calls until
# it runs out of tokens.
MAX_CALLS = 8
# Model output quoted in an error message, at most.
QUOTE_CHARS = 200


@dataclass(frozen=True)
class ToolPlan:
    """What an emulated tool call asks of the model."""

    tools: tuple[dict[str, Any], ...]  # {"name", "description", "parameters"}
    forced: str = ""  # the one tool tool_choice names; "" = any
    required: bool = False  # a call is required (no text answer)
    content_schema: dict[str, Any] | None = None  # schema of a text answer


def plan(tools: list[dict[str, Any]], tool_choice: Any,
         response_format: dict[str, Any] | None) -> ToolPlan | None:
    """The plan for OpenAI-style `tools` and `tool_choice`; None if no tool may be called."""
    if not tools or tool_choice == "none":
        return None
    functions = tuple(t["function"] for t in tools)
    forced = ""
    if isinstance(tool_choice, dict):
        forced = tool_choice["function"]["name"]
    required = bool(forced) or tool_choice == "required"
    content_schema = None
    if not required:
        content_schema = {"type": "string"}
        if response_format and response_format.get("type") == "json_schema":
            content_schema = response_format["json_schema"].get("schema") or {"type": "object"}
        elif response_format and response_format.get("type") == "json_object":
            content_schema = {"type": "object"}
    return ToolPlan(tools=functions, forced=forced, required=required, content_schema=content_schema)


def _callable(p: ToolPlan) -> tuple[dict[str, Any], ...]:
    return tuple(t for t in p.tools if not p.forced or t["name"] == p.forced)


def schema(p: ToolPlan) -> dict[str, Any]:
    """JSON schema of an answer under the plan."""
    calls = [
        {"type": "object",
         "properties": {"name": {"const": t["name"]}, "arguments": _parameters(t)},
         "required": ["name", "arguments"], "additionalProperties": False}
        for t in _callable(p)
    ]
    item = calls[0] if len(calls) == 1 else {"anyOf": calls}
    with_calls = {
        "type": "object",
        "properties": {"tool_calls": {"type": "array", "items": item, "minItems": 1,
                                      "maxItems": 1 if p.forced else MAX_CALLS}},
        "required": ["tool_calls"], "additionalProperties": False,
    }
    if p.content_schema is None:
        return with_calls
    with_text = {"type": "object", "properties": {"content": p.content_schema},
                 "required": ["content"], "additionalProperties": False}
    return {"anyOf": [with_calls, with_text]}


def response_format(p: ToolPlan) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "schema": schema(p), "strict": True}}


def _parameters(tool: dict[str, Any]) -> dict[str, Any]:
    return tool.get("parameters") or {"type": "object", "properties": {}}


def instruction(p: ToolPlan) -> str:
    lines = ["You can call these tools:"]
    for t in _callable(p):
        desc = f": {t['description']}" if t.get("description") else ""
        lines.append(f"- {t['name']}{desc}. Arguments (JSON schema): "
                     f"{json.dumps(_parameters(t), separators=(',', ':'))}")
    lines.append('To call tools, reply only with JSON: '
                 '{"tool_calls": [{"name": "<tool name>", "arguments": {...}}]}')
    if p.forced:
        lines.append(f"You must call the tool {p.forced}.")
    elif p.required:
        lines.append("You must call at least one tool.")
    else:
        lines.append('To answer without a tool, reply only with JSON: {"content": <your answer>}')
    return "\n".join(lines)


def instruct(p: ToolPlan, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with the tool instruction added to (or as) the system message."""
    text = instruction(p)
    if messages and messages[0]["role"] == "system":
        first = dict(messages[0])
        first["content"] = f"{first['content']}\n\n{text}" if first["content"] else text
        return [first, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def plain_history(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool calls and tool results as the plain messages a template without
    tool support renders; calls in the same JSON the model is asked for."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    results_at = -1  # index in `out` of the user message gathering tool results
    for m in messages:
        if m["role"] == "assistant" and m.get("tool_calls"):
            calls = []
            for tc in m["tool_calls"]:
                fn = tc["function"]
                names[tc["id"]] = fn["name"]
                try:
                    args = json.loads(fn["arguments"] or "{}")
                except ValueError:
                    args = fn["arguments"]
                calls.append({"name": fn["name"], "arguments": args})
            text = json.dumps({"tool_calls": calls})
            content = f"{m['content']}\n{text}" if m.get("content") else text
            out.append({"role": "assistant", "content": content})
        elif m["role"] == "tool":
            name = names.get(m["tool_call_id"], "")
            label = f"{name} ({m['tool_call_id']})" if name else m["tool_call_id"]
            result = f"Result of tool call {label}:\n{m['content']}"
            if results_at == len(out) - 1:
                # Results of one turn's calls go together in one user message.
                out[-1]["content"] += "\n\n" + result
            else:
                out.append({"role": "user", "content": result})
                results_at = len(out) - 1
        else:
            out.append(m)
    return out


def parse(p: ToolPlan, text: str, finish_reason: str, endpoint: str) -> tuple[str, list[dict[str, str]], str]:
    """The model's answer as (content, tool_calls, finish_reason).

    Raises Internal with reason MALFORMED_TOOL_CALL when the answer is not
    what the schema asked for (a backend that ignores `response_format`).
    An answer cut short by max_tokens is no error, as with OpenAI: no
    content, no tool calls, finish reason "length"."""

    def malformed(why: str) -> errors.AiosError:
        quote = text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + "..."
        if finish_reason == "length":
            why += "; the answer was cut at max_tokens, a larger max_tokens may help"
        return errors.Internal(f"endpoint {endpoint} answered with a malformed tool call ({why}): {quote!r}",
                               reason="MALFORMED_TOOL_CALL", metadata={"endpoint": endpoint})

    try:
        value = json.loads(text)
    except ValueError:
        if finish_reason == "length":
            return "", [], "length"  # cut short before the JSON asked for was complete
        raise malformed("not JSON") from None
    if not isinstance(value, dict):
        raise malformed("not a JSON object")
    if "tool_calls" in value:
        calls = value["tool_calls"]
        if not isinstance(calls, list) or not calls:
            raise malformed("tool_calls is not a non-empty list")
        by_name = {t["name"]: t for t in _callable(p)}
        out = []
        for call in calls:
            if not isinstance(call, dict) or call.get("name") not in by_name:
                raise malformed("a call names no offered tool")
            args = call.get("arguments")
            if not isinstance(args, dict):
                raise malformed(f"the arguments of {call['name']} are not a JSON object")
            try:
                jsonschema.validate(args, _parameters(by_name[call["name"]]))
            except jsonschema.ValidationError as exc:
                raise malformed(f"the arguments of {call['name']} do not match its schema: {exc.message}") from None
            except jsonschema.SchemaError:
                pass  # the tool's own schema is unusual; the model's JSON is still passed on
            out.append({"id": new_call_id(), "name": call["name"], "arguments": json.dumps(args)})
        return "", out, "tool_calls"
    if "content" in value and p.content_schema is not None:
        content = value["content"]
        return (content if isinstance(content, str) else json.dumps(content)), [], finish_reason
    raise malformed("neither tool_calls nor content")


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]
