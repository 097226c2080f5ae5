"""Norms under compiled fusion at their own streaming figure (``norm_memory_efficiency_compiled``).

A spec's ``norm_memory_efficiency`` is PyTorch eager's norm kernels'; where it also gives
``norm_memory_efficiency_compiled`` (torch.compile's generated kernels, measured on the H200 and
GB200: ``tests/test_streaming_cudnn.py``), a plan of ``Fusion.COMPILED`` streams its norms and
softmax at that figure (``simulator.cost.roofline.price``), and only such a plan does.
"""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware_specs.loader import load_device, parse_device
from hardware_specs.override import override
from hardware_specs.writer import device_toml
from simulator.cost.roofline import op_costs, price
from simulator.cost.status import calibration_status
from simulator.errors import SpecError
from simulator.graph.lower import lower
from simulator.graph.op import OpKind
from simulator.plan.step import Fusion, Plan
from simulator.training.backward import training_graph
from workloads.zoo import get_workload

EAGER, COMPILED = Plan(), Plan(fusion=Fusion.COMPILED)


def _step():
    """gpt2-small's training step, its norms and softmax kept as their own ops (the lowered
    graph is priced under either plan: the fusion rewrite is the stage builder's, apart)."""
    return lower(training_graph(get_workload("gpt2-small").forward_graph(2), Plan()))


def _a100(compiled):
    """The A100 (one memory level: every op streams from HBM) with a compiled-norm figure."""
    return dataclasses.replace(load_device("a100"), norm_memory_efficiency_compiled=compiled)


def test_compiled_fusion_streams_norms_and_softmax_at_the_compiled_figure():
    """Closed form: a norm's or softmax's bandwidth is HBM's x the compiled figure under
    compiled fusion, x the eager figure under eager fusion or no plan; other ops unchanged."""
    low, device = _step(), _a100(0.9)
    main = device.main_memory.bandwidth_bytes_per_s
    rows = np.isin(low.kind, [int(OpKind.NORM), int(OpKind.SOFTMAX)])
    assert (low.kind[rows] == OpKind.NORM).any() and (low.kind[rows] == OpKind.SOFTMAX).any()
    eager, compiled, plain = (price(low, device, plan)[1] for plan in (EAGER, COMPILED, None))
    np.testing.assert_allclose(compiled[rows], main * 0.9)
    np.testing.assert_allclose(eager[rows], main * device.norm_memory_efficiency)
    np.testing.assert_array_equal(plain, eager)
    np.testing.assert_array_equal(compiled[~rows], eager[~rows])


def test_without_the_key_compiled_fusion_keeps_the_eager_figure():
    low, a100 = _step(), load_device("a100")
    assert a100.norm_memory_efficiency_compiled is None
    np.testing.assert_array_equal(price(low, a100, COMPILED)[1], price(low, a100, EAGER)[1])


@settings(max_examples=25, deadline=None)
@given(st.floats(0.05, 1.0), st.floats(0.05, 1.0))
def test_compiled_figure_moves_compiled_plans_only(eager, compiled):
    """Property: under eager fusion the compiled figure changes no op's time; under compiled
    fusion a compiled figure at least the eager one is never slower than the eager figure."""
    low, a100 = _step(), load_device("a100")
    base = dataclasses.replace(a100, norm_memory_efficiency=eager)
    both = dataclasses.replace(base, norm_memory_efficiency_compiled=compiled)
    np.testing.assert_array_equal(op_costs(low, both, plan=EAGER)[2],
                                  op_costs(low, base, plan=EAGER)[2])
    t_compiled = op_costs(low, both, plan=COMPILED)[2]
    t_eager = op_costs(low, base, plan=COMPILED)[2]
    if compiled >= eager:
        assert (t_compiled <= t_eager).all()
    else:
        assert (t_compiled >= t_eager).all()


def test_a_simulated_step_moves_with_the_figure_under_compiled_fusion_only():
    """End to end on the H100 SXM (0.447 eager, 0.540 compiled): an eager step is the same with
    the compiled figure gone; a compiled step is slower without it (its norms at 0.447)."""
    from simulator.api import simulate

    h100 = load_device("h100-sxm5-80gb")
    gone = dataclasses.replace(h100, norm_memory_efficiency_compiled=None)
    run = {"micro_batch": 4}
    assert (simulate("gpt2-small", h100, fusion="eager", **run).step_time_s
            == simulate("gpt2-small", gone, fusion="eager", **run).step_time_s)
    assert (simulate("gpt2-small", h100, fusion="compiled", **run).step_time_s
            < simulate("gpt2-small", gone, fusion="compiled", **run).step_time_s)


def test_the_key_loads_writes_overrides_and_shows():
    h200 = load_device("h200-sxm")
    assert (h200.norm_memory_efficiency, h200.norm_memory_efficiency_compiled) == (0.447, 0.540)
    assert parse_device(device_toml(h200).encode(), "x.toml").norm_memory_efficiency_compiled \
        == 0.540
    assert override(h200, {"norm_memory_efficiency_compiled": "0.6"}) \
        .norm_memory_efficiency_compiled == 0.6
    with pytest.raises(SpecError, match="norm_memory_efficiency_compiled"):
        override(h200, {"norm_memory_efficiency_compiled": "1.5"})
    assert calibration_status(h200)["compiled-norm"] == "measured"
    assert calibration_status(load_device("a100"))["compiled-norm"] == "as norm"
