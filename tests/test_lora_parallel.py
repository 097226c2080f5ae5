"""LoRA under tensor, sequence, context and pipeline parallelism (issues 22 and 25): the frozen
base splits as full training's; each adapter's A (k -> r) and B (r -> n) split as NeMo's
``ParallelLinearAdapter`` splits them (NVIDIA/NeMo r2.0.0rc1, 579983f,
nemo/collections/nlp/modules/common/megatron/adapters/parallel_adapters.py, with
``gather_output=False`` from nemo/collections/nlp/parts/peft_config.py): beside a
column-parallel linear A is a ColumnParallelLinear(k, r, gather_output=True) and B a
ColumnParallelLinear(r, n); beside a row-parallel one A is a RowParallelLinear(k, r,
input_is_parallel=True) and B a ColumnParallelLinear(r, n) whose output is gathered (with
sequence parallelism then split to a sequence shard, NeMo's default; or, with
``a2a_experimental``, ``ParallelPlan.lora_a2a``, all-to-all'ed to it)."""
from dataclasses import replace

import pytest

from simulator import simulate
from simulator.cli import main
from simulator.graph.op import OpKind, Phase, Role
from simulator.parallel.rank import stage_forward
from simulator.plan.parallel import ParallelPlan
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from simulator.training.finetune import ADAPTER_A, ADAPTER_B
from workloads.zoo import MODELS

T, H, F, V, R, LAYERS = 512, 4096, 11008, 32000, 16, 2
LLAMA = replace(MODELS["llama2-7b"].with_layers(LAYERS), seq_len=T)
EVERY = "qkv,o,mlp"
#: One layer's adapters on q, k, v, o (h -> r -> h), gate, up (h -> r -> f), down (f -> r -> h).
LAYER_ADAPTERS = 4 * (H * R + R * H) + 2 * (H * R + R * F) + (F * R + R * H)
ADAPTERS = LAYERS * LAYER_ADAPTERS
PLAN = {"micro_batch": 1, "finetune": "lora", "lora_rank": R, "lora_targets": EVERY}


def _rank(tp=2, sp=False, **parallel):
    plan = Plan(**PLAN)
    return stage_forward(LLAMA, plan, ParallelPlan(tp=tp, sequence_parallel=sp, **parallel), 0,
                         None)[1]


