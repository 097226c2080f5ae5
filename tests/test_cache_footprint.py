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


# The traffic of the calibration's chain step Case("train", (16, 8, 4, 1)), written out from
# its shapes: 16 layers of Linear(8, 8) with a ReLU between each two, batch 4, fp32 (4 bytes),
# cross-entropy over the last layer's 4 x 8 logits (int64 labels), eager AdamW for-loop.
_L, _WIDTH, _BATCH = 16, 8, 4
_A = 4 * _BATCH * _WIDTH            # an activation or its gradient: 128 bytes
_W, _B = 4 * _WIDTH**2, 4 * _WIDTH  # a weight (256) and a bias (32)
_CHAIN_TRAFFIC = float(
    _L * (_A + _W + _B + _A)        # forward linears: read x, W, b; write y
    + (_L - 1) * 2 * _A             # forward ReLUs: read, write
    + (_A + 8 * _BATCH) + (_A + 4)  # loss: read logits and labels; write log-softmax, loss
    + 2 * _A                        # loss backward: read the log-softmax, write the gradient
    + (_L - 1) * 3 * _A             # ReLU backward: read gradient and output, write
    + (_L - 1) * (_A + _W + _B + _A)  # data gradients of layers 1-15 (the first's input
                                      # needs none): read dy and the other operands, W and
                                      # b (backward.py's rule: the forward's reads less x)
    + _L * (2 * _A + _W) + _B       # weight gradients: read dy and x, write dW; layer 0's x
                                    # is taken as its forward's reads less W, so b too
    + _L * (_A + _B)                # eager bias gradients: read dy, write db
    + _L * (_WIDTH**2 + _WIDTH) * 4 * (12 + 8))   # AdamW for-loop: 12 reads, 8 writes of
                                                  # each fp32 parameter (plan.step's count)


def test_the_footprint_is_the_steps_traffic():
    one = _lowered(Case("matmul", (256, 256, 256)))  # a kernel timed alone: its input
    assert list(one.nbytes) == [0, 3 * 256 * 256 * 4]  # placeholder moves nothing
    assert step_footprint(one) == float(one.nbytes[-1])
    step = _lowered(Case("train", (16, 8, 4, 1)))             # a training step, 111 ops
    assert step_footprint(step) == float(step.nbytes.sum()) == _CHAIN_TRAFFIC


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
