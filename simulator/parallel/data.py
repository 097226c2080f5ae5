"""Data parallelism and ZeRO: the collectives among the dp replicas, placed in a training graph.

Where frameworks put them (Rajbhandari et al. 2020, sec. 7; Li et al. 2020, "PyTorch
Distributed", VLDB, sec. 3.2.3; Zhao et al. 2023, "PyTorch FSDP", sec. 3.3-3.4):

- gradients are reduced in buckets of whole layers (PyTorch DDP's, Megatron-LM's DDP's or
  DeepSpeed's by their sizes; one per layer for FSDP and Megatron-LM's distributed optimizer),
  each as soon as its layers' weight gradients are written, on the data-parallel
  communicator's own stream, so that the reduction overlaps the rest of the backward; the
  updates wait for the last reduction, as DDP's backward returns only when every bucket is
  reduced. Without overlap
  (``ParallelPlan.overlap_grad_reduce`` False, Megatron-LM before 2023) the first reduction
  waits for the whole backward and the others follow it on the in-order stream.
  Stage 0 all-reduces; stages 1-3 reduce-scatter, and each replica updates its 1/dp shard;
- stages 1-2 then all-gather the updated weights (after the update: not overlapped), in the
  weight format, but the fp8 primary weights (``Plan.fp8_params``, ``simulator.training.fp8``)
  at 1 byte per element, as the distributed optimizer's uint8 parameter buffer holds them;
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

from dataclasses import dataclass

from simulator.graph.collective import Axis, collective
from simulator.graph.op import DType, Op, OpKind, Phase, Task
from simulator.graph.opgraph import OpGraph
from simulator.parallel.checks import add_checks
from simulator.plan.parallel import (
    DEEPSPEED_PERSISTENCE,
    ParallelPlan,
    PipelineEngine,
    Sharding,
)
from simulator.plan.step import Plan, Precision
from simulator.training.fp8 import fp8_param_elements


def add_data_parallel(step: OpGraph, plan: Plan, dp: int, zero: int, local: int = 0,
                      overlap: bool = True, parallel: ParallelPlan | None = None) -> OpGraph:
    """Add the data-parallel collectives of ``dp`` replicas under ZeRO stage ``zero`` to
    ``step`` (changed in place and returned); nothing when dp = 1. ``overlap`` False: the
    reductions start only when the whole backward is done (Megatron-LM before
    ``--overlap-grad-reduce``). ``parallel``: how the library runs it (``sharding``, FSDP's
    prefetch, DeepSpeed's buckets, hybrid ``shard_group``; the defaults when None)."""
    if dp == 1:
        return step
    parallel = parallel or ParallelPlan()
    # hybrid sharding (FSDP HYBRID_SHARD; DeepSpeed MiCS, mics_shard_size; not ZeRO++'s hpZ,
    # whose secondary partition serves only the backward): ZeRO over ``shards`` ranks (a
    # node's, when local), the gradients' shards then all-reduced over the ``dp // shards``
    # copies, one rank per group on each (Zhao et al. 2023, sec. 3.2.2)
    shards = min(parallel.shard_group or dp, dp) if zero else dp
    copies = dp // shards
    shard_local = local if shards >= local or not local else shards
    copy_local = max(local // shards, 1) if local else 0
    backward = [] if overlap else _backward_ends(step)
    formats = plan.formats
    updates = _updates(step)
    fp8 = fp8_param_elements(step, plan)   # layer -> its weight elements held in fp8
    fn = "all_reduce" if zero == 0 else "reduce_scatter"
    deepspeed = parallel.sharding in (Sharding.DEEPSPEED, Sharding.DEEPSPEED_2021)
    # issue the reductions in the order the backward makes gradients ready (last layer
    # first), as DDP does: a stream runs its ops in issue order. FSDP reduce-scatters each
    # unit's gradients in its post-backward hook; DeepSpeed fills buckets of
    # ``reduce_bucket_size`` elements and reduces each when full (stage_1_and_2.py and
    # stage3.py, reduce_independent_p_g_buckets_and_remove_grads), the last when the
    # backward ends.
    # PyTorch DDP (stage 0, ``Sharding.FSDP``) fills buckets of ``ddp_bucket_mb`` MiB of
    # gradients, the first (the last layers') of DDP_FIRST_BUCKET_BYTES, in reverse
    # parameter order, and all-reduces each when all its gradients are ready (reducer.cpp,
    # compute_bucket_assignment_by_size: a bucket closes once its size reaches the limit);
    # Megatron-LM's DDP (stage 0, ``Sharding.MEGATRON``) in buckets of ``megatron_bucket``
    # parameters, closed the same way. Here a whole layer's update at a time, never split;
    # Megatron-LM's distributed optimizer (stages 1-2) reduces per layer
    ddp = zero == 0 and parallel.sharding is Sharding.FSDP
    megatron = zero == 0 and parallel.sharding is Sharding.MEGATRON
    whole = zero == 3 and parallel.sharding is Sharding.FSDP and parallel.fsdp_whole_model
    by_engine = engine_reduces(parallel, zero, plan)
    buckets: list[list[str]] = []
    filled = 0
    for name in reversed(updates):
        if ddp:
            limit = DDP_FIRST_BUCKET_BYTES if len(buckets) == 1 else parallel.ddp_bucket_mb * 2**20
            full = filled >= limit
        elif megatron:
            full = overlap and filled >= megatron_bucket(dp)
        elif whole:   # FSDP's one top-level unit: all its gradients in one reduce-scatter
            full = False
        else:
            full = not deepspeed or filled >= (
                MEMORY_OPT_ALLREDUCE_SIZE if by_engine else parallel.zero_reduce_bucket)
        if not buckets or full:
            buckets.append([])
            filled = 0
        buckets[-1].append(name)
        filled += step.op(name).params * (formats.gradient.bytes if ddp else 1)
    last = None
    reductions: dict[int, str] = {}   # layer -> the reduction of its gradients
    ahead: list[Op] = []   # ZeRO 1-2's gathers issued by the next step's forward
    for bucket in buckets:
        first = step.op(bucket[0])
        params = sum(step.op(name).params for name in bucket)   # ``Task.UPDATE``'s params
        grads = params * formats.gradient.bytes
        # ZeRO-3 reduce-scatters every micro-batch (it keeps no unsharded gradient to
        # accumulate in); stages 0-2 once per step, after the last micro-batch
        phase = Phase.BACKWARD if zero == 3 else Phase.COMMUNICATION
        tag = f"L{first.layer}" if len(bucket) == 1 else f"L{first.layer}+{len(bucket) - 1}"
        legacy = zero == 3 and parallel.sharding is Sharding.DEEPSPEED_2021
        flat = (legacy and not parallel.zero_contiguous_gradients) or by_engine
        kind = "all_reduce" if flat else fn   # buffered_(reduce_)fallback all-reduces
        sync = collective(f"dp_{kind}:{tag}", kind, grads,
                          grads if zero == 0 or flat else grads // shards, 0, shards,
                          Axis.DATA, first, phase=phase,
                          local=shard_local).evolve(task=Task.GRAD_SUM)
        head = sync.name   # the bucket's first op on the data-parallel stream
        chain = []         # the ops before ``sync`` in it
        tail = None        # the op after it (DeepSpeed 2021's copy back)
        if flat:
            # flattened, all-reduced, scaled and copied back (allreduce_and_copy: v0.3.13's
            # stage3.py with contiguous_gradients off divides before, the engine's own at ZeRO
            # 0-1 after: ``flat_copy``)
            before = grads if by_engine else 2 * grads
            head = _before_all(step, bucket, flat_copy(f"{sync.name}:flatten", first, plan,
                                                       before, phase))
            chain = [head]
        elif legacy:
            # v0.3.13 with contiguous_gradients: one list reduce-scatter per parameter, its
            # inputs copied in first
            tensors = sum(step.op(name).tensors for name in bucket)
            head = _before_all(step, bucket, nccl_copy_in(sync.name, tag, first, plan, grads,
                                                          shards, tensors, phase))
            pieces, sync = per_parameter(step, bucket, sync, tensors)
            chain = [head] + pieces
        _before_all(step, bucket, sync)
        if flat:
            tail = _before_all(step, bucket, flat_copy(f"{sync.name}:unflatten", first, plan,
                                                       3 * grads - before, phase))
        if overlap:   # issued by the hook that sees the bucket's last gradient
            for name in chain:
                step.issue_early(name)
            step.issue_early(sync.name)
            if tail:
                step.issue_early(tail)
        elif last is not None:   # after the backward, one after the other
            step.add_edge(last, head, nbytes=0)
        if copies > 1:   # hybrid: each shard all-reduced over the copies
            shard = grads // shards
            across = collective(f"dp_all_reduce_copies:{tag}", "all_reduce", shard, shard, 0,
                                copies, Axis.DATA, first, phase=phase,
                                local=copy_local).evolve(task=Task.GRAD_SUM)
            _before_all(step, bucket, across)
            step.add_edge(sync.name, across.name, nbytes=0)
            sync_end = across.name
        else:
            sync_end = tail or sync.name
        if last is None:  # the first issued: after the whole backward, when not overlapped
            for src in backward:
                step.add_edge(src, head, nbytes=0)
        last = sync_end
        for name in bucket:
            reductions[step.op(name).layer] = sync.name
            update = step.op(name)
            if zero:
                _shard_update(step, name, update, shards)
            if zero in (1, 2):
                weights = (update.params * formats.weight.bytes
                           - fp8.get(update.layer, 0) * (formats.weight.bytes - DType.FP8.bytes))
                gather = collective(f"dp_all_gather:L{update.layer}", "all_gather",
                                    weights // shards, weights, 0, shards, Axis.DATA, update,
                                    phase=Phase.COMMUNICATION, local=shard_local)
                if parallel.overlap_param_gather:
                    ahead.append(gather.evolve(extra=(*gather.extra, ("ahead", 1))))
                else:
                    step.add(gather, [name])
    # backward() returns only when every bucket is reduced (DDP's finalize_backward): no
    # update starts before the last reduction, issued last on the in-order stream, ends
    for name in updates:
        step.add_edge(last, name, nbytes=0)
    if ahead:
        _gather_ahead(step, ahead, {step.op(name).layer: name for name in updates})
    if zero == 3:
        # reductions deferred to the end of the backward (overlap False) hold no gather back
        _gather_weights(step, plan, shards, shard_local, parallel, reductions if overlap else {})
    # DeepSpeed 2021's stage 1 optimizer walks every gradient twice before its update
    return add_checks(step, plan, parallel)


def _gather_ahead(step: OpGraph, gathers: list[Op], updates: dict[int, str]) -> None:
    """``ParallelPlan.overlap_param_gather`` (Megatron-LM --overlap-param-gather): each layer's
    all-gather of its updated weights runs before the layer's first forward op that reads
    them, in the forward's layer order, one after the other on the data-parallel stream, all
    issued at the start (megatron/core/distributed/param_and_grad_buffer.py: the module's
    forward pre-hook waits for its bucket's gather, then dispatches the next bucket's; the
    host runs ahead of the device, so each is queued behind the previous one). The step is
    periodic: the gathers of the previous step's update, overlapping this step's first
    forward. They stay ``Phase.COMMUNICATION`` (once a step, not per micro-batch): what they
    delay the forward by is paid once (``simulator.schedule.stage``: the first m - 1
    micro-batches are timed without them). Per layer, not per bucket (Megatron-Core's buckets
    hold max(40M, 1M x dp) parameters); a layer with no forward op reading weights keeps its
    gather after its update."""
    readers: dict[int, list[str]] = {}   # layer -> its forward ops owning weights, in order
    for name in step.names():
        op = step.op(name)
        if op.phase is Phase.FORWARD and op.params:
            readers.setdefault(op.layer, []).append(name)
    by_layer = {gather.layer: gather for gather in gathers}
    previous = None
    for layer, names in readers.items():
        gather = by_layer.pop(layer, None)
        if gather is None:
            continue
        step.add(gather, [previous] if previous else [])
        if previous:
            step.issue_early(gather.name)
        for name in names:
            step.add_edge(gather.name, name, nbytes=0)
        previous = gather.name
    for layer, gather in by_layer.items():   # no forward reader: after the update
        step.add(gather, [updates[layer]])


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
        frozen = op.frozen   # a fine-tune's frozen embedding: no gradient to sum
        elements = dict(op.extra).get("tied", 0) if op.phase is Phase.FORWARD and not frozen \
            else 0
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
    shared: dict[int, tuple[int, int]] = {}   # layer -> (elements, ranks)
    for op in ops:
        facts = dict(op.extra) if op.phase is Phase.FORWARD else {}
        if facts.get("replicas", 1) > 1:
            elements, _ = shared.get(op.layer, (0, 0))
            shared[op.layer] = (elements + facts["replicated"], facts["replicas"])
    for layer, (elements, ranks) in sorted(shared.items()):
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
    """The optimizer's update ops in step order, one per layer (``training._optimizer``):
    by layer (the root's, -1, first), whatever order the graph's other ops leave them in
    (ops added around the attention, ``simulator.training.qkv``, reordered them, and with
    them the gradient accumulations and reductions issued from this order)."""
    updates = [n for n in step.names() if step.op(n).task is Task.UPDATE]
    return sorted(updates, key=lambda n: step.op(n).layer)


def _before_all(step: OpGraph, names: list[str], op: Op) -> str:
    """``_before`` for several updates: ``op`` reads what each of them read, each waits for
    it. Returns ``op``'s name."""
    if len(names) == 1:
        return _before(step, names[0], op)
    producers = list(dict.fromkeys(src for name in names for src in step.inputs(name)))
    step.add(op, producers)
    for name in names:
        for src in step.inputs(name):
            if src in producers and src != op.name:
                step.nx.remove_edge(src, name)
        step.add_edge(op.name, name, nbytes=0)
    return op.name


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
    """Each replica updates its 1/dp shard of the layer's parameters (``params`` too: the
    elements its update covers, which ``simulator.cost.host`` counts launches by)."""
    step.nx.nodes[name]["op"] = update.evolve(flops=update.flops // dp,
                                              params=-(-update.params // dp),
                                              bytes_read=update.bytes_read // dp,
                                              bytes_written=update.bytes_written // dp)


#: PyTorch DDP's first bucket (torch/csrc/distributed/c10d/reducer.hpp, v2.5.0:
#: kDefaultFirstBucketBytes = 1024 * 1024; the others kDefaultBucketBytesCap, 25 MiB, the
#: ``bucket_cap_mb`` default: ``ParallelPlan.ddp_bucket_mb``).
DDP_FIRST_BUCKET_BYTES = 2**20
#: Megatron-Core's DDP bucket (megatron/core/distributed/distributed_data_parallel.py,
#: DistributedDataParallel.__init__: bucket_size = max(40000000, 1000000 x the data-parallel
#: size) parameters, ``megatron_bucket``).
MEGATRON_BUCKET_PARAMS = 40_000_000
MEGATRON_BUCKET_PER_REPLICA = 1_000_000


def megatron_bucket(replicas: int) -> float:
    """Parameters per gradient bucket of Megatron-LM's DDP over ``replicas`` data-parallel
    ranks (x context-parallel: the group it reduces over), when it overlaps the reduction
    with the backward (``--overlap-grad-reduce``). Without overlap Megatron-Core sets
    bucket_size None, one bucket of every gradient, as Megatron-LM of 2021 all-reduced its
    contiguous gradient buffer in one call after the backward (megatron/model/distributed.py,
    ``allreduce_gradients``): ``add_data_parallel`` then makes one bucket. Not modelled: no
    buckets on pipeline stages after the first and on model chunks after the first
    (``disable_bucketing``)."""
    return max(MEGATRON_BUCKET_PARAMS, MEGATRON_BUCKET_PER_REPLICA * replicas)
#: DeepSpeed's stage3_max_reuse_distance default (parameters; deepspeed/runtime/zero/config.py):
#: a module's gathered parameters are kept when it is used again within this many.
DEEPSPEED_MAX_REUSE = 1_000_000_000
#: The root unit of FSDP (the parameters outside the transformer blocks), ``Op.layer``.
ROOT = -1


@dataclass
class Use:
    """One unit's weights read by consecutive ops of a pass (``_uses``)."""

    unit: object          # FSDP: the layer; DeepSpeed: the forward op (module) owning them
    params: int
    readers: list[str]    # the ops that read them, in issue order


def _gather_weights(step: OpGraph, plan: Plan, shards: int, local: int,
                    parallel: ParallelPlan | None = None,
                    reductions: dict[int, str] | None = None) -> None:
    """ZeRO-3: all-gather the weights of each unit before the ops that read them, in the
    forward and again in the backward, issued as the implementation issues them (on the
    data-parallel communicator's stream, in issue order):

    - FSDP (Zhao et al. 2023, sec. 3.3-3.4; torch/distributed/fsdp): a unit per transformer
      block (the usual per-block ``auto_wrap_policy``) plus the root (embeddings, final norm,
      head), gathered once for the forward and kept through the backward. The gather of unit
      j is issued when unit j - ``fsdp_prefetch`` starts (BackwardPrefetch.BACKWARD_PRE: one
      ahead, before the current unit's reduce-scatter on the stream); with
      ``limit_all_gathers`` no earlier than unit j - 2 has ended (the rate limiter: "GPU memory
      usage from only two consecutive FSDP instances"); with prefetch 0 (backward_prefetch
      None, which changes the backward only) a backward gather is issued when unit j - 1 has
      ended, behind its reduce-scatter: every backward gather exposed, the forward's as with 1;
      with ``fsdp_backward_post`` (BACKWARD_POST) a backward gather is issued when unit j - 1
      has ended, ahead of its reduce-scatter (the post-backward hook prefetches, then
      reduces): exposed too, but no reduce-scatter before it.
      ``fsdp_reshard_after_forward`` False (SHARD_GRAD_OP) keeps the forward's gathers for the
      backward.
    - DeepSpeed (deepspeed/runtime/zero/partitioned_param_coordinator.py, fetch_sub_module;
      ``deepspeed-2021``: v0.3.13's stage3.py, synchronising the device in every fetch):
      a unit per module holding at least ``stage3_param_persistence_threshold`` parameters
      (smaller ones persist, never partitioned). When a module starts, its own gather (if not
      prefetched) is issued and waited for, then the next modules' are prefetched while the
      prefetched parameters stay under min(``stage3_prefetch_bucket_size``,
      ``stage3_max_live_parameters`` - parameters live): a module as large as the live budget
      is never prefetched, its gather issued at its own pre-hook, once the previous module
      is reached (``_deepspeed_gathers``), as a prefetch one module ahead is: less prefetch
      is never faster. After its use a module is
      released unless it is used again within ``stage3_max_reuse_distance`` parameters (the
      recompute then the backward of one module keep it).

    ``reductions``: layer -> the reduce-scatter of its gradients (FSDP prefetch 0 issues the
    next gather behind it, BACKWARD_POST ahead of it)."""
    parallel = parallel or ParallelPlan()
    deepspeed = parallel.sharding in (Sharding.DEEPSPEED, Sharding.DEEPSPEED_2021)
    names = step.names()
    whole = not deepspeed and parallel.fsdp_whole_model
    forward_uses = _uses(step, names, (Phase.FORWARD,), deepspeed, whole)
    backward_uses = _uses(step, names, (Phase.BACKWARD, Phase.RECOMPUTE), deepspeed, whole)
    ahead_of: dict[int, str] = {}   # gather -> the reduction issued after it (BACKWARD_POST)
    if deepspeed:
        gathers = _deepspeed_gathers(forward_uses + backward_uses, parallel,
                                     parallel.sharding is Sharding.DEEPSPEED_2021)
    else:
        gathers = _fsdp_gathers(forward_uses, backward_uses, parallel, reductions or {},
                                ahead_of)
    weight_bytes = plan.formats.weight.bytes
    uses = forward_uses + backward_uses
    # FSDP2 gathers into one buffer per unit and copies the parameters out of it on the compute
    # stream before the unit runs (foreach_all_gather_copy_out: split_with_sizes_copy, a read
    # and a write of the unit's weights); its output is the gathered weights memory counts
    copy_out = not deepspeed and parallel.fsdp_version == 2
    synchronous = parallel.sharding is Sharding.DEEPSPEED_2021
    # the backward's gathers come after the forward is done with the weights they replace
    forward_end = [forward_uses[-1].readers[-1]] if forward_uses else []
    previous = None
    for index, deps in gathers:
        use = uses[index]
        first = step.op(use.readers[0])
        nbytes = use.params * weight_bytes
        phase = Phase.FORWARD if index < len(forward_uses) else Phase.BACKWARD
        if phase is Phase.BACKWARD:
            deps = deps + forward_end
        gather = collective(f"zero3_all_gather_{phase.name.lower()}:{index}:L{first.layer}",
                            "all_gather", nbytes // shards, nbytes, 0, shards, Axis.DATA,
                            first, phase=phase, local=local)
        # in issue order on the communicator's stream (after the previous gather), each
        # issued by the hook of the op it follows, not when the stream reaches it
        inputs = list(dict.fromkeys(deps or ([previous] if previous else [])))
        if synchronous:   # DeepSpeed 2021: the gather's buffer zero-filled first
            inputs = [step.add(zero_fill(gather.name, index, first, plan, nbytes, phase),
                               inputs)]
        # what a gather follows it only waits for (a hook's position, the stream's order): it
        # reads none of those outputs, so it keeps none alive (the forward's last output, the
        # logits, would otherwise live through the whole backward)
        step.add(gather, [])
        for position, src in enumerate(inputs):
            step.add_edge(src, gather.name, position, nbytes=0)
        if previous or deps:
            step.issue_early(gather.name)
        ready = gather.name
        if synchronous:   # DeepSpeed 2021: the list all-gather's copies out, one per rank
            ready = step.add(nccl_copy_out(gather.name, index, first, plan, nbytes, shards,
                                           phase), [gather.name])
        if copy_out:   # FSDP2: each parameter copied out of the gathered buffer
            ready = step.add(Op(name=f"fsdp2_copy_out:{index}:L{first.layer}",
                                kind=OpKind.ELEMENTWISE, phase=phase, dtype=plan.formats.weight,
                                fn="copy", bytes_read=nbytes, bytes_written=nbytes,
                                layer=first.layer, block=first.block), [gather.name])
        for reader in use.readers:
            step.add_edge(ready, reader, nbytes=0)
        if index in ahead_of:   # the same hook's reduce-scatter follows it on the stream
            step.add_edge(gather.name, ahead_of[index], nbytes=0)
        previous = gather.name
    if ahead_of and previous:
        # BACKWARD_POST: the reductions no gather precedes (the units the backward ends with)
        # follow the last gather too, so the reductions keep their issue order on the stream
        # (the data-parallel stream runs its ops in graph order, simulator.graph.opgraph.names)
        for name in set((reductions or {}).values()) - set(ahead_of.values()):
            step.add_edge(previous, name, nbytes=0)


#: ``Op.fn`` of the copies out of a list all-gather (``nccl_copy_out``); the one name
#: ``simulator.cost.host`` (their launches, the synchronisation before the gather) and
#: ``simulator.schedule.stage.streams`` (their stream) look for.
NCCL_COPY_OUT = "nccl_copy_out"


def nccl_copy_out(gather: str, index: int, first: Op, plan: Plan, nbytes: int, ranks: int,
                  phase: Phase) -> Op:
    """The copies after a list all-gather of ``nbytes`` over ``ranks``: DeepSpeed v0.3.13's
    ``partition_parameters._allgather_param`` all-gathers into a list of ``ranks`` views of
    its buffer, and PyTorch's ProcessGroupNCCL (``allgather``, torch 1.8) gathers into a
    flat buffer of its own and copies it out to each output tensor on the NCCL stream:
    ``ranks`` copies (``tensors``; launches, ``simulator.cost.host``), reading and writing
    the parameter once in all. Placed on the data-parallel stream
    (``simulator.schedule.stage.streams``); the host synchronises before the gather
    (``simulator.cost.host.syncs``: ``torch.cuda.synchronize()`` after the buffer's
    ``torch.zeros``)."""
    return Op(name=f"{NCCL_COPY_OUT}:{index}:L{first.layer}:{gather}", kind=OpKind.ELEMENTWISE,
              phase=phase, dtype=plan.formats.weight, fn=NCCL_COPY_OUT, bytes_read=nbytes,
              bytes_written=nbytes, param_tensors=ranks, layer=first.layer, block=first.block)


def per_parameter(step: OpGraph, bucket: list[str], sync: Op,
                  tensors: int) -> tuple[list[str], Op]:
    """DeepSpeed v0.3.13's reduce-scatter of a bucket, one call per parameter tensor
    (``partition_parameters._reduce_scatter_gradients``): ``tensors`` reduce-scatters one
    after the other on the stream, the bucket's ``sync`` bytes split evenly among them
    (hwsim's update holds a layer's parameter tensors together, not each one's size: the
    bandwidth time is the bucket's either way, and each call pays the collective's latency).
    The first ``tensors - 1`` are put before the updates of ``bucket`` (``_before_all``, in
    order); returns their names and the last one, ``sync`` with the remaining share, for the
    caller to put after them."""
    if tensors < 2:
        return [], sync
    total, written = sync.bytes_read, sync.bytes_written
    share, out = total // tensors, written // tensors
    names = [_before_all(step, bucket, sync.evolve(name=f"{sync.name}:param{i}",
                                                   bytes_read=share, bytes_written=out))
             for i in range(tensors - 1)]
    rest = sync.evolve(bytes_read=total - share * (tensors - 1),
                       bytes_written=written - out * (tensors - 1))
    return names, rest


#: Elements in each of the DeepSpeed engine's own all-reduce buckets
#: (``buffered_allreduce_fallback(elements_per_buffer=MEMORY_OPT_ALLREDUCE_SIZE)``:
#: DeepSpeed v0.3.13 and DeeperSpeed eb7f5cff engine.py l.51, pipe/engine.py l.241), not
#: ZeRO's ``reduce_bucket_size``.
MEMORY_OPT_ALLREDUCE_SIZE = 500_000_000


def engine_reduces(parallel: ParallelPlan, zero: int, plan: Plan | None = None) -> bool:
    """DeepSpeed's engine all-reduces the gradients itself after the backward, flat, in
    buckets of ``MEMORY_OPT_ALLREDUCE_SIZE`` elements (``buffered_allreduce_fallback``): the
    plain engine's ``backward`` -> ``allreduce_gradients`` at ZeRO 0, the pipeline engine's
    ``ReduceGrads`` (one stage too: GPT-NeoX runs it at pipe-parallel-size 1) at ZeRO 0, and
    before v0.4.0 at ZeRO 1 as well (pipe/engine.py ``_exec_reduce_grads``, v0.3.13-v0.3.16 and
    EleutherAI/DeeperSpeed eb7f5cff; from v0.4.0 ``allreduce_gradients`` leaves ZeRO 1 to its
    optimizer).

    The pipeline engine under bf16 with fp32 gradients (``plan``) at ZeRO 1 too: that is
    DeepSpeed's ``BF16_Optimizer`` (deepspeed/runtime/bf16_optimizer.py, from microsoft/
    DeepSpeed 56c522386 "bf16+pipeline parallelism", 2022-04-19, the ``olruwase/bf16-updates``
    branch BLOOM-176B trained with; today's engine.py ``_do_optimizer_sanity_check`` returns
    BFLOAT16 for bf16 with fp32 accumulation at ZeRO stage 1 as well), which shards the fp32
    master weights and Adam's states over the data-parallel ranks (hwsim's ZeRO 1: sharded
    update, bf16 weights all-gathered after it, ``all_gather_dp_groups``) but whose
    ``ReduceGrads`` all-reduces every fp32 gradient, not a reduce-scatter (pipe/engine.py
    ``_exec_reduce_grads`` -> ``_bf16_reduce_grads`` -> ``buffered_allreduce_fallback(grads=
    self.optimizer.get_grads_for_reduction())`` at 56c522386; ``using_bf16_optimizer`` ->
    ``_bf16_reduce_grads`` at 38327e07f, 2025)."""
    if parallel.sharding not in (Sharding.DEEPSPEED, Sharding.DEEPSPEED_2021):
        return False
    pipeline = parallel.pipeline_engine is PipelineEngine.DEEPSPEED
    if zero == 1 and pipeline and plan is not None and parallel.sharding is Sharding.DEEPSPEED:
        return plan.precision is Precision.BF16 and plan.fp32_grads
    return zero == 0 or (zero == 1 and parallel.sharding is Sharding.DEEPSPEED_2021
                         and pipeline)


#: ``Op.fn`` of DeepSpeed 2021's passes over a gradient bucket around its all-reduce
#: (``flat_copy``), which ``simulator.schedule.stage.streams`` places on the data-parallel
#: stream.
FLAT_COPY = "zero_flat_copy"


def flat_copy(name: str, first: Op, plan: Plan, nbytes: int, phase: Phase) -> Op:
    """DeepSpeed's passes over a bucket of gradients around its all-reduce: v0.3.13's ZeRO 3
    when ``contiguous_gradients`` is off, its default (``stage3.py`` ``reduce_ipg_grads`` ->
    ``buffered_reduce_fallback`` -> ``allreduce_and_copy``, on its reduction stream:
    ``allreduce_bucket`` sets ``rank = None``, an all-reduce, not a reduce), and the engine's
    own ``buffered_allreduce_fallback`` that the pipeline engine's ``ReduceGrads`` runs, and
    the plain engine's backward at ZeRO 0 (``engine_reduces``). Each pass reads and writes the
    bucket: stage 3 flattens (``_flatten_dense_tensors``, a copy), divides by the ranks
    (``div_``), all-reduces, copies back into each gradient (``unflatten``, ``buf.copy_``): 2
    passes before, 1 after; the engine's ``allreduce_bucket`` (v0.3.13, DeeperSpeed eb7f5cff
    engine.py: ``postscale_gradients``, the default) flattens, all-reduces, then scales by 1 /
    ranks (``mul_``) and copies back: 1 before, 2 after. ``nbytes``: those passes' bytes, on
    the data-parallel stream."""
    return Op(name=name, kind=OpKind.ELEMENTWISE, phase=phase, dtype=plan.formats.gradient,
              fn=FLAT_COPY, bytes_read=nbytes, bytes_written=nbytes, layer=first.layer,
              block=first.block)


#: ``Op.fn`` of the copies into a list reduce-scatter's flat input (``nccl_copy_in``), which
#: ``simulator.cost.host`` (their launches) and ``simulator.schedule.stage.streams`` (their
#: stream) look for.
NCCL_COPY_IN = "nccl_copy_in"


def nccl_copy_in(reduction: str, tag: str, first: Op, plan: Plan, nbytes: int, ranks: int,
                 tensors: int, phase: Phase) -> Op:
    """The copies before DeepSpeed v0.3.13's gradient reduce-scatters: ``stage3.py``
    ``average_tensor`` hands each bucket's parameters to ``partition_parameters.
    _reduce_scatter_gradients``, which reduce-scatters every parameter's gradient on its own,
    a ``torch.distributed.reduce_scatter`` of a list of ``ranks`` views of it
    (``_reduce_scatter_gradient``), and PyTorch's ProcessGroupNCCL (``reduce_scatter``,
    torch 1.8, torch/lib/c10d/ProcessGroupNCCL.cpp: "Copy the input tensors to the flattened
    inputs") first copies each of the ``ranks`` inputs into a flat buffer on the NCCL stream:
    ``ranks`` x ``tensors`` copies a bucket (launches, ``simulator.cost.host``), reading and
    writing its gradients once in all, on the data-parallel stream
    (``simulator.schedule.stage.streams``) before the bucket's reduce-scatter. ``tensors``:
    the parameter tensors whose gradients the bucket holds (``Op.tensors`` of its updates).
    The reduce-scatters themselves, one per parameter tensor: ``per_parameter``. Not priced:
    the bucket's ``div_`` by the ranks before them (one more pass over its gradients)."""
    return Op(name=f"{NCCL_COPY_IN}:{tag}:{reduction}", kind=OpKind.ELEMENTWISE, phase=phase,
              dtype=plan.formats.gradient, fn=NCCL_COPY_IN, bytes_read=nbytes,
              bytes_written=nbytes, param_tensors=ranks * tensors, layer=first.layer,
              block=first.block)


#: ``Op.fn`` of the zero-fill of a DeepSpeed 2021 gather's buffer (``zero_fill``), which
#: ``simulator.schedule.stage.streams`` places on the data-parallel stream.
ZERO_FILL = "zero3_zero_fill"


def zero_fill(gather: str, index: int, first: Op, plan: Plan, nbytes: int,
              phase: Phase) -> Op:
    """The ``torch.zeros`` DeepSpeed v0.3.13 fills each gathered parameter's whole buffer
    with before gathering into it (``partition_parameters._allgather_param``: ``flat_tensor =
    torch.zeros(aligned_param_size, ...)``, then ``torch.cuda.synchronize()``, then the list
    all-gather; microsoft/DeepSpeed v0.3.13), run from ``stage3.py``'s ``_all_gather`` under
    ``torch.cuda.stream(self.comm_stream)``, the fetch stream (``overlap_comm``): a write of
    the gathered ``nbytes`` on the data-parallel stream (``simulator.schedule.stage.streams``)
    before the host's synchronisation and the gather. Issued in program order, not early in a
    hook: issued early, right after the op a prefetch follows, it let a step with no prefetch
    bucket run 1.5 % faster than with DeepSpeed's default (4 layers, h 1024, dp 8;
    ``tests/test_interference.py``, less prefetch is never faster), an artefact of how a
    prefetched gather's synchronisation is ordered; on the compute stream it hid no gather at
    all (``test_deepspeed_live_budget_below_a_module_stops_prefetch``). Not priced: the copy
    of the rank's own partition into its slot (``nbytes / ranks``, read and written)."""
    return Op(name=f"{ZERO_FILL}:{index}:L{first.layer}:{gather}", kind=OpKind.ELEMENTWISE,
              phase=phase, dtype=plan.formats.weight, fn=ZERO_FILL, bytes_read=0,
              bytes_written=nbytes, layer=first.layer, block=first.block)


def _uses(step: OpGraph, names: list[str], phases: tuple[Phase, ...],
          per_module: bool, whole: bool = False) -> list[Use]:
    """The uses of weights in one pass, in issue order: consecutive ops reading one unit's
    weights (FSDP: a block's, whose pre-backward hook gathers it for its recomputation and
    backward both, or with ``whole`` the whole model's, the root unit; DeepSpeed: a module's,
    its recomputed forward and its backward apart)."""
    uses: list[Use] = []
    last = None
    layer_params: dict[int, int] = {}
    for n in names:
        op = step.op(n)
        if op.phase is Phase.FORWARD:
            layer_params[op.layer] = layer_params.get(op.layer, 0) + op.params
    for n in names:
        op = step.op(n)
        if op.phase not in phases:
            continue
        owner = op if op.phase is Phase.FORWARD else _forward_op(step, op)
        if owner is None or not owner.params:
            continue
        if per_module:
            if owner.params < DEEPSPEED_PERSISTENCE:
                continue   # persistent: never partitioned (stage3_param_persistence_threshold)
            key, unit, params = (owner.name, op.phase), owner.name, owner.params
        elif whole:   # one top-level FSDP instance: every weight in the root unit
            key, unit, params = ROOT, ROOT, sum(layer_params.values())
        else:
            key, unit, params = owner.layer, owner.layer, layer_params[owner.layer]
        if not uses or key != last:
            uses.append(Use(unit, params, []))
            last = key
        uses[-1].readers.append(n)
    return uses


def _fsdp_gathers(forward: list[Use], backward: list[Use], parallel: ParallelPlan,
                  reductions: dict[int, str],
                  ahead_of: dict[int, str] | None = None) -> list[tuple[int, list[str]]]:
    """(index of the use in forward + backward, the ops its gather is issued after) of each
    gather FSDP issues; ``ahead_of`` gets, for BACKWARD_POST's backward gathers, the
    reduce-scatter issued just after each (index -> its name)."""
    depth, limit = parallel.fsdp_prefetch, parallel.fsdp_limit_all_gathers
    post = parallel.fsdp_backward_post
    ahead_of = {} if ahead_of is None else ahead_of
    out: list[tuple[int, list[str]]] = []
    kept: set = set()   # units gathered in the forward and kept for the backward
    for offset, uses in ((0, forward), (len(forward), backward)):
        gathered: list[int] = []   # positions in ``uses`` of the pass's gathers, in order
        live = set(kept)           # a unit stays gathered until the pass is done with it
        for j, use in enumerate(uses):
            if use.unit in live:
                continue
            live.add(use.unit)
            if use.unit == ROOT or not parallel.fsdp_reshard_after_forward:
                kept.add(use.unit)   # the root is not resharded after the forward
            deps: list[str] = []
            k = len(gathered)
            # backward_prefetch=None changes the backward only: the forward's gathers are
            # still issued one unit ahead by a host running ahead, under the rate limiter
            ahead = depth if offset else max(depth, 1)
            backward_post = bool(offset and post)
            if (backward_post or ahead == 0) and j > 0:
                # issued when unit j - 1 has ended; if that ends the unit, its reduce-scatter
                # goes before this gather (prefetch 0) or just after it (BACKWARD_POST: the
                # unit's post-backward hook issues this gather, then the reduce-scatter)
                deps.append(uses[j - 1].readers[-1])
                done = all(u.unit != uses[j - 1].unit for u in uses[j:])
                if done and uses[j - 1].unit in reductions:
                    reduction = reductions[uses[j - 1].unit]
                    if backward_post:
                        ahead_of[offset + j] = reduction
                    else:
                        deps.append(reduction)
            elif ahead and k:   # issued when the unit ``ahead`` gathers back starts
                deps.append(uses[gathered[max(k - ahead, 0)]].readers[0])
            if limit and k >= 2:
                deps.append(uses[gathered[k - 2]].readers[-1])
            gathered.append(j)
            out.append((offset + j, list(dict.fromkeys(deps))))
    return out


def _deepspeed_gathers(uses: list[Use], parallel: ParallelPlan,
                       synchronous: bool = False) -> list[tuple[int, list[str]]]:
    """(index of the use, the ops its gather is issued after) of each gather DeepSpeed's
    parameter coordinator issues over the step's uses (forward then backward).

    A module's own gather (not prefetched) is issued by its pre-forward hook. Today's
    coordinator issues it from the host and only makes the compute stream wait for it
    (``fetch_sub_module``: ``wait_stream``, no host synchronisation), so a host running ahead of
    the device issues it while the previous module computes; it is modelled as issued after
    the previous module's first op reading its weights, where a prefetch one module ahead is
    issued, so a prefetch is never later than the fetch it replaces (a host further ahead,
    which would release every gather at once whatever the live budget, is not modelled).
    DeepSpeed's of 2021 (``synchronous``; v0.3.13, ``stage3.py``,
    ``_synchronize_communication``: ``torch.cuda.synchronize()`` in every fetch, and one per
    parameter in ``partition_parameters._allgather_param``) holds the host until the device is
    idle: the gather starts when the previous module has finished, exposed."""
    live: dict = {}                       # unit -> parameters, gathered or in flight
    planned: dict[int, list[str]] = {}    # use index -> issued after (prefetched)
    out: list[tuple[int, list[str]]] = []
    queue = 0                             # the next use the prefetcher looks at
    for i, use in enumerate(uses):
        if i in planned:
            out.append((i, planned.pop(i)))
        elif use.unit not in live:        # fetched at its own pre-hook: the stream waits
            # where a prefetch one module ahead would be issued (the previous module's first
            # op reading weights); 2021's synchronising fetch once the device has finished it
            last = uses[i - 1].readers[-1 if synchronous else 0]
            out.append((i, [last] if i else []))
            live[use.unit] = use.params
        queue = max(queue, i + 1)
        budget = min(parallel.zero_max_live - sum(live.values()), parallel.zero_prefetch_bucket)
        numel = 0
        while queue < len(uses) and numel < budget:
            nxt = uses[queue]
            if nxt.unit not in live:
                planned[queue] = [use.readers[0]]
                live[nxt.unit] = nxt.params
                numel += nxt.params
            queue += 1
        # released after its use unless used again within the reuse distance
        between = 0
        for later in uses[i + 1:]:
            if later.unit == use.unit or between >= DEEPSPEED_MAX_REUSE:
                break
            between += later.params
        else:
            between = DEEPSPEED_MAX_REUSE
        if between >= DEEPSPEED_MAX_REUSE:
            live.pop(use.unit, None)
    return out


def _forward_op(step: OpGraph, op: Op) -> Op | None:
    if op.forward_of and op.forward_of in step:
        return step.op(op.forward_of)
    return None


def whole_model_note(parallel: ParallelPlan) -> str | None:
    """The result's note when FSDP's unit options are asked where they change nothing:
    ``fsdp_whole_model``, ``fsdp_reshard_after_forward`` False, ``fsdp_backward_post``,
    ``fsdp_prefetch`` other than 1, ``fsdp_limit_all_gathers`` False. Only FSDP sharding at ZeRO 3
    over more than one shard gathers weights per unit (below it no weight is gathered: DDP,
    ZeRO 1-2; DeepSpeed gathers by its own rules); None where they apply or none is asked."""
    asked = [name for name, given in (
        ("fsdp_whole_model", parallel.fsdp_whole_model),
        ("fsdp_reshard_after_forward = false", not parallel.fsdp_reshard_after_forward),
        ("fsdp_backward_post", parallel.fsdp_backward_post),
        (f"fsdp_prefetch = {parallel.fsdp_prefetch}", parallel.fsdp_prefetch != 1),
        ("fsdp_limit_all_gathers = false", not parallel.fsdp_limit_all_gathers)) if given]
    if not asked or (parallel.zero == 3 and parallel.shards > 1
                     and parallel.sharding is Sharding.FSDP):
        return None
    why = (f"zero = {parallel.zero}, no weight is gathered per unit" if parallel.zero != 3
           else "one shard, no weight is gathered" if parallel.shards <= 1
           else f"sharding {parallel.sharding.value} gathers by its own rules")
    return (f"{', '.join(asked)}: {why}; {'it changes' if len(asked) == 1 else 'they change'} "
            "nothing (FSDP's unit options apply at zero = 3)")


__all__ = ["FLAT_COPY", "MEMORY_OPT_ALLREDUCE_SIZE", "NCCL_COPY_IN", "NCCL_COPY_OUT", "ZERO_FILL",
           "add_data_parallel", "add_grad_accumulation", "add_replicated_grad_reduce",
           "add_tied_embedding_reduce", "engine_reduces", "megatron_bucket",
           "whole_model_note"]
