"""Power limits and clocks (simulator.cost.power): the DVFS fit, its invariants, its errors."""
from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardware_specs.loader import load_device
from simulator.api import simulate
from simulator.cost import power
from simulator.errors import PlanError
from simulator.plan.step import Plan

DATA = Path(__file__).parent / "data"


def _perseus(instruction: str) -> tuple[np.ndarray, np.ndarray]:
    """(frequency MHz, power W) of Perseus's A100 stage sweep at and below 1290 MHz."""
    with (DATA / "perseus_a100_frequency.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle)
                if r["instruction"] == instruction and float(r["frequency_mhz"]) <= 1290]
    f = np.array([float(r["frequency_mhz"]) for r in rows])
    p = np.array([float(r["energy_j"]) / float(r["time_s"]) for r in rows])
    return f, p


@pytest.mark.parametrize("instruction, floor, knee", [("forward", 0.886, 0.855),
                                                      ("backward", 0.892, 0.850)])
def test_voltage_floor_and_knee_refit_from_perseus(instruction, floor, knee):
    """P0 + C f v(f)^2 fitted to the measured sweep (least squares over a grid of the floor
    and the knee, P0 and C linear) gives the figures power.py cites, and
    reproduces every point within 6 W."""
    f, p = _perseus(instruction)
    x = f / 1290
    best = None
    for v0 in np.arange(0.70, 1.0001, 0.002):
        for k in np.arange(0.60, 0.99, 0.005):
            v = v0 + (1 - v0) * np.clip((x - k) / (1 - k), 0, None)
            a = np.vstack([np.ones_like(x), x * v ** 2]).T
            coef, *_ = np.linalg.lstsq(a, p, rcond=None)
            err = float(((a @ coef - p) ** 2).sum())
            if best is None or err < best[0]:
                best = (err, v0, k, a @ coef - p)
    _, v0, k, residual = best
    assert v0 == pytest.approx(floor, abs=0.003)
    assert k == pytest.approx(knee, abs=0.006)
    assert np.abs(residual).max() < 6
    assert power.V_FLOOR == pytest.approx((0.886 + 0.892) / 2, abs=0.002)
    assert power.KNEE == pytest.approx((0.855 + 0.850) / 2, abs=0.003)


def _a40(instruction: str, top_mhz: float = 1410):
    """(frequency MHz, time s, power W) of Perseus's A40 stage sweep at and below ``top_mhz``."""
    with (DATA / "perseus_a40_frequency.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle)
                if r["instruction"] == instruction and float(r["frequency_mhz"]) <= top_mhz]
    f = np.array([float(r["frequency_mhz"]) for r in rows])
    t = np.array([float(r["time_s"]) for r in rows])
    return f, t, np.array([float(r["energy_j"]) for r in rows]) / t


@pytest.mark.parametrize("instruction", ["forward", "backward"])
def test_voltage_model_is_consistent_with_the_a40(instruction):
    """Consistent with, not evidence for: with V_FLOOR and KNEE as they are and only P0 and C
    fitted (x = f / 1410 MHz), Perseus's sweep of the same GPT-3 stage on an A40 (GA102, GDDR6,
    300 W; tests/data/perseus_a40_frequency.csv) is reproduced within 8 W from 1410 down to
    855 MHz (forward max 7.2, backward 5.7; rms 2.6 / 2.4 W) over a 180-285 W range. A plain
    x^3 (voltage proportional to the clock, no floor) fits as well (max 5.9 / 4.5 W, rms 3.7 /
    2.5 W), so these points cannot tell the A100's floor and knee from no floor; they do rule
    out a voltage flat over the whole range (power linear in the clock: max 15.4 / 10.3 W)."""
    f, _, p = _a40(instruction)
    x = f / 1410

    def worst(scale):
        a = np.vstack([np.ones_like(x), scale]).T
        coef, *_ = np.linalg.lstsq(a, p, rcond=None)
        return np.abs(a @ coef - p).max(), coef

    model, coef = worst(power.dynamic_scale(x))
    assert model < 8
    assert 50 < coef[0] < 110 and coef[1] > 0   # P0: the clock-independent draw
    no_floor, _ = worst(x ** 3)
    assert no_floor < 6 and no_floor < model     # the alternative fits no worse: no evidence
    flat, _ = worst(x)
    assert flat > 10                              # a voltage that never moves does not fit


