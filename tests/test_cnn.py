"""ResNet and MLP workloads: parameter counts, MACs, graph structure.

Validation sources (tolerances stated per test):
- Parameter counts: torchvision.models weights tables ("num_params"): resnet18 11,689,512,
  resnet34 21,797,672, resnet50 25,557,032 (the "25.6M" of He et al. 2016), resnet101
  44,549,160, resnet152 60,192,808. Exact.
- MACs at 224 x 224, batch 1: torchvision weights tables, "GFLOPS" column (which counts
  multiply-accumulates): resnet18 1.81, resnet34 3.66, resnet50 4.09, resnet101 7.80,
  resnet152 11.51. Our conv + fc count is exact (resnet50: 4,089,184,256); the published figures
  are rounded to 3 significant digits, so they are checked within 1%. He et al. 2016 Table 1's
  3.8e9 "FLOPs" for ResNet-50 is the v1 model (stride on the first 1x1 conv), not v1.5.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from simulator.errors import WorkloadError
from simulator.graph.op import DType, OpKind
from workloads.base import Workload
from workloads.cnn import (PRESETS as CNN_PRESETS, RESNET18, RESNET50, ResBlock,
                           ResNetConfig)
from workloads.mlp import MLP, PRESETS as MLP_PRESETS, MLPConfig

TORCHVISION_PARAMS = {
    "resnet-18": 11_689_512, "resnet-34": 21_797_672, "resnet-50": 25_557_032,
    "resnet-101": 44_549_160, "resnet-152": 60_192_808,
}
TORCHVISION_GMACS = {
    "resnet-18": 1.81, "resnet-34": 3.66, "resnet-50": 4.09,
    "resnet-101": 7.80, "resnet-152": 11.51,
}
RESNET50_MACS = 4_089_184_256  # our exact conv + fc count at 224 x 224, batch 1
RESNET18_MACS = 1_814_073_344


def macs(graph) -> int:
    return graph.model_flops() // 2


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_params_match_torchvision(name):
    model = CNN_PRESETS[name]
    assert model.num_params() == TORCHVISION_PARAMS[name]
    assert model.forward_graph(1).params() == model.num_params()


@pytest.mark.parametrize("name", sorted(TORCHVISION_GMACS))
def test_macs_match_torchvision(name):
    published = TORCHVISION_GMACS[name] * 1e9
    assert macs(CNN_PRESETS[name].forward_graph(1)) == pytest.approx(published, rel=0.01)


def test_resnet50_and_18_exact_macs():
    assert macs(RESNET50.forward_graph(1)) == RESNET50_MACS
    assert macs(RESNET18.forward_graph(1)) == RESNET18_MACS
    assert RESNET18_MACS == pytest.approx(1.82e9, rel=0.01)


def test_model_flops_are_conv_and_matmul_only():
    graph = RESNET50.forward_graph(2)
    tensor = sum(op.flops for op in graph.ops() if op.kind in (OpKind.CONV, OpKind.MATMUL))
    assert graph.model_flops() == tensor
    assert [op.name for op in graph.select(kind=OpKind.MATMUL)] == ["L17.fc"]  # the classifier


@pytest.mark.parametrize("model", [RESNET18, RESNET50, MLP], ids=lambda m: m.name)
def test_graph_is_dag_ending_in_loss(model):
    graph = model.forward_graph(2)
    assert graph.is_dag()
    sinks = [n for n in graph.names() if not graph.consumers(n)]
    assert sinks == [graph.names()[-1]] and graph.op(sinks[0]).kind == OpKind.LOSS
    assert isinstance(model, Workload) and model.tokens_per_sample is None


@pytest.mark.parametrize("model", [RESNET18, RESNET50, MLP], ids=lambda m: m.name)
def test_tensor_sizes_chain(model):
    """What an op reads = its producers' outputs + its own weights (+ labels for the loss)."""
    graph = model.forward_graph(3)
    es = DType.FP32.bytes
    for name in graph.names():
        producers = graph.inputs(name)
        if not producers:
            continue
        op = graph.op(name)
        labels = 3 * DType.INT64.bytes if op.kind == OpKind.LOSS else 0
        incoming = sum(graph.op(p).out_bytes for p in producers)
        passes = 2 if op.fn == "batchnorm" else 1   # statistics, then normalise
        assert op.bytes_read == passes * incoming + op.params * es + labels, name


