"""The GPUs people still rent or own (issue 20, item 5): NVIDIA A10, GeForce RTX 3090, RTX A6000,
RTX 6000 Ada and Quadro RTX 8000, each a spec file with the figures its cited sources give
(hardware_specs/devices/<name>.toml names them), none with a kernel measurement of its own, so
every op class runs on the documented priors (item 3), never at the datasheet peak.

Checked exactly: the cited peaks, bandwidth, power and SM count of each part; and, as a closed
form, that each datasheet tensor and FP32 peak is the part's SMs x its architecture's FLOP per SM
per clock x its boost clock (NVIDIA's Turing, GA102 and Ada whitepapers: a Turing SM's 8 tensor
cores do 1,024 FP16 FLOP a clock; a GA10x SM's 4 do 1,024 FP16 FLOP at the FP16-accumulate rate,
half that with FP32 accumulate on GeForce; an Ada SM's 4 do 2,048 FP8 FLOP; FP32: 2 FLOP per
CUDA core, 64 cores per Turing SM, 128 per GA10x and Ada SM), within the datasheets' rounding.
"""
from __future__ import annotations

import pytest

from hardware_specs.loader import list_devices, load_device
from simulator import simulate
from simulator.cost.status import calibration_status
from simulator.graph.op import DType

NEW = ("a10", "rtx-3090", "rtx-a6000", "rtx-6000-ada", "quadro-rtx-8000")

#: name -> (fp32, fp16 tensor with FP32 accumulate, TFLOP/s dense; GB/s; W; SMs; GiB)
CITED = {
    "a10": (31.2, 125, 600, 150, 72, 22.49),            # datasheet; 23,028 MiB with ECC on
    "rtx-3090": (35.6, 71, 936, 350, 82, 24),            # GA102 whitepaper, Appendix A
    "rtx-a6000": (38.7, 154.8, 768, 300, 84, 48),        # NVIDIA's table, Microway
    "rtx-6000-ada": (91.1, 364.2, 960, 300, 142, 48),    # datasheet: 1,457.0 FP8 sparse / 4
    "quadro-rtx-8000": (16.3, 130.5, 672, 260, 72, 48),  # Turing blog Table 1, datasheet
}

#: name -> (dense FP16 FLOP per SM per clock at the rate training uses, FP32 lanes per SM)
PER_SM = {
    "a10": (1024, 128), "rtx-a6000": (1024, 128),   # professional GA102: full-rate FP32 acc
    "rtx-3090": (512, 128),                          # GeForce GA102: FP32 accumulate at half
    "rtx-6000-ada": (1024, 128),                     # 2,048 FP8 / 2
    "quadro-rtx-8000": (1024, 64),                   # Turing: 8 x 64 FMA x 2
}


@pytest.mark.parametrize("name", NEW)
def test_cited_figures(name):
    fp32, fp16, bandwidth, tdp, sms, gib = CITED[name]
    spec = load_device(name)
    peaks = spec.peak_flops_per_s
    assert peaks[DType.FP32] == pytest.approx(fp32 * 1e12)
    assert spec.vector_flops_per_s == pytest.approx(fp32 * 1e12)
    assert peaks[DType.FP16] == pytest.approx(fp16 * 1e12)
    assert spec.memory_bandwidth_bytes_per_s == pytest.approx(bandwidth * 1e9)
    assert spec.tdp_w == tdp
    assert spec.architecture.compute_units == sms
    assert spec.memory_bytes / 2**30 == pytest.approx(gib, abs=0.01)


@pytest.mark.parametrize("name", NEW)
def test_peaks_are_sms_times_per_sm_rate_times_boost_clock(name):
    """Each datasheet peak is the part's own configuration at its boost clock (rounding: the
    RTX 3090's 71 is 71.2, the A10's 31.2 is 31.24; within 0.5 %), so no sparse figure or
    FP16-accumulate rate slipped in."""
    spec = load_device(name)
    tensor, lanes = PER_SM[name]
    sms, clock = spec.architecture.compute_units, spec.architecture.clock_hz
    peaks = spec.peak_flops_per_s
    assert peaks[DType.FP16] == pytest.approx(sms * tensor * clock, rel=5e-3)
    assert peaks[DType.FP32] == pytest.approx(sms * lanes * 2 * clock, rel=5e-3)


