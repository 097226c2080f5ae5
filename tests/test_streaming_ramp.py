"""Small memory-bound kernels: what NeuSight's per-call timings show (issue 20, item 3).

``tests/data/neusight_elementwise_small.csv``: fp32 add, mul and relu calls of 150 bytes to
750 MB on five GPUs, each timed alone between two CUDA events (NeuSight's
``collect.py``). ``simulator.calibrate.streaming.fit_ramp`` fits ``t = fixed + bytes /
(efficiency x bandwidth)`` on the calls out of the cache. Measured when written (intercept,
floor = median call under 1 MB, efficiency, held-out median |error| of the fit / of the
no-intercept rule):
A100 PCIe 40GB 16.4 / 26.8 us, 0.881, 0.3 / 5.0 %; V100 PCIe 18.1 / 32.6 us, 0.922, 0.7 / 22.1 %;
T4 14.9 / 31.5 us, 0.755, 1.2 / 9.0 %; P100 25.1 / 46.0 us, 0.755, 1.6 / 29.6 %;
P4 15.1 / 27.3 us, 0.754, 0.1 / 8.5 %. (The no-intercept rule fitted on the same rows and
judged on the same largest-bytes fifth as the ramp.)

So the "ramp" of these timings is the host's: every call up to the bytes the device streams in
a quarter of its floor (1 MB on the P4 to 9 MB on the A100) takes the floor, and the
intercept is about half of it on every GPU, following the host machine (the P100's slow one)
rather than the memory. No device-side ramp is resolved; hwsim charges a kernel's host issue and
launch apart (``simulator.cost.host``, ``op_overhead_s``), and the specs' streaming
efficiencies, fitted without an intercept on larger kernels (``tests/test_streaming.py``), are
1-3 % below these device-only figures (the host's share they absorb).
"""
import csv
import math
import statistics
from pathlib import Path

import pytest

from hardware_specs.loader import load_device
from simulator.calibrate.streaming import fit_ramp, kernel_bytes

DATA = Path(__file__).parent / "data"
with open(DATA / "neusight_elementwise_small.csv", newline="") as _handle:
    TABLE = list(csv.DictReader(_handle))
with open(DATA / "neusight_devices.csv", newline="") as _handle:
    DEVICES = {row["device"]: row for row in csv.DictReader(_handle)}
GPUS = sorted({row["device"] for row in TABLE})


def _fit(device):
    row = DEVICES[device]
    return fit_ramp(TABLE, device, float(row["bandwidth_gb_per_s"]) * 1e9,
                    float(row["l2_mb"]) * 2**20)


def test_the_table_holds_five_gpus_and_three_ops():
    assert GPUS == ["NVIDIA A100-PCIE-40GB", "Tesla P100-PCIE-16GB", "Tesla P4", "Tesla T4",
                    "Tesla V100-PCIE-32GB"]
    assert {row["op"] for row in TABLE} == {"add", "mul", "relu"}


@pytest.mark.parametrize("device", GPUS)
def test_small_calls_take_the_hosts_floor(device):
    """Each op's calls from 1 KB up to the bytes the device streams in a quarter of its floor
    (1 MB on the P4, 9 MB on the A100; over 100-fold in bytes) take about the same time: the
    slope of log time on log bytes is under 0.1 (1 were they bound by a bandwidth, ramped or
    not), and their median is within 10 % of the op's floor (its calls under 1 MB; a relu
    module's call costs the host more than an add's). The time is the host's, not the bytes',
    so no bandwidth ramp shows below it."""
    fit = _fit(device)
    top = 0.25 * fit.floor_s * fit.efficiency * float(DEVICES[device]["bandwidth_gb_per_s"]) * 1e9
    assert top / 1e3 > 100
    for op in ("add", "mul", "relu"):
        calls = [(kernel_bytes(op, int(r["rows"]), int(r["row"])), float(r["latency_ms"]))
                 for r in TABLE if r["device"] == device and r["op"] == op]
        floor = statistics.median(t for b, t in calls if b < 1e6)
        small = [(math.log(b), math.log(t)) for b, t in calls if 1e3 <= b <= top]
        assert len(small) >= 15, op
        mean_x = statistics.fmean(x for x, _ in small)
        mean_y = statistics.fmean(y for _, y in small)
        slope = (sum((x - mean_x) * (y - mean_y) for x, y in small)
                 / sum((x - mean_x) ** 2 for x, _ in small))
        assert abs(slope) < 0.1, (op, slope)
        assert statistics.median(math.exp(y) for _, y in small) == pytest.approx(floor, rel=0.1)


