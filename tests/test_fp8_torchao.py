"""fp8 through torchao's Float8Linear, dynamic tensorwise scaling (Plan.fp8_recipe =
torchao-tensorwise; simulator.training.fp8): the cast bytes in closed form as torchao's own
estimate counts them (pytorch/ao eab345c torchao/float8/roofline_utils.py), the amax fused into
the producer under compiled fusion, and a bad recipe refused in one line."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.graph.op import DType, OpKind, Phase
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from simulator.training.fp8 import CAST
from tests.test_cli import hwsim
from workloads.transformer import TransformerConfig


def _step(layers, hidden, heads, seq, batch, fusion="compiled", recipe="torchao-tensorwise",
          precision="fp8", modules="fused"):
    c = TransformerConfig("t", layers, hidden, heads, vocab=100, seq_len=seq)
    plan = Plan(micro_batch=batch, precision=precision, fp8_recipe=recipe, fusion=fusion,
                fp8_modules=modules)
    return c, training_graph(c.forward_graph(batch, DType.BF16), plan)


def _bytes(step, phase):
    return sum(step.op(n).bytes_read + step.op(n).bytes_written for n in step.names()
               if step.op(n).fn == CAST and step.op(n).phase is phase)


@pytest.mark.parametrize("fusion", ["compiled", "eager"])
@pytest.mark.parametrize("layers, hidden, heads, seq, batch", [
    (1, 64, 4, 16, 2), (3, 128, 8, 32, 1), (2, 96, 3, 8, 5)])
def test_cast_bytes_in_closed_form(layers, hidden, heads, seq, batch, fusion):
    """Per layer of a GPT (q, k, v, o, fc1, fc2 in fp8, 16-bit activations, attention as
    bmm + softmax + bmm): forward, the four GEMM inputs (the norms' outputs h, shared by q, k,
    v; the attention output h; the GeLU output f) are each read once and written twice in fp8
    (2 + 2 bytes per element), the fp8 copy read once more (1: torch.compile's row- and
    column-major cast, torchao's model_torch_compile_limitations; priced alike under eager),
    plus an amax pass (2) unless compile fuses it into the producer:
    the norms and the GeLU are kernels it generates, the attention's context bmm is not (so the
    o_proj input keeps its pass compiled or not); each weight is cast at its forward call with
    its own amax pass (2 + 2 + 2 + 1). Backward, each GEMM's output gradient 2 + 2 + 1, plus the amax
    pass for q, k and v (written by the bmms' backward) and, under eager, for all six;
    nothing in the optimizer phase."""
    c, step = _step(layers, hidden, heads, seq, batch, fusion=fusion)
    rows, h, f = batch * seq, hidden, c.ffn_dim
    weights = 4 * h * h + 2 * h * f
    amax_fwd = 2 * h if fusion == "compiled" else 2 * (3 * h + f)
    amax_bwd = 2 * 3 * h if fusion == "compiled" else 2 * (5 * h + f)
    assert _bytes(step, Phase.FORWARD) == layers * (rows * (5 * (3 * h + f) + amax_fwd)
                                                    + 7 * weights)
    assert _bytes(step, Phase.BACKWARD) == layers * rows * (5 * (5 * h + f) + amax_bwd)
    assert _bytes(step, Phase.OPTIMIZER) == 0
    # torchtitan's norms are its own modules: they write 16 bits, as in bf16
    _, bf16 = _step(layers, hidden, heads, seq, batch, fusion=fusion, precision="bf16")
    for name in ("L0.layernorm", "L0.layernorm#1", "layernorm"):
        assert bf16.op(name).bytes_written == step.op(name).bytes_written


def test_compile_fuses_the_amax_only_into_kernels_it_generates():
    """Llama 3 8B under compiled fusion with SDPA's FlashAttention: the amax of a GEMM input or
    output gradient is fused only where an elementwise op or a norm writes it. The o_proj input
    (the attention kernel's output) and the v_proj output gradient (its backward's dV) keep
    their amax pass (read 2 + 2 + 1 per element, write 2); the norms' outputs, the SwiGLU's and
    the RoPE backward's q and k gradients, and the residual gradients do not (read 2 + 1,
    write 2)."""
    from simulator import simulate
    run = simulate("llama3-8b", "h100", micro_batch=1, fusion="compiled", precision="fp8",
                   fp8_recipe="torchao-tensorwise")
    low = run.lowered
    ratio = {n.split(":", 1)[1]: low.bytes_read[i] / low.bytes_written[i]
             for i, n in enumerate(low.names) if n.startswith(f"{CAST}:")
             and n.split(":")[-1].startswith("L0.")
             and not n.startswith(f"{CAST}:weight:")}
    unfused = {"L0.o_proj", "grad:L0.v_proj"}
    fused = {"L0.q_proj", "L0.gate_proj", "L0.fc2", "grad:L0.q_proj", "grad:L0.k_proj",
             "grad:L0.o_proj", "grad:L0.fc2", "grad:L0.gate_proj", "grad:L0.up_proj"}
    assert set(ratio) == unfused | fused
    assert all(ratio[n] == 2.5 for n in unfused) and all(ratio[n] == 1.5 for n in fused)


def test_a_recomputed_forward_casts_its_weights_again():
    """Float8Linear casts its weight at every forward call: under full recompute the
    recomputed forward's GEMMs cast them again (7 bytes per weight element each time)."""
    c, step = _step(2, 64, 4, 16, 2)
    plan = Plan(micro_batch=2, precision="fp8", fp8_recipe="torchao-tensorwise",
                fusion="compiled", recompute="full")
    full = training_graph(c.forward_graph(2, DType.BF16), plan)
    weights = 2 * (4 * 64 * 64 + 2 * 64 * c.ffn_dim)
    assert _bytes(full, Phase.RECOMPUTE) - _bytes(step, Phase.RECOMPUTE) >= 7 * weights
    assert _bytes(full, Phase.RECOMPUTE) == _bytes(full, Phase.FORWARD)


