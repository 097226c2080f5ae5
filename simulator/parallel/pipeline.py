"""Pipeline stages: the part of a forward graph one stage runs, with its sends and receives.

A stage of a transformer split over ``pp`` devices runs ``layers / pp`` layers (or the uneven
split of ``ParallelPlan.chunk_layers``), the first stage also the embedding and the last the
head and loss (Narayanan et al. 2021, sec. 2.2). Built from the forward graph of a model with
the stage's layers (every layer is alike), the stage
keeps the embedding only if it is the first and the head only if it is the last; the tensor
that crosses a cut becomes a receive (``send_recv`` collective, ``Axis.PIPELINE``) at the start
of the next stage, and a send at the end of the previous one. The send starts the backward
(``simulator.training.backward.starts_backward``): its adjoint receives the output's gradient.

Messages are split over the tp ranks (the scatter/gather optimisation of Narayanan et al. 2021,
sec. 4.1, ``parallel.pipeline_message_bytes``): each rank sends 1/tp of the activation over its
own network card and the receiving node all-gathers the pieces over its intra-node links (a
``tp_all_gather`` after each receive; its gradient is a slice, no kernel); the gradient goes
back the same way (``simulator.training.backward`` gathers it after the receive of a send's or an
exchange's adjoint). Ops of a split message carry ``scatter`` = tp. With sequence parallelism
the message is a sequence shard already: nothing to gather. With tied embeddings the last
stage keeps its own copy of the word embedding for the lm_head (Megatron-LM), and both copies
carry the fact ``tied``, the elements of the shared weight: after the data-parallel reduction
the two stages all-reduce the copies' gradients (``data_parallel.add_tied_embedding_reduce``),
as Megatron-LM's ``_allreduce_embedding_grads`` does each step.
"""
from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

from simulator.graph.collective import Axis, collective, reassembly
from simulator.graph.op import Op, OpKind, Phase, Role
from simulator.graph.opgraph import OpGraph


def stage_graph(forward: OpGraph, first: bool, last: bool, tp: int = 1,
                sequence_parallel: bool = False, local: int = 0,
                chunks: Sequence[int] = ()) -> OpGraph:
    """The ops of ``forward`` a stage runs; ``forward`` itself when it is both first and last
    and runs one chunk.

    ``local``: 2 when the neighbouring stages share a node (send/recv over the intra network),
    1 when they do not (``collectives.hierarchical_time_s``). ``chunks``: the layers of each
    model chunk of the interleaved schedule the device runs (``ParallelPlan.chunk_layers``;
    empty or one chunk: none); between two of them the device
    sends its chunk's output to the next device and receives the next chunk's input from the
    previous one, one exchange each way in the forward and again in the backward: the
    communication grows v times (Narayanan et al. 2021, sec. 2.2.2).
    """
    if first and last and len(chunks) <= 1:
        return forward
    names = forward.names()
    in_layers = [i for i, n in enumerate(names) if forward.op(n).layer >= 0]
    lo, hi = in_layers[0], in_layers[-1]
    ends = list(accumulate(chunks)) if len(chunks) > 1 else []
    before = set(names[:lo])

    def chunk(name: str) -> int:
        """The model chunk of the device an op runs in: by its layer; the embedding in the
        first, the head in the last (either may hold no layer)."""
        layer = forward.op(name).layer
        if layer >= 0:
            return bisect_right(ends, layer)
        return 0 if name in before else len(chunks) - 1

    tied = any(_is_tied_head(forward.op(n)) for n in names[hi + 1:])
    keep = {n for i, n in enumerate(names)
            if lo <= i <= hi or (first and i < lo) or (last and i > hi)}
    split = 1 if sequence_parallel else tp   # a sequence shard is already 1/tp
    scatter = {"scatter": split} if split > 1 else {}   # the adjoint receives a 1/tp gradient
    out = OpGraph(forward.name.replace("forward", "stage forward"))
    received: dict[str, str] = {}
    for name in names:
        if name not in keep:
            continue
        op = forward.op(name)
        if not first and _is_tied_head(op):  # the last stage's embedding copy
            op = op.evolve(params=op.params + op.k * op.n,
                           extra=op.extra + (("tied", op.k * op.n),))
        elif tied and not last and op.role is Role.VOCAB_EMBEDDING:
            op = op.evolve(extra=op.extra + (("tied", op.params),))
        inputs = []
        for src in forward.inputs(name):
            if ends and chunk(src) != chunk(name) and src not in received:
                size = forward.op(src).out_bytes
                swap = collective(f"pipeline_exchange:{src}", "send_recv", size // split,
                                  size // split, size, 2, Axis.PIPELINE, _outside(op),
                                  local=local, **scatter)
                received[src] = _gathered(out, out.add(swap, [src]), size, split, op)
            if src not in keep and src not in received:
                size = forward.op(src).out_bytes
                recv = collective("pipeline_recv", "send_recv", size // split, size // split,
                                  size, 2, Axis.PIPELINE, _outside(op), local=local)
                received[src] = _gathered(out, out.add(recv, []), size, split, op)
            inputs.append(received.get(src, src))
        out.add(op, inputs)
    if not last:
        outputs = [n for n in keep if any(c not in keep for c in forward.consumers(n))]
        for src in outputs:
            size = forward.op(src).out_bytes
            send = collective("pipeline_send", "send_recv", size // split, size // split, 0, 2,
                              Axis.PIPELINE, _outside(forward.op(src)), local=local, send=1,
                              **scatter)
            out.add(send, [src])
    return out


