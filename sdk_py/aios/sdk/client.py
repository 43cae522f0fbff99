"""A friendly client over the kernel's syscalls, sync (`Client`) and async
(`AsyncClient`).

    from aios.sdk import Client
    with Client() as aios:                       # AIOS_KERNEL, AIOS_TOKEN
        reply = aios.llm.chat("Say hello", model="smollm2")
        print(reply.text, reply.usage)

The helper namespaces (`llm`, `memory`, `files`, `tools`) only build
syscalls and read results; both clients share them. Calls that fail with
UNAVAILABLE are retried with the same request id, so the kernel runs them
once. Every call has a deadline (the client's `timeout`, or `timeout=` per
call, or `client.with_options(timeout=...)`); cancelling the asyncio task
that awaits a call (or Ctrl-C in a sync call) cancels the RPC, and the
kernel then cancels the syscall.
"""

from __future__ import annotations

import copy
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import struct_pb2

from aios.kernel.v1 import kernel_service_pb2 as kpb
from aios.kernel.v1 import kernel_service_pb2_grpc as kpb_grpc
from aios.kernel.v1 import syscall_pb2 as ks
from aios.llm.v1 import llm_service_pb2 as llm
from aios.memory.v1 import memory_service_pb2 as mem
from aios.storage.v1 import storage_service_pb2 as st
from aios.sdk.errors import AiosError, NotFoundError, UnavailableError, from_rpc_error

DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_MODEL = "smollm2"
_ROLES = {"system": llm.ROLE_SYSTEM, "user": llm.ROLE_USER,
          "assistant": llm.ROLE_ASSISTANT, "tool": llm.ROLE_TOOL}
_FINISH = {v: k.removeprefix("FINISH_REASON_").lower() for k, v in llm.FinishReason.items()}
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 8 * 1024 * 1024),
                    ("grpc.max_send_message_length", 8 * 1024 * 1024)]


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class ChatResult:
    text: str
    tool_calls: list[ToolCall]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    # Seconds the syscall waited in the kernel's queue, and from submit to finish.
    waiting: float
    turnaround: float
    record: ks.SyscallRecord = field(repr=False)

    @property
    def usage(self) -> llm.Usage:
        """The call's token counts (prompt, completion, cached, total)."""
        return self.record.usage

    def json(self) -> Any:
        """The reply parsed as JSON (for response_format calls)."""
        import json

        return json.loads(self.text)


def _struct(value: dict[str, Any] | None) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    if value:
        out.update(value)
    return out


def _tool(t: Any) -> llm.Tool:
    """A tool for llm.chat: a dict {name, description, parameters}, an OpenAI
    style {"type": "function", "function": {...}}, or a kernel ToolSpec."""
    if isinstance(t, dict):
        t = t.get("function", t)
        return llm.Tool(name=t["name"], description=t.get("description", ""),
                        parameters=_struct(t.get("parameters")))
    out = llm.Tool(name=t.name, description=t.description)
    out.parameters.CopyFrom(t.parameters)
    return out


def tool_schemas(specs: list[kpb.ToolSpec], names: list[str] | None = None) -> list[dict[str, Any]]:
    """Kernel tool specs as dicts for llm.chat(tools=...), in the order of
    `names` (all when None); an unknown name raises NotFoundError."""
    by_name = {s.name: s for s in specs}
    missing = [n for n in names or () if n not in by_name]
    if missing:
        raise NotFoundError(f"the kernel has no tool {missing[0]!r} (it has: {', '.join(sorted(by_name)) or 'none'})",
                            reason="UNKNOWN_TOOL")
    chosen = [by_name[n] for n in names] if names is not None else list(specs)
    return [{"name": s.name, "description": s.description,
             "parameters": _plain(s.parameters)} for s in chosen]


def _plain(value: Any) -> Any:
    """A protobuf Struct as plain dicts and lists (integral numbers as int)."""
    from google.protobuf import json_format

    def fix(v):
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        if isinstance(v, float) and v.is_integer():
            return int(v)
        return v

    return fix(json_format.MessageToDict(value))


