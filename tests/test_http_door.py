"""An agent written against the plain `openai` client runs through the
kernel's OpenAI-compatible door, and shows up in the process table."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import openai
import pytest
import pytest_asyncio

from aios.kernel.v1 import syscall_pb2 as ks

from aios.sdk import AsyncClient
from tests.conftest import kernel_config


@pytest_asyncio.fixture(scope="module")
async def door(llm_core_addr, start_service):
    from services.scheduler.app import build

    server = await start_service(build, kernel_config(llm_core_addr, http_port=0))
    return f"127.0.0.1:{server.port}", f"http://127.0.0.1:{server.service.http_port}/v1"


async def openai_agent(base_url: str, token: str) -> list[str]:
    """A two-step agent that knows nothing of the kernel but its base URL."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key=token, max_retries=0)
    history = [{"role": "user", "content": "Name one fruit. One word."}]
    first = await client.chat.completions.create(model="smollm2", messages=history, max_tokens=8, temperature=0)
    history += [{"role": "assistant", "content": first.choices[0].message.content},
                {"role": "user", "content": "Now name a color. One word."}]
    second = await client.chat.completions.create(model="smollm2", messages=history, max_tokens=8, temperature=0)
    await client.close()
    return [first.choices[0].message.content, second.choices[0].message.content]


async def test_plain_openai_agent_runs_through_the_kernel(door):
    kernel, base_url = door
    replies = await openai_agent(base_url, "openai-agent")
    assert all(r and r.strip() for r in replies)
    async with AsyncClient(kernel, token="observer") as c:
        agents = {a.agent: a for a in await c.list_agents()}
    assert agents["openai-agent"].completed == 2 and agents["openai-agent"].completion_tokens > 0
    # ... and the CLI's process table shows it under its own name.
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "aios"), "ps", "--kernel", kernel,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert "openai-agent" in out.decode()


async def test_streaming_models_and_errors(door):
    _, base_url = door
    client = openai.AsyncOpenAI(base_url=base_url, api_key="stream-agent", max_retries=0)
    models = await client.models.list()
    assert {m.id for m in models.data} == {"smollm2", "all-MiniLM-L6-v2"}
    chunks, usage = [], None
    stream = await client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Write a sentence about rain."}],
        max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True})
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            chunks.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    assert len(chunks) > 1 and usage is not None and usage.completion_tokens >= len(chunks)
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="smollm2", messages=[])
    await client.close()


async def test_json_schema_through_the_door(door):
    _, base_url = door
    client = openai.AsyncOpenAI(base_url=base_url, api_key="json-agent", max_retries=0)
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    resp = await client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Name the capital of France as JSON."}],
        max_tokens=40, response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}})
    import json

    assert set(json.loads(resp.choices[0].message.content)) == {"city"}
    await client.close()


