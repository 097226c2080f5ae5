"""Sweeps (``simulator.explore.sweep``): rows, invalid plans as rows, executors giving identical rows,
the stage cache changing nothing, interrupted sweeps keeping their rows, the CLI."""
from __future__ import annotations

import pandas as pd
import pytest

from simulator import StageCache, simulate
from simulator.cli import main
from simulator.errors import PlanError, SpecError
from simulator.plan.parallel import ParallelPlan
from simulator.plan.step import Plan
from simulator.explore.sweep import compare, expand, parse_grid, sweep
from workloads.transformer import TransformerConfig

TINY = TransformerConfig(name="tiny", layers=4, hidden=128, heads=4, vocab=256, seq_len=64)
DEVICES = ["a100", "h100"]
GRID = {"tp": [1, 2, 3], "pp": [1, 2], "zero": [0, 3], "global_batch": [8]}


@pytest.fixture(scope="module")
def local():
    return sweep(TINY, DEVICES, [2, 4], GRID, workers=1, progress=False)


def test_rows_are_configurations_sorted_with_invalid_ones_as_rows(local):
    assert len(local) == 2 * 2 * 3 * 2 * 2
    assert list(local.config) == list(range(len(local)))
    bad = local[local.tp == 3]
    assert (bad.status.str.startswith("invalid: ")).all()
    assert bad.step_time_s.isna().all()
    ok = local[local.status == "ok"]
    assert len(ok) > 0 and ok.step_time_s.gt(0).all()
    assert (ok.dp * ok.tp * ok.pp == ok.num_devices).all()
    assert {"memory_weights", "bubble_fraction", "cost_usd_per_step", "fits"} <= set(local)


def test_a_row_is_what_simulate_says(local):
    row = local[(local.device == "h100-sxm5-80gb") & (local.num_devices == 4) & (local.tp == 2)
                & (local.pp == 1) & (local.zero == 3)].iloc[0]
    direct = simulate(TINY, "h100", parallel=ParallelPlan(dp=2, tp=2, zero=3), global_batch=8)
    assert row.step_time_s == direct.step_time_s
    assert row.peak_memory_bytes == direct.peak_memory_bytes
    assert row.energy_j_per_step == direct.energy_j_per_step
    assert row.cost_usd_per_step == pytest.approx(
        direct.step_time_s * 4 * 12.29 / 3600)


def test_the_memo_changes_nothing(local):
    plain = sweep(TINY, DEVICES, [2, 4], GRID, workers=1, progress=False, memo=False)
    pd.testing.assert_frame_equal(plain, local)


def test_a_stage_cache_changes_no_figure_and_is_reused():
    """simulate(cache=...) gives the figures it gives without one; plans differing only in
    fields the stage's forward does not read share its forward graph."""
    cache = StageCache()
    parallel = ParallelPlan(dp=2, tp=2, zero=1)
    for recompute in ("none", "full", "none"):
        cached = simulate(TINY, "a100", parallel=parallel, global_batch=8, micro_batch=1,
                          recompute=recompute, cache=cache)
        plain = simulate(TINY, "a100", parallel=parallel, global_batch=8, micro_batch=1,
                         recompute=recompute)
        assert cached.summary() == plain.summary()
    assert (len(cache.forwards), len(cache.steps)) == (1, 2)


def test_bias_add_and_rank_variability_share_the_stage_graphs():
    """bias_add is read by the training step, not the forward: plans differing in it share
    one forward graph and build two steps; rank_variability only scales the priced step: plans
    differing in it share both. The figures are simulate()'s without the cache."""
    parallel = ParallelPlan(dp=2, tp=2)
    runs = {"bias_add": ("fused", "separate", "fused"), "rank_variability": (0.0, 0.1, 0.2)}
    for name, values in runs.items():
        cache = StageCache()
        for value in values:
            cached = simulate(TINY, "a100", parallel=parallel, global_batch=8, micro_batch=1,
                              cache=cache, **{name: value})
            plain = simulate(TINY, "a100", parallel=parallel, global_batch=8, micro_batch=1,
                             **{name: value})
            assert cached.summary() == plain.summary()
        built = len(set(values)) if name == "bias_add" else 1
        assert (len(cache.forwards), len(cache.steps)) == (1, built), name


