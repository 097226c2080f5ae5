"""A system's default power set point (ClusterSpec.power_limit_w): a preset may run its GPUs
below their TDP (e.g. a B200 system set to 700 W of its 1,000 W, as the DGX B200 User Guide's
'Managing Power Capping' example output reads). simulate() runs a preset's devices at that limit
unless the plan gives one (simulator.cost.power prices the clocks). No catalogue preset sets one
now (dgx-b200.toml says why its GPUs run at their 1,000 W TDP), so these tests use a copy of the
dgx-b200 preset with the guide's 700 W set point."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from hardware_specs.cluster import load_cluster
from simulator import simulate
from simulator.cost.power import _GRID, MIN_CLOCK, dynamic_scale
from simulator.errors import SpecError

PLAN = {"micro_batch": 4, "global_batch": 64, "seq_len": 1024, "precision": "bf16"}


def _step(hardware, **plan):
    return simulate("gpt3-1.3b", hardware, **PLAN, **plan).step_time_s


SET_POINT = "\npower_limit_w = 700\n"


def _set_point_text() -> str:
    """dgx-b200.toml with a 700 W set point before its [intra] table."""
    text = Path(load_cluster("dgx-b200").path).read_text()
    assert "power_limit_w" not in text.split("[intra]")[0].replace("# ", "")
    return text.replace("\n[intra]\n", SET_POINT + "\n[intra]\n", 1)


@pytest.fixture
def dgx700(tmp_path):
    path = tmp_path / "dgx-b200-700w.toml"
    path.write_text(_set_point_text())
    return load_cluster(str(path))


def test_catalogue_presets_run_their_gpus_at_the_tdp(dgx700):
    assert dgx700.power_limit_w == 700 and dgx700.device.tdp_w == 1000
    # no catalogue preset's documentation gives a firm lower default (dgx-b200.toml: why)
    for name in ("dgx-b200", "dgx-h100", "dgx-a100", "gb200-nvl72"):
        assert load_cluster(name).power_limit_w is None


def test_the_default_is_the_plans_limit_and_the_plan_overrides_it(dgx700):
    dgx = dgx700
    bare = dataclasses.replace(dgx, power_limit_w=None)   # the same system at its TDP
    default = simulate("gpt3-1.3b", dgx, **PLAN)
    assert default.summary()["power_limit_w"] == 700
    assert any("default power limit, 700 W of 1000 W" in note for note in default.notes)
    assert default.step_time_s == _step(bare, power_limit_w=700)
    assert _step(dgx, power_limit_w=1000) == _step(bare)
    assert _step(dgx, power_limit_w=850) == _step(bare, power_limit_w=850)


def test_the_set_point_slows_compute_no_more_than_a_compute_bound_phase(dgx700):
    """Under the limit a phase's clock is the highest at which its power fits; a phase busy
    all the time draws idle + (TDP - idle) x v(x)^2, so no phase runs below the clock x* where
    that equals the limit, and the step slows by at most 1 / x* (one grid step of slack)."""
    dgx = dgx700
    device = dgx.device
    share = (700 - device.idle_power_w) / (device.tdp_w - device.idle_power_w)
    grid = np.linspace(1.0, MIN_CLOCK, 100_001)
    x_star = grid[np.argmax(dynamic_scale(grid) <= share)]
    assert 0.80 < x_star < 0.85   # below the knee: x v_floor^2 = 0.652, x = 0.824
    slowed, full = _step(dgx), _step(dgx, power_limit_w=1000)
    step = (1.0 - MIN_CLOCK) / (_GRID - 1)
    assert 1.0 < slowed / full <= 1.0 / (x_star - step)


def test_a_preset_set_point_above_the_tdp_is_refused(tmp_path):
    text = _set_point_text()
    for value, problem in (("1200", "1200 W is above b200's TDP"), ("-5", "power_limit_w")):
        path = tmp_path / "dgx-b200-bad.toml"
        path.write_text(text.replace("\npower_limit_w = 700\n", f"\npower_limit_w = {value}\n"))
        with pytest.raises(SpecError, match=problem):
            load_cluster(str(path))


def test_a_device_whose_tdp_is_at_or_below_the_set_point_runs_at_its_tdp(dgx700):
    """A preset's device overridden to a TDP at or below the set point (--set tdp_w=...): the
    set point no longer binds and no note claims it."""
    from hardware_specs.override import override

    dgx = dgx700
    low = dataclasses.replace(dgx, device=override(dgx.device, {"tdp_w": 650}))
    r = simulate("gpt3-1.3b", low, **PLAN)
    assert r.summary()["power_limit_w"] == 650
    assert not any("default power limit" in note for note in r.notes)
