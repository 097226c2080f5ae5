"""Streaming efficiency of memory-bound kernels, fitted on measured kernel latencies.

A vector kernel (an elementwise op, a norm, a softmax) that moves ``bytes`` through main memory
takes ``bytes / (efficiency x datasheet bandwidth)`` once it is large enough to stream: the
efficiency is what the kernel reaches of the datasheet rate, and it differs by kernel class.
Elementwise kernels stream one input to one output; norms and softmax reduce each row (or
channel) before writing it, with a second pass over it, and reach less.

The fit uses only kernels well outside the last-level cache (``bytes >= 4 x L2``), where the
datasheet bandwidth is the roof, and takes the geometric mean of the achieved fractions
(least squares on log time). A fifth of each table is held out by shape range -- the rows
with the longest rows (``row``) -- and the fit's error on them is reported, so that a fit is
judged on shapes it did not see.

Data: NeuSight (Lee et al., ASPLOS 2025; github.com/sitar-lab/NeuSight, MIT licence), PyTorch
2.1.0 fp32 kernels timed on seven NVIDIA GPUs (``tests/data/neusight_vector_kernels.csv``);
NVIDIA's cuDNN norm benchmark (github.com/NVIDIA/cudnn-frontend ``benchmark/norms``, MIT
licence), bf16 RMSNorm and LayerNorm forward and backward kernels timed on an H200 and a GB200
with the cache flushed before each call (``tests/data/cudnn_norm_kernels.csv``, ``fit_flushed``);
cuDNN's NHWC batch norm (PyTorch's channels-last BatchNorm3d routed to cuDNN 8.2), fp16 data,
timed on an A100-SXM4-40GB and a V100-SXM2-32GB by Xiao Wang (github.com/xwang233/code-snippet
2c053c8, MIT licence, ``batchnorm3d-channels-last/A100/A100-SXM4-40GB.md`` and
``V100/Tesla_V100-SXM2-32GB.md``, column "PR (ch-last)"; ``tests/data/batchnorm_nhwc.csv``,
``fit_batch_norm``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from simulator.cost.roofline import BATCH_NORM_MIN_CHANNELS

#: Kernel classes, by the NeuSight op names they cover, and the bytes each element moves
#: (fp32): an elementwise binary op reads two and writes one; the others read one, write one.
CLASSES = {"elementwise": ("add", "mul", "relu", "gelu"), "norm": ("ln", "softmax")}
_WORDS_PER_ELEMENT = {"add": 3, "mul": 3}
_FP32 = 4
#: Kernels smaller than this many times the last-level cache are not fitted on.
CACHE_MULTIPLE = 4
HELD_OUT = 0.2


@dataclass(frozen=True)
class StreamingFit:
    """One device's fitted efficiency of one kernel class, and its held-out error."""

    device: str
    kind: str
    efficiency: float
    fitted_rows: int
    held_out_rows: int
    held_out_median_error: float   # median |predicted / measured - 1| on the held-out fifth


def kernel_bytes(op: str, rows: int, row: int) -> float:
    """Main-memory bytes one measured kernel moves (its parameters and statistics aside)."""
    return float(_WORDS_PER_ELEMENT.get(op, 2) * _FP32 * rows * row)


def fit(table: list[dict], device: str, kind: str, bandwidth_bytes_per_s: float,
        l2_bytes: float) -> StreamingFit:
    """Fit ``kind`` (a key of ``CLASSES``) on ``device``'s rows of ``table`` (dicts with
    ``device, op, rows, row, latency_ms``)."""
    usable = []
    for r in table:
        if r["device"] != device or r["op"] not in CLASSES[kind]:
            continue
        nbytes = kernel_bytes(r["op"], int(r["rows"]), int(r["row"]))
        if nbytes >= CACHE_MULTIPLE * l2_bytes:
            usable.append((int(r["row"]), nbytes, float(r["latency_ms"]) * 1e-3))
    if len(usable) < 10:
        raise ValueError(f"{device}: {len(usable)} {kind} kernels outside the cache; need 10")
    return _held_out_fit(usable, device, kind, bandwidth_bytes_per_s)


