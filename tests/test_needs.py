"""What each syscall needs from access control: the kernel's table of
(action, resource) pairs it Checks before a call is queued."""

from __future__ import annotations

from aios.kernel.v1 import syscall_pb2 as ks
from services.access import client as access
from services.scheduler.needs import Need, needs


def _syscall(**call) -> ks.Syscall:
    return ks.Syscall(**call)


def test_syscall_needs_cover_every_call():
    n = needs("a", _syscall(llm={"model": "smollm2"}))
    assert n == [Need(access.EXECUTE, access.Resource(access.LLM, "", "smollm2"), False, "use model smollm2")]
    n = needs("a", _syscall(tool={"name": "rm"}), irreversible_tools={"rm"})
    assert (n[0].action, n[0].resource.kind, n[0].irreversible) == (access.EXECUTE, access.TOOL, True)

    def one(call, **kw):
        (need,) = needs("a", call, **kw)
        return need.action, need.resource, need.irreversible

    assert one(_syscall(memory={"get": {"id": "m1"}})) == (access.READ, access.Resource(access.MEMORY, "a", "m1"), False)
    assert one(_syscall(memory={"search": {"owner": "b", "query": "q"}})) == (
        access.READ, access.Resource(access.MEMORY, "b", ""), False)
    assert one(_syscall(memory={"add": {}})) == (access.WRITE, access.Resource(access.MEMORY, "a", ""), False)
    assert one(_syscall(memory={"update": {"owner": "b", "id": "m1"}})) == (
        access.WRITE, access.Resource(access.MEMORY, "b", "m1"), True)
    assert one(_syscall(memory={"delete": {"id": "m1"}})) == (access.DELETE, access.Resource(access.MEMORY, "a", "m1"), True)
    assert one(_syscall(storage={"read": {"owner": "b", "path": "x"}})) == (
        access.READ, access.Resource(access.FILES, "b", "x"), False)
    assert one(_syscall(storage={"write": {"path": "x"}})) == (access.WRITE, access.Resource(access.FILES, "a", "x"), False)
    assert one(_syscall(storage={"write": {"path": "x"}}), overwrite=True)[2] is True
    assert one(_syscall(storage={"write": {"path": "x", "if_version_id": "v1"}}))[2] is True
    assert one(_syscall(storage={"delete": {"path": "x"}})) == (access.DELETE, access.Resource(access.FILES, "a", "x"), True)
    assert one(_syscall(storage={"rollback": {"path": "x", "version_id": "v"}})) == (
        access.WRITE, access.Resource(access.FILES, "a", "x"), True)
    assert one(_syscall(storage={"list": {"prefix": "docs/"}})) == (
        access.READ, access.Resource(access.FILES, "a", "docs/"), False)
    assert one(_syscall(storage={"share": {"path": "docs", "grantee": "b"}}))[:2] == (
        access.WRITE, access.Resource(access.FILES, "a", "docs"))
    n = needs("a", _syscall(storage={"retrieve": {"owners": ["a", "b"], "query": "q"}}))
    assert [x.resource.owner for x in n] == ["a", "b"] and {x.action for x in n} == {access.READ}
    assert needs("a", _syscall()) == []
