"""Agent frameworks run through the kernel's HTTP door unchanged but for their
base URL and API key (an agent token): LangChain (langchain-openai),
LiteLLM and AutoGen, each as its own agent, whose calls the process table then shows.
(The OpenAI Agents SDK is in test_http_responses.py, plain openai in
test_http_door.py, MCP clients in test_mcp_door.py.)

The servers share the test's event loop, so the frameworks' async APIs are
used: a blocking call would stall the kernel it waits for.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
import pytest_asyncio

from aios.sdk import AsyncClient
from tests.conftest import kernel_config

# LiteLLM fetches its price table from GitHub at import unless told to use
# the copy it ships; tests never leave the machine.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

MODEL = "smollm2"
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two integers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]}}}


@pytest_asyncio.fixture(scope="module")
async def door(llm_core_addr, start_service):
    from services.scheduler.app import build

    server = await start_service(build, kernel_config(llm_core_addr, http_port=0))
    return f"127.0.0.1:{server.port}", f"http://127.0.0.1:{server.service.http_port}/v1"


async def agent_stats(kernel: str, agent: str):
    async with AsyncClient(kernel, token=agent) as c:
        calls = (await c.list_syscalls(agent=agent, page_size=100)).syscalls
        stats = {a.agent: a for a in await c.list_agents()}[agent]
    return stats, calls


async def test_langchain_invoke_stream_tools_and_structured_output(door):
    from langchain_core.messages import HumanMessage
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel

    kernel, base_url = door
    llm = ChatOpenAI(model=MODEL, base_url=base_url, api_key="langchain-agent", temperature=0, max_tokens=24,
                     max_retries=0)

    reply = await llm.ainvoke([HumanMessage("Name one fruit. One word.")])
    assert reply.content.strip() and reply.usage_metadata["output_tokens"] > 0

    chunks = [chunk async for chunk in llm.astream("Write a short sentence about rain.")]
    assert len([c for c in chunks if c.content]) > 1

    with_tool = llm.bind_tools([ADD], tool_choice="add", max_tokens=64)
    call = await with_tool.ainvoke("What is 2 plus 3?")
    assert [t["name"] for t in call.tool_calls] == ["add"], call.response_metadata
    assert set(call.tool_calls[0]["args"]) == {"a", "b"}

    class City(BaseModel):
        name: str
        country: str

    city = await ChatOpenAI(model=MODEL, base_url=base_url, api_key="langchain-agent", temperature=0,
                            max_tokens=48, max_retries=0).with_structured_output(City).ainvoke(
        "Give a city and its country.")
    assert isinstance(city, City) and city.name and city.country

    stats, calls = await agent_stats(kernel, "langchain-agent")
    assert stats.completed == 4 and stats.failed == 0 and stats.completion_tokens > 0
    assert len(calls) == 4


async def test_litellm_completion_stream_tools_and_embedding(door):
    import litellm

    kernel, base_url = door
    common = {"api_base": base_url, "api_key": "litellm-agent", "num_retries": 0}
    messages = [{"role": "user", "content": "Name one color. One word."}]

    reply = await litellm.acompletion(model=f"openai/{MODEL}", messages=messages, max_tokens=8, temperature=0,
                                      **common)
    assert reply.choices[0].message.content.strip() and reply.usage.completion_tokens > 0

    stream = await litellm.acompletion(model=f"openai/{MODEL}", messages=messages, max_tokens=16, stream=True,
                                       **common)
    parts = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices[0].delta.content]
    assert parts

    tooled = await litellm.acompletion(model=f"openai/{MODEL}", max_tokens=48, temperature=0, tools=[ADD],
                                       tool_choice={"type": "function", "function": {"name": "add"}},
                                       messages=[{"role": "user", "content": "What is 2 plus 3?"}], **common)
    [tool_call] = tooled.choices[0].message.tool_calls
    assert tool_call.function.name == "add" and set(json.loads(tool_call.function.arguments)) == {"a", "b"}

    vectors = await litellm.aembedding(model=f"openai/{EMBEDDING_MODEL}", input=["a cat", "a kitten"], **common)
    assert [len(d["embedding"]) for d in vectors.data] == [384, 384]

    stats, calls = await agent_stats(kernel, "litellm-agent")
    assert stats.completed == 4 and stats.failed == 0
    kinds = sorted(c.kind for c in calls)
    from aios.kernel.v1 import syscall_pb2 as ks

    assert kinds == [ks.SYSCALL_KIND_LLM] * 3 + [ks.SYSCALL_KIND_EMBED]


@pytest.mark.parametrize("framework", ["langchain", "litellm"])
async def test_a_refusal_reaches_the_framework_as_its_own_error(door, framework):
    """The kernel's refusals arrive as the OpenAI errors each framework maps
    to its own exceptions (an unknown model: not found)."""
    _, base_url = door
    if framework == "langchain":
        import openai
        from langchain_openai import ChatOpenAI

        with pytest.raises(openai.NotFoundError) as exc:
            await ChatOpenAI(model="no-such-model", base_url=base_url, api_key="refused-agent",
                             max_retries=0).ainvoke("hi")
        assert exc.value.code == "model_not_found"
    else:
        import litellm

        with pytest.raises(litellm.NotFoundError) as exc:
            await litellm.acompletion(model="openai/no-such-model", api_base=base_url, api_key="refused-agent",
                                      num_retries=0, messages=[{"role": "user", "content": "hi"}])
        assert "no-such-model" in str(exc.value)


AUTOGEN_PYTHON = Path(__file__).resolve().parents[1] / ".venv-autogen" / "bin" / "python"


async def test_autogen_agent_runs_through_the_kernel(door):
    """AutoGen (autogen-agentchat, OpenAIChatCompletionClient with its
    model_info), in its own environment: an agent's run and a forced tool call."""
    assert AUTOGEN_PYTHON.exists(), "AutoGen's environment is missing: `make test` makes .venv-autogen"
    kernel, base_url = door
    proc = await asyncio.create_subprocess_exec(
        str(AUTOGEN_PYTHON), str(Path(__file__).parent / "support" / "autogen_agent.py"), base_url, "autogen-agent",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, err.decode()[-3000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["reply"].strip() and result["tool_calls"] == ["add"]
    stats, calls = await agent_stats(kernel, "autogen-agent")
    assert stats.completed == 2 and len(calls) == 2
