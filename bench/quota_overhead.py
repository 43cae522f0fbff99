"""What quota checks cost per syscall: the same kernel (journal on, a SQLite
file) with every calling agent bound by four limits, and with none,
alternating in one run over one llm_core each and an instant simulated
backend.

    .venv/bin/python -m bench.quota_overhead [--rounds 3] [-n 300] [--out FILE]

The limits are set high enough never to refuse: requests per minute
(counted at admission), tokens and cost per day (estimated at admission,
charged at the real usage) and parallel calls. Per kernel: added latency
over calling llm_core directly (p50, p99), kernel CPU per syscall, and
syscalls/s with 16 and 256 concurrent callers. Printed and written as JSON;
compare the two rows, not absolute times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from aios.sdk import AsyncClient
from bench import procs
from bench.intake_overhead import measure, report_rounds

LIMITS = ["requests=1G/1min", "tokens=1000G/day", "cost=1G/day", "parallel=1M"]
# The agents bench.intake_overhead calls as.
AGENTS = ["bench", *(f"agent-{i}" for i in range(256))]


async def bind_every_agent(address: str) -> None:
    async with AsyncClient(address, token="admin") as admin:
        for agent in AGENTS:
            await admin.set_quota(agent=agent, limits=LIMITS)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two kernels (default 3)")
    parser.add_argument("-n", type=int, default=300, help="sequential calls per measurement (default 300)")
    parser.add_argument("--out", default="bench/results/quota_overhead.json")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="aios-quota-"))
    sim, _ = procs.start_simulator("--time-scale", "0", "--max-num-seqs", "1024")
    runs: dict[str, list[dict]] = {"no quotas": [], "4 limits per agent": []}
    try:
        for r in range(args.rounds):
            for label, prepare in (("no quotas", None), ("4 limits per agent", bind_every_agent)):
                journal = str(folder / f"journal-{r}-{len(runs[label])}-{label[0]}.sqlite3")
                runs[label].append(await measure(procs.ROOT, sim.address, args.n, prepare=prepare,
                                                 journal=journal))
                print(label, json.dumps({k: round(v, 3) for k, v in runs[label][-1].items()}), flush=True)
    finally:
        sim.stop()
    report_rounds(runs, f"python -m bench.quota_overhead --rounds {args.rounds} -n {args.n}", args.out, limits=LIMITS)


if __name__ == "__main__":
    asyncio.run(main())
