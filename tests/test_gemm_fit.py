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
def test_specs_hold_the_fits(spec):
    """The tensor-core (fp16) fit as matmul_efficiency, no longer the class prior, and the
    CUDA-core one as fp32_matmul_efficiency (the V100 PCIe carries the SXM2's over)."""
    device = load_device(spec)
    assert "matmul_efficiency" not in device.priors
    measured = load_device("v100-sxm2-32gb" if spec.startswith("v100") else spec)
    rows = [r for r in ROWS if r["device"] == ("t4" if spec == "t4" else "v100-sxm2")]
    assert device.matmul_efficiency == pytest.approx(
        gemm.fit(rows, measured, "fp16")["efficiency"], abs=5e-4)
    assert device.fp32_matmul_efficiency == pytest.approx(
        gemm.fit(rows, measured, "fp32")["efficiency"], abs=5e-4)


def test_fp32_gemms_run_at_their_own_figure():
    """An fp32 GEMM on the T4 takes 0.616 / 0.464 of the time it took at the fp16 figure (a
    large, compute-bound shape); an fp16 one is unchanged."""
    import dataclasses

    from simulator.cost.roofline import op_costs
    from simulator.graph.lower import lower
    from simulator.graph.op import DType
    from simulator.graph.opgraph import OpGraph
    from workloads.layers import Builder

    t4 = load_device("t4")
    one = dataclasses.replace(t4, fp32_matmul_efficiency=None)
    for dtype, ratio in ((DType.FP32, 0.616 / 0.464), (DType.FP16, 1.0)):
        graph = OpGraph()
        Builder(graph, dtype=dtype).linear("g", None, 8192, 8192, 8192, bias=False)
        low = lower(graph)
        assert op_costs(low, t4)[0][0] == pytest.approx(op_costs(low, one)[0][0] * ratio)
