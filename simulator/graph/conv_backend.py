"""Which CPU library runs a PyTorch convolution, and the layout copies it makes.

PyTorch's CPU build runs a convolution either with oneDNN (``aten::mkldnn_convolution``) or
with its own im2col-and-GEMM code (``aten::_slow_conv2d_forward``, "Slow2d"), chosen per call
by ``ConvParams::use_mkldnn`` (pytorch/pytorch ``aten/src/ATen/native/Convolution.cpp``; the
installed torch's choice is ``torch._C._select_conv_backend``, which
``tests/test_conv_backend.py`` checks this rule against): oneDNN for a floating-point
(fp32, bf16, fp16) non-transposed convolution when

    (strided or dilated or batch >= 16 or the kernel is not 1 x 1 or threads > 1)
    and (groups > 1 or both kernel sides > 3 or batch > 1 or the input has > 20480 elements)

("For 1x1 filters, MKLDNN is faster than THNN when multi-threaded, but THNN is faster when
single-threaded", its comment). A 1-D convolution is viewed as a 2-D one of height 1.

oneDNN computes in a blocked layout (``nChw16c``): on PyTorch's default contiguous (NCHW)
tensors each primitive copies its activation operands into that layout and its result back
(``reorder`` primitives). ``ONEDNN_VERBOSE=1`` on torch 2.13.0's CPU build (oneDNN 3.x,
``tests/data/onednn_conv_reorders.csv``) shows per training step of one convolution: the
forward reorders its input and its output, the data gradient its output gradient and the
input gradient, the weight gradient its input and output gradient again: each pass copies
the input's and the output's elements once each way. Channels-last tensors (``nhwc``) are
computed on as they are: only the (small) weights are reordered.

``onednn_paths`` is recorded on each convolution op (``Op.extra`` ``onednn``; its input and
output elements as ``reorder_input`` and ``reorder_output``) so that a CPU's pricing
(``simulator.cost.roofline.reorder_seconds``) knows, for the threads it runs on, whether the
call goes to oneDNN and what it copies.
"""
from __future__ import annotations

#: ``onednn`` bits: the call runs on oneDNN with one thread / with several.
ONE_THREAD, THREADS = 1, 2
#: ``ConvParams::use_mkldnn``'s input size below which a batch-1 3 x 3 (or smaller)
#: convolution stays on PyTorch's own code ("for some case, native is faster").
SMALL_INPUT = 20480


def onednn_paths(*, images: int, input_elements: int, kernel: tuple[int, ...],
                 strided: bool, dilated: bool, groups: int, transposed: bool = False,
                 floating: bool = True) -> int:
    """The ``onednn`` bits of a convolution of ``images`` samples: ``ONE_THREAD`` if PyTorch
    runs it on oneDNN with one thread, ``THREADS`` if with more (0: never; transposed and
    non-floating convolutions are left at 0, not modelled)."""
    if transposed or not floating:
        return 0
    sides = tuple(kernel[-2:]) if len(kernel) >= 2 else (1, *kernel)
    pointwise = all(side == 1 for side in sides)
    worth = (groups > 1 or all(side > 3 for side in sides) or images > 1
             or input_elements > SMALL_INPUT)
    if not worth:
        return 0
    single = strided or dilated or images >= 16 or not pointwise
    return THREADS | (ONE_THREAD if single else 0)


__all__ = ["ONE_THREAD", "SMALL_INPUT", "THREADS", "onednn_paths"]
