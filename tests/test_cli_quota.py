"""`aios quota` and the quota columns of `aios ps`, without a kernel: how
the arguments are read (a bad spec exits 2 with the parse error, before
anything is sent), and how limits, usage and costs are printed."""

from __future__ import annotations

import pytest
from google.protobuf import timestamp_pb2

from aios.kernel.v1 import kernel_service_pb2 as kpb
from aios.sdk import parse_limit
from services.cli.commands.kernel import ps_row
from services.cli.commands.quota import compact, describe_left, money, until, usage_rows
from services.cli.main import build_parser, main

NOW = 1_700_000_000.0


@pytest.fixture
def aios(capsys, monkeypatch, tmp_path):
    """aios(*argv) -> (exit code, stdout, stderr)."""
    for name in ("AIOS_KERNEL", "AIOS_TOKEN", "AIOS_ADMIN_TOKEN", "AIOS_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


def at(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def usage(subject: str, spec: str, used: float, reset_in: float | None = None) -> kpb.QuotaUsage:
    limit = parse_limit(spec)
    u = kpb.QuotaUsage(subject=subject, limit=limit, used=used, remaining=max(0.0, limit.max - used))
    if reset_in is not None:
        u.reset_time.CopyFrom(at(NOW + reset_in))
    return u


def test_quota_set_reads_each_spec_and_one_subject():
    args = build_parser().parse_args(["quota", "set", "--agent", "ann", "requests=10/1min", "soft:cost=5/day"])
    assert (args.agent, args.group) == ("ann", "")
    assert args.specs == [parse_limit("requests=10/1min"), parse_limit("soft:cost=5/day")]
    args = build_parser().parse_args(["quota", "clear", "--group", "agents"])
    assert (args.agent, args.group) == ("", "agents")
    args = build_parser().parse_args(["quota", "show"])
    assert (args.agent, args.group) == ("", "")


@pytest.mark.parametrize("argv, said", [
    (["quota", "set", "--agent", "ann", "requests=10"], "bad quota limit 'requests=10': requests needs a window"),
    (["quota", "set", "--agent", "ann", "parallel=2/1h"], "parallel is counted at each moment"),
    (["quota", "set", "--agent", "ann", "calls=1/h"], "unknown metric 'calls'"),
    (["quota", "set", "--agent", "ann"], "the following arguments are required: SPEC"),
    (["quota", "set", "requests=1/h"], "one of the arguments --agent --group is required"),
    (["quota", "set", "--agent", "ann", "--group", "g", "requests=1/h"], "not allowed with argument"),
    (["quota", "clear"], "one of the arguments --agent --group is required"),
    (["quota", "show", "--agent", "ann", "--group", "g"], "not allowed with argument"),
])
def test_bad_arguments_exit_2_before_any_call(aios, argv, said):
    # No kernel listens at port 1: a call would fail with exit 1 instead.
    code, out, err = aios(*argv, "--kernel", "127.0.0.1:1", "--token", "t")
    assert code == 2 and out == ""
    assert said in err
    if "bad quota limit" in said:
        assert "[soft:]METRIC=MAX[/WINDOW]" in err


def test_rpc_errors_print_like_every_command(aios):
    code, out, err = aios("quota", "show", "--kernel", "127.0.0.1:1", "--token", "t", "--timeout", "5")
    assert code == 1 and out == ""
    assert err.startswith("error: no kernel answers at 127.0.0.1:1")


@pytest.mark.parametrize("value, text", [
    (0, "0"), (7, "7"), (950, "950"), (999, "999"), (1000, "1k"), (1234, "1.2k"), (12_345, "12.3k"),
    (999_960, "1M"), (1_500_000, "1.5M"), (2.5e9, "2.5G"), (3e12, "3000G"), (2.5, "2.5"),
])
def test_counts_are_printed_compactly(value, text):
    assert compact(value) == text


@pytest.mark.parametrize("value, text", [
    (0, "0"), (2.5, "2.5"), (5, "5"), (0.0123456, "0.01235"), (0.00001234, "0.00001234"),
    (12.34567, "12.35"), (1234.56, "1235"),
])
def test_costs_keep_four_significant_digits(value, text):
    assert money(value) == text


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (42, "42s"), (60, "1min"), (252, "4min12s"), (3600, "1h"), (5 * 3600 + 12 * 60 + 5, "5h12min"),
    (86400 + 3 * 3600 + 1, "1day3h"), (-5, "0s"),
])
def test_resets_say_how_long_until_the_window_ends(seconds, text):
    assert until(at(NOW + seconds), NOW) == text


def test_a_limit_without_a_window_never_resets():
    assert until(timestamp_pb2.Timestamp(), NOW) == "-"


def test_show_lists_each_limit_with_used_left_and_reset():
    reply = kpb.GetQuotaResponse(
        quotas=[kpb.Quota(subject="agent:ann", limits=[parse_limit("requests=10/1min"), parse_limit("parallel=4")]),
                kpb.Quota(subject="group:agents", limits=[parse_limit("soft:cost=5/day"),
                                                          parse_limit("tokens=100k/h")])],
        usage=[usage("agent:ann", "requests=10/1min", 7, reset_in=42), usage("agent:ann", "parallel=4", 1),
               usage("group:agents", "soft:cost=5/day", 1.23456, reset_in=3 * 3600)],
        currency="USD")
    assert usage_rows(reply, NOW) == [
        ("agent:ann", "requests=10/1min", "7", "3", "42s"),
        ("agent:ann", "parallel=4", "1", "3", "-"),
        ("group:agents", "soft:cost=5/day", "1.235", "3.765", "3h"),
        ("group:agents", "tokens=100k/1h", "-", "-", "-"),  # no usage reported for it
    ]


def test_ps_shows_cost_and_the_tightest_limit_left():
    stats = kpb.AgentStats(agent="ann", completed=3, prompt_tokens=1200, completion_tokens=80, cost=0.004567,
                           quota=[usage("agent:ann", "requests=10/1min", 7, reset_in=5),
                                  usage("group:agents", "tokens=100k/1h", 20_000, reset_in=5)])
    row = ps_row(stats)
    assert row[-2:] == ("0.004567", "requests 3/10 per 1min")
    assert ps_row(kpb.AgentStats(agent="bob"))[-2:] == ("0", "-")


def test_quota_left_names_soft_windowless_and_cost_limits():
    assert describe_left(usage("agent:ann", "parallel=4", 3)) == "parallel 1/4"
    assert describe_left(usage("agent:ann", "soft:cost=2.5/day", 1, reset_in=9)) == "soft:cost 1.5/2.5 per day"
    assert describe_left(usage("agent:ann", "tokens=1.5M/7day", 250_000, reset_in=9)) == "tokens 1.2M/1.5M per 7day"
