"""Calibration: micro-benchmark cases, what hwsim prices for them, and the fit.

``cases()`` lists the micro-benchmarks, ``case_graph`` what hwsim prices for each;
``simulator.calibrate.timing.measure`` times them with torch; ``Calibration(device).fit(measurements)``
fits the spec's efficiency parameters (``PARAMS``, on a CPU with ``SHAPE_PARAMS``: its
convolutions' rate by shape; then each function's figures) by least
squares on the log of predicted / measured time, pricing every case with the same cost model
the simulator uses; on a CPU first raising its clock, and every peak, to the one its fastest
fp32 matmul held where that is above the spec's (``sustained_clock_hz``: a VM reports its base
clock, one core runs faster), so that no efficiency is held at its bound of 1; ``apply()``
returns the calibrated ``DeviceSpec`` (scikit-learn's shape: learned values end in ``_``).
scipy is imported only when fitting, torch only to build the function micro-models' graphs.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from hardware_specs.host import at_clock
from hardware_specs.spec import HALF_DIM_MAX, DeviceClass, DeviceSpec
from simulator.calibrate.functions import (
    EFFICIENCY_ONLY,
    FIT_ORDER,
    FITTED_ON,
    FITTED_ON_CHAINS,
    FUNCTIONS,
    micro_model,
)
from simulator.cost.roofline import op_and_issue_costs, step_footprint
from simulator.errors import HwsimError
from simulator.graph.lower import lower
from simulator.graph.op import DType
from simulator.graph.opgraph import OpGraph
from workloads.layers import Builder

#: The kinds of micro-benchmark ``Case``s.
KINDS = ("matmul", "conv", "add", "sum", "layernorm", "softmax", "train", "function")
PARAMS = ("matmul_efficiency", "conv_efficiency", "vector_efficiency", "memory_efficiency",
          "op_overhead_s", "optimizer_overhead_s", "step_overhead_s")
#: Fitted too where the device prices convolutions by shape with it (a CPU with SIMD lanes,
#: ``simulator.cost.efficiency.cpu_gemm``): the size at which a 2-D convolution runs at half
#: its plateau rate, on the conv kernels with the rest.
SHAPE_PARAMS = ("conv_half_dim",)


@dataclass(frozen=True)
class Case:
    """One micro-benchmark: ``kind`` and its dimensions (see ``case_graph``)."""

    kind: str                  # matmul | conv | add | sum | layernorm | softmax | train | function
    dims: tuple[int, ...]
    dtype: str = "fp32"
    fn: str = ""               # for ``function``: the ``Op.fn`` its micro-model exercises

    @property
    def label(self) -> str:
        return f"{self.fn or self.kind} {'x'.join(map(str, self.dims))} {self.dtype}"


@dataclass(frozen=True)
class Measurement:
    """A case's time: ``seconds`` (the lower median of its passes, ``timing.lower_median``)
    and, where they were kept, every pass's timing (``samples``, in the order timed)."""

    case: Case
    seconds: float
    samples: tuple[float, ...] = field(default=(), compare=False)


def cases(quick: bool = False) -> list[Case]:
    """The sweep: matmul shapes, convolutions by kernel/stride/channels, vector bandwidth,
    normalisation, softmax and the dispatch overhead; then training steps of chains of linears
    (the framework's per-op costs) and of each function's micro-model
    (``simulator.calibrate.functions``). ``quick`` keeps fewer of each family."""
    mm = [(256, 256, 256), (1024, 1024, 1024), (4096, 1024, 256), (64, 4096, 1024),
          (2048, 2048, 2048), (512, 512, 4096)]
    conv = [(8, 64, 56, 56, 64, 3, 1, 1), (8, 64, 56, 56, 256, 1, 1, 0),
            (8, 128, 28, 28, 128, 3, 2, 1), (8, 3, 224, 224, 64, 7, 2, 3),
            (8, 256, 14, 14, 256, 3, 1, 1)]
    # vectors up to 16 MiB: beyond glibc's 32 MiB mmap threshold every output is fresh pages,
    # a page-fault cost that training steps of the small models a CPU trains never see
    vec = [1 << 12, 1 << 16, 1 << 20, 1 << 22]
    rows = [(1024, 256), (4096, 768)]
    # whole training steps of chains of small linears (layers, width, batch, relu between):
    # the framework's per-op cost in forward, backward and the optimizer, which a bare kernel
    # does not show; with and without relus, so that per-op and per-tensor costs separate
    train = [(1, 8, 4, 0), (4, 8, 4, 0), (16, 8, 4, 0), (16, 8, 4, 1), (4, 256, 64, 1)]
    fns = FUNCTIONS
    if quick:
        mm, conv, vec, rows, train = mm[:2], conv[:2], vec[1:3], rows[:1], train[1:4]
        # the two smallest sizes of each function: the fastest to time, and the regime of the
        # small models a CPU trains in tests (tensors that stay in cache)
        fns = {fn: sizes[:2] for fn, sizes in FUNCTIONS.items()}
    out = [Case("matmul", d) for d in mm] + [Case("conv", d) for d in conv]
    out += [Case("add", (n,)) for n in vec] + [Case("sum", (n,)) for n in vec[-2:]]
    out += [Case("layernorm", r) for r in rows] + [Case("softmax", r) for r in rows]
    out += [Case("train", d) for d in train]
    return out + [Case("function", d, fn=fn) for fn, sizes in fns.items() for d in sizes]


