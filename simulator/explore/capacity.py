"""Capacity planning: which devices, how many and which plan train a model on T tokens within a
deadline and a budget, ranked by cost, time or energy, with the Pareto front of the three.

``plan`` sweeps a search space (``simulator.explore.sweep``), rejects each configuration for the first
rule it breaks -- the plan cannot run, it does not fit in memory, it misses the deadline, the
device has no price while a budget is set, it is over budget -- and ranks the rest. The default
search space for a language model is bounded (``search_space``): powers-of-two device counts
from the fewest whose memory could hold the model states, tensor parallelism within a node
dividing the heads, pipeline stages dividing the layers (or, with one layer fewer on the first
and last stage, the layers + 2, as Llama 3 405B split its 126) with the 1F1B schedule and,
where the layers split into two model chunks per stage and the micro-batches into a multiple
of the stages (Megatron-LM's rule), the interleaved one with two chunks, context parallelism
for long sequences (cp up to seq_len / 8192: each rank keeps at least 8K tokens, as Llama 3
405B's cp 16 at 128K did, Dubey et al. 2024, Table 4), ZeRO 0-3 (0-1 with pipeline stages:
DeepSpeed does not combine ZeRO-2 and -3 with pipeline parallelism), no or full recomputation
(selective recomputation re-runs the attention core, which the default fused attention
recomputes by itself: the same step as none) and micro-batches of 1, 2 and 4, at a global
batch of about 4M tokens (Llama 2's, Touvron et al. 2023b, sec. 2.2), and for a mixture of
experts expert-parallel sizes (``_expert_ranks``), trimmed first when over the bound.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hardware_specs.cluster import GPU_NODE_SIZE, ClusterSpec, cluster_for
from hardware_specs.loader import list_devices, load_device
from simulator.errors import PlanError, SpecError
from simulator.explore.memo import StageCache
from simulator.explore.sweep import resolve_devices, sweep, sweep_configs
from simulator.plan.fields import PLAN as PLAN_FIELDS
from simulator.plan.fields import plain
from simulator.plan.step import Plan
from simulator.report.views import pareto_front
from workloads.zoo import get_workload

RANKS = {"cost": ("cost_usd", "total_time_s", "energy_kwh"),
         "time": ("total_time_s", "cost_usd", "energy_kwh"),
         "energy": ("energy_kwh", "total_time_s", "cost_usd")}
OBJECTIVES = ("total_time_s", "cost_usd", "energy_kwh")
GLOBAL_BATCH_TOKENS = 4e6        # Llama 2's global batch (Touvron et al. 2023b, sec. 2.2)
CP_TOKENS = 8192                 # fewest tokens per context-parallel rank (Llama 3: 131,072 / 16)
COUNTS = 4                       # powers of two in the default device counts
MAX_CONFIGS = 5000               # the default search space's bound
NO_PRICE = "no price for device-hour (give --price-per-hour DEVICE=USD)"


@dataclass
class CapacityReport:
    """``feasible`` ranked (column ``rank``), ``rejected`` (``reason``, ``rejected_by``),
    ``pareto`` (the feasible rows no other feasible row beats on time, cost and energy),
    ``rows`` every configuration evaluated."""

    feasible: pd.DataFrame
    rejected: pd.DataFrame
    pareto: pd.DataFrame
    rows: pd.DataFrame
    rank_by: str = "cost"
    constraints: dict = field(default_factory=dict)
    # devices left out of the search as dominated (``deadline_space``): name -> by which
    pruned: dict = field(default_factory=dict)

    def rejections(self) -> pd.Series:
        """How many configurations each rule rejected, most first."""
        if self.rejected.empty:
            return pd.Series(dtype="int64", name="count")
        return self.rejected["rejected_by"].value_counts()

    def why_nothing(self) -> str:
        """One line saying why no configuration is feasible (empty when some are)."""
        if not self.feasible.empty:
            return ""
        if self.rows.empty:
            return ("nothing to evaluate: no configuration of these devices and plans; add "
                    "devices or device counts, or relax the deadline")
        parts = [f"{count} {kind} (closest: {_closest(self.rejected, kind)})"
                 for kind, count in self.rejections().items()]
        return (f"nothing feasible among {len(self.rows)} configurations: " + "; ".join(parts)
                + "; relax the deadline or budget, or add devices or device counts")


def priced_devices() -> list[str]:
    """The catalogue devices with an on-demand price: the planner's default devices."""
    return [name for name in list_devices() if load_device(name).price_per_hour_usd is not None]


