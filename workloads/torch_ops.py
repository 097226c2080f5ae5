"""ATen operators -> hwsim ops: the counting half of the PyTorch importer (torch-free).

Counts follow ``workloads.layers`` and ``torch.utils.flop_counter``: a matmul or convolution is
2 x its multiply-accumulates (bias not counted); attention is its two products. An op reads
each input once (a view reads at most the tensor it views, a broadcast only what is stored) and
writes its outputs once. Views (view, reshape of a viewable tensor, permute, transpose, expand,
slice, select, split, ...) are no op: the consumer reads the producer's tensor. A parameter
is owned (counted in ``params``) by the first op that reads it.

What PyTorch does and hwsim copies, for the derived backward: an input that does not require
grad (data, a mask built from constants, a frozen layer's output) gets no gradient; a weight
that is a trainable parameter gets a weight gradient (fn in ``simulator.training.backward.WEIGHTED``).
"""
from __future__ import annotations

from simulator.errors import WorkloadError
from simulator.graph.opgraph import OpGraph
from simulator.graph.op import Block, DType, Op, OpKind
from workloads.layers import STATS_DTYPE, VECTOR_FLOPS_PER_ELEMENT
from workloads import torch_tables as t
from workloads.torch_trace import Meta, Ref, Trace
from workloads.torch_rnn import RNNS, rnn
from workloads.torch_tensor import ATTENTIONS, CONVS, MATMULS, attention, conv, matmul
from workloads.torch_values import Src, packet, tensors

UNKNOWN = "unknown:"
#: Operator name (``packet``) -> handler(emitter, node, args, kwargs) -> the node's value.
HANDLERS = {name: handler for names, handler in (
    (t.POINTWISE, t.pointwise), (t.VIEWS, t.view), (t.MAYBE_VIEWS, t.maybe_view),
    (t.COPIES, t.copy), (t.GATHERS, t.gather), (t.CASTS, t.cast), (t.CREATION, t.creation),
    (t.REDUCTIONS, t.reduction), (t.LOSSES, t.loss), (t.SOFTMAXES, t.softmax),
    (t.NORMS, t.norm), (t.POOLS, t.pool), (t.DROPOUTS, t.dropout),
    ({"embedding"}, t.embedding), ({"embedding_bag", "_embedding_bag"}, t.embedding_bag),
    ({"getitem"}, t.getitem), (MATMULS, matmul), (CONVS, conv), (ATTENTIONS, attention),
    (RNNS, rnn)) for name in names}


class Emitter:
    """Walks a trace and adds ops to ``graph``; ``env`` maps node names to their values."""

    def __init__(self, graph: OpGraph, dtype: DType, param_dtype: DType) -> None:
        self.graph, self.dtype, self.param_dtype = graph, dtype, param_dtype
        self.env: dict[str, object] = {}
        self.owned: set[str] = set()
        self.node = None  # the node being emitted: name, layer

    # -- sizes ------------------------------------------------------------------------------------
    def nbytes(self, meta: Meta | None, param: bool = False, numel: int | None = None) -> int:
        if meta is None:
            return 0
        n = meta.numel if numel is None else numel
        if not meta.floating:
            return n * meta.itemsize
        return n * (self.param_dtype.bytes if param else self.dtype.bytes)

    def read_bytes(self, src: Src) -> int:
        """A view reads at most what it views; a broadcast reads only what is stored."""
        return self.nbytes(src.meta, src.param is not None, min(src.meta.numel, src.base))

    # -- emitting ---------------------------------------------------------------------------------
    def default_name(self) -> str:
        """The node's name, after the module that made the call (``blocks.0.attn:linear_2``)."""
        node = self.node
        return f"{node.path}:{node.name}" if node.path else node.name

    def emit(self, kind: OpKind, fn: str, reads: list[Src], outs: list, *, name: str = "",
             edges: list[Src] | None = None, flops: int = 0, bytes_read: int | None = None,
             grad: bool | None = None, **fields) -> tuple[str, bool]:
        """Add one op reading ``reads`` and writing ``outs`` (Metas); returns (name, grad).

        ``edges``: the inputs that are graph edges (default: every read with a producer);
        ``grad``: whether the output requires grad (default: an input does and it is float).
        """
        node = self.node
        name = name or self.default_name()
        edges = [s for s in reads if s.op] if edges is None else edges
        producers = list(dict.fromkeys(s.op for s in edges if s.op))
        no_grad = tuple(p for p in producers if not any(s.grad for s in edges if s.op == p))
        params = tensors = 0
        for s in reads:
            if s.param is not None and s.param not in self.owned:
                self.owned.add(s.param)
                params += s.base
                tensors += 1
        out_bytes = sum(self.nbytes(m) for m in outs if isinstance(m, Meta))
        if bytes_read is None:
            bytes_read = sum(self.read_bytes(s) for s in reads)
        mask = fields.get("mask_bytes", 0)
        op = Op(name=name, kind=kind, dtype=self.dtype, param_dtype=self.param_dtype,
                flops=int(flops), bytes_read=int(bytes_read), bytes_written=out_bytes + mask,
                out_bytes=out_bytes, params=params, param_tensors=tensors, layer=node.layer,
                fn=fn, no_grad=no_grad, **fields)
        self.graph.add(op, producers)
        if grad is None:
            grad = any(s.grad for s in reads) and any(
                isinstance(m, Meta) and m.floating for m in outs)
        return name, grad

    def outputs(self, name: str, grad: bool, out) -> object:
        """The value(s) a node yields: a Src per tensor output of op ``name``."""
        if isinstance(out, Meta):
            return Src(name, grad and out.floating, out, out.numel)
        if isinstance(out, tuple):
            return tuple(self.outputs(name, grad, m) for m in out)
        return None

    def alias(self, src: Src, name: str) -> Src:
        """A distinct, free operand for a tensor op reading one producer twice (q and k split
        from one projection): the backward then gives each operand its own gradient."""
        op = Op(name=name, kind=OpKind.COPY, dtype=self.dtype, layer=self.node.layer, fn="view")
        self.graph.add(op, [src.op])
        return Src(name, src.grad, src.meta, src.base)

    def unknown(self, node, args, kwargs) -> object:
        """An operator hwsim does not know: costed by its tensor traffic, never dropped."""
        reads = list(tensors((args, kwargs)))
        outs = _flat_metas(node.out)
        name, grad = self.emit(OpKind.ELEMENTWISE, UNKNOWN + node.target, reads, outs,
                               saves=("inputs",))
        return self.outputs(name, grad, node.out)


