"""A cache of the device-independent graphs, for sweeps that simulate one plan on many devices.

``simulator.api.simulate`` spends most of its time building graphs: each simulated stage's
forward graph (``simulator.parallel.rank.stage_forward``) and its lowered training step
(``build_stage``: training graph, fusion, data-parallel collectives, lowering). Neither
depends on the device's figures -- only on the workload, the plan and the devices per node of
the cluster -- and a sweep evaluates the same plan on many devices. A ``StageCache`` passed as
``simulate(..., cache=StageCache())`` keeps bounded memos of both (a sweep gives each worker
one); only pricing and scheduling then run per device. The graphs and arrays are only read
downstream, so the results are the same with and without it (``tests/test_sweep.py``).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import fields, replace

from simulator.api import StageBuilder
from simulator.plan.parallel import ParallelPlan
from simulator.plan.step import Plan

#: Plan fields ``stage_forward`` does not read: set to their defaults in its key, so that
#: plans differing only in them share one forward graph. A field not named here is part of
#: the key (a field added later: a miss until it is named here, never a stale graph).
FORWARD_UNREAD = {
    # fusion: read only by PyTorch's context-parallel ring, keyed apart there (_ring_fusion)
    Plan: ("global_batch", "recompute", "optimizer", "fusion", "grad_clip", "fp32_grads",
           # a run's goodput (simulator.report.goodput): read by its totals alone
           "checkpoint_every", "storage_gb_s", "eval_every", "eval_batches", "failure_rate",
           "restart_s",
           # read by the training step (simulator.training.bias, from build_stage)
           "bias_add",
           # scales the whole step after its graphs are priced (simulator.api.simulate)
           "rank_variability"),
    ParallelPlan: ("zero", "micro_batches", "overlap_grad_reduce", "overlap_tp_comm",
                   "fused_grad_accumulation", "overlap_param_gather", "sharding",
                   "fsdp_prefetch", "fsdp_version",
                   "fsdp_limit_all_gathers", "fsdp_backward_post", "fsdp_reshard_after_forward",
                   "fsdp_whole_model",
                   "shard_group",
                   "zero_prefetch_bucket", "zero_max_live", "zero_reduce_bucket",
                   "zero_contiguous_gradients",
                   "pipeline_engine", "comm_interference", "comm_sms", "tp_comm_overlap",
                   "overlap_p2p_comm"),
}

#: Plan fields ``build_stage`` does not read either: set to their defaults in its key too.
#: rank_variability only scales the priced step (simulator.schedule.variability).
STEP_UNREAD = ("rank_variability",)


class StageCache(StageBuilder):
    """``simulate``'s stage graphs, kept: the last ``size`` forward graphs (``forwards``) and
    lowered steps (``steps``), least recently used out first. Safe to share between
    threads."""

    def __init__(self, size: int = 64):
        self.size = size
        self._lock = threading.Lock()
        self.forwards: OrderedDict = OrderedDict()
        self.steps: OrderedDict = OrderedDict()

    def stage_forward(self, work, plan, parallel, stage, cluster):
        """``simulator.parallel.rank.stage_forward``, kept by the workload, stage, devices per
        node and the plans less their ``FORWARD_UNREAD`` fields."""
        per_node = cluster.devices_per_node if cluster else 1
        key = (_identity(work), _read(plan), _read(parallel), stage, per_node,
               _ring_fusion(plan, parallel))
        build = super().stage_forward
        return self._remember(self.forwards, key, work,
                              lambda: build(work, plan, parallel, stage, cluster))

    def build_stage(self, forward, plan, parallel, per_node):
        """``simulator.parallel.rank.build_stage``, kept by the forward graph and the plans
        less their ``STEP_UNREAD`` fields."""
        build = super().build_stage
        read = replace(plan, **{f.name: f.default for f in fields(plan) if f.name in STEP_UNREAD})
        return self._remember(self.steps, (id(forward), read, parallel, per_node), forward,
                              lambda: build(forward, plan, parallel, per_node))

    def clear(self) -> None:
        with self._lock:
            self.forwards.clear()
            self.steps.clear()

    def _remember(self, memo: OrderedDict, key, keep, build):
        """``memo[key]``, built on a miss; ``keep`` is held with the value (an id() in the key
        must stay alive); the oldest entries go beyond ``size``."""
        with self._lock:
            if key in memo:
                memo.move_to_end(key)
                return memo[key][1]
        value = build()
        with self._lock:
            memo[key] = (keep, value)
            while len(memo) > self.size:
                memo.popitem(last=False)
        return value


def _read(plan):
    """``plan`` with the fields ``stage_forward`` does not read at their defaults."""
    unread = FORWARD_UNREAD[type(plan)]
    return replace(plan, **{f.name: f.default for f in fields(plan) if f.name in unread})


def _ring_fusion(plan, parallel):
    """``plan.fusion`` where ``stage_forward`` reads it (PyTorch's context-parallel ring, traced
    under compiled fusion: ``simulator.parallel.rank``), else None: an unread field elsewhere."""
    if parallel.cp > 1 and parallel.cp_comm.value == "torch-ring":
        return plan.fusion
    return None


def _identity(work):
    try:
        hash(work)
    except TypeError:
        return ("id", id(work))
    return work


__all__ = ["FORWARD_UNREAD", "STEP_UNREAD", "StageCache"]
