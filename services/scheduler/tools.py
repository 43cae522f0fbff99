"""The kernel's tool manager: registered tools with JSON-schema arguments,
validated before they run, run with a timeout, within a concurrency limit and
never beside a tool they conflict with.

Built-in tools: a calculator (pure arithmetic, parsed, never eval'd, each
step's size bounded before it runs), the calling agent's files (its own, or
another agent's it has been granted) and its memory, whose operations are
syscalls of that agent through the kernel's intake (its rules, confirmations
and accounting apply to them). Tools served by MCP servers (configured by
command or URL) are listed at start and called over MCP.
"""

from __future__ import annotations

import ast
import asyncio
import json
import math
import operator
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from google.protobuf import json_format

from aios.kernel.v1 import kernel_service_pb2 as kpb
from aios.kernel.v1 import syscall_pb2 as ks
from aios.memory.v1 import memory_service_pb2 as mem
from aios.storage.v1 import storage_service_pb2 as st
from services.runtime import errors, logs
from services.scheduler.records import duration

log = logs.get("tools")

# run(agent, arguments) -> output text
# run(tool_entry, arguments) -> output; the entry is the tool syscall's
# process-table entry (its agent, deadline, session).
ToolFn = Callable[[Any, dict[str, Any]], Awaitable[str]]
# The most the files.read tool hands a model.
TOOL_READ_LIMIT = 64 * 1024


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    run: ToolFn
    irreversible: bool = False
    max_concurrency: int = 8
    conflicts_with: tuple[str, ...] = ()
    timeout: float = 30.0
    source: str = "builtin"
    # Changes nothing (an MCP client may run it without asking); None = unknown.
    read_only: bool | None = None
    running: int = 0
    validator: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        jsonschema.Draft202012Validator.check_schema(self.parameters)
        self.validator = jsonschema.Draft202012Validator(self.parameters)

    def spec(self) -> kpb.ToolSpec:
        spec = kpb.ToolSpec(name=self.name, description=self.description, irreversible=self.irreversible,
                            max_concurrency=self.max_concurrency, conflicts_with=list(self.conflicts_with),
                            timeout=duration(self.timeout), source=self.source)
        spec.parameters.update(self.parameters)
        return spec


