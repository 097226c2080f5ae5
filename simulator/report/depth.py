"""A deep stack of identical layers from two shallower ones: its layers are priced once.

A transformer's layers are alike, so every additive figure of a step -- time, FLOPs, energy,
each memory part, parameters, communication -- is affine in the number of layers once the
pipeline of layers is in its steady state: the step of L layers is the step of L1 plus
(L - L1) times what one more layer adds. ``simulate`` builds and schedules two stacks of
L1 < L2 layers and ``extrapolate`` takes each additive figure to L; the ratios (throughput,
TFLOP/s, MFU, HFU, average power, bubble fraction) and ``fits`` follow from them as
``simulate`` computes them. Measured on 64, 128 and 192 layers under dp, tp, pp, ZeRO-3, full
recomputation, cp and the interleaved schedule, every additive figure's second difference is
below 1e-12 of it (float rounding); tests/test_hostile.py compares an extrapolated stack with
the full one.
"""
from __future__ import annotations

from dataclasses import replace

from simulator.report.result import Result

#: Additive figures of a Result and of its ``parallel``: affine in the number of layers.
ADDITIVE = ("step_time_s", "flops_per_step", "hardware_flops_per_step", "energy_j_per_step",
            "critical_path_s", "saved_activation_bytes")
PARALLEL_ADDITIVE = ("micro_batch_s", "communication_s", "exposed_communication_s")


def extrapolate(small: Result, large: Result, depths: tuple[int, int], depth: int,
                dense_peak: float, tokens_per_sample: int | None,
                stage_layers: list[int] | None) -> Result:
    """The Result of ``depth`` layers from those of ``depths`` = (L1, L2) layers (``small``,
    ``large``); ``dense_peak``: MFU's denominator; ``stage_layers``: the deep plan's."""
    low, high = depths
    share = (depth - low) / (high - low)

    def at(a: float, b: float) -> float:
        return a + (b - a) * share

    figures = {name: at(getattr(small, name), getattr(large, name)) for name in ADDITIVE}
    memory = {part: at(small.memory_breakdown[part], large.memory_breakdown[part])
              for part in large.memory_breakdown}
    peak = sum(memory.values())
    step, n = figures["step_time_s"], large.num_devices
    samples = large.global_batch / step
    achieved = figures["flops_per_step"] / n / step
    bubble = at(small.parallel["bubble_fraction"] * small.step_time_s,
                large.parallel["bubble_fraction"] * large.step_time_s)
    parallel = {**large.parallel, **{name: at(small.parallel[name], large.parallel[name])
                                     for name in PARALLEL_ADDITIVE},
                "params_per_device": round(at(small.parallel["params_per_device"],
                                              large.parallel["params_per_device"])),
                "stage_layers": stage_layers, "bubble_fraction": bubble / step}
    note = (f"{depth:,} identical layers: figures extrapolated from {low} and {high} layers "
            f"(each additive figure is affine in the layers); the per-op detail (ops, "
            f"timeline) is the {high}-layer model's")
    return replace(
        large, **figures, samples_per_s=samples,
        tokens_per_s=samples * tokens_per_sample if tokens_per_sample else None,
        tflops_per_device=achieved / 1e12, mfu=achieved / dense_peak,
        hfu=figures["hardware_flops_per_step"] / n / step / dense_peak,
        peak_memory_bytes=peak, memory_breakdown=memory,
        fits=peak <= large.memory_capacity_bytes,
        avg_power_w=figures["energy_j_per_step"] / step,
        params=round(at(small.params, large.params)), parallel=parallel,
        trainable_params=(None if large.trainable_params is None
                          else round(at(small.trainable_params, large.trainable_params))),
        notes=[*large.notes, note], totals={})


__all__ = ["ADDITIVE", "PARALLEL_ADDITIVE", "extrapolate"]
