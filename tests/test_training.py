"""The training graph: backward structure, exact FLOPs (Narayanan et al. 2021), recomputation."""
import pytest
from hypothesis import given, settings, strategies as st

from simulator.errors import PlanError
from simulator.graph.opgraph import OpGraph
from simulator.graph.op import TENSOR_KINDS, Block, DType, OpKind, Phase
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from workloads.layers import Builder
from workloads.presets import TRANSFORMERS
from workloads.zoo import MODELS


def _narayanan(b, s, l, h, v, recompute):
    """Narayanan et al. 2021, eq. 3: 72Bslh^2(1 + s/6h + V/12lh) per step without
    recomputation; 96Bslh^2(1 + s/6h + V/16lh) with full recomputation (the logit layer is not
    recomputed, hence V/16lh)."""
    if recompute == "full":
        return 96 * b * s * l * h * h * (1 + s / (6 * h) + v / (16 * l * h))
    return 72 * b * s * l * h * h * (1 + s / (6 * h) + v / (12 * l * h))


@pytest.mark.parametrize("name", ["gpt2-small", "gpt3-6.7b", "gpt3-175b"])
@pytest.mark.parametrize("recompute", ["none", "full"])
def test_gpt_step_flops_equal_narayanan_eq3(name, recompute):
    c = TRANSFORMERS[name]
    step = training_graph(c.forward_graph(4, DType.BF16), Plan(micro_batch=4, recompute=recompute))
    expected = _narayanan(4, c.seq_len, c.layers, c.hidden, c.vocab, recompute)
    assert step.model_flops() == pytest.approx(expected, rel=1e-9)  # issue asks 0.5%; exact


def test_selective_recompute_adds_only_the_attention_core():
    """Korthikanti et al. 2022: selective recomputation re-runs QK^T and AV (4Bs^2h per layer)."""
    c = TRANSFORMERS["gpt3-1.3b"]
    fwd = c.forward_graph(1, DType.BF16)
    step = training_graph(fwd, Plan(recompute="selective"))
    recomputed = step.model_flops([Phase.RECOMPUTE])
    assert recomputed == 4 * c.seq_len ** 2 * c.hidden * c.layers


def test_matmul_backward_is_exactly_twice_forward():
    for name in ["gpt2-small", "llama2-7b", "bert-base", "vit-b16", "resnet-50", "mlp"]:
        fwd = MODELS[name].forward_graph(2)
        step = training_graph(fwd, Plan(micro_batch=2, precision="fp32"))
        by_forward = {}
        for op in step.ops():
            if op.phase is Phase.BACKWARD and op.kind in TENSOR_KINDS:
                by_forward[op.forward_of] = by_forward.get(op.forward_of, 0) + op.flops
        for op in fwd.ops():
            if op.kind in TENSOR_KINDS:
                has_data_input = bool(fwd.inputs(op.name))
                # an input from outside the graph (pixels, the first MLP input) gets no
                # gradient, as in PyTorch: then only the weight gradient remains
                factor = 2 if has_data_input or op.fn == "bmm" else 1
                assert by_forward[op.name] == factor * op.flops, (name, op.name)


def test_backward_depends_on_forward_tensors_it_reads():
    fwd = TRANSFORMERS["gpt2-small"].forward_graph(1)
    step = training_graph(fwd, Plan(precision="fp32"))
    assert step.is_dag()
    for op in step.ops():
        if op.phase is not Phase.BACKWARD or not op.forward_of or op.fn == "add":
            continue
        if op.name.startswith("bgrad"):   # a bias gradient reads the output gradient only
            continue
        source = fwd.op(op.forward_of)
        preds = set(step.inputs(op.name))
        if "inputs" in source.saves and op.kind not in TENSOR_KINDS:
            assert set(fwd.inputs(source.name)) <= preds, op.name
        if source.mask_bytes or "output" in source.saves:
            assert source.name in preds, op.name
        if op.name.startswith("wgrad") and fwd.inputs(source.name):
            assert fwd.inputs(source.name)[0] in preds, op.name


def test_recomputed_tensors_are_read_from_the_copies():
    fwd = TRANSFORMERS["gpt2-small"].forward_graph(1)
    step = training_graph(fwd, Plan(recompute="full"))
    assert step.is_dag()
    grad_softmax = "grad:L3.softmax"
    assert "recompute:L3.softmax" in step.inputs(grad_softmax)
    assert "L3.softmax" not in step.inputs(grad_softmax)
    # recomputation of layer 3 waits until the backward has reached it
    assert any(n.startswith(("grad", "dgrad", "wgrad")) and "L4" in n
               for n in _ancestors(step, "recompute:L3.layernorm"))


def _ancestors(graph, name):
    import networkx as nx
    return nx.ancestors(graph.nx, name)


def test_optimizer_updates_every_parameter_once_after_its_gradient():
    fwd = TRANSFORMERS["llama2-7b"].forward_graph(1, DType.BF16)
    step = training_graph(fwd, Plan())
    updates = step.select(phase=Phase.OPTIMIZER)
    assert sum(op.params for op in updates) == fwd.params() == step.params()
    for op in updates:
        assert step.inputs(op.name), op.name  # waits for the layer's weight gradients


