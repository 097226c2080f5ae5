"""One stage's scheduled micro-batch -> the whole step, in closed form.

The engine schedules one micro-batch's forward and backward (then the update) of one pipeline
stage of one rank (``simulator.schedule.stage``); every rank of a stage does the same work and
every replica the same, so the rest of the step follows here: micro-batch after micro-batch
(gradient accumulation, or a pipeline's steady state), the pipeline's fill and drain (the
bubble, ``simulator.schedule.pipeline``), and the tail after the last backward (exposed
gradient reduction, update).
"""
from __future__ import annotations

import numpy as np

from hardware_specs.spec import DeviceSpec
from simulator.cost.energy import op_energy, over_tdp_j, step_energy
from simulator.graph.op import OpKind
from simulator.plan.parallel import ParallelPlan
from simulator.schedule.pipeline import in_flight_micro_batches
from simulator.schedule.stage import StageRun, streams


def step_time(runs: list[StageRun], parallel: ParallelPlan, m: int,
              stand_in: dict[int, int] | None = None) -> tuple[float, float, int]:
    """(step seconds, pipeline bubble seconds, index of the run that sets the pace).

    ``(m - 1) t + bubble + t_last``: t the slowest stage's micro-batch (forward + backward),
    t_last the last micro-batch with the step's tail (the gradient reduction not hidden by the
    backward, the update), for the stage finishing last. The bubble is the pipeline's fill
    and drain: every other stage's micro-batch once, each at its own pace,
    (sum of the p stages' t_s - t) / v (``stage_times``). With equal stages that is
    Narayanan et al. 2021's (p - 1) / v t (sec. 2.2: bubble / ideal = (p - 1) / (v m)); with
    stages unlike each other (the first holds the embedding, the last the head and the loss)
    it is the flow-shop makespan of m equal jobs, sum t_s + (m - 1) t: exact for one
    micro-batch (each stage's forward, then each one's backward, in turn) and for middle
    stages alike with slower end stages under 1F1B (checked against an event simulation of
    the schedule, ``tests/test_pipeline_bubble.py``), an upper bound otherwise, where
    (p - 1) t overcounts by the sum of the faster stages' shortfall.
    """
    t = max(run.t_micro for run in runs)
    p, v = parallel.pp, parallel.virtual_stages
    bubble = (sum(stage_times(runs, p, stand_in)) - t) / v if p > 1 else 0.0
    lasts = [run.t_last + (t - run.t_micro) for run in runs]
    pace = int(np.argmax(lasts))
    return (m - 1) * t + bubble + lasts[pace], bubble, pace


def stage_times(runs: list[StageRun], pp: int,
                stand_in: dict[int, int] | None = None) -> list[float]:
    """Each of the ``pp`` pipeline devices' micro-batch time (forward + backward), first to
    last: a simulated stage's own, a middle one's that of the stage standing for it
    (``simulator.parallel.rank.stand_ins``; None: stage 1 where it is simulated, else 0).
    Stage 0 stands for the middle stages of an even split with its embedding's ops counted
    (its forward gather and backward scatter: under 1 % of a GPT stage's time)."""
    by_stage = {run.stage: run.t_micro for run in runs}
    if stand_in is None:
        stand_in = {stage: 1 if 1 in by_stage else 0 for stage in range(1, pp - 1)}
    return [by_stage[stage] if stage in by_stage else by_stage[stand_in[stage]]
            for stage in range(pp)]


def in_flight(parallel: ParallelPlan, m: int, stage: int) -> float:
    """Micro-batches whose activations a stage holds at its peak (1 without a pipeline)."""
    if parallel.pp == 1:
        return 1.0
    return in_flight_micro_batches(parallel.pp, m, stage, parallel.schedule,
                                   parallel.virtual_stages)


def idle_s(run: StageRun, m: int, step: float, bubble: float,
           t: float) -> tuple[float, float]:
    """(seconds in a step the device's compute stream is idle, the part of them spent waiting
    on communication). Besides communication: the pipeline bubble and waiting on a slower stage
    (t is the pacing stage's micro-batch time). The first m - 1 micro-batches wait as they run
    (``StageRun.micro_schedule``), the last as the schedule runs it, with the step's tail."""
    compute = streams(run.lowered) == 0
    waits = (m - 1) * _gaps(*run.micro_schedule(), compute & run.per_micro, run.t_micro) + \
        _gaps(run.start, run.end, compute, run.t_last)
    slower = (m - 1) * (t - run.t_micro) + (t - run.t_micro)
    rest = step - ((m - 1) * t + bubble + run.t_last + (t - run.t_micro))  # slower stage's tail
    return waits + bubble + slower + max(rest, 0.0), waits


def throttled_j(run: StageRun, energy_j: np.ndarray, micro_j: np.ndarray, m: int,
                idle_w: float, tdp_w: float) -> float:
    """Joules a step's ops would draw above the TDP when their streams overlap
    (``simulator.cost.energy.over_tdp_j``), which the device throttles away: the first m - 1
    micro-batches run their own ops as they run them (``StageRun.micro_schedule``, each op
    drawing ``micro_j``), the last one also the step's reduction and update."""
    compute = streams(run.lowered) == 0
    last = over_tdp_j(run.start, run.end, energy_j, compute, idle_w, tdp_w)
    if m == 1:
        return last
    per = run.per_micro
    start, end = run.micro_schedule()
    each = over_tdp_j(start[per], end[per], micro_j[per], compute[per], idle_w, tdp_w)
    return (m - 1) * each + last


