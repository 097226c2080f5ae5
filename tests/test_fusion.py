"""Fused attention (FlashAttention-style) and elementwise fusion keep counts, cut traffic."""
import pytest
from hypothesis import given, settings, strategies as st

from simulator import simulate
from simulator.training.fusion import fuse_attention, fuse_elementwise
from simulator.training.saved import activation_bytes_by_layer, saved_tensors
from simulator.graph.op import DType, Op, OpKind, Phase
from simulator.graph.opgraph import OpGraph
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from workloads.presets import TRANSFORMERS
from workloads.transformer import TransformerConfig


def _step(name, attention, batch=2, recompute="none"):
    forward = TRANSFORMERS[name].forward_graph(batch, DType.BF16)
    if attention == "fused":
        forward = fuse_attention(forward)
    return forward, training_graph(forward, Plan(micro_batch=batch, recompute=recompute))


@pytest.mark.parametrize("name", ["gpt2-small", "llama2-7b", "bert-base", "vit-b16"])
def test_fused_attention_keeps_model_flops(name):
    fwd_m, step_m = _step(name, "materialized")
    fwd_f, step_f = _step(name, "fused")
    model = [Phase.FORWARD, Phase.BACKWARD]
    assert fwd_f.model_flops() == fwd_m.model_flops()
    assert step_f.model_flops(model) == step_m.model_flops(model)
    assert fwd_f.params() == fwd_m.params()
    assert step_f.is_dag()


def test_fused_attention_backward_recomputes_half_the_forward():
    """Dao et al. 2022, alg. 4: the backward recomputes S = QK^T (one of the two matmuls)."""
    fwd, step = _step("gpt2-small", "fused")
    attention = [op for op in fwd.ops() if op.kind is OpKind.ATTENTION]
    assert len(attention) == TRANSFORMERS["gpt2-small"].layers
    assert step.model_flops([Phase.RECOMPUTE]) == sum(op.flops for op in attention) // 2


def test_fused_attention_keeps_no_s_squared_tensor():
    """Activations per layer: Korthikanti's 34sbh (what selective recomputation keeps) plus
    the fp32 log-sum-exp per (head, row) and the norms' statistics."""
    c = TRANSFORMERS["gpt3-1.3b"]
    b, s, h, a = 2, c.seq_len, c.hidden, c.heads
    fwd, _ = _step("gpt3-1.3b", "fused", batch=b)
    plan = Plan(micro_batch=b)
    per_layer = activation_bytes_by_layer(fwd, plan)
    lse, norms = 4 * b * a * s, 2 * 2 * 4 * b * s
    assert per_layer[3] == 34 * s * b * h + lse + norms
    biggest = max(nbytes for nbytes, layer in saved_tensors(fwd, plan).values() if layer >= 0)
    assert biggest < a * s * s * b  # no layer keeps anything of the attention matrix's size


def test_elementwise_fusion_keeps_arithmetic_and_cuts_traffic():
    _, step = _step("gpt2-small", "fused")
    fused = fuse_elementwise(step)
    assert fused.is_dag()
    assert len(fused) < len(step)
    assert fused.model_flops() == step.model_flops()
    total = lambda g: sum(op.flops + op.vector_flops for op in g.ops())
    assert total(fused) == total(step)
    moved = lambda g: sum(op.bytes for op in g.ops())
    assert moved(fused) < moved(step)



def _issue_marked(kinds: dict[str, tuple[OpKind, str, bool]]) -> OpGraph:
    """Ops added in the dict's order: name -> (kind, the op it reads or "", issue_early)."""
    g = OpGraph("g")
    for name, (kind, src, early) in kinds.items():
        g.add(Op(name=name, kind=kind, bytes_read=4, bytes_written=4, out_bytes=4),
              [src] if src else [])
        if early:
            g.issue_early(name)
    return g


def test_elementwise_fusion_keeps_issue_early_marks():
    """A kept op keeps its issue_early mark, so an early op a later pass adds (a gradient
    add, a data-parallel reduction) is placed among it as in the unfused graph: ``e`` (an fp8
    cast or a layout copy reading ``a``) stays just after ``a``, before ``g`` added later
    reading ``a`` too (with the mark lost, ``g`` went first). ``f`` folds into ``e``, which
    stays early; the early ``c`` folds into ``b``, which does not become early."""
    step = _issue_marked({"a": (OpKind.MATMUL, "", False), "b": (OpKind.MATMUL, "a", False),
                          "c": (OpKind.ELEMENTWISE, "b", True),
                          "e": (OpKind.COPY, "a", True), "f": (OpKind.ELEMENTWISE, "e", False)})
    assert step.names() == ["a", "e", "b", "c", "f"]
    fused = fuse_elementwise(step)
    assert fused.names() == ["a", "e", "b"]
    assert dict(fused.nx.nodes(data="early")) == {"a": None, "e": True, "b": None}
    for graph in (step, fused):
        graph.add(Op(name="g", kind=OpKind.COPY, bytes_read=4, bytes_written=4), ["a"])
        graph.issue_early("g")
    assert fused.names() == ["a", "e", "g", "b"]
    assert [n for n in step.names() if n in fused] == fused.names()

@settings(max_examples=15, deadline=None)
@given(layers=st.integers(1, 3), heads=st.sampled_from([1, 2, 4]), seq=st.integers(4, 128),
       batch=st.integers(1, 4))
def test_fusion_is_never_slower(layers, heads, seq, batch):
    c = TransformerConfig("t", layers, 64, heads, vocab=101, seq_len=seq)
    eager = simulate(c, "a100", micro_batch=batch, fusion="eager")
    compiled = simulate(c, "a100", micro_batch=batch, fusion="compiled")
    assert compiled.step_time_s <= eager.step_time_s * (1 + 1e-12)
    assert compiled.flops_per_step == eager.flops_per_step
