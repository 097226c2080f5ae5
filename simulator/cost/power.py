"""Clocks under a power limit (DVFS): how much a device slows when its power is capped.

A GPU holds its board power at or under its power limit by lowering its core clock (and with
it the voltage). The dynamic power of busy cores is ``C f V(f)^2``; hwsim writes it relative
to the reference clock, the one at which the spec's measured efficiencies were taken (the
clock a busy device sustains at its default limit, the TDP, where it draws the TDP)::

    P_busy(x) = P_idle + (TDP - P_idle) * x * v(x)^2,   x = f / f_ref,  v(1) = 1
    v(x) = V_FLOOR + (1 - V_FLOOR) * max(0, (x - KNEE) / (1 - KNEE))

below the knee the voltage sits at its floor and power falls linearly with the clock; above
it the voltage rises with the clock and power steeply: with the A100 fit below, the top 15 %
of the clock costs a third of the dynamic power.

``V_FLOOR`` and ``KNEE`` are fitted on one device-level measurement: Perseus's frequency sweep
of a GPT-3 pipeline stage's forward on an A100 SXM (Chung et al., "Perseus: Reducing Energy
Bloat in Large Model Training", SOSP 2024; data: github.com/ml-energy/zeus,
sosp24_data/emulation/stage_profile/gpt3-175b+a100_sxm_bf16.csv, stage 0, forward, 855-1290
MHz: the stage's compute alone, no communication; ``tests/test_power.py`` refits them). Its
power falls from 413 W at 1290 MHz to 235 W at 855 MHz; the least-squares fit of
``P0 + C x v(x)^2`` (x = f / 1290 MHz) gives a voltage floor of 0.886 of the 1290 MHz voltage
below x = 0.855 (P0 = 43 W), within 5 W of all 30 points; the backward's sweep gives 0.892
below 0.850 (P0 = 49 W). hwsim uses 0.89 and 0.85 for every device: a prior from one
measured GPU. A second one is consistent with it, not evidence for it: Perseus's sweep of the
same stage on an A40 (GA102 with GDDR6, 300 W; same file set, gpt3-175b+a40_bf16.csv;
tests/data/perseus_a40_frequency.csv) is reproduced within 7.2 W (rms 2.6 W) from 1410 down
to 855 MHz with these two constants and only P0 and C fitted, but a plain x^3 (no floor) fits
it as well (max 5.9 W, rms 3.7 W), so the A40 cannot tell the floor from none; it only rules
out a voltage flat over the range (power linear in the clock: 15.4 W). Above 1440 MHz the
A40's forward draws its 300 W limit and runs no faster however high a clock is asked for:
the regime this module models (tests/test_power.py). Also checked against Zeus's power-limit
sweeps of V100 and P100 training, never fitted on them (docs/accuracy.md, "Power limits"): the
P100 drew 165-179 W under its 250 W limit and kept its speed down to 200 W, so this model, whose
busy device draws the TDP at the reference clock, slows it too early (a strict xfail in
tests/test_power.py). No H100 or newer frequency or power-cap sweep that can be cited and
read was found to check it on (searched 2026-12-04: ml-energy/zeus's history holds Perseus's
A100 and A40 sweeps only; arXiv 2604.11391's power-capped H100/H200 DGEMM tables were not
readable; no table of one was found from Patel et al. ASPLOS'24, Polca or DynamoLLM), so the
H100 and newer run on this A100 prior unchecked.

The clock is set per phase of the step (forward, backward, recompute, update): a GPU's power
controller averages over tens of milliseconds, longer than an op and about as long as a phase.
A phase's power at clock x is the idle power plus its ops' dynamic energy over their time;
its clock is the highest x (a grid of ``_GRID`` steps down to ``MIN_CLOCK``) at which that
power is within the limit. Compute time scales as 1/x; memory time does not (HBM has its own
clock); an op's fixed launch cost does not. Lowering the limit can only lower a phase's clock,
so a step is never faster under a lower limit.

Not modelled: heat. A card whose clock keeps falling over seconds of load (NeuSight's fp32
GEMM tables of the passively cooled P4 and P100: 0.80 and 0.75 of the peak on calls under
0.1 s, 0.43 and 0.25 on calls of 1 s or more) has a thermal state this model does not carry;
a spec's rates are those measured, in whatever state the measurement found the card, and one
state is not chosen for a workload (``tests/test_neusight_traces.py``).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from hardware_specs.spec import DeviceSpec
from simulator.errors import PlanError
from simulator.graph.lower import Lowered, members
from simulator.graph.op import DType, OpKind, Phase

#: Voltage at and below the knee, relative to the reference clock's (Perseus A100 sweep fit,
#: module docstring: forward 0.886, backward 0.892).
V_FLOOR = 0.89
#: Relative clock below which the voltage stays at its floor (forward 0.855, backward 0.850).
KNEE = 0.85
#: The lowest relative clock hwsim lowers a phase to: the A100's lowest settable SM clock,
#: 210 of 1410 MHz (nvidia-smi -q -d SUPPORTED_CLOCKS), rounded up.
MIN_CLOCK = 0.15
_GRID = 256
#: The tensor-core kernels a held clock slows (``sustained_times``): GEMMs, convolutions (implicit
#: GEMMs) and fused attention (its QK^T and PV on the same tensor cores).
_TENSOR_CORE_CODES = np.array([int(OpKind.MATMUL), int(OpKind.CONV), int(OpKind.ATTENTION)],
                              dtype=np.int8)


def voltage(x):
    """Relative voltage at relative clock ``x`` (array or float)."""
    return V_FLOOR + (1.0 - V_FLOOR) * np.clip((np.asarray(x, dtype=np.float64) - KNEE)
                                                / (1.0 - KNEE), 0.0, None)


def dynamic_scale(x):
    """Busy dynamic power at relative clock ``x`` over its value at the reference clock:
    ``x v(x)^2`` (1.0 at x = 1)."""
    x = np.asarray(x, dtype=np.float64)
    return x * voltage(x) ** 2


def energy_scale(x):
    """Dynamic energy per operation at relative clock ``x`` over its reference value:
    ``v(x)^2`` (energy per switching event goes with the voltage squared)."""
    return voltage(x) ** 2


def floor_w(device: DeviceSpec) -> float:
    """The lowest power a busy device can be held to: its busy power at ``MIN_CLOCK``."""
    return float(device.idle_power_w + (device.tdp_w - device.idle_power_w)
                 * dynamic_scale(MIN_CLOCK))


def check_limit(limit_w: float | None, device: DeviceSpec) -> float:
    """The power limit in watts the device runs under: the TDP when None or above it (a busy
    device draws its TDP at the reference clock; clocks above it are not modelled, so a
    higher limit changes nothing, as one limit compares devices of several TDPs);
    PlanError below the device's floor (``floor_w``)."""
    if limit_w is None or limit_w >= device.tdp_w:
        return float(device.tdp_w)
    low = floor_w(device)
    if limit_w < low:
        raise PlanError(f"power_limit_w = {limit_w:g} W is below what {device.name} can be "
                        f"held to while busy ({low:.1f} W: idle {device.idle_power_w:g} W "
                        f"plus its dynamic power at the lowest clock); give at least "
                        f"{math.ceil(low)}")
    return float(limit_w)