@settings(max_examples=25, deadline=None)
@given(layers=st.integers(1, 3), heads=st.integers(1, 4), per_head=st.sampled_from([8, 16]),
       seq=st.integers(2, 24), batch=st.integers(1, 4))
def test_fused_amax_never_moves_more(layers, heads, per_head, seq, batch):
    """Invariant: under compiled fusion no cast moves more bytes than under eager fusion, nor
    more than Transformer Engine's current scaling through te.Linear (the torchtitan rows'
    earlier stand-in: every amax a pass of its own, the weight cast at every forward call) by
    more than compile's extra read of the fp8 copy (1 byte per element, half the bytes the
    cast writes)."""
    shape = (layers, heads * per_head, heads, seq, batch)
    _, fused = _step(*shape)
    _, eager = _step(*shape, fusion="eager")
    _, te = _step(*shape, recipe="current", modules="linear")
    casts = [n for n in fused.names() if fused.op(n).fn == CAST]
    assert casts and set(casts) == {n for n in eager.names() if eager.op(n).fn == CAST}
    for name in casts:
        moved = fused.op(name).bytes_read + fused.op(name).bytes_written
        assert moved <= eager.op(name).bytes_read + eager.op(name).bytes_written
        extra = fused.op(name).bytes_written // 2
        assert moved <= te.op(name).bytes_read + te.op(name).bytes_written + extra


def test_torchao_step_never_slower_than_te_current_linear():
    """The same model and plan under compiled fusion: torchao's casts (amax fused) never make
    the step slower than TE's current scaling through te.Linear."""
    from simulator import simulate
    kw = dict(precision="fp8", micro_batch=4, fusion="compiled")
    fused = simulate("gpt3-1.3b", "h100", fp8_recipe="torchao-tensorwise", **kw)
    te = simulate("gpt3-1.3b", "h100", fp8_recipe="current", fp8_modules="linear", **kw)
    assert fused.step_time_s <= te.step_time_s


def test_an_unknown_recipe_is_one_line_exit_2():
    proc = hwsim("predict", "gpt2-small", "--device", "h100", "--precision", "fp8",
                 "--fp8-recipe", "torchao-rowwise")
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "fp8-recipe" in lines[0] and "torchao-tensorwise" in lines[0]