def test_formats_each_generation_lacks():
    """Turing has no BF16, TF32 or FP8 units (bf16 runs at the fp16 rate, tf32 at fp32's),
    Ampere no FP8; the Ada part's FP8 is twice its FP16 (1,457.0 sparse FP8 / 2)."""
    quadro = load_device("quadro-rtx-8000")
    assert not {DType.BF16, DType.TF32, DType.FP8} & set(quadro.peak_flops_per_s)
    assert quadro.peak_for(DType.BF16) == quadro.peak_for(DType.FP16)
    assert quadro.peak_for(DType.TF32) == quadro.peak_for(DType.FP32)
    for name in ("a10", "rtx-3090", "rtx-a6000"):
        assert DType.FP8 not in load_device(name).peak_flops_per_s
    ada = load_device("rtx-6000-ada").peak_flops_per_s
    assert ada[DType.FP8] == pytest.approx(1457.0e12 / 2)
    assert ada[DType.FP8] == pytest.approx(2 * ada[DType.FP16], rel=1e-3)


def test_nvlink_bridges_join_pairs_so_nodes_talk_over_pcie():
    """The RTX 3090's, RTX A6000's and Quadro RTX 8000's NVLink is a 2-GPU bridge (56.25,
    56.25 and 50 GB/s a direction): a node of them communicates over PCIe; the A10 and RTX
    6000 Ada have no NVLink."""
    from hardware_specs.cluster import cluster_for

    for name, nvlink, pcie in (("rtx-3090", 56.25, 32), ("rtx-a6000", 56.25, 32),
                               ("quadro-rtx-8000", 50, 16), ("a10", None, 32),
                               ("rtx-6000-ada", None, 32)):
        spec = load_device(name)
        bridges = [link.bandwidth_bytes_per_s for link in spec.links if "nvlink" in link.name]
        assert bridges == ([nvlink * 1e9] if nvlink else [])
        assert cluster_for(spec, 2).intra.bandwidth_bytes_per_s == pcie * 1e9


@pytest.mark.parametrize("name", NEW)
def test_every_op_class_runs_on_priors_never_the_peak(name):
    """No kernel measurement is cited for these parts: GEMMs, streams, norms, batch norms and
    vector arithmetic all run on the GPU priors (hardware_specs.priors), and a prediction says
    so."""
    spec = load_device(name)
    status = calibration_status(spec)
    assert {status[c] for c in ("gemm", "stream", "norm", "batch-norm", "nchw-batch-norm",
                                 "vector")} == {"prior"}
    assert {"matmul_efficiency", "memory_efficiency", "vector_efficiency"} <= set(spec.priors)
    assert all(0 < getattr(spec, field) < 1 for field in spec.priors)
    note = next(n for n in simulate("gpt2-small", spec, micro_batch=1).notes
                if n.endswith("(priors)"))
    assert note.startswith(f"{name} has no measured")


@pytest.mark.parametrize("name", NEW)
def test_the_catalogue_property_tests_cover_them(name):
    """The physical-limit and prior property tests draw from list_devices(): each new part is
    in it, and a step on it keeps MFU and HFU within 1 with every op no faster than its
    roofline at the datasheet peak (tests.test_physical_limits._check_limits)."""
    from tests.test_physical_limits import DEVICES, _check_limits

    assert name in list_devices() and name in DEVICES
    spec = load_device(name)
    for precision in ("fp16", "fp32"):
        _check_limits(simulate("gpt2-small", spec, micro_batch=2, precision=precision), spec)


@pytest.mark.parametrize("spelled, name", [
    ("3090", "rtx-3090"), ("RTX 3090", "rtx-3090"), ("a6000", "rtx-a6000"),
    ("RTX_A6000", "rtx-a6000"), ("6000-ada", "rtx-6000-ada"), ("RTX 6000 Ada", "rtx-6000-ada"),
    ("rtx-8000", "quadro-rtx-8000"), ("Quadro RTX 8000", "quadro-rtx-8000"), ("A10", "a10")])
def test_common_spellings(spelled, name):
    assert load_device(spelled).name == name
