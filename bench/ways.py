"""Three ways for an agent to reach the model (and its memory and files):

- direct: the `openai` client against the engine(s), round-robin over the
  replicas as a Kubernetes Service spreads connections, with the client's own
  retries (max_retries=2, backoff 0.5 s doubling, Retry-After honoured);
  memory and files by gRPC straight to those services (as a library would);
- kernel: the SDK (`aios.sdk.AsyncClient`) over one shared gRPC channel, a
  view per agent with its own token (dev mode: the agent's name) and session;
- door: the `openai` client against the kernel's OpenAI-compatible door, the
  agent's token as API key and its session in X-AIOS-Session; memory and
  files through the SDK (the door serves chat only).

Every way gives each agent an object with chat, memory_search, memory_add,
file_write and file_read, and classifies errors as (kind, retryable).
"""

from __future__ import annotations

import itertools

import grpc
import openai

from aios.memory.v1 import memory_service_pb2 as mem
from aios.memory.v1 import memory_service_pb2_grpc as mem_grpc
from aios.sdk import AsyncClient
from aios.sdk.errors import AiosError
from aios.storage.v1 import storage_service_pb2 as st
from aios.storage.v1 import storage_service_pb2_grpc as st_grpc
from bench.workload import MODEL, AgentSpec, Reply

try:  # openai >= 3 is built on httpx2
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

# Idle keep-alive connections per HTTP client: the pool re-checks every idle
# socket on each request event, so a few thousand idle ones cost more CPU
# than opening a loopback connection now and then.
KEEPALIVE = 64
CLIENT_RETRIES = 2  # the openai client's default


