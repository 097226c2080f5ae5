"""A linear's bias added by a kernel of its own (simulator.training.bias, Plan.bias_add): GPT-NeoX
on PyTorch 1.8 adds q/k/v's, the attention output's and the MLP output's biases after their
GEMMs, fc1's inside the bias-GELU kernel; closed-form kernels and bytes, and invariants."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import simulate
from simulator.cli.main import main
from simulator.errors import PlanError
from simulator.graph.op import DType, OpKind, Phase
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from simulator.training.bias import BIAS_FN, add_bias_kernels
from simulator.training.fusion import fuse_attention
from workloads.transformer import Ffn, Residual, TransformerConfig

# GPT-NeoX's layer (Pythia-70M's width): parallel residual, GELU MLP, biases everywhere
NEOX = TransformerConfig("neox", 2, 512, 8, vocab=1000, seq_len=128, learned_positions=False,
                         rotary_pct=0.25, residual=Residual.PARALLEL, dropout=False)
BATCH = 2
ROWS = BATCH * 128
BIASED = {"q_proj": 512, "k_proj": 512, "v_proj": 512, "o_proj": 512, "fc2": 512}   # outputs


def _step(model=NEOX, **plan):
    plan = Plan(micro_batch=BATCH, precision="fp16", **plan)
    return training_graph(fuse_attention(model.forward_graph(BATCH, DType.FP16)), plan)


def _bias_ops(step):
    return [op for op in step.ops() if op.name.startswith("bias_add:")
            or op.name.startswith("recompute:bias_add:")]


@pytest.mark.parametrize("recompute, passes", [("none", 1), ("full", 2)])
def test_bias_kernels_closed_form(recompute, passes):
    """Per layer and pass: q, k, v, the attention output and fc2 each get one kernel reading the
    output (rows x outputs x 2 bytes) and the bias (outputs x 2), writing the output; fc1,
    whose bias the GELU kernel adds, none."""
    ops = _bias_ops(_step(bias_add="separate", recompute=recompute))
    assert len(ops) == NEOX.layers * len(BIASED) * passes
    assert all(op.kind is OpKind.ELEMENTWISE and op.fn == BIAS_FN for op in ops)
    assert not [op for op in ops if op.name.endswith("fc1")]
    for op in ops:
        out = BIASED[op.name.split(".")[-1]]
        assert (op.bytes_read, op.bytes_written) == ((ROWS + 1) * out * 2, ROWS * out * 2)
    moved = sum(op.bytes_read + op.bytes_written for op in ops)
    assert moved == passes * NEOX.layers * sum((2 * ROWS + 1) * out * 2
                                               for out in BIASED.values())


def test_bias_kernel_sits_between_its_linear_and_its_readers():
    fused, step = _step(), _step(bias_add="separate")
    for layer in range(NEOX.layers):
        for linear in BIASED:
            name = f"L{layer}.{linear}"
            kernel = f"bias_add:{name}"
            assert step.consumers(name) == [kernel]
            assert sorted(step.consumers(kernel)) == sorted(fused.consumers(name))
            order = step.names()
            assert order.index(kernel) == order.index(name) + 1   # issued just after its GEMM


def test_bias_kernels_add_no_backward_kernel():
    """An addition's gradient passes through (autograd's AddBackward): the backward and the
    update are the same ops, reading the same bytes, as with the bias in the GEMM."""
    def backward(step):
        return {op.name: (op.bytes_read, op.bytes_written) for op in step.ops()
                if op.phase in (Phase.BACKWARD, Phase.OPTIMIZER)}
    assert backward(_step(bias_add="separate")) == backward(_step())


@pytest.mark.parametrize("plan", [{}, {"bias_add": "separate", "fusion": "compiled"}])
def test_fused_bias_and_compiled_fusion_add_none(plan):
    assert not _bias_ops(_step(**plan))


def test_separate_bias_under_compiled_fusion_is_noted():
    """--bias-add separate adds no kernel under compiled fusion: the step is the fused one's,
    and the result says so; under eager fusion there is no such note."""
    compiled = simulate(NEOX, "a100", micro_batch=BATCH, fusion="compiled", bias_add="separate")
    fused = simulate(NEOX, "a100", micro_batch=BATCH, fusion="compiled")
    eager = simulate(NEOX, "a100", micro_batch=BATCH, bias_add="separate")
    assert compiled.step_time_s == fused.step_time_s
    noted = [n for n in compiled.notes if n.startswith("bias_add separate")]
    assert len(noted) == 1 and "eager fusion only" in noted[0] and "--fusion eager" in noted[0]
    assert not any(n.startswith("bias_add separate") for n in fused.notes + eager.notes)


def test_unbiased_linears_get_none():
    llama = TransformerConfig("llama-ish", 2, 512, 8, vocab=1000, seq_len=128, bias=False,
                              learned_positions=False, ffn=Ffn.SWIGLU)
    assert not _bias_ops(_step(llama, bias_add="separate"))


def test_graph_without_kernels_is_returned_unchanged():
    plan = Plan(micro_batch=BATCH)
    forward = NEOX.forward_graph(BATCH, DType.FP16)
    assert add_bias_kernels(forward, plan) is forward


def test_unknown_bias_add_is_refused():
    with pytest.raises(PlanError, match="bias_add"):
        Plan(bias_add="epilogue")


def test_cli_refuses_unknown_bias_add(capsys):
    code = main(["predict", "gpt2-small", "--device", "a100-sxm4-40gb", "--bias-add",
                 "epilogue"])
    err = capsys.readouterr().err
    assert code == 2 and "--bias-add" in err and len(err.strip().splitlines()) == 1


@settings(max_examples=8, deadline=None)
@given(layers=st.integers(1, 3), hidden=st.sampled_from([256, 512]),
       recompute=st.sampled_from(["none", "full"]))
def test_separate_bias_never_speeds_a_step_up(layers, hidden, recompute):
    model = TransformerConfig("m", layers, hidden, 4, vocab=512, seq_len=256,
                              learned_positions=False, residual=Residual.PARALLEL)
    fused, separate = (simulate(model, "a100-sxm4-40gb", micro_batch=2, precision="fp16",
                                recompute=recompute, bias_add=mode).step_time_s
                       for mode in ("fused", "separate"))
    assert separate > fused
