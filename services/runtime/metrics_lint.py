"""Check what a /metrics page exports against our naming and label rules,
and count its series per family:

    python -m services.runtime.metrics_lint http://127.0.0.1:9464/metrics ...

Rules (Prometheus' naming conventions, and bounded labels):
- every family is ours: its name starts with `aios_`;
- counters' samples end in `_total`, and nothing else does;
- histograms and summaries are in base units: `_seconds` or `_bytes`, never `_ms`;
- no label that grows with traffic (agents, request ids, paths, ...), unless
  allowed (`--allow agent` for AIOS_KERNEL_METRICS_TOP_AGENTS).

Exit status 1 when a rule is broken.
"""

from __future__ import annotations

import argparse
import sys
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

PREFIX = "aios_"
BASE_UNITS = ("_seconds", "_bytes")
# Labels whose values are not a bounded set.
UNBOUNDED_LABELS = frozenset({"agent", "request_id", "rid", "id", "syscall", "syscall_id", "session",
                              "session_id", "run", "path", "owner", "tenant", "principal", "token", "user"})


@dataclass
class Family:
    name: str
    type: str
    series: int
    labels: tuple[str, ...]


@dataclass
class Report:
    families: list[Family] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def series(self) -> int:
        return sum(f.series for f in self.families)


def lint(text: str, allow: frozenset[str] = frozenset()) -> Report:
    """The families of an exposition page and the rules they break."""
    report = Report()
    for fam in text_string_to_metric_families(text):
        labels = sorted({k for s in fam.samples for k in s.labels if k not in ("le", "quantile")})
        # A histogram's series is one labelled child: its buckets, sum and count together.
        children = {tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("le", "quantile")))
                    for s in fam.samples}
        # The parser names a counter's family without its _total.
        name = f"{fam.name}_total" if fam.type == "counter" else fam.name
        report.families.append(Family(name, fam.type, len(children), tuple(labels)))
        report.problems += _problems(fam, labels, allow)
    return report


def _problems(fam, labels: list[str], allow: frozenset[str]):
    name = fam.name
    if not name.startswith(PREFIX):
        yield f"{name}: not an {PREFIX}* name"
    for s in fam.samples:
        if fam.type == "counter" and not s.name.endswith("_total"):
            yield f"{s.name}: a counter's samples end in _total"
        if fam.type != "counter" and s.name.endswith("_total"):
            yield f"{s.name}: only counters end in _total ({fam.type})"
    if fam.type in ("histogram", "summary") and not name.endswith(BASE_UNITS):
        yield f"{name}: a {fam.type} is in base units, its name ending in one of {', '.join(BASE_UNITS)}"
    if name.endswith(("_ms", "_milliseconds", "_millis", "_us", "_kb", "_mb")):
        yield f"{name}: use base units (seconds, bytes)"
    for label in labels:
        if label in UNBOUNDED_LABELS and label not in allow:
            yield f"{name}: label {label!r} is not bounded"


def render(report: Report, where: str = "") -> str:
    lines = [f"# {where}" if where else "#"]
    width = max((len(f.name) for f in report.families), default=0)
    for f in sorted(report.families, key=lambda f: f.name):
        lines.append(f"{f.name:<{width}}  {f.type:<9}  {f.series:>5} series  {{{','.join(f.labels)}}}")
    lines.append(f"{len(report.families)} families, {report.series} series, {len(report.problems)} problems")
    lines += [f"PROBLEM {p}" for p in report.problems]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.runtime.metrics_lint", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("urls", nargs="+", metavar="URL", help="a /metrics address")
    parser.add_argument("--allow", action="append", default=[], metavar="LABEL",
                        help="a label allowed although unbounded (e.g. agent, for the top-K agents)")
    args = parser.parse_args(argv)
    broken = False
    for url in args.urls:
        with urllib.request.urlopen(url, timeout=10) as resp:
            report = lint(resp.read().decode(), frozenset(args.allow))
        print(render(report, url))
        broken = broken or bool(report.problems)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
