"""The tables behind the plots (``simulator.report.plots``), for notebooks and tests: the roofs of
devices, each op's place on the roofline, where a step's time goes by kind, memory over the
step by category, and the Pareto front of a table (a sweep's plot, capacity planning's
front). pandas and numpy only: no matplotlib."""
from __future__ import annotations

import numpy as np
import pandas as pd

from simulator.errors import HwsimError
from simulator.graph.op import OpKind, Phase


class ViewError(HwsimError):
    """A result has nothing to show (no ops)."""


def lowered_of(result):
    """``result.lowered``, or a ViewError if the result has no ops."""
    if result.lowered is None or not len(result.lowered.names):
        raise ViewError(f"{result.model} on {result.device}: the result has no ops to show")
    return result.lowered


def device_roofs(devices, precision: str = "bf16"):
    """One row per device: main-memory bandwidth, the matrix peak for ``precision`` and the
    vector peak, and their ridge points (the arithmetic intensity, FLOPs per byte, above
    which an op can be compute-bound). ``devices``: catalogue names or ``DeviceSpec``s."""
    from hardware_specs.loader import load_device
    from simulator.plan.step import FORMATS, Precision

    dtype = FORMATS[Precision(precision)].compute
    rows = []
    for device in devices:
        spec = device if not isinstance(device, str) else load_device(device)
        bandwidth = spec.memory_bandwidth_bytes_per_s
        matrix = spec.peak_for(dtype)
        rows.append({"device": spec.name, "class": spec.device_class.value,
                     "memory_gb_per_s": bandwidth / 1e9, "matrix_tflops": matrix / 1e12,
                     "vector_tflops": spec.vector_flops_per_s / 1e12,
                     "matrix_ridge_flops_per_byte": matrix / bandwidth,
                     "vector_ridge_flops_per_byte": spec.vector_flops_per_s / bandwidth})
    return pd.DataFrame(rows).set_index("device")


def intensity_points(result):
    """The roofline's points: one row per op with FLOPs, bytes and time (name, kind, phase,
    bound, flops, bytes, time_s, intensity, flops_per_s). FLOPs are those the device executes
    (``simulator.cost.efficiency.executed_fraction``: causal fused attention skips its masked
    blocks), so no point rises above its roof."""
    from simulator.cost.efficiency import executed_fraction

    low = lowered_of(result)
    ops = result.ops
    flops = low.flops * executed_fraction(low)
    keep = ((flops > 0) & (low.nbytes > 0) & (ops["time_s"].to_numpy() > 0)
            & (low.kind != OpKind.COLLECTIVE))
    points = ops.loc[keep, ["name", "kind", "phase", "bound", "bytes", "time_s"]].copy()
    points.insert(3, "flops", flops[keep])
    points["intensity"] = points["flops"] / points["bytes"]
    points["flops_per_s"] = points["flops"] / points["time_s"]
    return points


def roofline_table(*results):
    """Where the time of each step goes, per device and op kind: ops, seconds, share of the
    step's op time, the median arithmetic intensity (FLOPs per byte) and the share of the
    kind's time spent in memory-bound ops (memory traffic slower than the arithmetic)."""
    frames = []
    for result in results:
        ops = result.ops.assign(device=result.device, intensity=result.ops["flops"]
                                / result.ops["bytes"].where(result.ops["bytes"] > 0))
        ops["memory_bound_s"] = ops["time_s"].where(ops["bound"] == "memory", 0.0)
        table = ops.groupby(["device", "kind"]).agg(
            ops=("name", "size"), time_s=("time_s", "sum"),
            median_intensity=("intensity", "median"), memory_bound_s=("memory_bound_s", "sum"))
        table["time_share"] = table["time_s"] / ops["time_s"].sum()
        table["memory_bound_share"] = table["memory_bound_s"] / table["time_s"]
        frames.append(table.drop(columns="memory_bound_s"))
    return pd.concat(frames).sort_values(["device", "time_s"], ascending=[True, False])


def live_bytes(result) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(times, {category: live bytes from each time on}) over one micro-batch's schedule.

    States (weights, gradients, optimizer states, as in ``memory_breakdown``) are constant;
    an op's output and kept bytes live from its start until their last reader ends
    (``simulator.schedule.memory.live_tensors``, the liveness behind ``peak_memory_bytes``): those of
    forward and recomputed ops are activations, those of backward ops workspace."""
    from simulator.schedule.memory import live_tensors

    low = lowered_of(result)
    start, end = result.times["start_s"], result.times["end_s"]
    counted, _, out_free, keep_free = live_tensors(low, start, end)
    forward_like = (low.phase == Phase.FORWARD) | (low.phase == Phase.RECOMPUTE)
    times = np.unique(np.concatenate(([0.0], start, end)))
    series = {name: np.full(times.shape, float(result.memory_breakdown.get(name, 0.0)))
              for name in ("weights", "gradients", "optimizer_states")}
    for name, mask in (("activations", counted & forward_like),
                       ("workspace", counted & ~forward_like)):
        series[name] = (_live(times, start[mask], out_free[mask], low.out_bytes[mask])
                        + _live(times, start[mask], keep_free[mask], low.keep_bytes[mask]))
    return times, series


def _live(times, alloc, free, nbytes) -> np.ndarray:
    """Bytes allocated at or before each time and not freed by then (frees come first)."""
    nbytes = nbytes.astype(np.float64)
    order_a, order_f = np.argsort(alloc), np.argsort(free)
    allocated = np.concatenate(([0.0], np.cumsum(nbytes[order_a])))
    freed = np.concatenate(([0.0], np.cumsum(nbytes[order_f])))
    return (allocated[np.searchsorted(alloc[order_a], times, side="right")]
            - freed[np.searchsorted(free[order_f], times, side="right")])


def pareto_front(rows: pd.DataFrame, objectives) -> np.ndarray:
    """Bool mask of the rows no other row dominates: no worse on every one of ``objectives``
    (lower is better) and better on one. A missing value counts as +inf (a device without a
    price has no cost: an unknown cost is never the lower), so such a row is on the front
    only when it beats every other row on another objective."""
    if rows.empty:
        return np.zeros(0, dtype=bool)
    values = rows[list(objectives)].astype(float).to_numpy()
    values = np.where(np.isnan(values), np.inf, values)
    keep = np.ones(len(values), dtype=bool)
    for i, point in enumerate(values):
        no_worse = (values <= point).all(axis=1)
        better = (values < point).any(axis=1)
        keep[i] = not (no_worse & better).any()
    return keep


__all__ = ["ViewError", "device_roofs", "intensity_points", "live_bytes", "lowered_of",
           "pareto_front", "roofline_table"]
