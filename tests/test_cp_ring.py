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
    TORCH_RING_TRACED,
    TORCH_RINGS,
    backward_exchange,
    exposed_s,
    merge_bytes,
    ring_times,
    step_shapes,
)
from simulator.graph.collective import Axis
from simulator.graph.op import OpKind, Phase
from simulator.parallel.context import expanded_heads
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


# Bytes per element of each eager op the code runs, (reads, writes), bf16 2 and fp32 4 bytes:
# torch's _SDPAMerger step (pytorch 0123248a torch/distributed/tensor/experimental/_attention.py)
MERGE_OPS = [(2, 4),        # block_out.to(torch.float32)
             (4 + 4, 4),    # out - block_out
             (4, 4),        # times sigmoid(lse - block_lse)
             (4 + 4, 4)]    # out - that
CAST_OPS = [(2, 4)]         # the first step's conversion; the final cast back is 4 -> 2
ACCUMULATE_OPS = [(4 + 2, 4)]   # grad_query += grad_query_ into the fp32 accumulator
CAT_OPS = [(2, 2)]          # torch.cat of the keys and values it sends, per bf16 byte pair
TRACED_MERGE_OPS = [(4 + 2, 4)]   # inductor's one kernel per merge step
# TransformerEngine d0067d0da context_parallel.py, all in bf16
CORRECTION_OPS = [(2 + 2, 2)]   # out.add_(out_per_step * exp(...)), one fused kernel
INIT_OPS = [(2, 2)]             # flash_attn_fwd_out_correction_init
ADD_OPS, COPY_OPS = [(2 + 2, 2)], [(2, 2)]   # dq.add_(dq_), dq.copy_(dq_)


def _per_bf16(ops):
    """An op list's bytes per element in units of the bf16 tensor's 2 bytes."""
    return sum(r + w for r, w in ops) / 2


def test_merge_bytes_closed_forms():
    """Each ring's extra bytes from the per-op byte lists the code cites: torch-ring's merge
    per later step and its two ends, the send copies on every step but the last, the
    backward's fp32 accumulation of one step's dQ, dK, dV on all cp steps; p2p's fused
    correction per later step and its first, and its bf16 gradient accumulation (the last
    rank: dQ copied then added, dK, dV half a chunk before the diagonal step)."""
    out, kv, cp = 1000.0, 300.0, 4
    step, ends = _per_bf16(MERGE_OPS), _per_bf16(CAST_OPS)
    assert (step, ends) == (19, 3)
    assert merge_bytes(out, kv, cp, TORCH_RING, False) == \
        out * (step * (cp - 1) + 2 * ends) + _per_bf16(CAT_OPS) * (cp - 1) * kv
    assert merge_bytes(out, kv, cp, TORCH_RING, True) == \
        _per_bf16(ACCUMULATE_OPS) * cp * (out + kv)
    assert merge_bytes(out, kv, cp, P2P, False) == \
        out * (_per_bf16(CORRECTION_OPS) * (cp - 1) + _per_bf16(INIT_OPS))
    add, copy = _per_bf16(ADD_OPS), _per_bf16(COPY_OPS)
    dq = copy + add * (cp - 1)
    dkv = copy / 2 + add / 2 * (cp - 2) + add   # half copy, half adds, the diagonal's add
    assert merge_bytes(out, kv, cp, P2P, True) == out * dq + kv * dkv == 1000 * 11 + 300 * 7
    assert merge_bytes(out, kv, cp, P2P, True, causal=False) == (out + kv) * dq
    assert merge_bytes(out, kv, 1, TORCH_RING, False) == 0
    assert merge_bytes(out, kv, 1, P2P, True) == 0
    # traced by torch.compile: one fused kernel per merge (read the fp32 running output and
    # the bf16 step output, write fp32), only the first send copy live; the same backward
    assert _per_bf16(TRACED_MERGE_OPS) == 5
    assert merge_bytes(out, kv, cp, TORCH_RING_TRACED, False) == \
        out * _per_bf16(TRACED_MERGE_OPS) * (cp - 1) + _per_bf16(CAT_OPS) * kv == 15600
    assert merge_bytes(out, kv, cp, TORCH_RING_TRACED, True) == \
        merge_bytes(out, kv, cp, TORCH_RING, True)


