"""simulate(): the one place where workload, plan and hardware meet (STYLE.md rule 1)."""
from __future__ import annotations

import numpy as np

from hardware_specs.cluster import ClusterSpec, list_clusters
from hardware_specs.spec import DeviceSpec
from simulator.distributed import idle_s, in_flight, micro_batches, resolve_hardware, \
    run_stage, stage_forward, step_time
from simulator.energy import op_energy, step_energy
from simulator.engine.kernels import critical_path, liveness
from simulator.errors import PlanError
from simulator.memory import activation_bytes
from simulator.op import TENSOR_KINDS, OpKind, Phase
from simulator.parallel import ParallelPlan, zero_state_bytes
from simulator.plan import Plan
from simulator.result import Result
from simulator.training import WGRAD
from workloads.base import Workload
from workloads.zoo import get_workload

# Grid carbon intensity when none is given: U.S. 2022 average, 1,650 Mt CO2 over 4,230,672 GWh
# = 0.39 kg/kWh (U.S. EIA, "How much carbon dioxide is produced per kilowatthour of U.S.
# electricity generation?", FAQ 74, 2022 data).
DEFAULT_GRID_KG_CO2_PER_KWH = 0.39
_J_PER_KWH = 3.6e6
# Power usage effectiveness when none is given: 1.0 counts the devices' own energy only; a
# datacentre's cooling and power delivery multiply it (Uptime Institute, Global Data Center
# Survey 2023: industry average 1.58; Google, 2023 Environmental Report: fleet average 1.10).
DEFAULT_PUE = 1.0
UNKNOWN = "unknown:"  # an imported op's fn when hwsim does not know the operator


