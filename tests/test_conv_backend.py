"""Which library PyTorch's CPU build runs a convolution with, and oneDNN's layout copies
(``simulator.graph.conv_backend``, ``simulator.cost.roofline.reorder_seconds``).

- The rule is checked against the installed torch's own choice (``torch._C._select_conv_backend``)
  over a grid of shapes, strides, dilations, groups and thread counts.
- The copies: oneDNN's verbose log of one training step of a dense and a depthwise
  convolution (``tests/data/onednn_conv_reorders.csv``, measured here) shows each pass copying
  the input's and the output's activations between NCHW and the blocked layout once each:
  six activation reorders a step, the count hwsim prices.
- Their price is the closed form: each copy (input, output) 2 x its elements x the element
  size over the bandwidth of the level holding it, on a CPU, per pass, for a convolution on oneDNN at the
  device's threads; none on a GPU or for a channels-last plan.
"""
from __future__ import annotations

import csv
import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest

from hardware_specs.loader import load_device
from simulator.cost.roofline import level_bandwidth, reorder_seconds, step_footprint
from simulator.graph.conv_backend import ONE_THREAD, THREADS, onednn_paths
from simulator.graph.lower import lower
from simulator.graph.op import DType, OpKind
from simulator.graph.opgraph import OpGraph
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from workloads.layers import Builder

DATA = Path(__file__).parent / "data" / "onednn_conv_reorders.csv"
CPU = load_device("xeon-8380")            # no core count: used whole, a thread per core
ONE = dataclasses.replace(CPU, architecture=dataclasses.replace(CPU.architecture,
                                                                compute_units=1))