def test_a40_at_its_power_limit_runs_below_the_requested_clock():
    """What a power limit does (the regime simulator.cost.power models): asked for clocks
    from 1455 to 1740 MHz (20 % apart), the A40's forward draws its 300 W limit (296-301 W)
    and its time stays within 2 % of its mean: the clock the limit allows, not the one
    requested, sets the speed (the backward's time is as flat at 277-292 W: a limiter other than the board power
    holds its clock, which hwsim does not model). Below 1410 MHz power falls and time rises
    with the clock."""
    for instruction in ("forward", "backward"):
        f, t, p = _a40(instruction, top_mhz=1740)
        capped = f >= 1455
        low_w = 296 if instruction == "forward" else 277
        assert np.all((p[capped] > low_w) & (p[capped] < 301)), instruction
        assert np.abs(t[capped] / t[capped].mean() - 1).max() < 0.02
        low = f <= 1410
        order = np.argsort(f[low])
        assert p[low][order][0] < 0.7 * p[low][order][-1]
        assert t[low][order][0] > 1.1 * t[low][order][-1]


def test_dynamic_scale_closed_form():
    assert power.dynamic_scale(1.0) == pytest.approx(1.0)
    assert power.dynamic_scale(0.5) == pytest.approx(0.5 * power.V_FLOOR ** 2)
    x = power.KNEE + (1 - power.KNEE) / 2
    assert power.dynamic_scale(x) == pytest.approx(x * ((1 + power.V_FLOOR) / 2) ** 2)
    grid = np.linspace(power.MIN_CLOCK, 1, 100)
    assert np.all(np.diff(power.dynamic_scale(grid)) > 0)


def test_compute_bound_phase_clock_closed_form():
    """A compute-bound step under a limit runs at the clock where idle + (TDP - idle) x v^2
    meets the limit (to the grid's step), and its time grows as 1/x."""
    device = load_device("a100")
    free = simulate("gpt3-1.3b", device, micro_batch=8, seq_len=2048)
    limit = 300.0
    capped = simulate("gpt3-1.3b", device, micro_batch=8, seq_len=2048, power_limit_w=limit)
    idle, tdp = device.idle_power_w, device.tdp_w
    grid = np.linspace(1.0, power.MIN_CLOCK, 256)
    x = grid[np.flatnonzero(idle + (tdp - idle) * power.dynamic_scale(grid) <= limit)[0]]
    slowdown = capped.step_time_s / free.step_time_s
    assert 1.0 < slowdown <= 1 / x * 1.001   # memory-bound ops do not slow
    assert slowdown > 0.8 / x                # a GPT step is mostly compute-bound
    assert capped.power_limit_w == limit and free.power_limit_w == device.tdp_w
    assert any(note.startswith(f"power limit {limit:g} W: clocks at") for note in capped.notes)
    assert not any(note.startswith("power limit") for note in free.notes)
    assert capped.avg_power_w <= limit * (1 + 1e-9)


def _devices() -> list[str]:
    from hardware_specs.host import HOST_NAME
    from hardware_specs.loader import list_devices

    return [name for name in list_devices() if name != HOST_NAME]


_DEVICES = _devices()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(device=st.sampled_from(_DEVICES), share=st.floats(0.0, 1.0),
       model=st.sampled_from(["gpt2-small", "resnet-18", "bert-base"]),
       micro_batch=st.sampled_from([1, 8, 32]))
