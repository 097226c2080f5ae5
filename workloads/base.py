"""What every workload offers the simulator: a forward graph for a batch, and its size."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from simulator.graph.opgraph import OpGraph
from simulator.graph.op import DType


@runtime_checkable
class Workload(Protocol):
    name: str

    def forward_graph(self, batch: int, dtype: DType = DType.FP32,
                      param_dtype: DType | None = None) -> OpGraph:
        """One replica's forward pass over ``batch`` samples, ending in the loss op."""

    def num_params(self) -> int:
        """Parameter count from the closed form (the graph's sum must agree)."""

    @property
    def tokens_per_sample(self) -> int | None:
        """Sequence length for language models; None for others."""

    # Optional: ``default_batch`` (int), the micro-batch the CLI uses when none is given
    # (an imported model's example inputs fix it).
