"""ParallelPlan.tp_comm_overlap (Megatron-Core --tp-comm-overlap, TransformerEngine's
userbuffers: simulator.cost.overlap) and ParallelPlan.overlap_p2p_comm (Megatron-LM's
interleaved schedule posting its pipeline messages while other chunks compute:
simulator.parallel.pipeline.overlap_p2p)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import ParallelPlan, PlanError, simulate
from simulator.cost.overlap import PIPELINE_SPLITS, overlapped, pipelined_s
from simulator.graph.collective import Axis, Collective
from simulator.graph.lower import COLLECTIVE_FNS
from simulator.graph.op import OpKind, Task
from simulator.schedule import stage
from workloads.zoo import get_workload

COMMON = {"micro_batch": 1, "precision": "bf16", "attention": "fused"}


def _small(layers=2, hidden=1024, seq_len=1024):
    work = get_workload("llama2-7b").with_layers(layers)
    return replace(work, hidden=hidden, heads=hidden // 64, kv_heads=hidden // 64,
                   ffn_hidden=hidden * 8 // 3 // 64 * 64, seq_len=seq_len)


def _captured(monkeypatch):
    """Run ``simulator.cost.overlap.overlapped`` as price_stage calls it, keeping its inputs
    and outputs."""
    calls = []

    def spy(lowered, device, compute_s, memory_s, time_s, interference=True):
        out, hidden = overlapped(lowered, device, compute_s, memory_s, time_s, interference)
        calls.append((lowered, time_s.copy(), out, hidden))
        return out, hidden

    monkeypatch.setattr(stage, "overlapped", spy)
    return calls


def test_defaults_are_megatrons():
    """ModelParallelConfig.tp_comm_overlap and .overlap_p2p_comm default to False
    (megatron/core/model_parallel_config.py at NVIDIA/Megatron-LM d98e8a64dd)."""
    assert ParallelPlan().tp_comm_overlap is False
    assert ParallelPlan().overlap_p2p_comm is False


def test_needs_sequence_parallelism():
    """Megatron-LM asserts sequence parallelism with --tp-comm-overlap; one clear error."""
    with pytest.raises(PlanError, match="needs sequence parallelism"):
        ParallelPlan(tp=2, tp_comm_overlap=True)
    ParallelPlan(tp=1, tp_comm_overlap=True)   # nothing to overlap: allowed, no effect
    ParallelPlan(tp=2, tp_comm_overlap=True, sequence_parallel=True)


def test_pipelined_closed_forms():
    """T = max(G + last C, first G + C): a ring all-gather over 4 ranks (first 1/4, last 0)
    hides a 2 s gather behind a 4 s GEMM whole, and exposes 6 + 1 - 4 = 3 s of a 6 s one; a
    pipelined reduce-scatter in 4 splits of a 4 s GEMM and a 4 s scatter takes 5 s."""
    assert pipelined_s(4.0, 2.0, 0.25, 0.0) == 4.0
    assert pipelined_s(4.0, 6.0, 0.25, 0.0) == 7.0
    assert pipelined_s(4.0, 4.0, 0.25, 0.25) == 5.0
    assert pipelined_s(4.0, 0.0, 0.25, 0.25) == 4.0   # nothing to send: the GEMM alone


def test_pairs_and_exposed_parts(monkeypatch):
    """Each forward layer pairs its two all-gathers (ring exchange, tp chunks) with the GEMMs
    reading them and its two reduce-scatters (4 splits) with the GEMM before; the backward
    pairs the all-gathers of the output gradients with the input-gradient GEMMs, never a
    regather or a backward reduce-scatter (bulk overlap, left to the schedule). Each paired
    collective keeps exactly the exposed part of the closed form over its GEMMs' chunked and
    slowed time; nothing else changes."""
    calls = _captured(monkeypatch)
    tp = 4
    simulate(_small(), "h100-sxm5-80gb", num_devices=tp, tp=tp, sequence_parallel=True,
             tp_comm_overlap=True, global_batch=1, **COMMON)
    (low, before, after, hidden), = calls
    gather = COLLECTIVE_FNS.index(Collective.ALL_GATHER.value)
    scatter = COLLECTIVE_FNS.index(Collective.REDUCE_SCATTER.value)
    readers = np.repeat(np.arange(len(low)), np.diff(low.indptr))
    assert (low.axis[hidden] == int(Axis.TENSOR)).all()
    assert not (hidden & (low.task == Task.REGATHER)).any()
    assert not (hidden & (low.collective == scatter) & (low.task == Task.DATA_GRAD)).any()
    layers = 2
    forward_ag = hidden & (low.collective == gather) & (low.task == Task.FORWARD)
    # the layers' two gathers each; the LM head's (Megatron-Core's plain
    # ColumnParallelLinear) and the embedding's reduce-scatter are never userbuffers'
    assert forward_ag.sum() == 2 * layers
    assert (low.layer[hidden] >= 0).all()
    head = (low.kind == OpKind.COLLECTIVE) & (low.axis == int(Axis.TENSOR)) & (
        low.collective == gather) & (low.task == Task.FORWARD) & (low.layer < 0)
    assert head.sum() == 1 and not (hidden & head).any()
    assert low.userbuffers[head].sum() == 0
    assert (hidden & (low.collective == scatter)).sum() == 2 * layers
    assert (hidden & (low.task == Task.DATA_GRAD)).sum() == 2 * layers
    gemm = low.kind == OpKind.MATMUL
    assert (after[~gemm & ~hidden] == before[~gemm & ~hidden]).all()
    for i in np.flatnonzero(hidden):
        if low.collective[i] == gather:
            partners = readers[low.indices == i]
            partners = partners[gemm[partners] & (low.task[partners] != Task.WEIGHT_GRAD)]
            first, last = 1 / tp, 0.0
        else:
            partners = low.preds(i)[gemm[low.preds(i)]]
            first = last = 1 / PIPELINE_SPLITS
        g, c = after[partners].sum(), before[i]
        assert after[i] == pytest.approx(max(g + last * c, first * g + c) - g, rel=1e-12)
        assert 0.0 <= after[i] <= c


@settings(max_examples=8, deadline=None)
@given(hidden=st.sampled_from([512, 1024, 2048]), tp=st.sampled_from([2, 4, 8]),
       seq_len=st.sampled_from([256, 1024, 2048]), device=st.sampled_from(
           ["h100-sxm5-80gb", "a100-sxm4-80gb"]))
def test_overlap_bounded(hidden, tp, seq_len, device):
    """Overlap saves at most the tensor-parallel communication it hides: the step is never
    shorter than without overlap less every paired collective's time, and never longer than
    without overlap plus what chunking and the userbuffers' SMs and bandwidth add to the
    GEMMs (a GEMM chunked into pieces too small to fill the device can make it slower)."""
    work = _small(hidden=hidden, seq_len=seq_len)
    run = dict(num_devices=tp, tp=tp, sequence_parallel=True, global_batch=1, **COMMON)
    off = simulate(work, device, tp_comm_overlap=False, **run)
    with pytest.MonkeyPatch.context() as patch:
        calls = _captured(patch)
        on = simulate(work, device, tp_comm_overlap=True, **run)
    (low, before, after, hidden_mask), = calls
    gemm = low.kind == OpKind.MATMUL
    assert hidden_mask.any()
    assert on.step_time_s >= off.step_time_s - before[hidden_mask].sum() - 1e-12
    assert on.step_time_s <= off.step_time_s + (after - before)[gemm].sum() + 1e-12


def test_moves_only_with_sequence_parallel_tp():
    """With tp = 1 the option changes nothing (no tensor-parallel collective)."""
    work = _small()
    base = dict(num_devices=1, global_batch=1, **COMMON)
    assert simulate(work, "h100-sxm5-80gb", tp_comm_overlap=True, **base).step_time_s == \
        simulate(work, "h100-sxm5-80gb", **base).step_time_s


def _pipelined(overlap, schedule="interleaved", v=2):
    work = _small(layers=4)
    return simulate(work, "h100-sxm5-80gb", num_devices=2, pp=2, schedule=schedule,
                    virtual_stages=v, overlap_p2p_comm=overlap, global_batch=8, **COMMON)


def test_p2p_overlap_hides_messages():
    """Interleaved: with overlap_p2p_comm no compute op waits for a pipeline message, so the
    step is shorter. The step is (m - 1) t + bubble + t_last with bubble = (p - 1) / v x t
    (simulator.schedule.step.step_time); hiding the messages shortens each micro-batch's t
    (and t_last) by at most its messages' time, so the step by at most
    (m + (p - 1) / v) x that: 8 + 1/2 = 8.5 per-micro-batch message times here (m 8, p 2,
    v 2; both stages hold the same messages). The hidden part is at least one message's
    time per micro-batch: a message on the critical path of each one."""
    off, on = _pipelined(False), _pipelined(True)
    ops = off.ops
    messages = ops[(ops.kind == "collective") & ops.name.str.contains("pipeline_")]
    assert len(messages) == 4   # the forward's and the backward's exchange and send
    per_micro = messages.time_s.sum()
    saved = off.step_time_s - on.step_time_s
    assert 8 * messages.time_s.min() <= saved <= (8 + (2 - 1) / 2) * per_micro


def test_p2p_overlap_only_interleaved():
    """Megatron-LM turns overlap_p2p_comm off for the non-interleaved schedules
    (megatron/training/arguments.py): 1f1b is unchanged, and the result says so in a note
    (none where the option applies or is not asked)."""
    on, off = _pipelined(True, "1f1b", 1), _pipelined(False, "1f1b", 1)
    assert on.step_time_s == off.step_time_s
    notes = [n for n in on.notes if n.startswith("overlap_p2p_comm")]
    assert len(notes) == 1 and "schedule 1f1b it changes nothing" in notes[0]
    assert not [n for n in off.notes if n.startswith("overlap_p2p_comm")]
    assert not [n for n in _pipelined(True).notes if n.startswith("overlap_p2p_comm")]
    alone = simulate(_small(), "h100-sxm5-80gb", overlap_p2p_comm=True, global_batch=1,
                     **COMMON)
    assert any(n.startswith("overlap_p2p_comm: no pipeline") for n in alone.notes)


def test_p2p_overlap_graph(monkeypatch):
    """No compute op reads a pipeline message any more; the messages are all still there."""
    from simulator.parallel import rank
    seen = []
    original = rank.overlap_p2p

    def spy(step):
        out = original(step)
        seen.append(out)
        return out

    monkeypatch.setattr(rank, "overlap_p2p", spy)
    _pipelined(True)
    assert seen
    for step in seen:
        messages = [n for n in step.names() if step.op(n).kind is OpKind.COLLECTIVE
                    and step.op(n).fn == "send_recv"]
        assert messages
        for name in messages:
            for reader in step.consumers(name):
                assert step.op(reader).kind is OpKind.COLLECTIVE


def test_pipeline_messages_have_their_own_stream():
    """Pipeline sends and receives run on the pipeline communicator's stream (3), apart from
    the tensor-parallel (1) and data-parallel (2) ones, as Megatron-LM's p2p runs in the
    pipeline group."""
    result = _pipelined(True)
    on = stage.streams(result.lowered)
    pipe = (result.lowered.axis == int(Axis.PIPELINE)) & (
        result.lowered.kind == OpKind.COLLECTIVE) & (result.lowered.nbytes > 0)
    assert pipe.any() and (on[pipe] == 3).all()
    assert stage.N_STREAMS == 4


@pytest.mark.parametrize("device", ["tpu-v5p", "gaudi3", "trainium2"])
def test_refused_without_transformer_engine(device):
    """TransformerEngine's userbuffers run on NVIDIA GPUs (and AMD's through its ROCm port):
    elsewhere --tp-comm-overlap is one line naming the device, exit 2, no traceback."""
    from tests.test_cli import hwsim

    proc = hwsim("predict", "llama2-7b", "--device", device, "--num-devices", 8, "--tp", 4,
                 "--sequence-parallel", "--tp-comm-overlap", "--global-batch", 8,
                 "--micro-batch", 1)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert f"tp_comm_overlap = true on {device}" in lines[0]
    assert "--tp-comm-overlap" in lines[0]


def test_allowed_on_amd_gpus():
    """TransformerEngine's ROCm port carries userbuffers (rocm_comm_gemm_overlap.cpp): an
    MI300X runs the overlap, and it moves the step."""
    work = _small()
    run = dict(num_devices=4, tp=4, sequence_parallel=True, global_batch=1, **COMMON)
    assert simulate(work, "mi300x", tp_comm_overlap=True, **run).step_time_s != \
        simulate(work, "mi300x", **run).step_time_s


def test_plan_refuses_overlap_without_sequence_parallel():
    """``hwsim plan --tp-comm-overlap`` without --sequence-parallel would reject every tp > 1
    candidate as an invalid plan: it is refused up front with ParallelPlan's one line, exit
    2; with --tp 1 there is nothing to overlap and the search runs."""
    from simulator.explore.capacity import _check_tp_overlap
    from tests.test_cli import hwsim

    proc = hwsim("plan", "llama2-7b", "--tokens", "1e9", "--devices", "h100-sxm5-80gb",
                 "--device-counts", 8, "--tp-comm-overlap")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs sequence parallelism" in lines[0]
    assert "add --sequence-parallel" in lines[0]
    _check_tp_overlap({"tp_comm_overlap": True, "tp": 1})
    _check_tp_overlap({"tp_comm_overlap": True, "sequence_parallel": True})
    with pytest.raises(PlanError, match="needs sequence parallelism"):
        _check_tp_overlap({"tp_comm_overlap": True, "tp": 4})


def _hand_built(monkeypatch, spec):
    """A real layer's lowered graph (tp 4 on an H100: 132 SMs) with hand-set times: every op
    0 s but those named in ``spec`` ({name: (compute, memory, time) in units of ``unit``}),
    chunking free (``chunk_slowdown`` 1); returns (lowered, device, compute, memory, time)."""
    from simulator.cost import overlap

    calls = []

    def spy(lowered, device, compute_s, memory_s, time_s, interference=True):
        calls.append((lowered, device))
        return overlapped(lowered, device, compute_s, memory_s, time_s, interference)

    monkeypatch.setattr(stage, "overlapped", spy)
    simulate(_small(), "h100-sxm5-80gb", num_devices=4, tp=4, sequence_parallel=True,
             tp_comm_overlap=True, global_batch=1, **COMMON)
    low, device = calls[0]
    monkeypatch.setattr(overlap, "chunk_slowdown", lambda *a: 1.0)
    assert device.architecture.compute_units == 132
    arrays = [np.zeros(len(low)) for _ in range(3)]
    for name, values in spec.items():
        for array, value in zip(arrays, values):
            array[low.names.index(name)] = value
    return (low, device, *arrays)


@pytest.mark.parametrize("interference", [True, False])
def test_hand_built_reduce_scatter(monkeypatch, interference):
    """o_proj's reduce-scatter, TransformerEngine's pipelined method: 4 splits, 16 of the
    H100's 132 SMs left out of the GEMM throughout. The scatter moves (3/4) x 2 MiB through
    HBM 3 times in C, set so that it takes half the HBM bandwidth B: C = 4.5 x 2 MiB / B.
    The GEMM: compute G = memory M = 4 C. With interference the GEMM runs
    max(G x 132/116, M x (1 + C / M)) = max(4.552 C, 5 C) = 5 C (its memory stream at half
    the bandwidth while the scatter runs), the scatter exposes max(5 C + C/4, 5 C/4 + C) -
    5 C = C/4: 5.25 C in all. Without interference (--no-comm-interference) the bandwidth
    term goes, the SM margin (a launch setting) stays: 4 C x 132/116 + C/4."""
    nbytes = 2 * 2**20
    low, device, *_ = _hand_built(monkeypatch, {})
    bandwidth = float(device.memory[-1].bandwidth_bytes_per_s)
    c = 4.5 * nbytes / bandwidth
    rs, gemm = "L0.o_proj.tp_reduce_scatter", "L0.o_proj"
    i, j = low.names.index(rs), low.names.index(gemm)
    assert max(low.bytes_read[i], low.bytes_written[i]) == nbytes
    _, _, compute, memory, time = _hand_built(
        monkeypatch, {gemm: (4 * c, 4 * c, 4 * c), rs: (0.0, 0.0, c)})
    out, hidden = overlapped(low, device, compute, memory, time, interference)
    assert np.flatnonzero(hidden).tolist() == [i]
    gemm_s = 5 * c if interference else 4 * c * 132 / 116
    assert out[j] == pytest.approx(gemm_s, rel=1e-12)
    assert out[i] + out[j] == pytest.approx(gemm_s + c / 4, rel=1e-12)


@pytest.mark.parametrize("interference", [True, False])
def test_hand_built_ring_all_gather(monkeypatch, interference):
    """The first norm's all-gather, ring exchange over tp = 4 (one SM, no margin), read by
    q, k and v: compute = memory = 0.5 C, 0.25 C, 0.25 C (G = C). The gather moves (3/4) x
    2 MiB through HBM twice in C, set to half the bandwidth: C = 3 x 2 MiB / B. Over the
    overlapped time (all of each GEMM, as C >= G) a GEMM's memory runs at half the
    bandwidth, its compute on 131 of 132 SMs: each takes max(g x 132/131, 2 g) = 2 g, G' = 2
    C, and the gather is hidden: max(2 C, 2 C / 4 + C) = 2 C in all. Without interference
    the GEMMs keep their time (the ring's SM is held only while it runs), the gather
    exposes max(C, C/4 + C) - C = C/4: 1.25 C."""
    nbytes = 2 * 2**20
    low, device, *_ = _hand_built(monkeypatch, {})
    c = 3.0 * nbytes / float(device.memory[-1].bandwidth_bytes_per_s)
    ag = "L0.rmsnorm.tp_all_gather"
    gemms = {"L0.q_proj": 0.5 * c, "L0.k_proj": 0.25 * c, "L0.v_proj": 0.25 * c}
    spec = {name: (g, g, g) for name, g in gemms.items()}
    _, _, compute, memory, time = _hand_built(monkeypatch, {**spec, ag: (0.0, 0.0, c)})
    i = low.names.index(ag)
    assert max(low.bytes_read[i], low.bytes_written[i]) == nbytes
    out, hidden = overlapped(low, device, compute, memory, time, interference)
    assert np.flatnonzero(hidden).tolist() == [i]
    total = out[i] + sum(out[low.names.index(name)] for name in gemms)
    assert total == pytest.approx(2 * c if interference else 1.25 * c, rel=1e-12)
    assert out[i] == pytest.approx(0.0 if interference else 0.25 * c, abs=1e-18)


def test_no_interference_reaches_overlap(monkeypatch):
    """--no-comm-interference reaches overlapped() (before, it priced the chunks' HBM
    traffic whatever the flag), and the overlapped GEMMs take less time without it."""
    flags = []

    def spy(lowered, device, compute_s, memory_s, time_s, interference=True):
        out, hidden = overlapped(lowered, device, compute_s, memory_s, time_s, interference)
        flags.append((interference, out[lowered.kind == OpKind.MATMUL].sum()))
        return out, hidden

    monkeypatch.setattr(stage, "overlapped", spy)
    run = dict(num_devices=4, tp=4, sequence_parallel=True, tp_comm_overlap=True,
               global_batch=1, **COMMON)
    simulate(_small(), "h100-sxm5-80gb", **run)
    simulate(_small(), "h100-sxm5-80gb", comm_interference=False, **run)
    (on, on_s), (off, off_s) = flags
    assert on is True and off is False
    assert off_s < on_s
