"""What eager frameworks do to q, k and v between the projections and the attention kernel.

A builder prices the rotary embedding as one op per tensor reading and writing it once (a fused
kernel: Megatron-LM's ``--apply-rope-fusion``, Transformer Engine's, Liger's) and lets a fused
attention kernel read q, k and v where the projections wrote them. Frameworks that run the
rotary embedding as PyTorch code, or keep their activations sequence-first, move these tensors
several more times; this pass adds those kernels to a training step.

**Rotary embeddings in eager PyTorch** (``Fusion.EAGER``). GPT-NeoX (EleutherAI/gpt-neox at
53112bf, 2023-02-15, the code Pythia was trained with: ``megatron/model/positional_embeddings.py``
``apply_rotary_pos_emb`` and ``rotate_half``; ``megatron/model/transformer.py``
``ParallelSelfAttention.forward``) and Hugging Face's models (``apply_rotary_pos_emb`` in
``modeling_llama.py``, ``modeling_gpt_neox.py``) compute ``q * cos + rotate_half(q) * sin`` on
the rotated part of each head, ``rotate_half(x) = cat(-x2, x1)``, each line its own kernel. With
``N`` the bytes of q (or k) and ``f`` the fraction of each head rotated (``rotary_pct``), per
tensor:

=====================================  =============  =============
kernel                                 read           written
=====================================  =============  =============
``q_rot * cos``                        f N            f N
``-x2`` (rotate_half)                  f N / 2        f N / 2
``cat((-x2, x1))`` (rotate_half)       f N            f N
``rotate_half(q_rot) * sin``           f N            f N
``+``                                  2 f N          f N
``cat((q_rot, q_pass))`` (f < 1 only)  N              N
=====================================  =============  =============

The builder's rope op stands for the last kernel (the concatenation with the pass-through part;
with a whole-head rotary, the add, which reads ``N`` more); the others are added before it:
five kernels moving 10 f N bytes (f < 1), four moving 7 N (f = 1), against the fused kernel's
2 N. The cos and sin tables (sequence x rotated dims) are left out. In the backward the
rotation's kernels are counted as the forward's (autograd's products by cos and sin and the
negation). With f < 1 the concatenation's backward is views, but each of the two slices
(``x[..., :r]``, ``x[..., r:]``) has a backward of its own, PyTorch's ``slice_backward``
(``aten/src/ATen/native/TensorShape.cpp``: ``at::zeros`` of the input's sizes, then
``copy_`` into the slice): a zero-filled tensor of the input's size (``N`` written) into which
the slice's gradient is copied (``f N`` and ``(1 - f) N``, read and written), and autograd then
sums the two gradients of ``x`` (the rope op's backward: ``2 N`` read, ``N`` written):
``slice_backward_kernels``, 7 N per tensor in all where the forward's concatenation moves
2 N. Under ``Fusion.COMPILED`` the rotary stays one kernel.

**Scripted** (``Plan.rotary = scripted``, under ``Fusion.EAGER``). GPT-NeoX's fp16 path runs
``apply_rotary_pos_emb``, a ``@torch.jit.script`` function (``positional_embeddings.py``; its
bf16 path ``apply_rotary_pos_emb_torch`` is not scripted: "jitting fails with bf16",
``transformer.py`` ``apply_rotary_fn = apply_rotary_pos_emb_torch if self.bf16 else
apply_rotary_pos_emb``), and ``transformer.py`` selects the legacy executor with GPU fusion at
import (``_jit_set_profiling_mode(False)``, ``_jit_set_profiling_executor(False)``,
``_jit_override_can_fuse_on_gpu(True)``). Its fuser (``torch/csrc/jit/passes/graph_fuser.cpp``)
fuses simple maps (mul, neg, add) and takes a ``cat`` only as a fusion group's exit node
(``prim::FusedConcat``), whose output no node inside a group may read
(``mustRemainAsFusionGroupOutput``). So rotate_half's ``cat((-x2, x1))``, which ``* sin`` reads,
splits the chain in two kernels: the negation with the concatenation (reading both halves,
``f N``, writing ``f N``) and ``q * cos + rotated * sin`` (reading ``2 f N``, writing ``f N``);
the slices are views. The concatenation with the pass-through part runs outside the script
(eager, ``N`` and ``N``: the rope op). Per tensor, f < 1: two kernels before the rope op, 5 f N
+ 2 N bytes in all; f = 1: the rotate_half kernel before the rope op, which is the fused
product-and-sum and reads ``2 N``. The backward is counted as the forward's, with the slices'
backward as above (the slicing runs outside the script).

**Layout copies around a fused attention kernel** (``Plan.attention_layout``). FlashAttention
takes q, k and v as ``[batch, seq, heads, dim]``; Megatron-LM (2021-2023) and GPT-NeoX keep
activations sequence-first (``[seq, batch, hidden]``), so each call copies:

- ``sbhd``: Megatron-LM's ``FlashSelfAttention`` path (``megatron/model/transformer.py``, 2023:
  ``rearrange(x, 's b ... -> b s ...').contiguous()`` of q, k and v, the output
  ``rearrange(..., 'b s h d -> s b (h d)').contiguous()``): q, k, v and the output each read and
  written once in every forward (and recomputed forward). In the backward the kernel takes the
  output gradient as a strided view (FlashAttention-2's ``maybe_contiguous`` copies only a
  tensor whose last stride is not 1): no copy.
- ``sbhd-packed``: GPT-NeoX's ``ParallelSelfAttention.flash_attention`` (53112bf):
  ``transpose(0, 1).reshape(b * s, 1, np, hn)`` of q, k and v (a copy each: the transpose is
  not contiguous), ``torch.concat`` of the three into the packed ``[b * s, 3, np, hn]`` tensor
  (``flash_attn_unpadded_qkvpacked_func``), and ``context_layer.permute(2, 0, 1, 3)
  .contiguous()`` of the output: q, k and v moved twice, the output once, per forward. In the
  backward the output gradient, a transposed view, is reshaped to ``[b * s, np, hn]`` (a copy);
  the packed gradient is split by views.
- ``unpadded``: llm-foundry's ``flash_attn_fn`` (mosaicml/llm-foundry 5e85bd6,
  ``llmfoundry/models/layers/attention.py``) unpads q, k and v with flash-attn's
  ``bert_padding.unpad_input`` and pads the output back with ``pad_input`` (flash-attn v2.4.2
  ``flash_attn/bert_padding.py``), whether or not any token is padding: each forward gathers q,
  k and v (``IndexFirstAxis``: ``torch.gather``, a read and a write each) and pads the output
  (``IndexPutFirstAxis``: ``torch.zeros`` of it, then ``output[indices] = values``); the backward
  gathers the output gradient (``grad_output[indices]``) and scatters dq, dk, dv each into a
  zeroed tensor (``torch.zeros``, then ``scatter_``). A zero-fill writes its tensor, reading
  nothing. Each ``unpad_input`` (of q, then k, then v) first synchronises the host with the
  device twice, its ``torch.nonzero`` of the mask and the ``.item()`` of the longest sequence
  (on CUDA both wait for the device: PyTorch's ``torch.nonzero`` docs, "causes host-device
  synchronization"): the gather carries ``sync`` 2 (``simulator.cost.host.sync_calls``), in
  every forward and recomputed forward. Not priced: the index tensors (``repeat`` of the
  token indices, a stride-0 view) and the few small kernels computing them (the mask's sum,
  max and cumulative sum).

Each copy is one kernel reading and writing its tensor, run on the attention's chain: the
input copies before the kernel, the output copy after it, before its consumers. FlashAttention's
own recomputation inside its backward moves nothing. Not modelled: the transient copies' memory
(they keep no output, as ``simulator.training.layout``'s transposes), and the split of a fused
query_key_value projection's output gradient (a ``cat`` of dq, dk, dv in GPT-NeoX and
Megatron-LM; hwsim's graphs project q, k and v separately).
"""
from __future__ import annotations

