"""Graph rewrites a plan asks for: fused attention and elementwise fusion.

Both take an ``OpGraph`` and return a new one; the input is never changed.

- ``fuse_attention``: each layer's attention core (QK^T, softmax, dropout, AV) becomes one
  ``ATTENTION`` op, FlashAttention-style (Dao et al. 2022): it reads Q, K, V, writes the output
  and keeps only the fp32 log-sum-exp per row for the backward; no s x s tensor reaches memory,
  the dropout mask is regenerated from the RNG state.
- ``math_attention``: the opposite, for a fused attention op that has dropout on a backend whose
  fused kernel takes none: PyTorch's CPU build, whose flash kernel refuses ``dropout_p`` > 0, so
  ``scaled_dot_product_attention`` runs its math path there (``MATH_PATH``).
- ``fuse_elementwise``: a vector op whose single input comes from an op that nobody else reads
  is folded into that producer, as a compiler (torch.compile / XLA) does: the intermediate
  tensor is never written or read back, and one launch overhead is saved.
"""
from __future__ import annotations

from simulator.graph.lower import READS_OUTPUT
from simulator.graph.op import Block, DType, Op, OpKind
from simulator.graph.opgraph import OpGraph

FUSIBLE = frozenset({OpKind.ELEMENTWISE, OpKind.NORM, OpKind.SOFTMAX})
LSE_DTYPE = DType.FP32  # FlashAttention keeps the row log-sum-exp in fp32


def fuse_attention(forward: OpGraph) -> OpGraph:
    """Replace every layer's attention core by one fused ``ATTENTION`` op."""
    cores: dict[int, list[str]] = {}
    for name in forward.names():
        op = forward.op(name)
        if op.block is Block.ATTN_CORE:
            cores.setdefault(op.layer, []).append(name)
    out = OpGraph(forward.name)
    replaced: dict[str, str] = {}  # last core op -> fused op
    first_of = {names[0]: names for names in cores.values()}
    skip = {n for names in cores.values() for n in names}
    for name in forward.names():
        if name in first_of:
            fused = _fused_core(forward, first_of[name])
            members = set(first_of[name])
            inputs = [s for n in first_of[name] for s in forward.inputs(n) if s not in members]
            out.add(fused, [replaced.get(s, s) for s in dict.fromkeys(inputs)])
            replaced[first_of[name][-1]] = fused.name
        if name in skip:
            continue
        out.add(forward.op(name), [replaced.get(s, s) for s in forward.inputs(name)])
    return out


def _fused_core(forward: OpGraph, names: list[str]) -> Op:
    ops = [forward.op(n) for n in names]
    scores, context = ops[0], ops[-1]
    # a dropout on the probabilities: the fused kernel's own (math_attention reads it)
    dropout = (("dropout", 1),) if any(op.fn == "dropout" for op in ops) else ()
    members = set(names)
    reads = sum(forward.op(s).out_bytes for n in names for s in forward.inputs(n)
                if s not in members)
    rows = scores.batch * scores.m
    return Op(name=scores.name.replace("scores", "attention"), kind=OpKind.ATTENTION,
              dtype=scores.dtype, fn="flash_attention",
              flops=sum(op.flops for op in ops if op.kind is OpKind.MATMUL),
              vector_flops=sum(op.flops for op in ops if op.kind is not OpKind.MATMUL),
              bytes_read=reads, bytes_written=context.out_bytes, out_bytes=context.out_bytes,
              layer=scores.layer, block=Block.ATTN_CORE, m=scores.m, n=scores.n, k=scores.k,
              batch=scores.batch, extra=scores.extra + dropout, saves=("inputs", "output"),
              stats_bytes=rows * LSE_DTYPE.bytes)


