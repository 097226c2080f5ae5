"""What each ATen operator becomes: a handler per operator family (views, copies, pointwise,
reductions, norms, pooling, embedding; tensor ops are in ``workloads.torch_tensor``, recurrent
layers in ``workloads.torch_rnn``; ``workloads.torch_ops.HANDLERS`` maps names to handlers).

A handler takes the emitter, the node and its resolved arguments, adds zero or more ops and
returns the node's value (a ``Src``, a tuple of them, or a plain value). Vector FLOPs per element
are approximate arithmetic counts for the cost model only (they never enter model FLOPs).
"""
from __future__ import annotations

from math import ceil, prod

from simulator.graph.op import CHANNEL_NORMS, DType, OpKind
from workloads.layers import STATS_DTYPE, VECTOR_FLOPS_PER_ELEMENT
from workloads.torch_trace import Meta
from workloads.torch_values import (Src, contiguous, first, main_out, packet, tensors,
                                    viewable)

# Arithmetic per output element of pointwise ops (cost model only); 1 where not listed.
POINTWISE_FLOPS = {**VECTOR_FLOPS_PER_ELEMENT, "sigmoid": 4, "tanh": 4, "elu": 4, "selu": 4,
                   "celu": 4, "softplus": 4, "mish": 8, "hardswish": 3, "hardsigmoid": 2,
                   "erf": 4, "sin": 4, "cos": 4, "lerp": 3, "addcmul": 2, "addcdiv": 2,
                   "glu": 5, "logit": 3, "upsample_bilinear2d": 8, "upsample_bicubic2d": 20,
                   "upsample_linear1d": 4, "upsample_trilinear3d": 16}
POINTWISE = frozenset(POINTWISE_FLOPS) | frozenset("""
    sub div neg abs exp exp2 log log2 log10 log1p expm1 sqrt rsqrt pow square reciprocal clamp
    clamp_min clamp_max hardtanh relu6 leaky_relu prelu rrelu threshold where masked_fill maximum
    minimum fmax fmin floor ceil round trunc frac sign sgn eq ne lt le gt ge logical_not
    logical_and logical_or logical_xor bitwise_and bitwise_or bitwise_xor bitwise_not isnan
    isinf isfinite fmod remainder floor_divide tril triu tan sinh cosh asin acos atan atan2
    hypot xlogy nan_to_num true_divide rsub fill masked_fill_ copysign heaviside polar
    upsample_nearest1d upsample_nearest2d upsample_nearest3d _upsample_nearest_exact1d
    _upsample_nearest_exact2d _upsample_nearest_exact3d _upsample_bilinear2d_aa
    grid_sampler_2d pixel_shuffle pixel_unshuffle channel_shuffle bernoulli one_hot
    """.split())
SAVES_OUTPUT = frozenset({"relu", "sigmoid", "tanh", "exp", "elu", "hardtanh", "relu6",
                          "threshold", "sqrt", "rsqrt"})
SAVES_NOTHING = frozenset({"add", "sub", "neg", "rsub", "fill", "one_hot", "pixel_shuffle",
                           "pixel_unshuffle", "channel_shuffle"})
VIEWS = frozenset("""
    view _unsafe_view permute transpose t expand expand_as unsqueeze squeeze unflatten slice
    select narrow alias split split_with_sizes chunk unbind view_as as_strided movedim moveaxis
    diagonal unfold tensor_split swapaxes swapdims real imag view_as_real view_as_complex
    lift_fresh_copy numpy_T mT mH adjoint _reshape_alias resolve_conj resolve_neg detach
    """.split())
MAYBE_VIEWS = frozenset({"reshape", "flatten", "reshape_as", "contiguous"})
COPIES = frozenset("""
    clone cat concat concatenate stack hstack vstack dstack repeat tile flip roll
    constant_pad_nd pad reflection_pad1d reflection_pad2d reflection_pad3d replication_pad1d
    replication_pad2d replication_pad3d repeat_interleave copy scatter scatter_add scatter_reduce
    index_add index_put index_copy index_fill masked_scatter slice_scatter select_scatter
    diagonal_scatter rot90 block_diag
    """.split())