#: torchao's own layer-level figures (tests/data/torchao_float8_linear.csv): pytorch/ao
#: torchao/float8/README.md, "Performance", examples 1 and 2, at 838e054b7 (2025-04-01; the
#: same figures since e2dad4a66, 2024-09-02), BSD-3-Clause: a compiled Float8Linear
#: (tensorwise) against a compiled bf16 nn.Linear (bias=False), fwd + bwd GPU kernel time on
#: an NVIDIA H100 (benchmarks/float8/float8_roofline.py --shape_gen_name sweep: input x a
#: leaf with requires_grad, grad_output passed in; the "benchmark speedup" is
#: b_bf16_e2e_time_s / b_fp8_e2e_time_s). The H100 is Meta's: torchao's roofline_utils.py
#: (eab345c) prices its memory at "2.4 TB per second, custom to Meta's H100 variant", the
#: Grand Teton H100 the torchtitan rows' device_set gives (96 GB of HBM2e at 2.4 TB/s on the
#: catalogue's H100 SXM5): the check runs on that device, read from those rows.
LAYER_CSV = "tests/data/torchao_float8_linear.csv"
#: Stated tolerance on the speed-up: 15 %, the tolerance the project holds what fp8 buys over
#: bf16 to elsewhere (NeMo's dgxc H100 rows, docs/accuracy.md "Held out: H100s under NeMo",
#: tests/test_validation_multi.py test_nemo_h100_fp8_speedup_within_15_percent), not one chosen
#: from this check's results.
LAYER_TOLERANCE = 0.15
#: The small shape misses it (a strict xfail): too small to be bandwidth-bound, every kernel of
#: it 5-12 us in hwsim, where what its fp8 casts and small fp8 GEMMs cost is priced from
#: large-kernel fits (the streaming ramp, the GEMM tile cost) with no kernel-level timing of a
#: 2-8 M-element fp8 cast or of a 4-GFLOP fp8 GEMM to check them against: hwsim's fp8 side is
#: slower than torchao's figure implies, not known which of its kernels.
LAYER_SMALL = (1024, 2048, 1024)


def _rows_device():
    """The catalogue H100 SXM5 with the torchtitan rows' device_set (one set for them all)."""
    import csv
    from hardware_specs.loader import load_device
    from hardware_specs.override import override
    sets = {row["device_set"] for row in csv.DictReader(open("tests/data/validation_rows.csv"))
            if row.get("fp8_recipe") == "torchao-tensorwise"}
    assert len(sets) == 1 and "bandwidth_bytes_per_s=2400000000000" in next(iter(sets))
    return override(load_device("h100-sxm5-80gb"), dict(i.split("=") for i in sets.pop().split()))


def _linear_kernels_s(m, k, n, precision, device):
    """hwsim's fwd + bwd kernel time of one bias-free linear under torch.compile: its GEMMs
    and casts, not the loss that starts the backward, the input placeholder or the update."""
    from simulator.cost.roofline import op_costs
    from simulator.graph.lower import lower
    from simulator.graph.op import OpKind
    from simulator.graph.opgraph import OpGraph
    from workloads.layers import Builder

    graph = OpGraph()
    b = Builder(graph, dtype=DType.BF16, param_dtype=DType.BF16)
    b.loss(b.linear("fc", b.input("x", m * k), m, k, n, bias=False), m, n)
    plan = Plan(micro_batch=1, precision=precision, fp8_recipe="torchao-tensorwise",
                fusion="compiled")
    step = training_graph(graph, plan)
    low = lower(step)
    _, _, time_s = op_costs(low, device, plan=plan)
    ops = [step.op(name) for name in low.names]
    keep = [i for i, op in enumerate(ops) if op.phase is not Phase.OPTIMIZER
            and op.fn != "input" and op.kind is not OpKind.LOSS and op.forward_of != "loss"]
    assert sum(ops[i].kind is OpKind.MATMUL for i in keep) == 3
    return float(time_s[keep].sum())


def _layer_rows():
    import csv
    rows = list(csv.DictReader(open(LAYER_CSV)))
    assert len(rows) == 2
    return rows


