"""An AutoGen agent that knows nothing of the kernel but its base URL and
key: `python autogen_agent.py BASE_URL TOKEN` prints what it got as JSON.

Runs in its own virtual environment (.venv-autogen, made by `make test`):
autogen-core pins protobuf 5, and the kernel's stubs need protobuf 7.
"""

import asyncio
import json
import sys

from autogen_agentchat.agents import AssistantAgent
from autogen_core.models import UserMessage
from autogen_core.tools import FunctionTool
from autogen_ext.models.openai import OpenAIChatCompletionClient


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def main(base_url: str, token: str) -> None:
    # model_info: AutoGen knows OpenAI's own model names only.
    client = OpenAIChatCompletionClient(
        model="smollm2", base_url=base_url, api_key=token, temperature=0, max_tokens=64,
        model_info={"vision": False, "function_calling": True, "json_output": True,
                    "structured_output": True, "family": "unknown"})
    agent = AssistantAgent("assistant", model_client=client)
    result = await agent.run(task="Name one fruit. One word.")
    tool = FunctionTool(add, description="Add two integers.")
    called = await client.create([UserMessage(content="What is 2 plus 3?", source="user")],
                                 tools=[tool], tool_choice=tool)
    await client.close()
    print(json.dumps({"reply": result.messages[-1].content,
                      "tool_calls": [c.name for c in called.content] if isinstance(called.content, list) else []}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
