"""Issue 25's power properties over every catalogue device AND plan (tests/test_power.py draws
devices and models on one device): average power between idle and the power limit for the
step and for each phase (forward, backward, recompute, update), with and without a limit; a
lower limit never makes a step faster nor any kernel or phase draw more; a cluster preset's
node power between its idle and its cited maximum."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardware_specs.cluster import list_clusters, load_cluster
from hardware_specs.host import HOST_NAME
from hardware_specs.loader import list_devices, load_device
from simulator.api import simulate
from simulator.cost import power
from simulator.errors import PlanError
from simulator.graph.op import DType

DEVICES = [name for name in list_devices() if name != HOST_NAME]
#: (devices, parallel and recompute fields): each axis of a plan, alone and mixed, on
#: gpt2-small (12 heads, 12 layers: tp, pp and cp of 2 divide it)
PLANS = [
    (1, {}),
    (1, {"recompute": "selective"}),
    (1, {"recompute": "full"}),
    (2, {}),                                   # data parallel
    (2, {"zero": 1}),
    (2, {"zero": 3}),
    (2, {"tp": 2, "sequence_parallel": True}),
    (2, {"pp": 2}),
    (2, {"cp": 2}),                            # context parallel: the ring's calls
    (4, {"tp": 2, "pp": 2, "recompute": "full"}),
    (4, {"cp": 2, "zero": 1, "recompute": "selective"}),
]
SLACK = 1 + 1e-9


def _precision(spec, fp8: bool) -> str:
    if fp8 and DType.FP8 in spec.peak_flops_per_s:
        return "fp8"
    try:
        simulate("gpt2-small", spec, micro_batch=1)
        return "bf16"
    except PlanError:   # a phone's NPU: no bf16 on its matrix units
        return "fp32"


def _run(spec, devices, fields, precision, limit, **more):
    return simulate("gpt2-small", spec, num_devices=devices, micro_batch=2,
                    global_batch=2 * devices * 2, seq_len=512, precision=precision,
                    power_limit_w=limit, **fields, **more)


def _phase_watts(result) -> dict[str, float]:
    """Each phase's average power over its compute ops (collectives run on their own
    streams, their static power counted once over the step)."""
    ops = result.ops[(result.ops.kind != "collective") & (result.ops.time_s > 0)]
    return {phase: g.energy_j.sum() / g.time_s.sum() for phase, g in ops.groupby("phase")}


def _within(result, spec, limit_w: float) -> None:
    idle = spec.idle_power_w
    assert idle / SLACK <= result.avg_power_w <= limit_w * SLACK
    phases = _phase_watts(result)
    assert {"forward", "backward", "optimizer"} <= set(phases)
    for phase, watts in phases.items():
        assert idle / SLACK <= watts <= limit_w * SLACK, (phase, watts, limit_w)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(device=st.sampled_from(DEVICES), plan=st.sampled_from(PLANS), fp8=st.booleans(),
       share=st.one_of(st.none(), st.floats(0.0, 1.0)))
def test_power_within_idle_and_limit_for_every_plan_and_phase(device, plan, fp8, share):
    """Every device, every plan axis (dp, tp, pp, cp, ZeRO, recompute; fp8 where the device
    runs it), with no limit (the TDP) or a limit from the device's floor to its TDP: the
    step's and each phase's average power lie between idle and the limit; with a recompute
    plan the recompute phase is among them. Then a lower limit (half as far above the
    floor) never makes the step faster (on several devices: not without the collectives'
    interference stretch, and by at most 0.5 % with it), nor any kernel or phase draw more."""
    spec = load_device(device)
    devices, fields = plan
    precision = _precision(spec, fp8)
    floor = power.floor_w(spec)
    limit = None if share is None else floor + share * (spec.tdp_w - floor)
    high = _run(spec, devices, fields, precision, limit)
    assert high.power_limit_w == (spec.tdp_w if limit is None else min(limit, spec.tdp_w))
    _within(high, spec, high.power_limit_w)
    if fields.get("recompute") == "full":
        assert "recompute" in _phase_watts(high)
    lower = floor + 0.5 * ((share if share is not None else 1.0) * (spec.tdp_w - floor))
    low = _run(spec, devices, fields, precision, lower)
    _within(low, spec, lower)
    if devices == 1:
        assert low.step_time_s >= high.step_time_s / (1 + 1e-12)
    else:
        # the stretch of kernels that collectives overlap (simulator.cost.interference)
        # depends on where the schedule puts the two, which the limit moves: with it the step
        # may come out a little faster under the lower limit, a limitation of the stretch's
        # model (found 2026-12-06: tpu-v6e, cp 2, the TDP against 294 W: 30.415 -> 30.390 ms,
        # -0.08 %; without the stretch 29.571 -> 29.652 ms). Within 0.5 % with it, never
        # faster without it. Without it too the power the limit sets: the stretch is drawn at
        # idle power, so with it a phase's average can move either way (rtx-5090, fp8, cp 2:
        # the unclocked recompute phase 324.75 W at the TDP, 324.99 W at 355 W; 326.23 W at
        # both without the stretch)
        assert low.step_time_s >= high.step_time_s * (1 - 0.005)
        high, low = (_run(spec, devices, fields, precision, at, comm_interference=False)
                     for at in (limit, lower))
        assert low.step_time_s >= high.step_time_s / (1 + 1e-12)
    _no_more_power(high, low)


def _no_more_power(high, low) -> None:
    """``low`` (the lower limit) draws no more than ``high`` in any kernel or phase."""
    a, b = high.ops, low.ops    # the same ops in the same order, priced at two limits
    assert list(a.name) == list(b.name)
    # a collective keeps its clock: its energy is its traffic's, the same (the ring hides
    # more of its exchange under a slower attention, so its exposed time, not its energy,
    # shrinks: its joules over that time are no power the limit sets)
    comm = (a.kind == "collective").to_numpy()
    assert (b.energy_j.to_numpy()[comm] <= a.energy_j.to_numpy()[comm] * SLACK).all()
    timed = (a.time_s.to_numpy() > 0) & (b.time_s.to_numpy() > 0) & ~comm
    watts_high = a.energy_j.to_numpy()[timed] / a.time_s.to_numpy()[timed]
    watts_low = b.energy_j.to_numpy()[timed] / b.time_s.to_numpy()[timed]
    assert (watts_low <= watts_high * SLACK).all()
    before, after = _phase_watts(high), _phase_watts(low)
    for phase in after:
        assert after[phase] <= before[phase] * SLACK, phase
    assert max(after.values()) <= max(before.values()) * SLACK


def test_context_parallel_phases_stay_under_a_limit():
    """The case the property found (2026-12-05): the ring's calls (compute x kernel_ratio,
    0.937 on an A100's causal ring of 2) shortened its attention ops after the phase clocks
    were chosen, and the energy still counted the whole call's compute, so gpt2-small on 2
    A100s, cp 2, at a 184.1 W limit drew 191.0 W in its recompute phase (clocked at 57 %).
    Clocked on the ring's calls, every phase is within the limit."""
    spec = load_device("a100")
    r = simulate("gpt2-small", spec, num_devices=2, cp=2, micro_batch=2, global_batch=16,
                 power_limit_w=184.1)
    phases = _phase_watts(r)
    assert "recompute" in phases     # FlashAttention's recompute inside the ring's backward
    for phase, watts in phases.items():
        assert spec.idle_power_w <= watts <= 184.1 * SLACK, (phase, watts)


