"""simulate(): the one place where workload, plan and hardware meet (STYLE.md rule 1).

Resolve the inputs, build each simulated pipeline stage's rank graph
(``simulator.parallel.rank``), price and schedule it (``simulator.schedule``), expand it to the
step in closed form, and report (``simulator.report``).
"""
from __future__ import annotations

from dataclasses import replace

from hardware_specs.cluster import ClusterSpec, cluster_for, list_clusters, load_cluster
from hardware_specs.loader import ALIASES, list_devices, load_device
from hardware_specs.spec import DeviceClass, DeviceSpec
from simulator.cost import attention, host, precision, status
from simulator.cost.power import check_limit
from simulator.errors import PlanError, SpecError, WorkloadError, did_you_mean, shown
from simulator.graph.lower import Lowered
from simulator.graph.op import UNKNOWN, Phase
from simulator.graph.opgraph import OpGraph
from simulator.parallel.data import whole_model_note
from simulator.parallel.expert import figures as expert_figures
from simulator.parallel.pipeline import p2p_note
from simulator.parallel.rank import build_stage, micro_batches, stage_forward, stand_ins
from simulator.plan.fields import PARALLEL, PLAN, echo
from simulator.plan.parallel import ParallelPlan, Schedule, data_parallel_size, positive
from simulator.plan.step import Attention, Finetune, Optimizer, Plan, Projections
from simulator.report.depth import extrapolate
from simulator.report.figures import (
    COSTED_NODE_DEVICES,
    DEFAULT_GRID_KG_CO2_PER_KWH,
    DEFAULT_NODE_COST_USD,
    DEFAULT_PUE,
    check_run,
    communication_s,
    run_totals,
    system_flops,
)
from simulator.report.result import Result
from simulator.schedule import variability
from simulator.schedule.ahead import paid_once
from simulator.schedule.memory import stage_memory
from simulator.schedule.stage import StageRun, interfere, price_stage
from simulator.schedule.step import device_energy, pipeline_energy, step_time
from simulator.schedule.streamed import stream
from simulator.training import bias, convnorm, finetune
from simulator.training.saved import activation_bytes
from workloads.base import Workload
from workloads.zoo import get_workload