def build_graph(trace: Trace, dtype: DType, param_dtype: DType, title: str) -> OpGraph:
    graph = OpGraph(title)
    em = Emitter(graph, dtype, param_dtype)
    for p in trace.placeholders:
        em.env[p.name] = Src(None, p.grad, p.meta, p.meta.numel,
                             p.target if p.kind == "param" else None)
    for node in trace.nodes:
        em.node = node
        args, kwargs = _resolve(em.env, node.args), _resolve(em.env, node.kwargs)
        target = packet(node.target)
        if target in t.SKIP or (node.out is None and not list(tensors((args, kwargs)))):
            continue
        em.env[node.name] = _handle(em, HANDLERS.get(target), node, args, kwargs)
    _loss(em, trace)
    return graph


def _handle(em: Emitter, handler, node, args, kwargs):
    """The node's handler, or, for an overload whose arguments it does not understand, the
    unknown-operator fallback (the node's ops so far are taken back first)."""
    if handler is None:
        return em.unknown(node, args, kwargs)
    count, owned = len(em.graph), set(em.owned)
    try:
        return handler(em, node, args, kwargs)
    except (IndexError, KeyError, TypeError, AttributeError, ValueError, StopIteration,
            ZeroDivisionError):
        em.graph.nx.remove_nodes_from(list(em.graph.nx.nodes)[count:])
        em.owned = owned
        return em.unknown(node, args, kwargs)


def _resolve(env: dict, a):
    if isinstance(a, Ref):
        return env.get(a.name)
    if isinstance(a, tuple):
        return tuple(_resolve(env, x) for x in a)
    if isinstance(a, dict):
        return {k: _resolve(env, v) for k, v in a.items()}
    return a


def _flat_metas(out) -> list:
    if isinstance(out, Meta):
        return [out]
    if isinstance(out, tuple):
        return [m for x in out for m in _flat_metas(x)]
    return []


def _loss(em: Emitter, trace: Trace) -> None:
    """The model's own scalar output is its loss; else cross-entropy on logits, or a mean."""
    outs = [s for s in tensors(_resolve(em.env, trace.outputs)) if s.meta.floating and s.op]
    if not outs:
        raise WorkloadError(f"{trace.name}: the model returns no floating-point tensor computed "
                            "from its inputs, so there is nothing to train")
    out = outs[0]
    graph, last = em.graph, em.graph.op(out.op)
    if out.meta.numel == 1 and last.kind not in (OpKind.MATMUL, OpKind.CONV, OpKind.ATTENTION):
        graph.nx.nodes[out.op]["op"] = last.evolve(kind=OpKind.LOSS, block=Block.HEAD)
        return
    shape = out.meta.shape
    numel, es = out.meta.numel, em.dtype.bytes
    if len(shape) in (2, 3):  # logits (N, C) or (N, T, C)
        rows, fn = numel // shape[-1], "cross_entropy"
        read, written = numel * es + rows * DType.INT64.bytes, numel * es + STATS_DTYPE.bytes
        saves = ("inputs",)
    else:
        fn, read, written, saves = "mean", numel * es, STATS_DTYPE.bytes, ()
    name = "loss" if "loss" not in graph else f"loss#{len(graph)}"
    op = Op(name=name, kind=OpKind.LOSS, dtype=em.dtype, fn=fn, block=Block.HEAD,
            flops=VECTOR_FLOPS_PER_ELEMENT[fn] * numel, bytes_read=read, bytes_written=written,
            out_bytes=STATS_DTYPE.bytes, saves=saves)
    graph.add(op, [out.op])