PRESETS = list_clusters()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(PRESETS), share=st.one_of(st.none(), st.floats(0.0, 1.0)))
def test_node_power_between_node_idle_and_cited_maximum(name, share):
    """A run on a cluster preset: each node's power (its devices' average power plus the
    other parts run totals charge, ``totals['node_overhead_w']``) is at least the node at rest
    (the cited node idle, else its devices' idle plus the same other parts) and at most the
    node's cited maximum (measured, else rated) where one is cited, with or without a
    limit."""
    cluster = load_cluster(name)
    spec = cluster.device
    floor = power.floor_w(spec)
    limit = None if share is None else floor + share * (spec.tdp_w - floor)
    n = cluster.devices_per_node
    precision = _precision(spec, False)
    r = simulate("gpt2-small", cluster, micro_batch=1, global_batch=cluster.num_devices,
                 seq_len=512, precision=precision, power_limit_w=limit, steps=10)
    overhead = r.totals["node_overhead_w"]
    node_w = n * r.avg_power_w + overhead
    rest = cluster.node_idle_w if cluster.node_idle_w is not None else (
        n * spec.idle_power_w + overhead)
    assert rest / SLACK <= node_w
    top = cluster.node_power_measured_w or cluster.node_power_w
    if top is not None:
        assert node_w <= top * SLACK
        assert node_w <= cluster.node_power_at(spec.tdp_w) * SLACK
    assert overhead >= 0.0


@pytest.mark.parametrize("name", ["smc-h100", "dgx-h100"])
def test_a_node_under_a_lower_limit_draws_no_more(name):
    """A node's power follows its devices: under a lower limit the step's devices draw no
    more at any phase, and the node (its devices' average plus its other parts at that
    average) no more than at the TDP."""
    cluster = load_cluster(name)
    runs = [simulate("gpt2-small", cluster, micro_batch=4, global_batch=32, seq_len=512,
                     power_limit_w=limit, steps=10) for limit in (None, 450.0, 300.0)]
    node = [cluster.devices_per_node * r.avg_power_w + r.totals["node_overhead_w"]
            for r in runs]
    assert node == sorted(node, reverse=True)
    assert [r.step_time_s for r in runs] == sorted(r.step_time_s for r in runs)


@pytest.mark.parametrize("value, words", [
    ("20", "below what a100-sxm4-80gb can be held to while busy"),   # under its 50 W idle
    ("abc", "must be a power in watts"),
    ("nan", "must be a power in watts"),
    ("0", "must be a power in watts"),
    ("-5", "must be a power in watts"),
])
def test_cli_refuses_a_limit_below_the_floor_or_not_a_number(value, words):
    """--power-limit-w under what the device can be held to (its idle and more), zero,
    negative or not a number: one line naming the flag or field, exit 2, no traceback; the
    abbreviation --power-limit is the same flag."""
    import subprocess
    import sys

    run = [sys.executable, "-m", "simulator.cli", "predict", "gpt2-small", "--device", "a100",
           f"--power-limit={value}"]
    bad = subprocess.run(run, capture_output=True, text=True, check=False)
    assert bad.returncode == 2, bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in bad.stderr
    assert ("power_limit_w" in lines[0] or "power-limit" in lines[0]) and words in lines[0]
