"""Access control enforced on every syscall, through the real kernel with
service trust on: identities, grants, forged names, direct calls that bypass
the kernel, confirmations of irreversible operations, and the audit log."""

from __future__ import annotations

import asyncio
import grpc
import pytest
import pytest_asyncio

from aios.access.v1 import access_service_pb2 as apb
from aios.access.v1 import access_service_pb2_grpc as apb_grpc
from aios.kernel.v1 import syscall_pb2 as ks
from aios.memory.v1 import memory_service_pb2 as mpb
from aios.memory.v1 import memory_service_pb2_grpc as mpb_grpc
from aios.sdk import (
    AsyncClient, DeadlineExceededError, PermissionDeniedError, UnauthenticatedError,
)
from services.runtime import trust
from tests.conftest import kernel_config


@pytest_asyncio.fixture(scope="module")
async def world(tmp_path_factory, llm_core_addr, start_service):
    from services.access.app import build as access_build
    from services.access.config import Config as AccessConfig
    from services.memory.app import build as memory_build
    from services.memory.config import Config as MemoryConfig
    from services.scheduler.app import build as kernel_build
    from services.storage.app import build as storage_build
    from services.storage.config import Config as StorageConfig
    from services.local.seaweed import start_seaweed

    data = tmp_path_factory.mktemp("access-world")
    tokens_file = data / "service-tokens.json"
    tokens = trust.ensure_tokens_file(tokens_file)
    env = {"AIOS_SERVICE_TOKENS_FILE": str(tokens_file), "AIOS_DATA_DIR": str(data)}
    access = await start_service(access_build, AccessConfig.from_env(env))
    memory = await start_service(memory_build, MemoryConfig.from_env(
        {**env, "AIOS_MEMORY_QDRANT_PATH": str(data / "qdrant"), "AIOS_LLM_ADDR": llm_core_addr}))
    s3 = start_seaweed(data / "s3")
    storage = await start_service(storage_build, StorageConfig.from_env({
        **env, "AIOS_STORAGE_S3_ENDPOINT": s3.endpoint, "AIOS_STORAGE_S3_ACCESS_KEY": s3.access_key,
        "AIOS_STORAGE_S3_SECRET_KEY": s3.secret_key, "AIOS_STORAGE_QDRANT_PATH": str(data / "index"),
        "AIOS_LLM_ADDR": llm_core_addr}))
    access_addr, memory_addr = f"127.0.0.1:{access.port}", f"127.0.0.1:{memory.port}"
    kernel = await start_service(kernel_build, kernel_config(
        llm_core_addr, auth="access", auth_cache_seconds=0, AIOS_ACCESS_ADDR=access_addr,
        AIOS_MEMORY_ADDR=memory_addr, AIOS_STORAGE_ADDR=f"127.0.0.1:{storage.port}",
        AIOS_SERVICE_TOKENS_FILE=str(tokens_file)))
    admin_token = (data / "admin.token").read_text().strip()
    channel = grpc.aio.insecure_channel(access_addr)
    admin = apb_grpc.AccessServiceStub(channel)
    md = [("authorization", f"Bearer {admin_token}")]

    async def create(name: str) -> str:
        return (await admin.CreateAgent(apb.CreateAgentRequest(name=name, groups=["agents"]), metadata=md)).token

    yield {"kernel": f"127.0.0.1:{kernel.port}", "memory": memory_addr, "admin": admin, "md": md,
           "create": create, "tokens": tokens, "admin_token": admin_token,
           "storage": f"127.0.0.1:{storage.port}"}
    await channel.close()
    s3.stop(graceful=False)


def agent(world, token: str) -> AsyncClient:
    return AsyncClient(world["kernel"], token=token, timeout=30, retries=0)


