"""The figures a Result reports beyond the schedule: model and hardware FLOPs of the whole
system, communication seconds, and whole-run totals (time, energy, CO2, cost)."""
from __future__ import annotations

import weakref

import numpy as np

from hardware_specs.spec import DeviceSpec
from simulator.errors import PlanError, bounded
from simulator.graph.op import TENSOR_KINDS, OpKind, Phase
from simulator.plan.parallel import ParallelPlan
from simulator.plan.step import Plan
from simulator.report import goodput
from simulator.report.result import Result

# Grid carbon intensity when none is given: U.S. 2022 average, 1,650 Mt CO2 over 4,230,672 GWh
# = 0.39 kg/kWh (U.S. EIA, "How much carbon dioxide is produced per kilowatthour of U.S.
# electricity generation?", FAQ 74, 2022 data).
DEFAULT_GRID_KG_CO2_PER_KWH = 0.39
_J_PER_KWH = 3.6e6
# Power usage effectiveness when none is given: 1.0 counts the devices' own energy only; a
# datacentre's cooling and power delivery multiply it (Uptime Institute, Global Data Center
# Survey 2023: industry average 1.58; Google, 2023 Environmental Report: fleet average 1.10).
DEFAULT_PUE = 1.0
# Owning: a node's parts besides its devices -- CPUs, memory, NICs and transceivers, storage,
# chassis, power supplies -- $32,010 for an 8-GPU DGX H100 (SemiAnalysis's bill of materials,
# "AI Server Cost Analysis", 2023-05: 5,200 + 7,860 + 3,456 + 10,908 + 563 + 875 + 463 + 1,200
# + 1,485, as summed in epoch-research/training-cost-trends, h100_manufacturing_cost.ipynb
# (c98330c), "the SemiAnalysis estimate"). An analyst's bill of materials, not a price: the one
# labelled exception to the rule that owned costs come from list, street or reseller prices
# (docs/devices.md, 'Prices'), kept as the only itemised source found of a server's non-GPU
# parts; graphcore-bow's node_parts_usd takes its host server from the same article.
# A cluster's network beyond the nodes, buildings and staff are not counted.
DEFAULT_NODE_COST_USD = 32_010.0
COSTED_NODE_DEVICES = 8   # the GPUs of the node that figure costs
HOURS_PER_YEAR = 24 * 365.25


def system_flops(run, unsplit, parallel: ParallelPlan, m: int,
                  layers: int | None, plan: Plan | None = None) -> tuple[float, float]:
    """Model and hardware FLOPs of one step of the whole system (all replicas), each op's
    ``counted_fraction``: a causal fused attention core counts half its s x s products, those
    on or below the diagonal (counted whole, as in Narayanan et al. 2021, eq. 3, they made MFU
    exceed 100 % at long contexts, here and in NVIDIA/Megatron-LM issue #831).

    One device runs the whole model: its graph's counts. Split over tp or pp (transformers,
    ``layers`` in all): the forward tensor FLOPs of a layer of the unsplit model (a model of
    one stage's layers, every layer alike) times ``layers``, plus embedding and head, x 3
    (every tensor op of a transformer has a data and a weight gradient, or two data
    gradients: the training graph's own count), plus the recomputed FLOPs of a layer of the
    pacing stage on every rank, for every layer (layers alone recompute). Times the dp x cp
    ranks that split the batch and the sequences (``ParallelPlan.replicas``: a
    context-parallel rank's graph holds 1/cp of every sequence's tokens and attention).
    A fine-tune's (frozen weights: ``plan`` given) backward is not twice its forward: its
    forward and backward are counted from the unsplit model's training graph
    (``_trained_flops``) instead of 3 x the forward.
    """
    model, hardware = _flops(run.lowered, m)
    if parallel.tp == 1 and parallel.pp == 1:
        return model * parallel.replicas, hardware * parallel.replicas
    ops = list(unsplit.ops())
    in_unsplit = 1 + max(op.layer for op in ops)
    counted = [op.model_flops * f for op, f in
               zip(ops, counted_fraction([op.kind for op in ops], [op.causal for op in ops]))]
    per_layer = sum(f for op, f in zip(ops, counted) if op.layer >= 0) / in_unsplit
    outside = sum(f for op, f in zip(ops, counted) if op.layer < 0)
    forward = outside + per_layer * layers
    in_run = parallel.stage_layers(layers)[run.stage] if parallel.pp > 1 else layers
    recomputed = (hardware - model) / in_run * layers * parallel.tp
    model_step = 3.0 * forward * m * parallel.replicas
    if plan is not None and any(op.frozen for op in ops):
        model_step = _trained_flops(unsplit, plan, layers) * m * parallel.replicas
    replicated = _replicated_flops(run.forward) / in_run * layers * parallel.tp * 3.0 * m
    return model_step, model_step + (recomputed + replicated) * parallel.replicas


