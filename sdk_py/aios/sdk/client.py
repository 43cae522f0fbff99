"""A friendly client over the kernel's syscalls, sync (`Client`) and async
(`AsyncClient`).

    from aios.sdk import Client
    with Client() as aios:                       # AIOS_KERNEL, AIOS_TOKEN
        reply = aios.llm.chat("Say hello", model="smollm2")
        print(reply.text, reply.usage)

The helper namespaces (`llm`, `memory`, `files`, `tools`) only build
syscalls and read results; both clients share them. Calls that fail with
UNAVAILABLE are retried with the same request id, so the kernel runs them
once.
"""

from __future__ import annotations

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
from aios.sdk.errors import AiosError, UnavailableError, from_rpc_error

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

    def json(self) -> Any:
        """The reply parsed as JSON (for response_format calls)."""
        import json

        return json.loads(self.text)


def _struct(value: dict[str, Any] | None) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    if value:
        out.update(value)
    return out


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
            req.tools.append(llm.Tool(name=t["name"], description=t.get("description", ""),
                                      parameters=_struct(t.get("parameters"))))
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

    def chat(self, prompt, **kwargs):
        """One LLM syscall; returns a ChatResult (awaitable with AsyncClient)."""
        return self._c._call(self.syscall(prompt, **kwargs), chat_result)


class _Memory:
    def __init__(self, client) -> None:
        self._c = client

    def _do(self, op: str, request, extract: Callable, request_id: str | None = None):
        call = ks.MemoryCall()
        getattr(call, op).CopyFrom(request)
        return self._c._call(self._c._syscall(memory=call, request_id=request_id),
                             lambda rec: extract(getattr(rec.memory, op)))

    def add(self, content: str, *, tags: list[str] | None = None,
            metadata: dict[str, str] | None = None, owner: str = "", request_id: str | None = None):
        return self._do("add", mem.AddMemoryRequest(owner=owner, memory=mem.MemoryInput(
            content=content, tags=tags or [], metadata=metadata or {})), lambda r: r.memory, request_id)

    def search(self, query: str, *, k: int = 5, filter: str = "", owner: str = "",
               score_threshold: float | None = None):
        req = mem.SearchMemoriesRequest(owner=owner, query=query, top_k=k, filter=filter)
        if score_threshold is not None:
            req.score_threshold = score_threshold
        return self._do("search", req, lambda r: list(r.results))

    def get(self, id: str, *, owner: str = ""):
        return self._do("get", mem.GetMemoryRequest(owner=owner, id=id), lambda r: r.memory)

    def update(self, id: str, *, content: str | None = None, tags: list[str] | None = None,
               metadata: dict[str, str] | None = None, owner: str = ""):
        req = mem.UpdateMemoryRequest(owner=owner, id=id, memory=mem.MemoryInput(
            content=content or "", tags=tags or [], metadata=metadata or {}))
        for name, value in (("content", content), ("tags", tags), ("metadata", metadata)):
            if value is not None:
                req.update_mask.paths.append(name)
        return self._do("update", req, lambda r: r.memory)

    def delete(self, id: str, *, owner: str = ""):
        return self._do("delete", mem.DeleteMemoryRequest(owner=owner, id=id), lambda r: None)

    def list(self, *, filter: str = "", page_size: int = 100, page_token: str = "", owner: str = ""):
        return self._do("list", mem.ListMemoriesRequest(owner=owner, filter=filter, page_size=page_size,
                                                        page_token=page_token), lambda r: r)


class _Files:
    def __init__(self, client) -> None:
        self._c = client

    def _do(self, op: str, request, extract: Callable, request_id: str | None = None):
        call = ks.StorageCall()
        getattr(call, op).CopyFrom(request)
        return self._c._call(self._c._syscall(storage=call, request_id=request_id),
                             lambda rec: extract(getattr(rec.storage, op)))

    def write(self, path: str, data: bytes | str, *, content_type: str = "", owner: str = "",
              if_version_id: str = "", request_id: str | None = None):
        if isinstance(data, str):
            data = data.encode()
            content_type = content_type or "text/plain; charset=utf-8"
        return self._do("write", ks.WriteFileInline(owner=owner, path=path, content=data,
                                                    content_type=content_type, if_version_id=if_version_id),
                        lambda r: r.file, request_id)

    def read(self, path: str, *, version_id: str = "", owner: str = ""):
        return self._do("read", st.ReadFileRequest(owner=owner, path=path, version_id=version_id),
                        lambda r: r.content)

    def stat(self, path: str, *, owner: str = ""):
        return self._do("stat", st.StatFileRequest(owner=owner, path=path), lambda r: r.file)

    def list(self, prefix: str = "", *, recursive: bool = False, page_size: int = 100,
             page_token: str = "", owner: str = ""):
        return self._do("list", st.ListFilesRequest(owner=owner, prefix=prefix, recursive=recursive,
                                                    page_size=page_size, page_token=page_token), lambda r: r)

    def delete(self, path: str, *, recursive: bool = False, owner: str = ""):
        return self._do("delete", st.DeleteFileRequest(owner=owner, path=path, recursive=recursive),
                        lambda r: r.deleted_count)

    def versions(self, path: str, *, owner: str = ""):
        return self._do("list_versions", st.ListFileVersionsRequest(owner=owner, path=path),
                        lambda r: list(r.versions))

    def rollback(self, path: str, *, version_id: str = "", at: float | None = None, owner: str = ""):
        req = st.RollbackFileRequest(owner=owner, path=path)
        if at is not None:
            req.time.FromNanoseconds(int(at * 1e9))
        else:
            req.version_id = version_id
        return self._do("rollback", req, lambda r: r.file)

    def search(self, query: str, *, k: int = 5, prefix: str = "", owners: list[str] | None = None):
        return self._do("retrieve", st.RetrieveFilesRequest(owners=owners or [], query=query, top_k=k,
                                                            prefix=prefix), lambda r: list(r.passages))


