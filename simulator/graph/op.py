"""The operator record: one node of an operator graph.

An ``Op`` holds facts about one operation (what it computes, how much, on which tensors), never
results of pricing it (STYLE.md rule 5). Counting lives here and in the workload builders;
pricing lives in ``simulator.engine``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum, IntEnum


class OpKind(IntEnum):
    """The closed set of operator kinds. The integer is the code the engine sees."""

    MATMUL = 0
    CONV = 1
    ATTENTION = 2
    ELEMENTWISE = 3
    REDUCTION = 4
    NORM = 5
    SOFTMAX = 6
    EMBEDDING = 7
    POOL = 8
    LOSS = 9
    OPTIMIZER = 10
    COLLECTIVE = 11
    COPY = 12


#: Kinds whose FLOPs are "model FLOPs": the dense tensor arithmetic that MFU counts
#: (Narayanan et al. 2021 eq. 3, PaLM appendix B, ``torch.utils.flop_counter``).
TENSOR_KINDS = frozenset({OpKind.MATMUL, OpKind.CONV, OpKind.ATTENTION})
#: Norms whose statistics span a whole channel (batch x spatial values, too many for one thread
#: block to hold) and so read their input twice in training: a statistics pass, then a pass that
#: normalises and writes; their backward likewise reduces (reads the output gradient and the
#: input) before it writes the input gradient (reads both again). PyTorch's CUDA kernels,
#: aten/src/ATen/native/cuda/Normalization.cuh: ``batch_norm_collect_statistics_kernel`` then
#: ``batch_norm_transform_input_kernel``; backward ``batch_norm_backward_reduce_kernel`` then
#: ``batch_norm_backward_elemt_kernel`` (instance norm runs as a batch norm of N*C channels);
#: group_norm_kernel.cu: ``RowwiseMomentsCUDAKernel`` then the affine apply, backward
#: ``ComputeInternalGradientsCUDAKernel`` then the input-gradient kernel. A layer / RMS norm's
#: row (a few thousand values) stays in registers: one read.
CHANNEL_NORMS = frozenset({"batchnorm", "groupnorm", "instancenorm"})
#: The prefix of an imported op's ``fn`` when hwsim does not know the operator: such ops are
#: costed by their tensor traffic, and ``Result.unknown_ops`` lists them.
UNKNOWN = "unknown:"


class Phase(IntEnum):
    FORWARD = 0
    BACKWARD = 1
    RECOMPUTE = 2  # forward ops run again during the backward pass
    OPTIMIZER = 3
    COMMUNICATION = 4


class DType(IntEnum):
    """Numeric formats. ``bytes`` is the storage size of one element."""

    FP32 = 0
    TF32 = 1
    FP16 = 2
    BF16 = 3
    FP8 = 4
    INT8 = 5
    INT64 = 6
    BOOL = 7

    @property
    def bytes(self) -> int:
        return _DTYPE_BYTES[self]


_DTYPE_BYTES = {
    DType.FP32: 4, DType.TF32: 4, DType.FP16: 2, DType.BF16: 2,
    DType.FP8: 1, DType.INT8: 1, DType.INT64: 8, DType.BOOL: 1,
}


class Block(str, Enum):
    """Where an op sits inside a layer; recomputation policies select ops by it."""

    NONE = "none"
    ATTN = "attn"            # attention projections and residual
    ATTN_CORE = "attn_core"  # QK^T, softmax, dropout, AV: Korthikanti et al. 2022's selective part
    MLP = "mlp"
    NORM = "norm"
    HEAD = "head"            # embedding, final norm, logits, loss


class Role(IntEnum):
    """What a forward op is to the parallel splits of a transformer, whoever built it (the zoo's
    builders set it, the importers infer it from the graph's structure,
    ``workloads.structure``): Megatron-LM's tensor-parallel layers (Shoeybi et al. 2019,
    sec. 3), the vocabulary-parallel embedding and head, the position table that context
    parallelism keeps whole. Every other op is ``REPLICATED`` (or follows the split of the
    tensor it reads, ``simulator.parallel.tensor``)."""

    REPLICATED = 0
    COLUMN = 1              # output features split: q, k, v (or one qkv), fc1, gate, up
    ROW = 2                 # input features split: the attention's output projection, fc2
    VOCAB_EMBEDDING = 3     # the token embedding: its vocabulary rows split
    VOCAB_HEAD = 4          # the language-model head (hidden -> vocabulary): column-parallel
    POSITION_EMBEDDING = 5  # a learned position table
    # Mixture of experts (``workloads.moe``): the router stays replicated over tensor-parallel
    # ranks; the routed experts' grouped GEMMs split like the dense MLP's (column, then row)
    # and their experts over the expert-parallel ranks (``simulator.parallel.expert``); the
    # permutation and un-permutation are where the all-to-all dispatch and combine go.
    ROUTER = 6
    EXPERT_COLUMN = 7
    EXPERT_ROW = 8
    EXPERT_DISPATCH = 9
    EXPERT_COMBINE = 10


class Task(IntEnum):
    """What an op does for the training step (``Phase`` says in which pass it runs):
    ``simulator.training`` gives each op it derives its task, and ``forward_of`` names the
    forward op a derived op belongs to. The integer is the code the engine sees."""

    FORWARD = 0      # the model's forward: every op a workload builds, the collectives among them
    DATA_GRAD = 1    # gradients of its inputs: a dgrad, a vector op's grad, an adjoint collective
    WEIGHT_GRAD = 2  # the gradient of a weight, into the persistent gradient buffers (wgrad)
    GRAD_SUM = 3     # sums gradients: of a tensor several ops read, of micro-batches, of replicas
    RECOMPUTE = 4    # a forward op run again in the backward (FlashAttention's recomputation too)
    REGATHER = 5     # a sequence-parallel all-gather run again for the weight gradients
    UPDATE = 6       # the optimizer's update of one layer's parameters


@dataclass(frozen=True, slots=True)
class Op:
    """One operation.

    Shape facts: a matmul is ``batch`` independent (m x k) @ (k x n) products; a convolution is
    described as its implicit GEMM (m = N*Ho*Wo, n = Cout, k = Cin/groups*kh*kw) with the
    geometry in ``extra``. ``params`` are the parameter elements this op owns (a forward op) or
    updates (an optimizer update, ``Task.UPDATE``), held in ``tensors`` tensors.

    ``role``: what the op is to the parallel split; ``task``: what it does for the training step;
    ``forward_of``: the forward op a derived op (a gradient, a recomputed copy, a regather)
    belongs to. Names are display labels and graph keys, never looked into. ``frozen``: its
    parameters are not trained (fine-tuning, ``simulator.training.finetune``).

    ``saves`` tells what the backward pass needs from the forward pass: ``"inputs"`` (the
    tensors on the op's input edges, in input order), ``"output"`` (its own output) and
    ``mask_bytes`` (a mask the op keeps, e.g. dropout's), ``stats_bytes`` (per-row statistics a
    norm keeps). Inputs that come from outside the graph (token ids, images) get no gradient,
    nor do the inputs named in ``no_grad`` (producers of tensors that do not require grad: a
    mask built in the graph, a frozen backbone's features).
    """

    name: str
    kind: OpKind
    phase: Phase = Phase.FORWARD
    dtype: DType = DType.FP32
    flops: int = 0
    vector_flops: int = 0  # arithmetic on the vector units inside a fused tensor op
    bytes_read: int = 0
    bytes_written: int = 0
    out_bytes: int = 0
    params: int = 0
    param_tensors: int = 0  # how many parameter tensors hold ``params`` (0: one if any)
    param_dtype: DType = DType.FP32
    layer: int = -1
    block: Block = Block.NONE
    m: int = 0
    n: int = 0
    k: int = 0
    batch: int = 1
    extra: tuple[tuple[str, int], ...] = ()
    saves: tuple[str, ...] = ()
    mask_bytes: int = 0
    stats_bytes: int = 0
    forward_of: str = ""
    role: Role = Role.REPLICATED
    task: Task = Task.FORWARD
    fn: str = ""  # what the op computes within its kind: "gelu", "add", "layernorm", ...
    no_grad: tuple[str, ...] = ()  # input producers that get no gradient from this op
    frozen: bool = False  # its parameters are not trained: no weight gradient, no optimizer state

    @property
    def param_bytes(self) -> int:
        return self.params * self.param_dtype.bytes

    @property
    def tensors(self) -> int:
        """Parameter tensors this op owns or updates (a weight and a bias are two)."""
        return self.param_tensors or (1 if self.params else 0)

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def model_flops(self) -> int:
        """FLOPs that count towards MFU (dense tensor arithmetic only)."""
        return self.flops if self.kind in TENSOR_KINDS else 0

    @property
    def causal(self) -> int:
        """1 for attention under a causal mask (a decoder's), else 0."""
        return dict(self.extra).get("causal", 0)

    @property
    def shape(self) -> dict[str, int]:
        facts = {"m": self.m, "n": self.n, "k": self.k, "batch": self.batch}
        facts.update(dict(self.extra))
        return facts

    def evolve(self, **changes) -> "Op":
        """A copy with ``changes``: ``dataclasses.replace``'s result (an unknown field is its
        TypeError), without its per-call walk over the fields' definitions (a tenth of the
        validation report's time, 2026-12-06)."""
        values = {name: getattr(self, name) for name in _INIT_FIELDS}
        values.update(changes)
        return Op(**values)


#: ``Op``'s fields, in order, as ``evolve`` copies them (every one is an ``__init__`` field).
_INIT_FIELDS = tuple(f.name for f in fields(Op) if f.init)


__all__ = ["Block", "DType", "Op", "OpKind", "Phase", "Role", "TENSOR_KINDS", "Task"]
