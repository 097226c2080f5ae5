"""Plots of a simulated step and of sweeps: the roofline, the timeline (Gantt) of the streams,
memory over the step by category, and Pareto fronts of a sweep or a capacity plan.

matplotlib is optional (``pip install "hwsim[plot]"``) and imported here only, when a plot is
drawn. Figures are built as ``matplotlib.figure.Figure`` on the Agg canvas, never through
pyplot's global state, so plotting works headless (CI, a server) and does not change the
backend of the process that calls it. Every function takes an optional ``ax`` to draw into
and returns the ``Figure``; ``save`` writes one atomically.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from simulator.errors import HwsimError
from simulator.graph.op import TENSOR_KINDS, DType
from simulator.report.io import write_atomic
from simulator.report.views import intensity_points, live_bytes, lowered_of, pareto_front
from simulator.schedule.pipeline import pipeline_blocks

INSTALL_HINT = 'pip install "hwsim[plot]"'
STREAM_NAMES = ("compute", "tensor-parallel comm", "data-parallel comm", "pipeline comm")
PHASE_COLOURS = {"forward": "tab:blue", "backward": "tab:orange", "recompute": "tab:purple",
                 "optimizer": "tab:green", "communication": "tab:red"}
MEMORY_COLOURS = {"weights": "#4c72b0", "gradients": "#dd8452", "optimizer_states": "#55a868",
                  "activations": "#c44e52", "workspace": "#8172b3"}
_GB = 1e9


class PlotError(HwsimError, ImportError):
    """matplotlib is missing, or a result has nothing to plot."""


def require() -> None:
    """Raise ``PlotError`` (one line: how to install it) if matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotError(f"plots need matplotlib: {INSTALL_HINT}") from None


def _figure(ax=None, size=(8.0, 5.0)):
    """(figure, axes): ``ax``'s, or a new figure with one axes."""
    if ax is not None:
        return ax.figure, ax
    fig = _new_figure(size)
    return fig, fig.add_subplot()


