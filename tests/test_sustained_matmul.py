"""GEMMs sustained, not burst (issue 20 item 1, issue 21): a spec whose GEMM figures are short
bursts on a cool chip (MAMF) gives ``matmul_sustained``, the measured sustained-over-burst
ratio; a training step divides its tensor-core compute by it (simulator.cost.power
.sustained_times), a kernel timed alone keeps the burst rate.

The H100 SXM's ratio is the H200 SXM's (the same GH100 die at the same 700 W): MSMF 755 over
MAMF 850 TFLOP/s in one run of stas00/ml-engineering's mamf-finder ("Maximum Achievable and
Sustainable Matmul FLOPS comparison table", read 2026-10-02)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware_specs.loader import load_device
from hardware_specs.override import override
from simulator import simulate
from simulator.cost.power import burst, sustained_times
from simulator.cost.roofline import op_costs
from simulator.errors import SpecError
from simulator.graph.lower import lower
from simulator.graph.op import DType, OpKind
from simulator.graph.opgraph import OpGraph
from workloads.layers import Builder

H100 = load_device("h100-sxm5-80gb")
PLAN = {"micro_batch": 2, "global_batch": 16, "seq_len": 1024, "precision": "bf16"}


def _lowered(dtype: DType):
    graph = OpGraph()
    b = Builder(graph, dtype=dtype)
    b.linear("big", None, 8192, 8192, 8192, bias=False)     # compute-bound
    b.linear("thin", None, 1, 8192, 8192, bias=False)       # bound by its weight's bytes
    return lower(graph)


def test_the_h100_ratio_is_the_h200_msmf_over_its_mamf():
    assert H100.matmul_sustained == pytest.approx(755 / 850, abs=5e-4)
    # its neighbours: the specs whose figure is already sustained carry no ratio
    for name in ("h200-sxm", "a100-sxm4-80gb", "a100-pcie-80gb", "mi300x"):
        assert load_device(name).matmul_sustained is None


def test_closed_form_compute_bound_gemm_runs_at_the_sustained_rate():
    """The 8192^3 bf16 GEMM: burst 2 x 8192^3 / (989.4e12 x 0.803 x shape), sustained the same
    over 0.888; the memory-bound GEMV keeps its time; the kernel alone (op_costs) is a burst."""
    low = _lowered(DType.BF16)
    compute, memory, time = op_costs(low, H100)
    sustained_compute, sustained_time = sustained_times(low, H100, compute, memory, time)
    assert sustained_compute[0] == pytest.approx(compute[0] / 0.888, rel=1e-3)
    assert sustained_time[0] - time[0] == pytest.approx(compute[0] * (1 / 0.888 - 1), rel=1e-3)
    assert memory[1] > compute[1] / 0.888   # the GEMV stays bound by its bytes
    assert sustained_time[1] == time[1]
    # the burst rate of the big GEMM at the spec's figures, within its shape factor
    assert 2 * 8192 ** 3 / compute[0] == pytest.approx(989.4e12 * 0.803, rel=0.02)


def test_fp32_gemms_on_the_cuda_cores_are_not_scaled_fp8_ones_are():
    low = _lowered(DType.FP32)
    compute, memory, time = op_costs(low, H100)
    assert np.array_equal(sustained_times(low, H100, compute, memory, time)[1], time)
    low = _lowered(DType.FP8)
    compute, memory, time = op_costs(low, H100)
    assert sustained_times(low, H100, compute, memory, time)[0][0] == pytest.approx(
        compute[0] / 0.888, rel=1e-9)


def test_an_fp8_ratio_scales_the_fp8_gemms_and_only_them():
    """With ``fp8_matmul_sustained`` the fp8 GEMM's compute is its burst over that ratio, a
    bf16 GEMM's over ``matmul_sustained`` still; without it fp8 takes ``matmul_sustained``."""
    spec = dataclasses.replace(H100, fp8_matmul_sustained=0.7)
    for dtype, ratio in ((DType.FP8, 0.7), (DType.BF16, 0.888)):
        low = _lowered(dtype)
        compute, memory, time = op_costs(low, spec)
        assert sustained_times(low, spec, compute, memory, time)[0][0] == pytest.approx(
            compute[0] / ratio, rel=1e-9)
    # an fp8 ratio alone (no 16-bit one): the bf16 GEMMs keep the burst rate
    only = dataclasses.replace(H100, matmul_sustained=None, fp8_matmul_sustained=0.7)
    low = _lowered(DType.BF16)
    compute, memory, time = op_costs(low, only)
    assert np.array_equal(sustained_times(low, only, compute, memory, time)[1], time)
    with pytest.raises(SpecError, match="fp8_matmul_sustained"):
        override(H100, {"fp8_matmul_sustained": 1.5})


