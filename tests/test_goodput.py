"""A whole run's goodput (simulator.report.goodput): checkpoint writes, evaluations and the
expected loss to failures, their closed forms and invariants, and the run totals they move."""
from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.api import simulate
from simulator.cli.main import main
from simulator.errors import PlanError
from simulator.plan.step import Plan
from simulator.report.goodput import (
    MIN_GOODPUT,
    STORAGE_B_PER_S_PER_DEVICE,
    checkpoint_bytes,
    run_time,
    young_interval_s,
)

steps = st.integers(1, 10**6)
step_s = st.floats(1e-3, 100.0)
every = st.integers(1, 10**5)
write = st.floats(0.0, 600.0)
rate = st.floats(1e-12, 1e-4)     # per second, the whole job: one failure per 3 h to 30,000 y


def test_no_failures_is_the_sum_of_its_parts():
    """Without failures the run is its steps, its floor(N / c) checkpoint writes and its
    floor(N / e) evaluations, nothing more."""
    out = run_time(10_500, 2.0, checkpoint_every=1000, checkpoint_s=30.0, eval_every=4000,
                   eval_s=50.0)
    assert out["training_time_s"] == 21_000.0
    assert out["checkpoint_time_s"] == 10 * 30.0
    assert out["eval_time_s"] == 2 * 50.0
    assert out["failure_time_s"] == 0.0
    assert out["total_time_s"] == 21_000.0 + 300.0 + 100.0
    assert out["goodput"] == pytest.approx(21_000 / 21_400)
    assert run_time(10, 1.0)["goodput"] == 1.0   # nothing configured: the steps alone


def test_failures_follow_daly_exactly():
    """One segment of W seconds, failures at rate L, restart R: exp(L R) (exp(L W) - 1) / L
    (Daly 2006). W = 1/L and R = 0: (e - 1) W; with R: e^(L R) times that."""
    hour = 3600.0
    out = run_time(3600, 1.0, failures_per_s=1 / hour)
    assert out["total_time_s"] == pytest.approx(hour * (math.e - 1), rel=1e-12)
    out = run_time(3600, 1.0, failures_per_s=1 / hour, restart_s=360.0)
    assert out["total_time_s"] == pytest.approx(hour * (math.e - 1) * math.exp(0.1), rel=1e-12)
    # ten segments of a tenth of it: ten times (e^0.1 - 1) hours
    out = run_time(3600, 1.0, checkpoint_every=360, failures_per_s=1 / hour)
    assert out["total_time_s"] == pytest.approx(10 * hour * math.expm1(0.1), rel=1e-12)


def test_the_optimum_checkpoint_interval_is_youngs():
    """Scanning the checkpoint interval, the fastest run checkpoints about every
    sqrt(2 C / L) seconds of work (Young 1974): C = 60 s, one failure a day on the job."""
    per_s, write_s = 1 / 86_400, 60.0
    times = {c: run_time(1_000_000, 1.0, checkpoint_every=c, checkpoint_s=write_s,
                         failures_per_s=per_s)["total_time_s"] for c in range(500, 8001, 25)}
    best = min(times, key=times.get)
    young = young_interval_s(write_s, per_s)     # 3,220 s
    assert best == pytest.approx(young, rel=0.05)


@settings(max_examples=60, deadline=None)
@given(steps, step_s, every, every, write, rate, st.floats(0, 3600))
def test_goodput_bounds_and_more_checkpoints_without_failures(n, t, c1, c2, w, per_s, r):
    """Goodput in (0, 1]; without failures a run that checkpoints more often is never
    faster; failures, a longer restart and a slower write never make a run faster."""
    lo, hi = sorted((c1, c2))
    calm_often = run_time(n, t, checkpoint_every=lo, checkpoint_s=w)
    calm_rarely = run_time(n, t, checkpoint_every=hi, checkpoint_s=w)
    assert calm_often["total_time_s"] >= calm_rarely["total_time_s"]
    try:
        failing = run_time(n, t, checkpoint_every=lo, checkpoint_s=w, failures_per_s=per_s,
                           restart_s=r)
        longer = run_time(n, t, checkpoint_every=lo, checkpoint_s=w, failures_per_s=per_s,
                          restart_s=r + 60)
        slower = run_time(n, t, checkpoint_every=lo, checkpoint_s=w + 10,
                          failures_per_s=per_s, restart_s=r)
    except PlanError:
        return   # the run would not finish: refused, not printed
    for out in (calm_often, calm_rarely, failing, longer, slower):
        assert MIN_GOODPUT <= out["goodput"] <= 1.0
        assert out["total_time_s"] == pytest.approx(
            out["training_time_s"] + out["checkpoint_time_s"] + out["eval_time_s"]
            + out["failure_time_s"], rel=1e-9)
    assert failing["total_time_s"] >= calm_often["total_time_s"] * (1 - 1e-12)
    assert longer["total_time_s"] >= failing["total_time_s"] * (1 - 1e-12)
    assert slower["total_time_s"] >= failing["total_time_s"] * (1 - 1e-12)


