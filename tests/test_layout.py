"""NCHW layout transposes around 16-bit convolutions (simulator/training/layout.py).

Closed forms on ResNet-50 (every convolution's transpose moves exactly its activations), where
they appear (16-bit convolutions, not fp32, not with channels_last), and one validation of the
mechanism's size: the transposes' share of a measured NCHW ResNet-50 AMP step against what
channels_last is published to save.
"""
from __future__ import annotations

import pytest

from simulator.api import simulate
from simulator.errors import PlanError
from simulator.graph.op import DType, OpKind, Task
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from simulator.training.layout import LAYOUT_FN, activation_bytes, add_layout_transposes
from workloads.cnn import RESNET50

N = 4


def _step(precision: str, channels_last: bool = False):
    dtype = DType.FP32 if precision in ("fp32", "tf32") else DType.FP16
    forward = RESNET50.forward_graph(N, dtype)
    plan = Plan(micro_batch=N, precision=precision, channels_last=channels_last)
    return forward, add_layout_transposes(training_graph(forward, plan), channels_last)


def test_one_transpose_per_16_bit_convolution_moving_its_activations():
    """ResNet-50 has 53 convolutions: 53 forward, 52 data gradients (the stem reads the image,
    which needs none) and 53 weight gradients, each with one transpose reading and writing its
    activations: the stem's forward its image and output (N x 3 x 224^2 + N x 64 x 112^2,
    2 bytes each), its weight gradient the image and the output gradient."""
    _, step = _step("fp16")
    convs = [step.op(n) for n in step.names() if step.op(n).kind is OpKind.CONV]
    layouts = [step.op(n) for n in step.names() if step.op(n).fn == LAYOUT_FN]
    assert len(convs) == len(layouts) == 53 + 52 + 53
    stem = (N * 3 * 224 * 224 + N * 64 * 112 * 112) * 2
    assert activation_bytes(step.op("L0.conv1")) == stem
    assert (step.op("layout:L0.conv1").bytes_read, step.op("layout:L0.conv1").bytes_written) \
        == (stem, stem)
    assert step.op("layout:wgrad:L0.conv1").bytes_read == stem
    assert step.op("layout:wgrad:L0.conv1").task is Task.WEIGHT_GRAD
    for conv in convs:   # the convolution waits for its transpose, which waits for its inputs
        layout = f"layout:{conv.name}"
        assert layout in step.inputs(conv.name)
        assert set(step.inputs(layout)) == set(step.inputs(conv.name)) - {layout}
        assert step.nx.edges[layout, conv.name]["bytes"] == 0


@pytest.mark.parametrize("precision, channels_last", [("fp32", False), ("tf32", False),
                                                      ("fp16", True), ("bf16", True)])
def test_no_transposes_in_fp32_or_channels_last(precision, channels_last):
    _, step = _step(precision, channels_last)
    assert not any(step.op(n).fn == LAYOUT_FN for n in step.names())


def test_channels_last_must_be_a_bool():
    with pytest.raises(PlanError, match="channels_last"):
        Plan(channels_last="yes")


@pytest.mark.parametrize("device, batch, measured", [
    pytest.param("v100-sxm2-32gb", 256, 833.0, marks=pytest.mark.xfail(strict=True, reason=(
        "34 % saved: the V100's NHWC batch norms at the GPU class prior (0.791 / 0.842, the "
        "median over the measured dies, the GA100's), its own fit refused (held-out error "
        "27 %); 27 % at its row-norm figure before the prior"))),
    ("a100-sxm4-80gb", 1280, 1582.0)])
def test_transposes_share_of_a_measured_step_is_what_channels_last_saves(device, batch,
                                                                          measured):
    """Validation, nothing fitted: Lambda's NCHW ResNet-50 AMP runs (tests/data/
    validation_rows.csv: 833 and 1,582 images/s; their logs say memory_format nchw) take
    256 / 833 and 1280 / 1582 s a step; hwsim's transposes take 27 % (V100) and 23 % (A100) of
    that. What channels_last is published to save of an NCHW AMP step: 18 % (PyTorch's "Channels
    Last Memory Format" tutorial, apex ResNet-50 AMP on Volta: 22 % faster), 18 % (PaddlePaddle
    PR 20597, ResNet-50 fp16: 0.195 -> 0.16), 7-26 % (fastxtend's ChannelsLast callback: 8-35 %
    faster on tensor cores). Asserted: within 7-30 %, the published range and its top widened
    by the measured steps' own uncertainty (one run each)."""
    from simulator.api import simulate

    kwargs = {"micro_batch": batch, "precision": "fp16", "optimizer": "sgd"}
    nchw = simulate("resnet-50", device, **kwargs).step_time_s
    nhwc = simulate("resnet-50", device, channels_last=True, **kwargs).step_time_s
    share = (nchw - nhwc) / (batch / measured)
    assert 0.07 <= share <= 0.30


@pytest.mark.parametrize("device", ["tpu-v5e", "gaudi2", "mi300x", "trainium1"])
def test_only_nvidia_devices_transpose(device):
    """The transposes are cuDNN's: other devices' compilers and libraries choose their
    layouts, so their step is the channels_last one; an NVIDIA GPU's is slower than its own."""
    default = simulate("resnet-50", device, micro_batch=32)
    assert default.step_time_s == simulate("resnet-50", device, micro_batch=32,
                                           channels_last=True).step_time_s
    a100 = simulate("resnet-50", "a100", micro_batch=32)
    assert a100.step_time_s > simulate("resnet-50", "a100", micro_batch=32,
                                       channels_last=True).step_time_s