def case_graph(case: Case) -> OpGraph:
    """What hwsim prices for a case: the case's op is the graph's last op, or for ``train``
    the whole training step (forward, cross-entropy, backward, AdamW update)."""
    graph = OpGraph(case.label)
    b = Builder(graph, dtype=DType[case.dtype.upper()])
    d = case.dims
    if case.kind == "train":
        return _train_graph(b, *d)
    if case.kind == "function":
        return _function_graph(case)
    if case.kind == "matmul":  # (m, k) @ (k, n)
        m, n, k = d
        b.linear("mm", b.input("a", m * k), m, k, n, bias=False)
    elif case.kind == "conv":
        n, cin, h, w, cout, kernel, stride, pad = d
        b.conv2d("conv", b.input("x", n * cin * h * w), n, cin, h, w, cout, kernel, stride, pad)
    elif case.kind == "add":
        b.add(b.input("a", d[0]), b.input("b", d[0]), d[0], base="add")
    elif case.kind == "sum":
        b.mean(b.input("x", d[0]), d[0], 1, base="sum")
    elif case.kind == "layernorm":
        b.norm("layernorm", b.input("x", d[0] * d[1]), d[0], d[1])
    elif case.kind == "softmax":
        b.softmax(b.input("x", d[0] * d[1]), d[0], d[1])
    else:
        raise ValueError(f"unknown calibration case {case.kind!r}")
    return graph


def _train_graph(b: Builder, layers: int, width: int, batch: int, relu: int) -> OpGraph:
    from simulator.plan.step import Plan
    from simulator.training.backward import training_graph

    x = None
    for layer in range(layers):
        b.layer = layer
        x = b.linear("fc", x, batch, width, width)
        if relu and layer < layers - 1:
            x = b.activation("relu", x, batch * width)
    b.layer = -1
    b.loss(x, batch, width)
    return training_graph(b.graph, Plan(micro_batch=batch, precision="fp32", optimizer="adamw"))


@functools.lru_cache(maxsize=None)
def _function_graph(case: Case) -> OpGraph:
    """The training step of ``case.fn``'s micro-model, imported from torch as any model is."""
    import torch

    from simulator.plan.step import Plan
    from simulator.training.backward import training_graph
    from workloads.torch_import import import_module

    module, inputs = micro_model(torch, case.fn, case.dims)
    workload = import_module(module, inputs, name=case.label)
    return training_graph(workload.forward_graph(workload.default_batch, DType[case.dtype.upper()]),
                          Plan(micro_batch=workload.default_batch, precision=case.dtype,
                               optimizer="adamw"))


@functools.lru_cache(maxsize=None)
def _lowered(case: Case):
    return lower(case_graph(case))


def case_seconds(case: Case, time_s: np.ndarray, issue_s: np.ndarray | None = None) -> float:
    """The predicted time of a case from its graph's per-op times (a serial stream) and, on a
    GPU, the host's issue cost of each (``simulator.cost.host``): a training step runs its ops
    in order, none before the host has issued it; a kernel timed alone, called back to back,
    takes the longer of its time and its issue cost per call."""
    if issue_s is None or not issue_s.any():
        return float(time_s.sum()) if case.kind in ("train", "function") else float(time_s[-1])
    if case.kind not in ("train", "function"):
        return float(max(time_s[-1], issue_s[-1]))
    end = 0.0
    for t, issued in zip(time_s.tolist(), np.cumsum(issue_s).tolist()):
        end = max(end, issued) + t
    return end


