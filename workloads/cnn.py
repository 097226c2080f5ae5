"""ResNet image classifiers, built op by op as torchvision's ``resnet`` models.

Architecture: He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), Table 1,
in torchvision's "v1.5" form (the stride of a bottleneck sits on its 3x3 conv, not its first
1x1): every conv without bias and followed by BatchNorm; ReLU after each BatchNorm except the
last of a block, which is added to the shortcut first; a 1x1 conv + BatchNorm on the shortcut
whenever the stride or the channel count changes; a 7x7/2 stem conv and a 3x3/2 max pool;
global average pooling and a fully connected layer with bias; cross-entropy loss.

Layer indices (what per-layer recomputation selects): the stem is layer 0, residual block ``i``
(counted over all stages from 1) is layer ``i``, the pooling, classifier and loss are the last.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from simulator.errors import WorkloadError
from simulator.graph.opgraph import OpGraph
from simulator.graph.op import Block, DType
from workloads.layers import Builder

STEM_KERNEL, STEM_STRIDE, STEM_PAD = 7, 2, 3   # He et al. 2016 Table 1, conv1: 7x7, 64, stride 2
POOL_KERNEL, POOL_STRIDE, POOL_PAD = 3, 2, 1   # Table 1, conv2_x: 3x3 max pool, stride 2
BOTTLENECK_EXPANSION = 4                       # Table 1: [1x1 64, 3x3 64, 1x1 256]
STAGE_COUNT = 4                                # conv2_x .. conv5_x; channels double per stage


class ResBlock(str, Enum):
    """The residual block: two 3x3 convs (ResNet-18/34) or 1x1-3x3-1x1 (ResNet-50 and up)."""

    BASIC = "basic"
    BOTTLENECK = "bottleneck"

    @property
    def expansion(self) -> int:
        return BOTTLENECK_EXPANSION if self is ResBlock.BOTTLENECK else 1


@dataclass(frozen=True)
class ResNetConfig:
    """A torchvision-style ResNet; ``width`` is the stem's and the first stage's channel count."""

    name: str
    block: ResBlock | str = ResBlock.BASIC
    layers: tuple[int, ...] = (2, 2, 2, 2)
    num_classes: int = 1000
    image_size: int = 224
    width: int = 64
    in_channels: int = 3

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "block", ResBlock(self.block))
        except ValueError:
            choices = ", ".join(b.value for b in ResBlock)
            raise WorkloadError(f"{self.name}: block {self.block!r} is not one of {choices}")
        object.__setattr__(self, "layers", tuple(self.layers))
        if len(self.layers) != STAGE_COUNT or min(self.layers) < 1:
            raise WorkloadError(f"{self.name}: layers must be {STAGE_COUNT} positive block "
                                f"counts, got {self.layers}")
        for key in ("num_classes", "image_size", "width", "in_channels"):
            if getattr(self, key) < 1:
                raise WorkloadError(f"{self.name}: {key} must be positive")

    # -- Workload protocol ----------------------------------------------------------------------
    @property
    def tokens_per_sample(self) -> int | None:
        return None

    @property
    def num_blocks(self) -> int:
        return sum(self.layers)

    def num_params(self) -> int:
        """Closed form: stem conv+BN, every block's convs and BNs, shortcuts, classifier."""
        stem = self.in_channels * self.width * STEM_KERNEL ** 2 + 2 * self.width
        total, inplanes = stem, self.width
        for planes, stride in self._blocks():
            total += _block_params(self.block, inplanes, planes, stride)
            inplanes = planes * self.block.expansion
        return total + inplanes * self.num_classes + self.num_classes

    def forward_graph(self, batch: int, dtype: DType = DType.FP32,
                      param_dtype: DType | None = None) -> OpGraph:
        if batch < 1:
            raise WorkloadError(f"{self.name}: batch must be at least 1, got {batch}")
        graph = OpGraph(self.name)
        b = Builder(graph, dtype=dtype, param_dtype=param_dtype or dtype)
        x, c, h = self._stem(b, batch)
        for index, (planes, stride) in enumerate(self._blocks(), start=1):
            b.layer = index
            block = _bottleneck if self.block is ResBlock.BOTTLENECK else _basic
            x, c, h = block(b, x, batch, c, h, planes, stride)
        self._head(b, x, batch, c, h)
        return graph

    # -- pieces ---------------------------------------------------------------------------------
    def _blocks(self) -> list[tuple[int, int]]:
        """(planes, stride) of every residual block: stage 1 keeps the size, later ones halve."""
        out = []
        for stage, count in enumerate(self.layers):
            planes = self.width * 2 ** stage
            out += [(planes, 2 if stage > 0 and i == 0 else 1) for i in range(count)]
        return out

    def _stem(self, b: Builder, n: int) -> tuple[str, int, int]:
        b.layer, b.block = 0, Block.HEAD
        size = self.image_size  # any size >= 1 gives maps >= 1 x 1 (padding keeps them)
        x, h, w = b.conv2d("conv1", None, n, self.in_channels, size, size, self.width,
                           STEM_KERNEL, STEM_STRIDE, STEM_PAD)
        x = _bn_relu(b, x, n, self.width, h, w)
        x, h, w = b.pool("maxpool", x, n, self.width, h, w, POOL_KERNEL, POOL_STRIDE, POOL_PAD)
        b.block = Block.NONE
        return x, self.width, h

    def _head(self, b: Builder, x: str, n: int, c: int, h: int) -> str:
        b.layer, b.block = self.num_blocks + 1, Block.HEAD
        x = b.mean(x, numel=n * c * h * h, out_numel=n * c, base="avgpool")
        logits = b.linear("fc", x, rows=n, in_f=c, out_f=self.num_classes, bias=True)
        return b.loss(logits, rows=n, classes=self.num_classes)


