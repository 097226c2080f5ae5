"""fp8 casts of a mixture of experts' grouped expert GEMMs (simulator.training.fp8): Transformer
Engine's GroupedLinear quantizes each expert's input and output gradient and caches its fp8
weights per step, as its Linear does (transformer_engine/pytorch/module/grouped_linear.py)."""
from __future__ import annotations

from dataclasses import replace

from simulator import simulate
from workloads.zoo import get_workload

SEQ, TOP_K, HIDDEN, FFN = 1024, 2, 4096, 14336


def _ops(precision):
    work = replace(get_workload("mixtral-8x7b").with_layers(1), seq_len=SEQ)
    r = simulate(work, "h100", num_devices=8, micro_batch=1, precision=precision, ep=8)
    return r, {name: nbytes for name, nbytes in zip(r.ops.name, r.ops.bytes)}


def test_grouped_gemm_casts_in_closed_form():
    """One expert per rank (ep = 8 of 8 experts) receives SEQ x TOP_K copies on average (a
    balanced router): each cast reads 2 bytes and writes two fp8 copies per element."""
    _, ops = _ops("fp8")
    copies = SEQ * TOP_K
    assert ops["cast_transpose:L0.expert_gate_proj"] == copies * HIDDEN * 4   # gate and up
    assert "cast_transpose:L0.expert_up_proj" not in ops                      # share one
    assert ops["cast_transpose:L0.expert_down_proj"] == copies * FFN * 4
    assert ops["cast_transpose:grad:L0.expert_down_proj"] == copies * HIDDEN * 4
    assert ops["cast_transpose:grad:L0.expert_up_proj"] == copies * FFN * 4
    for proj in ("gate", "up", "down"):
        assert ops[f"cast_transpose:weight:L0.expert_{proj}_proj"] == HIDDEN * FFN * 4


def test_no_casts_in_bf16_and_fp8_casts_cost_time():
    bf16, ops = _ops("bf16")
    assert not any(name.startswith("cast_transpose") for name in ops)
    fp8, ops = _ops("fp8")
    casts = fp8.ops[fp8.ops.name.str.contains("cast_transpose") &
                    fp8.ops.name.str.contains("expert")]
    assert len(casts) == 8 and (casts.time_s > 0).all()