def _messages(prompt: str | list[dict[str, Any]], system: str | None) -> list[llm.Message]:
    items = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system:
        items.insert(0, {"role": "system", "content": system})
    out = []
    for m in items:
        msg = llm.Message(role=_ROLES[m["role"]], content=m.get("content") or "",
                          tool_call_id=m.get("tool_call_id", ""), name=m.get("name", ""))
        for tc in m.get("tool_calls") or []:
            import json

            args = tc.get("arguments", {})
            msg.tool_calls.append(llm.ToolCall(
                id=tc.get("id", ""), name=tc["name"],
                arguments_json=args if isinstance(args, str) else json.dumps(args)))
        out.append(msg)
    return out


def chat_result(record: ks.SyscallRecord) -> ChatResult:
    import json

    r = record.llm
    calls = []
    for tc in r.tool_calls:
        try:
            args = json.loads(tc.arguments_json or "{}")
        except json.JSONDecodeError:
            args = {"_raw": tc.arguments_json}
        calls.append(ToolCall(tc.id, tc.name, args))
    return ChatResult(
        text=r.text, tool_calls=calls, finish_reason=_FINISH.get(r.finish_reason, "stop"),
        prompt_tokens=record.usage.prompt_tokens, completion_tokens=record.usage.completion_tokens,
        waiting=record.waiting.ToNanoseconds() / 1e9, turnaround=record.turnaround.ToNanoseconds() / 1e9,
        record=record,
    )


class _Llm:
    def __init__(self, client) -> None:
        self._c = client

    def syscall(self, prompt, *, model: str = DEFAULT_MODEL, system: str | None = None,
                tools: list[dict[str, Any]] | None = None, tool_choice: str | None = None,
                json_schema: dict[str, Any] | None = None, json_object: bool = False,
                temperature: float | None = None, top_p: float | None = None,
                max_tokens: int | None = None, stop: list[str] | None = None, seed: int | None = None,
                priority: int = 0, request_id: str | None = None) -> ks.Syscall:
        req = llm.GenerateRequest(model=model, messages=_messages(prompt, system), stop=stop or [])
        for t in tools or []:
            req.tools.append(_tool(t))
        if tool_choice in ("auto", "none", "required"):
            req.tool_choice.mode = {"auto": llm.TOOL_CHOICE_MODE_AUTO, "none": llm.TOOL_CHOICE_MODE_NONE,
                                    "required": llm.TOOL_CHOICE_MODE_REQUIRED}[tool_choice]
        elif tool_choice:
            req.tool_choice.mode = llm.TOOL_CHOICE_MODE_FUNCTION
            req.tool_choice.name = tool_choice
        if json_schema is not None:
            req.response_format.type = llm.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
            req.response_format.json_schema.update(json_schema)
        elif json_object:
            req.response_format.type = llm.RESPONSE_FORMAT_TYPE_JSON_OBJECT
        for name, value in (("temperature", temperature), ("top_p", top_p),
                            ("max_tokens", max_tokens), ("seed", seed)):
            if value is not None:
                setattr(req, name, value)
        return self._c._syscall(llm=req, priority=priority, request_id=request_id)

    def chat(self, prompt, *, timeout: float | None = None, **kwargs):
        """One LLM syscall; returns a ChatResult (awaitable with AsyncClient).
        prompt: a string or OpenAI-style messages (role, content, tool_calls,
        tool_call_id); tools: dicts {name, description, parameters} or
        ToolSpecs from list_tools(); tool_choice: "auto", "none", "required"
        or a tool name."""
        return self._c._call(self.syscall(prompt, **kwargs), chat_result, timeout)