BAD_BODIES = [
    ({"max_tokens": "abc"}, "max_tokens"),
    ({"max_tokens": 2 ** 40}, "max_tokens"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": -3}, "temperature"),
    ({"top_p": 7}, "top_p"),
    ({"tools": ["x"]}, "tools[0]"),
    ({"tools": "x"}, "tools"),
    ({"response_format": "json"}, "response_format"),
    ({"stop": 5}, "stop"),
    ({"n": 2}, "n"),
    ({"seed": "s"}, "seed"),
    ({"tool_choice": 3}, "tool_choice"),
    ({"messages": [{"role": "user", "content": "hi"},
                   {"role": "assistant", "content": "", "tool_calls": [
                       {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]},
                   {"role": "tool", "tool_call_id": "c1", "content": "1"}]}, "messages[1].tool_calls[0].arguments"),
]


@pytest.mark.parametrize("patch,param", BAD_BODIES, ids=[p for _, p in BAD_BODIES])
async def test_a_malformed_field_is_a_400_naming_it(door, patch, param):
    import aiohttp

    _, base_url = door
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **patch}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base_url}/chat/completions", json=body,
                             headers={"Authorization": "Bearer bad-fields"}) as resp:
            assert resp.status == 400, await resp.text()
            error = (await resp.json())["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


async def test_a_tool_call_cut_at_max_tokens_is_a_200_with_finish_reason_length(door):
    _, base_url = door
    client = openai.AsyncOpenAI(base_url=base_url, api_key="cut-agent", max_retries=0)
    tools = [{"type": "function", "function": {"name": "add", "description": "Add two numbers", "parameters": {
        "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}}}]
    reply = await client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Add 2 and 3."}], tools=tools,
        tool_choice="required", max_tokens=3, temperature=0)
    await client.close()
    assert reply.choices[0].finish_reason == "length" and not reply.choices[0].message.tool_calls


async def test_out_of_range_fields_are_refused_at_the_grpc_door_too(door):
    from aios.common.v1 import llm_pb2 as lc
    from aios.kernel.v1 import syscall_pb2 as ks
    from aios.sdk import InvalidArgumentError

    kernel, _ = door
    async with AsyncClient(kernel, token="forger", timeout=30, retries=0) as c:
        base = dict(model="smollm2", messages=[lc.Message(role=lc.ROLE_USER, content="hi")], max_tokens=4)
        for extra, field in ((dict(temperature=-3), "temperature"), (dict(top_p=7), "top_p"),
                             (dict(max_tokens=0), "max_tokens")):
            with pytest.raises(InvalidArgumentError) as exc:
                await c.submit(ks.Syscall(llm=lc.LlmCall(**{**base, **extra})))
            assert exc.value.field == f"syscall.llm.{field}"
        assert (await c.llm.chat("Say hi", max_tokens=4, temperature=0)).completion_tokens > 0


async def test_embeddings_models_and_sessions(door):
    """embeddings.create (openai's default base64 and floats), models.retrieve,
    and agent runs named by X-AIOS-Session, all in the process table."""
    import numpy as np

    kernel, base_url = door
    client = openai.AsyncOpenAI(base_url=base_url, api_key="embed-agent", max_retries=0)
    texts = ["a cat sat on the mat", "a kitten lay on the rug", "bond yields rose sharply"]
    packed = await client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
    floats = await client.embeddings.create(model="all-MiniLM-L6-v2", input=texts, encoding_format="float")
    assert [d.index for d in packed.data] == [0, 1, 2] and packed.usage.prompt_tokens > len(texts)
    a = np.array([d.embedding for d in packed.data])
    b = np.array([d.embedding for d in floats.data])
    assert a.shape == (3, 384) and np.allclose(a, b, atol=1e-6)
    assert a[0] @ a[1] > a[0] @ a[2] + 0.2  # unit vectors: closer in meaning, higher cosine
    one = await client.embeddings.create(model="all-MiniLM-L6-v2", input="one text")
    assert len(one.data) == 1
    with pytest.raises(openai.BadRequestError) as exc:
        await client.embeddings.create(model="all-MiniLM-L6-v2", input=[[1, 2, 3]])
    assert exc.value.param == "input"
    with pytest.raises(openai.NotFoundError) as exc:
        await client.embeddings.create(model="smollm2", input="a chat model embeds nothing")
    assert exc.value.code == "model_not_found" and exc.value.param == "model"

    assert (await client.models.retrieve("smollm2")).id == "smollm2"
    assert (await client.models.retrieve("all-MiniLM-L6-v2")).object == "model"
    with pytest.raises(openai.NotFoundError) as exc:
        await client.models.retrieve("gpt-9")
    assert exc.value.code == "model_not_found"

    for run in ("run-a", "run-b"):
        await client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "Say hi."}], max_tokens=4,
            extra_headers={"X-AIOS-Session": run})
    await client.close()
    async with AsyncClient(kernel, token="embed-agent") as c:
        # The SDK's embed is the same syscall: the default model, the same vectors.
        [vector] = await c.llm.embed([texts[0]])
        assert np.allclose(vector, b[0], atol=1e-5)
        page = await c.list_syscalls(agent="embed-agent", page_size=100)
        stats = {a.agent: a for a in await c.list_agents()}
    kinds = [ks.SyscallKind.Name(r.kind) for r in page.syscalls if r.state == ks.SYSCALL_STATE_SUCCEEDED]
    assert kinds.count("SYSCALL_KIND_EMBED") == 4 and kinds.count("SYSCALL_KIND_LLM") == 2
    assert {r.session_id for r in page.syscalls if r.kind == ks.SYSCALL_KIND_LLM} == {"run-a", "run-b"}
    # Embedding tokens are the agent's usage, as chat tokens are.
    assert stats["embed-agent"].prompt_tokens >= 2 * packed.usage.prompt_tokens + one.usage.prompt_tokens


@pytest.mark.parametrize("method,path,status,code", [
    ("GET", "/v1/nope", 404, "unknown_url"),
    ("POST", "/v1/completions", 404, "unknown_url"),
    ("GET", "/v1/chat/completions", 405, "method_not_allowed"),
    ("POST", "/v1/embeddings", 400, "invalid_argument"),
])
async def test_every_path_answers_with_an_openai_error(door, method, path, status, code):
    import aiohttp

    _, base_url = door
    root = base_url.removesuffix("/v1")
    async with aiohttp.ClientSession() as http:
        async with http.request(method, root + path, data=b"{not json",
                                headers={"Authorization": "Bearer lost-agent"}) as resp:
            assert resp.status == status and resp.content_type == "application/json", await resp.text()
            error = (await resp.json())["error"]
    assert error["code"] == code and error["message"] and error["type"] == "invalid_request_error"
    if path == "/v1/completions":
        assert "chat/completions" in error["message"]


async def test_errors_name_the_request_fields_and_openai_types(door):
    _, base_url = door
    client = openai.AsyncOpenAI(base_url=base_url, api_key="typed-agent", max_retries=0)
    with pytest.raises(openai.NotFoundError) as exc:
        await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    body = exc.value.body
    assert (body["type"], body["code"], body["param"]) == ("invalid_request_error", "model_not_found", "model")
    assert "syscall" not in body["message"]
    await client.close()
    anonymous = openai.AsyncOpenAI(base_url=base_url, api_key="not a name!", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as exc:
        await anonymous.models.list()
    assert exc.value.body["type"] == "authentication_error" and exc.value.code == "invalid_api_key"
    await anonymous.close()
