"""The real stack as a user runs it: `aios up` in a child process, then the
CLI and grpcurl against it, then a clean stop that leaves nothing behind."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from services.cli.main import port_flags
from services.cli.stack import SERVICES, free_port

BIN = Path(sys.executable).parent
GRPCURL = str(BIN / "grpcurl")


def _processes_with(marker: str) -> list[int]:
    """PIDs whose environment carries marker (our children all get AIOS_DATA_DIR)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    data = tmp_path_factory.mktemp("aios-data")
    ports = {svc: free_port() for svc in SERVICES}
    metrics = free_port()
    proc = subprocess.Popen(
        [str(BIN / "aios"), "up", "--data", str(data), *port_flags(ports), "--metrics-port", str(metrics),
         "--http-port", str(free_port())],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stdout], daemon=True).start()
    output, deadline = [], time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        output.append(line)
        if line.startswith("ready"):
            break
    else:
        proc.kill()
    assert output and output[-1].startswith("ready"), "".join(output)
    yield {"proc": proc, "ports": ports, "data": data, "lines": lines, "output": output, "metrics": metrics}
    if proc.poll() is None:
        proc.kill()


def _run(*args, timeout=120):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def _agent_token(stack, name: str) -> str:
    """A new agent's token, from `aios agent create` with the admin credential."""
    made = _run(str(BIN / "aios"), "agent", "create", name, "--data", str(stack["data"]),
                "--access-addr", f"127.0.0.1:{stack['ports']['access']}")
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def test_up_prints_where_each_service_listens(stack):
    text = "".join(stack["output"])
    for svc, port in stack["ports"].items():
        assert f"{svc}" in text and f"127.0.0.1:{port}" in text


def test_status_exits_zero_when_all_serve(stack):
    # The kernel named by AIOS_KERNEL, the credential from the data folder;
    # the other services are reported as the kernel sees them.
    env = {**os.environ, "AIOS_KERNEL": f"127.0.0.1:{stack['ports']['scheduler']}",
           "AIOS_DATA_DIR": str(stack["data"])}
    env.pop("AIOS_TOKEN", None)
    result = subprocess.run([str(BIN / "aios"), "status"], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SERVING") == 5
    for svc, port in stack["ports"].items():
        assert f"127.0.0.1:{port}" in result.stdout


def test_models_lists_the_local_model_and_its_endpoint_health(stack):
    result = _run(str(BIN / "aios"), "models", "--kernel", f"127.0.0.1:{stack['ports']['scheduler']}",
                  "--data", str(stack["data"]))
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("smollm2"))
    assert "(default)" in row and row.rstrip().endswith("up")