def test_power_within_idle_and_limit_and_monotone(device, share, model, micro_batch):
    """Average power lies between idle and the limit, for the step and for each phase's
    compute ops; a lower limit never makes the step faster nor any kernel's power higher."""
    spec = load_device(device)
    floor = power.floor_w(spec)
    high = floor + share * (spec.tdp_w - floor)
    low = floor + 0.5 * share * (spec.tdp_w - floor)
    try:
        simulate(model, spec, micro_batch=1)
        precision = "bf16"
    except PlanError:   # a device whose matrix units run no bf16 (a phone's NPU)
        precision = "fp32"
    a = simulate(model, spec, micro_batch=micro_batch, power_limit_w=high, precision=precision)
    b = simulate(model, spec, micro_batch=micro_batch, power_limit_w=low, precision=precision)
    for r, limit in ((a, high), (b, low)):
        assert spec.idle_power_w * (1 - 1e-9) <= r.avg_power_w <= limit * (1 + 1e-9)
        ops = r.ops[(r.ops.kind != "collective") & (r.ops.time_s > 0)]
        for _, phase in ops.groupby("phase"):
            watts = phase.energy_j.sum() / phase.time_s.sum()
            assert spec.idle_power_w * (1 - 1e-9) <= watts <= limit * (1 + 1e-9)
    assert b.step_time_s >= a.step_time_s * (1 - 1e-12)
    # Every kernel draws no more under the lower limit. The step's average may still rise a
    # little: capped kernels run longer, so they weigh more against the step's low-power
    # stretches (graphcore-bow, gpt2-small, micro-batch 1: 48.93 -> 48.97 W).
    both = a.ops.merge(b.ops, on="name", suffixes=("_a", "_b"))
    both = both[(both.time_s_a > 0) & (both.time_s_b > 0)]
    assert (both.energy_j_b / both.time_s_b
            <= both.energy_j_a / both.time_s_a * (1 + 1e-9)).all()


def test_multi_device_overlap_stays_under_limit():
    """Communication overlapping compute cannot push the average above the limit (the
    issue's llama2-7b --cp 2 case drew 400.83 W against 400 W)."""
    r = simulate("llama2-7b", "a100", num_devices=2, cp=2)
    assert r.avg_power_w <= 400 * (1 + 1e-9)
    r = simulate("llama2-7b", "a100", num_devices=2, cp=2, power_limit_w=250)
    assert r.avg_power_w <= 250 * (1 + 1e-9)


@pytest.mark.parametrize("device", ["tpu-v6e", "a100-sxm4-80gb", "h100-sxm5-80gb"])
def test_many_micro_batches_under_the_step_reduction_stay_under_limit(device):
    """The step's gradient reduction slows only the last micro-batch's compute (interference):
    the first m - 1 are charged at their own times. Charged at the slowed times, llama2-7b on
    8 TPU v6e at micro-batch 1 x 8 averaged 195.4 W against its 192 W limit (an internal
    error); with the slowdown charged once, 190.3 W."""
    from simulator import ParallelPlan

    for m in (1, 8):
        result = simulate("llama2-7b", device, parallel=ParallelPlan(dp=8), micro_batch=1,
                          global_batch=8 * m)
        assert load_device(device).idle_power_w <= result.avg_power_w <= result.power_limit_w


@pytest.mark.parametrize("value", [0, -5, "abc", float("nan"), float("inf"), True])
def test_plan_rejects_bad_power_limit(value):
    with pytest.raises(PlanError, match="power_limit_w"):
        Plan(power_limit_w=value)


def test_limit_outside_device_range_is_a_plan_error():
    above = simulate("gpt2-small", "a100", power_limit_w=500)   # above the TDP: the TDP
    assert above.power_limit_w == 400
    assert above.step_time_s == simulate("gpt2-small", "a100").step_time_s
    with pytest.raises(PlanError, match="below what"):
        simulate("gpt2-small", "a100", power_limit_w=50)
    assert Plan(power_limit_w="300").power_limit_w == 300.0


