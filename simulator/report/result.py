"""Result: the figures of one simulated training step, per-op detail and exports."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hardware_specs.spec import DeviceSpec
from simulator.graph.lower import Lowered
from simulator.errors import InternalError
from simulator.graph.op import DType, OpKind, Phase
from simulator.report.check import check
from simulator.report.io import write_atomic

if TYPE_CHECKING:
    import pandas as pd

_BOUND = np.array(["compute", "memory"])


@dataclass
class Result:
    """Figures are per step unless named otherwise; memory and power are per device."""

    model: str
    device: str
    precision: str
    micro_batch: int
    global_batch: int
    micro_batches: int
    step_time_s: float
    samples_per_s: float
    tokens_per_s: float | None
    flops_per_step: float
    hardware_flops_per_step: float
    tflops_per_device: float
    mfu: float
    hfu: float
    peak_memory_bytes: float
    memory_breakdown: dict[str, float]
    memory_capacity_bytes: float
    fits: bool
    energy_j_per_step: float
    avg_power_w: float
    params: int
    # the devices' power limit the step ran under (the TDP unless the plan set one lower)
    power_limit_w: float | None = None
    num_devices: int = 1
    critical_path_s: float = 0.0         # longest dependency chain of one micro-batch's step
    step_overhead_s: float = 0.0         # per step outside its graph (plan.step_overhead_ms)
    saved_activation_bytes: float = 0.0  # kept for the backward at the end of the forward
    trainable_params: int | None = None  # fine-tuning's trained parameters (None: all of them)
    totals: dict[str, float | None] = field(default_factory=dict)
    # the split over devices: dp, tp, pp, cp, zero, sequence_parallel, schedule,
    # virtual_stages, the framework switches, stage_layers, cluster, params_per_device,
    # micro_batch_s (the slowest stage's forward + backward of one micro-batch),
    # bubble_fraction, communication_s, exposed_communication_s
    parallel: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # caveats a user should read with the figures
    unknown_ops: list[str] = field(default_factory=list)  # imported operators costed by traffic
    lowered: Lowered | None = field(default=None, repr=False)
    times: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    device_spec: DeviceSpec | None = field(default=None, repr=False)  # the roofs of its plots

    # -- the contract ----------------------------------------------------------------------------
    def summary(self) -> dict:
        """The fields of ``hwsim predict --json`` (DESIGN.md, contract)."""
        out = {
            "model": self.model, "device": self.device, "num_devices": self.num_devices,
            "precision": self.precision, "params": self.params,
            "global_batch": self.global_batch, "micro_batch": self.micro_batch,
            "micro_batches": self.micro_batches,
            "step_time_s": self.step_time_s, "samples_per_s": self.samples_per_s,
            "tokens_per_s": self.tokens_per_s, "flops_per_step": self.flops_per_step,
            "hardware_flops_per_step": self.hardware_flops_per_step,
            "tflops_per_device": self.tflops_per_device, "mfu": self.mfu, "hfu": self.hfu,
            "peak_memory_bytes": self.peak_memory_bytes,
            "memory_breakdown": dict(self.memory_breakdown),
            "memory_capacity_bytes": self.memory_capacity_bytes, "fits": self.fits,
            "energy_j_per_step": self.energy_j_per_step, "avg_power_w": self.avg_power_w,
            "power_limit_w": self.power_limit_w,
            **self.efficiency(),
            "critical_path_s": self.critical_path_s,
            "step_overhead_s": self.step_overhead_s,
            "saved_activation_bytes": self.saved_activation_bytes,
            "parallel": dict(self.parallel),
        }
        out.update(self.totals)
        out["notes"] = list(self.notes)
        out["unknown_ops"] = list(self.unknown_ops)
        return out

    def efficiency(self) -> dict[str, float | None]:
        """Work per energy of the devices alone (no node, no facility: the run totals add
        those): ``tokens_per_joule`` (None for a model without tokens), ``samples_per_kwh`` and
        ``tflops_per_watt`` (model TFLOP/s per device over its average power)."""
        watts = self.avg_power_w * self.num_devices
        if not watts > 0:
            return {"tokens_per_joule": None, "samples_per_kwh": None, "tflops_per_watt": None}
        return {"tokens_per_joule": self.tokens_per_s / watts if self.tokens_per_s else None,
                "samples_per_kwh": self.samples_per_s / watts * 3.6e6,
                "tflops_per_watt": self.tflops_per_device / self.avg_power_w}

    @property
    def tokens_per_joule(self) -> float | None:
        """Tokens per joule of the devices alone (``efficiency``); None without tokens."""
        return self.efficiency()["tokens_per_joule"]

    @property
    def samples_per_kwh(self) -> float | None:
        """Samples per kWh of the devices alone (``efficiency``)."""
        return self.efficiency()["samples_per_kwh"]

    @property
    def tflops_per_watt(self) -> float | None:
        """Model TFLOP/s per device over its average power (``efficiency``)."""
        return self.efficiency()["tflops_per_watt"]

    def to_json(self) -> str:
        """``summary()`` as JSON: numbers only, never NaN or Infinity (``InternalError``)."""
        try:
            return json.dumps(self.summary(), indent=2, allow_nan=False)
        except ValueError as err:
            raise InternalError(f"{self.model} on {self.device}: {err} (a bug in hwsim)") from None

    def check(self) -> Result:
        """Raise ``InternalError`` if a figure breaks one of hwsim's invariants
        (``simulator.report.check``: finite, MFU <= HFU <= 1, memory parts summing to the peak,
        ``fits``, power between idle and TDP); ``simulate`` runs it on every Result it
        builds. Returns the Result."""
        check(self)
        return self

    # -- per-op detail ------------------------------------------------------------------------------
    @cached_property
    def ops(self) -> pd.DataFrame:
        """One row per op of one micro-batch's step (serial schedule), with its energy in
        joules and whether it lies on the step's critical path."""
        import pandas as pd

        low, t = self.lowered, self.times
        if low is None:
            return pd.DataFrame()
        return pd.DataFrame({
            "name": low.names,
            "kind": [OpKind(k).name.lower() for k in low.kind],
            "phase": [Phase(p).name.lower() for p in low.phase],
            "dtype": [DType(d).name.lower() for d in low.dtype],
            "layer": low.layer, "flops": low.flops,
            "bytes": low.bytes_read + low.bytes_written,
            "compute_s": t["compute_s"], "memory_s": t["memory_s"],
            "bound": _BOUND[(t["memory_s"] > t["compute_s"]).astype(int)],
            "time_s": t["time_s"], "start_s": t["start_s"], "end_s": t["end_s"],
            "energy_j": t["energy_j"], "critical_path": t["critical_path"],
        })

    def to_chrome_trace(self, path: str | os.PathLike) -> Path:
        """Write the step as a Chrome / Perfetto trace (JSON, microseconds), atomically: one
        thread per stream (tid 0 compute, 1 tensor-parallel communicator, 2 data-parallel,
        3 pipeline)."""
        from simulator.schedule.stage import streams

        ops = self.ops
        tids = streams(self.lowered).tolist() if self.lowered is not None else []
        events = [{"name": row.name, "cat": row.kind, "ph": "X", "pid": 0, "tid": tid,
                   "ts": row.start_s * 1e6, "dur": row.time_s * 1e6,
                   "args": {"phase": row.phase, "flops": int(row.flops), "bytes": int(row.bytes),
                            "bound": row.bound, "energy_j": row.energy_j}}
                  for row, tid in zip(ops.itertuples(index=False), tids)]
        trace = {"traceEvents": events, "displayTimeUnit": "ms",
                 "metadata": {"model": self.model, "device": self.device}}
        return write_atomic(path, json.dumps(trace))

    # -- plots (simulator.report.plots; matplotlib is imported only when one is drawn) --------------------
    def plot_roofline(self, path: str | os.PathLike | None = None):
        """Each op on the device's roofline (``simulator.report.plots.roofline``); saved if ``path``."""
        return self._plot("roofline", path)

    def plot_timeline(self, path: str | os.PathLike | None = None):
        """Gantt chart of the step's streams (``simulator.report.plots.timeline``); saved if ``path``."""
        return self._plot("timeline", path)

    def plot_memory(self, path: str | os.PathLike | None = None):
        """Memory over the step by category (``simulator.report.plots.memory``); saved if ``path``."""
        return self._plot("memory", path)

    def _plot(self, name: str, path):
        from simulator.report import plots

        fig = getattr(plots, name)(self)
        if path is not None:
            plots.save(fig, path)
        return fig

