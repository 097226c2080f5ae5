"""fp32 GEMMs on the tile of the library's fp32 kernel (``Architecture.fp32_matrix_tile``).

An H100 runs its fp32 GEMMs (TF32 off) on cuBLAS's sm80 FFMA kernels, mostly of 128 x 128 x 8
tiles, not on the 128 x 256 x 64 Hopper tile whose fixed cost (``tile_fixed_k``, 290 k-steps)
was fitted on bf16 GEMMs. The fp32 kernel's own fixed cost per tile (``fp32_tile_fixed_k``) is
fitted on NeuSight's fp32 linear and bmm calls of 1e9 to 2e11 FLOPs on the H100
(``tests/data/neusight_small_gemm_h100.csv``; ``simulator.calibrate.gemm.fit_fp32_tile``),
each call modelled as a constant floor (the host's issue and the CUDA events, priced apart by
hwsim) plus hwsim's time.
"""
import dataclasses

import numpy as np
import pytest

from hardware_specs.loader import load_device
from hardware_specs.spec import Architecture
from simulator.calibrate.gemm import (NEUSIGHT_TABLE, SMALL_TABLE, fit_fp32_tile, load,
                                      predicted_s)
from simulator.cost.efficiency import REFERENCE_GEMM, gpu_tiles
from simulator.errors import SpecError
from simulator.graph.op import DType

H100 = load_device("h100-sxm5-80gb")


@pytest.fixture(scope="module")
def fitted():
    large = [r for r in load(NEUSIGHT_TABLE) if r["device"] == "NVIDIA H100 80GB HBM3"]
    return fit_fp32_tile(H100, load(SMALL_TABLE), large)


def test_the_spec_carries_the_fit(fitted):
    """32 k-steps, fp32_matmul_efficiency 0.763 (refitted with the tile); median |error| 5.3 %
    on the fitted calls, 3.6 % on the held-out fifth with the most FLOPs, against 10.4 %
    without the floor."""
    assert H100.architecture.fp32_matrix_tile == (128, 128, 8)
    assert fitted["fixed_k"] == H100.architecture.fp32_tile_fixed_k == 32
    assert fitted["efficiency"] == pytest.approx(H100.fp32_matmul_efficiency, abs=5e-4)
    assert fitted["n"] > 1000
    assert fitted["median"] < 0.07 and fitted["held_out_median"] < 0.06
    assert fitted["no_intercept_median"] > fitted["median"]


def test_the_floor_is_the_hosts(fitted):
    """The intercept, 19.5 us, is in the range of the host's share of NeuSight's single-call
    timings measured on elementwise calls of five other GPUs (intercepts 14-23 us,
    tests/test_streaming_ramp.py), not a device cost."""
    assert 10e-6 < fitted["intercept_s"] < 30e-6


def test_the_fixed_cost_in_time_is_close_to_the_16_bit_tiles():
    """32 k-steps of a 128 x 128 fp32 tile at the fp32 peak per SM is 2.1 us; 290 k-steps of a
    128 x 256 bf16 tile at the bf16 peak per SM is 2.5 us: the same order, as a pipeline fill
    and epilogue should be."""
    units = H100.architecture.compute_units
    fp32 = 32 * 2 * 128 * 128 / (H100.peak_for(DType.FP32) / units)
    bf16 = 290 * 2 * 128 * 256 / (H100.peak_for(DType.BF16) / units)
    assert fp32 == pytest.approx(2.1e-6, rel=0.05) and bf16 == pytest.approx(2.5e-6, rel=0.05)


def test_an_fp32_gemm_runs_the_fp32_tile_in_closed_form():
    """hwsim's time of an fp32 (m, n, k) GEMM is its FLOPs over peak x efficiency x the tile
    factor of 128 x 128 x 8 tiles with 32 fixed k-steps, unsplit, relative to the reference."""
    m, n, k = 1024, 1280, 1280
    shape = (gpu_tiles(m, n, k, 1, (128, 128, 8), 132, 32.0, splits=(1,))
             / gpu_tiles(REFERENCE_GEMM, REFERENCE_GEMM, REFERENCE_GEMM, 1, (128, 128, 8), 132,
                         32.0, splits=(1,)))
    compute = 2 * m * n * k / (H100.peak_for(DType.FP32) * H100.fp32_matmul_efficiency
                               * float(shape))
    time_s = predicted_s(H100, [(m, n, k)], DType.FP32)[0]
    assert time_s == pytest.approx(compute + H100.op_overhead_s, rel=1e-6)


def test_other_formats_keep_the_16_bit_tile():
    """The fp32 tile changes fp32 matmuls only: a bf16 GEMM costs the same without it."""
    plain = dataclasses.replace(H100, architecture=dataclasses.replace(
        H100.architecture, fp32_matrix_tile=None, fp32_tile_fixed_k=None))
    shapes = [(1024, 1280, 1280), (4096, 5120, 1280), (333, 777, 64)]
    for dtype in (DType.BF16, DType.FP16, DType.FP8):
        assert np.array_equal(predicted_s(H100, shapes, dtype), predicted_s(plain, shapes, dtype))
    assert not np.array_equal(predicted_s(H100, shapes, DType.FP32),
                              predicted_s(plain, shapes, DType.FP32))


def test_a_bad_tile_is_refused():
    with pytest.raises(SpecError, match="fp32_matrix_tile"):
        Architecture(fp32_matrix_tile=(128, 128))
    with pytest.raises(SpecError, match="fp32_tile_fixed_k"):
        Architecture(fp32_tile_fixed_k=-1)
