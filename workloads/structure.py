"""What a traced forward graph's structure says: the ``Role`` of its ops in the parallel split,
whether it is a transformer (``transformer_shape``), and the model of its first layers.

Read from the graph alone (kinds, functions, edges, layers; never the names), the way a reader
of the model's code finds Megatron-LM's layers (Shoeybi et al. 2019, sec. 3):

- an attention core is a fused attention op, or a softmax between two products of activations
  (QK^T before it, AV after it);
- ``Role.COLUMN``: the weighted linears whose outputs reach the core's operands (q, k and v, or
  one fused qkv) through copies and elementwise ops of the same layer (views, rope);
  ``Role.ROW``: the one weighted linear that reads the core's output through copies (the
  attention's output projection);
- an MLP: a weighted linear (``ROW``) that reads, through an activation (gelu, relu, silu, a
  gated product of one, ...), weighted linears (``COLUMN``) that read the width it writes;
- ``Role.VOCAB_HEAD``: the weighted linear outside the layers that the loss reads, from the
  width the layers write to the vocabulary; ``Role.VOCAB_EMBEDDING``: the embedding outside the
  layers whose table is that head's shape (vocabulary x hidden); ``Role.POSITION_EMBEDDING``:
  an embedding outside the layers, hidden wide, whose ids the graph computes (positions, not
  data).

Anything else stays ``Role.REPLICATED``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from simulator.graph.op import Op, OpKind, Role
from simulator.graph.opgraph import OpGraph
from workloads.base import TransformerShape

#: Elementwise functions that make a block an MLP (a gated MLP multiplies one by the up path).
ACTIVATIONS = frozenset({"gelu", "relu", "silu", "swiglu", "tanh", "sigmoid", "mish", "elu",
                         "selu", "celu", "softplus", "hardswish", "hardsigmoid", "leaky_relu",
                         "relu6", "hardtanh"})
_PASS = (OpKind.COPY, OpKind.ELEMENTWISE)


def assign_roles(graph: OpGraph) -> OpGraph:
    """Give the ops of ``graph`` their roles (in place; returned)."""
    hidden = set()
    for core in _cores(graph):
        columns, row = _projections(graph, core)
        if row is None or any(graph.op(n).role is not Role.REPLICATED
                              for n in [*columns, row]):
            continue
        _set(graph, columns, Role.COLUMN)
        _set(graph, [row], Role.ROW)
        hidden.add(graph.op(row).n)
    for name in graph.names():
        _mlp(graph, name)
    head = _head(graph, hidden)
    if head is not None:
        _set(graph, [head], Role.VOCAB_HEAD)
        _embeddings(graph, graph.op(head))
    return graph


def transformer_shape(graph: OpGraph, batch: int) -> TransformerShape | None:
    """The shape of a graph whose roles are assigned, if it is a transformer: layers numbered
    0..L-1, all alike (the same ops with the same counts: what pipeline stages and the
    per-layer FLOPs of ``simulator.report.figures`` assume), each with one attention core, its
    projections and one MLP; else None."""
    layers: dict[int, list[Op]] = {}
    for op in graph.ops():
        if op.layer >= 0:
            layers.setdefault(op.layer, []).append(op)
    if not layers or sorted(layers) != list(range(len(layers))):
        return None
    first = [_signature(op) for op in layers[0]]
    if any([_signature(op) for op in ops] != first for ops in layers.values()):
        return None
    cores = [c for c in _cores(graph) if graph.op(c[0]).layer == 0]
    rows = [op for op in layers[0] if op.role is Role.ROW]
    if len(cores) != 1 or len(rows) != 2:
        return None
    shape, _, _ = cores[0]
    columns, row = _projections(graph, cores[0])
    core = graph.op(shape)
    if row is None or graph.op(row).role is not Role.ROW or core.batch % batch or not core.k:
        return None
    heads = core.batch // batch
    features = sum(graph.op(c).n for c in columns)   # q, k, v: (heads + 2 kv heads) x head dim
    kv = (features // core.k - heads) // 2 if features % core.k == 0 else 0
    if kv <= 0 or heads % kv or (heads + 2 * kv) * core.k != features:
        return None
    ffn = next(op.k for op in rows if op.name != row)
    return TransformerShape(layers=len(layers), hidden=graph.op(row).n, heads=heads,
                            kv_heads=kv, sequence=core.m, ffn=ffn, head_dim=core.k)


def first_layers(graph: OpGraph, count: int) -> OpGraph:
    """The forward graph of the model of ``graph``'s first ``count`` layers (every layer alike,
    as ``transformer_shape`` checks): an op outside the layers that read an op of a dropped
    layer reads the same op of the last kept layer."""
    by_layer: dict[int, list[str]] = {}
    for name in graph.names():
        layer = graph.op(name).layer
        if layer >= 0:
            by_layer.setdefault(layer, []).append(name)
    if count >= len(by_layer):
        return graph
    same = {name: by_layer[count - 1][i] for layer, names in by_layer.items() if layer >= count
            for i, name in enumerate(names)}
    out = OpGraph(graph.name)
    for name in graph.names():
        if name in same:
            continue
        op = graph.op(name)
        if op.no_grad:
            op = op.evolve(no_grad=tuple(same.get(s, s) for s in op.no_grad))
        out.add(op, [same.get(s, s) for s in graph.inputs(name)])
    return out


# -- attention -------------------------------------------------------------------------------
def _cores(graph: OpGraph) -> list[tuple[str, str, list[str]]]:
    """Each attention core as (the op with its shape: heads x queries x keys x head dim, the op
    writing its output, the producers of its operands)."""
    cores = []
    for name in graph.names():
        op = graph.op(name)
        if op.kind is OpKind.ATTENTION:
            cores.append((name, name, graph.inputs(name)))
        elif op.kind is OpKind.SOFTMAX and op.layer >= 0:
            scores, before = _walk(graph, [name], op.layer, _is_product, _passes, up=True)
            context, after = _walk(graph, [name], op.layer, _is_product, _passes, up=False)
            if len(scores) == 1 and len(context) == 1:
                chain = {name, *before, *after}
                values = [s for s in graph.inputs(context[0]) if s not in chain]
                cores.append((scores[0], context[0], graph.inputs(scores[0]) + values))
    return cores


def _projections(graph: OpGraph, core: tuple[str, str, list[str]]) -> tuple[list[str],
                                                                                str | None]:
    """The linears that make the core's operands, and the one that reads its output (None,
    with no linears, if there are not both)."""
    _, output, operands = core
    layer = graph.op(output).layer
    columns, _ = _walk(graph, operands, layer, _is_linear, _passes, up=True, start=True)
    rows, _ = _walk(graph, [output], layer, _is_linear, _forwards, up=False)
    return (columns, rows[0]) if columns and len(rows) == 1 else ([], None)


# -- MLP, head and embeddings ---------------------------------------------------------------------
def _mlp(graph: OpGraph, name: str) -> None:
    """``name`` is an MLP's second linear if it reads, through an activation, linears that read
    the width it writes."""
    op = graph.op(name)
    if op.layer < 0 or not _is_linear(op) or op.role is not Role.REPLICATED:
        return
    inputs = graph.inputs(name)
    columns, passed = _walk(graph, inputs, op.layer, _is_linear, _gating, up=True, start=True)
    if columns and any(graph.op(p).fn in ACTIVATIONS for p in passed) and all(
            graph.op(c).role is Role.REPLICATED and graph.op(c).k == op.n for c in columns):
        _set(graph, columns, Role.COLUMN)
        _set(graph, [name], Role.ROW)


def _head(graph: OpGraph, hidden: set[int]) -> str | None:
    """The linear outside the layers that the loss reads, if it reads the layers' width."""
    losses = [n for n in graph.names() if graph.op(n).kind is OpKind.LOSS]
    found, _ = _walk(graph, losses, -1, _is_linear, _forwards, up=True)
    if len(found) == 1 and graph.op(found[0]).k in hidden:
        return found[0]
    return None


