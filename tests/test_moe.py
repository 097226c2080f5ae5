"""Mixture of experts (workloads/moe.py) and expert parallelism (simulator/parallel/expert.py).

Parameter counts are the closed forms of the released configs, equal to the published totals
where these are exact (Mixtral 8x7B: 46,702,792,704, the count transformers gives for its
config.json, tests/data/hf_configs/README.md) and to the rounded figures of the papers and
model cards to the digits they give. A step's model FLOPs are the closed form: 6 x tokens x
the active matmul parameters plus the attention core, exactly.
"""
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import PlanError, WorkloadError, simulate
from simulator.cli import main
from simulator.cost.collectives import Collective, cluster_time_s
from simulator.explore.capacity import _plans
from simulator.graph.collective import Axis
from simulator.graph.op import DType, OpKind, Role
from workloads.moe import MoE, Router
from workloads.zoo import get_workload

PRESETS = {  # name: (parameters, active parameters, published rounded figures (billions))
    "mixtral-8x7b": (46_702_792_704, 12_879_925_248, (46.7, 12.9)),
    "mixtral-8x22b": (140_620_634_112, 39_152_031_744, (141, 39)),
    "deepseek-v3": (671_026_419_200, 37_552_297_472, (671, None)),
    "qwen2-moe": (14_315_784_192, 2_689_173_504, (14.3, 2.7)),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameters_are_the_published_ones(name):
    work = get_workload(name)
    total, active, (total_b, active_b) = PRESETS[name]
    assert (work.num_params(), work.active_params()) == (total, active)
    digits = len(str(total_b).split(".")[1]) if "." in str(total_b) else 0
    assert round(total / 1e9, digits) == total_b
    if active_b is not None:
        digits = len(str(active_b).split(".")[1]) if "." in str(active_b) else 0
        assert round(active / 1e9, digits) == active_b


def test_deepseek_v3_active_parameters_without_the_input_embedding_are_37b():
    """DeepSeek-V3's "37B activated" (arXiv:2412.19437, abstract) leaves out the embedding
    lookup (129,280 x 7,168), which computes nothing. Its MTP module adds one MoE layer, the
    projection 2h -> h and three norms: 11,610,068,224 (the model card's "685B" total with
    the MTP module's own copies of embedding and head counts 684.5B this way: not asserted)."""
    work = get_workload("deepseek-v3")
    assert round((work.active_params() - 129_280 * 7_168) / 1e9) == 37
    with_mtp = replace(work, mtp=1)
    assert with_mtp.num_params() - work.num_params() == 11_610_068_224


@pytest.mark.parametrize("name, layers", [("mixtral-8x7b", 2), ("deepseek-v3", 5),
                                          ("qwen2-moe", 2)])
def test_the_graph_owns_the_counted_parameters(name, layers):
    work = get_workload(name).with_layers(layers)
    for model in (work, replace(work, mtp=1)):
        assert model.forward_graph(1, DType.BF16).params() == model.num_params()


def matmul_active(work) -> int:
    """Parameters each token multiplies (closed form): the active ones less the input
    embedding lookup, the norms' gains, the biases and the router's score bias (no matmul),
    plus the output head once more for a multi-token prediction module (it shares it)."""
    h, moe, mla = work.hidden, work.moe, work.mla
    biases = (work.layers + work.mtp) * 3 * work.q_dim if work.qkv_bias else 0
    norms = (2 * (work.layers + work.mtp) + 1) * h + 3 * h * work.mtp
    if mla is not None:
        norms += (work.layers + work.mtp) * (mla.kv_lora_rank + (mla.q_lora_rank or 0))
    bias = (work.layers + work.mtp - moe.first_dense_layers) * moe.experts \
        if moe is not None and moe.router_bias else 0
    return work.active_params() - work.vocab * h - norms - bias - biases + \
        work.mtp * work.vocab * h


def attention_flops(work, tokens_per_sample: int, samples: int) -> float:
    """Forward FLOPs of the fused causal attention core, counted half (MFU's convention):
    QK^T and AV of every head and layer."""
    s = tokens_per_sample
    if work.mla is not None:
        d_qk, d_v = work.mla.qk_head_dim, work.mla.v_head_dim
    else:
        d_qk = d_v = work.head_dim
    per_layer = 2 * work.heads * s * s * (d_qk + d_v)
    return 0.5 * per_layer * (work.layers + work.mtp) * samples


@pytest.mark.parametrize("name, layers, mtp", [("mixtral-8x7b", 2, 0), ("deepseek-v3", 4, 0),
                                               ("deepseek-v3", 4, 1), ("qwen2-moe", 3, 0)])
def test_step_flops_are_six_times_active_parameters_plus_attention(name, layers, mtp):
    work = replace(get_workload(name).with_layers(layers), seq_len=512, mtp=mtp)
    r = simulate(work, "h100", micro_batch=2, precision="bf16", attention="fused")
    tokens = 2 * 512
    assert r.flops_per_step == 6 * tokens * matmul_active(work) + \
        3 * attention_flops(work, 512, 2)


def test_expert_parallel_flops_equal_the_closed_form_on_many_devices():
    work = replace(get_workload("mixtral-8x7b").with_layers(2), seq_len=1024)
    expected = 6 * 64 * 1024 * matmul_active(work) + 3 * attention_flops(work, 1024, 64)
    for plan in (dict(ep=8), dict(ep=8, tp=2), dict(ep=4, pp=2), dict(ep=2, zero=1)):
        r = simulate(work, "h100", num_devices=16, micro_batch=1, global_batch=64,
                     precision="bf16", attention="fused", **plan)
        assert r.flops_per_step == pytest.approx(expected, rel=1e-12), plan


def test_each_expert_rank_holds_experts_over_ep_and_exchanges_its_token_copies():
    work = replace(get_workload("mixtral-8x7b").with_layers(2), seq_len=1024)
    work = replace(work, moe=replace(work.moe, imbalance=1.0))   # a balanced router
    one = simulate(work, "h100", num_devices=16, micro_batch=1, precision="bf16")
    r = simulate(work, "h100", num_devices=16, micro_batch=1, precision="bf16", ep=8)
    experts = 2 * 8 * 3 * 4096 * 14336   # 2 layers of 8 SwiGLU experts
    assert one.parallel["params_per_device"] - r.parallel["params_per_device"] == \
        experts - experts // 8
    low = r.lowered
    a2a = np.flatnonzero((low.kind == OpKind.COLLECTIVE) & (low.axis == int(Axis.EXPERT)))
    # forward dispatch and combine of each layer, and their adjoints in the backward
    assert len(a2a) == 2 * 2 * 2
    slots_bytes = 1024 * 2 * 4096 * 2     # tokens x top_k x hidden x bf16
    # the busiest rank receives its expected share of a balanced router's random spread
    from simulator.parallel.expert import sampling_load
    load = sampling_load(1024 * 2, 8, 8, 2)
    assert set(low.bytes_read[a2a]) == {round(slots_bytes * load)}
    assert set(low.group[a2a]) == {8} and set(low.local[a2a]) == {8}   # one node's NVLink
    grouped = [i for i, fn in enumerate(low.fn) if fn == "grouped_linear"]
    assert set(low.batch[grouped]) == {1}   # 8 experts over 8 ranks
    assert r.step_time_s < one.step_time_s   # a 46.7B model's states: less to reduce


def test_expert_gradients_reduce_over_their_expert_data_parallel_group():
    """ep = 8 on 2 nodes of 8: the ranks holding the same experts are one per node (tp x cp
    x ep = 8 apart), so each layer's expert gradients reduce over a group of 2 with 1 member
    per node, the other parameters over all 16 replicas; the bytes add up to the layer's."""
    work = replace(get_workload("mixtral-8x7b").with_layers(2), seq_len=1024)
    for zero, fns in ((0, {"all_reduce"}), (1, {"reduce_scatter", "all_gather"})):
        r = simulate(work, "h100", num_devices=16, micro_batch=1, precision="bf16", ep=8,
                     zero=zero)
        low = r.lowered
        names = {n: i for i, n in enumerate(low.names)}
        experts = [n for n in names if n.endswith(":experts")]
        assert {n.split(":")[0].removeprefix("dp_") for n in experts} == fns
        assert len(experts) == 2 * len(fns)   # one per MoE layer and collective
        expert_grads = 3 * 4096 * 14336 * 2   # a layer's one expert per rank, bf16
        for name in experts:
            i, dense = names[name], names[name.removesuffix(":experts")]
            assert (low.group[i], low.local[i], low.group[dense]) == (2, 1, 16)
            if name.startswith("dp_all_reduce") or name.startswith("dp_reduce_scatter"):
                assert low.bytes_read[i] == expert_grads


def test_zero_shards_the_experts_over_their_expert_data_parallel_group():
    """ZeRO-1 on 16 devices: with ep = 8 each expert's optimizer states are spread over the 2
    ranks holding it, so every device holds as many optimizer-state bytes as without ep (each
    expert over 16 devices either way), and 1/8 of the experts' weights and gradients."""
    work = replace(get_workload("mixtral-8x7b").with_layers(2), seq_len=1024)
    one, eight = (simulate(work, "h100", num_devices=16, micro_batch=1, precision="bf16",
                           ep=ep, zero=1).memory_breakdown for ep in (1, 8))
    assert eight["optimizer_states"] == pytest.approx(one["optimizer_states"], rel=1e-3)
    experts = 2 * 8 * 3 * 4096 * 14336
    assert one["weights"] - eight["weights"] == pytest.approx(2 * experts * 7 / 8)


def test_zero_updates_the_experts_over_their_expert_data_parallel_group():
    """The update's share follows the states' (Megatron-Core's distributed optimizer splits
    each buffer over its own group, the experts' the expert-data-parallel one): ZeRO-1 on 16
    devices, each rank updates half an expert a layer with ep = 8 (1 expert over 2 ranks) as
    with ep = 1 (8 experts over 16), so the update's elements and bytes are ep's own."""
    work = replace(get_workload("mixtral-8x7b").with_layers(2), seq_len=1024)
    updates = {}
    for ep in (1, 8):
        low = simulate(work, "h100", num_devices=16, micro_batch=1, precision="bf16", ep=ep,
                       zero=1).lowered
        rows = [i for i, name in enumerate(low.names) if name.startswith("optimizer:L")]
        assert rows
        updates[ep] = (sum(int(low.bytes_read[i]) for i in rows),
                       sum(int(low.bytes_written[i]) for i in rows))
    for one, eight in zip(updates[1], updates[8]):
        assert eight == pytest.approx(one, rel=1e-6)


def test_all_to_all_across_nodes_is_priced_on_both_networks():
    """ep = 16 of 8-GPU nodes: 7 peers over NVLink, 8 over InfiniBand, pairwise
    (simulator.cost.collectives.hierarchical_time_s)."""
    work = replace(get_workload("mixtral-8x7b").with_layers(1), seq_len=1024)
    # padded to capacity: every rank exchanges exactly its copies (no sampling imbalance)
    work = replace(work, moe=replace(work.moe, experts=16, capacity_factor=1.0,
                                     pad_to_capacity=True))
    r = simulate(work, "h100", num_devices=16, micro_batch=1, precision="bf16", ep=16)
    low = r.lowered
    i = int(np.flatnonzero((low.kind == OpKind.COLLECTIVE) & (low.axis == int(Axis.EXPERT)))[0])
    from simulator.api import resolve_hardware
    _, cluster, _ = resolve_hardware("h100", 16)
    nbytes = 1024 * 2 * 4096 * 2
    assert (low.group[i], low.local[i]) == (16, 8)
    expected = cluster_time_s(Collective.ALL_TO_ALL, nbytes, 16, cluster, devices_per_node=8)
    assert r.times["time_s"][i] == pytest.approx(expected)
    inside = cluster_time_s(Collective.ALL_TO_ALL, nbytes, 8, cluster, devices_per_node=8)
    assert expected > inside


def _imbalanced_runs(work, **plan):
    moes = {"balanced": replace(work.moe, imbalance=1.0),
            "skewed": replace(work.moe, imbalance=1.5),
            "capped": replace(work.moe, imbalance=1.5, capacity_factor=1.0,
                              pad_to_capacity=True),
            # balanced and padded to capacity: no host synchronisation (tests/test_moe_sync.py)
            "padded": replace(work.moe, imbalance=1.0, capacity_factor=1.0,
                              pad_to_capacity=True)}
    return {key: simulate(replace(work, moe=moe), "h100", micro_batch=1, precision="bf16",
                          **plan) for key, moe in moes.items()}


def test_imbalance_changes_nothing_on_one_device_running_every_expert():
    """ep = 1: one grouped GEMM over all the experts does the same work however the tokens
    spread over them."""
    work = replace(get_workload("mixtral-8x7b").with_layers(2), seq_len=1024)
    runs = _imbalanced_runs(work)
    assert runs["skewed"].step_time_s == runs["balanced"].step_time_s
    low = runs["skewed"].lowered
    grouped = np.array([fn == "grouped_linear" for fn in low.fn])
    assert set(low.load[grouped]) == {1000}


def test_imbalance_slows_the_experts_not_the_flops_and_capacity_caps_it():
    """ep > 1: the rank holding the busiest experts paces the step."""
    work = replace(get_workload("mixtral-8x7b").with_layers(2), seq_len=1024)
    runs = _imbalanced_runs(work, num_devices=8, ep=8)
    assert runs["skewed"].flops_per_step == runs["balanced"].flops_per_step
    assert runs["skewed"].step_time_s > runs["balanced"].step_time_s
    assert runs["capped"].step_time_s == pytest.approx(runs["padded"].step_time_s)
    low = runs["skewed"].lowered
    grouped = np.array([fn == "grouped_linear" for fn in low.fn])
    assert set(low.load[grouped]) == {1500}
    # the grouped GEMMs' time is 1.5 x their balanced time (the compute-bound part)
    t = {k: r.times["compute_s"][grouped].sum() for k, r in runs.items()}
    assert t["skewed"] == pytest.approx(1.5 * t["padded"], rel=1e-9)


@given(experts=st.sampled_from([4, 8, 16, 64]), top_k=st.integers(1, 4),
       shared=st.integers(0, 2), gated=st.booleans())
@settings(max_examples=25, deadline=None)
def test_any_small_moe_counts_its_parameters_in_the_graph(experts, top_k, shared, gated):
    from workloads.transformer import Ffn, Norm, TransformerConfig
    top_k = min(top_k, experts)
    work = TransformerConfig("tiny-moe", 2, 64, 4, vocab=100, seq_len=16, ffn_hidden=96,
                             ffn=Ffn.SWIGLU if gated else Ffn.GELU, norm=Norm.RMSNORM,
                             bias=False, learned_positions=False, tied_embeddings=False,
                             dropout=False,
                             moe=MoE(experts=experts, top_k=top_k, shared_experts=shared,
                                     expert_ffn_hidden=32, first_dense_layers=1))
    graph = work.forward_graph(2)
    assert graph.params() == work.num_params()
    per = (3 if gated else 2) * 64 * 32
    assert work.num_params() - work.active_params() == (experts - top_k) * per
    forward = sum(op.model_flops for op in graph.ops())
    attention = 2 * (2 * 2 * 4 * 16 * 16 * 16) * 2   # 2 layers' QK^T and AV, counted whole
    assert forward == 2 * 2 * 16 * matmul_active(work) + attention


def test_roles_mark_the_router_experts_dispatch_and_combine():
    graph = get_workload("qwen2-moe").with_layers(1).forward_graph(1)
    roles = {graph.op(n).role for n in graph.names()}
    assert {Role.ROUTER, Role.EXPERT_COLUMN, Role.EXPERT_ROW, Role.EXPERT_DISPATCH,
            Role.EXPERT_COMBINE} <= roles


@pytest.mark.parametrize("args, message", [
    (["mixtral-8x7b", "--num-devices", "16", "--ep", "3"], "ep = 3 must divide the replicas"),
    (["mixtral-8x7b", "--num-devices", "32", "--ep", "16"], "ep = 16 must divide experts = 8"),
    (["llama2-7b", "--num-devices", "8", "--ep", "2"], "llama2-7b has none"),
    (["mixtral-8x7b", "--num-devices", "16", "--tp", "2", "--ep", "16"],
     "ep = 16 must divide the replicas dp x cp = 8"),
])
def test_a_plan_that_cannot_run_is_one_line(args, message, capsys):
    assert main(["predict", *args, "--device", "h100", "--micro-batch", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_bad_moe_fields_are_one_line(tmp_path, capsys):
    for table, message in (("experts = 8\ntop_k = 9", "top_k = 9 must be at most experts"),
                           ("experts = 8\ntop_k = 2\nrouter = 'sigmod'", "choose 'softmax'"),
                           ("experts = 8\ntop_k = 2\nimbalance = 0.5", "imbalance = 0.5"),
                           ("top_k = 2", "experts is missing"),
                           ("experts = 8\ntop_k = 2\nlayers = 3", "unknown key 'layers'")):
        path = tmp_path / "m.toml"
        path.write_text("[transformer]\nlayers = 2\nhidden = 64\nheads = 4\nvocab = 100\n"
                        f"seq_len = 16\n[moe]\n{table}\n")
        assert main(["predict", str(path), "--device", "h100"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_a_moe_toml_predicts_with_mla_mtp_and_every_split(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text("""[transformer]
name = "tiny"
layers = 4
hidden = 512
heads = 8
vocab = 1024
seq_len = 256
ffn = "swiglu"
norm = "rmsnorm"
bias = false
learned_positions = false
tied_embeddings = false
dropout = false
mtp = 1
[moe]
experts = 8
top_k = 2
shared_experts = 1
expert_ffn_hidden = 256
first_dense_layers = 1
router = "sigmoid"
router_bias = true
[mla]
kv_lora_rank = 64
qk_nope_head_dim = 32
qk_rope_head_dim = 16
v_head_dim = 32
q_lora_rank = 96
""")
    work = get_workload(str(path))
    assert work.moe.router is Router.SIGMOID and work.mla.q_lora_rank == 96
    assert work.forward_graph(1).params() == work.num_params()
    base = simulate(work, "h100", num_devices=16, micro_batch=1, global_batch=32,
                    attention="fused")
    for plan in (dict(ep=8, tp=2, sequence_parallel=True), dict(ep=4, pp=2, zero=1),
                 dict(ep=2, cp=2), dict(ep=8, zero=2)):
        r = simulate(work, "h100", num_devices=16, micro_batch=1, global_batch=32,
                     attention="fused", **plan)
        assert r.flops_per_step == pytest.approx(base.flops_per_step, rel=1e-12), plan
        assert r.step_time_s > 0 and np.isfinite(r.peak_memory_bytes)


def test_pipeline_stages_hold_their_own_dense_layers():
    """DeepSeek-V3's first 3 layers are dense: on 4 stages of 2 layers, the first stage holds
    two, the second one, the last none (its 2 layers are MoE)."""
    from simulator.parallel.rank import _dense_held
    from simulator.plan.parallel import ParallelPlan
    assert [_dense_held(ParallelPlan(pp=4), 8, 3, s) for s in range(4)] == [2, 1, 0, 0]
    interleaved = ParallelPlan(pp=2, schedule="interleaved", virtual_stages=2)
    assert [_dense_held(interleaved, 8, 3, s) for s in range(2)] == [2, 1]


def test_the_planner_searches_expert_parallelism():
    plans = _plans(64, get_workload("mixtral-8x7b"))
    assert {p.get("ep", 1) for p in plans} >= {1, 2, 4, 8}
    assert all(p["dp"] * p.get("cp", 1) % p.get("ep", 1) == 0 for p in plans)
    assert {p.get("ep", 1) for p in _plans(64, get_workload("llama2-7b"))} == {1}


def test_a_sweep_varies_ep(tmp_path):
    out = tmp_path / "sweep.csv"
    assert main(["sweep", "mixtral-8x7b", "--devices", "h100", "--device-counts", "16",
                 "--grid", "ep=1,8", "--grid", "micro_batch=1", "--out", str(out)]) == 0
    text = out.read_text()
    header = text.splitlines()[0].split(",")
    assert "ep" in header
    rows = [dict(zip(header, line.split(","))) for line in text.splitlines()[1:]]
    assert sorted(r["ep"] for r in rows) == ["1", "8"]


def test_moe_fields_are_checked():
    with pytest.raises(WorkloadError, match="top_k = 3 must be at most experts = 2"):
        MoE(experts=2, top_k=3)
    with pytest.raises(WorkloadError, match="capacity_factor"):
        MoE(experts=8, top_k=2, capacity_factor=0)
    # the bias is built only beside a sigmoid router: counted without it, the graph lacked it
    with pytest.raises(WorkloadError, match="router_bias = true needs router = 'sigmoid'"):
        MoE(experts=8, top_k=2, router_bias=True)
    assert MoE(experts=8, top_k=2, router="sigmoid", router_bias=True).router_bias
    with pytest.raises(WorkloadError, match="first_dense_layers = 5 is more than layers"):
        replace(get_workload("mixtral-8x7b").with_layers(4),
                moe=MoE(experts=8, top_k=2, first_dense_layers=5))
    qwen = get_workload("qwen2-moe").with_layers(1)
    odd = replace(qwen, moe=replace(qwen.moe, expert_ffn_hidden=1400))
    with pytest.raises(PlanError, match="tp = 16 must divide the experts' ffn = 1400"):
        simulate(odd, "h100", tp=16, num_devices=16, micro_batch=1)


def test_models_lists_the_experts_and_active_parameters(capsys):
    assert main(["models"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "mixture of 8 experts, 12,879.9M active" in rows["mixtral-8x7b"]
    assert "671,026.4M params" in rows["deepseek-v3"] and "256 experts" in rows["deepseek-v3"]
    assert "experts" not in rows["llama2-7b"]


def test_shared_experts_wait_for_the_combine_unless_they_overlap():
    """Megatron-Core's MoELayer adds the shared experts after the routed ones by default; with
    --moe-shared-expert-overlap (DeepSeek-V3's schedule) they run beside the all-to-alls."""
    from simulator.api import resolve_hardware
    from simulator.parallel.rank import stage_forward
    from simulator.plan.parallel import ParallelPlan
    from simulator.plan.step import Plan
    work = replace(get_workload("qwen2-moe").with_layers(2), seq_len=512)
    _, cluster, _ = resolve_hardware("h100", 8)
    for overlap in (False, True):
        parallel = ParallelPlan(dp=8, ep=4, moe_shared_expert_overlap=overlap)
        _, ranked = stage_forward(work, Plan(micro_batch=1), parallel, 0, cluster)
        combine = {ranked.op(n).layer: ranked.inputs(n)[0] for n in ranked.names()
                   if ranked.op(n).role is Role.EXPERT_COMBINE}
        assert {ranked.op(c).fn for c in combine.values()} == {"all_to_all"}
        shared = [n for n in ranked.names() if ranked.op(n).role is Role.COLUMN
                  and ranked.op(n).layer in combine and ranked.op(n).block.value == "mlp"]
        assert len(shared) == 2 * 2   # gate and up of the shared expert, 2 layers
        waits = [combine[ranked.op(n).layer] in ranked.inputs(n) for n in shared]
        assert all(waits) if not overlap else not any(waits)
        for n in shared:   # the activation stays the linear's first input
            assert ranked.op(ranked.inputs(n)[0]).kind is not OpKind.COLLECTIVE or \
                ranked.op(ranked.inputs(n)[0]).fn != "all_to_all"


def test_deepep_sends_each_token_once_per_node_then_forwards_it_inside():
    """DeepEP's dispatch (--moe-dispatcher deepep): over InfiniBand among the nodes' same-index
    ranks, each token once per node its experts are on (k = 2 choices over 2 nodes: 1.5 on
    average, 2 (1 - 1/2^2)), then inside each node over NVLink every copy to its expert."""
    from simulator.parallel.expert import nodes_per_token
    mixtral = get_workload("mixtral-8x7b")
    assert nodes_per_token(mixtral.moe, 2) == 1.5
    deepseek = get_workload("deepseek-v3")   # 8 choices, at most 4 of 8 nodes
    assert nodes_per_token(deepseek.moe, 8) == pytest.approx(4 * (1 - 0.75 ** 8))
    work = replace(mixtral.with_layers(2), seq_len=1024)
    # padded to capacity: the mean copies exactly (no sampling imbalance)
    work = replace(work, moe=replace(work.moe, experts=16, capacity_factor=1.0,
                                     pad_to_capacity=True))
    copies = 1024 * 2 * 4096 * 2   # tokens x top_k x hidden x bf16
    runs = {}
    for dispatcher in ("alltoall", "deepep"):
        r = simulate(work, "h100", num_devices=16, micro_batch=1, precision="bf16", ep=16,
                     moe_dispatcher=dispatcher)
        low = r.lowered
        a2a = np.flatnonzero((low.kind == OpKind.COLLECTIVE) & (low.axis == int(Axis.EXPERT)))
        runs[dispatcher] = (r, {(int(low.group[i]), int(low.local[i]), int(low.bytes_read[i]))
                                for i in a2a}, r.times["time_s"][a2a].sum())
    assert runs["alltoall"][1] == {(16, 8, copies)}
    assert runs["deepep"][1] == {(2, 1, copies * 3 // 4), (8, 8, copies)}
    assert runs["deepep"][2] < runs["alltoall"][2]
    assert runs["deepep"][0].flops_per_step == runs["alltoall"][0].flops_per_step
    # inside one node DeepEP's dispatch is the one all-to-all over NVLink
    one = simulate(work, "h100", num_devices=8, micro_batch=1, precision="bf16", ep=8,
                   moe_dispatcher="deepep")
    low = one.lowered
    a2a = np.flatnonzero((low.kind == OpKind.COLLECTIVE) & (low.axis == int(Axis.EXPERT)))
    assert {(int(low.group[i]), int(low.local[i])) for i in a2a} == {(8, 8)}


@pytest.mark.parametrize("plan", [dict(pp=2), dict(pp=4, ep=4), dict(pp=2, tp=2, ep=2),
                                  dict(pp=2, schedule="interleaved", virtual_stages=2, ep=8)],
                         ids=["pp2", "pp4-ep4", "pp2-tp2-ep2", "interleaved-ep8"])
def test_deepseek_flops_do_not_depend_on_the_split(plan):
    """DeepSeek-V3's 3 dense layers sit on the first stage and its MTP module on the last:
    the step's model FLOPs are the one-device closed form on any split."""
    work = replace(get_workload("deepseek-v3").with_layers(8), seq_len=512, mtp=1)
    expected = 6 * 16 * 512 * matmul_active(work) + 3 * attention_flops(work, 512, 16)
    r = simulate(work, "h100", num_devices=16, micro_batch=1, global_batch=16,
                 precision="bf16", attention="fused", **plan)
    assert r.flops_per_step == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("plan", [dict(zero=3), dict(zero=1, shard_group=8),
                                  dict(zero=1, sharding="deepspeed")])
def test_expert_parallel_refuses_units_that_mix_experts(plan):
    """ZeRO-3's gathers, hybrid shard groups and DeepSpeed's buckets span experts and dense
    weights alike; only whole-replica, per-layer reductions are split by expert: one line."""
    with pytest.raises(PlanError, match="ep = 8 is modelled with ZeRO 0-2"):
        simulate("mixtral-8x7b", "h100", num_devices=16, micro_batch=1, ep=8, **plan)
