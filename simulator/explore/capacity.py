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
batch of about 4M tokens (Llama 2's, Touvron et al. 2023b, sec. 2.2).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from simulator.errors import PlanError
from simulator.explore.sweep import resolve_devices, sweep
from simulator.plan.step import Plan
from simulator.report.views import pareto_front
from workloads.zoo import get_workload

DEFAULT_DEVICES = ("a100-sxm4-80gb", "h100-sxm5-80gb", "h200-sxm", "mi300x")
RANKS = {"cost": ("cost_usd", "total_time_s", "energy_kwh"),
         "time": ("total_time_s", "cost_usd", "energy_kwh"),
         "energy": ("energy_kwh", "total_time_s", "cost_usd")}
OBJECTIVES = ("total_time_s", "cost_usd", "energy_kwh")
GLOBAL_BATCH_TOKENS = 4e6        # Llama 2's global batch (Touvron et al. 2023b, sec. 2.2)
CP_TOKENS = 8192                 # fewest tokens per context-parallel rank (Llama 3: 131,072 / 16)
COUNTS = 4                       # powers of two in the default device counts
MAX_CONFIGS = 5000               # the default search space's bound
NO_PRICE = "no price for device-hour (set price_per_hour_usd with --set)"


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

    def rejections(self) -> pd.Series:
        """How many configurations each rule rejected, most first."""
        if self.rejected.empty:
            return pd.Series(dtype="int64", name="count")
        return self.rejected["rejected_by"].value_counts()

    def why_nothing(self) -> str:
        """One line saying why no configuration is feasible (empty when some are)."""
        if not self.feasible.empty:
            return ""
        parts = [f"{count} {kind} (closest: {_closest(self.rejected, kind)})"
                 for kind, count in self.rejections().items()]
        return (f"nothing feasible among {len(self.rows)} configurations: " + "; ".join(parts)
                + "; relax the deadline or budget, or add devices or device counts")


def capacity_plan(model, tokens: float, *, devices: list[str] | None = None,
                  device_counts: list[int] | None = None, deadline_days: float | None = None,
                  budget_usd: float | None = None, rank_by: str = "cost",
                  plans: list[dict] | dict[str, list] | None = None, workers: int | None = None,
                  overrides: dict | None = None, client=None, progress=True,
                  **totals) -> CapacityReport:
    """Rank the configurations that train ``model`` on ``tokens`` within the constraints."""
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
    specs = resolve_devices(list(devices or DEFAULT_DEVICES), overrides)
    if plans is None:
        plans = search_space(work, specs) if device_counts is None else [
            p for n in device_counts for p in _plans(n, work)]
        device_counts = None  # each plan names its dp, so its device count
    rows = sweep(work, specs, device_counts, plans, tokens=tokens, workers=workers,
                 client=client, progress=progress, **totals)
    return judge(rows, deadline_days, budget_usd, rank_by)


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


def search_space(work, specs) -> list[dict]:
    """The default plans (with dp: each names its device count) for a transformer, over
    ``COUNTS`` powers of two from the fewest devices whose memory could hold the model states;
    the largest counts are dropped while the space exceeds ``MAX_CONFIGS`` configurations."""
    capacity = min(spec.memory_bytes for spec in specs)
    per_param = sum(Plan().state_bytes_per_param().values())  # its plans keep bf16 AdamW: 16
    fewest = max(1.0, per_param * work.num_params() / capacity)
    start = 2 ** math.ceil(math.log2(fewest))
    counts = [start * 2 ** i for i in range(COUNTS)]
    while True:
        plans = [p for n in counts for p in _plans(n, work)]
        if len(plans) * len(specs) <= MAX_CONFIGS or len(counts) == 1:
            break
        counts.pop()
    if len(plans) * len(specs) > MAX_CONFIGS:
        raise PlanError(f"the default search space has {len(plans) * len(specs)} "
                        f"configurations (over {MAX_CONFIGS}): give fewer devices, device "
                        "counts or a plan grid")
    return plans


def _shape(work) -> tuple[int, int, int]:
    heads = getattr(work, "heads", 1)
    return getattr(work, "layers", 1), heads, getattr(work, "n_kv_heads", None) or heads


def _batch(work) -> int:
    """About ``GLOBAL_BATCH_TOKENS`` tokens: the nearest power of two of sequences."""
    return 2 ** max(0, round(math.log2(GLOBAL_BATCH_TOKENS / work.tokens_per_sample)))


def _plans(n: int, work) -> list[dict]:
    """Plans of ``work`` on n devices: tp within a node dividing the heads, cp keeping
    ``CP_TOKENS`` tokens per rank, pp splitting the layers (see ``_stages``; interleaved too,
    see ``_schedules``), tp x cp x pp dividing n, dp dividing the batch's (``_batch``)
    micro-batches, ZeRO only with dp > 1."""
    (layers, heads, kv_heads), batch, seq_len = _shape(work), _batch(work), \
        work.tokens_per_sample
    out = []
    cps = [c for c in (1, 2, 4, 8, 16) if c == 1 or
           (seq_len // c >= CP_TOKENS and not seq_len % (2 * c))]
    for tp, cp in itertools.product((t for t in (1, 2, 4, 8) if not heads % t
                                     and not kv_heads % t), cps):
        for pp in (p for p in (1, 2, 4, 8) if not n % (tp * cp * p)):
            stages = _stages(layers, pp)
            if stages is None:
                continue
            dp = n // (tp * cp * pp)
            zeros = (0,) if dp * cp == 1 else (0, 1, 2, 3) if pp == 1 else (0, 1)
            for zero, recompute, micro, ep in itertools.product(
                    zeros, ("none", "full"), (1, 2, 4), _expert_ranks(work, dp * cp)):
                if batch % (dp * micro):
                    continue
                for schedule in _schedules(layers, pp, batch // (dp * micro), stages):
                    out.append({"dp": dp, "tp": tp, "pp": pp, "zero": zero,
                                "recompute": recompute, "micro_batch": micro,
                                "global_batch": batch, **stages, **schedule,
                                **({"cp": cp} if cp > 1 else {}),
                                **({"ep": ep} if ep > 1 else {})})
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
        return (f"does not fit ({row.peak_memory_bytes / 1e9:.1f} GB > "
                f"{row.memory_capacity_bytes / 1e9:.0f} GB)")
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
