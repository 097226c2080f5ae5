"""One function per ONNX operator family: ``handler(converter, index, node)`` adds the node's op.

Counts follow ``workloads.layers`` (see ``workloads.onnx_ops`` for the mapping). A handler
reads shapes from the converter's parsed model and passes learned operands to
``converter.take`` so each parameter is counted once, by the first op that reads it.
"""
from __future__ import annotations

import math

from simulator.graph.op import CHANNEL_NORMS, OpKind
from workloads.layers import STATS_DTYPE, VECTOR_FLOPS_PER_ELEMENT

_IN, _OUT, _BOTH = ("inputs",), ("output",), ("inputs", "output")
# Elementwise operators: (fn, arithmetic per output element, what the backward keeps). The
# arithmetic counts the formula of the ONNX operator definition (cost model only, not MFU).
ELEMENTWISE = {
    "Add": ("add", 1, ()), "Sub": ("sub", 1, ()), "Mul": ("mul", 1, _IN), "Div": ("div", 1, _IN),
    "Neg": ("neg", 1, ()), "Pow": ("pow", 2, _IN), "Sqrt": ("sqrt", 1, _OUT),
    "Reciprocal": ("reciprocal", 1, _OUT), "Exp": ("exp", 1, _OUT), "Log": ("log", 1, _IN),
    "Abs": ("abs", 1, _IN), "Erf": ("erf", 8, _IN), "Relu": ("relu", 1, _OUT),
    "LeakyRelu": ("leaky_relu", 2, _IN), "PRelu": ("prelu", 2, _IN), "Elu": ("elu", 3, _OUT),
    "Selu": ("selu", 4, _OUT), "Celu": ("celu", 4, _IN), "Sigmoid": ("sigmoid", 4, _OUT),
    "HardSigmoid": ("hardsigmoid", 3, _IN), "HardSwish": ("hardswish", 4, _IN),
    "Tanh": ("tanh", 4, _OUT), "Softplus": ("softplus", 3, _IN), "Softsign": ("softsign", 3, _IN),
    "Mish": ("mish", 8, _IN), "Gelu": ("gelu", 8, _IN), "Clip": ("clip", 2, _IN),
    "Where": ("where", 1, _IN), "Cast": ("cast", 1, ()), "Max": ("max", 1, _IN),
    "Min": ("min", 1, _IN), "Sum": ("add", 1, ()), "Mean": ("mean", 1, ()),
    "Floor": ("floor", 1, ()), "Ceil": ("ceil", 1, ()), "Round": ("round", 1, ()),
    "Sign": ("sign", 1, ()), "Sin": ("sin", 4, _IN), "Cos": ("cos", 4, _IN),
    "Equal": ("equal", 1, ()), "Less": ("less", 1, ()), "Greater": ("greater", 1, ()),
    "LessOrEqual": ("less_equal", 1, ()), "GreaterOrEqual": ("greater_equal", 1, ()),
    "Not": ("not", 1, ()), "And": ("and", 1, ()), "Or": ("or", 1, ()), "Xor": ("xor", 1, ()),
    "IsNaN": ("isnan", 1, ()), "IsInf": ("isinf", 1, ()), "Mod": ("mod", 2, ()),
    "Trilu": ("trilu", 1, ()), "CumSum": ("cumsum", 1, ()), "ThresholdedRelu": ("relu", 1, _IN),
    "Shrink": ("shrink", 2, _IN),
}
REDUCTIONS = {"ReduceMean": ("mean", ()), "ReduceSum": ("sum", ()), "ReduceMax": ("max", _BOTH),
              "ReduceMin": ("min", _BOTH), "ReduceProd": ("prod", _BOTH), "ReduceL1": ("l1", _IN),
              "ReduceL2": ("l2", _BOTH), "ReduceSumSquare": ("sumsq", _IN),
              "ReduceLogSumExp": ("logsumexp", _BOTH), "ArgMax": ("argmax", ()),
              "ArgMin": ("argmin", ()), "GlobalAveragePool": ("mean", ()),
              "GlobalMaxPool": ("max", _BOTH), "TopK": ("topk", ())}
COPIES = ("Transpose", "Concat", "Split", "Slice", "Expand", "Tile", "Pad", "GatherElements",
          "GatherND", "ScatterND", "ScatterElements", "Resize", "Upsample", "DepthToSpace",
          "SpaceToDepth", "ReverseSequence", "OneHot", "ConstantOfShape", "Range", "NonZero",
          "Compress")