#: ``_trained_flops``' counts by unsplit graph (the stage cache's, reused by a sweep), then plan.
_TRAINED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _trained_flops(unsplit, plan: Plan, layers: int) -> float:
    """Model FLOPs of one micro-batch's forward and backward of a fine-tune's whole model of
    ``layers`` layers, from the training graph of ``unsplit`` (a model of some of them, every
    layer alike): what lies outside the layers, its first layer (whose input, the embedding's
    output, needs no gradient: autograd skips the data gradients there) and its other layers'
    mean times the rest. Memoized per graph and plan: a sweep's cached graphs count once."""
    memo = _TRAINED.setdefault(unsplit, {})
    if (plan, layers) not in memo:
        memo[(plan, layers)] = _count_trained(unsplit, plan, layers)
    return memo[(plan, layers)]


def _count_trained(unsplit, plan: Plan, layers: int) -> float:
    from simulator.graph.lower import lower
    from simulator.training.backward import training_graph

    low = lower(training_graph(unsplit, plan))
    tensor = np.isin(low.kind, [int(k) for k in TENSOR_KINDS])
    trained = tensor & ((low.phase == Phase.FORWARD) | (low.phase == Phase.BACKWARD))
    flops = np.where(trained, low.flops * counted_fraction(low.kind, low.causal), 0.0)
    held = int(low.layer.max()) + 1
    first = flops[low.layer == 0].sum()
    rest = flops[low.layer > 0].sum() / (held - 1) if held > 1 else first
    return float(flops[low.layer < 0].sum() + first + rest * (layers - 1))


def _replicated_flops(forward) -> float:
    """Forward FLOPs of one rank's layers that other tensor-parallel ranks also run (KV heads
    replicated over g ranks, ``simulator.parallel.tensor``): per rank, the part (1 - 1/g) of
    its replicated weights' GEMMs beyond its share; hardware FLOPs, not model FLOPs."""
    total = 0.0
    for op in forward.ops():
        facts = dict(op.extra)
        if op.layer >= 0 and facts.get("replicas", 1) > 1:
            total += 2.0 * op.m * facts["replicated"] * (1 - 1 / facts["replicas"])
    return total


def communication_s(run, m: int) -> float:
    """Seconds the device's collectives take per step (overlapped with compute or not)."""
    comm = run.lowered.kind == OpKind.COLLECTIVE
    each = run.time_s[comm & run.per_micro].sum()
    return float(m * each + run.time_s[comm & ~run.per_micro].sum())


def counted_fraction(kind, causal) -> np.ndarray:
    """The share of each op's FLOPs that counts in MFU and HFU (ops given by their kinds and
    causal facts): half of a causal fused attention core -- the products on or below the
    diagonal, what a causal model needs and FlashAttention's benchmarks count; its kernel runs
    a little more, the diagonal blocks whole (``simulator.cost.efficiency.executed_fraction``),
    so that MFU <= HFU <= 1 -- and all of every other op (a materialized core runs, and
    counts, the whole s x s product, as Narayanan et al. 2021, eq. 3 counts it)."""
    kind, causal = np.asarray(kind), np.asarray(causal)
    return np.where((kind == int(OpKind.ATTENTION)) & (causal > 0), 0.5, 1.0)


def _flops(lowered, micro_batches: int) -> tuple[float, float]:
    """Model FLOPs (forward + backward) and hardware FLOPs (+ recomputation) of one step
    (tensor ops, ``counted_fraction`` of each)."""
    tensor = np.isin(lowered.kind, [int(k) for k in TENSOR_KINDS])
    flops = np.where(tensor, lowered.flops * counted_fraction(lowered.kind, lowered.causal),
                     0.0)
    model = flops[(lowered.phase == Phase.FORWARD) | (lowered.phase == Phase.BACKWARD)].sum()
    recomputed = flops[lowered.phase == Phase.RECOMPUTE].sum()
    return float(micro_batches * model), float(micro_batches * (model + recomputed))


