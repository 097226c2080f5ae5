"""Convolution kernels as measured: a rate and a fixed cost per call, fitted per GPU.

Model (one mechanism, two parameters per device): a convolution of ``flops`` (direct count,
2 x M x N x K of its implicit GEMM: M = batch x output pixels, N = output channels, K = input
channels x kernel area) that moves ``bytes`` takes

    t = max(flops / (peak x rate x tiles(M, N, K)), bytes / (bandwidth x memory_efficiency)) + fixed

where ``peak`` is the device's fp32 datasheet rate, ``tiles`` hwsim's tile-and-wave efficiency
of that implicit GEMM relative to the reference GEMM (``simulator.cost.efficiency.conv_tiles``:
the spec's tile, either way round, and SM count), ``rate`` what cuDNN reaches on large
convolutions relative to that, and ``fixed`` the cost of one call that does not shrink with
its size. ``rate`` may exceed 1: cuDNN runs most 3x3 stride-1 fp32 convolutions as Winograd
transforms (three of four rows here name a Winograd kernel), which do fewer multiplications
than the direct count (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
CVPR 2016: F(2x2, 3x3) 2.25x fewer, F(4x4, 3x3) 4x), so the direct count runs faster than the
peak.

The fifth of the table with the most FLOPs is held out (a split by shape range, not at random)
and the fit's median error on it reported: the fit is judged on larger convolutions than it saw.
Of the rest, the rate is fitted on the upper half's compute-bound rows (the geometric mean of
``compute / (measured - fixed)`` over the rows whose compute time at the current rate is at
least their memory time, where the fixed cost is a small share: a row the roofline prices by its
bytes says nothing of the rate; with fewer than ten such rows, on the whole upper half) and the
fixed cost on the smallest quarter (the median of ``measured - the model's time``, where it
dominates), alternately until both settle. Fitting the rate on memory-bound rows as well (before
this rule) dragged it down: the T4's fp16 rate 0.397 missed its held-out fifth by 52.9 %, 0.526
misses it by 21.8 %.

Two tables. DeepBench (Baidu, github.com/baidu-research/DeepBench, Apache-2.0, commit da81ba7;
``tests/data/deepbench_conv.csv``): 94 training convolutions of six applications (1x1 to 20x5
kernels, strides 1 and 2), forward, data and weight gradients, fp16 on tensor cores (NHWC) and
fp32, on a V100 (DGX-1) and a T4, cuDNN 7.6.2, timed back to back (``code/nvidia/conv_bench.cu``),
so the fixed cost is the kernels' own; the three passes are priced as hwsim prices them, on the
forward's implicit GEMM (``fit_deepbench``).

NeuSight (Lee et al., ASPLOS 2025; github.com/sitar-lab/NeuSight, MIT licence, commit
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
_MIN_BOUND = 10   # compute-bound rows the rate needs, else the whole upper half


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
    precision: str = "fp32"
    passes: str = "forward"           # the passes timed: forward, or forward, dgrad, wgrad


def spec_conv_efficiency(spec, precision: str) -> float:
    """The efficiency ``spec`` prices a ``precision`` convolution at (``roofline.price``'s
    rule, ``DeviceSpec.conv_efficiency_for``)."""
    from simulator.graph.op import DType

    return spec.conv_efficiency_for(DType[precision.upper()])


def implicit_gemm(batch, cin, cout, kernel, size, stride, pad, width=None, kernel_w=None,
                  stride_w=None, pad_w=None, element_bytes=_FP32):
    """(M, N, K, direct FLOPs, bytes) of convolutions, as arrays: square unless the ``_w``
    (width) figures are given."""
    batch, cin, cout, kernel, size, stride, pad = (np.asarray(a, dtype=np.float64) for a in
                                                   (batch, cin, cout, kernel, size, stride, pad))
    width, kernel_w, stride_w, pad_w = (np.asarray(a if a is not None else b, dtype=np.float64)
                                        for a, b in ((width, size), (kernel_w, kernel),
                                                     (stride_w, stride), (pad_w, pad)))
    out_h = np.floor((size + 2 * pad - kernel) / stride) + 1
    out_w = np.floor((width + 2 * pad_w - kernel_w) / stride_w) + 1
    m, n, k = batch * out_h * out_w, cout, cin * kernel * kernel_w
    nbytes = element_bytes * (batch * cin * size * width + n * k + m * n)
    return m, n, k, 2 * m * n * k, nbytes


def _terms(m, n, k, flops, nbytes, spec, dtype):
    """Per row: direct FLOPs over the format's peak x tile efficiency (s), and the bytes'
    time at the streaming rate (s)."""
    from simulator.cost.efficiency import REFERENCE_GEMM, conv_tiles, gpu_tiles

    arch = spec.architecture
    tiles = np.ones(len(m))
    if arch.matrix_tile and arch.compute_units:
        tiles = (conv_tiles(m, n, k, 1, arch.matrix_tile, arch.compute_units)
                 / gpu_tiles(REFERENCE_GEMM, REFERENCE_GEMM, REFERENCE_GEMM, 1,
                             arch.matrix_tile, arch.compute_units))
    compute = flops / (spec.peak_for(dtype) * tiles)
    memory = nbytes / (spec.main_memory.bandwidth_bytes_per_s * spec.memory_efficiency)
    return compute, memory


def _shape_terms(rows: list[dict], spec):
    """NeuSight rows: (direct FLOPs, compute s at rate 1, memory s), fp32."""
    from simulator.graph.op import DType

    cols = {key: [float(r[key]) for r in rows]
            for key in ("batch", "cin", "cout", "kernel", "size", "stride", "pad")}
    m, n, k, flops, nbytes = implicit_gemm(**cols)
    return (flops, *_terms(m, n, k, flops, nbytes, spec, DType.FP32))


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
    return _fit_arrays(device, spec, flops, compute, memory, measured)


def _fit_arrays(device: str, spec, flops, compute, memory, measured, **labels) -> ConvFit:
    """The rate and fixed cost of timed convolutions, the largest-FLOPs fifth held out."""
    order = np.argsort(flops, kind="stable")
    count = len(measured)
    cut = count - max(1, round(HELD_OUT * count))
    held = np.zeros(count, dtype=bool)
    held[order[cut:]] = True
    large, small = order[cut // 2:cut], order[:cut // 4]
    fixed, rate = 0.0, 1.0
    for _ in range(_ROUNDS):
        bound = large[compute[large] / rate >= memory[large]]   # compute-bound at this rate
        use = bound if len(bound) >= _MIN_BOUND else large
        spent = np.maximum(measured[use] - fixed, 1e-9)
        rate = float(np.exp(np.mean(np.log(compute[use] / spent))))
        fixed = max(0.0, float(np.median(measured[small] - np.maximum(compute[small] / rate,
                                                                         memory[small]))))
    errors = np.abs(predict_s(compute, memory, rate, fixed)[held] / measured[held] - 1)
    base = spec_conv_efficiency(spec, labels.get("precision", "fp32"))
    unfitted = np.abs(predict_s(compute, memory, base, spec.op_overhead_s)[held]
                      / measured[held] - 1)
    return ConvFit(device, spec.name, rate, fixed, cut, count - cut,
                   float(np.median(errors)), float(np.median(unfitted)), **labels)


#: DeepBench's GPUs and the catalogue spec of each (V100: a DGX-1's SXM2 16 GB, the chip and
#: clocks of the 32 GB part; T4: the T4).
DEEPBENCH_CATALOGUE = {"NVIDIA V100 (DGX-1)": "v100-sxm2-32gb", "NVIDIA T4": "t4"}
_PASSES = ("fwd", "dgrad", "wgrad")


def _deepbench_terms(rows: list[dict], device: str, spec, precision: str):
    """``device``'s ``precision`` rows of DeepBench's table, and each one's FLOPs and compute
    and memory times at rate 1 (the forward's implicit GEMM, as hwsim prices a convolution)."""
    from simulator.graph.op import DType

    mine = [r for r in rows if r["device"] == device and r["precision"] == precision]
    col = {key: np.array([float(r[key]) for r in mine]) for key in
           ("n", "c", "k", "r", "h", "stride_h", "pad_h", "w", "s", "stride_w", "pad_w")}
    dtype = DType.FP16 if precision == "fp16" else DType.FP32
    m, n, k, flops, nbytes = implicit_gemm(
        col["n"], col["c"], col["k"], col["r"], col["h"], col["stride_h"], col["pad_h"],
        width=col["w"], kernel_w=col["s"], stride_w=col["stride_w"], pad_w=col["pad_w"],
        element_bytes=dtype.bytes)
    compute, memory = _terms(m, n, k, flops, nbytes, spec, dtype)
    return mine, flops, compute, memory


def fit_deepbench(rows: list[dict], device: str, spec, precision: str = "fp16") -> ConvFit:
    """Fit ``device``'s convolutions of DeepBench's table (``tests/data/deepbench_conv.csv``) in
    ``precision`` (fp16: fp16 inputs, fp32 accumulation on tensor cores, NHWC; fp32), the
    forward, data-gradient and weight-gradient times together, each priced as hwsim prices the
    three: the forward's implicit GEMM (M = N x P x Q, N = K, K = C x R x S) and its FLOPs."""
    mine, flops, compute, memory = _deepbench_terms(rows, device, spec, precision)
    if len(mine) < 50:
        raise ValueError(f"{device}: {len(mine)} {precision} convolutions; need 50")
    keep: list[tuple[int, float]] = []
    for p in _PASSES:   # a pass DeepBench did not time (the data gradient of an image) is empty
        keep += [(i, float(r[f"{p}_ms"]) * 1e-3) for i, r in enumerate(mine) if r[f"{p}_ms"]]
    index = np.array([i for i, _ in keep])
    measured = np.array([t for _, t in keep])
    return _fit_arrays(device, spec, flops[index], compute[index], memory[index], measured,
                       precision=precision, passes="forward, dgrad, wgrad")


def deepbench_pass_rates(rows: list[dict], device: str, spec, precision: str = "fp16",
                         bound: float = 3.0) -> dict[str, float]:
    """The median rate (compute at rate 1 / measured) of each pass -- fwd, dgrad, wgrad -- of
    ``device``'s ``precision`` convolutions of DeepBench's table, over the rows in the upper
    half by FLOPs whose compute time is at least ``bound`` x their memory time (the fixed cost
    a small share). The specs take one rate for the three passes (``fit_deepbench``); this says
    how far apart they are."""
    mine, flops, compute, memory = _deepbench_terms(rows, device, spec, precision)
    out = {}
    for p in _PASSES:
        measured = np.array([float(r[f"{p}_ms"]) * 1e-3 if r[f"{p}_ms"] else np.nan
                             for r in mine])
        timed = ~np.isnan(measured)
        chosen = timed & (flops > np.median(flops[timed])) & (compute >= bound * memory)
        out[p] = float(np.median(compute[chosen] / measured[chosen]))
    return out


def fit_deepbench_table(path, precision: str = "fp16") -> dict[str, ConvFit]:
    """Every DeepBench GPU's fit in ``precision`` from the table at ``path``."""
    from hardware_specs.loader import load_device

    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {device: fit_deepbench(rows, device, load_device(name), precision)
            for device, name in DEEPBENCH_CATALOGUE.items()}


#: The NeuSight GPUs of the table and the catalogue spec of each (same chip, clocks and memory).
CATALOGUE = {"NVIDIA A100 80GB PCIe": "a100-pcie-80gb", "Tesla P100-PCIE-16GB": "p100-pcie-16gb",
             "Tesla T4": "t4", "Tesla V100-PCIE-32GB": "v100-pcie-32gb"}


def fit_table(path) -> dict[str, ConvFit]:
    """Every GPU's fit from the conv table at ``path``."""
    from hardware_specs.loader import load_device

    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {device: fit(rows, device, load_device(name)) for device, name in CATALOGUE.items()}


__all__ = ["CATALOGUE", "DEEPBENCH_CATALOGUE", "ConvFit", "deepbench_pass_rates", "fit",
           "fit_deepbench", "fit_deepbench_table", "fit_table", "implicit_gemm", "predict_s",
           "spec_conv_efficiency"]
