"""What a syscall needs from access control: the (action, resource) pairs the
kernel must Check before it queues the call. The kernel's own knowledge of
its syscalls, in the vocabulary of the access service's client.

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
from services.access import client as access


@dataclass(frozen=True)
class Need:
    action: str
    resource: access.Resource
    irreversible: bool = False
    # One line for the person asked to confirm.
    summary: str = ""


def _space(kind: str, action: str, owner: str, name: str, irreversible: bool, verb: str) -> Need:
    where = f"{owner}:{name}" if name else f"{owner}'s {kind}"
    return Need(action, access.Resource(kind, owner, name), irreversible, f"{verb} {kind} {where}")


def needs(agent: str, syscall: ks.Syscall, *, irreversible_tools: Collection[str] = (),
          overwrite: bool = False) -> list[Need]:
    call = syscall.WhichOneof("call")
    if call == "llm":
        model = syscall.llm.model
        return [Need(access.EXECUTE, access.Resource(access.LLM, "", model), False, f"use model {model}")]
    if call == "embed":
        # An embedding model is a model: the same rule as a chat model's.
        model = syscall.embed.model
        return [Need(access.EXECUTE, access.Resource(access.LLM, "", model), False,
                     f"embed with model {model or '(default)'}")]
    if call == "tool":
        name = syscall.tool.name
        irreversible = name in irreversible_tools
        return [Need(access.EXECUTE, access.Resource(access.TOOL, "", name), irreversible, f"run tool {name}")]
    if call == "memory":
        op = syscall.memory.WhichOneof("op")
        if op is None:
            return []
        req = getattr(syscall.memory, op)
        owner = req.owner or agent
        action, name, irreversible = {
            "add": (access.WRITE, "", False),
            "batch_add": (access.WRITE, "", False),
            "get": (access.READ, getattr(req, "id", ""), False),
            "update": (access.WRITE, getattr(req, "id", ""), True),
            "delete": (access.DELETE, getattr(req, "id", ""), True),
            "list": (access.READ, "", False),
            "search": (access.READ, "", False),
        }[op]
        return [_space(access.MEMORY, action, owner, name, irreversible, op)]
    if call == "storage":
        op = syscall.storage.WhichOneof("op")
        if op is None:
            return []
        req = getattr(syscall.storage, op)
        if op == "retrieve":
            owners = list(req.owners) or [agent]
            return [_space(access.FILES, access.READ, o, req.prefix, False, "retrieve from") for o in owners]
        if op == "share":
            # Sharing is a change to the agent's own files' rights.
            return [_space(access.FILES, access.WRITE, agent, req.path, False, f"share with {req.grantee}")]
        owner = req.owner or agent
        if op == "write":
            replaces = overwrite or bool(req.if_version_id)
            return [_space(access.FILES, access.WRITE, owner, req.path, replaces,
                           "overwrite" if replaces else "write")]
        if op == "list":
            return [_space(access.FILES, access.READ, owner, req.prefix, False, "list")]
        action, irreversible = {
            "read": (access.READ, False),
            "stat": (access.READ, False),
            "list_versions": (access.READ, False),
            "presign": (access.READ, False),
            "delete": (access.DELETE, True),
            "rollback": (access.WRITE, True),
        }[op]
        return [_space(access.FILES, action, owner, req.path, irreversible, op.replace("_", " "))]
    return []
