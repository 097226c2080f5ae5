"""A workload imported from a user's model (PyTorch module or ONNX file).

The importer records the model at the batch of its example inputs and hands over a function
that builds the forward graph in any dtype (bytes follow the dtype; counts do not change), so
that the plan's precision applies to imported models as to zoo models. When the graph's
structure is a transformer's (``workloads.structure``), ``transformer`` says its shape, so that
its layers split over tensor- and pipeline-parallel ranks as a zoo transformer's do.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from simulator.errors import PlanError
from simulator.graph.opgraph import OpGraph
from simulator.graph.op import DType
from workloads.base import TransformerShape
from workloads.structure import first_layers


@dataclass(frozen=True)
class ImportedWorkload:
    name: str
    build: Callable[[DType, DType], OpGraph]   # (activation dtype, parameter dtype) -> graph
    default_batch: int                          # the batch of the example inputs
    params: int
    seq_len: int | None = None                  # tokens per sample, when the model is an LM
    transformer: TransformerShape | None = None  # its shape, when it is a transformer
    kept_layers: int | None = None              # build the first layers only (a stage's model)

    @property
    def tokens_per_sample(self) -> int | None:
        return self.seq_len

    @property
    def layers(self) -> int:
        """The transformer's layers; any other model is one block (which tensor and pipeline
        parallelism refuse to split, ``simulator.parallel.rank.micro_batches``)."""
        return self.transformer.layers if self.transformer else 1

    def with_layers(self, layers: int) -> "ImportedWorkload":
        """The model of the first ``layers`` layers (a pipeline stage's: every layer alike)."""
        if self.transformer is None:
            raise PlanError(f"{self.name} is not a transformer: its layers cannot be split")
        return replace(self, kept_layers=layers)

    def num_params(self) -> int:
        return self.params

    def forward_graph(self, batch: int, dtype: DType = DType.FP32,
                      param_dtype: DType | None = None) -> OpGraph:
        if batch != self.default_batch:
            raise PlanError(f"{self.name}: micro_batch = {batch}, but the example inputs fix the "
                            f"batch at {self.default_batch}: use --micro-batch "
                            f"{self.default_batch} (and --global-batch for more)")
        graph = self.build(dtype, param_dtype or dtype)
        return graph if self.kept_layers is None else first_layers(graph, self.kept_layers)
