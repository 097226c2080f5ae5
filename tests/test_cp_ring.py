"""Context parallelism's ring of attention calls (simulator.cost.ring, ParallelPlan.cp_comm):
the calls' shapes and the bytes of their merges in closed form, the exchange's exposed time
as the pipelining bound, and invariants (cp = 1 unchanged, a faster link never slower)."""
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import PlanError, simulate
from simulator.cost.ring import (
    P2P,
    TORCH_RING,
    exposed_s,
    merge_bytes,
    ring_times,
    step_shapes,
)
from simulator.graph.collective import Axis
from simulator.graph.op import OpKind, Phase
from simulator.plan.parallel import ParallelPlan

KW = dict(micro_batch=1, global_batch=1, precision="bf16", attention="fused",
          recompute="none")


@given(m=st.integers(2, 1 << 17).map(lambda v: 2 * v), cp=st.integers(1, 16),
       causal=st.booleans())
def test_the_ring_computes_one_cp_th_of_the_scores(m, cp, causal):
    """Load-balanced causal ring (PyTorch's Note [Context parallelism load balance algorithm
    for causal masking], TransformerEngine's p2p): a causal m x m call and cp - 1 unmasked
    m x m/2 calls, cp m^2 / 2 scores; without a mask cp full m x m calls."""
    shapes = step_shapes(m, cp, causal)
    assert sum(count for *_, count in shapes) == cp
    scores = sum(q * k * count / (2 if mask else 1) for q, k, mask, count in shapes)
    assert scores == (cp * m * m / 2 if causal else cp * m * m)


def test_merge_bytes_closed_forms():
    """torch-ring: 19 x the output per later step, 3 x at each end, the send copies 2 x the
    keys and values per step but the last; backward 5 x the gradients per step; p2p:
    TransformerEngine's fused correction 3 x per later step and 2 x at the first."""
    out, kv, grad = 1000.0, 300.0, 1600.0
    assert merge_bytes(out, kv, grad, 4, TORCH_RING, False) == 1000 * (19 * 3 + 6) + 2 * 3 * 300
    assert merge_bytes(out, kv, grad, 4, TORCH_RING, True) == 5 * 4 * 1600
    assert merge_bytes(out, kv, grad, 4, P2P, False) == 1000 * (3 * 3 + 2)
    assert merge_bytes(out, kv, grad, 4, P2P, True) == 0
    assert merge_bytes(out, kv, grad, 1, TORCH_RING, False) == 0


def test_exposed_exchange_closed_forms():
    """p2p forward T = max(A, A/cp + C); torch-ring's all-gather beside step 0 only:
    T = max(A, (cp - 1) A/cp + C); backward the keys and values again plus dK, dV (2 C),
    the last step's dK, dV after it."""
    a, c, cp = 8.0, 3.0, 4
    assert exposed_s(a, c, cp, P2P, False) == 0.0            # 2 + 3 <= 8: hidden
    assert exposed_s(a, c, cp, TORCH_RING, False) == pytest.approx(6 + 3 - 8)
    assert exposed_s(a, c, cp, P2P, True) == pytest.approx(max(8 + 1.5, 2 + 6) - 8)
    assert exposed_s(a, 20.0, cp, P2P, False) == pytest.approx(2 + 20 - 8)
    assert exposed_s(a, c, 1, P2P, False) == c


@settings(max_examples=200, deadline=None)
@given(a=st.floats(0, 1e3), c=st.floats(0, 1e3), faster=st.floats(0, 1),
       cp=st.integers(2, 32), ring=st.sampled_from([P2P, TORCH_RING]), backward=st.booleans())
def test_the_exposed_exchange_is_bounded_and_monotone(a, c, faster, cp, ring, backward):
    """Never negative, never more than the exchange itself (twice the bytes backward), a
    faster link (less C) never exposes more, and TransformerEngine's per-step ring never
    exposes more than PyTorch's gather beside the first step."""
    e = exposed_s(a, c, cp, ring, backward)
    assert -1e-9 <= e <= (2 if backward else 1) * c + 1e-9 * (1 + a + c)
    assert exposed_s(a, c * faster, cp, ring, backward) <= e + 1e-9 * (1 + a + c)
    assert exposed_s(a, c, cp, P2P, backward) <= exposed_s(a, c, cp, TORCH_RING, backward) \
        + 1e-9 * (1 + a + c)


