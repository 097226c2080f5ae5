"""Data parallelism and ZeRO: the collectives among the dp replicas, placed in a training graph.

Where frameworks put them (Rajbhandari et al. 2020, sec. 7; Li et al. 2020, "PyTorch
Distributed", VLDB, sec. 3.2.3; Zhao et al. 2023, "PyTorch FSDP", sec. 3.3-3.4):

- gradients are reduced per layer (DDP's buckets, one per layer here) as soon as the layer's
  weight gradients are written, on the data-parallel communicator's own stream, so that the
  reduction overlaps the rest of the backward; the updates wait for the last reduction, as
  DDP's backward returns only when every bucket is reduced. Without overlap
  (``ParallelPlan.overlap_grad_reduce`` False, Megatron-LM before 2023) the first reduction
  waits for the whole backward and the others follow it on the in-order stream.
  Stage 0 all-reduces; stages 1-3 reduce-scatter, and each replica updates its 1/dp shard;
- stages 1-2 then all-gather the updated weights (after the update: not overlapped);
- stage 3 / FSDP full shard all-gathers each layer's weights before its forward and again
  before its backward, prefetching one layer ahead: the gather of a layer waits only for the
  previous layer's first op (forward order, then backward order).

The reductions of stages 0-2 belong to the step, not to each micro-batch
(``Phase.COMMUNICATION``: gradient accumulation reduces once, after the last micro-batch, as
DDP's ``no_sync`` does); ZeRO-3's reduce-scatters and gathers belong to every micro-batch
(DeepSpeed's stage 3 reduces each micro-batch's gradients into the partition it keeps; FSDP
without ``no_sync`` the same), since no replica holds a whole unsharded gradient to
accumulate in. The gathered weights live in a buffer the size of two
layers (the one in use and the one prefetched), counted by ``simulator.api`` as workspace.
"""
from __future__ import annotations

from simulator.graph.collective import Axis, collective
from simulator.graph.op import Op, OpKind, Phase, Task
from simulator.graph.opgraph import OpGraph
from simulator.plan.step import Plan


def add_data_parallel(step: OpGraph, plan: Plan, dp: int, zero: int, local: int = 0,
                      overlap: bool = True) -> OpGraph:
    """Add the data-parallel collectives of ``dp`` replicas under ZeRO stage ``zero`` to
    ``step`` (changed in place and returned); nothing when dp = 1. ``overlap`` False: the
    reductions start only when the whole backward is done (Megatron-LM before
    ``--overlap-grad-reduce``)."""
    if dp == 1:
        return step
    backward = [] if overlap else _backward_ends(step)
    formats = plan.formats
    updates = _updates(step)
    # issue the reductions in the order the backward makes gradients ready (last layer
    # first), as DDP does: a stream runs its ops in issue order
    last = None
    for name in reversed(updates):
        update = step.op(name)
        params = update.params   # the layer's parameters it updates (``Task.UPDATE``)
        fn = "all_reduce" if zero == 0 else "reduce_scatter"
        grads = params * formats.gradient.bytes
        # ZeRO-3 reduce-scatters every micro-batch (it keeps no unsharded gradient to
        # accumulate in); stages 0-2 once per step, after the last micro-batch
        sync = collective(f"dp_{fn}:L{update.layer}", fn, grads,
                          grads if zero == 0 else grads // dp, 0, dp, Axis.DATA, update,
                          phase=Phase.BACKWARD if zero == 3 else Phase.COMMUNICATION,
                          local=local).evolve(task=Task.GRAD_SUM)
        _before(step, name, sync)
        if last is None:  # the first issued: after the whole backward, when not overlapped
            for src in backward:
                step.add_edge(src, sync.name, nbytes=0)
        last = sync.name
        if zero:
            _shard_update(step, name, update, dp)
        if zero in (1, 2):
            weights = params * formats.weight.bytes
            gather = collective(f"dp_all_gather:L{update.layer}", "all_gather", weights // dp,
                                weights, 0, dp, Axis.DATA, update, phase=Phase.COMMUNICATION,
                                local=local)
            step.add(gather, [name])
    # backward() returns only when every bucket is reduced (DDP's finalize_backward): no
    # update starts before the last reduction, issued last on the in-order stream, ends
    for name in updates:
        step.add_edge(last, name, nbytes=0)
    if zero == 3:
        _gather_weights(step, plan, dp, local)
    return step