async def test_credentials_are_required_and_checked(world):
    token = await world["create"]("alice")
    for bad in ("", "not-a-token", "aios_forged"):
        async with agent(world, bad) as c:
            with pytest.raises(UnauthenticatedError):
                await c.memory.add("x")
    async with agent(world, token) as c:
        record = await c.memory.add("alice was here")
        assert record.owner == "alice"
    # Revoked: refused at once (the kernel's cache is off in this test; it is
    # AIOS_KERNEL_AUTH_CACHE_SECONDS, 5 s by default).
    await world["admin"].RevokeAgent(apb.RevokeAgentRequest(name="alice"), metadata=world["md"])
    async with agent(world, token) as c:
        with pytest.raises(UnauthenticatedError) as exc:
            await c.memory.add("after revocation")
        assert exc.value.reason == "REVOKED_CREDENTIAL"


async def test_other_agents_memory_needs_a_grant_and_revocation_is_immediate(world):
    a_tok, b_tok = await world["create"]("ann"), await world["create"]("bob")
    async with agent(world, a_tok) as ann, agent(world, b_tok) as bob:
        secret = await bob.memory.add("bob's locker code is 4312", tags=["private"])
        attempts = [
            lambda: ann.memory.get(secret.id, owner="bob"),
            lambda: ann.memory.search("locker code", owner="bob"),
            lambda: ann.memory.list(owner="bob"),
            lambda: ann.memory.update(secret.id, content="hacked", owner="bob"),
            lambda: ann.memory.delete(secret.id, owner="bob"),
            lambda: ann.memory.add("injected into bob", owner="bob"),
        ]
        for attempt in attempts:
            with pytest.raises(PermissionDeniedError):
                await attempt()
        # A read grant: reads succeed, writes are still denied.
        grant = (await world["admin"].CreateGrant(apb.CreateGrantRequest(grant=apb.Grant(
            grantor="bob", grantee="ann", kind=apb.RESOURCE_KIND_MEMORY, permission=apb.PERMISSION_READ)),
            metadata=world["md"])).grant
        assert (await ann.memory.get(secret.id, owner="bob")).content == "bob's locker code is 4312"
        found = await ann.memory.search("what is the code of the locker", owner="bob")
        assert found and found[0].memory.id == secret.id
        for attempt in attempts[3:]:
            with pytest.raises(PermissionDeniedError):
                await attempt()
        await world["admin"].RevokeGrant(apb.RevokeGrantRequest(id=grant.id), metadata=world["md"])
        with pytest.raises(PermissionDeniedError):
            await ann.memory.get(secret.id, owner="bob")
        # bob's record is untouched by all of it.
        assert (await bob.memory.get(secret.id)).content == "bob's locker code is 4312"


async def test_a_forged_name_in_the_body_changes_nothing(world):
    tok = await world["create"]("mallory")
    victim = await world["create"]("victim")
    async with agent(world, tok) as m, agent(world, victim) as v:
        # The envelope carries no agent; a session id named after the victim
        # is only a scheduling fact, and the record lands in mallory's space.
        rec = await m.submit(ks.Syscall(session_id="victim", memory=ks.MemoryCall(
            add=mpb.AddMemoryRequest(memory=mpb.MemoryInput(content="mallory's note")))))
        assert rec.agent == "mallory" and rec.memory.add.memory.owner == "mallory"
        assert all(r.memory.owner == "victim" for r in await v.memory.search("mallory's note"))
        # The only name a body may carry is an owner, and that is checked.
        with pytest.raises(PermissionDeniedError):
            await m.memory.add("pretend to be victim", owner="victim")


