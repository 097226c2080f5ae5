"""fp8 as Transformer Engine runs it (simulator.training.fp8): the cast kernels of each fp8 GEMM,
their bytes in closed form."""
import pytest

from simulator.graph.op import DType, OpKind, Phase, Task
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from simulator.training.fp8 import CAST
from workloads.transformer import TransformerConfig


def _step(layers, hidden, heads, seq, batch, precision="fp8", **kw):
    c = TransformerConfig("t", layers, hidden, heads, vocab=100, seq_len=seq, **kw)
    return c, training_graph(c.forward_graph(batch, DType.BF16),
                             Plan(micro_batch=batch, precision=precision))


def _casts(step, phase):
    return [step.op(n) for n in step.names()
            if step.op(n).fn == CAST and step.op(n).phase is phase]


@pytest.mark.parametrize("layers, hidden, heads, seq, batch", [
    (1, 64, 4, 16, 2), (3, 128, 8, 32, 1), (2, 96, 3, 8, 5)])
def test_cast_bytes_in_closed_form(layers, hidden, heads, seq, batch):
    """Per layer of a GPT (q, k, v, o, fc1, fc2 in fp8; 16-bit activations, a = 2 bytes):
    forward, the norms write fp8 (LayerNormLinear, LayerNormMLP) and a transpose makes the
    column-wise copy (1 + 1 byte per element, twice), the attention output and the GeLU output
    are cast and transposed (2 + 2); backward, each GEMM's output gradient is cast and
    transposed (2 + 2); once per step each weight (2 + 2)."""
    c, step = _step(layers, hidden, heads, seq, batch)
    rows, h, f = batch * seq, hidden, c.ffn_dim
    forward = sum(op.bytes_read + op.bytes_written for op in _casts(step, Phase.FORWARD))
    assert forward == layers * rows * (2 * h * 2 + 4 * h + 4 * f)
    backward = sum(op.bytes_read + op.bytes_written for op in _casts(step, Phase.BACKWARD))
    assert backward == layers * rows * 4 * (5 * h + f)
    weights = sum(op.bytes_read + op.bytes_written for op in _casts(step, Phase.OPTIMIZER))
    assert weights == layers * 4 * (4 * h * h + 2 * h * f)
    # the layers' norms write fp8 instead of 16 bits; the final norm (before the 16-bit head)
    # does not
    _, bf16 = _step(layers, hidden, heads, seq, batch, precision="bf16")
    for name in ("L0.layernorm", "L0.layernorm#1"):
        assert bf16.op(name).bytes_written - step.op(name).bytes_written == rows * h
    assert bf16.op("layernorm").bytes_written == step.op("layernorm").bytes_written


def test_each_cast_precedes_its_gemms_and_follows_its_input():
    _, step = _step(1, 64, 4, 16, 2)
    order = {n: i for i, n in enumerate(step.names())}
    for op in _casts(step, Phase.FORWARD) + _casts(step, Phase.BACKWARD):
        readers = step.consumers(op.name)
        assert readers and all(step.op(r).dtype is DType.FP8 for r in readers)
        assert all(order[op.name] < order[r] for r in readers)
        # issued right after its input, not at the end of the graph
        assert order[op.name] == max(order[s] for s in step.inputs(op.name)) + 1 or any(
            step.op(n).fn == CAST for n in step.names()[max(order[s] for s in
                                                             step.inputs(op.name)) + 1:
                                                         order[op.name]])


def test_no_casts_without_fp8_nor_for_16_bit_gemms():
    """bf16 has none; under fp8 the head and the attention core stay 16-bit (Formats.of)."""
    _, bf16 = _step(2, 64, 4, 16, 2, precision="bf16")
    assert not [n for n in bf16.names() if bf16.op(n).fn == CAST]
    _, step = _step(2, 64, 4, 16, 2)
    cast_of = {step.op(n).forward_of for n in step.names() if step.op(n).fn == CAST}
    assert not any(name.startswith("lm_head") or "scores" in name or "context" in name
                   for name in cast_of)
    assert all(step.op(n).kind is OpKind.COPY for n in step.names() if step.op(n).fn == CAST)
    # only the forward's casts keep a tensor: the column-wise fp8 copy, 1 byte per element
    assert all(op.out_bytes == 0 for op in _casts(step, Phase.BACKWARD)
               + _casts(step, Phase.OPTIMIZER))
    assert all(op.out_bytes == step.op(op.forward_of).m * step.op(op.forward_of).k
               for op in _casts(step, Phase.FORWARD))