def add_tied_embedding_reduce(step: OpGraph, plan: Plan, local: int = 0) -> OpGraph:
    """Pipeline stages holding a copy of tied word embeddings (the first stage's embedding,
    the last stage's head: forward ops with the fact ``tied``, the shared weight's elements,
    ``simulator.parallel.pipeline``) all-reduce its gradient between the two after the data-parallel
    reduction and before the layer's update (Megatron-LM's ``_allreduce_embedding_grads``,
    run in ``finalize_model_grads`` after the data-parallel synchronisation; in 2021 after
    ``allreduce_gradients``), on the pipeline communicator, once per step. ``local``: 2 when
    the two stages share a node, else 1. ``step`` is changed in place and returned."""
    ops = [op for _, op in step.nx.nodes(data="op")]   # no order needed: no topological sort
    update = {op.layer: op.name for op in ops if op.task is Task.UPDATE}
    for op in ops:
        elements = dict(op.extra).get("tied", 0) if op.phase is Phase.FORWARD else 0
        if not elements:
            continue
        nbytes = elements * plan.formats.gradient.bytes
        name = update[op.layer]
        reduce = collective(f"embedding_all_reduce:{op.name}", "all_reduce", nbytes, nbytes, 0,
                            2, Axis.PIPELINE, step.op(name), phase=Phase.COMMUNICATION,
                            local=local).evolve(task=Task.GRAD_SUM)
        _before(step, name, reduce)
    return step


def add_replicated_grad_reduce(step: OpGraph, plan: Plan) -> OpGraph:
    """Weights replicated over tensor-parallel ranks (a KV head held by tp / kv_heads ranks:
    forward ops with the facts ``replicas`` and ``replicated``, ``simulator.parallel.tensor``)
    get partial gradients on each: one all-reduce per layer sums them over the ranks that share
    them, on the tensor-parallel communicator, once per step before the layer's update, as
    Megatron-LM sums the sequence-parallel norms' replicated gradients
    (``_allreduce_layernorm_grads`` in ``finalize_model_grads``). ``step`` is changed in place
    and returned."""
    ops = [op for _, op in step.nx.nodes(data="op")]   # no order needed: no topological sort
    update = {op.layer: op.name for op in ops if op.task is Task.UPDATE}
    shared: dict[int, tuple[int, int, Op]] = {}   # layer -> (elements, ranks, an op of it)
    for op in ops:
        facts = dict(op.extra) if op.phase is Phase.FORWARD else {}
        if facts.get("replicas", 1) > 1:
            elements, _, _ = shared.get(op.layer, (0, 0, op))
            shared[op.layer] = (elements + facts["replicated"], facts["replicas"], op)
    for layer, (elements, ranks, op) in sorted(shared.items()):
        nbytes = elements * plan.formats.gradient.bytes
        reduce = collective(f"tp_replica_all_reduce:L{layer}", "all_reduce", nbytes, nbytes, 0,
                            ranks, Axis.TENSOR, step.op(update[layer]),
                            phase=Phase.COMMUNICATION).evolve(task=Task.GRAD_SUM)
        _before(step, update[layer], reduce)
    return step


