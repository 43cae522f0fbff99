"""Quotas through the real kernel: each limit hit, refused with its
QuotaFailure and RetryInfo, and passed again once its window resets; a group
limit shared by two agents; a soft limit that warns (audit event, metric)
and lets calls through; cost at the configured prices; counts that survive a
kernel restart; 429 with Retry-After at the HTTP door.

The LLM backend is the bench simulator (exact, known usage); memory is the
real service on embedded Qdrant; access the real service with trust on.
Windows are a few seconds long, aligned to the epoch as in production.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiohttp
import grpc
import pytest
import pytest_asyncio

from aios.access.v1 import access_service_pb2 as apb
from aios.access.v1 import access_service_pb2_grpc as apb_grpc
from aios.sdk import AsyncClient, InvalidArgumentError, PermissionDeniedError, ResourceExhaustedError
from bench.simulator import EngineConfig, SimulatorServer
from services.cli.stack import free_port
from services.runtime import trust
from tests.conftest import kernel_config
from tests.test_journal import new_database, postgres  # noqa: F401 - postgres: the fixture

MODEL = "sim"
PRICES = {"prompt": 3.0, "completion": 15.0, "cached_prompt": 0.3}  # per million tokens


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def llm_core_over(start_service, sim: SimulatorServer, prices=PRICES) -> str:
    from services.llm_core.app import build
    from services.llm_core.config import Config

    endpoints = [{"name": "sim-ep", "model": MODEL, "base_url": sim.url, "max_concurrency": 16, "prices": prices}]
    server = await start_service(build, Config.from_env({"AIOS_LLM_ENDPOINTS": json.dumps(endpoints)}))
    return f"127.0.0.1:{server.port}"


@pytest_asyncio.fixture(scope="module")
async def dev(tmp_path_factory, start_service):
    """A development-mode kernel (tokens are agent names) over the simulator
    and a real memory service, journaling to a SQLite file."""
    from services.memory.app import build as memory_build
    from services.memory.config import Config as MemoryConfig
    from services.scheduler.app import build as kernel_build

    data = tmp_path_factory.mktemp("quotas")
    sim = SimulatorServer(EngineConfig(time_scale=0.02, max_num_seqs=64))
    await sim.start()
    llm = await llm_core_over(start_service, sim)
    memory = await start_service(memory_build, MemoryConfig.from_env(
        {"AIOS_MEMORY_QDRANT_PATH": str(data / "qdrant"), "AIOS_LLM_ADDR": llm}))
    env = dict(AIOS_MEMORY_ADDR=f"127.0.0.1:{memory.port}", journal=str(data / "journal.sqlite3"),
               metrics_port=free_port(), http_port=free_port())
    kernel = await start_service(kernel_build, kernel_config(llm, **env))
    clients = []

    def client(agent: str, **kw) -> AsyncClient:
        c = AsyncClient(f"127.0.0.1:{kernel.port}", token=agent, timeout=30, retries=0, **kw)
        clients.append(c)
        return c

    yield {"client": client, "sim": sim, "llm": llm, "env": env, "kernel": kernel, "start": start_service,
           "build": kernel_build}
    for c in clients:
        await c.close()
    await sim.stop()


async def chat(c: AsyncClient, tokens: int = 8, prompt: str = "Count to ten."):
    return await c.llm.chat(prompt, model=MODEL, max_tokens=tokens)


async def refused(call) -> ResourceExhaustedError:
    with pytest.raises(ResourceExhaustedError) as exc:
        await call()
    assert exc.value.reason == "QUOTA_EXCEEDED"
    return exc.value


async def passes_after_reset(call, err: ResourceExhaustedError, timeout: float = 20.0):
    """Wait as the refusal said, then call again (bounded: a few windows)."""
    end = time.monotonic() + timeout
    while True:
        await asyncio.sleep(err.retry_after)
        try:
            return await call()
        except ResourceExhaustedError as again:
            if time.monotonic() > end:
                raise
            err = again


async def refused_once_full(call, tries: int = 5) -> ResourceExhaustedError:
    """Call until refused. A call that passes found a window that had just
    reset, and fills it again; on a busy machine that may happen more than
    once, never many times."""
    for _ in range(tries):
        try:
            await call()
        except ResourceExhaustedError as err:
            assert err.reason == "QUOTA_EXCEEDED"
            return err
    raise AssertionError(f"not refused in {tries} calls")


async def used(c: AsyncClient, agent: str, spec_prefix: str) -> float:
    quota = await c.get_quota(agent=agent)
    rows = [u for u in quota.usage if _spec(u).startswith(spec_prefix)]
    assert rows, f"no limit {spec_prefix} in {quota}"
    return rows[0].used


def _spec(u) -> str:
    from aios.sdk.quota import format_limit
    return format_limit(u.limit)


async def test_requests_per_window_refuse_with_detail_then_pass_again(dev):
    agent = name("req")
    admin, c = dev["client"]("admin"), dev["client"](agent)
    await admin.set_quota(agent=agent, limits=["requests=2/2s"])
    await chat(c)
    err = await refused_once_full(lambda: chat(c))
    assert err.quota == [(f"agent:{agent}", "requests=2/2s: 2 used, this call needs 1")]
    assert 0 < err.retry_after <= 2.0 + 0.1
    reply = await passes_after_reset(lambda: chat(c), err)
    assert reply.text


async def test_token_limits_count_real_usage_and_refuse_what_would_not_fit(dev):
    agent = name("tok")
    admin, c = dev["client"]("admin"), dev["client"](agent)
    await admin.set_quota(agent=agent, limits=["completion_tokens=50/3s", "prompt_tokens=100k/day",
                                               "tokens=100k/day"])
    first = await chat(c, tokens=30)
    assert first.completion_tokens == 30
    # Once a call ended, what is counted is its real usage, not the estimate.
    assert await used(c, agent, "prompt_tokens=") == pytest.approx(first.prompt_tokens)
    assert await used(c, agent, "tokens=") == pytest.approx(first.prompt_tokens + 30)
    # With 30 used, another 30 would pass 50: refused (a call that passes
    # found a new window and leaves 30 used in it).
    err = await refused_once_full(lambda: chat(c, tokens=30))
    assert err.quota == [(f"agent:{agent}", "completion_tokens=50/3s: 30 used, this call needs 30")]
    assert 0 < err.retry_after <= 3.1
    assert (await chat(c, tokens=10)).completion_tokens == 10  # 10 still fits
    # A call that could never fit is told so, with nothing to wait for.
    never = await refused(lambda: chat(c, tokens=60))
    assert never.retry_after is None and "this call alone needs 60" in never.message
    again = await passes_after_reset(lambda: chat(c, tokens=30), err)
    assert again.completion_tokens == 30


async def test_prompt_tokens_limit(dev):
    from services.scheduler.quotas import prompt_estimate

    agent = name("prompt")
    admin, c = dev["client"]("admin"), dev["client"](agent)
    prompt = "Count to ten."
    probe = await chat(dev["client"](name("probe")), prompt=prompt)
    estimate = prompt_estimate(c.llm.syscall(prompt, model=MODEL).llm)
    # Room for the estimate of one such call, not for its real usage plus another.
    await admin.set_quota(agent=agent, limits=[f"prompt_tokens={probe.prompt_tokens + estimate - 1}/3s"])
    await chat(c, prompt=prompt)
    err = await refused_once_full(lambda: chat(c, prompt=prompt))
    assert err.quota == [(f"agent:{agent}", f"prompt_tokens={probe.prompt_tokens + estimate - 1}/3s: "
                                            f"{probe.prompt_tokens} used, this call needs {estimate}")]
    assert (await passes_after_reset(lambda: chat(c, prompt=prompt), err)).text


async def test_tokens_and_cost_per_window(dev):
    from services.scheduler.quotas import prompt_estimate

    prompt, tokens = "Count to ten.", 30
    probe = await chat(dev["client"](name("probe")), tokens=tokens, prompt=prompt)
    admin = dev["client"]("admin")
    estimate = prompt_estimate(admin.llm.syscall(prompt, model=MODEL).llm)
    real_cost = (probe.prompt_tokens * PRICES["prompt"] + tokens * PRICES["completion"]) / 1e6
    estimated_cost = (estimate * PRICES["prompt"] + tokens * PRICES["completion"]) / 1e6
    # Each limit leaves room for one call and just too little for a second.
    for spec in (f"tokens={probe.prompt_tokens + tokens + estimate + tokens - 1}/3s",
                 f"cost={real_cost + estimated_cost - 1e-9:.12f}/3s"):
        agent = name(spec.split("=")[0])
        c = dev["client"](agent)
        await admin.set_quota(agent=agent, limits=[spec])
        await chat(c, tokens=tokens, prompt=prompt)
        err = await refused_once_full(lambda: chat(c, tokens=tokens, prompt=prompt))
        assert err.quota[0][0] == f"agent:{agent}" and err.quota[0][1].startswith(spec.split("=")[0] + "=")
        assert 0 < err.retry_after <= 3.1
        assert (await passes_after_reset(lambda: chat(c, tokens=tokens, prompt=prompt), err)).text


async def test_tool_calls_per_window(dev):
    agent = name("tool")
    admin, c = dev["client"]("admin"), dev["client"](agent)
    await admin.set_quota(agent=agent, limits=["tool_calls=1/2s"])
    call = lambda: c.tools.call("calculator", {"expression": "6*7"})  # noqa: E731
    first = await call()
    err = await refused_once_full(call)
    assert err.quota == [(f"agent:{agent}", "tool_calls=1/2s: 1 used, this call needs 1")]
    assert (await passes_after_reset(call, err)) == first


async def test_parallel_llm_calls(dev):
    agent = name("par")
    admin, c = dev["client"]("admin"), dev["client"](agent)
    await admin.set_quota(agent=agent, limits=["parallel=1"])
    long = asyncio.ensure_future(c.llm.chat("a long one", model=MODEL, max_tokens=3000, request_id="long"))
    # Bounded poll until it is in flight.
    for _ in range(500):
        if any(a.agent == agent and a.running + a.queued for a in await c.list_agents()):
            break
        await asyncio.sleep(0.01)
    err = await refused(lambda: chat(c))
    assert err.quota == [(f"agent:{agent}", "parallel=1: 1 used, this call needs 1")]
    assert err.retry_after and err.retry_after > 0
    # Running calls are never cut for a budget: it is cancelled here by hand.
    assert await used(c, agent, "parallel=") == 1
    await c.cancel("long")
    with pytest.raises(Exception):
        await long
    assert (await chat(c)).text


async def test_memory_records(dev):
    agent = name("mem")
    admin, c = dev["client"]("admin"), dev["client"](agent)
    await admin.set_quota(agent=agent, limits=["memory_records=2"])
    first = await c.memory.add("the first thing to remember")
    await c.memory.add("the second thing to remember")
    err = await refused(lambda: c.memory.add("one too many"))
    assert err.quota == [(f"agent:{agent}", "memory_records=2: 2 used, this call needs 1")]
    assert err.retry_after is None  # records do not go away by waiting
    # The same limit binds the built-in memory tool (one intake).
    tool = await refused(lambda: c.tools.call("memory.add", {"content": "through the tool"}))
    assert tool.quota[0][1].startswith("memory_records=2")
    await c.memory.delete(first.id)
    assert (await c.memory.add("room again")).content == "room again"


async def test_cost_matches_the_configured_prices(dev):
    agent = name("cost")
    admin, c = dev["client"]("admin"), dev["client"](agent)
    await admin.set_quota(agent=agent, limits=["cost=1/day"])
    records = []
    for tokens in (5, 17, 40):
        rec = await c.submit(c.llm.syscall(f"Spend {tokens} tokens.", model=MODEL, max_tokens=tokens))
        records.append(rec)
    expected = [((r.usage.prompt_tokens - r.usage.cached_prompt_tokens) * PRICES["prompt"]
                 + r.usage.cached_prompt_tokens * PRICES["cached_prompt"]
                 + r.usage.completion_tokens * PRICES["completion"]) / 1e6 for r in records]
    assert [r.cost for r in records] == pytest.approx(expected, rel=1e-9)
    assert await used(c, agent, "cost=") == pytest.approx(sum(expected), rel=1e-9)
    stats = {a.agent: a for a in await c.list_agents()}[agent]
    assert stats.cost == pytest.approx(sum(expected), rel=1e-9)
    quota = await c.get_quota()
    assert quota.currency == "USD"
    # A budget already spent refuses the next call until the hour turns.
    await admin.set_quota(agent=agent, limits=[f"cost={sum(expected):.9f}/day"])
    err = await refused(lambda: chat(c))
    assert err.quota[0][1].startswith("cost=") and err.retry_after > 0


async def test_a_kernel_restart_keeps_the_counts(dev, tmp_path):
    agent = name("restart")
    journal = str(tmp_path / "journal.sqlite3")
    env = {**dev["env"], "journal": journal, "metrics_port": -1, "http_port": -1}
    first = await dev["start"](dev["build"], kernel_config(dev["llm"], **env))
    async with AsyncClient(f"127.0.0.1:{first.port}", token=agent, timeout=30, retries=0) as c:
        await c.set_quota(agent=agent, limits=["requests=2/day"])
        await chat(c)
    await first.stop(grace=1)
    second = await dev["start"](dev["build"], kernel_config(dev["llm"], **env))
    async with AsyncClient(f"127.0.0.1:{second.port}", token=agent, timeout=30, retries=0) as c:
        assert await used(c, agent, "requests=") == 1  # the limit and its count came back
        await chat(c)
        err = await refused(lambda: chat(c))
        assert err.quota[0][1] == "requests=2/day: 2 used, this call needs 1"


async def test_the_http_door_answers_429_with_retry_after(dev):
    agent = name("door")
    await dev["client"]("admin").set_quota(agent=agent, limits=["requests=1/day"])
    url = f"http://127.0.0.1:{dev['env']['http_port']}/v1/chat/completions"
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    headers = {"Authorization": f"Bearer {agent}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json=body, headers=headers) as r:
            assert r.status == 200
        async with s.post(url, json=body, headers=headers) as r:
            assert r.status == 429
            assert 0 < int(r.headers["Retry-After"]) <= 86400
            error = (await r.json())["error"]
    assert f"quota of agent:{agent} exceeded: requests=1/day" in error["message"] and error["code"]


async def test_quota_settings_are_checked(dev):
    admin = dev["client"]("admin")
    for bad in (["requests=1"], ["parallel=1/1min"], ["requests=1/1min", "requests=2/1min"]):
        with pytest.raises((InvalidArgumentError, ValueError)):
            await admin.set_quota(agent="x", limits=bad)
    with pytest.raises(InvalidArgumentError):
        await admin.set_quota(agent="no spaces allowed", limits=["requests=1/1min"])
    # Removing a subject's limits lets its calls through again.
    agent = name("clear")
    c = dev["client"](agent)
    await admin.set_quota(agent=agent, limits=["requests=0/day"])
    await refused(lambda: chat(c))
    await admin.set_quota(agent=agent, limits=[])
    assert (await chat(c)).text


# --- with the access service: groups, soft limits, admin rights --------------


@pytest_asyncio.fixture(scope="module")
async def team(tmp_path_factory, start_service):
    from services.access.app import build as access_build
    from services.access.config import Config as AccessConfig
    from services.scheduler.app import build as kernel_build

    data = tmp_path_factory.mktemp("quota-access")
    tokens_file = data / "service-tokens.json"
    trust.ensure_tokens_file(tokens_file)
    env = {"AIOS_SERVICE_TOKENS_FILE": str(tokens_file), "AIOS_DATA_DIR": str(data)}
    access = await start_service(access_build, AccessConfig.from_env(env))
    sim = SimulatorServer(EngineConfig(time_scale=0.02, max_num_seqs=64))
    await sim.start()
    llm = await llm_core_over(start_service, sim)
    metrics_port = free_port()
    kernel = await start_service(kernel_build, kernel_config(
        llm, auth="access", auth_cache_seconds=0, AIOS_ACCESS_ADDR=f"127.0.0.1:{access.port}",
        AIOS_SERVICE_TOKENS_FILE=str(tokens_file), metrics_port=metrics_port, journal="off"))
    admin_token = (data / "admin.token").read_text().strip()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{access.port}")
    stub = apb_grpc.AccessServiceStub(channel)
    md = [("authorization", f"Bearer {admin_token}")]
    clients = []

    async def create(agent: str, groups: list[str]) -> AsyncClient:
        token = (await stub.CreateAgent(apb.CreateAgentRequest(name=agent, groups=groups), metadata=md)).token
        c = AsyncClient(f"127.0.0.1:{kernel.port}", token=token, timeout=30, retries=0)
        clients.append(c)
        return c

    admin = AsyncClient(f"127.0.0.1:{kernel.port}", token=admin_token, timeout=30, retries=0)
    yield {"create": create, "admin": admin, "access": stub, "md": md, "metrics_port": metrics_port, "put": stub}
    for c in clients + [admin]:
        await c.close()
    await channel.close()
    await sim.stop()


async def put_group(team, group: str) -> None:
    rule = apb.Rule(kind=apb.RESOURCE_KIND_LLM, actions=[apb.ACTION_EXECUTE], name_pattern="*",
                    effect=apb.EFFECT_ALLOW)
    await team["access"].PutGroup(apb.PutGroupRequest(group=apb.Group(name=group, rules=[rule])),
                                  metadata=team["md"])


async def test_a_group_limit_is_shared_by_its_members(team):
    group = name("team")
    await put_group(team, group)
    a1, a2 = name("alpha"), name("beta")
    c1, c2 = await team["create"](a1, [group]), await team["create"](a2, [group])
    admin = team["admin"]
    await admin.set_quota(group=group, limits=["requests=3/day"])
    await admin.set_quota(agent=a1, limits=["requests=10/day"])
    await chat(c1)
    await chat(c1)
    await chat(c2)
    # Both members' calls count against the group: a2's second is refused,
    # and so is a1's third although a1's own limit has room.
    for c in (c2, c1):
        err = await refused(lambda: chat(c))
        assert err.quota == [(f"group:{group}", "requests=3/day: 3 used, this call needs 1")]
    # An agent's own tighter limit binds before its group's.
    a3 = name("gamma")
    c3 = await team["create"](a3, [group])
    await admin.set_quota(group=group, limits=["requests=100/day"])
    await admin.set_quota(agent=a3, limits=["requests=1/day"])
    await chat(c3)
    err = await refused(lambda: chat(c3))
    assert err.quota[0][0] == f"agent:{a3}"
    # Agents see their own quota, not others'; only an admin sets one.
    mine = await c3.get_quota()
    assert {q.subject for q in mine.quotas} == {f"agent:{a3}", f"group:{group}"}
    with pytest.raises(PermissionDeniedError):
        await c3.get_quota(agent=a1)
    with pytest.raises(PermissionDeniedError):
        await c3.set_quota(agent=a3, limits=[])


async def test_a_soft_limit_warns_once_and_lets_calls_through(team):
    group = name("soft")
    await put_group(team, group)
    agent = name("chatty")
    c = await team["create"](agent, [group])
    await team["admin"].set_quota(group=group, limits=["soft:requests=1/day"])
    for _ in range(3):
        assert (await chat(c)).text
    # One audit event for the window, naming the limit.
    for _ in range(200):  # the audit record is written in the background
        events = (await team["access"].ListAuditEvents(
            apb.ListAuditEventsRequest(principal=agent), metadata=team["md"])).events
        warnings = [e for e in events if "soft quota limit passed" in e.reason]
        if warnings:
            break
        await asyncio.sleep(0.02)
    assert len(warnings) == 1 and f"group:{group} soft:requests=1/day" in warnings[0].reason
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{team['metrics_port']}/metrics") as r:
            text = await r.text()
    assert 'aios_quota_warnings_total{metric="requests"}' in text


async def test_the_cli_sets_shows_and_lists_quotas(dev, capsys, monkeypatch):
    from services.cli.main import main

    for var in ("AIOS_KERNEL", "AIOS_TOKEN", "AIOS_ADMIN_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    address = f"127.0.0.1:{dev['kernel'].port}"
    agent = name("cli")

    async def aios(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = await asyncio.to_thread(main, [*argv, "--kernel", address])
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    code, _, err = await aios("quota", "set", "--agent", agent, "requests=3/day", "soft:cost=1/day", "--token", "admin")
    assert code == 0, err
    await chat(dev["client"](agent))
    code, out, err = await aios("quota", "show", "--agent", agent, "--token", "admin")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()]
    assert rows[0][:5] == ["SUBJECT", "LIMIT", "USED", "LEFT", "RESETS"]
    assert [f"agent:{agent}", "requests=3/day", "1", "2"] in [r[:4] for r in rows]
    code, out, err = await aios("ps", "--token", "admin")
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith(agent))
    assert "requests 2/3 per day" in line
    code, _, err = await aios("quota", "set", "--agent", agent, "requests=3", "--token", "admin")
    assert code == 2 and "requests" in err  # a windowed metric without a window, refused before sending
    code, _, err = await aios("quota", "clear", "--agent", agent, "--token", "admin")
    assert code == 0, err
    assert not (await dev["client"](agent).get_quota(agent=agent)).quotas


async def test_kernels_on_one_postgresql_share_the_counts(dev, request):
    """Two kernels on one PostgreSQL database (as replicas would be): calls
    through either count against the same limit."""
    url = new_database(request.getfixturevalue("postgres"), "quotas")
    env = {**dev["env"], "journal": url, "metrics_port": -1, "http_port": -1}
    one = await dev["start"](dev["build"], kernel_config(dev["llm"], **env))
    two = await dev["start"](dev["build"], kernel_config(dev["llm"], **env))
    agent = name("shared")
    try:
        async with AsyncClient(f"127.0.0.1:{one.port}", token=agent, timeout=30, retries=0) as a, \
                AsyncClient(f"127.0.0.1:{two.port}", token=agent, timeout=30, retries=0) as b:
            await a.set_quota(agent=agent, limits=["requests=3/day"])
            await chat(a)
            await chat(b)
            await chat(a)
            for c in (b, a):
                err = await refused(lambda: chat(c))
                assert err.quota == [(f"agent:{agent}", "requests=3/day: 3 used, this call needs 1")]
    finally:  # before this module's PostgreSQL stops
        await one.stop(grace=1)
        await two.stop(grace=1)