def test_the_forward_key_names_plan_fields():
    from dataclasses import fields

    from simulator.explore.memo import FORWARD_UNREAD
    from simulator.explore.memo import STEP_UNREAD
    for cls, names in FORWARD_UNREAD.items():
        assert set(names) < {f.name for f in fields(cls)}
    assert set(STEP_UNREAD) <= set(FORWARD_UNREAD[Plan])


def test_the_memo_tells_model_chunks_apart():
    """Interleaved plans that differ only in their model chunks per device build different
    stage graphs: each row is what simulate() says, memo or not."""
    deep = TransformerConfig(name="deep", layers=16, hidden=128, heads=4, vocab=256, seq_len=64)
    rows = sweep(deep, ["a100"], [4], {"pp": [4], "schedule": ["interleaved"],
                                       "virtual_stages": [2, 4], "global_batch": [8]},
                 workers=1, progress=False)
    for row in rows.itertuples():
        direct = simulate(deep, "a100", global_batch=8, parallel=ParallelPlan(
            pp=4, schedule="interleaved", virtual_stages=row.virtual_stages))
        assert row.step_time_s == direct.step_time_s


def test_process_pool_gives_identical_rows(local):
    pd.testing.assert_frame_equal(sweep(TINY, DEVICES, [2, 4], GRID, workers=2,
                                        progress=False), local)