_READS_OUTPUT_ONLY = frozenset({"Slice", "Gather", "GatherElements", "GatherND"})
NORMS = {"BatchNormalization": ("batchnorm", 2), "LayerNormalization": ("layernorm", 2),
         "GroupNormalization": ("groupnorm", 2), "InstanceNormalization": ("instancenorm", 2),
         "RMSNormalization": ("rmsnorm", 1)}  # fn, statistics kept per row (mean, rstd)
# Recurrent layers: (gates, vector FLOPs per hidden unit and step). From the ONNX LSTM / GRU / RNN
# equations: LSTM = 8 bias adds + 3 sigmoids and 2 tanh (4 each) + 4 for the cell and hidden
# updates; GRU = 6 bias adds + 3 activations (4 each) + 4; RNN = 2 bias adds + 1 tanh.
RECURRENT = {"LSTM": (4, 32), "GRU": (3, 22), "RNN": (1, 6)}
_VECTOR = {**VECTOR_FLOPS_PER_ELEMENT, "groupnorm": 7, "instancenorm": 7, "log_softmax": 5}


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Elements of the broadcast of two batch shapes (numpy rules)."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    return math.prod(max(x, y) for x, y in zip(a, b))


def linear(c, i, node, x: str, rows: int, in_f: int, out_f: int, weight: str,
           bias: str | None = None) -> None:
    """x W (+ b) over ``rows`` rows; W learned: weighted ``linear``, else a one-input ``bmm``."""
    folded = c.a.bias.get(i)
    consts = [t for t in (weight, bias, folded) if t]
    data = [x] + [t for t in c.acts(node) if t != x] if x not in c.a.const else c.acts(node)
    fn = "linear" if weight in c.a.roots else "bmm"
    c.emit(i, node, OpKind.MATMUL, fn, data=data, flops=2 * rows * in_f * out_f,
           m=rows, n=out_f, k=in_f, params=c.take(consts), saves=_IN,
           bytes_read=sum(c.nbytes(t) for t in dict.fromkeys(node.inputs)) + c.nbytes(folded))


def gemm(c, i, node) -> None:
    a_t, b_t = node.inputs[:2]
    a, b = c.m.shape(a_t), c.m.shape(b_t)
    m, k = (a[1], a[0]) if node.attrs.get("transA") else (a[0], a[1])
    n = b[0] if node.attrs.get("transB") else b[1]
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] in c.a.const else None
    if b_t in c.a.const:
        linear(c, i, node, a_t, m, k, n, b_t, bias)
    elif a_t in c.a.const:
        linear(c, i, node, b_t, n, k, m, a_t, bias)
    else:
        bmm(c, i, node, 1, m, n, k)


def matmul(c, i, node) -> None:
    a_t, b_t = node.inputs[:2]
    a, b = c.m.shape(a_t), c.m.shape(b_t)
    a = (1,) + a if len(a) == 1 else a
    b = b + (1,) if len(b) == 1 else b
    m, k, n = a[-2], a[-1], b[-1]
    batch = _broadcast(a[:-2], b[:-2])
    if b_t in c.a.const and len(b) == 2:
        linear(c, i, node, a_t, batch * m, k, n, b_t)
    elif a_t in c.a.const and len(a) == 2:
        linear(c, i, node, b_t, batch * n, k, m, a_t)
    else:
        bmm(c, i, node, batch, m, n, k)


def bmm(c, i, node, batch: int, m: int, n: int, k: int) -> None:
    """``batch`` products of two activations (or of an activation and a fixed constant)."""
    causal = int(i in c.a.cores and c.a.cores[i][0] in c.a.causal_cores)
    c.emit(i, node, OpKind.MATMUL, "bmm", flops=2 * batch * m * n * k, m=m, n=n, k=k,
           batch=batch, saves=_IN, params=c.take(node.inputs),
           extra=(("causal", causal),) if causal else ())


