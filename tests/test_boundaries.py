"""Services reach each other only through contracts and client modules: the
code of one service imports another's `client` module and nothing else of
it. The CLI and the local launchers are no service's part."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("scheduler", "llm_core", "memory", "storage", "access")
# Shared by every service: the server runtime.
SHARED = ("runtime",)


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return names


def _violations(package: str, allowed_packages: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((ROOT / "services" / package).rglob("*.py")):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] != "services" or len(parts) < 2:
                continue
            other = parts[1]
            if other in (package, *SHARED, *allowed_packages):
                continue
            # `from services.access import client` and `services.access.client...`
            if other in SERVICES and len(parts) >= 3 and parts[2] == "client":
                continue
            if other in SERVICES and len(parts) == 2:
                continue  # the package itself, followed by its imported names
            bad.append(f"{path.relative_to(ROOT)}: {name}")
    return bad


def test_services_use_each_other_only_through_client_modules():
    bad = [v for service in SERVICES for v in _violations(service, ())]
    assert not bad, "imports of another service's internals:\n" + "\n".join(bad)


def test_the_cli_and_launchers_import_no_service_internals():
    bad = _violations("cli", ("local",)) + _violations("local", ())
    assert not bad, "\n".join(bad)
