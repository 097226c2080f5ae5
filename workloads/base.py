"""What every workload offers the simulator: a forward graph for a batch, and its size."""
from __future__ import annotations

from dataclasses import dataclass
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
    # (an imported model's example inputs fix it); ``transformer`` (a ``TransformerShape``, or
    # None), what splitting its layers over tensor- and pipeline-parallel ranks needs, with
    # ``layers`` and ``with_layers(n)``, the model of its first n layers (a pipeline stage's).


@dataclass(frozen=True)
class TransformerShape:
    """What splitting a transformer's layers needs to know: Megatron-LM's divisibility rules
    (``ParallelPlan.validate``, ``simulator.parallel.tensor.check``) and the layer count the
    pipeline stages share."""

    layers: int
    hidden: int      # the residual stream's width (the attention output projection's)
    heads: int
    kv_heads: int
    sequence: int    # tokens the layers see per sample
    ffn: int         # the MLP's inner width (fc2's input features)
    head_dim: int = 0  # features per attention head (0: hidden / heads)
    experts: int = 0     # a mixture of experts' routed experts (0: a dense model)
    expert_ffn: int = 0  # their inner width (tp splits it as the dense MLP's)

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden // self.heads