def simulate(workload: str | Workload, hardware: str | DeviceSpec | ClusterSpec,
             plan: Plan | None = None, *, parallel: ParallelPlan | None = None,
             num_devices: int | None = None, tokens: float | None = None,
             steps: float | None = None,
             grid_kg_co2_per_kwh: float = DEFAULT_GRID_KG_CO2_PER_KWH, pue: float = DEFAULT_PUE,
             node_overhead_w: float | None = None, cache: StageBuilder | None = None,
             own_years: float | None = None, electricity_usd_per_kwh: float | None = None,
             node_cost_usd: float = DEFAULT_NODE_COST_USD, **plan_fields) -> Result:
    """Predict one training step of ``workload`` on ``hardware``, one device or many.

    ``hardware``: a device (catalogue name, spec file or ``DeviceSpec``), with ``num_devices``
    for many of it (``cluster_for`` builds the obvious cluster: 8 GPUs per node on their
    NVLink, nodes on InfiniBand; TPU slices on their ICI torus), or a cluster (preset name or
    ``ClusterSpec``). ``plan`` or its fields as keywords (``micro_batch``, ``global_batch``,
    ``precision``, ``recompute``, ``optimizer``, ...); ``global_batch`` is the whole system's.
    ``parallel``: how the step is split (``ParallelPlan``: dp, tp, pp, sequence parallel,
    pipeline schedule, ZeRO stage), or its fields as keywords (``tp=2, pp=4, zero=1``; dp,
    when not given, fills the devices); by default pure data parallelism over all devices.
    ``seq_len``: a language model's context. An imported model runs its example inputs'
    batch unless ``micro_batch`` says otherwise; any other model given ``global_batch`` but
    no ``micro_batch`` runs the largest micro-batch that divides the per-replica batch and
    fits in memory (``fitting_micro_batch``; a note says which). An unknown keyword, or a plan that cannot
    run, raises ``PlanError`` naming it. ``tokens`` or ``steps`` add
    whole-run totals; their energy is the devices' energy plus ``node_overhead_w`` per node
    (host CPUs, NICs, switches, fans; default: a cluster preset's measured or else datasheet
    maximum system power less its devices' TDPs, ``ClusterSpec.node_overhead_w``, or, where
    the preset cites a measured node idle, its other parts at the step's average device power,
    ``ClusterSpec.overhead_at``; else 0), times ``pue`` (datacentre power usage effectiveness:
    cooling and power delivery; 1.0, the default, counts the devices alone). ``cache``: where
    the stages' device-independent graphs come from (a ``simulator.StageCache`` keeps them
    across calls; by default they are built afresh): the same figures either way.
    ``own_years`` and ``electricity_usd_per_kwh`` (both or neither) add ``own_cost_usd`` to
    the run totals: the devices' purchase price and ``node_cost_usd`` per node amortised over
    ``own_years``, the run's share of them, plus its energy at that price
    (``simulator.report.figures.own_cost``).

    Per-device figures (memory, ``tflops_per_device``, MFU, HFU) are those of the busiest
    device; energy and power per device are the mean device's (every pipeline stage's devices
    powered for the whole step: ``simulator.schedule.step.pipeline_energy``); ``samples_per_s`` and ``tokens_per_s`` are the whole system's.
    Arguments of the wrong type or out of bounds raise hwsim's errors (``HwsimError``); a
    result breaking one of hwsim's invariants (``Result.check``) raises ``InternalError``.
    """
    _check_arguments(workload, hardware, plan, parallel, num_devices, cache)
    check_run(tokens=tokens, steps=steps, grid_kg_co2_per_kwh=grid_kg_co2_per_kwh, pue=pue,
              node_overhead_w=node_overhead_w, own_years=own_years,
              electricity_usd_per_kwh=electricity_usd_per_kwh, node_cost_usd=node_cost_usd)
    work = get_workload(workload)
    plan_fields, parallel_fields, seq_len = _keywords(plan_fields)
    if seq_len is not None:
        work = with_seq_len(work, seq_len)
    fit_batch = plan is None   # no micro_batch given: the largest that fits (below)
    if plan is None:
        if hasattr(work, "default_batch"):   # an imported model: its example inputs' batch
            plan_fields.setdefault("micro_batch", work.default_batch)
        plan = Plan(**plan_fields)
    elif plan_fields:
        raise PlanError("give either plan= or plan fields as keywords, not both")
    if plan.projections is None:   # the model's own (an imported config's architecture)
        plan = replace(plan, projections=own_projections(work))
    if parallel_fields:
        if parallel is not None:
            raise PlanError("give either parallel= or parallel fields as keywords, not both")
        parallel = _parallel(parallel_fields, hardware, num_devices)
    if parallel is not None and num_devices is None and not _is_cluster(hardware):
        num_devices = parallel.num_devices
    device, cluster, n = resolve_hardware(hardware, num_devices)
    device = attention.with_kernel(device, plan.attention_kernel)   # the plan's fused kernel
    if plan.attention is Attention.FUSED and getattr(work, "mla", None) is None:
        attention.check_head_dim(plan.attention_kernel, getattr(work, "head_dim", None),
                                 plan.precision)
    format_note = precision.check(device, plan)   # PlanError where it cannot train in it
    host.check_optimizer_device(plan, device)   # bitsandbytes' kernel: NVIDIA and AMD GPUs
    if plan.conv_norm_fusion:   # cuDNN's fused ops: NVIDIA, sm80 or later (training.convnorm)
        convnorm.check_device(device)
    if plan.norm_act_fusion:   # apex's NHWC batch-norm kernels: NVIDIA or AMD GPUs
        convnorm.check_norm_act_device(device)
    if not plan.fp8_transpose_cache:   # TE transposes fp8 weights on TN-only GPUs alone
        finetune.check_transpose_device(device)
    if not plan.math_attention_dropout and device.device_class is DeviceClass.CPU:
        # PyTorch's CPU flash kernel refuses dropout_p > 0 (training.fusion.MATH_PATH)
        plan = replace(plan, math_attention_dropout=True)
    if not plan.channels_last and device.vendor != "NVIDIA":
        # the NCHW/NHWC transposes are cuDNN's (simulator.training.layout): XLA, Gaudi's and
        # Neuron's graph compilers and MIOpen choose their own layouts
        plan = replace(plan, channels_last=True)
    # the system's default set point (ClusterSpec.power_limit_w) where the plan gives none
    system_limit = cluster.power_limit_w if cluster is not None else None
    if plan.power_limit_w is None and system_limit is not None and system_limit < device.tdp_w:
        plan = replace(plan, power_limit_w=system_limit)
    else:
        system_limit = None
    limit_w = check_limit(plan.power_limit_w, device)
    if node_overhead_w is None and (cluster is None or cluster.node_idle_w is None):
        # the preset's node maximum less its devices' TDPs (with a measured node idle, the
        # overhead follows the step's device power: _node_overhead, once the step is priced)
        node_overhead_w = cluster.node_overhead_w if cluster else 0.0
    parallel = parallel or ParallelPlan(dp=n)
    if fit_batch and "micro_batch" not in plan_fields and plan.global_batch is not None:
        return fitting_micro_batch(
            work, cluster or device, plan, parallel, n,
            {"tokens": tokens, "steps": steps, "grid_kg_co2_per_kwh": grid_kg_co2_per_kwh,
             "pue": pue, "node_overhead_w": node_overhead_w, "cache": cache,
             "own_years": own_years, "electricity_usd_per_kwh": electricity_usd_per_kwh,
             "node_cost_usd": node_cost_usd})
    depths = _depths(work, parallel)
    if depths is not None:   # a deep stack: two shallower ones, extrapolated
        small, large = (simulate(work.with_layers(k), cluster or device, plan, parallel=parallel,
                                 num_devices=n, cache=cache) for k in depths)
        result = extrapolate(small, large, depths, work.layers,
                             device.peak_for(plan.formats.compute), work.tokens_per_sample,
                             parallel.stage_layers(work.layers) if parallel.pp > 1 else None)
        result.totals = run_totals(result, device, work.tokens_per_sample, tokens, steps,
                                   grid_kg_co2_per_kwh, pue,
                                   _node_overhead(node_overhead_w, cluster, result)
                                   * (cluster.nodes if cluster else 1),
                                   _owning(own_years, electricity_usd_per_kwh, node_cost_usd,
                                           cluster.nodes if cluster else 1), plan)
        return result.check()
    m = micro_batches(work, plan, parallel, n)
    runs, unsplit = [], None
    # the first (embedding) and last (head) stages, and a middle one for each kind of middle
    # stage unlike the first (an uneven split's, a mixture of experts' past its dense layers)
    middle = stand_ins(work, parallel) if parallel.pp > 1 else {}
    stages = {0, parallel.pp - 1, *middle.values()}
    cache = _FRESH if cache is None else cache
    for stage in sorted(stages):
        unsplit, forward = cache.stage_forward(work, plan, parallel, stage, cluster)
        run = interfere(run_stage(forward, plan, parallel, device, cluster, stage, cache),
                        device, parallel.comm_interference, parallel.comm_sms)
        runs.append(paid_once(run))
    step_s, bubble, pace = step_time(runs, parallel, m, middle)
    run = runs[pace]
    lowered = run.lowered
    memories = [stage_memory(r, plan, parallel, m) for r in runs]
    memory = max(memories, key=lambda mem: sum(mem.values()))
    # states that do not fit on chip, in a Graphcore IPU's streaming memory, streamed in
    streamed = stream(device, memory, max((op.params for op in run.forward.ops()), default=0)
                      / max(run.forward.params(), 1), m)
    if streamed is not None:
        memory, step_s = streamed.on_chip, step_s + streamed.time_s
    # the whole device step, streaming included, at the slowest device's pace: the others wait
    spread_c = variability.coefficient(plan.rank_variability, device)
    step_s *= variability.slowest_of(n, spread_c)
    step_s += plan.step_overhead_ms * 1e-3   # outside the step's graph: the devices idle
    peak = sum(memory.values())
    if parallel.pp > 1 and (getattr(getattr(work, "moe", None), "first_dense_layers", 0)
                            or plan.finetune is not Finetune.FULL):
        # layers unlike each other (a mixture of experts' dense first layers; a fine-tune's
        # first layer, whose input needs no gradient): count the whole model's forward, not a
        # stage's layers times the model's (system_flops)
        whole = replace(parallel, pp=1, virtual_stages=1, schedule="1f1b",
                        first_stage_layers=None, last_stage_layers=None)
        unsplit, _ = cache.stage_forward(work, plan, whole, 0, cluster)
    model_flops, hardware_flops = system_flops(run, unsplit, parallel, m,
                                                getattr(work, "layers", None), plan)
    # every device is powered for the whole step, whichever stage finishes last
    t = max(r.t_micro for r in runs)
    own, energy_j, exposed = device_energy(run, device, limit_w, m, step_s, bubble, t)
    energy = pipeline_energy(runs, parallel.pp, device, limit_w, m, step_s, bubble, middle,
                             known={run.stage: own})
    from simulator.engine.dispatch import engine

    path_s, on_path = engine(len(lowered)).critical_path(lowered.indptr, lowered.indices,
                                                          run.time_s)
    per_sample_tokens = work.tokens_per_sample
    global_batch = plan.micro_batch * m * parallel.dp
    samples_per_s = global_batch / step_s
    achieved = model_flops / n / step_s
    dense_peak = device.peak_for(plan.formats.compute)
    comm_s = communication_s(run, m)
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
        energy_j_per_step=energy, avg_power_w=energy / step_s, power_limit_w=limit_w,
        params=work.num_params(), trainable_params=_trainable(plan, unsplit),
        num_devices=n, critical_path_s=float(path_s),
        step_overhead_s=plan.step_overhead_ms * 1e-3,
        saved_activation_bytes=float(activation_bytes(run.forward, plan)), lowered=lowered,
        times={"compute_s": run.compute_s, "memory_s": run.memory_s, "time_s": run.time_s,
               "start_s": run.start, "end_s": run.end, "energy_j": energy_j,
               "critical_path": on_path},
        device_spec=device)
    result.parallel = {**echo(parallel),
                       "stage_layers": (parallel.stage_layers(work.layers)
                                        if parallel.pp > 1 else None),
                       "cluster": cluster.name if cluster else None,
                       "params_per_device": int(max(r.forward.params() for r in runs)),
                       "micro_batch_s": max(r.t_micro for r in runs),
                       "bubble_fraction": bubble / step_s,
                       "communication_s": comm_s,
                       "exposed_communication_s": exposed}
    # a mixture of experts' load: the first stage holding MoE layers (all alike)
    moe = next(filter(None, (expert_figures(getattr(work, "moe", None), r.forward)
                             for r in runs)), None)
    if moe is not None:
        result.parallel["moe"] = moe
    if spread_c and n > 1:   # the slowest device's pace: c, ranks, E[max], factor
        slowest = variability.figures(n, spread_c)
        result.parallel["rank_variability"] = slowest
        result.notes.append(
            f"rank variability {spread_c:g}: the slowest of {n:,} devices sets "
            f"the pace, {slowest['step_factor']:.4g} x the median device's step "
            f"(simulator.schedule.variability; {variability.provenance(plan.rank_variability)})")
    elif plan.rank_variability is None and n > 1:
        result.notes.append(
            f"rank variability 0: no measured per-chip spread for {device.name} (the V100 "
            f"figure applies to GPUs only; --rank-variability C sets one)")
    result.unknown_ops = sorted({op.fn.removeprefix(UNKNOWN) for op in run.forward.ops()
                                 if op.fn.startswith(UNKNOWN)})
    if result.unknown_ops:
        result.notes.append(f"{len(result.unknown_ops)} operator type(s) hwsim does not know were "
                            f"costed by their tensor traffic only: {', '.join(result.unknown_ops)}")
    if device.matmul_efficiency == 1.0:
        result.notes.append(f"{device.name} has no measured matmul efficiency: tensor ops run at "
                            "the datasheet peak, so step time is an optimistic bound")
    elif device.vector_efficiency == 1.0 and not device.function_efficiency:
        result.notes.append(f"{device.name} has no calibration of its vector ops' compute "
                            "(norms, activations, softmax): they run at the datasheet vector rate, "
                            "so step time is an optimistic bound (hwsim calibrate measures them)")
    if note := status.stream_note(device):   # no measurement of its class: the datasheet
        result.notes.append(note)
    if format_note:
        result.notes.append(format_note)
    if note := bias.note(plan):   # --bias-add separate under compiled fusion: nothing to add
        result.notes.append(note)
    if plan.optimizer is Optimizer.NONE:   # what the memory's optimizer_states still holds
        result.notes.append("optimizer none: the forward and backward only, no update"
                            + (" (optimizer_states holds the fp32 master copy of mixed precision, "
                               "as PyTorch AMP holds fp32 weights)" if plan.formats.master
                               else ""))
    if note := p2p_note(parallel):   # --overlap-p2p-comm off the interleaved schedule: nothing
        result.notes.append(note)
    if note := whole_model_note(parallel):   # --fsdp-whole-model below ZeRO 3: nothing
        result.notes.append(note)
    if streamed is not None:
        result.notes.append(streamed.note(device))
    if precision.stack_note(device):   # no framework trains on it (an FPGA)
        result.notes.append(precision.stack_note(device))
    if plan.attention is Attention.FUSED and attention.note(device):
        result.notes.append(attention.note(device))
    host_note = host.note(run.lowered, run.time_s, run.per_micro, device, plan)
    if host_note:
        result.notes.append(host_note)
    if note := status.priors_note(device, status.priced_batch_norm_priors(lowered, plan)):
        result.notes.append(note)
    if run.clock is not None and (run.clock < 1).any():
        phases = [(name, float(run.clock[lowered.phase == phase].min()))
                  for name, phase in (("forward", Phase.FORWARD), ("backward", Phase.BACKWARD),
                                      ("recompute", Phase.RECOMPUTE),
                                      ("update", Phase.OPTIMIZER))
                  if (lowered.phase == phase).any()]
        result.notes.append(f"power limit {limit_w:g} W: clocks at " + ", ".join(
            f"{x:.0%} ({name})" for name, x in phases) + " of the reference clock "
            "(simulator.cost.power)")
    if system_limit is not None:
        result.notes.append(f"{cluster.name} runs its devices at their default power limit, "
                            f"{system_limit:g} W of {device.tdp_w:g} W (the preset cites the "
                            f"system's documentation); give --power-limit-w {device.tdp_w:g} "
                            "for a system raised to the maximum")
    if device.idle_prior:
        result.notes.append(f"{device.name} has no measured idle power: its "
                            f"{device.idle_power_w:.0f} W is the "
                            f"{device.device_class.value.upper()} class prior "
                            f"({device.idle_power_w / device.tdp_w:.0%} of its TDP), and so are "
                            "its energy figures in part")
    given_priors = [f"{'idle power' if name == 'idle_w' else 'TDP'} "
                    f"({device.idle_power_w if name == 'idle_w' else device.tdp_w:.0f} W)"
                    for name in device.given_power_priors]
    if given_priors:                     # figures its spec marks [power] prior = [...]
        result.notes.append(f"{device.name}'s {' and '.join(given_priors)} "
                            f"{'are priors' if len(given_priors) > 1 else 'is a prior'}, not "
                            "published for this device (its spec says from which measured "
                            "devices), and so are its energy figures in part")
    # a run without a cluster (one device) owns its share of a costed 8-GPU node's other parts
    nodes = cluster.nodes if cluster else n / COSTED_NODE_DEVICES
    result.totals = run_totals(result, device, per_sample_tokens, tokens, steps,
                            grid_kg_co2_per_kwh, pue,
                            _node_overhead(node_overhead_w, cluster, result) * nodes,
                            _owning(own_years, electricity_usd_per_kwh, node_cost_usd, nodes),
                            plan)
    return result.check()


