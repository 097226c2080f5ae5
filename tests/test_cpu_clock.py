"""A CPU calibration's clock from its fastest fp32 matmul (issue 20, CPU target).

A VM reports its base clock, not the turbo clock one core runs at: on the development Xeon
(2.6 GHz reported, 166 GFLOP/s per core derived) fp32 GEMMs ran at up to 197 GFLOP/s, and the
fitted matmul efficiency sat at its bound, 1.0. ``simulator.calibrate.fit.sustained_clock_hz``
reads the clock from the fastest matmul; ``Calibration.fit`` raises the spec's clock and every
peak to it (``hardware_specs.host.at_clock``), never lowers it; the writer records it.
"""
import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware_specs.host import at_clock, on_cores
from hardware_specs.loader import load_device, parse_device
from hardware_specs.writer import calibrated_toml
from simulator.calibrate.fit import (
    Calibration,
    Case,
    Measurement,
    cases,
    predicted_seconds,
    sustained_clock_hz,
)
from simulator.graph.op import DType

# one core of a Xeon 8480: 2.0 GHz base (its file: MLPerf system JSON, ARK), AVX-512 with two
# FMA pipes: 16 lanes x 2 x 2 = 64 fp32 FLOP per cycle, 128 GFLOP/s
CORE = on_cores(load_device("xeon-8480"), 1)


def test_one_core_is_64_flop_per_cycle():
    assert CORE.architecture.clock_hz == 2.0e9
    assert CORE.peak_flops_per_s[DType.FP32] == pytest.approx(64 * 2.0e9)


def test_the_clock_is_the_fastest_matmul_over_its_flop_per_cycle():
    # 2 x 1024^3 FLOP in 14 ms: 153.4 GFLOP/s; 2 x 256^3 in 0.3 ms: 111.8 GFLOP/s (slower)
    timings = [Measurement(Case("matmul", (1024, 1024, 1024)), 14e-3),
               Measurement(Case("matmul", (256, 256, 256)), 0.3e-3),
               Measurement(Case("add", (1 << 20,)), 1e-6)]   # not a matmul: never counted
    assert sustained_clock_hz(CORE, timings) == pytest.approx(2 * 1024**3 / 14e-3 / 64)
    assert sustained_clock_hz(CORE, timings[1:]) == pytest.approx(2 * 256**3 / 0.3e-3 / 64)


def test_no_clock_where_it_does_not_apply():
    mm = [Measurement(Case("matmul", (256, 256, 256)), 1e-4)]
    assert sustained_clock_hz(load_device("a100"), mm) is None              # not a CPU
    assert sustained_clock_hz(CORE, [Measurement(Case("add", (4096,)), 1e-6)]) is None
    assert sustained_clock_hz(CORE, [Measurement(Case("matmul", (256, 256, 256), "bf16"),
                                                 1e-4)]) is None           # not fp32


def test_at_clock_scales_every_peak():
    faster = at_clock(load_device("xeon-8480"), 2.5e9)
    base = load_device("xeon-8480")
    assert faster.architecture.clock_hz == 2.5e9
    for dtype, peak in base.peak_flops_per_s.items():
        assert faster.peak_flops_per_s[dtype] == pytest.approx(peak * 1.25)
    assert faster.vector_flops_per_s == pytest.approx(base.vector_flops_per_s * 1.25)
    assert faster.memory == base.memory and faster.tdp_w == base.tdp_w


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.3, 2.0), min_size=1, max_size=6))
def test_the_fitted_peak_covers_every_matmul_and_never_falls(speeds):
    """Matmuls timed at any speed (1.0: the base clock's peak): the calibrated spec's fp32
    peak is at least every matmul's measured rate (so an efficiency of at most 1 can price
    each: MFU <= 1) and never below the base clock's."""
    dims = [(256, 256, 256), (1024, 1024, 1024), (64, 4096, 1024), (2048, 2048, 2048),
            (512, 512, 4096), (4096, 1024, 256)]
    peak = CORE.peak_flops_per_s[DType.FP32]
    timings = [Measurement(Case("matmul", d), 2 * math.prod(d) / (peak * s))
               for d, s in zip(dims, speeds)]
    clock = max(CORE.architecture.clock_hz, sustained_clock_hz(CORE, timings))
    raised = at_clock(CORE, clock)
    assert clock == pytest.approx(CORE.architecture.clock_hz * max(1.0, max(speeds)))
    for m in timings:
        assert 2 * math.prod(m.case.dims) / m.seconds <= raised.peak_flops_per_s[DType.FP32] \
            * (1 + 1e-12)


