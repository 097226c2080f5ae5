"""The layout transposes of 16-bit convolutions on NCHW tensors (PyTorch's default format).

cuDNN's tensor-core convolution kernels work in NHWC; given NCHW tensors (PyTorch's contiguous
default), cuDNN transposes each convolution's activation input to NHWC and its output back
("The cuDNN library may use padding, folding, and NCHW-to-NHWC transformations to call the
Tensor Core operations", cuDNN documentation, Legacy API, "Data and Filter Formats", and its
"Tensor Transformations" section; the NCHW path's transpose kernels are what
``torch.channels_last`` removes: PyTorch's "Channels Last Memory Format" tutorial, and Composer's
ChannelsLast method card, whose NVIDIA diagram shows the two transposes). Each transpose reads
its tensor once and writes it once.

So every 16-bit convolution (forward, data gradient, weight gradient, recomputed forward) gets
one copy op before it (``fn`` ``LAYOUT_FN``), reading and writing its activations -- input(s)
and output; its weights, a few MB, are left out -- that the convolution waits for. Both
transposes of a call sit in that op: on the convolution's chain their order does not change
the time. ``Plan.channels_last`` (tensors in NHWC) adds none, and neither do fp32 and tf32
convolutions, whose NCHW kernels cuDNN runs directly (NeuSight's fp32 conv kernels,
``tests/data/neusight_conv_kernels.csv``: none of them transposes).

Only NVIDIA devices get them: ``simulator.api.simulate`` runs every other device as if
``channels_last`` were given (XLA on TPUs, Gaudi's and Neuron's graph compilers and MIOpen choose
their own layouts). Not modelled: the transient NHWC copies' memory (the op keeps no output).
"""
from __future__ import annotations

from simulator.graph.op import DType, Op, OpKind, Task
from simulator.graph.opgraph import OpGraph

LAYOUT_FN = "nchw_nhwc"
#: Formats whose convolutions run on tensor cores in NHWC.
TENSOR_CORE_FORMATS = frozenset({DType.FP16, DType.BF16, DType.FP8})


def activation_bytes(op: Op) -> int:
    """The activation bytes a convolution reads and writes (its weights' or weight gradient's
    bytes left out: ``n x k`` of them, m x k x n being its implicit GEMM)."""
    weights = op.bytes_written if op.task is Task.WEIGHT_GRAD else op.n * op.k * op.dtype.bytes
    return max(op.bytes_read + op.bytes_written - weights, 0)


def add_layout_transposes(step: OpGraph, channels_last: bool) -> OpGraph:
    """``step`` with a transpose op before each of its 16-bit convolutions (none with
    ``channels_last``); returns ``step``."""
    if channels_last:
        return step
    for name in step.names():
        op = step.op(name)
        if op.kind is not OpKind.CONV or op.dtype not in TENSOR_CORE_FORMATS:
            continue
        moved = activation_bytes(op)
        inputs = step.inputs(name)
        copy = Op(name=f"layout:{name}", kind=OpKind.COPY, phase=op.phase, dtype=op.dtype,
                  fn=LAYOUT_FN, bytes_read=moved, bytes_written=moved, out_bytes=0,
                  layer=op.layer, block=op.block, forward_of=op.forward_of or op.name,
                  task=op.task)
        step.add(copy, [])
        for index, src in enumerate(inputs):   # it runs once the convolution's inputs exist
            step.add_edge(src, copy.name, index, nbytes=0)
        if inputs:
            step.issue_early(copy.name)
        step.add_edge(copy.name, name, len(inputs), nbytes=0)
    return step


__all__ = ["LAYOUT_FN", "TENSOR_CORE_FORMATS", "activation_bytes", "add_layout_transposes"]
