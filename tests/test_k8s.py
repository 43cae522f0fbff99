"""The Kubernetes manifests (deploy/k8s): every overlay renders with
`kubectl kustomize`, every document validates strictly against the
Kubernetes version deploy/k8s/README.md names, and the deployment keeps its
invariants (probes, security context, no literal secrets, Services that select
pods, one image, ports that match what the services listen on, resources,
NetworkPolicies, single-writer volumes, ServiceMonitors that find their
Services, and the scale-out: the kernel and access on PostgreSQL with no state
in their pods, replica identities, llm_core's replica count and routing,
budgets and spreading for every replicated workload). overlays/test adds every
component (deploy/k8s/components) to prod;
the TLS component, which moves the probes, is rendered on top of it here, in a
kustomization of its own (tls_rendering), as an operator's overlay adds it.
Custom resources (ServiceMonitor, cert-manager's Certificate and Issuer) have
no schema in kubernetes-validate: the invariants check them instead
(check_service_monitors, check_certificates).

`violations(docs)` checks a rendering given as a list of documents, so the
tests can break a copy and see the checker report it. From the shell:

    kubectl kustomize deploy/k8s/overlays/prod | .venv/bin/python tests/test_k8s.py -
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("base", "overlays/dev", "overlays/prod", "overlays/test")
NAMESPACE = "aios"

# The version deploy/k8s/README.md names. The newest schemas of the installed
# kubernetes-validate are checked too, so an API that a later release removes
# shows up before a cluster upgrade does.
KUBERNETES_VERSION = "1.32.0"

# Module under services/ -> the env prefix of its HOST/PORT.
SERVICES = {"scheduler": "AIOS_KERNEL_", "llm_core": "AIOS_LLM_", "memory": "AIOS_MEMORY_",
            "storage": "AIOS_STORAGE_", "access": "AIOS_ACCESS_"}
# The kernel's address variables -> the service they must lead to.
ADDRESSES = {"AIOS_LLM_ADDR": "llm_core", "AIOS_MEMORY_ADDR": "memory",
             "AIOS_STORAGE_ADDR": "storage", "AIOS_ACCESS_ADDR": "access"}
# Who may open connections to whom (pods by app.kubernetes.io/name,
# "namespace:NAME" for any pod of a namespace; "*" = any client). Every
# workload of a rendering must be listed.
MONITORING = "namespace:monitoring"
EXPECTED_INGRESS = {
    "kernel": {"*", "kernel", MONITORING},
    "llm-core": {"kernel", "memory", "storage", MONITORING},
    "memory": {"kernel", MONITORING},
    "storage": {"kernel", MONITORING},
    "access": {"kernel", MONITORING},
    "postgres": {"kernel", "access"},
    "qdrant": {"memory", "storage"},
    "minio": {"storage"},
    "model-server": {"llm-core"},
}
# Connections that a rule must admit by naming the source's pods, on the
# target's named port (source, target, port), where both run: "*" rules do
# not count, so narrowing who else may connect cannot cut these.
REQUIRED_PATHS = (
    ("kernel", "kernel", "grpc"),  # a replica forwards a call to its agent's owner
    ("kernel", "postgres", "postgres"),
    ("access", "postgres", "postgres"),
)
# Secrets the manifests may reference; the README tells operators to create each.
KNOWN_SECRETS = {"aios-s3-credentials", "aios-service-tokens", "aios-llm-api-key",
                 "aios-postgres-credentials", "aios-access-admin-token"}
DEV_MARKER = "dev-only"
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL")
WORKLOADS = ("Deployment", "StatefulSet")
NAME_LABEL = "app.kubernetes.io/name"
NAMESPACE_LABEL = "kubernetes.io/metadata.name"
# Kinds of CRDs: not in kubernetes-validate's schemas; the invariants check them.
CUSTOM_KINDS = {"ServiceMonitor": "monitoring.coreos.com/v1", "Certificate": "cert-manager.io/v1",
                "Issuer": "cert-manager.io/v1", "ClusterIssuer": "cert-manager.io/v1"}
# The scale-out's PostgreSQL URLs (container env, they carry the password) ->
# the aios service that reads each.
DATABASE_URLS = {"AIOS_KERNEL_JOURNAL": "scheduler", "AIOS_ACCESS_DATABASE_URL": "access"}
HOSTNAME = "kubernetes.io/hostname"
VAR_REF = re.compile(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


# --------------------------------------------------------------------------- rendering


def kustomize_command() -> list[str]:
    """`kubectl kustomize`, or a standalone `kustomize build` where kubectl is absent."""
    kubectl = shutil.which("kubectl") or "/usr/bin/kubectl"
    if os.access(kubectl, os.X_OK):
        return [kubectl, "kustomize"]
    kustomize = os.environ.get("KUSTOMIZE") or shutil.which("kustomize")
    if kustomize:
        return [kustomize, "build"]
    pytest.fail("neither kubectl (for `kubectl kustomize`) nor kustomize is installed: "
                "the manifests cannot be rendered")


@functools.cache
def _render_text(overlay: str) -> str:
    cmd = [*kustomize_command(), str(K8S / overlay)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return proc.stdout


def render(overlay: str) -> list[dict]:
    """The documents of an overlay (a fresh copy each call: tests may mutate it)."""
    return [d for d in yaml.safe_load_all(_render_text(overlay)) if d]


def kind_name(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def of_kind(docs: list[dict], *kinds: str) -> list[dict]:
    return [d for d in docs if d.get("kind") in kinds]


def find(docs: list[dict], kind: str, name: str) -> dict:
    for d in docs:
        if d.get("kind") == kind and d["metadata"]["name"] == name:
            return d
    raise KeyError(f"{kind}/{name} not in the rendering")


def pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"].get("labels", {})


def containers(workload: dict) -> list[dict]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def aios_module(container: dict) -> str | None:
    """The services.<module> an aios container runs (None for other images)."""
    cmd = [*container.get("command", []), *container.get("args", [])]
    if len(cmd) >= 3 and cmd[0] == "python" and cmd[1] == "-m" and cmd[2].startswith("services."):
        return cmd[2].split(".", 1)[1]
    return None


def aios_containers(docs: list[dict]):
    for w in of_kind(docs, *WORKLOADS):
        for c in containers(w):
            module = aios_module(c)
            if module is not None:
                yield w, c, module


def named_port(container: dict, name: str) -> int | None:
    for p in container.get("ports", []):
        if p.get("name") == name:
            return p["containerPort"]
    return None


def configmap(docs: list[dict], name: str) -> dict:
    """A ConfigMap by its name as written in the sources (generated ones carry a hash suffix)."""
    for d in of_kind(docs, "ConfigMap"):
        if re.fullmatch(rf"{re.escape(name)}(-[a-z0-9]{{10}})?", d["metadata"]["name"]):
            return d
    raise KeyError(f"ConfigMap {name} not in the rendering")


def config(docs: list[dict]) -> dict[str, str]:
    return configmap(docs, "aios-config").get("data", {})


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def matches(selector: dict, labels: dict) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against labels; {} matches all."""
    ops = {"In": lambda k, vs: labels.get(k) in vs, "NotIn": lambda k, vs: labels.get(k) not in vs,
           "Exists": lambda k, _: k in labels, "DoesNotExist": lambda k, _: k not in labels}
    return (all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
            and all(ops[e["operator"]](e["key"], e.get("values", [])) for e in selector.get("matchExpressions", [])))


def default_port(module: str) -> int:
    """DEFAULT_PORT as the service's own source declares it."""
    for name in ("config.py", "app.py"):
        path = REPO / "services" / module / name
        if path.exists():
            m = re.search(r"^DEFAULT_PORT\s*=\s*(\d+)", path.read_text(), re.M)
            if m:
                return int(m.group(1))
    raise AssertionError(f"no DEFAULT_PORT in services/{module}/config.py or app.py")


def dockerfile_uid() -> int:
    users = re.findall(r"^USER\s+(\d+)", (REPO / "Dockerfile").read_text(), re.M)
    assert users, "the Dockerfile sets no numeric USER"
    return int(users[-1])


