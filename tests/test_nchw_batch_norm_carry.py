"""cuDNN's NCHW batch norms carried to GPUs never timed: per SM, not as a fraction of DRAM.

The NCHW figures were measured on one die (an A100 40GB's profiled ResNet-50 step,
``simulator.calibrate.streaming.EVT_NCHW_BATCH_NORMS``). How they carry is read off a second
kernel table timed on two GPUs: xwang233's contiguous (NCDHW) ``torch.nn.BatchNorm3d`` calls,
fp16 data and fp32 weights, cuDNN 8.2.0, on an A100-SXM4-40GB and a Tesla V100-SXM2-32GB
(``tests/data/batchnorm_nchw_contiguous.csv``; xwang233/code-snippet 2c053c8, MIT). There the
bandwidth grows with the channel count and each channel moves as fast on the V100 as on the
A100, whose DRAM is 1.73 times faster: the kernels are held by the bytes their blocks keep in
flight, so ``hardware_specs.priors.nchw_batch_norm_prior`` carries the measured rate per SM.
"""
from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest

from hardware_specs.loader import list_devices, load_device
from hardware_specs.override import override
from hardware_specs.priors import (GPU_PRIORS, NCHW_BATCH_NORM_REFERENCE, NCHW_CAPS,
                                   nchw_batch_norm_prior)
from hardware_specs.spec import DeviceClass
from simulator.calibrate.streaming import timed_batch_norm_bytes

TABLE = Path(__file__).parent / "data" / "batchnorm_nchw_contiguous.csv"
A100, V100 = "A100-SXM4-40GB", "Tesla V100-SXM2-32GB"
BANDWIDTH = {A100: 1555e9, V100: 900e9}           # datasheets
SMS_CLOCK = {A100: (108, 1.41), V100: (80, 1.53)}  # the Volta and Ampere whitepapers


def _calls() -> dict[tuple, float]:
    with TABLE.open() as f:
        return {(r["device"], r["direction"], int(r["batch"]), int(r["channels"]),
                 int(r["dhw"])): float(r["ms"]) * 1e-3 for r in csv.DictReader(f)}


def _bandwidth(key: tuple, seconds: float) -> float:
    _, direction, batch, channels, dhw = key
    return timed_batch_norm_bytes(direction, batch, channels, dhw) / seconds


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_each_channel_moves_as_fast_on_a_v100_as_on_an_a100(direction):
    """At 2-32 channels, every call of 0.5 ms or more on both GPUs: the V100 takes the A100's
    time (median ratio 1.00 forward, 0.98 backward, within 10 %), where a rate carried as a
    fraction of the DRAM would take 1.73 times as long and one carried by SMs x clock at
    these channel counts (fewer channels than SMs) 0.92 times."""
    calls = _calls()
    ratios = [calls[(V100, *key[1:])] / seconds for key, seconds in calls.items()
              if key[0] == A100 and key[1] == direction and key[3] <= 32
              and min(seconds, calls[(V100, *key[1:])]) >= 0.5e-3]
    assert len(ratios) >= 30
    median = statistics.median(ratios)
    assert median == pytest.approx(1.0, abs=0.1)
    dram = BANDWIDTH[A100] / BANDWIDTH[V100]
    assert abs(median - dram) / dram > 0.4          # the DRAM carry is far off
    clock = SMS_CLOCK[A100][1] / SMS_CLOCK[V100][1]
    assert abs(median - 1.0) < abs(median - clock)  # closer to per block than to the clock


@pytest.mark.parametrize("device", [A100, V100])
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_the_bandwidth_grows_with_the_channels_far_below_the_dram(device, direction):
    """At d = 112 and batch 4-16 (5.6-22 million values a channel), 2 to 32 channels: the rate
    per channel stays within 25 % of its median, about 10 GB/s on both GPUs (the bandwidth is in
    proportion to the channels: a fixed number of blocks a channel), and 32 channels reach at
    most 0.35 of the DRAM. (At batch 1-2 and 2-4 channels the A100 moves a channel up to 2.3
    times as fast: more blocks a channel where there are few.)"""
    calls = _calls()
    per_channel = {}
    for key, seconds in calls.items():
        if (key[0] == device and key[1] == direction and key[4] == 112 and key[3] <= 32
                and key[2] >= 4):
            per_channel.setdefault(key[3], []).append(_bandwidth(key, seconds) / key[3])
    rates = [statistics.median(v) for _, v in sorted(per_channel.items())]
    assert len(rates) == 5                          # 2, 4, 8, 16, 32 channels
    middle = statistics.median(rates)
    assert all(abs(rate / middle - 1) <= 0.25 for rate in rates)
    assert rates[-1] * 32 / BANDWIDTH[device] <= 0.35


