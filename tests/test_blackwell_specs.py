"""The Blackwell GPUs' GEMM figures (hardware_specs/devices/b200.toml, gb200.toml): the B200's
burst and sustained matmul rates from one mamf-finder run (stas00/ml-engineering,
compute/accelerator/README.md, 'Maximum Achievable Matmul FLOPS comparison table', branch
fast-mamf = PR #137, commit 082816f9: bf16 MAMF 1770.9, MSMF 1456.3; fp8 MAMF 3435.2, MSMF
2795.7 TFLOP/s), and the GB200's SM count, which turns hwsim's tile and wave model on."""
import numpy as np
import pytest

from hardware_specs.loader import load_device
from simulator.cost.efficiency import shape_efficiency
from simulator.graph.lower import lower
from simulator.graph.op import DType
from simulator.graph.opgraph import OpGraph
from workloads.layers import Builder

B200 = load_device("b200")
GB200 = load_device("gb200")


def test_the_b200_figures_are_one_runs_mamf_and_msmf():
    assert B200.matmul_efficiency == pytest.approx(1770.9 / 2250, abs=5e-4)
    assert B200.fp8_matmul_efficiency == pytest.approx(3435.2 / 4500, abs=5e-4)
    assert B200.matmul_sustained == pytest.approx(1456.3 / 1770.9, abs=5e-4)


def test_a_b200_steps_fp8_gemms_run_near_the_measured_fp8_msmf():
    """One ratio (bf16's) serves every format: the fp8 GEMM's sustained fraction of peak,
    burst x ratio, is the measured fp8 MSMF (2795.7 of 4500 = 62.1 %) within 1.5 %."""
    held = B200.fp8_matmul_efficiency * B200.matmul_sustained
    assert held == pytest.approx(2795.7 / 4500, rel=0.015)


def test_the_gb200_has_its_sm_count_and_the_b200_tile_but_no_sustained_ratio():
    assert GB200.architecture.compute_units == 152
    assert GB200.architecture.matrix_tile == B200.architecture.matrix_tile
    assert GB200.matmul_sustained is None   # no GB200 MSMF is published


def test_the_gb200s_gemms_pay_wave_quantisation():
    """A GEMM of 153 output tiles of 128 x 128 (one more than the 152 SMs) takes two waves,
    so it runs at 153 / 304 of the reference's rate, exactly (no fixed tile cost given);
    one of 152 tiles fills one wave."""
    graph = OpGraph()
    b = Builder(graph, dtype=DType.BF16)
    b.linear("one_wave", None, 152 * 128, 8192, 128, bias=False)
    b.linear("two_waves", None, 153 * 128, 8192, 128, bias=False)
    eff = shape_efficiency(lower(graph), GB200)
    reference = (8192 // 128) ** 2 / (np.ceil((8192 // 128) ** 2 / 152) * 152)
    assert eff[0] == pytest.approx(1 / reference, rel=1e-9)
    assert eff[1] == pytest.approx(153 / 304 / reference, rel=1e-9)


def test_the_b200s_hbm_bandwidth_is_nvidias_hgx_figure_and_the_drivers_bus():
    """7.7 TB/s (NVIDIA's HGX B200 column); the driver's 7,680-bit bus at 3,996 MHz gives
    7.67 TB/s (pytorch/ao PR #4002), within 0.5 %. The GB200 keeps 8 TB/s."""
    (hbm,) = B200.memory
    assert hbm.bandwidth_bytes_per_s == pytest.approx(7.7e12)
    assert hbm.bandwidth_bytes_per_s == pytest.approx(7680 / 8 * 3996e6 * 2, rel=0.005)
    assert GB200.memory[0].bandwidth_bytes_per_s == pytest.approx(8.0e12)
