"""A workload imported from a user's model (PyTorch module or ONNX file).

The importer records the model at the batch of its example inputs and hands over a function
that builds the forward graph in any dtype (bytes follow the dtype; counts do not change), so
that the plan's precision applies to imported models as to zoo models.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from simulator.errors import PlanError
from simulator.graph.opgraph import OpGraph
from simulator.graph.op import DType


@dataclass(frozen=True)
class ImportedWorkload:
    name: str
    build: Callable[[DType, DType], OpGraph]   # (activation dtype, parameter dtype) -> graph
    default_batch: int                          # the batch of the example inputs
    params: int
    seq_len: int | None = None                  # tokens per sample, when the model is an LM

    @property
    def tokens_per_sample(self) -> int | None:
        return self.seq_len

    def num_params(self) -> int:
        return self.params

    def forward_graph(self, batch: int, dtype: DType = DType.FP32,
                      param_dtype: DType | None = None) -> OpGraph:
        if batch != self.default_batch:
            raise PlanError(f"{self.name}: micro_batch = {batch}, but the example inputs fix the "
                            f"batch at {self.default_batch}: use --micro-batch "
                            f"{self.default_batch} (and --global-batch for more)")
        return self.build(dtype, param_dtype or dtype)
