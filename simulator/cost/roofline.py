"""Pricing lowered ops on a device: the rates each op runs at, then its roofline time.

Counting is separate from pricing (STYLE.md rule 6): ``simulator.graph.lower`` gives the counts, this
module turns a ``DeviceSpec`` into per-op rates, and the roofline kernel turns both into times.
It knows nothing of the scheduler (rule 7).

The model is deliberately simple for now:
- tensor ops (``TENSOR_KINDS``: matmul, conv, attention) run on the matrix units at
  ``device.peak_for(dtype) * device.matmul_efficiency`` (``conv_efficiency`` for convolutions,
  ``attention_efficiency`` for fused attention, ``fp8_matmul_efficiency`` and
  ``fp32_matmul_efficiency`` for fp8 and fp32 GEMMs, ``fp32_conv_efficiency`` for fp32
  convolutions, where the spec gives them) times the shape efficiency of
  ``simulator.cost.efficiency`` (tile and wave quantisation, systolic padding, SIMD lanes); causal
  fused attention runs only its unmasked blocks;
- every other op runs on the vector units at ``device.vector_flops_per_s`` (times
  ``vector_efficiency``), the fp32 rate,
  whatever its dtype. 16-bit vector math on recent GPUs runs at about twice the fp32 rate
  (packed half2/bf16x2), but vector ops are almost always memory-bound, so this rarely changes
  a time;
- ops stream their bytes from the innermost memory level that holds them (``level_bandwidth``):
  an op alone (a kernel timed back to back) where its own bytes fit, an op of a step of
  several ops only where the step's traffic fits too (``step_footprint``); else
  main memory at ``device.memory_bandwidth_bytes_per_s * device.memory_efficiency``, a matmul
  at ``device.matmul_memory_efficiency`` instead where the spec gives it (a GEMM bound by its
  bytes does not stream them as a copy does), norms and softmax at
  ``device.norm_memory_efficiency`` (they reduce each row before writing it; PyTorch eager's
  norm kernels where measured), or under ``Fusion.COMPILED`` at
  ``device.norm_memory_efficiency_compiled`` where the spec gives it (generated kernels:
  torch.compile's). Softmax takes the norms' figure either way: no softmax kernel is measured;
  batch norms of a ``channels_last`` plan (NHWC) at ``device.batch_norm_memory_efficiency``
  forward and ``batch_norm_backward_memory_efficiency`` backward where the spec gives them
  and the norm has at least ``BATCH_NORM_MIN_CHANNELS`` channels (cuDNN's NHWC batch-norm
  kernels, fitted from 64 channels up), those of any other plan (NCHW) at
  ``batch_norm_nchw_memory_efficiency`` and ``batch_norm_nchw_backward_memory_efficiency``
  (cuDNN's NCHW kernels, about half as fast); narrower ones, and any without a figure, keep
  the norms' figure;
- a function the device has measured (``device.function_efficiency``, by ``Op.fn``) runs at
  that fraction of its unit's peak instead of its kind's efficiency, and pays its own fixed
  cost per call (``device.function_overhead_s``) instead of ``op_overhead_s``;
- each op's host cost (``device.op_overhead_s``: framework dispatch and launch; an update's
  per its implementation; the step's fixed ``step_overhead_s`` with the first update) is
  ``simulator.cost.host``'s: on a CPU it is added to the op's time, as the CPU runs both; on a
  GPU the host is its own stream (``simulator.schedule.stage``), issuing each op at
  ``host_overhead_s`` (else ``op_overhead_s``), and each kernel still pays ``op_overhead_s`` on
  the device (less ``GRAPH_SAVES_S`` under CUDA graphs);
- collectives (``OpKind.COLLECTIVE``) are priced on the cluster's networks, not by the
  roofline: ``simulator.cost.collectives.cluster_time_s`` for their kind, buffer (the larger of the
  bytes read and written, as NCCL counts it), group and members per node; their compute time
  is zero and their memory time the HBM traffic (for energy). A collective of one device, or
  the identity half of Megatron's f, takes no time.
"""
from __future__ import annotations

import numpy as np

from hardware_specs.spec import DeviceClass, DeviceSpec
from simulator.cost.attention import fitted_rates
from simulator.cost.efficiency import DTYPE_BYTES, executed_fraction, shape_efficiency
from simulator.cost.host import costs as host_costs
from simulator.graph.conv_backend import ONE_THREAD, THREADS
from simulator.graph.lower import Lowered
from simulator.graph.op import TENSOR_KINDS, DType, OpKind, Phase
from simulator.plan.step import Fusion

