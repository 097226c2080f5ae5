"""Forward graph -> one training step: loss, backward, recomputation, optimizer update.

The backward is derived op by op, the way autograd runs it:
- a matmul or convolution gets a data-gradient op per input that needs a gradient and a
  weight-gradient op if it has a weight, each with the forward's FLOPs (so the backward of a
  matmul is exactly twice its forward); inputs from outside the graph (token ids, images) get
  no gradient, as in PyTorch. The data gradients of a product carry their own shape
  (``grad_shape``): of C (m x n) = A (m x k) B (k x n), dA = dC B^T is m x k deep n and
  dB = A^T dC is k x n deep m, so tile and wave quantisation see the output each gradient
  kernel writes. That holds for both operands of a product of two activations (attention's
  Q K^T and P V) and for a linear's input (y = x W^T over m rows, W n x k: dx = dy W is
  m x k deep n; a grouped expert GEMM's per expert). A linear's weight gradient
  (dW = dy^T x, n x k deep m) keeps the forward's shape (same FLOPs): its output is small
  and its depth all the tokens, which cuBLAS runs split-k, and hwsim splits k only where the
  spec gives ``tile_fixed_k`` (``simulator.cost.efficiency``), so its own shape would price
  it as a few tiles over a long k on every other spec. A convolution's gradients keep the
  forward's implicit GEMM: its passes are fitted apart (``simulator.calibrate.conv``);
- an addition passes its gradient through without a kernel; a tensor read by several ops gets
  one accumulation op summing their gradients;
- every other op gets one backward op of its kind reading the output gradient and what the
  forward saved, writing a gradient per input;
- each backward op depends on the gradient of its output and on the forward ops (or their
  recomputed copies) whose saved tensors it reads.
- a collective (``simulator.parallel.tensor``, ``simulator.parallel.pipeline``) gets the collective that
  is its adjoint (``ADJOINT``): a forward all-reduce passes its gradient through, an
  identity whose gradient must be summed over the tensor-parallel ranks (Megatron's f) becomes
  an all-reduce, an all-gather a reduce-scatter and back, a pipeline send or receive the
  receive or send of the gradient; a stage's send of its output starts the backward as a loss
  does (the gradient arrives from the next stage).
- a linear reading a sequence-parallel all-gather (``gathered_shard``) keeps only the sequence
  shard for its backward, which gathers it again (a ``regather`` op, the forward all-gather's
  kind and bytes, once per all-gather) before the weight gradient: Megatron-LM's
  ``LinearWithGradAccumulationAndAsyncCommunication`` (Korthikanti et al. 2022, sec. 4.2.2), so
  the gathered tensor is freed after its forward use.
Recomputation (Korthikanti et al. 2022) re-runs a region's forward ops in the backward: the
attention core for ``selective``, each whole layer for ``full``. The optimizer updates each
layer's parameters once its weight gradients are ready.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from simulator.errors import PlanError
from simulator.graph.collective import ADJOINT, Axis, reassembly
from simulator.graph.lower import READS_OUTPUT
from simulator.graph.op import (
    CHANNEL_NORMS,
    TENSOR_KINDS,
    Block,
    DType,
    Op,
    OpKind,
    Phase,
    Task,
)
from simulator.graph.opgraph import OpGraph
from simulator.plan.step import (
    FOREACH_EXTRA_PASSES,
    OPTIMIZER_FLOPS_PER_PARAM,
    OPTIMIZER_STATE_BYTES,
    UNFUSED_EXTRA_PASSES,
    UPDATE_SYNCS,
    Fp8Recipe,
    Fusion,
    Optimizer,
    OptimizerImpl,
    Plan,
    Precision,
    Recompute,
)
from simulator.training.bias import add_bias_kernels, bias_elements
from simulator.training.finetune import needs_grad, tensor_format
from simulator.training.fp8 import add_casts as add_fp8_casts
from simulator.training.fp8 import fp8_param_elements, store_swiglu_input
from simulator.training.loss import add_backward as add_loss_backward
from simulator.training.loss import add_forward as add_loss_forward
from simulator.training.loss import vocab_head

#: Tensor ops whose second operand is a parameter (not an edge of the graph).
WEIGHTED = frozenset({"linear", "grouped_linear", "rnn_linear", "conv1d", "conv2d", "conv3d",
                      "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"})
#: Ops whose gradient passes to their inputs unchanged, without a kernel: an addition, and an
#: alias (an imported view that only gives a tensor op a distinct operand, e.g. q and k split
#: from one projection), and a fused projection's slice (``simulator.training.projections``).
PASSTHROUGH = frozenset({"add", "view", "slice"})
#: Name prefixes (display labels; an op's ``task`` says what it is): weight-gradient ops, and
#: the backward's all-gather of a sequence shard (``gathered_shard``).
WGRAD = "wgrad"
BGRAD = "bgrad"   # a biased linear's bias gradient under eager fusion
REGATHER = "regather"


def grad_shape(op: Op, operand: int | None) -> dict:
    """The (m, n, k) of the GEMM that gives the gradient of ``operand`` (0: A, 1: B) of a
    product C = A B (A m x k, B k x n, per batch entry): dA = dC B^T writes m x k over a depth
    of n, dB = A^T dC writes k x n over a depth of m, the forward's FLOPs each. A linear is
    the product with A its input and B its weight's transpose (W n x k), so its data gradient
    is operand 0's (its weight gradient is not asked for: the module docstring). NeuSight's trace of BERT-large on the A100 80GB PCIe shows it (sitar-lab/NeuSight
    ``scripts/asplos/label/NVIDIA_A100_80GB_PCIe/bert_large-train-512-2.csv``, commit
    6945927): the scores' Q K^T (32 x 512 x 512 outputs, depth 64) takes 0.125 ms forward and
    0.482 ms backward, two products of 512 x 64 outputs, depth 512, which take 0.221 ms each
    alone in its bmm table (``dataset/test/bmm.csv``). Not a matmul, or an operand that
    cannot be told (``None``: one operand in the graph): no change (the forward's shape)."""
    if op.kind is not OpKind.MATMUL or operand is None:
        return {}
    if operand == 0:
        return {"m": op.m, "n": op.k, "k": op.n}
    return {"m": op.k, "n": op.n, "k": op.m}


def starts_backward(op: Op) -> bool:
    """The loss, or a pipeline stage's send of its output (its gradient comes back)."""
    return op.kind is OpKind.LOSS or (op.kind is OpKind.COLLECTIVE
                                      and dict(op.extra).get("send", 0) == 1)


def gathered_shard(graph: OpGraph, name: str) -> str | None:
    """The producer of the sequence shard that op ``name`` all-gathers, if ``name`` is a
    sequence-parallel all-gather (tensor axis; Korthikanti et al. 2022, sec. 4.2.2), else None.
    A weighted op reading it keeps the shard for its backward, not the gathered tensor."""
    op = graph.op(name)
    facts = dict(op.extra)
    if op.kind is not OpKind.COLLECTIVE or op.fn != "all_gather" or \
            facts.get("axis") != int(Axis.TENSOR) or facts.get("scatter") or facts.get("lora"):
        return None   # a LoRA adapter's gather: its plain ColumnParallelLinear keeps it whole
    inputs = graph.inputs(name)
    return inputs[0] if inputs else None


def region_of(op: Op, recompute: Recompute) -> int | None:
    """The recomputation region an op belongs to (its layer), or None if it is kept."""
    if recompute is Recompute.FULL and op.layer >= 0 and op.block is not Block.HEAD:
        return op.layer
    if (recompute is Recompute.SELECTIVE and op.block is Block.ATTN_CORE
            and op.kind is not OpKind.ATTENTION):  # fused attention recomputes by itself
        return op.layer
    return None


def training_graph(forward: OpGraph, plan: Plan) -> OpGraph:
    """One training step (one micro-batch's forward and backward, then the update); eager
    bias kernels (``simulator.training.bias``) join the forward first."""
    return _Derivation(add_bias_kernels(forward, plan), plan).run()


@dataclass
class _Derivation:
    forward: OpGraph
    plan: Plan
    out: OpGraph = field(init=False)
    grads: dict[str, list[str]] = field(default_factory=dict)  # tensor -> gradient producers
    recomputed: dict[str, str] = field(default_factory=dict)   # forward op -> its copy
    done_regions: set[int] = field(default_factory=set)
    regions: dict[int, list[str]] = field(default_factory=dict)   # region -> its ops, in order
    weight_grads: dict[int, list[str]] = field(default_factory=dict)
    regathered: dict[str, str] = field(default_factory=dict)  # forward all-gather -> regather
    needs: set[str] | None = None   # ops whose output needs a gradient (None: every op)

    def __post_init__(self) -> None:
        self.out = OpGraph(self.forward.name.replace("forward", "training step"))
        self.needs = needs_grad(self.forward)

    def run(self) -> OpGraph:
        order = self.forward.names()
        formats = self.plan.formats
        for name in order:
            op = self.forward.op(name)
            if op.kind in TENSOR_KINDS:
                op = op.evolve(dtype=tensor_format(op, formats))
            head = vocab_head(self.forward, name)
            if head is not None:  # a language model's loss: its kernels (training.loss)
                add_loss_forward(self.out, op, self.forward.inputs(name)[0], head, self.plan)
                continue
            self.out.add(op, self.forward.inputs(name))
        for name in reversed(order):
            self._backward(self.forward.op(name))
        self._optimizer()
        step = add_fp8_casts(self.out, self.plan)   # Transformer Engine's casts (training.fp8)
        return store_swiglu_input(step, self.plan)   # Megatron-core's fp8 SwiGLU input

    # -- helpers ----------------------------------------------------------------------------------
    def _saved(self, name: str) -> str:
        """Where the backward reads a forward tensor: the recomputed copy if there is one."""
        return self.recomputed.get(name, name)

    def _grad_of(self, op: Op) -> list[str]:
        """The op(s) whose completion makes d loss / d (op's output) available."""
        producers = self.grads.get(op.name, [])
        if len(producers) <= 1:
            return producers
        if dict(op.extra).get("slices"):   # a fused projection's output: its slices' gradients
            return list(dict.fromkeys(producers))   # side by side, no sum (training.projections)
        out_bytes = op.out_bytes
        acc = Op(name=f"grad_accumulate:{op.name}", kind=OpKind.ELEMENTWISE,
                 phase=Phase.BACKWARD, dtype=op.dtype, fn="add",
                 flops=(len(producers) - 1) * out_bytes // op.dtype.bytes,
                 bytes_read=len(producers) * out_bytes, bytes_written=out_bytes,
                 out_bytes=out_bytes, layer=op.layer, block=op.block, forward_of=op.name,
                 task=Task.GRAD_SUM)
        return [self.out.add(acc, producers)]

    def _add(self, op: Op, name: str, task: Task, deps: list[str], saved: list[str],
             **fields) -> str:
        """A backward op of ``op`` doing ``task``, named ``name:op``, reading the output
        gradient (``deps``) and what the forward saved (``saved``)."""
        if op.kind in TENSOR_KINDS:
            fields.setdefault("dtype", tensor_format(op, self.plan.formats))
        fields.setdefault("phase", Phase.BACKWARD)
        bwd = op.evolve(name=f"{name}:{op.name}", params=0, saves=(), mask_bytes=0,
                        stats_bytes=0, forward_of=op.name, no_grad=(), task=task, **fields)
        self.out.add(bwd, [])
        for index, src in enumerate(deps):
            self.out.add_edge(src, bwd.name, index)
        for src in saved:
            self.out.add_edge(self._saved(src), bwd.name, len(deps))
        return bwd.name

    def _contribute(self, tensor: str, producer: str) -> None:
        self.grads.setdefault(tensor, []).append(producer)

    # -- the backward of one op ---------------------------------------------------------------------
    def _backward(self, op: Op) -> None:
        start = starts_backward(op)
        if not self.grads.get(op.name) and not start:
            return  # nothing downstream needs this op's gradient
        deps = [op.name] if start else self._grad_of(op)
        region = region_of(op, self.plan.recompute)
        if region is not None and region not in self.done_regions:
            self._recompute_region(region, deps)
        inputs = self.forward.inputs(op.name)
        wanted = [src for src in inputs if src not in op.no_grad   # inputs that get a gradient
                  and (self.needs is None or src in self.needs)]
        head = vocab_head(self.forward, op.name) if op.kind is OpKind.LOSS else None
        grad = head and add_loss_backward(self.out, op, inputs[0], head, self.plan)
        if grad:   # the eager kernels of a language model's loss (training.loss)
            for src in wanted:
                self._contribute(src, grad)
            return
        if op.fn in PASSTHROUGH and not op.params:  # gradient passes through, no kernel
            for src in wanted:
                self.grads.setdefault(src, []).extend(deps)
            return
        if op.kind is OpKind.COLLECTIVE and op.fn in ADJOINT:
            self._collective_backward(op, deps, wanted)
        elif op.kind is OpKind.ATTENTION:
            self._attention_backward(op, deps, inputs, wanted)
        elif op.kind in TENSOR_KINDS:
            self._tensor_backward(op, deps, inputs, wanted)
        else:
            self._vector_backward(op, deps, inputs, wanted)

    def _tensor_backward(self, op: Op, deps: list[str], inputs: list[str],
                         wanted: list[str]) -> None:
        grad_bytes = op.out_bytes
        weighted = op.fn in WEIGHTED
        operands = [src for src in (inputs[:1] if weighted else inputs) if src in wanted]
        for src in operands:
            index = inputs.index(src)
            in_bytes = self.forward.op(src).out_bytes
            other = [] if weighted else [s for s in inputs if s != src]
            shape = grad_shape(op, 0 if weighted else index if len(inputs) == 2 else None)
            name = self._add(op, "dgrad" if weighted or len(inputs) == 1 else f"dgrad{index}",
                             Task.DATA_GRAD, deps, other,
                             bytes_read=grad_bytes + op.bytes_read - in_bytes,
                             bytes_written=in_bytes, out_bytes=in_bytes, **shape)
            self._contribute(src, name)
        if weighted and not op.frozen:
            gdtype = self.plan.formats.gradient
            weight_bytes = op.n * op.k * gdtype.bytes * (op.batch if op.fn == "grouped_linear"
                                                         else 1)   # one weight per expert
            in_bytes = (self.forward.op(inputs[0]).out_bytes if inputs
                        else op.bytes_read - op.n * op.k * op.dtype.bytes)
            shard = gathered_shard(self.forward, inputs[0]) if inputs else None
            reads, saved = ([*deps, self._regather(inputs[0], shard, deps)], []) if shard \
                else (deps, inputs[:1])
            # at the forward's (m, n, k), not dW's own n x k deep m: cuBLAS runs that split-k,
            # which hwsim models only where the spec gives tile_fixed_k (module docstring)
            name = self._add(op, WGRAD, Task.WEIGHT_GRAD, reads, saved,
                             bytes_read=grad_bytes + in_bytes, bytes_written=weight_bytes,
                             out_bytes=weight_bytes)
            self.weight_grads.setdefault(op.layer, []).append(name)
            bias = bias_elements(op)
            if bias and self.plan.fusion is Fusion.EAGER:
                # eager PyTorch sums the output gradient over the rows for the bias: a kernel
                # of its own (autograd's sum_to for addmm's broadcast bias; Megatron-LM's
                # grad_output.sum(dim=0), megatron/core/tensor_parallel/layers.py
                # LinearWithGradAccumulationAndAsyncCommunication.backward); cuBLASLt's BGRAD
                # epilogue (Transformer Engine, apex fused_dense) or a compiler fuses it
                name = self._add(op, BGRAD, Task.WEIGHT_GRAD, deps, [], kind=OpKind.REDUCTION,
                                 fn="sum", flops=0, vector_flops=grad_bytes // op.dtype.bytes,
                                 bytes_read=grad_bytes, bytes_written=bias * gdtype.bytes,
                                 out_bytes=bias * gdtype.bytes, m=0, n=0, k=0)
                self.weight_grads.setdefault(op.layer, []).append(name)

    def _regather(self, gather: str, shard: str, after: list[str]) -> str:
        """All-gather the saved sequence shard again for the weight gradients (once per forward
        all-gather, shared by its readers: Megatron fuses q, k, v and fc1 / gate, up into one
        linear each), issued when the first reader's output gradient arrives."""
        if gather not in self.regathered:
            op = self.forward.op(gather)
            again = op.evolve(name=f"{REGATHER}:{gather}", phase=Phase.BACKWARD,
                              forward_of=gather, task=Task.REGATHER)
            self.regathered[gather] = self.out.add(again, [self._saved(shard)])
            for dep in after:  # ordering only: the shard is gathered again in the backward
                self.out.add_edge(dep, again.name, 1, nbytes=0)
        return self.regathered[gather]

    def _collective_backward(self, op: Op, deps: list[str], wanted: list[str]) -> None:
        """The adjoint collective, reading the output gradient and writing the input's."""
        facts = dict(op.extra)
        fn = ADJOINT[op.fn]
        if fn is None or (op.fn == "all_gather" and facts.get("scatter")):
            # a forward all-reduce: the summed gradient is already on every rank; a pipeline
            # message's reassembly: each rank sends its slice of the gradient back
            for src in wanted:
                self.grads.setdefault(src, []).extend(deps)
            return
        moved = (op.out_bytes, op.out_bytes) if op.fn == "identity" else \
            (op.out_bytes, op.out_bytes * facts["group"]) if op.fn == "split" else \
            (op.bytes_written, op.bytes_read)   # a split's gradient: its shard gathered whole
        extra = tuple((key, value) for key, value in op.extra if key != "send")
        full = sum(self.forward.op(s).out_bytes for s in wanted)
        name = self._add(op, "grad", Task.DATA_GRAD, deps, [], fn=fn, bytes_read=moved[0],
                         bytes_written=moved[1], extra=extra, out_bytes=full)
        split = facts.get("scatter", 0)
        if fn == "send_recv" and split > 1:  # the gradient arrives in 1/tp pieces: gather them
            gather = reassembly(name, full, split, op, Phase.BACKWARD)
            name = self.out.add(gather.evolve(forward_of=op.name, task=Task.DATA_GRAD), [name])
        for src in wanted:
            self._contribute(src, name)

    def _attention_backward(self, op: Op, deps: list[str], inputs: list[str],
                            wanted: list[str]) -> None:
        """FlashAttention's backward (Dao et al. 2022, alg. 4): it recomputes S = QK^T and P
        block by block (a recompute op, half the forward's matmul FLOPs), then computes dV, dP,
        dQ and dK (twice the forward's FLOPs, the model FLOPs of the backward)."""
        in_bytes = sum(self.forward.op(s).out_bytes for s in inputs)
        saved = [*inputs, op.name]
        redo = self._add(op, "flash_recompute", Task.RECOMPUTE, deps, saved,
                         phase=Phase.RECOMPUTE,
                         flops=op.flops // 2, vector_flops=op.vector_flops,
                         bytes_read=in_bytes, bytes_written=0, out_bytes=0)
        name = self._add(op, "grad", Task.DATA_GRAD, [*deps, redo], saved, flops=2 * op.flops,
                         vector_flops=op.vector_flops,
                         bytes_read=in_bytes + 2 * op.out_bytes + op.stats_bytes,
                         bytes_written=in_bytes, out_bytes=in_bytes)
        for src in wanted:
            self._contribute(src, name)

    def _vector_backward(self, op: Op, deps: list[str], inputs: list[str],
                         wanted: list[str]) -> None:
        saved = list(inputs) if "inputs" in op.saves else []
        if "output" in op.saves or op.mask_bytes or op.stats_bytes:
            saved.append(op.name)
        saved_bytes = sum(self.forward.op(s).out_bytes for s in saved if s != op.name)
        saved_bytes += op.mask_bytes + op.stats_bytes
        saved_bytes += op.out_bytes if "output" in op.saves else 0
        in_bytes = sum(self.forward.op(s).out_bytes for s in wanted)
        param_bytes = 0 if op.frozen else op.params * self.plan.formats.gradient.bytes
        grad_in = op.out_bytes if op.kind is not OpKind.LOSS else 0
        # a channel norm's backward reduces over each channel (reads the output gradient and
        # the input) before it writes the input gradient (reads both again): CHANNEL_NORMS
        again = grad_in + sum(self.forward.op(s).out_bytes for s in inputs[:1]) \
            if op.kind is OpKind.NORM and op.fn in CHANNEL_NORMS else 0
        name = self._add(op, "grad", Task.DATA_GRAD, deps, saved,
                         bytes_read=grad_in + saved_bytes + again,
                         bytes_written=in_bytes + param_bytes, out_bytes=in_bytes)
        if op.name in saved and "output" not in op.saves:  # it reads the mask / stats only
            self.out.nx.edges[self._saved(op.name), name][READS_OUTPUT] = False
        for src in wanted:
            self._contribute(src, name)
        if op.params and not op.frozen:
            self.weight_grads.setdefault(op.layer, []).append(name)

    # -- recomputation ---------------------------------------------------------------------------
    def _recompute_region(self, region: int, after: list[str]) -> None:
        """Re-run the region's forward ops once the backward reaches it."""
        self.done_regions.add(region)
        if not self.regions:
            for n in self.forward.names():
                key = region_of(self.forward.op(n), self.plan.recompute)
                if key is not None:
                    self.regions.setdefault(key, []).append(n)
        members = self.regions[region]
        formats = self.plan.formats
        for name in members:
            op = self.forward.op(name)
            copy = op.evolve(name=f"recompute:{name}", phase=Phase.RECOMPUTE, forward_of=name,
                             task=Task.RECOMPUTE, dtype=tensor_format(op, formats)
                             if op.kind in TENSOR_KINDS else op.dtype)
            self.out.add(copy, [self._saved(src) for src in self.forward.inputs(name)])
            self.recomputed[name] = copy.name
            if not self.forward.inputs(name) or all(
                    src not in self.recomputed for src in self.forward.inputs(name)):
                for dep in after:  # ordering only: recompute waits for the backward to arrive
                    self.out.add_edge(dep, copy.name, nbytes=0)

    # -- optimizer ---------------------------------------------------------------------------------
    def _optimizer(self) -> None:
        """One update per layer (``Task.UPDATE``): reads and writes master weights and states.
        ``params`` holds the layer's parameter elements it updates, ``param_tensors`` the tensors
        that hold them (eager optimizers pay per tensor).

        Its traffic is that of the passes a mixed-precision step makes over the layer's
        parameters besides the update itself (Megatron-LM's ``MixedPrecisionOptimizer.step``,
        megatron/core/optimizer/optimizer.py; PyTorch AMP's ``GradScaler``):
        with a master copy the update works on fp32 gradients, so 16-bit ones are first copied
        to fp32 (``_copy_model_grads_to_main_grads``: ``main_grad.float()``, read 2 bytes, write
        4; no copy when they are fp32 already); fp16 unscales its loss-scaled gradients and
        checks them for inf/nan (read and write each,
        ``torch._amp_foreach_non_finite_check_and_unscale_``); ``grad_clip`` reads each
        gradient once more for the global norm; with a master copy the update writes the fp32
        weights and a separate pass then copies them to the 16-bit weights the model reads
        (``_copy_main_params_to_model_params``: read 4 bytes, write 2), or casts them to the
        fp8 weights the model holds (``Plan.fp8_params``, ``simulator.training.fp8``: write 1,
        and under current scaling read the master once more for its amax)."""
        f, opt = self.plan.formats, self.plan.optimizer
        if opt is Optimizer.NONE:   # forward and backward only: no update op
            return
        master = 4  # fp32 master weights (or the fp32 weights themselves)
        states = OPTIMIZER_STATE_BYTES[opt]
        copy_read, copy_written = (master, f.weight.bytes) if f.master else (0, 0)
        grad = 4 if f.master else f.gradient.bytes  # the gradient the update reads
        widen_read, widen_written = ((f.gradient.bytes, grad) if grad > f.gradient.bytes
                                     else (0, 0))
        unscale = grad if self.plan.precision is Precision.FP16 else 0  # read, then written
        clip = grad if self.plan.grad_clip else 0
        impl = self.plan.optimizer_impl
        passes = (0, 0) if impl is OptimizerImpl.FUSED else UNFUSED_EXTRA_PASSES[opt]
        if impl is OptimizerImpl.FOREACH:   # a foreach form's own passes, where it has more
            passes = tuple(a + b for a, b in zip(passes, FOREACH_EXTRA_PASSES.get(opt, (0, 0))))
        extra_read, extra_written = (4 * n for n in passes)   # for-loop or foreach: more passes
        # the host waits for the device inside the update (simulator.cost.host.sync_calls):
        # per tensor, Adafactor's two ``.item()`` of norms, bitsandbytes' ``sync_gpu`` after
        # each tensor's kernel
        syncs = UPDATE_SYNCS.get(opt, 0)
        flops = (OPTIMIZER_FLOPS_PER_PARAM[opt] + (1 if unscale else 0)
                 + (2 if clip else 0))  # unscale: a multiply; norm: a multiply-add
        per_layer: dict[int, int] = {}
        tensors: dict[int, int] = {}
        vectors: dict[int, int] = {}
        fp8 = fp8_param_elements(self.forward, self.plan)   # weights held in fp8, by layer
        amax = 4 if self.plan.fp8_recipe is Fp8Recipe.CURRENT else 0
        for op in self.forward.ops():
            if op.params and not op.frozen:   # frozen parameters have no optimizer state
                if opt is Optimizer.ADAFACTOR and op.kind is OpKind.CONV:
                    # torch/optim/_adafactor.py factors the last two dimensions only: a
                    # [cout, cin, kh, kw] weight's row_var holds cout*cin*kh elements and its
                    # col_var cout*cin*kw (2 x its elements at 1 x 1), not the m + n counted
                    raise PlanError(f"optimizer = adafactor: {op.name} is a convolution, and "
                                    "Adafactor factors a weight's last two dimensions only: a "
                                    "kernel's row and column states hold 1/kh + 1/kw of its "
                                    "elements (twice them at 1 x 1), not counted; pick "
                                    "another optimizer")
                per_layer[op.layer] = per_layer.get(op.layer, 0) + op.params
                tensors[op.layer] = tensors.get(op.layer, 0) + op.tensors
                # a GEMM's or embedding's first tensor is its weight matrix; its bias, and a
                # norm's or any other op's tensors, are vectors (Adafactor runs them otherwise)
                matrix = 1 if op.kind in (OpKind.MATMUL, OpKind.EMBEDDING) else 0
                vectors[op.layer] = vectors.get(op.layer, 0) + op.tensors - min(matrix,
                                                                                op.tensors)
        for layer, params in sorted(per_layer.items()):
            narrow = fp8.get(layer, 0)
            op = Op(name=f"optimizer:L{layer}", kind=OpKind.OPTIMIZER, phase=Phase.OPTIMIZER,
                    fn=opt.value, flops=flops * params,
                    bytes_read=params * (widen_read + master + states + grad + unscale + clip
                                         + copy_read + extra_read) + narrow * amax,
                    bytes_written=params * (widen_written + master + states + unscale
                                            + copy_written + extra_written)
                    - narrow * (copy_written - DType.FP8.bytes),
                    layer=layer, block=Block.NONE, params=params, param_tensors=tensors[layer],
                    task=Task.UPDATE,
                    extra=((("sync", syncs * max(tensors[layer], 1)),) if syncs else ())
                    + ((("vectors", vectors[layer]),) if opt is Optimizer.ADAFACTOR else ()))
            self.out.add(op, self.weight_grads.get(layer, []))
