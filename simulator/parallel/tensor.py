"""Tensor (and sequence) parallelism: one transformer forward graph -> what one of ``tp`` ranks
runs, with the collectives Megatron-LM places.

A graph transform over a transformer's forward ``OpGraph``, returning a new graph. It reads
each op's ``Role`` (the zoo's builders set it, the importers infer it), never its name:

- column-parallel linears (``Role.COLUMN``: q, k, v or one qkv, fc1, gate, up; and the
  vocab-parallel head, ``Role.VOCAB_HEAD``) keep 1/tp of their output features (n / tp);
  row-parallel linears (``Role.ROW``: the attention's output projection, fc2) 1/tp of their
  input features (k / tp), their bias replicated (Shoeybi et al. 2019, sec. 3, Fig. 3);
- every op reading a split tensor (the attention core, whose batch of heads splits; rope,
  GeLU, SwiGLU; the vocab-parallel cross-entropy) does 1/tp of the work; the token embedding
  (``Role.VOCAB_EMBEDDING``) is vocab-parallel (1/tp of the table; vocab rounded up to a
  multiple of tp);
- norms, residuals and dropouts outside the split regions stay replicated; with sequence
  parallelism (Korthikanti et al. 2022, sec. 4.2.2) they run on 1/tp of the tokens;
- collectives (``OpKind.COLLECTIVE``, ``extra`` group = tp, axis = ``Axis.TENSOR``): Megatron's
  f before each column-parallel group (``identity`` forward, all-reduce backward) and g after
  each row-parallel linear and the vocab-parallel embedding (all-reduce forward, identity
  backward); with sequence parallelism all-gather / reduce-scatter instead, of the same
  buffer (``simulator.graph.collective.ADJOINT`` derives the backward ones; with
  sequence parallelism the column-parallel linears keep their inputs as shards and the
  backward gathers them again, ``simulator.training.backward.gathered_shard``, as Megatron-LM does).

KV heads fewer than ranks (multi-query and grouped-query attention: PaLM's 1 KV head on 12
ranks, StarCoder's on 4; tp a multiple of kv_heads): each rank holds the one KV head its query
heads read, so the k and v projections (and the ops on their outputs, rope) keep 1/kv_heads
of their features, not 1/tp: each head is replicated over g = tp / kv_heads ranks, as vLLM's
``QKVParallelLinear`` does ("num_kv_head_replicas") and PaLM ran multi-query attention under
model parallelism (Chowdhery et al. 2022, sec. 2 and 4). The replicated weights, their FLOPs
and their memory are counted on every rank; such a linear carries the facts ``replicas`` (g)
and ``replicated`` (its replicated weight elements), from which
``simulator.parallel.data.add_replicated_grad_reduce`` sums their gradients over the g ranks
that share them and ``simulator.report.figures`` counts the replicated FLOPs as hardware
FLOPs, not model FLOPs.

LoRA adapters (``simulator.training.finetune``: A and B beside a frozen linear, each with the
fact ``lora_a`` / ``lora_b`` holding the base's ``Role``) split as NeMo's
``ParallelLinearAdapter`` splits them (NVIDIA/NeMo r2.0.0rc1, 579983f,
nemo/collections/nlp/modules/common/megatron/adapters/parallel_adapters.py, built with
``gather_output=False`` by nemo/collections/nlp/parts/peft_config.py ``_create_lora_config``):
beside a column-parallel base, A is a ColumnParallelLinear(k, r, gather_output=True) (r / tp
of its outputs, then an all-gather of the m x r result, whose backward is a slice) and B a
ColumnParallelLinear(r, n) (n / tp of its outputs, like the base's); beside a row-parallel
base, A is a RowParallelLinear(k, r, input_is_parallel=True) (k / tp of its inputs, its m x r
output all-reduced) and B a ColumnParallelLinear(r, n, gather_output=True) whose n / tp
outputs are gathered back (a slice backward). With sequence parallelism that whole m x n
output is then split to this rank's 1/tp of the tokens (``scatter_to_sequence_parallel_region``:
a slice forward, no kernel, op ``split``; its backward all-gathers the m / tp x n gradient),
NeMo's default; or, with ``ParallelPlan.lora_a2a`` (NeMo's ``a2a_experimental``, as MLPerf's
LoRA runs it), B keeps its n / tp outputs and one all-to-all moves them to the token shard
(``all2all_hp2sp``; backward the reverse all-to-all). B reads A's whole output through an
identity whose backward all-reduces the m x r gradient
(``copy_to_tensor_model_parallel_region``). A column adapter reads its input through its own
f, shared by the adapters of one input: an identity (backward: all-reduce) or, with sequence
parallelism, an all-gather of the shard (backward: reduce-scatter), as the adapter gathers the
layernorm output itself under TP communication overlap. These collectives carry the fact
``lora``: plain NCCL (Megatron's mappings), never userbuffers, and the adapter keeps its
gathered input for its weight gradient. No adapter weight is replicated over the tp ranks.

Left out: the three small all-reduces of the vocab-parallel cross-entropy (3 x tokens x 4
bytes, against tokens x hidden x 2 for each of the layers' all-reduces).
"""
from __future__ import annotations