#: The fewest channels a batch norm has for the NHWC batch-norm figures to price it: the fit's
#: floor (``simulator.calibrate.streaming.fit_batch_norm``), ResNet's narrowest (64, its stem
#: and first stage). The source's narrower NHWC norms reach far less of the bandwidth (A100 at
#: 16 x c x 112^3, forward 0.14 / 0.27 / 0.46 / 0.70 / 0.85 at 4 / 8 / 16 / 32 / 64 channels;
#: the V100's alike), so below it a batch norm streams at the norms' figure.
BATCH_NORM_MIN_CHANNELS = 64

_TENSOR_CODES = np.array(sorted(int(kind) for kind in TENSOR_KINDS), dtype=np.int8)


def price(lowered: Lowered, device: DeviceSpec,
          plan=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-op float64 ``(peak_flops_per_s, bandwidth_bytes_per_s, overhead_s)`` on ``device``
    (``plan``, a ``simulator.plan.step.Plan``: how the host issues the kernels)."""
    return _price(lowered, device, plan)[:3]


def _price(lowered: Lowered, device: DeviceSpec, plan=None):
    """``price``'s three columns, then the positions of the fused attention ops priced by a
    kernel fit (``fitted_rates``), which ``_roofline`` needs too, and the host's issue cost of
    each op (``simulator.cost.host.costs``' second column, which a calibration's fit needs
    too: computed once)."""
    n = len(lowered)
    matrix_rate = np.zeros(max(DType) + 1, dtype=np.float64)  # indexed by DType code
    for dtype in DType:
        matrix_rate[dtype] = device.peak_for(dtype)
    base = np.full(n, device.matmul_efficiency)
    # fused attention in fp32 or tf32 is no fused kernel's (they run fp16 and bf16 only,
    # simulator.cost.attention.HALF_ONLY_PRECISIONS): SDPA's memory-efficient kernel, whose
    # tiles are GEMMs of the format, is priced as those GEMMs, not at attention_efficiency
    # (a half-precision kernel's figure)
    full = lowered.among("dtype", (DType.FP32, DType.TF32))
    if device.attention_efficiency is not None:
        base[lowered.mask("kind", OpKind.ATTENTION) & ~full] = device.attention_efficiency
    for dtype, efficiency in ((DType.FP8, device.fp8_matmul_efficiency),    # measured GEMM
                              (DType.FP32, device.fp32_matmul_efficiency)):  # figures per format
        if efficiency is not None:
            gemm = (lowered.mask("kind", OpKind.MATMUL)
                    | (full & lowered.mask("kind", OpKind.ATTENTION)))
            base[gemm & (lowered.dtype == dtype)] = efficiency
    conv = lowered.mask("kind", OpKind.CONV)
    for dtype in np.unique(lowered.dtype[conv]):  # cuDNN's algorithms: DeviceSpec's rule
        base[conv & (lowered.dtype == dtype)] = device.conv_efficiency_for(DType(int(dtype)))
    is_tensor = lowered.among("kind", _TENSOR_CODES)
    rate = matrix_rate[lowered.dtype.astype(np.int64)]
    # at most the datasheet peak: a shape that fills its last wave better than the reference
    # GEMM has a shape factor above 1 (an fp32 lm_head on an A100 PCIe ran at 19.51 of 19.5
    # TFLOP/s at matmul_efficiency 1)
    matrix = np.minimum(rate * base * shape_efficiency(lowered, device), rate)
    vector = device.vector_flops_per_s * device.vector_efficiency
    peak = np.where(is_tensor, matrix, vector)
    streaming = None
    norm = device.norm_memory_efficiency
    if (plan is not None and plan.fusion is Fusion.COMPILED
            and device.norm_memory_efficiency_compiled is not None):
        norm = device.norm_memory_efficiency_compiled   # generated kernels (torch.compile's)
    own_streams = {OpKind.MATMUL: device.matmul_memory_efficiency,  # a GEMM's bytes: not one
                   OpKind.NORM: norm,                               # stream; norms and softmax
                   OpKind.SOFTMAX: norm}   # reduce each row first (no softmax kernel measured)
    for kind, efficiency in own_streams.items():
        if efficiency is not None:
            if streaming is None:
                streaming = np.full(n, device.memory_efficiency)
            streaming[lowered.mask("kind", kind)] = efficiency
    if plan is not None and lowered.fn is not None:
        channels = lowered.channels if lowered.channels is not None else np.zeros(n, np.int64)
        batch_norm = (lowered.mask("kind", OpKind.NORM) & (lowered.fn == "batchnorm")
                      & (channels >= BATCH_NORM_MIN_CHANNELS))
        backward = lowered.mask("phase", Phase.BACKWARD)
        forward_figure, backward_figure = (
            (device.batch_norm_memory_efficiency, device.batch_norm_backward_memory_efficiency)
            if plan.channels_last else
            (device.batch_norm_nchw_memory_efficiency,
             device.batch_norm_nchw_backward_memory_efficiency))
        for ops, efficiency in ((batch_norm & ~backward, forward_figure),
                                (batch_norm & backward, backward_figure)):
            if efficiency is not None and ops.any():
                if streaming is None:
                    streaming = np.full(n, device.memory_efficiency)
                streaming[ops] = efficiency
    bandwidth = level_bandwidth(lowered.nbytes, device, streaming, step_footprint(lowered))
    for fn, efficiency in device.function_efficiency.items():  # a measured function's own rate
        ops = lowered.among("fn", (fn,))
        peak[ops] = np.where(is_tensor[ops], np.minimum(matrix[ops] / base[ops] * efficiency,
                                                        rate[ops]),
                             device.vector_flops_per_s * efficiency)
    fused, rates = fitted_rates(lowered, device)  # fused attention by its kernel's fit
    peak[fused] = rates
    overhead, issue = host_costs(lowered, device, plan)  # on a GPU the host is its own stream
    reorders = reorder_seconds(lowered, device, plan)
    if reorders is not None:
        overhead = overhead + reorders
    return peak.astype(np.float64), bandwidth, overhead, fused, issue


def reorder_seconds(lowered: Lowered, device: DeviceSpec, plan=None) -> np.ndarray | None:
    """Float64 per op (None where no op has any): on a CPU, the seconds oneDNN spends copying
    a convolution's activations between PyTorch's NCHW layout and its own blocked one
    (``simulator.graph.conv_backend``): each pass (forward, data gradient, weight gradient) of
    a convolution PyTorch runs on oneDNN for the device's threads copies its input and its
    output once each way (``reorder_input`` / ``reorder_output`` elements, each read and
    written), each copy at the bandwidth of the level that holds it (``level_bandwidth``, the
    step's footprint as for any op). These are primitives of their own, run after one another,
    so the time adds to the op's. Channels-last plans (``Plan.channels_last``) compute on their
    tensors as they are: none."""
    if (device.device_class is not DeviceClass.CPU or lowered.onednn is None
            or (plan is not None and plan.channels_last)):
        return None
    # a spec without a core count is used whole, by PyTorch's default of a thread per core
    bit = ONE_THREAD if device.architecture.compute_units == 1 else THREADS
    ops = lowered.mask("kind", OpKind.CONV) & ((lowered.onednn & bit) != 0)
    if not ops.any():
        return None
    element = DTYPE_BYTES[lowered.dtype.astype(np.int64)]
    footprint = step_footprint(lowered)
    out = np.zeros(len(lowered))
    for elements in (lowered.reorder_input, lowered.reorder_output):
        moved = np.where(ops, 2.0 * elements * element, 0.0)       # read + written
        out += moved / level_bandwidth(moved, device, None, footprint)
    return out


def step_footprint(lowered: Lowered) -> float:
    """The bytes a step's ops move, read and written, over all of them: the working set
    ``level_bandwidth`` asks a cache to hold before it serves the step's ops. For one op (a
    kernel timed alone) its own bytes, as before.

    A cache holds what was touched last. An op timed back to back finds its operands where
    its last call left them; an op of a training step finds them only if the step, which
    runs over and over, has not moved more than the cache holds since: its backward reads
    activations written in its forward, its update the weights and gradients, its forward
    the weights the update wrote, and every output lands in memory the allocator last
    handed to another tensor. The step's traffic (``nbytes`` summed, each tensor counted
    at each touch) bounds that from above; its distinct bytes (what an ideal LRU cache
    would need) are fewer. Measured on the development machine (Intel Xeon VM, 2 MiB of L2
    per core, torch 2.13, one thread, 2026-12-05): ``a * s`` over 2^17 fp32 elements, back
    to back, 11.7 us a call (90 GB/s: its 1 MiB stays in L2); the same multiply inside the
    training step of the relu micro-model of that size (``simulator.calibrate.functions``;
    5.0 MiB of traffic a step), 94 us a call (torch.profiler self time), the rate of
    main memory; the calibration fitted with this rule and the per-core L2
    (``hardware_specs.host.on_cores``) left a median residual of 5.8 % over its 75
    micro-benchmarks against 6.9 % without either, on the same timings and memory levels
    (docs/accuracy.md); with the bytes the step writes instead of its traffic, 6.2 %, so the
    traffic is used (chosen on the calibration's cases, not on the models).
    All or nothing, not modelled: the share of a step's bytes a cache still serves (a
    forward chain of small tensors handing one another their outputs), reuse distances op
    by op, hardware prefetching."""
    return float(lowered.nbytes.sum()) if len(lowered) else 0.0


def level_bandwidth(nbytes: np.ndarray, device: DeviceSpec,
                    efficiency: np.ndarray | None = None,
                    footprint: float = 0.0) -> np.ndarray:
    """Cache fit: an op whose bytes (read + written) fit in an on-chip level, and whose
    step's ``footprint`` (``step_footprint``: 0 for an op alone) fits too, streams at that
    level's bandwidth, else from main memory at its measured fraction of the datasheet rate.

    Optimistic for a first touch: it assumes the working set is already resident, as it is
    for a kernel called back to back and for a step whose traffic fits. Only levels a spec
    lists (with a cited or measured bandwidth) count. ``efficiency``: each op's fraction of
    the main memory's datasheet rate (None: ``device.memory_efficiency`` for all).
    """
    main = device.main_memory
    if efficiency is None:
        efficiency = np.full(len(nbytes), device.memory_efficiency)
    bandwidth = main.bandwidth_bytes_per_s * np.asarray(efficiency, dtype=np.float64)
    held = np.maximum(np.asarray(nbytes, dtype=np.float64), footprint)
    for level in reversed(device.memory[:-1]):  # outermost cache first, innermost last wins
        bandwidth = np.where(held <= level.capacity_bytes, level.bandwidth_bytes_per_s,
                             bandwidth)
    return bandwidth


def op_costs(lowered: Lowered, device: DeviceSpec, cluster=None,
             plan=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-op float64 ``(compute_s, memory_s, time_s)`` of ``lowered`` on ``device``; the
    collectives on ``cluster`` (a ``hardware_specs.cluster.ClusterSpec``); ``plan``: how the
    host issues the kernels (``simulator.cost.host``)."""
    return op_and_issue_costs(lowered, device, cluster, plan)[:3]


