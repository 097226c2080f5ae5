"""Megatron-LM's interleaved 1F1B order with pipeline messages that take time
(benchmarks/megatron_breakdown.py ``interleaved_step``, an event simulation of
``forward_backward_pipelining_with_interleaving``'s order): the check behind
``simulator.parallel.pipeline.overlap_p2p``, which prices no wait for a message in the steady
state, and behind the NeMo 70B / GPT-3 diagnosis in docs/accuracy.md."""
from __future__ import annotations

from pathlib import Path

import pytest

from simulator.schedule.pipeline import Schedule, bubble_over_ideal
from tests.conftest import load_module

ROOT = Path(__file__).resolve().parents[1]
breakdown = load_module(ROOT / "benchmarks" / "megatron_breakdown.py", "megatron_breakdown")

SHAPES = [(2, 3, 8), (4, 2, 16), (4, 5, 64), (8, 4, 72), (8, 12, 16), (8, 12, 64)]


@pytest.mark.parametrize(("p", "v", "m"), SHAPES)
def test_without_latency_the_order_runs_in_the_closed_form(p, v, m):
    """Messages of no time: m v chunk pairs plus the bubble, (p - 1) / (v m) of them
    (Narayanan et al. 2021 sec. 2.2.2, ``bubble_over_ideal``, which ``step_time`` prices)."""
    for forward, backward in ((1.0, 2.0), (1.0, 1.0), (0.7, 2.9)):
        ideal = m * v * (forward + backward)
        step = breakdown.interleaved_step(p, v, m, forward, backward, 0.0)
        assert step == pytest.approx(
            ideal * (1 + bubble_over_ideal(p, m, Schedule.INTERLEAVED, v)), rel=1e-12)


@pytest.mark.parametrize(("p", "v", "m"), SHAPES)
def test_a_message_latency_costs_only_the_fill_and_drain(p, v, m):
    """A latency l (below a chunk's forward) on every hop between ranks adds (2 p v - 2) l to
    the step whatever the number of micro-batches and the chunks' times: the steady state
    hides the messages (what ``overlap_p2p`` prices), only the first forward's and the last
    backward's chains of p v - 1 hops wait for them (what it leaves out). GPT-3 175B on NeMo
    (p 8, v 12, at most 0.27 ms a hop on InfiniBand): at most 51 ms of a 7.6 s step."""
    for forward, backward in ((1.0, 2.0), (1.0, 3.0)):
        base = breakdown.interleaved_step(p, v, m, forward, backward, 0.0)
        for latency in (0.01, 0.1, 0.3):
            step = breakdown.interleaved_step(p, v, m, forward, backward, latency)
            assert step - base == pytest.approx((2 * p * v - 2) * latency, rel=1e-9)


def test_blocking_messages_would_cost_every_chunk():
    """Against that, a latency as long as the chunks themselves is no longer hidden: the
    extra grows with the micro-batches (the steady state's ring waits)."""
    p, v = 4, 3
    extra = [breakdown.interleaved_step(p, v, m, 1.0, 2.0, 5.0) -
             breakdown.interleaved_step(p, v, m, 1.0, 2.0, 0.0) for m in (8, 16)]
    assert extra[1] > extra[0] + 1.0


def test_the_order_is_megatrons():
    """Rank 0 of p 2, v 2, m 2: warm-up (p - 1) 2 + (v - 1) p = 4 forwards, chunk 0 of both
    micro-batches then chunk 1, then the backwards with the chunks reversed."""
    assert breakdown.interleaved_order(0, 2, 2, 2) == [
        ("F", 0, 0), ("F", 0, 1), ("F", 1, 0), ("F", 1, 1),
        ("B", 1, 0), ("B", 1, 1), ("B", 0, 0), ("B", 0, 1)]
    with pytest.raises(ValueError, match="multiple of p"):
        breakdown.interleaved_step(4, 2, 6, 1.0, 2.0, 0.0)
