"""What a syscall needs from access control: the (action, resource) pairs the
kernel must Check before it queues the call.

`needs(agent, syscall)` covers every call of the Syscall envelope; the kernel
Checks each pair (all must allow; any NEEDS_CONFIRMATION parks the call) and
fills empty owners with the agent beforehand. Irreversible operations:
deletes, memory updates, file rollbacks, writes that replace an existing file
(`overwrite=True`, which only the kernel can tell, e.g. when `if_version_id`
is set or a stat found the file) and tools marked irreversible.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from aios.kernel.v1 import syscall_pb2 as ks
from services.access import model as m


@dataclass(frozen=True)
class Need:
    action: str
    resource: m.Resource
    irreversible: bool = False
    # One line for the person asked to confirm.
    summary: str = ""


def _space(kind: str, action: str, owner: str, name: str, irreversible: bool, verb: str) -> Need:
    where = f"{owner}:{name}" if name else f"{owner}'s {kind}"
    return Need(action, m.Resource(kind, owner, name), irreversible, f"{verb} {kind} {where}")


def needs(agent: str, syscall: ks.Syscall, *, irreversible_tools: Collection[str] = (),
          overwrite: bool = False) -> list[Need]:
    call = syscall.WhichOneof("call")
    if call == "llm":
        model = syscall.llm.model
        return [Need(m.EXECUTE, m.Resource(m.LLM, "", model), False, f"use model {model}")]
    if call == "tool":
        name = syscall.tool.name
        irreversible = name in irreversible_tools
        return [Need(m.EXECUTE, m.Resource(m.TOOL, "", name), irreversible, f"run tool {name}")]
    if call == "memory":
        op = syscall.memory.WhichOneof("op")
        if op is None:
            return []
        req = getattr(syscall.memory, op)
        owner = req.owner or agent
        action, name, irreversible = {
            "add": (m.WRITE, "", False),
            "batch_add": (m.WRITE, "", False),
            "get": (m.READ, getattr(req, "id", ""), False),
            "update": (m.WRITE, getattr(req, "id", ""), True),
            "delete": (m.DELETE, getattr(req, "id", ""), True),
            "list": (m.READ, "", False),
            "search": (m.READ, "", False),
        }[op]
        return [_space(m.MEMORY, action, owner, name, irreversible, op)]
    if call == "storage":
        op = syscall.storage.WhichOneof("op")
        if op is None:
            return []
        req = getattr(syscall.storage, op)
        if op == "retrieve":
            owners = list(req.owners) or [agent]
            return [_space(m.FILES, m.READ, o, req.prefix, False, "retrieve from") for o in owners]
        if op == "share":
            # Sharing is a change to the agent's own files' rights.
            return [_space(m.FILES, m.WRITE, agent, req.path, False, f"share with {req.grantee}")]
        owner = req.owner or agent
        if op == "write":
            replaces = overwrite or bool(req.if_version_id)
            return [_space(m.FILES, m.WRITE, owner, req.path, replaces,
                           "overwrite" if replaces else "write")]
        if op == "list":
            return [_space(m.FILES, m.READ, owner, req.prefix, False, "list")]
        action, irreversible = {
            "read": (m.READ, False),
            "stat": (m.READ, False),
            "list_versions": (m.READ, False),
            "presign": (m.READ, False),
            "delete": (m.DELETE, True),
            "rollback": (m.WRITE, True),
        }[op]
        return [_space(m.FILES, action, owner, req.path, irreversible, op.replace("_", " "))]
    return []