def _speedup(row):
    m, k, n, device = int(row["m"]), int(row["k"]), int(row["n"]), _rows_device()
    return _linear_kernels_s(m, k, n, "bf16", device) / _linear_kernels_s(m, k, n, "fp8", device)


@pytest.mark.parametrize("row", [
    pytest.param(row, marks=pytest.mark.xfail(strict=True, reason=(
        "the small shape: hwsim's fp8 casts and GEMMs at 2-8 M elements are slower than "
        "torchao's measured 0.80x implies (LAYER_SMALL's comment); no kernel-level timing "
        "of them to price them from")))
    if (int(row["m"]), int(row["k"]), int(row["n"])) == LAYER_SMALL else row
    for row in _layer_rows()], ids=lambda row: f'{row["m"]}x{row["k"]}x{row["n"]}')
def test_layer_speedup_against_torchaos_microbenchmark(row):
    assert _speedup(row) == pytest.approx(float(row["speedup"]), rel=LAYER_TOLERANCE)


def test_layer_speedup_ordering_as_published():
    """The published reading: too small to gain (below 1), large shapes gain (above 1)."""
    small, large = sorted(_layer_rows(), key=lambda row: int(row["m"]))
    assert _speedup(small) < 1 < _speedup(large)


def test_float8_tensor_parallel_gathers_fp8():
    """tp = 2 with sequence parallelism: torchtitan's float8 TP plan gathers fp8 (1 byte per
    element) where bf16 gathers 2: the norm outputs' all-gathers (PrepareFloat8ModuleInput,
    forward and the backward's regather) and the backward all-gathers of the row-parallel
    linears' output gradients (Float8RowwiseParallel); the reduce-scatters, and the gradient
    all-gathers under TE's delayed recipe, keep 16 bits."""
    from simulator import simulate
    from simulator.plan.parallel import ParallelPlan

    def collectives(**kw):
        run = simulate("gpt3-1.3b", "h100", micro_batch=2, fusion="compiled",
                       parallel=ParallelPlan(tp=2, sequence_parallel=True, dp=2), **kw)
        low = run.lowered
        return {n: int(low.bytes_read[i]) for i, n in enumerate(low.names)
                if low.kind[i] == OpKind.COLLECTIVE and ".tp_" in n
                and n.split(":")[-1].startswith("L0.")}

    bf16 = collectives(precision="bf16")
    torchao = collectives(precision="fp8", fp8_recipe="torchao-tensorwise")
    te = collectives(precision="fp8")
    narrowed = {n for n in bf16 if torchao[n] * 2 == bf16[n]}
    gathers = ("L0.layernorm.tp_all_gather", "L0.layernorm#1.tp_all_gather")
    assert narrowed == {*gathers, *(f"regather:{n}" for n in gathers),
                        "grad:L0.o_proj.tp_reduce_scatter", "grad:L0.fc2.tp_reduce_scatter"}
    assert narrowed and all(torchao[n] == bf16[n] for n in bf16 if n not in narrowed)
    grads = {n for n in narrowed if n.startswith("grad:")}
    assert grads and all(te[n] == bf16[n] for n in grads)


@pytest.mark.parametrize("flags, named", [
    (("--finetune", "lora", "--frozen-weights", "fp8"), "frozen_weights = 'fp8'"),
    (("--fp8-swiglu-input",), "fp8_swiglu_input = true"),
])
def test_transformer_engine_options_are_refused_with_torchao(flags, named):
    """torchao's Float8Linear casts the weight at every forward call and keeps no fp8 SwiGLU
    input: Transformer Engine's fp8 frozen weights and Megatron-core's fp8 SwiGLU store are not
    its options (review R-D finding 1): one line, exit 2, from the CLI and the API."""
    proc = hwsim("predict", "llama2-7b", "--device", "h100", "--precision", "fp8",
                 "--fp8-recipe", "torchao-tensorwise", *flags)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert named in proc.stderr and "torchao" in proc.stderr
    from simulator.errors import HwsimError
    extra = ({"finetune": "lora", "frozen_weights": "fp8"} if "--finetune" in flags
             else {"fp8_swiglu_input": True})
    with pytest.raises(HwsimError, match="not torchao's"):
        Plan(precision="fp8", fp8_recipe="torchao-tensorwise", **extra)
