"""DeepSpeed 2021's ZeRO stage 1 checks every gradient on the host before its update.

DeepSpeed before v0.4 ran ZeRO stage 1 with ``FP16_DeepSpeedZeroOptimizer_Stage1``
(``deepspeed/runtime/zero/stage1.py``; EleutherAI/DeeperSpeed eb7f5cff, the fork of v0.3.15
that GPT-NeoX v1.0 pins, ``runtime/engine.py`` ``_configure_zero_optimizer``). Its ``step``
first walks every 16-bit parameter the rank holds (its whole model or tensor-parallel shard,
not its ZeRO partition), twice:

- ``self.overflow_checker.check()``: ``CheckOverflow.has_overflow_serial`` calls
  ``_has_inf_or_nan`` on each gradient, ``float(x.float().sum())`` (``runtime/utils.py``): a
  cast to fp32 (2 B read, 4 B written per element; none for an fp32 gradient), a sum (4 B read),
  and the host waits for the sum;
- ``get_grad_norm(group, mpu)`` (``runtime/utils.py``): ``p.grad.data.float().norm(2)`` and
  ``param_norm.item()`` for each parameter: the same bytes and another wait.

Then it copies its partition's gradients into fp32, unscales, updates and gathers, as the
update op and the data-parallel ops price. ``add_checks`` puts the two walks between the
gradients' reduction and the first update: one op per layer and walk, reading and writing
those bytes, whose host synchronisations (``Op.extra`` ``sync``, ``simulator.cost.host``) are
its parameter tensors. Not priced: the tiny all-reduces of the overflow flag and of the norm
(a few bytes each) and their ``.item()``; a tensor-parallel rank other than the first skips the
norm of its replicated parameters (norms, row-parallel biases).
"""
from __future__ import annotations

from simulator.graph.op import Block, Op, OpKind, Phase, Task
from simulator.graph.opgraph import OpGraph
from simulator.plan.parallel import ParallelPlan, Sharding
from simulator.plan.step import Plan

WALKS = ("overflow_check", "grad_norm")   # CheckOverflow.check, then get_grad_norm
FP32 = 4


def checks(parallel: ParallelPlan) -> bool:
    """Whether the step runs DeepSpeed 2021's stage 1 optimizer (and so its checks)."""
    return parallel.sharding is Sharding.DEEPSPEED_2021 and parallel.zero == 1


def walk_bytes(params: int, grad_bytes: int) -> tuple[int, int]:
    """(read, written) of one walk over ``params`` gradients of ``grad_bytes`` each: the cast to
    fp32 (none for fp32 gradients), then a reduction reading the fp32 copy."""
    if grad_bytes >= FP32:
        return params * grad_bytes, 0
    return params * (grad_bytes + FP32), params * FP32


def add_checks(step: OpGraph, plan: Plan, parallel: ParallelPlan) -> OpGraph:
    """``step`` with the stage 1 optimizer's overflow and norm walks before its updates (when
    ``checks``); returns ``step``."""
    if not checks(parallel):
        return step
    held: dict[int, list[int]] = {}   # layer -> [parameter elements, tensors] on this rank
    for op in step.ops():
        if op.phase is Phase.FORWARD and op.params and not op.frozen:
            entry = held.setdefault(op.layer, [0, 0])
            entry[0] += op.params
            entry[1] += max(op.param_tensors, 1)
    updates = [n for n in step.names() if step.op(n).task is Task.UPDATE]
    if not held or not updates:
        return step
    before = list(dict.fromkeys(src for name in updates for src in step.inputs(name)))
    previous = before
    grad_bytes = plan.formats.gradient.bytes
    for walk in WALKS:
        for layer in sorted(held):
            params, tensors = held[layer]
            read, written = walk_bytes(params, grad_bytes)
            op = Op(name=f"{walk}:L{layer}", kind=OpKind.REDUCTION, phase=Phase.OPTIMIZER,
                    dtype=plan.formats.gradient, fn="sum", flops=0, vector_flops=params,
                    bytes_read=read, bytes_written=written, out_bytes=FP32, layer=layer,
                    block=Block.NONE, task=Task.GRAD_SUM,
                    extra=(("sync", tensors),))
            step.add(op, [])
            for src in previous:
                step.add_edge(src, op.name, nbytes=0)
            previous = [op.name]
    for name in updates:
        step.add_edge(previous[0], name, nbytes=0)
    return step


__all__ = ["WALKS", "add_checks", "checks", "walk_bytes"]
