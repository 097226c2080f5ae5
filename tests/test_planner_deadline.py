"""A planner that reaches the deadline (issue 22, item 7): device counts sized by the work and
each device's predicted rate, every priced device by default with the dominated ones left out,
the plans pruned to the model-parallel sizes that hold the states, progress on stderr after a
second, and an answer that says why the best plan is best and what one more lever buys."""
from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
import pytest

from hardware_specs.loader import list_devices, load_device
from simulator.explore import capacity
from simulator.explore.capacity import (Rate, capacity_plan, deadline_space, device_rates,
                                        dominated, explain, priced_devices)
from simulator.explore.sweep import resolve_devices
from workloads.moe import MoE
from workloads.transformer import TransformerConfig
from workloads.zoo import get_workload

TINY = TransformerConfig(name="tiny", layers=4, hidden=128, heads=4, vocab=256, seq_len=64)


def test_priced_devices_are_the_catalogue_s_priced_ones():
    names = priced_devices()
    assert names == [n for n in list_devices() if load_device(n).price_per_hour_usd]
    assert {"a100-sxm4-80gb", "h100-sxm5-80gb", "tpu-v5e"} <= set(names)
    assert "mi210" not in names            # no cited on-demand price


def test_dominance_by_hand():
    a, b, c = resolve_devices(["a100", "h100", "h200"], None)   # 81920, 81559, 143771 MiB
    rates = {a.name: Rate(100.0, 1.0, 2.0), b.name: Rate(200.0, 0.5, 1.0),
             c.name: Rate(150.0, 0.5, 1.5)}
    # the H100 beats the A100 on every rate but reports 361 MiB less memory (nvidia-smi's
    # totals): not dominated by it; the H200 beats the A100 on every rate and holds more, and
    # is slower and dearer than the H100 but holds more: the A100 alone is dominated, by it
    assert dominated([a, b, c], rates) == {a.name: c.name}
    same_memory = replace(b, memory=a.memory)
    assert dominated([a, same_memory], rates) == {a.name: b.name}   # at equal memory it is
    twin = replace(a, name="a100-twin")   # the same links and memory
    same = {a.name: Rate(100.0, 1.0, 2.0), twin.name: Rate(100.0, 1.0, 2.0)}
    assert dominated([a, twin], same) == {}   # equals dominate nothing
    failed = {a.name: "cannot run it: no", b.name: Rate(1.0, 1.0, 1.0)}
    assert dominated([a, b], failed) == {a.name: "cannot run it: no"}


def test_counts_are_what_the_deadline_needs():
    """The power of two that perfect scaling needs at the device's single-device rate, and
    twice it; never fewer than hold the 16 bytes per parameter of states."""
    specs = resolve_devices(["h100"], None)
    rate = device_rates(TINY, specs)["h100-sxm5-80gb"]
    tokens, days = 1e12, 10
    need = tokens / (rate.tokens_per_s * days * 86400)
    start = 2 ** math.ceil(math.log2(need))
    configs, pruned = deadline_space(TINY, specs, tokens, days)
    assert pruned == {}
    counts = {c[2]["dp"] * c[2]["tp"] * c[2]["pp"] * c[2].get("cp", 1) for c in configs}
    assert counts == {start, 2 * start}


def test_plans_keep_the_smallest_model_parallel_sizes_that_hold_the_states():
    big = TransformerConfig(name="big", layers=8, hidden=8192, heads=64, vocab=1024,
                            seq_len=256)   # 6.4B parameters: 103 GB of states
    plans = [{"dp": 1, "tp": tp, "pp": pp, "zero": 0} for tp in (1, 2, 4, 8) for pp in (1, 2)]
    kept = capacity._smallest_splits(plans, big, load_device("h100"))
    sizes = sorted({p["tp"] * p["pp"] for p in kept})
    assert sizes == [2, 4]   # 103 GB does not fit 80 GB on one device; 2 and 4 do
    assert capacity._dominated_zero({"dp": 8, "pp": 1, "zero": 1})
    assert capacity._dominated_zero({"dp": 8, "pp": 2, "zero": 0})
    assert not capacity._dominated_zero({"dp": 8, "pp": 2, "zero": 1})
    assert not capacity._dominated_zero({"dp": 1, "pp": 1, "zero": 0})


def test_a_deadline_plan_says_why_and_what_a_lever_buys():
    report = capacity_plan(TINY, 1e10, devices=["a100", "h100"], deadline_days=1,
                           workers=1, progress=False)
    assert not report.feasible.empty
    lines = explain(report)
    best = report.feasible.iloc[0]
    assert lines[0].startswith(f"why: {best.device} x {int(best.num_devices)}")
    assert "cheapest of" in lines[0] and "of 1 days" in lines[0]
    levers = [line.split()[0] for line in lines[1:] if not line.startswith("  runner-up")]
    assert "num_devices" in levers
    doubled = next(line for line in lines if line.startswith("  num_devices"))
    assert f"{int(best.num_devices)} -> " in doubled and "days (" in doubled