#: Bounds of a whole run's figures (low, high): tokens and steps far beyond the largest runs
#: (Qwen3: 36e12 tokens; 1e12 steps of a second are 31,700 years), a PUE from 1.0 (the
#: devices alone) to 10, a grid intensity to 10 kg CO2/kWh (coal: about 1), a node's power
#: besides its devices to 10 MW.
RUN_LIMITS = {"tokens": (0.0, 1e16), "steps": (0.0, 1e12), "pue": (1.0, 10.0),
              "grid_kg_co2_per_kwh": (0.0, 10.0), "node_overhead_w": (0.0, 1e7),
              # owning: devices kept up to 100 years, electricity to $10/kWh (retail prices
              # are $0.05-0.40), a node's other parts to $10M
              "own_years": (0.0, 100.0), "electricity_usd_per_kwh": (0.0, 10.0),
              "node_cost_usd": (0.0, 1e7)}


#: What a figure out of its bounds most likely is, said after the bound. Typical PUEs: 1.58,
#: the industry average of the Uptime Institute's Global Data Center Survey 2023; about 1.1,
#: hyperscale fleets (Google's 2023 Environmental Report: 1.10).
RUN_HINTS = {"grid_kg_co2_per_kwh": " (--carbon-intensity is in kg CO2 per kWh: 0.39 for the "
                                    "U.S. grid in 2022; a figure in g/kWh is 1,000 x that)",
             "pue": " (--pue: the facility's power over its IT power, 1.0 to 10: about 1.1 "
                    "hyperscale, 1.6 the industry average)"}


def check_run(**figures) -> None:
    """PlanError naming the first of ``figures`` (``RUN_LIMITS``' names; None: not given) that
    is not a finite number within its bounds (tokens and steps above 0)."""
    for name, value in figures.items():
        if value is not None:
            low, high = RUN_LIMITS[name]
            try:
                bounded(value, name, low, high,
                        low_open=name in ("tokens", "steps", "own_years"))
            except PlanError as err:
                raise PlanError(f"{err}{RUN_HINTS.get(name, '')}") from None
    if (figures.get("own_years") is None) != (figures.get("electricity_usd_per_kwh") is None):
        raise PlanError("the cost of owning needs both own_years and electricity_usd_per_kwh "
                        "(--own-years N --electricity-usd-per-kwh P)")


def run_totals(result: Result, device: DeviceSpec, tokens_per_sample: int | None,
            tokens: float | None, steps: float | None, grid: float,
            pue: float, overhead_w: float = 0.0, own: dict | None = None,
               plan: Plan | None = None) -> dict[str, float | None]:
    """Whole-run totals (figures checked by ``check_run``). ``overhead_w``: the power of
    everything in the nodes besides the devices (all nodes together), drawn over the whole
    run. ``own``: ``own_years``, ``electricity_usd_per_kwh`` and ``nodes_cost_usd`` (all the
    nodes' parts besides the devices) for ``own_cost_usd`` (``own_cost``). ``plan``: its
    run-level fields (checkpoints, evaluations, failures: ``simulator.report.goodput``) make
    ``total_time_s`` the run's expected wall-clock time, ``training_time_s`` its steps' and
    ``goodput`` their ratio; the devices compute through its evaluations and the work failures
    make them run again (``busy_time_s``, at the step's average power, ``avg_power_w``) and
    idle through the rest (checkpoint writes, restarts: their idle power), held and paid for
    all of it."""
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
    run = _run_time(result, plan, steps)
    total_s = run["total_time_s"]
    device_hours = total_s * result.num_devices / 3600
    kwh = steps * result.energy_j_per_step * result.num_devices * pue / _J_PER_KWH
    busy_s = run["busy_time_s"]
    idle_s = total_s - run["training_time_s"] - busy_s
    kwh += ((result.avg_power_w * busy_s + device.idle_power_w * idle_s) * result.num_devices
            * pue / _J_PER_KWH)
    if overhead_w:
        kwh += overhead_w * total_s * pue / _J_PER_KWH
    price = device.price_per_hour_usd
    return {"steps": steps, "total_time_s": total_s, "device_hours": device_hours,
            "energy_kwh": kwh, "co2_kg": kwh * grid,
            "cost_usd": device_hours * price if price is not None else None,
            "pue": pue, "grid_kg_co2_per_kwh": grid, "node_overhead_w": overhead_w,
            **{key: run[key] for key in ("goodput", "training_time_s", "checkpoint_time_s",
                                         "eval_time_s", "failure_time_s",
                                         "young_checkpoint_every") if key in run},
            **({"own_cost_usd": own_cost(device, result.num_devices, total_s, kwh, **own),
                "own_years": own["own_years"],
                "electricity_usd_per_kwh": own["electricity_usd_per_kwh"]}
               if own and own.get("own_years") is not None else {})}


