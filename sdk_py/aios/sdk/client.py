"""A friendly client over the kernel's syscalls, sync (`Client`) and async
(`AsyncClient`).

    from aios.sdk import Client
    with Client() as aios:                       # AIOS_KERNEL, AIOS_TOKEN
        reply = aios.llm.chat("Say hello")       # the kernel's default model
        print(reply.text, reply.usage)

    # A kernel behind TLS: its CA (or tls=True for the system's roots), and a
    # client certificate where the kernel asks for one (AIOS_TLS_CA, AIOS_TLS_CERT ...).
    Client("aios.example.com:443", token, ca="ca.crt")

The helper namespaces (`llm`, `memory`, `files`, `tools`) only build
syscalls and read results; both clients share them. Calls that fail with
UNAVAILABLE are retried with the same request id, so the kernel runs them
once. Every call has a deadline (the client's `timeout`, or `timeout=` per
call, or `client.with_options(timeout=...)`); cancelling the asyncio task
that awaits a call (or Ctrl-C in a sync call) cancels the RPC, and the
kernel then cancels the syscall.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import logging
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
from aios.common.v1 import llm_pb2 as llm
from aios.memory.v1 import memory_service_pb2 as mem
from aios.storage.v1 import storage_service_pb2 as st
from aios.sdk.errors import (
    AiosError, ConfirmationTimeoutError, DeadlineExceededError, NotFoundError, UnavailableError, from_rpc_error,
)
from aios.sdk import _tracing
from aios.sdk.quota import parse_limit, subject

DEFAULT_ADDRESS = "127.0.0.1:50051"
# The model of an LLM syscall that names none: "" lets the kernel choose its
# default (`aios models` shows which).
DEFAULT_MODEL = ""
# A call that can be parked for confirmation and has not answered after this
# many seconds is looked up, so the caller hears at once that it waits.
CONFIRMATION_POLL = 0.5
log = logging.getLogger("aios.sdk")
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

    def embed(self, inputs: list[str], *, model: str = "", request_id: str | None = None,
              timeout: float | None = None):
        """Embed texts with one of llm_core's embedding models (empty: its
        default); returns a list of vectors, one per input, in order
        (awaitable with AsyncClient). The record, with usage, is on
        `submit(client.llm.embed_syscall(...))`."""
        return self._c._call(self.embed_syscall(inputs, model=model, request_id=request_id),
                             lambda record: [list(e.values) for e in record.embed.embeddings], timeout)

    def embed_syscall(self, inputs: list[str], *, model: str = "", request_id: str | None = None) -> ks.Syscall:
        """The embed syscall `embed` sends, without sending it."""
        if isinstance(inputs, str):
            raise TypeError("inputs is a list of strings")
        return self._c._syscall(embed=ks.EmbedCall(model=model, inputs=list(inputs)),
                                request_id=request_id)

    def syscall(self, prompt: str | list[dict[str, Any]], *, model: str | None = None,
                system: str | None = None, tools: list[Any] | None = None, tool_choice: str | None = None,
                json_schema: dict[str, Any] | None = None, json_object: bool = False,
                temperature: float | None = None, top_p: float | None = None,
                max_tokens: int | None = None, stop: list[str] | None = None, seed: int | None = None,
                priority: int = 0, request_id: str | None = None) -> ks.Syscall:
        """The LLM syscall `chat` sends (see there), without sending it."""
        req = llm.LlmCall(model=model or DEFAULT_MODEL, messages=_messages(prompt, system),
                          stop=stop or [])
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

    def chat(self, prompt: str | list[dict[str, Any]], *, model: str | None = None,
             system: str | None = None, tools: list[Any] | None = None, tool_choice: str | None = None,
             json_schema: dict[str, Any] | None = None, json_object: bool = False,
             temperature: float | None = None, top_p: float | None = None,
             max_tokens: int | None = None, stop: list[str] | None = None, seed: int | None = None,
             priority: int = 0, request_id: str | None = None, timeout: float | None = None):
        """One LLM syscall; returns a ChatResult (awaitable with AsyncClient).

        prompt: a string or OpenAI-style messages (role, content, tool_calls,
        tool_call_id). model: None for the kernel's default model. system: a
        system message put first. tools: dicts {name, description,
        parameters}, OpenAI-style function tools or ToolSpecs from
        list_tools(); tool_choice: "auto", "none", "required" or a tool name.
        json_schema: the reply is JSON valid against it (json_object: any
        JSON object). temperature, top_p, max_tokens, stop, seed: sampling.
        priority: higher runs earlier under the priority policy. request_id:
        an idempotency key (default: a new one). timeout: seconds (default:
        the client's)."""
        syscall = self.syscall(prompt, model=model, system=system, tools=tools, tool_choice=tool_choice,
                               json_schema=json_schema, json_object=json_object, temperature=temperature,
                               top_p=top_p, max_tokens=max_tokens, stop=stop, seed=seed, priority=priority,
                               request_id=request_id)
        return self._c._call(syscall, chat_result, timeout)


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
               metadata: dict[str, str] | None = None, owner: str = "", tenant: str = "",
               request_id: str | None = None):
        """Change only the fields given (content is re-embedded)."""
        req = mem.UpdateMemoryRequest(owner=owner, tenant=tenant, id=id,
                                      memory=self._input(content or "", tags, metadata))
        for name, value in (("content", content), ("tags", tags), ("metadata", metadata)):
            if value is not None:
                req.update_mask.paths.append(name)
        return self._do("update", req, lambda r: r.memory, request_id)

    def delete(self, id: str, *, owner: str = "", tenant: str = "", request_id: str | None = None):
        return self._do("delete", mem.DeleteMemoryRequest(owner=owner, tenant=tenant, id=id), lambda r: None,
                        request_id)

    def list(self, *, filter: str = "", page_size: int = 100, page_token: str = "", tier: str = "",
             owner: str = "", tenant: str = ""):
        """One page: a ListMemoriesResponse (.memories, .next_page_token).
        tier: "working", "long_term" or "" for both."""
        if tier not in self._TIERS:
            raise ValueError(f"tier must be one of {sorted(self._TIERS)}")
        return self._do("list", mem.ListMemoriesRequest(
            owner=owner, tenant=tenant, filter=filter, page_size=page_size, page_token=page_token,
            tier=self._TIERS[tier]), lambda r: r)