def fuse_elementwise(graph: OpGraph) -> OpGraph:
    """Fold each fusible vector op into its producer when it is the producer's only reader in
    the same phase. If later phases read the producer's output too (it is saved for the
    backward), the fused kernel still writes it, but the vector op no longer reads it back."""
    merged: dict[str, str] = {}   # original name -> name of the op it now lives in
    fused: dict[str, Op] = {}
    order = graph.names()
    for name in order:
        op = graph.op(name)
        inputs = graph.inputs(name)
        eager = dict(op.extra).get("eager")   # run by eager code outside the compiled region
        if op.kind in FUSIBLE and len(inputs) == 1 and not eager:
            readers = [graph.op(c).phase for c in graph.consumers(inputs[0])]
            host = merged.get(inputs[0], inputs[0])
            base = fused.get(host, graph.op(host))
            if (readers.count(op.phase) == 1 and base.phase == op.phase
                    and not dict(base.extra).get("eager")
                    and base.kind not in (OpKind.LOSS, OpKind.OPTIMIZER,
                                                  OpKind.COLLECTIVE)):
                fused[host] = _absorb(base, op, keep_output=len(readers) > 1)
                merged[name] = host
                continue
        fused[name] = op
    return rebuild_merged(graph, merged, fused, order)


def rebuild_merged(graph: OpGraph, merged: dict[str, str], ops: dict[str, Op],
                   order: list[str] | None = None) -> OpGraph:
    """``graph`` with each op of ``merged`` (name -> the op it now lives in, possibly itself
    merged further) gone and its edges moved to its host; an op's record is ``ops[name]``
    where given, else ``graph``'s. A merged edge reads the output if any of the edges it
    stands for did. ``order``: ``graph.names()`` where the caller has it.

    An op that stays keeps its ``OpGraph.issue_early`` mark: the passes after a rewrite
    (gradient accumulation, the data-parallel collectives) add early ops of their own, placed
    among the marked ones by it. A merged op's mark goes with it, never to a host that lacks
    one (that would issue the host's own work early): ``fuse_elementwise``'s merged op reads
    only its host, so it ran just after it, where the fused kernel runs."""
    out = OpGraph(graph.name)
    for name in graph.names() if order is None else order:
        if name in merged:
            continue
        out.add(ops.get(name, graph.op(name)), [])
        if graph.nx.nodes[name].get("early"):
            out.issue_early(name)
    for src, dst, data in graph.nx.edges(data=True):
        a, b = _host(merged, src), _host(merged, dst)
        if a == b:
            continue
        reads = data.get(READS_OUTPUT, True)
        if out.nx.has_edge(a, b):
            reads = reads or out.nx.edges[a, b].get(READS_OUTPUT, True)
        out.add_edge(a, b, data["index"], data["bytes"])
        out.nx.edges[a, b][READS_OUTPUT] = reads
    return out


def _host(merged: dict[str, str], name: str) -> str:
    while name in merged:
        name = merged[name]
    return name


def _absorb(host: Op, op: Op, keep_output: bool) -> Op:
    """``host`` followed by ``op`` in one kernel: ``op`` reads ``host``'s output on chip.

    ``keep_output``: others read ``host``'s output later, so it is still written and stays
    allocated with ``op``'s (the fused op's ``out_bytes`` holds both).
    """
    kept = host.out_bytes if keep_output else 0
    return host.evolve(
        vector_flops=host.vector_flops + op.flops + op.vector_flops,
        bytes_read=host.bytes_read + op.bytes_read - host.out_bytes,
        bytes_written=host.bytes_written - host.out_bytes + kept + op.bytes_written,
        out_bytes=op.out_bytes + kept, mask_bytes=host.mask_bytes + op.mask_bytes,
        stats_bytes=host.stats_bytes + op.stats_bytes,
        params=host.params + op.params,
        saves=tuple(dict.fromkeys(host.saves + op.saves)))


#: What PyTorch 2.13's ``scaled_dot_product_attention`` runs where no fused kernel takes the
#: call: ``_scaled_dot_product_attention_math`` (aten/src/ATen/native/transformers/
#: attention.cpp) scales q and k by the square root of the scale each, multiplies them
#: (``bmm``), adds the mask (a causal one built as a tril mask), takes ``_safe_softmax``
#: (softmax, then ``isneginf``, ``all`` over each row and ``where``, which zeroes rows that
#: are all -inf: aten/src/ATen/native/SoftMax.cpp), drops out (``at::dropout``: ``bernoulli_``,
#: ``div_``, ``mul``, the kernels the ``dropout`` function's calibration times) and
#: multiplies by v (``bmm``); autograd derives the backward (four ``bmm``, the dropout's
#: ``mul``, ``where``, ``_softmax_backward_data`` and the scales' ``mul``). The CPU backend
#: takes it for every call with ``dropout_p`` > 0: its flash kernel refuses dropout
#: (sdp_utils_cpp.cpp, ``use_flash_attention_cpp``'s ``check_for_dropout``). Checked with
#: torch.profiler on torch 2.13.0+cpu (2026-12-06; tests/test_math_attention.py): a call
#: with ``dropout_p=0.1`` runs 6 ``bmm``, 6 ``mul``, ``bernoulli_``, ``_softmax``,
#: ``isneginf``, ``all``, ``where`` and ``_softmax_backward_data`` and no flash kernel.
MATH_PATH = ("scale_q", "scale_k", "scores", "mask", "softmax", "isneginf", "all", "where",
             "dropout", "context")