async def test_services_refuse_calls_that_bypass_the_kernel(world):
    agent_token = await world["create"]("sneaky")
    async with grpc.aio.insecure_channel(world["memory"]) as ch:
        stub = mpb_grpc.MemoryServiceStub(ch)
        request = mpb.SearchMemoriesRequest(owner="bob", query="locker code", top_k=5)
        for md in ([], [("authorization", f"Bearer {agent_token}")],
                   [("authorization", f"Bearer {world['admin_token']}")]):
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.SearchMemories(request, metadata=md)
            assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Another service's credential is a service, but not one memory accepts.
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.SearchMemories(request, metadata=[("authorization", f"Bearer {world['tokens']['storage']}")])
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def _pending_confirmation(world, agent_name: str) -> apb.Confirmation:
    for _ in range(200):
        listing = await world["admin"].ListConfirmations(apb.ListConfirmationsRequest(), metadata=world["md"])
        mine = [c for c in listing.confirmations if c.agent == agent_name]
        if mine:
            return mine[0]
        await asyncio.sleep(0.05)
    raise AssertionError("no confirmation was requested")


async def test_irreversible_delete_waits_for_a_person(world):
    tok = await world["create"]("carol")
    async with agent(world, tok) as c:
        kept = await c.memory.add("carol's important fact")
        # Approved: the delete runs.
        delete = asyncio.create_task(c.memory.delete(kept.id))
        conf = await _pending_confirmation(world, "carol")
        assert "delete" in conf.summary and not delete.done()
        parked = await c.list_syscalls(state=ks.SYSCALL_STATE_AWAITING_CONFIRMATION)
        assert len(parked.syscalls) == 1
        await world["admin"].ResolveConfirmation(apb.ResolveConfirmationRequest(id=conf.id, approve=True),
                                                 metadata=world["md"])
        await delete
        with pytest.raises(Exception):
            await c.memory.get(kept.id)
        # Denied: PERMISSION_DENIED and the record is untouched.
        other = await c.memory.add("carol's other fact")
        delete = asyncio.create_task(c.memory.delete(other.id))
        conf = await _pending_confirmation(world, "carol")
        await world["admin"].ResolveConfirmation(apb.ResolveConfirmationRequest(id=conf.id, approve=False),
                                                 metadata=world["md"])
        with pytest.raises(PermissionDeniedError) as exc:
            await delete
        assert exc.value.reason == "CONFIRMATION_DENIED"
        assert (await c.memory.get(other.id)).content == "carol's other fact"
        # Nobody answers before the deadline: DEADLINE_EXCEEDED, untouched.
        # (Last: its confirmation stays pending until it expires.)
        syscall = ks.Syscall(request_id="late", memory=ks.MemoryCall(delete=mpb.DeleteMemoryRequest(id=other.id)))
        with pytest.raises(DeadlineExceededError):
            await c.submit(syscall, timeout=1.0)
        assert (await c.memory.get(other.id)).content == "carol's other fact"


async def test_the_audit_log_holds_every_decision(world):
    tok = await world["create"]("dave")
    async with agent(world, tok) as d:
        await d.memory.add("dave's fact")
        with pytest.raises(PermissionDeniedError):
            await d.memory.list(owner="bob")
    events = (await world["admin"].ListAuditEvents(apb.ListAuditEventsRequest(principal="dave", page_size=100),
                                                   metadata=world["md"])).events
    decisions = {(apb.Decision.Name(e.decision), e.resource.owner) for e in events}
    assert ("DECISION_ALLOW", "dave") in decisions and ("DECISION_DENY", "bob") in decisions
    assert all(e.reason for e in events)


