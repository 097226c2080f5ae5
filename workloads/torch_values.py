"""Values of an imported trace while its graph is built, and the shape arithmetic on them."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from math import prod

from workloads.torch_trace import Meta


@dataclass(frozen=True)
class Src:
    """A tensor as the graph sees it: which op wrote it (None: from outside the graph), whether
    it requires grad, its shape, and the elements of the tensor it views (``base``)."""

    op: str | None
    grad: bool
    meta: Meta
    base: int
    param: str | None = None   # the parameter it is, or is a view of

    def view(self, meta: Meta, grad: bool | None = None) -> "Src":
        return Src(self.op, self.grad if grad is None else grad, meta, self.base, self.param)


def tensors(value) -> Iterator[Src]:
    """Every tensor in a (nested) argument, in order."""
    if isinstance(value, Src):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from tensors(v)


def packet(target: str) -> str:
    """``aten.add_.Tensor`` -> ``add``: the operator, in-place or not."""
    parts = target.split(".")
    name = parts[1] if len(parts) == 3 and parts[0] in ("aten", "prims") else target
    return name[:-1] if name.endswith("_") and not name.endswith("__") else name


def first(args) -> Src:
    """The first tensor argument."""
    return next(tensors(args))


def main_out(node) -> list[Meta]:
    """A node's main output (the first, for ops that return several)."""
    return [node.out if isinstance(node.out, Meta) else node.out[0]]


def gemm(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(batch, m, n, k) of ``torch.matmul(a, b)``: a vector is one row / column; a 2-D right
    operand folds the left one's batch dims into m (as PyTorch does); else batch dims broadcast.
    """
    a = (1, *a) if len(a) == 1 else a
    b = (*b, 1) if len(b) == 1 else b
    k, n = b[-2], b[-1]
    if len(b) == 2:
        return 1, prod(a[:-1]), n, k
    batch_a, batch_b = list(a[:-2]), list(b[:-2])
    width = max(len(batch_a), len(batch_b))
    batch_a = [1] * (width - len(batch_a)) + batch_a
    batch_b = [1] * (width - len(batch_b)) + batch_b
    return prod(max(x, y) for x, y in zip(batch_a, batch_b)), a[-2], n, k


def viewable(shape: tuple[int, ...], stride: tuple[int, ...], new: tuple[int, ...]) -> bool:
    """Whether ``reshape(new)`` of a tensor with this layout is a view (no copy): PyTorch's
    ``computeStride`` (aten/src/ATen/TensorUtils.cpp)."""
    if prod(shape) <= 1 or not shape:
        return True
    view_d = len(new) - 1
    base_stride = stride[-1]
    tensor_numel = view_numel = 1
    for d in range(len(shape) - 1, -1, -1):
        tensor_numel *= shape[d]
        if d == 0 or (shape[d - 1] != 1 and stride[d - 1] != tensor_numel * base_stride):
            while view_d >= 0 and (view_numel < tensor_numel or new[view_d] == 1):
                view_numel *= new[view_d]
                view_d -= 1
            if view_numel != tensor_numel:
                return False
            if d > 0:
                base_stride = stride[d - 1]
                tensor_numel = view_numel = 1
    return view_d == -1


def contiguous(meta: Meta) -> bool:
    expected = 1
    for size, stride in zip(reversed(meta.shape), reversed(meta.stride)):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


def einsum_flops(equation: str, shapes: list[tuple[int, ...]]) -> tuple[int, tuple[int, ...]]:
    """FLOPs of ``torch.einsum`` contracting left to right, two operands at a time (as PyTorch
    does without opt_einsum), and (batch, m, n, k) of the first product."""
    lhs, _, rhs = equation.replace(" ", "").partition("->")
    terms = lhs.split(",")
    sizes: dict[str, int] = {}
    letters = []
    for term, shape in zip(terms, shapes):
        if "..." in term:  # each ellipsis dim gets its own upper-case letter
            extra = len(shape) - (len(term) - 3)
            term = term.replace("...", "".join(chr(0x391 + i) for i in range(extra)))
        letters.append(term)
        sizes.update(zip(term, shape))
    if not _:
        once = [c for c in sizes if sum(t.count(c) for t in letters) == 1]
        rhs = "".join(sorted(once))
    elif "..." in rhs:
        ell = [c for c in sizes if "\u0391" <= c <= "\u03a9"]
        rhs = rhs.replace("...", "".join(sorted(ell)))
    flops, first = 0, (1, 1, 1, 1)
    current = set(letters[0])
    for i, term in enumerate(letters[1:], start=1):
        other = set(term)
        later = set(rhs).union(*map(set, letters[i + 1:]))
        keep = (current | other) & later
        batch = prod(sizes[c] for c in current & other & keep)
        m = prod(sizes[c] for c in (current & keep) - other)
        n = prod(sizes[c] for c in (other & keep) - current)
        k = prod(sizes[c] for c in (current & other) - keep)
        flops += 2 * batch * m * n * k
        first = (batch, m, n, k) if i == 1 else first
        current = keep
    return flops, first