def test_a_run_that_cannot_finish_is_refused():
    """A failure every 15 minutes against 10 hours between checkpoints: PlanError naming the
    fix, not an infinite or NaN time."""
    with pytest.raises(PlanError, match="checkpoint-every"):
        run_time(36_000, 1.0, failures_per_s=4 / 3600)


@pytest.mark.parametrize("bad", [{"checkpoint_every": -1}, {"eval_every": 1.5},
                                 {"failure_rate": 2.0}, {"restart_s": math.nan},
                                 {"storage_gb_s": -1}, {"eval_every": 10},
                                 {"eval_batches": 5}])
def test_bad_run_fields_are_plan_errors(bad):
    with pytest.raises(PlanError):
        Plan(**bad)


def test_eval_batches_without_eval_every_is_refused_in_one_line(capsys):
    """Evaluation batches with no evaluations would be dropped silently: refused, as
    eval_every without eval_batches is."""
    with pytest.raises(PlanError, match="needs eval_every"):
        Plan(eval_batches=5)
    assert main(["predict", "gpt2", "--device", "a100-sxm4-40gb", "--steps", "10",
                 "--eval-batches", "5"]) == 2
    err = capsys.readouterr().err
    assert "eval_batches" in err and len(err.strip().splitlines()) == 1


def test_checkpoint_bytes_are_weights_and_optimizer_states():
    """Mixed-precision AdamW: 2 (bf16 weights) + 4 (fp32 master) + 4 + 4 (moments) = 14
    bytes per parameter; the gradients are not saved."""
    assert sum(Plan().state_bytes_per_param().values()) == 16
    assert checkpoint_bytes(1e9, Plan().state_bytes_per_param()) == 14e9
    # a fine-tune: every parameter's weights (2 B), the trainable ones' optimizer states (12 B)
    assert checkpoint_bytes(1e9, Plan().state_bytes_per_param(), 1e6) == 2e9 + 12e6


def test_a_lora_checkpoint_has_the_adapters_optimizer_states_only():
    """gpt2 under LoRA: a checkpoint is the 124M weights (2 B each) and the adapters' optimizer
    states (12 B each), not 14 B for every parameter; its evaluations take the LoRA step's
    forward share, above a full step's third (no frozen weight gradients)."""
    kw = {"micro_batch": 8, "steps": 1000, "checkpoint_every": 100, "eval_every": 100,
          "eval_batches": 10}
    full = simulate("gpt2", "a100-sxm4-40gb", **kw)
    lora = simulate("gpt2", "a100-sxm4-40gb", finetune="lora", **kw)
    assert full.trainable_params is None and 0 < lora.trainable_params < 0.01 * lora.params
    write_s = (lora.params * 2 + lora.trainable_params * 12) / STORAGE_B_PER_S_PER_DEVICE
    assert lora.totals["checkpoint_time_s"] == pytest.approx(10 * write_s)
    assert lora.totals["checkpoint_time_s"] < full.totals["checkpoint_time_s"] / 6
    full_share, lora_share = (r.totals["eval_time_s"] / (10 * 10 * r.step_time_s)
                              for r in (full, lora))
    assert full_share == pytest.approx(1 / 3, abs=0.03)
    assert lora_share > full_share + 0.05


def test_evaluations_and_rerun_work_draw_busy_power():
    """Evaluations are forward passes: their energy is the step's average power over their
    time, not the idle power; without a restart, all the time failures lose is work run again
    (busy); a restart's share, exp(-L R) short of R per failure, idles."""
    kw = {"num_devices": 8, "global_batch": 64, "micro_batch": 8, "steps": 10_000}
    plain = simulate("gpt2", "a100-sxm4-40gb", **kw)
    evals = simulate("gpt2", "a100-sxm4-40gb", eval_every=100, eval_batches=20, **kw)
    added = evals.totals["energy_kwh"] - plain.totals["energy_kwh"]
    busy = evals.avg_power_w * 8 * evals.totals["eval_time_s"] / 3.6e6
    assert added == pytest.approx(busy)
    idle = evals.device_spec.idle_power_w * 8 * evals.totals["eval_time_s"] / 3.6e6
    assert added > 1.5 * idle
    lost = run_time(1000, 1.0, failures_per_s=1e-4)
    assert lost["busy_time_s"] == pytest.approx(lost["failure_time_s"])
    rate, restart = 1e-4, 300.0
    out = run_time(1000, 1.0, checkpoint_every=100, checkpoint_s=10.0, eval_every=500,
                   eval_s=20.0, failures_per_s=rate, restart_s=restart)
    restarts = out["total_time_s"] * -math.expm1(-rate * restart)
    work = 1000 + 10 * 10.0 + 2 * 20.0
    rerun = (out["failure_time_s"] - restarts) * (1000 + 40) / work
    assert out["busy_time_s"] == pytest.approx(2 * 20.0 + rerun)
    assert 0 < rerun < out["failure_time_s"] - restarts