def _is_tied_head(op: Op) -> bool:
    """The language-model head reading the word embedding's weights (tied embeddings)."""
    return op.role is Role.VOCAB_HEAD and op.params < op.k * op.n


def _gathered(out: OpGraph, received: str, size: int, split: int, reader: Op) -> str:
    """The op the stage reads a received message from: the message itself, or its
    ``reassembly``."""
    if split == 1:
        return received
    return out.add(reassembly(received, size, split, _outside(reader)), [received])


def _outside(op: Op) -> Op:
    """A template outside every layer (not recomputed with one)."""
    return op.evolve(layer=-1)


def block_on_p2p(step: OpGraph) -> OpGraph:
    """DeepSpeed's pipeline engine (deepspeed/runtime/pipe/engine.py, its instructions
    SendActivation, RecvActivation, SendGrad, RecvGrad; pipe/p2p.py): each send and receive is
    a blocking ``dist.send`` / ``dist.recv`` (a ``dist.broadcast`` in a two-rank group before
    PyTorch had point-to-point NCCL) run by the engine's instruction loop between compute
    instructions, so no compute op issued after one starts before it ends. Megatron-LM's
    schedules instead post the next receive while computing. Each pipeline message op here
    (``Axis.PIPELINE`` send/recv, the interleaved exchanges, and their backward adjoints)
    holds back the compute op issued after it. ``step`` is changed in place and returned."""
    names = step.names()
    pending: list[str] = []
    for name in names:
        op = step.op(name)
        if op.kind is OpKind.COLLECTIVE:
            if op.fn == "send_recv" and dict(op.extra).get("axis") == int(Axis.PIPELINE):
                pending.append(name)
            continue
        if pending and op.phase in _BLOCKED:
            for src in pending:
                step.add_edge(src, name, nbytes=0)   # later in issue order: no cycle
            pending = []
    return step


_BLOCKED = (Phase.FORWARD, Phase.BACKWARD, Phase.RECOMPUTE)


def overlap_p2p(step: OpGraph) -> OpGraph:
    """Megatron-LM's interleaved schedule with ``overlap_p2p_comm``
    (megatron/core/pipeline_parallel/schedules.py,
    ``forward_backward_pipelining_with_interleaving``, and p2p_communication.py, at
    NVIDIA/Megatron-LM d98e8a64dd: each chunk's send and the next chunk's receive are posted
    as ``isend``/``irecv`` before a chunk computes and waited on only before the chunk that
    reads them): in the steady state a message travels while other micro-batches' chunks
    compute, so no compute waits for it. Here each op reading a pipeline message
    (``Axis.PIPELINE`` send/recv, the interleaved exchanges and the backward's adjoints)
    reads instead what the message itself waited for, the nearest ops before it that are not
    pipeline messages (ordering edges of 0 bytes); the messages still run, on their
    communicator's stream, beside the compute (``simulator.cost.interference`` applies).
    They run on the pipeline communicator's own stream (``simulator.schedule.stage.streams``),
    so no tensor-parallel collective waits behind one either. Left out: the first
    micro-batch's receive, which nothing hides (Megatron-LM waits for it before the warm-up),
    a message outlasting the chunks it overlaps, and the fill's and drain's chains: an event
    simulation of the interleaved order with a latency l a hop adds exactly (2 p v - 2) l
    to the step whatever the micro-batches (benchmarks/megatron_breakdown.py,
    tests/test_interleaved_p2p.py; at most 0.7 % on NeMo's GPT-3 175B rows). ``step`` is changed in place and
    returned."""
    def message(name: str) -> bool:
        op = step.op(name)
        return op.kind is OpKind.COLLECTIVE and op.fn == "send_recv" and \
            dict(op.extra).get("axis") == int(Axis.PIPELINE)

    before: dict[str, set[str]] = {}   # each message's nearest non-message ancestors
    for name in step.names():
        if not message(name):
            continue
        before[name] = set()
        for src in step.inputs(name):
            before[name] |= before.get(src, {src})
        for reader in step.consumers(name):
            if message(reader):
                continue
            index = step.nx.edges[name, reader]["index"]
            step.nx.remove_edge(name, reader)
            for src in sorted(before[name]):
                step.add_edge(src, reader, index, nbytes=0)
    return step


def p2p_note(parallel) -> str | None:
    """The result's note when ``overlap_p2p_comm`` is asked where it changes nothing: only
    the interleaved schedule over a pipeline overlaps its messages (Megatron-LM turns the
    option off for the others: megatron/training/arguments.py at NVIDIA/Megatron-LM
    d98e8a64dd); None where it applies or is not asked."""
    from simulator.plan.parallel import Schedule

    if not parallel.overlap_p2p_comm:
        return None
    if parallel.pp < 2:
        return "overlap_p2p_comm: no pipeline (pp = 1), no message to overlap; it changes nothing"
    if parallel.schedule is not Schedule.INTERLEAVED:
        return (f"overlap_p2p_comm: only the interleaved schedule overlaps its pipeline "
                f"messages (Megatron-LM turns it off for the others); with schedule "
                f"{parallel.schedule.value} it changes nothing")
    return None


__all__ = ["block_on_p2p", "overlap_p2p", "p2p_note", "stage_graph"]
