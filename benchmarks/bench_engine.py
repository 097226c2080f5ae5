"""Engine speed on the GPT-3 175B training graph: lower, price, schedule, liveness, energy.

Run by hand: ``python benchmarks/bench_engine.py``. The graph (all 96 layers, forward,
backward, optimizer) is built once; the timed part is what a sweep repeats per device: the
hand-off to arrays and every engine pass. Best of 20 after a warm-up that compiles the kernels.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python benchmarks/bench_engine.py``
    sys.path.insert(0, str(ROOT))

from hardware_specs.loader import load_device
from simulator.cost.energy import op_energy, step_energy
from simulator.cost.roofline import op_costs
from simulator.engine.kernels import critical_path, schedule
from simulator.graph.lower import lower
from simulator.plan.parallel import ParallelPlan
from simulator.plan.step import Plan
from simulator.schedule.memory import stage_memory
from simulator.schedule.stage import N_STREAMS, StageRun, streams
from simulator.schedule.step import step_time
from simulator.training.backward import training_graph
from simulator.training.fusion import fuse_attention
from workloads.presets import TRANSFORMERS


def engine(step, forward, plan, device):
    lowered = lower(step)
    compute_s, memory_s, time_s = op_costs(lowered, device)
    start, end = schedule(lowered.indptr, lowered.indices, time_s, streams(lowered), N_STREAMS)
    critical_path(lowered.indptr, lowered.indices, time_s)
    run = StageRun(0, forward, lowered, compute_s, memory_s, time_s, start, end)
    memory = stage_memory(run, plan, ParallelPlan(), 1)
    energy = step_energy(lowered, op_energy(lowered, device, compute_s, memory_s, time_s), 1)
    return step_time([run], ParallelPlan(), 1)[0], memory, energy, len(lowered)


def main() -> None:
    plan = Plan(micro_batch=1)
    device = load_device("a100")
    t0 = time.perf_counter()
    forward = fuse_attention(TRANSFORMERS["gpt3-175b"].forward_graph(1, plan.formats.activation))
    step = training_graph(forward, plan)
    build = time.perf_counter() - t0
    engine(step, forward, plan, device)  # warm-up: JIT compile / cache load
    times = []
    for _ in range(20):
        t = time.perf_counter()
        result = engine(step, forward, plan, device)
        times.append(time.perf_counter() - t)
    print(f"GPT-3 175B training graph: {result[3]:,} ops; graph build {build * 1e3:.0f} ms "
          f"(once); engine best {min(times) * 1e3:.1f} ms, median "
          f"{sorted(times)[len(times) // 2] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