def conv(c, i, node) -> None:
    """Implicit GEMM. Conv: m = N * prod(out spatial), n = Cout, k = Cin/groups * prod(kernel);
    ConvTranspose: m = N * prod(in spatial), n = Cout * prod(kernel), k = Cin/groups. Either
    way n * k is the weight's size and 2 m n k the FLOPs ``torch.utils.flop_counter`` counts."""
    x_t, w_t = node.inputs[:2]
    x, w, y = c.m.shape(x_t), c.m.shape(w_t), c.m.shape(node.outputs[0])
    groups = node.attrs.get("group", 1)
    kernel = math.prod(w[2:])
    if node.op_type == "Conv":
        m, n, k = x[0] * math.prod(y[2:]), w[0], w[1] * kernel
    else:
        m, n, k = x[0] * math.prod(x[2:]), w[1] * groups * kernel, x[1] // groups
    pads, strides = node.attrs.get("pads", [0]), node.attrs.get("strides", [1])
    extra = (("kernel", w[2] if len(w) > 2 else 1), ("stride", strides[0]), ("pad", pads[0]),
             ("groups", groups), ("cin", x[1]), ("h", x[2] if len(x) > 2 else 1),
             ("w", x[3] if len(x) > 3 else 1), ("spatial_dims", len(x) - 2))
    # A learned kernel makes a weighted op (simulator.training.backward.WEIGHTED), else two operands.
    dims = len(x) - 2
    kind = "conv" if node.op_type == "Conv" else "conv_transpose"
    fn = f"{kind}{dims}d" if w_t in c.a.roots and 1 <= dims <= 3 else "conv"
    c.emit(i, node, OpKind.CONV, fn, flops=2 * m * n * k, m=m, n=n, k=k, extra=extra,
           params=c.take(node.inputs[1:]), saves=_IN)


def norm(c, i, node) -> None:
    fn, n_stats = NORMS[node.op_type]
    x = c.m.shape(node.inputs[0])
    numel = c.m.numel(node.inputs[0])
    if node.op_type == "BatchNormalization":
        stat_rows = x[1]  # per channel
    elif node.op_type in ("LayerNormalization", "RMSNormalization"):
        axis = node.attrs.get("axis", -1) % max(len(x), 1)
        stat_rows = math.prod(x[:axis])
    elif node.op_type == "GroupNormalization":
        stat_rows = x[0] * node.attrs.get("num_groups", 1)
    else:
        stat_rows = x[0] * x[1]
    affine = [t for t in node.inputs[1:3] if t]  # scale and bias; BN's running stats excluded
    es = c.dtype.bytes
    passes = 2 if fn in CHANNEL_NORMS else 1   # statistics, then normalise
    c.emit(i, node, OpKind.NORM, fn, outputs=node.outputs[:1], flops=_VECTOR[fn] * numel,
           bytes_read=(passes * numel + sum(c.m.numel(t) for t in affine)) * es,
           params=c.take(affine), saves=_IN, stats_bytes=n_stats * stat_rows * STATS_DTYPE.bytes,
           extra=(("channels", stat_rows),) if fn == "batchnorm" else ())


def softmax(c, i, node) -> None:
    numel = c.m.numel(node.outputs[0])
    fn = "softmax" if node.op_type == "Softmax" else "log_softmax"
    c.emit(i, node, OpKind.SOFTMAX, fn, flops=_VECTOR[fn] * numel, saves=_OUT)


def elementwise(c, i, node) -> None:
    fn, per, saves = ELEMENTWISE[node.op_type]
    consts = [t for t in node.inputs if t in c.a.const]
    c.emit(i, node, OpKind.ELEMENTWISE, fn, flops=per * c.m.numel(node.outputs[0]),
           saves=saves, params=c.take(consts))


def reduction(c, i, node) -> None:
    fn, saves = REDUCTIONS[node.op_type]
    c.emit(i, node, OpKind.REDUCTION, fn, flops=c.m.numel(node.inputs[0]), saves=saves)


def pool(c, i, node) -> None:
    out = c.m.numel(node.outputs[0])
    kernel = node.attrs.get("kernel_shape", [1])
    is_max = node.op_type == "MaxPool"
    extra = (("kernel", kernel[0]), ("stride", node.attrs.get("strides", [1])[0]),
             ("pad", node.attrs.get("pads", [0])[0]))
    c.emit(i, node, OpKind.POOL, "maxpool" if is_max else "avgpool",
           flops=out * math.prod(kernel), extra=extra, outputs=node.outputs[:1],
           mask_bytes=out * 8 if is_max else 0, saves=_IN if is_max else ())  # int64 argmax


def gather(c, i, node) -> None:
    table, ids = node.inputs[:2]
    if table in c.a.roots and node.attrs.get("axis", 0) == 0:  # embedding lookup
        shape = c.m.shape(table)
        rows, width = c.m.numel(ids), math.prod(shape[1:])
        c.emit(i, node, OpKind.EMBEDDING, "embedding", m=rows, n=width, k=shape[0],
               params=c.take([table]),
               bytes_read=c.nbytes(ids) + rows * width * c.dtype.bytes)
    else:
        copy(c, i, node)


