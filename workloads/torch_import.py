"""Import a PyTorch module: ``file.py:factory`` or ``(module, example_inputs)`` -> a workload.

How: ``torch.export.export(module, example_inputs)`` (non-strict; the module in training mode)
traces the forward pass at the ATen level, with the real shape, stride and dtype of every tensor
in ``node.meta["val"]``, and parameters, buffers and user inputs told apart by the graph
signature. Tracing works on the concrete example inputs, so Python control flow is resolved
for them. Each ATen node becomes zero, one or several ``Op`` records (``workloads.torch_ops``):
views become none, an ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` one per step of the recurrence
(``workloads.torch_rnn``), an operator hwsim does not know one op costed by its tensor traffic
(``fn = "unknown:<target>"``, listed in ``Result.unknown_ops``). The training step is then
derived from this forward graph by ``simulator.training.backward``, as for zoo models.

The trace is recorded once, without torch objects, so the graph can be built again in any
activation / parameter dtype (the plan's precision): bytes follow the dtype, counts do not.

Loss: a model that returns a scalar is its own loss (its last op becomes the loss). Otherwise
hwsim appends one: cross-entropy over the last axis for logits of shape (N, C) or (N, T, C),
the mean of the output for any other shape. The batch is dim 0 of the first tensor input; a
model whose first input is integer ids of shape (N, T) is a language model with T tokens per
sample. User inputs get no gradient (they are data), as in PyTorch.

Roles: each build gives the graph's ops their ``Role`` in the parallel split from its structure
(``workloads.structure``: the linears around an attention core and an MLP, the vocabulary
embedding and head); when that structure is a transformer's, the workload's ``transformer``
holds its shape, so that tensor and pipeline parallelism split it as a zoo transformer.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import sys
import warnings
from pathlib import Path

from simulator.errors import WorkloadError
from simulator.graph.opgraph import OpGraph
from simulator.graph.op import DType
from workloads.imported import ImportedWorkload
from workloads.structure import assign_roles, transformer_shape
from workloads.torch_ops import build_graph
from workloads.torch_trace import Meta, Node, Placeholder, Ref, Trace

INSTALL_HINT = 'pip install "hwsim[torch]"'


def _require_torch():
    try:
        import torch
    except ImportError:
        raise WorkloadError(f"importing a PyTorch model needs PyTorch: {INSTALL_HINT}") from None
    return torch


# -- public API -----------------------------------------------------------------------------------
def load_factory(spec: str) -> ImportedWorkload:
    """``path/to/file.py:factory``: ``factory()`` returns ``(module, example_inputs)``."""
    module, inputs, name = load_factory_parts(spec)
    return import_module(module, inputs, name=name)


def load_factory_parts(spec: str):
    """``(module, example_inputs, name)`` from ``path/to/file.py:factory``, checked."""
    path_text, _, attr = spec.rpartition(":")
    path = Path(path_text)
    if not attr.isidentifier():
        raise WorkloadError(f"{spec}: give the factory as path/to/file.py:function_name")
    if not path.is_file():
        raise WorkloadError(f"{path}: no such Python file (MODEL may be path/to/file.py:factory)")
    _require_torch()
    factory = _load_attr(path, attr)
    try:
        made = factory()
    except (Exception, SystemExit) as err:  # the user's code (sys.exit() too): one line
        raise WorkloadError(f"{spec}: {attr}() raised {type(err).__name__}: "
                            f"{_one_line(err)}") from None
    module, inputs = _check_made(spec, made)
    return module, inputs, path.stem


def import_module(module, example_inputs, name: str | None = None) -> ImportedWorkload:
    """Import ``module`` as run on ``example_inputs`` (a tuple, the batch in dim 0)."""
    torch = _require_torch()
    if not isinstance(module, torch.nn.Module):
        raise WorkloadError(f"expected a torch.nn.Module, got {type(module).__name__}")
    inputs = _as_tuple(example_inputs)
    if inputs is None:
        raise WorkloadError("example inputs must be a tensor or a tuple of tensors, got "
                            f"{type(example_inputs).__name__}")
    name = name or type(module).__name__
    trace = _trace(torch, module, inputs, name)
    first = next((p for p in trace.placeholders if p.kind == "input"), None)
    if first is None or not first.meta.shape:
        raise WorkloadError(f"{name}: the first example input must be a tensor with the batch "
                            "in dim 0")
    batch = first.meta.shape[0]
    seq_len = (first.meta.shape[1] if not first.meta.floating and len(first.meta.shape) == 2
               else None)
    params = sum(p.numel() for p in module.parameters())

    def build(dtype: DType, param_dtype: DType) -> OpGraph:
        return assign_roles(build_graph(trace, dtype, param_dtype,
                                        f"{name} forward (batch {batch})"))

    return ImportedWorkload(name=name, build=build, default_batch=batch, params=params,
                            seq_len=seq_len,
                            transformer=transformer_shape(build(DType.FP32, DType.FP32), batch))


# -- loading the factory --------------------------------------------------------------------------
def _load_attr(path: Path, attr: str):
    module_name = f"hwsim_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise WorkloadError(f"{path}: cannot be loaded as a Python file")
    user = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = user
    try:
        spec.loader.exec_module(user)
    except SyntaxError as err:
        raise WorkloadError(f"{path}: not a valid Python file (line {err.lineno}: {err.msg}); "
                            "fix the syntax") from None
    except (ValueError, UnicodeDecodeError) as err:  # null bytes, not text
        raise WorkloadError(f"{path}: not a valid Python file ({_one_line(err)})") from None
    except (Exception, SystemExit) as err:   # sys.exit() in the user's file: theirs too
        raise WorkloadError(f"{path}: running the file raised {type(err).__name__}: "
                            f"{_one_line(err)}") from None
    factory = getattr(user, attr, None)
    if factory is None:
        raise WorkloadError(f"{path}: no function {attr!r} in the file; define {attr}() "
                            "returning (module, example_inputs)")
    if not callable(factory):
        raise WorkloadError(f"{path}: {attr} is a {type(factory).__name__}, not a function")
    return factory


def _check_made(spec: str, made):
    torch = _require_torch()
    if (isinstance(made, (tuple, list)) and len(made) == 2
            and isinstance(made[0], torch.nn.Module)):
        inputs = _as_tuple(made[1])
        if inputs is not None:
            return made[0], inputs
    raise WorkloadError(f"{spec}: must return (torch.nn.Module, example_inputs_tuple), got "
                        f"{_describe(made)}")


def _as_tuple(inputs):
    torch = sys.modules["torch"]
    if isinstance(inputs, torch.Tensor):
        return (inputs,)
    if isinstance(inputs, (tuple, list)) and inputs and any(
            isinstance(x, torch.Tensor) for x in inputs):
        return tuple(inputs)
    return None


def _describe(value) -> str:
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__} ({', '.join(type(v).__name__ for v in value)})"
    return type(value).__name__


def _one_line(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split())
    return text[:limit] + ("..." if len(text) > limit else "")


# -- tracing --------------------------------------------------------------------------------------
def _trace(torch, module, inputs: tuple, name: str) -> Trace:
    was_training = module.training
    module.train()  # hwsim predicts training: dropout and batch statistics are on
    logging.disable(logging.WARNING)  # torch logs guards and graphs when tracing fails
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.export.export(module, inputs, strict=False)
    except Exception as err:  # any failure of tracing the user's model
        raise WorkloadError(f"{name}: torch.export could not trace the model "
                            f"({type(err).__name__}: {_one_line(err)}); make forward() "
                            "traceable for the example inputs (no control flow that depends "
                            "on tensor values)") from None
    finally:
        logging.disable(logging.NOTSET)
        module.train(was_training)
    return _record(torch, module, program, name)


def _record(torch, module, program, name: str) -> Trace:
    from torch.export.graph_signature import InputKind, OutputKind

    kinds = {InputKind.PARAMETER: "param", InputKind.BUFFER: "buffer",
             InputKind.USER_INPUT: "input", InputKind.CONSTANT_TENSOR: "constant"}
    specs = {s.arg.name: s for s in program.graph_signature.input_specs
             if hasattr(s.arg, "name")}
    user_outputs = {s.arg.name for s in program.graph_signature.output_specs
                    if s.kind == OutputKind.USER_OUTPUT and hasattr(s.arg, "name")}
    placeholders, nodes, outputs, layers = [], [], (), {}
    for node in program.graph.nodes:
        if node.op == "placeholder":
            spec = specs.get(node.name)
            kind = kinds.get(spec.kind, "constant") if spec else "constant"
            target = spec.target or "" if spec else ""
            grad = kind == "param" and module.get_parameter(target).requires_grad
            meta = _meta(torch, node.meta.get("val"))
            if isinstance(meta, Meta):
                placeholders.append(Placeholder(node.name, kind, meta, target, grad))
        elif node.op == "call_function":
            path = _module_path(node)
            nodes.append(Node(node.name, _target_name(node.target), _arg(torch, node.args),
                              {k: _arg(torch, v) for k, v in node.kwargs.items()},
                              _meta(torch, node.meta.get("val")), path,
                              _layer(path, layers)))
        elif node.op == "output":
            flat = node.args[0] if isinstance(node.args[0], (tuple, list)) else (node.args[0],)
            outputs = tuple(_arg(torch, a) for a in flat
                            if not isinstance(a, torch.fx.Node) or a.name in user_outputs)
    return Trace(name, tuple(placeholders), tuple(nodes), outputs)


def _meta(torch, val):
    if isinstance(val, torch.Tensor):
        return Meta(tuple(int(d) for d in val.shape), tuple(int(s) for s in val.stride()),
                    val.is_floating_point() or val.is_complex(), val.element_size())
    if isinstance(val, (tuple, list)):
        return tuple(_meta(torch, v) for v in val)
    return None


def _arg(torch, a):
    if isinstance(a, torch.fx.Node):
        return Ref(a.name)
    if isinstance(a, (tuple, list)):
        return tuple(_arg(torch, x) for x in a)
    if isinstance(a, (bool, int, float, str)) or a is None:
        return a
    if isinstance(a, torch.SymInt):
        return int(a)
    return str(a)  # dtype, device, layout, memory format


def _target_name(target) -> str:
    if hasattr(target, "_schema"):  # an OpOverload: aten.linear.default
        return str(target)
    return getattr(target, "__name__", str(target))


def _module_path(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _layer(path: str, layers: dict[str, int]) -> int:
    """The repeated block a module path sits in: its prefix up to the first numeric part
    (``blocks.3.attn`` -> ``blocks.3``); blocks are numbered in the order they run."""
    parts = path.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return layers.setdefault(".".join(parts[:i + 1]), len(layers))
    return -1
