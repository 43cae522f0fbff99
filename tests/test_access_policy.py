"""Access decisions and helpers as plain functions: the policy, the syscall
mapping the kernel uses, and the service-credential table."""

from __future__ import annotations

import json
import os
import stat

import pytest

from services.access import model as m
from services.access import policy, tokens
from services.runtime import errors, trust
from services.runtime.config import ConfigError

GROUPS = {g.name: g for g in m.default_groups()}
NOW = 1_000_000.0


def agent(name: str, *groups: str) -> m.Principal:
    return m.Principal(name, m.AGENT, groups or (m.DEFAULT_AGENT_GROUP,))


def decide(p, action, resource, grants=(), irreversible=False, groups=GROUPS):
    return policy.decide(p, action, resource, irreversible=irreversible, groups=groups,
                         grants=grants, now=NOW).decision


def grant(permission=m.PERMIT_READ, kind=m.MEMORY, prefix="", expire=None, grantor="b", grantee="a"):
    return m.Grant("g-1", grantor, grantee, kind, prefix, permission, NOW - 10, expire)


def test_own_space_by_default_rules():
    a = agent("a")
    for kind in m.SPACES:
        own = m.Resource(kind, "a", "x")
        assert decide(a, m.READ, own) == m.ALLOW
        assert decide(a, m.WRITE, own) == m.ALLOW
        assert decide(a, m.DELETE, own) == m.NEEDS_CONFIRMATION
        assert decide(a, m.WRITE, own, irreversible=True) == m.NEEDS_CONFIRMATION
        assert decide(a, m.EXECUTE, own) == m.DENY


def test_llm_tools_kernel_by_default_rules():
    a = agent("a")
    assert decide(a, m.EXECUTE, m.Resource(m.LLM, "", "smollm2")) == m.ALLOW
    assert decide(a, m.EXECUTE, m.Resource(m.TOOL, "", "calculator")) == m.ALLOW
    assert decide(a, m.EXECUTE, m.Resource(m.TOOL, "", "rm"), irreversible=True) == m.NEEDS_CONFIRMATION
    assert decide(a, m.READ, m.Resource(m.KERNEL, "", "ListSyscalls")) == m.ALLOW
    assert decide(a, m.WRITE, m.Resource(m.KERNEL, "", "SetPolicy")) == m.DENY
    # No groups, no rights.
    assert decide(m.Principal("n", m.AGENT, ()), m.EXECUTE, m.Resource(m.LLM, "", "x")) == m.DENY
    # Unknown groups give nothing either.
    assert decide(agent("n", "ghosts"), m.EXECUTE, m.Resource(m.LLM, "", "x")) == m.DENY


def test_admin_allows_everything_and_services_are_not_principals():
    admin = m.Principal("root", m.ADMIN, ())
    assert decide(admin, m.DELETE, m.Resource(m.FILES, "b", "x"), irreversible=True) == m.ALLOW
    svc = m.Principal("memory", m.SERVICE, ())
    assert decide(svc, m.READ, m.Resource(m.MEMORY, "memory", "")) == m.DENY


@pytest.mark.parametrize("kind", m.SPACES)
def test_foreign_space_needs_a_covering_grant(kind):
    a, theirs = agent("a"), m.Resource(kind, "b", "notes/x")
    for action in (m.READ, m.WRITE, m.DELETE):
        assert decide(a, action, theirs) == m.DENY
    read = [grant(m.PERMIT_READ, kind)]
    assert decide(a, m.READ, theirs, read) == m.ALLOW
    assert decide(a, m.WRITE, theirs, read) == m.DENY
    assert decide(a, m.DELETE, theirs, read) == m.DENY
    rw = [grant(m.PERMIT_READ_WRITE, kind)]
    assert decide(a, m.WRITE, theirs, rw) == m.ALLOW
    # The grant gives access; the group still asks before anything irreversible.
    assert decide(a, m.DELETE, theirs, rw) == m.NEEDS_CONFIRMATION
    assert decide(a, m.EXECUTE, theirs, rw) == m.DENY
    # A grant of the wrong kind, grantor, grantee or an expired one covers nothing.
    other = m.MEMORY if kind == m.FILES else m.FILES
    assert decide(a, m.READ, theirs, [grant(kind=other)]) == m.DENY
    assert decide(a, m.READ, theirs, [grant(kind=kind, grantor="c")]) == m.DENY
    assert decide(a, m.READ, theirs, [grant(kind=kind, grantee="c")]) == m.DENY
    assert decide(a, m.READ, theirs, [grant(kind=kind, expire=NOW)]) == m.DENY
    assert decide(a, m.READ, theirs, [grant(kind=kind, expire=NOW + 1)]) == m.ALLOW


def test_path_prefix_is_a_folder_boundary_and_dotdot_cannot_escape():
    a = agent("a")
    g = [grant(m.PERMIT_READ, m.FILES, "shared/")]
    ok = ["shared", "shared/x.txt", "/shared/deep/y", "shared/./z", "other/../shared/q"]
    bad = ["sharedX/y", "shared/../private/y", "private/y", "", "../shared2/x"]
    for path in ok:
        assert decide(a, m.READ, m.Resource(m.FILES, "b", path), g) == m.ALLOW, path
    for path in bad:
        assert decide(a, m.READ, m.Resource(m.FILES, "b", path), g) == m.DENY, path