@pytest.mark.torch
def test_rule_is_torchs_choice():
    torch = pytest.importorskip("torch")
    select = torch._C._select_conv_backend
    threads = torch.get_num_threads()
    checked = 0
    try:
        for (batch, channels, size, kernel, stride, dilation, depthwise, dims,
             count) in itertools.product((1, 2, 8, 16), (16,), (8, 100), (1, 3, 5), (1, 2),
                                         (1, 2), (False, True), (1, 2), (1, 2)):
            torch.set_num_threads(count)
            groups = channels if depthwise else 1
            spatial = (size,) * dims
            x = torch.empty(batch, channels, *spatial)
            w = torch.empty(channels, channels // groups, *(kernel,) * dims)
            zeros = [0] * dims
            pad = [dilation * (kernel // 2)] * dims
            backend = select(x, w, None, [stride] * dims, pad, [dilation] * dims, False,
                             zeros, groups, None)
            bits = onednn_paths(images=batch, input_elements=x.numel(),
                                kernel=(kernel,) * dims, strided=stride > 1,
                                dilated=dilation > 1, groups=groups)
            ours = bool(bits & (THREADS if count > 1 else ONE_THREAD))
            assert ours == (backend.name == "Mkldnn"), (batch, channels, size, kernel, stride,
                                                         dilation, groups, dims, count, backend)
            checked += 1
    finally:
        torch.set_num_threads(threads)
    assert checked == 4 * 1 * 2 * 3 * 2 * 2 * 2 * 2 * 2


def test_one_by_one_small_batch_stays_off_onednn_on_one_thread_only():
    pointwise = dict(images=8, input_elements=8 * 64 * 16 * 16, kernel=(1, 1), strided=False,
                     dilated=False, groups=1)
    assert onednn_paths(**pointwise) == THREADS
    assert onednn_paths(**{**pointwise, "images": 16}) == THREADS | ONE_THREAD
    assert onednn_paths(**{**pointwise, "strided": True}) == THREADS | ONE_THREAD
    assert onednn_paths(**{**pointwise, "kernel": (3, 3)}) == THREADS | ONE_THREAD
    # batch 1, a small input, a 3 x 3 kernel: PyTorch's own code at any thread count
    assert onednn_paths(images=1, input_elements=3 * 8 * 8, kernel=(3, 3), strided=False,
                        dilated=False, groups=1) == 0
    assert onednn_paths(**pointwise, transposed=True) == 0
    assert onednn_paths(**pointwise, floating=False) == 0


def _passes(rows):
    """The primitives of one convolution's step, cut at each convolution primitive into its
    pass: the reorders before it (its inputs) and after it up to the next pass's."""
    out, current = [], []
    for row in rows:
        current.append(row)
        if row["primitive"] == "convolution":
            out.append(current)
            current = []
    out[-1].extend(current)
    return out


def test_each_pass_copies_input_and_output_activations_once_each_way():
    with DATA.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    convs = sorted({r["conv"] for r in rows})
    assert len(convs) == 2
    for conv in convs:
        n, c, h, k, kernel, groups = (int(v) for v in conv.split("x"))
        own = [r for r in rows if r["conv"] == conv]
        passes = _passes(own)
        assert [next(r["prop_kind"] for r in p if r["primitive"] == "convolution")
                for p in passes] == ["forward_training", "backward_data", "backward_weights"]
        activations = {f"{n}x{c}x{h}x{h}", f"{n}x{k}x{h}x{h}"}
        copies = [r for r in own if r["primitive"] == "reorder" and r["problem"] in activations]
        assert len(copies) == 6                     # 3 passes x (input + output)
        for r in copies:
            src, dst = r["layouts"].split(" -> ")
            assert {src.split(":")[4], dst.split(":")[4]} == {"abcd", "aBcd16b"}
        # every other reorder is of the (small) weights or the bias
        others = [r for r in own if r["primitive"] == "reorder" and r not in copies]
        assert all(r["problem"] not in activations for r in others)
        weight = k * (c // groups) * kernel * kernel
        assert all(np.prod([int(d) for d in r["problem"].split("x")]) <= weight
                   for r in others)


def _step(batch=2, channels=8, size=16, kernel=3, channels_last=False):
    graph = OpGraph("convs")
    b = Builder(graph, dtype=DType.FP32)
    x, _, _ = b.conv2d("c0", None, batch, channels, size, size, channels, kernel, 1,
                       kernel // 2)
    x, _, _ = b.conv2d("c1", x, batch, channels, size, size, channels, kernel, 1, kernel // 2)
    b.loss(x, batch, channels * size * size)
    plan = Plan(micro_batch=batch, precision="fp32", optimizer="adamw",
                channels_last=channels_last)
    return lower(training_graph(graph, plan)), plan


def test_reorder_seconds_closed_form():
    lowered, plan = _step()
    device = ONE
    seconds = reorder_seconds(lowered, device, plan)
    conv = lowered.mask("kind", OpKind.CONV)
    # c0 forward + weight gradient, c1 forward + data + weight gradient: five passes
    assert int(conv.sum()) == 5 and (seconds[conv] > 0).all() and (seconds[~conv] == 0).all()
    copy = 2.0 * 4 * (2 * 8 * 16 * 16)        # an activation of 2 x 8 x 16 x 16, both ways
    bandwidth = level_bandwidth(np.array([copy]), device, None, step_footprint(lowered))[0]
    assert seconds[conv] == pytest.approx(np.full(5, 2 * copy / bandwidth), rel=1e-12)


def test_no_reorders_on_a_gpu_channels_last_or_off_onednn():
    lowered, plan = _step()
    assert reorder_seconds(lowered, load_device("a100-sxm4-80gb"), plan) is None
    cl, cl_plan = _step(channels_last=True)
    assert reorder_seconds(cl, CPU, cl_plan) is None
    # 1 x 1 convolutions at batch 2: PyTorch's own code on one thread, oneDNN on several
    pointwise, plan = _step(kernel=1)
    assert reorder_seconds(pointwise, ONE, plan) is None
    assert (reorder_seconds(pointwise, CPU, plan) > 0).sum() == 5   # all its cores


def test_reorders_add_to_a_cpu_steps_time():
    """The same step on channels-last tensors differs by the copies alone."""
    from simulator.cost.roofline import op_costs
    lowered, plan = _step()
    cl, cl_plan = _step(channels_last=True)
    assert op_costs(lowered, CPU, plan=plan)[2].sum() == pytest.approx(
        op_costs(cl, CPU, plan=cl_plan)[2].sum() + reorder_seconds(lowered, CPU, plan).sum(),
        rel=1e-9)

