"""The OpenAI Responses API on the kernel's HTTP door: the plain `openai`
client and the OpenAI Agents SDK's default model (Responses) run through
the kernel by changing only their base URL and key, and show up in the
process table under their agent."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time

# The Agents SDK exports traces to api.openai.com unless told not to; tests never contact it.
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"

import aiohttp  # noqa: E402
import jsonschema  # noqa: E402
import openai  # noqa: E402
import pytest  # noqa: E402
import pytest_asyncio  # noqa: E402

from aios.kernel.v1 import syscall_pb2 as ks  # noqa: E402
from aios.sdk import AsyncClient  # noqa: E402
from tests.conftest import kernel_config  # noqa: E402

MODEL = "smollm2"
WEATHER = {"type": "function", "name": "get_weather", "description": "Get the current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}, "strict": True}


@pytest_asyncio.fixture(scope="module")
async def door(llm_core_addr, start_service):
    from services.scheduler.app import build

    server = await start_service(build, kernel_config(llm_core_addr, http_port=0))
    return f"127.0.0.1:{server.port}", f"http://127.0.0.1:{server.service.http_port}/v1"


def client_for(base_url: str, agent: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=agent, max_retries=0)


async def syscall_of(kernel: str, response_id: str) -> ks.SyscallRecord:
    """The process-table record behind a response (its id is resp_<syscall id>)."""
    assert response_id.startswith("resp_")
    async with AsyncClient(kernel, token="observer") as c:
        return await c.get_syscall(response_id.removeprefix("resp_"))


async def agents_table(kernel: str) -> dict:
    async with AsyncClient(kernel, token="observer") as c:
        return {a.agent: a for a in await c.list_agents()}


async def test_create_plain_and_streamed(door):
    kernel, base_url = door
    client = client_for(base_url, "responses-agent")
    resp = await client.responses.create(model=MODEL, instructions="You answer in a few words.",
                                         input="Name one fruit.", max_output_tokens=48, temperature=0)
    assert resp.object == "response" and resp.model == MODEL and resp.error is None
    assert resp.status in ("completed", "incomplete") and resp.output_text.strip()
    (message,) = resp.output
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.content[0].type == "output_text" and message.content[0].annotations == []
    assert resp.instructions == "You answer in a few words." and resp.tools == [] and resp.tool_choice == "auto"
    u = resp.usage
    assert u.input_tokens > 0 and 0 < u.output_tokens <= 48 and u.total_tokens == u.input_tokens + u.output_tokens
    assert u.input_tokens_details.cached_tokens >= 0 and u.output_tokens_details.reasoning_tokens == 0
    record = await syscall_of(kernel, resp.id)
    assert record.agent == "responses-agent" and record.state == ks.SYSCALL_STATE_SUCCEEDED
    assert record.usage.completion_tokens == u.output_tokens and record.llm.text == resp.output_text

    # Cut at max_output_tokens: incomplete, with the reason.
    cut = await client.responses.create(model=MODEL, input="Write a long story about the sea.",
                                        max_output_tokens=3, temperature=0)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.output[0].status == "incomplete" and cut.usage.output_tokens == 3

    # Streamed: the lifecycle events in order, numbered, with the kernel's token deltas.
    stream = await client.responses.create(model=MODEL, input="Write a sentence about rain.",
                                           max_output_tokens=32, temperature=0, stream=True)
    events = [e async for e in stream]
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          events[-1].type] and events[-1].type in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    final = events[-1].response
    assert len(deltas) > 1 and "".join(deltas) == final.output_text == events[-4].text
    assert final.id == events[0].response.id and final.usage.output_tokens >= len(deltas)

    # The SDK's own stream helper accumulates the same events into the final response.
    async with client.responses.stream(model=MODEL, input="Say hi in one word.", max_output_tokens=64,
                                       temperature=0) as s:
        accumulated = await s.get_final_response()
    assert accumulated.output_text and accumulated.status in ("completed", "incomplete")
    await client.close()
    assert (await agents_table(kernel))["responses-agent"].completed == 4


async def test_function_call_then_its_output_also_via_previous_response_id(door):
    kernel, base_url = door
    client = client_for(base_url, "tool-agent")
    question = {"role": "user", "content": "What is the weather in Paris?"}
    first = await client.responses.create(model=MODEL, input=[question], tools=[WEATHER], temperature=0,
                                          tool_choice={"type": "function", "name": "get_weather"},
                                          max_output_tokens=60)
    assert first.status == "completed" and first.output_text == ""
    (call,) = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    assert call.id.startswith("fc_") and call.call_id and isinstance(json.loads(call.arguments)["city"], str)
    assert first.tools[0].name == "get_weather" and first.tool_choice.name == "get_weather"

    result = {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 24 degrees Celsius"}
    # The whole history sent back, as a stateless client does...
    explicit = await client.responses.create(
        model=MODEL, input=[question, call.model_dump(exclude_none=True), result], max_output_tokens=40,
        temperature=0)
    # ... and the same turn chained on the kept response.
    chained = await client.responses.create(model=MODEL, previous_response_id=first.id, input=[result],
                                            max_output_tokens=40, temperature=0)
    for r in (explicit, chained):
        assert r.status in ("completed", "incomplete") and r.output_text.strip()
        assert not any(item.type == "function_call" for item in r.output)
    assert chained.previous_response_id == first.id
    # The kernel got the same prompt both ways: the kept response is the history.
    assert chained.usage.input_tokens == explicit.usage.input_tokens > first.usage.input_tokens / 4

    # A forced call streamed: the function_call item with its argument events.
    # Forced by name (one call at most): under "required" the small model now
    # and then spent all 150 tokens without finishing a call (1 run in 15 of
    # this file with test_http_door.py: response.incomplete, no item).
    stream = await client.responses.create(model=MODEL, input=[question], tools=[WEATHER], temperature=0,
                                           tool_choice={"type": "function", "name": "get_weather"},
                                           max_output_tokens=150, stream=True)
    events = [e async for e in stream]
    types = [e.type for e in events]
    assert types[-5:] == ["response.output_item.added", "response.function_call_arguments.delta",
                          "response.function_call_arguments.done", "response.output_item.done",
                          "response.completed"]
    item = events[-1].response.output[0]
    assert item.type == "function_call" and item.name == "get_weather" and events[-3].arguments == item.arguments
    await client.close()
    table = await agents_table(kernel)
    assert table["tool-agent"].completed == 4


async def test_structured_output_with_text_format(door):
    _, base_url = door
    client = client_for(base_url, "json-responses-agent")
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
              "required": ["city", "country"], "additionalProperties": False}
    resp = await client.responses.create(
        model=MODEL, input="Name the capital of France and its country, as JSON.", max_output_tokens=60,
        temperature=0, text={"format": {"type": "json_schema", "name": "capital", "schema": schema, "strict": True}})
    jsonschema.validate(json.loads(resp.output_text), schema)
    assert resp.text.format.type == "json_schema" and resp.text.format.name == "capital"
    await client.close()


BAD_BODIES = [
    ({"max_output_tokens": "abc"}, "max_output_tokens"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"temperature": 9}, "temperature"),
    ({"top_p": 7}, "top_p"),
    ({"input": 5}, "input"),
    ({"input": []}, "input"),
    ({"instructions": 5}, "instructions"),
    ({"tools": "x"}, "tools"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": [WEATHER, {"type": "file_search", "vector_store_ids": ["v"]}]}, "tools[1].type"),
    ({"tools": [{"type": "function", "name": ""}]}, "tools[0].name"),
    ({"tools": [{"type": "function", "name": "f", "parameters": "x"}]}, "tools[0].parameters"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice.name"),
    ({"tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []}}, "tool_choice.type"),
    ({"tool_choice": 3}, "tool_choice"),
    ({"text": {"format": {"type": "xml"}}}, "text.format.type"),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
    ({"text": "json"}, "text"),
    ({"input": [{"role": "robot", "content": "hi"}]}, "input[0].role"),
    ({"input": [{"type": "web_search_call", "id": "ws_1", "status": "completed"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": "hi"},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{not json"},
                {"type": "function_call_output", "call_id": "c1", "output": "1"}]}, "input[1].arguments"),
    ({"input": [{"type": "function_call_output", "output": "1"}]}, "input[0].call_id"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"background": True}, "background"),
]


@pytest.mark.parametrize("patch,param", BAD_BODIES, ids=[p for _, p in BAD_BODIES])
async def test_a_malformed_field_is_a_400_naming_it_in_responses_terms(door, patch, param):
    _, base_url = door
    body = {"model": MODEL, "input": "hi", "max_output_tokens": 4, **patch}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base_url}/responses", json=body,
                             headers={"Authorization": "Bearer bad-responses"}) as resp:
            assert resp.status == 400, await resp.text()
            error = (await resp.json())["error"]
    assert error["param"] == param and error["message"] and error["type"]


async def test_errors_reach_the_openai_client_typed(door):
    _, base_url = door
    client = client_for(base_url, "typed-errors")
    with pytest.raises(openai.BadRequestError) as exc:
        await client.responses.create(model=MODEL, input="hi", tools=[{"type": "web_search"}])
    assert exc.value.param == "tools[0].type" and "function tools only" in exc.value.message
    with pytest.raises(openai.NotFoundError) as exc:
        await client.responses.create(model=MODEL, input="hi", previous_response_id="resp_nope")
    assert exc.value.param == "previous_response_id" and "in memory" in exc.value.message
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="nope", input="hi")
    await client.close()


async def test_kept_responses_are_per_agent_and_store_false_is_not_kept(door):
    _, base_url = door
    owner, other = client_for(base_url, "keeper"), client_for(base_url, "intruder")
    resp = await owner.responses.create(model=MODEL, input="Say hi.", max_output_tokens=4, temperature=0,
                                        metadata={"run": "1"})
    got = await owner.responses.retrieve(resp.id)
    assert got.id == resp.id and got.output_text == resp.output_text and got.metadata == {"run": "1"}
    with pytest.raises(openai.NotFoundError):
        await other.responses.retrieve(resp.id)
    with pytest.raises(openai.NotFoundError):
        await other.responses.create(model=MODEL, input="hi", previous_response_id=resp.id)
    await owner.responses.delete(resp.id)
    with pytest.raises(openai.NotFoundError):
        await owner.responses.retrieve(resp.id)

    unkept = await owner.responses.create(model=MODEL, input="Say hi.", max_output_tokens=4, store=False)
    assert unkept.store is False
    with pytest.raises(openai.NotFoundError):
        await owner.responses.create(model=MODEL, input="hi", previous_response_id=unkept.id)
    await owner.close()
    await other.close()


async def test_session_and_idempotency_key(door):
    kernel, base_url = door
    client = client_for(base_url, "session-agent")
    first = await client.responses.create(model=MODEL, input="Say hi.", max_output_tokens=4, prompt_cache_key="run-7")
    chained = await client.responses.create(model=MODEL, input="Again.", max_output_tokens=4,
                                            previous_response_id=first.id)
    header = await client.responses.create(model=MODEL, input="Say hi.", max_output_tokens=4, user="someone",
                                           extra_headers={"X-AIOS-Session": "run-8"})
    # The agent run: the header, else prompt_cache_key, else user, else the previous response's.
    assert [(await syscall_of(kernel, r.id)).session_id for r in (first, chained, header)] == ["run-7", "run-7",
                                                                                                "run-8"]
    # A retry with the same Idempotency-Key is the first call: the same response, run once.
    retry = {"Idempotency-Key": "responses-retry-1"}
    once = await client.responses.create(model=MODEL, input="Say hi.", max_output_tokens=4, extra_headers=retry)
    again = await client.responses.create(model=MODEL, input="Say hi.", max_output_tokens=4, extra_headers=retry)
    assert again.id == once.id and again.output_text == once.output_text
    assert (await agents_table(kernel))["session-agent"].completed == 4
    await client.close()


def test_the_store_is_bounded_least_recently_used_first():
    from services.runtime import errors
    from services.scheduler.responses import Responses

    store = Responses(door=None, capacity=2)
    for rid in ("resp_a", "resp_b"):
        store._keep("a", {"id": rid}, [], "")
    store._find("a", "resp_a")  # used: resp_b is now the oldest
    store._keep("a", {"id": "resp_c"}, [], "")
    assert list(store.kept) == ["resp_a", "resp_c"]
    with pytest.raises(errors.NotFound) as exc:
        store._find("a", "resp_b", "previous_response_id")
    assert "at most 2" in exc.value.message and exc.value.field == "previous_response_id"


async def test_a_client_that_goes_away_mid_stream_cancels_the_call(door):
    kernel, base_url = door
    body = {"model": MODEL, "input": "Write a long story about the sea.", "max_output_tokens": 400,
            "stream": True}
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{base_url}/responses", json=body, headers={"Authorization": "Bearer leaver"})
        response_id = None
        async for line in resp.content:
            if line.startswith(b"data: "):
                event = json.loads(line[6:])
                response_id = response_id or event["response"]["id"]
                if event["type"] == "response.output_text.delta":
                    break
        resp.close()  # gone, mid-generation
    deadline = time.monotonic() + 30
    while (record := await syscall_of(kernel, response_id)).state != ks.SYSCALL_STATE_CANCELLED:
        assert record.state == ks.SYSCALL_STATE_RUNNING and time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert record.usage.completion_tokens < 400


@pytest.fixture
def agents_sdk_client(door):
    """The Agents SDK's default client pointed at the door (as its docs do for
    another base URL: the default model stays OpenAIResponsesModel)."""
    from agents import set_default_openai_client, set_tracing_disabled
    from agents.models import _openai_shared

    set_tracing_disabled(True)
    before = _openai_shared.get_default_openai_client()

    def use(agent_name: str) -> openai.AsyncOpenAI:
        client = client_for(door[1], agent_name)
        set_default_openai_client(client, use_for_tracing=False)
        return client

    yield use
    _openai_shared.set_default_openai_client(before)


async def test_openai_agents_sdk_default_model_runs_a_tool_through_the_kernel(door, agents_sdk_client):
    from agents import Agent, AgentHooks, ModelSettings, Runner, function_tool
    from agents.models.openai_provider import OpenAIProvider
    from agents.models.openai_responses import OpenAIResponsesModel

    kernel, _ = door
    cities: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        cities.append(city)
        return f"It is sunny and 24 degrees Celsius in {city}."

    class AnswerAfterTheTool(AgentHooks):
        """Made to call the tool first, then to answer in words: a small
        model offered the tool again (tool choice auto) calls it again."""

        async def on_tool_end(self, context, agent, tool, result) -> None:
            agent.model_settings = dataclasses.replace(agent.model_settings, tool_choice="none")

    def weather_agent() -> Agent:
        return Agent(name="sdk-weather-agent", instructions="Answer weather questions in one short sentence.",
                     model=MODEL, tools=[get_weather], hooks=AnswerAfterTheTool(), reset_tool_choice=False,
                     model_settings=ModelSettings(tool_choice="get_weather", parallel_tool_calls=False,
                                                  temperature=0, max_tokens=200))

    client = agents_sdk_client("sdk-weather-agent")
    # The default provider's model for that name: the Responses one, over HTTP.
    assert type(OpenAIProvider().get_model(MODEL)) is OpenAIResponsesModel
    result = await Runner.run(weather_agent(), "What is the weather in Paris?", max_turns=3)
    assert cities == ["Paris"] and isinstance(result.final_output, str) and result.final_output.strip()
    # Two model calls: the function_call, then the answer to its function_call_output.
    first, second = result.raw_responses
    assert [item.type for item in first.output] == ["function_call"]
    assert [item.type for item in second.output] == ["message"]

    streamed = Runner.run_streamed(weather_agent(), "What is the weather in Rome?", max_turns=3)
    kinds = {e.type async for e in streamed.stream_events()}
    assert {"raw_response_event", "run_item_stream_event"} <= kinds
    assert cities == ["Paris", "Rome"] and streamed.final_output.strip() and len(streamed.raw_responses) == 2
    await client.close()

    assert (await agents_table(kernel))["sdk-weather-agent"].completed == 4
    for response in [*result.raw_responses, *streamed.raw_responses]:
        record = await syscall_of(kernel, response.response_id)
        assert record.agent == "sdk-weather-agent" and record.state == ks.SYSCALL_STATE_SUCCEEDED
