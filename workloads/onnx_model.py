"""An ONNX model with every tensor's shape known, as ``workloads.onnx_import`` prepares it: the
records the converter (``workloads.onnx_ops``, ``workloads.onnx_graph``) reads, with no onnx
objects but the initializers' TensorProtos."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

FLOAT_TYPES = frozenset({1, 10, 11, 16})  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


@dataclass
class Node:
    op_type: str
    domain: str
    name: str
    inputs: list[str]     # "" for an omitted optional input
    outputs: list[str]
    attrs: dict


@dataclass
class Parsed:
    """A model with every tensor's shape known: what the converter reads (no onnx objects but
    the initializers, which are turned into arrays only when a value is needed)."""

    name: str
    opset: int
    nodes: list[Node]
    inputs: list[str]                 # graph inputs that are not initializers
    outputs: list[str]
    shapes: dict[str, tuple[int, ...]]
    elem: dict[str, int]              # ONNX element type of each tensor
    tensors: dict[str, object]        # initializer and Constant TensorProtos by name
    initializers: frozenset[str] = frozenset()
    base_dir: str = ""                # where external tensor data lives
    to_array: Callable = field(repr=False, default=None)
    _values: dict = field(default_factory=dict, repr=False)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.shapes.get(name, ())

    def numel(self, name: str) -> int:
        return math.prod(self.shape(name))

    def is_float(self, name: str) -> bool:
        return self.elem.get(name, 1) in FLOAT_TYPES

    def value(self, name: str, external: bool = False):
        """The numpy value of a constant tensor, or None (not a constant, unreadable, or stored
        in an external data file and ``external`` is False: weights are not read in bulk)."""
        proto = self.tensors.get(name)
        if proto is None or (proto.data_location == 1 and not external):  # 1: EXTERNAL
            return None
        if name not in self._values:
            try:
                self._values[name] = self.to_array(proto, base_dir=self.base_dir)
            except Exception:  # missing data file, unsupported type: value unknown
                self._values[name] = None
        return self._values[name]