def _new_figure(size):
    """An empty figure on the Agg canvas (no pyplot: no global state, no GUI backend)."""
    require()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix: .png, .svg, .pdf) atomically
    (``simulator.report.io.write_atomic``): never a half-written image."""
    path = Path(path)
    return write_atomic(path, lambda handle: fig.savefig(
        handle, format=path.suffix.lstrip(".") or "png", dpi=120))


# -- roofline -----------------------------------------------------------------------------------
def roofline(result, ax=None):
    """Each op of the step as a point: arithmetic intensity (FLOPs per byte of memory traffic)
    against achieved FLOP/s (FLOPs over its time, overhead included), coloured by kind, under
    the device's roofs (Williams, Waterman and Patterson, "Roofline", CACM 2009): its memory
    levels' bandwidths and the matrix peaks of the formats the step uses, and the vector peak.
    FLOPs are those executed (``intensity_points``). Collectives and ops without FLOPs or bytes
    have no point."""
    points = intensity_points(result)
    fig, ax = _figure(ax)
    for kind, group in points.groupby("kind", sort=True):
        ax.scatter(group["intensity"], group["flops_per_s"], s=14, alpha=0.7,
                   label=f"{kind} ({len(group)})")
    device = result.device_spec
    if device is not None:
        lo = min(points["intensity"].min(), 0.1) if len(points) else 0.1
        hi = max(points["intensity"].max(), 1e3) if len(points) else 1e3
        _roofs(ax, device, _tensor_dtypes(result), lo / 2, hi * 2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOPs / byte)")
    ax.set_ylabel("achieved FLOP/s")
    ax.set_title(f"{result.model} on {result.device}: roofline of one step "
                 f"({len(points)} of {len(result.ops)} ops)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, which="major", alpha=0.3)
    return fig


def _tensor_dtypes(result) -> list[DType]:
    low = result.lowered
    tensor = np.isin(low.kind, [int(k) for k in TENSOR_KINDS])
    return sorted({DType(d) for d in np.unique(low.dtype[tensor])})


def _roofs(ax, device, dtypes, lo: float, hi: float) -> None:
    """One slanted roof per memory level (main memory solid; the caches, which an op whose
    bytes fit in them streams from, dotted) and one flat roof per compute peak."""
    bandwidth = device.memory_bandwidth_bytes_per_s
    peaks = {f"{d.name.lower()} matrix peak": device.peak_for(d) for d in dtypes}
    peaks["vector peak"] = device.vector_flops_per_s
    top = max(peaks.values())
    x = np.geomspace(lo, max(hi, 2 * top / bandwidth), 200)
    for level in device.memory:
        rate = level.bandwidth_bytes_per_s
        under = x <= top / rate
        main = level is device.main_memory
        ax.plot(x[under], rate * x[under], color="black" if main else "grey",
                lw=1.5 if main else 1, ls="-" if main else ":",
                label=f"{level.name} {rate / 1e9:,.0f} GB/s")
    for (label, peak), style in zip(sorted(peaks.items(), key=lambda kv: -kv[1]),
                                    ("--", "-.", ":", (0, (5, 1)), (0, (1, 3)))):
        ridge = peak / bandwidth
        ax.plot([ridge, x[-1]], [peak, peak], color="black", ls=style, lw=1,
                label=f"{label} {peak / 1e12:,.1f} TFLOP/s (ridge {ridge:,.0f} FLOPs/B)")


def bars(df, y: str = "step_time_s", label: str = "device", ax=None):
    """One bar per row of a comparison (``simulator.explore.sweep.compare``): ``y`` for each ``label``."""
    for column in (y, label):
        if column not in df.columns:
            raise PlotError(f"bars: no column {column!r} (columns: {', '.join(df.columns)})")
    fig, ax = _figure(ax, (8.0, 4.0))
    values = df[y].astype(float)
    ax.bar(df[label].astype(str), values, color="tab:blue")
    for i, value in enumerate(values):
        ax.annotate(f"{value:.3g}", (i, value), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(y)
    ax.set_title(f"{y} by {label}")
    ax.tick_params(axis="x", labelrotation=30)
    return fig


# -- timeline -----------------------------------------------------------------------------------
def timeline(result, ax=None):
    """Gantt chart of one micro-batch's step on the simulated device: one row per stream
    (compute; tensor-parallel, data-parallel and pipeline communicators), each op a bar from
    its start to its end coloured by phase; the ops on the critical path carry a black strip.
    Every rank of a stage and every replica runs the same schedule; with several micro-batches
    the forward and backward repeat (``Result.micro_batches``) before the update. With a
    pipeline (pp > 1) and no ``ax``, a second panel shows the devices of one pipeline, one
    row per stage (``pipeline``)."""
    pp = result.parallel.get("pp", 1) if result.parallel else 1
    if ax is None and pp > 1:
        fig = _new_figure((10.0, 6.5))
        top, bottom = fig.subplots(2, 1, height_ratios=[1, 1.3])
        _streams(result, top)
        pipeline(result, bottom)
        return fig
    fig, ax = _figure(ax, (10.0, 3.5))
    _streams(result, ax)
    return fig


def _streams(result, ax) -> None:
    from simulator.schedule.stage import streams

    low = lowered_of(result)
    ops = result.ops
    row_of = streams(low)
    rows = sorted(set(row_of.tolist()))
    for y, stream in enumerate(rows):
        on = row_of == stream
        for phase, colour in PHASE_COLOURS.items():
            sel = on & (ops["phase"].to_numpy() == phase)
            if sel.any():
                ax.broken_barh(_spans(ops, sel), (y - 0.35, 0.7), facecolors=colour, linewidth=0,
                               label=phase if phase not in _labels(ax) else None)
        path = on & ops["critical_path"].to_numpy()
        if path.any():
            ax.broken_barh(_spans(ops, path), (y - 0.45, 0.1), facecolors="black", linewidth=0,
                           label="critical path" if "critical path" not in _labels(ax) else None)
    ax.set_yticks(range(len(rows)), [STREAM_NAMES[s] for s in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("time (ms)")
    ax.xaxis.set_major_formatter(_milliseconds())
    devices = f", one of {result.num_devices} devices" if result.num_devices > 1 else ""
    ax.set_title(f"{result.model} on {result.device}: one micro-batch's step{devices} "
                 f"(critical path {result.critical_path_s * 1e3:.3g} ms)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def pipeline(result, ax=None):
    """The step across the devices of one pipeline: one row per stage, each micro-batch's
    forward (blue) and backward (orange) a block, in the plan's schedule (GPipe: all forwards,
    then all backwards; 1F1B: p - s - 1 warm-up forwards, then one forward one backward;
    interleaved drawn as 1F1B). Every stage takes the pacing stage's forward and backward
    times, as ``simulator.parallel.rank.step_time`` does; the update comes after the last
    block."""
    par = result.parallel or {}
    p, m = par.get("pp", 1), result.micro_batches
    ops = result.ops
    forward = ops.loc[ops["phase"] == "forward", "end_s"]
    t_f = float(forward.max()) if len(forward) else 0.0
    t_b = max(par.get("micro_batch_s", t_f) - t_f, 0.0)
    fig, ax = _figure(ax, (10.0, 1.0 + 0.5 * p))
    blocks = pipeline_blocks(p, m, par.get("schedule", "1f1b") == "gpipe", t_f, t_b)
    for (stage, backward), spans in blocks.items():
        ax.broken_barh(spans, (stage - 0.4, 0.8), linewidth=0.3, edgecolor="white",
                       facecolors=PHASE_COLOURS["backward" if backward else "forward"])
    ax.set_yticks(range(p), [f"stage {s}" for s in range(p)])
    ax.set_ylim(p - 0.5, -0.5)
    ax.set_xlabel("time (ms)")
    ax.xaxis.set_major_formatter(_milliseconds())
    bubble = par.get("bubble_fraction", 0.0)
    ax.set_title(f"one pipeline of {p} stages, {m} micro-batches, {par.get('schedule')} "
                 f"schedule: bubble {bubble:.0%} of the step")
    return fig


def _spans(ops, mask) -> list[tuple[float, float]]:
    start = ops["start_s"].to_numpy()[mask]
    return list(zip(start, ops["end_s"].to_numpy()[mask] - start))


def _labels(ax) -> set[str]:
    return {artist.get_label() for artist in ax.collections}


def _milliseconds():
    from matplotlib.ticker import FuncFormatter
    return FuncFormatter(lambda x, _: f"{x * 1e3:g}")


# -- memory -------------------------------------------------------------------------------------
def memory(result, ax=None):
    """Memory of the device over one micro-batch's step, stacked by category: the states as a
    base, then live activations and workspace. Dashed: the step's peak as reported
    (``peak_memory_bytes``: with a pipeline, the activations of the other micro-batches in
    flight too); red: the device's capacity, when the step comes near it."""
    times, series = live_bytes(result)
    fig, ax = _figure(ax)
    names = list(series)
    ax.stackplot(times, *[series[n] / _GB for n in names], step="post",
                 labels=[n.replace("_", " ") for n in names],
                 colors=[MEMORY_COLOURS[n] for n in names])
    peak = result.peak_memory_bytes / _GB
    ax.axhline(peak, color="black", ls="--", lw=1, label=f"peak {peak:,.2f} GB")
    capacity = result.memory_capacity_bytes / _GB
    if capacity < 3 * peak:
        ax.axhline(capacity, color="red", lw=1.5, label=f"capacity {capacity:,.0f} GB")
    ax.set_xlabel("time (ms)")
    ax.xaxis.set_major_formatter(_milliseconds())
    ax.set_ylabel("GB per device")
    ax.set_xlim(times[0], times[-1])
    fits = "fits" if result.fits else "DOES NOT FIT"
    ax.set_title(f"{result.model} on {result.device}: memory over one micro-batch's step "
                 f"({fits} in {capacity:,.0f} GB)")
    ax.legend(fontsize=7, loc="upper left")
    return fig


