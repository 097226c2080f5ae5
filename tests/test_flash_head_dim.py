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
