"""The invariants every Result keeps: a figure that breaks one is a bug in hwsim, reported as an
``InternalError``, never printed as an answer.

- every figure is a finite number (a JSON number, never NaN or Infinity);
- a step takes time and moves samples: ``step_time_s`` and ``samples_per_s`` above 0;
- utilisation: 0 <= MFU <= HFU <= 1 (model FLOPs count no more than the hardware runs, and
  the hardware runs no faster than its peak);
- memory: every part of ``memory_breakdown`` at least 0, the parts summing to
  ``peak_memory_bytes``, and ``fits`` exactly when the peak is within the capacity;
- power: the average power per device between the device's idle power and the plan's power
  limit (the TDP by default);
- run totals: each at least 0.
"""
from __future__ import annotations

import math
import numbers

from simulator.errors import InternalError

#: Relative slack of the comparisons: float sums in another order, nothing more.
_RTOL = 1e-9


def check(result) -> None:
    """Raise ``InternalError`` naming the first invariant ``result`` (a ``Result``) breaks."""
    problem = next(problems(result), None)
    if problem is not None:
        raise InternalError(f"{result.model} on {result.device}: {problem} (a bug in hwsim, "
                            "not in the input: please report it with the command that gave it)")


def problems(result):
    """The invariants ``result`` breaks, each as a line (a generator: the first is enough)."""
    summary = result.summary()
    for name, value in _numbers(summary):
        if not math.isfinite(value):
            yield f"{name} = {value} is not a finite number"
    for name in ("step_time_s", "samples_per_s"):
        if not summary[name] > 0:
            yield f"{name} = {summary[name]} is not above 0"
    mfu, hfu = summary["mfu"], summary["hfu"]
    if not 0 <= mfu <= hfu * (1 + _RTOL) or not hfu <= 1 + _RTOL:
        yield f"utilisation breaks 0 <= MFU <= HFU <= 1: MFU = {mfu}, HFU = {hfu}"
    yield from _memory(summary)
    spec = result.device_spec
    if spec is not None:
        power = summary["avg_power_w"]
        limit = summary.get("power_limit_w") or spec.tdp_w
        if not spec.idle_power_w * (1 - _RTOL) <= power <= limit * (1 + _RTOL):
            yield (f"avg_power_w = {power} W is outside the device's idle power and power "
                   f"limit [{spec.idle_power_w:g}, {limit:g}] W")
    for name in ("steps", "total_time_s", "device_hours", "energy_kwh", "co2_kg", "cost_usd"):
        value = summary.get(name)
        if value is not None and not value >= 0:
            yield f"{name} = {value} is below 0"


def _memory(summary: dict):
    parts, peak = summary["memory_breakdown"], summary["peak_memory_bytes"]
    negative = [name for name, value in parts.items() if not value >= 0]
    if negative:
        yield f"memory {negative[0]} = {parts[negative[0]]} bytes is below 0"
    total = sum(parts.values())
    if not abs(total - peak) <= _RTOL * max(abs(peak), 1.0):
        yield f"memory parts sum to {total} bytes, not peak_memory_bytes = {peak}"
    if summary["fits"] != (peak <= summary["memory_capacity_bytes"]):
        yield (f"fits = {summary['fits']} but peak_memory_bytes = {peak} and "
               f"memory_capacity_bytes = {summary['memory_capacity_bytes']}")


def _numbers(value, name: str = ""):
    """(dotted name, value) of every number in a summary (bools and None left out)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{name}.{key}" if name else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _numbers(item, f"{name}[{i}]")
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        yield name, float(value)


__all__ = ["check", "problems"]