GATHERS = frozenset({"index", "index_select", "gather", "take_along_dim", "take",
                     "masked_select"})
CASTS = frozenset({"_to_copy", "to", "type_as", "_to_dtype", "float", "half", "bfloat16"})
CREATION = frozenset("""
    zeros ones full empty arange zeros_like ones_like full_like empty_like rand randn randint
    rand_like randn_like randint_like new_zeros new_ones new_full new_empty eye linspace
    logspace scalar_tensor empty_strided new_empty_strided tril_indices triu_indices randperm
    normal scalar_tensor
    """.split())
REDUCTIONS = frozenset("""
    sum mean amax amin max min var std var_mean std_mean logsumexp prod norm linalg_vector_norm
    frobenius_norm argmax argmin all any cumsum cumprod count_nonzero nansum nanmean median
    nanmedian topk cummax cummin aminmax mode logcumsumexp sort argsort kthvalue
    """.split())
LOSSES = frozenset("""
    cross_entropy_loss nll_loss nll_loss2d nll_loss_nd mse_loss l1_loss smooth_l1_loss
    huber_loss binary_cross_entropy binary_cross_entropy_with_logits kl_div soft_margin_loss
    multilabel_soft_margin_loss margin_ranking_loss hinge_embedding_loss cosine_embedding_loss
    poisson_nll_loss triplet_margin_loss multi_margin_loss multilabel_margin_loss
    gaussian_nll_loss ctc_loss
    """.split())
NORMS = {"layer_norm": "layernorm", "native_layer_norm": "layernorm", "rms_norm": "rmsnorm",
         "_fused_rms_norm": "rmsnorm", "batch_norm": "batchnorm",
         "native_batch_norm": "batchnorm", "_native_batch_norm_legit": "batchnorm",
         "_native_batch_norm_legit_functional": "batchnorm",
         "_native_batch_norm_legit_no_training": "batchnorm", "cudnn_batch_norm": "batchnorm",
         "group_norm": "groupnorm", "native_group_norm": "groupnorm",
         "instance_norm": "instancenorm"}
POOLS = frozenset("""
    max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices
    max_pool3d_with_indices avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d
    adaptive_avg_pool2d adaptive_avg_pool3d _adaptive_avg_pool2d _adaptive_avg_pool3d
    adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d
    """.split())
DROPOUTS = frozenset({"dropout", "native_dropout", "feature_dropout", "alpha_dropout",
                      "feature_alpha_dropout"})
SOFTMAXES = {"softmax": "softmax", "_softmax": "softmax", "_safe_softmax": "softmax",
             "log_softmax": "log_softmax", "_log_softmax": "log_softmax"}
#: Calls that compute nothing: shape assertions, symbolic sizes.
SKIP = frozenset({"_assert_tensor_metadata", "_assert_async", "_assert_scalar",
                  "sym_constrain_range", "sym_constrain_range_for_size", "sym_size",
                  "sym_stride", "sym_numel", "sym_storage_offset", "_set_grad_enabled",
                  "set_grad_enabled", "_enter_autocast", "_exit_autocast"})


# -- handlers -----------------------------------------------------------------------------------
def view(em, node, args, kwargs):
    x, out = first(args), node.out
    grad = False if packet(node.target) == "detach" else None
    if isinstance(out, Meta):
        return x.view(out, grad)
    return tuple(x.view(m, grad) if isinstance(m, Meta) else None for m in out)


def maybe_view(em, node, args, kwargs):
    x, out = first(args), node.out
    if packet(node.target) == "contiguous" and contiguous(x.meta):
        return x.view(out)
    if packet(node.target) != "contiguous" and viewable(x.meta.shape, x.meta.stride, out.shape):
        return x.view(out)
    return copy(em, node, args, kwargs)


def copy(em, node, args, kwargs, fn: str = "copy"):
    name, grad = em.emit(OpKind.COPY, fn, list(tensors((args, kwargs))), main_out(node))
    return em.outputs(name, grad, node.out)


