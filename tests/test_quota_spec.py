"""Quota limit specs (`[soft:]METRIC=MAX[/WINDOW]`, aios.sdk.quota): what
each one reads as, that every spec written back reads as the same limit,
and that each kind of mistake is refused naming the spec and the syntax,
before the SDK sends anything."""

from __future__ import annotations

import pytest
from google.protobuf import duration_pb2

from aios.kernel.v1 import kernel_service_pb2 as kpb
from aios.sdk import AsyncClient, Client, format_limit, parse_limit
from aios.sdk.quota import METRICS, WINDOWLESS, format_window


def limit(metric: int, max: float, window: int | None = None, soft: bool = False) -> kpb.QuotaLimit:
    out = kpb.QuotaLimit(metric=metric, max=max, soft=soft)
    if window is not None:
        out.window.seconds = window
    return out


@pytest.mark.parametrize("spec, expected", [
    ("requests=10/1min", limit(kpb.QUOTA_METRIC_LLM_REQUESTS, 10, 60)),
    ("prompt_tokens=2k/h", limit(kpb.QUOTA_METRIC_PROMPT_TOKENS, 2000, 3600)),
    ("completion_tokens=100k/day", limit(kpb.QUOTA_METRIC_COMPLETION_TOKENS, 100_000, 86400)),
    ("tokens=1.5M/7day", limit(kpb.QUOTA_METRIC_TOKENS, 1_500_000, 7 * 86400)),
    ("tool_calls=3/10s", limit(kpb.QUOTA_METRIC_TOOL_CALLS, 3, 10)),
    ("soft:cost=2.50/day", limit(kpb.QUOTA_METRIC_COST, 2.5, 86400, soft=True)),
    ("cost=0.0001/5min", limit(kpb.QUOTA_METRIC_COST, 0.0001, 300)),
    ("parallel=4", limit(kpb.QUOTA_METRIC_PARALLEL_LLM_CALLS, 4)),
    ("memory_records=1G", limit(kpb.QUOTA_METRIC_MEMORY_RECORDS, 1e9)),
    ("requests=0/h", limit(kpb.QUOTA_METRIC_LLM_REQUESTS, 0, 3600)),
    (" tokens = 1.1k / 2h ", limit(kpb.QUOTA_METRIC_TOKENS, 1100, 7200)),
])
def test_a_spec_reads_as_its_limit(spec, expected):
    assert parse_limit(spec) == expected


@pytest.mark.parametrize("window, seconds", [
    ("s", 1), ("10s", 10), ("10sec", 10), ("min", 60), ("5min", 300), ("5m", 300), ("2minute", 120),
    ("5mins", 300), ("h", 3600), ("1h", 3600), ("3hour", 10800), ("2hours", 7200), ("day", 86400),
    ("d", 86400), ("7day", 604800), ("7d", 604800), ("2days", 172800), ("1H", 3600),
])
def test_windows_take_a_count_and_any_common_unit_name(window, seconds):
    assert parse_limit(f"requests=1/{window}").window.seconds == seconds


@pytest.mark.parametrize("text, value", [
    ("100k", 100_000), ("100K", 100_000), ("1.5M", 1_500_000), ("2G", 2e9), ("1.1k", 1100), (".5k", 500),
    ("0", 0), ("12", 12),
])
def test_max_takes_k_m_and_g_suffixes_exactly(text, value):
    assert parse_limit(f"tokens={text}/h").max == value


@pytest.mark.parametrize("spec", [
    "requests=10/1min", "prompt_tokens=2k/1h", "completion_tokens=100k/day", "tokens=1.5M/7day",
    "tool_calls=3/10s", "soft:cost=2.5/day", "cost=0.0001/5min", "parallel=4", "memory_records=1G",
    "tokens=1234/90min", "soft:requests=0/2day",
])
def test_a_written_spec_is_canonical(spec):
    assert format_limit(parse_limit(spec)) == spec