async def test_other_agents_files_need_a_grant_and_sharing_grants_it(world):
    a_tok, b_tok = await world["create"]("fay"), await world["create"]("gus")
    async with agent(world, a_tok) as fay, agent(world, b_tok) as gus:
        await gus.files.write("plans/secret.txt", "gus plans to sail on Monday")
        for attempt in (lambda: fay.files.read("plans/secret.txt", owner="gus"),
                        lambda: fay.files.list("plans/", owner="gus"),
                        lambda: fay.files.search("when does gus sail", owners=["gus"]),
                        lambda: fay.files.write("plans/secret.txt", "overwritten", owner="gus"),
                        lambda: fay.files.delete("plans/secret.txt", owner="gus")):
            with pytest.raises(PermissionDeniedError):
                await attempt()
        # gus shares his plans folder, read-only, through a syscall of his own.
        share = ks.Syscall(storage=ks.StorageCall(share=ks.ShareFileRequest(
            path="plans/", grantee="fay", permission=apb.PERMISSION_READ)))
        grant = (await gus.submit(share)).storage.share
        assert grant.grantor == "gus" and grant.grantee == "fay"
        assert await fay.files.read("plans/secret.txt", owner="gus") == b"gus plans to sail on Monday"
        with pytest.raises(PermissionDeniedError):
            await fay.files.write("plans/secret.txt", "overwritten", owner="gus")
        await world["admin"].RevokeGrant(apb.RevokeGrantRequest(id=grant.id), metadata=world["md"])
        with pytest.raises(PermissionDeniedError):
            await fay.files.read("plans/secret.txt", owner="gus")
        assert await gus.files.read("plans/secret.txt") == b"gus plans to sail on Monday"


async def test_services_refuse_storage_calls_that_bypass_the_kernel(world):
    from aios.storage.v1 import storage_service_pb2 as spb
    from aios.storage.v1 import storage_service_pb2_grpc as spb_grpc

    agent_token = await world["create"]("sneaky-files")
    async with grpc.aio.insecure_channel(world["storage"]) as ch:
        stub = spb_grpc.StorageServiceStub(ch)
        for md in ([], [("authorization", f"Bearer {agent_token}")]):
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.StatFile(spb.StatFileRequest(owner="gus", path="plans/secret.txt"), metadata=md)
            assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_irreversible_file_delete_waits_for_a_person(world):
    tok = await world["create"]("hal")
    async with agent(world, tok) as hal:
        await hal.files.write("report.txt", "quarterly numbers")
        # Denied: the file is untouched.
        delete = asyncio.create_task(hal.files.delete("report.txt"))
        conf = await _pending_confirmation(world, "hal")
        await world["admin"].ResolveConfirmation(apb.ResolveConfirmationRequest(id=conf.id, approve=False),
                                                 metadata=world["md"])
        with pytest.raises(PermissionDeniedError):
            await delete
        assert await hal.files.read("report.txt") == b"quarterly numbers"
        # Overwriting waits too; approved, it happens.
        overwrite = asyncio.create_task(hal.files.write("report.txt", "revised numbers"))
        conf = await _pending_confirmation(world, "hal")
        assert "overwrite" in conf.summary
        await world["admin"].ResolveConfirmation(apb.ResolveConfirmationRequest(id=conf.id, approve=True),
                                                 metadata=world["md"])
        await overwrite
        assert await hal.files.read("report.txt") == b"revised numbers"
        # Approved delete: gone.
        delete = asyncio.create_task(hal.files.delete("report.txt"))
        conf = await _pending_confirmation(world, "hal")
        await world["admin"].ResolveConfirmation(apb.ResolveConfirmationRequest(id=conf.id, approve=True),
                                                 metadata=world["md"])
        assert await delete == 1
        with pytest.raises(Exception):
            await hal.files.read("report.txt")
        # Unanswered before the deadline: untouched. Last, because its
        # confirmation stays pending until its own expiry, and
        # _pending_confirmation would find it instead of a later one.
        await hal.files.write("report.txt", "final numbers")  # a new file: no confirmation
        syscall = ks.Syscall(storage=ks.StorageCall(delete=spb_delete("report.txt")))
        with pytest.raises(DeadlineExceededError):
            await hal.submit(syscall, timeout=1.0)
        assert await hal.files.read("report.txt") == b"final numbers"


def spb_delete(path: str):
    from aios.storage.v1 import storage_service_pb2 as spb

    return spb.DeleteFileRequest(path=path)


