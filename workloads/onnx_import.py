"""Import an ONNX model file as a workload (``hwsim predict model.onnx``).

The file is read with the ``onnx`` package (the ``onnx`` extra, imported only here), its shapes
are inferred, and each node becomes an op with exact counts (``workloads.onnx_ops``); the
training step is then derived as for every other graph (``simulator.training.backward``).

Shapes: every graph input dimension that is symbolic is fixed before shape inference. Dim 0 of
the first input is the batch: the plan's micro-batch when it is symbolic (1 by default), the
example's when it is fixed. Other symbolic dims, and dims that stay unknown after inference
(data-dependent shapes), count as 1. An operator that shape inference does not know (a custom
domain's) is given the shape of its first input, and inference runs again from there.

Loading does not read external weight data: only the initializers' shapes are needed.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from simulator.errors import PlanError, WorkloadError
from simulator.graph.opgraph import OpGraph
from simulator.graph.op import DType, OpKind
from workloads.imported import ImportedWorkload
from workloads.onnx_graph import dag_order
from workloads.onnx_model import Node, Parsed
from workloads.onnx_ops import convert  # the converter needs no onnx objects

INSTALL_HINT = 'pip install "hwsim[onnx]"'
_MAX_GUESS_ROUNDS = 64  # chained unknown operators whose shapes are guessed one round each


@dataclass(frozen=True)
class OnnxWorkload(ImportedWorkload):
    """An imported ONNX model; with a symbolic batch axis any micro-batch can be built."""

    rebatch: Callable[[int], Callable[[DType, DType], OpGraph]] | None = None

    def forward_graph(self, batch: int, dtype: DType = DType.FP32,
                      param_dtype: DType | None = None) -> OpGraph:
        if self.rebatch is None or batch == self.default_batch:
            return super().forward_graph(batch, dtype, param_dtype)
        if batch < 1:
            raise PlanError(f"{self.name}: micro_batch = {batch} must be a positive integer")
        return self.rebatch(batch)(dtype, param_dtype or dtype)


def load_onnx(path: str | Path) -> OnnxWorkload:
    """Read an ``.onnx`` file into a workload; a bad file is a ``WorkloadError``."""
    onnx = _onnx()
    path = Path(path)
    model = _read(onnx, path)

    def builder(batch: int | None) -> tuple[Parsed, OpGraph, Callable[[DType, DType], OpGraph]]:
        parsed = _prepare(onnx, model, path, batch)
        graph = convert(parsed, DType.FP32, DType.FP32)  # fail now, on load, not in simulate()
        if not any(op.flops or op.vector_flops for op in graph.ops() if op.kind is not OpKind.LOSS):
            raise WorkloadError(f"{path.stem}: no operator computes anything (only views, "
                                "copies or constants lead to the output): nothing to train")
        return parsed, graph, lambda dtype, param_dtype: convert(parsed, dtype, param_dtype)

    parsed, graph, build = builder(None)
    first = parsed.inputs[0] if parsed.inputs else None
    dims = parsed.shape(first) if first else ()
    batch = dims[0] if dims else 1
    symbolic = first is not None and _batch_symbol(model) is not None
    ids = first is not None and not parsed.is_float(first) and len(dims) == 2
    return OnnxWorkload(name=path.stem, build=build, default_batch=batch, params=graph.params(),
                        seq_len=dims[1] if ids else None,
                        rebatch=(lambda b: builder(b)[2]) if symbolic else None)


def _onnx():
    try:
        import onnx
        import onnx.numpy_helper  # noqa: F401
        import onnx.shape_inference  # noqa: F401
    except ImportError:
        raise WorkloadError(f"reading .onnx files needs the onnx package: {INSTALL_HINT}") from None
    return onnx


def _read(onnx, path: Path):
    if not path.is_file():
        raise WorkloadError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf DecodeError and friends
        reason = " ".join(str(err).split())[:120] or type(err).__name__
        raise WorkloadError(f"{path}: not a valid ONNX model ({reason}); export it again, "
                            "e.g. with torch.onnx.export") from None
    if not model.graph.node or model.ir_version <= 0:
        raise WorkloadError(f"{path}: not an ONNX model (no graph nodes); export it again, "
                            "e.g. with torch.onnx.export")
    if model.functions:
        try:
            import onnx.inliner
            model = onnx.inliner.inline_local_functions(model)
        except Exception:  # inlining is a convenience: functions become unknown ops otherwise
            pass
    return model


def _batch_symbol(model) -> str | None:
    """The name of the symbolic batch dim (dim 0 of the first graph input), if it is one."""
    inits = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name not in inits:
            dims = value.type.tensor_type.shape.dim
            if dims and not dims[0].HasField("dim_value"):
                return dims[0].dim_param or "?"
            return None
    return None


def _prepare(onnx, model, path: Path, batch: int | None) -> Parsed:
    model = type(model).FromString(model.SerializeToString())  # a copy: dims are edited
    symbol = _batch_symbol(model)
    inits = {t.name for t in model.graph.initializer}
    first = True
    for value in model.graph.input:
        if value.name in inits:
            continue
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value") or dim.dim_value <= 0:
                is_batch = (first and i == 0) or (symbol not in (None, "?")
                                                   and dim.dim_param == symbol)
                dim.dim_value = (batch or 1) if is_batch else 1
        first = False
    model = _infer(onnx, model, path)
    for _ in range(_MAX_GUESS_ROUNDS):  # unknown operators: output shape = first input's
        known, kinds = _shapes(model)
        guessed = False
        for node in model.graph.node:
            src = next((t for t in node.input if t), None)
            if src in known and any(o and o not in known for o in node.output):
                for out in node.output:
                    if out and out not in known:
                        model.graph.value_info.append(onnx.helper.make_tensor_value_info(
                            out, kinds.get(src, 1), list(known[src])))
                        guessed = True
        if not guessed:
            break
        model = _infer(onnx, model, path)
    (shapes, elem), tensors = _shapes(model), {t.name: t for t in model.graph.initializer}
    nodes = []
    for i, n in enumerate(model.graph.node):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute
                 if a.type not in (5, 10)}  # GRAPH, GRAPHS: subgraphs are not expanded
        if n.op_type == "Constant" and n.output:
            tensors[n.output[0]] = _constant(onnx, n, attrs)
        nodes.append(Node(n.op_type, n.domain, n.name or f"{n.op_type}_{i}", list(n.input),
                          list(n.output), attrs))
    nodes = dag_order(nodes, {v.name for v in model.graph.input} | inits, path.stem)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    return Parsed(name=path.stem, opset=opset, nodes=nodes,
                  inputs=[v.name for v in model.graph.input if v.name not in inits],
                  outputs=[v.name for v in model.graph.output], shapes=shapes, elem=elem,
                  tensors={k: v for k, v in tensors.items() if v is not None},
                  initializers=frozenset(inits), base_dir=str(path.parent),
                  to_array=onnx.numpy_helper.to_array)


def _infer(onnx, model, path: Path):
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False,
                                                 data_prop=True)
    except Exception as err:
        reason = " ".join(str(err).split())[:160]
        raise WorkloadError(f"{path}: ONNX shape inference failed ({reason}); check the model "
                            "with onnx.checker.check_model") from None


def _shapes(model) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    """Shapes and element types of every tensor that has them (unknown dims count as 1)."""
    shapes, elem = {}, {}
    for value in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        t = value.type.tensor_type
        if value.type.HasField("tensor_type") and t.HasField("shape"):
            shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0
                                       else 1 for d in t.shape.dim)
            elem[value.name] = t.elem_type
    for t in model.graph.initializer:
        shapes[t.name], elem[t.name] = tuple(t.dims), t.data_type
    return shapes, elem


def _constant(onnx, node, attrs):
    """A Constant node's value as a TensorProto (None for sparse constants)."""
    if "value" in attrs:
        return attrs["value"]
    for key, kind in (("value_float", 1), ("value_floats", 1), ("value_int", 7),
                      ("value_ints", 7)):
        if key in attrs:
            value = attrs[key]
            dims = [len(value)] if isinstance(value, list) else []
            vals = value if isinstance(value, list) else [value]
            return onnx.helper.make_tensor(node.output[0], kind, dims, vals)
    return None