def copy(c, i, node) -> None:
    """A layout change that moves data. Slices and gathers read only what they write."""
    read = None
    if node.op_type in _READS_OUTPUT_ONLY:
        read = c.nbytes(node.outputs[0]) + sum(c.nbytes(t) for t in node.inputs[1:])
    fields = {"bytes_read": read} if read is not None else {}
    c.emit(i, node, OpKind.COPY, node.op_type.lower(),
           params=c.take([t for t in node.inputs if t in c.a.const]), **fields)


def dropout(c, i, node) -> None:
    """Any Dropout of ratio > 0 drops in training (the simulated step), whatever training_mode
    the export recorded; it keeps a 1-byte mask per element (Builder.dropout)."""
    ratio = c.m.value(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else None
    ratio = float(ratio) if ratio is not None else node.attrs.get("ratio", 0.5)
    x, out = node.inputs[0], node.outputs[0]
    if ratio == 0.0:
        if x in c.producer:
            c.producer[out] = c.producer[x]
        return
    numel, es = c.m.numel(out), c.dtype.bytes
    c.emit(i, node, OpKind.ELEMENTWISE, "dropout", flops=_VECTOR["dropout"] * numel,
           bytes_read=numel * es, bytes_written=numel * es + numel, out_bytes=numel * es,
           mask_bytes=numel)


def recurrent(c, i, node) -> None:
    """All time steps' gate products as one weighted op: batch = T products of (B x (I + H))
    @ ((I + H) x dirs * gates * H): 2 * T * B * dirs * gates * H * (I + H) FLOPs; the gate
    activations of every step are kept for the backward (cuDNN's reserve space). Parameters are
    W, R, B and the peepholes P; the initial states (inputs 5 and 6) are not, even when an
    exporter stores them as initializers."""
    gates, vector = RECURRENT[node.op_type]
    x = c.m.shape(node.inputs[0])
    steps, rows = (x[1], x[0]) if node.attrs.get("layout", 0) else (x[0], x[1])
    hidden, dirs = node.attrs["hidden_size"], c.m.shape(node.inputs[1])[0]
    n, k = dirs * gates * hidden, x[2] + hidden
    data = c.acts(node)
    fn = "linear" if node.inputs[1] in c.a.roots else "bmm"
    c.emit(i, node, OpKind.MATMUL, fn, data=data, flops=2 * steps * rows * n * k,
           vector_flops=vector * steps * rows * dirs * hidden, m=rows, n=n, k=k, batch=steps,
           params=c.take([t for j, t in enumerate(node.inputs) if j in (1, 2, 3, 7)]),
           saves=_BOTH,
           stats_bytes=steps * rows * n * c.dtype.bytes)


def attention(c, i, node) -> None:
    """ONNX Attention (opset 23): softmax(Q K^T * scale + mask) V as one fused op,
    2 * B * Hq * Sq * Skv * (D + Dv) FLOPs."""
    q, k, v = (c.m.shape(t) for t in node.inputs[:3])
    if len(q) == 4:
        b, heads, sq, d = q
        skv, dv = k[2], v[3]
    else:
        heads = node.attrs["q_num_heads"]
        b, sq, d = q[0], q[1], q[2] // heads
        skv, dv = k[1], v[2] // node.attrs["kv_num_heads"]
    if len(node.inputs) > 4 and node.inputs[4]:  # past keys
        skv += c.m.shape(node.inputs[4])[-2]
    mask = node.inputs[3] if len(node.inputs) > 3 else ""
    causal = int(bool(node.attrs.get("is_causal", 0)) or mask in c.a.causal_masks)
    scores = b * heads * sq * skv
    c.emit(i, node, OpKind.ATTENTION, "attention", flops=2 * scores * (d + dv),
           vector_flops=_VECTOR["softmax"] * scores, m=sq, n=skv, k=d, batch=b * heads,
           extra=(("causal", causal),), saves=_BOTH, stats_bytes=b * heads * sq * 4)


HANDLERS = {"Gemm": gemm, "MatMul": matmul, "Conv": conv, "ConvTranspose": conv,
            "Softmax": softmax, "LogSoftmax": softmax, "MaxPool": pool, "AveragePool": pool,
            "LpPool": pool, "Gather": gather, "Dropout": dropout, "Attention": attention,
            **{op: norm for op in NORMS}, **{op: elementwise for op in ELEMENTWISE},
            **{op: reduction for op in REDUCTIONS}, **{op: copy for op in COPIES},
            **{op: recurrent for op in RECURRENT}}
