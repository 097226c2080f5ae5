"""Speed of the schedule and critical-path kernels on a 1,000,000-op random DAG.

Run by hand: ``PYTHONPATH=. python benchmarks/bench_schedule.py [n_ops] [preds_per_op]``.
Each op j > 0 reads ``preds_per_op`` ops drawn uniformly from [0, j) (repeats allowed), on one
of 4 streams. Times are the best of 5 runs after a warm-up call (which compiles or loads the
numba cache).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python benchmarks/bench_schedule.py``
    sys.path.insert(0, str(ROOT))

from simulator.engine import kernels


def random_dag(n: int, preds_per_op: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    j = np.repeat(np.arange(1, n, dtype=np.int64), preds_per_op)
    indices = (rng.random(j.size) * j).astype(np.int64)  # uniform in [0, j)
    counts = np.r_[0, np.full(n - 1, preds_per_op)]
    indptr = np.r_[0, np.cumsum(counts)].astype(np.int64)
    duration = rng.exponential(1e-5, n)
    stream = rng.integers(0, 4, n).astype(np.int64)
    return indptr, indices, duration, stream


def best_of(fn, *args, repeats: int = 5) -> float:
    fn(*args)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    indptr, indices, duration, stream = random_dag(n, k)
    t_sched = best_of(kernels.schedule, indptr, indices, duration, stream, 4)
    t_serial = best_of(kernels.schedule, indptr, indices, duration, np.zeros(n, np.int64), 1)
    t_cp = best_of(kernels.critical_path, indptr, indices, duration)
    print(f"{n:,} ops, {indices.size:,} edges")
    print(f"schedule (4 streams): {t_sched * 1e3:8.2f} ms")
    print(f"schedule (serial):    {t_serial * 1e3:8.2f} ms")
    print(f"critical_path:        {t_cp * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()