def op_and_issue_costs(lowered: Lowered, device: DeviceSpec, cluster=None,
                       plan=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``op_costs``' three columns, then the host's float64 issue cost of each op
    (``simulator.cost.host.costs``' ``issue_s``), priced once for both: a calibration's fit
    wants both for each of its cases, tens of thousands of times."""
    compute_s, memory_s, time_s, issue_s = _roofline(lowered, device, plan)
    comm = np.flatnonzero(lowered.mask("kind", OpKind.COLLECTIVE))
    if len(comm):
        compute_s, time_s = compute_s.copy(), time_s.copy()
        compute_s[comm] = 0.0
        time_s[comm] = communication_s(lowered, comm, cluster)
    return compute_s, memory_s, time_s, issue_s


def communication_s(lowered: Lowered, ops: np.ndarray, cluster) -> np.ndarray:
    """Seconds of each collective in ``ops`` (positions) on ``cluster``."""
    from simulator.cost.collectives import Collective, cluster_time_s
    from simulator.errors import PlanError
    from simulator.graph.lower import COLLECTIVE_FNS

    out = np.zeros(len(ops), dtype=np.float64)
    cache: dict[tuple, float] = {}
    for j, i in enumerate(ops):
        code, group = int(lowered.collective[i]), int(lowered.group[i])
        nbytes = float(max(lowered.bytes_read[i], lowered.bytes_written[i]))
        if code < 0 or group <= 1 or nbytes == 0:
            continue
        if cluster is None:
            raise PlanError(f"op {lowered.names[i]} is a collective of {group} devices: "
                            "simulate it on a cluster (num_devices or a cluster spec)")
        key = (code, nbytes, group, int(lowered.local[i]))
        if key not in cache:
            cache[key] = cluster_time_s(Collective(COLLECTIVE_FNS[code]), nbytes, group,
                                        cluster, devices_per_node=key[3] or None)
        out[j] = cache[key]
    return out


def _roofline(lowered: Lowered, device: DeviceSpec, plan=None):
    from simulator.engine.dispatch import engine

    peak, bandwidth, overhead, fused, issue = _price(lowered, device, plan)
    # vector work fused into a tensor op runs on the vector units: fold it into an equivalent
    # count at the op's own peak, so the kernel sees one number per op
    vector_rate = device.vector_flops_per_s * device.vector_efficiency
    vector = lowered.vector_flops.astype(np.float64) * (peak / vector_rate)
    vector[fused] = 0.0   # a kernel fit times its softmax too
    flops = lowered.flops.astype(np.float64) * executed_fraction(lowered) + vector
    nbytes = lowered.nbytes.astype(np.float64)
    return (*engine(len(lowered)).roofline(flops, nbytes, peak, bandwidth, overhead), issue)


__all__ = ["BATCH_NORM_MIN_CHANNELS", "op_costs", "price", "reorder_seconds"]