def own_projections(work) -> Projections:
    """The projections ``work`` runs where a plan names none (``Plan.projections`` None): an
    imported config's architecture's (``workloads.hf_config.PROJECTIONS``), else separate."""
    return Projections(getattr(work, "projections", None) or Projections.SEPARATE.value)


def _node_overhead(given_w: float | None, cluster, result: Result) -> float:
    """A node's power besides its devices: ``given_w`` where given (or settled from a preset
    without a measured idle), else the preset's other parts at the step's average device power
    (``ClusterSpec.overhead_at``)."""
    if given_w is not None:
        return given_w
    return cluster.overhead_at(result.avg_power_w)


def fitting_micro_batch(work, hardware, plan: Plan, parallel: ParallelPlan, n: int,
                        options: dict) -> Result:
    """The step at the largest micro-batch that divides the per-replica batch
    (``plan.global_batch / parallel.dp``) and fits in the device's memory, with a note saying
    so; the step at micro-batch 1 when none fits (its ``fits`` is False).

    Peak memory grows with the micro-batch, so the largest that fits is found by bisection
    over the divisors (about log2 of their number of steps). Without a pipeline the largest
    is also the fastest: the same samples in fewer, larger kernels. With one (pp > 1) a
    smaller micro-batch also means more micro-batches and a smaller bubble ((p - 1) / m of
    the ideal step, Narayanan et al. 2021, sec. 2.2), so the smaller divisors that fit are
    tried too, largest first, while each is faster than the one before: the fastest of them
    is run."""
    gb, dp = plan.global_batch, parallel.dp
    if gb % dp:   # the plan's own error (global batch not a multiple of dp)
        return simulate(work, hardware, plan, parallel=parallel, num_devices=n, **options)
    per_replica = gb // dp
    sizes = [b for b in range(1, per_replica + 1) if not per_replica % b
             and _runs(parallel, per_replica // b)]
    if not sizes:   # the plan's own error (the micro-batches the schedule needs)
        return simulate(work, hardware, plan, parallel=parallel, num_devices=n, **options)

    def step(b: int) -> Result:
        return simulate(work, hardware, replace(plan, micro_batch=b), parallel=parallel,
                        num_devices=n, **options)

    tried: dict[int, Result] = {}
    low, high = 0, len(sizes) - 1        # sizes[low - 1] fits (or low = 0), sizes[high + 1]
    while low <= high:                   # does not
        mid = (low + high) // 2
        tried[sizes[mid]] = step(sizes[mid])
        if tried[sizes[mid]].fits:
            low = mid + 1
        else:
            high = mid - 1
    if low == 0:   # not even micro-batch 1 fits
        result = tried.get(1) or step(1)
        result.notes.append("micro-batch 1 (no --micro-batch given): no micro-batch fits in "
                            "memory, not even 1")
        return result
    best = low - 1
    result = tried[sizes[best]]
    if parallel.pp > 1:   # a pipeline: smaller micro-batches shrink the bubble
        for b in reversed(sizes[:best]):
            smaller = tried.get(b) or step(b)
            if smaller.step_time_s >= result.step_time_s:
                break
            result = smaller
    b = result.micro_batch
    larger = tried.get(sizes[low]) if low < len(sizes) else None
    why = "the fastest of the micro-batches that divide" if b != sizes[best] else \
        "the largest micro-batch that divides"
    beyond = (f"; {larger.micro_batch} needs {larger.peak_memory_bytes / 2 ** 30:.3g} GiB of "
              f"{larger.memory_capacity_bytes / 2 ** 30:.3g}" if larger is not None else "")
    result.notes.append(f"micro-batch {b} (no --micro-batch given): {why} the per-replica batch "
                        f"of {per_replica} and {'fit' if b != sizes[best] else 'fits'} in "
                        f"memory{beyond}")
    return result


def _runs(parallel: ParallelPlan, m: int) -> bool:
    """Whether ``parallel`` takes ``m`` micro-batches per step (``ParallelPlan.validate``):
    the number it fixes, if any; a multiple of pp for the interleaved schedule."""
    if parallel.micro_batches is not None and m != parallel.micro_batches:
        return False
    return not (parallel.schedule is Schedule.INTERLEAVED and m % parallel.pp)


def _owning(years: float | None, usd_per_kwh: float | None, node_cost_usd: float,
            nodes: int) -> dict | None:
    """``run_totals``' ``own`` (None: no cost of owning asked for)."""
    if years is None:
        return None
    return {"own_years": years, "electricity_usd_per_kwh": usd_per_kwh,
            "nodes_cost_usd": node_cost_usd * nodes}


def _keywords(keywords: dict) -> tuple[dict, dict, int | None]:
    """``simulate``'s keywords as (``Plan``'s fields, ``ParallelPlan``'s, ``seq_len``);
    PlanError naming an unknown one and the closest names."""
    known = [*PLAN, *PARALLEL, "seq_len"]
    for key in keywords:
        if key not in known:
            raise PlanError(f"simulate() got an unknown keyword {key!r}{did_you_mean(key, known)}"
                            f": it takes Plan's fields ({', '.join(PLAN)}), ParallelPlan's "
                            f"({', '.join(PARALLEL)}) and seq_len")
    return ({k: v for k, v in keywords.items() if k in PLAN},
            {k: v for k, v in keywords.items() if k in PARALLEL}, keywords.get("seq_len"))


def with_seq_len(work, seq_len: int):
    """``work`` over ``seq_len`` tokens per sample (a language model's context)."""
    if not hasattr(work, "seq_len") or work.tokens_per_sample is None:
        raise PlanError(f"seq_len applies to language models, not {work.name}")
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
        raise PlanError(f"seq_len = {seq_len!r} must be a positive integer")
    return replace(work, seq_len=seq_len)


def _parallel(fields: dict, hardware, num_devices: int | None) -> ParallelPlan:
    """The ``ParallelPlan`` of keyword fields. dp, when not given, fills the devices
    (``num_devices``, else the cluster's, else tp x pp x cp), as the command line's does."""
    given = ParallelPlan(**{**fields, "dp": fields.get("dp") or 1})
    if fields.get("dp") is not None:
        return given
    if num_devices is None:
        num_devices = resolve_hardware(hardware, None)[2] if _is_cluster(hardware) \
            else given.num_devices
    return replace(given, dp=data_parallel_size(num_devices, given.tp, given.pp, given.cp))


def _check_arguments(workload, hardware, plan, parallel, num_devices, cache) -> None:
    """hwsim's own error for an argument of the wrong type, before any work (never an
    AttributeError or TypeError from deep inside)."""
    if not (isinstance(workload, str) or (isinstance(workload, tuple) and len(workload) == 2)
            or callable(getattr(workload, "forward_graph", None))):
        raise WorkloadError(f"workload = {shown(workload)} must be a zoo name, a model file, "
                            "(torch module, example inputs) or a Workload")
    if not isinstance(hardware, (str, DeviceSpec, ClusterSpec)):
        raise SpecError(f"hardware = {shown(hardware)} must be a device or cluster name, a "
                        "spec file, a DeviceSpec or a ClusterSpec")
    device = hardware.device if isinstance(hardware, ClusterSpec) else hardware
    if isinstance(device, DeviceSpec) and device.idle_power_w > device.tdp_w:
        raise SpecError(f"{device.name}: idle_power_w = {device.idle_power_w:g} W exceeds "
                        f"tdp_w = {device.tdp_w:g} W")
    for value, kind, name in ((plan, Plan, "plan"), (parallel, ParallelPlan, "parallel")):
        if value is not None and not isinstance(value, kind):
            raise PlanError(f"{name} = {shown(value)} must be a {kind.__name__} or None")
    if num_devices is not None:
        positive(num_devices, "num_devices")
    if cache is not None and not callable(getattr(cache, "stage_forward", None)):
        raise PlanError(f"cache = {shown(cache)} must be a StageCache or None")


#: A stack of more identical layers than this is simulated at two shallower depths, 16 and 32
#: layers per pipeline chunk, and extrapolated (``simulator.report.depth``): beyond any real
#: model (the deepest published: 126 to 160 layers), so that their figures are the full
#: simulation's, and a 10,000-layer stack predicts in about a second.
DEEP_LAYERS = 512


def _trainable(plan: Plan, unsplit: OpGraph) -> int | None:
    """The model's trained parameters under a fine-tune, None under a full one: its
    checkpoints' optimizer states (``goodput.checkpoint_bytes``). A fine-tune has no pipeline
    stages (``micro_batches`` refuses them), so ``unsplit`` is the whole model's forward."""
    return None if plan.finetune is Finetune.FULL else unsplit.trainable_params()


def _depths(work, parallel: ParallelPlan) -> tuple[int, int] | None:
    """The two depths a deep stack of identical layers is simulated at, or None to simulate
    it whole (a shallow one, uneven pipeline stages, a model that is not a layer stack)."""
    layers = getattr(work, "layers", None)
    if (not isinstance(layers, int) or layers <= DEEP_LAYERS or parallel.uneven
            or getattr(work, "transformer", None) is None or not hasattr(work, "with_layers")):
        return None
    parallel.stage_layers(layers)   # a PlanError naming the numbers when they do not split
    unit = parallel.pp * parallel.virtual_stages
    return (16 * unit, 32 * unit) if 32 * unit < layers else None


def _is_cluster(hardware) -> bool:
    return isinstance(hardware, ClusterSpec) or (isinstance(hardware, str)
                                                 and hardware in list_clusters())


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
    device = hardware if isinstance(hardware, DeviceSpec) else _device(hardware)
    n = 1 if num_devices is None else num_devices
    return device, (cluster_for(device, n) if n > 1 else None), n


def _device(hardware):
    """``load_device``, whose error for an unknown name also suggests the cluster presets
    close to it: ``hardware`` names either."""
    try:
        return load_device(hardware)
    except SpecError as err:
        if not isinstance(hardware, str) or not str(err).startswith("unknown device"):
            raise
        close = did_you_mean(hardware, [*list_devices(), *ALIASES, *list_clusters()])
        if not any(name in close for name in list_clusters()):
            raise
        raise SpecError(f"unknown device or cluster {shown(hardware)}{close}: see 'hwsim "
                        f"devices', or a cluster preset: {', '.join(list_clusters())}") from None


class StageBuilder:
    """Where ``simulate`` gets a stage's device-independent graphs (its forward on one rank and
    its lowered training step, ``simulator.parallel.rank``): built afresh on every call.
    ``simulator.explore.memo.StageCache`` keeps them, for sweeps that price one plan on many
    devices."""

    def stage_forward(self, work, plan: Plan, parallel: ParallelPlan, stage: int,
                      cluster: ClusterSpec | None) -> tuple[OpGraph, OpGraph]:
        return stage_forward(work, plan, parallel, stage, cluster)

    def build_stage(self, forward: OpGraph, plan: Plan, parallel: ParallelPlan,
                    per_node: int) -> Lowered:
        return build_stage(forward, plan, parallel, per_node)


_FRESH = StageBuilder()


def run_stage(forward: OpGraph, plan: Plan, parallel: ParallelPlan, device: DeviceSpec,
              cluster: ClusterSpec | None, stage: int = 0,
              cache: StageBuilder = _FRESH) -> StageRun:
    per_node = cluster.devices_per_node if cluster else 1
    return price_stage(cache.build_stage(forward, plan, parallel, per_node), forward, device,
                       cluster, stage, plan.power_limit_w, plan=plan,
                       interference=parallel.comm_interference)