class _HttpCounter:
    """Counts error responses (429, 5xx) an HTTP client saw, retried or not."""

    def __init__(self) -> None:
        self.by_status: dict[int, int] = {}

    async def hook(self, response) -> None:
        status = response.status_code
        if status == 429 or status >= 500:
            self.by_status[status] = self.by_status.get(status, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    def summary(self) -> dict:
        return {"http_error_responses": self.total,
                "http_error_statuses": {str(k): v for k, v in sorted(self.by_status.items())}}


def _http_client(concurrency: int, counter: _HttpCounter):
    limits = httpx.Limits(max_connections=concurrency + 16, max_keepalive_connections=KEEPALIVE)
    return openai.DefaultAsyncHttpxClient(limits=limits, event_hooks={"response": [counter.hook]},
                                          timeout=httpx.Timeout(3600, connect=30))


def _openai_kind(exc: BaseException) -> tuple[str, bool]:
    if isinstance(exc, openai.APIStatusError):
        retryable = exc.status_code in (408, 409, 429) or exc.status_code >= 500
        return f"http_{exc.status_code}", retryable
    if isinstance(exc, openai.APITimeoutError):
        return "timeout", True
    if isinstance(exc, openai.APIConnectionError):
        return "connection", True
    return type(exc).__name__, False


def _sdk_kind(exc: BaseException) -> tuple[str, bool]:
    if isinstance(exc, AiosError):
        code = exc.code.name
        return code, code in ("RESOURCE_EXHAUSTED", "UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED")
    return type(exc).__name__, False


class DirectWay:
    name = "direct"

    def __init__(self, urls: list[str], model_id: str, concurrency: int, tag: str,
                 memory_addr: str = "", storage_addr: str = "", api_key: str = "x", sticky: bool = False) -> None:
        self.counter = _HttpCounter()
        # Sticky: agent i always on replica i mod R, the best a client can do
        # for its prefix cache alone; otherwise round robin per request.
        self.sticky = sticky
        self.tag = tag
        self._http = _http_client(concurrency, self.counter)
        # One client per replica sharing one connection pool; a counter picks
        # the replica of each request (round robin, like a Service's proxy).
        self.clients = [openai.AsyncOpenAI(base_url=u, api_key=api_key, max_retries=CLIENT_RETRIES,
                                           http_client=self._http) for u in urls]
        self._next = itertools.count()
        self.model_id = model_id
        self._channels = []
        self.memory = self.storage = None
        if memory_addr:
            ch = grpc.aio.insecure_channel(memory_addr)
            self._channels.append(ch)
            self.memory = mem_grpc.MemoryServiceStub(ch)
        if storage_addr:
            ch = grpc.aio.insecure_channel(storage_addr)
            self._channels.append(ch)
            self.storage = st_grpc.StorageServiceStub(ch)

    def client(self) -> openai.AsyncOpenAI:
        return self.clients[next(self._next) % len(self.clients)]

    def agent(self, spec: AgentSpec) -> "_DirectAgent":
        pinned = self.clients[spec.index % len(self.clients)] if self.sticky else None
        return _DirectAgent(self, f"{self.tag}-a{spec.index}", pinned)

    def classify(self, exc: BaseException) -> tuple[str, bool]:
        if isinstance(exc, grpc.aio.AioRpcError):
            return exc.code().name, exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
        return _openai_kind(exc)

    def counters(self) -> dict:
        return self.counter.summary()

    async def close(self) -> None:
        await self._http.aclose()
        for ch in self._channels:
            await ch.close()


class _DirectAgent:
    def __init__(self, way: DirectWay, name: str, pinned: openai.AsyncOpenAI | None = None) -> None:
        self.way = way
        self.name = name
        self.pinned = pinned

    async def chat(self, messages, max_tokens: int, priority: int) -> Reply:
        resp = await (self.pinned or self.way.client()).chat.completions.create(
            model=self.way.model_id, messages=messages, max_tokens=max_tokens)
        u = resp.usage
        details = getattr(u, "prompt_tokens_details", None)
        return Reply(text=resp.choices[0].message.content or "", prompt_tokens=u.prompt_tokens,
                     completion_tokens=u.completion_tokens,
                     cached_tokens=(getattr(details, "cached_tokens", 0) or 0) if details else 0)

    async def memory_search(self, query: str):
        return await self.way.memory.SearchMemories(
            mem.SearchMemoriesRequest(owner=self.name, query=query, top_k=3), timeout=120)

    async def memory_add(self, text: str):
        return await self.way.memory.AddMemory(
            mem.AddMemoryRequest(owner=self.name, memory=mem.MemoryInput(content=text)), timeout=120)

    async def file_write(self, path: str, data: str):
        def parts():
            yield st.WriteFileRequest(header=st.WriteFileHeader(
                owner=self.name, path=path, content_type="text/plain; charset=utf-8"))
            yield st.WriteFileRequest(chunk=data.encode())
            yield st.WriteFileRequest(end=st.WriteFileEnd())
        return await self.way.storage.WriteFile(parts(), timeout=120)

    async def file_read(self, path: str) -> bytes:
        out = []
        async for part in self.way.storage.ReadFile(st.ReadFileRequest(owner=self.name, path=path), timeout=120):
            if not part.HasField("info"):
                out.append(part.chunk)
        return b"".join(out)


class KernelWay:
    name = "kernel"

    def __init__(self, kernel_addr: str, tag: str) -> None:
        self.tag = tag
        # One channel for every agent; each agent gets a view with its own
        # token and session (AsyncClient opens a channel per instance).
        self.client = AsyncClient(kernel_addr, token="bench", timeout=3600, retries=3)

    def agent(self, spec: AgentSpec) -> "_KernelAgent":
        name = f"{self.tag}-a{spec.index}"
        view = self.client.with_options(session_id=name)
        view.token = name
        return _KernelAgent(view)

    def classify(self, exc: BaseException) -> tuple[str, bool]:
        return _sdk_kind(exc)

    def counters(self) -> dict:
        return {}

    async def close(self) -> None:
        await self.client.close()


class _KernelAgent:
    def __init__(self, view: AsyncClient) -> None:
        self.view = view

    async def chat(self, messages, max_tokens: int, priority: int) -> Reply:
        r = await self.view.llm.chat(messages, model=MODEL, max_tokens=max_tokens, priority=priority)
        return Reply(text=r.text, prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens,
                     cached_tokens=r.usage.cached_prompt_tokens, kernel_waiting=r.waiting)

    async def memory_search(self, query: str):
        return await self.view.memory.search(query, k=3)

    async def memory_add(self, text: str):
        return await self.view.memory.add(text)

    async def file_write(self, path: str, data: str):
        return await self.view.files.write(path, data)

    async def file_read(self, path: str) -> bytes:
        return await self.view.files.read(path)


class DoorWay:
    name = "door"

    def __init__(self, door_url: str, kernel_addr: str, concurrency: int, tag: str) -> None:
        self.tag = tag
        self.counter = _HttpCounter()
        self._http = _http_client(concurrency, self.counter)
        self.base = openai.AsyncOpenAI(base_url=door_url, api_key="unused", max_retries=CLIENT_RETRIES,
                                       http_client=self._http)
        self.sdk = KernelWay(kernel_addr, tag)

    def agent(self, spec: AgentSpec) -> "_DoorAgent":
        name = f"{self.tag}-a{spec.index}"
        # with_options shares the HTTP client: one pool, a key per agent.
        return _DoorAgent(self.base.with_options(api_key=name), name, self.sdk.agent(spec))

    def classify(self, exc: BaseException) -> tuple[str, bool]:
        if isinstance(exc, AiosError):
            return _sdk_kind(exc)
        return _openai_kind(exc)

    def counters(self) -> dict:
        return self.counter.summary()

    async def close(self) -> None:
        await self._http.aclose()
        await self.sdk.close()


class _DoorAgent:
    def __init__(self, client: openai.AsyncOpenAI, session: str, sdk: _KernelAgent) -> None:
        self.client = client
        self.session = session
        self.sdk = sdk

    async def chat(self, messages, max_tokens: int, priority: int) -> Reply:
        resp = await self.client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=max_tokens,
            extra_headers={"X-AIOS-Session": self.session})
        u = resp.usage
        details = getattr(u, "prompt_tokens_details", None)
        return Reply(text=resp.choices[0].message.content or "", prompt_tokens=u.prompt_tokens,
                     completion_tokens=u.completion_tokens,
                     cached_tokens=(getattr(details, "cached_tokens", 0) or 0) if details else 0)

    async def memory_search(self, query: str):
        return await self.sdk.memory_search(query)

    async def memory_add(self, text: str):
        return await self.sdk.memory_add(text)

    async def file_write(self, path: str, data: str):
        return await self.sdk.file_write(path, data)

    async def file_read(self, path: str) -> bytes:
        return await self.sdk.file_read(path)
