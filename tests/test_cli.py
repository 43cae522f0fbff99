"""The `aios` command line as a person meets it: one way to address the
kernel, the messages of its error paths, `aios models` and `aios status`
through the kernel, and its manners (help on every argument, header rows,
"did you mean").

A kernel in development mode (the token is the agent's name) runs over the
real llm_core and llama.cpp; memory and storage point at closed ports, which
`aios status` must report. The blocking CLI runs off the event loop that
serves the kernel."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket

import pytest
import pytest_asyncio

from aios.sdk import AsyncClient
from services.cli.main import build_parser, main
from tests.conftest import kernel_config


_HELD: list[socket.socket] = []


def closed_port() -> int:
    """A loopback port bound but never listening, held until the test process
    ends: connections to it are refused, and no other process can start
    listening on it while the kernel below still points there."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _HELD.append(s)
    return s.getsockname()[1]


@pytest_asyncio.fixture(scope="module")
async def kernel(llm_core_addr, start_service):
    from services.scheduler.app import build

    server = await start_service(build, kernel_config(
        llm_core_addr, AIOS_MEMORY_ADDR=f"127.0.0.1:{closed_port()}",
        AIOS_STORAGE_ADDR=f"127.0.0.1:{closed_port()}"))
    return f"127.0.0.1:{server.port}"