class _Memory:
    """Memory syscalls. `owner` addresses another agent's memory (needs a
    grant; empty = the caller's own), `tenant` a tenant's part of it."""

    _TIERS = {"": mem.MEMORY_TIER_UNSPECIFIED, "working": mem.MEMORY_TIER_WORKING,
              "long_term": mem.MEMORY_TIER_LONG_TERM}

    def __init__(self, client) -> None:
        self._c = client

    def _do(self, op: str, request, extract: Callable, request_id: str | None = None):
        call = ks.MemoryCall()
        getattr(call, op).CopyFrom(request)
        return self._c._call(self._c._syscall(memory=call, request_id=request_id),
                             lambda rec: extract(getattr(rec.memory, op)))

    @staticmethod
    def _input(content: str, tags: list[str] | None, metadata: dict[str, str] | None) -> mem.MemoryInput:
        return mem.MemoryInput(content=content, tags=tags or [], metadata=metadata or {})

    def add(self, content: str, *, tags: list[str] | None = None,
            metadata: dict[str, str] | None = None, owner: str = "", tenant: str = "",
            request_id: str | None = None):
        """Store one record; returns the MemoryRecord."""
        return self._do("add", mem.AddMemoryRequest(owner=owner, tenant=tenant,
                                                    memory=self._input(content, tags, metadata)),
                        lambda r: r.memory, request_id)

    def batch_add(self, items: list[str | dict[str, Any]], *, owner: str = "", tenant: str = "",
                  request_id: str | None = None):
        """Store several records, all or none; items are strings or dicts with
        content, tags, metadata. Returns the MemoryRecords in order."""
        inputs = [self._input(i, None, None) if isinstance(i, str)
                  else self._input(i["content"], i.get("tags"), i.get("metadata")) for i in items]
        return self._do("batch_add", mem.BatchAddMemoriesRequest(owner=owner, tenant=tenant, memories=inputs),
                        lambda r: list(r.memories), request_id)

    def search(self, query: str, *, k: int = 5, filter: str = "", owner: str = "", tenant: str = "",
               score_threshold: float | None = None):
        """The k records closest in meaning; returns ScoredMemory (.memory, .score), best first."""
        req = mem.SearchMemoriesRequest(owner=owner, tenant=tenant, query=query, top_k=k, filter=filter)
        if score_threshold is not None:
            req.score_threshold = score_threshold
        return self._do("search", req, lambda r: list(r.results))

    def get(self, id: str, *, owner: str = "", tenant: str = ""):
        return self._do("get", mem.GetMemoryRequest(owner=owner, tenant=tenant, id=id), lambda r: r.memory)

    def update(self, id: str, *, content: str | None = None, tags: list[str] | None = None,
               metadata: dict[str, str] | None = None, owner: str = "", tenant: str = ""):
        """Change only the fields given (content is re-embedded)."""
        req = mem.UpdateMemoryRequest(owner=owner, tenant=tenant, id=id,
                                      memory=self._input(content or "", tags, metadata))
        for name, value in (("content", content), ("tags", tags), ("metadata", metadata)):
            if value is not None:
                req.update_mask.paths.append(name)
        return self._do("update", req, lambda r: r.memory)

    def delete(self, id: str, *, owner: str = "", tenant: str = ""):
        return self._do("delete", mem.DeleteMemoryRequest(owner=owner, tenant=tenant, id=id), lambda r: None)

    def list(self, *, filter: str = "", page_size: int = 100, page_token: str = "", tier: str = "",
             owner: str = "", tenant: str = ""):
        """One page: a ListMemoriesResponse (.memories, .next_page_token).
        tier: "working", "long_term" or "" for both."""
        if tier not in self._TIERS:
            raise ValueError(f"tier must be one of {sorted(self._TIERS)}")
        return self._do("list", mem.ListMemoriesRequest(
            owner=owner, tenant=tenant, filter=filter, page_size=page_size, page_token=page_token,
            tier=self._TIERS[tier]), lambda r: r)