_UPLOAD_CHUNK = 1024 * 1024  # UploadFile's largest chunk


@contextlib.contextmanager
def _readable(source):
    """An upload's source as a readable binary file: a local path is opened
    here (so a missing file fails before the RPC), bytes are wrapped."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as file:
            yield file
    elif isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(source)
    elif callable(getattr(source, "read", None)):
        yield source
    else:
        raise TypeError(f"upload source must be a path, bytes or a binary file, not {type(source).__name__}")


class _UploadParts:
    """UploadFile's messages: the header, the file in chunks, the end (the
    kernel writes nothing without it, so an upload cut short by a crash
    leaves no truncated file). grpc turns a failing request iterator into
    UNKNOWN, so the read error is kept."""

    def __init__(self, header: kpb.UploadFileHeader, file) -> None:
        self.header, self.file = header, file
        self.error: Exception | None = None

    def __iter__(self) -> Iterator[kpb.UploadFileRequest]:
        yield kpb.UploadFileRequest(header=self.header)
        try:
            while chunk := self.file.read(_UPLOAD_CHUNK):
                yield kpb.UploadFileRequest(chunk=chunk)
            yield kpb.UploadFileRequest(end=st.WriteFileEnd())
        except Exception as exc:
            self.error = exc
            raise


class _DownloadSink:
    """Where DownloadFile's parts go: kept as bytes (dest None), or written to
    a binary file or a path. A path is opened at the file's info, so a
    refused download (not found, denied) leaves it untouched; one failing
    midway leaves it partly written."""

    def __init__(self, dest) -> None:
        self.info: st.FileInfo | None = None
        self._dest = dest
        self._chunks: list[bytes] = []
        self._file = None if isinstance(dest, (str, os.PathLike)) else dest
        self._opened = False

    def take(self, part: kpb.DownloadFileResponse) -> None:
        if part.HasField("info"):
            self.info = part.info
            if self._file is None and self._dest is not None:
                self._file, self._opened = open(self._dest, "wb"), True
        elif self._dest is None:
            self._chunks.append(part.chunk)
        else:
            self._file.write(part.chunk)

    def close(self) -> None:
        if self._opened:
            self._file.close()

    def result(self):
        """The content for dest None, else the FileInfo."""
        return b"".join(self._chunks) if self._dest is None else self.info


class _Files:
    """File syscalls over the caller's space in the kernel's object store.

    Paths are relative to the agent's own space ("notes/a.txt"); "..",
    absolute paths and control characters answer InvalidArgumentError.
    `owner` names another agent's space (needs a grant; empty = the caller's).
    Inline writes and reads carry at most 4 MiB; upload and download stream
    files of any size in 1 MiB chunks.
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

    def upload(self, path: str, source, *, content_type: str = "", owner: str = "",
               if_version_id: str = "", request_id: str | None = None, timeout: float | None = None):
        """Create or overwrite a file of any size (a new version) from a local
        path, bytes or a readable binary file, streamed in 1 MiB chunks;
        returns its FileInfo. if_version_id as in write()."""
        header = kpb.UploadFileHeader(request_id=request_id or uuid.uuid4().hex, session_id=self._c.session_id,
                                      owner=owner, path=path, content_type=content_type,
                                      if_version_id=if_version_id)
        return self._c._then(self._c._upload(header, source, timeout),
                             lambda r: r.syscall.storage.write.file)

    def download(self, path: str, dest=None, *, version_id: str = "", owner: str = "",
                 timeout: float | None = None):
        """Read a file of any size, streamed: into dest (a local path or a
        writable binary file), returning its FileInfo, or, without dest, as bytes."""
        request = kpb.DownloadFileRequest(request_id=uuid.uuid4().hex, session_id=self._c.session_id,
                                          owner=owner, path=path, version_id=version_id)
        return self._c._download(request, dest, timeout)

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