def test_cli_power_limit(tmp_path):
    import json
    import subprocess
    import sys

    run = [sys.executable, "-m", "simulator.cli", "predict", "gpt2-small", "--device", "a100"]
    out = subprocess.run(run + ["--power-limit-w", "250", "--json"], capture_output=True,
                         text=True, check=True)
    summary = json.loads(out.stdout)
    assert summary["power_limit_w"] == 250 and summary["avg_power_w"] <= 250
    bad = subprocess.run(run + ["--power-limit-w", "20"], capture_output=True, text=True,
                         check=False)
    assert bad.returncode == 2 and "power_limit_w" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_idle_prior_is_the_median_of_measured_gpus():
    from statistics import median

    from hardware_specs.loader import IDLE_PRIORS
    from hardware_specs.spec import DeviceClass

    measured = [load_device(n) for n in ("a100-sxm4-40gb", "h100-sxm5-80gb", "b200", "mi355x")]
    assert not any(d.idle_prior for d in measured)
    share = median(d.idle_power_w / d.tdp_w for d in measured)
    assert IDLE_PRIORS[DeviceClass.GPU] == pytest.approx(share, abs=0.005)
    xeon = load_device("xeon-8380")
    assert IDLE_PRIORS[DeviceClass.CPU] == pytest.approx(xeon.idle_power_w / xeon.tdp_w)
    t4 = load_device("t4")
    assert t4.idle_prior and t4.idle_power_w == pytest.approx(0.13 * t4.tdp_w)
    r = simulate("gpt2-small", t4)
    assert any("no measured idle power" in note for note in r.notes)


def test_idle_w_required_without_a_class_prior(tmp_path):
    from hardware_specs.loader import parse_device
    from simulator.errors import SpecError

    text = Path(load_device("alveo-u250").path).read_text()
    assert "idle_w" in text
    stripped = "\n".join(line for line in text.splitlines() if not line.startswith("idle_w"))
    with pytest.raises(SpecError, match="power.idle_w"):
        parse_device(stripped.encode(), "u250-without-idle")


def test_node_power_from_datasheets_in_run_totals():
    """A preset's node power less its GPUs' TDPs is the default node overhead in run totals:
    the measured maximum where one is cited (an 8 x H100 HGX node, about 8.4 kW, Latif et al.
    2025: 2.8 kW), else the datasheet's rating (DGX A100 6.5 kW, DGX B200 14.3 kW); --node-
    overhead-w 0 leaves the devices alone."""
    from hardware_specs.cluster import load_cluster

    for name, rated_w, measured_w, tdp in (("dgx-a100", 6500, None, 400),
                                           ("dgx-h100", 10200, 8400, 700),
                                           ("dgx-b200", 14300, None, 1000)):
        cluster = load_cluster(name)
        assert (cluster.node_power_w, cluster.node_power_measured_w) == (rated_w, measured_w)
        assert cluster.node_overhead_w == pytest.approx((measured_w or rated_w) - 8 * tdp)
    r = simulate("gpt2-small", "dgx-h100", micro_batch=4, global_batch=32, steps=100)
    bare = simulate("gpt2-small", "dgx-h100", micro_batch=4, global_batch=32, steps=100,
                    node_overhead_w=0)
    t, b = r.totals, bare.totals
    devices_kwh = 100 * r.energy_j_per_step * 8 / 3.6e6
    assert b["energy_kwh"] == pytest.approx(devices_kwh, rel=1e-9)
    assert t["node_overhead_w"] == pytest.approx(2800)
    assert t["energy_kwh"] == pytest.approx(devices_kwh + 2800 * t["total_time_s"] / 3.6e6,
                                            rel=1e-9)
    assert load_cluster("tpu-v4-pod-slice").node_overhead_w == 0.0   # no datasheet figure


