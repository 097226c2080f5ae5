"""llm-foundry's flash path (Plan.attention_layout = unpadded): flash-attn's bert_padding gathers
q, k, v to the unpadded tokens and scatters the output back around the kernel, and the
backward does the reverse into zeroed tensors (simulator.training.qkv), in closed form."""
import numpy as np
import pytest

from simulator import simulate
from simulator.graph.op import DType, OpKind, Phase, Task
from simulator.plan.step import AttentionLayout, Plan
from simulator.training.backward import training_graph
from simulator.training.fusion import fuse_attention
from simulator.training.qkv import (
    LAYOUT_FN,
    add_qkv_kernels,
    layout_copies,
    layout_fills,
)
from workloads.transformer import TransformerConfig

GPT = TransformerConfig("gpt", 2, 512, 8, vocab=1000, seq_len=128)   # learned positions
BATCH = 2
N = BATCH * 128 * 512 * 2   # one of q, k, v (or the output) in 16 bits


def _step(**plan):
    plan = Plan(micro_batch=BATCH, precision="bf16", attention_layout="unpadded", **plan)
    forward = fuse_attention(GPT.forward_graph(BATCH, DType.BF16))
    return add_qkv_kernels(training_graph(forward, plan), plan)


def _layout_ops(step, phase):
    return [op for op in step.ops() if op.fn == LAYOUT_FN and op.phase is phase]


def test_forward_gathers_qkv_and_pads_the_output():
    """Per layer and forward: q, k, v gathered (N read, N written each), the output's zeros
    (N written) and its index_put (N read, N written): 4 N read, 5 N written."""
    ops = _layout_ops(_step(), Phase.FORWARD)
    assert len(ops) == GPT.layers * 5
    assert sum(op.bytes_read for op in ops) == GPT.layers * 4 * N
    assert sum(op.bytes_written for op in ops) == GPT.layers * 5 * N
    assert all(op.kind is OpKind.COPY for op in ops)


def test_backward_gathers_the_output_gradient_and_scatters_dqkv():
    """Per layer and backward: the output gradient gathered (N, N), dq, dk, dv each scattered
    into zeros (write N, then read N and write N): 4 N read, 7 N written."""
    ops = _layout_ops(_step(), Phase.BACKWARD)
    assert len(ops) == GPT.layers * 7
    assert sum(op.bytes_read for op in ops) == GPT.layers * 4 * N
    assert sum(op.bytes_written for op in ops) == GPT.layers * 7 * N


def test_recomputed_forward_unpads_again():
    """Full recomputation runs flash_attn_fn again (its unpad and pad); FlashAttention's own
    recomputation inside its backward moves nothing."""
    ops = _layout_ops(_step(recompute="full"), Phase.RECOMPUTE)
    assert len(ops) == GPT.layers * 5


def test_fills_come_before_their_scatters():
    step = _step()
    for op in step.ops():
        if op.fn == LAYOUT_FN and "layout_fill" in op.name:
            (after,) = [c for c in step.consumers(op.name)
                        if step.op(c).fn == LAYOUT_FN]
            assert step.op(after).bytes_read == op.bytes_written and \
                "layout_out" in after


def test_closed_forms():
    assert layout_copies(AttentionLayout.UNPADDED, Task.FORWARD, [3, 1, 1], 2) == ([3, 1, 1], [2])
    assert layout_copies(AttentionLayout.UNPADDED, Task.DATA_GRAD, [3, 1, 1], 2) == ([2],
                                                                                     [3, 1, 1])
    assert layout_fills(AttentionLayout.UNPADDED, Task.FORWARD, [3, 1, 1], 2) == [2]
    assert layout_fills(AttentionLayout.UNPADDED, Task.DATA_GRAD, [3, 1, 1], 2) == [3, 1, 1]
    assert layout_fills(AttentionLayout.SBHD, Task.FORWARD, [3, 1, 1], 2) == []


@pytest.mark.parametrize("recompute", ["none", "full"])
def test_unpadding_never_speeds_a_step_up(recompute):
    times = [simulate(GPT, "a100-sxm4-80gb", micro_batch=2, recompute=recompute,
                      attention_layout=layout).step_time_s
             for layout in ("native", "unpadded")]
    assert times[0] < times[1]


@pytest.mark.parametrize("layout", ["native", "sbhd-packed", "unpadded"])
@pytest.mark.parametrize("zero", [2, 3])
def test_reductions_keep_the_backwards_order(layout, zero):
    """The data-parallel reductions are issued as the backward makes each layer's gradients
    ready, last layer first, whatever copies the layout adds around the attention: the update
    ops are taken by layer, not in the order the added ops leave the graph in (with
    sbhd-packed or unpadded copies and unfused gradient accumulation, whose adds the
    reductions wait for, the first layers' reductions used to go first on the in-order
    stream, holding the last layers' back to the end of the step)."""
    from simulator.graph.lower import COLLECTIVE_FNS
    from simulator.plan.parallel import ParallelPlan
    model = TransformerConfig("gpt", 4, 512, 8, vocab=1000, seq_len=128)
    r = simulate(model, "h100-sxm5-80gb", Plan(micro_batch=2, global_batch=16,
                                               attention_layout=layout),
                 parallel=ParallelPlan(dp=8, zero=zero, fused_grad_accumulation=False))
    low = r.lowered
    scatters = [i for i in range(len(low)) if low.collective[i] ==
                COLLECTIVE_FNS.index("reduce_scatter") and low.names[i].startswith("dp_")]
    layers = [int(low.names[i].rsplit(":L", 1)[1])
              for i in sorted(scatters, key=lambda i: r.times["start_s"][i])]
    assert layers == [3, 2, 1, 0, -1]


@pytest.mark.parametrize("recompute, passes", [("none", 1), ("full", 2)])
def test_each_unpad_synchronises_the_host_twice(recompute, passes):
    """unpad_input's torch.nonzero and .item() (q, k, v: three calls) before each gather: six
    host synchronisations per layer in the forward and again in a recomputed forward, none in
    the backward; the native layout has none."""
    from simulator.cost.host import sync_calls
    plan = Plan(micro_batch=2, attention_layout="unpadded", recompute=recompute)
    r = simulate(GPT, "h100-sxm5-80gb", plan)
    calls = sync_calls(r.lowered, r.device_spec, plan)
    assert calls.sum() == 6 * GPT.layers * passes
    marked = np.flatnonzero(calls)
    assert all(r.lowered.names[i].startswith("layout") for i in marked)
    assert set(r.lowered.phase[marked]) <= {int(Phase.FORWARD), int(Phase.RECOMPUTE)}
    native = Plan(micro_batch=2, recompute=recompute)
    assert sync_calls(simulate(GPT, "h100-sxm5-80gb", native).lowered,
                      r.device_spec, native).sum() == 0