def predicted_seconds(case: Case, device: DeviceSpec) -> float:
    """What hwsim predicts for ``case`` on ``device``: its ops priced, with the host."""
    _, _, time_s, issue_s = op_and_issue_costs(_lowered(case), device)
    return case_seconds(case, time_s, issue_s)


class Calibration:
    """Fits the efficiency parameters of ``device`` to measurements (least squares, log time)."""

    def __init__(self, device: DeviceSpec) -> None:
        # a calibrated spec calibrated again starts from no function figures: every one is
        # fitted anew, and stage 1 must not price the chains with the old ones
        self.device = dataclasses.replace(device, function_efficiency={},
                                          function_overhead_s={},
                                          # every case is fp32: its fitted matmul and conv
                                          # efficiencies serve fp32, not the spec's own
                                          # fp32 figures (which would price the cases
                                          # instead, leaving the fitted ones undetermined)
                                          fp32_matmul_efficiency=None,
                                          fp32_conv_efficiency=None,
                                          # fitted anew where they apply (SHAPE_PARAMS)
                                          conv_half_dim=None)
        arch = device.architecture
        shaped = device.device_class is DeviceClass.CPU and bool(arch.simd_width_bits)
        self._params = PARAMS + (SHAPE_PARAMS if shaped else ())
        self._base = self.device      # before ``fit`` raises a CPU's clock from its timings

    def fit(self, measurements: list[Measurement],
            start: Calibration | None = None) -> Calibration:
        """Least squares on log time in two stages: the global ``PARAMS`` on the kernel and
        chain cases, then each function of ``FUNCTIONS`` on its own micro-model cases with
        everything before it known.

        One pass, not alternated to a joint optimum: a function's own per-call cost and the
        global per-op cost are nearly collinear, and alternating lets the functions absorb the
        framework's per-op cost, leaving every function not calibrated none. Kernels timed
        alone are priced without the function figures (they measure the kinds' efficiencies
        and the bare dispatch); training steps with them, so the chains' linears take the
        ``linear`` figures, fitted on larger linears (``report`` shows what that costs).

        ``start``: a fit of nearly the same timings (``simulator.calibrate.stability``'s halves)
        to start every least-squares problem from, once, instead of the grid of starts."""
        kernels = [m for m in measurements if m.case.kind != "function"]
        # a CPU's clock (and every peak) raised to the one its fastest fp32 matmul held
        # (``sustained_clock_hz``), so that no efficiency must exceed 1; never lowered
        self.clock_hz_ = sustained_clock_hz(self._base, kernels)
        base_clock = self._base.architecture.clock_hz
        self.device = (at_clock(self._base, self.clock_hz_)
                       if self.clock_hz_ is not None and self.clock_hz_ > base_clock
                       else self._base)
        self.function_efficiency_: dict[str, float] = {}
        self.function_overhead_s_: dict[str, float] = {}
        x = self._fit_globals(kernels, start)
        # a figure no case's time depends on keeps the spec's value (``undetermined``); the
        # others fitted again with it held, once, from where the fit stopped
        self.held_ = self.undetermined(kernels, x)
        if self.held_:
            x = self._fit_globals(kernels, held=self.held_, x0=x)
        for name, value in zip(self._params, x):
            setattr(self, name + "_", _cost(name, float(value)))
        self.dispatch_s_ = _cost("dispatch_s", float(x[-1]))
        for fn in FIT_ORDER:
            host = FITTED_ON.get(fn, fn)
            cases = [m for m in measurements if m.case.kind == "function" and m.case.fn == host]
            if fn in FITTED_ON_CHAINS and cases:   # (where its micro-models were timed)
                cases += [m for m in measurements if m.case.kind == "train"]
            if cases:
                self._fit_function(fn, cases, start)
        # a ``simulator.calibrate.stability.Spread``, set by the caller after ``checked_fit``
        # (``hwsim calibrate``): this module does not import it, which imports this one
        self.spread_ = None
        self.measurements_ = kernels + [m for m in measurements if m.case.kind == "function"]
        self.residuals_ = np.array([self._predict(m.case, self._device_for(m.case)) / m.seconds
                                    - 1.0 for m in self.measurements_])  # predicted/measured - 1
        return self

    def _device_for(self, case: Case) -> DeviceSpec:
        """The calibrated spec as it prices ``case``: a kernel timed alone pays the bare
        dispatch and its kind's rates; a training step the framework's per-op cost."""
        if case.kind in ("train", "function"):
            return self.apply()
        return dataclasses.replace(self.device, op_overhead_s=self.dispatch_s_,
                                   **{name: getattr(self, name + "_") for name in self._params
                                      if name not in PARAMS[-3:]})

    @staticmethod
    def _predict(case: Case, device: DeviceSpec) -> float:
        return predicted_seconds(case, device)

    def _predictions(self, measurements: list[Measurement], x) -> np.ndarray:
        """Each case's predicted seconds at ``x`` (the ``_params``, then the bare dispatch):
        a kernel timed alone pays the bare dispatch, a training step the per-op cost."""
        training = self._spec(x[:-1])
        bare = self._spec(x[:-1], op_overhead_s=x[-1])
        return np.array([predicted_seconds(m.case, training if m.case.kind == "train" else bare)
                         for m in measurements])

    def undetermined(self, measurements: list[Measurement], x) -> dict[str, float]:
        """The ``PARAMS`` that no case's predicted time depends on, each with the spec's own
        value (``self.device``'s: a datasheet figure, a prior, or cpu-host's copy rate measured
        at load, ``hardware_specs.host``), which the fit then keeps instead of writing a number
        the timings did not determine. One is undetermined where, the others at ``x``, setting
        it to its fitted value, the spec's, or half of either moves no case's predicted time by
        ``UNDETERMINED`` or more: ``memory_efficiency`` where no case's bytes (a training step's:
        its traffic, ``roofline.step_footprint``) exceed the outermost cache the spec lists, or
        where every op that streams from main memory is bound by its arithmetic; a host cost
        hidden behind a GPU's kernels. On the development VM (480 MiB of L3 reported, no case
        past it) the fit left ``memory_efficiency`` at 0.006, which would have priced a step of
        more than 480 MiB at 0.2 GB/s (helper Q1, 2026-12-05)."""
        base = np.log(self._predictions(measurements, x))
        out = {}
        for i, name in enumerate(self._params):
            if name not in PARAMS:          # a shape size: no spec value to keep
                continue
            own = getattr(self.device, name)
            if own is None:                 # conv_efficiency: the spec's convolutions' rate
                own = self.device.conv_efficiency_for(DType.FP32)
            moved = 0.0
            for value in {float(x[i]), own, x[i] / 2, own / 2}:
                trial = np.array(x, dtype=np.float64)
                trial[i] = value
                moved = max(moved, float(np.max(np.abs(
                    np.log(self._predictions(measurements, trial)) - base))))
            if moved < UNDETERMINED:
                out[name] = float(own)
        return out

    def _fit_globals(self, measurements: list[Measurement],
                     start: Calibration | None = None, held: dict[str, float] | None = None,
                     x0: np.ndarray | None = None) -> np.ndarray:
        """The ``_params`` and the bare dispatch, least squares on log time; ``held``: names
        kept at the given values, not fitted; ``x0``: one local fit from there (else from
        ``start``'s figures, else from a grid of starts)."""
        from scipy.optimize import least_squares

        measured = np.array([m.seconds for m in measurements])
        # x = the PARAMS, then the dispatch cost of a bare kernel call: a nuisance parameter.
        # A kernel timed alone pays only the dispatch; an op in a training step pays the
        # framework's per-op cost (module call, autograd), which is what op_overhead_s holds.
        # the shape size (where fitted) starts at 32 elements and may fall to 0 (no shape
        # dependence) or rise to HALF_DIM_MAX
        sizes = len(self._params) - len(PARAMS)
        given = x0
        if x0 is None:
            x0 = np.array([0.5, 0.5, 0.5, 0.8, 5e-6, 1e-6, 1e-5] + [32.0] * sizes + [1e-6])
        x0 = np.array(x0, dtype=np.float64)
        lo = np.array([_EFFICIENCY_FLOOR] * 4 + [1e-8, 0.0, 0.0] + [0.0] * sizes + [1e-8])
        hi = np.array([1.0] * 4 + [1e-2, 1e-3, 1e-2] + [HALF_DIM_MAX] * sizes + [1e-3])
        held = held or {}
        free = np.array([name not in held for name in self._params] + [True])
        fixed = x0.copy()
        for i, name in enumerate(self._params):
            if name in held:
                fixed[i] = held[name]

        def full(z):
            x = fixed.copy()
            x[free] = z
            return x

        def residuals(z):
            return np.log(self._predictions(measurements, full(z))) - np.log(measured)

        # max(compute, memory) leaves flat regions where a parameter does not bind: start from
        # a grid of vector and memory efficiencies and keep the best local fit. The
        # optimizer's and the step's costs start low and high (100 us): on a GPU they are the
        # host's, hidden behind the device's kernels while small, where their gradient is
        # zero, and a fit started only there stopped in a local minimum (the A100's synthetic
        # case: op_overhead_s 8.5 us for 6, residuals 9 %); started where the step is
        # host-bound it walks down to them (tests/test_calibrate.py)
        scale = np.array([0.1] * 4 + [1e-6] * 2 + [1e-5] + [10.0] * sizes + [1e-6])
        bounds = (lo[free], hi[free])
        if given is not None or start is not None:
            # one local fit: from this fit's figures, or from a fit of nearly the same timings
            z0 = fixed[free] if given is not None else np.array(
                [getattr(start, name + "_") for name in self._params] + [start.dispatch_s_])[free]
            return full(least_squares(residuals, np.clip(z0, *bounds), bounds=bounds,
                                      x_scale=scale[free]).x)
        fits = []
        for vector, memory, host in itertools.product((0.02, 0.1, 0.5, 1.0), (0.1, 0.4, 0.9),
                                                      ((1e-6, 1e-5), (1e-4, 1e-4))):
            z0 = fixed.copy()
            z0[2], z0[3], z0[5], z0[6] = vector, memory, *host
            fits.append(least_squares(residuals, z0[free], bounds=bounds, x_scale=scale[free]))
            if _exact(fits[-1]):
                break
        return full(min(fits, key=lambda f: f.cost).x)

    def _fit_function(self, fn: str, measurements: list[Measurement],
                      start: Calibration | None = None) -> None:
        """Fit ``fn``'s efficiency (log scale) and per-call cost to its cases."""
        from scipy.optimize import least_squares

        measured = np.log([m.seconds for m in measurements])
        known = self.apply()
        overhead = fn not in EFFICIENCY_ONLY

        def spec(p):
            efficiency = {**self.function_efficiency_, fn: float(np.exp(p[0]))}
            overheads = dict(self.function_overhead_s_)
            if overhead:
                overheads[fn] = float(p[1])
            return dataclasses.replace(known, function_efficiency=efficiency,
                                       function_overhead_s=overheads)

        def residuals(p):
            device = spec(p)
            return np.log([self._predict(m.case, device) for m in measurements]) - measured

        lo, hi = [np.log(_FUNCTION_FLOOR)] + [0.0] * overhead, [0.0] + [1e-3] * overhead
        start_s = [self.op_overhead_s_] * overhead  # the global per-op cost, to begin with
        efficiencies = (1.0, 0.1, 0.01, 0.001)
        if start is not None and fn in start.function_efficiency_:   # once, from its figures
            efficiencies = (start.function_efficiency_[fn],)
            start_s = [min(start.function_overhead_s_.get(fn, 0.0), 1e-3)] * overhead
        fits = []
        for e in efficiencies:
            fits.append(least_squares(residuals, [np.log(e)] + start_s, bounds=(lo, hi),
                                      x_scale=[1.0] + [1e-5] * overhead, xtol=1e-12,
                                      ftol=1e-12))
            if _exact(fits[-1]):
                break
        best = min(fits, key=lambda f: f.cost).x
        self.function_efficiency_[fn] = float(np.exp(best[0]))
        if overhead:
            self.function_overhead_s_[fn] = _cost("overhead_s", float(best[1]))

    def _spec(self, x, **changes) -> DeviceSpec:
        values = dict(zip(self._params, map(float, x)))
        values.update(changes)
        return dataclasses.replace(self.device, **values)

    def apply(self) -> DeviceSpec:
        """The calibrated spec (a new object; the device given to the constructor is kept)."""
        held = getattr(self, "held_", {})
        return self._spec([getattr(self, name + "_") for name in self._params],
                          function_efficiency=dict(getattr(self, "function_efficiency_", {})),
                          function_overhead_s=dict(getattr(self, "function_overhead_s_", {})),
                          # a figure fitted is this device's, no longer a class prior; one
                          # held at the spec's value stays what it was
                          priors=tuple(name for name in self.device.priors
                                       if name not in self._params or name in held))

    def problems(self) -> list[str]:
        """Why this fit must not be written (empty when it may): its median |error| over the
        micro-benchmarks above ``FIT_BOUND``, an efficiency pinned at the fit's lower
        bound (the timings did not determine it: a value no device has), or a fitted
        ``memory_efficiency`` below ``MEMORY_EFFICIENCY_FLOOR`` (a figure kept at the spec's,
        ``held_``, is the spec's and not judged)."""
        out = []
        median = float(np.median(np.abs(self.residuals_)))
        if median > FIT_BOUND:
            out.append(f"the fit's median error is {median:.0%} over {len(self.residuals_)} "
                       f"micro-benchmarks (bound {FIT_BOUND:.0%})")
        pinned = [f"{name} = {getattr(self, name + '_'):.3g}" for name in PARAMS[:4]
                  if getattr(self, name + "_") <= 1.01 * _EFFICIENCY_FLOOR]
        pinned += [f"{fn} efficiency = {value:.3g}"
                   for fn, value in self.function_efficiency_.items()
                   if value <= 1.01 * _FUNCTION_FLOOR]
        if pinned:
            out.append(f"{', '.join(pinned)} at the fit's lower bound (not determined by the "
                       "timings)")
        memory = self.memory_efficiency_
        if ("memory_efficiency" not in getattr(self, "held_", {})
                and 1.01 * _EFFICIENCY_FLOOR < memory < MEMORY_EFFICIENCY_FLOOR):
            main = self.device.main_memory
            out.append(f"memory_efficiency = {memory:.3g} is below its physical floor "
                       f"{MEMORY_EFFICIENCY_FLOOR:g} (main memory at "
                       f"{memory * main.bandwidth_bytes_per_s / 1e9:.3g} of the spec's "
                       f"{main.bandwidth_bytes_per_s / 1e9:.4g} GB/s)")
        return out

    def held_lines(self) -> list[str]:
        """What the output says of each figure kept at the spec's value (``held_``)."""
        out = []
        for name, value in getattr(self, "held_", {}).items():
            line = (f"{name} kept at the spec's {value:.4g}: no case's predicted time depends "
                    "on it, so the timings do not determine it")
            if name == "memory_efficiency":
                main, caches = self.device.main_memory, self.device.memory[:-1]
                largest = max((max(float(lowered.nbytes.max(initial=0)), step_footprint(lowered))
                               for lowered in (_lowered(m.case) for m in self.measurements_)),
                              default=0.0)
                past = (f" (no case's bytes exceed the {caches[-1].name}'s "
                        f"{caches[-1].capacity_bytes / 2**20:.4g} MiB)"
                        if caches and largest <= caches[-1].capacity_bytes else
                        " (every op that streams from it is bound by its arithmetic)")
                line += (f"{past}; main memory {main.name} streams at "
                         f"{value * main.bandwidth_bytes_per_s / 1e9:.4g} GB/s, "
                         f"{value:.4g} x the spec's {main.bandwidth_bytes_per_s / 1e9:.4g} GB/s"
                         + (" (a copy measured at load)" if self.device.name.startswith(
                             "cpu-host") else ""))
            out.append(line)
        return out

    def report(self) -> str:
        lines = [f"{name:20s} {getattr(self, name + '_'):.4g}" for name in self._params]
        measured, base = getattr(self, "clock_hz_", None), self._base.architecture.clock_hz
        if measured is not None:
            lines.append(f"{'clock_ghz':20s} {self.device.architecture.clock_hz / 1e9:.4g}  "
                         f"(fastest fp32 matmul: {measured / 1e9:.4g} GHz; the OS reports "
                         f"{base / 1e9:.4g}; {'raised' if measured > base else 'kept'})")
        lines.append(f"{'(bare dispatch_s)':20s} {self.dispatch_s_:.4g}")
        lines += self.held_lines()
        for fn, efficiency in self.function_efficiency_.items():
            over = self.function_overhead_s_.get(fn)
            lines.append(f"  function {fn:14s} efficiency {efficiency:.4g}"
                         + (f"  overhead {over * 1e6:.3g} us" if over is not None else ""))
        for m, r in zip(self.measurements_, self.residuals_):
            lines.append(f"  {m.case.label:34s} measured {m.seconds * 1e6:10.1f} us  "
                         f"predicted {r:+7.1%}")
        med = float(np.median(np.abs(self.residuals_)))
        lines.append(f"median |error| {med:.1%} over {len(self.residuals_)} micro-benchmarks")
        if self.spread_ is not None:
            lines.append(f"stability: {self.spread_.describe()}")
            if self.spread_.unstable:
                lines.append(self.spread_.warning())
        return "\n".join(lines)


