"""Capacity planning (``simulator.explore.capacity``): answers checked against brute force on a small
grid, the Pareto front's definition, rejection reasons, the default search space, the CLI."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from simulator.cli import main
from simulator.cli.explore import plan_text
from simulator.errors import PlanError
from simulator.plan.parallel import ParallelPlan
from simulator.explore.capacity import MAX_CONFIGS, NO_PRICE, OBJECTIVES, judge, capacity_plan, search_space
from simulator.report.views import pareto_front
from simulator.explore.sweep import resolve_devices, sweep
from workloads.transformer import TransformerConfig
from workloads.zoo import get_workload

TINY = TransformerConfig(name="tiny", layers=4, hidden=128, heads=4, vocab=256, seq_len=64)
GRID = {"tp": [1, 2, 3], "pp": [1, 2], "zero": [0, 1], "recompute": ["none", "full"],
        "micro_batch": [1, 2], "global_batch": [16]}
COUNTS = [1, 2, 4]
TOKENS = 2e8
PRICED = {"price_per_hour_usd": 2.0}


@pytest.fixture(scope="module")
def rows():
    return sweep(TINY, ["a100", "h100"], COUNTS, GRID, tokens=TOKENS, workers=1,
                 progress=False, overrides=PRICED)


def _deadline_and_budget(rows):
    ok = rows[(rows.status == "ok") & rows.fits.fillna(False).astype(bool)]
    return float(ok.total_time_days.median()), float(ok.cost_usd.quantile(0.7))


@pytest.mark.parametrize("rank_by, keys", [("cost", ["cost_usd", "total_time_s"]),
                                           ("time", ["total_time_s", "cost_usd"]),
                                           ("energy", ["energy_kwh", "total_time_s"])])
def test_planner_agrees_with_brute_force(rows, rank_by, keys):
    deadline, budget = _deadline_and_budget(rows)
    report = capacity_plan(TINY, TOKENS, devices=["a100", "h100"], device_counts=COUNTS, plans=GRID,
                  deadline_days=deadline, budget_usd=budget, rank_by=rank_by, workers=1,
                  overrides=PRICED, progress=False)
    brute = rows[(rows.status == "ok") & rows.fits.fillna(False).astype(bool)
                 & (rows.total_time_days <= deadline) & (rows.cost_usd <= budget)]
    order = sorted(brute.itertuples(), key=lambda r: (*(getattr(r, k) for k in keys), r.config))
    assert list(report.feasible.config) == [r.config for r in order]
    assert list(report.feasible["rank"]) == list(range(1, len(order) + 1))
    assert len(report.feasible) + len(report.rejected) == len(rows)
    pd.testing.assert_frame_equal(report.rows, rows)


def test_each_rejection_names_the_first_rule_broken(rows):
    deadline, budget = _deadline_and_budget(rows)
    report = judge(rows, deadline, budget)
    for row in report.rejected.itertuples():
        if row.status != "ok":
            assert row.reason.startswith("invalid plan: ") and row.rejected_by == "invalid plan"
        elif not row.fits:
            assert row.reason.startswith("does not fit (")
        elif row.total_time_days > deadline:
            assert row.reason.startswith("misses deadline (") and "days >" in row.reason
        else:
            assert row.cost_usd > budget and row.reason.startswith("over budget ($")
    assert set(report.rejections().index) <= {"invalid plan", "does not fit",
                                              "misses deadline", "over budget"}
    assert report.rejections()["invalid plan"] == (rows.status != "ok").sum()


def _dominates(a, b) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def test_pareto_front_is_exactly_the_non_dominated_feasible_rows(rows):
    report = judge(rows, rank_by="cost")
    objectives = ["total_time_s", "cost_usd", "energy_kwh"]
    feasible = report.feasible[objectives].to_numpy()
    front = report.pareto[objectives].to_numpy()
    assert 0 < len(front) < len(feasible)
    for point in front:
        assert not any(_dominates(other, point) for other in feasible)
    in_front = set(report.pareto.config)
    for config, point in zip(report.feasible.config, feasible):
        if config not in in_front:
            assert any(_dominates(f, point) for f in front)


def test_pareto_front_by_hand():
    table = pd.DataFrame({"total_time_s": [1, 2, 3, 1, 2], "cost_usd": [5, 4, 3, 5, math.nan],
                          "energy_kwh": [1, 1, 1, 2, 0.5]})
    # row 3 is dominated by row 0; row 4 has no cost (inf) but the least energy
    assert pareto_front(table, OBJECTIVES).tolist() == [True, True, True, False, True]


def test_devices_without_a_price_and_a_budget():
    # the MI100 has a purchase price but no cited on-demand one
    report = capacity_plan(TINY, TOKENS, devices=["mi100"], device_counts=[1], plans={"tp": [1]},
                  budget_usd=1e9, workers=1, progress=False)
    assert report.feasible.empty
    assert set(report.rejected.reason) == {NO_PRICE}
    free = capacity_plan(TINY, TOKENS, devices=["mi100"], device_counts=[1], plans={"tp": [1]},
                workers=1, progress=False)
    assert len(free.feasible) == 1 and math.isnan(free.feasible.cost_usd.iloc[0])


def test_impossible_deadline_says_why():
    report = capacity_plan(TINY, 1e15, devices=["h100"], device_counts=[1, 2], plans={"tp": [1]},
                  deadline_days=1, workers=1, progress=False)
    assert report.feasible.empty and report.pareto.empty
    why = report.why_nothing()
    assert why.startswith("nothing feasible among 2 configurations: 2 misses deadline")
    assert "\n" not in why


def test_bad_input():
    for kwargs in ({"rank_by": "speed"}, {"deadline_days": 0}, {"budget_usd": -1}):
        with pytest.raises(PlanError):
            capacity_plan(TINY, TOKENS, devices=["a100"], plans={"tp": [1]}, progress=False, **kwargs)
    with pytest.raises(PlanError, match="not a language model"):
        capacity_plan("resnet-50", 1e9, devices=["a100"], progress=False)


@pytest.mark.parametrize("model", ["gpt2-small", "llama2-7b", "llama2-70b", "gpt3-175b",
                                   "llama3-405b"])
def test_default_search_space_is_bounded_and_sensible(model):
    work = get_workload(model)
    specs = resolve_devices(["a100", "h100", "h200", "mi300x"], None)
    plans = search_space(work, specs)
    assert 0 < len(plans) * len(specs) <= MAX_CONFIGS
    for p in plans:
        n = p["dp"] * p["tp"] * p["pp"] * p.get("cp", 1)
        assert n & (n - 1) == 0                                   # a power of two
        assert p["tp"] <= 8 and work.heads % p["tp"] == 0
        assert work.seq_len // p.get("cp", 1) >= 8192 or "cp" not in p
        if p.get("schedule") == "interleaved":   # two even chunks, micro-batches % pp == 0
            assert p["pp"] > 1 and p["virtual_stages"] == 2
            assert work.layers % (2 * p["pp"]) == 0
            assert p["global_batch"] // (p["dp"] * p["micro_batch"]) % p["pp"] == 0
        split = ParallelPlan(pp=p["pp"], first_stage_layers=p.get("first_stage_layers"),
                             last_stage_layers=p.get("last_stage_layers")).stage_layers(
                                 work.layers)
        assert max(split) - min(split) <= 1    # even, or one fewer on the first and last
        assert p["zero"] in (0, 1, 2, 3) and (p["dp"] > 1 or p["zero"] == 0)
        assert p["micro_batch"] in (1, 2, 4)
        assert p["global_batch"] % (p["dp"] * p["micro_batch"]) == 0
    # selective recomputation is the default fused attention's own: the same step as none
    assert {p["recompute"] for p in plans} == {"none", "full"}
    assert any(p.get("schedule") == "interleaved" for p in plans) == any(
        p["pp"] > 1 and not work.layers % (2 * p["pp"]) for p in plans)
    assert len({repr(sorted(p.items())) for p in plans}) == len(plans)


@pytest.mark.slow
def test_pipelines_not_dividing_the_layers_balance_their_ends():
    """Llama 3 405B's 126 layers: 4 and 8 stages divide 126 + 2, so the planner runs them with
    one layer fewer on the first and last stage (31 and 15 there); the plans run."""
    plans = search_space(get_workload("llama3-405b"), resolve_devices(["h100"], None))
    ends = {(p["pp"], p.get("first_stage_layers"), p.get("last_stage_layers")) for p in plans}
    assert {(4, 31, 31), (8, 15, 15)} <= ends and all(pp in (1, 2, 4, 8) for pp, *_ in ends)
    deep = TransformerConfig(name="deep", layers=30, hidden=128, heads=4, vocab=256,
                             seq_len=64)
    rows = capacity_plan(deep, 1e7, devices=["h100"], device_counts=[4], workers=1,
                progress=False).rows
    four = rows[rows.pp == 4]
    assert len(four) and (four.status == "ok").all()
    assert (four.first_stage_layers == 7).all() and (four.last_stage_layers == 7).all()


@pytest.mark.slow
def test_long_sequences_get_context_parallel_plans_that_run():
    """At 32K tokens the space holds cp 2 and 4 (8K tokens or more per rank, as Llama 3's cp 16
    at 128K), never at the default 8K; the plans run, and the interleaved ones too."""
    short = get_workload("llama3-8b")
    assert not any("cp" in p for p in search_space(short, resolve_devices(["h100"], None)))
    long = replace(short, seq_len=32768)
    plans = search_space(long, resolve_devices(["h100"], None))
    assert {p.get("cp", 1) for p in plans} == {1, 2, 4}
    small = TransformerConfig(name="small", layers=8, hidden=256, heads=8, vocab=512,
                              seq_len=16384)
    report = capacity_plan(small, 1e9, devices=["h100"], device_counts=[8], workers=1, progress=False)
    rows = report.rows
    assert set(rows.cp.fillna(1)) == {1, 2} and set(rows.schedule.dropna()) >= {"interleaved"}
    assert (rows.status == "ok").all()
    header, *lines = plan_text(report, top=len(rows)).splitlines()[1:]
    assert header.split()[5:8] == ["pp", "cp", "schedule"]
    shown = set()
    for line in lines[:len(report.feasible)]:
        pp, cp, schedule, after = line.split()[5:9]   # "interleaved x2" is two words
        shown.add((pp, cp, f"{schedule} {after}" if schedule == "interleaved" else schedule))
    assert {("1", "2", "none"), ("2", "1", "interleaved x2"), ("2", "2", "1f1b")} <= shown


def test_cli(tmp_path, capsys):
    out = tmp_path / "plan.csv"
    assert main(["plan", "gpt2-small", "--tokens", "1e9", "--devices", "h100",
                 "--device-counts", "1,2", "--grid", "tp=1,2", "--grid", "recompute=none,full",
                 "--budget-usd", "1e6", "--workers", "1", "--top", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "feasible; top 3 by cost" in text and "Pareto front" in text
    assert " schedule " in text and " cp " not in text   # no plan splits the sequences
    assert "rejected: " in text and "invalid plan" in text  # tp 2 on one device
    assert len(pd.read_csv(out)) == 8
    assert main(["plan", "gpt2-small", "--tokens", "1e15", "--devices", "h100",
                 "--device-counts", "1", "--grid", "tp=1", "--deadline-days", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "misses deadline" in err
    assert main(["plan", "gpt2-small", "--tokens", "1e9", "--devices", "h100,zzz"]) == 2
    assert main(["plan", "gpt2-small", "--tokens", "1e9", "--rank-by", "speed"]) == 2


def test_plan_notes_keep_a_semicolon_inside_their_parentheses(capsys):
    """The rows join a configuration's notes with '; '; the plan split them back at every
    '; ', so a note with one in its parenthesis printed as two broken lines ('... (the V100
    figure applies to GPUs only' and '--rank-variability C sets one)')."""
    from simulator.cli.explore import split_notes

    assert split_notes("a (b; c) d; e; f (g; (h; i)) j") == ["a (b; c) d", "e", "f (g; (h; i)) j"]
    assert split_notes("") == [] and split_notes("one") == ["one"]
    assert main(["plan", "gpt3-125m", "--tokens", "1e9", "--devices", "tpu-v4",
                 "--device-counts", "2", "--grid", "tp=1", "--grid", "zero=1", "--grid",
                 "micro_batch=1", "--workers", "1"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert any("GPUs only; --rank-variability C sets one)" in note for note in notes)
    assert all(note.count("(") == note.count(")") for note in notes)


def test_rows_without_notes_print_none():
    """A row with no notes ('') explodes to NaN; before, the planner printed 'note: nan'."""
    import pandas as pd

    from simulator.cli.explore import note_lines
    assert note_lines(pd.Series(["a; b (c; d)", "", None, "a"])) == [
        "note: a", "note: b (c; d)"]


def test_a_recommended_device_on_priors_or_datasheet_rates_is_named(capsys):
    """``hwsim plan`` says, as ``compare`` does, which shown configuration's device runs its
    GEMMs or streams on class priors or the datasheet: Gaudi 3's streams are its datasheet
    bandwidth (no measured memory_efficiency), the MI325X's the GPU class medians (priors);
    the H100 searched beside them but not shown is not named."""
    assert main(["plan", "gpt2-small", "--tokens", "1e9", "--devices", "gaudi3,mi325x",
                 "--device-counts", "1", "--grid", "recompute=none", "--grid", "zero=0",
                 "--micro-batch", "4", "--workers", "1", "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    summary = [line for line in lines if line.startswith("note: on class priors")]
    assert len(summary) == 1
    assert "gaudi3 (stream)" in summary[0] and "mi325x (stream, norm)" in summary[0]
    assert main(["plan", "gpt2-small", "--tokens", "1e9", "--devices", "gaudi3,h100",
                 "--device-counts", "1", "--grid", "recompute=none", "--grid", "zero=0",
                 "--micro-batch", "4", "--workers", "1", "--top", "1", "--rank-by", "time"]) == 0
    summary = capsys.readouterr().out.splitlines()[-1]
    assert summary.startswith("note: on class priors") and summary.endswith(": gaudi3 (stream)")