def _quantity(value) -> float:
    """A CPU or memory quantity as a number (cores or bytes)."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
             "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


# --------------------------------------------------------------------------- invariants


def check_namespace(docs):
    for d in docs:
        if d["kind"] == "Namespace":
            continue
        if d["metadata"].get("namespace") != NAMESPACE:
            yield f"{kind_name(d)} is not in namespace {NAMESPACE}"
    ns = [d for d in of_kind(docs, "Namespace") if d["metadata"]["name"] == NAMESPACE]
    if not ns or ns[0]["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") != "restricted":
        yield f"Namespace {NAMESPACE} does not enforce the restricted Pod Security Standard"


def check_probes(docs):
    for w in of_kind(docs, *WORKLOADS):
        for c in w["spec"]["template"]["spec"]["containers"]:
            where = f"{kind_name(w)} container {c['name']}"
            grpc_port = named_port(c, "grpc") if aios_module(c) in SERVICES else None
            if aios_module(c) in SERVICES and grpc_port is None:
                yield f"{where}: no container port named grpc"
            # The plain health-only port where there is one (with TLS, see check_tls).
            health_port = named_port(c, "health") if grpc_port is not None else None
            probe_port, port_name = (health_port, "health") if health_port is not None else (grpc_port, "grpc")
            for probe in ("readinessProbe", "livenessProbe"):
                p = c.get(probe)
                if not p:
                    yield f"{where}: no {probe}"
                elif probe_port is not None and p.get("grpc", {}).get("port") != probe_port:
                    yield (f"{where}: {probe} is not a grpc probe on port {probe_port} "
                           f"(the port named {port_name}), got {p}")
                elif "httpGet" in p:
                    port = p["httpGet"]["port"]
                    if not any(port in (q.get("name"), q["containerPort"]) for q in c.get("ports", [])):
                        yield f"{where}: {probe} targets port {port!r}, which the container does not expose"


def check_security(docs):
    uid = dockerfile_uid()
    accounts = {d["metadata"]["name"] for d in of_kind(docs, "ServiceAccount")}
    for w in of_kind(docs, *WORKLOADS):
        spec = w["spec"]["template"]["spec"]
        pod = spec.get("securityContext", {})
        where = kind_name(w)
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag):
                yield f"{where}: {flag} is set"
        if spec.get("automountServiceAccountToken") is not False:
            yield f"{where}: automountServiceAccountToken is not false (no service needs the API)"
        if spec.get("serviceAccountName") not in accounts:
            yield f"{where}: serviceAccountName {spec.get('serviceAccountName')!r} is not a ServiceAccount here"
        for c in containers(w):
            sc = c.get("securityContext", {})
            cw = f"{where} container {c['name']}"

            def effective(key, sc=sc, pod=pod):
                return sc.get(key, pod.get(key))

            if effective("runAsNonRoot") is not True:
                yield f"{cw}: runAsNonRoot is not true"
            if effective("runAsUser") in (None, 0):
                yield f"{cw}: runAsUser is unset or root"
            if aios_module(c) is not None and effective("runAsUser") != uid:
                yield f"{cw}: runAsUser {effective('runAsUser')} is not the image's user {uid} (Dockerfile)"
            if (effective("seccompProfile") or {}).get("type") != "RuntimeDefault":
                yield f"{cw}: seccompProfile is not RuntimeDefault"
            if sc.get("allowPrivilegeEscalation") is not False:
                yield f"{cw}: allowPrivilegeEscalation is not false"
            if sc.get("privileged"):
                yield f"{cw}: privileged"
            if sc.get("readOnlyRootFilesystem") is not True:
                yield f"{cw}: readOnlyRootFilesystem is not true"
            caps = sc.get("capabilities", {})
            if "ALL" not in caps.get("drop", []):
                yield f"{cw}: capabilities do not drop ALL"
            if caps.get("add"):
                yield f"{cw}: adds capabilities {caps['add']}"
            if aios_module(c) is not None and not any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", [])):
                yield f"{cw}: no writable /tmp on a read-only root filesystem"


def _env_is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name.upper())) and not name.upper().endswith(("_FILE", "_ENV"))


def check_secrets(docs, allow_dev_literals: bool = False):
    present = {}
    for s in of_kind(docs, "Secret"):
        values = {**{k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()},
                  **(s.get("stringData") or {})}
        present[s["metadata"]["name"]] = values
        if not values:
            continue
        if not allow_dev_literals:
            yield f"{kind_name(s)} has literal values in the repository (only references are allowed here)"
            continue
        for key, value in values.items():
            if DEV_MARKER not in value:
                yield f"{kind_name(s)} key {key}: a literal value without the {DEV_MARKER!r} marker"
    for cm in of_kind(docs, "ConfigMap"):
        for key in cm.get("data", {}):
            if _env_is_secret_name(key):
                yield f"{kind_name(cm)} holds {key}: credentials belong in a Secret"
        for key, value in cm.get("data", {}).items():
            if key.endswith(".json") and '"api_key"' in value:
                yield f"{kind_name(cm)} {key} holds an api_key: name an environment variable (api_key_env)"
    issued = {c["spec"].get("secretName") for c in of_kind(docs, "Certificate")}  # cert-manager writes these
    for w in of_kind(docs, *WORKLOADS):
        for c in containers(w):
            cw = f"{kind_name(w)} container {c['name']}"
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if _env_is_secret_name(e["name"]) and ref is None:
                    yield f"{cw}: env {e['name']} is not from a Secret (literal or ConfigMap value)"
                if ref is None:
                    continue
                if ref["name"] not in KNOWN_SECRETS:
                    yield f"{cw}: env {e['name']} references Secret {ref['name']}, which the README does not document"
                if present and not ref.get("optional") and ref["key"] not in present.get(ref["name"], {}):
                    yield f"{cw}: env {e['name']} needs key {ref['key']} of Secret {ref['name']}, not in the rendering"
            for src in c.get("envFrom", []):
                if "secretRef" in src:
                    yield f"{cw}: envFrom a whole Secret (reference single keys instead)"
        for v in w["spec"]["template"]["spec"].get("volumes", []):
            ref = v.get("secret")
            if ref is None or ref.get("secretName") in issued:
                continue
            where = f"{kind_name(w)} volume {v['name']}"
            if ref.get("secretName") not in KNOWN_SECRETS:
                yield f"{where}: mounts Secret {ref.get('secretName')}, which the README does not document"
            elif not ref.get("items"):
                yield f"{where}: name the keys it mounts (items), so the README's keys are all it needs"
            elif present and not ref.get("optional"):
                for item in ref["items"]:
                    if item["key"] not in present.get(ref["secretName"], {}):
                        yield f"{where}: needs key {item['key']} of Secret {ref['secretName']}, not in the rendering"


def check_services(docs):
    workloads = of_kind(docs, *WORKLOADS)
    for svc in of_kind(docs, "Service"):
        selector = svc["spec"].get("selector", {})
        matched = [w for w in workloads if selects(selector, pod_labels(w))]
        if not matched:
            yield f"{kind_name(svc)} selects no Deployment or StatefulSet pods (selector {selector})"
            continue
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for w in matched:
                if not any(target in (p.get("name"), p["containerPort"])
                           for c in containers(w) for p in c.get("ports", [])):
                    yield f"{kind_name(svc)} port {port.get('name')}: targetPort {target!r} is not a port of {kind_name(w)}"
            if port.get("name") == "grpc" and target != "grpc":
                yield f"{kind_name(svc)}: port grpc should target the container port named grpc"
    for w, _, module in aios_containers(docs):
        if module not in SERVICES:
            continue
        if not any(selects(s["spec"].get("selector", {}), pod_labels(w))
                   and any(p.get("name") == "grpc" for p in s["spec"]["ports"])
                   for s in of_kind(docs, "Service")):
            yield f"{kind_name(w)}: no Service with a port named grpc selects it"


def check_images(docs):
    images = {}
    for w, c, _ in aios_containers(docs):
        images.setdefault(c["image"], []).append(f"{kind_name(w)}/{c['name']}")
    if len(images) > 1:
        yield f"the aios containers run different images: {images}"
    for w in of_kind(docs, *WORKLOADS):
        for c in containers(w):
            image = c["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            if not tag or tag == "latest":
                yield f"{kind_name(w)} container {c['name']}: image {image} is not pinned to a version"


def check_ports(docs):
    cfg = config(docs)
    seen = set()
    for w, c, module in aios_containers(docs):
        if module not in SERVICES:
            continue
        seen.add(module)
        prefix = SERVICES[module]
        where = f"{kind_name(w)} container {c['name']}"
        port = named_port(c, "grpc")
        listens = default_port(module)
        if port != listens:
            yield f"{where}: container port grpc is {port}, services/{module} listens on {listens} (DEFAULT_PORT)"
        if cfg.get(f"{prefix}PORT") != str(listens):
            yield f"aios-config {prefix}PORT={cfg.get(f'{prefix}PORT')!r}, services/{module} listens on {listens}"
        if cfg.get(f"{prefix}HOST") != "0.0.0.0":
            yield f"aios-config {prefix}HOST={cfg.get(f'{prefix}HOST')!r}: in a pod it must be 0.0.0.0"
        served = [(f"{prefix}METRICS_PORT", "metrics")]
        if module == "scheduler":
            served.append(("AIOS_KERNEL_HTTP_PORT", "http"))
        for var, name in served:
            port = named_port(c, name)
            if port is None or cfg.get(var) != str(port):
                yield f"{where}: {var}={cfg.get(var)!r} is not the container port named {name} ({port})"
    for module in SERVICES:
        if module not in seen:
            yield f"no Deployment runs services.{module}"
    for var, module in ADDRESSES.items():
        target = resolve(docs, cfg.get(var, ""))
        if target is None or target[1] != module or target[2] != default_port(module):
            yield f"aios-config {var}={cfg.get(var)!r} does not lead to services.{module}'s grpc port"
    for key, value in cfg.items():
        for host_port in re.findall(r"(?:^|//)([a-z0-9][a-z0-9.-]*:\d+)", value):
            if _in_namespace(host_port.split(":")[0]) and resolve(docs, host_port) is None:
                yield f"aios-config {key}={value!r}: {host_port} is no Service port here"
    endpoints = json.loads(configmap(docs, "aios-llm-endpoints")["data"]["endpoints.json"])
    for e in endpoints:
        host_port = re.sub(r"^https?://([^/]+).*$", r"\1", e["base_url"])
        if ":" in host_port and _in_namespace(host_port.split(":")[0]) and resolve(docs, host_port) is None:
            yield f"aios-llm-endpoints {e['name']}: {e['base_url']} is no Service port here"


def _in_namespace(host: str) -> bool:
    return "." not in host or host.endswith((f".{NAMESPACE}", f".{NAMESPACE}.svc",
                                             f".{NAMESPACE}.svc.cluster.local"))


def resolve(docs, host_port: str):
    """(workload, aios module or None, container port) that host:port (or a gRPC
    target dns:///host:port) reaches, or None."""
    host, _, port = grpc_host_port(host_port).rpartition(":")
    if not host or not port.isdigit():
        return None
    name = host.split(".")[0]
    for svc in of_kind(docs, "Service"):
        if svc["metadata"]["name"] != name:
            continue
        for p in svc["spec"]["ports"]:
            if p["port"] != int(port):
                continue
            target = p.get("targetPort", p["port"])
            for w in of_kind(docs, *WORKLOADS):
                if not selects(svc["spec"].get("selector", {}), pod_labels(w)):
                    continue
                for c in containers(w):
                    for cp in c.get("ports", []):
                        if target in (cp.get("name"), cp["containerPort"]):
                            return w, aios_module(c), cp["containerPort"]
    return None


def grpc_host_port(target: str) -> str:
    """host:port of a gRPC target: `dns:///host:port`, `dns://AUTHORITY/host:port` or plain."""
    return re.sub(r"^dns:(//[^/]*)?/", "", target)


def service_of(docs, target: str) -> dict | None:
    """The Service a host:port or dns:///host:port in this namespace names."""
    host = grpc_host_port(target).rpartition(":")[0]
    if not host or not _in_namespace(host):
        return None
    return next((s for s in of_kind(docs, "Service") if s["metadata"]["name"] == host.split(".")[0]), None)


def check_resources(docs):
    for w in of_kind(docs, *WORKLOADS):
        for c in containers(w):
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for kind in ("cpu", "memory"):
                    if kind not in res.get(part, {}):
                        yield f"{kind_name(w)} container {c['name']}: no {part}.{kind}"
            for kind in ("cpu", "memory"):
                req, lim = res.get("requests", {}).get(kind), res.get("limits", {}).get(kind)
                if req is not None and lim is not None and _quantity(req) > _quantity(lim):
                    yield f"{kind_name(w)} container {c['name']}: {kind} request {req} above its limit {lim}"


def ingress_sources(docs) -> dict[str, set[str]]:
    """For every workload (by its name label), who may connect to it."""
    names = {pod_labels(w).get(NAME_LABEL): pod_labels(w) for w in of_kind(docs, *WORKLOADS)}
    policies = [p for p in of_kind(docs, "NetworkPolicy") if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
    result = {}
    for name, labels in names.items():
        selecting = [p for p in policies if matches(p["spec"].get("podSelector", {}), labels)]
        if not selecting:
            result[name] = {"*"}  # no policy selects it: Kubernetes admits everything
            continue
        sources = set()
        for p in selecting:
            for rule in p["spec"].get("ingress", []):
                sources |= rule_sources(rule, names)
        result[name] = sources
    return result


def rule_sources(rule: dict, names: dict[str, dict]) -> set[str]:
    """Who an ingress rule admits: workload names, "namespace:NAME", or "*"."""
    peers = rule.get("from", [])
    if not peers:
        return {"*"}
    sources = set()
    for peer in peers:
        namespaces = peer.get("namespaceSelector")
        if namespaces is not None:
            # A whole namespace, named by the label Kubernetes sets; anything broader is anyone.
            named = namespaces.get("matchLabels", {}).get(NAMESPACE_LABEL)
            only_name = set(namespaces) == {"matchLabels"} and len(namespaces["matchLabels"]) == 1
            sources.add(f"namespace:{named}" if named and only_name and "podSelector" not in peer else "*")
        elif "ipBlock" in peer or "matchExpressions" in peer.get("podSelector", {}):
            sources.add("*")
        else:
            match = peer.get("podSelector", {}).get("matchLabels", {})
            sources |= {n for n, lab in names.items() if all(lab.get(k) == v for k, v in match.items())}
    return sources


def _opens(rule: dict, container_ports: list[dict], name: str) -> bool:
    """Whether a rule opens the container port called `name` (a rule without ports opens all)."""
    numbers = {cp["containerPort"] for cp in container_ports if cp.get("name") == name}
    if not numbers:
        return False
    ports = rule.get("ports")
    return not ports or any(p["port"] == name or p["port"] in numbers for p in ports)


def check_metrics_ingress(docs):
    """The metrics ports admit the monitoring namespace only, and a namespace
    is admitted to the metrics ports only."""
    names = {pod_labels(w).get(NAME_LABEL): pod_labels(w) for w in of_kind(docs, *WORKLOADS)}
    for p in of_kind(docs, "NetworkPolicy"):
        targets = [w for w in of_kind(docs, *WORKLOADS) if matches(p["spec"].get("podSelector", {}), pod_labels(w))]
        container_ports = [cp for w in targets for c in containers(w) for cp in c.get("ports", [])]
        for rule in p["spec"].get("ingress", []):
            sources = rule_sources(rule, names)
            if _opens(rule, container_ports, "metrics") and sources != {MONITORING}:
                yield f"{kind_name(p)}: admits port metrics from {sorted(sources)}: only {MONITORING} may scrape"
            if any(s.startswith("namespace:") for s in sources) and [q["port"] for q in rule.get("ports", [])] != ["metrics"]:
                yield f"{kind_name(p)}: admits {sorted(sources)} to ports other than metrics"


def check_service_monitors(docs):
    """Custom resources by hand (no schema offline): known fields only, and a
    ServiceMonitor selects a Service here with the port it scrapes."""
    for d in docs:
        want = CUSTOM_KINDS.get(d["kind"])
        if want is not None and d.get("apiVersion") != want:
            yield f"{kind_name(d)}: apiVersion {d.get('apiVersion')!r}, expected {want}"
    for m in of_kind(docs, "ServiceMonitor"):
        spec = m.get("spec", {})
        unknown = set(spec) - {"selector", "endpoints", "namespaceSelector", "jobLabel"}
        if unknown:
            yield f"{kind_name(m)}: unknown spec fields {sorted(unknown)}"
        selector = spec.get("selector", {}).get("matchLabels", {})
        services = [svc for svc in of_kind(docs, "Service") if selects(selector, svc["metadata"].get("labels", {}))]
        if len(services) != 1:
            yield f"{kind_name(m)}: selects {len(services)} Services by their labels {selector}, expected one"
        for e in spec.get("endpoints", []):
            unknown = set(e) - {"port", "path", "interval", "scrapeTimeout", "scheme"}
            if unknown:
                yield f"{kind_name(m)}: unknown endpoint fields {sorted(unknown)}"
            for svc in services:
                if e.get("port") not in {p.get("name") for p in svc["spec"]["ports"]}:
                    yield f"{kind_name(m)}: scrapes port {e.get('port')!r}, which {kind_name(svc)} does not name"
        if not spec.get("endpoints"):
            yield f"{kind_name(m)}: no endpoints"


def _env_value(container: dict, name: str) -> str | None:
    return next((e.get("value") for e in container.get("env", []) if e["name"] == name), None)


def check_tls(docs):
    """With TLS on in any service (AIOS_TLS_DIR), it is on in all of them
    (a plain caller cannot reach a TLS port), from a mounted Secret that a
    Certificate here writes, for the names its callers dial; the internal
    services require client certificates; the probes ask the plain health
    port (the kubelet's gRPC probes do not speak TLS)."""
    services = [(w, c, m) for w, c, m in aios_containers(docs) if m in SERVICES]
    if not any(_env_value(c, "AIOS_TLS_DIR") or _env_value(c, "AIOS_TLS_CERT") for _, c, _ in services):
        return
    cfg = config(docs)
    dialled = {module: (var, grpc_host_port(cfg.get(var, "")).rpartition(":")[0]) for var, module in ADDRESSES.items()}
    certificates = {d["spec"].get("secretName"): d for d in of_kind(docs, "Certificate")}
    for w, c, module in services:
        where = f"{kind_name(w)} container {c['name']}"
        folder = _env_value(c, "AIOS_TLS_DIR")
        if not folder:
            yield f"{where}: no AIOS_TLS_DIR while other services serve TLS (calls between them would fail)"
            continue
        mount = next((m for m in c.get("volumeMounts", []) if m["mountPath"] == folder), {})
        volume = next((v for v in w["spec"]["template"]["spec"].get("volumes", []) if v["name"] == mount.get("name")), {})
        secret = volume.get("secret", {}).get("secretName")
        cert = certificates.get(secret)
        if secret is None:
            yield f"{where}: AIOS_TLS_DIR={folder} is not a mounted Secret"
        elif cert is None:
            yield f"{where}: Secret {secret} at {folder} is written by no Certificate here"
        else:
            names = set(cert["spec"].get("dnsNames", []))
            for svc in of_kind(docs, "Service"):
                if selects(svc["spec"].get("selector", {}), pod_labels(w)):
                    short = svc["metadata"]["name"]
                    for name in (short, f"{short}.{NAMESPACE}.svc", f"{short}.{NAMESPACE}.svc.cluster.local"):
                        if name not in names:
                            yield f"{kind_name(cert)}: no dnsName {name} (Service/{short} of {kind_name(w)})"
            var, host = dialled.get(module, ("", ""))
            if var and host not in names:
                yield f"{kind_name(cert)}: no dnsName {host!r}, the host {var} dials"
        auth = _env_value(c, "AIOS_TLS_CLIENT_AUTH") or "none"
        if module != "scheduler" and auth != "require":
            yield f"{where}: AIOS_TLS_CLIENT_AUTH={auth!r}: an internal service must require client certificates"
        health = named_port(c, "health")
        if health is None or _env_value(c, "AIOS_HEALTH_PORT") != str(health):
            yield f"{where}: AIOS_HEALTH_PORT={_env_value(c, 'AIOS_HEALTH_PORT')!r} is not the container port named health"
        for probe in ("readinessProbe", "livenessProbe"):
            if (c.get(probe) or {}).get("grpc", {}).get("port") != health:
                yield f"{where}: {probe} is not on the plain health port: the kubelet's gRPC probes do not speak TLS"


CERTIFICATE_FIELDS = {"secretName", "issuerRef", "commonName", "dnsNames", "ipAddresses", "uris", "duration",
                      "renewBefore", "privateKey", "usages", "isCA", "subject", "secretTemplate"}
ISSUER_KINDS = {"selfSigned", "ca", "acme", "vault", "venafi"}


def check_certificates(docs):
    """cert-manager's resources by hand (no schema offline): known fields, and
    every issuerRef to an Issuer here (a ClusterIssuer may live outside the rendering)."""
    issuers = {d["metadata"]["name"] for d in of_kind(docs, "Issuer")}
    for cert in of_kind(docs, "Certificate"):
        spec = cert.get("spec", {})
        unknown = set(spec) - CERTIFICATE_FIELDS
        if unknown:
            yield f"{kind_name(cert)}: unknown spec fields {sorted(unknown)}"
        if not spec.get("secretName"):
            yield f"{kind_name(cert)}: no secretName"
        ref = spec.get("issuerRef", {})
        if ref.get("kind", "Issuer") == "Issuer" and ref.get("name") not in issuers:
            yield f"{kind_name(cert)}: issuerRef {ref.get('name')!r} is no Issuer here"
        if not spec.get("isCA") and not spec.get("dnsNames"):
            yield f"{kind_name(cert)}: no dnsNames"
    for issuer in of_kind(docs, "Issuer", "ClusterIssuer"):
        kinds = set(issuer.get("spec", {})) & ISSUER_KINDS
        if len(kinds) != 1 or set(issuer.get("spec", {})) - ISSUER_KINDS:
            yield f"{kind_name(issuer)}: spec must be exactly one of {sorted(ISSUER_KINDS)}, got {issuer.get('spec')}"


def check_network(docs):
    deny = [p for p in of_kind(docs, "NetworkPolicy")
            if p["spec"].get("podSelector") == {} and "Ingress" in p["spec"].get("policyTypes", [])
            and not p["spec"].get("ingress")]
    if not deny:
        yield "no default-deny ingress NetworkPolicy (podSelector {} without ingress rules)"
    for name, sources in ingress_sources(docs).items():
        expected = EXPECTED_INGRESS.get(name)
        if expected is None:
            yield f"{name}: not in EXPECTED_INGRESS; decide who may reach it"
        elif sources != expected:
            extra, missing = sorted(sources - expected), sorted(expected - sources)
            yield f"{name}: reachable from {sorted(sources)}, expected {sorted(expected)} (extra {extra}, missing {missing})"
    for p in of_kind(docs, "NetworkPolicy"):
        selector = p["spec"].get("podSelector", {})
        targets = [w for w in of_kind(docs, *WORKLOADS) if selector and matches(selector, pod_labels(w))]
        for rule in p["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                for w in targets:
                    if not any(port["port"] in (cp.get("name"), cp["containerPort"])
                               for c in containers(w) for cp in c.get("ports", [])):
                        yield f"{kind_name(p)}: port {port['port']!r} is not a port of {kind_name(w)}"


def check_single_writers(docs):
    """A Deployment on a ReadWriteOnce claim runs one pod, replaced with Recreate."""
    hpa_targets = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(docs, "HorizontalPodAutoscaler")}
    for w in of_kind(docs, "Deployment"):
        claims = [v for v in w["spec"]["template"]["spec"].get("volumes", []) if "persistentVolumeClaim" in v]
        if not claims:
            continue
        if w["spec"].get("replicas", 1) != 1 or w["metadata"]["name"] in hpa_targets:
            yield f"{kind_name(w)}: mounts a ReadWriteOnce volume, so it must run exactly one replica"
        if w["spec"].get("strategy", {}).get("type") != "Recreate":
            yield f"{kind_name(w)}: mounts a ReadWriteOnce volume, so its strategy must be Recreate"


def check_scaling(docs):
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    for h in of_kind(docs, "HorizontalPodAutoscaler"):
        target = deployments.get(h["spec"]["scaleTargetRef"]["name"])
        if target is None:
            yield f"{kind_name(h)}: scales a Deployment that is not here"
            continue
        if "replicas" in target["spec"]:
            yield f"{kind_name(h)}: {kind_name(target)} sets spec.replicas, which each apply resets under the HPA"
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        match = pdb["spec"]["selector"].get("matchLabels", {})
        if not any(selects(match, pod_labels(w)) for w in of_kind(docs, *WORKLOADS)):
            yield f"{kind_name(pdb)} selects no pods"


def container_env(docs, container: dict) -> dict[str, dict]:
    """The container's variables as the kubelet sets them: envFrom ConfigMaps,
    then env (which wins), each as its env entry ({"value": ...} or {"valueFrom": ...})."""
    env: dict[str, dict] = {}
    for src in container.get("envFrom", []):
        ref = src.get("configMapRef")
        cm = next((d for d in of_kind(docs, "ConfigMap") if ref and d["metadata"]["name"] == ref["name"]), {})
        env.update({src.get("prefix", "") + k: {"value": v} for k, v in cm.get("data", {}).items()})
    env.update({e["name"]: e for e in container.get("env", [])})
    return env


def expand(env: dict[str, dict], value: str) -> str:
    """A value with the $(VAR)s of plain values (envFrom, env `value`) expanded,
    as the kubelet does; references to Secrets and fields stay as written."""
    return VAR_REF.sub(lambda m: env.get(m.group(1), {}).get("value", m.group(0)), value)


def _field(env: dict[str, dict], name: str) -> str | None:
    """The fieldPath an env entry takes its value from (None if it is no fieldRef)."""
    return ((env.get(name) or {}).get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")


def check_env_references(docs):
    """$(VAR) in env values, command and args names a variable defined before
    it (envFrom, or an earlier env entry): Kubernetes expands only those and
    passes any other reference on as written."""
    for w in of_kind(docs, *WORKLOADS):
        for c in containers(w):
            cw = f"{kind_name(w)} container {c['name']}"
            defined = {name for name, entry in container_env(docs, {"envFrom": c.get("envFrom", [])}).items()}
            for e in c.get("env", []):
                for ref in VAR_REF.findall(e.get("value", "")):
                    if ref not in defined:
                        yield f"{cw}: env {e['name']} refers to $({ref}), which is not defined before it"
                defined.add(e["name"])
            for arg in [*c.get("command", []), *c.get("args", [])]:
                for ref in VAR_REF.findall(arg):
                    if ref not in defined:
                        yield f"{cw}: command or args refer to $({ref}), which the container does not define"


def postgres_statefulsets(docs) -> list[tuple[dict, dict]]:
    """(StatefulSet, container) of each official postgres image."""
    return [(w, c) for w in of_kind(docs, "StatefulSet") for c in containers(w)
            if c["image"].rsplit("/", 1)[-1].partition(":")[0] == "postgres"]


def created_databases(docs, workload: dict, container: dict) -> set[str]:
    """What the image creates on a new volume: POSTGRES_DB (default: the user's
    name) and the CREATE DATABASE of its init scripts (a ConfigMap mounted at
    /docker-entrypoint-initdb.d)."""
    env = container_env(docs, container)
    user = env.get("POSTGRES_USER", {}).get("value", "postgres")
    names = {env.get("POSTGRES_DB", {}).get("value", user)}
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
    for m in container.get("volumeMounts", []):
        source = volumes.get(m["name"], {}).get("configMap")
        if m["mountPath"].rstrip("/") == "/docker-entrypoint-initdb.d" and source:
            for d in of_kind(docs, "ConfigMap"):
                if d["metadata"]["name"] == source["name"]:
                    for key, script in d.get("data", {}).items():
                        if key.endswith(".sql"):
                            names |= set(re.findall(r'CREATE\s+DATABASE\s+"?(\w+)"?', script, re.I))
    return names


def check_postgres(docs):
    """PostgreSQL keeps its data on a volume claim of its own, in a subfolder
    (the volume's root holds lost+found, and initdb wants an empty folder),
    and is ready when pg_isready says so."""
    for w, c in postgres_statefulsets(docs):
        where = f"{kind_name(w)} container {c['name']}"
        claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
        if not claims:
            yield f"{kind_name(w)}: no volumeClaimTemplate: its databases would be lost with the pod"
        pgdata = container_env(docs, c).get("PGDATA", {}).get("value", "/var/lib/postgresql/data")
        mounts = [m["mountPath"].rstrip("/") for m in c.get("volumeMounts", []) if m["name"] in claims]
        if not any(pgdata.startswith(f"{mount}/") for mount in mounts):
            yield f"{where}: PGDATA {pgdata} is not a subfolder of a volume claim's mount {mounts}"
        if (c.get("readinessProbe", {}).get("exec", {}).get("command") or [""])[0] != "pg_isready":
            yield f"{where}: the readiness probe is not pg_isready"


def check_databases(docs):
    """The kernel's journal and access's store are PostgreSQL URLs with the
    password PostgreSQL starts with, on databases it creates; neither pod
    keeps state of its own (no volume claim, no SQLite file)."""
    secrets = {s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
               for s in of_kind(docs, "Secret")}
    for w, c, module in aios_containers(docs):
        if module not in DATABASE_URLS.values():
            continue
        where = f"{kind_name(w)} container {c['name']}"
        claims = [v["name"] for v in w["spec"]["template"]["spec"].get("volumes", []) if "persistentVolumeClaim" in v]
        if claims:
            yield f"{where}: keeps state on volume claims {claims}: it belongs in PostgreSQL, shared by the replicas"
        env = container_env(docs, c)
        if module == "access" and "AIOS_ACCESS_DB_PATH" in env:
            yield f"{where}: AIOS_ACCESS_DB_PATH is set: a SQLite store in the pod"
        var = next(k for k, m in DATABASE_URLS.items() if m == module)
        value = env.get(var, {}).get("value")
        url = urlsplit(expand(env, value or ""))
        if url.scheme != "postgresql":
            yield f"{where}: {var}={value!r} is not a postgresql:// URL"
            continue
        ref = VAR_REF.fullmatch(url.password or "")
        secret = _field_secret(env, ref.group(1)) if ref else None
        if secret is None:
            yield f"{where}: the password in {var} is not $(VAR) of a variable from a Secret"
        elif secret["key"] in secrets.get(secret["name"], {}) and not re.fullmatch(
                r"[A-Za-z0-9._~-]+", secrets[secret["name"]][secret["key"]]):
            yield f"{where}: Secret {secret['name']} key {secret['key']} is not URL-safe, and {var} carries it"
        host_port = f"{url.hostname}:{url.port or 5432}"
        if not _in_namespace(url.hostname or ""):
            continue  # a managed PostgreSQL outside the cluster
        target = resolve(docs, host_port)
        server = next(((pw, pc) for pw, pc in postgres_statefulsets(docs) if target and target[0] is pw), None)
        if server is None:
            yield f"{where}: {var} leads to {host_port}, which is no PostgreSQL here"
            continue
        server_env = container_env(docs, server[1])
        if url.username != server_env.get("POSTGRES_USER", {}).get("value", "postgres"):
            yield f"{where}: {var} logs in as {url.username!r}, not as the user PostgreSQL creates"
        password = (server_env.get("POSTGRES_PASSWORD", {}).get("valueFrom") or {}).get("secretKeyRef")
        if secret is not None and password is not None and (secret["name"], secret["key"]) != (
                password["name"], password["key"]):
            yield (f"{where}: the password in {var} is Secret {secret['name']} key {secret['key']}, not the "
                   f"one PostgreSQL starts with ({password['name']} key {password['key']})")
        database = url.path.lstrip("/")
        if database not in created_databases(docs, *server):
            yield f"{where}: {var} names database {database!r}, which {kind_name(server[0])} does not create"


def _field_secret(env: dict[str, dict], name: str) -> dict | None:
    return ((env.get(name) or {}).get("valueFrom") or {}).get("secretKeyRef")


def replicas_of(docs, workload: dict) -> tuple[int, bool]:
    """(the fewest replicas it runs, whether an HPA scales it)."""
    for h in of_kind(docs, "HorizontalPodAutoscaler"):
        if workload["kind"] == "Deployment" and h["spec"]["scaleTargetRef"]["name"] == workload["metadata"]["name"]:
            return h["spec"].get("minReplicas", 1), True
    return workload["spec"].get("replicas", 1), False


def spread_over_nodes(workload: dict) -> bool:
    """A pod anti-affinity or a topology spread by node that counts its own pods."""
    spec, labels = workload["spec"]["template"]["spec"], pod_labels(workload)
    anti = spec.get("affinity", {}).get("podAntiAffinity", {})
    terms = [*(t["podAffinityTerm"] for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])),
             *anti.get("requiredDuringSchedulingIgnoredDuringExecution", []),
             *spec.get("topologySpreadConstraints", [])]
    return any(t.get("topologyKey") == HOSTNAME and matches(t.get("labelSelector", {}), labels) for t in terms)


def check_replicas(docs):
    """Replicas a drain takes one at a time and a node failure one of; budgets
    that leave a pod evictable; kernels that know who they are; llm_core's
    replica count and routing as it runs."""
    budgets = of_kind(docs, "PodDisruptionBudget")
    for w in of_kind(docs, *WORKLOADS):
        replicas, autoscaled = replicas_of(docs, w)
        mine = [p for p in budgets if selects(p["spec"]["selector"].get("matchLabels", {}), pod_labels(w))]
        for p in mine:
            floor = p["spec"].get("minAvailable")
            if isinstance(floor, int) and floor >= replicas or p["spec"].get("maxUnavailable") == 0:
                yield f"{kind_name(p)}: leaves no pod of {kind_name(w)} ({replicas}) evictable: it would block every drain"
        if replicas < 2:
            continue
        if not mine:
            yield f"{kind_name(w)}: {replicas} replicas and no PodDisruptionBudget: a drain may take them all at once"
        if not spread_over_nodes(w):
            yield f"{kind_name(w)}: {replicas} replicas and no anti-affinity or topology spread by {HOSTNAME}"
    llm = [(w, c) for w, c, module in aios_containers(docs) if module == "llm_core"]
    for w, c, module in aios_containers(docs):
        where = f"{kind_name(w)} container {c['name']}"
        env = container_env(docs, c)
        if module == "scheduler":
            if _field(env, "AIOS_KERNEL_REPLICA_ID") != "metadata.name":
                yield f"{where}: AIOS_KERNEL_REPLICA_ID is not the pod's name (fieldRef metadata.name)"
            advertise = env.get("AIOS_KERNEL_ADVERTISE_ADDRESS", {}).get("value", "")
            m = re.fullmatch(r"\$\((\w+)\):(\d+)", advertise)
            if not m or _field(env, m.group(1)) != "status.podIP" or int(m.group(2)) != named_port(c, "grpc"):
                yield (f"{where}: AIOS_KERNEL_ADVERTISE_ADDRESS={advertise!r} is not $(POD_IP):{named_port(c, 'grpc')} "
                       "(the pod's IP from fieldRef status.podIP, its port named grpc): replicas forward calls there")
        elif module == "llm_core":
            replicas, autoscaled = replicas_of(docs, w)
            declared = env.get("AIOS_LLM_REPLICAS", {}).get("value", "1")
            if autoscaled:
                yield f"{kind_name(w)}: an HPA scales it, but AIOS_LLM_REPLICAS={declared} is a fixed number"
            elif declared != str(replicas):
                yield (f"{where}: AIOS_LLM_REPLICAS={declared!r} but it runs {replicas} replicas: each keeps "
                       f"1/{declared} of an engine's max_concurrency in flight")
            routing = env.get("AIOS_LLM_ROUTING", {}).get("value", "prefix")
            if replicas > 1 and routing != "hash":
                yield f"{where}: {replicas} replicas with AIOS_LLM_ROUTING={routing!r}: they would route a run apart (hash)"
        if "AIOS_LLM_ADDR" in env and any(replicas_of(docs, lw) != (1, False) for lw, _ in llm):
            address = env["AIOS_LLM_ADDR"].get("value", "")
            svc = service_of(docs, address)
            if not address.startswith("dns:///") or svc is None or svc["spec"].get("clusterIP") != "None":
                yield (f"{where}: AIOS_LLM_ADDR={address!r} is not dns:/// of a headless Service: each of its "
                       "connections would stay on one llm-core replica")


def admits(docs, source: str, target: str, port: str) -> bool:
    """Whether an ingress rule that names the source's pods (by their labels)
    opens the target's port `port` (by name)."""
    labels = {pod_labels(w).get(NAME_LABEL): (w, pod_labels(w)) for w in of_kind(docs, *WORKLOADS)}
    workload, target_labels = labels[target]
    container_ports = [cp for c in containers(workload) for cp in c.get("ports", [])]
    for p in of_kind(docs, "NetworkPolicy"):
        if ("Ingress" not in p["spec"].get("policyTypes", ["Ingress"])
                or not matches(p["spec"].get("podSelector", {}), target_labels)):
            continue
        for rule in p["spec"].get("ingress", []):
            named = any(set(peer) == {"podSelector"} and set(peer["podSelector"]) == {"matchLabels"}
                        and peer["podSelector"]["matchLabels"]
                        and all(labels[source][1].get(k) == v for k, v in peer["podSelector"]["matchLabels"].items())
                        for peer in rule.get("from", []))
            if named and _opens(rule, container_ports, port):
                return True
    return False


def check_paths(docs):
    names = {pod_labels(w).get(NAME_LABEL) for w in of_kind(docs, *WORKLOADS)}
    for source, target, port in REQUIRED_PATHS:
        if {source, target} <= names and not admits(docs, source, target, port):
            yield f"NetworkPolicies: {source} -> {target} port {port} is not admitted by a rule naming {source}'s pods"


CHECKS = (check_namespace, check_probes, check_security, check_secrets, check_services,
          check_images, check_ports, check_resources, check_network, check_metrics_ingress,
          check_single_writers, check_scaling, check_service_monitors, check_tls, check_certificates,
          check_env_references, check_postgres, check_databases, check_replicas, check_paths)


def violations(docs: list[dict], *, allow_dev_literals: bool = False) -> list[str]:
    """Every broken invariant of a rendering, as readable lines (empty = all hold)."""
    found = []
    for check in CHECKS:
        if check is check_secrets:
            found += check(docs, allow_dev_literals)
        else:
            found += check(docs)
    return found


# --------------------------------------------------------------------------- tests


def test_every_overlay_renders():
    for overlay in OVERLAYS:
        kinds = {d["kind"] for d in render(overlay)}
        assert {"Namespace", "ConfigMap", "Deployment", "StatefulSet", "Service", "ServiceAccount",
                "NetworkPolicy"} <= kinds, overlay


def _schema_versions() -> list[str]:
    from kubernetes_validate import utils

    return sorted({KUBERNETES_VERSION, utils.latest_version()})


def _strict_failures(docs: list[dict]) -> list[str]:
    from kubernetes_validate import utils

    failures = []
    for version in _schema_versions():
        for doc in docs:
            if doc["kind"] in CUSTOM_KINDS:
                continue  # no schema offline: check_service_monitors, check_certificates
            try:
                utils.validate(doc, version, strict=True)
            except utils.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                failures.append(f"{kind_name(doc)} against {version}: {path}: {exc.message}")
            except utils.SchemaNotFoundError as exc:
                failures.append(exc.message)
    return failures


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_strictly(overlay):
    failures = _strict_failures(render(overlay))
    assert not failures, "\n".join(failures)


def test_strict_validation_rejects_an_unknown_field():
    from kubernetes_validate import utils

    kernel = find(render("overlays/prod"), "Deployment", "kernel")
    kernel["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {"port": 50051}}
    with pytest.raises(utils.ValidationError, match="readinesProbe"):
        utils.validate(kernel, KUBERNETES_VERSION, strict=True)


def test_readme_names_the_validated_version_and_every_secret():
    readme = (K8S / "README.md").read_text()
    major_minor = ".".join(KUBERNETES_VERSION.split(".")[:2])
    assert f"Kubernetes {major_minor}" in readme
    for secret in KNOWN_SECRETS:
        assert f"kubectl -n aios create secret generic {secret}" in readme, secret


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_invariants_hold(overlay):
    found = violations(render(overlay), allow_dev_literals=overlay == "overlays/dev")
    assert not found, "\n".join(found)


def test_base_and_prod_hold_no_secret_values():
    for overlay in ("base", "overlays/prod"):
        assert of_kind(render(overlay), "Secret") == [], overlay


def test_dev_overlay():
    from services.access import tokens

    docs = render("overlays/dev")
    for w in of_kind(docs, *WORKLOADS):
        assert w["spec"].get("replicas", 1) == 1, kind_name(w)
    # One layout: dev runs the kernel and access on its PostgreSQL too.
    assert _deployment_env(docs, "kernel", "AIOS_KERNEL_JOURNAL").startswith("postgresql://")
    assert _deployment_env(docs, "access", "AIOS_ACCESS_DATABASE_URL").startswith("postgresql://")
    # access adopts the file only if it is a token it could have issued.
    admin = find(docs, "Secret", "aios-access-admin-token")["data"]["admin-token"]
    assert tokens.well_formed(base64.b64decode(admin).decode())
    assert of_kind(docs, "HorizontalPodAutoscaler") == []
    server = find(docs, "Deployment", "model-server")
    [c] = server["spec"]["template"]["spec"]["containers"]
    assert aios_module(c) == "local.llm_server"
    assert c["image"] == next(aios_containers(docs))[1]["image"]
    endpoints = json.loads(configmap(docs, "aios-llm-endpoints")["data"]["endpoints.json"])
    for e in endpoints:
        w, _, port = resolve(docs, re.sub(r"^http://([^/]+)/v1$", r"\1", e["base_url"]))
        assert w is server and port == named_port(c, "http")
    for s in of_kind(docs, "Secret"):
        assert s["metadata"]["name"] in KNOWN_SECRETS


def _deployment_env(docs, deployment: str, name: str) -> str:
    return container_env(docs, _aios(docs, deployment))[name]["value"]


def test_prod_overlay():
    docs = render("overlays/prod")
    autoscaled = {"memory", "storage"}
    assert {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(docs, "HorizontalPodAutoscaler")} == autoscaled
    for h in of_kind(docs, "HorizontalPodAutoscaler"):
        assert h["spec"]["minReplicas"] >= 2
    fixed = {"kernel": 3, "access": 2, "llm-core": 2}
    for name, replicas in fixed.items():
        assert find(docs, "Deployment", name)["spec"]["replicas"] == replicas, name
    assert find(docs, "StatefulSet", "postgres")["spec"]["replicas"] == 1

    # A budget for each replicated workload and for postgres, selecting its pods.
    budgets = {p["metadata"]["name"]: p for p in of_kind(docs, "PodDisruptionBudget")}
    assert set(budgets) == {*fixed, *autoscaled, "postgres"}
    for name, pdb in budgets.items():
        kind = "StatefulSet" if name == "postgres" else "Deployment"
        assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(find(docs, kind, name))), name
        assert pdb["spec"].get("maxUnavailable") == 1, name

    # Kernels: no volume, PostgreSQL, and an identity and address of their own.
    kernel = _aios(docs, "kernel")
    env = container_env(docs, kernel)
    assert _pod(docs, "Deployment", "kernel").get("volumes", []) == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    assert env["AIOS_KERNEL_JOURNAL"]["value"] == "postgresql://aios:$(PGPASSWORD)@$(AIOS_POSTGRES_ADDR)/aios"
    assert expand(env, env["AIOS_KERNEL_JOURNAL"]["value"]) == "postgresql://aios:$(PGPASSWORD)@postgres:5432/aios"
    assert resolve(docs, config(docs)["AIOS_POSTGRES_ADDR"])[0] is find(docs, "StatefulSet", "postgres")
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "aios-postgres-credentials", "key": "password"}
    assert env["AIOS_KERNEL_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["AIOS_KERNEL_ADVERTISE_ADDRESS"]["value"] == f"$(POD_IP):{named_port(kernel, 'grpc')}" == "$(POD_IP):50051"
    assert "AIOS_KERNEL_LEASE_SECONDS" not in env  # the kernel's default

    # access: PostgreSQL, no SQLite volume, one admin token file for every replica.
    access = _aios(docs, "access")
    env = container_env(docs, access)
    assert expand(env, env["AIOS_ACCESS_DATABASE_URL"]["value"]) == \
        "postgresql://aios:$(PGPASSWORD)@postgres:5432/aios_access"
    assert "AIOS_ACCESS_DB_PATH" not in env
    volumes = {v["name"]: v for v in _pod(docs, "Deployment", "access")["volumes"]}
    assert not [v for v in volumes.values() if "persistentVolumeClaim" in v]
    token_file = env["AIOS_ACCESS_ADMIN_TOKEN_FILE"]["value"]
    [mount] = [m for m in access["volumeMounts"] if token_file.startswith(m["mountPath"] + "/")]
    secret = volumes[mount["name"]]["secret"]
    assert mount["readOnly"] and secret["secretName"] == "aios-access-admin-token"
    assert secret["items"] == [{"key": "admin-token", "path": token_file.rpartition("/")[2]}]

    # llm_core: two replicas routing alike, each with half of every engine.
    env = container_env(docs, _aios(docs, "llm-core"))
    assert env["AIOS_LLM_ROUTING"]["value"] == "hash" and env["AIOS_LLM_REPLICAS"]["value"] == "2"
    headless = find(docs, "Service", "llm-core-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert selects(headless["spec"]["selector"], pod_labels(find(docs, "Deployment", "llm-core")))
    assert config(docs)["AIOS_LLM_ADDR"] == "dns:///llm-core-headless.aios.svc.cluster.local:50052"
    # The ConfigMap's, as for memory and storage.
    assert "AIOS_LLM_ADDR" not in {e["name"] for e in kernel.get("env", [])}

    # Each replicated Deployment prefers a node of its own.
    for name in fixed:
        [term] = _pod(docs, "Deployment", name)["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"]
        assert term["podAffinityTerm"]["topologyKey"] == HOSTNAME
        assert term["podAffinityTerm"]["labelSelector"] == {"matchLabels": {NAME_LABEL: name}}

    # Who reaches whom, port by port.
    assert admits(docs, "kernel", "kernel", "grpc")
    assert admits(docs, "kernel", "postgres", "postgres") and admits(docs, "access", "postgres", "postgres")
    assert not any(admits(docs, other, "postgres", "postgres") for other in ("memory", "storage", "llm-core"))
    assert not admits(docs, "access", "kernel", "grpc")  # only "*" admits it, named in no rule

    # PostgreSQL: its data on a claim template, no other claims in the rendering.
    postgres = find(docs, "StatefulSet", "postgres")
    [claim] = postgres["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert of_kind(docs, "PersistentVolumeClaim") == []
    [(_, server)] = postgres_statefulsets(docs)
    assert re.fullmatch(r"postgres:\d+\.\d+", server["image"])
    assert created_databases(docs, postgres, server) == {"aios", "aios_access"}

    names = {d["metadata"]["name"] for d in of_kind(docs, *WORKLOADS)}
    assert "model-server" not in names
    endpoints = json.loads(configmap(docs, "aios-llm-endpoints")["data"]["endpoints.json"])
    assert endpoints and all(e["base_url"].startswith(("http://", "https://")) for e in endpoints)
    assert all(resolve(docs, re.sub(r"^https?://([^/]+).*$", r"\1", e["base_url"])) is None for e in endpoints)
    _, llm_core, _ = next(x for x in aios_containers(docs) if x[2] == "llm_core")
    env_names = {e["name"] for e in llm_core.get("env", [])}
    assert {e["api_key_env"] for e in endpoints if e.get("api_key_env")} <= env_names


def _readme_section(title: str) -> str:
    readme = (K8S / "README.md").read_text()
    start = readme.index(f"\n## {title}\n")
    end = readme.find("\n## ", start + 1)
    return readme[start:end if end != -1 else None]


def test_readme_managed_postgres_overlay(tmp_path):
    """The README's overlay for a managed PostgreSQL renders, drops every
    PostgreSQL object, points both URLs at the managed server, and holds
    the invariants."""
    [overlay] = re.findall(r"```yaml\n(.*?)```", _readme_section("Managed PostgreSQL"), re.S)
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree)
    folder = tree / "overlays" / "managed-postgres"
    folder.mkdir()
    (folder / "kustomization.yaml").write_text(overlay)
    proc = subprocess.run([*kustomize_command(), str(folder)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert [kind_name(d) for d in docs if "postgres" in d["metadata"]["name"]] == []
    for deployment, var, database in (("kernel", "AIOS_KERNEL_JOURNAL", "aios"),
                                      ("access", "AIOS_ACCESS_DATABASE_URL", "aios_access")):
        url = urlsplit(expand(container_env(docs, _aios(docs, deployment)), _deployment_env(docs, deployment, var)))
        assert url.scheme == "postgresql" and url.password == "$(PGPASSWORD)", var
        assert not _in_namespace(url.hostname) and url.path == f"/{database}", var
    assert find(docs, "Deployment", "kernel")["spec"]["replicas"] == 3
    found = violations(docs)
    assert not found, "\n".join(found)


def test_dockerfile_and_dockerignore():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}$", dockerfile, re.M)
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in dockerfile
    assert dockerfile_uid() == 10001
    assert not re.search(r"^(ENV|ARG)\s.*(KEY|TOKEN|SECRET|PASSWORD)", dockerfile, re.M | re.I)
    ignore = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    assert ignore[0] == "*", "the build context is an allow-list"
    allowed = {ln[1:].rstrip("/") for ln in ignore if ln.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "sdk_py", "services"}
    for copied in re.findall(r"^COPY (?!--from)(\S+)", dockerfile, re.M):
        assert copied.rstrip("/") in allowed, copied


# ------------------------------------------------------------ the checker catches breaks


def _aios(docs, deployment):
    return find(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]


def _set_config(docs, key, value):
    configmap(docs, "aios-config")["data"][key] = value


def _pod(docs, kind, name):
    return find(docs, kind, name)["spec"]["template"]["spec"]


def _literal_env(docs, deployment, name):
    entry = next(e for e in _aios(docs, deployment)["env"] if e["name"] == name)
    entry.pop("valueFrom")
    entry["value"] = "hunter2"


def _env(docs, deployment, name, kind="Deployment"):
    return next(e for e in _pod(docs, kind, deployment)["containers"][0]["env"] if e["name"] == name)


def _set_env(docs, deployment, name, value, kind="Deployment"):
    entry = _env(docs, deployment, name, kind)
    entry.pop("valueFrom", None)
    entry["value"] = value


def _drop_env(docs, deployment, name):
    container = _aios(docs, deployment)
    container["env"] = [e for e in container["env"] if e["name"] != name]


def _move_env_last(docs, deployment, name):
    container = _aios(docs, deployment)
    entry = _env(docs, deployment, name)
    container["env"].remove(entry)
    container["env"].append(entry)


def _volume(docs, deployment, name):
    return next(v for v in _pod(docs, "Deployment", deployment)["volumes"] if v["name"] == name)


def _claim_volume(docs, deployment):
    _pod(docs, "Deployment", deployment)["volumes"].append(
        {"name": "journal", "persistentVolumeClaim": {"claimName": "kernel-journal"}})


def _hpa(deployment):
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": deployment, "namespace": NAMESPACE},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
                     "minReplicas": 2, "maxReplicas": 4}}


def _allow(docs, source, target):
    docs.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                 "metadata": {"name": f"{target}-from-{source}", "namespace": NAMESPACE},
                 "spec": {"podSelector": {"matchLabels": {NAME_LABEL: target}}, "policyTypes": ["Ingress"],
                          "ingress": [{"from": [{"podSelector": {"matchLabels": {NAME_LABEL: source}}}]}]}})


