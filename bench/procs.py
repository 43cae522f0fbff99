"""Child processes for benchmarks: the serving simulator, llm_core, the kernel,
memory, storage and SeaweedFS, each on a free loopback port, stopped by PID;
CPU seconds and memory of each read from /proc."""

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
# Each child's stderr goes here (one file per name, overwritten per start).
LOG_DIR = ROOT / "bench" / "results" / "logs"


def _proc_status(pid: int, field: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds_of(pid: int) -> float:
    """User + system CPU time of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    address: str
    stopper: object = None  # an object with stop() that owns the process, if not us

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far."""
        return cpu_seconds_of(self.proc.pid)

    def rss_mib(self) -> float:
        return _proc_status(self.proc.pid, "VmRSS")

    def peak_rss_mib(self) -> float:
        """Peak resident memory since the process started (VmHWM)."""
        return _proc_status(self.proc.pid, "VmHWM")

    def stop(self) -> None:
        if self.stopper is not None:
            self.stopper.stop()
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _env(extra: dict[str, str], root: Path = ROOT) -> dict[str, str]:
    # Another checkout (an earlier commit, for a before/after run) brings its
    # own stubs too.
    path = str(ROOT) if root == ROOT else os.pathsep.join([str(root), str(root / "sdk_py")])
    return {**os.environ, "PYTHONPATH": path, "AIOS_LOG_LEVEL": "WARNING", **extra}


def _log(name: str):
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    return open(LOG_DIR / f"{name}.log", "wb")


def start_simulator(*args: str, timeout: float = 30) -> tuple[Child, list[str]]:
    """The simulator with CLI knobs; returns the child and its base URLs."""
    with _log("simulator") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bench.simulator", "--port", "0", *args],
                                stdout=subprocess.PIPE, stderr=log, text=True, env=_env({}), cwd=ROOT)
    urls, end = [], time.monotonic() + timeout
    replicas = int(args[args.index("--replicas") + 1]) if "--replicas" in args else 1
    while len(urls) < replicas:
        line = proc.stdout.readline()
        if not line or time.monotonic() > end:
            proc.kill()
            raise RuntimeError("simulator did not start (see bench/results/logs/simulator.log)")
        if line.startswith("LISTENING "):
            urls.append(line.split()[1])
    return Child("simulator", proc, urls[0]), urls


def start_relay(upstream: str) -> Child:
    """A bare gRPC hop in front of `upstream` (bench/grpc_relay.py); its
    first line, read here, says where it listens (EOF if it died)."""
    with _log("grpc_relay") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bench.grpc_relay", upstream], stdout=subprocess.PIPE,
                                stderr=log, text=True, env=_env({}), cwd=ROOT)
    line = proc.stdout.readline()
    if not line.startswith("LISTENING "):
        proc.kill()
        raise RuntimeError("the gRPC relay did not start (see bench/results/logs/grpc_relay.log)")
    return Child("grpc_relay", proc, line.split()[1])


def start_service(module: str, prefix: str, env: dict[str, str], *, name: str | None = None,
                  python_args: tuple[str, ...] = (), entry: str = "", root: Path = ROOT) -> Child:
    """`python [python_args] -m services.<module>` (or -m entry) on a free
    port, waited for until its health check serves; `root` runs the code of
    another checkout."""
    port = free_port()
    name = name or module
    with _log(name) as log:
        proc = subprocess.Popen([sys.executable, *python_args, "-m", entry or f"services.{module}"], cwd=root,
                                env=_env({f"{prefix}HOST": "127.0.0.1", f"{prefix}PORT": str(port), **env}, root),
                                stdout=subprocess.DEVNULL, stderr=log)
    address = f"127.0.0.1:{port}"
    try:
        wait_healthy(address, timeout=90, proc=proc)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        raise
    return Child(name, proc, address)


# NumPy's BLAS threads spin while they wait; on two shared cores the local
# embedder does better on one thread than fighting every other process.
ONE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def start_llm_core(endpoints: list[dict], name: str = "llm_core", root: Path = ROOT,
                   settings: dict | None = None) -> Child:
    """llm_core over these endpoints; settings become AIOS_LLM_<NAME> (routing, ...)."""
    env = {"AIOS_LLM_ENDPOINTS": json.dumps(endpoints), **ONE_BLAS_THREAD,
           **{f"AIOS_LLM_{k.upper()}": str(v) for k, v in (settings or {}).items()}}
    return start_service("llm_core", "AIOS_LLM_", env, name=name, root=root)


def start_kernel(llm_addr: str, *, memory_addr: str = "", storage_addr: str = "",
                 cprofile_out: str = "", variant: str = "", root: Path = ROOT, **settings) -> Child:
    """The kernel; settings become AIOS_KERNEL_<NAME> (policy, http_port, ...).
    cprofile_out runs it under cProfile, written there when it stops;
    variant runs it with a proposed change (bench/kernel_variant.py)."""
    # Development authentication (the token is the agent's name) unless told
    # otherwise: the benchmark measures scheduling, not the access service.
    settings.setdefault("auth", "dev")
    env = {"AIOS_LLM_ADDR": llm_addr}
    if memory_addr:
        env["AIOS_MEMORY_ADDR"] = memory_addr
    if storage_addr:
        env["AIOS_STORAGE_ADDR"] = storage_addr
    env.update({f"AIOS_KERNEL_{k.upper()}": str(v) for k, v in settings.items()})
    if variant:
        env["AIOS_BENCH_KERNEL_VARIANT"] = variant
    python_args = ("-m", "cProfile", "-o", cprofile_out) if cprofile_out else ()
    return start_service("scheduler", "AIOS_KERNEL_", env, name="kernel", python_args=python_args,
                         entry="bench.kernel_variant" if variant else "", root=root)


def start_memory(llm_addr: str, data_dir: Path) -> Child:
    return start_service("memory", "AIOS_MEMORY_", {
        "AIOS_LLM_ADDR": llm_addr, "AIOS_MEMORY_QDRANT_PATH": str(data_dir / "memory-qdrant")})


def start_seaweed(data_dir: Path) -> Child:
    from services.local.seaweed import start_seaweed as start

    sp = start(data_dir / "s3", "127.0.0.1")
    child = Child("seaweedfs", sp.process, sp.endpoint, stopper=_SeaweedStopper(sp))
    child.s3 = sp  # type: ignore[attr-defined]
    return child


class _SeaweedStopper:
    def __init__(self, sp) -> None:
        self.sp = sp

    def stop(self) -> None:
        self.sp.stop(timeout=5)


def start_storage(llm_addr: str, seaweed: Child, data_dir: Path) -> Child:
    s3 = seaweed.s3  # type: ignore[attr-defined]
    return start_service("storage", "AIOS_STORAGE_", {
        "AIOS_LLM_ADDR": llm_addr,
        "AIOS_STORAGE_S3_ENDPOINT": s3.endpoint,
        "AIOS_STORAGE_S3_ACCESS_KEY": s3.access_key,
        "AIOS_STORAGE_S3_SECRET_KEY": s3.secret_key,
        "AIOS_STORAGE_QDRANT_PATH": str(data_dir / "storage-index"),
    })
