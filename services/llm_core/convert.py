"""Proto <-> OpenAI vocabulary for llm_core."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from aios.common.v1 import llm_pb2 as lc
from aios.llm.v1 import llm_service_pb2 as pb
from services.llm_core.engine import ChatRequest, Completion
from services.runtime import errors

_ROLES = {
    lc.ROLE_SYSTEM: "system",
    lc.ROLE_USER: "user",
    lc.ROLE_ASSISTANT: "assistant",
    lc.ROLE_TOOL: "tool",
}

FINISH = {
    "stop": lc.FINISH_REASON_STOP,
    "length": lc.FINISH_REASON_LENGTH,
    "tool_calls": lc.FINISH_REASON_TOOL_CALLS,
    "function_call": lc.FINISH_REASON_TOOL_CALLS,
    "content_filter": lc.FINISH_REASON_CONTENT_FILTER,
    "preempted": lc.FINISH_REASON_PREEMPTED,
}


def chat_request(request: pb.GenerateRequest) -> ChatRequest:
    """Field names in errors are those of the agent's call (LlmCall)."""
    req = request.call
    if not req.model:
        raise errors.InvalidArgument("model is required", field="model")
    if not req.messages:
        raise errors.InvalidArgument("at least one message is required", field="messages")
    messages: list[dict[str, Any]] = []
    for i, m in enumerate(req.messages):
        role = _ROLES.get(m.role)
        if role is None:
            raise errors.InvalidArgument(f"messages[{i}].role is unspecified", field=f"messages[{i}].role")
        msg: dict[str, Any] = {"role": role, "content": m.content}
        if m.name:
            msg["name"] = m.name
        if m.tool_calls:
            msg["tool_calls"] = [
                {"id": tc.id, "type": "function",
                 "function": {"name": tc.name, "arguments": tc.arguments_json or "{}"}}
                for tc in m.tool_calls
            ]
        if role == "tool":
            if not m.tool_call_id:
                raise errors.InvalidArgument(
                    f"messages[{i}] has role tool but no tool_call_id", field=f"messages[{i}].tool_call_id")
            msg["tool_call_id"] = m.tool_call_id
        messages.append(msg)
    tools = [
        {"type": "function", "function": {
            "name": t.name, "description": t.description,
            "parameters": schema_dict(t.parameters) or {"type": "object", "properties": {}},
        }}
        for t in req.tools
    ]
    for i, t in enumerate(req.tools):
        if not t.name:
            raise errors.InvalidArgument(f"tools[{i}].name is required", field=f"tools[{i}].name")
    if len({t.name for t in req.tools}) != len(req.tools):
        raise errors.InvalidArgument("tool names must be unique", field="tools")
    sampling: dict[str, Any] = {}
    if req.HasField("temperature"):
        sampling["temperature"] = req.temperature
    if req.HasField("top_p"):
        sampling["top_p"] = req.top_p
    if req.HasField("seed"):
        sampling["seed"] = req.seed
    if req.stop:
        sampling["stop"] = list(req.stop)
    if req.HasField("max_tokens") and req.max_tokens <= 0:
        raise errors.InvalidArgument("max_tokens must be positive", field="max_tokens")
    return ChatRequest(
        model=req.model,
        messages=messages,
        tools=tools,
        tool_choice=_tool_choice(req) if tools else None,
        response_format=_response_format(req.response_format),
        sampling=sampling,
        max_tokens=req.max_tokens if req.HasField("max_tokens") else None,
        session_id=request.session_id,
        resume_text=request.resume.text,
        resume_tokens=request.resume.completion_tokens,
        slice_tokens=max(0, request.slice_tokens),
    )


def schema_dict(struct) -> dict[str, Any]:
    """A JSON schema from a protobuf Struct. Struct keeps every number as a
    double; schema keywords such as minLength or maxItems must be integers
    (llama.cpp refuses 1.0), and 1.0 == 1 in JSON, so whole numbers become ints."""
    return _whole_numbers(json_format.MessageToDict(struct))


def _whole_numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def _tool_choice(req: lc.LlmCall) -> Any:
    choice = req.tool_choice
    mode = choice.mode
    if mode == lc.TOOL_CHOICE_MODE_NONE:
        return "none"
    if mode == lc.TOOL_CHOICE_MODE_REQUIRED:
        return "required"
    if mode == lc.TOOL_CHOICE_MODE_FUNCTION:
        if not choice.name:
            raise errors.InvalidArgument("tool_choice.name is required for mode FUNCTION",
                                         field="tool_choice.name")
        if choice.name not in {t.name for t in req.tools}:
            raise errors.InvalidArgument(f"tool_choice.name {choice.name!r} is not one of the tools",
                                         field="tool_choice.name")
        return {"type": "function", "function": {"name": choice.name}}
    return None  # auto


def _response_format(fmt: lc.ResponseFormat) -> dict[str, Any] | None:
    if fmt.type == lc.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
        return {"type": "json_object"}
    if fmt.type == lc.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        if not fmt.HasField("json_schema"):
            raise errors.InvalidArgument("response_format.json_schema is required for JSON_SCHEMA",
                                         field="response_format.json_schema")
        return {"type": "json_schema", "json_schema": {
            "name": fmt.schema_name or "response",
            "schema": schema_dict(fmt.json_schema),
            "strict": fmt.strict,
        }}
    return None


def usage(c: Completion) -> lc.Usage:
    return lc.Usage(
        prompt_tokens=c.prompt_tokens,
        completion_tokens=c.completion_tokens,
        total_tokens=c.prompt_tokens + c.completion_tokens,
        cached_prompt_tokens=c.cached_tokens,
    )


def tool_calls(c: Completion) -> list[lc.ToolCall]:
    return [lc.ToolCall(id=t["id"], name=t["name"], arguments_json=t["arguments"]) for t in c.tool_calls]


def completion(c: Completion) -> lc.Completion:
    return lc.Completion(
        text=c.text,
        tool_calls=tool_calls(c),
        finish_reason=FINISH.get(c.finish_reason, lc.FINISH_REASON_STOP),
        usage=usage(c),
        model=c.model,
        endpoint=c.endpoint,
    )


def final_chunk(c: Completion) -> pb.GenerateStreamResponse:
    return pb.GenerateStreamResponse(
        tool_calls=tool_calls(c),
        finish_reason=FINISH.get(c.finish_reason, lc.FINISH_REASON_STOP),
        usage=usage(c),
        model=c.model,
        endpoint=c.endpoint,
    )
