"""Memory of states (ZeRO paper) and saved activations (Korthikanti et al. 2022)."""
import pytest
from hypothesis import given, settings, strategies as st

from simulator.training.saved import activation_bytes, activation_bytes_by_layer, saved_tensors
from simulator.graph.op import DType
from simulator.plan.step import Plan
from workloads.presets import TRANSFORMERS
from workloads.transformer import TransformerConfig


def test_mixed_precision_adam_is_16_bytes_per_parameter():
    """Rajbhandari et al. 2020 (ZeRO), sec. 3.1: 2 (fp16 weights) + 2 (fp16 gradients) +
    12 (fp32 master weights, momentum, variance) = 16 bytes per parameter."""
    for precision in ("fp16", "bf16"):
        states = Plan(precision=precision, optimizer="adam").state_bytes_per_param()
        assert states == {"weights": 2, "gradients": 2, "optimizer_states": 12}


def test_other_precisions_and_optimizers():
    assert sum(Plan(precision="fp32", optimizer="adamw").state_bytes_per_param().values()) == 16
    assert sum(Plan(precision="fp32", optimizer="sgd").state_bytes_per_param().values()) == 12
    assert sum(Plan(precision="bf16", optimizer="sgd").state_bytes_per_param().values()) == 12


@pytest.mark.parametrize("dp", [1, 8, 64])
def test_fp32_gradients_match_megatrons_distributed_optimizer_table(dp):
    """Megatron-LM docs, "Distributed Optimizer" (docs/source/api-guide/dist_optimizer.md):
    16-bit parameters with fp32 gradients take 18 bytes per parameter, 6 + 12/d with the
    optimizer states sharded over d data-parallel ranks (ZeRO stage 1)."""
    from simulator.schedule.memory import zero_state_bytes
    per = Plan(precision="bf16", optimizer="adam", fp32_grads=True).state_bytes_per_param()
    assert sum(per.values()) == 18
    sharded = zero_state_bytes(dp * 1000, 1, dp, k=per["optimizer_states"],
                               weight_bytes=per["weights"], grad_bytes=per["gradients"])
    assert sum(sharded.values()) == pytest.approx(dp * 1000 * (6 + 12 / dp))


def _stats(forward, plan, layer):
    return sum(nbytes for (kind, _), (nbytes, at) in saved_tensors(forward, plan).items()
               if kind == "stats" and at == layer)


@pytest.mark.parametrize("name,batch", [("gpt3-175b", 1), ("gpt3-1.3b", 4), ("gpt2-small", 3)])
def test_gpt_layer_activations_equal_korthikanti(name, batch):
    """Korthikanti et al. 2022, eq. (1): a layer keeps sbh(34 + 5as/h) bytes at 16 bits
    without recomputation; 34sbh with selective (sec. 5); 2sbh with full (sec. 4.2.2).
    Exact, besides the norms' fp32 mean/rstd (8 bytes per row each), which the paper drops."""
    c = TRANSFORMERS[name]
    s, b, h, a = c.seq_len, batch, c.hidden, c.heads
    forward = c.forward_graph(b, DType.BF16)
    expected = {"none": s * b * h * 34 + 5 * a * s * s * b, "selective": 34 * s * b * h,
                "full": 2 * s * b * h}
    for recompute, want in expected.items():
        plan = Plan(micro_batch=b, recompute=recompute)
        per_layer = activation_bytes_by_layer(forward, plan)
        for layer in (0, c.layers // 2, c.layers - 1):
            assert per_layer[layer] - _stats(forward, plan, layer) == want, (recompute, layer)
        assert _stats(forward, Plan(micro_batch=b), 0) == 2 * 2 * s * b * 4  # 2 norms, fp32


def test_fp32_activations_double_the_16_bit_ones():
    """Except the loss's softmax, which the eager loss keeps in fp32 either way
    (``training.loss``: 4 bytes per logit)."""
    c = TRANSFORMERS["gpt2-small"]
    plan = Plan(micro_batch=2)
    sixteen = activation_bytes(c.forward_graph(2, DType.BF16), plan)
    thirty_two = activation_bytes(c.forward_graph(2, DType.FP32), plan)
    masks_and_stats = sum(nb for (kind, _), (nb, _) in
                          saved_tensors(c.forward_graph(2, DType.BF16), plan).items()
                          if kind != "out")
    softmax = 4 * 2 * c.seq_len * c.vocab
    assert thirty_two - masks_and_stats - softmax == 2 * (sixteen - masks_and_stats - softmax)


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 4), layers=st.integers(1, 4), heads=st.sampled_from([1, 2, 4]),
       seq=st.integers(2, 64))
def test_recomputation_never_keeps_more(batch, layers, heads, seq):
    c = TransformerConfig("t", layers, 32, heads, vocab=50, seq_len=seq)
    forward = c.forward_graph(batch, DType.BF16)
    none, sel, full = (activation_bytes(forward, Plan(micro_batch=batch, recompute=r))
                       for r in ("none", "selective", "full"))
    assert none >= sel >= full > 0
