"""CUDA_LAUNCH_BLOCKING=1 (Plan.launch_blocking, simulator.cost.host.blocking): every kernel
launch returns when its kernel has ended, so each op costs its host dispatch plus its device
time, serially, with nothing of the host hidden behind the device."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import simulator
from benchmarks import validation_report as report
from hardware_specs.loader import load_device
from simulator.cli import main
from simulator.cost import host
from simulator.engine import kernels
from simulator.errors import PlanError
from simulator.plan.parallel import ParallelPlan
from simulator.plan.step import Plan

A100 = load_device("a100-sxm4-80gb")
BLOCKING = Plan(launch_blocking=True)


def test_engine_closed_form_every_op_waits_for_the_one_before():
    """Three ops issued 1 us apart, 10 us on the compute stream, 20 us on another, 5 us on the
    compute stream again, none depending on another: without blocking op 1 (issued at 2 us)
    runs beside op 0 and ends at 22 us; with every op a wait, each starts when the one before
    has ended plus its own issue: 1 + 10 + 1 + 20 + 1 + 5 = 38 us in all."""
    indptr, indices = np.array([0, 0, 0, 0]), np.array([], dtype=np.int64)
    issue = np.array([1e-6, 1e-6, 1e-6])
    args = (indptr, indices, np.array([10e-6, 20e-6, 5e-6]), np.array([0, 1, 0]), 2,
            np.cumsum(issue))
    assert kernels.schedule_issued(*args)[1].max() == pytest.approx(22e-6)
    start, end = kernels.schedule_synced(*args, np.ones(3, dtype=np.bool_))
    np.testing.assert_allclose(start, [1e-6, 12e-6, 33e-6])
    assert end.max() == pytest.approx(38e-6)


def test_a_step_is_the_sum_of_host_and_device_time_per_op():
    """One GPU, one micro-batch: the step is the sum over the ops of the host's issue cost and
    the device's time, each op starting its issue cost after the one before ended."""
    r = simulator.simulate("gpt2", A100, micro_batch=1, launch_blocking=True)
    issue = host.costs(r.lowered, A100, BLOCKING)[1]
    time_s, start, end = r.times["time_s"], r.times["start_s"], r.times["end_s"]
    assert r.step_time_s == pytest.approx(issue.sum() + time_s.sum(), rel=1e-12)
    np.testing.assert_allclose(start[1:], end[:-1] + issue[1:], rtol=1e-12, atol=1e-15)
    assert start[0] == pytest.approx(issue[0])   # nothing issued ahead of the micro-batch
    # the device's times are the same as without blocking: only the host's place changes
    plain = simulator.simulate("gpt2", A100, micro_batch=1)
    np.testing.assert_array_equal(plain.times["time_s"], time_s)
    # and the wait costs no call of its own (unlike torch.cuda.synchronize())
    np.testing.assert_array_equal(issue, host.costs(r.lowered, A100, Plan())[1])


def test_the_blocked_step_grows_by_the_op_count_per_microsecond_of_host():
    """Under blocking each op's host cost is exposed: 1 us more per op is 1 us x the ops'
    issue count more per step (one micro-batch), whether or not the host was hidden before."""
    slow = dataclasses.replace(A100, host_overhead_s=A100.op_overhead_s + 1e-6)
    fast = simulator.simulate("gpt2", A100, micro_batch=8, launch_blocking=True)
    slower = simulator.simulate("gpt2", slow, micro_batch=8, launch_blocking=True)
    added = (host.costs(fast.lowered, slow, BLOCKING)[1].sum()
             - host.costs(fast.lowered, A100, BLOCKING)[1].sum())
    assert added > 0
    assert slower.step_time_s - fast.step_time_s == pytest.approx(added, rel=1e-9)


@settings(max_examples=10, deadline=None)
@given(per_op=st.floats(0.0, 50e-6), micro=st.sampled_from([1, 4]),
       accumulation=st.integers(1, 3), tp=st.sampled_from([1, 2]), compiled=st.booleans())
def test_blocking_is_never_faster(per_op, micro, accumulation, tp, compiled):
    """Whatever the host's cost, the batch, the tensor parallelism (its all-reduces block as
    well) or the fusion: a blocked step is never faster than the asynchronous one, and never
    faster than its host's issue time plus its compute stream's kernels."""
    device = dataclasses.replace(A100, host_overhead_s=per_op)
    kw = dict(micro_batch=micro, global_batch=micro * accumulation,
              fusion="compiled" if compiled else "eager",
              parallel=ParallelPlan(tp=tp))
    plain = simulator.simulate("gpt2", device, **kw)
    blocked = simulator.simulate("gpt2", device, launch_blocking=True, **kw)
    assert blocked.step_time_s >= plain.step_time_s * (1 - 1e-12)
    plan = Plan(launch_blocking=True, fusion=kw["fusion"])
    per_micro = (host.costs(blocked.lowered, device, plan)[1].sum()
                 + blocked.times["time_s"].sum())
    assert blocked.step_time_s >= per_micro * (1 - 1e-12)


def test_the_result_says_what_blocking_costs():
    r = simulator.simulate("gpt2", A100, micro_batch=8, launch_blocking=True)
    assert any(n.startswith("CUDA_LAUNCH_BLOCKING") for n in r.notes)
    assert not any("CUDA_LAUNCH_BLOCKING" in n
                   for n in simulator.simulate("gpt2", A100, micro_batch=8).notes)


@pytest.mark.parametrize("device", ["tpu-v4", "mi300x", "xeon-8380", "gaudi2"])
def test_refused_where_cuda_does_not_run(device):
    with pytest.raises(PlanError, match="not an NVIDIA GPU"):
        simulator.simulate("mlp", device, micro_batch=8, launch_blocking=True)


def test_refused_with_cuda_graphs_and_bad_values():
    with pytest.raises(PlanError, match="graphs"):
        Plan(launch_blocking=True, graphs=True)
    with pytest.raises(PlanError, match="launch_blocking"):
        Plan(launch_blocking="yes")


@pytest.mark.parametrize("argv, word", [
    (["--device", "tpu-v4", "--launch-blocking"], "--launch-blocking"),
    (["--device", "a100-sxm4-80gb", "--launch-blocking", "--graphs"], "--graphs")])
def test_cli_refuses_in_one_line(argv, word, capsys):
    code = main(["predict", "gpt2-small", *argv])
    err = capsys.readouterr().err
    assert code == 2 and word in err and len(err.strip().splitlines()) == 1


def test_the_rows_that_set_it_are_the_runs_whose_launch_script_exports_it():
    """launch_blocking is true on exactly the rows whose config_source quotes the launch
    script's 'export CUDA_LAUNCH_BLOCKING=1' (BLOOM-176B's tr11-176B-ml.slurm, line 202 at
    bigscience-workshop/bigscience 003b250); every other row plans without it."""
    rows = report.load_rows()
    quoted = {row["run_id"] for row in rows
              if "export CUDA_LAUNCH_BLOCKING=1" in row["config_source"]}
    flagged = {row["run_id"] for row in rows if row.get("launch_blocking") == "true"}
    assert flagged == quoted == {"bloom-176B-gbs192", "bloom-176B-gbs2048"}
    assert {row.get("launch_blocking") or "" for row in rows} == {"", "true"}
    for row in rows:
        assert report.step_plan(row).launch_blocking is (row["run_id"] in flagged)
