"""Child processes for benchmarks: the serving simulator, llm_core and the
kernel, each on a free loopback port, stopped by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from services.cli.stack import free_port, wait_healthy

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    address: str

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AIOS_LOG_LEVEL": "WARNING", **extra}
    return env


def start_simulator(*args: str, timeout: float = 30) -> tuple[Child, list[str]]:
    """The simulator with CLI knobs; returns the child and its base URLs."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.simulator", "--port", "0", *args],
                            stdout=subprocess.PIPE, text=True, env=_env({}), cwd=ROOT)
    urls, end = [], time.monotonic() + timeout
    replicas = int(args[args.index("--replicas") + 1]) if "--replicas" in args else 1
    while len(urls) < replicas:
        line = proc.stdout.readline()
        if not line or time.monotonic() > end:
            proc.kill()
            raise RuntimeError("simulator did not start")
        if line.startswith("LISTENING "):
            urls.append(line.split()[1])
    return Child("simulator", proc, urls[0]), urls


def start_service(module: str, prefix: str, env: dict[str, str]) -> Child:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", f"services.{module}"], cwd=ROOT,
                            env=_env({f"{prefix}HOST": "127.0.0.1", f"{prefix}PORT": str(port), **env}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    wait_healthy(address, timeout=60, proc=proc)
    return Child(module, proc, address)


def start_llm_core(endpoints: list[dict]) -> Child:
    return start_service("llm_core", "AIOS_LLM_", {"AIOS_LLM_ENDPOINTS": json.dumps(endpoints)})


def start_kernel(llm_addr: str, **settings: str) -> Child:
    env = {"AIOS_LLM_ADDR": llm_addr}
    env.update({f"AIOS_KERNEL_{k.upper()}": str(v) for k, v in settings.items()})
    return start_service("scheduler", "AIOS_KERNEL_", env)