class _Files:
    """File syscalls over the caller's space in the kernel's object store.

    Paths are relative to the agent's own space ("notes/a.txt"); "..",
    absolute paths and control characters answer InvalidArgumentError.
    `owner` names another agent's space (needs a grant; empty = the caller's).
    Inline writes and reads carry at most 4 MiB.
    """

    def __init__(self, client) -> None:
        self._c = client

    def _do(self, op: str, request, extract: Callable, request_id: str | None = None):
        call = ks.StorageCall()
        getattr(call, op).CopyFrom(request)
        return self._c._call(self._c._syscall(storage=call, request_id=request_id),
                             lambda rec: extract(getattr(rec.storage, op)))

    def write(self, path: str, data: bytes | str, *, content_type: str = "", owner: str = "",
              if_version_id: str = "", request_id: str | None = None):
        """Create or overwrite a file (a new version); returns its FileInfo.
        if_version_id writes only over that version (AbortedError otherwise)."""
        if isinstance(data, str):
            data = data.encode()
            content_type = content_type or "text/plain; charset=utf-8"
        return self._do("write", ks.WriteFileInline(owner=owner, path=path, content=data,
                                                    content_type=content_type, if_version_id=if_version_id),
                        lambda r: r.file, request_id)

    def read(self, path: str, *, version_id: str = "", owner: str = ""):
        """The file's content (bytes), of its current or the given version."""
        return self._do("read", st.ReadFileRequest(owner=owner, path=path, version_id=version_id),
                        lambda r: r.content)

    def stat(self, path: str, *, owner: str = ""):
        """FileInfo: size, sha256, content type, time, version id (is_folder for a folder)."""
        return self._do("stat", st.StatFileRequest(owner=owner, path=path), lambda r: r.file)

    def list(self, prefix: str = "", *, recursive: bool = False, page_size: int = 100,
             page_token: str = "", owner: str = ""):
        """One page: a ListFilesResponse (.files, .next_page_token). A prefix
        ending in "/" lists that folder; without recursive, subfolders are
        entries with is_folder."""
        return self._do("list", st.ListFilesRequest(owner=owner, prefix=prefix, recursive=recursive,
                                                    page_size=page_size, page_token=page_token), lambda r: r)

    def delete(self, path: str, *, recursive: bool = False, owner: str = ""):
        """Delete a file (its versions stay, for rollback), or a folder with
        recursive; returns how many files were deleted."""
        return self._do("delete", st.DeleteFileRequest(owner=owner, path=path, recursive=recursive),
                        lambda r: r.deleted_count)

    def versions(self, path: str, *, owner: str = ""):
        """The file's FileVersions, newest first (deletions included)."""
        return self._do("list_versions", st.ListFileVersionsRequest(owner=owner, path=path),
                        lambda r: list(r.versions))

    def rollback(self, path: str, *, version_id: str = "", at: float | None = None, owner: str = ""):
        """Make an earlier version current again (as a new version): by id,
        or the version current at Unix time `at`. Returns the new FileInfo."""
        req = st.RollbackFileRequest(owner=owner, path=path)
        if at is not None:
            req.time.FromNanoseconds(int(at * 1e9))
        else:
            req.version_id = version_id
        return self._do("rollback", req, lambda r: r.file)

    def search(self, query: str, *, k: int = 5, prefix: str = "", owners: list[str] | None = None):
        """The k passages of text files closest in meaning to query (Passage:
        owner, path, text, score, chunk_index), best first."""
        return self._do("retrieve", st.RetrieveFilesRequest(owners=owners or [], query=query, top_k=k,
                                                            prefix=prefix), lambda r: list(r.passages))

    def presign(self, path: str, *, expires_in: float = 3600, owner: str = ""):
        """A time-limited URL (at most 7 days) reading the file's current
        version from the object store: a PresignFileResponse (.url, .expire_time)."""
        req = st.PresignFileRequest(owner=owner, path=path)
        req.expires_in.FromNanoseconds(int(expires_in * 1e9))
        return self._do("presign", req, lambda r: r)


class _Tools:
    def __init__(self, client) -> None:
        self._c = client

    def call(self, name: str, arguments: dict[str, Any] | None = None, *, tool_call_id: str = "",
             request_id: str | None = None, timeout: float | None = None):
        """Run a kernel tool; returns its output text. Arguments that do not
        match the tool's schema fail with InvalidArgumentError before it runs."""
        return self._c._call(
            self._c._syscall(tool=ks.ToolCall(name=name, arguments=_struct(arguments),
                                              tool_call_id=tool_call_id), request_id=request_id),
            lambda rec: rec.tool.output, timeout)

    def list(self):
        """The kernel's tools: ToolSpecs (name, description, JSON schema, ...)."""
        return self._c.list_tools()

    def schemas(self, names: list[str] | None = None):
        """The named tools (all when None) as dicts for llm.chat(tools=...)."""
        return self._c._then(self._c.list_tools(), lambda specs: tool_schemas(specs, names))


