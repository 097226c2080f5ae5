"""The pipeline bubble of stages unlike each other (``simulator.schedule.step.step_time``):
the flow-shop closed form sum t_s + (m - 1) max t_s against an event simulation of 1F1B and
GPipe (``simulator.schedule.pipeline.pipeline_blocks``, each stage in its schedule's order, a
forward after the previous stage's, a backward after the next stage's)."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.schedule.pipeline import pipeline_blocks


def _makespan(p, m, fwd, bwd, gpipe=False):
    blocks = pipeline_blocks(p, m, gpipe, fwd, bwd)
    return max(start + took for runs in blocks.values() for start, took in runs)


def _closed(m, fwd, bwd):
    each = [f + b for f, b in zip(fwd, bwd)]
    return sum(each) + (m - 1) * max(each)


@pytest.mark.parametrize("p", [2, 4, 8])
def test_one_micro_batch_runs_each_stage_in_turn(p):
    """One micro-batch: every forward, then every backward, in turn; no stage overlaps
    another, so the step is the sum of the stages' times, whatever their sizes."""
    fwd = [1.0 + 0.3 * s for s in range(p)]
    bwd = [2.0 * f + (0.5 if s == p - 1 else 0.0) for s, f in enumerate(fwd)]
    for gpipe in (False, True):
        assert _makespan(p, 1, fwd, bwd, gpipe) == pytest.approx(sum(fwd) + sum(bwd))
    assert _closed(1, fwd, bwd) == pytest.approx(sum(fwd) + sum(bwd))


@pytest.mark.parametrize("m", [1, 2, 4, 8, 32])
@pytest.mark.parametrize("first, last", [(1.0, 1.3), (1.2, 1.3), (1.3, 1.3)])
def test_a_transformer_pipeline_is_exact(m, first, last):
    """A transformer's stages: the middle ones alike, the first (embedding) and the last
    (head and loss) at least as slow: the closed form is 1F1B's step exactly; equal stages
    give Narayanan et al. 2021's (m + p - 1) t."""
    fwd = [first, 1.0, 1.0, last]
    bwd = [2 * x for x in fwd]
    assert _makespan(4, m, fwd, bwd) == pytest.approx(_closed(m, fwd, bwd))
    if first == last == 1.3:
        fwd = bwd = [1.0] * 4
        assert _closed(m, fwd, bwd) == pytest.approx((m + 3) * 2.0)


@settings(max_examples=60, deadline=None)
@given(p=st.integers(2, 8), m=st.integers(1, 16),
       fwd=st.lists(st.floats(0.5, 2.0), min_size=8, max_size=8),
       ratio=st.floats(1.5, 2.5))
def test_closed_form_bounds_the_schedule(p, m, fwd, ratio):
    """Any stage times: the closed form is never below the simulated 1F1B step, and never
    above the slowest stage's (m + p - 1) t, the form it replaces."""
    fwd = fwd[:p]
    bwd = [ratio * f for f in fwd]
    t = max(f + b for f, b in zip(fwd, bwd))
    exact, closed = _makespan(p, m, fwd, bwd), _closed(m, fwd, bwd)
    assert closed >= exact * (1 - 1e-9)
    assert closed <= (m + p - 1) * t * (1 + 1e-9)
    assert math.isfinite(closed)


def test_stage_times_of_one_length_each():
    with pytest.raises(Exception, match="3 forward"):
        pipeline_blocks(4, 2, False, [1.0, 1.0, 1.0], 2.0)
