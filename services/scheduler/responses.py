"""The OpenAI Responses API on the kernel's HTTP door (POST /v1/responses,
GET and DELETE /v1/responses/{id}), so an agent on the OpenAI Agents SDK's
default model (or any Responses client) runs through the kernel by changing
its base URL; its API key is its agent token.

An adapter, nothing more: a Responses body becomes a chat-completions-shaped
body, then the chat door's `llm_call()` (one validation), then the same LLM
syscall through the same intake as /v1/chat/completions (authentication,
access rules, quotas, scheduling, accounting, process table); the outcome is
translated back. A response id is `resp_<syscall id>`: the call's id in the
process table (`aios ps`, GetSyscall).

Supported:
- `input`: a string, or a list of items: messages (role user, system,
  developer or assistant; content a string or input_text/output_text/refusal
  parts), `function_call` (call_id, name, arguments) and
  `function_call_output` (call_id, output: a string or input_text parts),
  which become assistant tool calls and tool messages. `reasoning` items are
  dropped (the kernel's models produce none, and none can be replayed).
- `instructions` (a system message first; as in OpenAI's API, not carried
  over by previous_response_id), `tools` of type function (name,
  description, parameters; strict is only echoed: emulated tools hold the
  arguments to the schema anyway, native ones as their endpoint does),
  `tool_choice` (auto, none, required, {type: function, name}),
  `parallel_tool_calls` (false keeps only the first call), `temperature`,
  `top_p`, `max_output_tokens` (finish_reason length is status incomplete,
  reason max_output_tokens), `text.format` (text, json_object, json_schema
  with name/schema/strict), `metadata` (echoed), `stream` (server-sent
  events, no [DONE], as OpenAI's API; a client that goes away cancels the
  call).
- `previous_response_id`: this door keeps its responses in memory, per
  agent, at most MAX_STORED (the least recently used go first), lost on
  restart; an unknown, evicted or other agent's id is a 404. `store: false`
  responses are not kept. GET returns a kept response, DELETE forgets it.
- Session (the agent run the kernel schedules and routes by): the
  X-AIOS-Session header, else `prompt_cache_key`, else `user`, else the
  previous response's session. `Idempotency-Key` is the request id, as on
  chat: a retry gets the first call (and the same response id).

Accepted and ignored (nothing here to apply them to): include, truncation,
reasoning, user, prompt_cache_key (but see Session), prompt_cache_retention,
prompt_cache_options, safety_identifier, service_tier, top_logprobs,
max_tool_calls, stream_options, context_management, text.verbosity; logprobs
are always empty.

Refused with a 400 naming the field: hosted tools (web_search, file_search,
computer, mcp, ...: `tools[i].type`), other tool_choice types, input items
other than the above (`input[i].type`), image/file/audio content
(`input[i].content[j].type`), `conversation`, `background`, `prompt`
(stored prompts live on OpenAI's platform). Not served: input_items,
cancel, compact.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from aios.common.v1 import llm_pb2 as lc
from aios.kernel.v1 import syscall_pb2 as ks
from services.runtime import context as rctx
from services.runtime import errors
from services.scheduler import events as ev
from services.scheduler import http_door
from services.scheduler.intake import drain
from services.scheduler.table import Entry

_bad = http_door._bad  # one wording for a field of the wrong shape

# Responses kept for previous_response_id, all agents together. Each holds
# its conversation as references to the items of its predecessor, so a long
# chain costs a pointer per item per response, not a copy.
MAX_STORED = 1000

_MESSAGE_ROLES = ("user", "system", "developer", "assistant")
_IGNORED_ITEMS = ("reasoning",)
_INCOMPLETE = {lc.FINISH_REASON_LENGTH: "max_output_tokens", lc.FINISH_REASON_CONTENT_FILTER: "content_filter"}
_REFUSED = {
    "conversation": "conversations are not supported: send the history as input, or chain responses with "
                    "previous_response_id",
    "background": "background responses are not supported: the kernel already queues and schedules the call",
    "prompt": "stored prompts are not supported: they live on OpenAI's platform; send instructions instead",
}


@dataclass
class _Kept:
    agent: str
    response: dict[str, Any]
    items: list[dict[str, Any]]  # the conversation so far, without instructions
    session: str


def _text(content: Any, where: str) -> str:
    """Message content: a string or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(where, "a string or a list of content parts")
    out = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            if not isinstance(part.get("text"), str):
                raise _bad(f"{where}[{j}].text", "a string")
            out.append(part["text"])
        elif kind == "refusal":
            out.append(str(part.get("refusal") or ""))
        else:
            raise errors.InvalidArgument(
                f"{where}[{j}].type {kind!r} is not supported: the kernel's models take text parts only "
                "(input_text, output_text)", field=f"{where}[{j}].type")
    return "".join(out)