def test_no_ratio_changes_nothing():
    bare = burst(H100)
    low = _lowered(DType.BF16)
    compute, memory, time = op_costs(low, bare)
    out = sustained_times(low, bare, compute, memory, time)
    assert out[0] is compute and out[1] is time


def test_burst_clears_the_fp8_ratio_too():
    """``burst(spec)`` prices a kernel timed alone: on the B200 (fp8 ratio 0.814 of its own,
    16-bit 0.822) its fp8 GEMM keeps its burst compute and time, where clearing
    ``matmul_sustained`` alone still divides the fp8 compute by ``fp8_matmul_sustained``."""
    b200 = load_device("b200")
    assert b200.fp8_matmul_sustained is not None and b200.fp8_matmul_sustained < 1
    low = _lowered(DType.FP8)
    compute, memory, time = op_costs(low, b200)
    out = sustained_times(low, burst(b200), compute, memory, time)
    assert out[0] is compute and out[1] is time
    half = dataclasses.replace(b200, matmul_sustained=None)
    assert sustained_times(low, half, compute, memory, time)[0][0] == pytest.approx(
        compute[0] / b200.fp8_matmul_sustained, rel=1e-9)
    # in a step: the fp8 GEMMs run at the burst rate, the same spec's sustained step slower
    from workloads.transformer import TransformerConfig

    c = TransformerConfig("t", 2, 1024, 8, vocab=512, seq_len=2048)
    held = simulate(c, b200, micro_batch=2, precision="fp8")
    bursts = simulate(c, burst(b200), micro_batch=2, precision="fp8")
    fp8 = (held.lowered.kind == OpKind.MATMUL) & (held.lowered.dtype == DType.FP8)
    assert fp8.sum() > 0
    np.testing.assert_allclose(held.times["compute_s"][fp8],
                               bursts.times["compute_s"][fp8] / b200.fp8_matmul_sustained,
                               rtol=1e-9)
    assert bursts.step_time_s < held.step_time_s


def test_a_ratio_outside_zero_one_is_refused():
    with pytest.raises(SpecError, match="matmul_sustained"):
        override(H100, {"matmul_sustained": 1.2})
    assert override(H100, {"matmul_sustained": 0.5}).matmul_sustained == 0.5


@settings(max_examples=4, deadline=None)
@given(ratio=st.floats(min_value=0.5, max_value=1.0))
def test_a_sustained_step_is_never_faster_than_the_burst_nor_slower_than_its_ratio(ratio):
    """Invariants: the step slows by at least nothing and at most 1 / ratio (only tensor-core
    compute is scaled); MFU and HFU stay at most 1."""
    bursts = simulate("gpt3-125m", burst(H100), **PLAN)
    held = simulate("gpt3-125m", dataclasses.replace(H100, matmul_sustained=ratio), **PLAN)
    assert bursts.step_time_s <= held.step_time_s * (1 + 1e-12)
    assert held.step_time_s <= bursts.step_time_s / ratio * (1 + 1e-9)
    summary = held.summary()
    assert 0 < summary["mfu"] <= summary["hfu"] <= 1


def test_in_a_step_matmuls_and_fused_attention_slow_by_the_ratio():
    """The step's compute of each bf16 matmul and each fused attention op (forward, recompute,
    backward: its own kernel's burst fit) is its burst compute over 0.888, as a held clock
    slows every tensor-core kernel; the vector ops keep theirs."""
    from workloads.transformer import TransformerConfig

    c = TransformerConfig("t", 2, 1024, 8, vocab=512, seq_len=2048)
    held = simulate(c, H100, micro_batch=2, precision="bf16")
    bursts = simulate(c, burst(H100), micro_batch=2, precision="bf16")
    low = held.lowered
    matmul = (low.kind == OpKind.MATMUL) & (low.dtype == DType.BF16) & (low.flops > 0)
    attention = low.kind == OpKind.ATTENTION
    assert matmul.sum() > 0 and attention.sum() == 3 * c.layers
    assert (low.dtype[attention] == DType.BF16).all()
    assert (bursts.times["compute_s"][attention] > 0).all()
    for ops in (matmul, attention):
        np.testing.assert_allclose(held.times["compute_s"][ops],
                                   bursts.times["compute_s"][ops] / 0.888, rtol=1e-9)
    others = ~matmul & ~attention & (low.kind != OpKind.CONV)
    np.testing.assert_array_equal(held.times["compute_s"][others],
                                  bursts.times["compute_s"][others])
    assert held.step_time_s > bursts.step_time_s


