"""Hopper and Blackwell norms at their measured streaming efficiency (``streaming.fit_flushed``).

NVIDIA's cuDNN norm benchmark (cudnn-frontend ``benchmark/norms``, commit 3929da2, MIT) timed
bf16 RMSNorm and LayerNorm kernels, forward and backward, of the shapes of 11 LLMs on an H200
and a GB200, with the cache flushed before each call, for cuDNN, PyTorch eager and
torch.compile (``tests/data/cudnn_norm_kernels.csv``). One meaning per spec key: PyTorch
eager's fit is each spec's ``norm_memory_efficiency`` (as every older GPU's figure, fitted on
NeuSight's PyTorch kernels), torch.compile's its ``norm_memory_efficiency_compiled`` (compiled
fusion's norms: ``tests/test_norm_compiled.py``); cuDNN's is measured but no spec's (no plan
runs cuDNN's norm kernels). The H100 SXM5 and H800 carry the H200's (same GH100 die), the B200
the GB200's (same Blackwell GPU).
"""
import csv
from pathlib import Path

import pytest

from hardware_specs.loader import load_device
from simulator.calibrate.streaming import fit_flushed, norm_bytes

TABLE = list(csv.DictReader(
    (Path(__file__).parent / "data" / "cudnn_norm_kernels.csv").read_text().splitlines()))
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


#: spec field -> the backend whose fit it carries
FIELDS = {"norm_memory_efficiency": "pytorch", "norm_memory_efficiency_compiled": "torch_compile"}


@pytest.mark.parametrize("device", sorted(DEVICES))
def test_catalogue_norm_efficiencies_are_the_pytorch_fits(device):
    """Each spec the table informs carries its device's PyTorch eager fit and torch.compile
    fit (3 decimals), not a prior, and not cuDNN's."""
    for name in DEVICES[device][2]:
        spec = load_device(name)
        for field, backend in FIELDS.items():
            assert getattr(spec, field) == pytest.approx(fitted(device, backend).efficiency,
                                                         abs=5e-4), (name, field)
            assert field not in spec.priors
            assert abs(getattr(spec, field) - fitted(device).efficiency) > 0.1


@pytest.mark.parametrize("device, backend, efficiency, fitted_rows, held_out_error", [
    ("NVIDIA H200", "cudnn", 0.717, 17, 0.118), ("NVIDIA GB200", "cudnn", 0.694, 12, 0.103),
    ("NVIDIA H200", "pytorch", 0.447, 14, 0.281), ("NVIDIA GB200", "pytorch", 0.387, 12, 0.267),
    ("NVIDIA H200", "torch_compile", 0.540, 17, 0.343),
    ("NVIDIA GB200", "torch_compile", 0.411, 12, 0.251)])
def test_the_fits_as_measured_when_written(device, backend, efficiency, fitted_rows,
                                           held_out_error):
    """The fits as the specs' comments quote them (the held-out longest-row fifth's median
    |error| too). cuDNN's norms reach about what NeuSight's PyTorch fp32 norms reach on the
    A100 (0.680); PyTorch's and torch.compile's, whose backward runs two kernels, less."""
    result = fitted(device, backend)
    assert result.efficiency == pytest.approx(efficiency, abs=5e-4)
    assert result.fitted_rows == fitted_rows
    assert result.held_out_median_error == pytest.approx(held_out_error, abs=5e-4)


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
    most 0.65 of cuDNN's fraction on the same shapes, and torch.compile's lie between: the
    cuDNN figure would price a plan's PyTorch norms as a tuned fused kernel's."""
    eager, compiled = (fitted(device, b).efficiency for b in ("pytorch", "torch_compile"))
    assert eager < compiled < fitted(device).efficiency
    assert eager < 0.65 * fitted(device).efficiency


def test_too_few_kernels_is_an_error():
    with pytest.raises(ValueError, match="need 10"):
        fit_flushed(TABLE, "NVIDIA GB200", "cudnn", 8000e9, 400 * 2**20)