def capacity_plan(model, tokens: float, *, devices: list[str] | None = None,
                  device_counts: list[int] | None = None, deadline_days: float | None = None,
                  budget_usd: float | None = None, rank_by: str = "cost",
                  plans: list[dict] | dict[str, list] | None = None, workers: int | None = None,
                  overrides: dict | None = None, client=None, progress=True,
                  fixed: dict | None = None, **totals) -> CapacityReport:
    """Rank the configurations that train ``model`` on ``tokens`` within the constraints.
    ``fixed``: plan fields every configuration keeps (``hwsim plan --cp 2 --precision fp8``):
    the search varies only the others; a searched field (tp, pp, cp, ep, dp, zero, recompute,
    micro_batch, global_batch, the pipeline's schedule and stage layers) takes the value
    given, the others are added to every plan (``plans`` given: to each of them)."""
    if rank_by not in RANKS:
        raise PlanError(f"rank_by = {rank_by!r}: choose one of {', '.join(RANKS)}")
    for name, value in (("tokens", tokens), ("deadline_days", deadline_days),
                        ("budget_usd", budget_usd)):
        if value is not None and not (isinstance(value, (int, float)) and value > 0
                                      and math.isfinite(value)):
            raise PlanError(f"{name} = {value!r} must be a finite number > 0")
    work = get_workload(model)
    if not work.tokens_per_sample:
        raise PlanError(f"planning counts tokens: {work.name} is not a language model")
    specs = resolve_devices(list(devices or priced_devices()), overrides)
    fixed = _check_fixed(fixed)
    if plans is not None and fixed:
        plans = with_fixed(plans, fixed)
    if plans is None:
        _check_tp_overlap(fixed)
    if progress is True:
        progress = Progress()
    if plans is None and device_counts is None and deadline_days is not None:
        configs, pruned = deadline_space(work, specs, tokens, deadline_days, fixed)
        rows = sweep_configs(work, configs, tokens=tokens, workers=workers, client=client,
                             progress=progress, **totals)
        report = judge(rows, deadline_days, budget_usd, rank_by)
        report.pruned = pruned
        return report
    pruned = {}
    if plans is None:
        if device_counts is None and len(specs) > 1:   # the default space: dominated out
            pruned = _prune(work, specs, fixed)[1]
            specs = [spec for spec in specs if spec.name not in pruned]
        plans = search_space(work, specs, fixed) if device_counts is None else [
            p for n in device_counts for p in _plans(n, work, fixed)]
        if not plans:
            _require_plans(device_counts, work, fixed)
        device_counts = None  # each plan names its dp, so its device count
    rows = sweep(work, specs, device_counts, plans, tokens=tokens, workers=workers,
                 client=client, progress=progress, **totals)
    report = judge(rows, deadline_days, budget_usd, rank_by)
    report.pruned = pruned
    return report


def judge(rows: pd.DataFrame, deadline_days: float | None = None,
          budget_usd: float | None = None, rank_by: str = "cost") -> CapacityReport:
    """Split a sweep's rows (with run totals) into ranked feasible rows, rejected rows with
    their reason, and the Pareto front of the feasible ones."""
    reasons = [_reason(row, deadline_days, budget_usd) for row in rows.itertuples(index=False)]
    verdict = pd.Series(reasons, index=rows.index, dtype=object)
    feasible = rank(rows[verdict.isna()], rank_by)
    rejected = rows[verdict.notna()].copy()
    rejected["reason"] = verdict[verdict.notna()]
    rejected["rejected_by"] = rejected["reason"].str.extract(r"^([^(:]*)")[0].str.strip()
    rejected = rejected.reset_index(drop=True)
    front = feasible[pareto_front(feasible, OBJECTIVES)].reset_index(drop=True)
    return CapacityReport(feasible, rejected, front, rows, rank_by,
                      {"deadline_days": deadline_days, "budget_usd": budget_usd})


def rank(rows: pd.DataFrame, rank_by: str = "cost") -> pd.DataFrame:
    """Rows sorted by ``RANKS[rank_by]`` (NaN last, the configuration index breaking ties),
    with a 1-based ``rank`` column first."""
    keys = [k for k in RANKS[rank_by] if k in rows.columns] + ["config"]
    ranked = rows.sort_values(keys, na_position="last", kind="mergesort").reset_index(drop=True)
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    return ranked