@pytest.fixture
def aios(capsys, monkeypatch, tmp_path):
    """aios(*argv) -> (exit code, stdout, stderr), with no credential or
    kernel address from the environment unless a test sets one."""
    for name in ("AIOS_KERNEL", "AIOS_TOKEN", "AIOS_ADMIN_TOKEN", "AIOS_DATA_DIR", "AIOS_ACCESS_ADDR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .aios/ of a developer's stack is found by accident

    async def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = await asyncio.to_thread(main, list(argv))
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


async def test_models_lists_the_local_model_through_the_kernel(kernel, aios):
    code, out, err = await aios("models", "--kernel", kernel, "--token", "ann")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["MODEL", "ENDPOINT", "LOAD", "URL", "STATUS"]
    (row,) = rows
    assert row.startswith("smollm2 (default)") and " local " in row and "0/4" in row
    assert row.rstrip().endswith("up")


async def test_models_fails_and_names_the_endpoint_that_is_down(start_service, aios):
    from services.llm_core.app import build as llm_build
    from services.llm_core.config import Config as LlmConfig
    from services.scheduler.app import build as kernel_build

    eps = [{"name": "gone", "model": "gone", "base_url": f"http://127.0.0.1:{closed_port()}/v1", "model_id": "x"}]
    llm = await start_service(llm_build, LlmConfig.from_env({"AIOS_LLM_ENDPOINTS": json.dumps(eps)}))
    k = await start_service(kernel_build, kernel_config(f"127.0.0.1:{llm.port}"))
    code, out, err = await aios("models", "--kernel", f"127.0.0.1:{k.port}", "--token", "ann")
    assert code == 1
    assert "gone (default)" in out and "DOWN: unreachable" in out
    assert "endpoint down: gone/gone" in err


async def test_an_llm_syscall_without_a_model_gets_the_kernels_default(kernel):
    async with AsyncClient(kernel, token="ann", timeout=60) as c:
        assert (await c.list_models()).default_model == "smollm2"
        reply = await c.llm.chat("Say hi", max_tokens=4, temperature=0)
        assert reply.record.resource == "llm:smollm2" and reply.completion_tokens > 0


async def test_a_configured_default_model_is_used(llm_core_addr, start_service):
    from aios.sdk import NotFoundError
    from services.scheduler.app import build

    server = await start_service(build, kernel_config(llm_core_addr, default_model="llama3"))
    async with AsyncClient(f"127.0.0.1:{server.port}", token="ann", timeout=30) as c:
        assert (await c.list_models()).default_model == "llama3"
        with pytest.raises(NotFoundError) as exc:  # named by the kernel, served by nobody here
            await c.llm.chat("Say hi", max_tokens=4)
        assert exc.value.reason == "UNKNOWN_MODEL" and "llama3" in exc.value.message


async def test_status_follows_aios_kernel_and_reports_each_service(kernel, aios, monkeypatch):
    monkeypatch.setenv("AIOS_KERNEL", kernel)
    code, out, err = await aios("status", "--token", "ann")
    rows = {line.split()[0]: line for line in out.splitlines()}
    assert rows["SERVICE"].split()[:3] == ["SERVICE", "ADDRESS", "STATUS"]
    assert kernel in rows["kernel"] and "SERVING" in rows["kernel"]
    assert "SERVING" in rows["llm_core"]
    assert "UNREACHABLE" in rows["memory"] and "UNREACHABLE" in rows["storage"]
    assert "NOT_USED" in rows["access"]  # development mode
    assert code == 1  # memory and storage are down
    assert "default model smollm2" in err


async def test_status_says_how_to_start_a_kernel_when_none_answers(aios):
    code, out, err = await aios("status", "--kernel", f"127.0.0.1:{closed_port()}")
    assert code == 1 and "DOWN" in out
    assert "start one with `aios up`" in err


async def test_commands_say_when_no_kernel_answers(aios):
    address = f"127.0.0.1:{closed_port()}"
    code, _, err = await aios("ps", "--kernel", address, "--token", "ann", "--timeout", "5")
    assert code == 1
    assert err.startswith(f"error: no kernel answers at {address}") and "`aios up`" in err


async def test_a_missing_credential_names_the_file_looked_for(aios, tmp_path):
    code, _, err = await aios("agent", "ls", "--data", str(tmp_path / "nowhere"),
                              "--access-addr", f"127.0.0.1:{closed_port()}")
    assert code == 1
    assert "no credential" in err and "AIOS_ADMIN_TOKEN" in err
    assert str(tmp_path / "nowhere" / "admin.token") in err and "--data" in err


async def test_a_mistyped_command_gets_a_suggestion(aios):
    code, _, err = await aios("sycalls")
    assert code == 2 and "did you mean 'syscalls'?" in err
    code, _, err = await aios("files", "lst")
    assert code == 2 and "did you mean 'ls'?" in err


async def test_up_refuses_busy_ports_in_one_line(aios, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = await aios("up", "--data", str(tmp_path / "d"), "--kernel-port", str(port),
                                    "--metrics-port", "-1", "--http-port", "-1")
    assert code == 1 and out == ""
    (line,) = err.splitlines()
    assert f"{port} (kernel) already in use" in line and "--kernel-port" in line
    assert not (tmp_path / "d").exists()  # nothing was started


def test_every_argument_has_help():
    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{path}: {action.dest}")

    walk(build_parser(), "aios")
    assert not missing, missing


async def test_tables_have_header_rows(kernel, aios):
    async with AsyncClient(kernel, token="table-agent", timeout=60) as c:
        await c.tools.call("calculator", {"expression": "1+1"})
    for argv, header in ((["ps"], ["AGENT", "RUN", "QUEUED"]), (["syscalls"], ["ID", "AGENT", "SESSION"]),
                         (["models"], ["MODEL", "ENDPOINT"])):
        code, out, err = await aios(*argv, "--kernel", kernel, "--token", "table-agent")
        assert code == 0, err
        assert out.splitlines()[0].split()[:len(header)] == header


async def test_top_once_prints_one_frame_of_agents_queues_and_syscalls(kernel, aios):
    async with AsyncClient(kernel, token="top-agent", timeout=60) as c:
        await c.tools.call("calculator", {"expression": "2+3"})
    code, out, err = await aios("top", "--once", "--kernel", kernel, "--token", "top-agent")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"aios top - kernel {kernel}, auth dev, policy ") and "\x1b[" not in out
    headers = {line.split()[0]: i for i, line in enumerate(lines) if line.isupper() or line.startswith("CONFIRMATIONS")}
    assert {"AGENT", "RESOURCE", "ID", "CONFIRMATIONS"} <= set(headers), out
    agents = lines[headers["AGENT"] + 1:headers["RESOURCE"]]
    assert any(row.split()[:4] == ["top-agent", "0", "0", "1"] for row in agents), out
    queues = lines[headers["RESOURCE"] + 1:headers["CONFIRMATIONS"]]
    assert any(row.split()[:3] == ["tool", "64", "0"] for row in queues), out
    assert "none in development mode" in lines[headers["CONFIRMATIONS"]]
    assert any(row.split()[1] == "top-agent" and row.split()[3:5] == ["tool", "tool"]
               for row in lines[headers["ID"] + 1:]), out


def test_free_ports_are_below_the_ephemeral_range_and_never_handed_out_twice():
    """A port handed to a child to bind later must not be one the OS may give
    to an outgoing connection meanwhile (the child would fail "address in use")."""
    from pathlib import Path

    from services.cli.stack import free_port

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(200)]
    assert all(1024 <= p < low for p in ports), sorted(ports)[-5:]
    assert len(set(ports)) == len(ports)
