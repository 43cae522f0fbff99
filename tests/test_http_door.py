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
