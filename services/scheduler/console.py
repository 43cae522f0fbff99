"""The operator's console at /console on the kernel's HTTP door: one page
(console.html, its CSS and JS inline, nothing fetched from elsewhere) that
polls a JSON view of the kernel every second and shows the process table,
each resource's queue, recent syscalls, the confirmations waiting for a
person (with approve and deny) and the scheduling policy (with a switch).

    GET  /console                           the page
    GET  /console/api/state                 everything the page shows
    POST /console/api/confirmations/{id}    {"approve": true|false}
    POST /console/api/policy                {"kind": "fair_share"}

Only administrators: every API call carries `Authorization: Bearer <admin
token>` (the page keeps the token in sessionStorage after its login form)
and the intake checks it as it checks any call: none or an unknown token is
401, an agent's token 403. No cookie is set, so another site cannot make an
operator's browser call the API (no CSRF), and no CORS header lets it read
an answer. The page carries a strict Content-Security-Policy (its inline
script and style admitted by a nonce) and sets everything it shows as text.

Confirmations belong to the access service; the console lists and resolves
them with the operator's own token (the kernel's service credential may
not), so the audit log names the person who approved. In development mode
(DevGate) there are none, and the state says so.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from importlib import resources
from typing import Any

from aiohttp import web

from services.runtime import errors
from services.scheduler import queues, records
from services.scheduler.auth import bearer_token
from services.scheduler.http_door import json_body

RECENT_SYSCALLS = 50
MAX_SYSCALLS = 500
_NO_STORE = {"Cache-Control": "no-store"}


def _seconds(d) -> float:
    return d.ToNanoseconds() / 1e9


def _enum(value: int, enum, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower()


def syscall_row(rec) -> dict[str, Any]:
    """A SyscallRecord (records.record) as the page shows it."""
    from aios.kernel.v1 import syscall_pb2 as ks

    return {
        "id": rec.id, "agent": rec.agent, "session_id": rec.session_id,
        "kind": _enum(rec.kind, ks.SyscallKind, "SYSCALL_KIND_"), "resource": rec.resource,
        "state": _enum(rec.state, ks.SyscallState, "SYSCALL_STATE_"),
        "waiting": _seconds(rec.waiting), "turnaround": _seconds(rec.turnaround),
        "tokens": rec.usage.total_tokens, "cost": rec.cost, "confirmation_id": rec.confirmation_id,
        "parent_id": rec.parent_id, "trace_id": rec.trace_id,
        "created": rec.create_time.ToNanoseconds() / 1e9 if rec.HasField("create_time") else 0.0,
        "error": rec.error.message if rec.HasField("error") else "",
    }


def agent_row(a) -> dict[str, Any]:
    """An AgentStats (records.agent_stats) as the page shows it."""
    return {"agent": a.agent, "running": a.running, "queued": a.queued, "completed": a.completed,
            "failed": a.failed, "prompt_tokens": a.prompt_tokens, "completion_tokens": a.completion_tokens,
            "cost": a.cost, "mean_waiting": _seconds(a.mean_waiting)}


def queue_row(q) -> dict[str, Any]:
    return {"resource": q.resource, "capacity": q.capacity, "running": q.running, "queued": q.queued,
            "held": q.held}


def confirmation_row(c) -> dict[str, Any]:
    """An access Confirmation (services/access/model.py) as the page shows it."""
    r = c.resource
    return {"id": c.id, "agent": c.agent, "action": c.action,
            "resource": ":".join(part for part in (r.kind, r.owner, r.name) if part),
            "summary": c.summary, "syscall_id": c.syscall_id, "created": c.create_time,
            "expires": c.expire_time}


class Console:
    def __init__(self, intake) -> None:
        self.intake = intake  # the same caller check as every door
        self.kernel = intake.kernel
        self.gate = intake.auth
        self._page = resources.files(__package__).joinpath("console.html").read_text(encoding="utf-8")

    def register(self, app: web.Application) -> None:
        app.router.add_get("/console", self.page)
        app.router.add_get("/console/", self.page)
        app.router.add_get("/console/api/state", self.state)
        app.router.add_post("/console/api/confirmations/{id}", self.resolve)
        app.router.add_post("/console/api/policy", self.policy)

    async def page(self, request: web.Request) -> web.Response:
        nonce = secrets.token_urlsafe(16)
        csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
               "connect-src 'self'; img-src 'self' data:; form-action 'none'; "
               "frame-ancestors 'none'; base-uri 'none'")
        return web.Response(text=self._page.replace("{{nonce}}", nonce), content_type="text/html", headers={
            **_NO_STORE, "Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"})

    async def _operator(self, request: web.Request) -> tuple[Any, str]:
        """The administrator calling, and their token; 401 or 403 otherwise.
        A token is needed even where the gate would take none (development
        mode's anonymous caller), so the page always asks for one."""
        header = request.headers.get("Authorization", "")
        token = bearer_token([("authorization", header)] if header else [])
        if not token:
            raise errors.Unauthenticated("the console needs 'Authorization: Bearer <admin token>'",
                                         reason="MISSING_CREDENTIAL")
        caller = await self.intake.caller([("authorization", header)])
        if not caller.admin:
            raise errors.PermissionDenied(
                f"{caller.name!r} is an agent: the console needs an administrator's token", reason="ADMIN_ONLY")
        return caller, token

    def _policy(self) -> dict[str, Any]:
        s = self.kernel.settings
        return {"kind": s.kind, "slice_tokens": s.slice_tokens, "aging_seconds": s.aging_seconds,
                "choices": list(queues.POLICIES)}

    async def _confirmations(self, token: str) -> tuple[list | None, str]:
        """The pending confirmations (None when there are none to have) and
        why not, when they cannot be shown."""
        try:
            pending = await self.gate.confirmations(token)
        except errors.AiosError as err:
            return None, f"the access service did not answer: {err.message}"
        if pending is None:
            return None, "development mode (AIOS_KERNEL_AUTH=dev): no call waits for a confirmation"
        return [confirmation_row(c) for c in sorted(pending, key=lambda c: c.create_time)], ""

    async def state(self, request: web.Request) -> web.Response:
        caller, token = await self._operator(request)
        try:
            limit = min(max(int(request.query.get("limit", RECENT_SYSCALLS)), 0), MAX_SYSCALLS)
        except ValueError:
            raise errors.InvalidArgument("limit must be an integer", field="limit") from None
        table = self.kernel.table
        confirmations, note = await self._confirmations(token)
        quotas = self.kernel.quotas
        return web.json_response({
            "operator": caller.name, "time": time.time(),
            "auth": self.gate.mode,
            "currency": quotas.currency if quotas is not None else "",
            "policy": self._policy(),
            "agents": [agent_row(records.agent_stats(s)) for s in table.agent_stats()],
            "queues": [queue_row(q) for q in records.queues(self.kernel.resources)],
            "syscalls": [syscall_row(records.record(e, with_output=False)) for e in table.recent()[:limit]],
            "confirmations": confirmations, "confirmations_note": note,
        }, headers=_NO_STORE)

    async def resolve(self, request: web.Request) -> web.Response:
        _, token = await self._operator(request)
        body = await json_body(request)
        if not isinstance(body.get("approve"), bool):
            raise errors.InvalidArgument("approve must be true or false", field="approve")
        conf = await self.gate.resolve(token, request.match_info["id"], body["approve"])
        return web.json_response({"id": conf.id, "state": conf.state, "resolved_by": conf.resolved_by},
                                 headers=_NO_STORE)

    async def policy(self, request: web.Request) -> web.Response:
        await self._operator(request)
        body = await json_body(request)
        kind = body.get("kind")
        if kind not in queues.POLICIES:
            raise errors.InvalidArgument(f"kind must be one of {', '.join(queues.POLICIES)}", field="kind")
        self.kernel.set_policy(dataclasses.replace(self.kernel.settings, kind=kind))
        return web.json_response({"policy": self._policy()}, headers=_NO_STORE)
