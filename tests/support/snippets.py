"""The documentation's code blocks as a reader runs them.

A fenced block in a shell or Python language carries a marker on the line
right before its fence:

    <!-- snippet: run -->       the runner executes it
    <!-- snippet: example -->   shown only: it starts the stack, needs a cluster,
                                an outside server or a placeholder filled in

`find_snippets` reads every fence of a Markdown file; `unclassified` names
the shell and Python ones without a valid marker. `DocSession` runs one
file's runnable snippets in document order, as one reader at one terminal
and one Python prompt would:

- each shell snippet in its own `bash` with `set -euo pipefail`; the
  variables it exports carry to the file's next snippets (shell and Python);
- a first line `make up` is dropped: the stack is already up;
- the Python snippets of a file run in turn in one Python process and one
  namespace; one whose first line is `# NAME.py` is also written to NAME.py
  (the docs show a file that way, and a later command runs it);
- the default ports in the text become the stack's (`rewrite_ports`);
- every snippet has a timeout, and its process group is killed after it.

This file is also the Python worker (`python snippets.py FD`), so it
imports nothing outside the standard library.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

SHELL_LANGS = ("sh", "bash", "console")
MARKED_LANGS = (*SHELL_LANGS, "python")
MARKS = ("run", "example")
MARKER = re.compile(r"^\s*<!--\s*snippet:\s*(\S+)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)")
TAIL_LINES = 40


@dataclass(frozen=True)
class Snippet:
    path: str            # as shown in messages
    line: int            # 1-based line of the opening fence
    lang: str
    mark: str | None     # "run", "example", another marker word, or None
    code: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def runnable(self) -> bool:
        return self.mark == "run" and self.lang in MARKED_LANGS


@dataclass(frozen=True)
class Outcome:
    snippet: Snippet
    ok: bool
    detail: str          # exit status, timeout or traceback
    output: str          # what the snippet printed (tail)

    def report(self) -> str:
        return (f"{self.snippet.where} ({self.snippet.lang}) failed: {self.detail}\n"
                f"--- snippet\n{self.snippet.code.rstrip()}\n"
                f"--- output (last {TAIL_LINES} lines)\n{self.output.rstrip()}\n")


def find_snippets(text: str, path: str) -> list[Snippet]:
    """Every fenced block of a Markdown text, with the marker before it."""
    lines = text.splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, lang = opening.group(1), opening.group(2).lower()
        marker = MARKER.match(lines[i - 1]) if i else None
        body, j = [], i + 1
        while j < len(lines) and not lines[j].strip().startswith("```"):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
            j += 1
        found.append(Snippet(path, i + 1, lang, marker.group(1) if marker else None, "\n".join(body) + "\n"))
        i = j + 1
    return found


def unclassified(snippets: list[Snippet]) -> list[str]:
    """file:line of each shell or Python fence without a run/example marker."""
    return [f"{s.where}: ```{s.lang} fence needs <!-- snippet: run --> or <!-- snippet: example -->"
            + (f" (found snippet: {s.mark})" if s.mark else "")
            for s in snippets if s.lang in MARKED_LANGS and s.mark not in MARKS]


def rewrite_ports(code: str, ports: dict[int, int]) -> str:
    """Replace each default port that follows a colon (`:50051`,
    `localhost:9464`, `127.0.0.1:50080`) with the running stack's."""
    if not ports:
        return code
    pattern = re.compile(r"(?<=:)(" + "|".join(str(p) for p in ports) + r")(?!\d)")
    return pattern.sub(lambda m: str(ports[int(m.group(1))]), code)


def shell_script(snippet: Snippet) -> str:
    """The commands of a shell snippet, without a first `make up` line and,
    for `console`, only the `$ ` lines (the rest is output)."""
    lines = snippet.code.splitlines()
    if snippet.lang == "console":
        lines = [ln[2:] for ln in lines if ln.startswith("$ ")]
    first = next((k for k, ln in enumerate(lines) if ln.strip()), None)
    if first is not None and re.match(r"^make up(\s|$)", lines[first].strip()):
        del lines[first]
    return "\n".join(lines) + "\n"


def _tail(text: str) -> str:
    return "\n".join(text.splitlines()[-TAIL_LINES:])