@pytest.mark.parametrize("precision, grad_clip, fp32_grads, read, written", [
    ("fp32", False, False, 4 + 8 + 4, 4 + 8),              # torch.optim.AdamW, fp32 weights
    ("fp32", True, False, 4 + 8 + 4 + 4, 4 + 8),           # + the global-norm pass
    ("bf16", False, True, 4 + 8 + 4 + 4, 4 + 8 + 2),       # + master -> bf16 weight copy
    ("bf16", False, False, 2 + 4 + 8 + 4 + 4, 4 + 4 + 8 + 2),  # + bf16 -> fp32 gradients
    ("fp16", True, False, 2 + 4 + 8 + 4 + 4 + 4 + 4,       # + unscale, norm
     4 + 4 + 8 + 4 + 2),
])
def test_optimizer_traffic_per_parameter(precision, grad_clip, fp32_grads, read, written):
    """The bytes one step's optimizer passes move per parameter: the Adam update reads the
    fp32 master weight, both moments and the gradient and writes weight and moments back;
    with a master copy it works on fp32 gradients, 16-bit ones copied to fp32 first (read 2,
    write 4); fp16 unscales its loss-scaled gradients (read, write), clipping reads each
    gradient once more for the norm, and the master copy is copied to the 16-bit weights
    afterwards (read 4, write 2) -- Megatron-LM's Float16OptimizerWithFloat16Params step:
    52 B per parameter in fp16 with clipping, 34 B in bf16 with fp32 gradients."""
    fwd = TRANSFORMERS["gpt2-small"].forward_graph(1, DType.BF16)
    step = training_graph(fwd, Plan(precision=precision, optimizer="adamw",
                                    grad_clip=grad_clip, fp32_grads=fp32_grads,
                                    optimizer_impl="fused"))
    updates = step.select(phase=Phase.OPTIMIZER)
    params = sum(op.params for op in updates)
    assert sum(op.bytes_read for op in updates) == read * params
    assert sum(op.bytes_written for op in updates) == written * params
    # the for-loop and foreach updates (torch/optim/adamw.py) pass over memory 12 + 8 times
    # against the fused kernel's 4 + 3: 8 more fp32 reads and 5 more writes per parameter
    for impl in ("single", "foreach"):
        unfused = training_graph(fwd, Plan(precision=precision, optimizer="adamw",
                                           grad_clip=grad_clip, fp32_grads=fp32_grads,
                                           optimizer_impl=impl)).select(phase=Phase.OPTIMIZER)
        assert sum(op.bytes_read for op in unfused) == (read + 32) * params
        assert sum(op.bytes_written for op in unfused) == (written + 20) * params


def test_grad_clip_must_be_a_bool():
    with pytest.raises(PlanError, match="grad_clip = 'yes' must be true or false"):
        Plan(grad_clip="yes")


def test_precision_sets_the_matmul_format():
    """bf16 runs every tensor op in bf16. fp8 is Transformer Engine's: the layers' linear GEMMs
    (forward, data and weight gradients, recomputed copies) in fp8, attention's core (QK^T,
    AV or the fused kernel) and the output layer in bf16."""
    fwd = TRANSFORMERS["gpt2-small"].forward_graph(1, DType.BF16)
    tensor = (OpKind.MATMUL, OpKind.ATTENTION)
    step = training_graph(fwd, Plan(precision="bf16"))
    assert {op.dtype for op in step.ops() if op.kind in tensor} == {DType.BF16}
    for attention in ("materialized", "fused"):
        step = training_graph(fwd, Plan(precision="fp8", attention=attention,
                                        recompute="full"))
        for op in step.ops():
            if op.kind in tensor:
                linear = op.kind is OpKind.MATMUL and op.block not in (Block.ATTN_CORE,
                                                                        Block.HEAD)
                assert op.dtype is (DType.FP8 if linear else DType.BF16), op.name
        linears = [op for op in step.ops() if op.dtype is DType.FP8]
        assert {op.phase for op in linears} == {Phase.FORWARD, Phase.BACKWARD, Phase.RECOMPUTE}


@settings(max_examples=40, deadline=None)
@given(widths=st.lists(st.integers(1, 64), min_size=2, max_size=6), batch=st.integers(1, 8))
def test_mlp_step_flops_closed_form(widths, batch):
    """A chain of linears: 3x forward matmul FLOPs, minus the first layer's data gradient."""
    graph = OpGraph("mlp")
    b = Builder(graph)
    x = None
    for i, (a, c) in enumerate(zip(widths, widths[1:])):
        b.layer = i
        x = b.linear(f"fc{i}", x, batch, a, c)
    b.loss(x, batch, widths[-1])
    step = training_graph(graph, Plan(micro_batch=batch, precision="fp32"))
    fwd = sum(2 * batch * a * c for a, c in zip(widths, widths[1:]))
    first = 2 * batch * widths[0] * widths[1]
    assert step.model_flops() == 3 * fwd - first
    assert step.is_dag()
