"""Simulator speed on a 1,024-device step: GPT-3 175B, tp 8 x pp 16 x dp 8 on A100s.

Run by hand: ``python benchmarks/bench_cluster.py``. Times the whole ``simulate`` call (stage
graphs built from the workload, tensor-parallel split, training derivation, data-parallel
collectives, lowering, pricing on the cluster, scheduling, memory, energy, run totals): the
engine simulates one micro-batch of the first and of the last stage of one rank and expands
the 192 micro-batches, 16 stages and 8 replicas in closed form. Best and median of 10 after a
warm-up that compiles the kernels.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python benchmarks/bench_cluster.py``
    sys.path.insert(0, str(ROOT))

from simulator import simulate
from simulator.plan.parallel import ParallelPlan


def step():
    return simulate("gpt3-175b", "a100", parallel=ParallelPlan(dp=8, tp=8, pp=16),
                    micro_batch=1, global_batch=1536, recompute="full", tokens=300e9)


def main() -> None:
    step()  # warm-up: JIT compile / cache load
    times = []
    for _ in range(10):
        t = time.perf_counter()
        result = step()
        times.append(time.perf_counter() - t)
    print(f"GPT-3 175B on {result.num_devices} A100s (dp 8 x tp 8 x pp 16, 192 micro-batches): "
          f"simulate best {min(times) * 1e3:.1f} ms, median "
          f"{sorted(times)[len(times) // 2] * 1e3:.1f} ms; step {result.step_time_s:.2f} s, "
          f"{result.tflops_per_device:.0f} TFLOP/s per device, HFU {result.hfu:.1%}, "
          f"{result.peak_memory_bytes / 1e9:.1f} GB per device")


if __name__ == "__main__":
    main()
