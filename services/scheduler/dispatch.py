"""Runs a syscall on the service that owns its resource.

The kernel's Runner: given an entry (and a time slice for LLM calls), call
llm_core, memory or storage with the remaining deadline and turn the answer
into an Outcome. Errors of the downstream service pass through unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import time

import grpc

from aios.common.v1 import llm_pb2 as lc
from aios.kernel.v1 import kernel_service_pb2 as kpb
from aios.kernel.v1 import syscall_pb2 as ks
from aios.llm.v1 import llm_service_pb2 as llm
from aios.llm.v1 import llm_service_pb2_grpc as llm_grpc
from aios.memory.v1 import memory_service_pb2 as mem
from aios.memory.v1 import memory_service_pb2_grpc as mem_grpc
from aios.storage.v1 import storage_service_pb2 as st
from aios.storage.v1 import storage_service_pb2_grpc as st_grpc
from services.runtime import errors
from services.runtime.status import from_rpc_error
from services.scheduler import events as ev
from services.scheduler.kernel import Outcome
from services.scheduler.table import Entry

CHUNK = 1024 * 1024
INLINE_READ_LIMIT = 4 * 1024 * 1024

_MEMORY_RPC = {
    "add": "AddMemory",
    "batch_add": "BatchAddMemories",
    "get": "GetMemory",
    "update": "UpdateMemory",
    "delete": "DeleteMemory",
    "list": "ListMemories",
    "search": "SearchMemories",
}

# Calls that change something: the kernel keys them (see _keyed).
_MEMORY_MUTATIONS = {"add", "batch_add", "update", "delete"}
_STORAGE_MUTATIONS = {"delete", "rollback"}  # and "write", whose header carries the key

_STORAGE_UNARY = {
    "stat": "StatFile",
    "list": "ListFiles",
    "delete": "DeleteFile",
    "list_versions": "ListFileVersions",
    "rollback": "RollbackFile",
    "retrieve": "RetrieveFiles",
    "presign": "PresignFile",
}


def _timeout(entry: Entry) -> float | None:
    if entry.deadline is None:
        return None
    remaining = entry.deadline - time.monotonic()
    if remaining <= 0:
        raise errors.DeadlineExceeded("the syscall's deadline passed")
    return remaining


@contextlib.contextmanager
def _cancel_at_exit(call):
    """The call, cancelled when the block is left before the RPC finished
    (a no-op once it has). grpc.aio misses some cancellations: a task
    cancelled in the loop iteration in which a stream's first message
    (`_preparation`) completed gets the CancelledError
    at an await outside the handler that cancels the RPC, and a download
    cancelled in its loop body never reaches grpc at all. No garbage
    collection makes up for it (the channel's done callback keeps the call
    referenced until it finishes), so the RPC ran on: llm_core kept
    generating for a cancelled syscall until the model or the deadline ended it."""
    try:
        yield call
    finally:
        call.cancel()


class Dispatcher:
    def __init__(self, llm_channel: grpc.aio.Channel, memory_channel: grpc.aio.Channel,
                 storage_channel: grpc.aio.Channel, tools=None) -> None:
        self.llm = llm_grpc.LlmServiceStub(llm_channel)
        self.memory = mem_grpc.MemoryServiceStub(memory_channel)
        self.storage = st_grpc.StorageServiceStub(storage_channel)
        self.tools = tools
        # async (caller, ShareFileRequest) -> Grant: sharing is the access
        # service's business (set by the app).
        self.share = None

    async def __call__(self, entry: Entry, slice_tokens: int) -> Outcome:
        try:
            if entry.kind == "llm":
                return await self._llm(entry, slice_tokens)
            if entry.kind == "memory":
                return await self._memory(entry)
            if entry.kind == "storage":
                return await self._storage(entry)
            if entry.kind == "embed":
                return await self._embed(entry)
            if entry.kind == "tool":
                if self.tools is None:
                    raise errors.Unimplemented("the tool manager is not enabled")
                return Outcome(output=await self.tools.call(entry, _timeout(entry)))
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        raise errors.InvalidArgument(f"unknown syscall kind {entry.kind!r}")

    async def _embed(self, entry: Entry) -> Outcome:
        call = entry.syscall.embed
        req = llm.EmbedRequest(model=call.model, inputs=call.inputs)
        with _cancel_at_exit(self.llm.Embed(req, timeout=_timeout(entry))) as rpc:
            resp = await rpc
        entry.endpoint = resp.model
        out = ks.EmbedResult(embeddings=[ks.Vector(values=e.values) for e in resp.embeddings],
                             dimensions=resp.dimensions, model=resp.model)
        return Outcome(output=out, prompt_tokens=resp.usage.prompt_tokens)

    async def _llm(self, entry: Entry, slice_tokens: int) -> Outcome:
        # The agent's call plus what only the kernel decides: the session,
        # the snapshot of a preempted run, the time slice.
        req = llm.GenerateRequest(call=entry.syscall.llm, session_id=entry.run)
        if entry.snapshot_text or entry.snapshot_tokens:
            req.resume.text = entry.snapshot_text
            req.resume.completion_tokens = entry.snapshot_tokens
        req.slice_tokens = slice_tokens
        timeout = _timeout(entry)
        if entry.stream:
            resp = lc.Completion(text=entry.snapshot_text)
            with _cancel_at_exit(self.llm.GenerateStream(req, timeout=timeout)) as call:
                async for chunk in call:
                    if chunk.delta:
                        resp.text += chunk.delta
                        entry.publish(ev.Delta, text=chunk.delta)
                    if chunk.finish_reason:
                        resp.finish_reason = chunk.finish_reason
                        resp.tool_calls.extend(chunk.tool_calls)
                        resp.usage.CopyFrom(chunk.usage)
                        resp.model, resp.endpoint = chunk.model, chunk.endpoint
        else:
            with _cancel_at_exit(self.llm.Generate(req, timeout=timeout)) as call:
                resp = await call
        entry.endpoint = resp.endpoint
        # usage covers the whole generation so far (snapshot included); charge
        # only what this run added.
        new_completion = resp.usage.completion_tokens - entry.snapshot_tokens
        outcome = Outcome(completion_tokens=max(0, new_completion))
        if resp.finish_reason != lc.FINISH_REASON_PREEMPTED:
            # The prompt is charged once, by the run that finishes: a slice cut
            # short reports no usage, and a resumed run's prompt excludes the
            # snapshot (llm_core subtracts it).
            outcome.prompt_tokens = resp.usage.prompt_tokens
            outcome.cached_tokens = resp.usage.cached_prompt_tokens
        if resp.finish_reason == lc.FINISH_REASON_PREEMPTED:
            outcome.preempted = True
            outcome.snapshot_text = resp.text
            outcome.snapshot_tokens = resp.usage.completion_tokens
            return outcome
        outcome.output = resp
        return outcome

    async def _memory(self, entry: Entry) -> Outcome:
        call = entry.syscall.memory
        op = call.WhichOneof("op")
        request = getattr(call, op)
        if op in _MEMORY_MUTATIONS:
            request = _keyed(request, _key(entry))
        response = await getattr(self.memory, _MEMORY_RPC[op])(request, timeout=_timeout(entry))
        result = ks.MemoryResult()
        getattr(result, op).CopyFrom(response)
        return Outcome(output=result)

    async def _storage(self, entry: Entry) -> Outcome:
        call = entry.syscall.storage
        op = call.WhichOneof("op")
        request = getattr(call, op)
        result = ks.StorageResult()
        timeout = _timeout(entry)
        if op == "write":
            # A write access control let through as a create must stay one:
            # storage refuses it if the file appeared meanwhile.
            parts = _write_parts(request, entry.create_only, _key(entry)) if entry.body is None \
                else _upload_parts(entry, request, entry.create_only, _key(entry))
            response = await self.storage.WriteFile(parts, timeout=timeout)
            result.write.CopyFrom(response)
        elif op == "read" and entry.body is not None:
            # A download: parts go to the caller's queue as they come.
            with _cancel_at_exit(self.storage.ReadFile(request, timeout=timeout)) as call:
                async for part in call:
                    if part.HasField("info"):
                        result.read.info.CopyFrom(part.info)
                        await entry.body.put(kpb.DownloadFileResponse(info=part.info))
                    else:
                        await entry.body.put(kpb.DownloadFileResponse(chunk=part.chunk))
            await entry.body.put(None)
        elif op == "read":
            info, content = await self.read_file(request, timeout, INLINE_READ_LIMIT)
            result.read.info.CopyFrom(info)
            result.read.content = content
        elif op == "share":
            from services.scheduler.auth import Caller

            result.share.CopyFrom(await self.share(Caller(entry.agent), request))
        elif op in _STORAGE_UNARY:
            if op in _STORAGE_MUTATIONS:
                request = _keyed(request, _key(entry))
            response = await getattr(self.storage, _STORAGE_UNARY[op])(request, timeout=timeout)
            getattr(result, op).CopyFrom(response)
        else:
            raise errors.Unimplemented(f"storage.{op} is not available yet")
        return Outcome(output=result)

    async def precheck(self, entry: Entry) -> None:
        """Before a call is parked for a person: refuse at once what could
        never run (NOT_FOUND, INVALID_ARGUMENT), rather than asking someone
        to approve it. Memory updates and deletes, file deletes and rollbacks
        name a record or file that must exist."""
        call = entry.syscall
        kind = call.WhichOneof("call")
        try:
            if kind == "memory" and call.memory.WhichOneof("op") in ("update", "delete"):
                req = getattr(call.memory, call.memory.WhichOneof("op"))
                await self.memory.GetMemory(mem.GetMemoryRequest(owner=req.owner, tenant=req.tenant, id=req.id),
                                            timeout=_timeout(entry))
            elif kind == "storage" and call.storage.WhichOneof("op") in ("delete", "rollback"):
                req = getattr(call.storage, call.storage.WhichOneof("op"))
                if not getattr(req, "recursive", False):
                    await self.storage.StatFile(st.StatFileRequest(owner=req.owner, path=req.path),
                                                timeout=_timeout(entry))
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def count_memories(self, owner: str, tenant: str) -> int:
        """How many memory records an agent holds (for its quota)."""
        try:
            resp = await self.memory.CountMemories(mem.CountMemoriesRequest(owner=owner, tenant=tenant), timeout=10)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        return resp.count

    async def exists(self, owner: str, path: str) -> bool:
        """Whether a file exists (so a write would replace it)."""
        try:
            await self.storage.StatFile(st.StatFileRequest(owner=owner, path=path), timeout=10)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return False
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                return False  # the write itself will be refused with the reason
            raise from_rpc_error(exc) from None
        return True

    async def read_file(self, request: st.ReadFileRequest, timeout, limit: int):
        info, parts, size = st.FileInfo(), [], 0
        with _cancel_at_exit(self.storage.ReadFile(request, timeout=timeout)) as call:
            async for part in call:
                if part.HasField("info"):
                    info.CopyFrom(part.info)
                    if info.size > limit:
                        raise errors.FailedPrecondition(
                            f"{info.path} is {info.size} bytes, over the {limit}-byte inline limit; "
                            "use KernelService.DownloadFile", reason="FILE_TOO_LARGE_FOR_INLINE")
                else:
                    size += len(part.chunk)
                    parts.append(part.chunk)
        return info, b"".join(parts)


def _key(entry: Entry) -> str:
    """The idempotency key of an entry's service calls: the same for every
    run of the syscall (a kernel restart runs it again) and every retry of
    its request id (a retry after UNAVAILABLE is a new entry), and never
    another agent's."""
    if not entry.request_id:
        return entry.id
    return "r-" + hashlib.sha256(f"{entry.agent}\0{entry.request_id}".encode()).hexdigest()[:40]