def simulate(workload: str | Workload, hardware: str | DeviceSpec | ClusterSpec,
             plan: Plan | None = None, *, parallel: ParallelPlan | None = None,
             num_devices: int | None = None, tokens: float | None = None,
             steps: float | None = None,
             grid_kg_co2_per_kwh: float = DEFAULT_GRID_KG_CO2_PER_KWH, pue: float = DEFAULT_PUE,
             node_overhead_w: float = 0.0, **plan_fields) -> Result:
    """Predict one training step of ``workload`` on ``hardware``, one device or many.

    ``hardware``: a device (catalogue name, spec file or ``DeviceSpec``), with ``num_devices``
    for many of it (``cluster_for`` builds the obvious cluster: 8 GPUs per node on their
    NVLink, nodes on InfiniBand; TPU slices on their ICI torus), or a cluster (preset name or
    ``ClusterSpec``). ``plan`` or its fields as keywords (``micro_batch``, ``global_batch``,
    ``precision``, ``recompute``, ``optimizer``, ...); ``global_batch`` is the whole system's.
    ``parallel``: how the step is split (``ParallelPlan``: dp, tp, pp, sequence parallel,
    pipeline schedule, ZeRO stage); by default pure data parallelism over all devices. A plan
    that cannot run raises ``PlanError`` naming the numbers. ``tokens`` or ``steps`` add
    whole-run totals; their energy is the devices' energy plus ``node_overhead_w`` per node
    (host CPUs, NICs, switches, fans), times ``pue`` (datacentre power usage effectiveness:
    cooling and power delivery; 1.0, the default, counts the devices alone).

    Per-device figures (memory, power, ``tflops_per_device``, MFU, HFU) are those of the
    busiest device; ``samples_per_s`` and ``tokens_per_s`` are the whole system's.
    """
    work = get_workload(workload)
    if plan is None:
        plan = Plan(**plan_fields)
    elif plan_fields:
        raise PlanError("give either plan= or plan fields as keywords, not both")
    if parallel is not None and num_devices is None and not _is_cluster(hardware):
        num_devices = parallel.num_devices
    device, cluster, n = resolve_hardware(hardware, num_devices)
    parallel = parallel or ParallelPlan(dp=n)
    m = micro_batches(work, plan, parallel, n)
    runs, unsplit = [], None
    stages = {0, parallel.pp - 1}          # the first (embedding) and last (head) stages
    if parallel.uneven and parallel.pp > 2:
        stages.add(1)                      # and a middle one when it runs other layers
    for stage in sorted(stages):
        unsplit, forward = stage_forward(work, plan, parallel, stage, cluster)
        runs.append(run_stage(forward, plan, parallel, device, cluster, stage))
    step_s, bubble, pace = step_time(runs, parallel, m)
    run = runs[pace]
    lowered = run.lowered
    memories = [_memory(r, plan, parallel, m) for r in runs]
    memory = max(memories, key=lambda mem: sum(mem.values()))
    peak = sum(memory.values())
    model_flops, hardware_flops = _system_flops(run, unsplit, parallel, m,
                                                getattr(work, "layers", None))
    energy_j = op_energy(lowered, device, run.compute_s, run.memory_s, run.time_s)
    comm = lowered.kind == OpKind.COLLECTIVE
    if comm.any():  # static power is counted once, over the step, not per stream
        energy_j = np.where(comm, np.maximum(energy_j - device.idle_power_w * run.time_s, 0.0),
                            energy_j)
    waiting, exposed = idle_s(run, m, step_s, bubble, max(r.t_micro for r in runs))
    energy = step_energy(lowered, energy_j, m) + device.idle_power_w * waiting
    path_s, on_path = critical_path(lowered.indptr, lowered.indices, run.time_s)
    per_sample_tokens = work.tokens_per_sample
    global_batch = plan.micro_batch * m * parallel.dp
    samples_per_s = global_batch / step_s
    achieved = model_flops / n / step_s
    dense_peak = device.peak_for(plan.formats.compute)
    comm_s = _communication_s(run, m)
    result = Result(
        model=getattr(work, "name", str(workload)), device=device.name,
        precision=plan.precision.value, micro_batch=plan.micro_batch, global_batch=global_batch,
        micro_batches=m, step_time_s=step_s, samples_per_s=samples_per_s,
        tokens_per_s=samples_per_s * per_sample_tokens if per_sample_tokens else None,
        flops_per_step=model_flops, hardware_flops_per_step=hardware_flops,
        tflops_per_device=achieved / 1e12, mfu=achieved / dense_peak,
        hfu=hardware_flops / n / step_s / dense_peak,
        peak_memory_bytes=peak, memory_breakdown=memory,
        memory_capacity_bytes=device.memory_bytes, fits=peak <= device.memory_bytes,
        energy_j_per_step=energy, avg_power_w=energy / step_s, params=work.num_params(),
        num_devices=n, critical_path_s=float(path_s),
        saved_activation_bytes=float(activation_bytes(run.forward, plan)), lowered=lowered,
        times={"compute_s": run.compute_s, "memory_s": run.memory_s, "time_s": run.time_s,
               "start_s": run.start, "end_s": run.end, "energy_j": energy_j,
               "critical_path": on_path},
        device_spec=device)
    result.parallel = {"dp": parallel.dp, "tp": parallel.tp, "pp": parallel.pp,
                       "cp": parallel.cp,
                       "zero": parallel.zero,
                       "sequence_parallel": parallel.sequence_parallel,
                       "schedule": parallel.schedule.value,
                       "virtual_stages": parallel.virtual_stages,
                       "overlap_grad_reduce": parallel.overlap_grad_reduce,
                       "overlap_tp_comm": parallel.overlap_tp_comm,
                       "fused_grad_accumulation": parallel.fused_grad_accumulation,
                       "stage_layers": (parallel.stage_layers(work.layers)
                                        if parallel.pp > 1 else None),
                       "cluster": cluster.name if cluster else None,
                       "params_per_device": int(max(r.forward.params() for r in runs)),
                       "micro_batch_s": max(r.t_micro for r in runs),
                       "bubble_fraction": bubble / step_s,
                       "communication_s": comm_s,
                       "exposed_communication_s": exposed}
    result.unknown_ops = sorted({op.fn.removeprefix(UNKNOWN) for op in run.forward.ops()
                                 if op.fn.startswith(UNKNOWN)})
    if result.unknown_ops:
        result.notes.append(f"{len(result.unknown_ops)} operator type(s) hwsim does not know were "
                            f"costed by their tensor traffic only: {', '.join(result.unknown_ops)}")
    if device.matmul_efficiency == 1.0:
        result.notes.append(f"{device.name} has no measured matmul efficiency: tensor ops run at "
                            "the datasheet peak, so step time is an optimistic bound")
    elif device.vector_efficiency == 1.0 and not device.function_efficiency:
        result.notes.append(f"{device.name} has a measured matmul efficiency but no calibration "
                            "of its other ops: they run at the datasheet rates, so step time is "
                            "an optimistic bound (hwsim calibrate measures them)")
    nodes = cluster.nodes if cluster else 1
    result.totals = _totals(result, device, per_sample_tokens, tokens, steps,
                            grid_kg_co2_per_kwh, pue, node_overhead_w * nodes)
    return result