def search_space(work, specs, fixed: dict | None = None) -> list[dict]:
    """The default plans (with dp: each names its device count) for a transformer, over
    ``COUNTS`` powers of two from the fewest devices whose memory could hold the model states.
    While the space exceeds ``MAX_CONFIGS`` configurations it is trimmed (``_trim``): a mixture
    of experts' expert-parallel sizes to two first, then the largest counts one by one, then,
    at one count, the ZeRO stages another stage beats."""
    capacity = min(spec.memory_bytes for spec in specs)
    per_param = sum(_states_plan(fixed or {}).state_bytes_per_param().values())  # AdamW: 16
    fewest = max(1.0, per_param * work.num_params() / capacity)
    start = 2 ** math.ceil(math.log2(fewest))
    counts = [start * 2 ** i for i in range(COUNTS)]
    steps = [(len(counts), 0)] + [(c, 1) for c in range(len(counts), 0, -1)] + [(1, 2)]
    for size, level in steps:
        plans = _trim([p for n in counts[:size] for p in _plans(n, work, fixed)], work,
                      level if level < 2 or "zero" not in (fixed or {}) else 1)
        if len(plans) * len(specs) <= MAX_CONFIGS:
            break
    if len(plans) * len(specs) > MAX_CONFIGS:
        raise PlanError(f"the default search space has {len(plans) * len(specs)} "
                        f"configurations (over {MAX_CONFIGS}): give fewer devices, device "
                        "counts or a plan grid")
    if not plans:
        _require_plans(counts, work, fixed)
    return plans


#: The device counts tried around what a deadline needs (``deadline_space``): the power of two
#: that perfect scaling would need, and twice it (scaling is not perfect; the larger count is
#: also the Pareto front's faster point).
DEADLINE_FACTORS = (1, 2)
#: Micro-batches tried under a deadline: 1 and 2 (4 rarely fits beside the states of a 7B+
#: model at 4K+ tokens and halves nothing the others do not).
DEADLINE_MICRO_BATCHES = (1, 2)
#: The model-parallel sizes (tp x pp x cp) kept per count: the smallest whose model states fit
#: and the next (more room for activations), the larger ones only cost communication.
MODEL_PARALLEL_SIZES = 2


@dataclass(frozen=True)
class Rate:
    """A device's single-device step of the model (memory aside): what the search is sized by."""

    tokens_per_s: float
    joules_per_token: float
    usd_per_token: float      # inf without a price


def device_rates(work, specs, fixed: dict | None = None) -> dict[str, Rate | str]:
    """Each device running the model alone at micro-batch 1 (its memory ignored): its tokens
    per second, joules and dollars per token, or why it cannot run the model (a PlanError's
    text). The forward graph is built once and priced on every device (``StageCache``).
    ``fixed`` (``capacity_plan``): its step-plan fields (precision, recomputation,
    micro-batch, optimizer, ...) are those the device runs, as every plan searched does: an
    RTX 4090 that an H100 PCIe dominates in bf16 is not dominated in fp8. Its global batch
    (the whole system's) and its parallel fields (a split over devices) are not a single
    device's."""
    from simulator.api import simulate

    step = {"micro_batch": 1, **{k: v for k, v in (fixed or {}).items()
                                 if k in PLAN_FIELDS and k != "global_batch"}}
    cache, out = StageCache(), {}
    for spec in specs:
        try:
            result = simulate(work, spec, cache=cache, **step)
        except PlanError as err:
            out[spec.name] = f"cannot run it: {err}"
            continue
        per_step = result.global_batch * work.tokens_per_sample
        price = spec.price_per_hour_usd
        out[spec.name] = Rate(result.tokens_per_s, result.energy_j_per_step / per_step,
                              price / 3600 / result.tokens_per_s if price else math.inf)
    return out


def _prune(work, specs, fixed: dict | None) -> tuple[dict, dict[str, str]]:
    """(``device_rates``, the devices left out: ``dominated``); PlanError when none of
    ``specs`` can run the model (with ``fixed``'s fields), naming why the first cannot."""
    rates = device_rates(work, specs, fixed)
    pruned = dominated(specs, rates)
    if specs and len(pruned) == len(specs):
        name = specs[0].name
        raise PlanError(f"none of the {len(specs)} devices can run {work.name}: {name} "
                        f"{rates[name]}")
    return rates, pruned


def _states_plan(fields: dict) -> Plan:
    """The step plan whose model states (``Plan.state_bytes_per_param``: its precision,
    optimizer and fp32 gradients) ``fields`` give."""
    return Plan(**{k: fields[k] for k in ("precision", "optimizer", "fp32_grads")
                   if k in fields})