def _embeddings(graph: OpGraph, head: Op) -> None:
    """The token embedding (the head's shape; one that reads the data first) and position
    tables (ids the graph computes) outside the layers."""
    tables = [n for n in graph.names() if graph.op(n).kind is OpKind.EMBEDDING
              and graph.op(n).layer < 0 and graph.op(n).n == head.k]
    vocab = sorted((bool(graph.inputs(n)), i) for i, n in enumerate(tables)
                   if graph.op(n).k == head.n)
    if vocab:
        _set(graph, [tables[vocab[0][1]]], Role.VOCAB_EMBEDDING)
    _set(graph, [n for n in tables if graph.inputs(n)
                 and graph.op(n).role is Role.REPLICATED], Role.POSITION_EMBEDDING)


# -- walking the graph ------------------------------------------------------------------------------
def _walk(graph: OpGraph, starts: Iterable[str], layer: int, stop: Callable[[Op], bool],
          through: Callable[[OpGraph, str], bool], up: bool,
          start: bool = False) -> tuple[list[str], list[str]]:
    """From ``starts`` (included when ``start``, else their neighbours) along the edges, up
    (producers) or down (consumers), within ``layer``: the ops where ``stop`` holds, and the
    ops passed through (where ``through`` holds), in graph order."""
    found, passed, seen = [], [], set()
    todo = list(starts) if start else [n for s in starts for n in _next(graph, s, up)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        op = graph.op(name)
        if op.layer != layer:
            continue
        if stop(op):
            found.append(name)
        elif through(graph, name):
            passed.append(name)
            todo.extend(_next(graph, name, up))
    order = {n: i for i, n in enumerate(graph.nx.nodes)}
    return sorted(found, key=order.get), sorted(passed, key=order.get)


def _next(graph: OpGraph, name: str, up: bool) -> list[str]:
    return graph.inputs(name) if up else graph.consumers(name)


def _is_linear(op: Op) -> bool:
    """A product of an activation and a trainable weight."""
    return op.kind is OpKind.MATMUL and op.fn == "linear"


def _is_product(op: Op) -> bool:
    """A product of two activations (QK^T, AV)."""
    return op.kind is OpKind.MATMUL and op.fn != "linear"


def _passes(graph: OpGraph, name: str) -> bool:
    """Views, copies and elementwise ops (a scale, a mask, rope, dropout)."""
    return graph.op(name).kind in _PASS


def _forwards(graph: OpGraph, name: str) -> bool:
    """Copies, and elementwise ops of one input (a layout change, dropout, a scale)."""
    op = graph.op(name)
    return op.kind is OpKind.COPY or (op.kind is OpKind.ELEMENTWISE
                                      and len(graph.inputs(name)) == 1)


def _gating(graph: OpGraph, name: str) -> bool:
    """Inside an MLP: copies and elementwise ops other than a sum (a residual ends it)."""
    op = graph.op(name)
    return op.kind in _PASS and op.fn != "add"


def _signature(op: Op) -> tuple:
    return (op.kind, op.fn, op.role, op.flops, op.params, op.out_bytes, op.m, op.n, op.k,
            op.batch)


def _set(graph: OpGraph, names: Iterable[str], role: Role) -> None:
    for name in names:
        graph.nx.nodes[name]["op"] = graph.op(name).evolve(role=role)


__all__ = ["ACTIVATIONS", "assign_roles", "first_layers", "transformer_shape"]