def _is_cluster(hardware) -> bool:
    return isinstance(hardware, ClusterSpec) or (isinstance(hardware, str)
                                                 and hardware in list_clusters())


def _system_flops(run, unsplit, parallel: ParallelPlan, m: int,
                  layers: int | None) -> tuple[float, float]:
    """Model and hardware FLOPs of one step of the whole system (all replicas).

    One device runs the whole model: its graph's counts. Split over tp or pp (transformers,
    ``layers`` in all): the forward tensor FLOPs of a layer of the unsplit model (a model of
    one stage's layers, every layer alike) times ``layers``, plus embedding and head, x 3
    (every tensor op of a transformer has a data and a weight gradient, or two data
    gradients: the training graph's own count), plus the recomputed FLOPs of a layer of the
    pacing stage on every rank, for every layer (layers alone recompute). Times the dp x cp
    ranks that split the batch and the sequences (``ParallelPlan.replicas``: a
    context-parallel rank's graph holds 1/cp of every sequence's tokens and attention).
    """
    model, hardware = _flops(run.lowered, m)
    if parallel.tp == 1 and parallel.pp == 1:
        return model * parallel.replicas, hardware * parallel.replicas
    in_unsplit = 1 + max(op.layer for op in unsplit.ops())
    per_layer = sum(op.model_flops for op in unsplit.ops() if op.layer >= 0) / in_unsplit
    outside = sum(op.model_flops for op in unsplit.ops() if op.layer < 0)
    forward = outside + per_layer * layers
    in_run = parallel.stage_layers(layers)[run.stage] if parallel.pp > 1 else layers
    recomputed = (hardware - model) / in_run * layers * parallel.tp
    model_step = 3.0 * forward * m * parallel.replicas
    return model_step, model_step + recomputed * parallel.replicas


def _communication_s(run, m: int) -> float:
    """Seconds the device's collectives take per step (overlapped with compute or not)."""
    comm = run.lowered.kind == OpKind.COLLECTIVE
    each = run.time_s[comm & run.per_micro].sum()
    return float(m * each + run.time_s[comm & ~run.per_micro].sum())


def _flops(lowered, micro_batches: int) -> tuple[float, float]:
    """Model FLOPs (forward + backward) and hardware FLOPs (+ recomputation) of one step."""
    tensor = np.isin(lowered.kind, [int(k) for k in TENSOR_KINDS])
    flops = np.where(tensor, lowered.flops, 0).astype(np.float64)
    model = flops[(lowered.phase == Phase.FORWARD) | (lowered.phase == Phase.BACKWARD)].sum()
    recomputed = flops[lowered.phase == Phase.RECOMPUTE].sum()
    return float(micro_batches * model), float(micro_batches * (model + recomputed))


