"""DeepSpeed's ``partition_activations``: checkpointed layer inputs kept in pieces.

With activation checkpointing and ``partition_activations`` on, DeepSpeed's
``CheckpointFunction`` keeps 1/tp of each checkpointed layer's input per tensor-parallel rank
and puts it back together when the backward reaches the layer, before recomputing it. What
this module prices is the code as DeepSpeed v0.3.15 ran it (EleutherAI/DeeperSpeed eb7f5cff,
the fork GPT-NeoX v1.0 pins; ``deepspeed/runtime/activation_checkpointing/checkpointing.py``),
whose fill, copies and gather are microsoft/DeepSpeed's too (v0.3.13 and v0.5.0
``get_full_inputs``; ``gather_partitioned_activations`` from v0.6.0):

- forward (``CheckpointFunction.forward``, each micro-batch): the layer's first input, the
  hidden state (the last argument, GPT-NeoX's attention mask, is kept whole), is cut to the
  rank's piece by ``item.detach().contiguous().view(-1).narrow(...).clone()``: a copy of S / tp
  bytes (S the input's bytes), read and written;
- backward (``CheckpointFunction.backward`` -> ``get_full_inputs``): ``torch.zeros`` of the
  whole input (S written), ``part_i.copy_(item)`` of the rank's piece into it (S / tp read and
  written), then ``dist.all_gather(partitions, partitions[mp_rank], group=mp_group)`` into the
  list of the tp views. torch 1.8's ProcessGroupNCCL gathers a list into a flat buffer of its
  own and then copies each of the tp outputs out of it (``allgather``: ``newLikeFlat``, then
  ``outputTensors[i][j].copy_(outputFlattened[i][j])``): S read and written after the
  gather, one kernel here for the tp copies. DeeperSpeed gathers a bf16 input in fp32
  (``FP32_COMM`` when the saved tensor is bfloat16, its commit 996951ef "Bf16 (#31)", never
  upstream): each of the tp views is cast up before (S read, 2 S written), the gather and its
  copies move 2 S, and each is cast back after (2 S read, S written). hwsim takes a bf16 step
  under ``--sharding deepspeed-2021`` for DeeperSpeed's (DeepSpeed v0.3.13-v0.3.16 itself had
  no bf16 mode) and casts only there (``fp32_comm``).

It is not a no-op at tp = 1: GPT-NeoX passes its ``mpu`` to ``deepspeed.checkpointing
.configure`` (megatron/initialize.py at EleutherAI/gpt-neox 71df4d5), so ``mp_group`` is the
one-rank model-parallel group and every copy above runs; the one-rank all-gather is NCCL's
device-to-device ``cudaMemcpyAsync`` of its buffer (``ncclSaveKernel``, src/enqueue.cc: "if
(info->comm->nRanks == 1 ...)" at NVIDIA/nccl v2.7.3-1 to v2.9.9-1), priced as a copy of S
(2 S in fp32). At tp > 1 it is an all-gather on the tensor-parallel communicator.

Not modelled: the memory the pieces save (1 - 1/tp of the checkpoints; the full input is
still counted live), the host's launches of the tp copies out (one kernel here), and that the
bf16 path's gathered pieces are cast into new tensors and never copied back into the buffer
(at tp > 1, as the code reads, the recomputation would find zeros for the other ranks'
pieces: hwsim prices the bytes, whatever they compute). Sequence-parallel or hidden-sharded activations are already split: nothing is
added for them (``simulator.parallel.rank.build_stage``).
"""
from __future__ import annotations

from simulator.graph.collective import Axis, collective
from simulator.graph.op import DType, Op, OpKind, Phase, Task
from simulator.graph.opgraph import OpGraph

#: ``Op.fn`` of the kernels this module adds (the gather keeps ``all_gather``).
FN = "checkpoint_partition"


def partition_bytes(saved: int, tp: int) -> int:
    """Bytes the forward's clone of the rank's piece reads (and writes): S / tp."""
    return saved // tp