class _Tools:
    def __init__(self, client) -> None:
        self._c = client

    def call(self, name: str, arguments: dict[str, Any] | None = None, *, tool_call_id: str = "",
             request_id: str | None = None):
        """Run a kernel tool; returns its output text."""
        return self._c._call(
            self._c._syscall(tool=ks.ToolCall(name=name, arguments=_struct(arguments),
                                              tool_call_id=tool_call_id), request_id=request_id),
            lambda rec: rec.tool.output)


class _Base:
    def __init__(self, address: str | None, token: str | None, timeout: float, retries: int,
                 session_id: str | None) -> None:
        self.address = address or os.environ.get("AIOS_KERNEL") or DEFAULT_ADDRESS
        self.token = token if token is not None else os.environ.get("AIOS_TOKEN", "")
        self.timeout = timeout
        self.retries = retries
        # One agent run: the scheduler's agent-aware policy and the LLM
        # router's cache affinity key on it.
        self.session_id = session_id or uuid.uuid4().hex
        self.llm = _Llm(self)
        self.memory = _Memory(self)
        self.files = _Files(self)
        self.tools = _Tools(self)

    def _metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def _syscall(self, *, priority: int = 0, request_id: str | None = None, **call) -> ks.Syscall:
        return ks.Syscall(request_id=request_id or uuid.uuid4().hex, session_id=self.session_id,
                          priority=priority, **call)

    def _backoff(self, attempt: int, err: AiosError) -> float | None:
        if not isinstance(err, UnavailableError) or attempt >= self.retries:
            return None
        return min(2.0, 0.1 * 2 ** attempt)


class Client(_Base):
    """Synchronous client."""

    def __init__(self, address: str | None = None, token: str | None = None, *,
                 timeout: float = 120.0, retries: int = 3, session_id: str | None = None) -> None:
        super().__init__(address, token, timeout, retries, session_id)
        self._channel = grpc.insecure_channel(self.address, options=_CHANNEL_OPTIONS)
        self.kernel = kpb_grpc.KernelServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _rpc(self, method: str, request, timeout: float | None = None):
        try:
            return getattr(self.kernel, method)(request, timeout=timeout or self.timeout,
                                                metadata=self._metadata())
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def submit(self, syscall: ks.Syscall, *, timeout: float | None = None) -> ks.SyscallRecord:
        """Run one syscall; UNAVAILABLE is retried with the same request id."""
        attempt = 0
        while True:
            try:
                return self._rpc("Submit", kpb.SubmitRequest(syscall=syscall), timeout).syscall
            except AiosError as err:
                delay = self._backoff(attempt, err)
                if delay is None:
                    raise
                time.sleep(delay)
                attempt += 1

    def _call(self, syscall: ks.Syscall, extract: Callable):
        return extract(self.submit(syscall))

    def stream(self, syscall: ks.Syscall, *, timeout: float | None = None) -> Iterator[ks.SyscallEvent]:
        """Run one syscall, yielding its lifecycle events and token deltas."""
        try:
            yield from self.kernel.SubmitStream(kpb.SubmitRequest(syscall=syscall),
                                                timeout=timeout or self.timeout, metadata=self._metadata())
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def chat_stream(self, prompt, **kwargs) -> Iterator[str | ChatResult]:
        """Yield text deltas as they arrive, then the final ChatResult."""
        for event in self.stream(self.llm.syscall(prompt, **kwargs)):
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
                 timeout: float = 120.0, retries: int = 3, session_id: str | None = None) -> None:
        super().__init__(address, token, timeout, retries, session_id)
        self._channel = grpc.aio.insecure_channel(self.address, options=_CHANNEL_OPTIONS)
        self.kernel = kpb_grpc.KernelServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _rpc(self, method: str, request, timeout: float | None = None):
        try:
            return await getattr(self.kernel, method)(request, timeout=timeout or self.timeout,
                                                      metadata=self._metadata())
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def submit(self, syscall: ks.Syscall, *, timeout: float | None = None) -> ks.SyscallRecord:
        import asyncio

        attempt = 0
        while True:
            try:
                return (await self._rpc("Submit", kpb.SubmitRequest(syscall=syscall), timeout)).syscall
            except AiosError as err:
                delay = self._backoff(attempt, err)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                attempt += 1

    async def _call(self, syscall: ks.Syscall, extract: Callable):
        return extract(await self.submit(syscall))

    async def stream(self, syscall: ks.Syscall, *, timeout: float | None = None) -> AsyncIterator[ks.SyscallEvent]:
        try:
            async for event in self.kernel.SubmitStream(kpb.SubmitRequest(syscall=syscall),
                                                        timeout=timeout or self.timeout,
                                                        metadata=self._metadata()):
                yield event
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def chat_stream(self, prompt, **kwargs) -> AsyncIterator[str | ChatResult]:
        async for event in self.stream(self.llm.syscall(prompt, **kwargs)):
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

    async def set_policy(self, kind: str, *, slice_tokens: int = 0) -> kpb.Policy:
        policy = kpb.Policy(kind=kpb.PolicyKind.Value(f"POLICY_KIND_{kind.upper()}"),
                            slice_tokens=slice_tokens)
        return (await self._rpc("SetPolicy", kpb.SetPolicyRequest(policy=policy))).policy


__all__ = ["AsyncClient", "ChatResult", "Client", "ToolCall", "chat_result"]
