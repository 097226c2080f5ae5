"""What-if overrides of a device spec (``hardware_specs.override``) and ``--set`` on the command line."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware_specs.loader import load_device
from simulator import simulate
from simulator.cli import main
from simulator.errors import SpecError
from simulator.graph.op import DType
from hardware_specs.override import apply, override
from simulator.cli.flags import parse_sets
from workloads.transformer import TransformerConfig

TINY = TransformerConfig(name="tiny", layers=2, hidden=128, heads=4, vocab=256, seq_len=64)


def test_each_kind_of_path_round_trips():
    a100 = load_device("a100")
    hbm = a100.main_memory.name
    link = a100.links[0].name
    changed = override(a100, {
        f"memory.{hbm}.bandwidth_bytes_per_s": 6e12, "peak_flops_per_s.bf16": "1e15",
        "tdp_w": 500, "price_per_hour_usd": "2.5", "architecture.compute_units": 144,
        f"links.{link}.bandwidth_bytes_per_s": 9e11, "matmul_efficiency": 0.8,
        "attention_efficiency": "0.5", "matmul_memory_efficiency": "0.6",
        "architecture.matrix_tile": "256,128,64", "memory.main.capacity_bytes": 1.6e11})
    assert changed.memory_bandwidth_bytes_per_s == 6e12
    assert changed.memory_bytes == 1.6e11
    assert changed.peak_flops_per_s[DType.BF16] == 1e15
    assert (changed.tdp_w, changed.price_per_hour_usd) == (500, 2.5)
    assert changed.architecture.compute_units == 144
    assert changed.architecture.matrix_tile == (256, 128, 64)
    assert changed.links[0].bandwidth_bytes_per_s == 9e11
    assert (changed.matmul_efficiency, changed.attention_efficiency) == (0.8, 0.5)
    assert changed.matmul_memory_efficiency == 0.6
    assert a100.price_per_hour_usd == 4.00  # the original is untouched (frozen): its file's


def test_setting_the_current_values_gives_the_same_spec():
    h100 = load_device("h100")
    same = override(h100, {"memory.main.bandwidth_bytes_per_s":
                           h100.memory_bandwidth_bytes_per_s, "tdp_w": h100.tdp_w,
                           "peak_flops_per_s.bf16": h100.peak_flops_per_s[DType.BF16]})
    assert same == h100
    assert override(h100, {}) == h100


@pytest.mark.parametrize("path, value, says", [
    ("memory.hbm9.bandwidth_bytes_per_s", 1e12, "no memory level 'hbm9'"),
    ("memory.main.speed", 1e12, "unknown memory field"),
    ("peak_flops_per_s.fp4", 1e15, "unknown dtype"),
    ("bandwidth", 1e12, "unknown spec path"),
    ("tdp_w", -5, "must be > 0"),
    ("tdp_w", "lots", "must be a number"),
    ("matmul_efficiency", 1.5, "(0, 1]"),
    ("architecture.compute_units", 1.5, "whole number"),
    ("architecture.warp_size", 32, "unknown architecture field"),
    ("links.nvlink9.bandwidth_bytes_per_s", 1e11, "no link 'nvlink9'"),
    ("idle_power_w", 5000, "exceeds tdp_w"),
    ("memory_efficiency", float("nan"), "finite"),
])
def test_bad_changes_are_one_line_naming_the_path(path, value, says):
    with pytest.raises(SpecError) as err:
        override(load_device("a100"), {path: value})
    assert says in str(err.value) and "\n" not in str(err.value)
    assert path.split(".")[0] in str(err.value)


def test_parse_sets_and_clusters():
    assert parse_sets(["tdp_w=300", " memory.main.capacity_bytes = 1e11 "]) == {
        "tdp_w": "300", "memory.main.capacity_bytes": "1e11"}
    with pytest.raises(SpecError, match="PATH=VALUE"):
        parse_sets(["tdp_w"])
    from hardware_specs.cluster import load_cluster
    cluster = apply(load_cluster("dgx-a100"), {"tdp_w": 300})
    assert cluster.device.tdp_w == 300


@settings(max_examples=15, deadline=None)
@given(device=st.sampled_from(["a100", "h100", "v100", "tpu-v4", "mi300x", "xeon-8380"]),
       factor=st.floats(1.0, 8.0), micro_batch=st.sampled_from([1, 4]))
def test_more_bandwidth_is_never_slower(device, factor, micro_batch):
    spec = load_device(device)
    faster = override(spec, {"memory.main.bandwidth_bytes_per_s":
                             spec.memory_bandwidth_bytes_per_s * factor})
    before = simulate(TINY, spec, micro_batch=micro_batch).step_time_s
    after = simulate(TINY, faster, micro_batch=micro_batch).step_time_s
    assert after <= before * (1 + 1e-12)


def test_doubling_bandwidth_speeds_up_a_memory_bound_step():
    spec = load_device("a100")
    doubled = override(spec, {"memory.main.bandwidth_bytes_per_s":
                              2 * spec.memory_bandwidth_bytes_per_s})
    assert simulate(TINY, doubled).step_time_s < simulate(TINY, spec).step_time_s


def test_cli_set(capsys):
    assert main(["predict", "gpt2-small", "--device", "a100", "--json"]) == 0
    import json
    base = json.loads(capsys.readouterr().out)
    assert main(["predict", "gpt2-small", "--device", "a100", "--json",
                 "--set", "peak_flops_per_s.bf16=624e12", "--set", "price_per_hour_usd=2",
                 "--steps", "10"]) == 0
    faster = json.loads(capsys.readouterr().out)
    assert faster["step_time_s"] < base["step_time_s"]
    assert faster["cost_usd"] == pytest.approx(faster["total_time_s"] * 2 / 3600)
    assert main(["predict", "gpt2-small", "--device", "a100", "--set", "memory.x.y=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "memory.x.y" in err


def test_dataclass_fields_are_all_reachable():
    """Every numeric top-level field of DeviceSpec can be set (new fields need a path)."""
    from hardware_specs import override as whatif
    numeric = {f.name for f in dataclasses.fields(load_device("a100"))
               if f.type in ("float", "float | None")}
    assert numeric <= set(whatif._FRACTIONS + whatif._POSITIVE)


def test_reference_units_is_not_a_knob(capsys):
    """``Architecture.reference_units`` records the spec's own SM count when ``--set
    architecture.compute_units`` changes it; setting it directly would move every GEMM against an
    arbitrary reference, so it is refused in one line."""
    assert main(["predict", "gpt2-small", "--device", "h100", "--set",
                 "architecture.reference_units=10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown architecture field" in err
    assert "reference_units" not in err.split("choose one of")[1]
