"""Column-parallel projections that read one input run as one GEMM (``Plan.projections``).

A model builder writes a transformer's projections as their checkpoints name them: q, k and v
apart, and a gated MLP's gate and up apart, each a linear reading the layer's normed input.
That is how Hugging Face's ``LlamaAttention`` / ``LlamaMLP`` and torchtitan's ``Attention``
(``wq``, ``wk``, ``wv``) / ``FeedForward`` (``w1``, ``w3``) run them: a GEMM each, and autograd
sums the three (two) input gradients in a kernel of its own (``grad_accumulate``).

Megatron-Core runs each group as one linear with the outputs concatenated
(``Plan.projections = fused``): ``SelfAttention``'s ``linear_qkv`` has output size
``query_projection_size + 2 * kv_projection_size`` and ``get_query_key_value_tensors`` splits
its output into q, k and v (megatron/core/transformer/attention.py), and the MLP's
``linear_fc1`` has ``ffn_hidden_size * 2`` outputs when ``gated_linear_unit`` is set, the
activation reading the two halves (megatron/core/transformer/mlp.py; NVIDIA/Megatron-LM
d98e8a64dd). With TransformerEngine these are ``TELayerNormColumnParallelLinear``: one fp8
(or 16-bit) GEMM of n = the group's outputs / tp per rank, one input gradient GEMM of depth
that n (the sum over the group is the GEMM's own k loop), one weight gradient GEMM, and under
sequence parallelism one all-gather of the input and one reduce-scatter of its gradient
beside them (TransformerEngine's userbuffers pair them with that one GEMM).

``fuse_projections`` rewrites a rank's forward graph so: the linears of a layer's block
(attention or MLP) with ``Role.COLUMN`` that read the same tensor become one linear (FLOPs,
weights and outputs summed, the input read once), which its readers read in place of each
member through a view of its slice (``SLICE``: no kernel, no bytes, ``simulator.cost.host``);
it carries the fact ``slices``, so that ``simulator.training.backward`` takes its output
gradient as the views' gradients side by side (slices of one tensor), with no sum. LoRA's
adapters and frozen / trainable mixes are left apart; a group of one is left as it is.
A multi-head latent attention's projections are not column-parallel pairs of one input and
are not touched.
"""
from __future__ import annotations

from simulator.graph.op import Block, Op, OpKind, Role
from simulator.graph.opgraph import OpGraph

#: The fact a fused projection carries: how many linears it stands for (its output gradient
#: is their slices, ``simulator.training.backward``).
SLICES = "slices"
#: The ``fn`` of a view of one member's slice of a fused projection's output: a copy op of no
#: bytes that launches no kernel (``simulator.cost.host``) and passes its gradient through
#: (``simulator.training.backward.PASSTHROUGH``).
SLICE = "slice"
_LORA = ("lora", "lora_a", "lora_b")


def _fusable(op: Op) -> bool:
    facts = dict(op.extra)
    return (op.kind is OpKind.MATMUL and op.fn == "linear" and op.role is Role.COLUMN
            and op.block in (Block.ATTN, Block.MLP) and op.batch == 1
            and not any(key in facts for key in _LORA))


def groups(forward: OpGraph) -> list[list[str]]:
    """The groups of two or more linears that ``fuse_projections`` joins, in graph order."""
    found: dict[tuple, list[str]] = {}
    for name in forward.nx.nodes:
        op = forward.op(name)
        inputs = forward.inputs(name)
        # one tensor read; any other edge orders it only (0 bytes: a shared expert waiting for
        # its layer's combine all-to-all, simulator.parallel.expert), which the fused op keeps
        if not _fusable(op) or not inputs or any(
                forward.nx.edges[src, name].get("bytes") != 0 for src in inputs[1:]):
            continue
        key = (inputs[0], op.layer, op.block, op.dtype, op.frozen, op.m, op.k)
        found.setdefault(key, []).append(name)
    return [names for names in found.values() if len(names) > 1]


def merged(ops: list[Op], name: str) -> Op:
    """One linear standing for ``ops`` (same input, rows and depth): outputs, weights, FLOPs
    summed, the input read once."""
    first = ops[0]
    input_bytes = first.m * first.k * first.dtype.bytes
    bias = any(op.tensors > 1 for op in ops)
    facts = dict(first.extra)
    facts[SLICES] = len(ops)
    return first.evolve(
        name=name, flops=sum(op.flops for op in ops), n=sum(op.n for op in ops),
        bytes_read=sum(op.bytes_read for op in ops) - (len(ops) - 1) * input_bytes,
        bytes_written=sum(op.bytes_written for op in ops),
        out_bytes=sum(op.out_bytes for op in ops), params=sum(op.params for op in ops),
        param_tensors=1 + int(bias), extra=tuple(sorted(facts.items())))


def fused_name(names: list[str]) -> str:
    """``L5.q_proj+k_proj+v_proj``: the members' names after their common prefix."""
    cut = max((i + 1 for i, c in enumerate(names[0]) if c == "."
               and all(n.startswith(names[0][:i + 1]) for n in names)), default=0)
    return names[0][:cut] + "+".join(n[cut:] for n in names)


def fuse_projections(forward: OpGraph) -> OpGraph:
    """``forward`` with each group of ``groups`` run as one linear (a new graph, insertion
    order kept, the fused linear in its first member's place); ``forward`` itself when there
    is none."""
    found = groups(forward)
    if not found:
        return forward
    member = {name: names for names in found for name in names}
    fused = {name: fused_name(names) for names in found for name in names}
    out = OpGraph(forward.name)
    for name in forward.nx.nodes:   # the ops first, in order (an edge may come from a later one)
        if name not in member:
            out.add(forward.op(name))
            out.nx.nodes[name].update(forward.nx.nodes[name])   # its marks (issue_early)
        elif name == member[name][0]:
            names = member[name]
            out.add(merged([forward.op(n) for n in names], fused[name]))
            for n in names:   # each member's output: a view of its slice
                op = forward.op(n)
                out.add(Op(name=n, kind=OpKind.COPY, fn=SLICE, dtype=op.dtype,
                           out_bytes=op.out_bytes, layer=op.layer, block=op.block,
                           role=op.role))
                out.add_edge(fused[name], n)
    for src, dst, edge in forward.nx.edges(data=True):   # a member's input: the fused op's
        if not out.nx.has_edge(src, fused.get(dst, dst)):
            out.nx.add_edge(src, fused.get(dst, dst), **edge)
    return out


__all__ = ["SLICE", "SLICES", "fuse_projections", "fused_name", "groups", "merged"]