from simulator.graph.op import Op, OpKind, Task
from simulator.graph.opgraph import OpGraph
from simulator.plan.step import AttentionLayout, Fusion, Plan, Rotary

ROTARY_FN = "rotary_eager"
LAYOUT_FN = "attention_layout"
#: host synchronisations in each of flash-attn's ``unpad_input`` calls: ``torch.nonzero`` of
#: the mask and ``.item()`` of the longest sequence (flash-attn v2.4.2 bert_padding.py)
UNPAD_SYNCS = 2


def rotary_fraction(op: Op) -> float | None:
    """The fraction of each head a rotary op rotates (None: ``op`` is no rotary op)."""
    facts = dict(op.extra)
    if "rotary_dims" not in facts:
        return None
    return facts["rotary_dims"] / facts["head_dim"]


def eager_rotary_kernels(fraction: float, nbytes: int) -> list[tuple[str, OpKind, int, int]]:
    """The kernels added before a rotary op of ``nbytes`` bytes per tensor rotating
    ``fraction`` of each head: (label, kind, bytes read, bytes written) each."""
    rot = round(fraction * nbytes)
    kernels = [("mul_cos", OpKind.ELEMENTWISE, rot, rot),
               ("neg", OpKind.ELEMENTWISE, rot // 2, rot // 2),
               ("cat_half", OpKind.COPY, rot, rot),
               ("mul_sin", OpKind.ELEMENTWISE, rot, rot)]
    if rot < nbytes:   # the add is a kernel of its own; the rope op is the final cat
        kernels.append(("add", OpKind.ELEMENTWISE, 2 * rot, rot))
    return kernels


def scripted_rotary_kernels(fraction: float,
                            nbytes: int) -> list[tuple[str, OpKind, int, int]]:
    """As ``eager_rotary_kernels``, for GPT-NeoX's ``torch.jit.script``-ed rotary under the
    legacy fuser: rotate_half's negation and concatenation (one ``FusedConcat`` group), then,
    where the rope op is the pass-through concatenation (f < 1), the fused products and sum."""
    rot = round(fraction * nbytes)
    kernels = [("rotate_half", OpKind.ELEMENTWISE, rot, rot)]
    if rot < nbytes:   # the fused mul/mul/add is a kernel of its own; the rope op is the cat
        kernels.append(("mul_add", OpKind.ELEMENTWISE, 2 * rot, rot))
    return kernels


def layout_copies(layout: AttentionLayout, task: Task, inputs: list[int],
                  out: int) -> tuple[list[int], list[int]]:
    """The tensors (bytes) a fused attention call of ``task`` copies before and after its
    kernel, given its inputs' (q, k, v) and output's bytes."""
    if layout is AttentionLayout.NATIVE:
        return [], []
    if layout is AttentionLayout.UNPADDED:   # gathered in, scattered out (bert_padding)
        return ([out], list(inputs)) if task is Task.DATA_GRAD else (list(inputs), [out])
    if task is Task.DATA_GRAD:   # the output gradient, made contiguous for the packed API
        return ([out] if layout is AttentionLayout.SBHD_PACKED else []), []
    before = list(inputs)
    if layout is AttentionLayout.SBHD_PACKED:
        before.append(sum(inputs))   # the concatenation into the packed qkv tensor
    return before, [out]


def layout_fills(layout: AttentionLayout, task: Task, inputs: list[int], out: int) -> list[int]:
    """The tensors (bytes) zero-filled before the copies after the kernel (``layout_copies``'
    second list, one each, in order): bert_padding's scatters write into ``torch.zeros``."""
    if layout is not AttentionLayout.UNPADDED:
        return []
    return list(inputs) if task is Task.DATA_GRAD else [out]


def add_qkv_kernels(step: OpGraph, plan: Plan) -> OpGraph:
    """``step`` with eager rotary kernels (``Fusion.EAGER``) and the attention's layout copies
    (``plan.attention_layout``) added; returns ``step``."""
    eager = plan.fusion is Fusion.EAGER
    for name in step.names():
        op = step.op(name)
        fraction = rotary_fraction(op) if op.kind is OpKind.ELEMENTWISE else None
        if eager and fraction is not None and op.out_bytes:
            _rotary(step, name, op, fraction, plan.rotary)
        elif op.kind is OpKind.ATTENTION and plan.attention_layout is not AttentionLayout.NATIVE:
            _layout(step, name, op, plan.attention_layout)
    return step


def _kernel(op: Op, label: str, kind: OpKind, read: int, written: int, fn: str) -> Op:
    vector = written // op.dtype.bytes if kind is OpKind.ELEMENTWISE else 0
    return Op(name=f"{label}:{op.name}", kind=kind, phase=op.phase, dtype=op.dtype, fn=fn,
              flops=vector, bytes_read=read, bytes_written=written, out_bytes=0,
              layer=op.layer, block=op.block, forward_of=op.forward_of or op.name, task=op.task)


def _chain_before(step: OpGraph, name: str, ops: list[Op]) -> None:
    """Run ``ops`` in order once ``name``'s inputs exist, ``name`` after the last."""
    inputs = step.inputs(name)
    previous = list(inputs)
    for op in ops:
        step.add(op, [])
        for index, src in enumerate(previous):
            step.add_edge(src, op.name, index, nbytes=0)
        if previous:
            step.issue_early(op.name)
        previous = [op.name]
    if ops:
        step.add_edge(ops[-1].name, name, len(inputs), nbytes=0)


def slice_backward_kernels(fraction: float,
                           nbytes: int) -> list[tuple[str, OpKind, int, int]]:
    """The backward of a partly rotated tensor's two slices (``x[..., :r]``, ``x[..., r:]``) of
    ``nbytes`` bytes, rotating ``fraction`` of each head: PyTorch's ``slice_backward`` zero-fills
    a tensor of the input's size and copies the slice's gradient into it, for each slice
    (``aten/src/ATen/native/TensorShape.cpp``); the two gradients are then summed (the rope op's
    backward: 2 N read, N written). The concatenation's backward is views."""
    rot = round(fraction * nbytes)
    return [("fill_rot", OpKind.COPY, 0, nbytes), ("slice_rot", OpKind.COPY, rot, rot),
            ("fill_pass", OpKind.COPY, 0, nbytes),
            ("slice_pass", OpKind.COPY, nbytes - rot, nbytes - rot)]


def _rotary(step: OpGraph, name: str, op: Op, fraction: float, rotary: Rotary) -> None:
    kernels = (scripted_rotary_kernels if rotary is Rotary.SCRIPTED
               else eager_rotary_kernels)(fraction, op.out_bytes)
    sliced = fraction < 1 and op.task is Task.DATA_GRAD
    if sliced:   # the slices' backward before the sum of their gradients (the rope op)
        kernels = kernels + slice_backward_kernels(fraction, op.out_bytes)
    _chain_before(step, name, [_kernel(op, f"rope.{label}", kind, read, written, ROTARY_FN)
                               for label, kind, read, written in kernels])
    if fraction >= 1 or sliced:   # the rope op is the add (or the fused sum, or the sum of
        #                           the slices' gradients): it reads both terms
        step.nx.nodes[name]["op"] = op.evolve(bytes_read=op.bytes_read + op.out_bytes)


def _layout(step: OpGraph, name: str, op: Op, layout: AttentionLayout) -> None:
    if op.task not in (Task.FORWARD, Task.RECOMPUTE, Task.DATA_GRAD) or \
            (op.task is Task.RECOMPUTE and not op.out_bytes):
        return   # FlashAttention's recomputation inside its backward moves nothing
    forward = step.op(op.forward_of) if op.forward_of in step else op
    sources = step.inputs(forward.name) if forward.name in step else []
    inputs = [step.op(src).out_bytes for src in sources if step.op(src).out_bytes] \
        or [forward.bytes_read]
    before, after = layout_copies(layout, op.task, inputs, forward.out_bytes)
    fills = layout_fills(layout, op.task, inputs, forward.out_bytes)
    copies = [_kernel(op, f"layout{i}", OpKind.COPY, size, size, LAYOUT_FN)
              for i, size in enumerate(before)]
    if layout is AttentionLayout.UNPADDED and op.task is not Task.DATA_GRAD:
        # unpad_input's nonzero and .item() before each gather: two host synchronisations
        copies = [copy.evolve(extra=(*copy.extra, ("sync", UNPAD_SYNCS))) for copy in copies]
    _chain_before(step, name, copies)
    for i, size in enumerate(after):
        kernels = [_kernel(op, f"layout_out{i}", OpKind.COPY, size, size, LAYOUT_FN)]
        if i < len(fills):   # the zeroed tensor the copy scatters into, filled first
            kernels.insert(0, _kernel(op, f"layout_fill{i}", OpKind.COPY, 0, fills[i],
                                      LAYOUT_FN))
        consumers = step.consumers(name)
        previous = name
        for kernel in kernels:
            step.add(kernel, [previous])
            step.issue_early(kernel.name)
            previous = kernel.name
        for dst in consumers:
            step.add_edge(previous, dst, len(step.inputs(dst)), nbytes=0)


__all__ = ["LAYOUT_FN", "ROTARY_FN", "add_qkv_kernels", "eager_rotary_kernels", "layout_copies",
           "rotary_fraction", "scripted_rotary_kernels", "slice_backward_kernels"]
