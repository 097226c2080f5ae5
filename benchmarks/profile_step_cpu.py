"""Where a CPU training step's time goes, op by op: torch.profiler against hwsim's priced graph.

Run by hand: ``python benchmarks/profile_step_cpu.py MODEL --device SPEC [--threads N]
[--steps K] [--shapes] [--ops]``. MODEL is ``path/to/file.py:factory`` (as ``hwsim
validate`` takes it) or ``micro:FN:D1xD2...``, a calibration micro-model
(``simulator.calibrate.functions``, e.g. ``micro:relu:131072``); SPEC the calibrated spec of
this machine (``hwsim calibrate --device cpu-host --threads 1 --out cal.toml``).

Prints the step's measured time (``simulator.calibrate.timing.best_of``, no profiler) and
hwsim's, then torch.profiler's self CPU time per aten op (and per autograd node and
optimizer call) per step, K profiled steps averaged (``--shapes``: split by input shapes),
then hwsim's time per (kind, function, phase), split into its roofline part and its fixed
per-call part (``--ops``: every op). The profiler adds a few microseconds per recorded
event, so its total exceeds the unprofiled step; compare op kinds, not totals. This is how
the cache residency of a step (``simulator.cost.roofline.step_footprint``) was found.
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as ``python benchmarks/profile_step_cpu.py``
    sys.path.insert(0, str(ROOT))


def load(torch, model: str):
    """(module, inputs, name) of a factory file or a calibration micro-model."""
    if model.startswith("micro:"):
        from simulator.calibrate.functions import micro_model

        _, fn, dims = model.split(":")
        module, inputs = micro_model(torch, fn, tuple(int(d) for d in dims.split("x")))
        return module, inputs, model
    from workloads.torch_import import load_factory_parts

    return load_factory_parts(model)


def measured_ops(torch, step, steps: int, shapes: bool) -> list[tuple[float, float, str]]:
    """(self microseconds per step, calls per step, name) per profiler key, largest first."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=shapes) as prof:
        for _ in range(steps):
            step()
    rows = [(e.self_cpu_time_total / steps, e.count / steps,
             e.key + (f" {e.input_shapes}" if shapes else ""))
            for e in prof.key_averages(group_by_input_shape=shapes)]
    return sorted(rows, reverse=True)


def priced_ops(workload, device):
    """hwsim's step: the result, and per op (name, kind, fn, phase, roofline s, fixed s,
    time s)."""
    from simulator.api import simulate
    from simulator.cost.host import costs
    from simulator.cost.roofline import op_costs
    from simulator.graph.op import OpKind, Phase
    from simulator.plan.step import Plan

    plan = Plan(micro_batch=workload.default_batch, precision="fp32", optimizer="adamw")
    result = simulate(workload, device, plan)
    low = result.lowered
    compute, memory, time_s = op_costs(low, device, None, plan)
    fixed = costs(low, device, plan)[0]
    fns = low.fn if low.fn is not None else [None] * len(low)
    ops = [(low.names[i], OpKind(low.kind[i]).name.lower(), str(fns[i]),
            Phase(low.phase[i]).name.lower(), max(compute[i], memory[i]), fixed[i], time_s[i])
           for i in range(len(low))]
    return result, ops


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--device", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--shapes", action="store_true")
    parser.add_argument("--ops", action="store_true")
    args = parser.parse_args()
    import torch

    from hardware_specs.loader import load_device
    from simulator.calibrate.timing import best_of, flushing_subnormals, training_step
    from workloads.torch_import import import_module

    torch.set_num_threads(args.threads)
    module, inputs, name = load(torch, args.model)
    result, ops = priced_ops(import_module(module, inputs, name=name), load_device(args.device))
    step = training_step(torch, module, inputs)
    for _ in range(3):
        step()
    seconds = best_of(torch, step, "cpu", 0.5, min_reps=5)
    print(f"{name}: measured {seconds * 1e3:.3f} ms a step, hwsim {result.step_time_s * 1e3:.3f}"
          f" ms ({result.step_time_s / seconds - 1:+.1%}), {args.threads} thread(s)")
    with flushing_subnormals(torch):   # as best_of times it
        rows = measured_ops(torch, step, args.steps, args.shapes)
    print(f"\ntorch.profiler, self time per step (profiled total "
          f"{sum(r[0] for r in rows) / 1e3:.3f} ms):")
    for us, calls, key in rows:
        if us >= 1.0:
            print(f"  {key[:100]:100s} {calls:6.1f} calls {us:9.1f} us "
                  f"{us / max(calls, 1e-9):8.1f} us/call")
    groups = collections.defaultdict(lambda: [0, 0.0, 0.0, 0.0])
    for _, kind, fn, phase, roof, fixed, t in ops:
        g = groups[(kind, fn, phase)]
        g[0] += 1
        g[1], g[2], g[3] = g[1] + t * 1e6, g[2] + roof * 1e6, g[3] + fixed * 1e6
    print("\nhwsim, per (kind, function, phase):")
    for (kind, fn, phase), (n, t, roof, fixed) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        print(f"  {kind:12s} {fn:16s} {phase:10s} {n:4d} ops {t:9.1f} us (roofline {roof:8.1f},"
              f" fixed {fixed:7.1f})")
    if args.ops:
        print("\nhwsim, every op:")
        for op_name, kind, fn, phase, roof, fixed, t in ops:
            print(f"  {op_name[:40]:40s} {kind:12s} {fn:14s} {phase:10s} roofline "
                  f"{roof * 1e6:8.1f} fixed {fixed * 1e6:6.1f} time {t * 1e6:8.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