def device_energy(run: StageRun, device: DeviceSpec, limit_w: float, m: int, step: float,
                  bubble: float, t: float,
                  idle_ops: np.ndarray | None = None) -> tuple[float, np.ndarray, float]:
    """(joules of one device of ``run``'s stage over the whole step, each op's joules as the
    last micro-batch runs it, seconds its compute stream waits on communication).

    The device is powered for all of the step (``step`` seconds): its ops' energy
    (``simulator.cost.energy``; a collective's above idle only, static power being counted
    once over the step, not per stream) plus idle power while its compute stream waits (on
    communication, the pipeline bubble, a slower stage, the step's tail after its own last
    op: ``idle_s``), less what overlapping streams would draw above the limit. ``idle_ops``:
    ops the device does not run (their slots drawn at idle power, their collectives nothing):
    a middle pipeline stage priced as the first without its embedding (``pipeline_energy``)."""
    lowered, idle = run.lowered, float(device.idle_power_w)
    comm = lowered.kind == OpKind.COLLECTIVE

    def joules(time_s: np.ndarray) -> np.ndarray:
        energy_j = op_energy(lowered, device, run.compute_s, run.memory_s, time_s, run.clock,
                             limit_w)
        energy_j = np.where(comm, np.maximum(energy_j - idle * time_s, 0.0), energy_j)
        if idle_ops is not None:
            energy_j = np.where(idle_ops, np.where(comm, 0.0, idle * time_s), energy_j)
        return energy_j

    energy_j = joules(run.time_s)
    # the step's reduction slows the last micro-batch only: the others' ops as they run alone
    micro_j = energy_j if run.alone_s is None else joules(run.alone_s)
    waiting, exposed = idle_s(run, m, step, bubble, t)
    energy = step_energy(lowered, energy_j, m) + idle * waiting
    if m > 1:
        energy -= (m - 1) * float((energy_j - micro_j)[run.per_micro].sum())
    energy -= throttled_j(run, energy_j, micro_j, m, idle, limit_w)   # above the limit
    return energy, energy_j, exposed


def pipeline_energy(runs: list[StageRun], pp: int, device: DeviceSpec, limit_w: float, m: int,
                    step: float, bubble: float,
                    stand_in: dict[int, int] | None = None,
                    known: dict[int, float] | None = None) -> float:
    """Joules of the mean device over one step: every pipeline device is powered for the whole
    step, whichever stage finishes last, so the system's energy is the sum over the ``pp``
    stages of each one's devices (all stages hold the same number) times its device's
    ``device_energy``; this is that sum over all the devices.

    ``runs``: the simulated stages (the first, the last, and a middle one for each kind of
    middle stage unlike the first). ``stand_in``: each middle stage not simulated -> the
    simulated stage standing for it (``simulator.parallel.rank.stand_ins``; None: stage 1
    where it is simulated, else 0). Stage 0 stands for a middle stage holding the same layers
    (an even split): the first stage with its ops outside the layers (the embedding, its
    gradient and update) drawing idle power. Its pipeline sends and receives are the first
    stage's (one direction each, where a middle stage has both): collectives count their
    energy above idle only, a small share, left out (1.2-1.4 % under a simulated middle
    stage, ``tests/test_pipeline_energy.py``). ``known``: stages whose ``device_energy`` the
    caller has already (not priced again)."""
    t = max(run.t_micro for run in runs)
    by_stage = {run.stage: run for run in runs}
    priced = dict(known or {})
    for stage, run in by_stage.items():
        if stage not in priced:
            priced[stage] = device_energy(run, device, limit_w, m, step, bubble, t)[0]
    if stand_in is None:
        stand_in = {stage: 1 if 1 in priced else 0 for stage in range(1, pp - 1)}
    total = 0.0
    for stage in range(pp):
        if stage in priced:
            total += priced[stage]
        elif stand_in[stage]:
            total += priced[stand_in[stage]]
        else:
            if "middle" not in priced:
                first = by_stage[0]
                priced["middle"] = device_energy(first, device, limit_w, m, step, bubble, t,
                                                 first.lowered.layer < 0)[0]
            total += priced["middle"]
    return total / pp


def _gaps(start: np.ndarray, end: np.ndarray, mask: np.ndarray, horizon: float) -> float:
    """Idle time of the ops in ``mask`` (one stream, in order) from 0 to ``horizon``."""
    if not mask.any():
        return horizon
    start, end = start[mask], end[mask]
    order = np.argsort(start, kind="mergesort")
    start, end = start[order], end[order]
    reach = np.maximum.accumulate(end)
    gaps = np.maximum(start[1:] - reach[:-1], 0.0).sum() if len(start) > 1 else 0.0
    return float(start[0] + gaps + max(horizon - reach[-1], 0.0))


__all__ = ["device_energy", "idle_s", "in_flight", "pipeline_energy", "step_time", "throttled_j"]
