"""Step collectives that delay the first micro-batch only: the weight all-gathers of
Megatron-LM's ``--overlap-param-gather`` (``ParallelPlan.overlap_param_gather``,
``simulator.parallel.data``).

The engine schedules one micro-batch and the step's tail (``simulator.schedule.stage``); the
step is ``(m - 1) t + t_last`` (``simulator.schedule.step``). The gathers that the next step's
forward issues are step collectives (``Phase.COMMUNICATION``) that the graph's forward ops
wait for: what they delay the forward by belongs in ``t_last`` once, not in ``t``, the time
of each of the other m - 1 micro-batches. ``paid_once`` times ``t`` without them: the same
graph scheduled again with the gathers taking no time (and, where ``interfere`` timed the
micro-batches alone, with those times), whose start and end times are those of the other
micro-batches (``StageRun.micro_schedule``: their idle time, exposed communication and energy).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from simulator.graph.lower import Lowered
from simulator.graph.op import Phase
from simulator.schedule.stage import N_STREAMS, StageRun, streams


def ahead(lowered: Lowered) -> np.ndarray:
    """Mask of the step collectives (``Phase.COMMUNICATION``) an op of every micro-batch
    waits for."""
    phase = lowered.phase
    micro = (phase != Phase.OPTIMIZER) & (phase != Phase.COMMUNICATION)
    readers = np.repeat(np.arange(len(lowered)), np.diff(lowered.indptr))
    mask = np.zeros(len(lowered), dtype=bool)
    feeds = micro[readers] & (phase[lowered.indices] == Phase.COMMUNICATION)
    mask[lowered.indices[feeds]] = True
    return mask


def paid_once(run: StageRun) -> StageRun:
    """``run`` with the schedule of its first m - 1 micro-batches (``StageRun.micro_start``,
    ``micro_end``) taken without the step collectives the forward waits for (``ahead``);
    ``run`` itself when it has none. The host issues the ops as in ``run`` (``run.issued``)."""
    from simulator.engine.dispatch import engine

    low = run.lowered
    early = ahead(low)
    if not early.any():
        return run
    time_s = np.array(run.alone_s if run.alone_s is not None else run.time_s, dtype=float)
    time_s[early] = 0.0
    kernels = engine(len(low))
    if run.sync is not None:   # the host waits at its synchronisations (as price_stage)
        start, end = kernels.schedule_synced(low.indptr, low.indices, time_s, streams(low),
                                             N_STREAMS, run.issued, run.sync)
    else:
        start, end = kernels.schedule_issued(low.indptr, low.indices, time_s, streams(low),
                                             N_STREAMS, run.issued)
    return replace(run, micro_start=start, micro_end=end)


__all__ = ["ahead", "paid_once"]
