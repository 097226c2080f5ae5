"""Batch norm fused with its ReLU, and a block's last norm with the residual add and ReLU
(simulator/training/convnorm.py ``fuse_norm_act``, Plan.norm_act_fusion: MXNet's
BatchNorm(act_type='relu') and BatchNormAddRelu, apex's NHWC kernels).

Closed forms on ResNet-50's bottleneck L5 (stage 2's second block: 512 channels out at 28 x 28,
128 inside); counts over ResNet-50; invariants (no FLOP or parameter lost, fewer bytes, never
slower); a graph without batch norms unchanged; bad input.
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
from simulator.training.convnorm import fuse_norm_act
from workloads.cnn import RESNET50
from workloads.zoo import get_workload as get_model

N = 4


def _steps(model=RESNET50, n: int = N):
    forward = model.forward_graph(n, DType.FP16)
    plan = Plan(micro_batch=n, precision="fp16", channels_last=True, norm_act_fusion=True)
    step = training_graph(forward, plan)
    return step, fuse_norm_act(step)


def _bytes(graph, layer: int, phase: Phase) -> int:
    return sum(op.bytes for op in graph.ops() if op.layer == layer and op.phase is phase)


def test_bottleneck_moves_closed_form_fewer_bytes():
    """Block L5, T = N x 512 x 28^2 x 2 bytes (its output), t = T / 4 (inside), m = T / 16 (the
    one-bit ReLU mask). Forward: the two inner ReLUs (read t, write t) run in their norms'
    kernels: 4t; the last norm (read 2T, write T), the residual add (read 2T, write T) and its
    ReLU (read T, write T) become one kernel reading 2T and the addend T, writing T and the
    mask: 8T - (4T + m). Backward: the three ReLU gradients (3t, 3t, 3T) go, the last norm's
    backward writes the residual's gradient (T) and reads the mask in both passes (2m):
    6t + 3T - T - 2m. The norms' own passes stay (no convolution takes them in)."""
    before, after = _steps()
    big = N * 512 * 28 * 28 * 2
    t, m = big // 4, big // 16
    assert _bytes(before, 5, Phase.FORWARD) - _bytes(after, 5, Phase.FORWARD) \
        == 4 * t + 4 * big - m
    assert _bytes(before, 5, Phase.BACKWARD) - _bytes(after, 5, Phase.BACKWARD) \
        == 6 * t + 2 * big - 2 * m
    assert after.op("L5.batchnorm#2").mask_bytes == m
    assert "L5.residual" not in after.names() and "L5.relu#2" not in after.names()


def test_every_norm_stays_every_relu_and_add_goes():
    """ResNet-50's 53 batch norms all stay (forward and backward); its 49 ReLUs (the stem's
    too: its norm's one reader) and 16 residual adds run inside them, and no ReLU gradient
    kernel is left."""
    before, after = _steps()

    def count(graph, kind, fn, phase):
        return sum(op.kind is kind and op.fn == fn and op.phase is phase for op in graph.ops())

    for phase in (Phase.FORWARD, Phase.BACKWARD):
        assert count(before, OpKind.NORM, "batchnorm", phase) == 53
        assert count(after, OpKind.NORM, "batchnorm", phase) == 53
        assert count(before, OpKind.ELEMENTWISE, "relu", phase) == 49
        assert count(after, OpKind.ELEMENTWISE, "relu", phase) == 0
    assert count(before, OpKind.ELEMENTWISE, "add", Phase.FORWARD) == 16
    assert count(after, OpKind.ELEMENTWISE, "add", Phase.FORWARD) == 0
    assert after.is_dag()


@settings(max_examples=8, deadline=None)
@given(model=st.sampled_from(["resnet-18", "resnet-50", "resnet-101"]),
       n=st.integers(min_value=1, max_value=64))
def test_no_flop_or_parameter_lost_and_fewer_bytes(model, n):
    before, after = _steps(get_model(model), n)
    assert after.model_flops() == before.model_flops()
    assert after.params() == before.params()
    assert sum(op.bytes for op in after.ops()) < sum(op.bytes for op in before.ops())
    assert after.is_dag()


