"""simulate(): the one place where workload, plan and hardware meet (STYLE.md rule 1)."""
from __future__ import annotations

import numpy as np

from hardware_specs.loader import load_device
from hardware_specs.spec import DeviceSpec
from simulator.cost import op_costs
from simulator.energy import op_energy, step_energy
from simulator.engine.kernels import critical_path, liveness, schedule
from simulator.errors import PlanError
from simulator.lower import lower
from simulator.memory import activation_bytes, state_bytes
from simulator.op import TENSOR_KINDS, OpKind, Phase
from simulator.fusion import fuse_attention, fuse_elementwise
from simulator.plan import Attention, Fusion, Plan
from simulator.result import Result
from simulator.training import WGRAD, training_graph
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
N_STREAMS = 2  # compute, and communication (collectives overlap compute where deps allow)


def simulate(workload: str | Workload, hardware: str | DeviceSpec, plan: Plan | None = None,
             *, tokens: float | None = None, steps: float | None = None,
             grid_kg_co2_per_kwh: float = DEFAULT_GRID_KG_CO2_PER_KWH, pue: float = DEFAULT_PUE,
             **plan_fields) -> Result:
    """Predict one training step of ``workload`` on one device of ``hardware``.

    ``plan`` or its fields as keywords (``micro_batch``, ``global_batch``, ``precision``,
    ``recompute``, ``optimizer``). ``tokens`` or ``steps`` add whole-run totals; their energy
    is the devices' energy times ``pue`` (datacentre power usage effectiveness: cooling and
    power delivery; 1.0, the default, counts the devices alone).
    """
    work = get_workload(workload)
    device = hardware if isinstance(hardware, DeviceSpec) else load_device(hardware)
    if plan is None:
        plan = Plan(**plan_fields)
    elif plan_fields:
        raise PlanError("give either plan= or plan fields as keywords, not both")
    formats = plan.formats
    forward = work.forward_graph(plan.micro_batch, formats.activation, formats.weight)
    if plan.attention is Attention.FUSED:
        forward = fuse_attention(forward)
    step = training_graph(forward, plan)
    if plan.fusion is Fusion.COMPILED:
        step = fuse_elementwise(step)
    lowered = lower(step)
    compute_s, memory_s, time_s = op_costs(lowered, device)
    start, end = schedule(lowered.indptr, lowered.indices, time_s, streams(lowered), N_STREAMS)

    step_time = _step_time(lowered, end, plan.micro_batches)
    model_flops, hardware_flops = _flops(lowered, plan.micro_batches)
    memory = _memory(forward, plan, lowered, start, end)
    peak = sum(memory.values())
    energy_j = op_energy(lowered, device, compute_s, memory_s, time_s)
    energy = step_energy(lowered, energy_j, plan.micro_batches)
    path_s, on_path = critical_path(lowered.indptr, lowered.indices, time_s)
    per_sample_tokens = work.tokens_per_sample
    samples_per_s = plan.batch / step_time
    achieved = model_flops / step_time
    dense_peak = device.peak_for(formats.compute)
    result = Result(
        model=getattr(work, "name", str(workload)), device=device.name,
        precision=plan.precision.value, micro_batch=plan.micro_batch, global_batch=plan.batch,
        micro_batches=plan.micro_batches, step_time_s=step_time, samples_per_s=samples_per_s,
        tokens_per_s=samples_per_s * per_sample_tokens if per_sample_tokens else None,
        flops_per_step=model_flops, hardware_flops_per_step=hardware_flops,
        tflops_per_device=achieved / 1e12, mfu=achieved / dense_peak,
        hfu=hardware_flops / step_time / dense_peak,
        peak_memory_bytes=peak, memory_breakdown=memory,
        memory_capacity_bytes=device.memory_bytes, fits=peak <= device.memory_bytes,
        energy_j_per_step=energy, avg_power_w=energy / step_time, params=work.num_params(),
        critical_path_s=float(path_s),
        saved_activation_bytes=float(activation_bytes(forward, plan)), lowered=lowered,
        times={"compute_s": compute_s, "memory_s": memory_s, "time_s": time_s,
               "start_s": start, "end_s": end, "energy_j": energy_j, "critical_path": on_path})
    result.unknown_ops = sorted({op.fn.removeprefix(UNKNOWN) for op in forward.ops()
                                 if op.fn.startswith(UNKNOWN)})
    if result.unknown_ops:
        result.notes.append(f"{len(result.unknown_ops)} operator type(s) hwsim does not know were "
                            f"costed by their tensor traffic only: {', '.join(result.unknown_ops)}")
    if device.matmul_efficiency == 1.0:
        result.notes.append(f"{device.name} has no measured matmul efficiency: tensor ops run at "
                            "the datasheet peak, so step time is an optimistic bound")
    result.totals = _totals(result, device, per_sample_tokens, tokens, steps,
                            grid_kg_co2_per_kwh, pue)
    return result