def regather_kernels(saved: int, tp: int, wide: bool) -> list[tuple[str, int, int]]:
    """The backward's kernels around the gather of a checkpointed input of ``saved`` bytes over
    ``tp`` ranks, in order, as (name, bytes read, bytes written); ``gather`` is the all-gather
    itself (at tp = 1 NCCL's copy, its bytes; at tp > 1 its bytes read and written as a
    collective counts them: a piece in, the whole out). ``wide``: the bf16 input gathered in
    fp32."""
    piece = saved // tp
    width = 2 if wide else 1                       # fp32 over a 16-bit tensor: twice the bytes
    gathered = width * saved
    kernels = [("fill", 0, saved), ("copy_in", piece, piece)]
    if wide:
        kernels.append(("cast_up", saved, gathered))
    kernels.append(("gather", gathered // tp, gathered))
    kernels.append(("copy_out", gathered, gathered))
    if wide:
        kernels.append(("cast_down", gathered, saved))
    return kernels


def partition_checkpoints(step: OpGraph, tp: int, fp32_comm: bool = False) -> OpGraph:
    """``step`` with DeepSpeed's ``partition_activations`` priced: per recomputed layer, the
    forward's clone of the rank's piece of its input before the layer's forward, and the
    backward's fill, copy in, all-gather (NCCL's copy at tp = 1) and copies out before its
    recomputation, which waits for them; ``fp32_comm`` (DeeperSpeed's): a bf16 input cast to
    fp32 around its gather. The input's bytes are the forward ops outside the layer its
    recomputation reads. ``step`` is changed in place and returned."""
    regions: dict[int, list[str]] = {}
    for name in step.names():
        op = step.op(name)
        if op.task is Task.RECOMPUTE and op.out_bytes and any(
                step.op(src).task is not Task.RECOMPUTE for src in step.inputs(name)):
            regions.setdefault(op.layer, []).append(name)   # where a recomputed layer starts
    for layer, entries in regions.items():
        outside = {src: step.op(src) for name in entries for src in step.inputs(name)
                   if step.op(src).task is not Task.RECOMPUTE}
        inputs = [op for op in outside.values() if op.phase is Phase.FORWARD]
        saved = sum(op.out_bytes for op in inputs)
        if not saved:
            continue
        first = step.op(entries[0])
        dtype = inputs[0].dtype
        _clone(step, layer, first, dtype, tp, saved, inputs,
               [step.op(name).forward_of for name in entries])
        previous = sorted(outside)       # the recomputation waits for the backward's arrival
        wide = fp32_comm and dtype is DType.BF16
        for tag, read, written in regather_kernels(saved, tp, wide):
            op = _kernel(f"{FN}.{tag}:L{layer}", first, dtype, read, written)
            if tag == "gather" and tp > 1:
                op = collective(f"checkpoint_all_gather:L{layer}", "all_gather", read, written,
                                0, tp, Axis.TENSOR, first, phase=Phase.RECOMPUTE).evolve(
                    task=Task.RECOMPUTE, forward_of=first.forward_of)
            step.add(op, [])
            for index, src in enumerate(previous):
                step.add_edge(src, op.name, index, nbytes=0)
            previous = [op.name]
        for name in entries:
            step.add_edge(previous[0], name, len(step.inputs(name)), nbytes=0)
    return step


def _kernel(name: str, first: Op, dtype: DType, read: int, written: int) -> Op:
    """A copy of the regather, in the recomputation of ``first``'s layer."""
    return Op(name=name, kind=OpKind.COPY, phase=Phase.RECOMPUTE, dtype=dtype, fn=FN,
              bytes_read=read, bytes_written=written, layer=first.layer, block=first.block,
              task=Task.RECOMPUTE, forward_of=first.forward_of)


def _clone(step: OpGraph, layer: int, first: Op, dtype: DType, tp: int, saved: int,
           inputs: list[Op], forwards: list[str]) -> None:
    """The forward's ``narrow(...).clone()`` of the rank's piece, after the input is written
    and before the layer's forward ops run (``run_function`` is called after it)."""
    piece = partition_bytes(saved, tp)
    clone = Op(name=f"{FN}.clone:L{layer}", kind=OpKind.COPY, phase=Phase.FORWARD,
               dtype=dtype, fn=FN, bytes_read=piece, bytes_written=piece, layer=layer,
               block=first.block)
    step.add(clone, [])
    for index, op in enumerate(inputs):
        step.add_edge(op.name, clone.name, index, nbytes=0)
    for name in dict.fromkeys(forwards):
        if name in step:
            step.add_edge(clone.name, name, len(step.inputs(name)), nbytes=0)


__all__ = ["FN", "partition_bytes", "partition_checkpoints", "regather_kernels"]
