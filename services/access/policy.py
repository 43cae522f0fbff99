"""Check decisions: pure functions over a principal, its groups and grants.

Order of evaluation:
1. An admin principal may do anything.
2. Another agent's memory or files need an unexpired grant from the owner
   covering the action (READ for reads, READ_WRITE for writes and deletes)
   and the path; without one: deny.
3. The principal's group rules decide (also for its own space and for a
   granted foreign one): of the matching rules, deny wins over confirm, confirm
   over allow; no matching rule denies.
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Iterable, Mapping

from services.access import model as m


def normalize_path(path: str) -> str:
    """A path resolved against the space's root: "a/../b" -> "b", "/x/" -> "x".
    '..' can never climb out of the root, so a prefix check is sound."""
    if not path:
        return ""
    return posixpath.normpath("/" + path).lstrip("/")


def grant_covers(grant: m.Grant, action: str, resource: m.Resource, now: float) -> bool:
    if grant.kind != resource.kind or grant.grantor != resource.owner:
        return False
    if grant.expire_time is not None and grant.expire_time <= now:
        return False
    if action == m.READ:
        pass  # READ and READ_WRITE both allow reading
    elif action in (m.WRITE, m.DELETE):
        if grant.permission != m.PERMIT_READ_WRITE:
            return False
    else:
        return False  # execute/admin on another agent's space is never granted
    prefix = normalize_path(grant.path_prefix)
    if not prefix:
        return True
    name = normalize_path(resource.name)
    return name == prefix or name.startswith(prefix + "/")


def rule_matches(rule: m.Rule, action: str, resource: m.Resource, irreversible: bool) -> bool:
    if rule.kind and rule.kind != resource.kind:
        return False
    if rule.actions and action not in rule.actions:
        return False
    if rule.irreversible_only and not irreversible:
        return False
    pattern = rule.name_pattern or "*"
    return pattern == "*" or fnmatch.fnmatchcase(resource.name, pattern)


def _describe(action: str, resource: m.Resource) -> str:
    where = resource.kind
    if resource.kind in m.SPACES:
        where = f"{resource.kind} of {resource.owner!r}"
        if resource.name:
            where += f" at {resource.name!r}"
    elif resource.name:
        where = f"{resource.kind} {resource.name!r}"
    return f"{action} on {where}"


def evaluate_rules(principal: m.Principal, action: str, resource: m.Resource, irreversible: bool,
                   groups: Mapping[str, m.Group]) -> m.Decision:
    found: dict[str, str] = {}  # effect -> the first group naming it
    for gname in principal.groups:
        group = groups.get(gname)
        if group is None:
            continue
        for rule in group.rules:
            if rule_matches(rule, action, resource, irreversible):
                found.setdefault(rule.effect, gname)
    what = _describe(action, resource)
    if m.DENY in found:
        return m.Decision(m.DENY, f"group {found[m.DENY]!r} denies {what}")
    if m.CONFIRM in found:
        note = " (irreversible)" if irreversible else ""
        return m.Decision(m.NEEDS_CONFIRMATION,
                          f"group {found[m.CONFIRM]!r} requires confirmation for {what}{note}")
    if m.ALLOW in found:
        return m.Decision(m.ALLOW, f"group {found[m.ALLOW]!r} allows {what}")
    return m.Decision(m.DENY, f"no rule of groups {list(principal.groups)} allows {what}")


def decide(principal: m.Principal, action: str, resource: m.Resource, *, irreversible: bool,
           groups: Mapping[str, m.Group], grants: Iterable[m.Grant], now: float) -> m.Decision:
    """The decision for one request; `grants` are those held by the principal."""
    if principal.kind == m.ADMIN:
        return m.Decision(m.ALLOW, f"{principal.name!r} is an administrator")
    if principal.kind != m.AGENT:
        return m.Decision(m.DENY, f"principal kind {principal.kind!r} is not subject to access rules")
    if resource.kind in m.SPACES and resource.owner != principal.name:
        grant = next((g for g in grants if g.grantee == principal.name
                      and grant_covers(g, action, resource, now)), None)
        if grant is None:
            return m.Decision(m.DENY, f"no grant from {resource.owner!r} to {principal.name!r} "
                                      f"allows {_describe(action, resource)}")
        ruled = evaluate_rules(principal, action, resource, irreversible, groups)
        return m.Decision(ruled.decision, f"{ruled.reason}; grant {grant.id}")
    return evaluate_rules(principal, action, resource, irreversible, groups)
