"""Tensor liveness over the schedule: the kernel, its reference, and the peak of training steps."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from simulator.api import simulate
from simulator.engine import kernels, reference
from simulator.training.fusion import fuse_attention
from simulator.graph.opgraph import OpGraph
from simulator.graph.lower import lower
from simulator.training.saved import activation_bytes
from simulator.graph.op import DType, Op, OpKind
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from workloads.presets import TRANSFORMERS
from workloads.transformer import TransformerConfig

EXAMPLES = settings(max_examples=80, deadline=None)


@st.composite
def scheduled_dags(draw, max_ops=30):
    """A random DAG (CSR, i -> j only for i < j) scheduled on a few streams, with tensor sizes.

    Durations may be 0 (tensors of zero lifetime) and times repeat (events at equal instants).
    """
    n = draw(st.integers(0, max_ops))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    density = draw(st.floats(0.0, 0.5))
    preds = [np.flatnonzero(rng.random(j) < density) for j in range(n)]
    indptr = np.zeros(n + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(p) for p in preds])
    indices = np.concatenate(preds).astype(np.int64) if n else np.zeros(0, np.int64)
    duration = rng.integers(0, 4, size=n).astype(np.float64)  # small integers: ties
    n_streams = draw(st.integers(1, 3))
    start, end = kernels.schedule(indptr, indices, duration,
                                  rng.integers(0, n_streams, size=n), n_streams)
    edge_output = rng.random(len(indices)) < 0.8
    out_bytes = rng.integers(0, 1000, size=n)
    keep_bytes = np.where(rng.random(n) < 0.3, rng.integers(0, 100, size=n), 0)
    counted = rng.random(n) < 0.9
    return indptr, indices, edge_output, start, end, out_bytes, keep_bytes, counted


@EXAMPLES
@given(scheduled_dags())
def test_liveness_matches_reference(args):
    got, want = kernels.liveness(*args), reference.liveness(*args)
    assert got[0] == want[0] and got[1] == want[1]
    np.testing.assert_array_equal(got[2], want[2])
    np.testing.assert_array_equal(got[3], want[3])


@EXAMPLES
@given(scheduled_dags())
def test_liveness_invariants(args):
    indptr, indices, edge_output, start, end, out_bytes, keep_bytes, counted = args
    peak, at, out_free, keep_free = kernels.liveness(*args)
    assert np.all(out_free >= end) and np.all(keep_free >= out_free)
    for v in range(len(start)):  # a tensor outlives every op that reads it
        for e in range(indptr[v], indptr[v + 1]):
            assert keep_free[indices[e]] >= end[v]
            if edge_output[e]:
                assert out_free[indices[e]] >= end[v]
    assert 0 <= peak <= int(np.sum((out_bytes + keep_bytes)[counted]))
    lasting = counted & (out_free > start)
    assert peak >= out_bytes[lasting].max(initial=0)
    live = counted & (start <= at)
    at_peak = (np.where(live & (at < out_free), out_bytes, 0).sum()
               + np.where(live & (at < keep_free), keep_bytes, 0).sum())
    assert at_peak == peak
    # nothing counted, nothing live
    none = kernels.liveness(indptr, indices, edge_output, start, end, out_bytes, keep_bytes,
                            np.zeros_like(counted))
    assert none[0] == 0 and none[1] == 0.0


def test_liveness_of_a_chain():
    # a -> b -> c, serial, 1 s each; a's mask is read by c (its backward), its output only by b
    indptr = np.array([0, 0, 1, 3], dtype=np.int64)
    indices = np.array([0, 1, 0], dtype=np.int64)
    edge_output = np.array([True, True, False])
    start, end = np.array([0.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0])
    out_bytes = np.array([100, 10, 1], dtype=np.int64)
    keep_bytes = np.array([5, 0, 0], dtype=np.int64)
    counted = np.ones(3, dtype=np.bool_)
    peak, at, out_free, keep_free = kernels.liveness(indptr, indices, edge_output, start, end,
                                                     out_bytes, keep_bytes, counted)
    assert list(out_free) == [2.0, 3.0, 3.0] and list(keep_free) == [3.0, 3.0, 3.0]
    # during b: a's output and mask, b's output; a's output is freed before c allocates
    assert (peak, at) == (115, 1.0)
    counted[0] = False
    assert kernels.liveness(indptr, indices, edge_output, start, end, out_bytes, keep_bytes,
                            counted)[:2] == (11, 2.0)  # b and c, during c


# -- training steps -------------------------------------------------------------------------------
def _live(result) -> float:
    return result.memory_breakdown["activations"] + result.memory_breakdown["workspace"]


def test_mask_only_reads_are_marked():
    """A dropout's backward reads its mask, not its output: that edge says so."""
    c = TransformerConfig("t", 1, 32, 2, vocab=50, seq_len=8)
    step = training_graph(c.forward_graph(1, DType.BF16), Plan())
    low = lower(step)
    pos = low.position()
    marked = [(low.names[low.indices[e]], low.names[v]) for v in range(len(low))
              for e in range(low.indptr[v], low.indptr[v + 1])
              if not low.edge_output[e] and low.edge_bytes[e] > 0]  # 0 bytes: ordering only
    assert marked
    for src, dst in marked:
        op = step.op(src)
        assert dst == f"grad:{src}" and "output" not in op.saves
        assert op.mask_bytes + op.stats_bytes == low.keep_bytes[pos[src]] > 0