def gather(em, node, args, kwargs):
    """Reads as many elements of the source as it writes, and all of the index."""
    reads = list(tensors((args, kwargs)))
    out = main_out(node)[0]
    source = em.nbytes(reads[0].meta, reads[0].param is not None,
                       min(out.numel, reads[0].meta.numel))
    index = sum(em.read_bytes(s) for s in reads[1:])
    name, grad = em.emit(OpKind.COPY, "gather", reads, [out], bytes_read=source + index,
                         saves=("inputs",))
    return em.outputs(name, grad, node.out)


def cast(em, node, args, kwargs):
    x, out = first(args), node.out
    if isinstance(out, Meta) and (out.floating, out.itemsize) == (x.meta.floating,
                                                                  x.meta.itemsize):
        return x.view(out)
    return copy(em, node, args, kwargs, fn="cast")


def creation(em, node, args, kwargs):
    name, _ = em.emit(OpKind.ELEMENTWISE, "fill", [], main_out(node), grad=False)
    return em.outputs(name, False, node.out)


def pointwise(em, node, args, kwargs):
    fn = packet(node.target)
    reads = list(tensors((args, kwargs)))
    out = main_out(node)
    saves = (() if fn in SAVES_NOTHING else ("output",) if fn in SAVES_OUTPUT else ("inputs",))
    name, grad = em.emit(OpKind.ELEMENTWISE, fn, reads, out, saves=saves,
                         flops=POINTWISE_FLOPS.get(fn, 1) * out[0].numel)
    return em.outputs(name, grad, node.out)


def dropout(em, node, args, kwargs):
    x = first(args)
    p = args[1] if len(args) > 1 else kwargs.get("p", 0.5)
    train = args[2] if len(args) > 2 else kwargs.get("train", True)
    if not p or train is False:
        return x.view(main_out(node)[0])
    out = dropout_op(em, x, em.default_name())
    return out if isinstance(node.out, Meta) else (out, None)


def dropout_op(em, x: Src, name: str) -> Src:
    """Dropout keeps a 1-byte mask per element (Korthikanti et al. 2022, sec. 4.1)."""
    numel = x.meta.numel
    op, grad = em.emit(OpKind.ELEMENTWISE, "dropout", [x], [x.meta], name=name,
                       mask_bytes=numel, flops=VECTOR_FLOPS_PER_ELEMENT["dropout"] * numel)
    return Src(op, grad, x.meta, x.meta.numel)


def reduction(em, node, args, kwargs):
    reads = list(tensors((args, kwargs)))
    if len(reads) == 2 and packet(node.target) in ("max", "min"):  # elementwise maximum
        return pointwise(em, node, args, kwargs)
    fn = packet(node.target)
    saves = () if fn in ("sum", "mean", "cumsum", "nansum", "nanmean") else ("inputs",)
    name, grad = em.emit(OpKind.REDUCTION, fn, reads, [m for m in _flat(node.out)],
                         flops=sum(s.meta.numel for s in reads), saves=saves)
    return em.outputs(name, grad, node.out)


def loss(em, node, args, kwargs):
    """A loss inside the model: a reduction here; the model's final scalar becomes the loss."""
    reads = list(tensors((args, kwargs)))
    name, grad = em.emit(OpKind.REDUCTION, packet(node.target), reads, main_out(node),
                         flops=VECTOR_FLOPS_PER_ELEMENT["cross_entropy"] * reads[0].meta.numel,
                         saves=("inputs",))
    return em.outputs(name, grad, node.out)


def softmax(em, node, args, kwargs):
    x = first(args)
    name, grad = em.emit(OpKind.SOFTMAX, SOFTMAXES[packet(node.target)], [x], main_out(node),
                         flops=VECTOR_FLOPS_PER_ELEMENT["softmax"] * x.meta.numel,
                         saves=("output",))
    return em.outputs(name, grad, node.out)