def test_gb200_rack_power_from_nvidia_planning_figures():
    """The GB200 NVL72 preset's node is the rack: NVIDIA's ~120 kW at full load (Mission Control
    PRS FAQ) less 72 x 1,200 W GPUs is 33.6 kW for the rest, and the same FAQ's per-tray split
    (6.7 kW: 4 x 1.2 kW GPUs, 0.5 kW of CPUs, ~1.4 kW static) over 18 trays agrees within 2 %
    (120.6 kW; the FAQ rounds the rack to 120 kW)."""
    from hardware_specs.cluster import load_cluster

    rack = load_cluster("gb200-nvl72")
    assert rack.devices_per_node == 72 and rack.device.tdp_w == 1200
    assert rack.node_power_w == 120_000 and rack.node_power_measured_w is None
    assert rack.node_overhead_w == pytest.approx(120_000 - 72 * 1200)
    trays = 18 * (4 * 1200 + 500 + 1400)
    assert trays == pytest.approx(rack.node_power_w, rel=0.02)
    assert 18 * (500 + 1400) == pytest.approx(rack.node_overhead_w, rel=0.02)


@pytest.mark.parametrize("measured, pattern", [
    ("10201", r"node_power_measured_w: 10201 W is above node_power_w \(10200 W"),
    ("0", r"node_power_measured_w: must be > 0"),
    ('"high"', r"node_power_measured_w: must be a number"),
])
def test_measured_node_power_is_checked_on_load(tmp_path, measured, pattern):
    """A measured node maximum above the node's rating, or not a positive number, is refused
    on load with the file and the key named."""
    from hardware_specs.cluster import load_cluster
    from simulator.errors import SpecError

    text = Path(load_cluster("dgx-h100").path).read_text()
    assert "node_power_measured_w = 8400" in text
    path = tmp_path / "node.toml"
    path.write_text(text.replace("node_power_measured_w = 8400",
                                 f"node_power_measured_w = {measured}"))
    with pytest.raises(SpecError, match=pattern) as error:
        load_cluster(str(path))
    assert str(error.value).startswith(str(path))


def test_efficiency_figures_closed_form():
    r = simulate("gpt2-small", "a100", micro_batch=8, num_devices=2)
    s = r.summary()
    watts = r.avg_power_w * 2
    assert s["tokens_per_joule"] == pytest.approx(r.tokens_per_s / watts)
    assert s["samples_per_kwh"] == pytest.approx(r.samples_per_s / watts * 3.6e6)
    assert s["tflops_per_watt"] == pytest.approx(r.tflops_per_device / r.avg_power_w)
    # the same figures as the Result's attributes (DESIGN: 'the same figures as attributes')
    assert (r.tokens_per_joule, r.samples_per_kwh, r.tflops_per_watt) == (
        s["tokens_per_joule"], s["samples_per_kwh"], s["tflops_per_watt"])
    assert simulate("resnet-18", "a100").summary()["tokens_per_joule"] is None
    assert simulate("resnet-18", "a100").tokens_per_joule is None
    from simulator.explore.sweep import compare

    rows = compare("gpt2-small", ["a100", "t4"])
    assert {"tokens_per_joule", "samples_per_kwh", "tflops_per_watt"} <= set(rows.columns)


def test_power_limit_shape_against_zeus_v100():
    """Validation, never fitted on: Zeus's measured V100 power-limit sweeps (NSDI 2023 traces).
    Relative to the 250 W run, hwsim's slowdown is within 20 % of the measured one at every
    limit (it over-slows below 150 W, where the measured V100 never drew its limit), its
    energy per unit of work within 10 %, and the energy is lowest at a limit within 25 W of
    the measured minimum (150-175 W on both sides). ResNet-50 at 100 W was outside the energy
    bound (-10.5 %, a strict xfail) while the NCHW batch norms ran at the A100 40GB's fraction of
    the bandwidth (2026-12-06); carried per SM, the V100's (0.520 / 0.589) put it at -7.8 %."""
    from simulator.calibrate.power_limits import rows

    table = rows()
    assert len(table) == 14
    for row in table:
        assert row["predicted_time"] == pytest.approx(row["measured_time"], rel=0.20), row
        assert row["predicted_energy"] == pytest.approx(row["measured_energy"], rel=0.10), row
        assert row["predicted_time"] >= 1.0 and row["predicted_power_w"] <= row["limit_w"] + 1e-6
    for workload in {row["workload"] for row in table}:
        mine = [row for row in table if row["workload"] == workload]
        best = min(mine, key=lambda row: row["predicted_energy"])["limit_w"]
        measured = min(mine, key=lambda row: row["measured_energy"])["limit_w"]
        assert abs(best - measured) <= 25, (workload, best, measured)


