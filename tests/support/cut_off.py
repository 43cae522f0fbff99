"""A client process killed in the middle of a client stream.

gRPC gives a server no way to tell a client that finished its stream from
one that died half way: when the client's connection drops, the server's
request iterator simply ends. `cut_off` produces exactly that fault with
real parts: a separate process sends the first messages of a stream, then
gets SIGKILL before it sends the rest.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

_SCRIPT = r"""
import sys, time, grpc
target, method, token, *parts = sys.argv[1:]
call = grpc.insecure_channel(target).stream_unary(method)  # raw bytes both ways

def messages():
    for part in parts:
        yield bytes.fromhex(part)
    # grpc asks for the next message once the ones before are sent.
    print("sent", flush=True)
    time.sleep(3600)

call(messages(), metadata=[("authorization", "Bearer " + token)] if token else None, timeout=3600)
"""


async def cut_off(target: str, method: str, messages: list, token: str = "") -> None:
    """Send `messages` (protobuf messages) as the start of a `method` stream
    to `target` from another process, then kill that process with SIGKILL."""
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT, target, method, token,
                             *(m.SerializeToString().hex() for m in messages)],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        assert line.strip() == "sent", f"the client process said {line!r}"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait)
        proc.stdout.close()


def handled(server, method: str) -> float:
    """How many `method` calls a RunningServer finished, whatever their status
    (its aios_grpc_server_handled counter)."""
    total = 0.0
    for metric in server.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "aios_grpc_server_handled_total" and sample.labels.get("method") == method:
                total += sample.value
    return total