def norm(em, node, args, kwargs):
    t = packet(node.target)
    fn, x = NORMS[t], first(args)
    shape, numel = x.meta.shape, x.meta.numel
    if fn in ("layernorm", "rmsnorm"):
        width = prod(args[1]) if isinstance(args[1], tuple) else args[1]
        stats = (2 if fn == "layernorm" else 1) * (numel // max(width, 1))
    elif fn == "batchnorm":
        stats = 2 * (shape[1] if len(shape) > 1 else shape[0])
    elif fn == "groupnorm":
        groups = args[1] if t == "group_norm" else args[6]
        stats = 2 * shape[0] * groups
    else:
        stats = 2 * shape[0] * shape[1]
    reads = list(tensors((args, kwargs)))
    flops = VECTOR_FLOPS_PER_ELEMENT.get(fn, VECTOR_FLOPS_PER_ELEMENT["layernorm"]) * numel
    # in training a channel norm reads its input twice (statistics, then normalise); with
    # running statistics (``..._no_training``) once
    again = em.read_bytes(x) if fn in CHANNEL_NORMS and "no_training" not in t else 0
    extra = (("channels", stats // 2),) if fn == "batchnorm" else ()
    name, grad = em.emit(OpKind.NORM, fn, reads, main_out(node), flops=flops, saves=("inputs",),
                         bytes_read=sum(em.read_bytes(s) for s in reads) + again,
                         stats_bytes=stats * STATS_DTYPE.bytes, extra=extra)
    return em.outputs(name, grad, node.out)


def pool(em, node, args, kwargs):
    t = packet(node.target)
    x, out = first(args), main_out(node)[0]
    spatial = int(next(c for c in t if c.isdigit()))
    in_sp, out_sp = x.meta.shape[-spatial:], out.shape[-spatial:]
    if t.startswith(("adaptive", "_adaptive")):
        window = prod(ceil(i / o) for i, o in zip(in_sp, out_sp))
    else:
        kernel = args[1] if len(args) > 1 else kwargs.get("kernel_size")
        kernel = (kernel,) * spatial if isinstance(kernel, int) else tuple(kernel)
        window = prod(kernel) if len(kernel) == spatial else prod(kernel) ** spatial
    is_max = "max" in t
    fn = "maxpool" if is_max else "avgpool"
    indices = out.numel * DType.INT64.bytes if is_max else 0
    name, grad = em.emit(OpKind.POOL, fn, [x], [out], mask_bytes=indices,
                         flops=VECTOR_FLOPS_PER_ELEMENT[fn] * out.numel * window,
                         extra=(("kernel", window),), saves=("inputs",) if is_max else ())
    return em.outputs(name, grad, node.out)


def embedding(em, node, args, kwargs):
    weight, ids = args[0], args[1]
    out = main_out(node)[0]
    vocab, width = weight.meta.shape[0], weight.meta.shape[-1]
    name, grad = em.emit(OpKind.EMBEDDING, "embedding", [weight, ids], [out],
                         edges=[ids] if ids.op else [], grad=weight.grad,
                         bytes_read=em.read_bytes(ids) + em.nbytes(out),
                         m=ids.meta.numel, n=width, k=vocab)
    return em.outputs(name, grad, node.out)


def embedding_bag(em, node, args, kwargs):
    """Sums (means, maxes) of looked-up rows: reads the ids, offsets and the rows it gathers."""
    weight, ids = args[0], args[1]
    out = main_out(node)[0]
    width = weight.meta.shape[-1]
    ids_and_offsets = [s for s in tensors((args[1:], kwargs))]
    rows = em.nbytes(weight.meta, True, ids.meta.numel * width)
    name, grad = em.emit(OpKind.EMBEDDING, "embedding_bag", [weight, *ids_and_offsets], [out],
                         edges=[s for s in ids_and_offsets if s.op], grad=weight.grad,
                         bytes_read=sum(em.read_bytes(s) for s in ids_and_offsets) + rows,
                         vector_flops=ids.meta.numel * width, m=ids.meta.numel, n=width,
                         k=weight.meta.shape[0])
    return em.outputs(name, grad, node.out)


def getitem(em, node, args, kwargs):
    container, index = args[0], args[1]
    return container[index] if isinstance(container, (tuple, list)) else None


def _flat(out):
    if isinstance(out, Meta):
        return [out]
    return [m for m in out if isinstance(m, Meta)] if isinstance(out, tuple) else []
