"""What the forward keeps for the backward: the saved activations of one training step.

(Model states -- weights, gradients and optimizer states -- are ``Plan.state_bytes_per_param``
times the parameters, sharded under ZeRO by ``simulator.schedule.memory``.)

- Activations: the tensors the forward pass keeps for the backward, each counted once,
  at the end of the forward pass (where training peaks without liveness analysis).
  Under recomputation a region keeps only the tensors it reads from outside (its checkpoint)
  plus what ops outside it keep (Korthikanti et al. 2022, sec. 4.1-4.2). With sequence
  parallelism a linear reading an all-gather keeps the sequence shard (sec. 4.2.2, as
  Megatron-LM does; ``training.gathered_shard``).
"""
from __future__ import annotations

from collections import defaultdict

from simulator.graph.opgraph import OpGraph
from simulator.plan.step import Plan
from simulator.training.backward import WEIGHTED, gathered_shard, region_of
from simulator.training.finetune import needs_grad
from simulator.training.fp8 import NORMS as FP8_NORMS
from simulator.training.fp8 import saved_bytes as fp8_saved_bytes
from simulator.training.loss import kept_bytes as loss_kept_bytes
from simulator.training.loss import vocab_head


def saved_tensors(forward: OpGraph, plan: Plan) -> dict[tuple[str, str], tuple[int, int]]:
    """Tensors kept for the backward: (kind, producer) -> (bytes, layer of the op keeping it).

    kind is ``"out"`` for an op's output, ``"mask"`` / ``"stats"`` for what an op keeps
    besides. Each tensor is counted once, for the first op (in forward order) that keeps it.
    """
    kept: dict[tuple[str, str], tuple[int, int]] = {}
    needs = needs_grad(forward)   # None: every op's backward runs

    def keep(kind: str, producer: str, nbytes: int, layer: int) -> None:
        if nbytes and (kind, producer) not in kept:
            kept[(kind, producer)] = (nbytes, layer)

    for name in forward.names():
        op = forward.op(name)
        inputs = forward.inputs(name)
        if needs is not None and name not in needs:
            continue   # no gradient flows through it: it keeps nothing
        region = region_of(op, plan.recompute)
        if region is not None:
            for src in inputs:  # the region's checkpoint: what it reads from outside
                if region_of(forward.op(src), plan.recompute) != region:
                    keep("out", src, forward.op(src).out_bytes, op.layer)
            continue
        head = vocab_head(forward, name)
        if head is not None and loss_kept_bytes(head, plan):  # its eager fp32 softmax
            keep("out", name, loss_kept_bytes(head, plan), op.layer)
            continue
        if "inputs" in op.saves and not (op.frozen and op.fn in WEIGHTED):
            for src in inputs:   # a frozen weight's GEMM needs only it for the data gradient
                if op.fn in WEIGHTED:
                    shard = gathered_shard(forward, src)
                    holder = shard if shard and forward.op(shard).fn in FP8_NORMS else src
                    fp8 = None if shard and holder == src else fp8_saved_bytes(
                        op, forward.op(holder), plan)
                    if fp8 is not None:   # Transformer Engine keeps an fp8 copy (of the
                        keep("fp8", holder, fp8, op.layer)   # norm's shard under sequence
                        continue                            # parallelism: its fp8 output)
                    src = shard or src
                elif op.fn == "swiglu" and plan.fp8_swiglu_input:   # its fp8 copy (training.fp8)
                    keep("fp8", src, forward.op(src).out_bytes // plan.formats.activation.bytes,
                         op.layer)
                    continue
                keep("out", src, forward.op(src).out_bytes, op.layer)
        if "output" in op.saves:
            keep("out", name, op.out_bytes, op.layer)
        keep("mask", name, op.mask_bytes, op.layer)
        keep("stats", name, op.stats_bytes, op.layer)
    return kept


def activation_bytes_by_layer(forward: OpGraph, plan: Plan) -> dict[int, int]:
    """Saved activation bytes per layer (layer -1: embedding and head)."""
    totals: dict[int, int] = defaultdict(int)
    for nbytes, layer in saved_tensors(forward, plan).values():
        totals[layer] += nbytes
    return dict(totals)


def activation_bytes(forward: OpGraph, plan: Plan) -> int:
    return sum(nbytes for nbytes, _ in saved_tensors(forward, plan).values())
