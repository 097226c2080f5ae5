"""Validation: time real training steps with torch here, predict the same steps, compare.

A step is what a training loop runs: forward, loss, backward, ``optimizer.step()`` (AdamW) and
``zero_grad``. The loss follows the importer's rule (``workloads.torch_import``): a scalar
output is the loss, logits (N, C) or (N, T, C) get cross-entropy over the last axis, anything
else its mean. Measured and predicted figures are kept apart in ``Row`` and never mixed.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from hardware_specs.spec import DeviceSpec
from simulator.plan.step import Plan


@dataclass(frozen=True)
class Row:
    model: str
    batch: int
    measured_s: float
    predicted_s: float
    measured_peak_bytes: float | None
    predicted_peak_bytes: float

    @property
    def error(self) -> float:
        """Predicted / measured - 1."""
        return self.predicted_s / self.measured_s - 1.0


def measure_step(module, inputs: tuple, runtime: str = "cpu", steps: int = 5,
                 warmup: int = 2, min_time_s: float = 0.25) -> tuple[float, float | None]:
    """Seconds of one training step (and peak bytes on CUDA) with torch: the best of five
    batches of at least ``steps`` steps (and ``min_time_s`` in all), timed as ``hwsim
    calibrate`` times its micro-benchmarks (``simulator.calibrate.timing``)."""
    import torch

    from simulator.calibrate.timing import best_of, training_step

    module = module.to(runtime)
    step = training_step(torch, module, tuple(x.to(runtime) if hasattr(x, "to") else x
                                              for x in inputs))
    for _ in range(warmup):
        step()
    if runtime.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    seconds = best_of(torch, step, runtime, min_time_s, min_reps=steps)
    peak = float(torch.cuda.max_memory_allocated()) if runtime.startswith("cuda") else None
    return seconds, peak


def validate_models(specs: list[str], device: DeviceSpec, runtime: str = "cpu", steps: int = 5,
                    passes: int | None = None, progress=None) -> list[Row]:
    """Measure each ``file.py:factory``'s training step here and predict it on ``device``.

    Every model is timed in each of ``passes`` interleaved passes over the list (default
    ``simulator.calibrate.timing.PASSES``, as ``hwsim calibrate`` times its cases) and keeps the
    lower median (``simulator.calibrate.timing.median_over_passes``).
    """
    from simulator.calibrate.timing import PASSES, median_over_passes
    from workloads.torch_import import load_factory_parts

    parts = [load_factory_parts(spec) for spec in specs]
    measured = median_over_passes(parts,
                                  lambda part: measure_step(part[0], part[1], runtime, steps),
                                  passes or PASSES, progress, lambda part: part[2])
    return predict_rows(parts, measured, device)


def predict_rows(parts: list[tuple], measured: list[tuple[float, float | None]],
                 device: DeviceSpec) -> list[Row]:
    """``Row``s of the models ``parts`` (``workloads.torch_import.load_factory_parts``: module,
    inputs, name) measured at ``(seconds, peak bytes)`` each, predicted on ``device``."""
    from simulator.api import simulate
    from workloads.torch_import import import_module

    rows = []
    for (module, inputs, name), (seconds, peak) in zip(parts, measured):
        workload = import_module(module, inputs, name=name)
        plan = Plan(micro_batch=workload.default_batch, precision="fp32", optimizer="adamw")
        result = simulate(workload, device, plan)
        rows.append(Row(name, workload.default_batch, seconds, result.step_time_s, peak,
                        result.peak_memory_bytes))
    return rows


def report(rows: list[Row]) -> str:
    """Predicted vs measured step time per model and the median |error|; peak memory too
    where the device reports it (CUDA's max_memory_allocated)."""
    memory = any(r.measured_peak_bytes is not None for r in rows)
    head = f"{'model':24s} {'batch':>5s} {'measured':>12s} {'predicted':>12s} {'error':>8s}"
    lines = [head + ("  peak memory measured / predicted" if memory else "")]
    for r in rows:
        line = (f"{r.model:24s} {r.batch:5d} {r.measured_s * 1e3:10.2f}ms "
                f"{r.predicted_s * 1e3:10.2f}ms {r.error:+8.1%}")
        if r.measured_peak_bytes is not None:
            line += (f"  {r.measured_peak_bytes / 2**20:9.1f} / "
                     f"{r.predicted_peak_bytes / 2**20:.1f} MiB")
        lines.append(line)
    if rows:
        median = statistics.median(abs(r.error) for r in rows)
        lines.append(f"median |error| {median:.1%} over {len(rows)} models")
    return "\n".join(lines)