#: A calibration whose median |predicted / measured - 1| over its micro-benchmarks stays above
#: this is refused: nothing is written. Chosen, not fitted: the synthetic fit recovers known
#: parameters with residuals under 1e-4 (tests/test_calibrate.py), so a median error of 30 %
#: means the timings are not the steady device the cost model describes -- the 2-vCPU
#: development machine shared by eight engineers gave 51 % (--quick, 55 cases), a quiet one
#: fits its matmuls within 35 % (benchmarks/bench_validation_cpu.py --check).
FIT_BOUND = 0.30
#: Cases off by more than this (the bound itself) are timed again (best of the old and new
#: timings), in up to ``RETIME_ROUNDS`` rounds, each followed by a new fit, before the fit is
#: judged.
RETIME_ERROR = 0.30
RETIME_ROUNDS = 2
#: A fitted fixed cost below a nanosecond (a tenth of a clock cycle's worth of any host or
#: kernel launch) is no cost: written as 0, not as 1e-21 us.
NEGLIGIBLE_S = 1e-9
#: The fit's lower bounds of the kinds' and the functions' efficiencies (``_fit_globals``,
#: ``_fit_function``): a value there was not determined by the timings.
_EFFICIENCY_FLOOR = 1e-3
_FUNCTION_FLOOR = 1e-4
#: A figure that, set to its fitted value, the spec's or half of either, moves no case's
#: predicted time by this fraction or more is not determined by the timings
#: (``Calibration.undetermined``): the spec's value is kept. Chosen, not fitted: a tenth of a
#: percent is below any timing's repeatability (the synthetic fits recover known figures with
#: residuals under 1e-4, tests/test_calibrate.py; a quiet machine's passes differ by percents).
UNDETERMINED = 1e-3
#: A local fit whose root-mean-square log residual is under this fits its timings exactly: no
#: other start of the grid can do better, so the grid stops there (``_fit_globals``,
#: ``_fit_function``). A tenth of ``UNDETERMINED``, far below any timing's repeatability: only
#: timings the cost model itself produced (the tests' synthetic ones, each fit otherwise a grid
#: of 24 least-squares problems) stop early; a machine's timings run the whole grid.
EXACT_RMS = 1e-4
#: A fitted ``memory_efficiency`` below this is refused: no memory system streams so far below
#: its rate. Stated from the catalogue, not fitted: a core alone gets at least its even share
#: of the bandwidth that all of them share at full load, 1/56 = 0.018 of the rate on the
#: largest CPU listed (xeon-8480, 56 cores, 307.2 GB/s: a calibration on one of its cores
#: keeps the whole part's bandwidth, ``hardware_specs.host.on_cores``, so a low fraction is
#: physical there); the GPUs' measured figures lie in 0.736-0.894 (hardware_specs/devices).
#: Below it: the development VM's undetermined 0.006 (0.2 of its 27 GB/s, 2026-12-05).
MEMORY_EFFICIENCY_FLOOR = 0.01