def scaled_times(compute_s: np.ndarray, memory_s: np.ndarray, time_s: np.ndarray,
                 clock: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(compute_s, time_s) of each op at relative clock ``clock``: compute over the clock,
    memory and the fixed cost as they are."""
    compute = compute_s / clock
    return compute, time_s + (np.maximum(compute, memory_s) - np.maximum(compute_s, memory_s))


def burst(device: DeviceSpec) -> DeviceSpec:
    """``device`` with its GEMM figures as bursts (a kernel timed alone, MAMF): both sustained
    ratios cleared, ``matmul_sustained`` and ``fp8_matmul_sustained``, so that
    ``sustained_times`` scales nothing (clearing ``matmul_sustained`` alone leaves the fp8
    GEMMs at ``fp8_matmul_sustained`` on a spec that gives it: B200, GB200)."""
    return dataclasses.replace(device, matmul_sustained=None, fp8_matmul_sustained=None)


def sustained_times(lowered: Lowered, device: DeviceSpec, compute_s: np.ndarray,
                    memory_s: np.ndarray, time_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(compute_s, time_s) of each op as a training step runs it: GEMMs back to back at the
    power limit, not a cool chip's short burst.

    A spec whose GEMM figures are burst measurements (``matmul_efficiency``,
    ``fp8_matmul_efficiency``: the best shape's short run at the boost clock, MAMF) gives
    ``matmul_sustained``, the measured ratio of the sustained rate (MSMF: the best shape held
    until the board sits at its power limit) to the burst one (the GB200's is derived: the
    B200's MSMF, the same die, run up this module's curve to its 1,200 W; its spec file says
    how); the compute of every tensor-core kernel in a tensor-core format (matmuls,
    convolutions, which cuDNN runs as implicit GEMMs, and fused attention; not fp32, which runs
    on the CUDA cores) is divided by it, its memory time and fixed cost kept, as
    ``scaled_times`` does for a clock. One rule for every tensor-core kernel, whatever
    fraction of the peak it reaches (small GEMMs and materialized attention's bmm's are scaled
    alike, and fused attention's tables are bursts too: ``simulator.cost.attention``'s
    docstring gives each table's timing and how the rows moved when the ratio was applied to
    it). The ratio is a full-power GEMM's; a kernel drawing less keeps a higher clock, so for
    it the ratio is an upper bound on the slowdown: not modelled (no measured draw of a GEMM or
    attention kernel by shape is known). CUDA-core work (fp32 GEMMs, vector and streaming
    kernels) is not scaled: no sustained figure of it is measured. The step's tensor-core kernels then run at the reference this
    module's power model assumes (a busy device at its TDP). Kernel-level comparisons (a table
    of kernels timed alone: ``simulator.cost.roofline.op_costs``) keep the burst rate; a step
    priced at the burst rate takes ``burst(device)``, which clears both ratios. A spec
    without the ratio (None: its figures are sustained, or no sustained figure is known) is
    unchanged. fp8 kernels take ``fp8_matmul_sustained`` where the spec gives it (the same
    tool's fp8 rows: the B200's MSMF over MAMF in fp8, the GB200's derived from them), else
    ``matmul_sustained``, so that a step's fp8 GEMMs run at the fp8 sustained rate itself."""
    ratio = device.matmul_sustained
    fp8_ratio = device.fp8_matmul_sustained
    fp8_ratio = ratio if fp8_ratio is None else fp8_ratio
    if (ratio is None and fp8_ratio is None) or len(time_s) == 0:
        return compute_s, time_s
    clock = np.ones(len(time_s), dtype=np.float64)
    tensor = members(lowered.kind, _TENSOR_CORE_CODES) & (lowered.dtype != DType.FP32)
    fp8 = lowered.dtype == DType.FP8
    for held, value in ((tensor & ~fp8, ratio), (tensor & fp8, fp8_ratio)):
        if value is not None and value < 1.0:
            clock[held] = value
    return scaled_times(compute_s, memory_s, time_s, clock)


def phase_clocks(lowered: Lowered, device: DeviceSpec, compute_s: np.ndarray,
                 memory_s: np.ndarray, time_s: np.ndarray, limit_w: float) -> np.ndarray:
    """Relative clock of each op (float64, 1.0 where the limit does not bind): per phase, the
    highest clock on the grid at which the phase's average power is within ``limit_w``
    (``MIN_CLOCK`` where none is). Collectives keep 1.0 (they run on the copy engines and
    the network, not the cores' clock)."""
    n = len(time_s)
    clock = np.ones(n, dtype=np.float64)
    idle, tdp = float(device.idle_power_w), float(device.tdp_w)
    if limit_w >= tdp or n == 0:
        return clock
    grid = np.linspace(1.0, MIN_CLOCK, _GRID)
    compute_op = lowered.kind != OpKind.COLLECTIVE
    fixed = np.maximum(time_s - np.maximum(compute_s, memory_s), 0.0)
    for phase in (Phase.FORWARD, Phase.BACKWARD, Phase.RECOMPUTE, Phase.OPTIMIZER):
        ops = compute_op & (lowered.phase == phase)
        if not ops.any():
            continue
        c, m, o = compute_s[ops], memory_s[ops], float(fixed[ops].sum())
        clock[ops] = MIN_CLOCK
        for x in grid:   # from the reference clock down: the first that fits
            busy = float(np.maximum(c / x, m).sum())
            total = busy + o
            power = idle + (tdp - idle) * float(dynamic_scale(x)) * busy / total \
                if total > 0 else idle
            if power <= limit_w * (1 + 1e-12):
                clock[ops] = x
                break
    return clock


__all__ = ["KNEE", "MIN_CLOCK", "V_FLOOR", "burst", "check_limit", "dynamic_scale", "energy_scale",
           "floor_w", "phase_clocks", "scaled_times", "sustained_times", "voltage"]