@dataclass
class PendingConfirmation:
    """A syscall the kernel parked until a person approves it."""

    confirmation_id: str
    syscall_id: str
    request_id: str
    # What it addresses, e.g. "storage" or "tool".
    resource: str

    def __str__(self) -> str:
        return (f"syscall {self.syscall_id} waits for a person to approve confirmation "
                f"{self.confirmation_id}: aios confirm approve {self.confirmation_id}")


# on_confirmation(pending): told once when a syscall is parked for confirmation.
ConfirmationHook = Callable[[PendingConfirmation], Any]


def _log_confirmation(pending: PendingConfirmation) -> None:
    log.warning("%s", pending)


def _may_park(syscall: ks.Syscall) -> bool:
    """Whether the kernel may park the call for a person's confirmation
    (LLM calls never are)."""
    return syscall.WhichOneof("call") in ("memory", "storage", "tool")


class _ConfirmationWatch:
    """Looks a slow syscall up by request id and tells the hook once when it
    is parked; turns a local deadline into ConfirmationTimeoutError when it
    ended parked."""

    def __init__(self, client: "_Base", request_id: str) -> None:
        self.client = client
        self.request_id = request_id
        self.pending: PendingConfirmation | None = None

    def saw(self, record: ks.SyscallRecord):
        """The hook's result when the record shows a new confirmation."""
        # A parked call, or a tool call one of whose own syscalls is parked.
        if not record.confirmation_id:
            return None
        if self.pending is not None and self.pending.confirmation_id == record.confirmation_id:
            return None
        self.pending = PendingConfirmation(record.confirmation_id, record.id, record.request_id,
                                           record.resource)
        return (self.client.on_confirmation or _log_confirmation)(self.pending)

    def error(self, err: AiosError) -> AiosError:
        if self.pending is None or not isinstance(err, DeadlineExceededError) \
                or isinstance(err, ConfirmationTimeoutError):
            return err
        c = self.pending.confirmation_id
        return ConfirmationTimeoutError(
            f"nobody approved confirmation {c} before the call's deadline "
            f"(a person approves it with `aios confirm approve {c}`)", reason="CONFIRMATION_TIMEOUT",
            metadata={"confirmation_id": c, "syscall_id": self.pending.syscall_id})


