"""A node's power besides its devices, from its measured idle (``ClusterSpec.node_power_at``).

Where a cluster preset cites its node's measured idle (``node_idle_w``) and power conversion
(``supply_efficiency``), its other parts follow the load: the idle plus the devices' power above
their own idle at the wall, held between the idle and the node's maximum. The figures are the
metered MLPerf machines' own, from benchmarks hwsim does not validate on (the presets' comments
say which logs); the validated rows are ``tests/test_energy_validation.py``'s.
"""
from __future__ import annotations

import csv
import dataclasses
import statistics
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware_specs.cluster import load_cluster
from simulator.api import simulate
from simulator.errors import SpecError

DATA = Path(__file__).parent / "data"


def test_smc_node_closed_form():
    """smc-h100 from its two measured points (the preset's DC and AC logs): at rest 2,230.5 W at
    the wall (the median of 440 node-run floors) at DC/AC 0.941, so 2,098.9 W DC; under load
    DC/AC 0.9736, the DC draw being the rest's plus the eight GPUs' rise above their 79 W
    idle. At 700 W GPUs: (2,098.9005 + 8 x 621) / 0.9736 = 7,066.9005 / 0.9736 = 7,258.5 W,
    1,658.5 W of it besides the GPUs; the GPUs' rise then costs 4,968 W DC for 5,028.0 W AC,
    0.988 on the increment (not 0.9736 on top of the idle's own losses: 7,331 W before). The
    node is held at its idle until the DC form passes it, 2,230.5 x (0.9736 - 0.941) / 8 =
    9.09 W per GPU above idle."""
    node = load_cluster("smc-h100")
    assert (node.node_idle_w, node.supply_efficiency_idle, node.supply_efficiency) == (
        2230.5, 0.941, 0.9736)
    assert node.device.idle_power_w == 79 and node.device.tdp_w == 700
    assert node.node_power_at(700.0) == pytest.approx(7258.5256, abs=1e-3)
    assert node.node_overhead_w == pytest.approx(7258.5256 - 5600, abs=1e-3)
    assert 8 * 621 / (node.node_power_at(700.0) - 2230.5) == pytest.approx(0.98806, abs=1e-5)
    for gpu_w, node_w in ((400.0, 4793.4475), (601.0, 6445.0498)):
        # (2,098.9005 + 8 x 321) / 0.9736, (2,098.9005 + 8 x 522) / 0.9736
        assert node.node_power_at(gpu_w) == pytest.approx(node_w, abs=1e-3)
        assert node.overhead_at(gpu_w) == pytest.approx(node_w - 8 * gpu_w, abs=1e-3)
    for gpu_w in (79.0, 84.0, 88.0):
        assert node.node_power_at(gpu_w) == 2230.5
    assert node.node_power_at(88.2) > 2230.5
    assert node.overhead_at(79.0) == pytest.approx(2230.5 - 8 * 79)


def test_lenovo_node_idle_is_its_retinanet_floor():
    """lenovo-sr780a-v3's idle is the median of its five RetinaNet runs' floors in
    tests/data/mlperf_power.csv (2,847-2,926 W: 2,888 W); without a cited conversion efficiency
    its other parts draw that less eight idle B200s, 2,888 - 8 x 137 = 1,792 W, at any load."""
    with (DATA / "mlperf_power.csv").open(newline="") as handle:
        floors = [float(r["node_power_floor_w"]) for r in csv.DictReader(handle)
                  if (r["system"], r["benchmark"]) == ("SR780aV3-8xB200_SXM_180GB", "retinanet")]
    node = load_cluster("lenovo-sr780a-v3")
    assert len(floors) == 5 and node.node_idle_w == statistics.median(floors) == 2888
    assert node.supply_efficiency == 1.0
    for gpu_w in (137.0, 700.0, 1000.0):
        assert node.overhead_at(gpu_w) == pytest.approx(2888 - 8 * 137)


def test_presets_without_an_idle_keep_the_maximum_remainder():
    """dgx-h100 (8.4 kW measured), dgx-a100 (6.5 kW) and dgx-b200 (14.3 kW rated) cite no node
    idle: their other parts draw the maximum less the TDPs at any load, as before."""
    for name, node_w in (("dgx-h100", 8400), ("dgx-a100", 6500), ("dgx-b200", 14300)):
        node = load_cluster(name)
        tdp = node.device.tdp_w
        assert node.node_idle_w is None
        for gpu_w in (node.device.idle_power_w, tdp / 2, tdp):
            assert node.overhead_at(gpu_w) == pytest.approx(node_w - 8 * tdp)
        assert node.node_power_at(tdp) == pytest.approx(node_w)


@settings(max_examples=200, deadline=None)
@given(idle_share=st.floats(0.0, 0.999), efficiency=st.floats(0.5, 1.0),
       rest_share=st.one_of(st.none(), st.floats(0.5, 1.0)),
       load=st.floats(0.0, 1.0), other=st.floats(0.0, 1.0),
       cap=st.sampled_from(["rated", "measured", "none"]))
