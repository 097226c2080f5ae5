"""NCHW layout transposes around 16-bit convolutions (simulator/training/layout.py).

Closed forms on ResNet-50 (every convolution's transpose moves exactly its activations), where
they appear (16-bit convolutions, not fp32, not with channels_last), and one validation of the
mechanism's size: the transposes' share of a measured NCHW ResNet-50 AMP step against what
channels_last is published to save.
"""
from __future__ import annotations

from functools import lru_cache

import pytest

from simulator.api import simulate
from simulator.errors import PlanError
from simulator.graph.op import DType, Op, OpKind, Task
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from simulator.training.layout import (
    LAYOUT_FN,
    activation_bytes,
    add_layout_transposes,
    runs_as_gemm,
)
from workloads.cnn import RESNET50

N = 4


@lru_cache(maxsize=None)   # the tests only read the graphs
def _step(precision: str, channels_last: bool = False):
    dtype = DType.FP32 if precision in ("fp32", "tf32") else DType.FP16
    forward = RESNET50.forward_graph(N, dtype)
    plan = Plan(micro_batch=N, precision=precision, channels_last=channels_last)
    return forward, add_layout_transposes(training_graph(forward, plan), channels_last)


def _resnet50_convs():
    """ResNet-50's 53 convolutions as (cin, size in, cout, size out, kernel, stride), written
    out from He et al. 2016 Table 1 in torchvision's v1.5 form (stride on the 3x3), apart from
    hwsim's builder: the 7x7/2 stem at 224^2, then per stage (blocks, width, maps in) its
    blocks' 1x1, 3x3 and 1x1, and the first block's 1x1 shortcut."""
    convs = [(3, 224, 64, 112, 7, 2)]
    inplanes, size = 64, 56
    for stage, (blocks, width) in enumerate([(3, 64), (4, 128), (6, 256), (3, 512)]):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            out = size // stride
            convs += [(inplanes, size, width, size, 1, 1), (width, size, width, out, 3, stride),
                      (width, out, 4 * width, out, 1, 1)]
            if block == 0:
                convs.append((inplanes, size, 4 * width, out, 1, stride))
            inplanes, size = 4 * width, out
    return convs


def test_resnet50_transposes_closed_form():
    """ResNet-50 has 53 convolutions: 53 forward, 52 data gradients (the stem reads the image,
    which needs none) and 53 weight gradients. Each transposes its activations, read and
    written (N x (Cin x H^2 + Cout x Ho^2) x 2 bytes: a data gradient reads dY and writes dX, a
    weight gradient reads X and dY, the same two tensors), except the forward and data gradient
    of the 33 stride-1 1x1 convolutions (``runs_as_gemm``): 158 - 66 = 92 transposes."""
    _, step = _step("fp16")
    convs = [step.op(n) for n in step.names() if step.op(n).kind is OpKind.CONV]
    layouts = [step.op(n) for n in step.names() if step.op(n).fn == LAYOUT_FN]
    table = _resnet50_convs()
    assert len(table) == 53 and sum(k == 1 and s == 1 for *_, k, s in table) == 33
    assert len(convs) == 53 + 52 + 53
    assert len(layouts) == 53 + 52 + 53 - 2 * 33 == 92
    expected = 0
    for ci, h, co, ho, k, s in table:
        calls = 1 + (k != 7) + 1                     # forward, data gradient, weight gradient
        exempt = 2 if (k, s) == (1, 1) else 0        # a stride-1 1x1's forward and data gradient
        expected += (calls - exempt) * (ci * h * h + co * ho * ho) * N * 2
    assert sum(op.bytes_read for op in layouts) == sum(op.bytes_written for op in layouts) \
        == expected
    stem = (N * 3 * 224 * 224 + N * 64 * 112 * 112) * 2
    assert activation_bytes(step.op("L0.conv1")) == stem
    assert (step.op("layout:L0.conv1").bytes_read, step.op("layout:L0.conv1").bytes_written) \
        == (stem, stem)
    assert step.op("layout:wgrad:L0.conv1").bytes_read == stem
    assert step.op("layout:wgrad:L0.conv1").task is Task.WEIGHT_GRAD
    for conv in convs:   # the convolution waits for its transpose, which waits for its inputs
        layout = f"layout:{conv.name}"
        facts = dict(conv.extra)
        gemm = facts["kernel"] == 1 and facts["stride"] == 1 and conv.task is not Task.WEIGHT_GRAD
        assert runs_as_gemm(conv) is gemm
        if gemm:
            assert layout not in step.names()
            continue
        assert layout in step.inputs(conv.name)
        assert set(step.inputs(layout)) == set(step.inputs(conv.name)) - {layout}
        assert step.nx.edges[layout, conv.name]["bytes"] == 0
        assert step.op(layout).bytes_read == activation_bytes(conv)


