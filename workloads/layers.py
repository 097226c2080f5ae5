"""Graph builder: the layers every zoo model is made of, with exact counts.

Conventions (one place for all builders):
- FLOPs of a matmul / convolution are 2 x multiply-accumulates, bias adds not counted (the
  convention of Narayanan et al. 2021 and ``torch.utils.flop_counter``). These are the model
  FLOPs. Vector ops (norms, softmax, activations) carry an approximate count of arithmetic per
  element for the cost model only; it never enters MFU.
- Bytes are the tensors an op reads and writes once each (no cache model here): activations
  in the activation dtype, weights in the compute copy's dtype.
- ``saves`` follows what PyTorch autograd keeps for each op (Korthikanti et al. 2022, sec. 4.1):
  a linear keeps its input, softmax its output, dropout a 1-byte mask, a norm its input and
  per-row statistics, GeLU its input.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from simulator.graph.opgraph import OpGraph
from simulator.graph.op import CHANNEL_NORMS, Block, DType, Op, OpKind, Role
from simulator.graph.conv_backend import onednn_paths

# Arithmetic per element of the vector ops (cost model only; not model FLOPs).
# Counted from the formulas: layernorm = mean, centre, square, mean, scale, shift.
VECTOR_FLOPS_PER_ELEMENT = {
    "add": 1, "mul": 1, "scale": 1, "dropout": 2, "relu": 1, "gelu": 8, "silu": 4,
    "swiglu": 5, "geglu": 9, "layernorm": 7, "rmsnorm": 4, "batchnorm": 7, "softmax": 5,
    "cross_entropy": 6, "maxpool": 1, "avgpool": 1, "mean": 1,
    # mixture of experts (workloads.moe): a sigmoid is an exp, an add and a divide (as silu
    # without its multiply); top-k of a row of expert scores is k passes of compare-and-keep
    # (counted as 1 per element per pass by ``top_k``); un-permuting multiplies each token
    # copy by its routing probability and adds it into its token (2 per copy element)
    "sigmoid": 3, "topk": 1, "unpermute": 2,
    # tanh (BERT's pooler): an exp, two adds and a divide, as torch_tables and the ONNX reader
    # count it
    "tanh": 4,
}
STATS_DTYPE = DType.FP32  # norms keep per-row statistics in fp32 (PyTorch's native kernels)


def conv_out(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """Output extent of a convolution or pooling window (PyTorch's formula)."""
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


@dataclass
class Builder:
    """Adds ops to ``graph`` with the current ``layer`` and ``block`` stamped on each."""

    graph: OpGraph
    dtype: DType = DType.FP32          # activations
    param_dtype: DType = DType.FP32    # stored parameters (the compute copy)
    layer: int = -1
    block: Block = Block.NONE
    _names: dict[str, int] = field(default_factory=dict)

    @property
    def es(self) -> int:
        return self.dtype.bytes

    def _name(self, base: str) -> str:
        prefix = f"L{self.layer}." if self.layer >= 0 else ""
        name = prefix + base
        count = self._names.get(name, 0)
        self._names[name] = count + 1
        return name if count == 0 else f"{name}#{count}"

    def _add(self, base: str, inputs: tuple[str, ...], **fields) -> str:
        op = Op(name=self._name(base), dtype=self.dtype, param_dtype=self.param_dtype,
                layer=self.layer, block=self.block, **fields)
        return self.graph.add(op, inputs)

    def input(self, base: str, numel: int) -> str:
        """A placeholder for a tensor that comes from outside (no work, no gradient flows to
        it): lets a graph start from an activation, as a micro-benchmark does."""
        return self._add(base, (), kind=OpKind.COPY, fn="input", out_bytes=numel * self.es)

    # -- tensor arithmetic ----------------------------------------------------------------------
    def linear(self, base: str, x: str | None, rows: int, in_f: int, out_f: int,
               bias: bool = True, tied: bool = False, role: Role = Role.REPLICATED,
               extra: tuple[tuple[str, int], ...] = ()) -> str:
        """y = x W^T + b over ``rows`` rows (tokens, or batch for an MLP).

        ``tied``: W is another op's parameter (tied embeddings): counted there, still read here
        and still given a weight gradient here. ``role``: its place in the parallel split.
        ``extra``: facts for later passes (``Op.extra``).
        """
        es = self.es
        params = (0 if tied else in_f * out_f) + (out_f if bias else 0)
        inputs = (x,) if x else ()
        return self._add(base, inputs, kind=OpKind.MATMUL, fn="linear",
                         flops=2 * rows * in_f * out_f, m=rows, n=out_f, k=in_f,
                         bytes_read=(rows * in_f + in_f * out_f + (out_f if bias else 0)) * es,
                         bytes_written=rows * out_f * es,
                         out_bytes=rows * out_f * es, params=params, saves=("inputs",),
                         param_tensors=(0 if tied else 1) + int(bias), role=role, extra=extra)

    def grouped_linear(self, base: str, x: str, slots: int, experts: int, in_f: int,
                       out_f: int, role: Role, load: int = 1000) -> str:
        """The grouped GEMM of ``experts`` experts over ``slots`` token copies (a mixture of
        experts' routed MLP, ``workloads.moe``; no bias): ``experts`` GEMMs of
        slots / experts rows each on average (``m``, rounded up, for the shape efficiency;
        ``batch`` = experts), exactly 2 x slots x in_f x out_f FLOPs. ``load``: the busiest
        expert's work over the mean, per mille (the time, not the FLOPs, scales by it:
        ``simulator.cost.efficiency.executed_fraction``)."""
        es = self.es
        weights = experts * in_f * out_f
        return self._add(base, (x,), kind=OpKind.MATMUL, fn="grouped_linear",
                         flops=2 * slots * in_f * out_f, m=-(-slots // experts), n=out_f,
                         k=in_f, batch=experts,
                         extra=(("experts", experts), ("load", load)),
                         bytes_read=(slots * in_f + weights) * es,
                         bytes_written=slots * out_f * es, out_bytes=slots * out_f * es,
                         params=weights, saves=("inputs",), param_tensors=1, role=role)

    def top_k(self, scores: str, rows: int, experts: int, k: int) -> str:
        """The router's choice: the top ``k`` of ``experts`` scores per token, written as
        their probabilities and int64 expert indices."""
        es = self.es
        written = rows * k * (es + DType.INT64.bytes)
        return self._add("router_topk", (scores,), kind=OpKind.REDUCTION, fn="topk",
                         flops=VECTOR_FLOPS_PER_ELEMENT["topk"] * rows * experts * k,
                         bytes_read=rows * experts * es, bytes_written=written,
                         out_bytes=written, saves=("output",))

    def permute(self, x: str, chosen: str, numel: int, out_numel: int) -> str:
        """Token copies grouped by expert (a gather by the router's indices): the MoE
        dispatch's local half (``Role.EXPERT_DISPATCH``)."""
        es = self.es
        index = self.graph.op(chosen).out_bytes
        return self._add("permute", (x, chosen), kind=OpKind.COPY, fn="permute",
                         bytes_read=numel * es + index, bytes_written=out_numel * es,
                         out_bytes=out_numel * es, role=Role.EXPERT_DISPATCH)

    def unpermute(self, y: str, chosen: str, numel: int, out_numel: int) -> str:
        """Token copies weighted by their routing probabilities and summed back into token
        order: the MoE combine's local half (``Role.EXPERT_COMBINE``); its backward needs
        both inputs (the probabilities get a gradient)."""
        es = self.es
        index = self.graph.op(chosen).out_bytes
        return self._add("unpermute", (y, chosen), kind=OpKind.ELEMENTWISE, fn="unpermute",
                         flops=VECTOR_FLOPS_PER_ELEMENT["unpermute"] * numel,
                         bytes_read=numel * es + index, bytes_written=out_numel * es,
                         out_bytes=out_numel * es, saves=("inputs",),
                         role=Role.EXPERT_COMBINE)

    def concat(self, base: str, inputs: tuple[str, ...], numel: int) -> str:
        """A materialised concatenation (or broadcast) of ``inputs`` into ``numel``
        elements."""
        es = self.es
        read = sum(self.graph.op(src).out_bytes for src in inputs)
        return self._add(base, inputs, kind=OpKind.COPY, fn="concat", bytes_read=read,
                         bytes_written=numel * es, out_bytes=numel * es)

    def matmul(self, base: str, a: str, b: str, batch: int, m: int, n: int, k: int,
               extra: tuple[tuple[str, int], ...] = ()) -> str:
        """``batch`` products (m x k) @ (k x n) of two activations (e.g. QK^T, AV)."""
        es = self.es
        return self._add(base, (a, b), kind=OpKind.MATMUL, fn="bmm", extra=extra,
                         flops=2 * batch * m * n * k, m=m, n=n, k=k, batch=batch,
                         bytes_read=batch * (m * k + k * n) * es,
                         bytes_written=batch * m * n * es, out_bytes=batch * m * n * es,
                         saves=("inputs",))

    def conv2d(self, base: str, x: str | None, n: int, cin: int, h: int, w: int, cout: int,
               kernel: int, stride: int = 1, pad: int = 0, groups: int = 1,
               bias: bool = False) -> tuple[str, int, int]:
        """2-D convolution as its implicit GEMM; returns (name, Ho, Wo)."""
        ho, wo = conv_out(h, kernel, stride, pad), conv_out(w, kernel, stride, pad)
        k = cin // groups * kernel * kernel
        params = cout * k + (cout if bias else 0)
        es = self.es
        name = self._add(base, (x,) if x else (), kind=OpKind.CONV, fn="conv2d",
                         flops=2 * n * ho * wo * cout * k, m=n * ho * wo, n=cout, k=k,
                         extra=(("kernel", kernel), ("stride", stride), ("pad", pad),
                                ("groups", groups), ("cin", cin), ("h", h), ("w", w),
                                ("onednn", onednn_paths(
                                    images=n, input_elements=n * cin * h * w,
                                    kernel=(kernel, kernel), strided=stride > 1,
                                    dilated=False, groups=groups,
                                    floating=self.dtype in (DType.FP32, DType.TF32,
                                                             DType.FP16, DType.BF16))),
                                ("reorder_input", n * cin * h * w),
                                ("reorder_output", n * cout * ho * wo)),
                         bytes_read=(n * cin * h * w + params) * es,
                         bytes_written=n * cout * ho * wo * es, out_bytes=n * cout * ho * wo * es,
                         params=params, saves=("inputs",), param_tensors=1 + int(bias))
        return name, ho, wo

    # -- vector ops ------------------------------------------------------------------------------
    def elementwise(self, fn: str, inputs: tuple[str, ...], numel: int,
                    saves: tuple[str, ...] = (), base: str | None = None,
                    out_numel: int | None = None, params: int = 0,
                    param_tensors: int = 0, extra: tuple[tuple[str, int], ...] = ()) -> str:
        """``params``: parameters applied elementwise (a learned position table, a bias), held
        in ``param_tensors`` tensors (0: one); ``extra``: facts for later passes (``Op.extra``)."""
        out = numel if out_numel is None else out_numel
        es = self.es
        return self._add(base or fn, inputs, kind=OpKind.ELEMENTWISE, fn=fn,
                         flops=VECTOR_FLOPS_PER_ELEMENT[fn] * out,
                         bytes_read=(max(len(inputs), 1) * numel + params) * es,
                         bytes_written=out * es, out_bytes=out * es, saves=saves, params=params,
                         param_tensors=param_tensors, extra=extra)

    def add(self, a: str, b: str, numel: int, base: str = "residual") -> str:
        return self.elementwise("add", (a, b), numel, base=base)

    def activation(self, fn: str, x: str, numel: int) -> str:
        """relu / gelu / silu. PyTorch's relu backward reads its output (threshold_backward on
        the result), the others their input."""
        return self.elementwise(fn, (x,), numel, saves=("output",) if fn == "relu" else ("inputs",))

    def swiglu(self, gate: str, up: str, numel: int, fn: str = "swiglu") -> str:
        """silu(gate) * up (``fn`` "geglu": gelu(gate) * up), as one op reading both halves;
        backward needs both inputs."""
        return self.elementwise(fn, (gate, up), numel, saves=("inputs",))

    def dropout(self, x: str, numel: int, base: str = "dropout") -> str:
        """Dropout keeps a 1-byte mask per element (Korthikanti et al. 2022, sec. 4.1)."""
        es = self.es
        return self._add(base, (x,), kind=OpKind.ELEMENTWISE, fn="dropout",
                         flops=VECTOR_FLOPS_PER_ELEMENT["dropout"] * numel,
                         bytes_read=numel * es, bytes_written=numel * es + numel,
                         out_bytes=numel * es, mask_bytes=numel)

    def norm(self, fn: str, x: str, rows: int, width: int, affine: bool = True,
             bias: bool = True) -> str:
        """layernorm / rmsnorm over ``width`` features, or batchnorm over ``rows`` per channel.

        The backward keeps the input and per-row (per-channel for batchnorm) mean and rstd.
        A batchnorm reads its input twice (statistics, then normalise: ``CHANNEL_NORMS``).
        """
        numel = rows * width
        passes = 2 if fn in CHANNEL_NORMS else 1
        n_stats = 1 if fn == "rmsnorm" else 2
        stat_rows = width if fn == "batchnorm" else rows
        params = (width * (2 if bias else 1)) if affine else 0
        es = self.es
        return self._add(fn, (x,), kind=OpKind.NORM, fn=fn,
                         flops=VECTOR_FLOPS_PER_ELEMENT[fn] * numel,
                         bytes_read=passes * numel * es + params * es, bytes_written=numel * es,
                         out_bytes=numel * es, params=params, saves=("inputs",),
                         param_tensors=(2 if bias else 1) if affine else 0,
                         stats_bytes=n_stats * stat_rows * STATS_DTYPE.bytes,
                         extra=(("channels", width),) if fn == "batchnorm" else ())

    def softmax(self, x: str, rows: int, width: int, base: str = "softmax") -> str:
        numel = rows * width
        es = self.es
        return self._add(base, (x,), kind=OpKind.SOFTMAX, fn="softmax",
                         flops=VECTOR_FLOPS_PER_ELEMENT["softmax"] * numel,
                         bytes_read=numel * es, bytes_written=numel * es, out_bytes=numel * es,
                         saves=("output",))

    def embedding(self, base: str, rows: int, vocab: int, width: int,
                  role: Role = Role.REPLICATED, tied: bool = False) -> str:
        """Table lookup of ``rows`` integer ids (a graph input: no gradient flows to it).
        ``tied``: the table is another op's (counted there)."""
        es = self.es
        return self._add(base, (), kind=OpKind.EMBEDDING, fn="embedding",
                         flops=0, m=rows, n=width, k=vocab,
                         params=0 if tied else vocab * width,
                         bytes_read=rows * DType.INT64.bytes + rows * width * es,
                         bytes_written=rows * width * es, out_bytes=rows * width * es,
                         role=role)

    def pool(self, fn: str, x: str, n: int, c: int, h: int, w: int, kernel: int,
             stride: int, pad: int = 0) -> tuple[str, int, int]:
        """max / avg pooling; max pooling keeps its input and int64 argmax indices."""
        ho, wo = conv_out(h, kernel, stride, pad), conv_out(w, kernel, stride, pad)
        out = n * c * ho * wo
        es = self.es
        name = self._add(fn, (x,), kind=OpKind.POOL, fn=fn,
                         flops=VECTOR_FLOPS_PER_ELEMENT[fn] * out * kernel * kernel,
                         extra=(("kernel", kernel), ("stride", stride), ("pad", pad)),
                         bytes_read=n * c * h * w * es, bytes_written=out * es,
                         out_bytes=out * es,
                         mask_bytes=out * DType.INT64.bytes if fn == "maxpool" else 0,
                         saves=("inputs",) if fn == "maxpool" else ())
        return name, ho, wo

    def mean(self, x: str, numel: int, out_numel: int, base: str = "mean") -> str:
        """Mean over an axis (global average pooling): reduction, needs only shapes backward."""
        es = self.es
        return self._add(base, (x,), kind=OpKind.REDUCTION, fn="mean",
                         flops=VECTOR_FLOPS_PER_ELEMENT["mean"] * numel,
                         bytes_read=numel * es, bytes_written=out_numel * es,
                         out_bytes=out_numel * es)

    def copy(self, base: str, x: str, numel: int) -> str:
        """A materialised layout change (transpose, concat, contiguous)."""
        es = self.es
        return self._add(base, (x,), kind=OpKind.COPY, fn="copy", bytes_read=numel * es,
                         bytes_written=numel * es, out_bytes=numel * es)

    def loss(self, logits: str, rows: int, classes: int) -> str:
        """Cross-entropy over ``rows`` predictions; keeps the log-softmax (size of logits)."""
        numel = rows * classes
        es = self.es
        return self._add("loss", (logits,), kind=OpKind.LOSS, fn="cross_entropy",
                         flops=VECTOR_FLOPS_PER_ELEMENT["cross_entropy"] * numel,
                         bytes_read=numel * es + rows * DType.INT64.bytes,
                         bytes_written=numel * es + 4, out_bytes=4, saves=("inputs",))