def test_the_run_totals_pay_for_checkpoints():
    """gpt2 on 8 A100s: checkpoints every 1000 steps written at the default storage share
    (0.122 GB/s per device) add floor(steps / 1000) x params x 14 B / (8 x 0.122 GB/s) to the
    run; the devices idle through them, held and paid for."""
    kw = {"num_devices": 8, "global_batch": 64, "micro_batch": 8, "steps": 10_500}
    plain = simulate("gpt2", "a100-sxm4-40gb", **kw)
    saved = simulate("gpt2", "a100-sxm4-40gb", checkpoint_every=1000, **kw)
    assert plain.totals["goodput"] == 1.0
    assert plain.totals["total_time_s"] == pytest.approx(10_500 * plain.step_time_s)
    write_s = saved.params * 14 / (8 * STORAGE_B_PER_S_PER_DEVICE)
    assert saved.totals["checkpoint_time_s"] == pytest.approx(10 * write_s)
    assert saved.totals["total_time_s"] == pytest.approx(10_500 * saved.step_time_s
                                                         + 10 * write_s)
    assert saved.totals["device_hours"] > plain.totals["device_hours"]
    assert saved.totals["energy_kwh"] > plain.totals["energy_kwh"]
    assert saved.step_time_s == plain.step_time_s   # the step itself does not move


def test_predict_shows_goodput_and_refuses_a_bad_rate(capsys):
    base = ["predict", "gpt2", "--device", "a100-sxm4-40gb", "--num-devices", "8",
            "--global-batch", "64", "--micro-batch", "8", "--tokens", "3e9"]
    assert main(base + ["--checkpoint-every", "100"]) == 0
    out = capsys.readouterr().out
    assert "goodput" in out and "checkpoints" in out
    assert main(base + ["--failure-rate", "7"]) == 2
    err = capsys.readouterr().err
    assert "failure_rate" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_the_totals_name_youngs_interval_and_it_pays():
    """With a failure rate the totals give Young's interval in steps; checkpointing at it is
    no slower than a quarter or four times as often (one failure per device-week, 1,000
    devices, 10 minutes to restart)."""
    kw = {"num_devices": 8, "global_batch": 64, "micro_batch": 8, "steps": 2e6,
          "failure_rate": 1 / 168 * 125, "restart_s": 600.0}
    with pytest.raises(PlanError, match="Young's optimum"):   # no checkpoints: refused
        simulate("gpt2", "a100-sxm4-40gb", **kw)
    hint = simulate("gpt2", "a100-sxm4-40gb", checkpoint_every=1000,
                    **kw).totals["young_checkpoint_every"]
    times = {c: simulate("gpt2", "a100-sxm4-40gb", checkpoint_every=c, **kw)
             .totals["total_time_s"] for c in (hint // 4, hint, hint * 4)}
    assert times[hint] <= min(times.values()) * (1 + 1e-9)
    assert "young_checkpoint_every" not in simulate("gpt2", "a100-sxm4-40gb",
                                                    steps=10).totals


def test_json_carries_the_run_level_figures(capsys):
    """--json with --tokens: goodput and its parts beside total_time_s; the parts sum to it."""
    assert main(["predict", "gpt2", "--device", "a100-sxm4-40gb", "--micro-batch", "8",
                 "--tokens", "3e9", "--eval-every", "500", "--eval-batches", "20",
                 "--checkpoint-every", "1000", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    parts = ("training_time_s", "checkpoint_time_s", "eval_time_s", "failure_time_s")
    assert out["total_time_s"] == pytest.approx(sum(out[key] for key in parts))
    assert out["goodput"] == pytest.approx(out["training_time_s"] / out["total_time_s"])
    assert 0 < out["goodput"] < 1 and out["eval_time_s"] > 0 and out["failure_time_s"] == 0
