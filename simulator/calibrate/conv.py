"""Convolution kernels as measured: a rate and a fixed cost per call, fitted per GPU.

Model (one mechanism, two parameters per device): a convolution of ``flops`` (direct count,
2 x M x N x K of its implicit GEMM: M = batch x output pixels, N = output channels, K = input
channels x kernel area) that moves ``bytes`` takes

    t = max(flops / (peak x rate x tiles(M, N, K)), bytes / (bandwidth x memory_efficiency)) + fixed

where ``peak`` is the device's fp32 datasheet rate, ``tiles`` hwsim's tile-and-wave efficiency
of that implicit GEMM relative to the reference GEMM (``simulator.cost.efficiency.gpu_tiles``,
the spec's tile and SM count), ``rate`` what cuDNN reaches on large convolutions relative to
that, and ``fixed`` the cost of one call that does not shrink with its size. ``rate`` may exceed
1: cuDNN runs most 3x3 stride-1 fp32 convolutions as Winograd transforms (three of four rows
here name a Winograd kernel), which do fewer multiplications than the direct count (Lavin and
Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016: F(2x2, 3x3) 2.25x fewer,
F(4x4, 3x3) 4x), so the direct count runs faster than the peak.

The fifth of the table with the most FLOPs is held out (a split by shape range, not at random)
and the fit's median error on it reported: the fit is judged on larger convolutions than it saw.
Of the rest, the rate is fitted on the upper half (the geometric mean of ``compute / (measured -
fixed)``, where the fixed cost is a small share) and the fixed cost on the smallest quarter (the
median of ``measured - the rate's time``, where it dominates), alternately until both settle.

Data: NeuSight (Lee et al., ASPLOS 2025; github.com/sitar-lab/NeuSight, MIT licence, commit
6945927), ``scripts/asplos/data/dataset/train/collect/conv/p2.1.0/<GPU>.csv``: fp32 forward
convolutions, PyTorch 2.1.0, cuDNN 8.9.2, CUDA 12.1, every fourth row
(``tests/data/neusight_conv_kernels.csv``). Their shapes are all 3x3, stride 1, padding 1
(batch 1-64, 3-2,048 channels, 5-252 pixels square), so the fit says nothing of 1x1 or strided
convolutions, of the backward's data and weight gradients, or of 16-bit tensor-core kernels.
NeuSight timed each call with CUDA events around it, so ``fixed`` holds the host's cost of a
call as well as the kernels' (0.1-0.3 ms even for a 5-MFLOP convolution).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass

import numpy as np

HELD_OUT = 0.2
_FP32 = 4
_ROUNDS = 50   # alternations of the two fits (they settle within a few)


@dataclass(frozen=True)
class ConvFit:
    """One GPU's fitted convolution rate and fixed cost, and the errors on held-out rows."""

    device: str
    catalogue: str
    rate: float                 # of the fp32 peak x tile efficiency, on large convolutions
    fixed_s: float              # per call
    fitted_rows: int
    held_out_rows: int
    held_out_median_error: float      # the fit's median |predicted / measured - 1|
    unfitted_median_error: float      # at the spec's own conv (or matmul) efficiency, no fixed


def implicit_gemm(batch, cin, cout, kernel, size, stride, pad):
    """(M, N, K, direct FLOPs, bytes) of square fp32 convolutions, as arrays."""
    batch, cin, cout, kernel, size, stride, pad = (np.asarray(a, dtype=np.float64) for a in
                                                   (batch, cin, cout, kernel, size, stride, pad))
    out = np.floor((size + 2 * pad - kernel) / stride) + 1
    m, n, k = batch * out * out, cout, cin * kernel * kernel
    nbytes = _FP32 * (batch * cin * size * size + n * k + m * n)
    return m, n, k, 2 * m * n * k, nbytes


def _shape_terms(rows: list[dict], spec):
    """Per row: direct FLOPs over the fp32 peak x tile efficiency (s), and memory time (s)."""
    from simulator.cost.efficiency import REFERENCE_GEMM, gpu_tiles
    from simulator.graph.op import DType

    cols = {key: [float(r[key]) for r in rows]
            for key in ("batch", "cin", "cout", "kernel", "size", "stride", "pad")}
    m, n, k, flops, nbytes = implicit_gemm(**cols)
    arch = spec.architecture
    tiles = np.ones(len(rows))
    if arch.matrix_tile and arch.compute_units:
        tiles = (gpu_tiles(m, n, k, 1, arch.matrix_tile, arch.compute_units)
                 / gpu_tiles(REFERENCE_GEMM, REFERENCE_GEMM, REFERENCE_GEMM, 1,
                             arch.matrix_tile, arch.compute_units))
    compute = flops / (spec.peak_for(DType.FP32) * tiles)
    memory = nbytes / (spec.main_memory.bandwidth_bytes_per_s * spec.memory_efficiency)
    return flops, compute, memory


def predict_s(compute: np.ndarray, memory: np.ndarray, rate, fixed_s) -> np.ndarray:
    """The model's seconds (``compute`` at rate 1, ``memory``: from ``_shape_terms``)."""
    return np.maximum(compute / rate, memory) + fixed_s


def fit(rows: list[dict], device: str, spec) -> ConvFit:
    """Fit ``device``'s rows of the conv table (dicts as ``tests/data/neusight_conv_kernels.csv``)
    on the catalogue ``spec`` (its fp32 peak, tile, SMs, bandwidth)."""
    mine = [r for r in rows if r["device"] == device]
    if len(mine) < 50:
        raise ValueError(f"{device}: {len(mine)} convolutions; need 50")
    flops, compute, memory = _shape_terms(mine, spec)
    measured = np.array([float(r["latency_ms"]) * 1e-3 for r in mine])
    order = np.argsort(flops, kind="stable")
    count = len(mine)
    cut = count - max(1, round(HELD_OUT * count))
    held = np.zeros(count, dtype=bool)
    held[order[cut:]] = True
    large, small = order[cut // 2:cut], order[:cut // 4]
    fixed = 0.0
    for _ in range(_ROUNDS):
        spent = np.maximum(measured[large] - fixed, 1e-9)
        rate = float(np.exp(np.mean(np.log(compute[large] / spent))))
        fixed = max(0.0, float(np.median(measured[small] - np.maximum(compute[small] / rate,
                                                                         memory[small]))))
    errors = np.abs(predict_s(compute, memory, rate, fixed)[held] / measured[held] - 1)
    base = spec.conv_efficiency if spec.conv_efficiency is not None else spec.matmul_efficiency
    unfitted = np.abs(predict_s(compute, memory, base, spec.op_overhead_s)[held]
                      / measured[held] - 1)
    return ConvFit(device, spec.name, rate, fixed, cut, count - cut,
                   float(np.median(errors)), float(np.median(unfitted)))


#: The NeuSight GPUs of the table and the catalogue spec of each (same chip, clocks and memory).
CATALOGUE = {"NVIDIA A100 80GB PCIe": "a100-pcie-80gb", "Tesla P100-PCIE-16GB": "p100-pcie-16gb",
             "Tesla T4": "t4", "Tesla V100-PCIE-32GB": "v100-pcie-32gb"}


def fit_table(path) -> dict[str, ConvFit]:
    """Every GPU's fit from the conv table at ``path``."""
    from hardware_specs.loader import load_device

    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {device: fit(rows, device, load_device(name)) for device, name in CATALOGUE.items()}


__all__ = ["CATALOGUE", "ConvFit", "fit", "fit_table", "implicit_gemm", "predict_s"]