@pytest.mark.parametrize("spec", [
    "tokens=100000/3600s", "soft:cost=2.50/24h", "requests=10/60s", "tokens=1500k/d", "cost=1234.5678/7d",
    "tokens=999999/h", "requests=10/90s",
])
def test_every_limit_round_trips_through_its_spec(spec):
    parsed = parse_limit(spec)
    assert parse_limit(format_limit(parsed)) == parsed


def test_windows_are_written_in_their_largest_whole_unit():
    assert [format_window(duration_pb2.Duration(seconds=s)) for s in (10, 60, 90, 3600, 86400, 172800)] == [
        "10s", "1min", "90s", "1h", "day", "2day"]
    assert format_window(duration_pb2.Duration()) == ""


def test_every_metric_has_a_name_and_only_parallel_and_memory_records_go_without_window():
    named = set(METRICS.values())
    assert named == set(kpb.QuotaMetric.values()) - {kpb.QUOTA_METRIC_UNSPECIFIED}
    assert WINDOWLESS == {kpb.QUOTA_METRIC_PARALLEL_LLM_CALLS, kpb.QUOTA_METRIC_MEMORY_RECORDS}


@pytest.mark.parametrize("spec, why", [
    ("requests", "no '='"),
    ("requests:10/h", "no '='"),
    ("calls=10/h", "unknown metric 'calls'"),
    ("hard:requests=10/h", "unknown metric 'hard:requests'"),
    ("requests=10", "requests needs a window"),
    ("cost=5", "cost needs a window"),
    ("parallel=4/1min", "parallel is counted at each moment and takes no window"),
    ("memory_records=100/day", "memory_records is counted at each moment and takes no window"),
    ("requests=/h", "MAX '' is not a non-negative number"),
    ("requests=-1/h", "MAX '-1' is not a non-negative number"),
    ("requests=ten/h", "MAX 'ten' is not a non-negative number"),
    ("tokens=1m/h", "MAX '1m' is not a non-negative number"),  # mega is M: m would read as milli
    ("tokens=1e6/h", "MAX '1e6' is not a non-negative number"),
    ("requests=2.5/h", "requests counts whole units, and 2.5 is not a whole number"),
    ("requests=10/", "window '' is not"),
    ("requests=10/week", "window 'week' is not"),
    ("requests=10/100ms", "window '100ms' is not"),
    ("requests=10/1.5h", "window '1.5h' is not"),
    ("requests=10/0min", "window '0min' is empty"),
])
def test_a_bad_spec_is_refused_naming_it_and_the_syntax(spec, why):
    with pytest.raises(ValueError) as exc:
        parse_limit(spec)
    message = str(exc.value)
    assert f"bad quota limit {spec!r}: {why}" in message
    assert "[soft:]METRIC=MAX[/WINDOW]" in message


# The SDK checks its arguments before it sends anything: no kernel listens
# at this address, and none is needed.
NOWHERE = "127.0.0.1:1"


def test_set_quota_wants_exactly_one_subject_and_good_specs():
    with Client(NOWHERE, retries=0, timeout=1) as c:
        with pytest.raises(ValueError, match="exactly one of agent= and group="):
            c.set_quota(agent="ann", group="agents", limits=["requests=1/h"])
        with pytest.raises(ValueError, match="exactly one of agent= and group="):
            c.set_quota(limits=[])
        with pytest.raises(ValueError, match="bad quota limit 'requests=1'"):
            c.set_quota(agent="ann", limits=[limit(kpb.QUOTA_METRIC_TOKENS, 5, 60), "requests=1"])
        with pytest.raises(ValueError, match="at most one of agent= and group="):
            c.get_quota(agent="ann", group="agents")


async def test_the_async_client_checks_the_same():
    async with AsyncClient(NOWHERE, retries=0, timeout=1) as c:
        with pytest.raises(ValueError, match="exactly one of agent= and group="):
            await c.set_quota(agent="ann", group="agents", limits=[])
        with pytest.raises(ValueError, match="bad quota limit 'parallel=2/h'"):
            await c.set_quota(group="agents", limits=["parallel=2/h"])
        with pytest.raises(ValueError, match="at most one of agent= and group="):
            await c.get_quota(agent="ann", group="agents")
