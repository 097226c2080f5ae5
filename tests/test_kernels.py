"""The numba kernels agree with their plain-Python references and keep their invariants."""
from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings, strategies as st

from hardware_specs.spec import DeviceClass, DeviceSpec, MemoryLevel
from simulator.cost.roofline import op_costs, price
from simulator.engine import kernels, reference
from simulator.graph.opgraph import OpGraph
from simulator.graph.lower import lower
from simulator.graph.op import DType, Op, OpKind

EXAMPLES = settings(max_examples=80, deadline=None)
durations = st.floats(0.0, 1e3, allow_nan=False, allow_infinity=False)
positive = st.floats(1e-3, 1e18, allow_nan=False, allow_infinity=False)
counts = st.floats(0.0, 1e18, allow_nan=False, allow_infinity=False)


@st.composite
def dags(draw, max_ops=40):
    """A random DAG in CSR form (edges i -> j only for i < j), durations and streams."""
    n = draw(st.integers(0, max_ops))
    density = draw(st.floats(0.0, 0.5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    preds = [np.flatnonzero(rng.random(j) < density) for j in range(n)]
    indptr = np.zeros(n + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(p) for p in preds])
    indices = np.concatenate(preds).astype(np.int64) if n else np.zeros(0, np.int64)
    duration = np.array(draw(st.lists(durations, min_size=n, max_size=n)), dtype=np.float64)
    n_streams = draw(st.integers(1, 4))
    stream = rng.integers(0, n_streams, size=n).astype(np.int64)
    return indptr, indices, duration, stream, n_streams


def same(a, b):
    np.testing.assert_array_equal(a, b)


# -- schedule ---------------------------------------------------------------------------------
@EXAMPLES
@given(dags())
def test_schedule_matches_reference(dag):
    start, end = kernels.schedule(*dag)
    ref_start, ref_end = reference.schedule(*dag)
    same(start, ref_start)
    same(end, ref_end)


@EXAMPLES
@given(dags())
def test_schedule_invariants(dag):
    indptr, indices, duration, stream, n_streams = dag
    start, end = kernels.schedule(*dag)
    assert np.all(end >= start)
    np.testing.assert_allclose(end - start, duration, rtol=1e-12, atol=1e-9)
    for i in range(len(duration)):
        for p in indices[indptr[i]:indptr[i + 1]]:
            assert start[i] >= end[p]
    makespan = end.max(initial=0.0)
    length, _ = kernels.critical_path(indptr, indices, duration)
    assert makespan >= length
    assert makespan >= duration.sum() / n_streams * (1 - 1e-12)
    for s in range(n_streams):  # no two ops of one stream overlap
        mine = np.flatnonzero(stream == s)
        assert np.all(start[mine[1:]] >= end[mine[:-1]])


@EXAMPLES
@given(dags())
def test_one_stream_is_serial(dag):
    indptr, indices, duration, _, _ = dag
    start, end = kernels.schedule(indptr, indices, duration, np.zeros(len(duration), np.int64), 1)
    assert math.isclose(end.max(initial=0.0), math.fsum(duration), rel_tol=1e-12)
    np.testing.assert_array_equal(start[1:], end[:-1])


# -- critical path ----------------------------------------------------------------------------
@EXAMPLES
@given(dags())
def test_critical_path_matches_reference(dag):
    indptr, indices, duration, _, _ = dag
    length, on_path = kernels.critical_path(indptr, indices, duration)
    ref_length, ref_on_path = reference.critical_path(indptr, indices, duration)
    assert length == ref_length
    same(on_path, ref_on_path)


@EXAMPLES
@given(dags())
def test_critical_path_is_a_chain_of_its_length(dag):
    indptr, indices, duration, _, _ = dag
    length, on_path = kernels.critical_path(indptr, indices, duration)
    path = np.flatnonzero(on_path)
    assert math.isclose(duration[path].sum(), length, rel_tol=1e-12, abs_tol=1e-300)
    for a, b in zip(path[:-1], path[1:]):  # consecutive ops are joined by an edge
        assert a in indices[indptr[b]:indptr[b + 1]]
    if len(path):  # the path begins at a source op
        assert indptr[path[0]] == indptr[path[0] + 1]


def test_critical_path_of_a_diamond():
    # 0 -> 1 -> 3, 0 -> 2 -> 3: the longer branch (2) is on the path
    indptr = np.array([0, 0, 1, 2, 4], dtype=np.int64)
    indices = np.array([0, 0, 1, 2], dtype=np.int64)
    duration = np.array([1.0, 2.0, 5.0, 1.0])
    length, on_path = kernels.critical_path(indptr, indices, duration)
    assert length == 7.0 and list(on_path) == [True, False, True, True]
    start, end = kernels.schedule(indptr, indices, duration, np.array([0, 0, 1, 0]), 2)
    assert list(start) == [0.0, 1.0, 1.0, 6.0] and end[-1] == 7.0


# -- roofline ---------------------------------------------------------------------------------
@st.composite
def roofline_inputs(draw):
    n = draw(st.integers(0, 30))
    arrays = [st.lists(s, min_size=n, max_size=n) for s in (counts, counts, positive, positive)]
    overhead = st.lists(st.floats(0.0, 1e-3), min_size=n, max_size=n)
    return tuple(np.array(draw(a), dtype=np.float64) for a in (*arrays, overhead))


@EXAMPLES
@given(roofline_inputs())
def test_roofline_matches_reference(args):
    for got, want in zip(kernels.roofline(*args), reference.roofline(*args)):
        same(got, want)


@EXAMPLES
@given(roofline_inputs())
def test_roofline_faster_hardware_is_never_slower(args):
    flops, nbytes, peak, bandwidth, overhead = args
    compute, memory, time = kernels.roofline(*args)
    assert np.all(time >= compute) and np.all(time >= memory)
    for faster in ((flops, nbytes, 2 * peak, bandwidth, overhead),
                   (flops, nbytes, peak, 2 * bandwidth, overhead)):
        assert np.all(kernels.roofline(*faster)[2] <= time)


# -- pricing on a device ----------------------------------------------------------------------
def toy_device() -> DeviceSpec:
    return DeviceSpec(
        name="toy", vendor="test", device_class=DeviceClass.GPU,
        peak_flops_per_s={DType.FP32: 100.0, DType.FP16: 400.0},
        vector_flops_per_s=50.0,
        memory=(MemoryLevel("hbm", 1e9, 1000.0),),
        op_overhead_s=0.5, idle_power_w=1.0, tdp_w=2.0,
        matmul_efficiency=0.5, memory_efficiency=0.8)


def test_price_and_op_costs():
    g = OpGraph()
    g.add(Op("mm", OpKind.MATMUL, dtype=DType.BF16, flops=2000, bytes_read=400))
    g.add(Op("gelu", OpKind.ELEMENTWISE, dtype=DType.BF16, flops=100, bytes_read=1600,
             bytes_written=800), ["mm"])
    low = lower(g)
    peak, bandwidth, overhead = price(low, toy_device())
    # bf16 falls back to the fp16 matrix rate (x efficiency); vector ops at the fp32 vector rate
    assert list(peak) == [400.0 * 0.5, 50.0]
    # a GPU's kernels keep their fixed cost; its host's issue cost is a stream of its own
    assert list(bandwidth) == [800.0, 800.0] and list(overhead) == [0.5, 0.5]
    compute, memory, time = op_costs(low, toy_device())
    assert list(compute) == [10.0, 2.0] and list(memory) == [0.5, 3.0]
    assert list(time) == [10.5, 3.5]


def test_op_costs_of_empty_graph():
    compute, memory, time = op_costs(lower(OpGraph()), toy_device())
    assert compute.shape == memory.shape == time.shape == (0,)


def test_kernels_take_lowered_arrays_directly():
    g = OpGraph()
    g.add(Op("a", OpKind.MATMUL))
    g.add(Op("b", OpKind.ELEMENTWISE), ["a"])
    g.add(Op("c", OpKind.ELEMENTWISE), ["a"])
    low = lower(g)  # read-only arrays
    duration = np.array([1.0, 2.0, 3.0])
    start, end = kernels.schedule(low.indptr, low.indices, duration, np.array([0, 0, 1]), 2)
    assert list(start) == [0.0, 1.0, 1.0] and end.max() == 4.0
    assert kernels.critical_path(low.indptr, low.indices, duration)[0] == 4.0


# -- the NumPy twins (simulator.engine.lite): what a small step is priced with ---------------
@EXAMPLES
@given(dags(max_ops=60))
def test_lite_schedule_and_critical_path_are_the_kernels_bit_for_bit(dag):
    from simulator.engine import lite
    for got, want in zip(lite.schedule(*dag), kernels.schedule(*dag)):
        same(got, want)
    indptr, indices, duration, _, _ = dag
    length, on_path = lite.critical_path(indptr, indices, duration)
    want_length, want_path = kernels.critical_path(indptr, indices, duration)
    assert length == want_length
    same(on_path, want_path)


@EXAMPLES
@given(roofline_inputs())
def test_lite_roofline_is_the_kernel_bit_for_bit(args):
    from simulator.engine import lite
    for got, want in zip(lite.roofline(*args), kernels.roofline(*args)):
        same(got, want)


def test_dispatch_picks_numpy_for_small_steps_and_numba_for_large_ones(monkeypatch):
    import sys

    from simulator.engine import dispatch, lite
    monkeypatch.delitem(sys.modules, "numba", raising=False)
    monkeypatch.setattr(dispatch, "_prefer", False)
    assert dispatch.engine(dispatch.COMPILED_FROM_OPS - 1) is lite
    assert dispatch.engine(dispatch.COMPILED_FROM_OPS) is kernels
    monkeypatch.setattr(dispatch, "_prefer", True)
    assert dispatch.engine(10) is kernels