def test_dask_local_cluster_gives_identical_rows(local):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        rows = sweep(TINY, DEVICES, [2, 4], GRID, client=client, progress=False)
    pd.testing.assert_frame_equal(rows, local)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_an_interrupted_sweep_keeps_its_rows(tmp_path, local, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / f"rows{suffix}"
    calls = []

    def progress(done, total):
        calls.append(done)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(TINY, DEVICES, [2, 4], GRID, workers=1, out=out, progress=progress)
    kept = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert len(kept) == calls[-1] and 0 < len(kept) < len(local)
    assert list(kept.config) == list(range(len(kept)))
    expected = local.iloc[:len(kept)]
    pd.testing.assert_series_equal(kept.step_time_s, expected.step_time_s, check_names=False)
    assert list(kept.status) == list(expected.status)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_out_is_the_whole_frame(tmp_path, local):
    out = tmp_path / "all.csv"
    rows = sweep(TINY, DEVICES, [2, 4], GRID, workers=1, out=out, progress=False)
    assert len(pd.read_csv(out)) == len(rows)
    with pytest.raises(Exception, match=".csv or .parquet"):
        sweep(TINY, DEVICES, [2], GRID, out=tmp_path / "rows.xlsx")


def test_grids_and_bad_input():
    assert expand({"tp": [1, 2], "zero": 1}) == [{"tp": 1, "zero": 1}, {"tp": 2, "zero": 1}]
    assert expand(None) == [{}]
    assert parse_grid(["tp=1,2", "recompute=none,full", "sequence-parallel=true"]) == {
        "tp": [1, 2], "recompute": ["none", "full"], "sequence_parallel": [True]}
    for bad in ({"tp": []}, [], {"colour": [1]}):
        with pytest.raises(PlanError):
            expand(bad)
    for bad in (["tp="], ["tp=a"], ["nope=1"]):
        with pytest.raises(PlanError):
            parse_grid(bad)
    with pytest.raises(SpecError, match="unknown device 'nope'"):
        sweep(TINY, ["a100", "nope"], progress=False)
    with pytest.raises(PlanError):
        sweep(TINY, ["a100"], [0], progress=False)


def test_framework_behaviours_are_sweepable():
    """The plan's overlap and accumulation switches are grid fields like the others: turning
    the overlap of the data-parallel reduction off makes this step slower (gpt2: a tiny
    model's gradients all fit PyTorch DDP's first bucket of 1 MiB, reduced when the backward
    ends, overlapped or not)."""
    grid = parse_grid(["overlap-grad-reduce=true,false", "overlap-tp-comm=false",
                       "fused-grad-accumulation=false", "graphs=true"])
    rows = sweep("gpt2", ["a100"], [4], {**grid, "dp": [2], "tp": [2], "global_batch": [8]},
                 workers=1, progress=False)
    assert list(rows.status) == ["ok", "ok"]
    assert not rows.overlap_tp_comm.any() and not rows.fused_grad_accumulation.any()
    on, off = rows[rows.overlap_grad_reduce].iloc[0], rows[~rows.overlap_grad_reduce].iloc[0]
    assert off.step_time_s > on.step_time_s


def test_every_plan_field_is_a_grid_field():
    """The grid's field lists name every field of ParallelPlan and Plan (but micro_batches,
    which the global batch gives), so a field added to a plan is sweepable."""
    from dataclasses import fields

    from simulator.plan.step import Plan
    from simulator.explore.sweep import PARALLEL_FIELDS, PLAN_FIELDS
    assert set(PARALLEL_FIELDS) == {f.name for f in fields(ParallelPlan)} - {"micro_batches"}
    assert set(PLAN_FIELDS) == {f.name for f in fields(Plan)}


def test_context_parallel_is_sweepable():
    """cp is a grid field: its devices come with it (dp x tp x pp x cp by default)."""
    rows = sweep(TINY, ["a100"], None, {"cp": [1, 2], "attention": ["fused"],
                                         "global_batch": [4]}, workers=1, progress=False)
    assert list(rows.status) == ["ok", "ok"]
    assert list(rows.num_devices) == [1, 2]


def test_device_counts_default_to_the_plan_and_overrides_apply():
    rows = sweep(TINY, ["a100"], None, [{"dp": 2, "tp": 2}, {}], workers=1, progress=False,
                 overrides={"price_per_hour_usd": 2.0}, tokens=1e6)
    assert list(rows.num_devices) == [4, 1]
    assert (rows.price_per_hour_usd == 2.0).all()
    assert rows.cost_usd.notna().all() and (rows.total_time_days > 0).all()


def test_compare_one_row_per_device():
    rows = compare(TINY, ["a100", "h100", "mi210"], micro_batch=2, tokens=1e6)
    assert list(rows.device) == ["a100-sxm4-80gb", "h100-sxm5-80gb", "mi210"]
    assert {"step_time_s", "tokens_per_s", "mfu", "fits", "energy_j_per_step",
            "cost_usd_per_step", "cost_usd"} <= set(rows.columns)
    assert rows.cost_usd.isna().tolist() == [False, False, True]  # the MI210 has no price


def test_cli(tmp_path, capsys):
    out = tmp_path / "s.csv"
    assert main(["sweep", "gpt2-small", "--devices", "a100,h100", "--device-counts", "2",
                 "--grid", "tp=1,2,5", "--out", str(out), "--workers", "1"]) == 0
    assert "wrote 6 configurations (4 valid, 2 invalid)" in capsys.readouterr().out
    assert len(pd.read_csv(out)) == 6
    assert main(["compare", "gpt2-small", "--devices", "a100,h100", "--csv"]) == 0
    assert len(pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))) == 2
    for argv in (["sweep", "gpt2-small", "--devices", "a100,nope"],
                 ["sweep", "gpt2-small", "--devices", "a100", "--grid", "tp="],
                 ["sweep", "gpt2-small", "--devices", ","],
                 ["compare", "gpt2-small", "--devices", "a100", "--set", "memory.x.y=1"],
                 ["sweep", "gpt2-small", "--devices", "a100", "--device-counts", "0"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("hwsim: error: ") and err.count("\n") == 1


@pytest.mark.parametrize("flags, message", [
    (["--ep", "0"], "ep = 0 must be a positive integer"),
    (["--own-years", "3", "--tokens", "1e9"], "needs both own_years and electricity"),
    (["--tp", "5", "--num-devices", "5"], "tp = 5 must divide"),
])
def test_compare_with_flags_no_device_can_run_is_one_line(flags, message, capsys):
    """A plan every device refuses for the same reason is the flags' mistake: one line, exit
    2 (it printed a table of 'invalid: ...' rows and exited 0); a row invalid on one device
    only stays a row."""
    assert main(["compare", "gpt2-small", "--devices", "a100,h100", *flags]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and message in captured.err
    assert main(["compare", "gpt2-small", "--devices", "a100,h100", "--power-limit-w", "120",
                 "--csv"]) == 0   # above the A100's floor (92 W), below the H100's (153 W)
    rows = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert rows.status.str.startswith("invalid").tolist() == [False, True]


def test_compare_says_which_micro_batch_each_device_ran(capsys):
    """Given a global batch and no micro-batch, each device runs the largest micro-batch that
    divides its replica's batch and fits (issue 22, item 1: 'say which'); compare's table and
    --json did not show it, though it differs by device: Llama 2 7B, 8 devices, ZeRO 1, a
    global batch of 64 (8 per replica) takes 2 on an 80 GB A100 and 8 on a 192 GB MI300X."""
    import json

    assert main(["compare", "llama2-7b", "--devices", "a100,mi300x", "--num-devices", "8",
                 "--zero", "1", "--global-batch", "64", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["micro_batch"] for row in rows] == [2, 8]
    for row in rows:   # the largest of 1, 2, 4, 8 that fits
        alone = simulate("llama2-7b", row["device"], num_devices=8, zero=1, global_batch=64,
                         micro_batch=row["micro_batch"])
        assert alone.fits and alone.step_time_s == pytest.approx(row["step_time_s"])
    assert not simulate("llama2-7b", "a100", num_devices=8, zero=1, global_batch=64,
                        micro_batch=4).fits


def test_compare_no_device_can_run_for_different_reasons_is_one_line(capsys):
    """Every device refusing the plan, each for its own reason (a power limit under each
    device's floor, which the reason names), is still the flags' mistake: one line naming each
    device's reason, exit 2 (it printed a table of 'invalid: ...' rows and exited 0); past three
    reasons, the first three and 'and N more devices'."""
    assert main(["compare", "gpt2-small", "--devices", "h100,a100",
                 "--power-limit-w", "50"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    err = captured.err
    assert err.startswith("hwsim: error: no device can run this plan: power_limit_w = 50 W")
    assert "h100-sxm5-80gb" in err and "at least 153" in err   # each device's own floor
    assert "a100-sxm4-80gb" in err and "at least 92" in err
    assert err.count("h100-sxm5-80gb") == 1 and "and 1 more" not in err   # named once
    assert main(["compare", "gpt2-small", "--devices", "a100,h100,b200,mi300x,h200",
                 "--power-limit-w", "50"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.count("give at least") == 3
    assert err.rstrip().endswith("; and 2 more devices") and "mi300x" not in err


def test_no_device_runs_names_the_devices_a_reason_does_not():
    """A reason that does not name its device is prefixed by the devices giving it, once."""
    from simulator.cli.explore import _no_device_runs

    rows = pd.DataFrame({"device": ["a", "b", "c"],
                         "status": ["invalid: x too big", "invalid: x too big",
                                    "invalid: c has no y"]})
    assert _no_device_runs(rows) == "no device can run this plan: a, b: x too big; c has no y"
    assert _no_device_runs(rows, shown=1) == ("no device can run this plan: a, b: x too big; "
                                              "and 1 more device")
    assert _no_device_runs(rows.iloc[:2]) == "x too big"


@pytest.mark.parametrize("cp_comm", ["torch-ring", "p2p"])
def test_the_memo_tells_a_traced_torch_ring_apart(cp_comm):
    """stage_forward reads fusion only for PyTorch's context-parallel ring (traced under
    compiled fusion, simulator.parallel.rank): plans differing only in fusion share a forward
    graph elsewhere but not there. Each one is what simulate() says whatever the order (before:
    the first built graph served both, compiled 1.33 s for 1.38 s on Llama 3 8B, cp 4)."""
    parallel = ParallelPlan(dp=1, cp=2, cp_comm=cp_comm)
    for order in (("eager", "compiled"), ("compiled", "eager")):
        cache = StageCache()
        for fusion in order:
            cached = simulate(TINY, "h100", parallel=parallel, global_batch=2, micro_batch=1,
                              fusion=fusion, cache=cache)
            plain = simulate(TINY, "h100", parallel=parallel, global_batch=2, micro_batch=1,
                             fusion=fusion)
            assert cached.summary() == plain.summary(), (order, fusion)
        assert len(cache.forwards) == (2 if cp_comm == "torch-ring" else 1)
