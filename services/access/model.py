"""The access service's domain types: plain values, no grpc, no protobuf.

Enumerations are lower-case strings (what the store and the audit log hold);
services/access/convert.py maps them to and from the proto enums.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Principal kinds.
AGENT, ADMIN, SERVICE = "agent", "admin", "service"

# Resource kinds. "" in a rule = any kind.
LLM, MEMORY, FILES, TOOL, KERNEL = "llm", "memory", "files", "tool", "kernel"
RESOURCE_KINDS = (LLM, MEMORY, FILES, TOOL, KERNEL)
SPACES = (MEMORY, FILES)  # kinds owned by an agent, shareable by grants

# Actions.
READ, WRITE, DELETE, EXECUTE, ADMINISTER = "read", "write", "delete", "execute", "admin"
ACTIONS = (READ, WRITE, DELETE, EXECUTE, ADMINISTER)

# Rule effects and Check decisions.
ALLOW, DENY, CONFIRM = "allow", "deny", "confirm"
NEEDS_CONFIRMATION = "needs_confirmation"

# Grant permissions.
PERMIT_READ, PERMIT_READ_WRITE = "read", "read_write"

# Confirmation states.
PENDING, APPROVED, DENIED, EXPIRED = "pending", "approved", "denied", "expired"

DEFAULT_AGENT_GROUP = "agents"
ADMIN_GROUP = "admins"

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Principal:
    name: str
    kind: str = AGENT
    groups: tuple[str, ...] = ()
    tenant: str = ""


@dataclass(frozen=True)
class Resource:
    """An LLM model, tool or kernel function by name, or an agent's memory or
    files (owner; name = memory id or file path, "" = the whole space)."""

    kind: str
    owner: str = ""
    name: str = ""


@dataclass(frozen=True)
class Rule:
    kind: str = ""  # "" = any kind
    actions: tuple[str, ...] = ()  # () = any action
    name_pattern: str = "*"
    effect: str = ALLOW
    irreversible_only: bool = False


@dataclass(frozen=True)
class Group:
    name: str
    description: str = ""
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class Agent:
    name: str
    groups: tuple[str, ...]
    tenant: str
    create_time: float
    revoked: bool
    active_tokens: int
    kind: str = AGENT


@dataclass(frozen=True)
class Grant:
    id: str
    grantor: str
    grantee: str
    kind: str
    path_prefix: str
    permission: str
    create_time: float
    expire_time: float | None = None


@dataclass(frozen=True)
class Confirmation:
    id: str
    agent: str
    action: str
    resource: Resource
    summary: str
    syscall_id: str
    state: str
    create_time: float
    expire_time: float
    resolved_by: str = ""


@dataclass(frozen=True)
class AuditEvent:
    id: int
    time: float
    principal: str
    action: str
    resource: Resource
    decision: str
    reason: str
    syscall_id: str = ""


@dataclass(frozen=True)
class Decision:
    decision: str  # ALLOW, DENY or NEEDS_CONFIRMATION
    reason: str

    @property
    def allowed(self) -> bool:
        return self.decision == ALLOW


def default_groups() -> list[Group]:
    """Created at first start. Agents use LLMs and tools and their own memory
    and files; deleting, overwriting (irreversible writes) and irreversible
    tools wait for a person. Another agent's space needs a grant as well."""
    space_rules = []
    for kind in SPACES:
        space_rules += [
            Rule(kind, (READ, WRITE), "*", ALLOW),
            Rule(kind, (DELETE,), "*", CONFIRM),
            Rule(kind, (WRITE,), "*", CONFIRM, irreversible_only=True),
        ]
    return [
        Group(DEFAULT_AGENT_GROUP, "agents: LLMs, tools, own memory and files; "
              "irreversible operations need confirmation", (
                  Rule(LLM, (EXECUTE,), "*", ALLOW),
                  *space_rules,
                  Rule(TOOL, (EXECUTE,), "*", ALLOW),
                  Rule(TOOL, (EXECUTE,), "*", CONFIRM, irreversible_only=True),
                  Rule(KERNEL, (READ,), "*", ALLOW),
              )),
        Group(ADMIN_GROUP, "every action on every resource, without confirmation", (
            Rule("", (), "*", ALLOW),
        )),
    ]