def test_weight_gradients_read_the_kept_fp8_copy():
    """Transformer Engine saves the fp8 column-wise input for the weight gradient
    (linear.py's save_for_backward of the quantized input), not the 16-bit one."""
    _, step = _step(1, 64, 4, 16, 2)
    for name in ("wgrad:L0.q_proj", "wgrad:L0.fc1", "wgrad:L0.fc2", "wgrad:L0.o_proj"):
        forward = step.inputs(name)
        assert any(step.op(s).fn == CAST for s in forward), name
        assert not any(step.op(s).phase is Phase.FORWARD and step.op(s).fn != CAST
                       for s in forward), name


@pytest.mark.parametrize("name, batch", [("gpt3-1.3b", 4), ("gpt2-small", 2)])
def test_fp8_saves_five_bytes_per_token_and_hidden_unit_per_layer(name, batch):
    """Per layer and token, against bf16: the two norms' outputs (h each) are kept as fp8
    copies, 1 byte instead of 2; fc2's input (the GeLU output, 4h) likewise; the attention's
    context is kept at 16 bits by FlashAttention and as o_proj's fp8 copy besides (+h): 5h
    bytes fewer, in the saved count and in the liveness peak alike."""
    from simulator import simulate
    from simulator.training.fusion import fuse_attention
    from simulator.training.saved import activation_bytes
    from workloads.presets import TRANSFORMERS

    c = TRANSFORMERS[name]
    forward = fuse_attention(c.forward_graph(batch, DType.BF16))
    saved = {p: activation_bytes(forward, Plan(micro_batch=batch, precision=p))
             for p in ("bf16", "fp8")}
    fewer = 5 * c.hidden * c.layers * batch * c.seq_len
    assert saved["bf16"] - saved["fp8"] == fewer
    peaks = {p: simulate(c, "h100", micro_batch=batch, precision=p) for p in ("bf16", "fp8")}
    assert peaks["fp8"].saved_activation_bytes == saved["fp8"]
    assert (peaks["bf16"].memory_breakdown["activations"]
            - peaks["fp8"].memory_breakdown["activations"]) == fewer


def test_fp8_gemms_run_at_the_measured_fp8_efficiency():
    """The H100's fp8 GEMMs at its measured fp8 MAMF fraction (70.9 %, ml-engineering's table),
    its bf16 ones at the bf16 one (80.3 %), each of the reference shape (8192^3) at its figure
    exactly: a measured fp8 figure holds the fp8 kernel's own fixed cost, so the fp8 GEMM is
    referred to the fp8 reference GEMM (shape factor 1), not the 16-bit one (0.96 on the H100,
    whose tile's fixed cost, twice as many k-steps in fp8, it counted a second time). A spec
    without the figure runs fp8 at matmul_efficiency, referred to the 16-bit reference its
    figure was measured on."""
    import dataclasses

    from hardware_specs.loader import load_device
    from simulator.cost.efficiency import shape_efficiency
    from simulator.cost.roofline import price
    from simulator.graph.lower import lower
    from simulator.graph.op import Op
    from simulator.graph.opgraph import OpGraph

    g = OpGraph()
    for name, dtype in (("fp8", DType.FP8), ("bf16", DType.BF16)):
        g.add(Op(name, OpKind.MATMUL, dtype=dtype, fn="linear", m=8192, n=8192, k=8192,
                 flops=2 * 8192 ** 3, bytes_read=3 * 8192 ** 2, bytes_written=8192 ** 2))
    low = lower(g)
    h100 = load_device("h100-sxm5-80gb")
    assert h100.fp8_matmul_efficiency == 0.709 and h100.matmul_efficiency == 0.803
    shape = shape_efficiency(low, h100)
    peak = price(low, h100)[0]
    assert peak[0] == pytest.approx(1978.9e12 * 0.709 * shape[0], rel=1e-9)
    assert peak[1] == pytest.approx(989.4e12 * 0.803 * shape[1], rel=1e-9)
    assert shape[0] == pytest.approx(1.0, rel=1e-12) and shape[1] == pytest.approx(1.0, rel=1e-12)
    plain = dataclasses.replace(h100, fp8_matmul_efficiency=None)
    sixteen = shape_efficiency(low, plain)
    assert 0.9 < sixteen[0] < 0.99 and sixteen[1] == pytest.approx(1.0, rel=1e-12)
    assert price(low, plain)[0][0] == pytest.approx(1978.9e12 * 0.803 * sixteen[0], rel=1e-9)