@pytest.mark.slow
def test_a_fit_on_over_peak_matmuls_raises_the_clock_and_fits_below_one():
    """Kernels timed by the cost model on the same core at 2.5 GHz (a turbo clock the spec
    does not know) with matmul efficiency 0.9: the fastest matmul runs at 1.125x the 2.0 GHz
    peak, which the old fit could only price at its bound, 1.0, 11 % slow. Now the clock is
    raised to that matmul's (2.25 GHz less its dispatch), the efficiency fits at most 1, and the
    matmuls are priced within 1 %; timings below the peak leave the clock alone."""
    truth = {"matmul_efficiency": 0.9, "conv_efficiency": 0.5, "vector_efficiency": 0.3,
             "memory_efficiency": 0.8, "op_overhead_s": 6e-6, "optimizer_overhead_s": 15e-6,
             "step_overhead_s": 40e-6}

    def timed(device, quick=False):
        todo = [c for c in cases(quick=quick) if c.kind != "function"]
        bare = dataclasses.replace(device, **{**truth, "op_overhead_s": 1.5e-6})
        training = dataclasses.replace(device, **truth)
        return [Measurement(c, predicted_seconds(c, training if c.kind == "train" else bare))
                for c in todo]

    fit = Calibration(CORE).fit(timed(at_clock(CORE, 2.5e9)))
    assert 2.2e9 < fit.clock_hz_ <= 2.25e9
    spec = fit.apply()
    assert spec.architecture.clock_hz == fit.clock_hz_
    assert spec.peak_flops_per_s[DType.FP32] == pytest.approx(64 * fit.clock_hz_)
    assert fit.matmul_efficiency_ <= 1.0
    matmuls = [r for m, r in zip(fit.measurements_, fit.residuals_) if m.case.kind == "matmul"]
    assert max(abs(r) for r in matmuls) < 0.01
    # below the peak: kept (the quick cases: the clock is read before any least squares)
    slow = Calibration(CORE).fit(timed(at_clock(CORE, 1.5e9), quick=True))
    assert slow.clock_hz_ < 2.0e9 and slow.apply().architecture.clock_hz == 2.0e9
    assert slow.apply().peak_flops_per_s == CORE.peak_flops_per_s


@pytest.mark.parametrize("name", ["cpu-host", "xeon-8480"])
def test_a_raised_clock_is_written_and_read_back(name, tmp_path):
    device = load_device(name)
    clock = device.architecture.clock_hz * 1.19
    raised = dataclasses.replace(at_clock(device, clock), name=f"{name}-calibrated")
    text = calibrated_toml(device, raised, "unit test")
    assert "raised by hwsim calibrate" in text
    loaded = parse_device(text.encode(), "x.toml")
    assert loaded.architecture.clock_hz == pytest.approx(clock)
    assert loaded.peak_flops_per_s == pytest.approx(raised.peak_flops_per_s)
    assert loaded.vector_flops_per_s == pytest.approx(raised.vector_flops_per_s)
    # the calibrated file calibrated again: its own lines are replaced, not duplicated
    path = tmp_path / "again.toml"
    path.write_text(text)
    again_device = load_device(str(path))
    again = calibrated_toml(again_device, at_clock(again_device, clock * 1.1), "again")
    assert again.count("\npeak_tflops =") == 1 and again.count("\nclock_ghz =") == 1
    assert parse_device(again.encode(), "y.toml").architecture.clock_hz == pytest.approx(
        clock * 1.1)
    # an unchanged clock leaves the file's lines as they were
    same = calibrated_toml(device, dataclasses.replace(device, name="n"), "x")
    assert "raised by hwsim calibrate" not in same