def _p100_sweep():
    from simulator.calibrate.power_limits import rows

    return rows(device="p100-pcie-16gb")


def test_power_limit_sweep_on_the_p100_shows_the_busy_power_gap():
    """Validation, never fitted on: Zeus's P100 sweeps (NSDI 2023 traces, ResNet-50 b128 and
    BERT-base b24). What holds: hwsim's step never gets faster as the limit falls and its power
    stays under each limit; its energy per unit of work is within 20 % of the measured one at
    every limit (16.2 % at most at this commit: BERT at 125 W). The last two checks are of the
    measured data alone, not of hwsim: the busy P100 drew at most 72 % of its 250 W limit (165
    and 179 W) and ran within 1 % of full speed at 200 W, what hwsim misses where its busy
    device draws the TDP (docs/accuracy.md; hwsim's side is the strict xfail below)."""
    table = _p100_sweep()
    assert len(table) == 12
    for workload in {row["workload"] for row in table}:
        mine = sorted((row for row in table if row["workload"] == workload),
                      key=lambda row: -row["limit_w"])
        times = [row["predicted_time"] for row in mine]
        assert times == sorted(times), workload
        for row in mine:
            assert row["predicted_power_w"] <= row["limit_w"] + 1e-6, row
            assert row["predicted_energy"] == pytest.approx(row["measured_energy"], rel=0.20), row
        top, at200 = mine[0], next(row for row in mine if row["limit_w"] == 200)
        assert top["measured_power_w"] <= 0.72 * 250
        assert at200["measured_time"] <= 1.01


@pytest.mark.xfail(strict=True, reason="hwsim's busy P100 draws its 250 W TDP where the card "
                   "drew 165-179 W, so every limit binds harder: x1.52 / x1.79 at 125 W against "
                   "the measured x1.14 / x1.18 (no kernel-level P100 power measurement found)")
def test_p100_slowdown_within_the_v100_tolerance():
    """The V100's tolerance (time within 20 % of the measured slowdown at every limit) on the
    P100: not met until a busy device's power below its TDP is modelled."""
    for row in _p100_sweep():
        assert row["predicted_time"] == pytest.approx(row["measured_time"], rel=0.20), row


def test_set_idle_or_tdp_on_a_prior_device():
    """--set idle_power_w makes it a given figure (no prior note); --set tdp_w moves the
    class prior with the TDP."""
    from hardware_specs.override import override

    t4 = load_device("t4")
    given = override(t4, {"idle_power_w": "12"})
    assert given.idle_power_w == 12 and not given.idle_prior
    hotter = override(t4, {"tdp_w": 140})
    assert hotter.idle_prior and hotter.idle_power_w == pytest.approx(0.13 * 140)
    measured = override(load_device("h100"), {"tdp_w": 600})
    assert measured.idle_power_w == 79 and not measured.idle_prior


@pytest.mark.parametrize("name", ["t4", "a100-pcie-40gb", "h200-sxm"])
def test_the_limit_a_refusal_suggests_is_accepted(name):
    """The refusal's 'give at least N' is the floor rounded up (16.34 W was offered as 16)."""
    device = load_device(name)
    low = power.floor_w(device)
    with pytest.raises(PlanError, match=f"give at least {math.ceil(low)}$"):
        power.check_limit(low - 0.01, device)
    assert power.check_limit(math.ceil(low), device) == math.ceil(low)