async def test_cancelling_a_parked_call_ends_it_and_approval_comes_too_late(world):
    from aios.sdk import CancelledError

    tok = await world["create"]("ivy")
    async with agent(world, tok) as ivy:
        kept = await ivy.memory.add("ivy keeps this")
        syscall = ks.Syscall(request_id="parked-delete",
                             memory=ks.MemoryCall(delete=mpb.DeleteMemoryRequest(id=kept.id)))
        call = asyncio.create_task(ivy.submit(syscall))
        conf = await _pending_confirmation(world, "ivy")
        cancelled = await ivy.cancel("parked-delete")
        assert cancelled.state == ks.SYSCALL_STATE_CANCELLED
        with pytest.raises(CancelledError):
            await call
        # Approving afterwards runs nothing.
        await world["admin"].ResolveConfirmation(apb.ResolveConfirmationRequest(id=conf.id, approve=True),
                                                 metadata=world["md"])
        assert (await ivy.memory.get(kept.id)).content == "ivy keeps this"
        assert (await ivy.get_syscall("parked-delete")).state == ks.SYSCALL_STATE_CANCELLED


# -- parked calls say so at once, and a timeout names the confirmation ----------------------

async def test_a_parked_call_tells_the_hook_at_once_and_runs_once_approved(world):
    from aios.sdk import PendingConfirmation

    told: list[PendingConfirmation] = []

    async def approve(pending: PendingConfirmation) -> None:
        told.append(pending)
        # The hook hears of the confirmation while it is still pending.
        listed = await world["admin"].ListConfirmations(apb.ListConfirmationsRequest(), metadata=world["md"])
        assert pending.confirmation_id in [c.id for c in listed.confirmations]
        await world["admin"].ResolveConfirmation(apb.ResolveConfirmationRequest(
            id=pending.confirmation_id, approve=True), metadata=world["md"])

    token = await world["create"]("hooked")
    async with AsyncClient(world["kernel"], token=token, timeout=30, retries=0, on_confirmation=approve) as c:
        rec = await c.memory.add("to be deleted")
        await c.memory.delete(rec.id)
        assert len(told) == 1 and told[0].resource == "memory" and told[0].syscall_id
        record = await c.get_syscall(told[0].syscall_id)
        assert record.state == ks.SYSCALL_STATE_SUCCEEDED and not record.confirmation_id


async def test_an_unanswered_confirmation_fails_with_a_typed_error_naming_it(world):
    from aios.sdk import ConfirmationTimeoutError

    told = []
    token = await world["create"]("unanswered")
    async with AsyncClient(world["kernel"], token=token, timeout=30, retries=0, on_confirmation=told.append) as c:
        rec = await c.memory.add("kept")
        with pytest.raises(ConfirmationTimeoutError) as exc:
            await c.with_options(timeout=4).memory.delete(rec.id)
        assert isinstance(exc.value, DeadlineExceededError)
        assert told and exc.value.confirmation_id == told[0].confirmation_id
        assert exc.value.reason == "CONFIRMATION_TIMEOUT"
        assert f"aios confirm approve {told[0].confirmation_id}" in exc.value.message
        assert (await c.memory.get(rec.id)).content == "kept"


async def test_the_cli_says_at_once_that_a_call_waits_and_how_to_approve_it(world, capsys, monkeypatch):
    from services.cli.main import main

    monkeypatch.delenv("AIOS_TOKEN", raising=False)
    token = await world["create"]("cli-waiter")
    async with agent(world, token) as c:
        rec = await c.memory.add("a note for the cli")
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["memory", "rm", rec.id, "--kernel", world["kernel"],
                                          "--token", token, "--timeout", "4"])
    err = capsys.readouterr().err
    assert code == 1
    waiting, error = [line for line in err.splitlines() if line]
    assert waiting.startswith("waiting: memory call") and "aios confirm approve c-" in waiting
    confirmation = waiting.split("aios confirm approve ")[1].split("`")[0]
    assert error.startswith("error: DEADLINE_EXCEEDED") and f"confirmation {confirmation}" in error