def _stop_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process group proc leads, SIGKILL after grace. Called
    only before proc is reaped, so its PID (the group's id) is still ours."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


class DocSession:
    """One documented file's snippets, run in order in workdir with env
    (which must give PATH); the environment a snippet exports is the next
    one's."""

    def __init__(self, workdir: Path, env: dict[str, str], ports: dict[int, int] | None = None,
                 timeout: float = 180.0) -> None:
        self.workdir = workdir
        self.env = dict(env)
        self.ports = ports or {}
        self.timeout = timeout
        self._state = workdir / ".snippet-env"
        self._python: subprocess.Popen | None = None
        self._status_fd = -1
        self._python_log = workdir / ".snippet-python.log"

    def run_all(self, snippets: list[Snippet]) -> list[Outcome]:
        try:
            return [self.run(s) for s in snippets if s.runnable]
        finally:
            self.close()

    def run(self, snippet: Snippet) -> Outcome:
        if snippet.lang == "python":
            return self._run_python(snippet)
        return self._run_shell(snippet)

    def close(self, kill: bool = False) -> None:
        """End the Python worker: at the end of its input, or killed."""
        if self._python is None:
            return
        proc, self._python = self._python, None
        os.close(self._status_fd)
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            if not kill:
                proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            kill = True
        if kill or proc.returncode is None:
            _stop_group(proc)

    # -- shell: one bash per snippet; its exported environment is saved on exit
    def _run_shell(self, snippet: Snippet) -> Outcome:
        script = ("set -euo pipefail\n"
                  f"trap 'env -0 > {shlex.quote(str(self._state))}' EXIT\n"
                  + rewrite_ports(shell_script(snippet), self.ports))
        proc = subprocess.Popen(["bash", "-c", script], cwd=self.workdir, env=self.env, text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=self.timeout)
            detail = f"exit status {proc.returncode}"
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            output, _ = proc.communicate()
            detail = f"no end within {self.timeout:.0f} s"
        if self._state.exists():
            pairs = self._state.read_bytes().decode(errors="replace").split("\0")
            self.env = dict(p.split("=", 1) for p in pairs if "=" in p)
        return Outcome(snippet, proc.returncode == 0, detail, _tail(output))

    # -- python: one worker per file, one namespace, a status line per snippet
    def _run_python(self, snippet: Snippet) -> Outcome:
        code = rewrite_ports(snippet.code, self.ports)
        named = re.match(r"#\s*([\w.-]+\.py)\s*$", code.splitlines()[0]) if code.strip() else None
        if named:
            (self.workdir / named.group(1)).write_text(code)
        if self._python is None:
            self._start_python()
        start = self._python_log.stat().st_size
        request = {"code": code, "name": snippet.where, "env": self.env}
        try:
            self._python.stdin.write(json.dumps(request) + "\n")
            self._python.stdin.flush()
            reply = self._read_status(time.monotonic() + self.timeout)
        except (BrokenPipeError, EOFError) as exc:
            reply = {"ok": False, "error": f"the Python worker ended ({exc})"}
            self.close(kill=True)
        if reply is None:
            reply = {"ok": False, "error": f"no end within {self.timeout:.0f} s"}
            self.close(kill=True)  # later snippets get a new worker (and miss this one's names)
        with open(self._python_log, "rb") as log:
            log.seek(start)
            output = log.read().decode(errors="replace")
        return Outcome(snippet, reply["ok"], reply.get("error", "").rstrip() or "ok", _tail(output))

    def _start_python(self) -> None:
        read_fd, write_fd = os.pipe()
        log = open(self._python_log, "ab")
        self._python = subprocess.Popen(  # `python` as the snippets' PATH finds it
            ["python", str(Path(__file__).resolve()), str(write_fd)], cwd=self.workdir, env=self.env,
            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, text=True,
            pass_fds=(write_fd,), start_new_session=True)
        log.close()
        os.close(write_fd)
        self._status_fd = read_fd

    def _read_status(self, deadline: float) -> dict | None:
        """The worker's reply line, or None at the deadline."""
        data = b""
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._status_fd], [], [], left)[0]:
                return None
            chunk = os.read(self._status_fd, 65536)
            if not chunk:
                raise EOFError("no reply")
            data += chunk
        return json.loads(data)


def _python_worker(status_fd: int) -> None:
    """Run each requested snippet in one namespace; answer on status_fd."""
    sys.path[0] = ""  # imports resolve as for `python` started in the folder
    namespace: dict = {"__name__": "__main__"}
    status = os.fdopen(status_fd, "w", buffering=1)
    for line in sys.stdin:
        request = json.loads(line)
        os.environ.clear()
        os.environ.update(request["env"])
        try:
            exec(compile(request["code"], request["name"], "exec"), namespace)  # noqa: S102 - the docs' own code
            reply = {"ok": True}
        except BaseException as exc:  # noqa: BLE001 - SystemExit and Ctrl-C too: the snippet's failure
            frames = traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next)  # from the snippet's frame
            reply = {"ok": False, "error": "".join(frames)}
        sys.stdout.flush()
        sys.stderr.flush()
        status.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    _python_worker(int(sys.argv[1]))