# on_syscall(syscall, record, error): told of every syscall's outcome.
SyscallHook = Callable[[ks.Syscall, "ks.SyscallRecord | None", "AiosError | None"], None]


class _Base:
    def __init__(self, address: str | None, token: str | None, timeout: float, retries: int,
                 session_id: str | None, on_syscall: SyscallHook | None = None) -> None:
        self.address = address or os.environ.get("AIOS_KERNEL") or DEFAULT_ADDRESS
        self.token = token if token is not None else os.environ.get("AIOS_TOKEN", "")
        self.timeout = timeout
        self.retries = retries
        # One agent run: the scheduler's agent-aware policy and the LLM
        # router's cache affinity key on it.
        self.session_id = session_id or uuid.uuid4().hex
        # Called after each syscall ends, with its record or its error (after
        # retries): how an agent runner reports steps.
        self.on_syscall = on_syscall
        self._is_view = False
        self._bind()

    def _bind(self) -> None:
        self.llm = _Llm(self)
        self.memory = _Memory(self)
        self.files = _Files(self)
        self.tools = _Tools(self)

    @classmethod
    def from_env(cls, **kwargs):
        """A client configured by AIOS_KERNEL (address), AIOS_TOKEN and
        AIOS_TIMEOUT (seconds); keyword arguments override them."""
        raw = os.environ.get("AIOS_TIMEOUT", "")
        if raw and "timeout" not in kwargs:
            try:
                kwargs["timeout"] = float(raw)
            except ValueError:
                raise ValueError(f"AIOS_TIMEOUT={raw!r} is not a number of seconds") from None
        return cls(kwargs.pop("address", None) or os.environ.get("AIOS_KERNEL"),
                   kwargs.pop("token", None) or os.environ.get("AIOS_TOKEN"), **kwargs)

    def with_options(self, *, timeout: float | None = None, session_id: str | None = None,
                     on_syscall: SyscallHook | None = None):
        """A view sharing this client's channel with another default timeout,
        session or hook, e.g. `client.with_options(timeout=5).memory.search(q)`.
        Closing a view does nothing; close the client it came from."""
        view = copy.copy(self)
        if timeout is not None:
            view.timeout = timeout
        if session_id is not None:
            view.session_id = session_id
        if on_syscall is not None:
            view.on_syscall = on_syscall
        view._is_view = True
        view._bind()
        return view

    def _notify(self, syscall: ks.Syscall, record: ks.SyscallRecord | None, error: AiosError | None) -> None:
        if self.on_syscall is not None:
            self.on_syscall(syscall, record, error)

    def _metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def _syscall(self, *, priority: int = 0, request_id: str | None = None, **call) -> ks.Syscall:
        return ks.Syscall(request_id=request_id or uuid.uuid4().hex, session_id=self.session_id,
                          priority=priority, **call)

    def _backoff(self, attempt: int, err: AiosError, end: float) -> float | None:
        """Seconds to wait before retrying, or None to give up: only
        UNAVAILABLE is retried, a bounded number of times, within the deadline."""
        if not isinstance(err, UnavailableError) or attempt >= self.retries:
            return None
        delay = min(2.0, 0.1 * 2 ** attempt)
        return delay if time.monotonic() + delay < end else None


