"""Integration tests for the embedded LLM server (services/local/llm_server.py).

Starts the real llama.cpp server (SmolLM2-135M, CPU) once per session on a free port.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from urllib.parse import urlsplit

import pytest
from openai import OpenAI

from services.local.llm_server import (
    MODEL_ALIAS,
    default_model_path,
    start_local_server,
    stop_local_server,
)


@pytest.fixture(scope="session")
def client(llm_server):
    return OpenAI(base_url=llm_server.base_url, api_key="unused", timeout=120, max_retries=0)


def test_default_model_path_exists():
    path = default_model_path()
    assert os.path.isfile(path) and path.endswith(".gguf")


def test_base_url_is_loopback_and_lists_alias(llm_server, client):
    parts = urlsplit(llm_server.base_url)
    assert parts.hostname == "127.0.0.1" and parts.port and parts.path == "/v1"
    with urllib.request.urlopen(f"http://127.0.0.1:{parts.port}/health", timeout=10) as r:
        assert json.loads(r.read())["status"] == "ok"
    assert [m.id for m in client.models.list().data] == [MODEL_ALIAS]


def test_chat_completion(client):
    r = client.chat.completions.create(
        model=MODEL_ALIAS,
        messages=[{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
        max_tokens=32,
        temperature=0,
    )
    text = r.choices[0].message.content
    assert text and text.strip()
    assert "paris" in text.lower()
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0


def test_streaming_yields_multiple_deltas_and_usage(client):
    stream = client.chat.completions.create(
        model=MODEL_ALIAS,
        messages=[{"role": "user", "content": "Write a short poem about the sea."}],
        max_tokens=40,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            deltas.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    assert len(deltas) > 1
    assert "".join(deltas).strip()
    assert usage is not None and usage.completion_tokens == len(deltas)


def test_json_schema_response_format(client):
    schema = {
        "type": "object",
        "properties": {
            "action": {"type": "string", "enum": ["read", "write", "delete"]},
            "priority": {"type": "integer", "minimum": 1, "maximum": 5},
            "done": {"type": "boolean"},
        },
        "required": ["action", "priority", "done"],
        "additionalProperties": False,
    }
    r = client.chat.completions.create(
        model=MODEL_ALIAS,
        messages=[{"role": "user", "content": "Decide what to do with /tmp/a.txt. Reply in JSON."}],
        max_tokens=100,
        # Sampled (the grammar must hold for sampled output too), with a fixed
        # seed: llama.cpp otherwise seeds each request at random.
        temperature=0.7,
        seed=1234,
        response_format={"type": "json_schema", "json_schema": {"name": "decision", "schema": schema}},
    )
    assert r.choices[0].finish_reason == "stop"
    obj = json.loads(r.choices[0].message.content)
    assert set(obj) == {"action", "priority", "done"}
    assert obj["action"] in ("read", "write", "delete")
    assert isinstance(obj["priority"], int) and 1 <= obj["priority"] <= 5
    assert isinstance(obj["done"], bool)


def test_stop_terminates_process():
    srv = start_local_server("127.0.0.1", 0, parallel=1, ctx=2048)
    port = urlsplit(srv.base_url).port
    assert srv.proc.poll() is None
    rc = srv.stop(timeout=30)
    assert rc == 0  # clean exit on SIGTERM, not a kill
    assert srv.proc.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.kill(srv.proc.pid, 0)  # reaped, gone
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_start_failure_reports_stderr(tmp_path):
    bogus = tmp_path / "missing.gguf"
    with pytest.raises(RuntimeError) as exc:
        start_local_server("127.0.0.1", 0, model=str(bogus), timeout=60, log_path=str(tmp_path / "llm.log"))
    msg = str(exc.value)
    assert "exited with code" in msg and "stderr tail" in msg
    assert "local_server: failed" in msg  # the child's own error line made it into the tail


def test_stop_is_idempotent():
    # stopping an already-finished process must not raise (used by teardown paths)
    srv = start_local_server("127.0.0.1", 0, parallel=1, ctx=2048)
    srv.stop()
    assert stop_local_server(srv.proc) == 0
