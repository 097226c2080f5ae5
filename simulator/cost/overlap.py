"""Tensor-parallel communication overlapped with its GEMM (Megatron-Core ``tp_comm_overlap``,
TransformerEngine's userbuffers).

Under sequence parallelism a column-parallel linear all-gathers its input before its GEMM and
a row-parallel one reduce-scatters its output after it (``simulator.parallel.tensor``). With
``ParallelPlan.tp_comm_overlap`` TransformerEngine splits each such collective and its GEMM
into chunks and runs them as a two-stage pipeline on two streams, with the defaults of
``initialize_ub`` (transformer_engine/pytorch/module/base.py, ``get_default_config``, at
NVIDIA/TransformerEngine d0067d0da):

Each chunk is a GEMM of its own over 1/splits of the tokens (m / splits rows): on a GPU its
tile and wave quantisation (``simulator.cost.efficiency.gpu_tiles``) is the chunk's, so the
chunked GEMM's compute time is the whole GEMM's times eff(m) / eff(m / splits).

- "ring_exchange" for the all-gathers before qkv_fprop, fc1_fprop and (of the output
  gradient) proj_dgrad, fc2_dgrad: ``num_splits`` = tp; ``use_ce`` True (the copy engines
  move the chunks), ``num_sm`` 1, no SM margin. The GEMM starts on the local chunk while the
  next arrives: with G the GEMM's time and C the all-gather's,
  T = max(G, G / tp + C) (each of tp - 1 steps lasts max(G / tp, C / (tp - 1)));
- "pipeline" for the reduce-scatters after proj_fprop and fc2_fprop: ``num_splits`` 4,
  ``num_sm`` 16, ``set_sm_margin`` True (the GEMM runs on the SMs less 16 throughout); chunk
  i's reduce-scatter follows chunk i's GEMM: T = max(G + C / 4, G / 4 + C);
- "bulk" for the re-gather of a column-parallel linear's input for its weight gradient and the
  reduce-scatter of its input gradient (qkv_dgrad, qkv_wgrad, fc1_dgrad, fc1_wgrad): each
  beside another GEMM of the backward, whole. Not re-priced here: the schedule runs those
  beside the GEMM already (``ParallelPlan.overlap_tp_comm``, the regather is independent of
  the dgrad), with NCCL's interference (16 SMs, as bulk's ``num_sm``).

The exposed part T - G is the collective's time on its stream, in series between the GEMM
and its neighbour as before; the GEMM's time grows by what the chunked collective takes from
it (``simulator.cost.interference``'s model, over the overlapped time min(C, G): SMs held,
HBM bytes streamed, ``HBM_PASSES`` per byte moved, 2 for a copy-engine gather, 3 for a
reduction). The collectives so priced are returned in a mask, so that
``simulator.schedule.stage.interfere`` does not count their interference a second time.

Paired by the lowered graph alone: an all-gather of the tensor axis (not a regather) with
the GEMMs reading it that are not weight gradients; a reduce-scatter of the forward (or its
recomputation) with the GEMM it reduces. Mixture-of-experts GEMMs (``Lowered.load`` > 0)
are not paired: userbuffers cover qkv, proj, fc1 and fc2 only, and only the transformer
layers' collectives are marked (``use_userbuffers``: the LM head and the embedding are not
TransformerEngine modules). Devices without TransformerEngine are refused (``check``).
``--no-comm-interference`` drops the chunks' contention, not the SM margin.

Configuration: TransformerEngine's defaults throughout, not the userbuffers configurations
NeMo passes (nemo/collections/llm/recipes/tp_overlap_configs/userbuffers.py at NVIDIA/NeMo
8cfedd7: other SM counts, and ring exchange for the reduce-scatters in most of its fp8 and B200
ones); docs/model.md lists the differences. Not modelled: each chunk's
own kernel launch, the all-reduce of tensor parallelism without sequence
parallelism (Megatron-LM asserts sequence parallelism with --tp-comm-overlap,
megatron/training/arguments.py at d98e8a64dd), fp8 userbuffers' casts, atomic GEMMs.
"""
from __future__ import annotations

import numpy as np

from simulator.graph.collective import Axis, Collective
from simulator.graph.op import OpKind, Phase, Task

