"""cuDNN's batch-norm/convolution fusion (``Plan.conv_norm_fusion``): the training step's
batch norms folded into the convolutions around them.

What the libraries do. cuDNN's fused-ops API (``cudnnFusedOps_t``, cuDNN 7.6 to 8.x, its
legacy API reference; the same patterns are cuDNN frontend graphs: the "SBRCS", "scale-bias-
relu-wgrad", "DBN Add Relu" and "Dgrad Drelu DBNweight" samples of NVIDIA/cudnn-frontend,
samples/cpp/convolution/fprop.cpp, wgrads.cpp, dgrads.cpp and samples/cpp/norm/batchnorm.cpp,
commit 3929da2) runs a ResNet's conv -> batch norm -> ReLU -> conv chain as
``CUDNN_FUSED_SCALE_BIAS_ACTIVATION_CONV_BNSTATS`` ("[per channel scale], [per channel bias],
[activation], convolution, [generate BN stats]"), ``CUDNN_FUSED_BN_FINALIZE_STATISTICS_TRAINING``
(per-channel vectors only), ``CUDNN_FUSED_SCALE_BIAS_ACTIVATION_WGRAD`` (the weight gradient of a
convolution whose input is ``relu(x * scale + bias)``, computed from the raw ``x``) and
``CUDNN_FUSED_SCALE_BIAS_ADD_ACTIVATION_GEN_BITMASK`` (a block's last norm, the residual add and
the ReLU in one kernel writing a one-bit ReLU mask). NVIDIA's MXNet ResNet-50 for MLPerf
(mlcommons/training_results_v4.0 commit 6fe9543, e.g.
smc-ac-power/benchmarks/resnet/implementations/mxnet/symbols/resnet-v1b-mainloop-fl.py, lines
209-302: ``NormConvolution``, ``BNStatsFinalize``, ``ScaleBiasAddRelu``) builds its bottlenecks
from them; its operators (MXNet's src/operator/nn/cudnn/cudnn_norm_convolution-inl.h and
cudnn_scale_bias_add_relu-inl.h, by Dick Carter and Kartikeya Goyal) run the backward of a
norm + ReLU as one NHWC batch-norm backward kernel with the ReLU fused (``nhwc_bn_op.Backward``,
the ReLU's mask recomputed from the raw input and the statistics, or read from the bitmask at
a block's end, where the same kernel writes the residual's gradient too), and a convolution's
data gradient that must be summed with another gradient of the same tensor is written with
``beta = 1`` (``kAddTo``): it reads the gradient already there instead of a separate sum.

What changes in the graph, per batch norm ``bn`` whose input is a convolution ``c`` (its
tensor ``t`` of c's output size):

- forward: ``c`` computes the statistics in its epilogue (2 vector FLOPs per output element:
  a sum and a sum of squares), so the norm's statistics pass (one read of ``t``) is gone; where
  every reader of ``bn`` (or of its ReLU) is a convolution, the scale, bias and ReLU run in
  those convolutions' prologues: ``bn`` and its ReLU write nothing (2 t, or t + t read back by
  the ReLU, no longer moved) and their ops merge into ``c``, whose raw output the readers read;
  where a reader is not a convolution (the stem's max pool, a block's residual add), one pass
  applies them: ``bn`` reads ``t`` once and writes its output (a residual add takes ``bn`` in:
  it reads the raw ``t`` and its ReLU merges into it, writing its output and the one-bit mask);
- backward: the ReLU's gradient merges into ``bn``'s (its separate pass, read the gradient and
  the mask or output, write the gradient, is gone; a block end's kernel also writes the
  residual's gradient, and reads the one-bit mask in both passes); a gradient sum whose
  producers include a convolution's data gradient merges into that data gradient, which reads
  each other gradient once more (``kAddTo``).

Not modelled: the convolutions' prologue arithmetic (3 vector FLOPs per input element) and
BN finalisation's per-channel kernels (a few thousand elements); the batch-norm backward's own
passes are hwsim's two-pass channel norm (``CHANNEL_NORMS``: statistics, then the gradient),
as without the fusion -- MXNet's persistent NHWC kernels can keep part of a tile on chip
between the two, which is not credited. Recomputed copies (``Recompute.FULL``) are left as
they are.

Where it runs (``check_device``, called by ``simulate``): cuDNN's, so NVIDIA GPUs only, and of
compute capability 8.0 or later: cudnn-frontend 3929da2 samples/cpp/convolution/fprop.cpp
lines 456-527 skip the "SBRCS" (scale-bias-ReLU-conv-genstats) graph unless the GPU is Ampere
or Hopper and cuDNN is 8.8 or later, and NVIDIA's MLPerf MXNet ResNet-50 sets
``MXNET_EXTENDED_NORMCONV_SUPPORT=1 # supports Arch 80 NormConv fusion`` (training_results_v4.0
6fe9543, smc-ac-power/benchmarks/resnet/implementations/mxnet/config_SMCH100_common.sh line 3).
Later GPUs (Ada's sm89, Blackwell) are let through, although that sample skips them too
(its ``is_ampere_arch`` is 80 <= cc < 89): no source says they lack the fusion. Half precision only (``Plan``): every
sample of these graphs (fprop.cpp, wgrads.cpp, dgrads.cpp, norm/batchnorm.cpp, the legacy
fusion_sample.cpp, test/python/test_conv_genstats.py at 3929da2) runs fp16 inputs and outputs;
no bf16 source was found.
"""
from __future__ import annotations

