"""AccessControl: the access service's domain, over the store.

Each operation runs as one function in the store's worker thread (one
transaction, off the event loop); confirmations wake their waiters on the
event loop. Every Check decision, every refused credential and every
administrative change is appended to the audit log.

Replicas on one PostgreSQL database: credentials, principals and grants are
read from the database on every call, so a revocation through one replica
holds on the next call to any other. What is kept in memory (the group
rules, the administrators' token hashes, the confirmation waiters) is
refreshed when a change is heard (services/access/changes.py: within
changes.POLL seconds).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from services.access import model as m
from services.access import changes, policy, tokens
from services.access.confirmations import Waiters
from services.access.store import Store
from services.runtime import errors
from services.runtime.config import ConfigError

DEFAULT_PAGE = 100
MAX_PAGE = 1000
AUTH_RESOURCE = m.Resource(m.KERNEL, "", "Authenticate")
# A wait on a confirmation re-reads its state at least this often (guards
# against a wake-up lost to a clock step; resolution itself wakes at once).
WAIT_SLICE = 5.0


def _check_name(name: str, field: str) -> None:
    if not name:
        raise errors.InvalidArgument(f"{field} is required", field=field)
    if not m.NAME_RE.match(name):
        raise errors.InvalidArgument(
            f"{field}={name!r} must be 1-64 letters, digits, '_', '.', '-' starting with a letter or digit",
            field=field)


def _check_resource(resource: m.Resource, field: str = "resource") -> None:
    if resource.kind not in m.RESOURCE_KINDS:
        raise errors.InvalidArgument(f"{field}.kind must be set", field=f"{field}.kind")


def _check_action(action: str, field: str = "action") -> None:
    if action not in m.ACTIONS:
        raise errors.InvalidArgument(f"{field} must be set", field=field)


def _page_size(size: int) -> int:
    if size < 0:
        raise errors.InvalidArgument("page_size must not be negative", field="page_size")
    return min(size or DEFAULT_PAGE, MAX_PAGE)


def write_secret_file(path: Path, content: str) -> bool:
    """Create `path` with mode 0600 holding `content`; False if it already exists
    (it is never overwritten)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), 0o600)  # whatever the umask
        fh.write(content + "\n")
    return True


