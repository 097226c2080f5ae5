"""FSDP's BackwardPrefetch.BACKWARD_POST (ParallelPlan.fsdp_backward_post), Composer's default.

torch/distributed/fsdp/_runtime_utils.py: a unit's post-backward hook reshards it, prefetches
the next unit's all-gather (_post_backward_reshard -> _prefetch_handle(..., BACKWARD)), then
reduce-scatters its gradients (_reduce_grad): each backward gather is issued when the unit
before it in the backward is done, so it overlaps none of the backward's compute, and it goes
ahead of that unit's reduce-scatter on the communicator's in-order stream.
"""
from __future__ import annotations

import numpy as np
import pytest

from simulator import Plan, simulate
from simulator.errors import PlanError
from simulator.graph.collective import Axis
from simulator.graph.lower import COLLECTIVE_FNS
from simulator.graph.op import OpKind, Phase
from simulator.plan.parallel import ParallelPlan
from tests.test_interference import _hidden
from workloads.transformer import TransformerConfig

SMALL = TransformerConfig("small", layers=4, hidden=1024, heads=8, vocab=8192, seq_len=1024)
A100 = "a100-sxm4-80gb"


def _run(dp=16, m=1, recompute="none", fp32_grads=False, **parallel):
    plan = Plan(micro_batch=1, global_batch=dp * m, recompute=recompute, fp32_grads=fp32_grads)
    return simulate(SMALL, A100, plan,
                    parallel=ParallelPlan(dp=dp, zero=3, comm_interference=False, **parallel))


def _data_ops(result, fn: str) -> np.ndarray:
    low = result.lowered
    return np.flatnonzero((low.collective == COLLECTIVE_FNS.index(fn))
                          & (low.axis == int(Axis.DATA)) & (low.kind == OpKind.COLLECTIVE))


def _backward_gathers(result) -> np.ndarray:
    gathers = _data_ops(result, "all_gather")
    return gathers[result.lowered.phase[gathers] == int(Phase.BACKWARD)]


CASES = [{}, {"m": 4, "recompute": "full", "fp32_grads": True},
         {"dp": 64, "m": 2, "fp32_grads": True}, {"dp": 8, "m": 2, "recompute": "full"}]


@pytest.mark.parametrize("case", CASES)
def test_backward_post_lies_between_pre_and_no_prefetch(case):
    """BACKWARD_POST hides less than BACKWARD_PRE (its gathers wait for the unit before them
    to end) and no less than no prefetch (the same gathers, but not behind the reduce-scatter
    of that unit): on SMALL over 8-64 ranks each step strictly between the two."""
    pre = _run(**case).step_time_s
    post = _run(fsdp_backward_post=True, **case).step_time_s
    none = _run(fsdp_prefetch=0, **case).step_time_s
    assert pre < post < none, (pre, post, none)


def test_every_backward_gather_is_exposed():
    """No matmul runs beside a BACKWARD_POST backward gather; with BACKWARD_PRE some do."""
    post, pre = _run(fsdp_backward_post=True), _run()
    gathers = _backward_gathers(post)
    assert len(gathers) == SMALL.layers
    assert all(_hidden(post, g) == 0.0 for g in gathers)
    assert sum(_hidden(pre, g) for g in _backward_gathers(pre)) > 0


def test_each_gather_goes_ahead_of_its_units_reduce_scatter():
    """The post-backward hook of a unit issues the next unit's gather, then the unit's
    reduce-scatter: each reduce-scatter of a block that is followed by a gather starts when
    that gather has ended, and the reductions keep the backward's order (last block first)."""
    r = _run(fsdp_backward_post=True)
    low, start, end = r.lowered, r.times["start_s"], r.times["end_s"]
    names = list(low.names)
    gathers = {int(names[g].rsplit(":L", 1)[1]): g for g in _backward_gathers(r)}
    scatters = {int(names[s].rsplit(":L", 1)[1]): s for s in _data_ops(r, "reduce_scatter")}
    for layer in range(1, SMALL.layers):   # block L's reduce-scatter after block L-1's gather
        assert start[scatters[layer]] >= end[gathers[layer - 1]] - 1e-15
    order = sorted(scatters, key=lambda layer: start[scatters[layer]])
    assert order[:SMALL.layers] == list(range(SMALL.layers - 1, -1, -1))


def test_forward_is_unchanged():
    """BACKWARD_POST changes the backward only: the forward's gathers start as with PRE."""
    pre, post = _run(), _run(fsdp_backward_post=True)
    forward = lambda r: [r.times["start_s"][g] for g in _data_ops(r, "all_gather")
                         if r.lowered.phase[g] == int(Phase.FORWARD)]
    assert forward(post) == pytest.approx(forward(pre)) and forward(pre)


def test_backward_post_needs_one_unit_of_prefetch():
    with pytest.raises(PlanError, match="fsdp_backward_post"):
        ParallelPlan(fsdp_backward_post=True, fsdp_prefetch=0)
    with pytest.raises(PlanError, match="fsdp_backward_post"):
        ParallelPlan(fsdp_backward_post=True, fsdp_prefetch=2)