def _messages(items: list[Any], where: str, indexed: bool, out: list[dict], origins: dict[str, str]) -> None:
    """Append Responses input items to chat messages `out`; `origins` maps a
    chat message (or tool call) path to the Responses field it came from."""
    for k, item in enumerate(items):
        at = f"{where}[{k}]" if indexed else where
        if not isinstance(item, dict):
            raise _bad(at, "an object")
        kind = item.get("type", "message")  # "easy" input messages have no type
        if kind == "message":
            if item.get("role") not in _MESSAGE_ROLES:
                raise _bad(f"{at}.role", f"one of {', '.join(_MESSAGE_ROLES)}")
            origins[f"messages[{len(out)}]"] = at
            out.append({"role": item["role"], "content": _text(item.get("content"), f"{at}.content")})
        elif kind == "function_call":
            for key in ("call_id", "name", "arguments"):
                if not isinstance(item.get(key), str):
                    raise _bad(f"{at}.{key}", "a string")
            # Calls following an assistant turn are part of it, as chat has them.
            if not out or out[-1]["role"] != "assistant":
                origins[f"messages[{len(out)}]"] = at
                out.append({"role": "assistant", "content": ""})
            calls = out[-1].setdefault("tool_calls", [])
            origins[f"messages[{len(out) - 1}].tool_calls[{len(calls)}]"] = at
            calls.append({"id": item["call_id"], "type": "function",
                          "function": {"name": item["name"], "arguments": item["arguments"]}})
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise _bad(f"{at}.call_id", "a string")
            origins[f"messages[{len(out)}]"] = at
            out.append({"role": "tool", "tool_call_id": item["call_id"],
                        "content": _text(item.get("output"), f"{at}.output")})
        elif kind not in _IGNORED_ITEMS:
            raise errors.InvalidArgument(
                f"{at}.type {kind!r} is not supported: input items are message, function_call and "
                "function_call_output (reasoning items are ignored)", field=f"{at}.type")


def _input_items(body: dict[str, Any]) -> list[Any]:
    value = body.get("input")
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        raise _bad("input", "a string or a list of items")
    return value


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _bad("tools", "a list")
    for i, t in enumerate(tools):
        if not isinstance(t, dict):
            raise _bad(f"tools[{i}]", "an object")
        if t.get("type") != "function":
            raise errors.InvalidArgument(
                f"tools[{i}].type {t.get('type')!r} is not supported: the kernel runs function tools only "
                "(hosted tools such as web_search or file_search are OpenAI's)", field=f"tools[{i}].type")
    return tools


def _tool_choice(choice: Any, tools: list[dict[str, Any]]) -> Any:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        if choice.get("name") not in {t.get("name") for t in tools}:
            raise _bad("tool_choice.name", "the name of one of the function tools")
        return {"type": "function", "function": {"name": choice["name"]}}
    if isinstance(choice, dict):
        raise errors.InvalidArgument(f"tool_choice.type {choice.get('type')!r} is not supported: "
                                     'use "auto", "none", "required" or {"type": "function", "name": ...}',
                                     field="tool_choice.type")
    raise _bad("tool_choice", '"auto", "none", "required" or {"type": "function", "name": ...}')


