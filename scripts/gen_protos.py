"""Generate the Python stubs for every proto under protos/ into a folder.

`make protos` writes them into sdk_py/ (where they ship as `aios.<area>.v1`);
the staleness test writes them into a temporary folder and compares.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def generate(out_dir: Path) -> list[Path]:
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Packages need an __init__.py so that setuptools ships them.
    generated = []
    for proto in files:
        parts = Path(proto).parent.parts
        for depth in range(1, len(parts) + 1):
            (out_dir.joinpath(*parts[:depth]) / "__init__.py").touch()
        stem = Path(proto).with_suffix("")
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            generated.append(out_dir / f"{stem}{suffix}")
    return generated


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "sdk_py"
    for path in generate(target):
        print(path.relative_to(target))