def _held_out_fit(usable: list[tuple[int, float, float]], device: str, kind: str,
                  bandwidth_bytes_per_s: float) -> StreamingFit:
    """The rule both tables' fits share: ``usable`` (row length, bytes, seconds) sorted by row
    length, the longest fifth held out, the rest fitted by ``no_intercept_efficiency``; the
    held-out calls' median |error|."""
    usable = sorted(usable)
    cut = len(usable) - max(1, round(HELD_OUT * len(usable)))
    fitted, held = usable[:cut], usable[cut:]
    efficiency = no_intercept_efficiency([(nbytes, t) for _, nbytes, t in fitted],
                                         bandwidth_bytes_per_s)
    errors = sorted(abs(nbytes / (efficiency * bandwidth_bytes_per_s) / t - 1)
                    for _, nbytes, t in held)
    return StreamingFit(device, kind, efficiency, len(fitted), len(held),
                        errors[len(errors) // 2])


def no_intercept_efficiency(calls: list[tuple[float, float]],
                            bandwidth_bytes_per_s: float) -> float:
    """The specs' rule: the geometric mean of the fractions of the datasheet bandwidth that
    ``calls`` ((bytes, seconds) pairs) reach, with no fixed cost apart (least squares on log
    time)."""
    logs = [math.log(nbytes / (t * bandwidth_bytes_per_s)) for nbytes, t in calls]
    return math.exp(sum(logs) / len(logs))


def fit_tables(kernels_csv, devices_csv) -> tuple[list[dict], dict[tuple[str, str], StreamingFit]]:
    """Every device's fit of every class: the rows of ``devices_csv`` (``device,
    bandwidth_gb_per_s, l2_mb, catalogue``) and ``{(device, kind): StreamingFit}`` from the
    kernel table ``kernels_csv`` (``tests/data/neusight_*.csv``)."""
    import csv

    with open(kernels_csv, newline="") as handle:
        table = list(csv.DictReader(handle))
    with open(devices_csv, newline="") as handle:
        devices = list(csv.DictReader(handle))
    fits = {(d["device"], kind): fit(table, d["device"], kind,
                                     float(d["bandwidth_gb_per_s"]) * 1e9,
                                     float(d["l2_mb"]) * 2**20)
            for d in devices for kind in CLASSES}
    return devices, fits


@dataclass(frozen=True)
class RampFit:
    """One device's elementwise kernels as ``t = fixed + bytes / (efficiency x bandwidth)``
    out of the cache, and the time of its smallest calls (``floor_s``)."""

    device: str
    fixed_s: float                  # the intercept: time a call spends beyond its bytes
    efficiency: float               # of the datasheet bandwidth, with the intercept apart
    floor_s: float                  # median time of the calls that move under 1 MB
    fitted_rows: int
    held_out_rows: int
    held_out_median_error: float    # median |predicted / measured - 1|, largest-bytes fifth
    streaming_only_error: float     # the same, at the StreamingFit rule (no intercept)


def fit_ramp(table: list[dict], device: str, bandwidth_bytes_per_s: float,
             l2_bytes: float) -> RampFit:
    """Fit ``device``'s elementwise calls of ``table`` (dicts with ``device, op, rows, row,
    latency_ms``, as ``tests/data/neusight_elementwise_small.csv``): least squares on the
    relative error of ``fixed + bytes / rate`` over the calls of at least ``CACHE_MULTIPLE``
    x L2, the largest-bytes fifth held out.

    The no-intercept rule (``no_intercept_efficiency``, the specs' fits) is judged on the same
    split: fitted on the same rows, on the same held-out largest-bytes fifth
    (``streaming_only_error``).

    What it finds (``tests/test_streaming_ramp.py``): the intercept is the host's, not a ramp
    of the device's bandwidth. NeuSight timed each call alone between two CUDA events
    (``neusight/Dataset/collect.py`` ``measure_once``); every call up to the bytes the device
    streams in a quarter of that time (1 MB on the P4 to 9 MB on the A100) takes the same
    time, the host's floor, and out of the cache the intercept is 0.5-0.6 of that floor on all five
    GPUs, following the host (the P100's machine: floor 45 us, intercept 23 us; the others
    26-33 us and 14-17 us), not the memory (HBM2, GDDR5, GDDR6 alike). A kernel's own ramp is
    below what these timings resolve; hwsim charges a call's host and launch costs apart
    (``simulator.cost.host``, ``op_overhead_s``).
    """
    small, usable = [], []
    for r in table:
        if r["device"] != device or r["op"] not in CLASSES["elementwise"]:
            continue
        nbytes = kernel_bytes(r["op"], int(r["rows"]), int(r["row"]))
        seconds = float(r["latency_ms"]) * 1e-3
        if nbytes < 1e6:
            small.append(seconds)
        if nbytes >= CACHE_MULTIPLE * l2_bytes:
            usable.append((nbytes, seconds))
    if len(usable) < 20 or len(small) < 5:
        raise ValueError(f"{device}: {len(usable)} elementwise calls outside the cache and "
                         f"{len(small)} under 1 MB; need 20 and 5")
    usable.sort()
    cut = len(usable) - max(1, round(HELD_OUT * len(usable)))
    fitted, held = usable[:cut], usable[cut:]
    # least squares of 1 = fixed / t + nbytes / (rate t): relative error, two unknowns
    a11 = sum(1 / t ** 2 for _, t in fitted)
    a12 = sum(b / t ** 2 for b, t in fitted)
    a22 = sum(b * b / t ** 2 for b, t in fitted)
    r1, r2 = sum(1 / t for _, t in fitted), sum(b / t for b, t in fitted)
    det = a11 * a22 - a12 * a12
    fixed, inverse = (r1 * a22 - r2 * a12) / det, (a11 * r2 - a12 * r1) / det
    errors = sorted(abs((fixed + b * inverse) / t - 1) for b, t in held)
    # the no-intercept rule on the same split (``fit`` holds out the longest rows instead)
    plain_rate = no_intercept_efficiency(fitted, bandwidth_bytes_per_s) * bandwidth_bytes_per_s
    plain = sorted(abs(b / plain_rate / t - 1) for b, t in held)
    small.sort()
    return RampFit(device, fixed, 1 / (inverse * bandwidth_bytes_per_s), small[len(small) // 2],
                   len(fitted), len(held), errors[len(errors) // 2], plain[len(plain) // 2])


#: Bytes of one element and of one per-row statistic (mean, inverse variance: fp32) of the
#: cuDNN norm benchmark (NVIDIA/cudnn-frontend ``benchmark/norms/benchmark_single_norm.py``).
_NORM_ELEMENT = {"bfloat16": 2, "float16": 2, "float32": 4}
_STAT = 4


def norm_bytes(norm: str, rows: int, row: int, bias: bool, direction: str,
               dtype: str = "bfloat16") -> float:
    """Bytes one norm kernel of ``rows`` x ``row`` moves, as cudnn-frontend's norm benchmark
    counts them (``compute_bandwidth_bytes``): forward reads x and the scale (and bias),
    writes y and the statistics (rms_norm: inverse variance; layer_norm: mean too); backward
    reads dy, x, the statistics and the scale, writes dx and the scale's gradient (layer_norm
    and a biased rms_norm: the bias's too)."""
    es, stats = _NORM_ELEMENT[dtype], (1 if norm == "rms_norm" else 2)
    numel = rows * row
    if direction == "fwd":
        params = row * (2 if norm == "layer_norm" and bias else 1)
        return float((2 * numel + params) * es + stats * _STAT * rows)
    grads = row * (2 if norm == "layer_norm" or bias else 1)
    return float((3 * numel + row + grads) * es + stats * _STAT * rows)


def fit_flushed(table: list[dict], device: str, backend: str, bandwidth_bytes_per_s: float,
                l2_bytes: float) -> StreamingFit:
    """Fit ``backend``'s norm kernels on ``device`` (dicts with ``device, backend, norm, rows,
    row, bias, direction, dtype, gb_per_s``, as ``tests/data/cudnn_norm_kernels.csv``) by the
    rule of ``fit``: geometric mean of the fraction of the datasheet bandwidth reached, the
    longest-row fifth held out.

    The kernels kept are those that move at least the last-level cache (not 4x, as ``fit``'s
    NeuSight timings need): the benchmark zeroes a 256 MiB buffer before every timed call,
    so a kernel's inputs come from memory whatever its size, and only its writes, up to the
    cache's size, may still be in the cache when it ends. Each kernel's time is its bytes over
    the published rate (the table's times are rounded to a microsecond; the rate was computed
    from the unrounded median).
    """
    usable = []
    for r in table:
        if r["device"] != device or r["backend"] != backend:
            continue
        nbytes = norm_bytes(r["norm"], int(r["rows"]), int(r["row"]), r["bias"] == "True",
                            r["direction"], r["dtype"])
        if nbytes >= l2_bytes:
            usable.append((int(r["row"]), nbytes, nbytes / (float(r["gb_per_s"]) * 1e9)))
    if len(usable) < 10:
        raise ValueError(f"{device}: {len(usable)} {backend} norm kernels of at least the "
                         "cache; need 10")
    return _held_out_fit(usable, device, "norm", bandwidth_bytes_per_s)


_HALF = 2


def batch_norm_bytes(direction: str, batch: int, channels: int, dhw: int) -> float:
    """Bytes hwsim counts for one fp16 batch norm (``simulator.graph.op.CHANNEL_NORMS``: a
    statistics pass, then the normalising pass), its parameters and statistics aside:
    forward reads x twice and writes y (3 tensors); backward reads dy and x to reduce, then
    both again, and writes dx (5 tensors)."""
    tensors = {"forward": 3, "backward": 5}[direction]
    return float(tensors * _HALF * batch * channels * dhw ** 3)


def timed_batch_norm_bytes(direction: str, batch: int, channels: int, dhw: int) -> float:
    """Bytes one timed call of the source's benchmark moves (xwang233/code-snippet 2c053c8
    ``batchnorm3d-channels-last/s.py``): forward as ``batch_norm_bytes``; backward
    ``out.backward(go, retain_graph=True)`` on a leaf ``x`` (``requires_grad_()``) whose
    gradient nothing zeroes between calls (100 warm-up backward calls, then 100 timed), so
    each timed call also accumulates ``x.grad += dx`` (PyTorch's AccumulateGrad in place,
    ``torch/csrc/autograd/functions/accumulate_grad.h``, ``accumulateGrad``: a gradient
    already defined and grad mode off, ``variable_grad += new_grad``: reads two fp16 tensors,
    writes one) and the fp32 weight's and bias's gradients of
    ``channels`` each the same way: 5 + 3 tensors, plus 2 x 3 x 4 bytes a channel."""
    nbytes = batch_norm_bytes(direction, batch, channels, dhw)
    if direction == "backward":
        nbytes += 3 * _HALF * batch * channels * dhw ** 3 + 2 * 3 * 4 * channels
    return float(nbytes)


def fit_batch_norm(table: list[dict], device: str, direction: str,
                   bandwidth_bytes_per_s: float, l2_bytes: float) -> StreamingFit:
    """Fit ``device``'s batch norms of ``direction`` (dicts with ``device, direction, batch,
    channels, dhw, ms``, as ``tests/data/batchnorm_nhwc.csv``) by ``fit``'s rule: kernels of at least
    4 x the last-level cache (timed back to back, as NeuSight's), of at least
    ``BATCH_NORM_MIN_CHANNELS`` channels; the geometric mean of the fraction of the datasheet
    bandwidth reached at the bytes the timed call moves (``timed_batch_norm_bytes``: the
    backward's accumulation into the leaf's gradient included, which hwsim's backward op does
    not do), the fifth with the most values per channel (batch x d^3) held out."""
    usable = []
    for r in table:
        if (r["device"] != device or r["direction"] != direction
                or int(r["channels"]) < BATCH_NORM_MIN_CHANNELS):
            continue
        batch, channels, dhw = int(r["batch"]), int(r["channels"]), int(r["dhw"])
        nbytes = timed_batch_norm_bytes(direction, batch, channels, dhw)
        if nbytes >= CACHE_MULTIPLE * l2_bytes:
            usable.append((batch * dhw ** 3, nbytes, float(r["ms"]) * 1e-3))
    if len(usable) < 5:
        raise ValueError(f"{device}: {len(usable)} {direction} batch norms outside the cache; "
                         "need 5")
    return _held_out_fit(usable, device, f"batch-norm {direction}", bandwidth_bytes_per_s)


#: cuDNN's NCHW batch-norm kernels in ten fp16 training steps of torchvision's ResNet-50 (v1.5,
#: a 4-channel input) at batch 128 on an A100 40GB: (kernel, direction, total ms, calls), the
#: PyTorch profiler's "Self CUDA" column of apuaaChen/EVT_AE 917438b
#: ``benchmark/resnet/torch_result.md`` (the EVT paper's artifact, 2023-11-21; NGC PyTorch
#: 23.07 per its Dockerfile, so cuDNN 8.9.3; CUDA graphs, apex AMP). The repository has no
#: licence file: these figures are quoted, no file is copied. 53 forward and 53 backward calls a
#: step, ResNet-50's 53 batch norms.
EVT_NCHW_BATCH_NORMS = (
    ("bn_fw_tr_1C11_kernel_NCHW", "forward", 68.682, 110),
    ("bn_fw_tr_1C11_kernel_NCHW", "forward", 31.512, 130),
    ("bn_fw_tr_1C11_kernel_NCHW", "forward", 21.237, 10),
    ("bn_fw_tr_1C11_singleread_spec", "forward", 10.098, 190),
    ("bn_fw_tr_1C11_singleread", "forward", 3.583, 90),
    ("bn_bw_1C11_kernel_new", "backward", 99.443, 110),
    ("bn_bw_1C11_kernel_new", "backward", 54.276, 220),
    ("bn_bw_1C11_kernel_new", "backward", 29.380, 10),
    ("bn_bw_1C11_singleread_spec", "backward", 15.916, 190),
)
#: The same steps in channels_last (``torch_cl_result.md``): cuDNN's NHWC kernels, a check on
#: the NHWC figures fitted on xwang233's table (``fit_batch_norm``), not fitted on.
EVT_NHWC_BATCH_NORMS = (
    ("batchnorm_fwtr_nhwc_semiPersist", "forward", 36.143, 410),
    ("batchnorm_fwtr_nhwc_semiPersist", "forward", 31.514, 120),
    ("batchnorm_bwtr_nhwc_semiPersist", "backward", 73.223, 250),
    ("batchnorm_bwtr_nhwc_semiPersist", "backward", 19.950, 280),
)
EVT_STEPS, EVT_BATCH, EVT_BANDWIDTH = 10, 128, 1555e9   # A100 40GB: 1,555 GB/s (datasheet)


def profiled_batch_norm_efficiency(kernels, direction: str) -> float:
    """The fraction of the A100 40GB's datasheet bandwidth that the profiled step's batch norms
    of ``direction`` reach (``kernels``: ``EVT_NCHW_BATCH_NORMS`` or ``EVT_NHWC_BATCH_NORMS``):
    the bytes hwsim counts for ResNet-50's 53 batch norms of that direction at batch 128 in fp16
    (``batch_norm_bytes``' tensors: forward 3, backward 5, through
    ``simulator.graph.lower``), over the profile's kernel time a step. One figure over the
    step's mix of shapes: the profile sums by kernel, not by call."""
    from simulator.graph.lower import lower
    from simulator.graph.op import DType, OpKind, Phase
    from simulator.plan.step import Plan
    from simulator.training.backward import training_graph
    from workloads.cnn import RESNET50

    step = lower(training_graph(RESNET50.forward_graph(EVT_BATCH, DType.FP16),
                                Plan(micro_batch=EVT_BATCH, precision="fp16")))
    ops = (step.kind == OpKind.NORM) & (step.fn == "batchnorm")
    ops &= (step.phase == Phase.BACKWARD) == (direction == "backward")
    seconds = sum(ms for _, d, ms, _ in kernels if d == direction) * 1e-3 / EVT_STEPS
    return float(step.nbytes[ops].sum() / (seconds * EVT_BANDWIDTH))


__all__ = ["BATCH_NORM_MIN_CHANNELS", "CLASSES", "EVT_BANDWIDTH", "EVT_BATCH",
           "EVT_NCHW_BATCH_NORMS", "EVT_NHWC_BATCH_NORMS", "EVT_STEPS",
           "RampFit", "StreamingFit", "batch_norm_bytes",
           "profiled_batch_norm_efficiency",
           "fit", "fit_batch_norm", "fit_flushed", "fit_ramp",
           "fit_tables", "kernel_bytes", "no_intercept_efficiency", "norm_bytes",
           "timed_batch_norm_bytes"]