def add_grad_accumulation(step: OpGraph, plan: Plan) -> OpGraph:
    """Unfused gradient accumulation (``ParallelPlan.fused_grad_accumulation`` False): every
    micro-batch adds each layer's new weight gradients into the gradient buffer, an elementwise
    pass reading both and writing the sum. Each add is issued on the compute stream as soon as
    its layer's weight gradients are written, inside the backward, as Megatron-LM's gradient
    hook and PyTorch's AccumulateGrad run it; the layer's data-parallel reduction (added after
    this) and its update wait for it. ``step`` is changed in place and returned."""
    grad_bytes = plan.formats.gradient.bytes
    updates = _updates(step)
    for name in reversed(updates):
        update = step.op(name)
        params = update.params   # the layer's parameters it updates (``Task.UPDATE``)
        add = Op(name=f"grad_accumulate:weights:L{update.layer}", kind=OpKind.ELEMENTWISE,
                 phase=Phase.BACKWARD, dtype=plan.formats.gradient, fn="add", flops=params,
                 bytes_read=2 * params * grad_bytes, bytes_written=params * grad_bytes,
                 layer=update.layer, block=update.block, task=Task.GRAD_SUM)
        step.issue_early(_before(step, name, add))
    return step


def _updates(step: OpGraph) -> list[str]:
    """The optimizer's update ops in step order, one per layer (``training._optimizer``)."""
    return [n for n in step.names() if step.op(n).task is Task.UPDATE]


def _before(step: OpGraph, name: str, op: Op) -> str:
    """Put ``op`` between the update ``name`` and the ops it read: ``op`` reads them, the
    update waits for ``op``. Returns ``op``'s name."""
    producers = step.inputs(name)
    step.add(op, producers)
    for src in producers:
        step.nx.remove_edge(src, name)
    step.add_edge(op.name, name, nbytes=0)
    return op.name


def _backward_ends(step: OpGraph) -> list[str]:
    """The backward's last ops: those no other backward (or recomputed) op reads; once they
    are done the whole backward is."""
    phases = (Phase.BACKWARD, Phase.RECOMPUTE)
    return [n for n in step.names() if step.op(n).phase in phases
            and not any(step.op(c).phase in phases for c in step.consumers(n))]


def _shard_update(step: OpGraph, name: str, update: Op, dp: int) -> None:
    """Each replica updates its 1/dp shard of the layer's parameters."""
    step.nx.nodes[name]["op"] = update.evolve(flops=update.flops // dp,
                                              bytes_read=update.bytes_read // dp,
                                              bytes_written=update.bytes_written // dp)


def _gather_weights(step: OpGraph, plan: Plan, dp: int, local: int) -> None:
    """ZeRO-3: all-gather each layer's weights before its forward and before its backward."""
    names = step.names()
    params: dict[int, int] = {}
    for n in names:
        op = step.op(n)
        if op.phase is Phase.FORWARD and op.params:
            params[op.layer] = params.get(op.layer, 0) + op.params
    weight_bytes = plan.formats.weight.bytes
    last_forward = [n for n in names if step.op(n).phase is Phase.FORWARD][-1]
    for phase in (Phase.FORWARD, Phase.BACKWARD):
        users: dict[int, list[str]] = {}   # layer -> ops that read its weights, in order
        for n in names:
            op = step.op(n)
            owner = op if phase is Phase.FORWARD else _forward_op(step, op)
            ran = op.phase is phase or (phase is Phase.BACKWARD and op.phase is Phase.RECOMPUTE)
            if ran and owner is not None and owner.params:
                users.setdefault(op.layer, []).append(n)
        previous = None if phase is Phase.FORWARD else last_forward
        for layer, readers in users.items():   # in the order the pass reaches the layers
            nbytes = params.get(layer, 0) * weight_bytes
            gather = collective(f"zero3_all_gather_{phase.name.lower()}:L{layer}",
                                "all_gather", nbytes // dp, nbytes, 0, dp, Axis.DATA,
                                step.op(readers[0]), phase=phase, local=local)
            step.add(gather, [previous] if previous else [])
            for reader in readers:
                step.add_edge(gather.name, reader, nbytes=0)
            previous = readers[0]


def _forward_op(step: OpGraph, op: Op) -> Op | None:
    if op.forward_of and op.forward_of in step:
        return step.op(op.forward_of)
    return None


__all__ = ["add_data_parallel", "add_grad_accumulation", "add_replicated_grad_reduce",
           "add_tied_embedding_reduce"]