from hardware_specs.spec import DeviceClass
from simulator.errors import PlanError
from simulator.graph.op import DType, Op, OpKind, Phase, Task
from simulator.graph.opgraph import OpGraph
from simulator.training.fusion import rebuild_merged

#: Vector FLOPs per output element of the statistics epilogue: a sum and a sum of squares.
STATS_FLOPS_PER_ELEMENT = 2
#: Bits of the ReLU mask per element that a block end's fused kernel writes
#: (``CUDNN_FUSED_SCALE_BIAS_ADD_ACTIVATION_GEN_BITMASK``: one bit each, packed in int32s).
MASK_BITS_PER_ELEMENT = 1


#: The catalogue's NVIDIA GPUs older than compute capability 8.0 (CUDA's compute capability
#: table, developer.nvidia.com/cuda-gpus: Tesla P100 6.0, P4 6.1, V100 7.0, T4 7.5; the specs'
#: headers name their Pascal, Volta and Turing dies).
PRE_SM80 = ("p100-pcie-16gb", "p4", "t4", "v100-pcie-32gb", "v100-sxm2-32gb")


def check_device(device) -> None:
    """PlanError unless ``device`` runs cuDNN's fused batch-norm convolutions: an NVIDIA GPU of
    compute capability 8.0 or later (the module's docstring cites where). Besides the
    catalogue's names, a spec without a bf16 peak is taken as older than 8.0 (bf16 tensor cores
    came with compute capability 8.0: a calibrated or user's copy of a V100 or T4 spec, named
    otherwise, is refused too)."""
    if (device.vendor != "NVIDIA" or device.name in PRE_SM80
            or DType.BF16 not in device.peak_flops_per_s):
        raise PlanError(f"conv_norm_fusion = true needs an NVIDIA GPU of compute capability 8.0 "
                        f"or later (cuDNN's fused batch-norm convolutions), not {device.name} "
                        "(drop --conv-norm-fusion)")


#: The vendors whose GPUs run apex's NHWC batch-norm kernels (``check_norm_act_device``).
NORM_ACT_VENDORS = ("NVIDIA", "AMD")


def check_norm_act_device(device) -> None:
    """PlanError unless ``device`` runs the NHWC batch-norm kernels ``fuse_norm_act`` prices:
    a GPU of NVIDIA's (CUDA) or AMD's (ROCm). apex 051cba7's
    apex/contrib/csrc/groupbn/nhwc_batch_norm_kernel.h builds both ways (``USE_ROCM``:
    hip_runtime.h, a 64-bit ``bitmask_t`` for the wavefront's ballot,
    ``__builtin_amdgcn_wave_barrier``; batch_norm.h launches with ``hipLaunchCooperativeKernel``
    and describes tensors with MIOpen) and its setup.py builds ``bnp`` (the groupbn extension)
    for ROCm PyTorch too; no compute-capability floor (apex cross-compiles from sm60, and the
    kernels use no tensor cores). CPUs, TPUs, Gaudi, Trainium, IPUs and FPGAs have no such
    kernel: their frameworks or graph compilers choose their own fusions."""
    if device.device_class is not DeviceClass.GPU or device.vendor not in NORM_ACT_VENDORS:
        raise PlanError(f"norm_act_fusion = true needs an NVIDIA or AMD GPU (apex's NHWC "
                        f"batch-norm kernels, CUDA or ROCm), not {device.name} "
                        "(drop --norm-act-fusion)")


