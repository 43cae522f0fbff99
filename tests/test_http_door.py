"""An agent written against the plain `openai` client runs through the
kernel's OpenAI-compatible door, and shows up in the process table."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import openai
import pytest
import pytest_asyncio

from aios.sdk import AsyncClient
from services.cli.stack import free_port
from tests.conftest import kernel_config


@pytest_asyncio.fixture(scope="module")
async def door(llm_core_addr, start_service):
    from services.scheduler.app import build

    http_port = free_port()
    server = await start_service(build, kernel_config(llm_core_addr, http_port=http_port))
    return f"127.0.0.1:{server.port}", f"http://127.0.0.1:{http_port}/v1"


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
    assert [m.id for m in models.data] == ["smollm2"]
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
    assert error["type"] == "invalid_argument" and error["param"] == param and error["message"]


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
