"""Energy of each op on a device: static power over its time plus its dynamic energy.

Two models, chosen by what the device's spec gives:

- Counted energy (Accelergy's counts x energy per action; Horowitz, "Computing's energy
  problem", ISSCC 2014): where the spec cites both ``energy_per_flop_j`` and
  ``energy_per_byte_j``, an op costs ``idle_power_w * time + flops * J/FLOP + bytes * J/byte``,
  capped at ``tdp_w * time`` (the board's power limit: a device throttles rather than exceed it).
- Utilisation power (Fan, Weber and Barroso 2007, "Power provisioning for a warehouse-sized
  computer", ISCA, sec. 4.1: power is linear in utilisation, P = P_idle + (P_max - P_idle) u)
  otherwise: u is the busy share of the op's time, ``max(compute_s, memory_s) / time_s`` (the
  launch overhead is idle time), and P_max is the TDP.

Either way every op draws between idle power and TDP. Under a power limit below the TDP
(``Plan.power_limit_w``) each phase runs at a lower clock (``simulator.cost.power``) and the
dynamic power scales by ``x v(x)^2``. Ops on different streams overlap (communication during
compute, ring attention's transfers under its blocks): their powers add, and where the sum
exceeds the limit (the TDP by default) the device throttles instead, so ``over_tdp_j`` is the
energy above the limit at each instant of the schedule, which the step's energy leaves out; a
step's average power is then between idle power and the limit. The step's energy uses the step's
accounting (``simulate``): each micro-batch's forward and backward, then one optimizer update.
"""
from __future__ import annotations

import numpy as np

from hardware_specs.spec import DeviceSpec
from simulator.cost.power import dynamic_scale, energy_scale
from simulator.graph.lower import Lowered
from simulator.graph.op import Phase


def counted(device: DeviceSpec) -> bool:
    """True where the spec cites dynamic energies, so ``op_energy`` counts FLOPs and bytes."""
    return device.energy_per_flop_j is not None and device.energy_per_byte_j is not None


def op_energy(lowered: Lowered, device: DeviceSpec, compute_s: np.ndarray,
              memory_s: np.ndarray, time_s: np.ndarray,
              clock: np.ndarray | None = None, limit_w: float | None = None) -> np.ndarray:
    """Energy in joules of each op of ``lowered`` on ``device`` (float64, one per op).
    ``clock``: each op's relative core clock under a power limit (``simulator.cost.power``;
    None: the reference clock), which scales its dynamic power by ``x v(x)^2``; the times
    are those at that clock. ``limit_w``: the board's power limit (default the TDP)."""
    idle, tdp = float(device.idle_power_w), float(device.tdp_w)
    cap = tdp if limit_w is None else float(limit_w)
    time_s = np.asarray(time_s, dtype=np.float64)
    if counted(device):
        flops = lowered.flops.astype(np.float64) + lowered.vector_flops.astype(np.float64)
        per_flop = device.energy_per_flop_j * (1.0 if clock is None else energy_scale(clock))
        dynamic = flops * per_flop + lowered.nbytes.astype(np.float64) * device.energy_per_byte_j
        return np.minimum(idle * time_s + dynamic, cap * time_s)
    busy = np.maximum(compute_s, memory_s)
    with np.errstate(divide="ignore", invalid="ignore"):
        utilisation = np.where(time_s > 0, np.minimum(busy / time_s, 1.0), 0.0)
    if clock is not None:
        utilisation = utilisation * dynamic_scale(clock)
    return (idle + (tdp - idle) * utilisation) * time_s


def step_energy(lowered: Lowered, energy_j: np.ndarray, micro_batches: int) -> float:
    """Joules of one step: ``micro_batches`` forwards and backwards, then one update (and the
    step's gradient reduction among replicas, ``Phase.COMMUNICATION``)."""
    is_update = (lowered.phase == Phase.OPTIMIZER) | (lowered.phase == Phase.COMMUNICATION)
    return float(micro_batches * energy_j[~is_update].sum() + energy_j[is_update].sum())


def over_tdp_j(start: np.ndarray, end: np.ndarray, energy_j: np.ndarray,
               on_compute: np.ndarray, idle_w: float, tdp_w: float) -> float:
    """Joules above ``tdp_w`` in one schedule: the integral of max(P(t) - TDP, 0), where P(t)
    is the sum of the powers (``energy_j / (end - start)``) of the ops running at t, plus the
    idle power while no op of the compute stream (``on_compute``) runs (the idle time the
    step counts besides its ops). 0.0 where the powers never sum above the TDP (beyond float
    rounding: a relative 1e-9)."""
    span = end - start
    timed = span > 0
    if not timed.any():
        return 0.0
    power = energy_j[timed] / span[timed]
    times, at = np.unique(np.concatenate([start[timed], end[timed]]), return_inverse=True)
    n = len(power)
    delta = np.zeros(len(times))
    np.add.at(delta, at[:n], power)
    np.add.at(delta, at[n:], -power)
    busy = np.zeros(len(times))
    computing = on_compute[timed].astype(np.float64)
    np.add.at(busy, at[:n], computing)
    np.add.at(busy, at[n:], -computing)
    level = np.cumsum(delta)[:-1] + np.where(np.cumsum(busy)[:-1] > 0.5, 0.0, idle_w)
    above = np.where(level > tdp_w * (1 + 1e-9), level - tdp_w, 0.0)
    return float((above * np.diff(times)).sum())


__all__ = ["counted", "op_energy", "over_tdp_j", "step_energy"]