def test_chat_prints_a_reply_and_timings(stack):
    kernel = f"127.0.0.1:{stack['ports']['scheduler']}"
    # Without --token the CLI uses the admin credential aios up keeps in --data.
    result = _run(str(BIN / "aios"), "chat", "Say hello", "--kernel", kernel, "--max-tokens", "24",
                  "--data", str(stack["data"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "waiting" in result.stderr and "turnaround" in result.stderr and "completion" in result.stderr


def test_grpcurl_lists_checks_health_and_submits(stack):
    ports = stack["ports"]
    kernel = f"127.0.0.1:{ports['scheduler']}"
    listing = _run(GRPCURL, "-plaintext", kernel, "list")
    assert listing.returncode == 0, listing.stderr
    assert "aios.kernel.v1.KernelService" in listing.stdout.split()
    for svc, port in ports.items():
        health = _run(GRPCURL, "-plaintext", f"127.0.0.1:{port}", "grpc.health.v1.Health/Check")
        assert health.returncode == 0 and '"SERVING"' in health.stdout, (svc, health.stderr)
    body = {"syscall": {"llm": {"model": "smollm2", "max_tokens": 16,
                                "messages": [{"role": "ROLE_USER", "content": "Say hi"}]}}}
    token = _agent_token(stack, "grpcurl-agent")
    submit = _run(GRPCURL, "-plaintext", "-H", f"authorization: Bearer {token}", "-d",
                  json.dumps(body), kernel, "aios.kernel.v1.KernelService/Submit")
    assert submit.returncode == 0, submit.stderr
    record = json.loads(submit.stdout)["syscall"]
    assert record["state"] == "SYSCALL_STATE_SUCCEEDED" and record["agent"] == "grpcurl-agent"
    assert record["llm"]["text"]
    bad = _run(GRPCURL, "-plaintext", "-H", f"authorization: Bearer {token}", "-d", '{"syscall": {}}',
               kernel, "aios.kernel.v1.KernelService/Submit")
    assert bad.returncode != 0 and "InvalidArgument" in bad.stdout + bad.stderr
    anonymous = _run(GRPCURL, "-plaintext", "-d", json.dumps(body), kernel, "aios.kernel.v1.KernelService/Submit")
    assert anonymous.returncode != 0 and "Unauthenticated" in anonymous.stdout + anonymous.stderr


def test_process_table_policy_and_metrics(stack):
    kernel = f"127.0.0.1:{stack['ports']['scheduler']}"
    aios = str(BIN / "aios")
    token = _agent_token(stack, "ps-agent")
    chat = _run(aios, "chat", "Say yes", "--kernel", kernel, "--token", token, "--max-tokens", "8")
    assert chat.returncode == 0, chat.stderr
    data = ("--data", str(stack["data"]))  # the admin credential: sees every agent, may switch policy
    ps = _run(aios, "ps", "--kernel", kernel, *data)
    assert ps.returncode == 0 and "ps-agent" in ps.stdout, ps.stdout + ps.stderr
    calls = _run(aios, "syscalls", "--kernel", kernel, "--agent", "ps-agent", *data)
    assert calls.returncode == 0 and "succeeded" in calls.stdout and "llm:smollm2" in calls.stdout
    refused = _run(aios, "policy", "fair_share", "--kernel", kernel, "--token", token)
    assert refused.returncode != 0 and "PERMISSION_DENIED" in refused.stderr
    switched = _run(aios, "policy", "fair_share", "--kernel", kernel, *data)
    assert switched.returncode == 0 and "fair_share" in switched.stdout
    shown = _run(aios, "policy", "--kernel", kernel, *data)
    assert "fair_share" in shown.stdout
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{stack['metrics']}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert 'aios_queue_depth{resource="llm:smollm2"}' in text
    # Tokens without an agent label (per-agent usage is `aios ps`'s).
    assert 'aios_tokens_total{type="completion"}' in text and "ps-agent" not in text
    # Every service serves its own metrics, on a port `aios up` prints.
    printed = re.findall(r"metrics +(http://\S+/metrics) \((\w+)\)", "".join(stack["output"]))
    assert sorted(name for _, name in printed) == ["access", "kernel", "llm_core", "memory", "storage"]
    for url, name in printed:
        with urllib.request.urlopen(url, timeout=10) as resp:
            page = resp.read().decode()
        assert "aios_build_info" in page and f'service="{name}"' in page, url


def test_a_killed_child_heals_without_a_person(stack, tmp_path):
    """kill -9 one child at a time: `aios up` starts it again on its port,
    the rest keep serving, and `aios status` shows the restart."""
    from services.cli.supervisor import read_state

    data, kernel = stack["data"], f"127.0.0.1:{stack['ports']['scheduler']}"
    env = {**os.environ, "AIOS_KERNEL": kernel, "AIOS_DATA_DIR": str(data)}
    env.pop("AIOS_TOKEN", None)

    def aios(*args, timeout=120):
        return subprocess.run([str(BIN / "aios"), *args], capture_output=True, text=True, timeout=timeout, env=env)

    for name in ("memory", "s3", "llm_server"):
        before = read_state(data)["children"][name]
        os.kill(before["pid"], signal.SIGKILL)
        end, child = time.monotonic() + 120, before
        while time.monotonic() < end:
            child = read_state(data)["children"][name]
            if child["pid"] != before["pid"] and child["state"] == "running":
                break
            time.sleep(0.2)
        assert child["state"] == "running" and child["restarts"] == before["restarts"] + 1, child
        assert child["last_exit"] == -9
        # Everything serves again (the restarted service's health included).
        end = time.monotonic() + 60
        while (status := aios("status")).returncode != 0 and time.monotonic() < end:
            time.sleep(0.2)
        assert status.returncode == 0, status.stdout + status.stderr
    assert stack["proc"].poll() is None
    for name in ("memory", "s3", "llm_server"):
        row = next(line for line in status.stdout.splitlines() if line.startswith(name))
        assert "1 (last exit -9)" in row, status.stdout
    # And each does its work again.
    assert aios("memory", "add", "healed after a restart").returncode == 0
    note = tmp_path / "note.txt"
    note.write_text("written after S3 came back")
    put = aios("files", "put", str(note), "healed/note.txt")
    assert put.returncode == 0, put.stderr
    chat = aios("chat", "Say hello", "--max-tokens", "8")
    assert chat.returncode == 0 and chat.stdout.strip(), chat.stderr


def test_stop_leaves_no_process_behind(stack):
    proc = stack["proc"]
    children = _processes_with(str(stack["data"]))
    assert len(children) >= 5  # the five services (and the LLM server)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    end = time.monotonic() + 30
    while time.monotonic() < end and any(Path(f"/proc/{p}").exists() for p in children):
        time.sleep(0.1)
    left = [p for p in children if Path(f"/proc/{p}").exists()
            and Path(f"/proc/{p}/status").read_text().find("State:\tZ") < 0]
    assert not left, f"processes left behind: {left}"
