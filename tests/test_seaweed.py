"""Tests for services.local.seaweed: a local SeaweedFS S3 stack.

Each test starts real `weed server` processes on free loopback ports under
pytest's tmp_path.  Start-up takes ~3.5 s; a graceful stop ~15 s (weed's own
filer drain time), so only the restart and CLI tests stop gracefully.
"""

from __future__ import annotations

import io
import json
import os
import queue
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from minio import Minio
from minio.error import S3Error
from minio.versioningconfig import ENABLED, VersioningConfig

from services.local.seaweed import (
    CREDENTIALS_FILE,
    SeaweedError,
    SeaweedProcess,
    start_seaweed,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def stacks():
    started: list[SeaweedProcess] = []
    yield started
    for sp in started:
        sp.stop(graceful=False)


def _listening_sockets(pid: int) -> set[tuple[str, int]]:
    """(local address hex, port) of every TCP socket ``pid`` listens on."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            next(fh)
            for line in fh:
                cols = line.split()
                local, state, inode = cols[1], cols[3], cols[9]
                if state == "0A" and inode in inodes:  # 0A = LISTEN
                    addr, port = local.rsplit(":", 1)
                    found.add((addr, int(port, 16)))
    return found


def _put(client: Minio, bucket: str, key: str, data: bytes):
    return client.put_object(bucket, key, io.BytesIO(data), len(data))


def test_versioning_survives_restart(tmp_path, stacks):
    data = tmp_path / "seaweed"
    sp = start_seaweed(data)
    stacks.append(sp)
    print(f"first start-up took {sp.startup_seconds:.2f}s")

    # Credentials generated, private, and required by the S3 API.
    cred_path = data / CREDENTIALS_FILE
    assert stat.S_IMODE(cred_path.stat().st_mode) == 0o600
    creds = json.loads(cred_path.read_text())
    assert (creds["access_key"], creds["secret_key"]) == (sp.access_key, sp.secret_key)
    assert sp.endpoint.startswith("127.0.0.1:")

    client = sp.client()
    client.make_bucket("agent-memory")
    client.set_bucket_versioning("agent-memory", VersioningConfig(ENABLED))
    assert client.get_bucket_versioning("agent-memory").status == ENABLED

    version_ids = []
    for i in range(3):
        result = _put(client, "agent-memory", "notes/k1", f"version-{i}".encode())
        assert result.version_id
        version_ids.append(result.version_id)
    assert len(set(version_ids)) == 3

    listed = [
        o.version_id
        for o in client.list_objects("agent-memory", prefix="notes/k1", include_version=True)
    ]
    assert sorted(listed) == sorted(version_ids)
    assert client.get_object("agent-memory", "notes/k1").read() == b"version-2"
    old = client.get_object("agent-memory", "notes/k1", version_id=version_ids[0])
    assert old.read() == b"version-0"

    anonymous = Minio(sp.endpoint, secure=False, region="us-east-1")
    with pytest.raises(S3Error) as err:
        anonymous.get_object("agent-memory", "notes/k1")
    assert err.value.code == "AccessDenied"
    wrong = Minio(
        sp.endpoint, access_key=sp.access_key, secret_key="x" * 40, secure=False,
        region="us-east-1",
    )
    with pytest.raises(S3Error) as err:
        wrong.list_buckets()
    assert err.value.code == "SignatureDoesNotMatch"

    t0 = time.monotonic()
    assert sp.stop() == 0
    print(f"graceful stop took {time.monotonic() - t0:.2f}s")
    assert not sp.running()

    sp2 = start_seaweed(data)
    stacks.append(sp2)
    print(f"restart start-up took {sp2.startup_seconds:.2f}s")
    assert (sp2.access_key, sp2.secret_key) == (sp.access_key, sp.secret_key)
    client = sp2.client()
    assert [b.name for b in client.list_buckets()] == ["agent-memory"]
    assert client.get_bucket_versioning("agent-memory").status == ENABLED
    listed = [
        (o.version_id, o.is_latest)
        for o in client.list_objects("agent-memory", prefix="notes/k1", include_version=True)
    ]
    assert sorted(v for v, _ in listed) == sorted(version_ids)
    latest = [v for v, is_latest in listed if str(is_latest).lower() == "true"]
    assert latest == [version_ids[2]]
    for i, vid in enumerate(version_ids):
        assert client.get_object("agent-memory", "notes/k1", version_id=vid).read() == (
            f"version-{i}".encode()
        )
    # Still writable after the restart.
    assert _put(client, "agent-memory", "notes/k1", b"version-3").version_id


def test_two_stacks_in_parallel_use_only_their_own_loopback_ports(tmp_path, stacks):
    results: dict[int, SeaweedProcess | BaseException] = {}

    def run(i: int) -> None:
        try:
            results[i] = start_seaweed(tmp_path / f"stack{i}")
        except BaseException as exc:  # reported below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for i in range(2):
        assert not isinstance(results.get(i), BaseException), results.get(i)
    a, b = results[0], results[1]
    stacks.extend([a, b])

    assert set(a.ports.values()).isdisjoint(b.ports.values())
    assert a.access_key != b.access_key
    loopback = "0100007F"  # 127.0.0.1 as /proc/net/tcp prints it
    for sp in (a, b):
        assert len(set(sp.ports.values())) == 8
        listening = _listening_sockets(sp.pid)
        # weed listens on exactly the ports we chose (no default 8181/9101/...),
        # and on loopback only.
        assert {port for _, port in listening} == set(sp.ports.values())
        assert {addr for addr, _ in listening} == {loopback}

    a.client().make_bucket("only-in-a")
    _put(a.client(), "only-in-a", "k", b"a")
    assert [x.name for x in b.client().list_buckets()] == []
    with pytest.raises(S3Error):
        Minio(
            b.endpoint, access_key=a.access_key, secret_key=a.secret_key, secure=False,
            region="us-east-1",
        ).list_buckets()

    for sp in (a, b):
        sp.stop(graceful=False)
        assert not sp.running()
        # weed hard-codes gRPC unix sockets in /tmp; stop() removes ours.
        for svc, key in (("master", "master_grpc"), ("volume", "volume_grpc"),
                         ("filer", "filer_grpc"), ("s3", "s3_grpc")):
            assert not os.path.exists(f"/tmp/seaweedfs-{svc}-grpc-{sp.ports[key]}.sock")


def test_busy_s3_port_is_reported(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(SeaweedError, match="not free"):
            start_seaweed(tmp_path / "busy", s3_port=busy.getsockname()[1])


def test_cli_prints_listening_and_stops_on_sigterm(tmp_path):
    data = tmp_path / "cli"
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.local.seaweed", "--data", str(data)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True
    ).start()
    try:
        line = lines.get(timeout=90)
        assert line.startswith("LISTENING s3 http://127.0.0.1:"), line
        endpoint = line.split("http://", 1)[1].strip()
        creds = json.loads((data / CREDENTIALS_FILE).read_text())
        client = Minio(
            endpoint, access_key=creds["access_key"], secret_key=creds["secret_key"],
            secure=False, region="us-east-1",
        )
        assert client.list_buckets() == []

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
        # weed itself is gone: the S3 port no longer accepts connections.
        host, port = endpoint.rsplit(":", 1)
        with pytest.raises(OSError):
            socket.create_connection((host, int(port)), timeout=2).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