class CalibrationRefused(HwsimError):
    """A calibration whose fit is not trustworthy (``Calibration.problems``): nothing written."""


def _cost(name: str, value: float) -> float:
    """A fitted value with fixed costs (names ending in ``_s``) below ``NEGLIGIBLE_S`` as 0."""
    return 0.0 if name.endswith("_s") and value < NEGLIGIBLE_S else value


def _exact(fit) -> bool:
    """A least-squares result (log residuals) that fits its timings exactly: RMS under
    ``EXACT_RMS``."""
    return bool(np.sqrt(np.mean(np.square(fit.fun))) < EXACT_RMS)


def checked_fit(device: DeviceSpec, measurements: list[Measurement], retime=None,
                rounds: int = RETIME_ROUNDS) -> Calibration:
    """``Calibration(device).fit(measurements)``, with the cases off by more than
    ``RETIME_ERROR`` timed again by ``retime(cases) -> measurements`` (None: timings recorded
    elsewhere, none re-timed) and the fit redone, up to ``rounds`` times; then judged
    (``Calibration.problems``): ``CalibrationRefused`` saying why, and what to do, when it
    fails."""
    fit = Calibration(device).fit(measurements)
    retimed = 0
    for _ in range(rounds if retime is not None else 0):
        noisy = [m.case for m, r in zip(fit.measurements_, fit.residuals_)
                 if abs(r) > RETIME_ERROR]
        if not noisy:
            break
        again = {m.case: m for m in retime(noisy)}
        retimed += len(noisy)
        measurements = [Measurement(m.case, min(m.seconds, again[m.case].seconds),
                                    m.samples + again[m.case].samples)
                        if m.case in again else m for m in measurements]
        fit = Calibration(device).fit(measurements)
    problems = fit.problems()
    if problems:
        again = f" after timing {retimed} noisy cases again" if retimed else ""
        raise CalibrationRefused(
            f"calibration of {device.name} refused, nothing written: {'; '.join(problems)}"
            f"{again}. The machine is too busy, or the device is not what the spec says: run "
            "it again on a quiet machine, or check --device")
    return fit