#: AMD's measured median engine clock of a bf16 GEMM on a warmed-up device (about 0.8 s of
#: hipblaslt-bench, trig_float inputs) and its own (hipBLASLt development branch) rate there,
#: TFLOP/s ("Measuring Max-Achievable FLOPs - Part 2", 2025-02-28, ROCm/rocm-blogs
#: blogs/software-tools-optimization/measuring-max-achievable-flops-part2/README.md, notes 2
#: and 4: MI300X 708 at 1,207 MHz, MI325X 840.8 at 1,447 MHz).
HELD = {"mi300x": (1207e6, 708.0), "mi325x": (1447e6, 840.8)}
#: Each part's mamf-finder bf16 MAMF, TFLOP/s (stas00/ml-engineering compute/accelerator/
#: README.md, "Maximum Achievable Matmul FLOPS comparison table", mirror at 744d01e: "AMD MI300X"
#: 668.4, torch 2.5.1+6.3.42131; "AMD MI325X" 784.9, torch 2.6.0+6.2.4; TunableOp on in both).
MAMF = {"mi300x": 668.4, "mi325x": 784.9}


def _held_peak(device, clock_hz):
    return device.peak_for(DType.BF16) * clock_hz / device.architecture.clock_hz


def test_the_mi325x_takes_its_gfx942_siblings_sustained_ratio():
    """The MI325X's figure is mamf-finder's MAMF, a burst (0.600 of the peak); a step runs it
    at the MI300X's MSMF over MAMF, 616 / 634 (mi300x.toml), the same die. The MI300X's own
    figure is that MSMF, already sustained: no ratio."""
    mi325x, mi300x = load_device("mi325x"), load_device("mi300x")
    assert mi325x.matmul_efficiency * mi325x.peak_for(DType.BF16) == pytest.approx(
        MAMF["mi325x"] * 1e12, rel=1e-3)
    assert mi325x.matmul_sustained == pytest.approx(616 / 634, abs=5e-4)
    assert mi300x.matmul_sustained is None
    assert mi300x.matmul_efficiency * mi300x.peak_for(DType.BF16) == pytest.approx(616e12,
                                                                                 rel=1e-3)


def test_the_gfx942_mamf_rows_sit_alike_against_amds_held_clocks():
    """What carrying the MI300X's ratio over assumes: the two parts' mamf-finder rows, each put
    at AMD's measured held clock (the datasheet peak scaled from the 2,100 MHz peak clock:
    304 CUs x 2,048 FLOP/clock), are the same fraction of their CUs' rate there (MI325X 0.871,
    MI300X 0.889; within 5 %: different torch and ROCm versions), and each part's rate in a
    step stays below AMD's tuned hipBLASLt kernel at that clock (0.933, 0.942). A rate alone
    does not say at which clock it ran, so this cannot tell a burst from a sustained figure:
    it checks that the figures agree with AMD's clocks and with each other (a mis-divided
    peak, a wrong part's row or a ratio far from the sibling's fails it)."""
    fraction = {}
    for name, (clock_hz, amd_tflops) in HELD.items():
        device = load_device(name)
        held_peak = _held_peak(device, clock_hz)
        assert held_peak == pytest.approx(clock_hz * 304 * 2048, rel=1e-3)
        fraction[name] = MAMF[name] * 1e12 / held_peak
        in_step = (device.matmul_efficiency * (device.matmul_sustained or 1.0)
                   * device.peak_for(DType.BF16))
        assert in_step < amd_tflops * 1e12 < held_peak
    assert fraction["mi325x"] == pytest.approx(0.871, abs=1e-3)
    assert fraction["mi300x"] == pytest.approx(0.889, abs=1e-3)
    assert fraction["mi325x"] == pytest.approx(fraction["mi300x"], rel=0.05)
    # the MI325X's step rate at its held clock against the MI300X's MSMF at its own
    mi325x, mi300x = load_device("mi325x"), load_device("mi300x")
    step = {d.name: d.matmul_efficiency * (d.matmul_sustained or 1.0) * d.peak_for(DType.BF16)
            / _held_peak(d, HELD[d.name][0]) for d in (mi325x, mi300x)}
    assert step["mi325x"] == pytest.approx(step["mi300x"], rel=0.05)


def test_the_h200_fp8_figure_is_its_fp8_mamf_held_at_its_own_ratio():
    """The H200's figures are sustained ones (MSMF, no ratio): its fp8 GEMMs run at its measured
    fp8 MAMF (1453.4 of 1978.9 TFLOP/s, ml-engineering 744d01e) held at its bf16 MSMF / MAMF,
    755 / 850, as the H100 SXM5 holds its fp8 MAMF at the same ratio; below the bf16 figure."""
    h200 = load_device("h200-sxm")
    assert h200.fp8_matmul_efficiency == pytest.approx(1453.4 / 1978.9 * 755 / 850, abs=5e-4)
    assert h200.matmul_efficiency == pytest.approx(755 / 989.4, abs=5e-4)
    assert h200.fp8_matmul_efficiency < h200.matmul_efficiency
    # the H100 SXM5's fp8 GEMMs, sustained: below the H200's (its MAMF 1402.6 < 1453.4)
    assert H100.fp8_matmul_efficiency * H100.matmul_sustained < h200.fp8_matmul_efficiency