def test_the_merge_bytes_reach_the_attention_time():
    """The same lowered cp = 4 graph with its ring marked torch-ring, then p2p: each
    attention op's time differs by exactly the two rings' extra bytes over the device's
    streaming rate (the calls' shapes, hence the kernel ratio, are the same); forward the
    output and the rank's keys and values, backward its dQ and one chunk's dK, dV."""
    from hardware_specs.loader import load_device
    from simulator.graph.op import DType, Task

    run = simulate("llama2-7b", "h100-sxm5-80gb",
                   parallel=ParallelPlan(cp=4, cp_comm="torch-ring"), **KW)
    low = run.lowered
    device = load_device("h100-sxm5-80gb")
    rng = np.random.default_rng(1)
    compute = rng.uniform(0, 1e-3, len(low))
    memory = rng.uniform(0, 1e-3, len(low))
    time = np.maximum(compute, memory)
    torch_t = ring_times(low, device, compute, memory, time)
    p2p_low = replace(low, ring=np.where(low.ring > 0, P2P, 0).astype(low.ring.dtype))
    p2p_t = ring_times(p2p_low, device, compute, memory, time)
    stream = device.memory_bandwidth_bytes_per_s * device.memory_efficiency
    attention = np.flatnonzero((low.kind == OpKind.ATTENTION) & (low.ring > 0))
    seen = set()
    for j in attention:
        task = Task(int(low.task[j]))
        if task == Task.FORWARD:
            out = float(low.out_bytes[j])
            kv = float(low.bytes_read[j] - low.out_bytes[j]) / 4
        elif task == Task.DATA_GRAD:
            out = float(low.batch[j] * low.m[j] * low.k[j] * DType(int(low.dtype[j])).bytes)
            kv = (float(low.bytes_written[j]) - out) / 4
        else:
            continue
        seen.add(task)
        backward = task == Task.DATA_GRAD
        want = (merge_bytes(out, kv, 4, TORCH_RING, backward)
                - merge_bytes(out, kv, 4, P2P, backward)) / stream
        assert torch_t[j] - p2p_t[j] == pytest.approx(want, rel=1e-9)
        assert want > 0
    assert seen == {Task.FORWARD, Task.DATA_GRAD}


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


def test_torch_ring_backward_exchange_closed_forms():
    """PyTorch's ring backward: the keys and values gathered again (C, cp - 1 chunks
    received) and dK, dV of one chunk sent in fp32 at each of cp steps (2 cp chunks of 16-bit
    bytes): C (1 + 2 cp / (cp - 1)); eager beside the steps, traced all exposed (each
    collective waited for where it is issued), forward too."""
    assert backward_exchange(2) == 5
    assert backward_exchange(4) == pytest.approx(1 + 8 / 3)
    a, c, cp = 8.0, 3.0, 4
    assert exposed_s(a, c, cp, TORCH_RING, True) == pytest.approx(6 + 11 - 8)
    assert exposed_s(a, c, cp, TORCH_RING_TRACED, False) == c
    assert exposed_s(a, c, cp, TORCH_RING_TRACED, True) == pytest.approx(11)
    assert exposed_s(1e9, c, cp, TORCH_RING_TRACED, False) == c   # however long the attention


@settings(max_examples=200, deadline=None)
@given(a=st.floats(0, 1e3), c=st.floats(0, 1e3), faster=st.floats(0, 1),
       cp=st.integers(2, 32), ring=st.sampled_from([P2P, TORCH_RING, TORCH_RING_TRACED]),
       backward=st.booleans())
def test_the_exposed_exchange_is_bounded_and_monotone(a, c, faster, cp, ring, backward):
    """Never negative, never more than the exchange itself (backward: twice the bytes for
    p2p, 1 + 2 cp / (cp - 1) times for PyTorch's ring), a faster link (less C) never exposes
    more, TransformerEngine's per-step ring never exposes more than PyTorch's gather beside
    the first step, nor that more than the traced ring, which exposes all."""
    e = exposed_s(a, c, cp, ring, backward)
    whole = (backward_exchange(cp) if ring in TORCH_RINGS else 2) * c if backward else c
    tol = 1e-9 * (1 + a + c)
    assert -1e-9 <= e <= whole + tol
    assert exposed_s(a, c * faster, cp, ring, backward) <= e + tol
    assert exposed_s(a, c, cp, P2P, backward) <= exposed_s(a, c, cp, TORCH_RING, backward) \
        + tol <= exposed_s(a, c, cp, TORCH_RING_TRACED, backward) + 2 * tol
    if ring == TORCH_RING_TRACED:
        assert e == pytest.approx(whole)


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