def streams(lowered) -> np.ndarray:
    """The stream each op runs on: 0 compute, 1 communication (collectives)."""
    return (lowered.kind == OpKind.COLLECTIVE).astype(np.int64)


def _step_time(lowered, end: np.ndarray, micro_batches: int) -> float:
    """Makespan of a step: micro-batches run their forward and backward one after another
    (gradient accumulation), and only the last one is followed by the optimizer update."""
    if len(end) == 0:
        return 0.0
    is_update = lowered.phase == Phase.OPTIMIZER
    micro = float(end[~is_update].max()) if (~is_update).any() else 0.0
    return (micro_batches - 1) * micro + float(end.max())


def _flops(lowered, micro_batches: int) -> tuple[float, float]:
    """Model FLOPs (forward + backward) and hardware FLOPs (+ recomputation) of one step."""
    tensor = np.isin(lowered.kind, [int(k) for k in TENSOR_KINDS])
    flops = np.where(tensor, lowered.flops, 0).astype(np.float64)
    model = flops[(lowered.phase == Phase.FORWARD) | (lowered.phase == Phase.BACKWARD)].sum()
    recomputed = flops[lowered.phase == Phase.RECOMPUTE].sum()
    return float(micro_batches * model), float(micro_batches * (model + recomputed))


def _memory(forward, plan: Plan, lowered, start: np.ndarray, end: np.ndarray) -> dict[str, float]:
    """States for all parameters plus the tensors live at the peak of one micro-batch's step.

    Tensor liveness over the schedule (``kernels.liveness``): an op's output lives from its
    start until the last op reading it ends, the backward ops that read saved tensors
    included, so recomputation shortens lifetimes the way it does in a framework. At the
    peak instant, tensors of forward and recomputed ops are ``activations``; tensors of backward
    ops (activation gradients, transient) are ``workspace``. Weight-gradient ops and the
    optimizer write the persistent buffers already counted in the states.
    """
    out = {k: float(v) for k, v in state_bytes(forward.params(), plan).items()}
    counted = (lowered.phase != Phase.OPTIMIZER) & ~np.array(
        [name.startswith(WGRAD + ":") for name in lowered.names], dtype=np.bool_)
    _, at, out_free, keep_free = liveness(
        lowered.indptr, lowered.indices, lowered.edge_output, start, end,
        lowered.out_bytes, lowered.keep_bytes, counted)
    began = counted & (start <= at)
    live = (np.where(began & (at < out_free), lowered.out_bytes, 0)
            + np.where(began & (at < keep_free), lowered.keep_bytes, 0))
    forward_like = (lowered.phase == Phase.FORWARD) | (lowered.phase == Phase.RECOMPUTE)
    out["activations"] = float(live[forward_like].sum())
    out["workspace"] = float(live[~forward_like].sum())
    return out


def _totals(result: Result, device: DeviceSpec, tokens_per_sample: int | None,
            tokens: float | None, steps: float | None, grid: float,
            pue: float) -> dict[str, float | None]:
    if not pue >= 1.0:
        raise PlanError(f"pue = {pue!r} must be at least 1.0 (1.0: the devices alone)")
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
    price = device.price_per_hour_usd
    return {"steps": steps, "total_time_s": total_s, "device_hours": device_hours,
            "energy_kwh": kwh, "co2_kg": kwh * grid,
            "cost_usd": device_hours * price if price is not None else None,
            "pue": pue, "grid_kg_co2_per_kwh": grid}
