"""cuDNN's batch-norm/convolution fusion (simulator/training/convnorm.py, Plan.conv_norm_fusion).

Closed forms on ResNet-50's bottleneck L5 (stage 2's second block: 512 channels out at 28 x 28,
128 inside): the tensors it no longer moves, forward and backward; where the norms go (the stem's
stays); invariants over the ResNets and batch sizes (no FLOP or parameter lost, never more
bytes, never slower); a graph without a convolution's batch norm unchanged; bad input.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.api import simulate
from simulator.cli import main
from simulator.errors import PlanError
from simulator.graph.op import DType, OpKind, Phase
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from simulator.training.convnorm import fuse_conv_norm
from workloads.cnn import RESNET50
from workloads.zoo import get_workload as get_model

N = 4


def _steps(model=RESNET50, n: int = N):
    forward = model.forward_graph(n, DType.FP16)
    plan = Plan(micro_batch=n, precision="fp16", channels_last=True, conv_norm_fusion=True)
    step = training_graph(forward, plan)
    return step, fuse_conv_norm(step)


def _bytes(graph, layer: int, phase: Phase) -> int:
    return sum(op.bytes for op in graph.ops() if op.layer == layer and op.phase is phase)


def test_bottleneck_moves_closed_form_fewer_bytes():
    """Block L5, T = N x 512 x 28^2 x 2 bytes (its output), t = T / 4 (inside), m = T / 16 (the
    one-bit ReLU mask). Forward: its two inner norms (read 2t, write t) and ReLUs (read t,
    write t) go: 10t; the last norm (read 2T, write T) and ReLU (read T, write T) fold into the
    residual add, which writes the mask: 5T - m (and the norms' own reads of their per-channel
    scales and shifts, left out of the fused kernels' counts). Backward: the gradient sum of
    its output (read 2T, write T: 3T) moves into L6's first data gradient, the three ReLU
    gradients go (3t, 3t and 3T), the last norm's backward writes the residual's gradient (T)
    and reads the mask twice (2m), and its first data gradient reads L4's output gradient (T):
    3T + 6t + 3T - T - 2m - T."""
    before, after = _steps()
    big = N * 512 * 28 * 28 * 2
    t, m = big // 4, big // 16
    scales = 2 * (128 + 128 + 512) * 2   # the norms' fp16 scales and shifts, read by them
    assert _bytes(before, 5, Phase.FORWARD) - _bytes(after, 5, Phase.FORWARD) \
        == 10 * t + 5 * big - m + scales
    assert _bytes(before, 5, Phase.BACKWARD) - _bytes(after, 5, Phase.BACKWARD) \
        == 3 * big + (3 * t + 3 * t + 3 * big) - big - 2 * m - big
    assert after.op("L5.residual").mask_bytes == m
    assert after.op("dgrad:L6.conv1").bytes_read - before.op("dgrad:L6.conv1").bytes_read == big


def test_only_the_stem_norm_stays():
    """ResNet-50's 53 batch norms: 32 inside bottlenecks go into convolutions, 16 last norms and
    4 projection norms into the residual adds; the stem's (read by a max pool) stays. Of its
    49 ReLUs the stem's stays; no backward ReLU kernel is left but the stem's."""
    before, after = _steps()

    def count(graph, kind, fn, phase):
        return sum(op.kind is kind and op.fn == fn and op.phase is phase for op in graph.ops())

    assert count(before, OpKind.NORM, "batchnorm", Phase.FORWARD) == 53
    assert count(after, OpKind.NORM, "batchnorm", Phase.FORWARD) == 1
    assert count(before, OpKind.ELEMENTWISE, "relu", Phase.FORWARD) == 49
    assert count(after, OpKind.ELEMENTWISE, "relu", Phase.FORWARD) == 1
    assert count(after, OpKind.ELEMENTWISE, "relu", Phase.BACKWARD) == 1
    assert count(after, OpKind.NORM, "batchnorm", Phase.BACKWARD) == 53   # one each, kept
    assert after.is_dag()


@settings(max_examples=8, deadline=None)
@given(model=st.sampled_from(["resnet-18", "resnet-50", "resnet-101"]),
       n=st.integers(min_value=1, max_value=64))
def test_no_flop_or_parameter_lost_and_never_more_bytes(model, n):
    before, after = _steps(get_model(model), n)
    assert after.model_flops() == before.model_flops()
    assert after.params() == before.params()
    assert sum(op.bytes for op in after.ops()) < sum(op.bytes for op in before.ops())
    assert after.is_dag()


@settings(max_examples=4, deadline=None)
@given(n=st.sampled_from([8, 32, 128]), fusion=st.sampled_from(["eager", "compiled"]))
def test_never_slower_nor_more_memory(n, fusion):
    kw = {"micro_batch": n, "precision": "fp16", "channels_last": True, "fusion": fusion}
    plain = simulate("resnet-50", "h100-sxm5-80gb", **kw)
    fused = simulate("resnet-50", "h100-sxm5-80gb", conv_norm_fusion=True, **kw)
    assert fused.step_time_s < plain.step_time_s
    assert fused.peak_memory_bytes <= plain.peak_memory_bytes
    assert fused.flops_per_step == plain.flops_per_step


def test_graph_without_conv_norms_unchanged():
    forward = get_model("gpt2").forward_graph(2, DType.BF16)
    step = training_graph(forward, Plan(micro_batch=2))
    same = fuse_conv_norm(step)
    assert same.names() == step.names()
    assert [op.bytes for op in same.ops()] == [op.bytes for op in step.ops()]


@pytest.mark.parametrize("fields, match", [
    ({"conv_norm_fusion": True}, "channels_last"),
    ({"conv_norm_fusion": True, "channels_last": True, "precision": "fp32"}, "fp16"),
    ({"conv_norm_fusion": True, "channels_last": True, "precision": "bf16"}, "fp16"),
    ({"conv_norm_fusion": "yes", "channels_last": True}, "true or false"),
])
def test_bad_plans_refused(fields, match):
    with pytest.raises(PlanError, match=match):
        Plan(**fields)


def test_cli_one_line_exit_2(capsys):
    assert main(["predict", "resnet-50", "--device", "h100-sxm5-80gb", "--micro-batch", "8",
                 "--precision", "fp16", "--conv-norm-fusion"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "channels_last" in err


@pytest.mark.parametrize("device", ["tpu-v4", "mi300x", "cpu-host", "gaudi3", "v100-sxm2-32gb",
                                    "t4", "p100-pcie-16gb"])
def test_refused_where_cudnn_does_not_fuse(device, capsys):
    """Another vendor's device, or an NVIDIA GPU older than sm80: one line, exit 2."""
    with pytest.raises(PlanError, match="compute capability 8.0"):
        simulate("resnet-50", device, micro_batch=8, precision="fp16", channels_last=True,
                 conv_norm_fusion=True)
    assert main(["predict", "resnet-50", "--device", device, "--micro-batch", "8",
                 "--precision", "fp16", "--channels-last", "--conv-norm-fusion"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and device in err


@pytest.mark.parametrize("device", ["a100-sxm4-80gb", "l40s", "b200"])
def test_runs_on_sm80_and_later(device):
    kw = {"micro_batch": 8, "precision": "fp16", "channels_last": True}
    fused = simulate("resnet-50", device, conv_norm_fusion=True, **kw)
    assert fused.step_time_s < simulate("resnet-50", device, **kw).step_time_s


def test_a_renamed_pre_sm80_spec_is_refused_too():
    """A V100 spec under another name (a calibrated or user's copy) is refused by its missing
    bf16 peak (bf16 tensor cores came with compute capability 8.0), not let through by name."""
    import dataclasses

    from hardware_specs.loader import load_device

    copy = dataclasses.replace(load_device("v100-sxm2-32gb"), name="v100-calibrated")
    with pytest.raises(PlanError, match="compute capability 8.0"):
        simulate("resnet-50", copy, micro_batch=8, precision="fp16", channels_last=True,
                 conv_norm_fusion=True)
