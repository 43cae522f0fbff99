"""The documentation runs: every runnable snippet of README.md, docs/*.md and
deploy/k8s/README.md against one real `aios up` stack, so the docs cannot rot.

Each shell or Python fence carries `<!-- snippet: run -->` or
`<!-- snippet: example -->` on the line before it (tests/support/snippets.py
says how snippets run); an unmarked one fails the classification test,
naming its file and line. Per documented file, the snippets run in order in
a fresh folder holding a copy of examples/ and deploy/ and links to .venv/
and tests/. The environment is what `aios up` tells a reader to export:
.venv/bin first on PATH, AIOS_KERNEL at the stack's kernel, AIOS_DATA_DIR at
its data (the CLI's admin token), and no AIOS_TOKEN until a snippet exports
one. The ports the docs name (the `aios up` defaults) are rewritten to the
stack's, and a first `make up` line is dropped since the stack is up. While
they run, a thread plays the person in the other terminal and approves
every pending confirmation.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from services.cli.main import build_parser
from services.cli.stack import SERVICES
from tests.support.snippets import DocSession, Snippet, find_snippets, unclassified
from tests.test_e2e_stack import stack  # noqa: F401 - the `aios up` fixture, shared

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "deploy" / "k8s" / "README.md"]
COPIED = ("examples", "deploy")   # snippets run or edit what is in them
LINKED = ("tests",)               # read only (tests/test_k8s.py checks a rendering)
SNIPPET_TIMEOUT = 180.0


def _snippets(doc: Path) -> list[Snippet]:
    return find_snippets(doc.read_text(encoding="utf-8"), str(doc.relative_to(REPO)))


RUNNABLE = {doc: [s for s in _snippets(doc) if s.runnable] for doc in DOCS}


class Approver:
    """The person at the other terminal: approves every pending confirmation
    (through the access service, with the admin token) until stopped."""

    def __init__(self, access_addr: str, admin_token: str, interval: float = 0.3) -> None:
        self.access_addr, self.admin_token, self.interval = access_addr, admin_token, interval
        self.approved: list[str] = []
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="approver", daemon=True)

    def start(self) -> Approver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _loop(self) -> None:
        import grpc

        from aios.access.v1 import access_service_pb2 as pb
        from aios.access.v1 import access_service_pb2_grpc as pb_grpc

        metadata = [("authorization", f"Bearer {self.admin_token}")]
        with grpc.insecure_channel(self.access_addr) as channel:
            stub = pb_grpc.AccessServiceStub(channel)
            while not self._stop.wait(self.interval):
                try:
                    pending = stub.ListConfirmations(
                        pb.ListConfirmationsRequest(state=pb.CONFIRMATION_STATE_PENDING),
                        metadata=metadata, timeout=5)
                    for c in pending.confirmations:
                        stub.ResolveConfirmation(pb.ResolveConfirmationRequest(id=c.id, approve=True),
                                                 metadata=metadata, timeout=5)
                        self.approved.append(f"{c.agent}: {c.summary}")
                except grpc.RpcError as exc:
                    self.last_error = f"{exc.code().name}: {exc.details()}"


def _default_ports() -> dict[str, int]:
    """The ports `aios up` takes without flags: the ones the docs name."""
    up = build_parser().parse_args(["up"])
    return {**{svc: getattr(up, f"port_{svc}") for svc in SERVICES},
            "metrics": up.metrics_port, "http": up.http_port}


@pytest.fixture(scope="module")
def docs_stack(stack):  # noqa: F811 - the imported fixture
    """The stack, its ports by name, the approver; stopped by its PID at the end."""
    printed = "".join(stack["output"])
    http = re.search(r"openai door http://[\d.]+:(\d+)/v1", printed)
    assert http, printed
    ports = {**stack["ports"], "metrics": stack["metrics"], "http": int(http.group(1))}
    admin_token = (stack["data"] / "admin.token").read_text().strip()
    approver = Approver(f"127.0.0.1:{ports['access']}", admin_token).start()
    yield {**stack, "all_ports": ports, "approver": approver}
    approver.stop()
    proc = stack["proc"]
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _workdir(base: Path) -> Path:
    work = base / "work"
    work.mkdir()
    (work / ".venv").symlink_to(VENV)
    for name in COPIED:
        shutil.copytree(REPO / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in LINKED:
        (work / name).symlink_to(REPO / name)
    return work


def _snippet_env(stack_info) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOS_") and k != "PYTHONPATH"}
    env["PATH"] = os.pathsep.join([str(VENV / "bin"), env.get("PATH", "")])
    env["VIRTUAL_ENV"] = str(VENV)
    env["AIOS_KERNEL"] = f"127.0.0.1:{stack_info['all_ports']['scheduler']}"
    env["AIOS_DATA_DIR"] = str(stack_info["data"])
    return env


def test_every_shell_and_python_fence_is_marked():
    missing = [line for doc in DOCS for line in unclassified(_snippets(doc))]
    assert not missing, "unclassified snippets:\n" + "\n".join(missing)


@pytest.mark.parametrize("doc", [
    pytest.param(d, id=str(d.relative_to(REPO)), marks=pytest.mark.timeout(SNIPPET_TIMEOUT * len(RUNNABLE[d]) + 300))
    for d in DOCS if RUNNABLE[d]])
def test_runnable_snippets_run(doc, docs_stack, tmp_path):
    snippets = RUNNABLE[doc]
    defaults = _default_ports()
    ports = {defaults[name]: port for name, port in docs_stack["all_ports"].items()}
    session = DocSession(_workdir(tmp_path), _snippet_env(docs_stack), ports, timeout=SNIPPET_TIMEOUT)
    failed = [o for o in session.run_all(snippets) if not o.ok]
    approver = docs_stack["approver"]
    assert not failed, (
        f"{len(failed)} of {len(snippets)} runnable snippets failed "
        f"(confirmations approved: {len(approver.approved)}; last approver error: {approver.last_error or '-'})\n\n"
        + "\n".join(o.report() for o in failed))


SYNTHETIC = """\
# A page

<!-- snippet: run -->
```sh
export GREETING=hello
```

<!-- snippet: run -->
```sh
echo "$GREETING from :50051"
echo broken >&2
exit 3
```

<!-- snippet: run -->
```python
import os
word = os.environ["GREETING"]
```

<!-- snippet: run -->
```python
assert word == "goodbye", word
```

<!-- snippet: example -->
```sh
make up
```

```sh
echo unmarked
```

```text
output needs no marker
```
"""


def test_runner_names_the_failing_snippet_and_the_unmarked_fence(tmp_path):
    snippets = find_snippets(SYNTHETIC, "page.md")
    assert unclassified(snippets) == [
        "page.md:31: ```sh fence needs <!-- snippet: run --> or <!-- snippet: example -->"]
    env = {**os.environ, "PATH": os.pathsep.join([str(VENV / "bin"), os.environ.get("PATH", "")])}
    outcomes = DocSession(tmp_path, env, {50051: 1234}, timeout=30).run_all(snippets)
    assert [(o.snippet.line, o.ok) for o in outcomes] == [(4, True), (9, False), (16, True), (22, False)]
    shell, python = outcomes[1], outcomes[3]
    assert shell.detail == "exit status 3" and "hello from :1234" in shell.output and "broken" in shell.output
    assert shell.report().startswith("page.md:9 (sh) failed: exit status 3")
    assert "AssertionError: hello" in python.detail and 'File "page.md:22"' in python.detail