BREAKS = {
    "readiness probe removed": (lambda d: _aios(d, "kernel").pop("readinessProbe"), "no readinessProbe"),
    "probe on another port": (lambda d: _aios(d, "llm-core")["livenessProbe"]["grpc"].update(port=50099),
                              "livenessProbe is not a grpc probe on port 50052"),
    "tcp probe instead of grpc": (lambda d: _aios(d, "memory").update(readinessProbe={"tcpSocket": {"port": 50053}}),
                                  "readinessProbe is not a grpc probe"),
    "runs as root": (lambda d: _pod(d, "Deployment", "storage")["securityContext"].update(runAsNonRoot=False, runAsUser=0),
                     "runAsNonRoot is not true"),
    "writable root filesystem": (lambda d: _aios(d, "access")["securityContext"].update(readOnlyRootFilesystem=False),
                                 "readOnlyRootFilesystem is not true"),
    "capabilities kept": (lambda d: _aios(d, "kernel")["securityContext"]["capabilities"].update(drop=[]),
                          "capabilities do not drop ALL"),
    "privilege escalation": (lambda d: _aios(d, "llm-core")["securityContext"].update(allowPrivilegeEscalation=True),
                             "allowPrivilegeEscalation is not false"),
    "no seccomp profile": (lambda d: _pod(d, "StatefulSet", "qdrant")["securityContext"].pop("seccompProfile"),
                           "seccompProfile is not RuntimeDefault"),
    "literal secret in env": (lambda d: _literal_env(d, "storage", "AIOS_STORAGE_S3_SECRET_KEY"),
                              "env AIOS_STORAGE_S3_SECRET_KEY is not from a Secret"),
    "Secret with values": (lambda d: d.append({"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "aios-s3-credentials", "namespace": NAMESPACE}, "stringData": {"secret-key": "hunter2"}}),
        "has literal values in the repository"),
    "credential in the ConfigMap": (lambda d: _set_config(d, "AIOS_MEMORY_QDRANT_API_KEY", "hunter2"),
                                    "holds AIOS_MEMORY_QDRANT_API_KEY"),
    "Service selects nothing": (lambda d: find(d, "Service", "memory")["spec"]["selector"].update({NAME_LABEL: "memroy"}),
                                "Service/memory selects no Deployment"),
    "Service targets a missing port": (lambda d: find(d, "Service", "kernel")["spec"]["ports"][0].update(targetPort="grcp"),
                                       "targetPort 'grcp'"),
    "another image": (lambda d: _aios(d, "llm-core").update(image="aios:0.2.0"), "run different images"),
    "unpinned image": (lambda d: _pod(d, "StatefulSet", "minio")["containers"][0].update(image="quay.io/minio/minio"),
                       "is not pinned"),
    "container port drift": (lambda d: _aios(d, "storage")["ports"][0].update(containerPort=50099),
                             "container port grpc is 50099, services/storage listens on 50054"),
    "ConfigMap port drift": (lambda d: _set_config(d, "AIOS_MEMORY_PORT", "6000"), "AIOS_MEMORY_PORT='6000'"),
    "listener on loopback": (lambda d: _set_config(d, "AIOS_LLM_HOST", "127.0.0.1"), "it must be 0.0.0.0"),
    "address of the wrong service": (lambda d: _set_config(d, "AIOS_MEMORY_ADDR", "storage:50054"),
                                     "AIOS_MEMORY_ADDR='storage:50054' does not lead to services.memory"),
    "address of no Service": (lambda d: _set_config(d, "AIOS_MEMORY_QDRANT_URL", "http://qdrnt:6333"),
                              "qdrnt:6333 is no Service port"),
    "HTTP door port drift": (lambda d: _set_config(d, "AIOS_KERNEL_HTTP_PORT", "8080"),
                             "AIOS_KERNEL_HTTP_PORT='8080' is not the container port named http"),
    "no memory limit": (lambda d: _aios(d, "kernel")["resources"]["limits"].pop("memory"), "no limits.memory"),
    "memory reaches MinIO": (lambda d: _allow(d, "memory", "minio"), "minio: reachable from ['memory', 'storage']"),
    "kernel reaches Qdrant": (lambda d: _allow(d, "kernel", "qdrant"), "qdrant: reachable from ['kernel', 'memory', 'storage']"),
    "default deny removed": (lambda d: d.remove(find(d, "NetworkPolicy", "default-deny-ingress")),
                             "no default-deny ingress"),
    "volume claim under replicas": (lambda d: _claim_volume(d, "kernel"), "exactly one replica"),
    "kernel state in the pod": (lambda d: _claim_volume(d, "kernel"), "keeps state on volume claims ['journal']"),
    "journal back on SQLite": (lambda d: _set_env(d, "kernel", "AIOS_KERNEL_JOURNAL", "/var/lib/aios/journal.sqlite3"),
                               "AIOS_KERNEL_JOURNAL='/var/lib/aios/journal.sqlite3' is not a postgresql:// URL"),
    "access without its database": (lambda d: _drop_env(d, "access", "AIOS_ACCESS_DATABASE_URL"),
                                    "AIOS_ACCESS_DATABASE_URL=None is not a postgresql:// URL"),
    "access on a SQLite file": (lambda d: _set_config(d, "AIOS_ACCESS_DB_PATH", "/tmp/access.sqlite3"),
                                "AIOS_ACCESS_DB_PATH is set"),
    "password in the URL": (
        lambda d: _set_env(d, "kernel", "AIOS_KERNEL_JOURNAL", "postgresql://aios:hunter2@postgres:5432/aios"),
        "the password in AIOS_KERNEL_JOURNAL is not $(VAR)"),
    "password of another Secret": (
        lambda d: _env(d, "access", "PGPASSWORD")["valueFrom"]["secretKeyRef"].update(
            name="aios-s3-credentials", key="secret-key"),
        "not the one PostgreSQL starts with (aios-postgres-credentials key password)"),
    "database nobody creates": (
        lambda d: _set_env(d, "access", "AIOS_ACCESS_DATABASE_URL",
                           "postgresql://aios:$(PGPASSWORD)@$(AIOS_POSTGRES_ADDR)/access"),
        "names database 'access', which StatefulSet/postgres does not create"),
    "URL to no PostgreSQL": (lambda d: _set_config(d, "AIOS_POSTGRES_ADDR", "qdrant:6333"),
                             "leads to qdrant:6333, which is no PostgreSQL here"),
    "variable used before it is defined": (lambda d: _move_env_last(d, "kernel", "POD_IP"),
                                           "env AIOS_KERNEL_ADVERTISE_ADDRESS refers to $(POD_IP), which is not defined before it"),
    "kernels share one identity": (lambda d: _set_env(d, "kernel", "AIOS_KERNEL_REPLICA_ID", "kernel"),
                                   "AIOS_KERNEL_REPLICA_ID is not the pod's name"),
    "advertised on the HTTP port": (lambda d: _set_env(d, "kernel", "AIOS_KERNEL_ADVERTISE_ADDRESS", "$(POD_IP):50080"),
                                    "AIOS_KERNEL_ADVERTISE_ADDRESS='$(POD_IP):50080' is not $(POD_IP):50051"),
    "llm_core replicas miscounted": (lambda d: find(d, "Deployment", "llm-core")["spec"].update(replicas=3),
                                     "AIOS_LLM_REPLICAS='2' but it runs 3 replicas"),
    "llm_core replicas route apart": (lambda d: _drop_env(d, "llm-core", "AIOS_LLM_ROUTING"),
                                      "2 replicas with AIOS_LLM_ROUTING='prefix'"),
    "llm_core under an HPA": (lambda d: d.append(_hpa("llm-core")), "an HPA scales it, but AIOS_LLM_REPLICAS=2"),
    "llm_core through its ClusterIP Service": (lambda d: _set_config(d, "AIOS_LLM_ADDR", "llm-core:50052"),
                                               "AIOS_LLM_ADDR='llm-core:50052' is not dns:/// of a headless Service"),
    "kernels cannot forward": (lambda d: d.remove(find(d, "NetworkPolicy", "kernel-from-kernel")),
                               "kernel -> kernel port grpc is not admitted"),
    "access cannot reach PostgreSQL": (
        lambda d: find(d, "NetworkPolicy", "postgres-from-kernel-access")["spec"]["ingress"][0]["from"].pop(1),
        "access -> postgres port postgres is not admitted"),
    "replicas without a budget": (lambda d: d.remove(find(d, "PodDisruptionBudget", "kernel")),
                                  "Deployment/kernel: 3 replicas and no PodDisruptionBudget"),
    "budget blocks every drain": (
        lambda d: find(d, "PodDisruptionBudget", "postgres").update(
            spec={"minAvailable": 1, "selector": {"matchLabels": {NAME_LABEL: "postgres"}}}),
        "PodDisruptionBudget/postgres: leaves no pod of StatefulSet/postgres (1) evictable"),
    "replicas on one node": (lambda d: _pod(d, "Deployment", "access").pop("affinity"),
                             "Deployment/access: 2 replicas and no anti-affinity or topology spread"),
    "PostgreSQL without a claim": (lambda d: find(d, "StatefulSet", "postgres")["spec"].pop("volumeClaimTemplates"),
                                   "StatefulSet/postgres: no volumeClaimTemplate"),
    "PGDATA at the volume's root": (
        lambda d: _set_env(d, "postgres", "PGDATA", "/var/lib/postgresql/data", kind="StatefulSet"),
        "PGDATA /var/lib/postgresql/data is not a subfolder"),
    "PostgreSQL ready before it accepts": (
        lambda d: _pod(d, "StatefulSet", "postgres")["containers"][0].update(readinessProbe={"tcpSocket": {"port": 5432}}),
        "the readiness probe is not pg_isready"),
    "admin token from an undocumented Secret": (
        lambda d: _volume(d, "access", "admin-token")["secret"].update(secretName="aios-admin"),
        "mounts Secret aios-admin, which the README does not document"),
    "HPA fights apply": (lambda d: find(d, "Deployment", "memory")["spec"].update(replicas=3), "sets spec.replicas"),
    "metrics open to every client": (
        lambda d: find(d, "NetworkPolicy", "kernel-from-clients")["spec"]["ingress"][0]["ports"].append(
            {"port": "metrics"}), "admits port metrics from ['*']"),
    "metrics open to every namespace": (
        lambda d: find(d, "NetworkPolicy", "metrics-from-monitoring")["spec"]["ingress"][0]["from"][0].update(
            namespaceSelector={}), "admits port metrics from ['*']"),
    "monitoring reaches grpc": (
        lambda d: find(d, "NetworkPolicy", "metrics-from-monitoring")["spec"]["ingress"][0]["ports"].append(
            {"port": "grpc"}), "to ports other than metrics"),
    "metrics port drift": (lambda d: _set_config(d, "AIOS_LLM_METRICS_PORT", "9999"),
                           "AIOS_LLM_METRICS_PORT='9999' is not the container port named metrics"),
    "ServiceMonitor on a missing port": (
        lambda d: find(d, "ServiceMonitor", "memory")["spec"]["endpoints"][0].update(port="metric"),
        "scrapes port 'metric'"),
    "ServiceMonitor selects no Service": (
        lambda d: find(d, "Service", "access")["metadata"]["labels"].pop(NAME_LABEL), "selects 0 Services"),
}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_checker_reports_a_broken_invariant(name):
    mutate, expected = BREAKS[name]
    docs = render("overlays/test")  # prod, and every component
    assert violations(docs) == []
    mutate(docs)
    found = violations(docs)
    assert any(expected in line for line in found), f"{name}: expected {expected!r} in {found}"


def test_checker_reports_an_unmarked_dev_secret():
    docs = render("overlays/dev")
    assert violations(docs, allow_dev_literals=True) == []
    find(docs, "Secret", "aios-service-tokens")["data"]["memory"] = base64.b64encode(b"a-real-token").decode()
    assert any("key memory: a literal value without the 'dev-only' marker" in v
               for v in violations(docs, allow_dev_literals=True))


# ------------------------------------------------------------ the TLS component


@pytest.fixture(scope="session")
def tls_rendering(tmp_path_factory) -> str:
    """A kustomization outside the repository: overlays/test (prod with every
    other component) plus components/tls, as an operator's overlay adds it.
    Its path, for render()."""
    folder = tmp_path_factory.mktemp("k8s-tls")
    # Kustomize takes bases by relative path only.
    up = Path(os.path.relpath(K8S, folder))
    (folder / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": NAMESPACE,
        "labels": [{"pairs": {"app.kubernetes.io/part-of": "aios"}, "includeTemplates": True}],
        "resources": [str(up / "overlays" / "test")], "components": [str(up / "components" / "tls")]}))
    return str(folder)


