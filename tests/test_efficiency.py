"""Shape efficiency (tile/wave quantisation, systolic padding) and pricing invariants."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hardware_specs.loader import load_device
from simulator import simulate
from simulator.efficiency import FLASH_BLOCK, gpu_tiles, shape_efficiency
from simulator.graph import OpGraph
from simulator.lower import lower
from simulator.op import DType
from workloads.layers import Builder
from workloads.transformer import TransformerConfig

A100 = load_device("a100")  # 108 SMs, 128 x 128 x 32 tiles


def test_a_4097_wide_matmul_is_less_efficient_than_4096():
    tile, sms = A100.architecture.matrix_tile, A100.architecture.compute_units
    even = gpu_tiles(8192, 8192, 8192, 1, tile, sms)
    odd = gpu_tiles(8192, 8193, 8192, 1, tile, sms)
    assert odd < even <= 1.0


def test_wave_quantisation_closed_form():
    """109 tiles on 108 SMs take two waves: 109 / 216 of the SM-time does work."""
    eff = gpu_tiles(128, 128 * 109, 32, 1, (128, 128, 32), 108)
    assert eff == pytest.approx(109 / 216)
    assert gpu_tiles(128 * 108, 128, 64, 1, (128, 128, 32), 108) == pytest.approx(1.0)


def test_systolic_padding_closed_form():
    tpu = load_device("tpu-v4")
    rows, cols = tpu.architecture.systolic_array
    graph = OpGraph()
    Builder(graph, dtype=DType.BF16).linear("fc", None, 1024, rows + 1, cols + 1)
    eff = shape_efficiency(lower(graph), tpu)
    assert eff[0] == pytest.approx(((rows + 1) / (2 * rows)) * ((cols + 1) / (2 * cols)))


def test_causal_fused_attention_runs_half_the_blocks():
    c = TransformerConfig("t", 1, 256, 4, vocab=64, seq_len=16 * FLASH_BLOCK)
    causal = simulate(c, "a100", micro_batch=1)
    low = causal.lowered
    i = int(np.flatnonzero(low.kind == 2)[0])  # the first (forward) attention op
    s, heads, d = 16 * FLASH_BLOCK, 4, 64
    peak = 312e12 * A100.attention_efficiency * gpu_tiles(s, s, d, heads, (128, 128, 32), 108)
    expected = low.flops[i] * 17 / 32 / peak + low.vector_flops[i] / A100.vector_flops_per_s
    assert causal.times["compute_s"][i] == pytest.approx(expected, rel=1e-9)


def test_fused_attention_runs_at_its_own_efficiency_and_falls_back_to_the_gemm_one():
    """The A100's cited FlashAttention-2 figure (0.656) prices the fused attention ops, forward
    and backward, and nothing else; a spec without one prices them as matmuls."""
    c = TransformerConfig("t", 2, 256, 4, vocab=64, seq_len=4 * FLASH_BLOCK)
    own = simulate(c, A100, micro_batch=2)
    gemm = simulate(c, dataclasses.replace(A100, attention_efficiency=None), micro_batch=2)
    kind = own.lowered.kind
    attention = kind == 2
    assert attention.sum() == 3 * c.layers   # forward, its recompute and its gradient
    vector = own.lowered.vector_flops[attention] / A100.vector_flops_per_s
    # compute = flops / (peak x efficiency) + fused vector work: the matmul part scales
    matmul_part = lambda r: r.times["compute_s"][attention] - vector  # noqa: E731
    assert matmul_part(gemm) * A100.matmul_efficiency == pytest.approx(
        matmul_part(own) * A100.attention_efficiency, rel=1e-9)
    assert np.array_equal(gemm.times["compute_s"][~attention], own.times["compute_s"][~attention])
    assert A100.attention_efficiency < A100.matmul_efficiency


devices = st.sampled_from(["a100", "h100", "v100-sxm2-32gb", "tpu-v4", "xeon-8380", "mi300x"])


@settings(max_examples=20, deadline=None)
@given(name=devices, scale=st.floats(1.01, 8.0), which=st.sampled_from(["bandwidth", "peak"]),
       layers=st.integers(1, 2), seq=st.sampled_from([16, 64, 200]))
def test_more_bandwidth_or_peak_is_never_slower(name, scale, which, layers, seq):
    base = load_device(name)
    if which == "bandwidth":
        memory = tuple(dataclasses.replace(m, bandwidth_bytes_per_s=m.bandwidth_bytes_per_s * scale)
                       for m in base.memory)
        faster = dataclasses.replace(base, memory=memory)
    else:
        faster = dataclasses.replace(
            base, peak_flops_per_s={k: v * scale for k, v in base.peak_flops_per_s.items()},
            vector_flops_per_s=base.vector_flops_per_s * scale)
    model = TransformerConfig("t", layers, 128, 4, vocab=97, seq_len=seq)
    slow = simulate(model, base, micro_batch=2)
    fast = simulate(model, faster, micro_batch=2)
    assert fast.step_time_s <= slow.step_time_s * (1 + 1e-12)


@settings(max_examples=20, deadline=None)
@given(name=devices, batch=st.integers(1, 8))
def test_step_is_at_least_flops_over_peak(name, batch):
    device = load_device(name)
    model = TransformerConfig("t", 2, 64, 2, vocab=50, seq_len=32, learned_positions=True)
    r = simulate(model, device, micro_batch=batch, attention="materialized")
    best = max(device.peak_flops_per_s.values())
    assert r.step_time_s >= r.hardware_flops_per_step / best
    assert np.all(shape_efficiency(r.lowered, device) <= 1.0)
    assert np.all(shape_efficiency(r.lowered, device) > 0.0)


def test_cache_fit_prices_small_ops_at_the_cache_level():
    from hardware_specs.spec import MemoryLevel
    from simulator.cost import level_bandwidth

    l2 = MemoryLevel("l2", capacity_bytes=40e6, bandwidth_bytes_per_s=5e12)
    device = dataclasses.replace(A100, memory=(l2, *A100.memory))
    bw = level_bandwidth(np.array([1e6, 40e6, 41e6]), device)
    hbm = A100.memory_bandwidth_bytes_per_s * A100.memory_efficiency
    assert list(bw) == [5e12, 5e12, hbm]
    assert list(level_bandwidth(np.array([1e6]), A100)) == [hbm]  # no cache listed: main memory


def _gelu_mlp():
    graph = OpGraph("gelu-mlp")
    b = Builder(graph, dtype=DType.FP32)
    x = b.linear("fc1", b.input("x", 64 * 256), 64, 256, 1024)
    x = b.activation("gelu", x, 64 * 1024)
    b.linear("fc2", x, 64, 1024, 256)
    return lower(graph)


def test_function_figures_price_only_their_function():
    """A measured function runs at its own fraction of its unit's peak (replacing the kind's
    efficiency) and pays its own per-call cost; every other op is priced as before."""
    from simulator.cost import op_costs

    lowered = _gelu_mlp()
    device = dataclasses.replace(A100, vector_efficiency=0.5)
    base = op_costs(lowered, device)
    slow = dataclasses.replace(device, function_efficiency={"gelu": 1e-4},
                               function_overhead_s={"gelu": 7e-6, "linear": 1e-6})
    compute, _, time_s = op_costs(lowered, slow)
    gelu, linears = lowered.fn == "gelu", lowered.fn == "linear"
    assert gelu.sum() == 1 and linears.sum() == 2
    flops = lowered.flops[gelu][0]
    assert compute[gelu][0] == pytest.approx(flops / (A100.vector_flops_per_s * 1e-4))
    assert time_s[gelu][0] == pytest.approx(compute[gelu][0] + 7e-6)  # its own, not op's
    assert np.allclose(time_s[linears], base[2][linears] - A100.op_overhead_s + 1e-6)
    other = ~(gelu | linears)
    assert np.array_equal(time_s[other], base[2][other])