def dominated(specs, rates: dict[str, Rate]) -> dict[str, str]:
    """Devices another beats or equals on every count: cost and energy per token, tokens per
    second per device, memory and the achieved bandwidth of the networks inside and between
    nodes (``links``; at every device count it is then at least as cheap, as frugal and as
    fast, and holds as much): name -> the device that dominates it; devices that cannot run
    the model (``device_rates``): name -> why."""
    def key(spec):
        r = rates[spec.name]
        intra, inter = links(spec)
        return (r.usd_per_token, r.joules_per_token, -r.tokens_per_s, -spec.memory_bytes,
                -intra, -inter)

    out = {spec.name: rates[spec.name] for spec in specs if isinstance(rates[spec.name], str)}
    specs = [spec for spec in specs if spec.name not in out]
    for spec in specs:
        for other in specs:
            a, b = key(other), key(spec)
            if other is not spec and all(x <= y for x, y in zip(a, b)) and a != b:
                out[spec.name] = other.name
                break
    return out


def links(spec) -> tuple[float, float]:
    """Achieved bytes/s per device of the network inside a node and of the one between nodes
    of ``spec`` (a cluster's own, a device's default cluster: ``cluster_for`` of 8 devices).
    A single-device step, which the rates are, never sees them: an A100 SXM4 40 GB's NVLink
    runs llama2-7b at tp 8 2.0x as fast as an A100 PCIe 80 GB's PCIe (micro-batch 1, global
    batch 8: 1.54 against 3.15 s a step), though the PCIe one wins on rates and memory.
    (0, 0) where no cluster is built."""
    try:
        cluster = spec if isinstance(spec, ClusterSpec) else cluster_for(spec, 8)
    except (PlanError, SpecError):
        return 0.0, 0.0
    return tuple(0.0 if net is None else net.bandwidth_bytes_per_s * net.efficiency
                 for net in (cluster.intra, cluster.inter))


def deadline_space(work, specs, tokens: float, deadline_days: float,
                   fixed: dict | None = None) -> tuple[list[tuple], dict[str, str]]:
    """(configurations ``(device, None, plan)``, devices left out as dominated) sized by the
    work: each device's counts are ``DEADLINE_FACTORS`` times the power of two that its
    single-device rate (``device_rates``) would need, scaling perfectly, to train ``tokens``
    within the deadline (never fewer than hold the model states); at each count the plans of
    the ``MODEL_PARALLEL_SIZES`` smallest model-parallel sizes whose states fit. The rates
    and states are those of ``fixed``'s step plan (``device_rates``, ``_states_plan``)."""
    rates, pruned = _prune(work, specs, fixed)
    fixed = fixed or {}
    per_param = sum(_states_plan(fixed).state_bytes_per_param().values())
    configs, counts = [], set()
    for spec in specs:
        if spec.name in pruned:
            continue
        need = tokens / (rates[spec.name].tokens_per_s * deadline_days * 86400)
        fewest = per_param * work.num_params() / spec.memory_bytes
        start = 2 ** math.ceil(math.log2(max(need, fewest, 1.0)))
        for n in (start * f for f in DEADLINE_FACTORS):
            counts.add(n)
            plans = [p for p in _plans(n, work, fixed)
                     if ("micro_batch" in fixed or p["micro_batch"] in DEADLINE_MICRO_BATCHES)
                     and ("zero" in fixed or not _dominated_zero(p))]
            configs += [(spec, None, plan) for plan in _smallest_splits(plans, work, spec)]
    if not configs:
        _require_plans(sorted(counts), work, fixed)
        if counts and not any(_plans(n, work, fixed) for n in counts):
            # the deadline needs more devices than the global batch can be split over
            batch = fixed.get("global_batch") or _batch(work)
            raise PlanError(
                f"the deadline of {deadline_days:g} days needs at least {min(counts):,} "
                f"devices, more than any plan of a global batch of {batch:,} sequences can "
                "use (tp x pp x cp x dp devices, dp x micro-batch dividing the batch): "
                "relax the deadline, or give a larger --global-batch")
    # the same plan on different devices side by side: a worker builds its graphs once
    configs.sort(key=lambda c: sorted((k, str(v)) for k, v in c[2].items()))
    if len(configs) > MAX_CONFIGS:
        raise PlanError(f"the deadline's search space has {len(configs)} configurations (over "
                        f"{MAX_CONFIGS}): give fewer devices, device counts or a plan grid")
    return configs, pruned


