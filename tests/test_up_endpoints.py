"""`aios up` over a model server given by --llm-endpoints that is not up yet:
the stack starts, `aios status` says llm_core is not ready, and once the
model server listens everything serves and calls go through, untouched."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import threading
import time

from bench.simulator.engine import EngineConfig
from bench.simulator.server import SimulatorServer
from services.cli.stack import SERVICES, free_port
from services.cli.main import port_flags
from tests.test_e2e_stack import BIN


async def test_up_waits_for_no_model_server_and_serves_once_one_answers(tmp_path):
    ports = {svc: free_port() for svc in SERVICES}
    model_port = free_port()
    endpoints = [{"name": "later", "model": "sim", "base_url": f"http://127.0.0.1:{model_port}/v1",
                  "max_concurrency": 4}]
    proc = subprocess.Popen(
        [str(BIN / "aios"), "up", "--data", str(tmp_path), *port_flags(ports), "--metrics-port", "-1",
         "--http-port", "-1", "--llm-endpoints", json.dumps(endpoints)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    env = {**os.environ, "AIOS_KERNEL": f"127.0.0.1:{ports['scheduler']}", "AIOS_DATA_DIR": str(tmp_path)}
    env.pop("AIOS_TOKEN", None)

    async def aios(*args):
        # In a thread: the model server below runs on this event loop.
        return await asyncio.to_thread(subprocess.run, [str(BIN / "aios"), *args], capture_output=True,
                                       text=True, timeout=120, env=env)

    sim = SimulatorServer(EngineConfig(time_scale=0.01), port=model_port)
    try:
        output, end = [], time.monotonic() + 180
        while not (output and output[-1].startswith("ready")):
            assert time.monotonic() < end and proc.poll() is None, "".join(output)
            try:
                output.append(await asyncio.to_thread(lines.get, True, 1))
            except queue.Empty:
                pass
        status = await aios("status")
        assert status.returncode == 1
        row = next(line for line in status.stdout.splitlines() if line.startswith("llm_core"))
        assert "NOT_SERVING" in row, status.stdout
        await sim.start()
        end = time.monotonic() + 60
        while (status := await aios("status")).returncode != 0:
            assert time.monotonic() < end, status.stdout + status.stderr
            await asyncio.sleep(0.2)
        chat = await aios("chat", "Say hello", "--max-tokens", "8")
        assert chat.returncode == 0 and chat.stdout.strip(), chat.stderr
    finally:
        await sim.stop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=90)
