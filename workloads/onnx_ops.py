"""ONNX nodes -> ops, with the counting conventions of ``workloads.layers`` (2 FLOPs per
multiply-accumulate, bias adds not counted; each tensor read and written once; ``saves`` as
PyTorch autograd keeps them).

Mapping (ONNX operator specification, https://onnx.ai/onnx/operators/):
- Gemm / MatMul with a learned operand: a weighted ``linear``; MatMul of two activations: a
  ``bmm`` over the broadcast batch dims. Conv / ConvTranspose: implicit GEMM (``conv1d`` ..
  ``conv_transpose3d``). LSTM / GRU / RNN: one weighted op for the gate products of all time steps,
  2 * T * B * dirs * gates * H * (I + H) FLOPs. Attention (opset 23): one fused attention op.
- BatchNormalization, LayerNormalization, GroupNormalization, InstanceNormalization,
  RMSNormalization: norms; Softmax / LogSoftmax: softmax; Reduce*, Global*Pool: reductions;
  MaxPool / AveragePool: pools; Gather on a learned table: embedding; Dropout: dropout (any
  ratio > 0, as training runs it); activations and arithmetic: elementwise.
- Reshape, Flatten, Squeeze, Unsqueeze, Identity, Shape, Constant: views and metadata, no op.
  Transpose, Concat, Split, Slice, Expand, Tile, Pad, Gather on activations...: copies.
- Anything else becomes an op with ``fn = "unknown:<OpType>"`` costed by its tensor traffic
  (inputs read, outputs written once), listed by ``simulate()`` in ``Result.unknown_ops``.
"""
from __future__ import annotations

from simulator.errors import WorkloadError
from simulator.graph.opgraph import OpGraph
from simulator.graph.op import Block, DType, Op, OpKind
from workloads.layers import VECTOR_FLOPS_PER_ELEMENT
from workloads.onnx_graph import VIEWS, analyse
from workloads.onnx_handlers import HANDLERS as _HANDLERS
from workloads.onnx_model import Parsed

UNKNOWN = "unknown:"  # the prefix simulator.api lists in Result.unknown_ops
_INT_BYTES = {2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 12: 4, 13: 8}  # ONNX element types


def convert(m: Parsed, dtype: DType, param_dtype: DType) -> OpGraph:
    """The forward graph of ``m`` in ``dtype``, ending in a loss on its first output."""
    return _Converter(m, dtype, param_dtype).run()


class _Converter:
    def __init__(self, m: Parsed, dtype: DType, param_dtype: DType) -> None:
        self.m, self.dtype, self.param_dtype = m, dtype, param_dtype
        self.a = analyse(m)
        self.graph = OpGraph(f"{m.name} forward")
        self.producer: dict[str, str] = {}   # tensor -> op that writes it
        self.claimed: set[str] = set()
        self.names: dict[str, int] = {}

    # -- helpers ---------------------------------------------------------------------------------
    def nbytes(self, t: str) -> int:
        if not t:
            return 0
        es = self.dtype.bytes if self.m.is_float(t) else _INT_BYTES.get(self.m.elem.get(t), 4)
        return self.m.numel(t) * es

    def take(self, tensors) -> int:
        """Parameter elements behind constant ``tensors`` that no earlier op owns."""
        total = 0
        for t in tensors:
            for root in sorted(self.a.roots.get(t, ())):
                root = self.a.tied.get(root, root)
                if root not in self.claimed:
                    self.claimed.add(root)
                    total += self.m.numel(root)
        return total

    def acts(self, node) -> list[str]:
        return [t for t in dict.fromkeys(node.inputs) if t and t not in self.a.const]

    def emit(self, i: int, node, kind: OpKind, fn: str, data: list[str] | None = None,
             outputs: list[str] | None = None, **fields) -> str:
        data = self.acts(node) if data is None else data
        outputs = [o for o in (node.outputs if outputs is None else outputs) if o]
        written = sum(self.nbytes(o) for o in outputs)
        fields.setdefault("bytes_read", sum(self.nbytes(t) for t in dict.fromkeys(node.inputs)))
        fields.setdefault("bytes_written", written)
        fields.setdefault("out_bytes", written)
        core, role = self.a.cores.get(i, (-1, ""))
        if core >= 0:
            fields.update(layer=core, block=Block.ATTN_CORE)
        base = role or _clean(node.name)
        prefix = f"L{core}." if core >= 0 else ""
        count = self.names.get(prefix + base, 0)
        self.names[prefix + base] = count + 1
        name = prefix + base + (f"#{count}" if count else "")
        no_grad = tuple(dict.fromkeys(  # integer and boolean tensors carry no gradient
            self.producer[t] for t in data if t in self.producer and not self.m.is_float(t)))
        self.graph.add(Op(name=name, kind=kind, fn=fn, dtype=self.dtype, no_grad=no_grad,
                          param_dtype=self.param_dtype, **fields))
        for index, t in enumerate(data):
            if t in self.producer:
                self.graph.add_edge(self.producer[t], name, index, self.nbytes(t))
        for o in node.outputs:
            if o:
                self.producer[o] = name
        return name

    # -- the pass ----------------------------------------------------------------------------------
    def run(self) -> OpGraph:
        for i, node in enumerate(self.m.nodes):
            if i in self.a.folded:
                continue
            if i in self.a.bias_adds or (node.op_type in VIEWS and node.domain in ("", "ai.onnx")):
                src = next(t for t in node.inputs if t and t not in self.a.const)
                if src in self.producer:
                    self.producer[node.outputs[0]] = self.producer[src]
                continue
            handler = _HANDLERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            if handler is None:
                self.unknown(i, node)
            else:
                handler(self, i, node)
        self.loss()
        return self.graph

    def unknown(self, i: int, node) -> None:
        domain = f"{node.domain}." if node.domain not in ("", "ai.onnx") else ""
        self.emit(i, node, OpKind.COPY, f"{UNKNOWN}{domain}{node.op_type}",
                  params=self.take(node.inputs))

    def loss(self) -> None:
        out = self.m.outputs[0] if self.m.outputs else ""
        if out not in self.producer:
            raise WorkloadError(f"{self.m.name}: the graph output {out!r} is not computed by any "
                                "operator (a constant or an input): nothing to train")
        shape, es = self.m.shape(out), self.dtype.bytes
        numel = self.m.numel(out)
        if self.m.is_float(out) and len(shape) in (2, 3):  # (N, C) or (N, T, C) logits
            rows = numel // shape[-1]
            op = Op(name="loss", kind=OpKind.LOSS, fn="cross_entropy", dtype=self.dtype,
                    flops=VECTOR_FLOPS_PER_ELEMENT["cross_entropy"] * numel,
                    bytes_read=numel * es + rows * DType.INT64.bytes,
                    bytes_written=numel * es + 4, out_bytes=4, saves=("inputs",))
        else:  # a regression or unknown head: mean of the output
            op = Op(name="loss", kind=OpKind.LOSS, fn="mean", dtype=self.dtype,
                    flops=VECTOR_FLOPS_PER_ELEMENT["mean"] * numel,
                    bytes_read=self.nbytes(out), bytes_written=4, out_bytes=4)
        if "loss" in self.graph:  # a node of the model is called "loss"
            op = op.evolve(name=f"loss#{len(self.graph)}")
        self.graph.add(op, [self.producer[out]])


def _clean(name: str) -> str:
    return name.strip("/").replace("/", ".") or "op"


