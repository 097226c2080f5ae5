"""Tensor ops of an imported trace: matmuls (linear, mm, bmm, matmul, einsum, ...),
convolutions (1-3-D, strided, dilated, grouped, transposed) and fused attention.

FLOPs equal ``torch.utils.flop_counter``'s forward counts: 2 x multiply-accumulates, bias not
counted; a transposed convolution counts each input element times the weight (Cin x Cout/groups
x kernel); ``scaled_dot_product_attention`` is its two products, QK^T and PV, over the whole
score matrix (causal or not). Shape facts are the implicit GEMM: a convolution is m = N x
output positions, n = Cout, k = Cin/groups x kernel; a transposed one m = N x input positions,
n = Cout x kernel, k = Cin/groups.

Which operand gets which gradient (``simulator.training.backward``): a product of an activation and a
trainable parameter is weighted (the parameter is no graph edge; backward = data gradient, if
the activation requires grad, + weight gradient); any other product gives each operand that
requires grad its own data gradient, as autograd does.
"""
from __future__ import annotations

from math import prod

from simulator.graph.op import Block, OpKind
from simulator.graph.conv_backend import onednn_paths
from workloads.layers import STATS_DTYPE
from workloads.torch_values import Src, einsum_flops, first, gemm, main_out, packet

MATMULS = frozenset({"linear", "mm", "bmm", "matmul", "addmm", "baddbmm", "addbmm", "mv",
                     "addmv", "dot", "vdot", "inner", "outer", "ger", "addr", "einsum",
                     "tensordot", "_scaled_mm"})
CONVS = frozenset({"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                   "conv_transpose3d", "convolution", "_convolution", "cudnn_convolution",
                   "mkldnn_convolution"})
#: Positions of the geometry arguments: conv2d(input, weight, bias, stride, padding, dilation,
#: groups); conv_transpose2d(..., stride, padding, output_padding, groups, dilation);
#: convolution(..., stride, padding, dilation, transposed, output_padding, groups).
CONV_ARGS = {"stride": 3, "padding": 4, "dilation": 5, "groups": 6}
CONV_TRANSPOSE_ARGS = {"stride": 3, "padding": 4, "groups": 6, "dilation": 7}
CONVOLUTION_ARGS = {"stride": 3, "padding": 4, "dilation": 5, "groups": 8}
#: Fused attention operators, and the position of ``is_causal`` in their arguments
#: (``dropout_p`` is the one before it).
ATTENTIONS = {"scaled_dot_product_attention": 5, "_scaled_dot_product_flash_attention": 4,
              "_scaled_dot_product_flash_attention_for_cpu": 4,
              "_scaled_dot_product_efficient_attention": 6,
              "_scaled_dot_product_cudnn_attention": 6}


