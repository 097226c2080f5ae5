"""What an ONNX graph's structure says before its nodes become ops (no onnx objects here).

- Constants: initializers, ``Constant`` nodes, shapes (``Shape``, ``Size``: metadata) and every
  node whose inputs are all constant (what an exporter's constant folding would compute once):
  such nodes are folded, they cost nothing per step.
- Parameters: a floating-point initializer of more than one element is a learned tensor (ONNX
  does not say which are trained: buffers count too, causal masks and normalisation running
  statistics aside; an exporter that merges equal initializers makes them count once); a
  constant computed from one (a transposed weight, a position table gathered at fixed indices)
  carries it as its root, and the first op that reads the constant owns the parameter.
  An exporter's copy of an embedding table (tied output embeddings: equal, or equal once
  transposed) counts once.
- Bias adds: ``Add(MatMul(x, W), b)`` with b a learned vector of the output width is one linear
  with a bias, as ``torch.nn.Linear`` (and ``Builder.linear``) count it.
- Attention cores: ``MatMul(Q, K^T)`` -> scale / mask -> ``Softmax`` -> [``Dropout``] ->
  ``MatMul(., V)`` is one attention core (Korthikanti et al. 2022's selective part), so a fused
  attention plan replaces it by one FlashAttention op as for zoo models. It is causal when its
  mask derives from ``Trilu`` or is a triangular constant.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from simulator.errors import WorkloadError
from workloads.onnx_model import Node, Parsed

VIEWS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
METADATA = frozenset({"Shape", "Size", "Constant"})
SCORE_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Where", "Cast"})  # scale and mask


@dataclass
class Analysis:
    const: set[str] = field(default_factory=set)
    roots: dict[str, frozenset[str]] = field(default_factory=dict)
    causal_masks: set[str] = field(default_factory=set)
    folded: set[int] = field(default_factory=set)       # node indices computed once
    bias: dict[int, str] = field(default_factory=dict)  # MatMul/Gemm node -> folded bias
    bias_adds: set[int] = field(default_factory=set)    # Add nodes folded into a linear
    tied: dict[str, str] = field(default_factory=dict)  # initializer -> the copy that counts
    cores: dict[int, tuple[int, str]] = field(default_factory=dict)  # node -> (core, role)
    causal_cores: set[int] = field(default_factory=set)


def dag_order(nodes: list[Node], given: set[str], name: str) -> list[Node]:
    """``nodes`` in an order where each runs after the nodes it reads (their list order where
    it allows; ONNX requires it, exporters keep it). A WorkloadError, naming a node, for an
    input that neither ``given`` (graph inputs, initializers) nor a node produces (a dangling
    input) and for a cycle: such a graph is no model to price."""
    producer: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for out in node.outputs:
            if out and out not in given:
                producer.setdefault(out, i)
    needs: list[set[int]] = []
    for node in nodes:
        dangling = [t for t in node.inputs if t and t not in given and t not in producer]
        if dangling:
            raise WorkloadError(f"{name}: node {node.name!r} ({node.op_type}) reads "
                                f"{dangling[0]!r}, which no graph input, initializer or node "
                                "produces (a dangling input); export the model again")
        needs.append({producer[t] for t in node.inputs if t and t in producer})
    readers: list[list[int]] = [[] for _ in nodes]
    for i, deps in enumerate(needs):
        for j in deps:
            readers[j].append(i)
    waiting = [len(deps) for deps in needs]
    ready = [i for i, n in enumerate(waiting) if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in readers[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(order) < len(nodes):
        stuck = next(i for i, n in enumerate(waiting) if n)
        raise WorkloadError(f"{name}: the graph has a cycle through node {nodes[stuck].name!r} "
                            f"({nodes[stuck].op_type}): an ONNX graph must be acyclic; export "
                            "the model again")
    return [nodes[i] for i in order]


def analyse(m: Parsed) -> Analysis:
    a = Analysis()
    for name in m.tensors:
        a.const.add(name)
        if name in m.initializers and m.is_float(name) and m.numel(name) > 1:
            a.roots[name] = frozenset({name})
    for i, node in enumerate(m.nodes):
        ins = [t for t in node.inputs if t]
        if node.op_type in METADATA or (ins and all(t in a.const for t in ins)):
            a.folded.add(i)
            roots = frozenset().union(*(a.roots.get(t, frozenset()) for t in ins))
            causal = node.op_type == "Trilu" or any(t in a.causal_masks for t in ins)
            for out in node.outputs:
                a.const.add(out)
                if roots and m.is_float(out) and node.op_type not in METADATA:
                    a.roots[out] = roots
                if causal:
                    a.causal_masks.add(out)
    a.tied = _ties(m, a)
    _bias_adds(m, a)
    _attention_cores(m, a)
    return a


def _is_mask(m: Parsed, a: Analysis, name: str) -> bool:
    """A causal mask read by an attention core: built with Trilu, or a triangular constant
    (then it is no parameter, though stored as a float initializer)."""
    if name in a.causal_masks:
        return True
    shape = m.shape(name)
    if len(shape) < 2 or shape[-1] != shape[-2] or math.prod(shape) > 1 << 24:
        return False
    arr = m.value(name, external=True)
    if arr is None or not _triangular(arr):
        return False
    a.causal_masks.add(name)
    a.roots.pop(name, None)
    return True


def _triangular(arr) -> bool:
    """A causal mask: the strict upper triangle is one value the lower triangle never takes."""
    if arr.ndim < 2 or arr.shape[-1] != arr.shape[-2] or arr.shape[-1] < 2 or arr.size > 1 << 24:
        return False
    a = arr.reshape(-1, *arr.shape[-2:])[0]
    upper = a[np.triu_indices(a.shape[0], 1)]
    lower = a[np.tril_indices(a.shape[0])]
    return bool(np.all(upper == upper[0]) and not np.any(lower == upper[0]))


def _ties(m: Parsed, a: Analysis) -> dict[str, str]:
    """Learned weights that are an embedding table again (tied input and output embeddings,
    as is or transposed): only those pairs are compared, so no other weights are read."""
    tables = [n.inputs[0] for n in m.nodes if n.op_type == "Gather" and n.inputs
              and n.inputs[0] in m.initializers and n.inputs[0] in a.roots
              and len(m.shape(n.inputs[0])) == 2]
    tied = {}
    for table in dict.fromkeys(tables):
        shape = m.shape(table)
        for name in m.initializers:
            if name == table or name in tied or name not in a.roots:
                continue
            if m.shape(name) not in (shape, shape[::-1]) or shape[0] == shape[1]:
                continue
            ours, theirs = m.value(table, external=True), m.value(name, external=True)
            if ours is not None and theirs is not None and (
                    np.array_equal(ours, theirs) or np.array_equal(ours.T, theirs)):
                tied[name] = table
    return tied


def _producers(m: Parsed, a: Analysis) -> tuple[dict[str, int], dict[str, list[int]]]:
    prod, cons = {}, {}
    for i, node in enumerate(m.nodes):
        if i in a.folded:
            continue
        for out in node.outputs:
            prod[out] = i
        for t in dict.fromkeys(node.inputs):
            if t and t not in a.const:
                cons.setdefault(t, []).append(i)
    for t in m.outputs:
        cons.setdefault(t, []).append(-1)
    return prod, cons


def _linear_weight(m: Parsed, a: Analysis, node) -> bool:
    if node.op_type == "MatMul":
        return node.inputs[1] in a.roots and len(m.shape(node.inputs[1])) == 2
    return (node.op_type == "Gemm" and node.inputs[1] in a.roots
            and (len(node.inputs) < 3 or not node.inputs[2]))


def _bias_adds(m: Parsed, a: Analysis) -> None:
    prod, cons = _producers(m, a)
    for i, node in enumerate(m.nodes):
        if node.op_type != "Add" or i in a.folded or len(node.inputs) != 2:
            continue
        x, b = node.inputs if node.inputs[1] in a.const else node.inputs[::-1]
        src = prod.get(x)
        if (b in a.roots and x not in a.const and src is not None and cons.get(x) == [i]
                and src not in a.bias and _linear_weight(m, a, m.nodes[src])
                and m.numel(b) == (m.shape(x) or (0,))[-1]
                and m.shape(node.outputs[0]) == m.shape(x)):
            a.bias[src] = b
            a.bias_adds.add(i)


def _attention_cores(m: Parsed, a: Analysis) -> None:
    prod, cons = _producers(m, a)

    def activation_inputs(node):
        return [t for t in node.inputs if t and t not in a.const]

    for s, node in enumerate(m.nodes):
        if node.op_type != "Softmax" or s in a.folded:
            continue
        chain, causal, t = [s], False, node.inputs[0]
        while t in prod:  # back to QK^T through scale, mask and views
            p = m.nodes[prod[t]]
            if p.op_type == "MatMul" and len(activation_inputs(p)) == 2:
                chain.insert(0, prod[t])
                break
            if (p.op_type not in SCORE_OPS | VIEWS or len(activation_inputs(p)) != 1
                    or len(cons.get(t, [])) != 1):
                chain = []
                break
            causal |= any(_is_mask(m, a, x) for x in p.inputs if x in a.const)
            chain.insert(0, prod[t])
            t = activation_inputs(p)[0]
        if len(chain) < 2 or m.nodes[chain[0]].op_type != "MatMul":
            continue
        t = node.outputs[0]
        while True:  # forward to AV through dropout, casts and views
            users = cons.get(t, [])
            if len(users) != 1 or users[0] < 0:
                break
            u = m.nodes[users[0]]
            if u.op_type == "MatMul" and u.inputs[0] == t and len(activation_inputs(u)) == 2:
                core = len({c for c, _ in a.cores.values()})
                for j in chain:
                    a.cores[j] = (core, "")
                a.cores[chain[0]] = (core, "scores")
                a.cores[users[0]] = (core, "context")
                if causal:
                    a.causal_cores.add(core)
                break
            if u.op_type not in {"Dropout", "Cast"} | VIEWS:
                break
            chain.append(users[0])
            t = u.outputs[0]