def test_deny_wins_over_confirm_over_allow_and_a_group_can_approve():
    groups = dict(GROUPS)
    groups["no-shell"] = m.Group("no-shell", "", (m.Rule(m.TOOL, (m.EXECUTE,), "shell*", m.DENY),))
    groups["autonomous"] = m.Group("autonomous", "", (m.Rule(m.FILES, (), "tmp/*", m.ALLOW),))
    both = agent("a", m.DEFAULT_AGENT_GROUP, "no-shell")
    assert decide(both, m.EXECUTE, m.Resource(m.TOOL, "", "shell-exec"), groups=groups) == m.DENY
    assert decide(both, m.EXECUTE, m.Resource(m.TOOL, "", "calc"), groups=groups) == m.ALLOW
    free = agent("a", "autonomous")
    assert decide(free, m.DELETE, m.Resource(m.FILES, "a", "tmp/x"), groups=groups) == m.ALLOW
    assert decide(free, m.DELETE, m.Resource(m.FILES, "a", "keep/x"), groups=groups) == m.DENY
    # With the agents group as well, its confirm rule wins over the allow.
    mixed = agent("a", "autonomous", m.DEFAULT_AGENT_GROUP)
    assert decide(mixed, m.DELETE, m.Resource(m.FILES, "a", "tmp/x"), groups=groups) == m.NEEDS_CONFIRMATION


def test_reasons_name_the_rule_or_grant():
    a = agent("a")
    d = policy.decide(a, m.READ, m.Resource(m.MEMORY, "b", ""), irreversible=False, groups=GROUPS,
                      grants=[], now=NOW)
    assert d.decision == m.DENY and "no grant from 'b' to 'a'" in d.reason
    d = policy.decide(a, m.DELETE, m.Resource(m.FILES, "a", "x"), irreversible=True, groups=GROUPS,
                      grants=[], now=NOW)
    assert "requires confirmation" in d.reason and "agents" in d.reason


def test_tokens_are_random_prefixed_and_hashed():
    t1, t2 = tokens.new_token(), tokens.new_token()
    assert t1 != t2 and t1.startswith("aios_") and len(t1) == 48
    assert tokens.well_formed(t1) and not tokens.well_formed(t1[:-1]) and not tokens.well_formed("a" + t1)
    assert len(tokens.hash_token(t1)) == 64 and tokens.hash_token(t1) != tokens.hash_token(t2)


# -- service credentials ------------------------------------------------------------------

def test_tokens_file_created_once_with_mode_0600(tmp_path):
    path = tmp_path / "service-tokens.json"
    first = trust.ensure_tokens_file(path)
    assert set(first) == set(trust.SERVICES)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert trust.ensure_tokens_file(path) == first  # kept as it is
    again = trust.ensure_tokens_file(path, [*trust.SERVICES, "tools"])
    assert {k: again[k] for k in first} == first and again["tools"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_tokens_from_file_env_and_secret_files(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"scheduler": "k1", "memory": "m1"}))
    secret = tmp_path / "storage.token"
    secret.write_text("s1\n")
    env = {"AIOS_SERVICE_TOKENS_FILE": str(path), "AIOS_SERVICE_TOKEN_MEMORY": "m2",
           "AIOS_SERVICE_TOKEN_STORAGE_FILE": str(secret)}
    assert trust.load_tokens(env) == {"scheduler": "k1", "memory": "m2", "storage": "s1"}
    t = trust.Trust.from_env("memory", env)
    assert t.enabled and t.token == "m2"
    assert t.identify("k1") == "scheduler" and t.identify("m1") == "" and t.identify("") == ""
    assert not trust.Trust.from_env("memory", {}).enabled
    with pytest.raises(ConfigError):
        trust.load_tokens({"AIOS_SERVICE_TOKENS_FILE": str(tmp_path / "missing.json")})
    path.write_text("[1]")
    with pytest.raises(ConfigError):
        trust.load_tokens({"AIOS_SERVICE_TOKENS_FILE": str(path)})


def test_a_verifier_may_hold_only_the_digest():
    digest = "sha256:" + trust.digest("k1").hex()
    t = trust.Trust.from_tokens("memory", {"scheduler": digest, "memory": "m"})
    assert t.identify("k1") == "scheduler"
    with pytest.raises(ConfigError):
        trust.Trust.from_tokens("memory", {"scheduler": "sha256:zz"})


def test_authorize_hook_refuses_missing_wrong_and_unlisted_callers():
    tokens_ = {"scheduler": "k", "memory": "m", "storage": "s"}
    hook = trust.make_authorize({"scheduler"}, tokens_, per_method={"Embed": {"memory", "storage"}})

    def call(method, token=None, raw=None):
        md = [("authorization", raw if raw is not None else f"Bearer {token}")] if (token or raw) else []
        hook(method, md)

    call("/aios.llm.v1.LlmService/Generate", "k")
    call("/aios.llm.v1.LlmService/Embed", "m")
    with pytest.raises(errors.Unauthenticated) as e:
        call("/aios.llm.v1.LlmService/Generate")
    assert e.value.reason == "MISSING_SERVICE_CREDENTIAL"
    with pytest.raises(errors.Unauthenticated) as e:
        call("/aios.llm.v1.LlmService/Generate", "nope")
    assert e.value.reason == "UNKNOWN_SERVICE_CREDENTIAL"
    with pytest.raises(errors.Unauthenticated):
        call("/aios.llm.v1.LlmService/Generate", raw="Basic k")
    with pytest.raises(errors.PermissionDenied):
        call("/aios.llm.v1.LlmService/Generate", "m")
    assert trust.make_authorize({"scheduler"}, {}) is None  # trust off
    assert trust.authorize_for("memory", {}) is None
    assert trust.authorize_for("memory", {"AIOS_SERVICE_TOKEN_SCHEDULER": "k"}) is not None
