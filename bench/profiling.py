"""Where the kernel spends its time: py-spy sampling its process from outside
(`pip install py-spy`; nothing changes inside the kernel), or, without
py-spy, the kernel run under `python -m cProfile` (bench/procs.py)."""

from __future__ import annotations

import pstats
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

RATE_HZ = 100


def _pyspy() -> str | None:
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


def pyspy_available() -> bool:
    return _pyspy() is not None


class PySpy:
    """`py-spy record --format raw` on a PID until stop()."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [_pyspy(), "record", "--pid", str(pid), "--rate", str(RATE_HZ), "--format", "raw",
             "--output", str(out), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._stopped = False

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def summary(self) -> dict:
        if not self.out.exists():
            err = self.proc.stderr.read().decode(errors="replace")[-500:] if self.proc.stderr else ""
            return {"tool": "py-spy", "error": f"no output: {err}"}
        return summarize_raw(self.out.read_text())


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::(?P<line>\d+))?\)$")


def _frame(text: str) -> tuple[str, str]:
    m = _FRAME.match(text.strip())
    if not m:
        return text.strip(), ""
    return m.group("func"), m.group("file")


def area(path: str) -> str:
    """A file's part of the system, for grouping samples."""
    p = path.replace("\\", "/")
    p = "/" + p.lstrip("/")
    for key, name in (("/services/scheduler/", "kernel: services/scheduler"),
                      ("/services/runtime/", "kernel: services/runtime"),
                      ("/aios/", "generated stubs / SDK"),
                      ("grpc/_cython", "grpc (Cython)"), ("/grpc/", "grpc (Python layer)"),
                      ("/google/protobuf/", "protobuf"), ("/asyncio/events.py", "asyncio callbacks (native code they call)"),
                      ("/asyncio/", "asyncio"), ("/selectors.py", "event loop: epoll"),
                      ("/threading.py", "other threads"),
                      ("/structlog/", "structlog"), ("/logging/", "logging"),
                      ("/prometheus_client/", "prometheus_client"),
                      ("/aiohttp/", "aiohttp"), ("/uuid.py", "uuid"), ("/dataclasses.py", "dataclasses")):
        if key in p:
            return name
    return "other: " + p.rsplit("/", 1)[-1] if p else "other"


def short(func: str, path: str) -> str:
    p = path.replace("\\", "/")
    for marker in ("/services/", "/site-packages/", "/lib/python3"):
        if marker in p:
            p = p.split(marker, 1)[1]
            break
    return f"{func} ({p})"


def summarize_raw(text: str, top: int = 25) -> dict:
    """Shares of the kernel's busy samples: by area (leaf frame), by function
    (self, the leaf) and inclusive (anywhere on the stack)."""
    total = 0
    leaf_area: Counter = Counter()
    leaf_func: Counter = Counter()
    inclusive: Counter = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";") if f]
        # py-spy prefixes the thread ("process 1:"/"thread (0x..)"); keep code frames.
        frames = [f for f in frames if f[1]]
        if not frames:
            continue
        total += n
        func, path = frames[-1]
        leaf_area[area(path)] += n
        leaf_func[short(func, path)] += n
        for key in {short(f, p) for f, p in frames}:
            inclusive[key] += n
    if not total:
        return {"tool": "py-spy", "samples": 0}

    def shares(counter: Counter, k: int) -> list[list]:
        return [[name, round(n / total, 4)] for name, n in counter.most_common(k)]

    kernel_inclusive = Counter({k: v for k, v in inclusive.items()
                                if ("scheduler/" in k or "runtime/" in k or "aios/" in k)
                                and "__main__" not in k and not k.startswith("run (")})
    return {"tool": "py-spy", "rate_hz": RATE_HZ, "samples": total,
            "by_area_self": shares(leaf_area, 20), "top_self": shares(leaf_func, top),
            "top_inclusive_kernel_code": shares(kernel_inclusive, top),
            "top_inclusive": shares(inclusive, top)}


def cprofile_summary(path: str, top: int = 25) -> dict:
    try:
        st = pstats.Stats(path)
    except (OSError, TypeError, EOFError) as exc:
        return {"tool": "cProfile", "error": str(exc)}
    total = st.total_tt or 1e-9
    rows = []
    for (file, line, func), (cc, nc, tt, ct, callers) in st.stats.items():
        rows.append((short(func, file), tt, ct))
    by_self = sorted(rows, key=lambda r: r[1], reverse=True)[:top]
    by_cum = sorted((r for r in rows if "scheduler/" in r[0] or "runtime/" in r[0]),
                    key=lambda r: r[2], reverse=True)[:top]
    return {"tool": "cProfile", "total_s": round(total, 3),
            "top_self": [[n, round(t / total, 4)] for n, t, _ in by_self],
            "top_inclusive_kernel_code": [[n, round(c / total, 4)] for n, _, c in by_cum]}
