"""A step on many devices: hardware, plan checks, the simulated stages, and the closed forms
that expand micro-batches, stages and replicas without a graph per device.

The engine schedules one micro-batch's forward and backward (then the update) of one pipeline
stage of one tensor-parallel rank of one replica (``run_stage``); every rank of a stage does
the same work and every replica the same, so the rest of the step follows in closed form
(``step_time``): micro-batch after micro-batch (gradient accumulation, or a pipeline's steady
state), the pipeline's fill and drain (the bubble of ``simulator.parallel``, Narayanan et al.
2021 sec. 2.2), and the tail after the last backward (exposed gradient reduction, update).
With pp > 1 the first stage (embedding) and the last (head, loss) are both simulated: the
slower sets the pipeline's pace, the one needing more memory the plan's fit. Stages in
between run the same layers without either, so they are never the slowest nor the fullest.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from hardware_specs.cluster import ClusterSpec, cluster_for, list_clusters, load_cluster
from hardware_specs.loader import load_device
from hardware_specs.spec import DeviceSpec
from simulator.context_parallel import gather_keys_values, widen_attention
from simulator.cost import op_costs
from simulator.data_parallel import (add_data_parallel, add_grad_accumulation,
                                     add_tied_embedding_reduce)
from simulator.engine.kernels import schedule
from simulator.errors import PlanError
from simulator.fusion import fuse_attention, fuse_elementwise
from simulator.graph import OpGraph
from simulator.lower import Lowered, lower
from simulator.op import OpKind, Phase
from simulator.parallel import Axis, ParallelPlan, bubble_over_ideal
from simulator.plan import Attention, Fusion, Plan
from simulator.stages import stage_graph
from simulator.tensor_parallel import check as check_tensor_parallel
from simulator.tensor_parallel import split, wait_for_weight_gradients
from simulator.training import training_graph
from workloads.transformer import Style, TransformerConfig

N_STREAMS = 3  # compute; tensor/pipeline communicator; data-parallel communicator


def resolve_hardware(hardware, num_devices: int | None) -> tuple[DeviceSpec, ClusterSpec | None,
                                                                  int]:
    """``hardware``: a device (name, spec file or ``DeviceSpec``) or a cluster (preset name or
    ``ClusterSpec``). A device with ``num_devices`` > 1 gets ``cluster_for``'s obvious cluster;
    a cluster with another ``num_devices`` is scaled to that many of its nodes."""
    if isinstance(hardware, ClusterSpec) or (isinstance(hardware, str)
                                             and hardware in list_clusters()):
        cluster = hardware if isinstance(hardware, ClusterSpec) else load_cluster(hardware)
        if num_devices is not None and num_devices != cluster.num_devices:
            per_node = cluster.devices_per_node
            if num_devices % per_node:
                raise PlanError(f"num_devices = {num_devices} is not a whole number of "
                                f"{cluster.name} nodes of {per_node} devices")
            cluster = cluster.with_nodes(num_devices // per_node)
        return cluster.device, cluster, cluster.num_devices
    device = hardware if isinstance(hardware, DeviceSpec) else load_device(hardware)
    n = 1 if num_devices is None else num_devices
    return device, (cluster_for(device, n) if n > 1 else None), n


def micro_batches(work, plan: Plan, parallel: ParallelPlan, num_devices: int) -> int:
    """Check ``parallel`` against the workload, batch and devices (PlanError naming the
    numbers); the micro-batches per step of each pipeline."""
    layers, heads, kv, seq = _shape(work)
    if layers is None and (parallel.tp > 1 or parallel.pp > 1):
        raise PlanError(f"tp = {parallel.tp}, pp = {parallel.pp}: tensor and pipeline "
                        f"parallelism split transformer layers and {work.name} is not a "
                        "transformer: use dp (and zero) only")
    if parallel.cp > 1 and getattr(work, "style", None) is Style.VISION:
        raise PlanError(f"cp = {parallel.cp}: context parallelism splits a language model's "
                        f"sequences, and {work.name} is a vision transformer")
    if parallel.sequence_parallel and parallel.tp == 1:
        raise PlanError("sequence parallelism splits the tensor-parallel ranks' tokens: it "
                        "needs tp > 1")
    m = parallel.validate(num_devices, layers or 1, heads or 1, kv, plan.global_batch,
                          plan.micro_batch, seq)
    if layers is not None and parallel.tp > 1:
        check_tensor_parallel(work, parallel.tp)
    return m


def _shape(work):
    if isinstance(work, TransformerConfig):
        return work.layers, work.heads, work.n_kv_heads, work.sequence
    return None, None, None, None


@dataclass
class StageRun:
    """One simulated stage: its forward graph, lowered training step and schedule."""

    stage: int
    forward: OpGraph
    lowered: Lowered
    compute_s: np.ndarray
    memory_s: np.ndarray
    time_s: np.ndarray
    start: np.ndarray
    end: np.ndarray

    @property
    def per_micro(self) -> np.ndarray:
        """Ops of every micro-batch (not the update, not the step's gradient reduction)."""
        return (self.lowered.phase != Phase.OPTIMIZER) & (self.lowered.phase != Phase.COMMUNICATION)

    @property
    def t_micro(self) -> float:
        mask = self.per_micro
        return float(self.end[mask].max()) if mask.any() else 0.0

    @property
    def t_last(self) -> float:
        return float(self.end.max()) if len(self.end) else 0.0


def stage_forward(work, plan: Plan, parallel: ParallelPlan, stage: int,
                  cluster: ClusterSpec | None) -> tuple[OpGraph, OpGraph]:
    """(unsplit forward of a model of one stage's layers, the stage's forward on one rank)."""
    formats = plan.formats
    p = parallel.pp
    chunks = parallel.chunk_layers(work.layers)[stage] if p > 1 else []
    model = replace(work, layers=sum(chunks)) if p > 1 else work
    cp = parallel.cp
    if cp > 1:   # a rank's tokens (simulator.context_parallel)
        model = replace(model, seq_len=work.seq_len // cp)
    forward = model.forward_graph(plan.micro_batch, formats.activation, formats.weight)
    if plan.attention is Attention.FUSED:
        forward = fuse_attention(forward)
    forward = widen_attention(forward, cp)
    ranked = split(forward, parallel.tp, parallel.sequence_parallel)
    per_node = cluster.devices_per_node if cluster else 1
    # Megatron-LM's rank order: tp fastest, then cp, then dp, then pp
    ranked = gather_keys_values(ranked, cp, max(min(cp, per_node // parallel.tp), 1))
    local = 2 if 2 * parallel.tp * parallel.cp * parallel.dp <= per_node else 1
    ranked = stage_graph(ranked, stage == 0, stage == p - 1, parallel.tp,
                         parallel.sequence_parallel, local, chunks)
    return forward, ranked


def run_stage(forward: OpGraph, plan: Plan, parallel: ParallelPlan, device: DeviceSpec,
              cluster: ClusterSpec | None, stage: int = 0) -> StageRun:
    per_node = cluster.devices_per_node if cluster else 1
    return price_stage(build_stage(forward, plan, parallel, per_node), forward, device,
                       cluster, stage)


def build_stage(forward: OpGraph, plan: Plan, parallel: ParallelPlan,
                per_node: int) -> Lowered:
    """The device-independent half of a stage: its lowered training step (sweeps memoize it)."""
    step = training_graph(forward, plan)
    if not parallel.overlap_tp_comm:
        wait_for_weight_gradients(step)
    if plan.fusion is Fusion.COMPILED:
        step = fuse_elementwise(step)
    if not parallel.fused_grad_accumulation:
        add_grad_accumulation(step, plan)
    dp_local = math.gcd(parallel.replicas, max(per_node // parallel.tp, 1))
    step = add_data_parallel(step, plan, parallel.replicas, parallel.zero, dp_local,
                             parallel.overlap_grad_reduce)
    if parallel.pp > 1:   # Megatron-LM's rank order: the first and last stages are pp-1 apart
        ends_local = 2 if parallel.num_devices <= per_node else 1
        step = add_tied_embedding_reduce(step, plan, ends_local)
    return lower(step)


def price_stage(lowered: Lowered, forward: OpGraph, device: DeviceSpec,
                cluster: ClusterSpec | None, stage: int = 0) -> StageRun:
    """Price and schedule a built stage on ``device``."""
    compute_s, memory_s, time_s = op_costs(lowered, device, cluster)
    start, end = schedule(lowered.indptr, lowered.indices, time_s, streams(lowered), N_STREAMS)
    return StageRun(stage, forward, lowered, compute_s, memory_s, time_s, start, end)


def streams(lowered: Lowered) -> np.ndarray:
    """The stream each op runs on: 0 compute; 1 the tensor- and pipeline-parallel
    communicators; 2 the data-parallel one (separate NCCL communicators, each with its own
    stream, as in Megatron-LM and PyTorch DDP). A collective moving no bytes (the identity
    half of Megatron's f) is a no-op in line with the compute."""
    comm = (lowered.kind == OpKind.COLLECTIVE) & (lowered.nbytes > 0)
    data = lowered.axis == int(Axis.DATA)
    return np.where(comm, np.where(data, 2, 1), 0).astype(np.int64)


def step_time(runs: list[StageRun], parallel: ParallelPlan, m: int) -> tuple[float, float, int]:
    """(step seconds, pipeline bubble seconds, index of the run that sets the pace).

    ``(m - 1) t + bubble + t_last``: t the slowest stage's micro-batch (forward + backward),
    bubble = (p-1)/v t for 1F1B and interleaved, (p-1) t for GPipe (Narayanan et al. 2021,
    sec. 2.2: bubble / ideal = (p-1)/(v m)), t_last the last micro-batch with the step's tail
    (the gradient reduction not hidden by the backward, the update), for the stage finishing
    last.
    """
    t = max(run.t_micro for run in runs)
    p, v = parallel.pp, parallel.virtual_stages
    bubble = bubble_over_ideal(p, m, parallel.schedule, v) * m * t if p > 1 else 0.0
    lasts = [run.t_last + (t - run.t_micro) for run in runs]
    pace = int(np.argmax(lasts))
    return (m - 1) * t + bubble + lasts[pace], bubble, pace


def in_flight(parallel: ParallelPlan, m: int, stage: int) -> float:
    """Micro-batches whose activations a stage holds at its peak (1 without a pipeline)."""
    if parallel.pp == 1:
        return 1.0
    from simulator.parallel import in_flight_micro_batches
    return in_flight_micro_batches(parallel.pp, m, stage, parallel.schedule,
                                   parallel.virtual_stages)


def idle_s(run: StageRun, m: int, step: float, bubble: float,
           t: float) -> tuple[float, float]:
    """(seconds in a step the device's compute stream is idle, the part of them spent waiting
    on communication). Besides communication: the pipeline bubble and waiting on a slower stage
    (t is the pacing stage's micro-batch time)."""
    compute = streams(run.lowered) == 0
    waits = (m - 1) * _gaps(run, compute & run.per_micro, run.t_micro) + \
        _gaps(run, compute, run.t_last)
    slower = (m - 1) * (t - run.t_micro) + (t - run.t_micro)
    rest = step - ((m - 1) * t + bubble + run.t_last + (t - run.t_micro))  # slower stage's tail
    return waits + bubble + slower + max(rest, 0.0), waits


def _gaps(run: StageRun, mask: np.ndarray, horizon: float) -> float:
    """Idle time of the ops in ``mask`` (one stream, in order) from 0 to ``horizon``."""
    if not mask.any():
        return horizon
    start, end = run.start[mask], run.end[mask]
    order = np.argsort(start, kind="mergesort")
    start, end = start[order], end[order]
    reach = np.maximum.accumulate(end)
    gaps = np.maximum(start[1:] - reach[:-1], 0.0).sum() if len(start) > 1 else 0.0
    return float(start[0] + gaps + max(horizon - reach[-1], 0.0))


__all__ = ["N_STREAMS", "StageRun", "idle_s", "in_flight", "micro_batches", "resolve_hardware",
           "run_stage", "stage_forward", "step_time", "streams"]
