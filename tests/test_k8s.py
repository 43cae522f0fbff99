"""The Kubernetes manifests (deploy/k8s): every overlay renders with
`kubectl kustomize`, every document validates strictly against the
Kubernetes version deploy/k8s/README.md names, and the deployment keeps its
invariants (probes, security context, no literal secrets, Services that select
pods, one image, ports that match what the services listen on, resources,
NetworkPolicies, single-writer volumes, ServiceMonitors that find their
Services). overlays/test adds every component (deploy/k8s/components) to prod.
Custom resources (ServiceMonitor) have no schema in kubernetes-validate: the
invariants check them instead (check_service_monitors).

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
    "kernel": {"*", MONITORING},
    "llm-core": {"kernel", "memory", "storage", MONITORING},
    "memory": {"kernel", MONITORING},
    "storage": {"kernel", MONITORING},
    "access": {"kernel", MONITORING},
    "qdrant": {"memory", "storage"},
    "minio": {"storage"},
    "model-server": {"llm-core"},
}
# Secrets the manifests may reference; the README tells operators to create each.
KNOWN_SECRETS = {"aios-s3-credentials", "aios-service-tokens", "aios-llm-api-key"}
DEV_MARKER = "dev-only"
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL")
WORKLOADS = ("Deployment", "StatefulSet")
NAME_LABEL = "app.kubernetes.io/name"
NAMESPACE_LABEL = "kubernetes.io/metadata.name"
# Kinds of CRDs: not in kubernetes-validate's schemas; the invariants check them.
CUSTOM_KINDS = {"ServiceMonitor": "monitoring.coreos.com/v1"}


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
            for probe in ("readinessProbe", "livenessProbe"):
                p = c.get(probe)
                if not p:
                    yield f"{where}: no {probe}"
                elif grpc_port is not None and p.get("grpc", {}).get("port") != grpc_port:
                    yield (f"{where}: {probe} is not a grpc probe on port {grpc_port} "
                           f"(the port named grpc), got {p}")
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
    """(workload, aios module or None, container port) that host:port reaches, or None."""
    host, _, port = host_port.rpartition(":")
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
            if selects(pdb["spec"]["selector"].get("matchLabels", {}), pod_labels(target)):
                if pdb["spec"].get("minAvailable", 0) >= h["spec"].get("minReplicas", 1):
                    yield f"{kind_name(pdb)}: minAvailable leaves no pod of {kind_name(target)} evictable"
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        match = pdb["spec"]["selector"].get("matchLabels", {})
        if not any(selects(match, pod_labels(w)) for w in of_kind(docs, *WORKLOADS)):
            yield f"{kind_name(pdb)} selects no pods"


CHECKS = (check_namespace, check_probes, check_security, check_secrets, check_services,
          check_images, check_ports, check_resources, check_network, check_metrics_ingress,
          check_single_writers, check_scaling, check_service_monitors)


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
                "NetworkPolicy", "PersistentVolumeClaim"} <= kinds, overlay


def _schema_versions() -> list[str]:
    from kubernetes_validate import utils

    return sorted({KUBERNETES_VERSION, utils.latest_version()})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_strictly(overlay):
    from kubernetes_validate import utils

    failures = []
    for version in _schema_versions():
        for doc in render(overlay):
            if doc["kind"] in CUSTOM_KINDS:
                continue  # no schema offline: check_service_monitors
            try:
                utils.validate(doc, version, strict=True)
            except utils.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                failures.append(f"{kind_name(doc)} against {version}: {path}: {exc.message}")
            except utils.SchemaNotFoundError as exc:
                failures.append(exc.message)
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
    docs = render("overlays/dev")
    for w in of_kind(docs, *WORKLOADS):
        assert w["spec"].get("replicas", 1) == 1, kind_name(w)
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


def test_prod_overlay():
    docs = render("overlays/prod")
    scaled = {"llm-core", "memory", "storage"}
    assert {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(docs, "HorizontalPodAutoscaler")} == scaled
    assert {p["spec"]["selector"]["matchLabels"][NAME_LABEL] for p in of_kind(docs, "PodDisruptionBudget")} == scaled
    for h in of_kind(docs, "HorizontalPodAutoscaler"):
        assert h["spec"]["minReplicas"] >= 2
    for name in ("kernel", "access"):
        assert find(docs, "Deployment", name)["spec"]["replicas"] == 1
    names = {d["metadata"]["name"] for d in of_kind(docs, *WORKLOADS)}
    assert "model-server" not in names
    endpoints = json.loads(configmap(docs, "aios-llm-endpoints")["data"]["endpoints.json"])
    assert endpoints and all(e["base_url"].startswith(("http://", "https://")) for e in endpoints)
    assert all(resolve(docs, re.sub(r"^https?://([^/]+).*$", r"\1", e["base_url"])) is None for e in endpoints)
    _, llm_core, _ = next(x for x in aios_containers(docs) if x[2] == "llm_core")
    env_names = {e["name"] for e in llm_core.get("env", [])}
    assert {e["api_key_env"] for e in endpoints if e.get("api_key_env")} <= env_names


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
    "access scaled out": (lambda d: find(d, "Deployment", "access")["spec"].update(replicas=2), "exactly one replica"),
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