def test_3x3_and_strided_convolutions_keep_their_transposes():
    """Every call of ResNet-50's 16 3x3 convolutions (48) and its 7x7 stem (2) keeps its
    transpose, as do the three stride-2 1x1 shortcuts' (9) and the 33 stride-1 1x1
    convolutions' weight gradients."""
    _, step = _step("fp16")
    by_shape = {}
    for name in step.names():
        op = step.op(name)
        if op.kind is OpKind.CONV:
            facts = dict(op.extra)
            key = (facts["kernel"], facts["stride"], op.task)
            has = f"layout:{name}" in step.names()
            by_shape.setdefault(key, set()).add(has)
    for (kernel, stride, task), present in by_shape.items():
        assert present == {not (kernel == 1 and stride == 1 and task is not Task.WEIGHT_GRAD)}
    assert {(k, s) for k, s, _ in by_shape} == {(7, 2), (3, 1), (3, 2), (1, 1), (1, 2)}


def _conv(**facts):
    task = facts.pop("task", Task.FORWARD)
    cin, kernel, groups = facts.get("cin", 64), facts.pop("kernel", 1), facts.get("groups", 1)
    return Op(name="c", kind=OpKind.CONV, dtype=DType.FP16, m=8 * 56 * 56, n=64,
              k=cin // groups * kernel * kernel, task=task,
              extra=tuple({"stride": 1, "pad": 0, "groups": 1, "cin": cin, **facts}.items()))


@pytest.mark.parametrize("conv, gemm", [
    (_conv(), True), (_conv(task=Task.DATA_GRAD), True), (_conv(task=Task.RECOMPUTE), True),
    (_conv(task=Task.WEIGHT_GRAD), False), (_conv(kernel=3, pad=1), False),
    (_conv(stride=2), False), (_conv(pad=1), False), (_conv(groups=2), False),
    (_conv(transposed=1), False), (_conv(cin=0), False)])
def test_which_convolutions_run_as_gemms(conv, gemm):
    """The rule on its own: a 1x1 (k == Cin), stride-1, unpadded, ungrouped, non-transposed
    convolution's forward, recomputed forward and data gradient; nothing else."""
    assert runs_as_gemm(conv) is gemm


def test_transposes_of_a_profiled_nchw_resnet50_step():
    """Validation, nothing fitted: a PyTorch profile of ten NCHW fp16 ResNet-50 training steps,
    batch 128, on an A100 40GB (NGC PyTorch 23.07, cuDNN 8.9.3; apuaaChen/EVT_AE 917438b,
    benchmark/resnet/torch_result.md: nchwToNhwcKernel 77.376 ms in 1,580 calls,
    nhwcToNchwKernel 29.194 ms in 680; 730 calls of plain GEMM kernels, at least 30 of them
    the classifier's). hwsim's transposes for that step take 12.8 ms against the measured 10.7 ms
    (+20 %; 24.6 ms, +131 %, before 1x1 convolutions ran as GEMMs; 4.6 ms, -57 %, with no 1x1
    convolution transposed at all), asserted within 25 %: the transpose kernels' own rate is
    not measured, and the profile shows some calls writing NCHW directly (68 output
    transposes a step for 92 calls). hwsim's untransposed convolution calls (66) against the
    profile's convolution calls run as GEMM kernels (at most 70 a step), within 10 %."""
    result = simulate("resnet-50", "a100-sxm4-40gb", micro_batch=128, precision="fp16",
                      optimizer="sgd")
    low, times = result.lowered, result.times["time_s"]
    priced = sum(times[i] for i, name in enumerate(low.names) if low.fn[i] == LAYOUT_FN)
    measured = (77.376 + 29.194) / 10 * 1e-3
    assert abs(priced / measured - 1) <= 0.25
    convs = [i for i, name in enumerate(low.names) if low.kind[i] == OpKind.CONV]
    untransposed = sum(f"layout:{low.names[i]}" not in set(low.names) for i in convs)
    assert untransposed == 66
    assert abs(untransposed / ((730 - 30) / 10) - 1) <= 0.10


