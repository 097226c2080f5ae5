"""A language model's loss as frameworks run it: the kernels of the cross-entropy over the
vocabulary, forward and backward.

A builder's loss is one ``OpKind.LOSS`` op reading the logits (``workloads.layers.Builder.loss``).
Over a vocabulary the logits are the step's largest tensor (tokens x vocabulary: 65,536 x 50,304
per micro-batch of Pythia 70M), and what the frameworks do with them is several passes in fp32:

- **eager** (``Fusion.EAGER``): Megatron-LM's ``vocab_parallel_cross_entropy`` as GPT-NeoX and
  Megatron-LM run it (``megatron/mpu/cross_entropy.py``, 2021, called on ``output.float()`` by
  ``megatron/model/gpt_model.py`` unless ``--fp16-lm-cross-entropy``;
  ``megatron/core/tensor_parallel/cross_entropy.py``, ``VocabParallelCrossEntropy``, whose
  ``calculate_logits_max`` calls ``.float()`` itself). One kernel per line of its code, each
  over the whole (tokens x vocabulary / tp) tensor, per element:

  ========  ====================================  =========  ========
  kernel    code                                  read (B)   written
  ========  ====================================  =========  ========
  cast      ``logits.float()`` (16-bit logits)    a          4
  max       ``torch.max(logits, dim=-1)``         4          rows
  sub       ``logits -= logits_max`` (in place)   4          4
  exp       ``torch.exp(logits, out=logits)``     4          4
  sum       ``exp_logits.sum(dim=-1)``            4          rows
  div       ``exp_logits.div_(sum)`` (in place)   4          4
  mul       backward: ``grad_input.mul_(grad)``   4          4
  cast      backward of ``.float()``: to 16 bits  4          a
  ========  ====================================  =========  ========

  so 38 + 14 = 52 bytes per logit with 16-bit logits (a = 2), against the 8 of one read and one
  write each way. The fp32 buffer is written in place from the cast on, kept for the backward
  (``ctx.save_for_backward(exp_logits, ...)``, the softmax), and scaled in place there: the
  ops after the cast read it (out_bytes 0), so it lives from the cast until the backward's
  cast back. The row-sized work (target mask, the gathered target logit, ``log``, the loss;
  the backward's ``grad_2d[arange, target] -= 1``) stays in the ``LOSS`` op and the ``mul``:
  in eager PyTorch those are a dozen more small kernels (comparisons, ``clone``, index gathers
  and puts, ``arange``), which one op each stands for here.
  With fp32 logits there is no cast: the passes work in place on the head's output, and the
  ``mul`` writes the gradient as a new tensor (an approximation: Megatron scales in place).
  PyTorch's own ``F.cross_entropy`` on an fp32 cast (``log_softmax`` then ``nll_loss``,
  ``aten/src/ATen/native/cuda/SoftMax.cu`` ``cunn_SoftMaxForward``/``Backward``,
  ``Loss.cu``/``LossNLL.cu``: ``nll_loss_backward`` zero-fills the gradient) moves 36 to 48
  bytes per logit depending on how many times its softmax kernels re-read a row: not modelled
  separately (its kernels are priced as Megatron's).
- **compiled** (``Fusion.COMPILED``): a fused cross-entropy kernel, as flash-attention's
  training scripts use (``flash_attn/losses/cross_entropy.py``, ``flash_attn/ops/triton/
  cross_entropy.py``: the forward reads the 16-bit logits once and keeps the fp32 log-sum-exp
  per row; the backward reads them and the log-sum-exp and writes the gradient): one ``LOSS``
  op reading the logits and writing per-row statistics, whose backward
  (``simulator.training.backward``) reads them again and writes the gradient. Transformer
  Engine's and Liger's Triton kernels (``transformer_engine/common/triton/cross_entropy.py``:
  ``online_softmax_kernel``, then ``cross_entropy_kernel`` writing the gradient in the
  forward) read the logits twice in the forward: not modelled separately.

- **megatron** (``Plan.loss_kernels = megatron``): the eager passes above under any fusion.
  Megatron-Core with Transformer Engine fuses the blocks' kernels (``Fusion.COMPILED``) but runs
  ``vocab_parallel_cross_entropy`` unfused unless ``--cross-entropy-loss-fusion`` is given
  (``store_true``, off by default: NVIDIA/Megatron-LM core_r0.8.0
  ``megatron/training/arguments.py`` lines 1134-1136; ``LanguageModule
  .compute_language_model_loss`` calls the fused kernel only with it). NeMo's GPTConfig turns it
  on (``cross_entropy_loss_fusion: bool = True``, NVIDIA/NeMo ``nemo/collections/llm/gpt/model/
  base.py`` line 303; the MLPerf v5.0 Llama 3.1 405B logs print ``cross_entropy_loss_fusion:
  true``), so NeMo's and MLPerf's rows keep ``auto``.
- **torch** (``Plan.loss_kernels = torch``): PyTorch's ``F.cross_entropy(pred.float(), labels)``
  run eagerly, outside any compiled region, as torchtitan runs it (9dec370 ``train.py`` lines
  131-138: ``loss_fn`` casts with ``.float()``; "compiling loss function causes CUDA errors,
  turning off for now", so only the blocks are compiled; ``del pred`` only after ``loss_fn``
  returns, lines 304-307, so the 16-bit logits live through the loss's forward). Its kernels
  (``aten/src/ATen/native/cuda/SoftMax.cu``; a row of 128,256 fp32 logits is over
  ``sharedMemPerBlock``'s 48 KiB, so ``cunn_SoftMaxForward`` runs, not its shared-memory
  variant), per element:

  ====================  ==========================================  =========  ========
  kernel                code                                        read (B)   written
  ====================  ==========================================  =========  ========
  cast                  ``pred.float()``                            a          4 (new)
  log_softmax           ``cunn_SoftMaxForward``: max, sum of exp,   3 x 4      4 (new)
                        write: three loops over the row
  nll_loss backward     ``nll_loss_backward``: zero-filled          0          4 (new)
                        gradient, -1/N at each target
  log_softmax backward  ``cunn_SoftMaxBackward``: sum of the        3 x 4      4 (new)
                        gradient, then gradient and output read
  cast                  backward of ``.float()``                    4          a (new)
  ====================  ==========================================  =========  ========

  Every kernel writes a new tensor, so memory holds at once: the 16-bit logits, the fp32 cast
  and the log-softmax in the forward (a + 8 bytes per logit, until the cast is freed after
  the log-softmax), then the kept log-softmax, the nll gradient and the log-softmax gradient
  in the backward (12 bytes per logit). Over 32,768 tokens x 128,256 logits (torchtitan's
  Llama 3.1 8B at 32K local tokens) that is 50 GB, against the fused kernel's 16-bit logits
  and gradient.

Only a loss whose logits come from a language model's vocabulary head (``Role.VOCAB_HEAD``) is
lowered so; a classifier's loss over a few classes keeps its one op.
"""
from __future__ import annotations