def math_attention(forward: OpGraph) -> OpGraph:
    """Each fused ``ATTENTION`` op with dropout (``Op.extra`` "dropout") replaced by the math
    path's kernels (``MATH_PATH``), as separate ops in the attention core: the s x s scores,
    probabilities and dropout mask reach memory and the backward keeps them, each op priced by
    its own kind and function figures (a CPU's calibrated ``dropout``, ``softmax``, its GEMM
    rate), none at the fused kernel's. Ops without dropout are kept."""
    from workloads.layers import Builder

    class Named(Builder):   # the math path's ops are named after their fused op
        def _name(self, base: str) -> str:
            return base

    out = OpGraph(forward.name)
    replaced: dict[str, str] = {}
    for name in forward.names():
        op = forward.op(name)
        inputs = [replaced.get(s, s) for s in forward.inputs(name)]
        facts = dict(op.extra)
        if op.kind is not OpKind.ATTENTION or not facts.get("dropout"):
            out.add(op, inputs)
            continue
        replaced[name] = _math_path(Named(out, dtype=op.dtype, param_dtype=op.param_dtype,
                                            layer=op.layer, block=Block.ATTN_CORE),
                                    op, inputs, bool(facts.get("causal")))
    return out


def _math_path(b, op: Op, inputs: list[str], causal: bool) -> str:
    """The math path's forward ops for fused attention ``op``; returns its output's name."""
    # q, k and v (one producer each, or fewer where they are views of one projection), then
    # the mask's producer where there is one
    masked = bool(dict(op.extra).get("mask")) and len(inputs) > 1
    sources, masks = (inputs[:-1], inputs[-1:]) if masked else (inputs, [])
    q, k, v = (sources[min(i, len(sources) - 1)] for i in range(3))
    heads, length, keys, width = op.batch, op.m, op.n, op.k
    v_width = max(op.flops // max(2 * heads * length * keys, 1) - width, 1)
    scores_n, rows = heads * length * keys, heads * length
    es = b.es
    base = op.name

    def name(part: str) -> str:
        return f"{base}.{part}"

    qs = b.elementwise("mul", (q,), heads * length * width, base=name("scale_q"))
    ks = b.elementwise("mul", (k,), heads * keys * width, base=name("scale_k"))
    s = b.matmul(name("scores"), qs, ks, heads, length, keys, width)
    if masks or causal:   # the additive mask (a causal one: PyTorch builds it as tril)
        s = b._add(name("mask"), (s, *masks), kind=OpKind.ELEMENTWISE, fn="add",
                   flops=scores_n, bytes_read=2 * scores_n * es, bytes_written=scores_n * es,
                   out_bytes=scores_n * es, no_grad=tuple(masks))
    p = b.softmax(s, rows, keys, base=name("softmax"))
    # _safe_softmax: rows that are all -inf (a fully masked query) give 0, not NaN
    neg = b._add(name("isneginf"), (s,), kind=OpKind.ELEMENTWISE, fn="isneginf",
                 flops=scores_n, bytes_read=scores_n * es, bytes_written=scores_n,
                 out_bytes=scores_n, no_grad=(s,))
    full = b._add(name("all"), (neg,), kind=OpKind.REDUCTION, fn="all", flops=scores_n,
                  bytes_read=scores_n, bytes_written=rows, out_bytes=rows, no_grad=(neg,))
    p = b._add(name("where"), (p, full), kind=OpKind.ELEMENTWISE, fn="where", flops=scores_n,
               bytes_read=scores_n * es + rows, bytes_written=scores_n * es,
               out_bytes=scores_n * es, no_grad=(full,))
    d = b.dropout(p, scores_n, base=name("dropout"))
    return b.matmul(name("context"), d, v, heads, length, v_width, keys)
