"""What quotas cost in process, without gRPC or a backend: the quota and
journal calls of one LLM syscall (prepare, admit, journal the acceptance,
charge the usage, release, journal the end) on a SQLite file, 5,000 calls
over 257 agents, with four limits on every agent and with none, alternating.

    .venv/bin/python -m bench.quota_in_process [--rounds 2] [-n 5000]

Prints CPU microseconds per call for each.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time

import structlog

from aios.common.v1 import llm_pb2 as lc
from aios.kernel.v1 import syscall_pb2 as ks
from services.scheduler.journal import Journal
from services.scheduler.quotas import Limit, Quotas
from services.scheduler.table import SUCCEEDED, Entry

AGENTS = 257
LIMITS = [Limit("requests", 60, 1e9), Limit("tokens", 86400, 1e12), Limit("cost", 86400, 1e9),
          Limit("parallel", 0, 1e6)]


async def cpu_per_call(n: int, with_quotas: bool) -> float:
    journal = Journal(tempfile.mkdtemp(prefix="aios-quota-") + "/journal.sqlite3")
    quotas = Quotas(journal.db, estimate_price=lambda model: (1.0, 2.0))
    if with_quotas:
        for i in range(AGENTS):
            quotas.set(f"agent:a{i}", LIMITS)
    await asyncio.sleep(0)  # commit the limits
    syscall = ks.Syscall(llm=lc.LlmCall(model="m", max_tokens=1, messages=[lc.Message(role=lc.ROLE_USER,
                                                                                     content="ping")]))
    t0 = time.process_time()
    for i in range(n):
        entry = Entry(agent=f"a{i % AGENTS}", kind="llm", resource="llm:m", syscall=syscall)
        await quotas.prepare(entry, ())
        quotas.admit(entry)
        journal.accepted(entry)
        await asyncio.sleep(0)  # the loop turn ends: group commit
        quotas.charge(entry, 10, 1, 1e-5)
        quotas.release(entry)
        entry.state, entry.finish_wall = SUCCEEDED, time.time()
        journal.finished(entry, b"")
        await asyncio.sleep(0)
    cpu = (time.process_time() - t0) / n * 1e6
    journal.close()
    return cpu


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("-n", type=int, default=5000)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    for _ in range(args.rounds):
        without = await cpu_per_call(args.n, False)
        with_quotas = await cpu_per_call(args.n, True)
        print(f"no quotas {without:.0f} us/call, 4 limits per agent {with_quotas:.0f} us/call "
              f"(+{with_quotas - without:.0f} us)", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