@pytest.mark.parametrize("value", ["0", "1.2", "-0.5"])
def test_fp8_matmul_efficiency_is_a_fraction(tmp_path, value):
    from pathlib import Path

    import hardware_specs
    from hardware_specs.loader import load_device
    from simulator.errors import SpecError

    spec = Path(hardware_specs.__file__).parent / "devices" / "h100-sxm5-80gb.toml"
    text = spec.read_text().replace(
        "fp8_matmul_efficiency = 0.709", f"fp8_matmul_efficiency = {value}")
    path = tmp_path / "dev.toml"
    path.write_text(text)
    with pytest.raises(SpecError, match="fp8_matmul_efficiency"):
        load_device(str(path))


def test_sequence_parallel_gathers_the_fp8_norm_output():
    """Under sequence parallelism TE all-gathers the norm's fp8 output (forward and again for
    the weight gradient): those all-gathers move 1 byte per element; the reduce-scatters of
    the row-parallel outputs stay 16-bit."""
    from simulator.parallel.tensor import split
    from simulator.training.fusion import fuse_attention
    from workloads.presets import TRANSFORMERS

    c = TRANSFORMERS["gpt3-1.3b"].with_layers(2)
    forward = split(fuse_attention(c.forward_graph(1, DType.BF16)), 2, True, c.transformer)
    steps = {p: training_graph(forward, Plan(micro_batch=1, precision=p))
             for p in ("bf16", "fp8")}
    bf16 = steps["bf16"]
    gathers = [n for n in bf16.names() if bf16.op(n).fn == "all_gather"
               and bf16.op(n).layer >= 0 and bf16.op(n).task in (Task.FORWARD, Task.REGATHER)]
    assert len(gathers) == 2 * 2 * 2   # two norms per layer, forward and regather
    grads = [n for n in bf16.names() if bf16.op(n).fn == "all_gather" and n not in gathers]
    assert grads and all(steps["fp8"].op(n).bytes_read == bf16.op(n).bytes_read for n in grads)
    for name in gathers:
        bf16, fp8 = steps["bf16"].op(name), steps["fp8"].op(name)
        assert (fp8.bytes_read, fp8.bytes_written) == (bf16.bytes_read // 2,
                                                       bf16.bytes_written // 2), name
    for name in steps["bf16"].names():
        if steps["bf16"].op(name).fn == "reduce_scatter":
            assert steps["fp8"].op(name).bytes_read == steps["bf16"].op(name).bytes_read


def test_fp8_memory_under_sequence_parallelism():
    """With tp = 2 and sequence parallelism each rank keeps its norms' fp8 sequence shards
    (TE's LayerNormLinear keeps ln_out, quantized, and gathers it again): still 5h / tp bytes
    fewer per token and layer than bf16, in the saved count and the liveness peak alike."""
    from simulator import simulate
    from simulator.plan.parallel import ParallelPlan
    from workloads.presets import TRANSFORMERS

    c, tp = TRANSFORMERS["gpt3-1.3b"], 2
    runs = {p: simulate(c, "h100", micro_batch=2, precision=p,
                        parallel=ParallelPlan(tp=tp, sequence_parallel=True, dp=2))
            for p in ("bf16", "fp8")}
    fewer = 5 * c.hidden // tp * c.layers * 2 * c.seq_len
    assert runs["bf16"].saved_activation_bytes - runs["fp8"].saved_activation_bytes == fewer
    assert (runs["bf16"].memory_breakdown["activations"]
            - runs["fp8"].memory_breakdown["activations"]) == fewer