@pytest.mark.parametrize("device", GPUS)
def test_the_intercept_is_half_the_hosts_floor(device):
    """Out of the cache the intercept is 0.45-0.65 of the floor on every GPU (0.47-0.61
    measured): it scales with the host machine, not with the memory."""
    fit = _fit(device)
    assert 0.45 < fit.fixed_s / fit.floor_s < 0.65


@pytest.mark.parametrize("device", GPUS)
def test_the_fit_predicts_the_largest_calls(device):
    """The largest fifth of the calls, never fitted on, within 2 % (median); the no-intercept
    rule (the specs' fits), fitted on the same rows, misses them by 5-30 %, its efficiency
    lowered by the host's time. Both on one split: the rule's own ``fit`` holds out the
    longest rows, not the largest bytes, and is not what this compares."""
    from simulator.calibrate.streaming import no_intercept_efficiency

    fit = _fit(device)
    assert fit.held_out_rows >= 10
    assert fit.held_out_median_error < 0.02
    assert fit.streaming_only_error > 2 * fit.held_out_median_error
    row = DEVICES[device]
    bandwidth, l2 = float(row["bandwidth_gb_per_s"]) * 1e9, float(row["l2_mb"]) * 2**20
    calls = sorted((kernel_bytes(r["op"], int(r["rows"]), int(r["row"])),
                    float(r["latency_ms"]) * 1e-3) for r in TABLE if r["device"] == device)
    calls = [c for c in calls if c[0] >= 4 * l2]
    fitted, held = calls[:fit.fitted_rows], calls[fit.fitted_rows:]
    rate = no_intercept_efficiency(fitted, bandwidth) * bandwidth
    plain = sorted(abs(b / rate / t - 1) for b, t in held)[len(held) // 2]
    assert fit.streaming_only_error == pytest.approx(plain, rel=1e-9)


@pytest.mark.parametrize("device, spec", [("NVIDIA A100-PCIE-40GB", "a100-pcie-40gb"),
                                          ("Tesla V100-PCIE-32GB", "v100-pcie-32gb"),
                                          ("Tesla T4", "t4"),
                                          ("Tesla P100-PCIE-16GB", "p100-pcie-16gb")])
def test_device_only_efficiency_is_just_above_the_specs(device, spec):
    """With the host's intercept apart the device streams at 1-3 % more of its datasheet
    bandwidth than the spec's memory_efficiency (fitted on larger kernels without an
    intercept): the bias the host's share puts in it, within 0.035."""
    fit = _fit(device)
    gap = fit.efficiency - load_device(spec).memory_efficiency
    assert 0.0 < gap < 0.035


def test_every_gpu_intercept_within_a_factor_two():
    """The intercepts (14.9-25.1 us) spread less than the GPUs' bandwidths (192-1,555 GB/s):
    a fixed cost per call, not a share of a bandwidth."""
    fixed = [_fit(device).fixed_s for device in GPUS]
    assert max(fixed) / min(fixed) < 2.0
    assert 12e-6 < statistics.median(fixed) < 20e-6


def _achieved(rows, device, op, bandwidth, l2):
    """Geometric mean fraction of the datasheet bandwidth ``op``'s out-of-cache calls reach."""
    fractions = []
    for r in rows:
        if r["device"] == device and r["op"] == op:
            nbytes = kernel_bytes(op, int(r["rows"]), int(r["row"]))
            if nbytes >= 4 * l2:
                fractions.append(nbytes / (float(r["latency_ms"]) * 1e-3) / bandwidth)
    return math.exp(statistics.fmean(map(math.log, fractions))) if len(fractions) >= 5 else None


def test_gelu_streams_as_relu_so_vector_compute_never_binds():
    """Item 2 of issue 20: NeuSight's GELU (8 FLOPs an element in hwsim's count, an erf) reaches
    the same fraction of the bandwidth as ReLU (1 FLOP) on every GPU with both out of the
    cache, within 1.5 % (0.2-0.9 % measured): neither is bound by the vector units, so these
    tables bound ``vector_efficiency`` only from below and no spec takes a figure from them."""
    with open(DATA / "neusight_vector_kernels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    compared = 0
    for device, row in DEVICES.items():
        bandwidth, l2 = float(row["bandwidth_gb_per_s"]) * 1e9, float(row["l2_mb"]) * 2**20
        gelu, relu = (_achieved(rows, device, op, bandwidth, l2) for op in ("gelu", "relu"))
        if gelu is None or relu is None:
            continue
        compared += 1
        assert gelu == pytest.approx(relu, rel=0.015), device
    assert compared >= 6
