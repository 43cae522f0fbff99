"""RecordAuditEvent over real gRPC and a real SQLite file, with service trust
on: the kernel appends events it decided itself (a soft quota limit passed);
nobody but the kernel (and an administrator) may."""

from __future__ import annotations

import grpc
from google.protobuf import timestamp_pb2

from aios.access.v1 import access_service_pb2 as pb
from services.access.client import ALLOW, LLM, AccessClient, Resource
from services.runtime import trust
from tests.test_access import access, all_events, refused  # noqa: F401


def event(principal: str = "quota-agent", **fields) -> pb.AuditEvent:
    base = dict(principal=principal, action=pb.ACTION_EXECUTE,
                resource=pb.Resource(kind=pb.RESOURCE_KIND_LLM, name="smollm2"),
                decision=pb.DECISION_ALLOW, reason="soft limit passed", syscall_id="sys-1")
    return pb.AuditEvent(**{**base, **fields})


async def test_the_kernel_records_through_its_client_and_the_log_shows_it(access):
    client = AccessClient(access.addr, access.tokens[trust.KERNEL])
    try:
        await client.record_audit("quota-a", "execute", Resource(LLM, "", "smollm2"), ALLOW,
                                  "soft token budget passed: 1200/1000", syscall_id="sys-q1")
    finally:
        await client.close()
    [e] = await all_events(access, "quota-a")
    assert (e.principal, e.action, e.resource.kind, e.resource.name, e.decision, e.reason, e.syscall_id) == (
        "quota-a", pb.ACTION_EXECUTE, pb.RESOURCE_KIND_LLM, "smollm2", pb.DECISION_ALLOW,
        "soft token budget passed: 1200/1000", "sys-q1")
    assert e.id > 0 and e.time.seconds > 0


async def test_id_and_time_are_the_services_and_the_reply_is_what_was_stored(access):
    sent = event("quota-b", id=999_999, time=timestamp_pb2.Timestamp(seconds=1), reason="memory soft limit")
    reply = await access.kernel_call("RecordAuditEvent", pb.RecordAuditEventRequest(event=sent))
    stored = reply.event
    assert stored.id != 999_999 and stored.time.seconds > 1_000_000_000
    assert (stored.principal, stored.reason, stored.decision) == ("quota-b", "memory soft limit",
                                                                  pb.DECISION_ALLOW)
    assert await all_events(access, "quota-b") == [stored]
    # Appended last: the newest event of the whole log (listing appends nothing).
    newest = (await access.admin_call("ListAuditEvents", pb.ListAuditEventsRequest(page_size=1))).events[0]
    assert newest == stored


async def test_only_the_kernel_and_admins_may_record(access):
    agent_token = await access.new_agent("rec-agent")
    request = pb.RecordAuditEventRequest(event=event("rec-agent", reason="forged by the agent"))
    # An agent's own token is no credential here.
    await refused(access.call("RecordAuditEvent", request, token=agent_token),
                  grpc.StatusCode.UNAUTHENTICATED, "UNKNOWN_CREDENTIAL")
    await refused(access.call("RecordAuditEvent", request), grpc.StatusCode.UNAUTHENTICATED,
                  "MISSING_CREDENTIAL")
    # Another service: known, but not allowed.
    for service in (trust.MEMORY, trust.STORAGE, trust.LLM_CORE):
        await refused(access.call("RecordAuditEvent", request, token=access.tokens[service]),
                      grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
    assert not any(e.reason == "forged by the agent" for e in await all_events(access, "rec-agent"))
    # An administrator may call every method.
    reply = await access.admin_call("RecordAuditEvent", pb.RecordAuditEventRequest(
        event=event("rec-agent", reason="recorded by an admin")))
    assert reply.event.id > 0


async def test_bad_events_are_invalid_and_not_appended(access):
    before = (await access.admin_call("ListAuditEvents", pb.ListAuditEventsRequest(page_size=1))).events[0]
    for bad, field in [(event(""), "event.principal"),
                       (event(action=pb.ACTION_UNSPECIFIED), "event.action"),
                       (event(decision=pb.DECISION_UNSPECIFIED), "event.decision")]:
        err = await refused(access.kernel_call("RecordAuditEvent", pb.RecordAuditEventRequest(event=bad)),
                            grpc.StatusCode.INVALID_ARGUMENT)
        assert err.field == field, err.message
    await refused(access.kernel_call("RecordAuditEvent", pb.RecordAuditEventRequest()),
                  grpc.StatusCode.INVALID_ARGUMENT)
    after = (await access.admin_call("ListAuditEvents", pb.ListAuditEventsRequest(page_size=1))).events[0]
    assert after == before
