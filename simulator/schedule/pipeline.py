"""A pipeline's schedule in closed form: its bubble, the micro-batches each stage holds in
flight, and the blocks of forwards and backwards each stage runs (for the timeline plot).

Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU Clusters Using
Megatron-LM" (SC21, arXiv:2104.04473), sec. 2.2; Korthikanti et al. 2022 (arXiv:2205.05198),
sec. 4.2.3.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from simulator.errors import PlanError
from simulator.plan.parallel import Schedule, positive


def bubble_over_ideal(p: int, m: int, schedule: Schedule = Schedule.ONE_F_ONE_B,
                      v: int = 1) -> float:
    """Pipeline bubble time / ideal (bubble-free) time: (p-1)/m for GPipe and 1F1B,
    (p-1)/(v m) interleaved (Narayanan et al. 2021, sec. 2.2.1-2.2.2)."""
    positive(p, "pp")
    positive(m, "micro_batches")
    chunks = v if Schedule(schedule) is Schedule.INTERLEAVED else 1
    return (p - 1) / (chunks * m)


def bubble_over_total(p: int, m: int, schedule: Schedule = Schedule.ONE_F_ONE_B,
                      v: int = 1) -> float:
    """Bubble / (ideal + bubble): (p-1)/(m+p-1) for GPipe and 1F1B, (p-1)/(v m+p-1) interleaved;
    the idle share of a pipelined step."""
    ratio = bubble_over_ideal(p, m, schedule, v)
    return ratio / (1.0 + ratio)


def in_flight_micro_batches(p: int, m: int, stage: int,
                            schedule: Schedule = Schedule.ONE_F_ONE_B, v: int = 1) -> float:
    """Micro-batches whose activations stage ``stage`` (0 = first) holds at its peak, in units
    of one micro-batch through all of the stage's layers.

    GPipe: m. 1F1B: min(p - stage, m) (Narayanan et al. 2021, sec. 2.2.1). Interleaved:
    Megatron-LM's warm-up of 2(p - stage - 1) + (v-1) p chunk micro-batches plus the one in
    steady state, capped at the v m there are, over v chunks per stage; the first stage holds
    p + (p-1)/v, Korthikanti et al. 2022 sec. 4.2.3's p (1 + (p-1)/(p v)).
    """
    schedule = Schedule(schedule)
    if not 0 <= stage < p:
        raise PlanError(f"stage = {stage} must be in 0 .. pp - 1 = {p - 1}")
    if schedule is Schedule.GPIPE:
        return float(m)
    if schedule is Schedule.ONE_F_ONE_B or v == 1:
        return float(min(p - stage, m))
    chunks = min(2 * (p - stage - 1) + (v - 1) * p + 1, v * m)
    return chunks / v


def pipeline_blocks(p: int, m: int, gpipe: bool, t_f: float | Sequence[float],
                    t_b: float | Sequence[float]) -> dict:
    """{(stage, is_backward): [(start, duration)]}: each stage runs its blocks in order; a
    forward waits for the previous stage's, a backward for the next stage's (the last stage's
    for its own forward). ``t_f``, ``t_b``: one micro-batch's forward and backward, the same on
    every stage or one per stage, first to last."""
    fwd = [float(t_f)] * p if np.ndim(t_f) == 0 else [float(x) for x in t_f]
    bwd = [float(t_b)] * p if np.ndim(t_b) == 0 else [float(x) for x in t_b]
    if len(fwd) != p or len(bwd) != p:
        raise PlanError(f"pipeline_blocks: {len(fwd)} forward and {len(bwd)} backward times "
                        f"for {p} stages")
    orders = []
    for s in range(p):
        warm = m if gpipe else min(p - s - 1, m)
        order = [(False, j) for j in range(warm)]
        for j in range(m - warm):
            order += [(False, warm + j), (True, j)]
        orders.append(order + [(True, j) for j in range(m - warm, m)])
    done: dict = {}
    free, nxt = [0.0] * p, [0] * p
    while any(nxt[s] < len(orders[s]) for s in range(p)):
        before = sum(nxt)
        for s in range(p):
            while nxt[s] < len(orders[s]):
                backward, j = orders[s][nxt[s]]
                dep = (s + 1, True, j) if backward and s < p - 1 else \
                    (s, False, j) if backward else (s - 1, False, j)
                if dep[0] >= 0 and dep not in done:
                    break
                start = max(free[s], done.get(dep, 0.0))
                free[s] = done[(s, backward, j)] = start + (bwd[s] if backward else fwd[s])
                nxt[s] += 1
        if sum(nxt) == before:  # cannot happen for these orders; never loop forever
            raise RuntimeError("pipeline schedule deadlocked")
    blocks: dict = {}
    for (s, backward, _), end in done.items():
        took = bwd[s] if backward else fwd[s]
        blocks.setdefault((s, backward), []).append((end - took, took))
    return blocks


def deepspeed_instruction(stage: int, step: int, p: int) -> tuple[int, bool]:
    """(micro-batch, is_forward) of DeepSpeed's ``TrainSchedule`` at ``step`` on ``stage``
    (deepspeed/runtime/pipe/schedule.py, ``_step_to_micro_batch``, read at microsoft/DeepSpeed
    f28432441b, v0.5.0, Aug 2021; the same from v0.3.13 to v0.8.0): a stage runs forwards on
    the steps of its own parity and backwards on the others; micro-batch j's forward runs on
    stage s at step 2j + s, its backward at step 2j + 2p - s - 1. Ids outside 0 .. m - 1 are
    idle steps."""
    if step % 2 == stage % 2:
        return (step - stage) // 2, True
    return (step + stage + 1) // 2 - p, False


def deepspeed_train_ends(forward, backward, m: int) -> np.ndarray:
    """When each stage ends its last instruction under DeepSpeed's pipeline engine (its
    ``TrainSchedule``, ``deepspeed_instruction``), from each stage's forward and backward of
    one micro-batch (seconds, each with its own blocking messages).

    The engine runs 2 (m + p - 1) steps. At each one a stage exchanges with one neighbour:
    on a forward step ``RecvActivation`` then ``SendGrad`` with the previous stage, on a
    backward step ``SendActivation`` then ``RecvGrad`` with the next (schedule.py
    ``TrainSchedule.steps``), each a blocking ``dist.broadcast`` in the pair's group
    (pipe/p2p.py ``send``/``recv``, async_op forced False: the NCCL stream waits for the
    compute before it, the compute after it for the message). A step of a stage therefore
    starts when it and the neighbour it exchanges with have both ended the previous one
    ("the synchronous 1F1B pipeline training schedule", jaywonchung in microsoft/DeepSpeed
    issue #2800). The pairs alternate (s with s + 1, then with s - 1), so the stages stagger
    rather than lock into steps of max(F, B): equal stages end at (m + p - 1)(F + B), the
    1F1B closed form of Narayanan et al. 2021 sec. 2.2.1, and unequal ones never later than
    (m + p - 1) x the slowest stage's F + B (``tests/test_deepspeed_engines.py``), which is
    why ``simulator.schedule.step.step_time`` prices both engines with that closed form. The
    messages' own time is in F and B (two blocking exchanges a step, as in each stage's
    scheduled micro-batch, ``simulator.parallel.pipeline.block_on_p2p``)."""
    forward, backward = np.asarray(forward, float), np.asarray(backward, float)
    p = len(forward)
    positive(p, "pp")
    positive(m, "micro_batches")
    stage = np.arange(p)
    end = np.zeros(p)
    for step in range(2 * (m + p - 1)):
        # the micro-batch of this step and of the previous one
        j, is_fwd = (np.array(x) for x in zip(*(deepspeed_instruction(s, step, p)
                                                 for s in range(p))))
        prev = np.array([deepspeed_instruction(s, step - 1, p)[0] for s in range(p)])
        valid, valid_prev = (j >= 0) & (j < m), (prev >= 0) & (prev < m)
        peer = np.where(is_fwd, stage - 1, stage + 1)
        talks = (valid | valid_prev) & (peer >= 0) & (peer < p)
        start = np.where(talks, np.maximum(end, end[np.clip(peer, 0, p - 1)]), end)
        end = start + np.where(valid, np.where(is_fwd, forward, backward), 0.0)
    return end


__all__ = ["bubble_over_ideal", "bubble_over_total", "deepspeed_instruction",
           "deepspeed_train_ends", "in_flight_micro_batches", "pipeline_blocks"]