@pytest.mark.parametrize("comm", ["allgather", "p2p", "torch-ring"])
def test_cp_1_is_untouched(comm):
    """Without context parallelism the exchange's kind changes nothing."""
    base = simulate("llama2-7b", "h100-sxm5-80gb", parallel=ParallelPlan(), **KW)
    run = simulate("llama2-7b", "h100-sxm5-80gb", parallel=ParallelPlan(cp_comm=comm), **KW)
    assert run.step_time_s == base.step_time_s
    assert not run.lowered.ring.any()


def _runs(device="h100-sxm5-80gb"):
    return {comm: simulate("llama2-7b", device, parallel=ParallelPlan(cp=2, cp_comm=comm), **KW)
            for comm in ("allgather", "p2p", "torch-ring")}


def test_the_ring_marks_its_attention_and_exchange():
    """allgather marks nothing; a ring marks every attention pass and every key/value
    collective with its code and cp steps, and prices the attention's FLOPs unchanged."""
    runs = _runs()
    assert not runs["allgather"].lowered.ring.any()
    for comm, code in (("p2p", P2P), ("torch-ring", TORCH_RING)):
        low = runs[comm].lowered
        marked = (low.kind == OpKind.ATTENTION) | (
            (low.kind == OpKind.COLLECTIVE) & (low.axis == int(Axis.CONTEXT)))
        assert marked.any() and (low.ring[marked] == code).all()
        assert (low.ring_steps[marked] == 2).all() and not low.ring[~marked].any()
        assert runs[comm].flops_per_step == runs["allgather"].flops_per_step


def test_p2p_hides_the_gathers_behind_the_attention():
    """At cp = 2 the forward gathers of a 4K-token Llama 2 7B run beside the attention's
    first step (T = max(A, A/2 + C)): each exposes less than the all-gather plan's whole
    gather; the backward's exchange is at most twice the reduce-scatter's."""
    runs = _runs()
    low = runs["p2p"].lowered
    plain = runs["allgather"].lowered
    gathers = np.flatnonzero((low.kind == OpKind.COLLECTIVE) & (low.axis == int(Axis.CONTEXT))
                             & (low.phase == Phase.FORWARD))
    assert len(gathers)
    p2p_t = np.asarray(runs["p2p"].times["time_s"])
    plain_t = np.asarray(runs["allgather"].times["time_s"])
    assert [low.names[i] for i in gathers] == [plain.names[i] for i in gathers]
    assert (plain_t[gathers] > 0).all() and (p2p_t[gathers] < plain_t[gathers]).all()
    scatters = np.flatnonzero((low.kind == OpKind.COLLECTIVE) & (low.axis == int(Axis.CONTEXT))
                              & (low.phase == Phase.BACKWARD))
    assert len(scatters)
    assert (p2p_t[scatters] <= 2 * plain_t[scatters] + 1e-15).all()


def test_a_faster_link_never_slows_the_ring():
    """The same cp = 2 ring with every collective taking half the time: no op slower."""
    run = simulate("llama2-7b", "h100-sxm5-80gb",
                   parallel=ParallelPlan(cp=2, cp_comm="torch-ring"), **KW)
    low = run.lowered
    rng = np.random.default_rng(0)
    compute = rng.uniform(0, 1e-3, len(low))
    memory = rng.uniform(0, 1e-3, len(low))
    time = np.maximum(compute, memory)
    comm = low.kind == OpKind.COLLECTIVE
    compute[comm] = memory[comm] = 0
    from hardware_specs.loader import load_device
    device = load_device("h100-sxm5-80gb")
    slow = ring_times(low, device, compute, memory, time)
    fast_in = time.copy()
    fast_in[comm] /= 2
    fast = ring_times(low, device, compute, memory, fast_in)
    assert (fast <= slow + 1e-15).all()


def test_an_unknown_exchange_is_one_line():
    with pytest.raises(PlanError, match="cp_comm = 'ring' is not known: choose one of "
                                        "allgather, p2p, torch-ring"):
        ParallelPlan(cp=2, cp_comm="ring")
    assert replace(ParallelPlan(), cp_comm="p2p").cp_comm.value == "p2p"
