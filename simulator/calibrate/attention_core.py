"""The unfused attention core as FlashAttention's appendix timed it, priced by hwsim.

Dao et al. 2022 (FlashAttention, arXiv:2205.14135v2), appendix E.6, timed Megatron-LM's and
PyTorch's attention core alone -- scores, softmax, dropout, context and their gradients -- on
one A100 40GB: fp16, batch 16, 8 heads of 64, no mask (``tests/data/fa1_attention_a100.csv``).
``core_ms`` prices the same core inside a one-layer model of the benchmark's shape: the
kernel-level data ``matmul_memory_efficiency`` is fitted on (``tests/test_efficiency.py``).
"""
from __future__ import annotations

#: The core's ops in the one-layer model (their backward ops end in the same names).
CORE = ("L0.scores", "L0.softmax", "L0.attn_dropout", "L0.context")


def core_ms(device, seq_len: int, dropout: bool) -> dict[str, float]:
    """hwsim's forward and backward milliseconds of the benchmark's attention core."""
    from simulator.api import simulate
    from workloads.transformer import TransformerConfig

    config = TransformerConfig("fa1-bench", 1, 512, 8, vocab=128, seq_len=seq_len,
                               dropout=dropout, style="encoder", bias=False)
    ops = simulate(config, device, micro_batch=16, precision="fp16",
                   attention="materialized").ops
    core = ops[ops.name.str.split(":").str[-1].isin(CORE)]
    forward = core.phase == "forward"
    return {"forward": 1e3 * core.time_s[forward].sum(),
            "backward": 1e3 * core.time_s[~forward].sum()}


__all__ = ["CORE", "core_ms"]