@pytest.mark.parametrize("dtype", [DType.FP32, DType.FP16])
def test_batchnorm_bytes_as_pytorch_runs_it(dtype):
    """Closed form of a BatchNorm2d over an (N, C, H, W) map in training (PyTorch's CUDA
    kernels, ``simulator.graph.op.CHANNEL_NORMS``): forward reads the map twice (statistics,
    then normalise) and the 2C affine parameters, writes it once; backward reads the output
    gradient and the input twice each (reduce, then the input gradient) and the 2C fp32 mean /
    rstd, writes the input gradient and the 2C parameter gradients. ReLU (for contrast) reads
    once and writes once; its backward reads the gradient and its output."""
    from simulator.plan.step import Plan
    from simulator.training.backward import training_graph

    n, c, h = 4, 64, 112   # the stem: 7x7/2 conv of a 224 x 224 image
    graph = RESNET50.forward_graph(n, dtype)
    es, numel = dtype.bytes, n * c * h * h
    bn = graph.op("L0.batchnorm")
    assert (bn.bytes_read, bn.bytes_written) == (2 * numel * es + 2 * c * es, numel * es)
    precision = "fp32" if dtype is DType.FP32 else "fp16"
    step = training_graph(graph, Plan(micro_batch=n, precision=precision))
    grad = step.op("grad:L0.batchnorm")
    assert grad.bytes_read == 4 * numel * es + 2 * c * 4
    # parameter gradients in the plan's gradient format: fp16 under fp16 (AMP), fp32 under fp32
    assert grad.bytes_written == numel * es + 2 * c * es
    relu = graph.op("L0.relu")
    assert (relu.bytes_read, relu.bytes_written) == (numel * es, numel * es)
    assert step.op("grad:L0.relu").bytes_read == 2 * numel * es


def test_resnet_layers_and_shapes():
    graph = RESNET50.forward_graph(1)
    layers = {op.layer for op in graph.ops()}
    assert layers == set(range(RESNET50.num_blocks + 2))  # stem 0, blocks 1..16, head 17
    downsamples = [op for op in graph.ops() if op.name.endswith("downsample")]
    assert len(downsamples) == 4  # first block of each stage (Table 1)
    last_conv = [op for op in graph.ops() if op.kind == OpKind.CONV][-1]
    assert dict(last_conv.extra)["h"] == 7  # conv5_x output is 7 x 7 (Table 1)
    assert graph.op(graph.names()[-2]).k == 2048


def test_bottleneck_stride_on_3x3():
    """torchvision v1.5: the first block of stage 2 strides on conv2 (3x3), not conv1."""
    graph = RESNET50.forward_graph(1)
    first = RESNET50.layers[0] + 1
    strides = {n.split(".")[1]: dict(graph.op(n).extra)["stride"]
               for n in graph.names() if n.startswith(f"L{first}.conv")}
    assert strides == {"conv1": 1, "conv2": 2, "conv3": 1}


@settings(max_examples=10, deadline=None)
@given(batch=st.integers(1, 64))
def test_flops_scale_linearly_with_batch(batch):
    for model in (RESNET18, MLP):
        one, many = model.forward_graph(1), model.forward_graph(batch)
        assert many.model_flops() == batch * one.model_flops()
        assert many.params() == one.params()


@settings(max_examples=25, deadline=None)
@given(inp=st.integers(1, 4096), hidden=st.lists(st.integers(1, 4096), max_size=4),
       classes=st.integers(1, 1000), act=st.sampled_from(["relu", "gelu"]))
def test_mlp_params_closed_form(inp, hidden, classes, act):
    model = MLPConfig("m", inp, tuple(hidden), classes, act)
    widths = [inp, *hidden, classes]
    expected = sum(a * b + b for a, b in zip(widths, widths[1:]))
    assert model.num_params() == expected == model.forward_graph(2).params()
    graph = model.forward_graph(5)
    assert macs(graph) == 5 * sum(a * b for a, b in zip(widths, widths[1:]))
    assert {op.layer for op in graph.ops()} == set(range(len(hidden) + 1))


def test_mlp_preset():
    assert MLP.num_params() == 784 * 1024 + 1024 + 2 * (1024 * 1024 + 1024) + 1024 * 10 + 10
    assert MLP_PRESETS["mlp"] is MLP


def test_dtype_halves_activation_bytes():
    fp32, bf16 = RESNET18.forward_graph(2), RESNET18.forward_graph(2, DType.BF16)
    def activations(graph):  # the loss's output is a scalar of fixed size
        return sum(o.out_bytes for o in graph.ops() if o.kind != OpKind.LOSS)
    assert activations(bf16) * 2 == activations(fp32)
    assert all(o.param_dtype == DType.BF16 for o in bf16.ops())


@pytest.mark.parametrize("size", [1, 32, 64, 299])
def test_other_image_sizes_and_widths(size):
    small = ResNetConfig("r18-small", ResBlock.BASIC, image_size=size, num_classes=10, width=32)
    graph = small.forward_graph(4)
    assert graph.params() == small.num_params() and graph.is_dag()
    assert macs(graph) > 0


@pytest.mark.parametrize("kwargs", [
    {"block": "dense"}, {"layers": (2, 2, 2)}, {"layers": (2, 0, 2, 2)}, {"width": 0},
    {"image_size": 0},
])
def test_bad_resnet_config(kwargs):
    with pytest.raises(WorkloadError):
        ResNetConfig("bad", **kwargs).forward_graph(1)


def test_bad_inputs():
    with pytest.raises(WorkloadError):
        MLPConfig("bad", 10, (10,), 2, "tanh")
    with pytest.raises(WorkloadError):
        RESNET18.forward_graph(0)