async def test_an_agent_may_not_list_another_agents_syscalls(world, capsys, monkeypatch):
    from aios.sdk import PermissionDeniedError
    from services.cli.main import main

    token = await world["create"]("nosy")
    async with agent(world, token) as c:
        with pytest.raises(PermissionDeniedError) as exc:
            await c.list_syscalls(agent="someone-else")
        assert exc.value.reason == "ADMIN_ONLY"
        assert (await c.list_syscalls(agent="nosy")).syscalls is not None  # its own: fine
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["syscalls", "--agent", "other", "--kernel", world["kernel"],
                                          "--token", token])
    assert code == 1 and "may list only its own syscalls" in capsys.readouterr().err


# Seconds each call of the run may take: the confirmation's wait ends at it,
# and the model's steps before it must fit too, also on a loaded machine.
RUN_TIMEOUT = 20


async def test_run_agent_announces_the_wait_and_reports_the_real_time(world, capsys, monkeypatch):
    from pathlib import Path

    from services.cli.main import main

    monkeypatch.delenv("AIOS_TOKEN", raising=False)
    token = await world["create"]("note-taker")
    capsys.readouterr()
    note_taker = Path(__file__).resolve().parents[1] / "examples" / "agents" / "note_taker.py"
    code = await asyncio.to_thread(main, ["run-agent", str(note_taker), "--task", "tea", "--kernel", world["kernel"],
                                          "--token", token, "--timeout", str(RUN_TIMEOUT)])
    out, err = capsys.readouterr()
    assert code == 1
    # Its revision overwrites the note: parked, announced, unanswered.
    assert "waiting: storage call" in err and "aios confirm approve c-" in err
    assert "CONFIRMATION_TIMEOUT" in err
    summary = next(line for line in err.splitlines() if line.startswith("-- "))
    seconds = float(summary.split(" steps in ")[1].split(" s")[0])
    assert seconds >= RUN_TIMEOUT - 1 and summary.endswith("failed")  # the whole run, the wait included


async def test_a_request_id_reused_for_another_call_is_refused_and_writes_nothing(world):
    from aios.sdk import InvalidArgumentError, NotFoundError

    token = await world["create"]("reuser")
    async with agent(world, token) as c:
        first = await c.files.write("dup.txt", "first", request_id="same-id")
        again = await c.files.write("dup.txt", "first", request_id="same-id")  # a retry: the first result
        assert again.version_id == first.version_id
        with pytest.raises(InvalidArgumentError) as exc:
            await c.files.write("other.txt", "second", request_id="same-id")
        assert exc.value.reason == "REQUEST_ID_REUSED" and exc.value.field == "syscall.request_id"
        assert "same-id" in exc.value.message
        with pytest.raises(NotFoundError):
            await c.files.stat("other.txt")
        assert await c.files.read("dup.txt") == b"first"


async def test_a_call_that_could_never_run_is_refused_before_anyone_is_asked(world):
    import uuid

    from aios.sdk import InvalidArgumentError, NotFoundError

    told = []
    token = await world["create"]("hasty")
    async with AsyncClient(world["kernel"], token=token, timeout=20, retries=0, on_confirmation=told.append) as c:
        with pytest.raises(InvalidArgumentError) as exc:
            await c.memory.update("not-an-id", content="x")
        assert "not a memory id" in exc.value.message
        with pytest.raises(NotFoundError):
            await c.memory.update(str(uuid.uuid4()), content="x")
        with pytest.raises(NotFoundError):
            await c.memory.delete(str(uuid.uuid4()))
        with pytest.raises(NotFoundError):
            await c.files.delete("never-written.txt")
        with pytest.raises(NotFoundError):
            await c.files.rollback("never-written.txt", version_id="v1")
    assert told == []  # nobody was asked to approve any of them
    pending = await world["admin"].ListConfirmations(apb.ListConfirmationsRequest(), metadata=world["md"])
    assert not [p for p in pending.confirmations if p.agent == "hasty"]