def _dominated_zero(plan: dict) -> bool:
    """A ZeRO stage another stage beats on memory for the same traffic: with data parallelism,
    ZeRO-1 shards the optimizer states and ZeRO-2 the gradients too, each for the
    reduce-scatter and all-gather that plain data parallelism's all-reduce is made of
    (Rajbhandari et al. 2020, sec. 7.1): stage 0 is dominated by 1, and, without pipeline
    stages (which allow 0-1 only), 1 by 2."""
    if plan["dp"] * plan.get("cp", 1) == 1:
        return False
    return plan["zero"] == 0 or (plan["zero"] == 1 and plan["pp"] == 1)


def _smallest_splits(plans: list[dict], work, spec) -> list[dict]:
    """The plans whose model states (ZeRO-sharded weights, gradients, optimizer states) fit
    ``spec``, of the ``MODEL_PARALLEL_SIZES`` smallest tp x pp x cp among those."""
    params = work.num_params()

    def states(plan):
        per_param = _states_plan(plan).state_bytes_per_param()
        split = params / (plan["tp"] * plan["pp"])
        replicas = plan["dp"] * plan.get("cp", 1)
        zero = plan["zero"]
        return sum(split * per_param[part] / (replicas if zero >= stage else 1)
                   for part, stage in (("weights", 3), ("gradients", 2),
                                       ("optimizer_states", 1)))

    fitting = [p for p in plans if states(p) <= spec.memory_bytes]
    size = lambda p: p["tp"] * p["pp"] * p.get("cp", 1)  # noqa: E731
    keep = sorted({size(p) for p in fitting})[:MODEL_PARALLEL_SIZES]
    return [p for p in fitting if size(p) in keep]


class Progress:
    """The planner's progress on stderr once it has run a second: a bar redrawn in place on a
    terminal, else a line at each tenth of the configurations."""

    def __init__(self) -> None:
        import time

        self.start, self.clock, self.shown = time.monotonic(), time.monotonic, -1

    def __call__(self, done: int, total: int) -> None:
        import sys

        from simulator.report.io import progress_bar

        if self.clock() - self.start < 1.0:
            return
        if sys.stderr.isatty():
            progress_bar(done, total, "configurations")
            return
        tenth = 10 * done // max(total, 1)
        if tenth > self.shown:
            self.shown = tenth
            print(f"hwsim plan: {done}/{total} configurations", file=sys.stderr, flush=True)


#: The levers ``explain`` pulls one at a time from the best plan.
LEVERS = ("device", "num_devices", "tp", "pp", "cp", "zero", "recompute", "micro_batch",
          "schedule")
_KEY = (*LEVERS, "virtual_stages", "first_stage_layers", "last_stage_layers", "ep")
_WORDS = {"cost": "cheapest", "time": "fastest", "energy": "most frugal"}


def explain(report: CapacityReport) -> list[str]:
    """Why the best plan is best -- its figures against the constraints and the runner-up --
    and what pulling one more lever from it buys: for each of ``LEVERS``, the fastest
    configuration evaluated that differs from the best in that lever alone, with its time,
    cost and energy against the best's and its verdict."""
    feasible = report.feasible
    if feasible.empty:
        return []
    best = feasible.iloc[0]
    first = RANKS[report.rank_by][0]
    limits = []
    if report.constraints.get("deadline_days") is not None:
        limits.append(f"{best.total_time_days:.3g} of {report.constraints['deadline_days']:g} "
                      "days")
    if report.constraints.get("budget_usd") is not None:
        limits.append(f"${best.cost_usd:,.0f} of ${report.constraints['budget_usd']:,.0f}")
    lines = [f"why: {_name(best)} is the {_WORDS[report.rank_by]} of {len(feasible)} feasible "
             f"configurations ({_figures(best)})"
             + (f", within {' and '.join(limits)}" if limits else "")]
    if len(feasible) > 1:
        second = feasible.iloc[1]
        lines.append(f"  runner-up: {_name(second)}: {_delta(second, best)}"
                     + (" (a tie)" if second[first] == best[first] else ""))
    table = pd.concat([feasible.drop(columns="rank"), report.rejected], ignore_index=True)
    keys = [k for k in _KEY if k in table.columns]
    same = {k: table[k].map(_value) == _value(best[k]) for k in keys}
    for lever in (k for k in LEVERS if k in keys):
        others = table[~same[lever] & np.logical_and.reduce(
            [same[k] for k in keys if k != lever]) & (table.status == "ok")]
        if others.empty:
            continue
        alt = others.sort_values(["total_time_s", "config"]).iloc[0]
        verdict = "feasible" if pd.isna(alt.get("reason")) else alt["reason"]
        lines.append(f"  {lever} {_value(best[lever])} -> {_value(alt[lever])}: "
                     f"{_delta(alt, best)}; {verdict}")
    return lines


