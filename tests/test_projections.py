"""Megatron-Core's fused projections (simulator.training.projections, Plan.projections): q, k, v
as one linear_qkv and a gated MLP's gate and up as one linear_fc1. Closed-form shapes, FLOPs and
bytes of the fused GEMMs and their gradients, no gradient sum, views that cost nothing, and the
invariants (same model FLOPs and parameters, never slower)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import simulate
from simulator.cost.host import costs
from simulator.errors import PlanError
from simulator.graph.lower import lower
from simulator.graph.op import DType, OpKind, Task
from simulator.plan.parallel import ParallelPlan
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from simulator.training.fusion import fuse_attention
from simulator.training.projections import SLICE, fuse_projections, groups
from workloads.transformer import Ffn, TransformerConfig

# a Llama-style layer: grouped-query attention (8 heads, 2 KV heads), SwiGLU, no biases
H, HEADS, KV, FFN, S, BATCH = 512, 8, 2, 1408, 128, 2
LLAMA = TransformerConfig("llama", 2, H, HEADS, vocab=1000, seq_len=S, kv_heads=KV,
                          ffn=Ffn.SWIGLU, ffn_hidden=FFN, learned_positions=False,
                          bias=False, dropout=False)
ROWS, D = BATCH * S, H // HEADS


def _forward(model=LLAMA):
    return fuse_attention(model.forward_graph(BATCH, DType.BF16))


def _step(fused: bool, model=LLAMA):
    forward = _forward(model)
    if fused:
        forward = fuse_projections(forward)
    return training_graph(forward, Plan(micro_batch=BATCH, projections="fused" if fused
                                        else "separate"))


def test_groups_are_qkv_and_gate_up():
    """Per layer two groups: q, k, v (attention) and gate, up (MLP); o_proj and fc2 (row
    parallel) stay apart."""
    found = groups(_forward())
    names = sorted(tuple(n.split(".", 1)[1] for n in group) for group in found)
    assert names == [("gate_proj", "up_proj")] * 2 + [("q_proj", "k_proj", "v_proj")] * 2


def test_fused_linear_closed_form():
    """The fused qkv: n = (heads + 2 kv_heads) x head_dim, FLOPs 2 rows h n, the input read
    once: (rows h + h n) x 2 bytes read, rows n x 2 written; gate + up likewise with n = 2 ffn."""
    fused = fuse_projections(_forward())
    ops = {op.name: op for op in fused.ops()}
    for name, n in (("L0.q_proj+k_proj+v_proj", (HEADS + 2 * KV) * D),
                    ("L0.gate_proj+up_proj", 2 * FFN)):
        op = ops[name]
        assert (op.m, op.n, op.k) == (ROWS, n, H)
        assert op.flops == 2 * ROWS * H * n
        assert op.bytes_read == (ROWS * H + H * n) * 2
        assert op.bytes_written == op.out_bytes == ROWS * n * 2
        assert op.params == H * n and op.tensors == 1


def test_views_carry_each_slice_and_readers_keep_their_bytes():
    """Each member's output is a view of its slice (no bytes moved); every reader reads the
    same bytes from it as it read from the member."""
    plain, fused = _forward(), fuse_projections(_forward())
    for name in ("L0.q_proj", "L0.k_proj", "L0.v_proj", "L1.gate_proj", "L1.up_proj"):
        view = fused.op(name)
        assert (view.kind, view.fn) == (OpKind.COPY, SLICE)
        assert view.bytes_read == view.bytes_written == view.flops == 0
        assert view.out_bytes == plain.op(name).out_bytes
        for reader in plain.consumers(name):
            assert fused.nx.edges[name, reader]["bytes"] == plain.nx.edges[name, reader]["bytes"]


def test_same_flops_less_the_gradient_sums():
    """The same GEMM FLOPs and parameters; what is gone is the gradient sums' adds: per layer
    (3 - 1) rows h for q, k, v's input and (2 - 1) rows h for gate, up's."""
    plain, fused = _step(False), _step(True)
    assert plain.flops() - fused.flops() == LLAMA.layers * 3 * ROWS * H
    assert fused.model_flops() == plain.model_flops()
    assert fused.params() == plain.params()


def test_no_gradient_sum_and_one_gradient_gemm_each():
    """Separate: the normed inputs' gradients are summed (a grad_accumulate per norm output
    read by the group, 2 per layer); fused: none, and one data-gradient GEMM of depth n
    (dx = dy W: rows x h deep n) and one weight-gradient GEMM per group."""
    def sums(step):
        return [op for op in step.ops() if op.task is Task.GRAD_SUM and "norm" in op.name]
    assert len(sums(_step(False))) == 2 * LLAMA.layers
    step = _step(True)
    assert sums(step) == []
    dgrad = step.op("dgrad:L0.q_proj+k_proj+v_proj")
    assert (dgrad.m, dgrad.n, dgrad.k) == (ROWS, H, (HEADS + 2 * KV) * D)
    wgrads = [op for op in step.ops() if op.task is Task.WEIGHT_GRAD and op.layer == 0]
    assert len(wgrads) == 4   # qkv, o_proj, gate+up, fc2


def test_views_launch_no_kernel():
    """A view costs neither a kernel's fixed time on the device nor an issue on the host."""
    lowered = lower(_step(True))
    views = lowered.fn == SLICE
    assert views.sum() == 2 * 5   # q, k, v, gate, up per layer, forward only
    fixed, host = costs(lowered, _device())
    assert np.all(fixed[views] == 0) and np.all(host[views] == 0)


