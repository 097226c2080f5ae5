"""A cache serves a step's ops only when the step's traffic fits in it
(``simulator.cost.roofline.step_footprint``), and a framework on fewer cores has only their
private caches (``hardware_specs.host.on_cores``)."""
import dataclasses

import numpy as np
from hypothesis import given, settings, strategies as st

from hardware_specs.host import on_cores
from hardware_specs.loader import load_device
from hardware_specs.spec import MemoryLevel
from simulator.calibrate.fit import Case, _lowered, predicted_seconds
from simulator.cost.roofline import level_bandwidth, price, step_footprint

MIB = 2.0**20
XEON = load_device("xeon-8380")    # one memory level (DRAM); the tests add caches to it
DRAM = XEON.memory_bandwidth_bytes_per_s * XEON.memory_efficiency
L2 = MemoryLevel("l2", 2 * MIB, 2e12, private=True)   # faster than its DRAM
L3 = MemoryLevel("l3", 60 * MIB, 1e12)
CACHED = dataclasses.replace(XEON, memory=(L2, L3, *XEON.memory))


def test_an_op_alone_keeps_the_cache_its_bytes_fit_in():
    bw = level_bandwidth(np.array([1 * MIB, 2 * MIB, 3 * MIB, 61 * MIB]), CACHED)
    assert list(bw) == [2e12, 2e12, 1e12, DRAM]


def test_a_step_whose_traffic_exceeds_a_cache_streams_past_it():
    nbytes = np.array([0.5 * MIB, 1 * MIB])
    assert list(level_bandwidth(nbytes, CACHED, footprint=2 * MIB)) == [2e12, 2e12]  # fits
    assert list(level_bandwidth(nbytes, CACHED, footprint=2 * MIB + 1)) == [1e12, 1e12]
    assert list(level_bandwidth(nbytes, CACHED, footprint=61 * MIB)) == [DRAM, DRAM]


@settings(max_examples=50, deadline=None)
@given(nbytes=st.lists(st.floats(0, 100 * MIB), min_size=1, max_size=8),
       small=st.floats(0, 100 * MIB), more=st.floats(0, 100 * MIB))
def test_more_step_traffic_is_never_a_faster_level(nbytes, small, more):
    nbytes = np.array(nbytes)
    alone = level_bandwidth(nbytes, CACHED)
    fewer = level_bandwidth(nbytes, CACHED, footprint=small)
    larger = level_bandwidth(nbytes, CACHED, footprint=small + more)
    assert np.all(larger <= fewer) and np.all(fewer <= alone)
    # a footprint no larger than the op's own bytes is the op alone
    assert np.array_equal(level_bandwidth(nbytes, CACHED, footprint=float(nbytes.min())),
                          alone)


def test_the_footprint_is_the_steps_traffic():
    one = _lowered(Case("matmul", (256, 256, 256)))  # a kernel timed alone: its input
    assert list(one.nbytes) == [0, 3 * 256 * 256 * 4]  # placeholder moves nothing
    assert step_footprint(one) == float(one.nbytes[-1])
    step = _lowered(Case("train", (16, 8, 4, 1)))             # a training step, 111 ops
    assert step_footprint(step) == float(step.nbytes.sum()) == 129956.0


def test_a_kernel_alone_is_priced_as_before_and_a_large_step_past_the_cache():
    kernel = _lowered(Case("add", (1 << 16,)))                # 768 KiB, in the 2 MiB L2
    assert price(kernel, CACHED)[1][-1] == 2e12
    small = _lowered(Case("train", (16, 8, 4, 1)))            # 127 KiB of traffic: in L2
    assert np.all(price(small, CACHED)[1] == 2e12)
    large = _lowered(Case("train", (4, 256, 64, 1)))          # 25.7 MiB: past L2, in L3
    bandwidth = price(large, CACHED)[1]
    assert step_footprint(large) > 2 * MIB and np.all(bandwidth == 1e12)
    # and a step past a cache is never faster than the same step with the cache serving it
    case = Case("train", (4, 256, 64, 1))
    bigger = dataclasses.replace(CACHED, memory=(dataclasses.replace(L2, capacity_bytes=64 * MIB),
                                                 L3, *XEON.memory))
    assert predicted_seconds(case, bigger) <= predicted_seconds(case, CACHED)


def test_fewer_cores_have_their_own_private_caches_only():
    spec = dataclasses.replace(CACHED, architecture=dataclasses.replace(
        CACHED.architecture, compute_units=40))
    one = on_cores(spec, 1)
    assert one.memory[0].capacity_bytes == 2 * MIB / 40       # private: one core's share
    assert one.memory[1:] == spec.memory[1:]                  # shared L3 and DRAM: the same
    assert [m.bandwidth_bytes_per_s for m in one.memory] == [m.bandwidth_bytes_per_s
                                                             for m in spec.memory]
    assert on_cores(spec, 40) is spec
    shared = dataclasses.replace(spec, memory=(dataclasses.replace(L2, private=False), L3,
                                               *XEON.memory))
    assert on_cores(shared, 1).memory == shared.memory         # nothing private: unchanged
