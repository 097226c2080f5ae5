"""Fine-tuning (issue 22, item 4): frozen parameters have no gradients or optimizer states; LoRA
adapters' FLOPs and memory are counted, the frozen base keeps its data gradients; QLoRA stores
the frozen linears as nf4 or int8 and dequantises them before each GEMM."""
import json

import pytest

from simulator import PlanError, simulate
from simulator.cli import main
from simulator.graph.op import Task
from simulator.parallel.rank import stage_forward
from simulator.plan.parallel import ParallelPlan
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from simulator.training.finetune import BITS
from workloads.zoo import MODELS

LLAMA = MODELS["llama2-7b"]
T, H, F, L, V, R = 512, 4096, 11008, 32, 32000, 16
LAYER_LINEARS = 4 * H * H + 3 * H * F          # q, k, v, o; gate, up, down
LINEARS = L * LAYER_LINEARS + H * V             # and the LM head
QKV_ADAPTERS = L * 3 * (H * R + R * H)          # A (h -> r) and B (r -> h) beside q, k, v
LORA = dict(micro_batch=1, seq_len=T, finetune="lora", lora_rank=R)


@pytest.fixture(scope="module")
def runs():
    return {"full": simulate("llama2-7b", "rtx-4090", micro_batch=1, seq_len=T),
            "lora": simulate("llama2-7b", "rtx-4090", **LORA),
            "nf4": simulate("llama2-7b", "rtx-4090", frozen_weights="nf4", **LORA),
            "int8": simulate("llama2-7b", "rtx-4090", frozen_weights="int8", **LORA)}


def test_llama2_7b_lora_fits_a_24gb_rtx_4090_and_the_full_fine_tune_does_not(runs):
    assert runs["lora"].memory_capacity_bytes == 24 * 2**30   # 24 GB GDDR6X, JEDEC GB
    assert runs["lora"].fits and runs["lora"].peak_memory_bytes < 16e9    # 15.4 GB
    assert not runs["full"].fits and runs["full"].peak_memory_bytes > 100e9  # 110 GB


def test_frozen_parameters_have_no_gradients_or_optimizer_states(runs):
    memory = runs["lora"].memory_breakdown
    assert memory["weights"] == (LLAMA.num_params() + QKV_ADAPTERS) * 2   # bf16
    assert memory["gradients"] == QKV_ADAPTERS * 2
    assert memory["optimizer_states"] == QKV_ADAPTERS * (4 + 4 + 4)     # master, m, v


def test_lora_step_flops_follow_the_closed_form(runs):
    """Frozen base: forward + data gradient, 4 x linear params x tokens (the full step's 6
    less its weight gradients), except the first layer's q, k, v and their adapters' A, whose
    input (the normed embedding) needs no gradient, as autograd skips it; plus the adapters'
    6 x params x tokens; attention's core as in the full step."""
    first_layer = 3 * H * H + 3 * H * R
    expected = (runs["full"].flops_per_step - 2 * LINEARS * T - 2 * first_layer * T
                + 6 * QKV_ADAPTERS * T)
    assert runs["lora"].flops_per_step == expected


def test_adapting_every_linear_counts_its_adapters():
    every = simulate("llama2-7b", "rtx-4090", lora_targets="mlp,qkv,o", **LORA)
    adapters = L * (4 * (H * R + R * H) + 2 * (H * R + R * F) + (F * R + R * H))
    assert every.memory_breakdown["gradients"] == adapters * 2


def test_qlora_stores_the_layers_linears_quantised(runs):
    quantised, rest = L * LAYER_LINEARS, LLAMA.num_params() - L * LAYER_LINEARS
    nf4 = runs["nf4"].memory_breakdown["weights"]
    assert nf4 == pytest.approx(quantised * BITS["nf4"] / 8 + (rest + QKV_ADAPTERS) * 2)
    assert BITS["nf4"] == pytest.approx(4.127, abs=1e-3)   # QLoRA sec. 3
    int8_rows = L * (4 * H + 2 * F + H)                 # an fp32 scale per output row
    assert runs["int8"].memory_breakdown["weights"] == quantised + 4 * int8_rows \
        + (rest + QKV_ADAPTERS) * 2
    assert runs["nf4"].peak_memory_bytes < 7e9 < runs["int8"].peak_memory_bytes < 10e9
    # dequantising is a memory-bound pass before each GEMM: slower than LoRA, same FLOPs
    assert runs["nf4"].step_time_s > runs["lora"].step_time_s
    assert runs["nf4"].flops_per_step == runs["lora"].flops_per_step