def test_each_context_parallel_row_cites_its_exchange():
    """Every validation row with cp > 1 sets cp_comm and cites where its framework's default
    comes from (torchtitan 9dec370's rotate method -> torch-ring, Megatron-core's
    cp_comm_type -> p2p); cp 1 rows leave it empty; a cp > 1 row without it is refused."""
    from benchmarks.validation_report import load_rows, parallel_plan

    cite = {"torch-ring": "torchtitan 9dec370 torchtitan/config_manager.py lines 365-367",
            "p2p": "megatron/core/extensions/transformer_engine.py lines 2141-2142"}
    rows = load_rows()
    ring = [row for row in rows if int(row["cp"] or 1) > 1]
    assert len(ring) >= 10
    for row in ring:
        assert cite[row["cp_comm"]] in row["config_source"], row["run_id"]
        assert parallel_plan(row).cp_comm.value == row["cp_comm"]
    assert {row["cp_comm"] for row in ring} == {"torch-ring", "p2p"}
    assert not any(row["cp_comm"] for row in rows if int(row["cp"] or 1) == 1)
    with pytest.raises(ValueError, match="without cp_comm"):
        parallel_plan({**ring[0], "cp_comm": ""})


@pytest.mark.parametrize("heads, kv_heads, tp, expand", [
    (32, 8, 1, 4),      # Llama 3.1 8B
    (128, 8, 8, 16),    # Llama 3.1 405B at tp 8: 16 query heads, one key/value head
    (32, 32, 4, 1),     # no grouped-query attention
    (64, 8, 16, 4),     # kv_heads < tp: one replicated key/value head, 4 query heads
    (8, 1, 1, 8)])      # multi-query attention
def test_expanded_heads_closed_forms(heads, kv_heads, tp, expand):
    """torchtitan's repeat_kv: a rank's query heads over its key/value heads."""
    assert expanded_heads(heads, kv_heads, tp) == expand


def _gqa(comm, fusion="eager", cp=2):
    return simulate("llama3-8b", "h100-sxm5-80gb", seq_len=4096, fusion=fusion,
                    parallel=ParallelPlan(cp=cp, cp_comm=comm), **KW)


def _context(run, phase):
    low = run.lowered
    return np.flatnonzero((low.kind == OpKind.COLLECTIVE) & (low.axis == int(Axis.CONTEXT))
                          & (low.phase == phase))


def test_torch_ring_gathers_keys_and_values_at_the_query_heads():
    """Llama 3 8B (32 query, 8 key/value heads): PyTorch's ring gathers 4 x the bytes
    TransformerEngine's p2p ring does, and its attention reads them so; FLOPs unchanged."""
    p2p, torch = _gqa("p2p"), _gqa("torch-ring")
    for phase in (Phase.FORWARD, Phase.BACKWARD):
        ops_p, ops_t = _context(p2p, phase), _context(torch, phase)
        assert len(ops_p) == len(ops_t) > 0
        assert (torch.lowered.bytes_written[ops_t] == 4 * p2p.lowered.bytes_written[ops_p]).all()
    attention = np.flatnonzero((p2p.lowered.kind == OpKind.ATTENTION)
                               & (p2p.lowered.phase == Phase.FORWARD))
    low_p, low_t = p2p.lowered, torch.lowered
    query = low_p.out_bytes[attention]   # the output's bytes, as the query's
    assert (low_t.bytes_read[attention] - query
            == 4 * (low_p.bytes_read[attention] - query)).all()
    assert torch.flops_per_step == p2p.flops_per_step


def test_a_compiled_block_traces_the_ring_and_exposes_its_exchange():
    """Under compiled fusion PyTorch's ring is ring 3 and its exchange is all exposed: each
    forward gather takes as long as the all-gather plan's (same bytes for a model without
    grouped-query attention), each backward reduce-scatter 1 + 2 cp / (cp - 1) = 5 times
    (cp = 2); eager it stays ring 2, partly hidden."""
    kw = dict(KW, fusion="compiled")
    runs = {comm: simulate("llama2-7b", "h100-sxm5-80gb",
                           parallel=ParallelPlan(cp=2, cp_comm=comm), **kw)
            for comm in ("allgather", "torch-ring")}
    traced, plain = runs["torch-ring"], runs["allgather"]
    marked = traced.lowered.ring > 0
    assert marked.any() and (traced.lowered.ring[marked] == TORCH_RING_TRACED).all()
    t_traced = np.asarray(traced.times["time_s"])
    t_plain = np.asarray(plain.times["time_s"])
    forward, backward = _context(traced, Phase.FORWARD), _context(traced, Phase.BACKWARD)
    assert len(forward) and len(backward)
    assert t_traced[forward] == pytest.approx(t_plain[_context(plain, Phase.FORWARD)])
    assert t_traced[backward] == pytest.approx(5 * t_plain[_context(plain, Phase.BACKWARD)])
    eager = simulate("llama2-7b", "h100-sxm5-80gb",
                     parallel=ParallelPlan(cp=2, cp_comm="torch-ring"), **KW)
    assert (eager.lowered.ring[eager.lowered.ring > 0] == TORCH_RING).all()