from simulator.graph.op import Block, DType, Op, OpKind, Phase, Role, Task
from simulator.graph.opgraph import OpGraph
from simulator.plan.step import Fusion, LossKernels, Plan

#: The format the frameworks compute the loss in (``.float()``).
LOSS_DTYPE = DType.FP32
#: Bytes per row of the row-sized work in the forward: reads the int64 target (twice: the
#: two comparisons of the vocab range), the gathered target logit and the row's sum; writes the
#: bool mask, the int64 masked target, the target logit and the loss (fp32).
ROW_READ, ROW_WRITTEN = 8 + 8 + 4 + 4, 1 + 8 + 4 + 4
#: The backward's row work: reads the masked target, the mask and the loss gradient (fp32),
#: updates one logit per row (read and written).
GRAD_ROW_READ, GRAD_ROW_WRITTEN = 8 + 1 + 4 + 4, 4


def kernels(plan: Plan) -> str:
    """Which loss runs: ``"fused"``, ``"megatron"`` (eager, in place) or ``"torch"``."""
    if plan.loss_kernels is LossKernels.TORCH:
        return "torch"
    if plan.loss_kernels is LossKernels.MEGATRON:
        return "megatron"
    return "fused" if plan.fusion is Fusion.COMPILED else "megatron"


def vocab_head(forward: OpGraph, name: str) -> Op | None:
    """The vocabulary head whose logits the cross-entropy ``name`` reads, if it is one."""
    op = forward.op(name)
    if op.kind is not OpKind.LOSS or op.fn != "cross_entropy":
        return None
    inputs = forward.inputs(name)
    if len(inputs) != 1:
        return None
    head = forward.op(inputs[0])
    if head.role is not Role.VOCAB_HEAD or head.kind is not OpKind.MATMUL or not head.m:
        return None
    return head


def shape(head: Op) -> tuple[int, int, int]:
    """(logits elements, rows, bytes per logit) of a vocabulary head's output on this rank."""
    elements = head.m * head.n
    return elements, head.m, head.out_bytes // elements