def _keyed(request, key: str):
    """The request with the kernel's idempotency key (services apply a keyed
    mutation once). A copy: the syscall as submitted stays as it was."""
    keyed = type(request)()
    keyed.CopyFrom(request)
    keyed.request_id = key
    return keyed


def _write_header(req: ks.WriteFileInline, if_absent: bool, request_id: str) -> st.WriteFileRequest:
    return st.WriteFileRequest(header=st.WriteFileHeader(
        owner=req.owner, path=req.path, content_type=req.content_type, if_version_id=req.if_version_id,
        if_absent=if_absent, request_id=request_id))


async def _upload_parts(entry: Entry, req: ks.WriteFileInline, if_absent: bool = False, request_id: str = ""):
    """An upload's header, then its chunks as the caller sends them, then the
    end once the caller's upload ended with its own (a caller that dies half
    way ends `entry.body` with an error, and storage never gets the end)."""
    yield _write_header(req, if_absent, request_id)
    async for chunk in entry.body:
        yield st.WriteFileRequest(chunk=chunk)
    entry.body_ended = True
    yield st.WriteFileRequest(end=st.WriteFileEnd())


def _write_parts(req: ks.WriteFileInline, if_absent: bool = False, request_id: str = ""):
    yield _write_header(req, if_absent, request_id)
    data = req.content
    for i in range(0, len(data), CHUNK):
        yield st.WriteFileRequest(chunk=data[i:i + CHUNK])
    yield st.WriteFileRequest(end=st.WriteFileEnd())
