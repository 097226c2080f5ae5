"""A CPU's 2-D convolutions by shape (``simulator.cost.efficiency.cpu_gemm``,
``DeviceSpec.conv_half_dim``): the closed form, its limits, a bigger convolution never slower
per FLOP, matmuls and 1-D convolutions at their plateau, the spec's key written and read back,
and the calibration recovering a known size from timings the cost model itself made. No torch:
kernels and chains of linears only."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware_specs.loader import load_device, parse_device
from hardware_specs.spec import DeviceClass
from hardware_specs.writer import calibrated_toml, device_toml
from simulator.calibrate.fit import (
    PARAMS,
    SHAPE_PARAMS,
    Calibration,
    Case,
    Measurement,
    _lowered,
    cases,
)
from simulator.cost.efficiency import REFERENCE_GEMM, cpu_gemm, shape_efficiency
from simulator.cost.roofline import op_costs
from simulator.errors import SpecError

XEON = load_device("xeon-8380")
# the catalogue Xeon with its AVX-512 lanes: a CPU whose convolutions the size applies to
CPU = dataclasses.replace(XEON, architecture=dataclasses.replace(XEON.architecture,
                                                                 simd_width_bits=512))


def test_closed_form_and_limits():
    assert cpu_gemm(64, 64, 64, 64.0) == pytest.approx(0.5)        # half at s = h
    # s = 3 / (1/32 + 1/128 + 1/512) = 73.14...: s / (s + 40)
    s = 3 / (1 / 32 + 1 / 128 + 1 / 512)
    assert cpu_gemm(32, 128, 512, 40.0) == pytest.approx(s / (s + 40.0), rel=1e-12)
    assert cpu_gemm(1e9, 1e9, 1e9, 100.0) > 1 - 1e-6              # toward the plateau
    assert cpu_gemm(1, 1e9, 1e9, 100.0) < 3 / 100                 # one short side bounds it
    assert cpu_gemm(0, 8, 8, 10.0) == cpu_gemm(1, 8, 8, 10.0)     # sides below 1 count as 1
    assert cpu_gemm(7, 9, 11, 0.0) == 1.0                          # no size: no dependence


def _factor(case: Case, device) -> float:
    return float(shape_efficiency(_lowered(case), device)[-1])


def test_priced_factor_is_the_closed_form_relative_to_the_reference_gemm():
    spec = dataclasses.replace(CPU, conv_half_dim=150.0)
    # a convolution as a GEMM: m = 8 x 56 x 56, n = 64 output channels, k = 64 x 3 x 3
    conv = Case("conv", (8, 64, 56, 56, 64, 3, 1, 1))
    assert _factor(conv, spec) == pytest.approx(
        cpu_gemm(8 * 56 * 56, 64, 64 * 9, 150.0)
        / cpu_gemm(REFERENCE_GEMM, REFERENCE_GEMM, REFERENCE_GEMM, 150.0), rel=1e-12)
    assert _factor(conv, dataclasses.replace(spec, conv_half_dim=None)) == 1.0
    # a 1-D convolution (no calibration kernel measures one) keeps its plateau
    lowered = _lowered(conv)
    one_d = dataclasses.replace(lowered, fn=np.array(["conv1d"] * len(lowered), dtype=object))
    assert float(shape_efficiency(one_d, spec)[-1]) == 1.0
    # matmuls keep theirs: the SIMD padding alone, as before
    assert _factor(Case("matmul", (64, 4096, 1024)), spec) == 1.0
    assert _factor(Case("matmul", (64, 24, 1024)), spec) == pytest.approx(24 / 32)
    # a GPU never takes it
    gpu = dataclasses.replace(load_device("a100"), conv_half_dim=150.0)
    assert _factor(conv, gpu) == _factor(conv, load_device("a100"))


SIDES = st.integers(1, 24)


@settings(max_examples=60, deadline=None)
@given(SIDES, SIDES, SIDES, st.sampled_from([1, 3]), st.integers(0, 2), st.integers(1, 24),
       st.floats(1.0, 2000.0))
def test_a_bigger_convolution_never_runs_at_a_lower_flop_rate(hw, cin, cout, kernel, side, grow,
                                                              half):
    """Growing the image, the input or the output channels (output channels in whole
    multiples of the 16 fp32 lanes, where the SIMD padding is exact) never lowers the priced
    FLOP rate of a compute-bound convolution."""
    spec = dataclasses.replace(CPU, conv_half_dim=half)
    dims = [4 * hw, 4 * cin, 16 * cout]                   # image side, cin, cout
    bigger = list(dims)
    bigger[side] += (4, 4, 16)[side] * grow

    def rate(d):
        side_px, c_in, c_out = d
        lowered = _lowered(Case("conv", (2, c_in, side_px, side_px, c_out, kernel, 1,
                                         kernel // 2)))
        compute_s = op_costs(lowered, spec)[0]
        return float(lowered.flops[-1] / compute_s[-1])

    assert rate(bigger) >= rate(dims) * (1 - 1e-12)


def test_sizes_are_written_and_read_back_and_bad_ones_refused():
    spec = dataclasses.replace(load_device("cpu-host"), conv_half_dim=210.0)
    for text in (device_toml(spec), calibrated_toml(load_device("cpu-host"), spec, "unit test"),
                 calibrated_toml(XEON, dataclasses.replace(XEON, conv_half_dim=210.0),
                                 "unit test")):
        loaded = parse_device(text.encode(), "x.toml")
        assert loaded.conv_half_dim == 210.0
        assert text.count("conv_half_dim =") == 1
    plain = parse_device(device_toml(load_device("cpu-host")).encode(), "x.toml")
    assert plain.conv_half_dim is None
    base = device_toml(load_device("cpu-host"))
    for value, words in (("-3", "must be > 0"), ('"big"', "must be a number"),
                         ("2e7", "is over")):
        bad = base.replace("[compute]\n", f"[compute]\nconv_half_dim = {value}\n", 1)
        with pytest.raises(SpecError, match=f"compute.conv_half_dim.*{words}"):
            parse_device(bad.encode(), "x.toml")
    with pytest.raises(SpecError, match="conv_half_dim"):
        dataclasses.replace(spec, conv_half_dim=-1.0)


TRUTH = {"matmul_efficiency": 0.8, "conv_efficiency": 0.5, "vector_efficiency": 0.02,
         "memory_efficiency": 0.7, "op_overhead_s": 4e-6, "optimizer_overhead_s": 9e-6,
         "step_overhead_s": 30e-6, "conv_half_dim": 160.0}


@pytest.mark.slow
def test_the_fit_recovers_known_sizes():
    """Timings the cost model makes at ``TRUTH`` (kernels alone pay a bare dispatch, the
    chains the framework's per-op cost): the fit gives every figure back, the size too."""
    todo = [c for c in cases() if c.kind != "function"]
    bare = dataclasses.replace(CPU, **{**TRUTH, "op_overhead_s": 1.2e-6})
    training = dataclasses.replace(CPU, **TRUTH)
    timings = [Measurement(c, Calibration._predict(c, training if c.kind == "train" else bare))
               for c in todo]
    fit = Calibration(CPU).fit(timings)
    for name in PARAMS + SHAPE_PARAMS:
        assert getattr(fit, name + "_") == pytest.approx(TRUTH[name], rel=1e-3), name
    assert max(abs(fit.residuals_)) < 1e-4
    applied = fit.apply()
    assert applied.conv_half_dim == pytest.approx(160.0, rel=1e-3)
    # a device that does not price GEMMs by shape fits none (and writes none)
    other = Calibration(dataclasses.replace(XEON, device_class=DeviceClass.GPU))
    assert other._params == PARAMS
    assert Calibration(XEON)._params == PARAMS        # no SIMD width given: no size
