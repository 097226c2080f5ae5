"""A convolution's implicit GEMM runs its tensor-core tile either way round
(``simulator.cost.efficiency.conv_tiles``; CUTLASS's NHWC conv2d kernels come as 256 x 128 and
128 x 256, 256 x 64 and 64 x 256, NVIDIA/cutlass 7107b05 python/cutlass_library/generator.py).
GEMMs keep the spec's orientation; square tiles (the A100's, V100's) change nothing."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware_specs.loader import load_device
from simulator.cost.efficiency import (
    REFERENCE_GEMM,
    conv_tiles,
    gpu_tiles,
    shape_efficiency,
)
from simulator.graph.lower import lower
from simulator.graph.op import DType
from simulator.graph.opgraph import OpGraph
from workloads.layers import Builder

H100 = load_device("h100-sxm5-80gb")   # 132 SMs, 128 x 256 x 64 tiles
A100 = load_device("a100")             # 108 SMs, 128 x 128 x 32 tiles


def test_resnet_stage1_conv_closed_form():
    """ResNet-50's 3 x 3 convolution of 64 channels at 56 x 56, 400 images (the MLPerf H100
    run's per-GPU batch): m = 400 x 3,136 = 1,254,400, n = 64, k = 576, on 132 SMs, no
    fixed cost nor split. 128 x 256: 9,800 tiles (n padded 64 -> 256: a quarter used) in 75
    waves, 9,800 / 9,900 x 1/4. 256 x 128: 4,900 tiles (n padded to 128: half) in 38 waves,
    4,900 / 5,016 x 1/2: twice the rate, nearly."""
    m, n, k = 400 * 56 * 56, 64, 9 * 64
    tile = (128, 256, 64)
    as_is = gpu_tiles(m, n, k, 1, tile, 132, 0.0, splits=(1,))
    assert float(as_is) == pytest.approx(9800 / 9900 / 4, rel=1e-12)
    assert float(conv_tiles(m, n, k, 1, tile, 132, 0.0, splits=(1,))) == pytest.approx(
        4900 / 5016 / 2, rel=1e-12)


dims = st.integers(1, 1 << 21)


@settings(max_examples=200, deadline=None)
@given(m=dims, n=st.integers(1, 4096), k=st.integers(1, 1 << 14), fixed=st.sampled_from(
    [0.0, 290.0]))
def test_conv_tiles_is_the_better_orientation_and_symmetric(m, n, k, fixed):
    """Never below the spec's orientation, and the same whichever side is called m (the two
    orientations of a tile are the same kernel with its operands swapped)."""
    tile = H100.architecture.matrix_tile
    units = H100.architecture.compute_units
    both = conv_tiles(m, n, k, 1, tile, units, fixed)
    assert both >= gpu_tiles(m, n, k, 1, tile, units, fixed)
    assert both == pytest.approx(conv_tiles(n, m, k, 1, tile, units, fixed), rel=1e-12)
    square = (128, 128, 32)
    assert conv_tiles(m, n, k, 1, square, 108, fixed) == gpu_tiles(m, n, k, 1, square, 108, fixed)


def _efficiency(device, conv: bool) -> float:
    """``shape_efficiency`` of the stage-1 convolution above, or of a GEMM of its shape."""
    graph = OpGraph()
    b = Builder(graph, dtype=DType.FP16)
    if conv:
        b.conv2d("c", None, 400, 64, 56, 56, 64, 3, pad=1)
    else:
        b.linear("fc", None, 400 * 56 * 56, 9 * 64, 64, bias=False)   # m, k, n
    return float(shape_efficiency(lower(graph), device)[0])


def test_shape_efficiency_turns_convolutions_not_gemms():
    """On the H100 the convolution is priced at ``conv_tiles`` (with the spec's fixed cost and
    split-k), the GEMM of the same m, n, k at the spec's one orientation; on the A100's square
    tile both are ``gpu_tiles``."""
    arch = H100.architecture
    fixed = float(arch.tile_fixed_k)
    ref = gpu_tiles(REFERENCE_GEMM, REFERENCE_GEMM, REFERENCE_GEMM, 1, arch.matrix_tile,
                    arch.reference_units or arch.compute_units, fixed)
    m, n, k = 400 * 56 * 56, 64, 9 * 64
    turned = conv_tiles(m, n, k, 1, arch.matrix_tile, arch.compute_units, fixed) / ref
    kept = gpu_tiles(m, n, k, 1, arch.matrix_tile, arch.compute_units, fixed) / ref
    assert _efficiency(H100, conv=True) == pytest.approx(float(turned), rel=1e-12)
    assert _efficiency(H100, conv=False) == pytest.approx(float(kept), rel=1e-12)
    assert turned > 1.9 * kept
    assert _efficiency(A100, conv=True) == pytest.approx(_efficiency(A100, conv=False),
                                                         rel=1e-12)
    assert np.isfinite(turned)
