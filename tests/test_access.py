"""The access service over real gRPC and a real SQLite file: credentials,
grants, confirmations, the audit log, bootstrap, restarts and service trust."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from aios.access.v1 import access_service_pb2 as pb
from aios.access.v1 import access_service_pb2_grpc as pb_grpc
from services.access import model as m
from services.access.app import build
from services.access.client import AccessClient
from services.access.config import Config
from services.runtime import errors, trust
from services.runtime.server import Service, start_server
from services.runtime.status import from_rpc_error


@dataclass
class Access:
    """A running access service and the credentials to call it."""

    addr: str
    data: Path
    admin: str  # the bootstrap admin token
    tokens: dict[str, str]  # service credentials ({} = trust off)
    channel: grpc.aio.Channel
    stub: pb_grpc.AccessServiceStub

    @property
    def db(self) -> Path:
        return self.data / "access.sqlite3"

    async def call(self, method: str, request, *, token: str | None = None, agent: str = "",
                   timeout: float = 10.0):
        md = []
        if token:
            md.append(("authorization", f"Bearer {token}"))
        if agent:
            md.append(("x-aios-agent", agent))
        return await getattr(self.stub, method)(request, metadata=md, timeout=timeout)

    async def admin_call(self, method: str, request, **kw):
        return await self.call(method, request, token=self.admin, **kw)

    async def kernel_call(self, method: str, request, **kw):
        return await self.call(method, request, token=self.tokens.get(trust.KERNEL), **kw)

    async def new_agent(self, name: str, *groups: str) -> str:
        reply = await self.admin_call("CreateAgent", pb.CreateAgentRequest(name=name, groups=list(groups)))
        return reply.token

    async def check(self, who: str, action: int, kind: int, owner: str = "", name: str = "", *,
                    irreversible: bool = False, syscall_id: str = "") -> int:
        reply = await self.kernel_call("Check", pb.CheckRequest(
            principal=pb.Principal(name=who), action=action,
            resource=pb.Resource(kind=kind, owner=owner, name=name),
            irreversible=irreversible, syscall_id=syscall_id))
        return reply.decision


async def refused(awaitable, code: grpc.StatusCode, reason: str | None = None) -> errors.AiosError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await awaitable
    assert info.value.code() == code, info.value.details()
    err = from_rpc_error(info.value)
    if reason is not None:
        assert err.reason == reason, (err.reason, err.message)
    return err


def access_env(data: Path, tokens_file: Path | None = None, **extra: str) -> dict[str, str]:
    env = {"AIOS_DATA_DIR": str(data), "AIOS_ACCESS_DB_PATH": str(data / "access.sqlite3"), **extra}
    if tokens_file is not None:
        env["AIOS_SERVICE_TOKENS_FILE"] = str(tokens_file)
    return env


async def open_access(addr: str, data: Path, tokens: dict[str, str]) -> Access:
    channel = grpc.aio.insecure_channel(addr)
    admin = (data / "admin.token").read_text().strip()
    return Access(addr, data, admin, tokens, channel, pb_grpc.AccessServiceStub(channel))


@pytest_asyncio.fixture(scope="module")
async def access(tmp_path_factory, start_service):
    """One service with service trust on, shared by the tests of this module."""
    data = tmp_path_factory.mktemp("access")
    tokens = trust.ensure_tokens_file(data / "service-tokens.json")
    server = await start_service(build, Config.from_env(access_env(data, data / "service-tokens.json")))
    client = await open_access(f"127.0.0.1:{server.port}", data, tokens)
    yield client
    await client.channel.close()


# -- bootstrap ---------------------------------------------------------------------------

async def test_bootstrap_writes_admin_token_once_with_mode_0600(access):
    path = access.data / "admin.token"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for db_file in access.data.glob("access.sqlite3*"):
        assert stat.S_IMODE(os.stat(db_file).st_mode) == 0o600, db_file
    assert access.admin.startswith("aios_")
    groups = await access.admin_call("ListGroups", pb.ListGroupsRequest())
    # The service is shared by this module and test_group_rules_decide_and_admin_allows_all
    # adds a group, so only the bootstrap's own groups are checked here (that
    # they are all there is: test_state_survives_a_restart_and_the_admin_file_is_kept).
    assert {"agents", "admins"} <= {g.name for g in groups.groups}
    agents = next(g for g in groups.groups if g.name == "agents")
    assert any(r.effect == pb.EFFECT_CONFIRM and pb.ACTION_DELETE in r.actions for r in agents.rules)
    admin = await access.kernel_call("Authenticate", pb.AuthenticateRequest(token=access.admin))
    assert admin.principal.kind == pb.PRINCIPAL_KIND_ADMIN and admin.principal.name == "admin"


# -- credentials --------------------------------------------------------------------------

async def test_token_lifecycle_create_authenticate_revoke_rotate(access):
    first = await access.new_agent("life")
    who = await access.kernel_call("Authenticate", pb.AuthenticateRequest(token=first))
    assert (who.principal.name, who.principal.kind, list(who.principal.groups)) == (
        "life", pb.PRINCIPAL_KIND_AGENT, ["agents"])
    second = (await access.admin_call("IssueToken", pb.IssueTokenRequest(name="life"))).token
    assert second != first
    for token in (first, second):
        await access.kernel_call("Authenticate", pb.AuthenticateRequest(token=token))
    got = await access.admin_call("GetAgent", pb.GetAgentRequest(name="life"))
    assert got.agent.active_tokens == 2 and not got.agent.revoked

    revoked = await access.admin_call("RevokeAgent", pb.RevokeAgentRequest(name="life"))
    assert revoked.agent.revoked and revoked.agent.active_tokens == 0
    for token in (first, second):
        await refused(access.kernel_call("Authenticate", pb.AuthenticateRequest(token=token)),
                      grpc.StatusCode.UNAUTHENTICATED, "REVOKED_CREDENTIAL")
    # A revoked agent is denied even by name.
    assert await access.check("life", pb.ACTION_EXECUTE, pb.RESOURCE_KIND_LLM, name="m") == pb.DECISION_DENY

    # Rotation: a new token brings the agent back; the old ones stay dead.
    third = (await access.admin_call("IssueToken", pb.IssueTokenRequest(name="life"))).token
    who = await access.kernel_call("Authenticate", pb.AuthenticateRequest(token=third))
    assert who.principal.name == "life"
    await refused(access.kernel_call("Authenticate", pb.AuthenticateRequest(token=first)),
                  grpc.StatusCode.UNAUTHENTICATED, "REVOKED_CREDENTIAL")

    await refused(access.kernel_call("Authenticate", pb.AuthenticateRequest(token="not-a-token")),
                  grpc.StatusCode.UNAUTHENTICATED, "MALFORMED_CREDENTIAL")
    await refused(access.kernel_call("Authenticate", pb.AuthenticateRequest(token="aios_" + "A" * 43)),
                  grpc.StatusCode.UNAUTHENTICATED, "UNKNOWN_CREDENTIAL")
    await refused(access.kernel_call("Authenticate", pb.AuthenticateRequest(token="")),
                  grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIAL")


async def test_only_token_hashes_are_stored(access):
    token = await access.new_agent("hashed")
    other = (await access.admin_call("IssueToken", pb.IssueTokenRequest(name="hashed"))).token
    with sqlite3.connect(f"file:{access.db}?mode=ro", uri=True) as db:
        hashes = {row[0] for row in db.execute("SELECT hash FROM tokens WHERE principal = 'hashed'")}
        dump = "\n".join(db.iterdump())
    assert hashes == {hashlib.sha256(t.encode()).hexdigest() for t in (token, other)}
    raw = b"".join(p.read_bytes() for p in access.data.glob("access.sqlite3*"))
    for secret in (token, other, access.admin):
        assert secret not in dump and secret.encode() not in raw


async def test_agent_administration_refuses_bad_input(access):
    await access.new_agent("dup")
    await refused(access.admin_call("CreateAgent", pb.CreateAgentRequest(name="dup")),
                  grpc.StatusCode.ALREADY_EXISTS, "AGENT_EXISTS")
    err = await refused(access.admin_call("CreateAgent", pb.CreateAgentRequest(name="bad name!")),
                        grpc.StatusCode.INVALID_ARGUMENT)
    assert err.field == "name"
    err = await refused(access.admin_call("CreateAgent", pb.CreateAgentRequest(name="g", groups=["nope"])),
                        grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_GROUP")
    assert err.field == "groups"
    # Nothing half-done: the refused agent does not exist.
    await refused(access.admin_call("GetAgent", pb.GetAgentRequest(name="g")), grpc.StatusCode.NOT_FOUND)
    await refused(access.admin_call("RevokeAgent", pb.RevokeAgentRequest(name="ghost")),
                  grpc.StatusCode.NOT_FOUND, "UNKNOWN_AGENT")
    await refused(access.admin_call("GetAgent", pb.GetAgentRequest(name="admin")), grpc.StatusCode.NOT_FOUND)
    err = await refused(access.kernel_call("Check", pb.CheckRequest(
        principal=pb.Principal(name="dup"), resource=pb.Resource(kind=pb.RESOURCE_KIND_LLM))),
        grpc.StatusCode.INVALID_ARGUMENT)
    assert err.field == "action"


async def test_list_agents_pages(access):
    for i in range(3):
        await access.new_agent(f"page-{i}")
    seen, token = [], ""
    while True:
        reply = await access.admin_call("ListAgents", pb.ListAgentsRequest(page_size=2, page_token=token))
        assert len(reply.agents) <= 2
        seen += [a.name for a in reply.agents]
        token = reply.next_page_token
        if not token:
            break
    assert {"page-0", "page-1", "page-2"} <= set(seen) and seen == sorted(seen) and "admin" not in seen


# -- decisions and grants -------------------------------------------------------------------

MEM, FILES = pb.RESOURCE_KIND_MEMORY, pb.RESOURCE_KIND_FILES
R, W, D = pb.ACTION_READ, pb.ACTION_WRITE, pb.ACTION_DELETE
ALLOW, DENY, CONFIRM = pb.DECISION_ALLOW, pb.DECISION_DENY, pb.DECISION_NEEDS_CONFIRMATION


async def test_grant_matrix_read_then_write_then_revoke(access):
    await access.new_agent("ga")
    await access.new_agent("gb")

    async def matrix(kind, name="notes/x"):
        return [await access.check("ga", a, kind, "gb", name) for a in (R, W, D)]

    for kind in (MEM, FILES):
        assert await matrix(kind) == [DENY, DENY, DENY]
    # Own space by the default rules: read/write allowed, delete asks.
    assert [await access.check("ga", a, FILES, "ga", "x") for a in (R, W, D)] == [ALLOW, ALLOW, CONFIRM]
    assert await access.check("ga", W, FILES, "ga", "x", irreversible=True) == CONFIRM

    read = await access.admin_call("CreateGrant", pb.CreateGrantRequest(grant=pb.Grant(
        grantor="gb", grantee="ga", kind=MEM, permission=pb.PERMISSION_READ)))
    assert read.grant.id.startswith("g-")
    assert await matrix(MEM) == [ALLOW, DENY, DENY]
    assert await access.check("ga", R, MEM, "gb", "") == ALLOW  # search / list the whole space
    assert await matrix(FILES) == [DENY, DENY, DENY]  # memory grant, not files

    rw = await access.admin_call("CreateGrant", pb.CreateGrantRequest(grant=pb.Grant(
        grantor="gb", grantee="ga", kind=FILES, path_prefix="shared", permission=pb.PERMISSION_READ_WRITE)))
    assert await matrix(FILES, "shared/doc.txt") == [ALLOW, ALLOW, CONFIRM]
    assert await matrix(FILES, "private/doc.txt") == [DENY, DENY, DENY]
    assert await matrix(FILES, "shared/../private/doc.txt") == [DENY, DENY, DENY]
    # The grant is one way.
    assert await access.check("gb", R, MEM, "ga", "x") == DENY

    listed = await access.admin_call("ListGrants", pb.ListGrantsRequest(grantee="ga"))
    assert {g.id for g in listed.grants} == {read.grant.id, rw.grant.id}

    await access.admin_call("RevokeGrant", pb.RevokeGrantRequest(id=read.grant.id))
    assert await matrix(MEM) == [DENY, DENY, DENY]  # at once
    await access.admin_call("RevokeGrant", pb.RevokeGrantRequest(id=rw.grant.id))
    assert await matrix(FILES, "shared/doc.txt") == [DENY, DENY, DENY]
    await refused(access.admin_call("RevokeGrant", pb.RevokeGrantRequest(id=rw.grant.id)),
                  grpc.StatusCode.NOT_FOUND, "UNKNOWN_GRANT")
    assert not (await access.admin_call("ListGrants", pb.ListGrantsRequest(grantee="ga"))).grants


async def test_grant_expires(access):
    await access.new_agent("ea")
    await access.new_agent("eb")
    # Expiry is wall-clock time (the service's clock is time.time, like ours).
    # Every answer is checked against when it was asked: ALLOW only before the
    # expiry, DENY only after it; however slow the machine, no fixed window.
    expire = pb.Grant(grantor="eb", grantee="ea", kind=MEM, permission=pb.PERMISSION_READ)
    expire.expire_time.FromNanoseconds(int((time.time() + 2.0) * 1e9))
    expires_at = expire.expire_time.ToNanoseconds() / 1e9
    await access.admin_call("CreateGrant", pb.CreateGrantRequest(grant=expire))
    deadline = time.monotonic() + 15
    while True:
        asked = time.time()
        decision = await access.check("ea", R, MEM, "eb", "m1")
        answered = time.time()
        if decision == ALLOW:
            assert asked < expires_at, "allowed after the grant expired"
        else:  # a grant that never worked fails here: denied before its expiry
            assert decision == DENY and answered >= expires_at, (decision, "denied before the grant expired")
            break
        assert time.monotonic() < deadline, "the grant never expired"
        await asyncio.sleep(0.05)
    assert not (await access.admin_call("ListGrants", pb.ListGrantsRequest(grantee="ea"))).grants

    past = pb.Grant(grantor="eb", grantee="ea", kind=MEM, permission=pb.PERMISSION_READ)
    past.expire_time.FromNanoseconds(int((time.time() - 1) * 1e9))
    err = await refused(access.admin_call("CreateGrant", pb.CreateGrantRequest(grant=past)),
                        grpc.StatusCode.INVALID_ARGUMENT)
    assert err.field == "grant.expire_time"
    for bad, field in [
        (pb.Grant(grantor="eb", grantee="ea", kind=pb.RESOURCE_KIND_LLM, permission=pb.PERMISSION_READ),
         "grant.kind"),
        (pb.Grant(grantor="eb", grantee="ea", kind=MEM), "grant.permission"),
        (pb.Grant(grantor="eb", grantee="eb", kind=MEM, permission=pb.PERMISSION_READ), "grant.grantee"),
    ]:
        err = await refused(access.admin_call("CreateGrant", pb.CreateGrantRequest(grant=bad)),
                            grpc.StatusCode.INVALID_ARGUMENT)
        assert err.field == field
    await refused(access.admin_call("CreateGrant", pb.CreateGrantRequest(grant=pb.Grant(
        grantor="eb", grantee="nobody", kind=MEM, permission=pb.PERMISSION_READ))), grpc.StatusCode.NOT_FOUND)


async def test_kernel_grants_only_for_the_agent_it_acts_for(access):
    await access.new_agent("sa")
    await access.new_agent("sb")
    await refused(access.kernel_call("CreateGrant", pb.CreateGrantRequest(grant=pb.Grant(
        grantor="sb", grantee="sa", kind=FILES, permission=pb.PERMISSION_READ)), agent="sa"),
        grpc.StatusCode.PERMISSION_DENIED, "NOT_GRANTOR")
    # An empty grantor is the acting agent.
    shared = await access.kernel_call("CreateGrant", pb.CreateGrantRequest(grant=pb.Grant(
        grantee="sb", kind=FILES, path_prefix="out", permission=pb.PERMISSION_READ)), agent="sa")
    assert shared.grant.grantor == "sa"
    assert await access.check("sb", R, FILES, "sa", "out/a") == ALLOW
    await refused(access.kernel_call("RevokeGrant", pb.RevokeGrantRequest(id=shared.grant.id), agent="sb"),
                  grpc.StatusCode.NOT_FOUND)
    await access.kernel_call("RevokeGrant", pb.RevokeGrantRequest(id=shared.grant.id), agent="sa")
    assert await access.check("sb", R, FILES, "sa", "out/a") == DENY


async def test_group_rules_decide_and_admin_allows_all(access):
    await access.admin_call("PutGroup", pb.PutGroupRequest(group=pb.Group(name="autonomous", rules=[
        pb.Rule(kind=FILES, name_pattern="tmp/*", effect=pb.EFFECT_ALLOW),
        pb.Rule(kind=pb.RESOURCE_KIND_TOOL, actions=[pb.ACTION_EXECUTE], name_pattern="shell*",
                effect=pb.EFFECT_DENY),
    ])))
    await access.new_agent("auto", "autonomous")
    assert await access.check("auto", D, FILES, "auto", "tmp/x", irreversible=True) == ALLOW
    assert await access.check("auto", D, FILES, "auto", "keep/x") == DENY
    await access.new_agent("mixed", "agents", "autonomous")
    tool = pb.RESOURCE_KIND_TOOL
    assert await access.check("mixed", pb.ACTION_EXECUTE, tool, name="shell-exec") == DENY
    assert await access.check("mixed", pb.ACTION_EXECUTE, tool, name="calc") == ALLOW
    assert await access.check("mixed", pb.ACTION_EXECUTE, tool, name="calc", irreversible=True) == CONFIRM
    assert await access.check("mixed", D, FILES, "mixed", "tmp/x") == CONFIRM  # confirm beats allow
    assert await access.check("admin", D, FILES, "anyone", "x", irreversible=True) == ALLOW
    assert await access.check("nobody-at-all", R, MEM, "nobody-at-all") == DENY
    err = await refused(access.admin_call("PutGroup", pb.PutGroupRequest(group=pb.Group(
        name="broken", rules=[pb.Rule(kind=FILES)]))), grpc.StatusCode.INVALID_ARGUMENT)
    assert err.field == "group.rules[0].effect"


# -- confirmations ------------------------------------------------------------------------

def confirmation_request(agent: str, ttl: float | None = None, syscall_id: str = "") -> pb.CreateConfirmationRequest:
    req = pb.CreateConfirmationRequest(agent=agent, action=D, resource=pb.Resource(
        kind=FILES, owner=agent, name="report.txt"), summary="delete report.txt", syscall_id=syscall_id)
    if ttl is not None:
        req.ttl.FromNanoseconds(int(ttl * 1e9))
    return req


async def test_confirmation_approved_wakes_the_waiter(access):
    await access.new_agent("ca")
    conf = (await access.kernel_call("CreateConfirmation", confirmation_request("ca"))).confirmation
    assert conf.state == pb.CONFIRMATION_STATE_PENDING and conf.id.startswith("c-")
    waiter = asyncio.ensure_future(access.kernel_call("WaitConfirmation",
                                                      pb.WaitConfirmationRequest(id=conf.id), timeout=30))
    pending = await access.admin_call("ListConfirmations", pb.ListConfirmationsRequest())
    assert conf.id in {c.id for c in pending.confirmations}
    assert not waiter.done()
    resolved = await access.admin_call("ResolveConfirmation",
                                       pb.ResolveConfirmationRequest(id=conf.id, approve=True))
    assert resolved.confirmation.state == pb.CONFIRMATION_STATE_APPROVED
    assert resolved.confirmation.resolved_by == "admin"
    done = await asyncio.wait_for(waiter, 10)
    assert done.confirmation.state == pb.CONFIRMATION_STATE_APPROVED
    await refused(access.admin_call("ResolveConfirmation", pb.ResolveConfirmationRequest(id=conf.id)),
                  grpc.StatusCode.FAILED_PRECONDITION, "CONFIRMATION_NOT_PENDING")
    # Waiting on a resolved confirmation answers at once.
    again = await access.kernel_call("WaitConfirmation", pb.WaitConfirmationRequest(id=conf.id), timeout=5)
    assert again.confirmation.state == pb.CONFIRMATION_STATE_APPROVED


async def test_confirmation_denied_and_expired_through_the_client(access):
    await access.new_agent("cd")
    client = AccessClient(access.addr, access.tokens[trust.KERNEL])
    try:
        resource = m.Resource(m.FILES, "cd", "report.txt")
        conf = await client.create_confirmation("cd", m.DELETE, resource, summary="delete", ttl=60)
        waiter = asyncio.ensure_future(client.wait_approved(conf.id, timeout=30))
        await access.admin_call("ResolveConfirmation", pb.ResolveConfirmationRequest(id=conf.id, approve=False))
        with pytest.raises(errors.PermissionDenied) as denied:
            await asyncio.wait_for(waiter, 10)
        assert denied.value.reason == "CONFIRMATION_DENIED"

        short = await client.create_confirmation("cd", m.DELETE, resource, ttl=0.3)
        with pytest.raises(errors.DeadlineExceeded) as expired:
            await client.wait_approved(short.id, timeout=30)
        assert expired.value.reason == "CONFIRMATION_EXPIRED"
        assert (await client.get_confirmation(short.id)).state == m.EXPIRED
        await refused(access.admin_call("ResolveConfirmation",
                                        pb.ResolveConfirmationRequest(id=short.id, approve=True)),
                      grpc.StatusCode.FAILED_PRECONDITION)
        listed = await access.admin_call("ListConfirmations", pb.ListConfirmationsRequest(
            state=pb.CONFIRMATION_STATE_EXPIRED))
        assert short.id in {c.id for c in listed.confirmations}
    finally:
        await client.close()


async def test_wait_ends_at_the_callers_deadline(access):
    await access.new_agent("cw")
    conf = (await access.kernel_call("CreateConfirmation", confirmation_request("cw", ttl=600))).confirmation
    started = time.monotonic()
    await refused(access.kernel_call("WaitConfirmation", pb.WaitConfirmationRequest(id=conf.id), timeout=0.3),
                  grpc.StatusCode.DEADLINE_EXCEEDED)
    assert time.monotonic() - started < 10
    still = await access.kernel_call("GetConfirmation", pb.GetConfirmationRequest(id=conf.id))
    assert still.confirmation.state == pb.CONFIRMATION_STATE_PENDING
    await refused(access.kernel_call("GetConfirmation", pb.GetConfirmationRequest(id="c-missing")),
                  grpc.StatusCode.NOT_FOUND, "UNKNOWN_CONFIRMATION")
    await refused(access.kernel_call("CreateConfirmation", confirmation_request("ghost")),
                  grpc.StatusCode.NOT_FOUND)
    bad = confirmation_request("cw")
    bad.action = pb.ACTION_UNSPECIFIED
    err = await refused(access.kernel_call("CreateConfirmation", bad), grpc.StatusCode.INVALID_ARGUMENT)
    assert err.field == "action"


async def test_confirmation_is_idempotent_per_syscall(access):
    await access.new_agent("ci")
    first = await access.kernel_call("CreateConfirmation", confirmation_request("ci", syscall_id="sys-1"))
    again = await access.kernel_call("CreateConfirmation", confirmation_request("ci", syscall_id="sys-1"))
    other = await access.kernel_call("CreateConfirmation", confirmation_request("ci", syscall_id="sys-2"))
    assert first.confirmation.id == again.confirmation.id != other.confirmation.id


# -- audit ---------------------------------------------------------------------------------

async def all_events(access: Access, principal: str) -> list[pb.AuditEvent]:
    events, token = [], ""
    while True:
        reply = await access.admin_call("ListAuditEvents", pb.ListAuditEventsRequest(
            principal=principal, page_size=3, page_token=token))
        events += reply.events
        token = reply.next_page_token
        if not token:
            return events


async def test_audit_holds_every_decision(access):
    await access.new_agent("au")
    asked = []
    for i, (action, kind, owner, name) in enumerate([
        (R, MEM, "au", ""), (D, FILES, "au", "x"), (R, FILES, "someone", "y"),
        (pb.ACTION_EXECUTE, pb.RESOURCE_KIND_LLM, "", "smollm2"),
    ]):
        decision = await access.check("au", action, kind, owner, name, syscall_id=f"s-{i}")
        asked.append((f"s-{i}", action, kind, owner, name, decision))
    await refused(access.kernel_call("Authenticate", pb.AuthenticateRequest(token="aios_" + "B" * 43)),
                  grpc.StatusCode.UNAUTHENTICATED)
    events = await all_events(access, "au")
    ids = [e.id for e in events]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)  # newest first, no repeats
    by_syscall = {e.syscall_id: e for e in events if e.syscall_id}
    for sid, action, kind, owner, name, decision in asked:
        e = by_syscall[sid]
        assert (e.action, e.resource.kind, e.resource.owner, e.resource.name, e.decision) == (
            action, kind, owner, name, decision)
        assert e.reason and e.principal == "au" and e.time.seconds > 0
    assert any(e.reason.startswith("created agent 'au'") for e in await all_events(access, "admin"))
    refusals = await all_events(access, "")
    assert any(e.resource.name == "Authenticate" and e.decision == DENY for e in refusals)

    # Append-only, even for someone holding the file.
    with sqlite3.connect(access.db) as db:
        for sql in ("UPDATE audit SET decision = 'allow'", "DELETE FROM audit"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute(sql)
    await refused(access.admin_call("ListAuditEvents", pb.ListAuditEventsRequest(page_token="x")),
                  grpc.StatusCode.INVALID_ARGUMENT)


# -- service trust ----------------------------------------------------------------------------

async def test_only_the_kernel_and_admins_are_admitted(access):
    agent_token = await access.new_agent("tr")
    req = pb.AuthenticateRequest(token=agent_token)
    await refused(access.call("Authenticate", req), grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIAL")
    await refused(access.call("Authenticate", req, token="wrong"), grpc.StatusCode.UNAUTHENTICATED,
                  "UNKNOWN_CREDENTIAL")
    # An agent calling the access service directly with its own token.
    await refused(access.call("Authenticate", req, token=agent_token), grpc.StatusCode.UNAUTHENTICATED)
    # Another service's credential: known, but not allowed here.
    await refused(access.call("Authenticate", req, token=access.tokens[trust.MEMORY]),
                  grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
    assert (await access.kernel_call("Authenticate", req)).principal.name == "tr"
    assert (await access.admin_call("Authenticate", req)).principal.name == "tr"
    # The kernel does not administer.
    await refused(access.kernel_call("CreateAgent", pb.CreateAgentRequest(name="by-kernel")),
                  grpc.StatusCode.PERMISSION_DENIED)
    await refused(access.kernel_call("ResolveConfirmation", pb.ResolveConfirmationRequest(id="c-x")),
                  grpc.StatusCode.PERMISSION_DENIED)
    await refused(access.call("ListAgents", pb.ListAgentsRequest(), token=agent_token),
                  grpc.StatusCode.UNAUTHENTICATED)
    await refused(access.call("ListAgents", pb.ListAgentsRequest()), grpc.StatusCode.UNAUTHENTICATED)


async def echo_service(authorize) -> Service:
    async def call(request, context):
        return request

    handler = grpc.method_handlers_generic_handler("test.Echo", {
        name: grpc.unary_unary_rpc_method_handler(call) for name in ("Call", "Embed")})
    return Service(names=["test.Echo"], register=lambda server: server.add_generic_rpc_handlers((handler,)),
                   authorize=authorize)


async def test_make_authorize_on_a_real_server():
    """What llm_core, memory and storage get: the kernel everywhere, memory and
    storage for Embed only."""
    tokens = {name: trust.new_token() for name in trust.SERVICES}
    server = await start_server(await echo_service(
        trust.make_authorize({trust.KERNEL}, tokens, per_method={"Embed": {trust.MEMORY, trust.STORAGE}})))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            async def call(method, token=None):
                md = [("authorization", f"Bearer {token}")] if token else []
                return await ch.unary_unary(f"/test.Echo/{method}")(b"hi", metadata=md, timeout=5)

            assert await call("Call", tokens[trust.KERNEL]) == b"hi"
            assert await call("Embed", tokens[trust.MEMORY]) == b"hi"
            assert await call("Embed", tokens[trust.STORAGE]) == b"hi"
            await refused(call("Call"), grpc.StatusCode.UNAUTHENTICATED, "MISSING_SERVICE_CREDENTIAL")
            await refused(call("Call", "aios_svc_forged"), grpc.StatusCode.UNAUTHENTICATED,
                          "UNKNOWN_SERVICE_CREDENTIAL")
            await refused(call("Call", tokens[trust.MEMORY]), grpc.StatusCode.PERMISSION_DENIED,
                          "CALLER_NOT_ALLOWED")
            await refused(call("Embed", tokens[trust.ACCESS]), grpc.StatusCode.PERMISSION_DENIED)
    finally:
        await server.stop(grace=0.1)


# -- restarts, development mode, client cache ---------------------------------------------------

async def start_access(data: Path, tokens_file: Path | None = None, **extra: str):
    server = await start_server(await build(Config.from_env(access_env(data, tokens_file, **extra))))
    tokens = trust.read_tokens_file(tokens_file) if tokens_file else {}
    return server, await open_access(f"127.0.0.1:{server.port}", data, tokens)


async def test_state_survives_a_restart_and_the_admin_file_is_kept(tmp_path):
    tokens_file = tmp_path / "service-tokens.json"
    trust.ensure_tokens_file(tokens_file)
    server, access = await start_access(tmp_path, tokens_file)
    try:
        admin_file = tmp_path / "admin.token"
        before = (admin_file.read_text(), os.stat(admin_file).st_mtime_ns)
        token = await access.new_agent("keep")
        await access.new_agent("other")
        grant = await access.admin_call("CreateGrant", pb.CreateGrantRequest(grant=pb.Grant(
            grantor="other", grantee="keep", kind=MEM, permission=pb.PERMISSION_READ)))
        conf = await access.kernel_call("CreateConfirmation", confirmation_request("keep", ttl=600))
        assert await access.check("keep", R, MEM, "other", "x", syscall_id="before") == ALLOW
    finally:
        await access.channel.close()
        await server.stop(grace=0.1)

    server, access = await start_access(tmp_path, tokens_file)
    try:
        assert (admin_file.read_text(), os.stat(admin_file).st_mtime_ns) == before
        assert access.admin == before[0].strip()
        who = await access.kernel_call("Authenticate", pb.AuthenticateRequest(token=token))
        assert who.principal.name == "keep"
        listed = await access.admin_call("ListGrants", pb.ListGrantsRequest(grantee="keep"))
        assert [g.id for g in listed.grants] == [grant.grant.id]
        assert await access.check("keep", R, MEM, "other", "x") == ALLOW
        pending = await access.admin_call("ListConfirmations", pb.ListConfirmationsRequest())
        assert conf.confirmation.id in {c.id for c in pending.confirmations}
        events = await all_events(access, "keep")
        assert any(e.syscall_id == "before" for e in events)
        groups = await access.admin_call("ListGroups", pb.ListGroupsRequest())
        assert {g.name for g in groups.groups} == {"agents", "admins"}
    finally:
        await access.channel.close()
        await server.stop(grace=0.1)


async def test_an_existing_admin_file_is_adopted_not_overwritten(tmp_path):
    from services.access import tokens as access_tokens

    mine = access_tokens.new_token()
    (tmp_path / "admin.token").write_text(mine + "\n")
    os.chmod(tmp_path / "admin.token", 0o600)
    server, access = await start_access(tmp_path)
    try:
        assert access.admin == mine
        await access.admin_call("ListAgents", pb.ListAgentsRequest())
    finally:
        await access.channel.close()
        await server.stop(grace=0.1)


async def test_trust_off_admits_kernel_calls_but_not_administration(tmp_path):
    server, access = await start_access(tmp_path)
    try:
        token = await access.new_agent("dev")
        who = await access.call("Authenticate", pb.AuthenticateRequest(token=token))
        assert who.principal.name == "dev"
        decided = await access.call("Check", pb.CheckRequest(
            principal=pb.Principal(name="dev"), action=R, resource=pb.Resource(kind=MEM, owner="dev")))
        assert decided.decision == ALLOW
        await refused(access.call("CreateAgent", pb.CreateAgentRequest(name="x")),
                      grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIAL")
        await refused(access.call("CreateAgent", pb.CreateAgentRequest(name="x"), token=token),
                      grpc.StatusCode.UNAUTHENTICATED)
    finally:
        await access.channel.close()
        await server.stop(grace=0.1)


async def test_client_caches_authentication_for_its_ttl(access):
    token = await access.new_agent("cache")
    now = [0.0]
    client = AccessClient(access.addr, access.tokens[trust.KERNEL], auth_cache_seconds=5,
                          clock=lambda: now[0])
    try:
        assert (await client.authenticate(token)).name == "cache"
        await access.admin_call("RevokeAgent", pb.RevokeAgentRequest(name="cache"))
        now[0] = 4.9  # within the cache time the kernel still knows it
        assert (await client.authenticate(token)).name == "cache"
        now[0] = 5.1
        with pytest.raises(errors.Unauthenticated) as e:
            await client.authenticate(token)
        assert e.value.reason == "REVOKED_CREDENTIAL"
        decision = await client.check("cache", m.READ, m.Resource(m.MEMORY, "cache"), syscall_id="c1")
        assert decision.decision == m.DENY and "revoked" in decision.reason
    finally:
        await client.close()


# -- the aios CLI --------------------------------------------------------------------------

async def test_cli_administers_through_the_access_service(access, capsys, monkeypatch):
    from services.cli.main import main

    monkeypatch.delenv("AIOS_ADMIN_TOKEN", raising=False)
    common = ["--access-addr", access.addr, "--data", str(access.data)]

    async def aios(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        # A blocking client: run it off the event loop the server lives on.
        code = await asyncio.to_thread(main, [*argv, *common])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = await aios("agent", "create", "cli-a")
    assert code == 0, err
    token = out.strip()
    assert (await access.kernel_call("Authenticate", pb.AuthenticateRequest(token=token))).principal.name == "cli-a"
    assert (await aios("agent", "create", "cli-b", "--group", "agents"))[0] == 0
    code, out, _ = await aios("agent", "ls")
    assert code == 0 and "cli-a" in out and "cli-b" in out

    code, out, _ = await aios("grant", "create", "--from", "cli-b", "--to", "cli-a", "--kind", "files",
                              "--path", "docs", "--write")
    grant_id = out.strip()
    assert code == 0 and grant_id.startswith("g-")
    assert await access.check("cli-a", W, FILES, "cli-b", "docs/x") == ALLOW
    code, out, _ = await aios("grant", "ls", "--to", "cli-a")
    assert grant_id in out and "read_write" in out
    assert (await aios("grant", "revoke", grant_id))[0] == 0
    assert await access.check("cli-a", W, FILES, "cli-b", "docs/x") == DENY

    first = (await access.kernel_call("CreateConfirmation", confirmation_request("cli-a"))).confirmation
    second = (await access.kernel_call("CreateConfirmation", confirmation_request("cli-b"))).confirmation
    code, out, _ = await aios("confirm", "ls")
    assert first.id in out and second.id in out and "delete report.txt" in out
    code, out, _ = await aios("confirm", "approve", first.id)
    assert code == 0 and "approved" in out
    code, out, _ = await aios("confirm", "deny", second.id)
    assert code == 0 and "denied" in out
    code, _, err = await aios("confirm", "deny", second.id)
    assert code == 1 and "FAILED_PRECONDITION" in err

    code, out, _ = await aios("audit", "--agent", "cli-a")
    assert code == 0 and "files:cli-b:docs/x" in out and f"confirmation {first.id} approved" in out
    assert (await aios("agent", "revoke", "cli-a"))[0] == 0
    await refused(access.kernel_call("Authenticate", pb.AuthenticateRequest(token=token)),
                  grpc.StatusCode.UNAUTHENTICATED, "REVOKED_CREDENTIAL")
    code, out, _ = await aios("group", "ls")
    assert code == 0 and "agents:" in out and "irreversible only" in out

    # Without an admin token the CLI says where it looked.
    code, _, err = await asyncio.to_thread(
        lambda: (main(["agent", "ls", "--access-addr", access.addr, "--data", "/nonexistent"]),
                 *capsys.readouterr()))
    assert code == 1 and "AIOS_ADMIN_TOKEN" in err


async def test_waits_release_their_wakeups(tmp_path):
    """The domain directly: concurrent waiters all wake on one resolution, and
    nothing is left registered after approvals, timeouts and expiries."""
    from services.access.control import AccessControl
    from services.access.store import Store

    store = Store(tmp_path / "a.sqlite3")
    control = AccessControl(store)
    control.wait_slice = 3600  # only a wake-up can end the waits below in time
    try:
        await control.bootstrap("admin", tmp_path / "admin.token")
        await control.create_agent("w")
        resource = m.Resource(m.FILES, "w", "f")
        conf = await control.create_confirmation("w", m.DELETE, resource, ttl=60)
        waiters = [asyncio.ensure_future(control.wait_confirmation(conf.id, 30)) for _ in range(3)]
        deadline = time.monotonic() + 10
        while len(control.waiters) == 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await control.resolve_confirmation(conf.id, True, by="admin")
        states = [c.state for c in await asyncio.wait_for(asyncio.gather(*waiters), 10)]
        assert states == [m.APPROVED] * 3
        with pytest.raises(errors.DeadlineExceeded):
            await control.wait_confirmation(
                (await control.create_confirmation("w", m.DELETE, resource, ttl=60)).id, 0.05)
        short = await control.create_confirmation("w", m.DELETE, resource, ttl=0.05)
        assert (await control.wait_confirmation(short.id, None)).state == m.EXPIRED
        assert len(control.waiters) == 0
    finally:
        store.close()