import math

from simulator.errors import PlanError
from simulator.graph.collective import Axis, collective
from simulator.graph.op import Block, Op, OpKind, Phase, Role, Task
from simulator.graph.opgraph import OpGraph
from simulator.training.finetune import ADAPTER_A, ADAPTER_B
from workloads.base import TransformerShape

#: Roles whose output features split (the vocab-parallel head is column-parallel).
COLUMN = frozenset({Role.COLUMN, Role.VOCAB_HEAD})


def check(shape: TransformerShape, tp: int) -> None:
    """Megatron-LM's divisibility rules beyond heads (``ParallelPlan.validate``)."""
    if shape.ffn % tp:
        raise PlanError(f"tp = {tp} must divide ffn_hidden = {shape.ffn}")
    if shape.hidden % tp:
        raise PlanError(f"tp = {tp} must divide hidden = {shape.hidden}")
    if shape.expert_ffn % tp:
        raise PlanError(f"tp = {tp} must divide the experts' ffn = {shape.expert_ffn} "
                        "([moe] expert_ffn_hidden)")


def split(forward: OpGraph, tp: int, sequence_parallel: bool = False,
          shape: TransformerShape | None = None, lora_a2a: bool = False) -> OpGraph:
    """What one of ``tp`` tensor-parallel ranks runs of ``forward`` (``forward`` if tp = 1);
    ``shape``: the transformer's, which says when KV heads are replicated (kv_heads < tp);
    ``lora_a2a``: under sequence parallelism a row-parallel LoRA adapter's output reaches its
    token shard by one all-to-all, not an all-gather and a split (the module docstring)."""
    if tp == 1:
        return forward
    if sequence_parallel and not any(op.role is Role.VOCAB_EMBEDDING for op in forward.ops()):
        raise PlanError("sequence parallelism needs a language model (a token embedding); "
                        "leave it off for this model")
    return _Split(forward, tp, sequence_parallel, shape, lora_a2a).run()


