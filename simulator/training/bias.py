"""A linear's bias added by a kernel of its own, as eager PyTorch did before cuBLASLt's epilogue.

hwsim's linear op prices ``x W^T + b`` as its GEMM: the bias is added in the GEMM's epilogue
(cuBLASLt's bias epilogue, Transformer Engine, a compiler). Eager code of the PyTorch 1.x era
did not, and ``Plan.bias_add = separate`` (``Fusion.EAGER`` only) prices what it ran instead:
after each biased linear's GEMM, in every forward and recomputed forward, one elementwise
kernel reading the output and the bias and writing the output (``bias_add:<linear>``). Its
gradient passes through to the GEMM without a kernel (autograd's ``AddBackward``); the bias
gradient, a sum over the rows, is priced with the linear's backward under eager fusion
(``simulator.training.backward``'s ``bgrad``).

GPT-NeoX (EleutherAI/gpt-neox 53112bf, 2023-02-15, the code Pythia ran; the same at v1.0,
71df4d5, whose Dockerfile the Pythia README's reproduction builds, installs
``torch==1.8.1+cu111``):

- ``query_key_value`` is a ``ColumnParallelLinear`` without ``skip_bias_add``: ``F.linear(input,
  weight, bias)`` on the ``[s, b, h]`` activations (``megatron/mpu/layers.py``). Before PyTorch
  1.12 ``at::linear`` took ``addmm`` only for a 2-D input and otherwise ran ``matmul`` then
  ``output.add_(bias)`` (``aten/src/ATen/native/Linear.cpp``; 1.12 added the flattened 3-D
  path), a kernel reading and writing the output.
- the attention's ``dense`` and the MLP's ``dense_4h_to_h`` return their bias unadded
  (``skip_bias_add=True``), which the layer adds in ``bias_dropout_add`` (``x + bias``, then
  dropout, ``megatron/model/fused_bias_dropout.py``): unscripted, since ``bias_dropout_fusion``
  defaults to false and no Pythia config sets it, so ``x + bias`` is a kernel of its own (the
  dropout at p = 0 returns its input, ``aten/src/ATen/native/Dropout.cpp`` ``_dropout_impl``;
  the residual sums after it are the layer's own adds).
- ``dense_h_to_4h`` also skips its bias, but ``bias-gelu-fusion`` (set in every Pythia config)
  adds it inside the scripted ``bias_gelu`` kernel (``megatron/model/activations.py``): a
  linear whose only reader is an activation keeps its bias in that activation's op.

The vocabulary head's bias (Phi) stays in the head, whose output the loss's own kernels read
(``simulator.training.loss``). Not modelled: the launch of one kernel for GPT-NeoX's packed
``query_key_value`` where hwsim's graphs project q, k and v apart (three adds moving the same
bytes), and, under tensor or sequence parallelism, a row-parallel output's bias added after
its reduction (the add is placed just after the GEMM, on the same bytes per rank without
sequence parallelism, 1 / tp of them with it).
"""
from __future__ import annotations

from simulator.graph.op import Op, OpKind, Role
from simulator.graph.opgraph import OpGraph
from simulator.plan.step import BiasAdd, Fusion, Plan

#: Activations whose kernel takes a linear's bias (Megatron-LM's and GPT-NeoX's bias_gelu)
ACTIVATIONS = frozenset({"gelu", "relu", "silu"})
BIAS_FN = "add"   # an addition: its gradient passes through (backward.PASSTHROUGH)


def bias_elements(op: Op) -> int:
    """A linear's bias elements (0: none, or not a plain linear): its parameters past the
    weight, or all of them when the weight is another op's (tied)."""
    if op.fn != "linear" or op.frozen or op.batch != 1 or not op.params:
        return 0
    weight = op.k * op.n
    return op.params - weight if op.params >= weight else op.params


def separate_bias(graph: OpGraph, name: str) -> int:
    """The bias elements eager code adds after linear ``name``'s GEMM (0: none)."""
    op = graph.op(name)
    readers = [graph.op(reader) for reader in graph.consumers(name)]
    if op.role is Role.VOCAB_HEAD or (readers and all(reader.fn in ACTIVATIONS
                                                      for reader in readers)):
        return 0
    return bias_elements(op)


def bias_kernel(op: Op, bias: int) -> Op:
    """The kernel adding ``bias`` elements to linear ``op``'s output: reads the output and the
    bias, writes the output."""
    return Op(name=f"bias_add:{op.name}", kind=OpKind.ELEMENTWISE, phase=op.phase,
              dtype=op.dtype, fn=BIAS_FN, flops=op.out_bytes // op.dtype.bytes,
              bytes_read=op.out_bytes + bias * op.dtype.bytes, bytes_written=op.out_bytes,
              out_bytes=op.out_bytes, layer=op.layer, block=op.block, role=op.role)


def add_bias_kernels(forward: OpGraph, plan: Plan) -> OpGraph:
    """``forward`` with a bias kernel after each biased linear whose bias eager code adds apart
    (``plan.bias_add`` separate, eager fusion), between the linear and its readers; a new
    graph (``forward`` itself when there are none)."""
    if plan.bias_add is not BiasAdd.SEPARATE or plan.fusion is not Fusion.EAGER:
        return forward
    linears = [(name, bias) for name in forward.names()
               if (bias := separate_bias(forward, name))]
    if not linears:
        return forward
    out = OpGraph(forward.name)
    out.nx = forward.nx.copy()
    for name, bias in linears:
        kernel = bias_kernel(forward.op(name), bias)
        readers = [(reader, dict(out.nx.edges[name, reader])) for reader in out.consumers(name)]
        out.add(kernel, [name])
        out.issue_early(kernel.name)   # issued just after its GEMM
        for reader, edge in readers:
            out.nx.remove_edge(name, reader)
            out.add_edge(kernel.name, reader, edge["index"], edge["bytes"])
    return out


def note(plan: Plan) -> str | None:
    """A result's note where ``plan`` asks for separate bias kernels that its fusion does not
    run (compiled fusion adds a bias inside its fused kernels: the step is the fused one)."""
    if plan.bias_add is BiasAdd.SEPARATE and plan.fusion is not Fusion.EAGER:
        return (f"bias_add separate applies under eager fusion only: with {plan.fusion.value} "
                "fusion each bias is added inside a fused kernel, as with bias_add fused "
                "(simulator.training.bias); give --fusion eager for separate bias kernels")
    return None


__all__ = ["ACTIVATIONS", "add_bias_kernels", "bias_elements", "bias_kernel", "note",
           "separate_bias"]