def _run_time(result: Result, plan: Plan | None, steps: float) -> dict[str, float]:
    """``goodput.run_time`` of ``steps`` of ``result`` under ``plan``'s run-level fields: a
    checkpoint's write at the plan's storage bandwidth (``STORAGE_B_PER_S_PER_DEVICE`` x the
    devices when it gives none; optimizer states for the trainable parameters alone), an
    evaluation batch at the step's forward share of its time (``forward_share``), the job's
    failure rate = the devices' rate x their number."""
    if plan is None:
        return goodput.run_time(steps, result.step_time_s)
    bandwidth = (plan.storage_gb_s * 1e9 if plan.storage_gb_s
                 else goodput.STORAGE_B_PER_S_PER_DEVICE * result.num_devices)
    write_s = goodput.checkpoint_bytes(result.params, plan.state_bytes_per_param(),
                                       result.trainable_params) / bandwidth
    forward = forward_share(result)
    failures_per_s = plan.failure_rate * result.num_devices / 3600
    run = goodput.run_time(
        steps, result.step_time_s, checkpoint_every=plan.checkpoint_every,
        checkpoint_s=write_s, eval_every=plan.eval_every,
        eval_s=plan.eval_batches * forward * result.step_time_s,
        failures_per_s=failures_per_s, restart_s=plan.restart_s)
    if failures_per_s > 0 and result.step_time_s > 0:   # the planner's hint: Young's interval
        run["young_checkpoint_every"] = max(1, round(
            goodput.young_interval_s(write_s, failures_per_s) / result.step_time_s))
    return run


def forward_share(result: Result) -> float:
    """The share of a step's FLOPs its forward ops run: its (pacing stage's) lowered graph's
    forward-phase FLOPs over all its ops' (model FLOPs / 3 over hardware FLOPs without one).
    A full training step's is about 1/3; a LoRA step's more (its backward computes no frozen
    weight's gradient)."""
    lowered = result.lowered
    if lowered is not None and lowered.flops.sum() > 0:
        return float(lowered.flops[lowered.phase == Phase.FORWARD].sum() / lowered.flops.sum())
    return (result.flops_per_step / 3 / result.hardware_flops_per_step
            if result.hardware_flops_per_step > 0 else 1 / 3)


def own_cost(device: DeviceSpec, devices: int, total_s: float, kwh: float, own_years: float,
             electricity_usd_per_kwh: float, nodes_cost_usd: float) -> float | None:
    """What a run costs its owner: the devices' purchase and the nodes' other parts
    (``nodes_cost_usd``, all nodes) amortised over ``own_years`` (straight-line), the run
    paying the share of those years it takes, plus its energy (``kwh``, with the PUE and the
    nodes' power) at ``electricity_usd_per_kwh``. None when the device has no purchase price.
    A device whose purchase price is a whole computer (``DeviceSpec.purchase_is_system``: a Mac
    Studio) has no node parts besides it: ``nodes_cost_usd`` is not added; one whose price
    holds all of a server but its host (``DeviceSpec.node_parts_usd``: Graphcore's Bow, a host
    server's share) adds ``devices`` x that in its place. Not counted: the
    cluster's network beyond the nodes, buildings, staff, financing, idle time between runs
    (the run pays its own hours only)."""
    if device.purchase_usd is None:
        return None
    share = total_s / 3600 / (own_years * HOURS_PER_YEAR)
    nodes = (0.0 if device.purchase_is_system
             else devices * device.node_parts_usd if device.node_parts_usd is not None
             else nodes_cost_usd)
    return share * (devices * device.purchase_usd + nodes) + kwh * electricity_usd_per_kwh


__all__ = ["COSTED_NODE_DEVICES", "DEFAULT_GRID_KG_CO2_PER_KWH", "DEFAULT_NODE_COST_USD",
           "DEFAULT_PUE", "RUN_LIMITS", "check_run", "communication_s", "counted_fraction",
           "forward_share", "own_cost", "run_totals", "system_flops"]