def test_the_priors_carry_the_measured_rate_per_sm():
    """Every catalogue GPU on the NCHW priors with an SM count moves NCHW batch norms at the
    A100 40GB's absolute rate per SM (0.406 / 0.460 of 1,555 GB/s over 108 SMs: 5.85 / 6.62
    GB/s), unless that is more than its NHWC figure for the direction; the A100 40GB parts,
    measured, are the rule at their own 108 SMs."""
    sms, reference = NCHW_BATCH_NORM_REFERENCE
    per_sm = {field: GPU_PRIORS[field] * reference / sms for field in NCHW_CAPS}
    assert per_sm["batch_norm_nchw_memory_efficiency"] == pytest.approx(5.846e9, rel=1e-3)
    carried = 0
    for name in list_devices():
        spec = load_device(name)
        if spec.device_class is not DeviceClass.GPU:
            continue
        bandwidth = spec.memory[-1].bandwidth_bytes_per_s
        for field, cap in NCHW_CAPS.items():
            value = getattr(spec, field)
            if field not in spec.priors:
                assert value == pytest.approx(nchw_batch_norm_prior(
                    field, spec.architecture.compute_units, bandwidth, 1.0), abs=1e-3)
                continue
            units = spec.architecture.compute_units
            expected = (GPU_PRIORS[field] if units is None
                        else min(per_sm[field] * units / bandwidth, getattr(spec, cap)))
            assert value == pytest.approx(expected, abs=5e-4), (name, field)
            carried += units is not None
    assert carried >= 40
    h100 = load_device("h100-sxm5-80gb")            # 132 SMs, 3,350 GB/s
    assert (h100.batch_norm_nchw_memory_efficiency,
            h100.batch_norm_nchw_backward_memory_efficiency) == (0.230, 0.261)


def test_a_what_if_on_sms_or_bandwidth_carries_the_priors_again():
    """``--set`` of the SM count or the DRAM bandwidth moves the NCHW priors as the loader would:
    the absolute rate follows the SMs and not the DRAM; a measured part keeps its figure."""
    h100 = load_device("h100-sxm5-80gb")
    rate = h100.batch_norm_nchw_memory_efficiency * h100.memory[-1].bandwidth_bytes_per_s
    faster = override(h100, {"memory.main.bandwidth_bytes_per_s": 6.7e12})
    assert faster.batch_norm_nchw_memory_efficiency * 6.7e12 == pytest.approx(rate, rel=3e-3)
    halved = override(h100, {"architecture.compute_units": 66})
    assert halved.batch_norm_nchw_memory_efficiency == pytest.approx(0.115, abs=1e-3)
    a100 = load_device("a100-sxm4-40gb")
    assert override(a100, {"memory.main.bandwidth_bytes_per_s": 3.1e12}
                    ).batch_norm_nchw_memory_efficiency == 0.406
    given = override(h100, {"batch_norm_nchw_memory_efficiency": 0.5,
                            "architecture.compute_units": 66})
    assert given.batch_norm_nchw_memory_efficiency == 0.5    # a measurement, not carried
    assert "batch_norm_nchw_memory_efficiency" not in given.priors
    assert given.batch_norm_nchw_backward_memory_efficiency == pytest.approx(0.130, abs=1e-3)


def test_the_note_names_the_carry_and_its_cap():
    """A prediction's note says how each GPU's NCHW priors were found: carried per SM (the
    H100 SXM5: 0.230, under its NHWC 0.791), capped at the NHWC figures where the carry
    exceeds them (the L4's 58 SMs on 300 GB/s: 1.13, so 0.791), the measured die's fraction
    without an SM count (the H20)."""
    from simulator.cost.status import NCHW_BATCH_NORM_PRIORS, priors_note

    def note(name):
        return priors_note(load_device(name), NCHW_BATCH_NORM_PRIORS).split("; ")[-1]

    assert note("h100-sxm5-80gb").endswith("the measured die's rate per SM times its SMs (priors)")
    assert note("l4").startswith("NCHW batch norms stream at 79.1% forward and 84.2% backward")
    assert note("l4").endswith("rate per SM times its SMs, at most its NHWC figures (priors)")
    assert note("h20").endswith("the median over the measured GPU dies (priors)")