def _plain_log(axis) -> None:
    """Label a log axis 2, 5, 10, 20 rather than 2 x 10^0."""
    from matplotlib.ticker import LogFormatter

    axis.set_major_formatter(LogFormatter())
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


# -- Pareto fronts ------------------------------------------------------------------------------
#: The columns a sweep has only for a whole run (``--tokens``): the pareto plot's defaults.
_RUN_TOTALS = ("total_time_days", "total_time_s", "cost_usd", "energy_kwh", "co2_kg",
               "own_cost_usd")


def pareto(df, x: str = "total_time_days", y: str = "cost_usd", hue: str | None = "device",
           ax=None):
    """Every configuration of a sweep or plan (``simulator.explore.sweep.sweep``, ``CapacityReport``) as
    a point of ``x`` against ``y``, coloured by ``hue``, and the front of those no other beats
    on both (lower is better). Rows whose ``status`` is not ``ok`` or that do not fit are
    left out."""
    from pandas.api.types import is_numeric_dtype

    for column in (x, y):
        if column in _RUN_TOTALS and column not in df.columns and "step_time_s" in df.columns:
            raise PlotError(f"pareto: no column {column!r}: the rows have no run totals (give "
                            "the sweep --tokens), or plot per step: --x step_time_s --y "
                            "cost_usd_per_step")
        if column not in df.columns:
            raise PlotError(f"pareto: no column {column!r} (columns: {', '.join(df.columns)})")
        if not is_numeric_dtype(df[column]):   # a name (device, status): no front to draw
            numeric = [c for c in (*_RUN_TOTALS, "step_time_s", "cost_usd_per_step",
                                   "energy_j_per_step") if c in df.columns]
            raise PlotError(f"pareto: column {column!r} holds names, not numbers: give a "
                            f"numeric column such as {', '.join(numeric) or 'step_time_s'}")
    rows = df
    if "status" in rows.columns:
        rows = rows[rows["status"] == "ok"]
    if "fits" in rows.columns:
        rows = rows[rows["fits"].fillna(False).astype(bool)]
    rows = rows[np.isfinite(rows[x].astype(float)) & np.isfinite(rows[y].astype(float))]
    if rows.empty:
        raise PlotError(f"pareto: no row has both {x} and {y} (and fits)")
    fig, ax = _figure(ax)
    groups = rows.groupby(hue, sort=True) if hue in rows.columns else [("configurations", rows)]
    for label, group in groups:
        ax.scatter(group[x], group[y], s=22, alpha=0.75, label=str(label))
    front = rows[pareto_front(rows, (x, y))].sort_values(x)
    ax.plot(front[x], front[y], color="black", lw=1.5, marker="o", mfc="none", ms=9,
            drawstyle="steps-post", label=f"Pareto front ({len(front)})")
    for column, set_scale, axis in ((x, ax.set_xscale, ax.xaxis), (y, ax.set_yscale, ax.yaxis)):
        values = rows[column].astype(float)
        if values.min() > 0 and values.max() / values.min() > 20:
            set_scale("log")
            _plain_log(axis)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"{y} against {x}: {len(rows)} configurations")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    return fig


__all__ = ["INSTALL_HINT", "PlotError", "bars", "memory", "pareto", "pipeline", "require",
           "roofline", "save", "timeline"]
