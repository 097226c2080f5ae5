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

A third table, too small for ``fit`` (eight shapes a GPU), sets the A100's 16-bit rate: Ladder's
cuDNN fp16 timings (OSDI 2024 artifact, microsoft/BitBLAS branch osdi24_ladder_artifact 8dc7a39,
MIT; ``tests/data/ladder_cudnn_conv_fp16.csv``), one script on an A100 80GB PCIe and a V100 PCIe
16GB; ``fit_against_reference`` carries the V100's measured rate over by the ratio of the rates
the two GPUs show on the same compute-bound shapes.
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


def _read_rows(path) -> list[dict[str, str]]:
    """The rows of the CSV table at ``path``, each a dict by column name."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def fit_deepbench_table(path, precision: str = "fp16") -> dict[str, ConvFit]:
    """Every DeepBench GPU's fit in ``precision`` from the table at ``path``."""
    from hardware_specs.loader import load_device

    rows = _read_rows(path)
    return {device: fit_deepbench(rows, device, load_device(name), precision)
            for device, name in DEEPBENCH_CATALOGUE.items()}


#: The NeuSight GPUs of the table and the catalogue spec of each (same chip, clocks and memory).
CATALOGUE = {"NVIDIA A100 80GB PCIe": "a100-pcie-80gb", "Tesla P100-PCIE-16GB": "p100-pcie-16gb",
             "Tesla T4": "t4", "Tesla V100-PCIE-32GB": "v100-pcie-32gb"}


#: Ladder's cuDNN convolution table (``tests/data/ladder_cudnn_conv_fp16.csv``): the GPU fitted,
#: and the GPU timed by the same script whose 16-bit convolution rate is measured (its spec's
#: ``conv_efficiency``: DeepBench's V100, carried over to the PCIe part).
LADDER_TABLE_PAIR = ("NVIDIA A100 80GB PCIe", "Tesla V100 PCIe 16GB")


@dataclass(frozen=True)
class HarnessFit:
    """A GPU's 16-bit convolution rate carried over from another GPU timed by the same script:
    ``rate`` = ``reference_rate`` x the geometric mean of ``ratios``, each the rate one
    compute-bound shape shows on this GPU over the rate it shows on the reference."""

    device: str
    catalogue: str
    reference: str
    reference_catalogue: str
    reference_rate: float             # the reference spec's conv_efficiency (measured elsewhere)
    rate: float                       # of the fp16 peak x tile efficiency
    ratios: tuple[float, ...]         # per compute-bound shape, this GPU's rate over the reference's
    fixed_s: float                    # per call, this GPU (its batch-1 rows)
    reference_fixed_s: float
    errors: tuple[float, ...]         # predicted / measured - 1 on those shapes, this GPU


def _harness_terms(rows: list[dict], spec):
    """(batch, compute s at rate 1, memory s, measured s) of ``rows`` (one GPU's of
    ``tests/data/ladder_cudnn_conv_fp16.csv``: fp16 NCHW forward convolutions, square)."""
    from simulator.graph.op import DType

    col = {key: np.array([float(r[key]) for r in rows]) for key in
           ("batch", "cin", "cout", "kernel", "size", "stride", "pad", "latency_ms")}
    m, n, k, flops, nbytes = implicit_gemm(col["batch"], col["cin"], col["cout"], col["kernel"],
                                           col["size"], col["stride"], col["pad"],
                                           element_bytes=DType.FP16.bytes)
    compute, memory = _terms(m, n, k, flops, nbytes, spec, DType.FP16)
    return col["batch"], compute, memory, col["latency_ms"] * 1e-3


def _harness_fixed(batch, compute, memory, measured, rate) -> float:
    """The fixed cost per call: the median over the batch-1 rows (the host's dispatch and the
    launches, timed between two CUDA events, dwarf their kernels) of measured - the model."""
    small = batch == 1
    return max(0.0, float(np.median(measured[small] - np.maximum(compute[small] / rate,
                                                                   memory[small]))))