def _value(value) -> str:
    """A table cell as text, whichever dtype its column got: 256, 256.0 -> "256"; NaN,
    None -> "nan"."""
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return "nan"
    if isinstance(value, (float, np.floating, np.integer)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _name(row) -> str:
    parts = [f"{row.device} x {int(row.num_devices)}", f"tp {int(row.tp)}", f"pp {int(row.pp)}"]
    parts += [f"{key} {int(size)}" for key in ("cp", "ep")
              if not pd.isna(size := getattr(row, key, 1)) and size > 1]
    parts += [f"ZeRO {int(row.zero)}", f"recompute {row.recompute}",
              f"micro-batch {int(row.micro_batch)}"]
    return ", ".join(parts)


def _figures(row) -> str:
    cost = "no price" if pd.isna(row.cost_usd) else f"${row.cost_usd:,.0f}"
    return f"{row.total_time_days:.3g} days, {cost}, {row.energy_kwh:,.0f} kWh"


def _delta(row, best) -> str:
    def change(key, fmt):
        now, was = row[key], best[key]
        if pd.isna(now) or pd.isna(was) or not was:
            return fmt(now) if not pd.isna(now) else "n/a"
        return f"{fmt(now)} ({now / was - 1:+.0%})"

    return ", ".join([change("total_time_days", lambda v: f"{v:.3g} days"),
                      change("cost_usd", lambda v: f"${v:,.0f}"),
                      change("energy_kwh", lambda v: f"{v:,.0f} kWh")])


def _shape(work) -> tuple[int, int, int]:
    heads = getattr(work, "heads", 1)
    return getattr(work, "layers", 1), heads, getattr(work, "n_kv_heads", None) or heads


def _batch(work) -> int:
    """About ``GLOBAL_BATCH_TOKENS`` tokens: the nearest power of two of sequences."""
    return 2 ** max(0, round(math.log2(GLOBAL_BATCH_TOKENS / work.tokens_per_sample)))


def _plans(n: int, work, fixed: dict | None = None) -> list[dict]:
    """Plans of ``work`` on n devices: tp within a node dividing the heads (and the KV heads,
    or a multiple of them: replicated), cp keeping ``CP_TOKENS`` tokens per rank, pp
    splitting the layers (see ``_stages``; interleaved too, see ``_schedules``), tp x cp x pp
    dividing n, dp dividing the batch's (``_batch``)
    micro-batches, ZeRO only with dp > 1 (and 0-2 with ep > 1, which refuses ZeRO-3).
    ``fixed`` (``capacity_plan``): a searched field given takes only its value; the plans
    keep the others' values."""
    fixed = fixed or {}
    (layers, heads, kv_heads), seq_len = _shape(work), work.tokens_per_sample
    batch = fixed.get("global_batch") or _batch(work)
    out = []
    cps = [c for c in (1, 2, 4, 8, 16) if c == 1 or
           (seq_len // c >= CP_TOKENS and not seq_len % (2 * c))]
    # tp dividing the KV heads, or a multiple of them (each replicated over tp / kv_heads
    # ranks, as Megatron-LM does: ParallelPlan's rule)
    tps = [t for t in (1, 2, 4, 8) if not heads % t and (not kv_heads % t or not t % kv_heads)]
    for tp, cp in itertools.product(_given(fixed, "tp", tps), _given(fixed, "cp", cps)):
        for pp in (p for p in _given(fixed, "pp", (1, 2, 4, 8)) if not n % (tp * cp * p)):
            stages = _stages(layers, pp)
            if stages is None:
                if "first_stage_layers" not in fixed and "last_stage_layers" not in fixed:
                    continue
                stages = {}
            dp = n // (tp * cp * pp)
            if "dp" in fixed and fixed["dp"] != dp:
                continue
            zeros = (0,) if dp * cp == 1 else (0, 1, 2, 3) if pp == 1 else (0, 1)
            for zero, recompute, micro, ep in itertools.product(
                    _given(fixed, "zero", zeros), _given(fixed, "recompute", ("none", "full")),
                    _given(fixed, "micro_batch", (1, 2, 4)),
                    _given(fixed, "ep", _expert_ranks(work, dp * cp))):
                if batch % (dp * micro) or (ep > 1 and zero == 3):   # refused (ParallelPlan)
                    continue
                schedules = ([{}] if "schedule" in fixed or "virtual_stages" in fixed
                             else _schedules(layers, pp, batch // (dp * micro), stages))
                for schedule in schedules:
                    out.append({"dp": dp, "tp": tp, "pp": pp, "zero": zero,
                                "recompute": recompute, "micro_batch": micro,
                                "global_batch": batch, **stages, **schedule,
                                **({"cp": cp} if cp > 1 else {}),
                                **({"ep": ep} if ep > 1 else {}), **fixed})
    return out


#: The fields ``_plans`` searches whose value given can leave it no plan.
_DIVIDING = ("tp", "pp", "cp", "dp", "ep", "zero", "micro_batch", "global_batch")


def _require_plans(counts, work, fixed: dict | None) -> None:
    """PlanError when ``fixed`` leaves ``_plans`` no plan on any of ``counts`` devices: the
    fixed fields without which some plan is left (all of them when no single one is), each
    with the rule it breaks."""
    fixed = fixed or {}
    if not fixed or any(_plans(n, work, fixed) for n in counts):
        return
    given = [k for k in _DIVIDING if k in fixed]
    culprits = [k for k in given if any(_plans(n, work, {f: v for f, v in fixed.items()
                                                          if f != k}) for n in counts)]
    culprits = culprits or given
    layers = _shape(work)[0]
    batch = fixed.get("global_batch") or _batch(work)
    default = "" if "global_batch" in fixed else ", a power of two near 4M tokens: give " \
                                                 "--global-batch"
    rules = {"tp": "tp x pp x cp must divide the device count",
             "cp": "tp x pp x cp must divide the device count",
             "pp": f"pp must split the {layers} layers and tp x pp x cp divide the device "
                   "count",
             "dp": "dp x tp x pp x cp must be the device count",
             "micro_batch": f"dp x micro-batch must divide the global batch ({batch} "
                            f"sequences{default})",
             "global_batch": f"the global batch ({batch}) must be a multiple of dp x "
                             "micro-batch",
             "ep": "ZeRO-3 cannot run with ep > 1", "zero": "ZeRO-3 cannot run with ep > 1"}
    flags = " ".join(f"--{k.replace('_', '-')} {plain(fixed[k])}" for k in culprits)
    why = "; ".join(dict.fromkeys(rules[k] for k in culprits))
    *most, last = [str(n) for n in counts]
    devices = f"{', '.join(most)} or {last}" if most else last
    raise PlanError(f"no plan keeps {flags} on {devices} devices: {why}")


def _check_tp_overlap(fixed: dict) -> None:
    """ParallelPlan's PlanError, up front, when ``fixed`` asks for tp_comm_overlap or
    lora_a2a without sequence parallelism: every searched tp > 1 candidate would be refused
    with it (NeMo's MegatronCommOverlapCallback turns the tp overlap off instead, with a
    warning, and Megatron-LM asserts: neither turns sequence parallelism on)."""
    from simulator.plan.parallel import ParallelPlan

    for name in ("tp_comm_overlap", "lora_a2a"):   # each needs sequence parallelism
        if fixed.get(name) and fixed.get("tp", 2) > 1:
            ParallelPlan(tp=fixed.get("tp", 2), **{name: True},
                         sequence_parallel=bool(fixed.get("sequence_parallel")),
                         hidden_sharded=bool(fixed.get("hidden_sharded")))


def _given(fixed: dict, name: str, values) -> tuple:
    """The values a searched field takes: the one given in ``fixed``, else ``values``."""
    return (fixed[name],) if name in fixed else tuple(values)


def _check_fixed(fixed: dict | None) -> dict:
    """``fixed`` without its None values, each a plan field (PlanError naming one that is
    not)."""
    from simulator.explore.sweep import FIELDS

    fixed = {k: v for k, v in (fixed or {}).items() if v is not None}
    for name in fixed:
        if name not in FIELDS:
            raise PlanError(f"{name!r} is not a plan field: use one of {', '.join(FIELDS)}")
    return fixed


def with_fixed(plans, fixed: dict):
    """A plan grid (dict of lists) or list of plans with ``fixed``'s fields added; a field
    both in the grid and fixed, or in a plan with another value, is a PlanError."""
    if isinstance(plans, dict):
        both = sorted(set(plans) & set(fixed))
        if both:
            raise PlanError(f"{both[0]} is given both as a fixed value and in the plan grid: "
                            "give one of them")
        return {**plans, **{k: [v] for k, v in fixed.items()}}
    for plan in plans:
        for key in sorted(set(plan) & set(fixed)):
            if plain(plan[key]) != plain(fixed[key]):
                raise PlanError(f"{key} is {plain(plan[key])!r} in a plan but fixed at "
                                f"{plain(fixed[key])!r}: give one of them")
    return [{**plan, **fixed} for plan in plans]


def _trim(plans: list[dict], work, level: int) -> list[dict]:
    """``plans`` trimmed to ``level``: 0 all; 1 a mixture of experts' ep 1 and the largest of
    its ep sizes within a node (``GPU_NODE_SIZE``: the all-to-alls on the node's network)
    only; 2 also without the ZeRO stages another stage beats (``_dominated_zero``)."""
    if level == 0:
        return plans
    out = []
    for plan in plans:
        ep = plan.get("ep", 1)
        if ep > 1 and ep != max(e for e in _expert_ranks(work, plan["dp"] * plan.get("cp", 1))
                                if e <= GPU_NODE_SIZE):
            continue
        if level < 2 or not _dominated_zero(plan):
            out.append(plan)
    return out


def _expert_ranks(work, replicas: int) -> list[int]:
    """Expert-parallel sizes to try for a mixture of experts (``simulator.parallel.expert``):
    1 and the powers of two up to 64 dividing both its experts and the dp x cp replicas the
    ep ranks are taken from; [1] for a dense model."""
    moe = getattr(work, "moe", None)
    if moe is None:
        return [1]
    return [1] + [e for e in (2, 4, 8, 16, 32, 64)
                  if not moe.experts % e and not replicas % e]


def _schedules(layers: int, pp: int, micro_batches: int, stages: dict) -> list[dict]:
    """1F1B (the sweep's default: {}) and, when the layers split evenly into two model chunks
    per stage and the micro-batches are a multiple of pp (Megatron-LM's rule), the interleaved
    schedule with two chunks: half the bubble for twice the pipeline messages (Narayanan et
    al. 2021, sec. 2.2.2)."""
    if pp == 1:
        return [{}]
    interleaved = not stages and not layers % (2 * pp) and not micro_batches % pp
    return [{}] + ([{"schedule": "interleaved", "virtual_stages": 2}] if interleaved else [])


def _stages(layers: int, pp: int) -> dict | None:
    """How ``pp`` stages split ``layers``: evenly ({}) when pp divides them; else, when
    layers + 2 divides evenly, one layer fewer on the first and the last stage, whose
    embedding and head take its place (Llama 3 405B: 126 layers on 16 stages, Dubey et al.
    2024, sec. 3.3.2); None when neither."""
    if not layers % pp:
        return {}
    if pp > 2 and not (layers + 2) % pp:
        ends = (layers + 2) // pp - 1
        return {"first_stage_layers": ends, "last_stage_layers": ends}
    return None


def _reason(row, deadline_days, budget_usd) -> str | None:
    if row.status != "ok":
        return "invalid plan: " + row.status.removeprefix("invalid: ")
    if not row.fits:
        return (f"does not fit ({row.peak_memory_bytes / 2 ** 30:.1f} GiB > "
                f"{row.memory_capacity_bytes / 2 ** 30:.1f} GiB)")
    if deadline_days is not None and row.total_time_days > deadline_days:
        return f"misses deadline ({row.total_time_days:.1f} days > {deadline_days:g})"
    if budget_usd is not None:
        if math.isnan(row.cost_usd):
            return NO_PRICE
        if row.cost_usd > budget_usd:
            return f"over budget (${row.cost_usd:,.0f} > ${budget_usd:,.0f})"
    return None


_NEAREST = {"misses deadline": "total_time_days", "over budget": "cost_usd",
            "does not fit": "peak_memory_bytes"}


def _closest(rejected: pd.DataFrame, kind: str) -> str:
    """The reason of the rejection of ``kind`` nearest to passing (the shortest run, the
    cheapest, the smallest memory), else the first."""
    rows = rejected[rejected.rejected_by == kind]
    column = _NEAREST.get(kind)
    if column in rows.columns and rows[column].notna().any():
        return rows.loc[rows[column].idxmin(), "reason"]
    return rows.reason.iloc[0]
