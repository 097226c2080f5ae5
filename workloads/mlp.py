"""A plain multi-layer perceptron classifier: (linear + activation) x L, linear, cross-entropy.

Each linear layer (with the activation that follows it) is its own layer index, 0 .. L; the
classifier and the loss share the last index. The default preset ``MLP`` is an MNIST-style
network: 28 x 28 = 784 grey-scale inputs, three hidden layers of 1,024, 10 classes.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from simulator.errors import WorkloadError
from simulator.graph.opgraph import OpGraph
from simulator.graph.op import Block, DType
from workloads.layers import Builder


class Activation(str, Enum):
    RELU = "relu"
    GELU = "gelu"


@dataclass(frozen=True)
class MLPConfig:
    """``input_dim`` -> ``hidden[0]`` -> ... -> ``hidden[-1]`` -> ``num_classes``, biases on."""

    name: str
    input_dim: int
    hidden: tuple[int, ...]
    num_classes: int
    activation: Activation | str = Activation.RELU

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "activation", Activation(self.activation))
        except ValueError:
            choices = ", ".join(a.value for a in Activation)
            raise WorkloadError(f"{self.name}: activation {self.activation!r} is not one of "
                                f"{choices}")
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if min((self.input_dim, self.num_classes) + self.hidden) < 1:
            raise WorkloadError(f"{self.name}: input_dim, hidden and num_classes must be "
                                "positive")

    @property
    def tokens_per_sample(self) -> int | None:
        return None

    @property
    def widths(self) -> tuple[int, ...]:
        return (self.input_dim, *self.hidden, self.num_classes)

    def num_params(self) -> int:
        """Sum over layers of in x out weights + out biases."""
        w = self.widths
        return sum(a * b + b for a, b in zip(w[:-1], w[1:]))

    def forward_graph(self, batch: int, dtype: DType = DType.FP32,
                      param_dtype: DType | None = None) -> OpGraph:
        if batch < 1:
            raise WorkloadError(f"{self.name}: batch must be at least 1, got {batch}")
        graph = OpGraph(self.name)
        b = Builder(graph, dtype=dtype, param_dtype=param_dtype or dtype, block=Block.MLP)
        x: str | None = None
        w = self.widths
        for index, (in_f, out_f) in enumerate(zip(w[:-2], w[1:-1])):
            b.layer = index
            x = b.linear("fc", x, rows=batch, in_f=in_f, out_f=out_f)
            x = b.activation(self.activation.value, x, batch * out_f)
        b.layer, b.block = len(self.hidden), Block.HEAD
        logits = b.linear("fc", x, rows=batch, in_f=w[-2], out_f=self.num_classes)
        b.loss(logits, rows=batch, classes=self.num_classes)
        return graph


MNIST_PIXELS, MNIST_CLASSES = 28 * 28, 10  # LeCun et al. 1998: 28x28 images of 10 digits
MLP = MLPConfig("mlp", MNIST_PIXELS, (1024, 1024, 1024), MNIST_CLASSES)

PRESETS: dict[str, MLPConfig] = {MLP.name: MLP}

__all__ = ["Activation", "MLP", "MLPConfig", "PRESETS"]
