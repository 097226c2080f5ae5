"""One ``aten::convolution_backward`` call per convolution's backward (``simulator.cost.host``,
``shared_call``): on a CPU a convolution's data and weight gradients, two ops in hwsim's graph,
pay the function's per-call cost once between them, as PyTorch runs them (one autograd formula,
``tools/autograd/derivatives.yaml``'s ``convolution`` entry); a GPU keeps a cost per kernel."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware_specs.loader import load_device
from simulator.cost import host
from simulator.graph.lower import lower
from simulator.graph.op import DType, Phase, Task
from simulator.graph.opgraph import OpGraph
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from workloads.layers import Builder

PER_CALL_S = 1.5e-4   # a conv2d's per-call cost, as a calibration fits it (order of magnitude)
CPU = dataclasses.replace(load_device("xeon-8380"), function_overhead_s={"conv2d": PER_CALL_S})
GPU = dataclasses.replace(load_device("a100-sxm4-80gb"),
                          function_overhead_s={"conv2d": PER_CALL_S})


def conv_chain(convs: int, channels: int = 8, size: int = 16):
    """A training step of ``convs`` 3x3 convolutions in a chain, the first reading the step's
    input (no op of the graph: an input needing no gradient, as a model's batch)."""
    graph = OpGraph(f"convs-{convs}")
    b = Builder(graph, dtype=DType.FP32)
    x = None
    for i in range(convs):
        x, _, _ = b.conv2d(f"c{i}", x, 2, channels, size, size, channels, 3, 1, 1)
    b.loss(x, 2, channels * size * size)
    step = training_graph(graph, Plan(micro_batch=2, precision="fp32", optimizer="adamw"))
    return lower(step)


def conv_call_costs(lowered, device) -> np.ndarray:
    overhead, issue = host.costs(lowered, device)
    return (overhead + issue)[lowered.fn == "conv2d"]


def test_two_convolutions_pay_four_calls_on_a_cpu_five_kernels_on_a_gpu():
    """Forward c0, c1; backward c1 (data and weight gradient: one call), c0 (weight only: its
    input needs no gradient, one call): 4 calls, 5 ops."""
    lowered = conv_chain(2)
    shared = host.shared_call(lowered)
    assert [lowered.names[i] for i in np.flatnonzero(shared)] == [
        n for n in lowered.names if n.startswith("wgrad:") and "c1" in n]
    assert (lowered.fn == "conv2d").sum() == 5
    assert conv_call_costs(lowered, CPU).sum() == pytest.approx(4 * PER_CALL_S, rel=1e-12)
    # a GPU: every kernel keeps its own fixed cost
    overhead, _ = host.costs(lowered, GPU)
    assert overhead[lowered.fn == "conv2d"].sum() == pytest.approx(5 * PER_CALL_S, rel=1e-12)


@settings(max_examples=8, deadline=None)
@given(st.integers(1, 6))
def test_one_per_call_cost_per_aten_call(convs):
    """k convolutions in a chain run k forward calls and k backward calls (the first one's for
    its weight alone): exactly 2k per-call costs on a CPU, whatever the op count (3k - 1)."""
    lowered = conv_chain(convs)
    conv = lowered.fn == "conv2d"
    assert conv.sum() == 3 * convs - 1
    backward = conv & (lowered.phase == Phase.BACKWARD)
    assert (backward & (lowered.task == Task.DATA_GRAD)).sum() == convs - 1
    assert host.shared_call(lowered).sum() == convs - 1
    assert conv_call_costs(lowered, CPU).sum() == pytest.approx(2 * convs * PER_CALL_S,
                                                                rel=1e-12)


def test_shared_call_needs_the_data_gradient_of_the_same_convolution():
    """A weight gradient is shared only with its own convolution's data gradient: the chain's
    last convolution's data gradient leaves the first one's weight gradient paying."""
    lowered = conv_chain(3)
    shared = {lowered.names[i] for i in np.flatnonzero(host.shared_call(lowered))}
    for name in shared:
        assert name.startswith(host.WGRAD + ":")
        assert "dgrad:" + name.partition(":")[2] in lowered.names
    assert not any(":c0" in name for name in shared)
