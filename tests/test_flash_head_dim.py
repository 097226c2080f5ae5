"""FlashAttention (v1) runs heads of multiples of 8 up to 128 (flash-attention fmha_api.cpp at
4a6eaa9, the version GPT-NeoX vendored): a plan asking it for another head is refused."""
import pytest

from simulator import simulate
from simulator.cost.attention import check_head_dim
from simulator.errors import PlanError
from workloads.transformer import TransformerConfig


def _model(hidden, heads):
    return TransformerConfig("m", 2, hidden, heads, vocab=1000, seq_len=256)


@pytest.mark.parametrize("head_dim", [8, 64, 80, 128])
def test_supported_heads_run(head_dim):
    check_head_dim("flash-attn-1", head_dim)
    assert simulate(_model(8 * head_dim, 8), "a100-sxm4-40gb", micro_batch=1,
                    attention_kernel="flash-attn-1").step_time_s > 0


@pytest.mark.parametrize("head_dim", [256, 100, 136])
def test_other_heads_are_refused(head_dim):
    with pytest.raises(PlanError, match=f"flash-attn-1 .* up to 128, not {head_dim}"):
        simulate(_model(8 * head_dim, 8), "a100-sxm4-40gb", micro_batch=1,
                 attention_kernel="flash-attn-1")


def test_other_kernels_and_materialized_attention_are_not_checked():
    model = _model(2048, 8)   # Pythia-1B's heads: 256
    for fields in ({"attention_kernel": "flash-attn-2"},
                   {"attention_kernel": "flash-attn-1", "attention": "materialized"}):
        assert simulate(model, "a100-sxm4-40gb", micro_batch=1, **fields).step_time_s > 0


@pytest.mark.parametrize("kernel, heads, padded", [
    ("flash-attn-1", [8, 32, 33, 64, 80, 96, 128], [32, 32, 64, 64, 128, 128, 128]),
    ("flash-attn-2", [64, 80, 112, 160, 256], [64, 96, 128, 192, 256]),
    ("flash-attn-triton", [16, 80, 112, 128], [16, 128, 128, 128]),
    ("cudnn", [80], [80])])
def test_compiled_head_dimensions(kernel, heads, padded):
    """fmha_api.cpp (v1), static_switch.h HEADDIM_SWITCH (v2), BLOCK_HEADDIM (Triton)."""
    from simulator.cost.attention import AttentionKernel, padded_head
    assert list(padded_head(AttentionKernel(kernel), heads)) == padded


@pytest.mark.parametrize("kernel, narrow, wide", [("flash-attn-1", 80, 128),
                                                  ("flash-attn-2", 80, 96)])
def test_a_padded_head_takes_the_compiled_heads_time(kernel, narrow, wide):
    """Same batch, heads and sequence: the attention of a head padded to ``wide`` runs as
    long as a ``wide`` head's, though it counts narrow / wide of its FLOPs."""
    def attention_s(head):
        ops = simulate(_model(8 * head, 8), "a100-sxm4-80gb", micro_batch=2,
                       attention_kernel=kernel).ops
        return ops[ops.kind == "attention"].time_s.sum()
    assert attention_s(narrow) == pytest.approx(attention_s(wide), rel=1e-9)
