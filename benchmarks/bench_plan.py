"""Planner speed (issue 22, item 7): the default plan -- every priced catalogue device, counts
sized by the deadline -- of 7B to 70B models, with two worker processes.

Run by hand: ``python benchmarks/bench_plan.py [--check]``. Times ``capacity_plan`` from the
model's name to the ranked report (device rates, search space, the sweep in two processes,
judging), once per case (a plan is long enough that one run is the figure; the first pays the
workers' start and the kernels' compilation, as a user's first ``hwsim plan`` does). The
target is 60 s per plan on 2 cores; ``--check`` exits 1 if a plan takes longer.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python benchmarks/bench_plan.py``
    sys.path.insert(0, str(ROOT))

from simulator.explore.capacity import capacity_plan

CASES = (("llama2-7b", 1e12, 30), ("llama3-8b", 1e12, 30), ("llama2-70b", 2e12, 60))
TARGET_S = 60.0


def main() -> int:
    slow = 0
    for model, tokens, days in CASES:
        t = time.perf_counter()
        report = capacity_plan(model, tokens, deadline_days=days, workers=2, progress=False)
        took = time.perf_counter() - t
        best = report.feasible.iloc[0] if not report.feasible.empty else None
        answer = (f"best {best.device} x {int(best.num_devices)}, {best.total_time_days:.3g} "
                  f"days, ${best.cost_usd:,.0f}" if best is not None else "nothing feasible")
        print(f"{model}: {tokens:.0e} tokens in {days} days: {len(report.rows)} configurations "
              f"({len(report.pruned)} devices left out as dominated) in {took:.1f} s; {answer}")
        slow += took > TARGET_S
    return 1 if slow and "--check" in sys.argv else 0


if __name__ == "__main__":
    sys.exit(main())
