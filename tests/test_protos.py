"""The contracts: generated stubs match protos/, and buf lint is clean."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import gen_protos  # noqa: E402


def test_generated_stubs_are_fresh(tmp_path):
    generated = gen_protos.generate(tmp_path)
    assert generated, "no protos found"
    stale = []
    for path in generated:
        rel = path.relative_to(tmp_path)
        committed = ROOT / "sdk_py" / rel
        if not committed.exists() or not filecmp.cmp(path, committed, shallow=False):
            stale.append(str(rel))
    assert not stale, f"stubs are stale, run `make protos`: {stale}"
    # Nothing generated from a proto that no longer exists lingers in the SDK.
    shipped = {p.relative_to(ROOT / "sdk_py") for p in (ROOT / "sdk_py" / "aios").rglob("*_pb2*.py*")}
    assert shipped == {p.relative_to(tmp_path) for p in generated}


def test_buf_lint_is_clean():
    buf = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    assert buf, "buf is not installed (pip install buf-bin)"
    result = subprocess.run([buf, "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_stubs_import_as_versioned_packages():
    from aios.access.v1 import access_service_pb2
    from aios.kernel.v1 import kernel_service_pb2, syscall_pb2
    from aios.llm.v1 import llm_service_pb2
    from aios.memory.v1 import memory_service_pb2
    from aios.storage.v1 import storage_service_pb2

    names = {
        kernel_service_pb2.DESCRIPTOR.services_by_name["KernelService"].full_name,
        llm_service_pb2.DESCRIPTOR.services_by_name["LlmService"].full_name,
        memory_service_pb2.DESCRIPTOR.services_by_name["MemoryService"].full_name,
        storage_service_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name,
        access_service_pb2.DESCRIPTOR.services_by_name["AccessService"].full_name,
    }
    assert names == {"aios.kernel.v1.KernelService", "aios.llm.v1.LlmService",
                     "aios.memory.v1.MemoryService", "aios.storage.v1.StorageService",
                     "aios.access.v1.AccessService"}
    calls = {f.name for f in syscall_pb2.Syscall.DESCRIPTOR.oneofs_by_name["call"].fields}
    assert calls == {"llm", "memory", "storage", "tool", "embed"}


def test_the_agents_contract_holds_nothing_of_llm_cores_own():
    """An agent's LLM call carries only what an agent may set; the kernel's
    contract does not import llm_core's, so nothing internal can leak in."""
    from aios.common.v1 import llm_pb2
    from aios.kernel.v1 import kernel_service_pb2, syscall_pb2
    from aios.llm.v1 import llm_service_pb2

    def imports(fd) -> set[str]:
        seen: set[str] = set()
        todo = [fd]
        while todo:
            for dep in todo.pop().dependencies:
                if dep.name not in seen:
                    seen.add(dep.name)
                    todo.append(dep)
        return seen

    for fd in (syscall_pb2.DESCRIPTOR, kernel_service_pb2.DESCRIPTOR):
        assert "aios/llm/v1/llm_service.proto" not in imports(fd)
    call = syscall_pb2.Syscall.DESCRIPTOR.fields_by_name["llm"].message_type
    assert call is llm_pb2.LlmCall.DESCRIPTOR
    kernel_only = {"resume", "slice_tokens", "session_id"}
    assert not kernel_only & set(call.fields_by_name)
    assert kernel_only <= set(llm_service_pb2.GenerateRequest.DESCRIPTOR.fields_by_name)