def _pem(what: str, value: str | bytes | None) -> bytes | None:
    """PEM bytes as given, or read from the path given."""
    if value is None or isinstance(value, bytes):
        return value
    try:
        with open(value, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ValueError(f"{what} {value!r}: {exc.strerror}") from None


def channel_credentials(tls: bool | None = None, ca: str | bytes | None = None,
                        client_cert: str | bytes | None = None,
                        client_key: str | bytes | None = None) -> grpc.ChannelCredentials | None:
    """TLS credentials for a channel to the kernel; None for a plain channel.

    `ca` (a CA bundle) verifies the kernel's certificate, else the system's
    roots do; `client_cert` and `client_key` are presented to a kernel that
    asks for them. Each is a PEM file's path or its bytes. An argument left
    None comes from the environment: AIOS_TLS (true/false), AIOS_TLS_CA,
    AIOS_TLS_CERT, AIOS_TLS_KEY. TLS is on when `tls` says so, else when a CA
    or a client certificate is given; tls=False is plain whatever else is set."""
    env = os.environ
    ca = ca if ca is not None else env.get("AIOS_TLS_CA") or None
    client_cert = client_cert if client_cert is not None else env.get("AIOS_TLS_CERT") or None
    client_key = client_key if client_key is not None else env.get("AIOS_TLS_KEY") or None
    if tls is None:
        raw = env.get("AIOS_TLS", "").strip().lower()
        if raw not in ("", "1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ValueError(f"AIOS_TLS={raw!r} is not a boolean (true/false)")
        tls = raw in ("1", "true", "yes", "on") or bool(ca or client_cert)
    if not tls:
        return None
    if bool(client_cert) != bool(client_key):
        raise ValueError("a client certificate and its key go together: give both or neither")
    return grpc.ssl_channel_credentials(root_certificates=_pem("CA", ca), private_key=_pem("key", client_key),
                                        certificate_chain=_pem("certificate", client_cert))


def _open(address: str, credentials: grpc.ChannelCredentials | None, aio: bool = False):
    module = grpc.aio if aio else grpc
    if credentials is None:
        return module.insecure_channel(address, options=_CHANNEL_OPTIONS)
    return module.secure_channel(address, credentials, options=_CHANNEL_OPTIONS)


def _set_quota_request(agent: str, group: str, limits: list[str | kpb.QuotaLimit]) -> kpb.SetQuotaRequest:
    """The request both clients send: one subject, its limits (specs parsed);
    ValueError for a bad spec or not exactly one of agent and group."""
    parsed = [parse_limit(x) if isinstance(x, str) else x for x in limits]
    return kpb.SetQuotaRequest(quota=kpb.Quota(subject=subject(agent=agent, group=group), limits=parsed))


def _get_quota_request(agent: str, group: str) -> kpb.GetQuotaRequest:
    if agent and group:
        raise ValueError("name at most one of agent= and group=")
    return kpb.GetQuotaRequest(agent=agent, group=group)


class _Base:
    def __init__(self, address: str | None, token: str | None, timeout: float, retries: int | None,
                 session_id: str | None, on_syscall: SyscallHook | None = None,
                 on_confirmation: ConfirmationHook | None = None, tls: bool | None = None,
                 ca: str | bytes | None = None, client_cert: str | bytes | None = None,
                 client_key: str | bytes | None = None) -> None:
        self.address = address or os.environ.get("AIOS_KERNEL") or DEFAULT_ADDRESS
        self.token = token if token is not None else os.environ.get("AIOS_TOKEN", "")
        # None: a plain channel (see channel_credentials).
        self._credentials = channel_credentials(tls, ca, client_cert, client_key)
        self.timeout = timeout
        self.retries = retries
        # One agent run: the scheduler's agent-aware policy and the LLM
        # router's cache affinity key on it.
        self.session_id = session_id or uuid.uuid4().hex
        # Called after each syscall ends, with its record or its error (after
        # retries): how an agent runner reports steps.
        self.on_syscall = on_syscall
        # Called once when a call is parked for a person's confirmation (by
        # default a warning on the "aios.sdk" logger); an async client
        # awaits it if it returns an awaitable.
        self.on_confirmation = on_confirmation
        self._is_view = False
        self._bind()

    def _bind(self) -> None:
        self.llm = _Llm(self)
        self.memory = _Memory(self)
        self.files = _Files(self)
        self.tools = _Tools(self)

    @classmethod
    def from_env(cls, **kwargs):
        """A client configured by AIOS_KERNEL (address), AIOS_TOKEN,
        AIOS_TIMEOUT (seconds) and the AIOS_TLS* variables
        (channel_credentials); keyword arguments override them."""
        raw = os.environ.get("AIOS_TIMEOUT", "")
        if raw and "timeout" not in kwargs:
            try:
                kwargs["timeout"] = float(raw)
            except ValueError:
                raise ValueError(f"AIOS_TIMEOUT={raw!r} is not a number of seconds") from None
        return cls(kwargs.pop("address", None) or os.environ.get("AIOS_KERNEL"),
                   kwargs.pop("token", None) or os.environ.get("AIOS_TOKEN"), **kwargs)

    def with_options(self, *, timeout: float | None = None, session_id: str | None = None,
                     on_syscall: SyscallHook | None = None, on_confirmation: ConfirmationHook | None = None):
        """A view sharing this client's channel with another default timeout,
        session or hooks, e.g. `client.with_options(timeout=5).memory.search(q)`.
        Closing a view does nothing; close the client it came from."""
        view = copy.copy(self)
        if timeout is not None:
            view.timeout = timeout
        if session_id is not None:
            view.session_id = session_id
        if on_syscall is not None:
            view.on_syscall = on_syscall
        if on_confirmation is not None:
            view.on_confirmation = on_confirmation
        view._is_view = True
        view._bind()
        return view

    def _notify(self, syscall: ks.Syscall, record: ks.SyscallRecord | None, error: AiosError | None) -> None:
        if self.on_syscall is not None:
            self.on_syscall(syscall, record, error)

    def _metadata(self, span=None) -> list[tuple[str, str]]:
        """The credential, and the trace context (the span's, else the current one)."""
        md = [("authorization", f"Bearer {self.token}")] if self.token else []
        return _tracing.inject(md, span)

    def _syscall(self, *, priority: int = 0, request_id: str | None = None, **call) -> ks.Syscall:
        return ks.Syscall(request_id=request_id or uuid.uuid4().hex, session_id=self.session_id,
                          priority=priority, **call)

    def _backoff(self, attempt: int, err: AiosError, end: float) -> float | None:
        """Seconds to wait before retrying, or None to give up: only
        UNAVAILABLE is retried, within the deadline (and at most `retries`
        times when that is set), so a call rides over a kernel restart."""
        if not isinstance(err, UnavailableError) or (self.retries is not None and attempt >= self.retries):
            return None
        delay = min(2.0, 0.1 * 2 ** attempt)
        return delay if time.monotonic() + delay < end else None


class Client(_Base):
    """Synchronous client."""

    def __init__(self, address: str | None = None, token: str | None = None, *,
                 timeout: float = 120.0, retries: int | None = None, session_id: str | None = None,
                 on_syscall: SyscallHook | None = None, on_confirmation: ConfirmationHook | None = None,
                 tls: bool | None = None, ca: str | bytes | None = None, client_cert: str | bytes | None = None,
                 client_key: str | bytes | None = None) -> None:
        super().__init__(address, token, timeout, retries, session_id, on_syscall, on_confirmation,
                         tls, ca, client_cert, client_key)
        self._channel = _open(self.address, self._credentials)
        self.kernel = kpb_grpc.KernelServiceStub(self._channel)

    def close(self) -> None:
        if not self._is_view:
            self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _rpc(self, method: str, request, timeout: float | None = None, watch: _ConfirmationWatch | None = None):
        future = getattr(self.kernel, method).future(request, timeout=timeout or self.timeout,
                                                     metadata=self._metadata())
        return self._result(future, watch)

    def _result(self, future, watch: _ConfirmationWatch | None = None):
        """The RPC future's result; while a call that may be parked runs,
        its record is looked up to tell the confirmation hook."""
        try:
            while True:
                try:
                    return future.result(timeout=CONFIRMATION_POLL if watch else None)
                except grpc.FutureTimeoutError:
                    self._look_up(watch)
        except grpc.RpcError as exc:
            err = from_rpc_error(exc)
            raise (watch.error(err) if watch else err) from None
        except BaseException:
            # Interrupted (Ctrl-C): cancel the RPC, so the kernel cancels the syscall.
            future.cancel()
            raise

    def _look_up(self, watch: _ConfirmationWatch) -> None:
        try:
            record = self.kernel.GetSyscall(kpb.GetSyscallRequest(id=watch.request_id),
                                            timeout=2, metadata=self._metadata()).syscall
        except grpc.RpcError:
            return  # not in the table yet, or the kernel is busy: the call itself reports
        watch.saw(record)

    def _then(self, value, fn: Callable):
        return fn(value)

    def submit(self, syscall: ks.Syscall, *, timeout: float | None = None) -> ks.SyscallRecord:
        """Run one syscall; UNAVAILABLE is retried with the same request id
        (the kernel runs it once), all attempts within one deadline."""
        end = time.monotonic() + (timeout or self.timeout)
        attempt = 0
        span = _tracing.syscall_span("Submit", self.address, syscall)
        with _tracing.current(span):
            while True:
                try:
                    watch = _ConfirmationWatch(self, syscall.request_id) if _may_park(syscall) else None
                    record = self._rpc("Submit", kpb.SubmitRequest(syscall=syscall),
                                       max(0.001, end - time.monotonic()), watch).syscall
                except AiosError as err:
                    delay = self._backoff(attempt, err, end)
                    if delay is None:
                        _tracing.finished(span, error=err)
                        self._notify(syscall, None, err)
                        raise
                    _tracing.retried(span, err)
                    time.sleep(delay)
                    attempt += 1
                    continue
                _tracing.finished(span, record)
                self._notify(syscall, record, None)
                return record

    def _call(self, syscall: ks.Syscall, extract: Callable, timeout: float | None = None):
        return extract(self.submit(syscall, timeout=timeout))

    def stream(self, syscall: ks.Syscall, *, timeout: float | None = None) -> Iterator[ks.SyscallEvent]:
        """Run one syscall, yielding its lifecycle events and token deltas.
        Leaving the loop early cancels the syscall."""
        # The span is not made current: a generator's yields leave this context.
        span = _tracing.syscall_span("SubmitStream", self.address, syscall)
        call = self.kernel.SubmitStream(kpb.SubmitRequest(syscall=syscall),
                                        timeout=timeout or self.timeout, metadata=self._metadata(span))
        try:
            for event in call:
                if event.HasField("finished"):
                    _tracing.finished(span, event.finished)
                    self._notify(syscall, event.finished, None)
                yield event
        except grpc.RpcError as exc:
            err = from_rpc_error(exc)
            _tracing.finished(span, error=err)
            self._notify(syscall, None, err)
            raise err from None
        finally:
            call.cancel()  # no-op once the stream ended
            _tracing.end(span)

    def _upload(self, header: kpb.UploadFileHeader, source, timeout: float | None = None) -> kpb.UploadFileResponse:
        span = _tracing.syscall_span("UploadFile", self.address, kind="storage", request_id=header.request_id,
                                     session_id=header.session_id)
        with _tracing.current(span), _readable(source) as file:
            parts = _UploadParts(header, file)
            try:
                return self._rpc("UploadFile", iter(parts), timeout, _ConfirmationWatch(self, header.request_id))
            except AiosError:
                if parts.error is not None:
                    raise parts.error from None  # reading the source failed, not the kernel
                raise

    def _download(self, request: kpb.DownloadFileRequest, dest, timeout: float | None = None):
        span = _tracing.syscall_span("DownloadFile", self.address, kind="storage", request_id=request.request_id,
                                     session_id=request.session_id)
        call = self.kernel.DownloadFile(request, timeout=timeout or self.timeout, metadata=self._metadata(span))
        sink = _DownloadSink(dest)
        try:
            for part in call:  # waits in short steps, so Ctrl-C gets through
                sink.take(part)
        except grpc.RpcError as exc:
            err = from_rpc_error(exc)
            _tracing.finished(span, error=err)
            raise err from None
        finally:
            call.cancel()  # no-op once the stream ended; cancels it on Ctrl-C
            sink.close()
            _tracing.end(span)
        return sink.result()

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

    def list_models(self) -> kpb.ListModelsResponse:
        """The models the caller may use (.models with endpoint health) and
        the kernel's .default_model."""
        return self._rpc("ListModels", kpb.ListModelsRequest())

    def get_status(self) -> kpb.GetStatusResponse:
        """Every service the kernel calls and its health as the kernel sees it."""
        return self._rpc("GetStatus", kpb.GetStatusRequest())

    def get_policy(self) -> kpb.Policy:
        return self._rpc("GetPolicy", kpb.GetPolicyRequest()).policy

    def set_policy(self, kind: str, *, slice_tokens: int = 0) -> kpb.Policy:
        policy = kpb.Policy(kind=kpb.PolicyKind.Value(f"POLICY_KIND_{kind.upper()}"),
                            slice_tokens=slice_tokens)
        return self._rpc("SetPolicy", kpb.SetPolicyRequest(policy=policy)).policy

    def set_quota(self, *, agent: str = "", group: str = "", limits: list[str | kpb.QuotaLimit]) -> kpb.Quota:
        """Replace the limits of one agent or group (admin), each a spec such
        as "requests=10/1min" or a QuotaLimit; no limits removes them."""
        return self._rpc("SetQuota", _set_quota_request(agent, group, limits)).quota

    def get_quota(self, *, agent: str = "", group: str = "") -> kpb.GetQuotaResponse:
        """The limits that bind an agent (its own and its groups') or a group,
        with what is used and left of each (.usage) and the .currency of cost;
        neither: the caller's own (an admin: every quota set)."""
        return self._rpc("GetQuota", _get_quota_request(agent, group))


class AsyncClient(_Base):
    """asyncio client; the helper namespaces return awaitables."""

    def __init__(self, address: str | None = None, token: str | None = None, *,
                 timeout: float = 120.0, retries: int | None = None, session_id: str | None = None,
                 on_syscall: SyscallHook | None = None, on_confirmation: ConfirmationHook | None = None,
                 tls: bool | None = None, ca: str | bytes | None = None, client_cert: str | bytes | None = None,
                 client_key: str | bytes | None = None) -> None:
        super().__init__(address, token, timeout, retries, session_id, on_syscall, on_confirmation,
                         tls, ca, client_cert, client_key)
        self._channel = _open(self.address, self._credentials, aio=True)
        self.kernel = kpb_grpc.KernelServiceStub(self._channel)

    async def close(self) -> None:
        if not self._is_view:
            await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _rpc(self, method: str, request, timeout: float | None = None,
                   watch: _ConfirmationWatch | None = None):
        # Cancelling the task that awaits this cancels the RPC (grpc.aio does).
        call = getattr(self.kernel, method)(request, timeout=timeout or self.timeout, metadata=self._metadata())
        return await self._result(call, watch)

    async def _result(self, call, watch: _ConfirmationWatch | None = None):
        """The call's result; while a call that may be parked runs, its
        record is looked up to tell the confirmation hook."""
        import asyncio

        try:
            if watch is None:
                return await call
            answer = asyncio.ensure_future(call)
            try:
                while not (await asyncio.wait({answer}, timeout=CONFIRMATION_POLL))[0]:
                    await self._look_up(watch)
            finally:
                if not answer.done():
                    answer.cancel()
                    call.cancel()
            return answer.result()
        except grpc.RpcError as exc:
            err = from_rpc_error(exc)
            raise (watch.error(err) if watch else err) from None

    async def _look_up(self, watch: _ConfirmationWatch) -> None:
        try:
            record = (await self.kernel.GetSyscall(kpb.GetSyscallRequest(id=watch.request_id),
                                                   timeout=2, metadata=self._metadata())).syscall
        except grpc.RpcError:
            return  # not in the table yet, or the kernel is busy: the call itself reports
        told = watch.saw(record)
        if inspect.isawaitable(told):
            await told

    async def _then(self, awaitable, fn: Callable):
        return fn(await awaitable)

    async def submit(self, syscall: ks.Syscall, *, timeout: float | None = None) -> ks.SyscallRecord:
        """Run one syscall; UNAVAILABLE is retried with the same request id
        (the kernel runs it once), all attempts within one deadline."""
        import asyncio

        end = time.monotonic() + (timeout or self.timeout)
        attempt = 0
        span = _tracing.syscall_span("Submit", self.address, syscall)
        with _tracing.current(span):
            while True:
                try:
                    watch = _ConfirmationWatch(self, syscall.request_id) if _may_park(syscall) else None
                    record = (await self._rpc("Submit", kpb.SubmitRequest(syscall=syscall),
                                              max(0.001, end - time.monotonic()), watch)).syscall
                except AiosError as err:
                    delay = self._backoff(attempt, err, end)
                    if delay is None:
                        _tracing.finished(span, error=err)
                        self._notify(syscall, None, err)
                        raise
                    _tracing.retried(span, err)
                    await asyncio.sleep(delay)
                    attempt += 1
                    continue
                _tracing.finished(span, record)
                self._notify(syscall, record, None)
                return record

    async def _call(self, syscall: ks.Syscall, extract: Callable, timeout: float | None = None):
        return extract(await self.submit(syscall, timeout=timeout))

    async def stream(self, syscall: ks.Syscall, *, timeout: float | None = None) -> AsyncIterator[ks.SyscallEvent]:
        """Run one syscall, yielding its lifecycle events and token deltas.
        Leaving the loop early cancels the syscall."""
        # The span is not made current: a generator's yields leave this context.
        span = _tracing.syscall_span("SubmitStream", self.address, syscall)
        call = self.kernel.SubmitStream(kpb.SubmitRequest(syscall=syscall),
                                        timeout=timeout or self.timeout, metadata=self._metadata(span))
        try:
            async for event in call:
                if event.HasField("finished"):
                    _tracing.finished(span, event.finished)
                    self._notify(syscall, event.finished, None)
                yield event
        except grpc.RpcError as exc:
            err = from_rpc_error(exc)
            _tracing.finished(span, error=err)
            self._notify(syscall, None, err)
            raise err from None
        finally:
            call.cancel()  # no-op once the stream ended
            _tracing.end(span)

    async def _upload(self, header: kpb.UploadFileHeader, source,
                      timeout: float | None = None) -> kpb.UploadFileResponse:
        import asyncio

        span = _tracing.syscall_span("UploadFile", self.address, kind="storage", request_id=header.request_id,
                                     session_id=header.session_id)
        with _tracing.current(span), _readable(source) as file:
            call = self.kernel.UploadFile(timeout=timeout or self.timeout, metadata=self._metadata())

            # Written part by part rather than from a request iterator (grpc.aio
            # would leave the call hanging if reading the source failed), beside
            # the wait for the answer, so a parked upload is told at once.
            async def send() -> None:
                try:
                    await call.write(kpb.UploadFileRequest(header=header))
                    # Reads off the event loop: the source may be a slow file or pipe.
                    while chunk := await asyncio.to_thread(file.read, _UPLOAD_CHUNK):
                        await call.write(kpb.UploadFileRequest(chunk=chunk))
                    await call.write(kpb.UploadFileRequest(end=st.WriteFileEnd()))
                    await call.done_writing()
                except asyncio.InvalidStateError:
                    pass  # the kernel ended the call early; its status says why
                except BaseException:
                    call.cancel()
                    raise

            writer = asyncio.ensure_future(send())
            try:
                return await self._result(call, _ConfirmationWatch(self, header.request_id))
            except (AiosError, asyncio.CancelledError):
                if writer.done() and not writer.cancelled() and writer.exception() is not None:
                    raise writer.exception() from None  # reading the source failed, not the kernel
                raise
            finally:
                writer.cancel()
                call.cancel()  # no-op once the call ended

    async def _download(self, request: kpb.DownloadFileRequest, dest, timeout: float | None = None):
        import asyncio

        span = _tracing.syscall_span("DownloadFile", self.address, kind="storage", request_id=request.request_id,
                                     session_id=request.session_id)
        call = self.kernel.DownloadFile(request, timeout=timeout or self.timeout, metadata=self._metadata(span))
        sink = _DownloadSink(dest)
        try:
            async for part in call:
                # Local writes off the event loop.
                await asyncio.to_thread(sink.take, part)
        except grpc.RpcError as exc:
            err = from_rpc_error(exc)
            _tracing.finished(span, error=err)
            raise err from None
        finally:
            call.cancel()  # no-op once the stream ended
            sink.close()
            _tracing.end(span)
        return sink.result()

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

    async def list_models(self) -> kpb.ListModelsResponse:
        """The models the caller may use (.models with endpoint health) and
        the kernel's .default_model."""
        return await self._rpc("ListModels", kpb.ListModelsRequest())

    async def get_status(self) -> kpb.GetStatusResponse:
        """Every service the kernel calls and its health as the kernel sees it."""
        return await self._rpc("GetStatus", kpb.GetStatusRequest())

    async def get_policy(self) -> kpb.Policy:
        return (await self._rpc("GetPolicy", kpb.GetPolicyRequest())).policy

    async def set_policy(self, kind: str, *, slice_tokens: int = 0) -> kpb.Policy:
        policy = kpb.Policy(kind=kpb.PolicyKind.Value(f"POLICY_KIND_{kind.upper()}"),
                            slice_tokens=slice_tokens)
        return (await self._rpc("SetPolicy", kpb.SetPolicyRequest(policy=policy))).policy

    async def set_quota(self, *, agent: str = "", group: str = "",
                        limits: list[str | kpb.QuotaLimit]) -> kpb.Quota:
        """Replace the limits of one agent or group (admin), each a spec such
        as "requests=10/1min" or a QuotaLimit; no limits removes them."""
        return (await self._rpc("SetQuota", _set_quota_request(agent, group, limits))).quota

    async def get_quota(self, *, agent: str = "", group: str = "") -> kpb.GetQuotaResponse:
        """The limits that bind an agent (its own and its groups') or a group,
        with what is used and left of each (.usage) and the .currency of cost;
        neither: the caller's own (an admin: every quota set)."""
        return await self._rpc("GetQuota", _get_quota_request(agent, group))


__all__ = ["AsyncClient", "ChatResult", "Client", "ConfirmationHook", "PendingConfirmation", "SyscallHook",
           "ToolCall", "chat_result", "tool_schemas"]
