"""Communication that overlaps compute is not free: NCCL's kernels take SMs and HBM bandwidth
from the kernels running beside them.

A collective runs as a kernel of its own on its communicator's stream. While it runs:

- it holds ``NCCL_SMS`` of the device's SMs (``PCIE_SMS`` where only PCIe joins the GPUs;
  ``ParallelPlan.comm_sms`` sets it), which no compute kernel shares ("NCCL CTAs won't
  share an SM with compute kernels"; "If you are on DGX with 8 NICs and a top speed of 190
  GB/s, then it would use 16 SMs", S. Jeaugey, NVIDIA/nccl issue #689, 2023): a compute-bound
  kernel beside it runs on S - c of S SMs, S / (S - c) times as long;
- it streams its data through HBM ``HBM_PASSES`` times per byte it moves: received data is
  stored, then read back to be sent on or reduced, and a reduction also reads the local
  input ("300GB/s needs to be multiplied by at least 2x for memory bandwidth, as we need to
  store to memory, then read back from it. If you add reading from or writing to user data,
  it can be 3x", S. Jeaugey, NVIDIA/nccl issue #1428, 2024): a memory-bound kernel beside it
  gets B - r of the bandwidth B, B / (B - r) times as long.

A kernel with compute time C and memory time M (its roofline's, T = max(C, M)) under both runs
max(C S / (S - c), M B / (B - r)) instead of T; over a span where collectives come and go, the
extra time is integrated over the kernel's span (``slowed_times``). DeepSpeed 2021's
copies and zero-fills on a communicator's stream (``simulator.parallel.data``: ``flat_copy``,
``nccl_copy_in``, ``nccl_copy_out``, the gather buffers' fill) take HBM bandwidth the same way,
their bytes read and written over their span (not SMs: not modelled). Only the compute stream's
kernels are slowed; the collectives themselves keep their network-bound time (they also slow
beside compute, NVIDIA/nccl issues #357 and #1433: not modelled). Devices whose collectives run
on DMA engines rather than cores (TPU ICI, Trainium, Gaudi's NICs) lose no cores, only HBM
bandwidth.

Check against measurement (tests/test_interference.py): Hassani et al. 2025,
"Characterizing Compute-Communication Overlap in GPU-Accelerated Distributed Deep Learning"
(arXiv:2507.03114), on 4 A100s, H100s, MI250s and MI210s training GPT and LLaMA layers: compute
overlapped with communication slows by 18.9 % on average, 40.0 % at most. The model gives a
compute-bound GEMM 17 % (A100, 16 of 108 SMs) and 14 % (H100, of 132), and a memory-bound
kernel beside the node's NVLink collectives at their achieved rate 31 % (A100) and 27 % (H100)
beside an all-gather, 55 % and 48 % beside an all-reduce (three HBM passes per byte): the
all-gather's within the paper's maximum, the all-reduce's above it, both below NVIDIA/nccl
#1428's elementwise kernel beside an all-gather, 2.5x.

Overlap on the first schedule is what is priced; the slowed kernels are then scheduled again
(one pass: their longer spans overlap a little more communication, not priced). Durations
only grow and each stream runs its ops in issue order, so the step is never faster than
without interference (``ParallelPlan.comm_interference`` False).
"""
from __future__ import annotations

import numpy as np

from simulator.graph.collective import Collective
from simulator.graph.lower import members
from simulator.graph.op import OpKind

#: SMs (CTAs, one per NCCL channel) a collective holds: NVIDIA/nccl issue #689 (S. Jeaugey,
#: 2023), "NCCL uses the minimal number of SMs to achieve the performance of the platform":
#: a DGX-class node (NVLink, 8 NICs) 16, "a PCI system with a single NIC ... just 2".
NCCL_SMS = 16
PCIE_SMS = 2
#: Bytes through HBM per byte a device moves: stored then read back (2), plus the local
#: operand of a reduction (3): NVIDIA/nccl issue #1428 (S. Jeaugey, 2024).
HBM_PASSES = {Collective.ALL_REDUCE: 3, Collective.REDUCE_SCATTER: 3,
              Collective.ALL_GATHER: 2, Collective.ALL_TO_ALL: 2, Collective.SEND_RECV: 2}
#: Vendors whose collectives run as kernels on the compute cores (NCCL, RCCL).
KERNEL_COLLECTIVES = ("nvidia", "amd")
#: Neither share falls to zero: a compute kernel keeps at least this fraction of the SMs and
#: of the bandwidth (a guard, reached only by many collectives at once).
FLOOR = 0.1