# -- built-in tools act as the agent that calls them ------------------------------------------

async def test_tools_obey_the_callers_group_rules(world):
    await world["admin"].PutGroup(apb.PutGroupRequest(group=apb.Group(name="tools-only", rules=[
        apb.Rule(kind=apb.RESOURCE_KIND_TOOL, actions=[apb.ACTION_EXECUTE], effect=apb.EFFECT_ALLOW)])),
        metadata=world["md"])
    reply = await world["admin"].CreateAgent(apb.CreateAgentRequest(name="toolish", groups=["tools-only"]),
                                             metadata=world["md"])
    async with agent(world, reply.token) as c:
        assert await c.tools.call("calculator", {"expression": "2+2"}) == "4"  # the rule it has
        with pytest.raises(PermissionDeniedError):
            await c.memory.add("direct")
        # Through a tool: the same rules, not the kernel's own credential.
        with pytest.raises(PermissionDeniedError):
            await c.tools.call("memory.add", {"content": "through the tool"})
        with pytest.raises(PermissionDeniedError):
            await c.tools.call("files.write", {"path": "t.txt", "content": "through the tool"})
    async with agent(world, world["admin_token"]) as admin:
        assert not (await admin.memory.list(owner="toolish")).memories
        with pytest.raises(Exception):
            await admin.files.stat("t.txt", owner="toolish")


async def test_an_overwrite_through_the_files_tool_waits_for_a_person(world):
    from aios.sdk import PendingConfirmation

    told: list[PendingConfirmation] = []

    async def deny(pending: PendingConfirmation) -> None:
        told.append(pending)
        await world["admin"].ResolveConfirmation(apb.ResolveConfirmationRequest(
            id=pending.confirmation_id, approve=False), metadata=world["md"])

    token = await world["create"]("tool-writer")
    async with AsyncClient(world["kernel"], token=token, timeout=30, retries=0, on_confirmation=deny) as c:
        created = await c.tools.call("files.write", {"path": "plan.txt", "content": "v1"}, request_id="t1")
        assert '"path": "plan.txt"' in created and not told  # a create needs nobody
        with pytest.raises(PermissionDeniedError) as exc:
            await c.tools.call("files.write", {"path": "plan.txt", "content": "v2"}, request_id="t2")
        assert exc.value.reason == "CONFIRMATION_DENIED" and len(told) == 1
        assert await c.files.read("plan.txt") == b"v1"
        # The tool's own syscalls are in the process table, as part of it.
        tool_call = await c.get_syscall("t2")
        inner = [r for r in (await c.list_syscalls()).syscalls if r.parent_id == tool_call.id]
        assert [(r.kind, r.resource) for r in inner] == [(ks.SYSCALL_KIND_STORAGE, "storage")]
        assert inner[0].state == ks.SYSCALL_STATE_FAILED


async def test_concurrent_first_writes_create_once_and_overwrite_nothing_unconfirmed(world):
    from aios.sdk import AbortedError

    async def deny(pending) -> None:  # any write that parks as an overwrite: nobody approves it
        await world["admin"].ResolveConfirmation(apb.ResolveConfirmationRequest(
            id=pending.confirmation_id, approve=False), metadata=world["md"])

    token = await world["create"]("racer")
    async with AsyncClient(world["kernel"], token=token, timeout=30, retries=0, on_confirmation=deny) as c:
        results = await asyncio.gather(*[c.files.write("race.txt", f"writer {i}") for i in range(8)],
                                       return_exceptions=True)
        created = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(created) == 1, results
        for err in refused:
            assert (isinstance(err, AbortedError) and err.reason == "FILE_EXISTS") or \
                (isinstance(err, PermissionDeniedError) and err.reason == "CONFIRMATION_DENIED"), err
        versions = await c.files.versions("race.txt")
        assert [v.version_id for v in versions] == [created[0].version_id]