@pytest.mark.parametrize("name,batch", [("gpt3-1.3b", 4), ("gpt2-small", 2)])
def test_gpt_peak_is_saved_activations_plus_the_logit_gradient(name, batch):
    """Without recomputation the step peaks at the loss: every tensor the forward saved
    (Korthikanti et al. 2022's count, ``memory.activation_bytes``, in which the eager loss keeps
    its fp32 softmax, ``training.loss``) is live, with the 16-bit logits beside their fp32 copy
    at the loss's cast (Megatron-LM's ``.float()``; at the cast back, the softmax beside the
    16-bit gradient of the logits: as many bytes, s x b x vocab x 2)."""
    c = TRANSFORMERS[name]
    r = simulate(c, "a100", micro_batch=batch, precision="bf16")
    forward = fuse_attention(c.forward_graph(batch, DType.BF16))  # the default plan's
    saved = activation_bytes(forward, Plan(micro_batch=batch))
    assert r.saved_activation_bytes == saved
    assert r.memory_breakdown["activations"] == saved + c.seq_len * batch * c.vocab * 2
    assert r.memory_breakdown["workspace"] == 0
    assert r.peak_memory_bytes == sum(r.memory_breakdown.values())


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), layers=st.integers(1, 4), heads=st.sampled_from([1, 2, 4]),
       hidden=st.sampled_from([16, 32, 64]), seq=st.integers(2, 64),
       vocab=st.sampled_from([10, 50, 500]), attention=st.sampled_from(["fused", "materialized"]),
       fusion=st.sampled_from(["eager", "compiled"]))
def test_recomputation_lowers_the_peak(batch, layers, heads, hidden, seq, vocab, attention,
                                       fusion):
    """What the forward saves is live when the backward starts, so the live peak is at least
    ``memory.activation_bytes``; recomputation never raises it. Full recomputation re-creates a
    whole layer in the backward, so it beats selective only from two layers on (with one layer
    it keeps as much as no recomputation at the moment the layer is re-run)."""
    c = TransformerConfig("t", layers, hidden, heads, vocab=vocab, seq_len=seq)
    peaks = {}
    for recompute in ("none", "selective", "full"):
        r = simulate(c, "a100", micro_batch=batch, recompute=recompute, attention=attention,
                     fusion=fusion)
        assert _live(r) >= r.saved_activation_bytes
        peaks[recompute] = _live(r)
    assert peaks["none"] >= peaks["selective"] and peaks["none"] >= peaks["full"]
    if layers >= 2:
        assert peaks["selective"] >= peaks["full"]


def test_full_recomputation_of_gpt3_1_3b():
    """Full recomputation keeps each layer's input (2sbh per layer, Korthikanti et al. 2022,
    sec. 4.2.2) and re-creates one layer at a time: a fraction of the peak without it. The loss
    is not recomputed: its fp32 logits (4sbv bytes, Korthikanti et al. sec. 4.3) beside the
    16-bit ones at the cast (2sbv) stay, a floor of 6sbv under both."""
    c = TRANSFORMERS["gpt3-1.3b"]
    none = simulate(c, "a100", micro_batch=4)
    full = simulate(c, "a100", micro_batch=4, recompute="full")
    floor = 6 * c.seq_len * 4 * c.vocab
    assert full.memory_breakdown["activations"] - floor < (
        none.memory_breakdown["activations"] - floor) / 5
    assert full.memory_breakdown["activations"] >= full.saved_activation_bytes


def test_a_plan_that_does_not_fit_is_a_result():
    r = simulate("gpt3-175b", "a100", micro_batch=1)
    assert r.fits is False
    assert r.peak_memory_bytes > r.memory_capacity_bytes
    assert r.summary()["fits"] is False


def test_weight_gradients_and_updates_hold_no_live_bytes():
    """Weight gradients land in the persistent gradient buffer (counted once, as a state): an
    layer whose weight gradient is its biggest tensor has a live peak below that gradient."""
    g = OpGraph("wide")
    g.add(Op("x", OpKind.ELEMENTWISE, dtype=DType.FP32, bytes_written=16, out_bytes=16))
    g.add(Op("fc", OpKind.MATMUL, fn="linear", dtype=DType.FP32, m=1, n=4096, k=4,
             flops=2 * 4 * 4096, bytes_read=16 + 4 * 4096 * 4, bytes_written=4096 * 4,
             out_bytes=4096 * 4, params=4 * 4096, saves=("inputs",)), ["x"])
    g.add(Op("loss", OpKind.LOSS, dtype=DType.FP32, bytes_read=4096 * 4, bytes_written=4,
             out_bytes=4, saves=("inputs",)), ["fc"])
    step = training_graph(g, Plan(precision="fp32"))
    low = lower(step)
    start, end = kernels.schedule(low.indptr, low.indices, np.ones(len(low)),
                                  np.zeros(len(low), np.int64), 1)
    counted = np.array([not n.startswith("wgrad:") and not n.startswith("optimizer:")
                        for n in low.names])
    peak = kernels.liveness(low.indptr, low.indices, low.edge_output, start, end,
                            low.out_bytes, low.keep_bytes, counted)[0]
    everything = kernels.liveness(low.indptr, low.indices, low.edge_output, start, end,
                                  low.out_bytes, low.keep_bytes, np.ones(len(low), bool))[0]
    weight_gradient = 4 * 4096 * 4  # fp32
    assert peak < weight_gradient <= everything


@settings(max_examples=80, deadline=None)
@given(scheduled_dags(max_ops=60))
def test_lite_liveness_is_the_kernel_bit_for_bit(args):
    """The NumPy twin a small step is priced with (simulator.engine.lite) gives the kernel's
    peak, peak instant and free times exactly."""
    from simulator.engine import lite
    got, want = lite.liveness(*args), kernels.liveness(*args)
    assert got[0] == want[0] and got[1] == want[1]
    np.testing.assert_array_equal(got[2], want[2])
    np.testing.assert_array_equal(got[3], want[3])