def test_adapter_matrices_split_as_nemos_parallel_linear_adapter():
    """Per rank (tp = 2): beside q, k, v, gate and up (column-parallel) A keeps r / tp of its
    outputs and B n / tp; beside o and down (row-parallel) A keeps k / tp of its inputs and B
    h / tp of its outputs. Their parameters on a rank times tp are the unsplit adapters'."""
    tp, forward = 2, _rank()
    shapes = {}
    for op in forward.ops():
        facts = dict(op.extra)
        for fact in (ADAPTER_A, ADAPTER_B):
            if fact in facts and op.layer == 0:
                shapes[(op.name.split(".")[1], fact)] = (op.k, op.n, op.params, op.m)
    for base, n in (("q_proj", H), ("k_proj", H), ("v_proj", H), ("gate_proj", F),
                    ("up_proj", F)):
        assert shapes[(base, ADAPTER_A)] == (H, R // tp, H * R // tp, T)
        assert shapes[(base, ADAPTER_B)] == (R, n // tp, R * n // tp, T)
    for base, k in (("o_proj", H), ("fc2", F)):
        assert shapes[(base, ADAPTER_A)] == (k // tp, R, k * R // tp, T)
        assert shapes[(base, ADAPTER_B)] == (R, H // tp, R * H // tp, T)
    per_rank = sum(op.params for op in forward.ops() if not op.frozen and op.params)
    assert per_rank * tp == ADAPTERS


@pytest.fixture(scope="module")
def runs():
    def run(**parallel):
        split = ParallelPlan(**parallel)
        return simulate(LLAMA, "a100", parallel=split, num_devices=split.num_devices,
                        global_batch=4, **PLAN)
    return {"tp1": run(dp=1), "tp2": run(tp=2), "sp": run(tp=2, sequence_parallel=True),
            "pp2": run(pp=2), "cp2": run(tp=2, cp=2), "tp2pp2": run(tp=2, pp=2),
            "full_tp2": simulate(LLAMA, "a100", parallel=ParallelPlan(tp=2), num_devices=2,
                                 global_batch=4, micro_batch=1)}


def test_memory_states_per_rank(runs):
    """Gradients (bf16) and optimizer states (fp32 master, m, v) of the adapters alone, 1/tp of
    them on each rank; the frozen base's weights as full training's under the same split, the
    adapters' beside them."""
    for key, tp in (("tp2", 2), ("sp", 2), ("cp2", 2)):
        memory = runs[key].memory_breakdown
        assert memory["gradients"] == ADAPTERS // tp * 2, key
        assert memory["optimizer_states"] == ADAPTERS // tp * 12, key
    assert runs["tp2"].memory_breakdown["weights"] == \
        runs["full_tp2"].memory_breakdown["weights"] + ADAPTERS // 2 * 2
    # pipeline stages: each holds its layers' adapters (one layer each here)
    assert runs["pp2"].memory_breakdown["gradients"] == LAYER_ADAPTERS * 2


def test_step_flops_are_the_base_and_adapters_whatever_the_split(runs):
    """The frozen base's forward and data gradients plus the adapters' 6 x params x tokens,
    less the first layer's q, k, v, gate... data gradients autograd skips (the closed form of
    tests/test_finetune.py), the same under every split: tp, sequence parallel, cp, pp."""
    base = runs["tp1"].flops_per_step
    for key in ("tp2", "sp", "pp2", "cp2", "tp2pp2"):
        assert runs[key].flops_per_step == pytest.approx(base, rel=1e-12), key
    full = simulate(LLAMA, "a100", global_batch=4, micro_batch=1).flops_per_step
    linears = LAYERS * (4 * H * H + 3 * H * F) + H * V
    first_layer = 3 * H * H + 3 * H * R   # q, k, v and their A read the embedding's output
    tokens = 4 * T
    assert base == full - 2 * linears * tokens - 2 * first_layer * tokens \
        + 6 * ADAPTERS * tokens


def _collectives(forward, layer=0):
    ops = [op for op in forward.ops() if op.layer == layer and op.kind is OpKind.COLLECTIVE
           and dict(op.extra).get("lora")]
    return sorted((op.fn, op.bytes_read, op.bytes_written) for op in ops)


def test_adapter_collectives_per_layer():
    """Per layer and rank (tp = 2, bf16, T tokens): each adapted input's own f (identity, or
    with sequence parallelism the all-gather of its shard: NeMo's adapter gathers the
    layernorm output itself under TP communication overlap), A's r-wide outputs gathered
    (column) or all-reduced (row), each B's identity (its backward all-reduces the r-wide
    gradient), and beside o and down B's output gathered (with sequence parallelism then
    split to the rank's tokens, no traffic: NeMo's default), or with lora_a2a all-to-all'ed
    to the shard."""
    tp, r_bytes, h_bytes = 2, T * R * 2, T * H * 2
    column, row = 5, 2   # q, k, v, gate, up; o, down
    plain = ([("all_gather", r_bytes // tp, r_bytes)] * column
             + [("all_gather", h_bytes // tp, h_bytes)] * row
             + [("all_reduce", r_bytes, r_bytes)] * row
             + [("identity", 0, 0)] * (2 + column + row))
    assert _collectives(_rank()) == sorted(plain)
    shards = ([("all_gather", r_bytes // tp, r_bytes)] * column
              + [("all_gather", h_bytes // tp, h_bytes)] * 2   # the two norms' outputs
              + [("all_reduce", r_bytes, r_bytes)] * row
              + [("identity", 0, 0)] * (column + row))
    gathered = [("all_gather", h_bytes // tp, h_bytes), ("split", 0, 0)] * row
    assert _collectives(_rank(sp=True)) == sorted(shards + gathered)
    a2a = [("all_to_all", h_bytes // tp, h_bytes // tp)] * row
    assert _collectives(_rank(sp=True, lora_a2a=True)) == sorted(shards + a2a)


def test_adapter_collectives_backward():
    """The adapter's all-gather of a sequence shard reduce-scatters its gradient; the gathers
    of A's output (Megatron's gather_from_tensor_model_parallel_region) slice it, no kernel;
    B's identity all-reduces the r-wide gradient; the all-to-all answers with one."""
    plan = Plan(**PLAN)
    step = training_graph(_rank(sp=True), plan)
    backward = {n: step.op(n) for n in step.names() if step.op(n).phase is Phase.BACKWARD
                and step.op(n).kind is OpKind.COLLECTIVE and step.op(n).layer == 1}
    assert backward["grad:L1.rmsnorm.lora_tp_all_gather"].fn == "reduce_scatter"
    assert "grad:L1.q_proj.lora_a.tp_all_gather" not in backward
    assert backward["grad:L1.q_proj.lora_b.tp_identity"].fn == "all_reduce"
    assert backward["grad:L1.o_proj.lora_b.tp_split"].fn == "all_gather"
    a2a = training_graph(_rank(sp=True, lora_a2a=True), plan)
    assert a2a.op("grad:L1.o_proj.lora_b.tp_all_to_all").fn == "all_to_all"


@pytest.mark.parametrize("tp", [2, 4])
def test_row_adapter_exit_bytes_both_paths(tp):
    """The bytes a row-parallel adapter's exit moves per layer, forward and backward, in
    closed form (bf16, T tokens, out features H beside o, H beside down). NeMo's default
    (parallel_adapters.py at 579983f: B's gather_output all-gathers the m x n output, whose
    backward is a slice; scatter_to_sequence_parallel_region slices it forward and
    all-gathers the m / tp x n gradient backward): an all-gather of T x H x 2 bytes each
    way. a2a_experimental: one all-to-all of T x H x 2 / tp bytes each way."""
    plan = Plan(**PLAN)
    h_bytes = T * H * 2

    def exits(a2a):
        step = training_graph(_rank(tp=tp, sp=True, lora_a2a=a2a), plan)
        ops = [step.op(n) for n in step.names() if step.op(n).layer == 0
               and step.op(n).kind is OpKind.COLLECTIVE and ".lora_b.tp_" in n
               and "identity" not in n]
        return sorted((op.phase.name, op.fn, op.bytes_read, op.bytes_written) for op in ops)

    gather = ("all_gather", h_bytes // tp, h_bytes)
    assert exits(False) == sorted(
        [("FORWARD", *gather), ("FORWARD", "split", 0, 0), ("BACKWARD", *gather)] * 2)
    shard = ("all_to_all", h_bytes // tp, h_bytes // tp)
    assert exits(True) == sorted([("FORWARD", *shard), ("BACKWARD", *shard)] * 2)


def test_lora_a2a_is_on_the_plan_and_moves_the_step():
    """API keyword, CLI flag and JSON echo; under sequence parallelism on a cluster the two
    exits price differently (the all-to-all moves 1/tp of the gathered bytes)."""
    run = dict(num_devices=4, micro_batch=1, finetune="lora", lora_rank=R,
               lora_targets=EVERY)
    base = simulate(LLAMA, "h100-sxm5-80gb", parallel=ParallelPlan(
        tp=4, sequence_parallel=True), **run)
    a2a = simulate(LLAMA, "h100-sxm5-80gb", parallel=ParallelPlan(
        tp=4, sequence_parallel=True, lora_a2a=True), **run)
    assert a2a.step_time_s != base.step_time_s
    assert ParallelPlan().lora_a2a is False   # NeMo's default: a2a_experimental False


def test_lora_a2a_flag_reaches_the_plan(capsys):
    import json

    assert main(["predict", "llama2-7b", "--device", "h100", "--num-devices", "4", "--tp", "4",
                 "--sequence-parallel", "--lora-a2a", "--finetune", "lora", "--micro-batch",
                 "1", "--seq-len", "512", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "lora_a2a" in json.dumps(out)


@pytest.mark.parametrize("flags, message", [
    (["--finetune", "lora", "--tp", "4"],
     "lora_a2a = true moves the LoRA adapters' output to sequence shards: it needs sequence "
     "parallelism; add --sequence-parallel or drop --lora-a2a"),
    (["--tp", "4", "--sequence-parallel"],
     "lora_a2a = true moves LoRA adapters' outputs, and finetune = full has none: add "
     "--finetune lora or drop --lora-a2a"),
])
def test_lora_a2a_bad_input_is_one_line(capsys, flags, message):
    code = main(["predict", "llama2-7b", "--device", "h100", "--num-devices", "4",
                 "--micro-batch", "1", "--seq-len", "512", "--lora-a2a", *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and message in err


def test_a_later_pipeline_stage_sends_its_input_gradient_back():
    """The previous stage's adapters need it, though nothing before the first adapter in the
    stage is trained."""
    plan = Plan(micro_batch=1, global_batch=4, finetune="lora", lora_rank=R)
    forward = stage_forward(LLAMA, plan, ParallelPlan(pp=2), 1, None)[1]
    step = training_graph(forward, plan)
    sends = [step.op(n) for n in step.names() if step.op(n).fn == "send_recv"
             and step.op(n).phase is Phase.BACKWARD]
    assert len(sends) == 1


def test_tied_embeddings_frozen_under_pipeline_parallelism_are_not_reduced():
    """GPT-2's tied word embedding is frozen in a fine-tune: no gradient, no all-reduce of it
    between the first and last stages (and no update to wait for)."""
    result = simulate("gpt2-small", "a100", parallel=ParallelPlan(pp=2), num_devices=2,
                      global_batch=4, micro_batch=1, finetune="lora", lora_rank=8)
    assert result.memory_breakdown["gradients"] > 0
    assert not any("embedding_all_reduce" in name for name in result.lowered.names)
    full = simulate("gpt2-small", "a100", parallel=ParallelPlan(pp=2), num_devices=2,
                    global_batch=4, micro_batch=1)
    assert any("embedding_all_reduce" in name for name in full.lowered.names)


def test_kv_heads_fewer_than_tp_keep_their_adapters_off_qkv(tmp_path):
    spec = tmp_path / "gqa.toml"
    spec.write_text('[transformer]\nlayers = 2\nhidden = 256\nheads = 4\nkv_heads = 1\n'
                    'vocab = 1000\nseq_len = 128\nffn = "swiglu"\n')
    kept = simulate(str(spec), "a100", parallel=ParallelPlan(tp=2), num_devices=2,
                    micro_batch=1, finetune="lora", lora_rank=4, lora_targets="o,mlp")
    assert kept.memory_breakdown["gradients"] > 0


@pytest.mark.parametrize("flags, message", [
    (["--lora-rank", "6", "--num-devices", "4", "--tp", "4"],
     "lora_rank = 6 with tp = 4: the adapters beside column-parallel linears split their rank"),
    (["--lora-rank", "6", "--lora-targets", "o", "--num-devices", "4", "--tp", "4",
      "--seq-len", "512"], None),
])
def test_adapter_rank_must_split_over_tp(capsys, flags, message):
    code = main(["predict", "llama2-7b", "--device", "a100", "--finetune", "lora",
                 "--micro-batch", "1", *flags])
    err = capsys.readouterr().err.strip()
    if message is None:   # A beside a row-parallel linear splits its inputs, not its rank
        assert code == 0
    else:
        assert code == 2 and "\n" not in err and message in err


def test_kv_heads_fewer_than_tp_is_one_line(tmp_path, capsys):
    spec = tmp_path / "gqa.toml"
    spec.write_text('[transformer]\nlayers = 2\nhidden = 256\nheads = 4\nkv_heads = 1\n'
                    'vocab = 1000\nseq_len = 128\nffn = "swiglu"\n')
    assert main(["predict", str(spec), "--device", "a100", "--num-devices", "2", "--tp", "2",
                 "--finetune", "lora", "--lora-rank", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "kv_heads = 1 < tp = 2" in err


def test_roles_of_the_adapted_linears():
    """The facts name the base's role (what the split reads), never the op's name."""
    forward = _rank(tp=1)
    roles = {op.name.split(".")[1]: dict(op.extra)[ADAPTER_A] for op in forward.ops()
             if ADAPTER_A in dict(op.extra) and op.layer == 0}
    assert roles["q_proj"] == roles["up_proj"] == Role.COLUMN
    assert roles["o_proj"] == roles["fc2"] == Role.ROW


def test_the_mlperf_lora_rows_run_the_all_to_all():
    """The two metered MLPerf LoRA runs set a2a_experimental (their config_common.sh,
    LORA_A2A=1): their adapters' exits are all-to-alls, not the default's gather and split."""
    from benchmarks import energy_validation as ev

    for bench in ("lora-1node", "lora-8node"):
        names = ev.predicted(bench)[0].lowered.names
        assert any(n.endswith("lora_b.tp_all_to_all") for n in names)
        assert not any(n.endswith("lora_b.tp_split") for n in names)