def _bn_relu(b: Builder, x: str, n: int, c: int, h: int, w: int, relu: bool = True) -> str:
    """BatchNorm2d over N*H*W values per channel, then (optionally) ReLU."""
    x = b.norm("batchnorm", x, rows=n * h * w, width=c)
    return b.activation("relu", x, n * c * h * w) if relu else x


def _conv_bn(b: Builder, base: str, x: str, n: int, cin: int, h: int, cout: int, kernel: int,
             stride: int, relu: bool = True) -> tuple[str, int]:
    """Conv (padding kernel // 2, no bias) + BatchNorm (+ ReLU); square maps: returns (x, Ho)."""
    x, ho, wo = b.conv2d(base, x, n, cin, h, h, cout, kernel, stride, kernel // 2)
    return _bn_relu(b, x, n, cout, ho, wo, relu), ho


def _shortcut(b: Builder, x: str, n: int, cin: int, h: int, cout: int, stride: int) -> str:
    """Identity, or 1x1 conv + BatchNorm where the shape changes (torchvision's downsample)."""
    if stride == 1 and cin == cout:
        return x
    return _conv_bn(b, "downsample", x, n, cin, h, cout, 1, stride, relu=False)[0]


def _join(b: Builder, y: str, shortcut: str, n: int, c: int, h: int) -> str:
    out = b.add(y, shortcut, n * c * h * h)
    return b.activation("relu", out, n * c * h * h)


def _basic(b: Builder, x: str, n: int, cin: int, h: int, planes: int,
           stride: int) -> tuple[str, int, int]:
    """3x3 conv (stride) - BN - ReLU - 3x3 conv - BN, + shortcut, ReLU."""
    y, ho = _conv_bn(b, "conv1", x, n, cin, h, planes, 3, stride)
    y, ho = _conv_bn(b, "conv2", y, n, planes, ho, planes, 3, 1, relu=False)
    skip = _shortcut(b, x, n, cin, h, planes, stride)
    return _join(b, y, skip, n, planes, ho), planes, ho


def _bottleneck(b: Builder, x: str, n: int, cin: int, h: int, planes: int,
                stride: int) -> tuple[str, int, int]:
    """1x1 - 3x3 (stride, v1.5) - 1x1 (x4 channels), each with BN, + shortcut, ReLU."""
    cout = planes * BOTTLENECK_EXPANSION
    y, _ = _conv_bn(b, "conv1", x, n, cin, h, planes, 1, 1)
    y, ho = _conv_bn(b, "conv2", y, n, planes, h, planes, 3, stride)
    y, ho = _conv_bn(b, "conv3", y, n, planes, ho, cout, 1, 1, relu=False)
    skip = _shortcut(b, x, n, cin, h, cout, stride)
    return _join(b, y, skip, n, cout, ho), cout, ho


def _block_params(block: ResBlock, cin: int, planes: int, stride: int) -> int:
    """Weights of one residual block: convs (no bias) and two per-channel BN parameters each."""
    cout = planes * block.expansion
    if block is ResBlock.BOTTLENECK:
        convs = [(cin, planes, 1), (planes, planes, 3), (planes, cout, 1)]
    else:
        convs = [(cin, planes, 3), (planes, planes, 3)]
    if stride != 1 or cin != cout:
        convs.append((cin, cout, 1))
    return sum(ci * co * k * k + 2 * co for ci, co, k in convs)


# Block counts per stage: He et al. 2016 Table 1.
RESNET18 = ResNetConfig("resnet-18", ResBlock.BASIC, (2, 2, 2, 2))
RESNET34 = ResNetConfig("resnet-34", ResBlock.BASIC, (3, 4, 6, 3))
RESNET50 = ResNetConfig("resnet-50", ResBlock.BOTTLENECK, (3, 4, 6, 3))
RESNET101 = ResNetConfig("resnet-101", ResBlock.BOTTLENECK, (3, 4, 23, 3))
RESNET152 = ResNetConfig("resnet-152", ResBlock.BOTTLENECK, (3, 8, 36, 3))

PRESETS: dict[str, ResNetConfig] = {
    m.name: m for m in (RESNET18, RESNET34, RESNET50, RESNET101, RESNET152)}

__all__ = ["PRESETS", "RESNET18", "RESNET34", "RESNET50", "RESNET101", "RESNET152",
           "ResBlock", "ResNetConfig"]