def test_progress_waits_a_second_then_reports_tenths(monkeypatch, capsys):
    clock = iter([0.0, 0.5, 1.5, 1.6, 1.7])
    progress = capacity.Progress.__new__(capacity.Progress)
    progress.start, progress.clock, progress.shown = 0.0, lambda: next(clock), -1
    progress(1, 10)          # at 0.0 s: nothing
    progress(2, 10)          # 0.5 s: nothing
    progress(3, 10)          # 1.5 s: a line
    progress(3, 10)          # same tenth: no new line
    progress(10, 10)         # the last
    err = capsys.readouterr().err.splitlines()
    assert err == ["hwsim plan: 3/10 configurations", "hwsim plan: 10/10 configurations"]


@pytest.mark.slow
def test_the_issue_s_llama3_8b_plan_reaches_its_deadline():
    """'hwsim plan llama3-8b --tokens 1e12 --deadline-days 30' found nothing among 2,424
    configurations of 2-16 devices; sized by the work it finds plans of 32 (B200, priced
    since it has a cited on-demand price) and 64 (H200, H800) to 256 devices."""
    report = capacity_plan("llama3-8b", 1e12, deadline_days=30, workers=2, progress=False)
    assert not report.feasible.empty
    assert report.feasible.num_devices.min() >= 32
    assert (report.feasible.total_time_days <= 30).all()


def test_a_device_with_slower_links_dominates_none():
    """Single-device rates never see the links: an A100 PCIe (80 GB, PCIe) pruned an A100 SXM4
    40 GB (NVLink) whose tp 8 runs 2.0x faster (llama2-7b, micro-batch 1, global batch 8:
    1.54 against 3.15 s a step)."""
    pcie, sxm40, sxm80 = resolve_devices(["a100-pcie-80gb", "a100-sxm4-40gb",
                                          "a100-sxm4-80gb"], None)
    rates = {spec.name: Rate(100.0, 1.0, 1.0) for spec in (pcie, sxm40, sxm80)}
    assert dominated([pcie, sxm40], rates) == {}
    # the same links and more memory still dominate (and faster links too)
    assert dominated([pcie, sxm40, sxm80], rates) == {sxm40.name: sxm80.name,
                                                      pcie.name: sxm80.name}
    assert capacity.links(sxm40)[0] > capacity.links(pcie)[0]


def test_a_priced_alias_is_its_device_once():
    """--price-per-hour a100=1.8 added 'a100' beside the a100-sxm4-80gb it loads: every
    configuration of that device evaluated twice."""
    from argparse import Namespace

    from simulator.cli.explore import _priced

    names = _priced(Namespace(price_per_hour={"a100": 1.8, "mi300x": 2.0, "*": 3.0}),
                    priced_devices())
    loaded = [load_device(name).name for name in names]
    assert len(loaded) == len(set(loaded))
    assert "a100" not in names and "a100-sxm4-80gb" in names and "mi300x" in names


def test_plan_names_tell_ep_and_cp_apart():
    row = dict(device="h100-sxm5-80gb", num_devices=16, tp=1, pp=1, zero=1, recompute="none",
               micro_batch=1, cp=float("nan"), ep=1)
    names = {capacity._name(pd.Series({**row, **change}))
             for change in ({}, {"ep": 8}, {"cp": 2}, {"cp": 2, "ep": 8})}
    assert len(names) == 4
    assert "h100-sxm5-80gb x 16, tp 1, pp 1, cp 2, ep 8, ZeRO 1" in " | ".join(names)


def test_the_default_moe_search_space_fits_its_bound_and_runs():
    """'hwsim plan mixtral-8x7b --tokens 1e11' (no deadline) failed: up to 7 ep sizes made
    7,224 configurations at one device count. ep is trimmed to 1 and the largest in a node
    first; ep > 1 is never paired with ZeRO-3 (which it refuses)."""
    work = get_workload("mixtral-8x7b")
    specs = resolve_devices(priced_devices(), None)
    pruned = dominated(specs, device_rates(work, specs))
    kept = [spec for spec in specs if spec.name not in pruned]
    plans = capacity.search_space(work, kept)
    assert len(plans) * len(kept) <= capacity.MAX_CONFIGS
    assert {1, 8} <= {p.get("ep", 1) for p in plans}
    assert not any(p.get("ep", 1) > 1 and p["zero"] == 3 for p in plans)
    tiny = TransformerConfig(name="tiny-moe", layers=1, hidden=128, heads=1, vocab=256,
                             seq_len=64, moe=MoE(experts=8, top_k=2))
    report = capacity_plan(tiny, 1e8, devices=["h100"], workers=1, progress=False)
    assert report.rejected.empty and (report.feasible.ep > 1).any()


def test_a_deadline_no_batch_split_reaches_is_one_line(capsys):
    """A deadline needing more devices than the global batch can be split over left no
    configuration, and the answer read 'nothing feasible among 0 configurations: ; relax
    ...' (exit 2, no reason): it says which count the deadline needs and what to change."""
    from simulator.cli import main
    from simulator.errors import PlanError

    with pytest.raises(PlanError, match=r"needs at least [\d,]+ devices, more than any plan "
                                        r"of a global batch of 65,536 sequences"):
        deadline_space(TINY, resolve_devices(["h100"], None), 1e12, 1e-9)
    assert main(["plan", "gpt2-small", "--tokens", "1e9", "--devices", "h100",
                 "--deadline-days", "1e-9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "global batch of 4,096 sequences" in err
    assert ": ;" not in err and "give a larger --global-batch" in err
    empty = capacity.CapacityReport(*(pd.DataFrame(),) * 4)
    assert empty.why_nothing().startswith("nothing to evaluate")
