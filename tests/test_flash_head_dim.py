"""FlashAttention (v1) runs heads of multiples of 8 up to 128 (flash-attention fmha_api.cpp at
4a6eaa9, the version GPT-NeoX vendored), the Triton kernel heads up to 128 in fp16 or bf16
(flash_attn_triton.py): a plan asking either for another is refused. A head narrower than a
kernel's compiled one runs at that one's time."""
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


@pytest.mark.parametrize("head_dim, precision, words", [
    (256, "bf16", "up to 128, not 256"), (136, "fp16", "up to 128, not 136"),
    (64, "fp32", "fp16 and bf16 only, not fp32"), (64, "tf32", "fp16 and bf16 only, not tf32")])
def test_the_triton_kernel_refuses_wide_heads_and_fp32(head_dim, precision, words):
    """flash_attn_triton.py _flash_attn_forward: ``assert d <= 128``, fp16 and bf16 only."""
    with pytest.raises(PlanError, match=f"flash-attn-triton .*{words}"):
        simulate(_model(8 * head_dim, 8), "a100-sxm4-40gb", micro_batch=1, precision=precision,
                 attention_kernel="flash-attn-triton")


@pytest.mark.parametrize("kernel, device", [
    ("flash-attn-1", "a100-sxm4-40gb"), ("flash-attn-2", "a100-sxm4-40gb"),
    ("flash-attn-3", "h100-sxm5-80gb"), ("cudnn", "h100-sxm5-80gb")])
@pytest.mark.parametrize("precision", ["fp32", "tf32"])
def test_every_named_kernel_refuses_fp32(kernel, device, precision):
    """FlashAttention-1/2/3 ``TORCH_CHECK`` fp16/bf16 (fp8 for v3) inputs; Transformer Engine
    disables cuDNN's FusedAttention for an fp32 qkv_dtype (HALF_ONLY_PRECISIONS); the same plan
    in bf16 runs, and ``auto`` (no kernel named) is not refused in fp32."""
    with pytest.raises(PlanError, match=f"^attention_kernel = {kernel} runs fp16 and bf16 only, "
                                        f"not {precision}: choose"):
        simulate(_model(512, 8), device, micro_batch=1, precision=precision,
                 attention_kernel=kernel)
    assert simulate(_model(512, 8), device, micro_batch=1, precision="bf16",
                    attention_kernel=kernel).step_time_s > 0
    assert simulate(_model(512, 8), device, micro_batch=1, precision=precision,
                    attention_kernel="auto").step_time_s > 0
    assert simulate(_model(512, 8), device, micro_batch=1, precision=precision,
                    attention="materialized", attention_kernel=kernel).step_time_s > 0


@pytest.mark.parametrize("head_dim, precision", [(80, "bf16"), (128, "fp16"), (100, "fp8")])
def test_the_triton_kernel_runs_heads_up_to_128_in_16_bits(head_dim, precision):
    check_head_dim("flash-attn-triton", head_dim, precision)
    device = "h100-sxm5-80gb" if precision == "fp8" else "a100-sxm4-40gb"
    assert simulate(_model(8 * head_dim, 8), device, micro_batch=1, precision=precision,
                    attention_kernel="flash-attn-triton").step_time_s > 0


def test_the_refusal_is_one_line_at_the_cli():
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([sys.executable, "-m", "simulator.cli", "predict", "gpt2-small",
                          "--device", "a100-sxm4-40gb", "--precision", "fp32",
                          "--attention-kernel", "flash-attn-triton"],
                         cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "flash-attn-triton" in out.stderr


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
    long as a ``wide`` head's, though it counts narrow / wide of its FLOPs. Its whole
    efficiency is the compiled head's, FlashAttention-2's softmax term h / d too (h = 18.88 on
    the A100): at the head's own d a head of 80 took 9.60e-05 s against 9.36e-05 s, the
    compute time (1 + h/80) / (1 + h/96) = 1.033 longer, though the kernel runs the 96-wide
    tiles. Compute-bound here (memory time under a fifth of the compute), so the narrow head's
    fewer bytes do not show."""
    def attention_s(head):
        ops = simulate(_model(8 * head, 8), "a100-sxm4-80gb", micro_batch=2,
                       attention_kernel=kernel).ops
        return ops[ops.kind == "attention"].time_s.sum()
    assert attention_s(narrow) == pytest.approx(attention_s(wide), rel=1e-9)
