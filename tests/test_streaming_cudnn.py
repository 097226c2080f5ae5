"""Hopper and Blackwell norms at their measured streaming efficiency (``streaming.fit_flushed``).

NVIDIA's cuDNN norm benchmark (cudnn-frontend ``benchmark/norms``, commit 3929da2, MIT) timed
bf16 RMSNorm and LayerNorm kernels, forward and backward, of the shapes of 11 LLMs on an H200
and a GB200, with the cache flushed before each call, for cuDNN, PyTorch eager and
torch.compile (``tests/data/cudnn_norm_kernels.csv``). The cuDNN kernels' fit is each spec's
``norm_memory_efficiency``; the H100 SXM5 and H800 carry the H200's (same GH100 die), the B200
the GB200's (same Blackwell GPU).
"""
import csv
from pathlib import Path

import pytest

from hardware_specs.loader import load_device
from simulator.calibrate.streaming import fit_flushed, norm_bytes

TABLE = list(csv.DictReader(open(Path(__file__).parent / "data" / "cudnn_norm_kernels.csv",
                                 newline="")))
# (table device, datasheet bandwidth, L2, catalogue specs it informs): H200 4.8 TB/s, 50 MB L2
# (h200-sxm, h100-sxm5-80gb sources); GB200 8 TB/s, 126 MB L2 (gb200, b200 sources).
DEVICES = {"NVIDIA H200": (4800e9, 50 * 2**20, ("h200-sxm", "h100-sxm5-80gb", "h800-sxm")),
           "NVIDIA GB200": (8000e9, 126 * 2**20, ("gb200", "b200"))}


def fitted(device, backend="cudnn"):
    bandwidth, l2, _ = DEVICES[device]
    return fit_flushed(TABLE, device, backend, bandwidth, l2)


def test_bytes_are_the_benchmarks():
    """The published time of every kernel (ms, rounded to 3 decimals) is its bytes, counted as
    the benchmark counts them, over its published rate (computed from the unrounded time):
    within the rounding, half a microsecond, on all 172 kernels."""
    assert len(TABLE) == 172
    for r in TABLE:
        nbytes = norm_bytes(r["norm"], int(r["rows"]), int(r["row"]), r["bias"] == "True",
                            r["direction"], r["dtype"])
        assert abs(nbytes / (float(r["gb_per_s"]) * 1e6) - float(r["time_ms"])) <= 5.01e-4, r


@pytest.mark.parametrize("device", sorted(DEVICES))
def test_catalogue_norm_efficiency_is_the_cudnn_fit(device):
    """Each spec the table informs carries its device's cuDNN fit (3 decimals), not a prior."""
    expected = fitted(device).efficiency
    for name in DEVICES[device][2]:
        spec = load_device(name)
        assert spec.norm_memory_efficiency == pytest.approx(expected, abs=5e-4), name
        assert "norm_memory_efficiency" not in spec.priors


@pytest.mark.parametrize("device, efficiency, fitted_rows", [
    ("NVIDIA H200", 0.717, 17), ("NVIDIA GB200", 0.694, 12)])
def test_the_fits_as_measured_when_written(device, efficiency, fitted_rows):
    """cuDNN's norms reach about what NeuSight's PyTorch fp32 norms reach on the A100 (0.680)
    and more than the older GPUs' median (the class prior, 0.617)."""
    result = fitted(device)
    assert result.efficiency == pytest.approx(efficiency, abs=5e-4)
    assert result.fitted_rows == fitted_rows


@pytest.mark.parametrize("device", sorted(DEVICES))
def test_held_out_longest_rows(device):
    """The longest-row fifth, never fitted on, within 12 % (median |error|: H200 11.8 %, GB200
    10.3 %; its worst, cuDNN's GPT-3 LayerNorm backward, runs at a quarter of the fit)."""
    result = fitted(device)
    assert result.held_out_rows >= 3
    assert result.held_out_median_error < 0.12, result


@pytest.mark.parametrize("device", sorted(DEVICES))
def test_pytorch_eager_norms_are_slower(device):
    """PyTorch eager's norms (its backward two kernels, 0.24-0.38 of the bandwidth) reach at
    most 0.65 of cuDNN's fraction on the same shapes: the spec's figure is a tuned fused
    kernel's, as Transformer Engine's and cuDNN's are."""
    assert fitted(device, "pytorch").efficiency < 0.65 * fitted(device).efficiency


def test_too_few_kernels_is_an_error():
    with pytest.raises(ValueError, match="need 10"):
        fit_flushed(TABLE, "NVIDIA GB200", "cudnn", 8000e9, 400 * 2**20)
