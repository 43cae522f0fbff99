"""Checks an LLM syscall must pass before it is queued, whichever door it came
through (gRPC Submit or the OpenAI-compatible HTTP door): sampling settings
in their ranges, and tool calls in the history whose arguments are JSON
objects. Each failure is INVALID_ARGUMENT naming the field. What only the
kernel sets (snapshots, slices, the session) is not in the agent's contract
(aios.common.v1.LlmCall) at all."""

from __future__ import annotations

import json

from aios.common.v1 import llm_pb2 as lc
from services.runtime import errors

# OpenAI's ranges, which every OpenAI-compatible backend accepts.
TEMPERATURE = (0.0, 2.0)
TOP_P = (0.0, 1.0)


# Inputs of one embed syscall, as llm_core takes them.
MAX_EMBED_INPUTS = 2048
MAX_EMBED_BYTES = 8 * 1024 * 1024


def check_embed(req, prefix: str = "syscall.embed") -> None:
    """INVALID_ARGUMENT for an embed call llm_core would refuse or choke on."""
    def at(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    if not req.inputs:
        raise errors.InvalidArgument("inputs must not be empty", field=at("inputs"))
    if len(req.inputs) > MAX_EMBED_INPUTS:
        raise errors.InvalidArgument(f"at most {MAX_EMBED_INPUTS} inputs per call, not {len(req.inputs)}",
                                     field=at("inputs"))
    for i, text in enumerate(req.inputs):
        if not text:
            raise errors.InvalidArgument(f"inputs[{i}] is empty", field=at(f"inputs[{i}]"))
    if sum(len(t) for t in req.inputs) > MAX_EMBED_BYTES:
        raise errors.InvalidArgument(f"the inputs exceed {MAX_EMBED_BYTES} characters in all", field=at("inputs"))


def check_llm_call(req: lc.LlmCall, prefix: str = "syscall.llm") -> None:
    """INVALID_ARGUMENT naming the field (under `prefix`, "" for none) at fault."""
    def at(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    if req.HasField("temperature") and not TEMPERATURE[0] <= req.temperature <= TEMPERATURE[1]:
        raise errors.InvalidArgument(f"temperature must be between {TEMPERATURE[0]:g} and {TEMPERATURE[1]:g}, "
                                     f"not {req.temperature:g}", field=at("temperature"))
    if req.HasField("top_p") and not TOP_P[0] < req.top_p <= TOP_P[1]:
        raise errors.InvalidArgument(f"top_p must be above {TOP_P[0]:g} and at most {TOP_P[1]:g}, "
                                     f"not {req.top_p:g}", field=at("top_p"))
    if req.HasField("max_tokens") and req.max_tokens < 1:
        raise errors.InvalidArgument(f"max_tokens must be at least 1, not {req.max_tokens}",
                                     field=at("max_tokens"))
    for i, tool in enumerate(req.tools):
        if not tool.name:
            raise errors.InvalidArgument("every tool needs a name", field=at(f"tools[{i}].name"))
    for i, message in enumerate(req.messages):
        for j, call in enumerate(message.tool_calls):
            where = f"messages[{i}].tool_calls[{j}].arguments"
            try:
                value = json.loads(call.arguments_json or "{}")
            except ValueError:
                raise errors.InvalidArgument(f"the arguments of tool call {call.id or call.name!r} are not JSON",
                                             field=at(where)) from None
            if not isinstance(value, dict):
                raise errors.InvalidArgument(
                    f"the arguments of tool call {call.id or call.name!r} are not a JSON object", field=at(where))
