"""The layout transposes of 16-bit convolutions on NCHW tensors (PyTorch's default format).

cuDNN's tensor-core convolution kernels work in NHWC; given NCHW tensors (PyTorch's contiguous
default), cuDNN transposes each convolution's activation input to NHWC and its output back
("The cuDNN library may use padding, folding, and NCHW-to-NHWC transformations to call the
Tensor Core operations", cuDNN documentation, Legacy API, "Data and Filter Formats", and its
"Tensor Transformations" section; the NCHW path's transpose kernels are what
``torch.channels_last`` removes: PyTorch's "Channels Last Memory Format" tutorial, and Composer's
ChannelsLast method card, whose NVIDIA diagram shows the two transposes). Each transpose reads
its tensor once and writes it once.

So every 16-bit convolution (forward, data gradient, weight gradient, recomputed forward) but
those below gets one copy op before it (``fn`` ``LAYOUT_FN``), reading and writing its
activations -- input(s) and output; its weights, a few MB, are left out -- that the convolution
waits for. Both transposes of a call sit in that op: on the convolution's chain their order
does not change the time. ``Plan.channels_last`` (tensors in NHWC) adds none, and neither do
fp32 and tf32 convolutions, whose NCHW kernels cuDNN runs directly (NeuSight's fp32 conv
kernels, ``tests/data/neusight_conv_kernels.csv``: none of them transposes).

The exception, ``runs_as_gemm``: the forward (and recomputed forward) and the data gradient of
a 1x1 convolution with stride 1, no padding and one group get none. On NCHW tensors such a
convolution is a GEMM per image, ``W[K, C] x X[C, H*W]`` forward and ``W^T x dY[K, H*W]`` for
the data gradient, over matrices already in memory in that order, and cuDNN runs it as a
(batched) GEMM without transposing. Kernel-level evidence, nothing fitted:

1. Ladder's cuDNN fp16 timings (microsoft/BitBLAS ``osdi24_ladder_artifact`` 8dc7a39,
   ``tests/data/ladder_cudnn_conv_fp16.csv``; NCHW, cuDNN 8.9.2): at batch 128 the 512 -> 128
   channel 1x1 forward at 28^2 took 115 us on an A100 80GB PCIe and 279 us on a V100 PCIe,
   where transposing its input (103 MB read and written) and then streaming the GEMM's 128 MB
   take at least 106 + 66 = 172 us and 228 + 143 = 371 us at the datasheet bandwidths (1,935
   and 900 GB/s); the 64 -> 64 channel one at 56^2 took 205 us on the V100 against at least
   114 + 114 us.
2. A PyTorch profile of ten NCHW fp16 ResNet-50 training steps (batch 128, A100 40GB, NGC
   PyTorch 23.07, cuDNN 8.9.3; apuaaChen/EVT_AE 917438b ``benchmark/resnet/torch_result.md``)
   runs about 70 of the step's 158 convolution calls as plain GEMM kernels (``ampere_*gemm*``,
   ``cutlass_80_tensorop_*gemm*``, 73 a step less the classifier's 3): the 66 forward and
   data-gradient calls of ResNet-50's 33 stride-1 1x1 convolutions. Its transpose kernels
   (``nchwToNhwcKernel`` 158 calls a step, ``nhwcToNchwKernel`` 68) take 10.7 ms a step; hwsim's
   copies take 24.6 ms without this exception and 12.8 ms with it (``a100-sxm4-40gb``; 4.6 ms
   if no 1x1 convolution transposed at all; ``tests/test_layout.py``).

Kept: a 1x1 weight gradient (it sums over every image's pixels, which NCHW does not hold as one
matrix dimension: that profile also runs ``reduce_wgrad_nchw_helper`` kernels), a strided 1x1
(its input is a subsampled, not a dense, matrix), and grouped, padded or transposed 1x1
convolutions (nothing measured).

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


#: The tasks of a convolution that a 1x1 one runs as a GEMM on NCHW tensors (``runs_as_gemm``).
GEMM_TASKS = frozenset({Task.FORWARD, Task.RECOMPUTE, Task.DATA_GRAD})


def runs_as_gemm(op: Op) -> bool:
    """Whether cuDNN runs convolution ``op`` on NCHW tensors as a GEMM, untransposed: the
    forward (or recomputed forward) or data gradient of a 1x1, stride-1, unpadded, ungrouped,
    non-transposed convolution (module docstring). The kernel's size is read from the implicit
    GEMM (``k = Cin / groups x kernel elements``), which every builder of a convolution sets."""
    facts = dict(op.extra)
    cin, groups = facts.get("cin", 0), facts.get("groups", 1)
    return (op.task in GEMM_TASKS and groups == 1 and cin > 0 and op.k == cin
            and facts.get("stride", 1) == 1 and facts.get("pad", 0) == 0
            and not facts.get("transposed", 0))


def add_layout_transposes(step: OpGraph, channels_last: bool) -> OpGraph:
    """``step`` with a transpose op before each of its 16-bit convolutions (none with
    ``channels_last``, none before those that ``runs_as_gemm``); returns ``step``."""
    if channels_last:
        return step
    for name in step.names():
        op = step.op(name)
        if op.kind is not OpKind.CONV or op.dtype not in TENSOR_CORE_FORMATS \
                or runs_as_gemm(op):
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


__all__ = ["GEMM_TASKS", "LAYOUT_FN", "TENSOR_CORE_FORMATS", "activation_bytes",
           "add_layout_transposes", "runs_as_gemm"]