def _memory(run, plan: Plan, parallel: ParallelPlan, m: int) -> dict[str, float]:
    """Per-device states under ZeRO plus the tensors live at the peak of the stage's step.

    States: ``parallel.zero_state_bytes`` of the parameters on this device (its stage's, on
    its tensor-parallel rank) over the dp replicas. Activations: tensor liveness over the
    schedule of one micro-batch (``kernels.liveness``): an op's output lives from its start
    until the last op reading it ends, the backward ops that read saved tensors included, so
    recomputation shortens lifetimes the way it does in a framework. At the peak instant,
    tensors of forward and recomputed ops are ``activations``; tensors of backward ops
    (activation gradients, transient) are ``workspace``. Weight-gradient ops, the optimizer
    and the collectives write the persistent buffers already counted in the states. A
    pipeline stage holding k micro-batches in flight (``parallel.in_flight_micro_batches``)
    adds k - 1 micro-batches' saved activations (each as kept at the end of its forward; an
    approximation: they are freed as their backward runs). ZeRO-3 adds the gathered weights
    of two layers (in use and prefetched) to the workspace.
    """
    lowered, forward = run.lowered, run.forward
    per = plan.state_bytes_per_param()
    out = zero_state_bytes(forward.params(), parallel.zero, parallel.replicas,
                           k=per["optimizer_states"], weight_bytes=per["weights"],
                           grad_bytes=per["gradients"])
    counted, at, out_free, keep_free = live_tensors(lowered, run.start, run.end)
    began = counted & (run.start <= at)
    live = (np.where(began & (at < out_free), lowered.out_bytes, 0)
            + np.where(began & (at < keep_free), lowered.keep_bytes, 0))
    forward_like = (lowered.phase == Phase.FORWARD) | (lowered.phase == Phase.RECOMPUTE)
    out["activations"] = float(live[forward_like].sum())
    out["workspace"] = float(live[~forward_like].sum())
    held = in_flight(parallel, m, run.stage)
    if held > 1:
        out["activations"] += (held - 1) * float(activation_bytes(forward, plan))
    if parallel.zero == 3 and parallel.replicas > 1:
        layers: dict[int, int] = {}
        for op in forward.ops():
            layers[op.layer] = layers.get(op.layer, 0) + op.params
        out["workspace"] += 2.0 * max(layers.values(), default=0) * per["weights"]
    return out


def live_tensors(lowered, start: np.ndarray, end: np.ndarray):
    """``(counted, peak_time, out_free, keep_free)`` of one schedule (``kernels.liveness``):
    which ops hold memory of their own (not weight-gradient ops, the optimizer, whose bytes
    are the persistent states) and when their outputs and kept bytes are freed."""
    counted = (lowered.phase != Phase.OPTIMIZER) & ~np.array(
        [name.startswith(WGRAD + ":") for name in lowered.names], dtype=np.bool_)
    _, at, out_free, keep_free = liveness(
        lowered.indptr, lowered.indices, lowered.edge_output, start, end,
        lowered.out_bytes, lowered.keep_bytes, counted)
    return counted, at, out_free, keep_free


def _totals(result: Result, device: DeviceSpec, tokens_per_sample: int | None,
            tokens: float | None, steps: float | None, grid: float,
            pue: float, overhead_w: float = 0.0) -> dict[str, float | None]:
    """Whole-run totals. ``overhead_w``: the power of everything in the nodes besides the
    devices (all nodes together), drawn over the whole run."""
    if not pue >= 1.0:
        raise PlanError(f"pue = {pue!r} must be at least 1.0 (1.0: the devices alone)")
    if not overhead_w >= 0.0:
        raise PlanError(f"node_overhead_w = {overhead_w!r} must be non-negative")
    if not grid >= 0.0:
        raise PlanError(f"grid_kg_co2_per_kwh = {grid!r} must be non-negative")
    if tokens is None and steps is None:
        return {}
    if tokens is not None and steps is not None:
        raise PlanError("give --tokens or --steps, not both")
    if tokens is not None:
        if not tokens_per_sample:
            raise PlanError(f"--tokens needs a language model; {result.model} has no tokens: "
                            "use --steps")
        steps = tokens / (result.global_batch * tokens_per_sample)
    if steps is None or steps <= 0:
        raise PlanError(f"steps/tokens = {steps!r} must be positive")
    total_s = steps * result.step_time_s
    device_hours = total_s * result.num_devices / 3600
    kwh = steps * result.energy_j_per_step * result.num_devices * pue / _J_PER_KWH
    if overhead_w:
        kwh += overhead_w * total_s * pue / _J_PER_KWH
    price = device.price_per_hour_usd
    return {"steps": steps, "total_time_s": total_s, "device_hours": device_hours,
            "energy_kwh": kwh, "co2_kg": kwh * grid,
            "cost_usd": device_hours * price if price is not None else None,
            "pue": pue, "grid_kg_co2_per_kwh": grid, "node_overhead_w": overhead_w}
