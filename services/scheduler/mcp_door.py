"""The kernel as an MCP server: its tools (the built-in ones and those of the
MCP servers it is a client of) for any MCP client (desktop assistants, IDEs,
the OpenAI Agents SDK), at /mcp on the kernel's HTTP door, over MCP's
streamable HTTP transport.

Each HTTP request carries the agent's token (`Authorization: Bearer TOKEN`,
the same as on the other doors); a missing or refused one is HTTP 401 before
any MCP message is read. tools/list lists the tool manager's tools with their
JSON schemas; tools/call is a tool syscall of the calling agent through the
intake, like any other door's: the same validation, access rules,
confirmations (the call stays parked until a person approves it, announced as
MCP progress), quotas, queues and deadline (the kernel's default timeout),
and the same process table. A kernel error is a tool result with isError set
and the error's code and message, which the model can read; it is not a
protocol error. `X-AIOS-Session` names the call's session.

This module only translates: MCP requests into syscalls, outcomes back. The
transport is the `mcp` package's (ASGI) in stateless mode, a fresh one per
request, so nothing ties a client to this process between requests; a small
ASGI-to-aiohttp bridge (`serve_asgi`) runs it inside the door's aiohttp
application.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import uuid
from typing import Any

import mcp_types as types
from aiohttp import web
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from multidict import CIMultiDict
from opentelemetry import context as otel_context

from aios.kernel.v1 import syscall_pb2 as ks
from services.runtime import context as rctx
from services.runtime import errors, logs
from services.scheduler import events as ev
from services.scheduler.auth import Caller

log = logs.get("mcp")

PATH = "/mcp"
SESSION_HEADER = "X-AIOS-Session"
# Seconds an ASGI app has to finish after its client went away (it hears
# http.disconnect) before it is cancelled.
DISCONNECT_GRACE = 5.0
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Connection-level headers: aiohttp decides those for its own connection.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "upgrade"})

INSTRUCTIONS = (
    "The tools of an AIOS kernel. Each call runs as your agent under the kernel's access rules and "
    "quotas, in its queues; a call that needs a person's approval waits for it. Errors come back as "
    "tool results naming the kernel's error code.")


class McpDoor:
    def __init__(self, intake) -> None:
        self.intake = intake  # every check and the kernel: this door only translates
        self.kernel = intake.kernel
        self.tools = intake.tools
        self.server = Server("aios-kernel", version=_version(), instructions=INSTRUCTIONS,
                             on_list_tools=self.list_tools, on_call_tool=self.call_tool,
                             get_tool_input_schema=self._input_schema)
        self.manager: StreamableHTTPSessionManager | None = None

    def mount(self, app: web.Application, host: str) -> None:
        """Serve MCP at /mcp of the door's application, for its lifetime."""
        security = None
        if host in _LOOPBACK:
            # As mcp's own servers do on a loopback address: a web page the
            # user visits must not reach the kernel through DNS rebinding.
            security = TransportSecuritySettings(
                enable_dns_rebinding_protection=True,
                allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
                allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"])
        # Stateless: every POST is one self-contained exchange (no server-held
        # session, no GET stream), so only POST is routed.
        self.manager = StreamableHTTPSessionManager(self.server, stateless=True, security_settings=security)
        app.router.add_post(PATH, self.handle)
        app.cleanup_ctx.append(self._lifespan)

    async def _lifespan(self, app: web.Application):
        # The session manager's run() holds an anyio task group, which must be
        # entered and left in one task: it lives in its own task, from the
        # door's start to its stop.
        ready: asyncio.Future = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()

        async def hold() -> None:
            async with self.manager.run():
                ready.set_result(None)
                await stop.wait()

        task = asyncio.ensure_future(hold())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # it failed to start: raise why
        try:
            yield
        finally:
            stop.set()
            await task

    async def handle(self, request: web.Request) -> web.StreamResponse:
        rctx.request_id.set(request.headers.get("X-Request-Id") or uuid.uuid4().hex)
        header = request.headers.get("Authorization", "")
        if not header:
            return _unauthorized(None)
        try:
            caller = await self.intake.caller([("authorization", header)])
        except errors.Unauthenticated as err:
            return _unauthorized(err)
        except errors.AiosError as err:  # e.g. the access service is unavailable
            status = 503 if isinstance(err, errors.Unavailable) else 500
            return web.json_response({"error": err.code.lower(), "error_description": err.message}, status=status)
        # What the MCP handlers need of the HTTP request, in the ASGI scope
        # (they run in the session manager's tasks, not this one): also its
        # request id and trace, for the tool call's logs and spans.
        state = {"caller": caller, "session_id": request.headers.get(SESSION_HEADER, ""),
                 "request_id": rctx.request_id.get(), "trace": otel_context.get_current()}
        return await serve_asgi(self.manager.handle_request, request, state)

    # --- MCP handlers ---------------------------------------------------

    def _input_schema(self, name: str) -> dict[str, Any] | None:
        tool = self.tools.tools.get(name) if self.tools is not None else None
        return tool.parameters if tool is not None else None

    async def list_tools(self, ctx, params) -> types.ListToolsResult:
        tools = sorted(self.tools.tools.values(), key=lambda t: t.name) if self.tools is not None else []
        return types.ListToolsResult(tools=[_tool(t) for t in tools])

    async def call_tool(self, ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        state = ctx.request.scope["state"]
        caller: Caller = state["caller"]
        rctx.request_id.set(state["request_id"])
        rctx.agent.set(caller.name)
        token = otel_context.attach(state["trace"])
        syscall = ks.Syscall(tool=ks.ToolCall(name=params.name), session_id=state["session_id"])
        syscall.tool.arguments.update(params.arguments or {})
        events: asyncio.Queue = asyncio.Queue()
        progress = asyncio.ensure_future(_report_progress(ctx, events))
        entry = None
        try:
            # Parked here while a confirmation is pending, like any door's call.
            entry = await self.intake.start(caller, syscall, None, events)
            await self.kernel.wait(entry, entry.deadline)
            record = self.intake.outcome(entry)
        except errors.AiosError as err:
            return _error_result(err)
        finally:
            progress.cancel()
            if entry is not None and events in entry.subscribers:
                entry.subscribers.remove(events)
            otel_context.detach(token)
        return types.CallToolResult(content=[types.TextContent(text=record.tool.output)])


def _tool(tool) -> types.Tool:
    if tool.irreversible:
        annotations = types.ToolAnnotations(read_only_hint=False, destructive_hint=True)
    elif tool.read_only:
        annotations = types.ToolAnnotations(read_only_hint=True)
    else:
        # A built-in one is known not to destroy (the kernel confirms an
        # overwrite); of an MCP server's, only what it said is known.
        annotations = types.ToolAnnotations(read_only_hint=tool.read_only,
                                            destructive_hint=False if tool.source == "builtin" else None)
    return types.Tool(name=tool.name, description=tool.description, input_schema=tool.parameters,
                      annotations=annotations)


def _error_result(err: errors.AiosError) -> types.CallToolResult:
    detail: dict[str, Any] = {"code": err.code, "message": err.message}
    for key in ("reason", "field", "retry_after"):
        if getattr(err, key):
            detail[key] = getattr(err, key)
    if err.metadata:
        detail["metadata"] = dict(err.metadata)
    reason = f" ({err.reason})" if err.reason else ""
    return types.CallToolResult(content=[types.TextContent(text=f"{err.code}{reason}: {err.message}")],
                                structured_content={"error": detail}, is_error=True)


async def _report_progress(ctx, events: asyncio.Queue) -> None:
    """The call's life as MCP progress (sent only if the client asked for it
    with a progress token): where it waits, above all for which confirmation."""
    step = 0
    while True:
        event = await events.get()
        if isinstance(event, ev.AwaitingConfirmation):
            message = (f"awaiting confirmation {event.confirmation_id}: a person approves it with "
                       f"`aios confirm approve {event.confirmation_id}`")
        elif isinstance(event, ev.Queued):
            message = f"queued ({event.position} ahead)"
        elif isinstance(event, (ev.Started, ev.Resumed)):
            message = "running"
        else:
            continue
        step += 1
        try:
            await ctx.session.report_progress(step, None, message)
        except Exception as exc:  # noqa: BLE001 - progress is best effort; the result still comes
            log.debug("mcp progress not sent", error=str(exc))


def _unauthorized(err: errors.AiosError | None) -> web.Response:
    # RFC 6750: no error code when no credential came at all.
    if err is None:
        challenge = 'Bearer realm="aios"'
        body = {"error": "unauthorized",
                "error_description": "this endpoint needs 'Authorization: Bearer <agent token>'"}
    else:
        challenge = 'Bearer realm="aios", error="invalid_token", error_description="{}"'.format(
            err.message.replace('"', "'"))
        body = {"error": "invalid_token", "error_description": err.message}
    return web.json_response(body, status=401, headers={"WWW-Authenticate": challenge})


def _version() -> str:
    try:
        return importlib.metadata.version("aios-kernel")
    except importlib.metadata.PackageNotFoundError:
        return ""


# --- ASGI on aiohttp ------------------------------------------------------

async def serve_asgi(app, request: web.Request, state: dict | None = None) -> web.StreamResponse:
    """Run an ASGI 3 HTTP application for one aiohttp request: the request
    body is streamed to it, its response (SSE included) streamed back as it
    writes, and a client that goes away is told (http.disconnect), then cut
    off. Relies on the aiohttp runner's handler_cancellation (on in the door),
    which cancels the handler when its client disconnects."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    sock = transport.get_extra_info("sockname") if transport is not None else None
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": f"{request.version.major}.{request.version.minor}",
        "method": request.method, "scheme": request.scheme,
        "path": request.path, "raw_path": request.raw_path.split("?", 1)[0].encode("latin-1"),
        "query_string": request.query_string.encode("latin-1"), "root_path": "",
        "headers": [(name.lower(), value) for name, value in request.raw_headers],
        "client": tuple(peer[:2]) if isinstance(peer, tuple) else None,
        "server": tuple(sock[:2]) if isinstance(sock, tuple) else None,
        "state": state if state is not None else {},
    }
    body_done = False
    # Set once the response is complete or the client is gone: from then on
    # receive() answers http.disconnect.
    closed = asyncio.Event()
    response: web.StreamResponse | None = None

    async def receive() -> dict:
        nonlocal body_done
        if not body_done:
            chunk = await request.content.readany()
            body_done = not chunk or request.content.at_eof()
            return {"type": "http.request", "body": chunk, "more_body": not body_done}
        await closed.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        nonlocal response
        kind = message["type"]
        if kind == "http.response.start":
            if response is not None:
                raise RuntimeError("the ASGI app started its response twice")
            headers: CIMultiDict = CIMultiDict()
            for name, value in message.get("headers", ()):
                name = name.decode("latin-1")
                if name.lower() not in _HOP_BY_HOP:
                    headers.add(name, value.decode("latin-1"))
            response = web.StreamResponse(status=message["status"], headers=headers)
        elif kind == "http.response.body":
            if response is None:
                raise RuntimeError("the ASGI app sent a body before starting its response")
            if closed.is_set():
                raise ConnectionResetError("the response is complete or its client went away")
            if not response.prepared:
                await response.prepare(request)
            body = message.get("body", b"")
            if body:
                await response.write(body)  # written out now: SSE events reach the client as sent
            if not message.get("more_body", False):
                await response.write_eof()
                closed.set()

    task = asyncio.ensure_future(app(scope, receive, send))
    # Whatever it ends with is read here or below, never left unretrieved.
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    try:
        await asyncio.wait({task})  # unlike awaiting it, a cancelled handler leaves the app running
    except asyncio.CancelledError:
        # The client went away (or the door is stopping): the app hears so,
        # and has a moment to wind down.
        closed.set()
        await asyncio.wait({task}, timeout=DISCONNECT_GRACE)
        task.cancel()
        raise
    finally:
        closed.set()
    if task.cancelled() or task.exception() is not None:
        log.error("mcp request failed", error="cancelled" if task.cancelled() else repr(task.exception()))
        if response is None or not response.prepared:
            return web.Response(status=500, text="internal error")
        # The response has begun: it ends here, short of what the app still
        # had to send, and so does its connection (never a second response).
        response.force_close()
        return response
    if response is None:
        return web.Response(status=500, text="the ASGI app sent no response")
    if not response.prepared:
        await response.prepare(request)
    await response.write_eof()  # a no-op when the app ended its body itself
    return response