def test_qlora_dequantises_before_every_gemm_on_a_quantised_weight():
    plan = Plan(micro_batch=1, finetune="lora", lora_rank=R, frozen_weights="nf4")
    small = LLAMA.with_layers(2)
    forward = stage_forward(small, plan, ParallelPlan(), 0, None)[1]
    from simulator.training.finetune import dequantize
    step = dequantize(training_graph(forward, plan), plan)
    ops = [step.op(n) for n in step.names()]
    dequant = [op for op in ops if op.fn == "dequantize"]
    # forward of 2 x 7 linears, data gradients of all but the first layer's q, k, v
    assert len(dequant) == 2 * 7 * 2 - 3
    assert {op.task for op in dequant} == {Task.FORWARD, Task.DATA_GRAD}
    assert not any(op.task is Task.WEIGHT_GRAD and op.frozen for op in ops)


def test_cli_flags_and_the_api_agree(runs, capsys):
    assert main(["predict", "llama2-7b", "--device", "rtx-4090", "--micro-batch", "1",
                 "--seq-len", "512", "--finetune", "lora", "--lora-rank", "16", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fits"] and out["peak_memory_bytes"] == runs["lora"].peak_memory_bytes


def test_a_workload_toml_fine_tunes(tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text('[transformer]\nlayers = 2\nhidden = 256\nheads = 4\nvocab = 1000\n'
                    'seq_len = 128\nffn = "swiglu"\n')
    full = simulate(str(spec), "a100", micro_batch=2)
    lora = simulate(str(spec), "a100", micro_batch=2, finetune="lora", lora_rank=4,
                    lora_targets="qkv,o,mlp")
    assert lora.memory_breakdown["optimizer_states"] < full.memory_breakdown["optimizer_states"]


@pytest.mark.parametrize("flags, message", [
    (["--lora-rank", "16"], "lora_rank = 16 needs finetune = lora"),
    (["--frozen-weights", "nf4"], "frozen_weights = 'nf4' needs finetune = lora"),
    (["--finetune", "lora", "--lora-targets", "qkv,ffn"], "lora_targets = 'ffn' is not known"),
    (["--finetune", "lora", "--lora-rank", "0"], "lora_rank = 0 must be a positive integer"),
    (["--finetune", "qlora"], "invalid choice: 'qlora'"),
    (["--finetune", "lora", "--lora-rank", "3", "--num-devices", "2", "--tp", "2"],
     "lora_rank = 3 with tp = 2"),
    # GPT-2 small's linears are 768 wide: B A of rank 769 cannot have that rank
    (["--finetune", "lora", "--lora-rank", "769"],
     "lora_rank = 769 is above the width of L0.q_proj (768 -> 768)"),
])
def test_bad_fine_tuning_input_is_one_line_and_exit_2(capsys, flags, message):
    assert main(["predict", "gpt2-small", "--device", "a100", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err


def test_a_rank_at_the_narrowest_adapted_width_runs():
    """The bound is min(k, n) of each adapted linear: Llama 3 8B's k and v projections are
    4096 -> 1024 (8 KV heads of 128), so rank 1024 runs and 1025 is refused."""
    simulate("llama3-8b", "a100", micro_batch=1, seq_len=128, finetune="lora", lora_rank=1024)
    with pytest.raises(PlanError, match=r"lora_rank = 1025 is above the width of L0.k_proj "
                                        r"\(4096 -> 1024\)"):
        simulate("llama3-8b", "a100", micro_batch=1, seq_len=128, finetune="lora",
                 lora_rank=1025)


def test_lora_of_a_model_without_its_linears_is_refused(capsys):
    assert main(["predict", "resnet-50", "--device", "a100", "--finetune", "lora"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no linear of the targets qkv" in err


# -- fp8 frozen weights (Transformer Engine's fp8_model_init, MLPerf's NeMo LoRA fp8_params) --
FP8_LORA = dict(LORA, precision="fp8")


@pytest.fixture(scope="module")
def fp8_runs():
    return {fw: simulate("llama2-7b", "h100-sxm5-80gb", frozen_weights=fw, **FP8_LORA)
            for fw in (None, "fp8")}


def test_fp8_frozen_weights_store_one_byte_per_weight(fp8_runs):
    """The layers' linears at 1 byte each (no bias in Llama 2); the embedding, norms and head
    (not TE linears) and the adapters stay bf16."""
    quantised, rest = L * LAYER_LINEARS, LLAMA.num_params() - L * LAYER_LINEARS
    assert fp8_runs["fp8"].memory_breakdown["weights"] == quantised * 1 + (rest + QKV_ADAPTERS) * 2
    assert fp8_runs[None].memory_breakdown["weights"] - fp8_runs["fp8"].memory_breakdown[
        "weights"] == quantised
    assert BITS["fp8"] == 8


def test_fp8_frozen_weights_are_neither_cast_nor_dequantised():
    """Under fp8 a 16-bit frozen weight is cast once per step (TE's quantize_weight at the first
    micro-batch); an fp8 one is read as stored: no weight cast, no dequantisation, the same
    GEMMs (and the adapters' and activations' casts unchanged)."""
    from simulator.training.finetune import dequantize
    from simulator.training.fp8 import CAST
    small = LLAMA.with_layers(2)
    steps = {}
    for fw in (None, "fp8"):
        plan = Plan(micro_batch=1, finetune="lora", lora_rank=R, precision="fp8",
                    frozen_weights=fw)
        forward = stage_forward(small, plan, ParallelPlan(), 0, None)[1]
        steps[fw] = dequantize(training_graph(forward, plan), plan)
    names = {fw: set(step.names()) for fw, step in steps.items()}
    weight_casts = {n for n in names[None] if n.startswith(f"{CAST}:weight:")}
    assert len(weight_casts) == 2 * 7                   # every frozen linear of the 2 layers
    assert names[None] - names["fp8"] == weight_casts   # all of them, and nothing else, gone
    assert names["fp8"] <= names[None]
    assert not any(steps["fp8"].op(n).fn == "dequantize" for n in names["fp8"])


@pytest.mark.parametrize("device, seq_len", [("h100-sxm5-80gb", 512), ("h100-sxm5-80gb", 4096),
                                             ("b200", 2048), ("mi300x", 1024)])
def test_fp8_frozen_weights_never_slow_a_step_nor_change_its_flops(device, seq_len):
    """The same step less the weight casts: never slower, the same FLOPs, less memory."""
    kw = dict(FP8_LORA, seq_len=seq_len, lora_targets="qkv,o")
    bf16 = simulate("llama2-7b", device, **kw)
    fp8 = simulate("llama2-7b", device, frozen_weights="fp8", **kw)
    assert fp8.step_time_s <= bf16.step_time_s
    assert fp8.flops_per_step == bf16.flops_per_step
    assert fp8.peak_memory_bytes < bf16.peak_memory_bytes


@pytest.mark.parametrize("flags, message", [
    (["--frozen-weights", "fp8"], "frozen_weights = 'fp8' needs precision = fp8"),
    (["--frozen-weights", "fp8", "--precision", "fp8", "--device", "a100"],
     "precision = fp8 needs fp8 matrix units and a100"),
])
def test_fp8_frozen_weights_refused_without_fp8(capsys, flags, message):
    args = ["predict", "llama2-7b", "--micro-batch", "1", "--seq-len", "512", "--finetune",
            "lora", *flags]
    if "--device" not in flags:
        args += ["--device", "h100-sxm5-80gb"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err