def matmul(em, node, args, kwargs):
    t, out = packet(node.target), main_out(node)[0]
    bias: list[Src] = []
    if t == "einsum":
        operands = [s for s in args[1] if isinstance(s, Src)]
        if len(operands) < 2:
            return _one_operand_einsum(em, node, args, kwargs)
        flops, (batch, m, n, k) = einsum_flops(args[0], [s.meta.shape for s in operands])
    else:
        if t == "linear":
            operands = [args[0], args[1]]
            bias = [b for b in (*args[2:3], kwargs.get("bias")) if isinstance(b, Src)]
            w = args[1].meta.shape
            k, n = w[-1], (w[0] if len(w) == 2 else 1)
            batch, m = 1, args[0].meta.numel // max(k, 1)
        elif t in ("addmm", "baddbmm", "addbmm", "addmv", "addr"):
            bias, operands = [args[0]], [args[1], args[2]]
            batch, m, n, k = gemm(operands[0].meta.shape, operands[1].meta.shape)
            if t == "addbmm":  # a sum of batch products
                batch = operands[0].meta.shape[0]
        elif t == "tensordot":
            operands = [args[0], args[1]]
            dims = args[2] if isinstance(args[2], tuple) else tuple(range(-args[2], 0))
            k = prod(operands[0].meta.shape[d] for d in dims)
            batch = 1
            m, n = (s.meta.numel // max(k, 1) for s in operands)
        elif t in ("outer", "ger"):
            operands = [args[0], args[1]]
            batch, m, n, k = 1, args[0].meta.numel, args[1].meta.numel, 1
        elif t in ("dot", "vdot", "inner") and len(args[0].meta.shape) == 1:
            operands = [args[0], args[1]]
            batch, m, n, k = 1, 1, 1, args[0].meta.numel
        else:
            operands = [args[0], args[1]]
            batch, m, n, k = gemm(operands[0].meta.shape, operands[1].meta.shape)
        flops = 2 * batch * m * n * k
    return tensor_op(em, node, OpKind.MATMUL, "linear", "matmul", operands, bias, out,
                     flops=flops, m=m, n=n, k=k, batch=batch)


def conv(em, node, args, kwargs):
    t, out = packet(node.target), main_out(node)[0]
    x, w = args[0], args[1]
    bias = [b for b in args[2:3] if isinstance(b, Src)]
    if t in ("conv1d", "conv2d", "conv3d"):
        places, transposed = CONV_ARGS, False
    elif t.startswith("conv_transpose"):
        places, transposed = CONV_TRANSPOSE_ARGS, True
    else:
        places, transposed = CONVOLUTION_ARGS, bool(_arg(args, 6, False))
    stride, pad, dilation, groups = (_arg(args, places[key], default) for key, default in
                                     (("stride", 1), ("padding", 0), ("dilation", 1),
                                      ("groups", 1)))
    wshape = w.meta.shape
    spatial = len(wshape) - 2
    n_batch = x.meta.shape[0] if len(x.meta.shape) == len(wshape) else 1
    kernel = prod(wshape[2:])
    in_sp, out_sp = prod(x.meta.shape[-spatial:]), prod(out.shape[-spatial:])
    flops = 2 * n_batch * (in_sp if transposed else out_sp) * prod(wshape)
    if transposed:
        m, n, k = n_batch * in_sp, wshape[1] * groups * kernel, wshape[0] // groups
        cin = wshape[0]
    else:
        m, n, k = n_batch * out_sp, wshape[0], wshape[1] * kernel
        cin = wshape[1] * groups
    name = f"conv_transpose{spatial}d" if transposed else f"conv{spatial}d"
    # the library PyTorch's CPU build runs it with, and what that copies (conv_backend)
    onednn = onednn_paths(images=n_batch, input_elements=x.meta.numel,
                          kernel=tuple(wshape[2:]), strided=_beyond_one(stride),
                          dilated=_beyond_one(dilation), groups=groups,
                          transposed=transposed, floating=x.meta.floating) \
        if spatial <= 2 else 0
    extra = (("kernel", kernel), ("stride", _first_int(stride)), ("pad", _first_int(pad)),
             ("dilation", _first_int(dilation)), ("groups", groups), ("cin", cin),
             ("transposed", int(transposed)), ("onednn", onednn),
             ("reorder_input", x.meta.numel), ("reorder_output", prod(out.shape)))
    return tensor_op(em, node, OpKind.CONV, name, "conv", [x, w], bias, out, flops=flops,
                     m=m, n=n, k=k, extra=extra)


def attention(em, node, args, kwargs):
    t, out = packet(node.target), main_out(node)[0]
    q, k, v = args[0], args[1], args[2]
    mask = [s for s in (*args[3:4], kwargs.get("attn_mask"), kwargs.get("attn_bias"))
            if isinstance(s, Src)]
    at = ATTENTIONS[t]
    causal = bool(args[at] if len(args) > at else kwargs.get("is_causal", False))
    # dropout_p sits just before is_causal in every one of them
    dropout = args[at - 1] if len(args) > at - 1 else kwargs.get("dropout_p", 0.0)
    facts = (("dropout", 1),) if isinstance(dropout, (int, float)) and dropout > 0 else ()
    if mask:   # its producer is the op's last input (simulator.training.fusion.math_attention)
        facts += (("mask", 1),)
    length, width = q.meta.shape[-2], q.meta.shape[-1]
    keys, v_width = k.meta.shape[-2], v.meta.shape[-1]
    batch = q.meta.numel // max(length * width, 1)
    flops = 2 * batch * length * keys * (width + v_width)
    name, grad = em.emit(OpKind.ATTENTION, "sdpa", [q, k, v, *mask], [out], flops=flops,
                         m=length, n=keys, k=width, batch=batch, block=Block.ATTN,
                         extra=(("causal", int(causal)), *facts), saves=("inputs", "output"),
                         stats_bytes=batch * length * STATS_DTYPE.bytes)
    return em.outputs(name, grad, node.out)


def tensor_op(em, node, kind, weighted_fn, plain_fn, operands, bias, out, **fields):
    """One matmul / convolution: weighted if it multiplies an activation by a trainable
    parameter; else each operand that requires grad is an edge (read twice: aliased)."""
    params = [s for s in operands if s.param is not None]
    data = [s for s in operands if s.param is None]
    weighted = len(params) == 1 and len(data) == 1 and params[0].grad
    edges = [s for s in data if s.op]
    if not weighted and len(edges) == 2 and edges[0].op == edges[1].op:
        edges[1] = em.alias(edges[1], f"{em.default_name()}.operand1")
    name, grad = em.emit(kind, weighted_fn if weighted else plain_fn, [*operands, *bias], [out],
                         edges=edges, saves=("inputs",), **fields)
    return em.outputs(name, grad, node.out)


def _one_operand_einsum(em, node, args, kwargs):
    """A permutation is a view; a trace or a sum over letters is a reduction."""
    x, out = first(args), main_out(node)[0]
    if out.numel == x.meta.numel:
        return x.view(out)
    name, grad = em.emit(OpKind.REDUCTION, "sum", [x], [out], flops=x.meta.numel)
    return em.outputs(name, grad, node.out)


def _arg(args: tuple, index: int, default):
    return args[index] if len(args) > index else default


def _beyond_one(value) -> bool:
    """A stride or dilation argument above 1 in some dimension."""
    values = value if isinstance(value, (tuple, list)) else (value,)
    return any(isinstance(v, int) and v > 1 for v in values)


def _first_int(value) -> int:
    if isinstance(value, (tuple, list)):
        return int(value[0]) if value else 0
    return value if isinstance(value, int) else 0
