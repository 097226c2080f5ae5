"""The convolution fit of simulator/calibrate/conv.py on NeuSight's fp32 conv table.

Measured when written (tests/data/neusight_conv_kernels.csv, the largest-FLOPs fifth held out):
rate (of the fp32 peak x tile efficiency) and fixed cost per call, held-out median |error| of
the fit and of the spec's own efficiency:
A100 80GB PCIe 1.43, 46 us, 31.5 % (spec 99.6 %); V100 PCIe 1.64, 48 us, 25.9 % (67.2 %);
T4 1.11, 139 us, 29.2 % (34.1 %); P100 1.00, 460 us, 29.6 % (spec 25.5 %: the fit is worse there).
Bounds are stated just outside these.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.calibrate.conv import fit_table, implicit_gemm, predict_s

TABLE = Path(__file__).resolve().parent / "data" / "neusight_conv_kernels.csv"


@pytest.fixture(scope="module")
def fits():
    return fit_table(TABLE)


def test_implicit_gemm_matches_the_builders_conv():
    """ResNet's stem: a 7x7/2 conv of 3 -> 64 channels on 224 x 224 images, batch 2: M = 2 x 112
    x 112, N = 64, K = 3 x 49, the FLOPs of workloads.cnn's conv op."""
    from workloads.cnn import RESNET50

    m, n, k, flops, nbytes = implicit_gemm(2, 3, 64, 7, 224, 2, 3)
    assert (m, n, k) == (2 * 112 * 112, 64, 3 * 49)
    assert flops == RESNET50.forward_graph(2).op("L0.conv1").flops
    assert nbytes == 4 * (2 * 3 * 224 * 224 + 64 * 3 * 49 + 2 * 112 * 112 * 64)


@pytest.mark.parametrize("device, rate, fixed_us, held", [
    ("NVIDIA A100 80GB PCIe", 1.43, 46, 0.315),
    ("Tesla V100-PCIE-32GB", 1.64, 48, 0.259),
    ("Tesla T4", 1.11, 139, 0.292),
    ("Tesla P100-PCIE-16GB", 1.00, 460, 0.296)])
def test_fit_as_measured(fits, device, rate, fixed_us, held):
    """Each GPU's fit reproduces what was measured (rate within 5 %, fixed cost within 10 %,
    held-out error within 2 points). The fits use the specs' peaks, tiles and streaming rates,
    not their efficiencies, so priors do not move them."""
    f = fits[device]
    assert f.rate == pytest.approx(rate, rel=0.05)
    assert f.fixed_s * 1e6 == pytest.approx(fixed_us, rel=0.10)
    assert f.held_out_median_error == pytest.approx(held, abs=0.02)
    assert f.held_out_rows * 4 == pytest.approx(f.fitted_rows, rel=0.01)


def test_fit_beats_the_spec_where_winograd_runs_fastest(fits):
    """On the A100 and V100 (rate > 1.4: most convolutions run Winograd) the spec's efficiency
    (the A100's measured GEMM figure 0.827, the V100's GPU prior 0.77) misses the held-out fifth
    by 100-117 %, the fit by under 32 %."""
    for device in ("NVIDIA A100 80GB PCIe", "Tesla V100-PCIE-32GB"):
        assert fits[device].held_out_median_error < 0.5 * fits[device].unfitted_median_error


@settings(max_examples=60, deadline=None)
@given(st.floats(1e-6, 1.0), st.floats(0.0, 1.0), st.floats(0.05, 4.0), st.floats(1.01, 3.0),
       st.floats(0.0, 1e-3))
def test_model_is_monotone(compute, memory, rate, faster, fixed):
    """A higher rate is never slower; the time is at least the fixed cost and the memory time."""
    c, m = np.array([compute]), np.array([memory])
    slow, fast = predict_s(c, m, rate, fixed), predict_s(c, m, rate * faster, fixed)
    assert fast[0] <= slow[0]
    assert fast[0] >= max(memory, fixed) - 1e-15


DEEPBENCH = Path(__file__).resolve().parent / "data" / "deepbench_conv.csv"


@pytest.mark.parametrize("precision, device, rate, held", [
    ("fp16", "NVIDIA V100 (DGX-1)", 0.656, 0.229),
    ("fp16", "NVIDIA T4", 0.397, 0.529),
    ("fp32", "NVIDIA V100 (DGX-1)", 1.963, 0.272),
    ("fp32", "NVIDIA T4", 0.957, 0.401)])
def test_deepbench_fits_as_measured(precision, device, rate, held):
    """DeepBench's convolutions (forward, data and weight gradients; 94 shapes of 1x1 to 20x5
    kernels, strides 1 and 2): measured when written: V100 fp16 (tensor cores, NHWC) 0.656 of
    the peak x tile, held-out 22.9 %; T4 fp16 0.397, 52.9 %; V100 fp32 1.963 (Winograd), 27.2 %;
    T4 fp32 0.957, 40.1 %. (At the GPU prior 0.77 and no fixed cost the held-out errors are 16.6,
    25.5, 157 and 56.4 %: the prior carries the large tensor-core convolutions better than the
    fits' extrapolation, and misses the fp32 ones by far.) Rate within 5 %, error within 2 points."""
    from simulator.calibrate.conv import fit_deepbench_table

    f = fit_deepbench_table(DEEPBENCH, precision)[device]
    assert f.rate == pytest.approx(rate, rel=0.05)
    assert f.held_out_median_error == pytest.approx(held, abs=0.02)
    assert f.fitted_rows + f.held_out_rows == 94 + 84 + 94   # 10 shapes have no data gradient


def test_one_conv_efficiency_cannot_serve_both_formats():
    """Why the fits are not in the specs: one ``conv_efficiency`` per device multiplies every
    format's peak, but the V100's tensor-core convolutions reach 0.66 of the fp16 peak x tile
    and its fp32 ones 1.96 of the fp32 peak x tile (Winograd) -- a factor of 3 apart on the same
    shapes; NeuSight's fp32 table agrees (1.64)."""
    from simulator.calibrate.conv import fit_deepbench_table

    fp16 = fit_deepbench_table(DEEPBENCH, "fp16")["NVIDIA V100 (DGX-1)"].rate
    fp32 = fit_deepbench_table(DEEPBENCH, "fp32")["NVIDIA V100 (DGX-1)"].rate
    assert fp32 / fp16 > 2.5

