"""A GEMM tile's time is its padded k loop plus a fixed cost per tile, both in k-steps
(simulator.cost.efficiency.gpu_tiles; the H100's tile_fixed_k = 290 was fitted on OpenXLA's
sm_90 GEMM table, whose depths are multiples of the 64-deep k-tile, so there the two terms
cannot be told apart from a product). Below the k-tile they differ: the padding and the fixed
cost add, so a shallower GEMM of the same output is never slower."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware_specs.loader import load_device
from simulator.cost.efficiency import gpu_tiles

H100 = load_device("h100-sxm5-80gb")
TILE = tuple(H100.architecture.matrix_tile)
UNITS = H100.architecture.compute_units
FIXED = float(H100.architecture.tile_fixed_k)


def test_a_shallow_tile_pays_its_padded_loop_plus_the_fixed_cost():
    # one 8192 x 8192 output, depth 16 on a 64-deep k-tile: 16 / (64 + 290) of the tile's
    # time is useful, times the wave factor (no split helps below one k-tile)
    m = n = 8192
    waves = np.ceil(64 * 32 / UNITS)   # 128 x 256 tiles: 64 x 32 of them
    wave_factor = 64 * 32 / (waves * UNITS)
    got = gpu_tiles(m, n, 16, 1, TILE, UNITS, FIXED)
    assert np.isclose(got, wave_factor * 16 / (64 + FIXED), rtol=1e-12)


def test_depths_on_the_k_tile_are_priced_as_before():
    # multiples of the k-tile (what the fit saw): k / (k + fixed) at split 1
    for k in (64, 128, 1024):
        one = gpu_tiles(8192, 8192, k, 1, TILE, UNITS, FIXED, splits=(1,))
        waves = np.ceil(64 * 32 / UNITS)
        assert np.isclose(one, 64 * 32 / (waves * UNITS) * k / (k + FIXED), rtol=1e-12)


@settings(max_examples=200, deadline=None)
@given(m=st.integers(1, 16384), n=st.integers(1, 16384), k=st.integers(2, 4096),
       fixed=st.sampled_from([0.0, 32.0, FIXED]))
def test_a_shallower_gemm_of_the_same_output_is_never_slower(m, n, k, fixed):
    # time per FLOP goes as 1 / eff, and a product's FLOPs as its depth: time ~ k / eff, with
    # split-k (every split is open to every depth, a slice shallower than the k-tile paying its
    # padding, so each split's time grows with k and so does the best)
    deep = k / gpu_tiles(m, n, k, 1, TILE, UNITS, fixed)
    shallow = (k - 1) / gpu_tiles(m, n, k - 1, 1, TILE, UNITS, fixed)
    assert shallow <= deep * (1 + 1e-12)