def _format(body: dict[str, Any]) -> dict[str, Any] | None:
    """text.format (flat) as chat's response_format (nested json_schema)."""
    text = body.get("text")
    if text is None:
        return None
    if not isinstance(text, dict):
        raise _bad("text", "an object")
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise _bad("text.format", "an object")
    if fmt.get("type") in ("text", "json_object"):
        return {"type": fmt["type"]}
    if fmt.get("type") == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise _bad("text.format.schema", "a JSON schema object")
        return {"type": "json_schema", "json_schema": {"name": str(fmt.get("name") or ""), "schema": fmt["schema"],
                                                       "strict": bool(fmt.get("strict"))}}
    raise _bad("text.format.type", '"text", "json_object" or "json_schema"')


def chat_body(body: dict[str, Any], history: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    """A Responses body (after the kept `history`) as a chat-completions body,
    and where each chat message came from (for error params)."""
    for key, why in _REFUSED.items():
        if body.get(key):
            raise errors.InvalidArgument(why, field=key)
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _bad("instructions", "a string")
    messages: list[dict] = []
    origins: dict[str, str] = {}
    if instructions:
        origins["messages[0]"] = "instructions"
        messages.append({"role": "system", "content": instructions})
    _messages(history, "previous_response_id", False, messages, origins)
    _messages(_input_items(body), "input", True, messages, origins)
    tools = _tools(body)
    chat = {"model": body.get("model"), "messages": messages,
            "tools": [{"type": "function", "function": {"name": t.get("name"), "description": t.get("description") or "",
                                                        "parameters": t.get("parameters")}} for t in tools],
            "tool_choice": _tool_choice(body.get("tool_choice"), tools), "response_format": _format(body),
            "temperature": body.get("temperature"), "top_p": body.get("top_p"),
            "max_tokens": body.get("max_output_tokens")}
    return chat, origins


_RENAMES = [(r"^max_tokens", "max_output_tokens"), (r"^messages$", "input"),
            (r"^response_format\.json_schema", "text.format"), (r"^response_format", "text.format"),
            (r"^tools\[(\d+)\]\.function", r"tools[\1]"), (r"^tool_choice\.function", "tool_choice")]


def _renamed(err: errors.AiosError, origins: dict[str, str]) -> errors.AiosError:
    """The error with its field named in Responses terms, not chat's or the syscall's."""
    chat = field = err.field.removeprefix("syscall.llm.")
    m = re.match(r"^(messages\[\d+\](?:\.tool_calls\[\d+\])?)(?:\.function)?(.*)$", field)
    if m and m.group(1) in origins:
        field = origins[m.group(1)] + m.group(2)
    else:
        for pattern, new in _RENAMES:
            field = re.sub(pattern, new, field)
    if field != err.field:
        err.field = field
        err.message = err.message.replace(chat, field)
    return err


def _usage(record: ks.SyscallRecord) -> dict[str, Any]:
    u = record.usage
    return {"input_tokens": u.prompt_tokens, "output_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens,
            "input_tokens_details": {"cached_tokens": u.cached_prompt_tokens, "cache_write_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}}


def _failure(err: errors.AiosError) -> dict[str, Any]:
    # ResponseError.code is OpenAI's closed list; the kernel's code goes in the message.
    code = "rate_limit_exceeded" if err.code == "RESOURCE_EXHAUSTED" else "server_error"
    return {"code": code, "message": f"{err.code}: {err.message}"}


def _skeleton(rid: str, entry: Entry, body: dict[str, Any]) -> dict[str, Any]:
    """The response object before any output: what the request asked for, echoed."""
    fmt = (body.get("text") or {}).get("format") or {"type": "text"}
    return {
        "id": rid, "object": "response", "created_at": int(entry.create_wall), "status": "in_progress",
        "background": False, "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "model": entry.syscall.llm.model, "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
        "previous_response_id": body.get("previous_response_id"), "reasoning": body.get("reasoning"),
        "store": body.get("store", True) is not False,
        "temperature": body.get("temperature"), "top_p": body.get("top_p"),
        "text": {"format": fmt}, "tool_choice": body.get("tool_choice") or "auto",
        "tools": [{"type": "function", "name": t["name"], "description": t.get("description"),
                   "parameters": t.get("parameters"), "strict": t.get("strict", True)} for t in body.get("tools") or []],
        "truncation": body.get("truncation") or "disabled", "usage": None, "user": body.get("user"),
        "metadata": body.get("metadata") or {}, "prompt_cache_key": body.get("prompt_cache_key"),
    }


def _finished(skeleton: dict[str, Any], entry: Entry, record: ks.SyscallRecord) -> dict[str, Any]:
    c = record.llm
    reason = _INCOMPLETE.get(c.finish_reason)
    output: list[dict[str, Any]] = []
    if c.text:
        output.append({"type": "message", "id": f"msg_{entry.id}", "role": "assistant",
                       "status": "incomplete" if reason else "completed",
                       "content": [{"type": "output_text", "text": c.text, "annotations": [], "logprobs": []}]})
    calls = list(c.tool_calls)[:1 if skeleton["parallel_tool_calls"] is False else None]
    output += [{"type": "function_call", "id": f"fc_{entry.id}_{i}", "call_id": tc.id, "name": tc.name,
                "arguments": tc.arguments_json, "status": "completed"} for i, tc in enumerate(calls)]
    return {**skeleton, "status": "incomplete" if reason else "completed",
            "incomplete_details": {"reason": reason} if reason else None,
            "completed_at": None if reason else int(time.time()),
            "model": c.model or skeleton["model"], "output": output, "usage": _usage(record)}


class Responses:
    def __init__(self, door: http_door.HttpDoor, capacity: int = MAX_STORED) -> None:
        self.door = door  # its intake, kernel and caller check: this only translates
        self.capacity = capacity
        self.kept: OrderedDict[str, _Kept] = OrderedDict()

    def register(self, app: web.Application) -> None:
        app.router.add_post("/v1/responses", self.create)
        app.router.add_get("/v1/responses/{id}", self.retrieve)
        app.router.add_delete("/v1/responses/{id}", self.delete)

    def _find(self, agent: str, rid: Any, field: str = "") -> _Kept:
        kept = self.kept.get(rid) if isinstance(rid, str) else None
        if kept is None or kept.agent != agent:  # another agent's response is not there for this one
            raise errors.NotFound(
                f"response {rid!r} not found: this door keeps responses in memory, per agent, at most "
                f"{self.capacity} (the least recently used are dropped), and loses them on restart; "
                "responses created with store=false are not kept. Send the whole conversation as input instead.",
                reason="RESPONSE_NOT_FOUND", field=field)
        self.kept.move_to_end(rid)
        return kept

    def _keep(self, agent: str, response: dict[str, Any], items: list[dict[str, Any]], session: str) -> None:
        self.kept[response["id"]] = _Kept(agent, response, items, session)
        self.kept.move_to_end(response["id"])
        while len(self.kept) > self.capacity:
            self.kept.popitem(last=False)

    async def retrieve(self, request: web.Request) -> web.Response:
        try:
            caller = await self.door._caller(request)
            return web.json_response(self._find(caller.name, request.match_info["id"]).response)
        except errors.AiosError as err:
            return http_door._error(err)

    async def delete(self, request: web.Request) -> web.Response:
        try:
            caller = await self.door._caller(request)
            rid = request.match_info["id"]
            self._find(caller.name, rid)
        except errors.AiosError as err:
            return http_door._error(err)
        del self.kept[rid]
        return web.json_response({"id": rid, "object": "response.deleted", "deleted": True})

    async def create(self, request: web.Request) -> web.StreamResponse:
        rctx.request_id.set(request.headers.get("X-Request-Id") or uuid.uuid4().hex)
        origins: dict[str, str] = {}
        try:
            caller = await self.door._caller(request)
            body = await http_door.json_body(request)
            previous = None
            if body.get("previous_response_id") is not None:
                previous = self._find(caller.name, body["previous_response_id"], "previous_response_id")
            chat, origins = chat_body(body, previous.items if previous else [])
            session = (request.headers.get("X-AIOS-Session", "") or str(body.get("prompt_cache_key") or "")
                       or str(body.get("user") or "") or (previous.session if previous else ""))
            syscall = ks.Syscall(llm=http_door.llm_call(chat), session_id=session,
                                 request_id=request.headers.get("Idempotency-Key", ""))
            stream = bool(body.get("stream"))
            events: asyncio.Queue = asyncio.Queue()
            entry = await self.door.intake.start(caller, syscall, None, events if stream else None)
        except errors.AiosError as err:
            return http_door._error(_renamed(err, origins))
        skeleton = _skeleton(f"resp_{entry.id}", entry, body)
        conversation = (previous.items if previous else []) + _input_items(body)

        def keep(response: dict[str, Any]) -> None:
            if response["store"]:
                self._keep(caller.name, response, conversation + response["output"], session)

        if not stream:
            try:
                await self.door.kernel.wait(entry, entry.deadline)
                record = self.door.intake.outcome(entry)
            except errors.AiosError as err:
                return http_door._error(err)
            response = _finished(skeleton, entry, record)
            keep(response)
            return web.json_response(response)
        return await self._stream(request, entry, events, skeleton, keep)

    async def _stream(self, request: web.Request, entry: Entry, events: asyncio.Queue,
                      skeleton: dict[str, Any], keep) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        numbers = itertools.count()
        message_id = f"msg_{entry.id}"
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        at_text = {"item_id": message_id, "output_index": 0, "content_index": 0}
        streamed: list[str] = []

        async def send(kind: str, **fields: Any) -> None:
            data = {"type": kind, "sequence_number": next(numbers), **fields}
            await resp.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())

        async def delta(text: str) -> None:
            if not streamed:  # the message item opens with its first text
                await send("response.output_item.added", output_index=0, item={
                    "type": "message", "id": message_id, "role": "assistant", "status": "in_progress", "content": []})
                await send("response.content_part.added", **at_text, part=part)
            streamed.append(text)
            await send("response.output_text.delta", **at_text, delta=text, logprobs=[])

        waiter = asyncio.ensure_future(self.door.kernel.wait(entry, entry.deadline))
        try:
            await send("response.created", response=skeleton)
            await send("response.in_progress", response=skeleton)
            async for event in drain(events, waiter):
                if isinstance(event, ev.Delta) and event.text:
                    await delta(event.text)
                elif isinstance(event, ev.Finished):
                    break
            await waiter
            try:
                record = self.door.intake.outcome(entry)
            except errors.AiosError as err:
                await send("response.failed", response={**skeleton, "status": "failed", "error": _failure(err)})
                return resp
            response = _finished(skeleton, entry, record)
            output = response["output"]
            if output and output[0]["type"] == "message":
                content = output[0]["content"][0]
                # Tool-enabled calls on emulated tools stream nothing: their text comes whole, at the end.
                rest = content["text"][len("".join(streamed)):]
                if rest or not streamed:
                    await delta(rest)
                await send("response.output_text.done", **at_text, text=content["text"], logprobs=[])
                await send("response.content_part.done", **at_text, part=content)
                await send("response.output_item.done", output_index=0, item=output[0])
            for i, item in enumerate(output):
                if item["type"] != "function_call":
                    continue
                await send("response.output_item.added", output_index=i,
                           item={**item, "arguments": "", "status": "in_progress"})
                await send("response.function_call_arguments.delta", item_id=item["id"], output_index=i,
                           delta=item["arguments"])
                await send("response.function_call_arguments.done", item_id=item["id"], output_index=i,
                           name=item["name"], arguments=item["arguments"])
                await send("response.output_item.done", output_index=i, item=item)
            keep(response)  # before the last event: a client may chain on it at once
            await send(f"response.{response['status']}", response=response)
        finally:
            http_door.let_go(entry, events, waiter)
        return resp
