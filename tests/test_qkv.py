"""What eager frameworks do to q, k and v (simulator.training.qkv): PyTorch's rotary kernels and
the layout copies around a fused attention kernel, in closed form, and their invariants."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import simulate
from simulator.errors import PlanError, WorkloadError
from simulator.graph.op import DType, OpKind, Phase, Task
from simulator.plan.step import AttentionLayout, Plan
from simulator.training.backward import training_graph
from simulator.training.fusion import fuse_attention
from simulator.training.qkv import (
    LAYOUT_FN,
    ROTARY_FN,
    add_qkv_kernels,
    eager_rotary_kernels,
    layout_copies,
    scripted_rotary_kernels,
    slice_backward_kernels,
)
from workloads.transformer import TransformerConfig

# Pythia-70M's heads (GPT-NeoX: 8 heads of 64, rotary_pct 0.25), two layers, short sequences
PARTIAL = TransformerConfig("neox", 2, 512, 8, vocab=1000, seq_len=128, learned_positions=False,
                            rotary_pct=0.25)
FULL = TransformerConfig("llama-ish", 2, 512, 8, vocab=1000, seq_len=128,
                         learned_positions=False)
BATCH = 2
Q_BYTES = BATCH * 128 * 512 * 2   # one of q, k, v (or the output) in 16 bits


def _step(model, **plan):
    plan = Plan(micro_batch=BATCH, precision="bf16", **plan)
    forward = fuse_attention(model.forward_graph(BATCH, DType.BF16))
    return add_qkv_kernels(training_graph(forward, plan), plan)


def _added(step, fn):
    return [op for op in step.ops() if op.fn == fn]


def _moved(ops):
    return sum(op.bytes_read + op.bytes_written for op in ops)


def test_partial_rotary_kernels_closed_form():
    """f = 1/4 of each head rotated: mul (f, f), neg (f/2, f/2), cat (f, f), mul (f, f),
    add (2f, f) before the rope op, which is the cat with the pass-through part (N, N)."""
    n = 4096
    kernels = eager_rotary_kernels(0.25, n)
    assert [label for label, *_ in kernels] == ["mul_cos", "neg", "cat_half", "mul_sin", "add"]
    assert sum(read + written for _, _, read, written in kernels) == 10 * n // 4
    assert [kind for _, kind, *_ in kernels].count(OpKind.COPY) == 1


def test_full_rotary_kernels_closed_form():
    """Whole heads: four kernels (3.5 N read, 3.5 N written) before the rope op, the add."""
    n = 4096
    kernels = eager_rotary_kernels(1.0, n)
    assert len(kernels) == 4
    assert sum(read for _, _, read, _ in kernels) == sum(w for *_, w in kernels) == 7 * n // 2


def test_eager_step_counts_rotary_kernels():
    """Per layer, tensor (q, k) and pass (forward, backward): five kernels of 10 f N bytes, and
    in the backward the two slices' zero-filled copies (4 N); with full recomputation the
    recomputed forward runs the five too."""
    step = _step(PARTIAL)
    ops = _added(step, ROTARY_FN)
    assert len(ops) == 2 * 2 * (5 + 5 + 4)
    assert _moved(ops) == 2 * 2 * (2 * 10 * Q_BYTES // 4 + 4 * Q_BYTES)
    assert {op.phase for op in ops} == {Phase.FORWARD, Phase.BACKWARD}
    full = _added(_step(PARTIAL, recompute="full"), ROTARY_FN)
    assert len(full) == len(ops) + 2 * 2 * 5
    assert {op.phase for op in full} == {Phase.FORWARD, Phase.BACKWARD, Phase.RECOMPUTE}


def test_slice_backward_kernels_closed_form():
    """x[..., :r] and x[..., r:] backward: a zero-filled tensor of the input's size each (N
    written), the slice's gradient copied into it (f N and (1 - f) N, read and written)."""
    n = 4096
    kernels = slice_backward_kernels(0.25, n)
    assert [(label, read, written) for label, _, read, written in kernels] == [
        ("fill_rot", 0, n), ("slice_rot", n // 4, n // 4), ("fill_pass", 0, n),
        ("slice_pass", 3 * n // 4, 3 * n // 4)]
    assert all(kind is OpKind.COPY for _, kind, *_ in kernels)


def test_partial_rotary_backward_sums_the_slices_gradients():
    """The rope op's backward is the sum of the two slices' gradients: 2 N read, N written;
    in the forward it is the pass-through concatenation (N, N)."""
    ropes = [op for op in _step(PARTIAL).ops() if dict(op.extra).get("rotary_dims")]
    grads = [op for op in ropes if op.task is Task.DATA_GRAD]
    assert grads and all((op.bytes_read, op.bytes_written) == (2 * Q_BYTES, Q_BYTES)
                         for op in grads)
    assert all((op.bytes_read, op.bytes_written) == (Q_BYTES, Q_BYTES)
               for op in ropes if op.task is Task.FORWARD)


def test_full_rotary_add_reads_both_products():
    """Whole heads: four kernels moving 7 N, and the rope op (the add) reads 2 N."""
    step = _step(FULL)
    assert _moved(_added(step, ROTARY_FN)) == 2 * 2 * 2 * 7 * Q_BYTES
    ropes = [op for op in step.ops() if dict(op.extra).get("rotary_dims")]
    assert ropes and all(op.bytes_read == 2 * op.out_bytes for op in ropes)


def test_compiled_keeps_one_rotary_kernel():
    assert not _added(_step(PARTIAL, fusion="compiled"), ROTARY_FN)
    assert not _added(_step(PARTIAL, fusion="compiled", rotary="scripted"), ROTARY_FN)


def test_scripted_rotary_kernels_closed_form():
    """GPT-NeoX's torch.jit.script-ed rotary under the legacy fuser: rotate_half's neg + cat
    (a FusedConcat group: f N read, f N written), then q * cos + rotated * sin (2 f N, f N);
    with whole heads only the first, the rope op being the fused product and sum."""
    n = 4096
    partial = scripted_rotary_kernels(0.25, n)
    assert [(label, read, written) for label, _, read, written in partial] == [
        ("rotate_half", n // 4, n // 4), ("mul_add", n // 2, n // 4)]
    assert scripted_rotary_kernels(1.0, n) == [("rotate_half", OpKind.ELEMENTWISE, n, n)]


def test_scripted_step_counts_rotary_kernels():
    """Per layer, tensor (q, k) and pass: two kernels of 5 f N bytes before the rope op (the
    pass-through cat, N and N), and the backward's slice kernels; whole heads: one of 2 N, no
    slices, and the rope op reads 2 N."""
    step = _step(PARTIAL, rotary="scripted")
    ops = _added(step, ROTARY_FN)
    assert len(ops) == 2 * 2 * (2 + 2 + 4)   # the backward's slice kernels: 4 N
    assert _moved(ops) == 2 * 2 * (2 * 5 * Q_BYTES // 4 + 4 * Q_BYTES)
    full = _step(FULL, rotary="scripted")
    assert _moved(_added(full, ROTARY_FN)) == 2 * 2 * 2 * 2 * Q_BYTES
    ropes = [op for op in full.ops() if dict(op.extra).get("rotary_dims")]
    assert ropes and all(op.bytes_read == 2 * op.out_bytes for op in ropes)


def test_unknown_rotary_is_refused():
    with pytest.raises(PlanError, match="rotary"):
        Plan(rotary="jit")


@pytest.mark.parametrize("layout, forward_tensors, backward_tensors", [
    ("native", 0, 0), ("sbhd", 4, 0), ("sbhd-packed", 7, 1)])
def test_layout_copies_closed_form(layout, forward_tensors, backward_tensors):
    """sbhd: q, k, v and the output copied once per forward; sbhd-packed (GPT-NeoX): q, k, v
    twice (the transposes, then the packed concatenation: one kernel for the three) and the
    output once, and the output gradient once in the backward."""
    step = _step(PARTIAL, attention_layout=layout)
    ops = _added(step, LAYOUT_FN)
    forward = [op for op in ops if op.phase is Phase.FORWARD]
    backward = [op for op in ops if op.phase is Phase.BACKWARD]
    assert _moved(forward) == 2 * 2 * forward_tensors * Q_BYTES
    assert _moved(backward) == 2 * 2 * backward_tensors * Q_BYTES
    kernels = {"native": 0, "sbhd": 4, "sbhd-packed": 5}[layout]
    assert len(forward) == 2 * kernels
    assert all(op.kind is OpKind.COPY for op in ops)


def test_layout_output_copy_runs_before_the_output_projection():
    step = _step(FULL, attention_layout="sbhd")
    (copy,) = [op.name for op in _added(step, LAYOUT_FN)
               if op.task is Task.FORWARD and op.layer == 0 and "layout_out" in op.name]
    consumers = step.consumers(copy)
    assert any(step.op(c).kind is OpKind.MATMUL and step.op(c).phase is Phase.FORWARD
               for c in consumers)


def test_recompute_copies_layout_but_not_flash_recomputation():
    """Full recomputation runs the forward's copies again; FlashAttention's own recomputation
    inside its backward moves nothing."""
    step = _step(PARTIAL, attention_layout="sbhd", recompute="full")
    ops = _added(step, LAYOUT_FN)
    assert len([op for op in ops if op.phase is Phase.RECOMPUTE]) == 2 * 4


def test_layout_copies_of_a_backward():
    """Megatron-LM's sbhd backward hands FlashAttention a strided view (no copy); GPT-NeoX's
    packed path reshapes the output gradient (one copy); the packed dqkv splits by views."""
    assert layout_copies(AttentionLayout.SBHD, Task.DATA_GRAD, [1, 1, 1], 1) == ([], [])
    assert layout_copies(AttentionLayout.SBHD_PACKED, Task.DATA_GRAD, [3, 1, 1], 2) == ([2], [])
    assert layout_copies(AttentionLayout.SBHD_PACKED, Task.FORWARD, [3, 1, 1], 2) == (
        [3, 1, 1, 5], [2])


@settings(max_examples=10, deadline=None)
@given(layers=st.integers(1, 3), pct=st.sampled_from([0.25, 0.5, 1.0]),
       fusion=st.sampled_from(["eager", "compiled"]))
def test_layout_copies_never_speed_a_step_up(layers, pct, fusion):
    model = TransformerConfig("m", layers, 256, 4, vocab=512, seq_len=256,
                              learned_positions=False, rotary_pct=pct)
    times = [simulate(model, "a100-sxm4-80gb", micro_batch=2, fusion=fusion,
                      attention_layout=layout).step_time_s
             for layout in ("native", "sbhd", "sbhd-packed")]
    assert times == sorted(times) and times[0] < times[2]


def test_eager_rotary_never_speeds_a_step_up(monkeypatch):
    from simulator.parallel import rank
    with_kernels = simulate(PARTIAL, "a100-sxm4-80gb", micro_batch=2).step_time_s
    monkeypatch.setattr(rank, "add_qkv_kernels", lambda step, plan: step)
    without = simulate(PARTIAL, "a100-sxm4-80gb", micro_batch=2).step_time_s
    assert with_kernels > without


def test_learned_positions_get_no_rotary_kernels():
    model = TransformerConfig("gpt", 2, 512, 8, vocab=1000, seq_len=128)
    assert not _added(_step(model), ROTARY_FN)


@pytest.mark.parametrize("pct", [0, 1.5, -0.25, True, "quarter"])
def test_rotary_pct_must_be_a_fraction(pct):
    with pytest.raises(WorkloadError, match="rotary_pct"):
        TransformerConfig("m", 2, 512, 8, vocab=1000, seq_len=128, learned_positions=False,
                          rotary_pct=pct)


def test_unknown_attention_layout_is_refused():
    with pytest.raises(PlanError, match="attention_layout.*native, sbhd, sbhd-packed"):
        Plan(attention_layout="bshd")


def test_workload_file_takes_rotary_pct(tmp_path):
    from workloads.zoo import get_workload
    path = tmp_path / "neox.toml"
    text = ('[transformer]\nlayers = 2\nhidden = 512\nheads = 8\nvocab = 1000\nseq_len = 128\n'
            'learned_positions = false\nrotary_pct = {}\n')
    path.write_text(text.format("0.25"))
    assert get_workload(str(path)).rotary_pct == 0.25
    path.write_text(text.format('"quarter"'))
    with pytest.raises(WorkloadError, match="rotary_pct.*must be a number"):
        get_workload(str(path))


@pytest.mark.parametrize("model, pct", [("pythia-160m", 0.25), ("phi-2", 0.4)])
def test_hf_configs_carry_the_rotated_fraction(model, pct):
    """GPT-NeoX's rotary_pct and Phi's partial_rotary_factor, as their config.json give them."""
    from pathlib import Path

    from workloads.hf_config import load_hf_config
    path = Path(__file__).parent / "data" / "hf_configs" / model / "config.json"
    assert load_hf_config(path).rotary_pct == pct