def eager_passes(elements: int, rows: int, width: int) -> dict[str, tuple[int, int]]:
    """The eager kernels of the forward, fn -> (bytes read, bytes written), in order; the
    loss's own row work last (``"loss"``). ``width``: bytes per logit as the head writes them."""
    f = LOSS_DTYPE.bytes
    passes = {"to_copy": (elements * width, elements * f)} if width != f else {}
    passes.update({
        "max": (elements * f, rows * f),
        "sub": (elements * f + rows * f, elements * f),
        "exp": (elements * f, elements * f),
        "sum": (elements * f, rows * f),
        "div": (elements * f + rows * f, elements * f),
        "loss": (rows * ROW_READ, rows * ROW_WRITTEN),
    })
    return passes


def eager_grad_passes(elements: int, rows: int, width: int) -> dict[str, tuple[int, int]]:
    """The eager kernels of the backward, fn -> (bytes read, bytes written), in order."""
    f = LOSS_DTYPE.bytes
    passes = {"mul": (elements * f + rows * GRAD_ROW_READ, elements * f + rows * GRAD_ROW_WRITTEN)}
    if width != f:
        passes["to_copy"] = (elements * f, elements * width)
    return passes


def kept_bytes(head: Op, plan: Plan) -> int:
    """What the eager loss keeps for its backward: the fp32 softmax (the 16-bit logits are
    freed after the cast); 0 under ``Fusion.COMPILED`` (the fused kernel keeps the logits, as
    the loss op's saved input, and the per-row statistics)."""
    if kernels(plan) == "fused":
        return 0
    elements, _, _ = shape(head)
    return elements * LOSS_DTYPE.bytes   # torch: the log-softmax, kept for its backward


def add_forward(out: OpGraph, loss: Op, logits: str, head: Op, plan: Plan) -> None:
    """Add ``loss``'s forward kernels to ``out``, the ``LOSS`` op (same name) last."""
    elements, rows, width = shape(head)
    if kernels(plan) == "torch":
        _add_torch_forward(out, loss, logits, elements, rows, width)
        return
    if kernels(plan) == "fused":   # one fused kernel: per-row log-sum-exp kept
        stats = rows * LOSS_DTYPE.bytes
        out.add(loss.evolve(bytes_read=elements * width + rows * DType.INT64.bytes,
                            bytes_written=stats + rows * LOSS_DTYPE.bytes, stats_bytes=stats),
                [logits])
        return
    # Megatron's passes under compiled blocks run outside the compiled region (megatron)
    extra = EAGER if plan.fusion is Fusion.COMPILED else ()
    buffer = logits   # the tensor the passes work on in place
    previous = logits
    passes = eager_passes(elements, rows, width)
    for fn, (read, written) in passes.items():
        if fn == "loss":
            break
        new = fn in ("to_copy", "max", "sum")   # in-place passes write no new tensor
        out_bytes = (elements if fn == "to_copy" else rows) * LOSS_DTYPE.bytes if new else 0
        kind = {"to_copy": OpKind.COPY, "max": OpKind.REDUCTION,
                "sum": OpKind.REDUCTION}.get(fn, OpKind.ELEMENTWISE)
        op = Op(name=f"{loss.name}.{fn}", kind=kind, dtype=LOSS_DTYPE, fn=fn,
                flops=elements if fn != "to_copy" else 0, bytes_read=read,
                bytes_written=written, out_bytes=out_bytes, layer=loss.layer,
                block=Block.HEAD, extra=extra)
        out.add(op, [buffer] if previous == buffer else [buffer, previous])
        if fn == "to_copy":
            buffer = op.name
        previous = op.name
    read, written = passes["loss"]
    out.add(loss.evolve(bytes_read=read, bytes_written=written, out_bytes=LOSS_DTYPE.bytes,
                        flops=rows * 4, saves=(), extra=loss.extra + extra), [buffer, previous])