def _fwd(graph: OpGraph, name: str) -> bool:
    return graph.op(name).phase is Phase.FORWARD


def _is(graph: OpGraph, name: str, kind: OpKind, fn: str | None = None) -> bool:
    op = graph.op(name)
    return op.kind is kind and op.phase is Phase.FORWARD and (fn is None or op.fn == fn)


def _readers(graph: OpGraph, name: str) -> list[str]:
    return [c for c in graph.consumers(name) if _fwd(graph, c)]


def _grad(graph: OpGraph, forward: str) -> str | None:
    """The backward op computing the gradient of forward op ``forward``'s inputs."""
    for name in graph.consumers(forward):
        op = graph.op(name)
        if op.forward_of == forward and op.task is Task.DATA_GRAD:
            return name
    return None


def _mask_bytes(op: Op) -> int:
    elements = op.out_bytes // op.dtype.bytes
    return -(-elements * MASK_BITS_PER_ELEMENT // 8)


def fuse_conv_norm(step: OpGraph) -> OpGraph:
    """``step`` with its batch norms fused into the convolutions around them (the module's
    docstring says how); ``step`` is not changed. A graph with no convolution followed by a
    batch norm comes back as it is."""
    merged: dict[str, str] = {}      # op name -> the op it now lives in
    ops: dict[str, Op] = {}          # host name -> its new record
    for bn in step.names():
        if not _is(step, bn, OpKind.NORM, "batchnorm") or len(step.inputs(bn)) != 1:
            continue
        conv = step.inputs(bn)[0]
        if not _is(step, conv, OpKind.CONV):
            continue
        readers = _readers(step, bn)
        relu = readers[0] if len(readers) == 1 and _is(step, readers[0], OpKind.ELEMENTWISE,
                                                       "relu") else None
        if all(_is(step, r, OpKind.CONV) for r in _readers(step, relu or bn)):
            _into_conv(step, conv, bn, relu, merged, ops)
        elif relu is None and len(readers) == 1 and _is(step, readers[0], OpKind.ELEMENTWISE,
                                                        "add"):
            _block_end(step, conv, bn, readers[0], merged, ops)
        # else (the stem's norm, read by a max pool): a batch norm of its own, as it was
    _add_to(step, merged, ops)
    return rebuild_merged(step, merged, ops)


def _get(step: OpGraph, ops: dict[str, Op], name: str) -> Op:
    return ops.get(name, step.op(name))


def _with_stats(step: OpGraph, ops: dict[str, Op], conv: str) -> None:
    """Convolution ``conv`` computes its output's batch-norm statistics in its epilogue."""
    c = _get(step, ops, conv)
    ops[conv] = c.evolve(vector_flops=c.vector_flops
                         + STATS_FLOPS_PER_ELEMENT * (c.out_bytes // c.dtype.bytes))


def _take_params(step: OpGraph, ops: dict[str, Op], host: str, norm: Op) -> None:
    """``host`` owns the merged norm's scale and shift (its weight gradient and update)."""
    h = _get(step, ops, host)
    ops[host] = h.evolve(params=h.params + norm.params, param_tensors=h.tensors + norm.tensors)


def _into_conv(step: OpGraph, conv: str, bn: str, relu: str | None, merged: dict[str, str],
               ops: dict[str, Op]) -> None:
    """conv -> bn (-> ReLU) read by convolutions only: the statistics in ``conv``'s epilogue,
    scale, shift and ReLU in the readers' prologues (and the weight gradients'): ``bn`` and
    its ReLU move no tensor; their backward is one kernel (the ReLU's mask recomputed)."""
    _with_stats(step, ops, conv)
    _take_params(step, ops, conv, step.op(bn))
    merged[bn] = conv
    if relu is None:
        return
    merged[relu] = conv
    grad_bn, grad_relu = _grad(step, bn), _grad(step, relu)
    if grad_bn is not None and grad_relu is not None:
        merged[grad_relu] = grad_bn   # it read the gradient the norm's backward now reads


def _block_end(step: OpGraph, conv: str, bn: str, add: str, merged: dict[str, str],
               ops: dict[str, Op]) -> None:
    """conv -> bn -> residual add (-> ReLU): one kernel applies the norm(s), adds, and applies
    the ReLU writing its one-bit mask; the backward of the add's first norm takes the ReLU's
    gradient in, reads the mask in both its passes and writes the residual's gradient too."""
    _with_stats(step, ops, conv)
    _take_params(step, ops, add, step.op(bn))
    merged[bn] = add
    readers = _readers(step, add)
    relu = readers[0] if len(readers) == 1 and _is(step, readers[0], OpKind.ELEMENTWISE,
                                                   "relu") else None
    if relu is None:
        return
    act, mask = step.op(relu), _mask_bytes(step.op(relu))
    if relu not in merged:   # the first of the add's norms to come here merges the ReLU
        plus = _get(step, ops, add)
        merged[relu] = add
        ops[add] = plus.evolve(bytes_written=act.bytes_written + mask,
                               out_bytes=act.out_bytes, mask_bytes=plus.mask_bytes + mask,
                               vector_flops=plus.vector_flops + act.flops + act.vector_flops)
    if step.inputs(add)[0] == bn:
        _relu_grad_into_norm(step, bn, relu, mask, merged, ops)


def _add_to(step: OpGraph, merged: dict[str, str], ops: dict) -> None:
    """Gradient sums with a convolution's data gradient among their producers: the data
    gradient adds into the buffer the other gradients are in (``kAddTo``)."""
    for name in step.names():
        op = step.op(name)
        if op.task is not Task.GRAD_SUM or op.phase is not Phase.BACKWARD:
            continue
        producers = step.inputs(name)
        dgrads = [p for p in producers if step.op(p).kind is OpKind.CONV
                  and step.op(p).task is Task.DATA_GRAD and p not in merged]
        if not dgrads:
            continue
        host = dgrads[0]
        dgrad = ops.get(host, step.op(host))
        ops[host] = dgrad.evolve(bytes_read=dgrad.bytes_read
                                 + (len(producers) - 1) * op.out_bytes)
        merged[name] = host


def fuse_norm_act(step: OpGraph) -> OpGraph:
    """``step`` with each batch norm fused with the ReLU after it, and a residual block's last
    norm with the residual add and its ReLU (``Plan.norm_act_fusion``); ``step`` is not changed.
    The convolutions are left as they are: this is the norm-side half of ``fuse_conv_norm``.

    What the kernels do: NVIDIA's MXNet ResNet-50 for MLPerf without NormConvolution
    (training_results_v4.0 6fe9543, smc-ac-power/benchmarks/resnet/implementations/mxnet:
    ``run_and_time.sh`` --fuse-bn-relu 1 --fuse-bn-add-relu 1, ``symbols/resnet-v1b-fl.py``
    ``BatchNorm(act_type='relu')`` and ``BatchNormAddRelu``) runs the NHWC batch-norm kernels
    whose public copy is apex's (NVIDIA/apex 051cba7, apex/contrib/csrc/groupbn/
    nhwc_batch_norm_kernel.h): the forward normalises, applies the ReLU and writes once
    (``USE_RELU``); with ``USE_ADD_RELU`` it also reads the residual (``gmem_src1``), adds,
    applies the ReLU and writes a one-bit mask per element (``gmem_relu_bitmask``); the backward
    masks the gradient itself, recomputing the ReLU's input from x and the statistics
    (``relu_bwd``) or reading the bitmask, and the add-ReLU backward writes the residual's
    gradient too (``gmem_dst1``). So, per batch norm ``bn`` read by one ReLU: the ReLU runs in
    ``bn``'s kernel (its output written, not ``bn``'s) and its gradient in ``bn``'s backward;
    per ``bn`` that is the first input of a residual add: the add and its ReLU run in ``bn``'s
    kernel, which reads the other addend, writes the sum's ReLU and the mask; ``bn``'s backward
    takes the ReLU's gradient in, reads the mask in both its passes and writes the residual's
    gradient. The norm's own two passes (statistics, then apply; hwsim's channel norm) stay.
    Not modelled: the kernels' persistence (a few pixels a thread kept on chip across the
    grid-wide reduction; at a ResNet layer's millions of pixels a few percent of the tensor)."""
    merged: dict[str, str] = {}
    ops: dict[str, Op] = {}
    for bn in step.names():
        if not _is(step, bn, OpKind.NORM, "batchnorm") or len(step.inputs(bn)) != 1:
            continue
        readers = _readers(step, bn)
        if len(readers) != 1:
            continue
        if _is(step, readers[0], OpKind.ELEMENTWISE, "relu"):
            _norm_relu(step, bn, readers[0], merged, ops)
        elif (_is(step, readers[0], OpKind.ELEMENTWISE, "add")
              and step.inputs(readers[0])[0] == bn):
            _norm_add_relu(step, bn, readers[0], merged, ops)
    return rebuild_merged(step, merged, ops)


def _norm_relu(step: OpGraph, bn: str, relu: str, merged: dict[str, str],
               ops: dict[str, Op]) -> None:
    """bn -> ReLU in one kernel writing the ReLU's output; the ReLU's gradient in bn's."""
    norm, act = _get(step, ops, bn), step.op(relu)
    ops[bn] = norm.evolve(vector_flops=norm.vector_flops + act.flops + act.vector_flops)
    merged[relu] = bn
    grad_bn, grad_relu = _grad(step, bn), _grad(step, relu)
    if grad_bn is not None and grad_relu is not None:
        merged[grad_relu] = grad_bn   # it read the gradient the norm's backward now reads


def _norm_add_relu(step: OpGraph, bn: str, add: str, merged: dict[str, str],
                   ops: dict[str, Op]) -> None:
    """bn -> residual add (-> ReLU) in bn's kernel: it reads the other addend and writes the
    (ReLU'd) sum and the mask; its backward reads the mask in both passes and writes the
    residual's gradient."""
    norm, plus = _get(step, ops, bn), step.op(add)
    others = sum(step.op(i).out_bytes for i in step.inputs(add)[1:])
    readers = _readers(step, add)
    relu = readers[0] if len(readers) == 1 and _is(step, readers[0], OpKind.ELEMENTWISE,
                                                   "relu") else None
    flops = norm.vector_flops + plus.flops + plus.vector_flops
    merged[add] = bn
    if relu is None:
        ops[bn] = norm.evolve(bytes_read=norm.bytes_read + others, vector_flops=flops)
        return
    act, mask = step.op(relu), _mask_bytes(step.op(relu))
    merged[relu] = bn
    ops[bn] = norm.evolve(bytes_read=norm.bytes_read + others,
                          bytes_written=act.bytes_written + mask, out_bytes=act.out_bytes,
                          mask_bytes=norm.mask_bytes + mask,
                          vector_flops=flops + act.flops + act.vector_flops)
    _relu_grad_into_norm(step, bn, relu, mask, merged, ops)


def _relu_grad_into_norm(step: OpGraph, bn: str, relu: str, mask: int,
                         merged: dict[str, str], ops: dict[str, Op]) -> None:
    """A block end's backward (both fusions): the ReLU's gradient merges into ``bn``'s
    backward, which reads the one-bit mask in both its passes and, where another op also
    reads the ReLU's gradient (the residual branch), writes that gradient too."""
    grad_relu, grad_bn = _grad(step, relu), _grad(step, bn)
    if grad_relu is None or grad_bn is None:
        return
    dnorm = _get(step, ops, grad_bn)
    rest = [c for c in step.consumers(grad_relu) if c != grad_bn]
    written = step.op(grad_relu).out_bytes if rest else 0   # the residual's gradient
    ops[grad_bn] = dnorm.evolve(bytes_read=dnorm.bytes_read + 2 * mask,
                                bytes_written=dnorm.bytes_written + written,
                                out_bytes=dnorm.out_bytes + written)
    merged[grad_relu] = grad_bn


__all__ = ["MASK_BITS_PER_ELEMENT", "NORM_ACT_VENDORS", "PRE_SM80", "STATS_FLOPS_PER_ELEMENT",
           "check_device", "check_norm_act_device", "fuse_conv_norm", "fuse_norm_act"]
