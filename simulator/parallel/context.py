"""Context parallelism: what one of ``cp`` ranks runs when each holds ``seq_len / cp`` tokens of
every sequence (Megatron-LM ``--context-parallel-size``; Llama 3 405B's long-context training,
Dubey et al. 2024, sec. 3.3.2).

Every op outside attention works token by token, so a rank's forward graph is the graph of a
model of ``seq_len / cp`` tokens (``simulator.parallel.rank.stage_forward`` builds it so); two
things differ, and this module makes them:

- ``widen_attention``: a rank's queries attend to the keys of the whole sequence, so each fused
  attention op has ``cp`` times the keys (``n``), FLOPs and key/value reads of the graph it was
  built in. With the causal mask Megatron-LM gives each rank chunks i and 2cp - 1 - i of
  2cp, so every rank does 1/cp of the causal work, as the block skipping of
  ``simulator.cost.efficiency.executed_fraction`` counts it for ``seq_len / cp`` query rows. The
  learned position table (``Role.POSITION_EMBEDDING``) stays whole.
- ``gather_keys_values``: before each attention, the ranks all-gather its keys and values
  (``Axis.CONTEXT``), the all-gather method of Llama 3 ("we first all-gather the K and V
  tensors, and then compute attention output for the local Q tensor chunk", sec. 3.3.2); its
  adjoint, a reduce-scatter of their gradients, comes from ``simulator.training.backward``.
  With ``ring`` (``ParallelPlan.cp_comm`` p2p or torch-ring) the gathers, their reduce-scatters
  and the attention ops carry the facts ``ring`` (1 TransformerEngine's p2p ring, Megatron-LM's
  default; 2 PyTorch's context_parallel) and ``ring_steps`` = cp, and
  ``simulator.cost.ring`` prices the attention as the ring's cp chunked kernel calls with the
  exchange beside them; with ``ring`` 0 (allgather) the gather is not hidden.

Only fused attention splits so (Megatron-LM runs context parallelism with its fused attention
kernels only): a graph with a materialised attention core is a ``PlanError``.
"""
from __future__ import annotations

from simulator.errors import PlanError
from simulator.graph.collective import Axis, collective
from simulator.graph.op import Block, OpKind, Role
from simulator.graph.opgraph import OpGraph


def widen_attention(forward: OpGraph, cp: int) -> OpGraph:
    """The forward of one of ``cp`` ranks from the graph of a model of ``seq_len / cp`` tokens
    (``forward`` itself if cp = 1): attention over all the sequence's keys."""
    if cp == 1:
        return forward
    out = OpGraph(forward.name)
    for name in forward.names():
        op, inputs = forward.op(name), forward.inputs(name)
        if op.block is Block.ATTN_CORE and op.kind is not OpKind.ATTENTION:
            raise PlanError(f"cp = {cp}: context parallelism needs fused attention (attention "
                            "= fused, --attention fused), as Megatron-LM runs it")
        if op.kind is OpKind.ATTENTION:
            query, *keys_values = (forward.op(s).out_bytes for s in inputs)
            op = op.evolve(n=op.n * cp, flops=op.flops * cp, vector_flops=op.vector_flops * cp,
                           bytes_read=query + cp * sum(keys_values))
        elif op.role is Role.POSITION_EMBEDDING:
            op = op.evolve(k=op.k * cp, params=op.params * cp)
        out.add(op, inputs)
    return out


def gather_keys_values(ranked: OpGraph, cp: int, local: int = 0, ring: int = 0,
                       expand: int = 1) -> OpGraph:
    """Insert the all-gather of each attention's keys and values over the ``cp`` ranks
    (``local`` of them per node, 0: as many as fit) into a rank's graph (after the
    tensor-parallel split: the heads it holds); ``ring`` (``RING_CODES``) marks them and the
    attention as a ring of ``cp`` steps (``simulator.cost.ring``). ``expand``: the keys and
    values go into the attention at ``expand`` times their heads (``expanded_heads``), so the
    gathers move, and the attention reads, that many times their bytes."""
    if cp == 1:
        return ranked
    facts = {"ring": ring, "ring_steps": cp} if ring else {}
    out = OpGraph(ranked.name)
    gathered: dict[str, str] = {}
    for name in ranked.names():
        op, inputs = ranked.op(name), ranked.inputs(name)
        if op.kind is OpKind.ATTENTION:
            if ring:
                op = op.evolve(extra=(*op.extra, *facts.items()))
            if expand > 1:
                query = ranked.op(inputs[0]).out_bytes
                op = op.evolve(bytes_read=query + expand * (op.bytes_read - query))
            reads = inputs[:1]
            for src in inputs[1:]:
                if src not in gathered:
                    size = ranked.op(src).out_bytes * expand
                    gather = collective(f"{src}.cp_all_gather", "all_gather", size, size * cp,
                                        size * cp, cp, Axis.CONTEXT, op, local=local, **facts)
                    gathered[src] = out.add(gather, [src])
                reads.append(gathered[src])
            inputs = reads
        out.add(op, inputs)
    return out


def expanded_heads(heads: int, kv_heads: int, tp: int) -> int:
    """How many times its key/value heads a rank's attention takes them at in PyTorch's
    context_parallel: its query heads over its key/value heads (1 without grouped-query
    attention). The ring's SDPA calls take keys and values at the query heads: torchtitan's
    Llama expands them with ``repeat_kv`` before ``F.scaled_dot_product_attention``
    (pytorch/torchtitan 9dec370 torchtitan/models/llama/model.py lines 201-202), as PyTorch's
    SDPA asks of grouped-query inputs unless ``enable_gqa`` is passed, which the ring's ops
    (``_scaled_dot_product_ring_flash_attention``, pytorch/pytorch 0123248a
    torch/distributed/tensor/experimental/_attention.py) take no argument for. After the
    tensor-parallel split a rank holds heads / tp query heads and kv_heads / tp key/value
    heads, at least one (``simulator.parallel.tensor``: replicated when kv_heads < tp)."""
    query = max(heads // max(tp, 1), 1)
    return max(query // max(kv_heads // max(tp, 1), 1), 1)


#: ``ParallelPlan.cp_comm`` values and the ``ring`` fact each gives (0: no ring).
RING_CODES = {"allgather": 0, "p2p": 1, "torch-ring": 2}
#: The ``ring`` fact of torch-ring in a block under torch.compile (``Plan.fusion`` compiled):
#: traced into the graph (``simulator.cost.ring``).
TORCH_RING_TRACED = 3


__all__ = ["RING_CODES", "TORCH_RING_TRACED", "expanded_heads", "gather_keys_values",
           "widen_attention"]