class AccessControl:
    def __init__(self, store: Store, *, confirmation_ttl: float = 300.0,
                 max_confirmation_ttl: float = 86400.0, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.confirmation_ttl = confirmation_ttl
        self.max_confirmation_ttl = max_confirmation_ttl
        self.clock = clock
        self.waiters = Waiters()
        self.wait_slice = WAIT_SLICE
        # Admin token hash -> admin name, for the synchronous authorize hook.
        self._admins: dict[str, str] = {}
        # Group rules, read on every Check; only touched in the store's thread.
        self._groups: dict[str, m.Group] | None = None
        store.subscribe(self._changed)

    def _changed(self, what: str) -> None:
        """A replica (maybe this one) changed `what` (in the store's thread)."""
        if what in (changes.GROUPS, changes.ANY):
            self._groups = None
        if what in (changes.ADMINS, changes.ANY):
            self._admins = self.store.active_token_hashes(m.ADMIN)
        if what == changes.ANY:
            self.waiters.wake_all_threadsafe()
        elif what.startswith(changes.CONFIRMATION):
            self.waiters.wake_threadsafe(what.removeprefix(changes.CONFIRMATION))

    # -- bootstrap -----------------------------------------------------------------
    async def bootstrap(self, admin_name: str, admin_token_file: Path) -> bool:
        """First start: default groups, the admin principal and its token file.
        Returns True when the admin token file was written now.

        Replicas starting together on one database take turns (a lock), so
        one of them makes the admin and its token, adopting the file if there
        is one (the same Secret mounted on every replica) and otherwise
        writing it on its own volume; the others find the token issued and
        write nothing."""
        written = await self.store.run(self._bootstrap, admin_name, admin_token_file)
        self._admins = await self.store.run(self.store.active_token_hashes, m.ADMIN)
        return written

    def _bootstrap(self, admin_name: str, token_file: Path) -> bool:
        s, now = self.store, self.clock()
        written = False
        with s.transaction():
            s.lock("access.bootstrap")
            if s.meta("groups_created") is None:
                for group in m.default_groups():
                    s.put_group(group)
                s.set_meta("groups_created", str(now))
                s.notify(changes.GROUPS)
            admin = s.principal(admin_name)
            if admin is None:
                s.insert_principal(admin_name, m.ADMIN, (m.ADMIN_GROUP,), "", now)
            elif admin.kind != m.ADMIN:
                raise ConfigError(f"the administrator name {admin_name!r} belongs to an agent")
            if s.meta("admin_token_issued") is None:
                # The file first: if the commit below fails, the next start adopts it.
                token = tokens.new_token()
                if not write_secret_file(token_file, token):
                    token = token_file.read_text(encoding="utf-8").strip()
                    if not tokens.well_formed(token):
                        raise ConfigError(f"{token_file} exists but holds no valid admin token")
                else:
                    written = True
                if s.token(tokens.hash_token(token)) is None:
                    s.insert_token(tokens.hash_token(token), admin_name, now)
                s.set_meta("admin_token_issued", str(now))
                s.notify(changes.ADMINS)
            s.append_audit(now, admin_name, m.ADMINISTER, m.Resource(m.KERNEL, "", "bootstrap"),
                           m.ALLOW, "access service started")
        self._groups = None
        return written

    def admin_name(self, token: str) -> str:
        """The administrator whose credential `token` is, "" when none."""
        if not tokens.well_formed(token):
            return ""
        return self._admins.get(tokens.hash_token(token), "")

    # -- authentication ------------------------------------------------------------
    async def authenticate(self, token: str) -> m.Principal:
        principal, refusal = await self.store.run(self._authenticate, token)
        if refusal is not None:
            raise refusal
        return principal

    def _authenticate(self, token: str) -> tuple[m.Principal | None, errors.AiosError | None]:
        s, now = self.store, self.clock()
        who, refusal = "", None
        if not token:
            refusal = errors.Unauthenticated("a token is required", reason="MISSING_CREDENTIAL")
        elif not tokens.well_formed(token):
            refusal = errors.Unauthenticated("the token is malformed", reason="MALFORMED_CREDENTIAL")
        else:
            row = s.token(tokens.hash_token(token))
            agent = None if row is None else s.principal(row["principal"], count_tokens=False)
            if row is None or agent is None:
                refusal = errors.Unauthenticated("the token is unknown", reason="UNKNOWN_CREDENTIAL")
            else:
                who = agent.name
                if row["revoke_time"] is not None or agent.revoked:
                    refusal = errors.Unauthenticated(f"the token of {agent.name!r} was revoked",
                                                     reason="REVOKED_CREDENTIAL")
                else:
                    return m.Principal(agent.name, agent.kind, agent.groups, agent.tenant), None
        with s.transaction():
            s.append_audit(now, who, "", AUTH_RESOURCE, m.DENY, refusal.message)
        return None, refusal

    # -- decisions -----------------------------------------------------------------
    async def check(self, principal_name: str, action: str, resource: m.Resource, *,
                    irreversible: bool = False, syscall_id: str = "") -> m.Decision:
        _check_name(principal_name, "principal.name")
        _check_action(action)
        _check_resource(resource)
        if resource.kind in m.SPACES and not resource.owner:
            resource = m.Resource(resource.kind, principal_name, resource.name)
        return await self.store.run(self._check, principal_name, action, resource, irreversible,
                                    syscall_id)

    def _groups_now(self) -> dict[str, m.Group]:
        # Kept only while other replicas' changes are heard (always, on SQLite).
        if self._groups is None or not self.store.hearing_changes:
            self._groups = self.store.groups()
        return self._groups

    def _check(self, name: str, action: str, resource: m.Resource, irreversible: bool,
               syscall_id: str) -> m.Decision:
        s, now = self.store, self.clock()
        # The stored principal decides, never what the caller claims it to be.
        stored = s.principal(name, count_tokens=False)
        if stored is None:
            decision = m.Decision(m.DENY, f"unknown principal {name!r}")
        elif stored.revoked:
            decision = m.Decision(m.DENY, f"principal {name!r} is revoked")
        else:
            principal = m.Principal(stored.name, stored.kind, stored.groups, stored.tenant)
            grants = (s.active_grants(now, grantor=resource.owner, grantee=name)
                      if resource.kind in m.SPACES and resource.owner != name else [])
            decision = policy.decide(principal, action, resource, irreversible=irreversible,
                                     groups=self._groups_now(), grants=grants, now=now)
        with s.transaction():
            s.append_audit(now, name, action, resource, decision.decision, decision.reason, syscall_id)
        return decision

    # -- agents ----------------------------------------------------------------------
    def _agent_or_404(self, name: str, *, lock: bool = False) -> m.Agent:
        agent = self.store.principal(name, lock=lock)
        if agent is None or agent.kind != m.AGENT:
            raise errors.NotFound(f"no agent {name!r}", reason="UNKNOWN_AGENT")
        return agent

    def _audit_admin(self, by: str, what: str, reason: str) -> None:
        self.store.append_audit(self.clock(), by, m.ADMINISTER, m.Resource(m.KERNEL, "", what),
                                m.ALLOW, reason)

    async def create_agent(self, name: str, groups: Sequence[str] = (), tenant: str = "", *,
                           by: str = "") -> tuple[m.Agent, str]:
        _check_name(name, "name")
        groups = tuple(dict.fromkeys(groups or (m.DEFAULT_AGENT_GROUP,)))
        for g in groups:
            _check_name(g, "groups")
        if len(tenant) > 64:
            raise errors.InvalidArgument("tenant is longer than 64 characters", field="tenant")
        return await self.store.run(self._create_agent, name, groups, tenant, by)

    def _create_agent(self, name: str, groups: tuple[str, ...], tenant: str, by: str):
        s, now = self.store, self.clock()
        known = self._groups_now()
        unknown = [g for g in groups if g not in known]
        if unknown:
            raise errors.InvalidArgument(f"unknown groups: {unknown}", field="groups",
                                         reason="UNKNOWN_GROUP")
        token = tokens.new_token()
        with s.transaction():
            if not s.insert_principal(name, m.AGENT, groups, tenant, now):
                raise errors.AlreadyExists(f"agent {name!r} already exists", reason="AGENT_EXISTS")
            s.insert_token(tokens.hash_token(token), name, now)
            self._audit_admin(by, f"agent/{name}", f"created agent {name!r} in groups {list(groups)}")
        return s.principal(name), token

    async def get_agent(self, name: str) -> m.Agent:
        _check_name(name, "name")
        return await self.store.run(self._agent_or_404, name)

    async def list_agents(self, page_size: int = 0, page_token: str = "") -> tuple[list[m.Agent], str]:
        size = _page_size(page_size)
        page = await self.store.run(self.store.list_principals, m.AGENT, page_token, size + 1)
        more = len(page) > size
        page = page[:size]
        return page, (page[-1].name if more else "")

    async def issue_token(self, name: str, *, by: str = "") -> str:
        """A new credential for an agent; a revoked agent becomes active again
        with only this credential (rotation = revoke, then issue)."""
        _check_name(name, "name")
        return await self.store.run(self._issue_token, name, by)

    def _issue_token(self, name: str, by: str) -> str:
        s, now = self.store, self.clock()
        token = tokens.new_token()
        with s.transaction():
            agent = self._agent_or_404(name, lock=True)
            if agent.revoked:
                s.set_revoked(name, False)
            s.insert_token(tokens.hash_token(token), name, now)
            self._audit_admin(by, f"agent/{name}", f"issued a token to agent {name!r}")
        return token

    async def revoke_agent(self, name: str, *, by: str = "") -> m.Agent:
        _check_name(name, "name")
        return await self.store.run(self._revoke_agent, name, by)

    def _revoke_agent(self, name: str, by: str) -> m.Agent:
        s, now = self.store, self.clock()
        with s.transaction():
            self._agent_or_404(name, lock=True)
            count = s.revoke_tokens(name, now)
            s.set_revoked(name, True)
            self._audit_admin(by, f"agent/{name}", f"revoked agent {name!r} ({count} tokens)")
        return s.principal(name)

    # -- groups ----------------------------------------------------------------------
    async def put_group(self, group: m.Group, *, by: str = "") -> m.Group:
        _check_name(group.name, "group.name")
        for i, rule in enumerate(group.rules):
            where = f"group.rules[{i}]"
            if rule.kind and rule.kind not in m.RESOURCE_KINDS:
                raise errors.InvalidArgument(f"{where}.kind is unknown", field=f"{where}.kind")
            for action in rule.actions:
                _check_action(action, f"{where}.actions")
            if rule.effect not in (m.ALLOW, m.DENY, m.CONFIRM):
                raise errors.InvalidArgument(f"{where}.effect must be set", field=f"{where}.effect")
        return await self.store.run(self._put_group, group, by)

    def _put_group(self, group: m.Group, by: str) -> m.Group:
        with self.store.transaction():
            self.store.put_group(group)
            self.store.notify(changes.GROUPS)
            self._audit_admin(by, f"group/{group.name}", f"put group {group.name!r} "
                                                          f"with {len(group.rules)} rules")
        self._groups = None
        return self._groups_now()[group.name]

    async def list_groups(self) -> list[m.Group]:
        return list((await self.store.run(self._groups_now)).values())

    # -- grants ----------------------------------------------------------------------
    async def create_grant(self, grantor: str, grantee: str, kind: str, path_prefix: str,
                           permission: str, expire_time: float | None, *, by: str = "") -> m.Grant:
        _check_name(grantor, "grant.grantor")
        _check_name(grantee, "grant.grantee")
        if grantor == grantee:
            raise errors.InvalidArgument("an agent needs no grant on its own space", field="grant.grantee")
        if kind not in m.SPACES:
            raise errors.InvalidArgument("grant.kind must be memory or files", field="grant.kind")
        if permission not in (m.PERMIT_READ, m.PERMIT_READ_WRITE):
            raise errors.InvalidArgument("grant.permission must be set", field="grant.permission")
        if expire_time is not None and expire_time <= self.clock():
            raise errors.InvalidArgument("grant.expire_time is in the past", field="grant.expire_time")
        grant = m.Grant(id="g-" + secrets.token_hex(6), grantor=grantor, grantee=grantee, kind=kind,
                        path_prefix=policy.normalize_path(path_prefix), permission=permission,
                        create_time=self.clock(), expire_time=expire_time)
        return await self.store.run(self._create_grant, grant, by)

    def _create_grant(self, grant: m.Grant, by: str) -> m.Grant:
        with self.store.transaction():
            for name in sorted((grant.grantor, grant.grantee)):  # one lock order for every replica
                self._agent_or_404(name, lock=True)
            self.store.insert_grant(grant)
            scope = f"{grant.kind}/{grant.path_prefix or '*'}"
            self._audit_admin(by or grant.grantor, f"grant/{grant.id}",
                              f"{grant.grantor!r} granted {grant.permission} on {scope} to {grant.grantee!r}")
        return grant

    async def get_grant(self, grant_id: str) -> m.Grant:
        grant = await self.store.run(self.store.grant, grant_id)
        if grant is None:
            raise errors.NotFound(f"no grant {grant_id!r}", reason="UNKNOWN_GRANT")
        return grant

    async def revoke_grant(self, grant_id: str, *, grantor: str = "", by: str = "") -> None:
        """Revoke a grant; with `grantor`, only one that agent gave."""
        if not grant_id:
            raise errors.InvalidArgument("id is required", field="id")
        await self.store.run(self._revoke_grant, grant_id, grantor, by)

    def _revoke_grant(self, grant_id: str, grantor: str, by: str) -> None:
        s = self.store
        with s.transaction():
            grant = s.grant(grant_id, lock=True)
            if grant is None or (grantor and grant.grantor != grantor):
                raise errors.NotFound(f"no grant {grant_id!r}", reason="UNKNOWN_GRANT")
            s.revoke_grant(grant_id, self.clock())
            self._audit_admin(by or grant.grantor, f"grant/{grant_id}", f"revoked grant {grant_id}")

    async def list_grants(self, grantor: str = "", grantee: str = "") -> list[m.Grant]:
        return await self.store.run(self.store.active_grants, self.clock(), grantor, grantee)

    # -- confirmations -----------------------------------------------------------------
    async def create_confirmation(self, agent: str, action: str, resource: m.Resource, *,
                                  summary: str = "", syscall_id: str = "",
                                  ttl: float | None = None) -> m.Confirmation:
        """Park an operation; the same agent and syscall id give back the same
        confirmation (a retried call does not ask twice)."""
        _check_name(agent, "agent")
        _check_action(action)
        _check_resource(resource)
        if ttl is None:
            ttl = self.confirmation_ttl
        if ttl <= 0:
            raise errors.InvalidArgument("ttl must be positive", field="ttl")
        if len(summary) > 4096:
            raise errors.InvalidArgument("summary is longer than 4096 characters", field="summary")
        ttl = min(ttl, self.max_confirmation_ttl)
        if resource.kind in m.SPACES and not resource.owner:
            resource = m.Resource(resource.kind, agent, resource.name)
        now = self.clock()
        conf = m.Confirmation(id="c-" + secrets.token_hex(6), agent=agent, action=action,
                              resource=resource, summary=summary, syscall_id=syscall_id,
                              state=m.PENDING, create_time=now, expire_time=now + ttl)
        return await self.store.run(self._create_confirmation, conf)

    def _create_confirmation(self, conf: m.Confirmation) -> m.Confirmation:
        s = self.store
        with s.transaction():
            # The agent's row, locked: one syscall id asked through two
            # replicas at once still makes one confirmation.
            if s.principal(conf.agent, count_tokens=False, lock=True) is None:
                raise errors.NotFound(f"no agent {conf.agent!r}", reason="UNKNOWN_AGENT")
            if conf.syscall_id:
                earlier = s.confirmation_for_syscall(conf.agent, conf.syscall_id)
                if earlier is not None:
                    return earlier
            s.insert_confirmation(conf)
        return conf

    def _expire_overdue(self) -> list[str]:
        """Marks pending confirmations past their expiry EXPIRED (in the store's thread)."""
        s, now = self.store, self.clock()
        expired = []
        with s.transaction():
            for conf in s.overdue_confirmations(now):
                if s.resolve_confirmation(conf.id, m.EXPIRED, "", now):
                    s.notify(changes.CONFIRMATION + conf.id)
                    s.append_audit(now, conf.agent, conf.action, conf.resource, m.DENY,
                                   f"confirmation {conf.id} expired unanswered", conf.syscall_id)
                    expired.append(conf.id)
        return expired

    def _read_confirmation(self, confirmation_id: str) -> tuple[m.Confirmation | None, list[str]]:
        expired = self._expire_overdue()
        return self.store.confirmation(confirmation_id), expired

    def _wake(self, ids: list[str]) -> None:
        for cid in ids:
            self.waiters.wake(cid)

    async def get_confirmation(self, confirmation_id: str) -> m.Confirmation:
        if not confirmation_id:
            raise errors.InvalidArgument("id is required", field="id")
        conf, expired = await self.store.run(self._read_confirmation, confirmation_id)
        self._wake(expired)
        if conf is None:
            raise errors.NotFound(f"no confirmation {confirmation_id!r}", reason="UNKNOWN_CONFIRMATION")
        return conf

    async def wait_confirmation(self, confirmation_id: str, timeout: float | None) -> m.Confirmation:
        """Returns once the confirmation is resolved or expired; raises
        DeadlineExceeded when `timeout` seconds pass first (None = until it expires)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            with self.waiters.watch(confirmation_id) as changed:
                conf = await self.get_confirmation(confirmation_id)
                if conf.state != m.PENDING:
                    return conf
                wait = max(conf.expire_time - self.clock(), 0.0)
                if deadline is not None:
                    left = deadline - loop.time()
                    if left <= 0:
                        raise errors.DeadlineExceeded(
                            f"confirmation {confirmation_id} is still pending", reason="CONFIRMATION_PENDING")
                    wait = min(wait, left)
                # A little past the expiry, so the re-read finds it overdue.
                try:
                    await asyncio.wait_for(changed.wait(), min(wait + 0.01, self.wait_slice))
                except (asyncio.TimeoutError, TimeoutError):
                    pass

    async def list_confirmations(self, state: str = m.PENDING) -> list[m.Confirmation]:
        def read():
            return self._expire_overdue(), self.store.list_confirmations(state)

        expired, found = await self.store.run(read)
        self._wake(expired)
        return found

    async def resolve_confirmation(self, confirmation_id: str, approve: bool, *,
                                   by: str = "") -> m.Confirmation:
        if not confirmation_id:
            raise errors.InvalidArgument("id is required", field="id")
        try:
            conf, expired = await self.store.run(self._resolve, confirmation_id, approve, by)
        finally:
            self._wake([confirmation_id])
        self._wake(expired)
        return conf

    def _resolve(self, confirmation_id: str, approve: bool, by: str):
        s, now = self.store, self.clock()
        expired = self._expire_overdue()
        state = m.APPROVED if approve else m.DENIED
        with s.transaction():
            conf = s.confirmation(confirmation_id, lock=True)
            if conf is None:
                raise errors.NotFound(f"no confirmation {confirmation_id!r}", reason="UNKNOWN_CONFIRMATION")
            if not s.resolve_confirmation(confirmation_id, state, by, now):
                raise errors.FailedPrecondition(
                    f"confirmation {confirmation_id} is {conf.state}, no longer pending",
                    reason="CONFIRMATION_NOT_PENDING")
            s.notify(changes.CONFIRMATION + confirmation_id)
            verb = "approved" if approve else "denied"
            s.append_audit(now, conf.agent, conf.action, conf.resource, m.ALLOW if approve else m.DENY,
                           f"confirmation {confirmation_id} {verb} by {by or 'an operator'}",
                           conf.syscall_id)
        return s.confirmation(confirmation_id), expired

    # -- audit ------------------------------------------------------------------------
    async def record_audit(self, principal: str, action: str, resource: m.Resource, decision: str,
                           reason: str, syscall_id: str = "") -> m.AuditEvent:
        """Append an event another party decided (the kernel's soft quota limits);
        the id and time are this service's."""
        if not principal:
            raise errors.InvalidArgument("event.principal is required", field="event.principal")
        _check_action(action, "event.action")
        if decision not in (m.ALLOW, m.DENY, m.NEEDS_CONFIRMATION):
            raise errors.InvalidArgument("event.decision must be set", field="event.decision")
        return await self.store.run(self._record_audit, principal, action, resource, decision,
                                    reason, syscall_id)

    def _record_audit(self, principal: str, action: str, resource: m.Resource, decision: str,
                      reason: str, syscall_id: str) -> m.AuditEvent:
        s, now = self.store, self.clock()
        with s.transaction():
            event_id = s.append_audit(now, principal, action, resource, decision, reason, syscall_id)
        return m.AuditEvent(event_id, now, principal, action, resource, decision, reason, syscall_id)

    async def list_audit(self, principal: str = "", page_size: int = 0,
                         page_token: str = "") -> tuple[list[m.AuditEvent], str]:
        """Newest first; page_token continues below the last id returned."""
        size = _page_size(page_size)
        before = None
        if page_token:
            try:
                before = int(page_token)
            except ValueError:
                raise errors.InvalidArgument("page_token is not valid", field="page_token") from None
        events = await self.store.run(self.store.audit_events, principal, before, size + 1)
        more = len(events) > size
        events = events[:size]
        return events, (str(events[-1].id) if more else "")

