"""The V100's and T4's matmul_efficiency against DeepBench's measured GEMMs
(simulator.calibrate.gemm, tests/data/deepbench_gemm.csv): the specs hold the fp16 fits, and
the fits predict the held-out largest fifth of the large GEMMs within the stated errors."""
from __future__ import annotations

import pytest

from hardware_specs.loader import load_device
from simulator.calibrate import gemm

ROWS = gemm.load()


@pytest.mark.parametrize("table, spec, precision, efficiency, held_median, held_max", [
    ("v100-sxm2", "v100-sxm2-32gb", "fp16", 0.848, 0.01, 0.10),
    ("v100-sxm2", "v100-sxm2-32gb", "fp32", 0.891, 0.04, 0.07),
    ("t4", "t4", "fp16", 0.616, 0.05, 0.07),
    ("t4", "t4", "fp32", 0.464, 0.02, 0.10),
])
def test_fit_and_held_out_error(table, spec, precision, efficiency, held_median, held_max):
    rows = [r for r in ROWS if r["device"] == table]
    assert len([r for r in rows if r["precision"] == precision]) == 95
    result = gemm.fit(rows, load_device(spec), precision)
    assert result["n"] == 12
    assert result["efficiency"] == pytest.approx(efficiency, abs=5e-4)
    assert result["held_out_median"] <= held_median and result["held_out_max"] <= held_max


@pytest.mark.parametrize("spec", ["v100-sxm2-32gb", "v100-pcie-32gb", "t4"])
def test_specs_hold_the_fp16_fit(spec):
    """One GEMM figure per spec: the tensor-core (fp16) fit, no longer the class prior."""
    device = load_device(spec)
    assert "matmul_efficiency" not in device.priors
    fit = gemm.fit([r for r in ROWS if r["device"] == ("t4" if spec == "t4" else "v100-sxm2")],
                   load_device(spec if spec != "v100-pcie-32gb" else "v100-sxm2-32gb"), "fp16")
    assert device.matmul_efficiency == pytest.approx(fit["efficiency"], abs=5e-4)