def _device():
    from hardware_specs.loader import load_device
    return load_device("h100-sxm5-80gb")


@settings(max_examples=6, deadline=None)
@given(tp=st.sampled_from([1, 2]), kv=st.sampled_from([2, 8]))
def test_fused_never_slower(tp, kv):
    """One GEMM of the summed width is never slower than its members apart, and the gradient
    sum is gone: the fused step takes no longer (same FLOPs, MFU no lower)."""
    model = TransformerConfig("m", 2, H, HEADS, vocab=1024, seq_len=S, kv_heads=kv,
                              ffn=Ffn.SWIGLU, ffn_hidden=FFN, learned_positions=False,
                              bias=False)
    runs = [simulate(model, "h100-sxm5-80gb", Plan(micro_batch=BATCH, projections=p),
                     parallel=ParallelPlan(tp=tp)) for p in ("separate", "fused")]
    assert runs[1].flops_per_step == runs[0].flops_per_step
    assert runs[1].step_time_s <= runs[0].step_time_s * (1 + 1e-9)


def test_unknown_projections_is_a_plan_error():
    with pytest.raises(PlanError, match="projections"):
        Plan(projections="merged")


def test_edges_from_later_ops_and_marks_are_kept():
    """An op added after its reader (an ordering edge, as expert parallelism's shared-expert
    overlap adds) keeps its edge, and an op's marks (``issue_early``) stay."""
    from simulator.graph.op import Op
    forward = _forward()
    forward.add(Op(name="late", kind=OpKind.COPY))
    forward.add_edge("late", "L1.o_proj", 1, nbytes=0)
    forward.issue_early("L1.o_proj")
    fused = fuse_projections(forward)
    assert "L1.q_proj+k_proj+v_proj" in fused
    assert fused.nx.edges["late", "L1.o_proj"]["bytes"] == 0
    assert fused.nx.nodes["L1.o_proj"].get("early")
    assert fused.is_dag() and len(fused.names()) == len(fused)


def test_an_ordering_edge_does_not_keep_a_member_apart():
    """Expert parallelism makes a shared expert's gate and up wait for the layer's combine
    all-to-all (a 0-byte ordering edge, simulator.parallel.expert): they still read one tensor
    and fuse, and the fused linear waits for the combine (before: left apart at ep > 1 only)."""
    from simulator.graph.op import Op
    forward = _forward()
    forward.add(Op(name="combine", kind=OpKind.COPY))
    for name in ("L1.gate_proj", "L1.up_proj"):
        forward.add_edge("combine", name, len(forward.inputs(name)), nbytes=0)
    assert ["L1.gate_proj", "L1.up_proj"] in groups(forward)
    fused = fuse_projections(forward)
    assert fused.nx.edges["combine", "L1.gate_proj+up_proj"]["bytes"] == 0
    assert fused.is_dag()
    # a second input that carries bytes is a different tensor: left apart
    forward.add(Op(name="other", kind=OpKind.COPY, out_bytes=64))
    forward.add_edge("other", "L1.up_proj", len(forward.inputs("L1.up_proj")))
    assert ["L1.gate_proj", "L1.up_proj"] not in groups(forward)


def test_shared_experts_fuse_under_expert_parallelism():
    """qwen2-moe's shared expert gate and up are one linear_fc1 at ep 4 as at ep 1."""
    found = []

    import simulator.training.projections as projections
    original = projections.groups

    def spy(forward):
        out = original(forward)
        found.extend(tuple(n.split(".", 1)[1] for n in names) for names in out)
        return out

    kwargs = dict(num_devices=8, seq_len=256, micro_batch=1, global_batch=8,
                  precision="bf16", projections="fused")
    try:
        projections.groups = spy
        simulate("qwen2-moe", "h100-sxm5-80gb", ep=4, **kwargs)
    finally:
        projections.groups = original
    assert ("shared_gate_proj", "shared_up_proj") in found