def test_node_power_between_idle_and_maximum(idle_share, efficiency, rest_share, load, other,
                                             cap):
    """For any measured idle between the devices' own idle and the node's maximum, any
    conversion efficiency under load and any at rest up to it (or none) and any device power
    from idle to TDP: the node draws at least its idle and at most its maximum (never above
    the datasheet rating), more at a higher device power, its other parts never less than
    nothing; where neither bound holds it, its DC draw (the wall's times the efficiency under
    load) is the idle's DC draw plus the devices' rise."""
    base = load_cluster("dgx-h100")
    n, device = base.devices_per_node, base.device
    rated = base.node_power_w
    measured = None if cap != "measured" else rated * (0.7 + 0.3 * other)
    top = {"rated": rated, "measured": measured, "none": None}[cap]
    low = n * device.idle_power_w
    ceiling = top if top is not None else 2 * rated
    idle = low + idle_share * (ceiling - low)
    node = dataclasses.replace(base, node_power_w=rated if cap != "none" else None,
                               node_power_measured_w=measured, node_idle_w=idle,
                               supply_efficiency=efficiency,
                               supply_efficiency_idle=None if rest_share is None
                               else rest_share * efficiency)
    gpu_w = device.idle_power_w + load * (device.tdp_w - device.idle_power_w)
    power = node.node_power_at(gpu_w)
    assert idle <= power
    if top is not None:
        assert power <= top * (1 + 1e-12)
    if cap != "none":
        assert power <= rated * (1 + 1e-12)
    assert node.node_power_at(min(gpu_w + 10, device.tdp_w)) >= power
    assert node.overhead_at(gpu_w) >= 0.0
    assert node.overhead_at(gpu_w) == pytest.approx(max(power - n * gpu_w, 0.0), abs=1e-6)
    rest = efficiency if rest_share is None else rest_share * efficiency
    if idle < power and (top is None or power < top):
        assert power * efficiency == pytest.approx(
            rest * idle + n * (gpu_w - device.idle_power_w), rel=1e-9)


def test_run_totals_charge_the_load_following_overhead():
    """simulate() on smc-h100 charges each node's other parts at the step's average GPU power
    (``overhead_at(avg_power_w)``) over the run; --node-overhead-w still overrides it."""
    steps = 100
    r = simulate("gpt2-small", "smc-h100", micro_batch=4, global_batch=32, steps=steps)
    node = load_cluster("smc-h100")
    overhead = node.overhead_at(r.avg_power_w)
    assert node.overhead_at(79.0) < overhead < node.node_overhead_w
    t = r.totals
    assert t["node_overhead_w"] == pytest.approx(overhead, rel=1e-12)
    devices_kwh = steps * r.energy_j_per_step * 8 / 3.6e6
    assert t["energy_kwh"] == pytest.approx(devices_kwh + overhead * t["total_time_s"] / 3.6e6,
                                            rel=1e-9)
    given_w = simulate("gpt2-small", "smc-h100", micro_batch=4, global_batch=32, steps=steps,
                       node_overhead_w=500).totals
    assert given_w["node_overhead_w"] == 500


@pytest.mark.parametrize("edit, pattern", [
    ("node_idle_w = 600", r"node_idle_w: 600 W is below its 8 devices' own idle \(632 W\)"),
    ("node_idle_w = 9000\nnode_power_w = 8000",
     r"node_idle_w: 9000 W is not below the node's maximum \(8000 W\)"),
    ("node_idle_w = 2228\nsupply_efficiency = 1.2", r"supply_efficiency: 1.2 is above 1"),
    ("supply_efficiency = 0.97", r"supply_efficiency: needs node_idle_w"),
    ("node_idle_w = 2228\nsupply_efficiency_idle = 0.94",
     r"supply_efficiency_idle: needs supply_efficiency"),
    ("node_idle_w = 2228\nsupply_efficiency = 0.94\nsupply_efficiency_idle = 0.97",
     r"supply_efficiency_idle: 0.97 is above supply_efficiency \(0.94\)"),
    ('node_idle_w = "low"', r"node_idle_w: must be a number"),
])
def test_node_idle_figures_are_checked_on_load(tmp_path, edit, pattern):
    """A node idle under its devices' own idle or not under its maximum, an efficiency above 1
    or without an idle to scale from, one at rest without one under load or above it: refused
    on load, the file and the key named."""
    text = Path(load_cluster("smc-h100").path).read_text()
    kept = "\n".join(line for line in text.splitlines()
                     if not line.startswith(("node_idle_w", "supply_efficiency")))
    path = tmp_path / "node.toml"
    path.write_text(kept.replace('topology = "switch"', f'topology = "switch"\n{edit}', 1))
    with pytest.raises(SpecError, match=pattern) as error:
        load_cluster(str(path))
    assert str(error.value).startswith(str(path))
