"""One stage's lowered step priced on a device and list-scheduled on its streams.

With pp > 1 the first stage (embedding) and the last (head, loss) are both simulated: the
slower sets the pipeline's pace, the one needing more memory the plan's fit. Stages in
between run the same layers without either, so they are never the slowest nor the fullest.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from hardware_specs.cluster import ClusterSpec
from hardware_specs.spec import DeviceSpec
from simulator.cost.host import costs as host_costs
from simulator.cost.host import release
from simulator.cost.host import syncs as host_syncs
from simulator.cost.overlap import overlapped
from simulator.cost.power import phase_clocks, scaled_times, sustained_times
from simulator.cost.roofline import op_costs
from simulator.cost.ring import ring_exposure, ring_kernels
from simulator.graph.collective import Axis
from simulator.graph.lower import Lowered, members
from simulator.graph.op import OpKind, Phase
from simulator.graph.opgraph import OpGraph
from simulator.parallel.data import FLAT_COPY, NCCL_COPY_IN, NCCL_COPY_OUT, ZERO_FILL

N_STREAMS = 4  # compute; tensor; data-parallel; pipeline communicators


@dataclass
class StageRun:
    """One simulated stage: its forward graph, lowered training step and schedule."""

    stage: int
    forward: OpGraph
    lowered: Lowered
    compute_s: np.ndarray
    memory_s: np.ndarray
    time_s: np.ndarray
    start: np.ndarray
    end: np.ndarray
    # each op's relative core clock under the plan's power limit (simulator.cost.power);
    # None: the reference clock
    clock: np.ndarray | None = None
    # how each of the first m - 1 micro-batches runs when not as the schedule's last one
    # (``interfere``: without the step's reduction beside it; ``simulator.schedule.ahead``:
    # without the next step's weight gathers ahead of its forward); None: ``start``/``end``
    micro_start: np.ndarray | None = None
    micro_end: np.ndarray | None = None
    # each op's time without the step's reduction beside it: how the first m - 1 micro-batches
    # run (``interfere``); None: ``time_s``
    alone_s: np.ndarray | None = None
    # the host's issue times before any synchronisation (``simulator.cost.host.release``) and
    # the ops it synchronises before (``simulator.cost.host.syncs``; None: none in the step)
    issued: np.ndarray | None = None
    sync: np.ndarray | None = None
    # the tensor-parallel collectives priced as overlapped with their GEMMs, their
    # interference counted there (``simulator.cost.overlap``); None: none
    hidden: np.ndarray | None = None

    def micro_schedule(self) -> tuple[np.ndarray, np.ndarray]:
        """(start, end) of each op as each of the first m - 1 micro-batches runs it."""
        if self.micro_start is None:
            return self.start, self.end
        return self.micro_start, self.micro_end

    @property
    def per_micro(self) -> np.ndarray:
        """Ops of every micro-batch (not the update, not the step's gradient reduction)."""
        return (self.lowered.phase != Phase.OPTIMIZER) & (self.lowered.phase != Phase.COMMUNICATION)

    @property
    def t_micro(self) -> float:
        """Seconds of each of the first m - 1 micro-batches."""
        mask = self.per_micro
        return float(self.micro_schedule()[1][mask].max()) if mask.any() else 0.0

    @property
    def t_last(self) -> float:
        return float(self.end.max()) if len(self.end) else 0.0


def price_stage(lowered: Lowered, forward: OpGraph, device: DeviceSpec,
                cluster: ClusterSpec | None, stage: int = 0,
                power_limit_w: float | None = None, plan=None,
                interference: bool = True) -> StageRun:
    """Price and schedule a built stage on ``device``; under ``power_limit_w`` (below the
    TDP) each phase runs at the clock that keeps its power within the limit
    (``simulator.cost.power``); the tensor-parallel collectives marked for userbuffers
    (``ParallelPlan.tp_comm_overlap``) overlap their GEMMs (``simulator.cost.overlap``;
    ``interference``: ``ParallelPlan.comm_interference``, the chunks' HBM traffic slows them)."""
    from simulator.engine.dispatch import engine

    compute_s, memory_s, time_s = op_costs(lowered, device, cluster, plan)
    # a step's GEMMs run sustained, not as a burst (the spec's matmul_sustained, if any)
    compute_s, time_s = sustained_times(lowered, device, compute_s, memory_s, time_s)
    ring = lowered.ring is not None and lowered.ring.any()
    if ring:   # context parallelism's ring of attention calls (simulator.cost.ring)
        compute_s, time_s = ring_kernels(lowered, device, compute_s, memory_s, time_s)
    clock = None
    if power_limit_w is not None and power_limit_w < device.tdp_w:
        # clocked on the ops as they run (the ring's calls too), so a phase's power fits
        clock = phase_clocks(lowered, device, compute_s, memory_s, time_s, power_limit_w)
        compute_s, time_s = scaled_times(compute_s, memory_s, time_s, clock)
    if ring:   # the ring's exchange, exposed where the (clocked) attention does not hide it
        time_s = ring_exposure(lowered, time_s)
    hidden = None
    if lowered.userbuffers is not None and lowered.userbuffers.any():
        time_s, hidden = overlapped(lowered, device, compute_s, memory_s, time_s,
                                    interference)
    # the host issues the kernels in program order: none starts before it is issued
    issued = release(host_costs(lowered, device, plan)[1], device, plan)
    sync = host_syncs(lowered, device, plan)
    kernels = engine(len(lowered))
    if not sync.any():
        start, end = kernels.schedule_issued(lowered.indptr, lowered.indices, time_s,
                                             streams(lowered), N_STREAMS, issued)
        return StageRun(stage, forward, lowered, compute_s, memory_s, time_s, start, end, clock,
                        issued=issued, hidden=hidden)
    # the host waits at each synchronisation until the device has run what it issued
    start, end = kernels.schedule_synced(lowered.indptr, lowered.indices, time_s,
                                         streams(lowered), N_STREAMS, issued, sync)
    return StageRun(stage, forward, lowered, compute_s, memory_s, time_s, start, end, clock,
                    issued=issued, sync=sync, hidden=hidden)


def interfere(run: StageRun, device: DeviceSpec, on: bool = True,
              sms: int | None = None) -> StageRun:
    """``run`` with the compute its collectives overlap slowed (``simulator.cost.interference``:
    NCCL's kernels hold SMs and HBM bandwidth) and scheduled again; ``run`` itself when ``on``
    is False or nothing overlaps. The second schedule issues the ops at the host's issue
    times (``StageRun.issued``) as the first, ``simulator.schedule.ahead`` too, and those of
    the first m - 1 micro-batches, which run without the step's reduction beside them, are
    kept (``StageRun.micro_schedule``). ``sms``: the SMs each collective holds (default by
    the device's links, ``simulator.cost.interference.collective_sms``)."""
    from simulator.cost.interference import slowed_times
    from simulator.engine.dispatch import engine

    if not on:
        return run
    on_stream = streams(run.lowered)
    # the collectives overlapped with their GEMMs took their share there (cost.overlap)
    counted = None if run.hidden is None else ~run.hidden
    slowed = slowed_times(run.lowered, device, run.compute_s, run.memory_s, run.time_s,
                          run.start, run.end, on_stream, among=counted, sms_held=sms)
    if slowed is None:
        return run
    low, kernels = run.lowered, engine(len(run.lowered))

    def again(time_s):
        if run.sync is not None:   # the waits at the synchronisations grow with the kernels
            return kernels.schedule_synced(low.indptr, low.indices, time_s, on_stream,
                                           N_STREAMS, run.issued, run.sync)
        return kernels.schedule_issued(low.indptr, low.indices, time_s, on_stream, N_STREAMS,
                                       run.issued)

    start, end = again(slowed)
    # the step's own collectives (its gradient reduction, ``Phase.COMMUNICATION``) overlap
    # only the last micro-batch: the others are slowed by their own collectives alone
    step_comm = run.lowered.phase == Phase.COMMUNICATION
    micro = run.per_micro
    alone = slowed_times(run.lowered, device, run.compute_s, run.memory_s, run.time_s,
                         run.start, run.end, on_stream,
                         among=~step_comm if counted is None else ~step_comm & counted,
                         sms_held=sms)
    if step_comm.any() and micro.any():
        alone_s = run.time_s if alone is None else alone
        micro_start, micro_end = again(alone_s)
    else:
        alone_s = micro_start = micro_end = None
    return replace(run, time_s=slowed, start=start, end=end, micro_start=micro_start,
                   micro_end=micro_end, alone_s=alone_s)


def streams(lowered: Lowered) -> np.ndarray:
    """The stream each op runs on: 0 compute; 1 the tensor-parallel communicators (and the
    context- and expert-parallel ones); 2 the data-parallel one; 3 the pipeline's sends and
    receives (separate NCCL communicators, each with its own stream, as in Megatron-LM and
    PyTorch DDP; Megatron-LM's pipeline p2p runs in the pipeline group,
    megatron/core/pipeline_parallel/p2p_communication.py). A collective moving no bytes (the
    identity half of Megatron's f) is a no-op in line with the compute. The copies out of a list
    all-gather (``simulator.parallel.data.nccl_copy_out``), the copies into a list
    reduce-scatter (``nccl_copy_in``), DeepSpeed 2021's zero-fill of a gather's buffer
    (``simulator.parallel.data.zero_fill``, on its fetch stream) and its passes over a
    gradient bucket (``flat_copy``, on its reduction stream) run on the data-parallel one."""
    comm = (lowered.kind == OpKind.COLLECTIVE) & (lowered.nbytes > 0)
    data = lowered.axis == int(Axis.DATA)
    pipe = lowered.axis == int(Axis.PIPELINE)
    on = np.where(comm, np.where(data, 2, np.where(pipe, 3, 1)), 0).astype(np.int64)
    if lowered.fn is not None:   # a list all-gather's copies run on its NCCL stream
        on[members(lowered.fn, (NCCL_COPY_OUT, NCCL_COPY_IN, ZERO_FILL, FLAT_COPY))] = 2
    return on


__all__ = ["N_STREAMS", "StageRun", "interfere", "price_stage", "streams"]
