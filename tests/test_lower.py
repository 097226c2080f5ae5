"""lower(): the OpGraph -> arrays hand-off keeps order, edges and counts."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from simulator.graph.opgraph import OpGraph
from simulator.graph.lower import Lowered, lower
from simulator.graph.op import DType, Op, OpKind, Phase
from workloads.layers import Builder


def mlp_graph() -> OpGraph:
    b = Builder(OpGraph("mlp"), dtype=DType.BF16)
    b.layer = 0
    h = b.linear("fc1", None, rows=8, in_f=16, out_f=32)
    a = b.activation("gelu", h, numel=8 * 32)
    o = b.linear("fc2", a, rows=8, in_f=32, out_f=16)
    r = b.add(o, h, numel=8 * 16)
    b.layer = -1
    b.loss(r, rows=8, classes=16)
    return b.graph


def check_against_graph(graph: OpGraph, low: Lowered) -> None:
    assert low.names == graph.names()
    pos = low.position()
    assert len(pos) == len(low) == len(graph)
    assert low.indptr.dtype == low.indices.dtype == low.edge_bytes.dtype == np.int64
    assert low.indptr[0] == 0 and np.all(np.diff(low.indptr) >= 0)
    assert low.n_edges == graph.nx.number_of_edges() == len(low.indices)
    for i, name in enumerate(low.names):
        expected = graph.inputs(name)
        assert [low.names[p] for p in low.preds(i)] == expected
        assert all(p < i for p in low.preds(i))  # topological
        sizes = low.edge_bytes[low.indptr[i]:low.indptr[i + 1]]
        assert list(sizes) == [graph.nx.edges[src, name]["bytes"] for src in expected]
        op = graph.op(name)
        for field in ("flops", "bytes_read", "bytes_written", "out_bytes", "params",
                      "m", "n", "k", "batch", "layer"):
            assert getattr(low, field)[i] == getattr(op, field), field
        assert (low.kind[i], low.phase[i], low.dtype[i]) == (op.kind, op.phase, op.dtype)


def test_mlp_graph_lowers_exactly():
    graph = mlp_graph()
    low = lower(graph)
    check_against_graph(graph, low)
    assert int(low.flops.sum()) == graph.flops()
    assert int(low.params.sum()) == graph.params()
    assert low.kind.dtype == low.phase.dtype == low.dtype.dtype == np.int8
    assert low.flops.dtype == low.m.dtype == low.layer.dtype == np.int64
    # the residual add reads fc2 then fc1, in input order, with fc1's output bytes
    i = low.position()["L0.residual"]
    assert [low.names[p] for p in low.preds(i)] == ["L0.fc2", "L0.fc1"]
    assert low.edge_bytes[low.indptr[i + 1] - 1] == graph.op("L0.fc1").out_bytes


def test_order_is_topological_not_insertion():
    g = OpGraph()
    g.add(Op("late", OpKind.ELEMENTWISE, flops=3))
    g.add(Op("early", OpKind.MATMUL, phase=Phase.BACKWARD, flops=5, out_bytes=7))
    g.add_edge("early", "late", nbytes=11)  # late now depends on an op added after it
    low = lower(g)
    assert low.names == ["early", "late"]
    assert list(low.indices) == [0] and list(low.edge_bytes) == [11]
    assert list(low.flops) == [5, 3] and list(low.phase) == [Phase.BACKWARD, Phase.FORWARD]


def test_empty_graph():
    low = lower(OpGraph())
    assert len(low) == 0 and low.names == [] and low.n_edges == 0
    assert list(low.indptr) == [0] and low.indices.shape == (0,) and low.flops.shape == (0,)


def test_single_op():
    g = OpGraph()
    g.add(Op("x", OpKind.EMBEDDING, dtype=DType.FP16, bytes_read=2, bytes_written=3, layer=4))
    low = lower(g)
    assert low.names == ["x"] and list(low.indptr) == [0, 0]
    assert list(low.nbytes) == [5] and low.layer[0] == 4 and low.dtype[0] == DType.FP16


def test_arrays_are_read_only():
    low = lower(mlp_graph())
    assert not low.flops.flags.writeable and not low.indices.flags.writeable


@st.composite
def graphs(draw):
    n = draw(st.integers(0, 25))
    g = OpGraph("random")
    for j in range(n):
        preds = draw(st.lists(st.integers(0, j - 1), max_size=4)) if j else []
        op = Op(f"op{j}", draw(st.sampled_from(OpKind)), flops=draw(st.integers(0, 2**50)),
                out_bytes=draw(st.integers(0, 2**40)))
        g.add(op, [f"op{p}" for p in preds])
    return g


@settings(max_examples=60, deadline=None)
@given(graphs())
def test_random_graphs_lower_exactly(graph):
    check_against_graph(graph, lower(graph))