class Client(_Base):
    """Synchronous client."""

    def __init__(self, address: str | None = None, token: str | None = None, *,
                 timeout: float = 120.0, retries: int = 3, session_id: str | None = None,
                 on_syscall: SyscallHook | None = None) -> None:
        super().__init__(address, token, timeout, retries, session_id, on_syscall)
        self._channel = grpc.insecure_channel(self.address, options=_CHANNEL_OPTIONS)
        self.kernel = kpb_grpc.KernelServiceStub(self._channel)

    def close(self) -> None:
        if not self._is_view:
            self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _rpc(self, method: str, request, timeout: float | None = None):
        future = getattr(self.kernel, method).future(request, timeout=timeout or self.timeout,
                                                     metadata=self._metadata())
        try:
            return future.result()
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        except BaseException:
            # Interrupted (Ctrl-C): cancel the RPC, so the kernel cancels the syscall.
            future.cancel()
            raise

    def _then(self, value, fn: Callable):
        return fn(value)

    def submit(self, syscall: ks.Syscall, *, timeout: float | None = None) -> ks.SyscallRecord:
        """Run one syscall; UNAVAILABLE is retried with the same request id
        (the kernel runs it once), all attempts within one deadline."""
        end = time.monotonic() + (timeout or self.timeout)
        attempt = 0
        while True:
            try:
                record = self._rpc("Submit", kpb.SubmitRequest(syscall=syscall),
                                   max(0.001, end - time.monotonic())).syscall
            except AiosError as err:
                delay = self._backoff(attempt, err, end)
                if delay is None:
                    self._notify(syscall, None, err)
                    raise
                time.sleep(delay)
                attempt += 1
                continue
            self._notify(syscall, record, None)
            return record

    def _call(self, syscall: ks.Syscall, extract: Callable, timeout: float | None = None):
        return extract(self.submit(syscall, timeout=timeout))

    def stream(self, syscall: ks.Syscall, *, timeout: float | None = None) -> Iterator[ks.SyscallEvent]:
        """Run one syscall, yielding its lifecycle events and token deltas.
        Leaving the loop early cancels the syscall."""
        call = self.kernel.SubmitStream(kpb.SubmitRequest(syscall=syscall),
                                        timeout=timeout or self.timeout, metadata=self._metadata())
        try:
            for event in call:
                if event.HasField("finished"):
                    self._notify(syscall, event.finished, None)
                yield event
        except grpc.RpcError as exc:
            err = from_rpc_error(exc)
            self._notify(syscall, None, err)
            raise err from None
        finally:
            call.cancel()  # no-op once the stream ended

    def chat_stream(self, prompt, *, timeout: float | None = None, **kwargs) -> Iterator[str | ChatResult]:
        """Yield text deltas as they arrive, then the final ChatResult."""
        for event in self.stream(self.llm.syscall(prompt, **kwargs), timeout=timeout):
            if event.HasField("delta"):
                yield event.delta.text
            elif event.HasField("finished"):
                yield chat_result(event.finished)

    def cancel(self, id: str) -> ks.SyscallRecord:
        return self._rpc("Cancel", kpb.CancelRequest(id=id)).syscall

    def get_syscall(self, id: str) -> ks.SyscallRecord:
        return self._rpc("GetSyscall", kpb.GetSyscallRequest(id=id)).syscall

    def list_syscalls(self, **filters) -> kpb.ListSyscallsResponse:
        return self._rpc("ListSyscalls", kpb.ListSyscallsRequest(**filters))

    def list_agents(self) -> list[kpb.AgentStats]:
        return list(self._rpc("ListAgents", kpb.ListAgentsRequest()).agents)

    def list_tools(self) -> list[kpb.ToolSpec]:
        return list(self._rpc("ListTools", kpb.ListToolsRequest()).tools)

    def get_policy(self) -> kpb.Policy:
        return self._rpc("GetPolicy", kpb.GetPolicyRequest()).policy

    def set_policy(self, kind: str, *, slice_tokens: int = 0) -> kpb.Policy:
        policy = kpb.Policy(kind=kpb.PolicyKind.Value(f"POLICY_KIND_{kind.upper()}"),
                            slice_tokens=slice_tokens)
        return self._rpc("SetPolicy", kpb.SetPolicyRequest(policy=policy)).policy