#: TransformerEngine's default userbuffers configuration (``get_default_config`` in
#: transformer_engine/pytorch/module/base.py, NVIDIA/TransformerEngine d0067d0da): splits,
#: SMs held by the communication kernels, whether the GEMM leaves them out throughout.
RING_SMS = 1          # "num_sm": 1 if method == "ring_exchange"; "use_ce": True
PIPELINE_SMS = 16     # "num_sm": ... else 16; "set_sm_margin": not ring_exchange
PIPELINE_SPLITS = 4   # "num_splits": tp_size if method == "ring_exchange" else 4


#: Vendors whose GPUs run TransformerEngine's userbuffers: NVIDIA's (CUDA) and AMD's
#: (TransformerEngine's ROCm port, ROCm/TransformerEngine
#: transformer_engine/common/comm_gemm_overlap/rocm_comm_gemm_overlap.cpp, merged with its
#: pull request #367 "Userbuffer epic", 2026). Other devices (TPUs, Gaudi, Trainium, CPUs)
#: have no TransformerEngine.
USERBUFFER_VENDORS = ("nvidia", "amd")


def check(device) -> None:
    """PlanError (one line) when ``device`` has no TransformerEngine userbuffers to run the
    tensor-parallel overlap (``ParallelPlan.tp_comm_overlap``) on."""
    from hardware_specs.spec import DeviceClass
    from simulator.errors import PlanError

    if device.device_class is not DeviceClass.GPU or \
            str(device.vendor).lower() not in USERBUFFER_VENDORS:
        raise PlanError(f"tp_comm_overlap = true on {device.name} ({device.vendor}): "
                        "TransformerEngine's userbuffers run on NVIDIA and AMD GPUs only; "
                        "drop --tp-comm-overlap")


def pipelined_s(gemm_s: float, comm_s: float, first: float, last: float) -> float:
    """Seconds of a GEMM and a collective split into chunks run as a two-stage pipeline:
    max(G + last C, first G + C), ``first`` the share of the GEMM before the collective can
    start (or after it has ended), ``last`` the share of the collective after the GEMM has
    ended. Ring all-gather: first 1/tp, last 0; pipelined reduce-scatter: 1/4 and 1/4."""
    return max(gemm_s + last * comm_s, first * gemm_s + comm_s)