def test_tls_component_validates_strictly_and_holds_the_invariants(tls_rendering):
    docs = render(tls_rendering)
    failures = _strict_failures(docs)
    assert not failures, "\n".join(failures)
    found = violations(docs)
    assert not found, "\n".join(found)


def test_tls_component(tls_rendering):
    docs = render(tls_rendering)
    secrets = {}
    for w, c, module in aios_containers(docs):
        if module not in SERVICES:
            continue
        assert _env_value(c, "AIOS_TLS_DIR") == "/etc/aios/tls", kind_name(w)
        assert (_env_value(c, "AIOS_TLS_CLIENT_AUTH") == "require") == (module != "scheduler"), kind_name(w)
        [volume] = [v for v in w["spec"]["template"]["spec"]["volumes"] if "secret" in v and v["name"] == "tls"]
        secrets[w["metadata"]["name"]] = volume["secret"]["secretName"]
        # The health port is no Service port: only the kubelet asks it.
        for svc in of_kind(docs, "Service"):
            assert named_port(c, "health") not in [p["port"] for p in svc["spec"]["ports"]]
    assert secrets == {name: f"aios-tls-{name}" for name in ("kernel", "llm-core", "memory", "storage", "access")}
    # One CA, bootstrapped by a self-signed Issuer, signs every service's certificate.
    ca = find(docs, "Certificate", "aios-ca")
    assert ca["spec"]["isCA"] and ca["spec"]["issuerRef"]["name"] == "aios-selfsigned"
    assert find(docs, "Issuer", "aios-ca")["spec"] == {"ca": {"secretName": ca["spec"]["secretName"]}}
    for cert in of_kind(docs, "Certificate"):
        assert cert["metadata"]["namespace"] == NAMESPACE
        if cert is not ca:
            assert cert["spec"]["issuerRef"] == {"name": "aios-ca", "kind": "Issuer"}
            assert {"server auth", "client auth"} <= set(cert["spec"]["usages"])
    # Nothing else changes: the same documents as overlays/test, and the certificates.
    plain = {kind_name(d) for d in render("overlays/test")}
    assert {kind_name(d) for d in docs} - plain == {kind_name(d) for d in of_kind(docs, "Certificate", "Issuer")}
    readme = (K8S / "README.md").read_text()
    assert "components/tls" in readme and "## TLS" in readme