#: What a [power] section's comments must name: a source of the figures (a datasheet, a
#: measurement and where it was read, a document) or that they are a prior or an assumption.
_POWER_SOURCE = re.compile(r"datasheet|measured|docs|https?://|issue|PR #|review|ARK|Hot Chips|"
                           r"DS9\d\d|Apple Support|nvidia-smi|amd-smi|whitepaper|prior|"
                           r"assumption|stand-in|convention|eeNews", re.IGNORECASE)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "hardware_specs"
                                         / "devices").glob("*.toml")), ids=lambda p: p.stem)
def test_every_device_power_figure_cites_a_source_or_says_prior(path):
    """Issue 25: every device's power figures cite a source or say they are a prior. The
    [power] section's comments name one; a spec without idle_w loads with the class prior,
    flagged (idle_prior) and noted in a result."""
    text = path.read_text()
    section = re.search(r"^\[power\]\n(.*?)(?=^\[|\Z)", text, re.DOTALL | re.MULTILINE).group(1)
    comments = " ".join(line.split("#", 1)[1] for line in section.splitlines() if "#" in line)
    assert _POWER_SOURCE.search(comments), f"{path.name}: [power] cites nothing"
    device = load_device(path.stem)
    given = re.search(r"^idle_w\s*=", section, re.MULTILINE) is not None
    assert device.idle_prior is not given
    if device.idle_prior:
        assert "prior" in comments.lower()


def test_compare_and_plan_print_perf_per_watt(capsys, tmp_path):
    """Issue 25: compare and plan print perf/W; issue 22 item 6: tokens_per_joule and
    samples_per_kwh in compare, plan and sweep rows. Each printed figure is Result.summary's
    (compare also the power limit each device ran under: the TDP, or --power-limit-w under
    it); plan plans language models only, so its text has tokens_per_joule."""
    import pandas as pd

    from simulator.cli.main import main

    assert main(["compare", "gpt2-small", "--devices", "a100,t4", "--power-limit-w", "200"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert {"tflops_per_watt", "tokens_per_joule", "samples_per_kwh", "power_limit_w"} <= set(
        header)
    for name, limit in (("t4", 70), ("a100-sxm4-80gb", 200)):   # t4's TDP is under 200 W
        row = dict(zip(header, next(line for line in lines if line.split()[0] == name).split()))
        expected = simulate("gpt2-small", name, power_limit_w=200).summary()
        assert float(row["power_limit_w"]) == limit == expected["power_limit_w"]
        for key in ("tflops_per_watt", "tokens_per_joule", "samples_per_kwh"):
            assert float(row[key]) == pytest.approx(expected[key], rel=1e-3), (name, key)
    assert main(["plan", "gpt2-small", "--tokens", "1e9", "--devices", "h100",
                 "--device-counts", "1", "--grid", "tp=1", "--workers", "1", "--top", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[1].split()
    row = dict(zip(header, lines[2].split()))
    expected = simulate("gpt2-small", "h100", micro_batch=int(row["micro_batch"])).summary()
    for key in ("tflops_per_watt", "tokens_per_joule", "samples_per_kwh"):
        assert float(row[key]) == pytest.approx(expected[key], rel=1e-3), key
    out = tmp_path / "sweep.csv"
    assert main(["sweep", "gpt2-small", "--devices", "a100", "--device-counts", "1", "--grid",
                 "power_limit_w=150,400", "--workers", "1", "--out", str(out)]) == 0
    rows = pd.read_csv(out).sort_values("power_limit_w")
    assert list(rows["power_limit_w"]) == [150, 400]
    assert rows["tokens_per_joule"].notna().all() and rows["samples_per_kwh"].notna().all()
    # the energy side of the trade-off: at 150 W each joule buys more tokens, each second fewer
    assert rows["tokens_per_joule"].iloc[0] > rows["tokens_per_joule"].iloc[1]
    assert rows["tokens_per_s"].iloc[0] < rows["tokens_per_s"].iloc[1]