def provenance(env: dict[str, str], spread=None, held: dict[str, float] | None = None) -> str:
    """Where a calibration's timings came from (``simulator.calibrate.records.environment``): host,
    device, driver, torch version, threads, date (UTC); with ``spread`` (a
    ``simulator.calibrate.stability.Spread``), how far fits on halves of its timings disagree;
    with ``held`` (``Calibration.held_``), the figures kept at the spec's values."""
    driver = f", driver {env['driver']}, CUDA {env['cuda']}" if env.get("driver") else ""
    kept = ("; kept at the spec's values, not determined by the timings: "
            + ", ".join(f"{name} {value:.4g}" for name, value in held.items())) if held else ""
    return (f"hwsim calibrate on {env['host']} ({env['device']}{driver}), torch {env['torch']}, "
            f"{env['threads']} threads, {env['date']}"
            + (f"; {spread.describe()}" if spread is not None else "") + kept)


def sustained_clock_hz(device: DeviceSpec, measurements: Iterable[Measurement]) -> float | None:
    """The clock a CPU held under load: its fastest fp32 matmul's rate (2 m n k / the
    measured seconds) over the spec's fp32 FLOP per cycle (its peak / its clock: cores x
    lanes x 2 x FMA units, ``hardware_specs.host``). None where it does not apply: not a CPU,
    no clock, no fp32 matmul timed.

    A lower bound on the clock: the time includes the call's dispatch and whatever the
    kernel loses to its shape. ``Calibration.fit`` raises the spec's clock to it where it
    exceeds the spec's, never lowers it: a peak and an efficiency enter every time only as
    their product, so timings below the peak say nothing about the clock (an efficiency
    under 1 explains them), and a busy machine's slow timings would otherwise lower every
    peak and push the efficiencies up to match; a rate above the peak can only be a faster
    clock (the VM reports its base clock, not the turbo one the core runs at)."""
    clock = device.architecture.clock_hz
    peak = device.peak_flops_per_s.get(DType.FP32)
    if device.device_class is not DeviceClass.CPU or not clock or not peak:
        return None
    rates = [2 * math.prod(m.case.dims) / m.seconds for m in measurements
             if m.case.kind == "matmul" and m.case.dtype == "fp32" and m.seconds > 0]
    return max(rates) / (peak / clock) if rates else None


def finite_positive(values: Iterable[float]) -> bool:
    return all(math.isfinite(v) and v > 0 for v in values)