def _tls_env(docs, deployment, name, value):
    for e in _aios(docs, deployment)["env"]:
        if e["name"] == name:
            if value is None:
                _aios(docs, deployment)["env"].remove(e)
            else:
                e["value"] = value
            return


TLS_BREAKS = {
    "probe on the TLS port": (lambda d: _aios(d, "storage")["readinessProbe"]["grpc"].update(port=50054),
                              "readinessProbe is not on the plain health port"),
    "health port drift": (lambda d: _tls_env(d, "memory", "AIOS_HEALTH_PORT", "50099"),
                          "AIOS_HEALTH_PORT='50099' is not the container port named health"),
    "one service plain": (lambda d: _tls_env(d, "access", "AIOS_TLS_DIR", None),
                          "no AIOS_TLS_DIR while other services serve TLS"),
    "internal service without client auth": (lambda d: _tls_env(d, "llm-core", "AIOS_TLS_CLIENT_AUTH", "none"),
                                             "an internal service must require client certificates"),
    "certificate without the dialled name": (
        lambda d: find(d, "Certificate", "aios-tls-memory")["spec"]["dnsNames"].remove("memory"),
        "no dnsName 'memory', the host AIOS_MEMORY_ADDR dials"),
    "Secret no Certificate writes": (
        lambda d: _pod(d, "Deployment", "kernel")["volumes"][0]["secret"].update(secretName="aios-tls-kernl"),
        "Secret aios-tls-kernl at /etc/aios/tls is written by no Certificate"),
    "unknown Certificate field": (lambda d: find(d, "Certificate", "aios-tls-kernel")["spec"].update(dnsName="x"),
                                  "unknown spec fields ['dnsName']"),
    "issuer missing": (lambda d: d.remove(find(d, "Issuer", "aios-ca")), "issuerRef 'aios-ca' is no Issuer here"),
}


@pytest.mark.parametrize("name", sorted(TLS_BREAKS))
def test_checker_reports_a_broken_tls_invariant(name, tls_rendering):
    mutate, expected = TLS_BREAKS[name]
    docs = render(tls_rendering)
    assert violations(docs) == []
    mutate(docs)
    found = violations(docs)
    assert any(expected in line for line in found), f"{name}: expected {expected!r} in {found}"


def main(argv: list[str]) -> int:
    """Check a rendering from a file (or - for stdin); print what is broken.
    --dev allows the dev overlay's marked literal Secrets."""
    args = [a for a in argv[1:] if a != "--dev"]
    text = sys.stdin.read() if args in ([], ["-"]) else Path(args[0]).read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    found = violations(docs, allow_dev_literals="--dev" in argv)
    for line in found:
        print(f"VIOLATION {line}")
    print(f"{len(docs)} documents, {len(found)} violations")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
