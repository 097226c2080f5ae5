"""Which implementation prices a step: the numba kernels or their NumPy twins.

Both give the same figures bit for bit (``simulator.engine.lite``). A single prediction of a
small graph is answered without loading numba (about half a second of a command's start-up);
large graphs, and processes that price many steps (sweeps, capacity plans: ``prefer_compiled``),
use the compiled kernels.
"""
from __future__ import annotations

import sys

#: Ops of a lowered stage at and above which the compiled kernels are worth loading.
COMPILED_FROM_OPS = 20_000
_prefer = False


def prefer_compiled() -> None:
    """Use the numba kernels from now on in this process (many steps to price)."""
    global _prefer
    _prefer = True


def engine(n_ops: int):
    """The module to price ``n_ops`` ops with: ``kernels`` or ``lite``."""
    if _prefer or n_ops >= COMPILED_FROM_OPS or "numba" in sys.modules:
        from simulator.engine import kernels
        return kernels
    from simulator.engine import lite
    return lite


__all__ = ["COMPILED_FROM_OPS", "engine", "prefer_compiled"]
