"""The trace of a PyTorch model as ``workloads.torch_import`` records it: torch-free records of
its tensors (``Meta``), placeholders, ATen calls and outputs, which the counting half of the
importer (``workloads.torch_ops`` and the modules it uses) reads to build the graph."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Meta:
    """The facts of one tensor that counting needs."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    floating: bool
    itemsize: int

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Ref:
    """An argument that is the value of another node."""

    name: str


@dataclass(frozen=True)
class Node:
    """One ATen call of the trace, torch-free."""

    name: str
    target: str            # "aten.linear.default", "getitem", ...
    args: tuple
    kwargs: dict
    out: object            # Meta, a tuple of them (None where not a tensor), or None
    path: str = ""         # the innermost module that made the call
    layer: int = -1        # index of the repeated block (blocks.3, layer2.1, ...) it sits in


@dataclass(frozen=True)
class Placeholder:
    name: str
    kind: str              # "param" | "buffer" | "input" | "constant"
    meta: Meta
    target: str = ""       # the parameter's or buffer's qualified name
    grad: bool = False     # requires grad (trainable parameters only)


@dataclass(frozen=True)
class Trace:
    name: str
    placeholders: tuple[Placeholder, ...]
    nodes: tuple[Node, ...]
    outputs: tuple          # the user outputs, as Ref / values