class ToolManager:
    def __init__(self) -> None:
        self.tools: dict[str, Tool] = {}
        self._changed = asyncio.Condition()
        self._stack = AsyncExitStack()
        self._mcp_tasks: list[asyncio.Task] = []

    def register(self, tool: Tool) -> None:
        if tool.name in self.tools:
            raise ValueError(f"tool {tool.name!r} is registered twice")
        self.tools[tool.name] = tool

    def specs(self) -> list[kpb.ToolSpec]:
        return [t.spec() for t in sorted(self.tools.values(), key=lambda t: t.name)]

    def get(self, name: str) -> Tool:
        tool = self.tools.get(name)
        if tool is None:
            known = ", ".join(sorted(self.tools)) or "none"
            raise errors.NotFound(f"unknown tool {name!r} (registered: {known})", reason="UNKNOWN_TOOL",
                                  field="syscall.tool.name")
        return tool

    def validate(self, name: str, arguments: dict[str, Any]) -> Tool:
        """Check a call before it is queued: the tool exists and the arguments
        match its schema."""
        tool = self.get(name)
        error = jsonschema.exceptions.best_match(tool.validator.iter_errors(arguments))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise errors.InvalidArgument(f"arguments of tool {name!r} do not match its schema at {where}: "
                                         f"{error.message}", reason="TOOL_ARGUMENTS_INVALID",
                                         field="syscall.tool.arguments")
        return tool

    def _may_start(self, tool: Tool) -> bool:
        if tool.running >= tool.max_concurrency:
            return False
        return not any(self.tools[c].running for c in tool.conflicts_with if c in self.tools)

    async def call(self, entry, timeout: float | None) -> ks.ToolResult:
        call: ks.ToolCall = entry.syscall.tool
        arguments = json_format.MessageToDict(call.arguments)
        tool = self.validate(call.name, arguments)
        deadline = None if timeout is None else time.monotonic() + timeout
        async with self._changed:
            # Wait (bounded by the syscall's deadline) for a free slot and for
            # every conflicting tool to finish.
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self._may_start(tool)), remaining)
            except TimeoutError:
                raise errors.DeadlineExceeded(f"tool {tool.name!r} did not get a slot before the deadline") from None
            tool.running += 1
        try:
            limit = tool.timeout if deadline is None else min(tool.timeout, deadline - time.monotonic())
            try:
                output = await asyncio.wait_for(tool.run(entry, arguments), limit)
            except TimeoutError:
                raise errors.DeadlineExceeded(f"tool {tool.name!r} ran past its timeout of {limit:.1f}s",
                                              reason="TOOL_TIMEOUT") from None
        finally:
            async with self._changed:
                tool.running -= 1
                self._changed.notify_all()
        return ks.ToolResult(output=output, tool_call_id=call.tool_call_id)

    # --- MCP ------------------------------------------------------------

    async def add_mcp_server(self, name: str, command: list[str] | None = None, url: str | None = None,
                             env: dict[str, str] | None = None, overrides: dict[str, dict] | None = None,
                             timeout: float = 30.0) -> None:
        """Connect to an MCP server, list its tools and register them as
        `<name>.<tool>`. The connection lives in its own task (MCP sessions
        must be entered and left in one task)."""
        from mcp import Client, StdioServerParameters

        # A stdio server gets MCP's minimal environment (PATH, HOME, ...) plus
        # what its configuration names, never the kernel's secrets.
        target = url if url else StdioServerParameters(command=command[0], args=command[1:], env=env or None)
        ready: asyncio.Future = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()

        async def hold() -> None:
            try:
                async with Client(target) as client:
                    listing = await client.list_tools()
                    ready.set_result((client, listing.tools))
                    await stop.wait()
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                if not ready.done():
                    ready.set_exception(exc)
                else:
                    log.error("mcp server connection lost", server=name, error=str(exc))

        task = asyncio.get_running_loop().create_task(hold())
        self._mcp_tasks.append(task)
        self._stack.callback(stop.set)
        client, listed = await asyncio.wait_for(ready, timeout)
        overrides = overrides or {}
        for t in listed:
            opts = overrides.get(t.name, {})
            self.register(Tool(
                name=f"{name}.{t.name}", description=t.description or "",
                parameters=t.input_schema or {"type": "object"},
                run=_mcp_runner(client, t.name),
                irreversible=bool(opts.get("irreversible", False)),
                max_concurrency=int(opts.get("max_concurrency", 8)),
                conflicts_with=tuple(opts.get("conflicts_with", ())),
                timeout=float(opts.get("timeout", 30.0)),
                source=f"mcp:{name}",
                read_only=t.annotations.read_only_hint if t.annotations else None,
            ))
        log.info("mcp server connected", server=name, tools=[t.name for t in listed])

    async def close(self) -> None:
        await self._stack.aclose()
        for task in self._mcp_tasks:
            try:
                await asyncio.wait_for(task, 5)
            except (TimeoutError, asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                task.cancel()


def _mcp_runner(client, tool_name: str) -> ToolFn:
    async def run(entry, arguments: dict[str, Any]) -> str:
        result = await client.call_tool(tool_name, arguments)
        texts = [getattr(c, "text", "") for c in (result.content or []) if getattr(c, "text", None)]
        if getattr(result, "structured_content", None) and not texts:
            texts = [json.dumps(result.structured_content)]
        output = "\n".join(texts)
        if getattr(result, "is_error", False):
            raise errors.FailedPrecondition(f"tool {tool_name!r} failed: {output}", reason="TOOL_FAILED")
        return output

    return run


# --- built-in tools ------------------------------------------------------

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS = {"sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max, "log": math.log,
          "exp": math.exp, "sin": math.sin, "cos": math.cos, "tan": math.tan}
_CONSTS = {"pi": math.pi, "e": math.e}


# Integers of at most this many digits: every step is then bounded before it
# is computed, so no expression holds the kernel's CPU (or the GIL) for long.
MAX_DIGITS = 1000
_MAX_BITS = int(MAX_DIGITS * math.log2(10)) + 1


def _result_bits(op: ast.operator, left, right) -> float:
    """An upper bound of the bit length of an integer result, from the
    operands alone; 0 where the result is no larger than they are, or not
    an integer."""
    if not (isinstance(left, int) and isinstance(right, int)):
        return 0
    a, b = abs(left).bit_length(), abs(right).bit_length()
    if isinstance(op, (ast.Add, ast.Sub)):
        return max(a, b) + 1
    if isinstance(op, ast.Mult):
        return a + b
    if isinstance(op, ast.Pow) and right > 0:
        return right * math.log2(abs(left)) + 1 if abs(left) > 1 else 1
    return 0


def calculate(expression: str) -> float | int:
    """Evaluate arithmetic: numbers, + - * / // % **, parentheses, a few math
    functions. Anything else is refused, and so is any step whose integer
    result would exceed MAX_DIGITS digits, before it is computed."""
    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return bounded(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 1000:
                raise ValueError("exponent too large")
            if _result_bits(node.op, left, right) > _MAX_BITS:
                raise ValueError(f"the result would have more than {MAX_DIGITS} digits")
            return bounded(_BINARY[type(node.op)](left, right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](ev(node.operand))
        if isinstance(node, ast.Name) and node.id in _CONSTS:
            return _CONSTS[node.id]
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
                and not node.keywords):
            return bounded(_FUNCS[node.func.id](*[ev(a) for a in node.args]))
        raise ValueError(f"unsupported expression element: {type(node).__name__}")

    def bounded(value):
        if isinstance(value, int) and abs(value).bit_length() > _MAX_BITS:
            raise ValueError(f"the result would have more than {MAX_DIGITS} digits")
        return value

    if len(expression) > 1000:
        raise ValueError("expression too long")
    return ev(ast.parse(expression, mode="eval"))


async def _calculator(entry, args: dict[str, Any]) -> str:
    try:
        # Off the event loop: a big power must not stall the kernel.
        value = await asyncio.to_thread(calculate, args["expression"])
    except (SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError) as exc:
        raise errors.InvalidArgument(f"calculator cannot evaluate {args['expression']!r}: {exc}",
                                     reason="BAD_EXPRESSION", field="syscall.tool.arguments.expression")
    return str(value)


def builtin_tools(submit) -> list[Tool]:
    """The calculator, the calling agent's files and its memory.

    The file tools take an optional `owner`: another agent's files, which it
    has shared with the caller; the access rules decide on the inner call.
    What the file and memory tools do is submitted as syscalls of the
    calling agent (`submit(tool_entry, syscall) -> SyscallRecord`, the
    kernel's intake): the same access rules, confirmations, accounting and
    queues as if the agent had made them itself."""

    def storage(**op) -> ks.Syscall:
        return ks.Syscall(storage=ks.StorageCall(**op))

    def memory(**op) -> ks.Syscall:
        return ks.Syscall(memory=ks.MemoryCall(**op))

    async def files_read(entry, args):
        record = await submit(entry, storage(read=st.ReadFileRequest(owner=args.get("owner", ""),
                                                                     path=args["path"])))
        content = record.storage.read.content
        if len(content) > TOOL_READ_LIMIT:
            raise errors.FailedPrecondition(
                f"{args['path']} is {len(content)} bytes; the files.read tool returns at most {TOOL_READ_LIMIT}",
                reason="FILE_TOO_LARGE_FOR_TOOL")
        return content.decode("utf-8", errors="replace")

    async def files_write(entry, args):
        record = await submit(entry, storage(write=ks.WriteFileInline(
            owner=args.get("owner", ""), path=args["path"], content=args["content"].encode(),
            content_type="text/plain; charset=utf-8")))
        f = record.storage.write.file
        return json.dumps({"path": f.path, "version_id": f.version_id, "size": f.size})

    async def files_list(entry, args):
        record = await submit(entry, storage(list=st.ListFilesRequest(
            owner=args.get("owner", ""), prefix=args.get("prefix", ""), recursive=True, page_size=100)))
        return json.dumps([f.path for f in record.storage.list.files])

    async def memory_add(entry, args):
        record = await submit(entry, memory(add=mem.AddMemoryRequest(
            memory=mem.MemoryInput(content=args["content"], tags=args.get("tags", [])))))
        return json.dumps({"id": record.memory.add.memory.id})

    async def memory_search(entry, args):
        record = await submit(entry, memory(search=mem.SearchMemoriesRequest(
            query=args["query"], top_k=int(args.get("k", 3)))))  # JSON numbers arrive as floats
        return json.dumps([{"content": r.memory.content, "score": round(r.score, 3)}
                           for r in record.memory.search.results])

    obj = lambda props, required: {"type": "object", "properties": props, "required": required,  # noqa: E731
                                   "additionalProperties": False}
    # Empty or absent: the caller's own files.
    owner = {"type": "string", "description": "Another agent's files, which it has shared with you "
                                              "(its agent name); omit for your own."}
    return [
        Tool("calculator", "Evaluate an arithmetic expression, e.g. (17*23)+4 or sqrt(2).",
             obj({"expression": {"type": "string", "minLength": 1}}, ["expression"]),
             _calculator, max_concurrency=16, timeout=5.0, read_only=True),
        Tool("files.read", "Read one of your text files (or, with owner, one another agent shared with you).",
             obj({"path": {"type": "string"}, "owner": owner}, ["path"]), files_read, read_only=True),
        Tool("files.write", "Write (create or overwrite) one of your text files (or, with owner, one in "
             "another agent's files that it shared with you for writing).",
             obj({"path": {"type": "string"}, "content": {"type": "string"}, "owner": owner}, ["path", "content"]),
             files_write, read_only=False),
        Tool("files.list", "List your files under a prefix (or, with owner, another agent's shared with you).",
             obj({"prefix": {"type": "string"}, "owner": owner}, []), files_list, read_only=True),
        Tool("memory.add", "Remember a fact.",
             obj({"content": {"type": "string", "minLength": 1},
                  "tags": {"type": "array", "items": {"type": "string"}}}, ["content"]),
             memory_add, read_only=False),
        Tool("memory.search", "Recall the facts closest in meaning to a query.",
             obj({"query": {"type": "string", "minLength": 1}, "k": {"type": "integer", "minimum": 1, "maximum": 20}},
                 ["query"]),
             memory_search, read_only=True),
    ]

