"""A/B two versions of the statehub server on the fan-out bench's workloads, interleaved.

Usage: .venv/bin/python scripts/ab_fanout.py BEFORE_SRC AFTER_SRC [rounds] [families]

BEFORE_SRC and AFTER_SRC are copies of ``src/`` (``git worktree`` or ``git archive`` of
two commits). Each round starts the bench's server (``statehub.bench.fanout.serve``)
from BEFORE_SRC, runs the chosen workload families over TCP, then does the same from
AFTER_SRC: the two versions see the same machine load, round by round. ``families`` is
comma-separated, as ``statehub bench fanout --workloads`` takes it (default: latency).
Prints each figure's median and every round's figures. The clients and subscribers are
this checkout's, so only the server differs.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys

from statehub.bench import fanout


async def main(versions: dict[str, str], rounds: int) -> None:
    figures: dict[tuple[str, str], list[float]] = {}
    for number in range(1, rounds + 1):
        for name, source in versions.items():
            os.environ["PYTHONPATH"] = source  # the server process imports statehub from it
            bench = fanout.Bench(("tcp",), 1, fanout.FANOUT_COUNTS)
            await bench._round("tcp")
            for row in bench.rows.values():
                figures.setdefault((row.workload, name), []).extend(row.figures.get("tcp", []))
            fanout.log(f"round {number}/{rounds}: {name} done (load {fanout._load()})")
    for (workload, name), values in figures.items():
        rounds_text = ", ".join(f"{value:.3g}" for value in values)
        print(f"{workload} | {name} | median {statistics.median(values):.3g} | {rounds_text}")


if __name__ == "__main__":
    before, after = sys.argv[1], sys.argv[2]
    fanout.WORKLOADS = tuple((sys.argv[4] if len(sys.argv) > 4 else "latency").split(","))
    fanout.FANOUT_COUNTS = (10_000,)
    asyncio.run(
        main({"before": before, "after": after}, int(sys.argv[3]) if len(sys.argv) > 3 else 5)
    )