@pytest.mark.parametrize("precision, channels_last", [("fp32", False), ("tf32", False),
                                                      ("fp16", True), ("bf16", True)])
def test_no_transposes_in_fp32_or_channels_last(precision, channels_last):
    _, step = _step(precision, channels_last)
    assert not any(step.op(n).fn == LAYOUT_FN for n in step.names())


def test_channels_last_must_be_a_bool():
    with pytest.raises(PlanError, match="channels_last"):
        Plan(channels_last="yes")


#: The A100 80GB SXM4's saving is above every published one since the NCHW batch norms' rate is
#: carried per SM (2026-12-06): 36.3 % of the measured step (39.8 % of hwsim's NCHW step), where
#: the largest published, 36 %, was measured on a 40GB part (hwsim there: 33.1 % of its step).
#: The mechanism predicts a larger saving on faster DRAM (the NHWC kernels speed up with it, the
#: NCHW batch norms do not); no channels_last measurement on an 80GB part is found to check it.
A100_80GB_SAVING = pytest.mark.xfail(strict=True, reason=(
    "36.3 % of the measured step, above the largest published saving (36 %, an A100 40GB); see "
    "A100_80GB_SAVING"))


@pytest.mark.parametrize("device, batch, measured", [
    ("v100-sxm2-32gb", 256, 833.0),
    pytest.param("a100-sxm4-80gb", 1280, 1582.0, marks=A100_80GB_SAVING)])
def test_transposes_share_of_a_measured_step_is_what_channels_last_saves(device, batch,
                                                                          measured):
    """Validation, nothing fitted: Lambda's NCHW ResNet-50 AMP runs (tests/data/
    validation_rows.csv: 833 and 1,582 images/s; their logs say memory_format nchw) take
    256 / 833 and 1280 / 1582 s a step; what channels_last saves of hwsim's step (the
    transposes, and the NCHW batch norms' slower rate) is 23 % (V100) and 36 % (A100) of that
    (32 % and 27 % with the NCHW rate as a fraction of each DRAM, not carried per SM; 21 % and
    15 % before the NCHW batch norms took their own rate; 34 % and 26 % before the stride-1 1x1 convolutions' forward and data gradient ran as
    GEMMs, untransposed; the V100's was a strict xfail). What channels_last is published to
    save of an NCHW AMP step: 18 % (PyTorch's "Channels Last Memory Format" tutorial, apex
    ResNet-50 AMP on Volta: 22 % faster), 18 % (PaddlePaddle PR 20597, ResNet-50 fp16:
    0.195 -> 0.16), 7-26 % (fastxtend's ChannelsLast callback: 8-35 % faster on tensor cores),
    36 % (apuaaChen/EVT_AE 917438b, benchmark/resnet/torch_result.md and torch_cl_result.md:
    a PyTorch profile of ResNet-50 fp16 at batch 128 on an A100 40GB, 86.9 ms of kernels a step
    in NCHW, 55.8 ms in NHWC; under CUDA graphs, so no host time in either). Asserted: within
    7-36 %, the four's range (30 % before the NCHW batch norms took their own, slower rate from
    that profile's kernels, tests/test_batch_norm_rate.py: now 32 % (V100) and 27 % (A100))."""
    from simulator.api import simulate

    kwargs = {"micro_batch": batch, "precision": "fp16", "optimizer": "sgd"}
    nchw = simulate("resnet-50", device, **kwargs).step_time_s
    nhwc = simulate("resnet-50", device, channels_last=True, **kwargs).step_time_s
    share = (nchw - nhwc) / (batch / measured)
    assert 0.07 <= share <= 0.36


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
