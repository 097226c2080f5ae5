"""Hugging Face's eager modules (``TransformerConfig.hf_eager``, ``gelu_kernels``), as NeuSight's
per-op traces of GPT-2, BERT and OPT list their kernels (sitar-lab/NeuSight 6945927,
``scripts/asplos/label/<GPU>/<model>-train-<seq>-<batch>.csv``): the attention's scale and mask
as two kernels over the scores, GPT-2's ``gelu_new`` as eight. Off by default."""
import dataclasses

import pytest

from simulator import simulate
from simulator.errors import WorkloadError
from simulator.graph.op import Block, OpKind
from simulator.training.fusion import fuse_attention
from workloads.transformer import TransformerConfig

BASE = TransformerConfig("m", 2, 256, 4, vocab=1000, seq_len=128)
EAGER = dataclasses.replace(BASE, hf_eager=True, gelu_kernels=8)


def _ops(work, batch=2):
    graph = work.forward_graph(batch)
    return graph, [graph.op(n) for n in graph.names()]


def test_off_by_default_the_graph_is_unchanged():
    _, plain = _ops(BASE)
    assert BASE.hf_eager is False and BASE.gelu_kernels == 1
    assert not any(op.name.split(".")[-1].startswith(("attn_scale", "attn_mask", "gelu_"))
                   for op in plain)


def test_two_kernels_over_the_scores_and_eight_for_gelu_new():
    """Per layer: a scale and a mask kernel of batch x heads x s x s elements each, in the
    attention core, before the softmax; the GELU's one op becomes eight."""
    _, plain = _ops(BASE)
    _, eager = _ops(EAGER)
    scores = 2 * 4 * 128 * 128
    core = [op for op in eager if op.layer == 0 and op.block is Block.ATTN_CORE]
    assert [op.kind for op in core] == [OpKind.MATMUL, OpKind.ELEMENTWISE, OpKind.ELEMENTWISE,
                                        OpKind.SOFTMAX, OpKind.ELEMENTWISE, OpKind.MATMUL]
    for op in core[1:3]:
        assert op.bytes_read == op.bytes_written == scores * 4   # fp32, one pass
    gelu = [op for op in eager if op.layer == 0 and op.name.split(".")[-1].startswith("gelu")]
    assert len(gelu) == 8
    assert len(eager) - len(plain) == BASE.layers * (2 + 7)
    # the model's FLOPs (its matmuls) do not change
    assert sum(op.flops for op in eager if op.kind is OpKind.MATMUL) == \
        sum(op.flops for op in plain if op.kind is OpKind.MATMUL)


def test_fused_attention_absorbs_the_scale_and_mask():
    """Under a fused kernel no s x s tensor exists: the two kernels fold into it."""
    graph, _ = _ops(EAGER)
    fused = fuse_attention(graph)
    names = fused.names()
    assert not any("attn_scale" in n or "attn_mask" in n for n in names)
    assert sum(fused.op(n).kind is OpKind.ATTENTION for n in names) == BASE.layers


def test_the_eager_model_is_slower_materialized_and_the_same_fused():
    """Materialized, the extra passes over the scores and the GELU chain cost time; the fused
    attention's bytes are the same (its vector work is a kernel fit's own on an A100)."""
    kw = dict(micro_batch=2, precision="fp32", optimizer="sgd")
    slow = simulate(EAGER, "a100-sxm4-80gb", attention="materialized", **kw).step_time_s
    fast = simulate(BASE, "a100-sxm4-80gb", attention="materialized", **kw).step_time_s
    assert slow > fast
    only_attention = dataclasses.replace(BASE, hf_eager=True)
    kw["precision"] = "bf16"
    assert simulate(only_attention, "a100-sxm4-80gb", **kw).step_time_s == pytest.approx(
        simulate(BASE, "a100-sxm4-80gb", **kw).step_time_s, rel=1e-9)


@pytest.mark.parametrize("value", [0, 2, 7, True])
def test_gelu_kernels_is_1_or_8(value):
    with pytest.raises(WorkloadError, match="gelu_kernels"):
        dataclasses.replace(BASE, gelu_kernels=value)


def test_a_workload_toml_can_say_so(tmp_path):
    """hf_eager and gelu_kernels are [transformer] keys of a workload TOML too: the model it
    loads prices the eager kernels (more elementwise ops than the plain file's); a bad value is
    one WorkloadError naming the file and the key."""
    from workloads.zoo import get_workload

    text = "[transformer]\nlayers = 2\nhidden = 256\nheads = 4\nvocab = 1000\nseq_len = 128\n"
    plain, eager, bad = (tmp_path / "plain.toml", tmp_path / "eager.toml", tmp_path / "bad.toml")
    plain.write_text(text)
    eager.write_text(text + "hf_eager = true\ngelu_kernels = 8\n")
    bad.write_text(text + "hf_eager = 1\n")
    work = get_workload(str(eager))
    assert work.hf_eager is True and work.gelu_kernels == 8
    kinds = [simulate(str(path), "a100-sxm4-40gb").lowered.kind for path in (plain, eager)]
    assert ((kinds[1] == OpKind.ELEMENTWISE).sum()
            > (kinds[0] == OpKind.ELEMENTWISE).sum())
    with pytest.raises(WorkloadError, match="hf_eager"):
        get_workload(str(bad))


def test_mask_kernel_is_one_kernel_over_the_scores():
    """``mask_kernel`` (Megatron-LM's softmax outside 16 bits: the mask a masked_fill of its
    own, the scale in the score GEMM): one elementwise kernel of batch x heads x s x s per
    layer before the softmax, no scale kernel; off by default; a fused kernel absorbs it."""
    masked = dataclasses.replace(BASE, mask_kernel=True)
    _, plain = _ops(BASE)
    graph, ops = _ops(masked)
    assert BASE.mask_kernel is False
    core = [op for op in ops if op.layer == 0 and op.block is Block.ATTN_CORE]
    assert [op.kind for op in core] == [OpKind.MATMUL, OpKind.ELEMENTWISE, OpKind.SOFTMAX,
                                        OpKind.ELEMENTWISE, OpKind.MATMUL]
    assert core[1].name.endswith("attn_mask")
    assert core[1].bytes_read == core[1].bytes_written == 2 * 4 * 128 * 128 * 4
    assert len(ops) - len(plain) == BASE.layers
    assert not any("attn_mask" in n for n in fuse_attention(graph).names())