class _Split:
    def __init__(self, forward: OpGraph, tp: int, sequence_parallel: bool,
                 shape: TransformerShape | None = None, lora_a2a: bool = False) -> None:
        self.forward, self.tp, self.sp = forward, tp, sequence_parallel
        self.a2a = lora_a2a
        replicated = shape is not None and shape.kv_heads < tp
        self.kv = shape.kv_heads if replicated else 0  # KV heads when each rank holds one
        self.shape = shape
        self.out = OpGraph(forward.name)
        self.split: set[str] = set()     # outputs split over the ranks (heads, features, tokens)
        self.heads: set[str] = set()     # of them, the KV heads replicated over tp / kv ranks
        self.remap: dict[str, str] = {}  # op -> the op its readers read instead (after g)
        self.entry: dict[str, str] = {}  # producer -> its f (or all-gather) op
        self.partial: set[str] = set()   # row-parallel partial sums not yet reduced
        self.adapter_entry: dict[str, str] = {}   # producer -> the LoRA adapters' own f

    def run(self) -> OpGraph:
        for name in self.forward.names():
            op = self.forward.op(name)
            inputs = self.forward.inputs(name)
            facts = dict(op.extra)
            if ADAPTER_A in facts or ADAPTER_B in facts:   # a LoRA adapter's A or B
                self._adapter(name, op, inputs, facts)
            elif op.role is Role.EXPERT_COLUMN:   # the experts split as the dense MLP does
                reads = [self._enter(src, op) for src in inputs]
                self._add(grouped(op, op.k, math.ceil(op.n / self.tp)), reads, split=True)
            elif op.role is Role.EXPERT_ROW:
                self._add(grouped(op, op.k // self.tp, op.n), self._reads(inputs))
                self._exit(name, op)
            elif op.role in COLUMN:
                reads = [self._enter(src, op) for src in inputs]
                kept = self._replicated(op)
                if kept:
                    self._add(kept, reads, split=True)
                    self.heads.add(name)
                else:
                    self._add(_linear(op, op.m, op.k, math.ceil(op.n / self.tp)), reads,
                              split=True)
            elif op.role is Role.ROW:
                self._add(_linear(op, op.m, op.k // self.tp, op.n), self._reads(inputs))
                if self._summed_first(name):
                    self.partial.add(name)   # reduced after the sum (parallel residual)
                else:
                    self._exit(name, op)
            elif inputs and all(self.remap.get(s, s) in self.partial for s in inputs):
                self._add(op, self._reads(inputs))   # on partial sums: the tag's add, a dropout
                if _sums(op):
                    self._exit(name, op)
                else:
                    self.partial.add(name)
            elif op.role is Role.VOCAB_EMBEDDING:
                vocab = math.ceil(op.k / self.tp)
                self._add(op.evolve(k=vocab, params=vocab * op.n), [])
                self._exit(name, op)
            elif op.block is Block.ATTN_CORE or any(s in self.split
                                                    for s in self._reads(inputs)):
                reads = self._reads(inputs)
                heads = [s for s in reads if s in self.split]
                on_heads = op.block is not Block.ATTN_CORE and all(s in self.heads
                                                                   for s in heads)
                self._add(_scaled(op, self.kv if on_heads else self.tp), reads, split=True)
                if on_heads:
                    self.heads.add(name)
            else:
                self._add(op, self._reads(inputs))
        return self.out

    def _summed_first(self, name: str) -> bool:
        """Whether a row-parallel output reaches only an add tagged ``partial_sum`` (directly
        or through one single-input vector op, a dropout) whose inputs all come so from
        row-parallel outputs: a parallel-residual layer, whose attention and MLP partial sums
        are added before one all-reduce (``workloads.transformer``)."""
        readers = self.forward.consumers(name)
        if len(readers) == 1 and not _sums(self.forward.op(readers[0])) and \
                self._passes(readers[0]):
            readers = self.forward.consumers(readers[0])
        if len(readers) != 1 or not _sums(self.forward.op(readers[0])):
            return False
        return all(self.forward.op(src).role is Role.ROW or (
            self._passes(src) and self.forward.op(self.forward.inputs(src)[0]).role is Role.ROW)
            for src in self.forward.inputs(readers[0]))

    def _passes(self, name: str) -> bool:
        """A single-input vector op (a dropout) a partial sum may go through."""
        return self.forward.op(name).kind is OpKind.ELEMENTWISE and \
            len(self.forward.inputs(name)) == 1

    def _replicated(self, op: Op) -> Op | None:
        """A k or v projection (or a fused q, k, v one) when each rank holds one KV head
        replicated over tp / kv ranks: its features on a rank, with the facts ``replicas`` and
        ``replicated`` (weight elements); else None (split 1/tp as usual)."""
        if not self.kv:
            return None
        d, heads, kv = self.shape.head_size, self.shape.heads, self.kv
        if op.n == kv * d:                      # k or v: one head of kv
            n, kv_features = d, d
        elif op.n == (heads + 2 * kv) * d:      # fused q, k, v: heads / tp queries, k and v
            n, kv_features = (heads // self.tp + 2) * d, 2 * d
        else:
            return None
        bias = kv_features if op.params > op.k * op.n else 0   # replicated with the weight
        facts = (("replicas", self.tp // kv), ("replicated", op.k * kv_features + bias))
        return _linear(op, op.m, op.k, n).evolve(extra=(*op.extra, *facts))

    def _adapter(self, name: str, op: Op, inputs: list[str], facts: dict) -> None:
        """A LoRA adapter's matrix split as NeMo's ``ParallelLinearAdapter`` splits it (the
        module docstring's "LoRA adapters")."""
        tp, es = self.tp, op.dtype.bytes
        column = facts.get(ADAPTER_A, facts.get(ADAPTER_B)) == int(Role.COLUMN)
        if ADAPTER_A in facts and column:   # ColumnParallelLinear(k, r, gather_output=True)
            self._add(_linear(op, op.m, op.k, op.n // tp), [self._adapter_entry(src, op)
                                                            for src in inputs])
            size = op.m * op.n * es
            g = collective(f"{name}.tp_all_gather", "all_gather", size // tp, size, size, tp,
                           Axis.TENSOR, op, scatter=tp, lora=1)   # backward: a slice
            self.remap[name] = self.out.add(g, [name])
        elif ADAPTER_A in facts:            # RowParallelLinear(k, r, input_is_parallel)
            self._add(_linear(op, op.m, op.k // tp, op.n), self._reads(inputs))
            size = op.m * op.n * es
            g = collective(f"{name}.tp_all_reduce", "all_reduce", size, size, size, tp,
                           Axis.TENSOR, op, lora=1)
            self.remap[name] = self.out.add(g, [name])
        else:                               # ColumnParallelLinear(r, n): its input whole
            src = self._reads(inputs)[0]
            size = self.out.op(src).out_bytes
            f = collective(f"{name}.tp_identity", "identity", 0, 0, size, tp, Axis.TENSOR, op,
                           lora=1)          # backward: the all-reduce of r-wide gradients
            self._add(_linear(op, op.m, op.k, op.n // tp), [self.out.add(f, [src])],
                      split=True)
            if not column:                  # the output back to the row-parallel base's
                self._adapter_exit(name, op)

    def _adapter_entry(self, src: str, reader: Op) -> str:
        """An adapter's own f before its A (one per input, shared by the adapters reading
        it): the identity whose backward all-reduces the input's gradient, or with sequence
        parallelism the all-gather of the shard (backward: reduce-scatter)."""
        src = self.remap.get(src, src)
        if src not in self.adapter_entry:
            size = self.out.op(src).out_bytes
            if self.sp:
                op = collective(f"{src}.lora_tp_all_gather", "all_gather", size,
                                size * self.tp, size * self.tp, self.tp, Axis.TENSOR, reader,
                                lora=1)
            else:
                op = collective(f"{src}.lora_tp_identity", "identity", 0, 0, size, self.tp,
                                Axis.TENSOR, reader, lora=1)
            self.adapter_entry[src] = self.out.add(op, [src])
        return self.adapter_entry[src]

    def _adapter_exit(self, name: str, op: Op) -> None:
        """B's output (n / tp features) back to the layout of a row-parallel base's reduced
        output: an all-gather of the whole m x n (``gather_output``; backward: a slice), with
        sequence parallelism then split to 1/tp of the tokens (no kernel; backward: an
        all-gather of the gradient); or with ``lora_a2a`` under sequence parallelism one
        all-to-all to 1/tp of the tokens (NeMo's ``a2a_experimental``)."""
        size = op.out_bytes   # the whole m x n output
        if self.sp and self.a2a:
            x = collective(f"{name}.tp_all_to_all", "all_to_all", size // self.tp,
                           size // self.tp, size // self.tp, self.tp, Axis.TENSOR, op, lora=1)
            self.split.add(x.name)
            self.remap[name] = self.out.add(x, [name])
            return
        x = collective(f"{name}.tp_all_gather", "all_gather", size // self.tp, size, size,
                       self.tp, Axis.TENSOR, op, scatter=self.tp, lora=1)
        self.remap[name] = self.out.add(x, [name])
        if self.sp:   # scatter_to_sequence_parallel_region: this rank's tokens, a slice
            cut = collective(f"{name}.tp_split", "split", 0, 0, size // self.tp, self.tp,
                             Axis.TENSOR, op, lora=1)
            self.split.add(cut.name)
            self.remap[name] = self.out.add(cut, [self.remap[name]])

    def _reads(self, inputs: list[str]) -> list[str]:
        return [self.remap.get(src, src) for src in inputs]

    def _add(self, op: Op, inputs: list[str], split: bool = False) -> None:
        self.out.add(op, inputs)
        if split:
            self.split.add(op.name)

    def _enter(self, src: str, reader: Op) -> str:
        """f before a column-parallel group: every rank needs the whole input."""
        src = self.remap.get(src, src)
        if src not in self.entry:
            size = self.out.op(src).out_bytes
            if self.sp:   # the input is a sequence shard: gather the whole tensor
                op = collective(f"{src}.tp_all_gather", "all_gather", size, size * self.tp,
                                size * self.tp, self.tp, Axis.TENSOR, reader)
            else:         # the same tensor on every rank: no traffic forward
                op = collective(f"{src}.tp_identity", "identity", 0, 0, size, self.tp,
                                Axis.TENSOR, reader)
            self.entry[src] = self.out.add(op, [src])
        return self.entry[src]

    def _exit(self, name: str, op: Op) -> None:
        """g after a row-parallel linear or the vocab-parallel embedding: sum partial results
        (or reduce-scatter them to sequence shards)."""
        size = op.out_bytes
        if self.sp:
            g = collective(f"{name}.tp_reduce_scatter", "reduce_scatter", size, size // self.tp,
                           size // self.tp, self.tp, Axis.TENSOR, op)
            self.split.add(g.name)
        else:
            g = collective(f"{name}.tp_all_reduce", "all_reduce", size, size, size, self.tp,
                           Axis.TENSOR, op)
        self.remap[name] = self.out.add(g, [name])


def use_userbuffers(step: OpGraph) -> OpGraph:
    """Megatron-Core's ``tp_comm_overlap``: every tensor-parallel all-gather and
    reduce-scatter inside a transformer layer of ``step`` (``Op.layer`` >= 0) carries the
    fact ``userbuffers`` = 1, which ``simulator.cost.overlap`` prices as TransformerEngine's
    userbuffers overlapping it with its GEMM. Only the layers' linears are TransformerEngine
    modules with userbuffers: the embedding's reduce-scatter and the LM head's all-gather
    (Megatron-Core's ``output_layer`` is ``tensor_parallel.ColumnParallelLinear`` unless an
    MXFP8 output projection is asked, megatron/core/models/gpt/gpt_model.py at
    NVIDIA/Megatron-LM d98e8a64dd) stay plain
    NCCL collectives. ``step`` is changed in place and returned."""
    for name in step.names():
        op = step.op(name)
        facts = dict(op.extra)
        if op.kind is OpKind.COLLECTIVE and op.fn in ("all_gather", "reduce_scatter") and \
                facts.get("axis") == int(Axis.TENSOR) and op.layer >= 0 and \
                not facts.get("lora"):   # LoRA adapters' own are Megatron's NCCL mappings
            step.nx.nodes[name]["op"] = op.evolve(extra=(*op.extra, ("userbuffers", 1)))
    return step


def _sums(op: Op) -> bool:
    """The add of a parallel-residual layer's attention and MLP outputs."""
    return bool(dict(op.extra).get("partial_sum"))


def _linear(op: Op, m: int, k: int, n: int) -> Op:
    """``op`` (y = x W^T + b) recounted for an m x k @ k x n product, as the builder counts it."""
    es = op.dtype.bytes
    bias = op.bytes_read // es - op.m * op.k - op.k * op.n   # bias elements read
    tied = op.params == bias                                # the weight is counted elsewhere
    bias_out = n if bias else 0
    return op.evolve(flops=2 * m * k * n, m=m, k=k, n=n,
                     bytes_read=(m * k + k * n + bias_out) * es, bytes_written=m * n * es,
                     out_bytes=m * n * es, params=(0 if tied else k * n) + bias_out)


def grouped(op: Op, k: int, n: int, experts: int | None = None) -> Op:
    """A grouped expert GEMM (``workloads.layers.Builder.grouped_linear``) recounted for
    ``experts`` experts (None: its own) of k x n weights over the same token copies."""
    es = op.dtype.bytes
    slots = op.flops // (2 * op.k * op.n)
    e = op.batch if experts is None else experts
    facts = tuple((key, e if key == "experts" else value) for key, value in op.extra)
    return op.evolve(flops=2 * slots * k * n, k=k, n=n, batch=e, m=-(-slots // e),
                     bytes_read=(slots * k + e * k * n) * es, bytes_written=slots * n * es,
                     out_bytes=slots * n * es, params=e * k * n, extra=facts)


def _scaled(op: Op, tp: int) -> Op:
    """1/tp of an op's work on a split tensor. Parameters (a norm's) stay replicated; a matmul
    of a batch of heads keeps 1/tp of the heads, any other matmul 1/tp of its rows."""
    fields = {"flops": op.flops // tp, "vector_flops": op.vector_flops // tp,
              "bytes_read": op.bytes_read // tp, "bytes_written": op.bytes_written // tp,
              "out_bytes": op.out_bytes // tp, "mask_bytes": op.mask_bytes // tp,
              "stats_bytes": op.stats_bytes // tp}
    if op.kind in (OpKind.MATMUL, OpKind.ATTENTION):
        if op.batch > 1 and op.batch % tp == 0:
            fields["batch"] = op.batch // tp
        elif op.fn == "linear":
            return _linear(op, op.m // tp, op.k, op.n)
    return op.evolve(**fields)


def wait_for_weight_gradients(step: OpGraph) -> OpGraph:
    """Make each backward tensor-parallel collective wait for the weight gradients of the
    linears whose input gradients it reduces (``ParallelPlan.overlap_tp_comm`` False); ``step``
    is a training graph, changed in place and returned."""
    ops = list(step.nx.nodes(data="op"))   # edges only: no order needed
    weight_grad = {op.forward_of: name for name, op in ops if op.task is Task.WEIGHT_GRAD}
    for name, op in ops:
        if op.kind is OpKind.COLLECTIVE and op.phase is Phase.BACKWARD and \
                dict(op.extra).get("axis") == int(Axis.TENSOR):
            for src in _input_gradients(step, name):
                wgrad = weight_grad.get(step.op(src).forward_of)
                if wgrad is not None:
                    step.add_edge(wgrad, name, nbytes=0)
    return step


def _input_gradients(step: OpGraph, name: str) -> list[str]:
    """The input-gradient ops feeding ``name``, through gradient sums."""
    found = []
    for src in step.inputs(name):
        task = step.op(src).task
        if task is Task.GRAD_SUM:
            found += _input_gradients(step, src)
        elif task is Task.DATA_GRAD:
            found.append(src)
    return found


__all__ = ["COLUMN", "check", "collective", "grouped", "split", "use_userbuffers",
           "wait_for_weight_gradients"]
