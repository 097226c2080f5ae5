"""FSDP with the whole model one unit (ParallelPlan.fsdp_whole_model): no auto_wrap_policy, one
top-level FullyShardedDataParallel instance (OLMo's ``wrapping_strategy: null``, the AMD-OLMo
MI250 validation row).

The root unit is not resharded after the forward (torch/distributed/fsdp/_runtime_utils.py:
``_post_forward`` frees the unsharded parameter of non-root handles only), so each micro-batch
gathers every weight once before its forward and keeps them through its backward, and its
post-backward hook reduce-scatters every gradient at once when the backward is done: nothing to
overlap either with.
"""
from __future__ import annotations

import pytest

from simulator import Plan, PlanError, simulate
from simulator.graph.op import Phase
from simulator.plan.parallel import ParallelPlan
from tests.test_fsdp_backward_post import SMALL, _data_ops
from workloads.transformer import TransformerConfig

A100 = "a100-sxm4-80gb"


def _run(whole: bool, dp: int = 16, m: int = 1):
    plan = Plan(micro_batch=1, global_batch=dp * m)
    return simulate(SMALL, A100, plan, parallel=ParallelPlan(
        dp=dp, zero=3, comm_interference=False, fsdp_whole_model=whole))


@pytest.mark.parametrize("m", [1, 2])
def test_one_gather_and_one_reduce_scatter_a_micro_batch(m):
    """In a micro-batch's graph (the schedule runs it m times): one all-gather, in the
    forward, and one reduce-scatter; per block (the default) a gather per block and the root
    in the forward, again per block in the backward, and a reduce-scatter per block."""
    whole, block = _run(True, m=m), _run(False, m=m)
    gathers, scatters = _data_ops(whole, "all_gather"), _data_ops(whole, "reduce_scatter")
    assert len(gathers) == 1 and len(scatters) == 1
    assert set(whole.lowered.phase[gathers]) == {int(Phase.FORWARD)}
    assert len(_data_ops(block, "all_gather")) > len(gathers)
    assert len(_data_ops(block, "reduce_scatter")) >= SMALL.layers


def test_the_gather_carries_every_weight():
    """The single gather moves the whole model's weights (its gathered output, every
    parameter in bf16: SMALL's embeddings, blocks and head), the sum of the per-block run's
    forward gathers."""
    whole, block = _run(True), _run(False)
    low_w, low_b = whole.lowered, block.lowered
    fw = [g for g in _data_ops(block, "all_gather") if low_b.phase[g] == int(Phase.FORWARD)]
    out_w = sum(low_w.bytes_written[g] for g in _data_ops(whole, "all_gather"))
    out_b = sum(low_b.bytes_written[g] for g in fw)
    assert out_w == pytest.approx(out_b, rel=1e-9)
    assert out_w == pytest.approx(2 * SMALL.num_params(), rel=0.02)


def test_whole_model_unit_is_slower_and_holds_the_model():
    """Nothing overlaps the gather and the reduce-scatter, so the step is longer than with a
    unit per block; and the workspace holds every weight gathered at once."""
    whole, block = _run(True), _run(False)
    assert whole.step_time_s > block.step_time_s
    assert whole.peak_memory_bytes > block.peak_memory_bytes


def test_zero_below_3_changes_nothing_and_says_so():
    """Below ZeRO 3 no weight is gathered per unit (DDP, ZeRO 1): the knob moves nothing, and
    the result's note says so; at ZeRO 3 it applies and no such note is given."""
    tiny = TransformerConfig("tiny", layers=2, hidden=512, heads=8, vocab=4096, seq_len=512)
    plan = Plan(micro_batch=1, global_batch=8)
    for zero in (0, 1):
        a = simulate(tiny, A100, plan, parallel=ParallelPlan(dp=8, zero=zero))
        b = simulate(tiny, A100, plan, parallel=ParallelPlan(dp=8, zero=zero,
                                                             fsdp_whole_model=True))
        assert a.step_time_s == b.step_time_s
        assert any(f"fsdp_whole_model: zero = {zero}" in note and "changes nothing" in note
                   for note in b.notes)
    assert not any("fsdp_whole_model" in note for note in _run(True).notes)


@pytest.mark.parametrize("sharding", ["deepspeed", "deepspeed-2021", "megatron"])
def test_refused_outside_pytorch_fsdp(sharding):
    """Neither DeepSpeed nor Megatron-LM wraps FSDP units: asking for one is refused in one
    line naming the fix, not run as if it were not asked."""
    with pytest.raises(PlanError, match=f"fsdp_whole_model = true with sharding = "
                                        f"{sharding}.*--sharding fsdp"):
        ParallelPlan(dp=8, zero=3 if sharding != "megatron" else 1, sharding=sharding,
                     fsdp_whole_model=True)


def test_every_unsharded_gradient_is_held_to_the_backwards_end():
    """The one unit's post-backward hook reduce-scatters when the backward is done, so its
    unsharded gradients (bf16, one a parameter) accumulate over the backward. With activations
    negligible (16 tokens) the peak is at the backward's end: the workspace holds the gathered
    weights and every gradient, 2 x 2 bytes a parameter (within 1 %), where a unit per block
    reduces each block's as its backward ends and holds neither."""
    from dataclasses import replace

    config = replace(SMALL, seq_len=16)
    plan = Plan(micro_batch=1, global_batch=16)
    runs = [simulate(config, A100, plan, parallel=ParallelPlan(
        dp=16, zero=3, comm_interference=False, fsdp_whole_model=whole)) for whole in (True, False)]
    whole, block = (run.memory_breakdown["workspace"] for run in runs)
    assert whole == pytest.approx(4 * config.num_params(), rel=0.01)
    assert block < 0.6 * whole


def test_the_other_unit_options_say_so_too():
    """FSDP's other unit options (SHARD_GRAD_OP, BACKWARD_POST, the prefetch depth, the
    gather limit) move nothing below ZeRO 3 or under DeepSpeed's sharding, and the one note
    names every one asked; none is given at ZeRO 3 with FSDP sharding, where they apply."""
    tiny = TransformerConfig("tiny", layers=2, hidden=512, heads=8, vocab=4096, seq_len=512)
    plan = Plan(micro_batch=1, global_batch=8)
    asked = dict(fsdp_reshard_after_forward=False, fsdp_prefetch=0,
                 fsdp_limit_all_gathers=False)
    base = simulate(tiny, A100, plan, parallel=ParallelPlan(dp=8, zero=2))
    below = simulate(tiny, A100, plan, parallel=ParallelPlan(dp=8, zero=2, **asked))
    assert below.step_time_s == base.step_time_s
    note, = [n for n in below.notes if "FSDP's unit options" in n]
    assert note.startswith("fsdp_reshard_after_forward = false, fsdp_prefetch = 0, "
                           "fsdp_limit_all_gathers = false: zero = 2, no weight is gathered "
                           "per unit; they change nothing")
    deepspeed = simulate(tiny, A100, plan, parallel=ParallelPlan(
        dp=8, zero=3, sharding="deepspeed", fsdp_backward_post=True))
    assert any(n.startswith("fsdp_backward_post: sharding deepspeed gathers by its own rules; "
                            "it changes nothing") for n in deepspeed.notes)
    at_three = simulate(tiny, A100, plan, parallel=ParallelPlan(dp=8, zero=3, **asked))
    assert not any("FSDP's unit options" in n for n in at_three.notes)