def add_backward(out: OpGraph, loss: Op, logits: str, head: Op, plan: Plan) -> str | None:
    """Add the eager backward kernels of ``loss`` to ``out`` after its forward (built by
    ``add_forward``); the name of the op writing the logits' gradient. None under
    ``Fusion.COMPILED``: the fused kernel's backward is a vector op's, derived as any."""
    if kernels(plan) == "fused":
        return None
    elements, rows, width = shape(head)
    if kernels(plan) == "torch":
        return _add_torch_backward(out, loss, elements, rows, width)
    extra = EAGER if plan.fusion is Fusion.COMPILED else ()   # megatron under compiled blocks
    buffer = f"{loss.name}.to_copy" if f"{loss.name}.to_copy" in out else logits
    previous = loss.name
    for fn, (read, written) in eager_grad_passes(elements, rows, width).items():
        last = fn == "to_copy" or width == LOSS_DTYPE.bytes
        op = Op(name=f"grad:{loss.name}.{fn}", kind=OpKind.COPY if fn == "to_copy"
                else OpKind.ELEMENTWISE, phase=Phase.BACKWARD, dtype=LOSS_DTYPE, fn=fn,
                flops=elements if fn == "mul" else 0, bytes_read=read, bytes_written=written,
                out_bytes=elements * width if last else 0, layer=loss.layer,
                block=Block.HEAD, forward_of=loss.name, task=Task.DATA_GRAD, extra=extra)
        out.add(op, [])
        out.add_edge(previous, op.name, 0, nbytes=0 if previous != loss.name else None)
        out.add_edge(buffer, op.name, 1)
        previous = op.name
    return previous


#: An op run by eager code outside the compiled region (``fuse_elementwise`` leaves it alone).
EAGER = (("eager", 1),)


def torch_passes(elements: int, rows: int, width: int) -> dict[str, tuple[int, int]]:
    """PyTorch's eager ``F.cross_entropy`` on an fp32 cast: fn -> (bytes read, bytes written),
    forward (``to_copy``, ``log_softmax``, ``loss``) then backward (``nll_backward``,
    ``log_softmax_backward``, ``to_copy_backward``). ``width``: bytes per logit of the head."""
    f = LOSS_DTYPE.bytes
    passes = {"to_copy": (elements * width, elements * f)} if width != f else {}
    passes.update({
        "log_softmax": (3 * elements * f, elements * f),
        "loss": (rows * (DType.INT64.bytes + f), f),
        "nll_backward": (rows * (DType.INT64.bytes + f), elements * f),
        "log_softmax_backward": (3 * elements * f, elements * f),
    })
    if width != f:
        passes["to_copy_backward"] = (elements * f, elements * width)
    return passes


def _add_torch_forward(out: OpGraph, loss: Op, logits: str, elements: int, rows: int,
                       width: int) -> None:
    passes = torch_passes(elements, rows, width)
    source = logits
    if "to_copy" in passes:
        read, written = passes["to_copy"]
        source = out.add(Op(name=f"{loss.name}.to_copy", kind=OpKind.COPY, dtype=LOSS_DTYPE,
                            fn="to_copy", bytes_read=read, bytes_written=written,
                            out_bytes=written, layer=loss.layer, block=Block.HEAD,
                            extra=EAGER), [logits])
    read, written = passes["log_softmax"]
    soft = out.add(Op(name=f"{loss.name}.log_softmax", kind=OpKind.SOFTMAX, dtype=LOSS_DTYPE,
                      fn="log_softmax", flops=4 * elements, bytes_read=read,
                      bytes_written=written, out_bytes=written, layer=loss.layer,
                      block=Block.HEAD, extra=EAGER), [source])
    read, written = passes["loss"]
    # the loss reads the log-softmax; ``pred`` (the 16-bit logits) is held until it returns
    out.add(loss.evolve(bytes_read=read, bytes_written=written, out_bytes=written,
                        flops=rows, saves=(), extra=EAGER), [soft])
    out.add_edge(logits, loss.name, 1, nbytes=0)


def _add_torch_backward(out: OpGraph, loss: Op, elements: int, rows: int, width: int) -> str:
    passes = torch_passes(elements, rows, width)
    previous = loss.name
    for fn in ("nll_backward", "log_softmax_backward", "to_copy_backward"):
        if fn not in passes:
            continue
        read, written = passes[fn]
        kind = {"nll_backward": OpKind.ELEMENTWISE, "log_softmax_backward": OpKind.SOFTMAX,
                "to_copy_backward": OpKind.COPY}[fn]
        op = Op(name=f"grad:{loss.name}.{fn}", kind=kind, phase=Phase.BACKWARD,
                dtype=LOSS_DTYPE, fn=fn, flops=3 * elements if fn == "log_softmax_backward"
                else 0, bytes_read=read, bytes_written=written, out_bytes=written,
                layer=loss.layer, block=Block.HEAD, forward_of=loss.name,
                task=Task.DATA_GRAD, extra=EAGER)
        out.add(op, [previous])
        if fn == "log_softmax_backward":   # reads the kept log-softmax
            out.add_edge(f"{loss.name}.log_softmax", op.name, 1)
        previous = op.name
    return previous


__all__ = ["add_backward", "add_forward", "eager_grad_passes", "eager_passes", "kept_bytes",
           "kernels", "torch_passes", "vocab_head"]