@pytest.mark.parametrize("n", [8, 50])
def test_never_slower_memory_bounded(n):
    """Faster, the same FLOPs; memory may grow, but by no more than the kernels' one-bit masks
    (kept for the backward, where the unfused step kept nothing extra) and one block output's
    gradient (the add-ReLU backward writes the norm's and the residual's gradients while its
    input gradient is live: three block-sized tensors at once, where the ReLU's gradient and
    the norm's backward held two)."""
    kw = {"micro_batch": n, "precision": "fp16", "channels_last": True}
    plain = simulate("resnet-50", "h100-sxm5-80gb", **kw)
    fused = simulate("resnet-50", "h100-sxm5-80gb", norm_act_fusion=True, **kw)
    assert fused.step_time_s < plain.step_time_s
    assert fused.flops_per_step == plain.flops_per_step
    _, after = _steps(n=n)
    masks = sum(op.mask_bytes for op in after.ops() if op.phase is Phase.FORWARD)
    largest = max(op.out_bytes for op in after.ops()
                  if op.phase is Phase.FORWARD and op.mask_bytes)
    assert fused.peak_memory_bytes - plain.peak_memory_bytes <= masks + largest


def test_conv_norm_fusion_takes_precedence():
    """conv_norm_fusion fuses the same norms, ReLUs and adds (and more): with both set the
    step is conv_norm_fusion's."""
    kw = {"micro_batch": 8, "precision": "fp16", "channels_last": True, "conv_norm_fusion": True}
    assert simulate("resnet-50", "h100-sxm5-80gb", norm_act_fusion=True, **kw).step_time_s \
        == simulate("resnet-50", "h100-sxm5-80gb", **kw).step_time_s


def test_graph_without_batch_norms_unchanged():
    forward = get_model("gpt2").forward_graph(2, DType.BF16)
    step = training_graph(forward, Plan(micro_batch=2))
    same = fuse_norm_act(step)
    assert same.names() == step.names()
    assert [op.bytes for op in same.ops()] == [op.bytes for op in step.ops()]


@pytest.mark.parametrize("fields, match", [
    ({"norm_act_fusion": True}, "channels_last"),
    ({"norm_act_fusion": True, "channels_last": True, "precision": "bf16"}, "fp16"),
    ({"norm_act_fusion": "yes", "channels_last": True}, "true or false"),
])
def test_bad_plans_refused(fields, match):
    with pytest.raises(PlanError, match=match):
        Plan(**fields)


def test_cli_one_line_exit_2(capsys):
    assert main(["predict", "resnet-50", "--device", "h100-sxm5-80gb", "--micro-batch", "8",
                 "--precision", "fp16", "--norm-act-fusion"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "channels_last" in err


@pytest.mark.parametrize("device", ["cpu-host", "tpu-v4", "gaudi3", "trainium2", "m2-ultra",
                                    "epyc-9654", "alveo-u280"])
def test_refused_off_nvidia_and_amd_gpus(device, capsys):
    """apex's NHWC batch-norm kernels build for CUDA and ROCm GPUs only: any other device (an
    AMD CPU or FPGA too, a GPU of another vendor) is refused in one line naming it, exit 2."""
    with pytest.raises(PlanError, match="NVIDIA or AMD GPU"):
        simulate("resnet-50", device, micro_batch=8, precision="fp16", channels_last=True,
                 norm_act_fusion=True)
    assert main(["predict", "resnet-50", "--device", device, "--micro-batch", "8",
                 "--precision", "fp16", "--channels-last", "--norm-act-fusion"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and device in err and "--norm-act-fusion" in err


@pytest.mark.parametrize("device", ["v100-sxm2-32gb", "mi300x"])
def test_runs_on_cuda_and_rocm_gpus(device):
    """No compute-capability floor (the kernels use no tensor cores; apex builds them from
    sm60) and the ROCm build (USE_ROCM) runs on AMD's GPUs: faster there, as on the H100."""
    kw = {"micro_batch": 8, "precision": "fp16", "channels_last": True}
    fused = simulate("resnet-50", device, norm_act_fusion=True, **kw)
    assert fused.step_time_s < simulate("resnet-50", device, **kw).step_time_s