def overlapped(lowered, device, compute_s: np.ndarray, memory_s: np.ndarray,
               time_s: np.ndarray, interference: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(each op's seconds with the tensor-parallel all-gathers and reduce-scatters marked for
    userbuffers (``Lowered.userbuffers``, ``simulator.parallel.tensor.use_userbuffers``)
    overlapped with their GEMMs, the mask of the collectives so priced); a PlanError on a
    device without TransformerEngine's userbuffers (``check``). ``interference`` False
    (``ParallelPlan.comm_interference``): the chunks take no HBM bandwidth from the GEMM,
    nor the ring's SM while it runs; the SMs the pipelined reduce-scatters leave out of it
    throughout (``set_sm_margin``, a launch setting of the GEMM, not contention) still count."""
    from simulator.cost.collectives import bytes_moved
    from simulator.cost.interference import (
        FLOOR,
        HBM_PASSES,
        KERNEL_COLLECTIVES,
        _units,
    )
    from simulator.graph.lower import COLLECTIVE_FNS

    check(device)   # PlanError where TransformerEngine cannot run
    n = len(lowered)
    time_s = time_s.copy()
    hidden = np.zeros(n, dtype=bool)
    gather, scatter = (COLLECTIVE_FNS.index(kind.value)
                       for kind in (Collective.ALL_GATHER, Collective.REDUCE_SCATTER))
    tensor = (lowered.kind == OpKind.COLLECTIVE) & (lowered.axis == int(Axis.TENSOR)) & (
        lowered.group > 1) & (lowered.nbytes > 0) & (time_s > 0) & (lowered.userbuffers > 0)
    gemm = (lowered.kind == OpKind.MATMUL) & (lowered.load == 0)
    readers = np.repeat(np.arange(n), np.diff(lowered.indptr))   # each edge's reader
    units = float(_units(device))
    cores = units > PIPELINE_SMS and str(device.vendor).lower() in KERNEL_COLLECTIVES
    bandwidth = float(device.memory[-1].bandwidth_bytes_per_s)
    for i in np.flatnonzero(tensor):
        group = int(lowered.group[i])
        if lowered.collective[i] == gather and lowered.task[i] != Task.REGATHER:
            partners = readers[lowered.indices == i]
            partners = partners[gemm[partners] & (lowered.task[partners] != Task.WEIGHT_GRAD)]
            first, last, sms, margin = 1.0 / group, 0.0, RING_SMS, False
            kind = Collective.ALL_GATHER
            splits = group
        elif lowered.collective[i] == scatter and lowered.phase[i] in (Phase.FORWARD,
                                                                      Phase.RECOMPUTE):
            partners = lowered.preds(i)
            partners = partners[gemm[partners]]
            first = last = 1.0 / PIPELINE_SPLITS
            sms, margin = PIPELINE_SMS, True
            kind = Collective.REDUCE_SCATTER
            splits = PIPELINE_SPLITS
        else:
            continue
        if not len(partners):
            continue
        comm = float(time_s[i])
        nbytes = float(max(lowered.bytes_read[i], lowered.bytes_written[i]))
        rate = HBM_PASSES[kind] * bytes_moved(kind, nbytes, group) / comm
        free_hbm = max(1.0 - rate / bandwidth, FLOOR) if interference else 1.0
        sm_slow = units / (units - sms) - 1.0 if cores else 0.0
        if not interference and not margin:
            sm_slow = 0.0   # the ring's SM is held only while it runs: contention
        total = float(time_s[partners].sum())
        for j in partners:
            # the chunks' GEMMs: the compute time at the chunk's tile efficiency
            chunked = float(compute_s[j]) * chunk_slowdown(lowered, device, j, splits)
            span = float(time_s[j]) + max(chunked, float(memory_s[j])) - max(
                float(compute_s[j]), float(memory_s[j]))
            o = min(comm, total) * span / total   # its share of the overlapped time
            bound = max(chunked, float(memory_s[j]), 1e-30)
            a, b = chunked / bound, memory_s[j] / bound
            sm_extra = (span if margin else o) * sm_slow
            hbm_extra = o * (1.0 / free_hbm - 1.0)
            time_s[j] = max(a * (span + sm_extra), b * (span + hbm_extra), span)
        gemm_s = float(time_s[partners].sum())
        time_s[i] = pipelined_s(gemm_s, comm, first, last) - gemm_s
        hidden[i] = True
    return time_s, hidden


def chunk_slowdown(lowered, device, j: int, splits: int) -> float:
    """How much longer op ``j``'s compute takes as ``splits`` GEMMs of m / splits rows each:
    eff(m) / eff(ceil(m / splits)) under ``simulator.cost.efficiency.gpu_tiles`` (with the
    spec's fixed cost per tile, scaled by the format's rate as ``shape_efficiency`` does); 1
    on devices without a GPU tile model."""
    from hardware_specs.spec import DeviceClass
    from simulator.cost.efficiency import gpu_tiles
    from simulator.graph.op import DType

    arch = device.architecture
    if device.device_class is not DeviceClass.GPU or not (arch.matrix_tile
                                                          and arch.compute_units):
        return 1.0
    fixed = float(arch.tile_fixed_k or 0)
    if fixed:
        rate16 = max(device.peak_for(DType.FP16), device.peak_for(DType.BF16))
        fixed *= device.peak_for(DType(int(lowered.dtype[j]))) / rate16
    m, n, k, batch = (int(a[j]) for a in (lowered.m, lowered.n, lowered.k, lowered.batch))
    whole = float(gpu_tiles(m, n, k, batch, arch.matrix_tile, arch.compute_units, fixed))
    chunk = float(gpu_tiles(-(-m // splits), n, k, batch, arch.matrix_tile,
                            arch.compute_units, fixed))
    return whole / chunk if chunk > 0 else 1.0


__all__ = ["PIPELINE_SMS", "PIPELINE_SPLITS", "RING_SMS", "USERBUFFER_VENDORS", "check",
           "chunk_slowdown", "overlapped", "pipelined_s"]