class AsyncClient(_Base):
    """asyncio client; the helper namespaces return awaitables."""

    def __init__(self, address: str | None = None, token: str | None = None, *,
                 timeout: float = 120.0, retries: int = 3, session_id: str | None = None,
                 on_syscall: SyscallHook | None = None) -> None:
        super().__init__(address, token, timeout, retries, session_id, on_syscall)
        self._channel = grpc.aio.insecure_channel(self.address, options=_CHANNEL_OPTIONS)
        self.kernel = kpb_grpc.KernelServiceStub(self._channel)

    async def close(self) -> None:
        if not self._is_view:
            await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _rpc(self, method: str, request, timeout: float | None = None):
        # Cancelling the task that awaits this cancels the RPC (grpc.aio does).
        try:
            return await getattr(self.kernel, method)(request, timeout=timeout or self.timeout,
                                                      metadata=self._metadata())
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def _then(self, awaitable, fn: Callable):
        return fn(await awaitable)

    async def submit(self, syscall: ks.Syscall, *, timeout: float | None = None) -> ks.SyscallRecord:
        """Run one syscall; UNAVAILABLE is retried with the same request id
        (the kernel runs it once), all attempts within one deadline."""
        import asyncio

        end = time.monotonic() + (timeout or self.timeout)
        attempt = 0
        while True:
            try:
                record = (await self._rpc("Submit", kpb.SubmitRequest(syscall=syscall),
                                          max(0.001, end - time.monotonic()))).syscall
            except AiosError as err:
                delay = self._backoff(attempt, err, end)
                if delay is None:
                    self._notify(syscall, None, err)
                    raise
                await asyncio.sleep(delay)
                attempt += 1
                continue
            self._notify(syscall, record, None)
            return record

    async def _call(self, syscall: ks.Syscall, extract: Callable, timeout: float | None = None):
        return extract(await self.submit(syscall, timeout=timeout))

    async def stream(self, syscall: ks.Syscall, *, timeout: float | None = None) -> AsyncIterator[ks.SyscallEvent]:
        """Run one syscall, yielding its lifecycle events and token deltas.
        Leaving the loop early cancels the syscall."""
        call = self.kernel.SubmitStream(kpb.SubmitRequest(syscall=syscall),
                                        timeout=timeout or self.timeout, metadata=self._metadata())
        try:
            async for event in call:
                if event.HasField("finished"):
                    self._notify(syscall, event.finished, None)
                yield event
        except grpc.RpcError as exc:
            err = from_rpc_error(exc)
            self._notify(syscall, None, err)
            raise err from None
        finally:
            call.cancel()  # no-op once the stream ended

    async def chat_stream(self, prompt, *, timeout: float | None = None,
                          **kwargs) -> AsyncIterator[str | ChatResult]:
        """Yield text deltas as they arrive, then the final ChatResult."""
        async for event in self.stream(self.llm.syscall(prompt, **kwargs), timeout=timeout):
            if event.HasField("delta"):
                yield event.delta.text
            elif event.HasField("finished"):
                yield chat_result(event.finished)

    async def cancel(self, id: str) -> ks.SyscallRecord:
        return (await self._rpc("Cancel", kpb.CancelRequest(id=id))).syscall

    async def get_syscall(self, id: str) -> ks.SyscallRecord:
        return (await self._rpc("GetSyscall", kpb.GetSyscallRequest(id=id))).syscall

    async def list_syscalls(self, **filters) -> kpb.ListSyscallsResponse:
        return await self._rpc("ListSyscalls", kpb.ListSyscallsRequest(**filters))

    async def list_agents(self) -> list[kpb.AgentStats]:
        return list((await self._rpc("ListAgents", kpb.ListAgentsRequest())).agents)

    async def list_tools(self) -> list[kpb.ToolSpec]:
        return list((await self._rpc("ListTools", kpb.ListToolsRequest())).tools)

    async def get_policy(self) -> kpb.Policy:
        return (await self._rpc("GetPolicy", kpb.GetPolicyRequest())).policy

    async def set_policy(self, kind: str, *, slice_tokens: int = 0) -> kpb.Policy:
        policy = kpb.Policy(kind=kpb.PolicyKind.Value(f"POLICY_KIND_{kind.upper()}"),
                            slice_tokens=slice_tokens)
        return (await self._rpc("SetPolicy", kpb.SetPolicyRequest(policy=policy))).policy


__all__ = ["AsyncClient", "ChatResult", "Client", "SyscallHook", "ToolCall", "chat_result", "tool_schemas"]