def fit_against_reference(rows: list[dict], device: str = LADDER_TABLE_PAIR[0],
                          reference: str = LADDER_TABLE_PAIR[1]) -> HarnessFit:
    """``device``'s 16-bit convolution rate from one script's timings of the same shapes on
    ``device`` and on ``reference`` (rows as ``tests/data/ladder_cudnn_conv_fp16.csv``, each
    naming its catalogue spec).

    The script times each call alone between two CUDA events, in NCHW with cuDNN's default
    algorithm choice (no autotuning), so a shape's time holds what hwsim's model of a
    convolution leaves out -- the host's dispatch, the layout handling of an NCHW call, an
    algorithm cuDNN's heuristic picks -- and says little of the rate by itself. Timed by one
    script on two GPUs, those costs are the same per shape on both, to first order, while the
    reference GPU's rate is known from a cleaner measurement (its spec's ``conv_efficiency``).
    So per compute-bound shape (batch above 1, the compute time at rate 1 at least the memory
    time on both GPUs) the rate the shape shows, ``compute / (measured - fixed)``, is taken on
    each GPU, and ``rate`` = the reference's rate x the geometric mean of their ratios. The fixed
    cost of each GPU is the median residual of its batch-1 rows (``_harness_fixed``), fitted
    alternately with the rate."""
    from hardware_specs.loader import load_device

    def mine(name):
        chosen = [r for r in rows if r["device"] == name]
        if not chosen:
            raise ValueError(f"{name}: no rows")
        names = {r["catalogue"] for r in chosen}
        if len(names) != 1:
            raise ValueError(f"{name}: rows name {sorted(names)}; need one catalogue spec")
        return chosen, load_device(names.pop())

    rows_a, spec_a = mine(device)
    rows_b, spec_b = mine(reference)
    key = ("batch", "cin", "cout", "kernel", "size", "stride", "pad")
    if [tuple(r[c] for c in key) for r in rows_a] != [tuple(r[c] for c in key) for r in rows_b]:
        raise ValueError(f"{device} and {reference}: not the same shapes in the same order")
    batch, compute_a, memory_a, measured_a = _harness_terms(rows_a, spec_a)
    _, compute_b, memory_b, measured_b = _harness_terms(rows_b, spec_b)
    reference_rate = spec_conv_efficiency(spec_b, "fp16")
    bound = (batch > 1) & (compute_a >= memory_a) & (compute_b >= memory_b)
    if not bound.any():
        raise ValueError("no compute-bound shape timed on both GPUs")
    fixed_b = _harness_fixed(batch, compute_b, memory_b, measured_b, reference_rate)
    shown_b = compute_b[bound] / np.maximum(measured_b[bound] - fixed_b, 1e-9)
    rate, fixed_a = reference_rate, 0.0
    for _ in range(_ROUNDS):
        fixed_a = _harness_fixed(batch, compute_a, memory_a, measured_a, rate)
        shown_a = compute_a[bound] / np.maximum(measured_a[bound] - fixed_a, 1e-9)
        ratios = shown_a / shown_b
        rate = reference_rate * float(np.exp(np.mean(np.log(ratios))))
    # each shape's own factor (what the script adds to the model), from the reference's rows
    factor = shown_b / reference_rate
    predicted = fixed_a + compute_a[bound] / (rate * factor)
    errors = predicted / measured_a[bound] - 1
    return HarnessFit(device, spec_a.name, reference, spec_b.name, reference_rate, rate,
                      tuple(float(x) for x in ratios), fixed_a, fixed_b,
                      tuple(float(x) for x in errors))


def fit_harness_table(path) -> HarnessFit:
    """``fit_against_reference`` on the table at ``path`` (Ladder's A100 against its V100)."""
    return fit_against_reference(_read_rows(path))


def fit_table(path) -> dict[str, ConvFit]:
    """Every GPU's fit from the conv table at ``path``."""
    from hardware_specs.loader import load_device

    rows = _read_rows(path)
    return {device: fit(rows, device, load_device(name)) for device, name in CATALOGUE.items()}


__all__ = ["CATALOGUE", "DEEPBENCH_CATALOGUE", "LADDER_TABLE_PAIR", "ConvFit", "HarnessFit",
           "deepbench_pass_rates", "fit", "fit_against_reference", "fit_deepbench",
           "fit_deepbench_table", "fit_harness_table", "fit_table", "implicit_gemm", "predict_s",
           "spec_conv_efficiency"]
