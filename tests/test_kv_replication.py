"""KV heads fewer than tensor-parallel ranks (issue 22, item 2): each rank holds the KV head its
query heads use, replicated over tp / kv_heads ranks; the replicated weights, their FLOPs and
memory, and the all-reduce of their gradients over the ranks that share them are counted.
Checked against the closed form of a small multi-query model, then PaLM's and StarCoder's
plans, which were refused ("tp = 12 must divide kv_heads = 1")."""
import pytest

from simulator import ParallelPlan, Plan, PlanError, simulate
from simulator.cli import main
from simulator.parallel.rank import build_stage, micro_batches, stage_forward
from workloads.transformer import Ffn, Norm, Residual, TransformerConfig

# h = 64, 8 query heads of d = 16, one KV head, SwiGLU of 256, vocab 128, no biases
MQA = TransformerConfig("mqa", 2, 64, 8, vocab=128, seq_len=32, kv_heads=1, head_size=16,
                        ffn=Ffn.SWIGLU, norm=Norm.RMSNORM, bias=False, dropout=False,
                        learned_positions=False, tied_embeddings=False)
TP, T, H, D, L = 4, 32, 64, 16, 2

# PaLM 540B (Chowdhery et al. 2022, Table 1 and sec. 2): 118 layers, d_model 18432, 48 heads
# of 256, multi-query, SwiGLU of 4 x 18432, parallel layers, no biases, shared embeddings,
# 256k vocabulary, 2048 tokens; 540.35B parameters (Table 1).
PALM = TransformerConfig("palm-540b", 118, 18432, 48, vocab=256000, seq_len=2048, kv_heads=1,
                         head_size=256, ffn_hidden=73728, ffn=Ffn.SWIGLU, norm=Norm.RMSNORM,
                         bias=False, dropout=False, learned_positions=False,
                         residual=Residual.SHARED_NORM)


def rank_forward(work, tp):
    plan, parallel = Plan(), ParallelPlan(tp=tp)
    return stage_forward(work, plan, parallel, 0, None)[1]


def test_each_rank_holds_one_kv_head_and_its_share_of_queries():
    ops = {op.name: op for op in rank_forward(MQA, TP).ops()}
    assert ops["L0.q_proj"].params == H * (8 // TP) * D
    assert ops["L0.k_proj"].params == ops["L0.v_proj"].params == H * D   # the whole KV head
    assert ops["L0.o_proj"].params == (8 // TP) * D * H
    assert dict(ops["L0.k_proj"].extra)["replicas"] == TP
    assert ops["L0.rope_k"].bytes_written == T * D * 2       # on the whole head, not 1/tp


def test_parameters_flops_and_reduction_follow_the_closed_form():
    one = simulate(MQA, "a100", micro_batch=1)
    split = simulate(MQA, "a100", micro_batch=1, tp=TP)
    layer = H * 2 * D + 2 * H * D + 2 * D * H + 3 * H * (256 // TP) + 2 * H
    assert split.parallel["params_per_device"] == L * layer + 2 * (128 // TP) * H + H
    assert split.flops_per_step == one.flops_per_step        # model FLOPs: no replication
    recomputed = one.hardware_flops_per_step - one.flops_per_step   # FlashAttention's
    replicated = 3 * (TP - 1) * 2 * T * H * (2 * D) * L      # k and v on tp ranks, not one
    assert split.hardware_flops_per_step - split.flops_per_step == recomputed + replicated
    reduces = split.ops[split.ops["name"].str.startswith("tp_replica_all_reduce")]
    assert len(reduces) == L and (reduces["phase"] == "communication").all()
    assert (reduces["bytes"] == 2 * (2 * H * D) * 2).all()  # k and v gradients, bf16, r + w


def test_grouped_query_heads_replicate_over_their_group():
    gqa = TransformerConfig("gqa", 1, 128, 8, vocab=64, seq_len=16, kv_heads=2, ffn=Ffn.SWIGLU,
                            bias=False, learned_positions=False)
    ops = {op.name: op for op in rank_forward(gqa, 8).ops()}
    assert ops["L0.k_proj"].n == 16 and dict(ops["L0.k_proj"].extra)["replicas"] == 4
    step = build_stage(rank_forward(gqa, 8), Plan(), ParallelPlan(tp=8), 8)
    groups = [g for name, g in zip(step.names, step.group) if "replica" in name]
    assert groups == [4]


def test_kv_heads_that_split_evenly_are_not_replicated():
    gqa = TransformerConfig("gqa", 1, 128, 8, vocab=64, seq_len=16, kv_heads=4,
                            learned_positions=False)
    ops = list(rank_forward(gqa, 2).ops())
    assert not any("replicas" in dict(op.extra) for op in ops)


def test_palm_540b_on_12_ranks():
    assert PALM.num_params() == 540_356_474_880
    assert micro_batches(PALM, Plan(), ParallelPlan(tp=12), 12) == 1
    ops = {op.name: op for op in rank_forward(PALM.with_layers(1), 12).ops()}
    assert ops["L0.q_proj"].params == 18432 * 4 * 256
    assert ops["L0.k_proj"].params == 18432 * 256
    assert dict(ops["L0.v_proj"].extra)["replicas"] == 12


def test_starcoder_multi_query_on_4_ranks(tmp_path, capsys):
    # StarCoder (Li et al. 2023, Table: 40 layers, hidden 6144, 48 heads, multi-query, 8K
    # context, 49152 vocabulary)
    spec = tmp_path / "starcoder.toml"
    spec.write_text('[transformer]\nlayers = 40\nhidden = 6144\nheads = 48\nkv_heads = 1\n'
                    'vocab = 49152\nseq_len = 8192\n')
    assert main(["predict", str(spec), "--device", "a100", "--num-devices", "4", "--tp", "4",
                 "--micro-batch", "1", "--seq-len", "2048", "--json"]) == 0
    assert '"tp": 4' in capsys.readouterr().out


def test_kv_heads_neither_dividing_nor_multiple_of_tp_are_refused(tmp_path, capsys):
    with pytest.raises(PlanError, match="tp = 3 must divide kv_heads = 2, or be a multiple"):
        micro_batches(TransformerConfig("g", 1, 96, 6, 64, 16, kv_heads=2), Plan(),
                      ParallelPlan(tp=3), 3)
    spec = tmp_path / "gqa.toml"
    spec.write_text('[transformer]\nlayers = 2\nhidden = 768\nheads = 48\nkv_heads = 4\n'
                    'vocab = 1000\nseq_len = 128\n')
    assert main(["predict", str(spec), "--device", "a100", "--num-devices", "6", "--tp",
                 "6"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "tp = 6 must divide kv_heads = 4, or be a multiple" in err