def slowed_times(lowered, device, compute_s: np.ndarray, memory_s: np.ndarray,
                 time_s: np.ndarray, start: np.ndarray, end: np.ndarray,
                 stream: np.ndarray, among: np.ndarray | None = None,
                 sms_held: int | None = None) -> np.ndarray | None:
    """Each op's time with the interference of the collectives overlapping it on the
    schedule (``start``, ``end``); None when nothing overlaps (no collective with bytes).
    ``among``: a mask of the ops whose collectives count (default all); ``sms_held``: the SMs
    each collective holds (default ``collective_sms(device)``)."""
    from simulator.cost.collectives import bytes_moved
    from simulator.graph.lower import COLLECTIVE_FNS
    from simulator.parallel.data import (
        FLAT_COPY,
        NCCL_COPY_IN,
        NCCL_COPY_OUT,
        ZERO_FILL,
    )

    counted = np.ones(len(start), dtype=bool) if among is None else among
    comm = np.flatnonzero((lowered.kind == OpKind.COLLECTIVE) & (stream > 0)
                          & (end > start) & counted)
    # DeepSpeed 2021's copies and fills on a communicator's stream: HBM only, their bytes
    # over their span (their SMs, a copy kernel's grid, are not counted)
    fn = getattr(lowered, "fn", None)
    copying = np.zeros(len(start), dtype=bool) if fn is None else members(
        fn, (FLAT_COPY, NCCL_COPY_IN, NCCL_COPY_OUT, ZERO_FILL))
    copies = np.flatnonzero(copying & (lowered.kind != OpKind.COLLECTIVE) & (stream > 0)
                            & (end > start) & counted)
    if not len(comm) and not len(copies):
        return None
    sms = float(_units(device))
    c = float(collective_sms(device) if sms_held is None else sms_held)
    cores = sms > c and str(device.vendor).lower() in KERNEL_COLLECTIVES
    bandwidth = float(device.memory[-1].bandwidth_bytes_per_s)
    rates = np.empty(len(comm))
    for k, i in enumerate(comm):
        kind = Collective(COLLECTIVE_FNS[int(lowered.collective[i])])
        group = int(lowered.group[i])
        nbytes = float(max(lowered.bytes_read[i], lowered.bytes_written[i]))
        moved = bytes_moved(kind, nbytes, group) if group > 1 else 0.0
        rates[k] = HBM_PASSES[kind] * moved / (end[i] - start[i])
    copied = (lowered.bytes_read[copies] + lowered.bytes_written[copies]).astype(float) / (
        end[copies] - start[copies])
    # piecewise-constant SMs held and HBM bytes/s taken, between the collectives' edges
    edges = np.concatenate([start[comm], end[comm], start[copies], end[copies]])
    held = np.concatenate([np.full(len(comm), c), np.full(len(comm), -c),
                           np.zeros(2 * len(copies))])
    taken = np.concatenate([rates, -rates, copied, -copied])
    order = np.argsort(edges, kind="mergesort")
    times = edges[order]
    held_now = np.cumsum(held[order])[:-1]
    taken_now = np.cumsum(taken[order])[:-1]
    width = np.diff(times)
    if cores:
        free = np.maximum(1.0 - held_now / sms, FLOOR)
        sm_extra = np.concatenate([[0.0], np.cumsum(width * (1.0 / free - 1.0))])
    else:
        sm_extra = np.zeros(len(times))
    free = np.maximum(1.0 - taken_now / bandwidth, FLOOR)
    hbm_extra = np.concatenate([[0.0], np.cumsum(width * (1.0 / free - 1.0))])
    work = (stream == 0) & (lowered.kind != OpKind.COLLECTIVE) & (end > start)
    # the integral over each op's span of (slowdown - 1), by either resource
    sm_span = np.interp(end, times, sm_extra) - np.interp(start, times, sm_extra)
    hbm_span = np.interp(end, times, hbm_extra) - np.interp(start, times, hbm_extra)
    bound = np.maximum(np.maximum(compute_s, memory_s), 1e-30)
    a, b = compute_s / bound, memory_s / bound
    span = end - start
    extra = np.maximum(a * (span + sm_span), b * (span + hbm_span)) - span
    extra = np.where(work, np.maximum(extra, 0.0), 0.0)
    if not extra.any():
        return None
    return time_s + extra


def collective_sms(device) -> int:
    """SMs a collective holds on ``device``: 16 where GPUs talk over NVLink or Infinity
    Fabric, 2 where only PCIe joins them (NVIDIA/nccl #689)."""
    from hardware_specs.spec import LinkKind
    fast = (LinkKind.NVLINK, LinkKind.INFINITY_FABRIC)
    return NCCL_SMS if any(link.kind in fast for link in device.links) else PCIE_SMS


def _units(device) -> int:
    """The device's SMs / CUs (its architecture's ``compute_units``; 0 when not given)."""
    arch = getattr(device, "architecture", None)
    return (getattr(arch, "compute_units", None) or 0) if arch is not None else 0


__all__ = ["HBM_PASSES", "NCCL_SMS", "PCIE_SMS", "collective_sms", "slowed_times"]
