"""fp8 as Transformer Engine runs it: the cast kernels around each fp8 GEMM of a training step.

Under ``Precision.FP8`` the GEMMs of Transformer Engine's modules run in fp8
(``simulator.plan.step.Formats.of``), and their operands are cast from 16 bits by kernels of their
own. Counted from TE (github.com/NVIDIA/TransformerEngine, ``transformer_engine/pytorch/module/
linear.py``, ``layernorm_linear.py``, ``layernorm_mlp.py``; ``common/transpose/cast_transpose.cu``)
for delayed scaling on Hopper, whose fp8 GEMMs take only the TN layout, so every operand a
GEMM reads transposed needs its own transposed fp8 copy:

- **input** (``cast_transpose``, once per GEMM input, shared by the GEMMs that read it: q, k and v,
  gate and up): the 16-bit activation is read once and written twice in fp8, row-wise for the
  forward GEMM and column-wise (transposed) for the weight gradient (``input_quantizer.
  set_usage(rowwise=True, columnwise=backward_needs_input)``): read 2, write 2 bytes per element.
  When a LayerNorm / RMSNorm writes it (``LayerNormLinear``, ``LayerNormMLP``), the norm kernel
  writes fp8 itself (``pytorch/csrc/extensions/normalization.cpp``, ``Impl::FULLY_FUSED`` for a
  ``Float8Quantizer``): the norm writes 1 byte less per element and the cast is a transpose of
  the fp8 tensor (read 1, write 1).
- **output gradient** (``cast_transpose``, or ``cast_transpose_dbias`` with a bias: same bytes),
  once per GEMM in the backward: the 16-bit gradient read once, written row-wise for the data
  gradient and column-wise for the weight gradient: read 2, write 2.
- **weight** (``quantize_weight``, a cast and transpose of the 16-bit weight: read 2, write 2 per
  element), once per step: Megatron-core passes ``is_first_microbatch`` to TE
  (``megatron/core/extensions/transformer_engine.py``; ``set_is_first_microbatch`` at each step's
  first micro-batch, ``pipeline_parallel/schedules.py``) and TE caches the fp8 weight and its
  transpose for the other micro-batches. Priced once per step (``Phase.OPTIMIZER``, task
  ``FORWARD``: it serves the forward GEMMs), after the layer's update. A frozen
  weight stored in fp8 (``Plan.frozen_weights = fp8``, ``simulator.training.finetune``) has
  no cast: the GEMMs read it as stored; a trained one (``Plan.fp8_params``, below) a transpose.
- **fp8 primary weights** (``Plan.fp8_params``: TE's ``fp8_model_init``, which NeMo's
  ``fp8_params`` and Megatron-LM's ``--fp8-param-gather`` build the model under; NVIDIA/NeMo
  8cfedd7 ``nemo/collections/nlp/models/language_modeling/megatron_gpt_model.py`` lines
  400-409, ``nemo/lightning/pytorch/plugins/mixed_precision.py``): the trained weights of the
  TE linears are ``Float8Tensor`` s, 1 byte per element (``fp8_param``; their biases, the
  norms, embeddings and the output layer stay 16-bit), and the fp32 master copy lives in the
  optimizer. The update casts its fp32 master shard straight into the fp8 weights (Megatron-
  core's ``_copy_main_params_to_model_params`` -> ``quantize_param_shard``, NVIDIA/Megatron-LM
  d98e8a64dd ``megatron/core/optimizer/distrib_optimizer.py`` lines 2825-2851, TE's
  ``cast_master_weights_to_fp8``; NeMo's ``distributed_fused_adam``, ``nemo/core/optim/
  distributed_adam.py`` ``_check_params_shard_dtypes``, ``quantize_param_fragment``): read 4,
  write 1 byte per element instead of 2 (``simulator.training.backward``); under current
  scaling it first reads the master shard once more for its amax (TE d0067d0da
  ``pytorch/tensor/utils.py`` ``_cast_master_weights_to_fp8_current_scaling``:
  ``tex.compute_amax``); the per-weight amax all-reduce over the data-parallel group (a few
  bytes) is not priced. The distributed optimizer's parameter buffer is uint8 for them
  (Megatron-core ``param_and_grad_buffer.py`` line 923, ``param_dtype = torch.uint8``; NeMo
  ``distributed_adam.py`` lines 396-408, ``param_sync_dtype=torch.uint8``): its all-gather
  moves 1 byte per element (``simulator.parallel.data``; a mixture of experts' layer splits
  its experts' share off that gather in proportion to parameters, ``simulator.parallel.
  expert``, not to bytes: the norms and router left 16-bit are a small share). After the
  gather TE makes the weight's transpose on GPUs whose fp8 GEMMs are TN-only
  (``post_all_gather_processing``, TE d0067d0da ``pytorch/tensor/utils.py`` lines 1404-1427:
  ``_create_transpose`` unless ``is_non_tn_fp8_gemm_supported``; with an older TE the
  transpose is made in the next forward instead, Megatron-core ``fp8_utils.py`` lines
  706-707): read
  1, write 1 per element, once per step, in place of the weight's cast (read 2, write 2),
  priced where the cast was. Counted as on Hopper, as this module's casts are: on B200 and
  GB200 (compute capability 10.0) no transpose is made. Memory: the weights at 1 byte
  (``simulator.schedule.memory``); the transpose kept from the gather to the next update,
  1 byte per element on Hopper, is not counted, as the 16-bit weights' cached fp8 copies
  are not.
- **te.Linear only** (``Plan.fp8_modules = linear``: llm-foundry's ``fc_type = 'te'``, which
  swaps ``nn.Linear`` for ``te.Linear`` and keeps its own norms, ``submit_benchmarks.py`` and
  ``llmfoundry/models/layers/fc.py`` at 5e85bd6): no norm writes fp8, so every GEMM input is
  cast from 16 bits (read 2, write 2); and no ``is_first_microbatch`` is passed, so TE
  (``linear.py`` at v0.13, 2023-10: ``update_fp8_weights = is_first_microbatch is None or
  is_first_microbatch``) casts and transposes the weight at every forward call: once per GEMM
  per micro-batch in the forward (``Phase.FORWARD``) and again in a recomputed forward, none
  in the optimizer phase. Not modelled there: te.Linear under sequence parallelism (it
  gathers its fp8 input; priced as a 16-bit gather, then the cast), and a forward under
  ``torch.no_grad`` (reentrant checkpointing), whose casts write no transposed copy.
- **amax**: delayed scaling computes each tensor's amax inside these cast kernels; the step's
  amax-history update (one multi-tensor kernel, one small all-reduce) is not priced.
- **current scaling** (``Plan.fp8_recipe = current``, TE's ``Float8CurrentScalingQuantizer``;
  NVIDIA/TransformerEngine d0067d0da ``pytorch/csrc/quantizer.cpp``, ``quantize_impl``: the
  scale comes from this tensor's own amax, so ``nvte_compute_amax`` reads the 16-bit tensor in
  a kernel of its own, then ``nvte_compute_scale_from_amax`` and ``nvte_quantize_v2`` cast it):
  the amax pass reads the 16-bit tensor once more (read 2 per element, write nothing), priced
  inside its cast (the cast op reads 4 per element; the amax kernel's own launch and its
  ordering are not modelled separately): gradient, weight and unfused input casts. A norm
  that feeds fp8 GEMMs
  (``pytorch/csrc/extensions/normalization.cpp``, ``Impl::FUSED_NORM_AMAX_FP8``) computes the
  amax in the norm kernel but writes its output in 16 bits, which the cast then reads (read 2,
  write 2): the fused norm's fp8 write and its 1-byte transpose are gone. Not priced: the
  amax all-reduce over the tensor-parallel group of a sequence-parallel input (a few bytes,
  latency-bound), the scale kernel (a few bytes); the gathers stay fp8, as TE casts before it
  gathers.

Memory: what a GEMM keeps for its weight gradient is the column-wise fp8 copy of its input
(``ctx.save_for_backward`` of the quantized input in ``linear.py``), 1 byte per element: the cast
op's output (``out_bytes``), which the weight-gradient GEMM reads instead of the 16-bit input, so
the 16-bit tensor lives on only where something else keeps it (FlashAttention its output, the
attention's context; a GeLU its input, not its output), and a norm that writes fp8 holds 1 byte
per element (``saved_bytes`` counts the same for ``simulator.training.saved``).

Sequence parallelism: TE all-gathers the fp8 norm output (``LayerNormLinear`` with
``sequence_parallel``: ``ln_out`` quantized before ``gather_along_first_dim``), in the forward
and again for the weight gradient: those all-gathers move 1 byte per element, not 2.

The SwiGLU's input in fp8 (``Plan.fp8_swiglu_input``, ``store_swiglu_input``): Megatron-core's
``activation_func_fp8_input_store`` (MLPerf's NeMo Llama 2 70B LoRA on B200: FP8_ACT=1,
training_results_v5.0 0fdc28f Lenovo/benchmarks/llama2_70b_lora/config_DGXB200_1x8x1xtp1pp1cp1.sh
line 13, read as ``activation_func_fp8_input_store: ${FP8_ACT}`` by conf/
megatron_gpt_peft_tuning_config.yaml line 46 and handed to the model config by train.py line
218). Megatron-core's SwiGLU (NVIDIA/Megatron-LM d98e8a64 ``megatron/core/fusions/
fused_bias_swiglu.py`` lines 163-260; the container's Megatron-core is older, the lines the same
in purpose) saves ``input.to(torch.float8_e4m3fn)`` for its backward instead of its 16-bit input
(the fc1 output, gate and up) and casts it back with ``input.to(ctx.ori_input_dtype)`` before
the SwiGLU's backward: two elementwise kernels, read 2 write 1 byte per element in the forward,
read 1 write 2 in the backward, and the 16-bit input freed after the forward. SwiGLU only
(``transformer_config.py`` line 2467 raises otherwise); independent of the GEMMs' precision (a
torch cast, no scaling: e4m3's range clips what exceeds it).

torchao's Float8Linear (``Plan.fp8_recipe = torchao-tensorwise``: torchtitan's float8 converter,
dynamic tensorwise scaling). Counted from torchao's own estimate of what its compiled linear
moves, ``torchao/float8/roofline_utils.py`` ``get_tensor_memory_traffic_bytes`` and
``get_float8_mem_sympy`` at pytorch/ao eab345c (the torchao of torchtitan's Dec 2024 runs), for
each of the three GEMM inputs (input, weight, output gradient): an amax pass over the 16-bit
tensor (read 2 per element, "kernel 1"; its second stage, a few bytes, not priced), then one cast
that reads it once and writes it twice in fp8, row- and column-major (read 2, write 2, "kernel
3"); the backward GEMMs read the copies the forward made. Under ``Fusion.COMPILED`` the amax of
the input and of the output gradient is fused into the op that produces them only where that
op is a kernel Inductor generates: an elementwise op or a norm (through a tensor-parallel
gather, whose input is cast before it is gathered). torchao's roofline assumes it fuses for
every activation and gradient (``fuse_with_prev=True``: "assume for float8
activations/gradients that torch.compile will fuse to the preceding op",
``benchmarks/float8/float8_roofline.py``), an assumption, not a measurement: the input of the
attention's output projection comes out of SDPA's FlashAttention kernel and the value's
gradient out of its backward (the query's and key's pass through the RoPE backward, an
elementwise op), library kernels compile calls but does not write, so their amax stays a pass
of its own, as does that of a bmm's output (unfused attention) and of an input no kernel
produces (a micro-benchmark's ``workloads.layers.Builder.input``). The weight's amax is never
fused (``fuse_with_prev=False``: a leaf); under ``Fusion.EAGER`` every amax is a pass of its own. The
norms are torchtitan's own modules and write 16 bits; the weight is cast at every forward call
(``Float8Linear.forward``: ``cast_weight_to_float8_t`` each call, no cache across micro-batches),
a recomputed forward included. Under sequence parallelism torchtitan's Float8 TP plan
(torchtitan 9dec370 ``torchtitan/parallelisms/parallelize_llama.py`` lines 147-161,
``PrepareFloat8ModuleInput``, ``Float8ColwiseParallel``) casts the norm's output to fp8 before
its all-gather: those gathers move 1 byte per element; and ``Float8RowwiseParallel`` (torchao
eab345c ``torchao/float8/float8_tensor_parallel.py``, ``_prepare_output_fn``:
``NoopFwToFloat8BwDynamic`` after the output's reduce-scatter) casts the output gradient of a
row-parallel linear to fp8 before the backward all-gather of that reduce-scatter, which moves
1 byte per element too (the cast is still priced on the gathered tensor, read 2, write 2, not
as torchao splits it: the shard cast before the gather, the column-major copy after). Every
cast also reads its fp8 output once more, 1 byte per element: torchao's own estimate lists it
as what torch.compile does ("today, the kernel to do cast_to_fp8_row_major_and_col_major(
input_bf16, ...) has an extra memory read of the input in fp8", ``model_torch_compile_
limitations``, pytorch/pytorch#130015; the same extra load reproduced in Inductor's generated
kernel on 2024-09-25, pytorch/pytorch#133242, three months before torch 1963fc8 of the
Dec-2024 rows; no fix before that commit found), off in its estimate's default but stated
there, at the rows' torchao, as what compile does. Eager runs the column-major copy as a
transpose kernel of its own (read 1, write 1): priced as the same extra read, its write not
counted. Not priced: the per-tensor amax all-reduce of a sharded
tensor. Not modelled: FSDP's float8 weight all-gather (torchao eab345c
``torchao/float8/fsdp_utils.py``: with ``enable_fsdp_float8_all_gather`` and
``precompute_float8_dynamic_scale_for_fsdp`` the amax of every weight shard is taken once per
step after the optimizer, one ``_foreach_norm`` and one all-reduce; ``fsdp_pre_all_gather``
casts each shard to fp8 before every all-gather, read 2 write 1 per shard element; the
all-gather moves 1 byte per element; the linear gets the gathered fp8 weight and casts nothing
at its call). torchtitan's 405B config turns both on (``train_configs/llama3_405b.toml``
lines 57-60 at 9dec370: the six Dec-2024 405B validation rows, whose notes say so); hwsim
prices those rows with 16-bit weight all-gathers and the full gathered weight cast at every
forward call, recompute included, as without it.

Not modelled: the row-wise fp8 copy, transient (freed after the forward GEMM); the dgelu fused into fc1's gradient cast
(``cast_transpose_dbias_dgelu``); block-scaled recipes (MXFP8, per-block scales in the cast).
"""
from __future__ import annotations

from simulator.errors import PlanError
from simulator.graph.op import DType, Op, OpKind, Phase, Task
from simulator.graph.opgraph import OpGraph
from simulator.plan.step import Fp8Modules, Fp8Recipe, Fusion, Plan, Quantization
from simulator.training.finetune import FP8_TRANSPOSE, quantized, tensor_format

#: fn of the cast kernels (``cast_transpose`` for the weights, too).
CAST = "cast_transpose"
_FP8 = DType.FP8.bytes
_SOURCE = DType.BF16   # a cast op's dtype: the 16-bit tensor it reads (the GEMMs are the fp8 ops)
_FORWARD = (Task.FORWARD, Task.RECOMPUTE)
NORMS = frozenset({"layernorm", "rmsnorm"})   # norms that write fp8 in TE
_PASS = frozenset({"identity", "all_gather"})   # tensor-parallel f: the norm's output, gathered
REGATHER = "regather"   # simulator.training.backward.REGATHER: the backward's all-gather again


def fp8_gemms(step: OpGraph) -> list[str]:
    """The step's fp8 linears (forward, recomputed, data and weight gradients), in order."""
    return [n for n in step.names() if _is_fp8(step.op(n))]


#: GEMMs TE runs in fp8: its Linear modules' and GroupedLinear's (a mixture of experts'
#: grouped expert GEMMs: transformer_engine/pytorch/module/grouped_linear.py at d0067d0da,
#: ``_split_quantize`` of the inputs and of the output gradients, ``quantize_weight``'s cache
#: under ``is_first_microbatch``), each expert's GEMM cast as a Linear's.
LINEARS = frozenset({"linear", "grouped_linear"})


def _is_fp8(op: Op) -> bool:
    return op.kind is OpKind.MATMUL and op.dtype is DType.FP8 and op.fn in LINEARS


def fp8_param(op: Op, plan: Plan) -> bool:
    """Whether ``op`` is a forward or derived op of a TE linear whose trained weight is held
    in fp8 (``Plan.fp8_params``): a trained weight of a linear whose GEMMs run in fp8."""
    return (plan.fp8_params and bool(op.params) and not op.frozen
            and op.kind is OpKind.MATMUL and op.fn in LINEARS
            and tensor_format(op, plan.formats) is DType.FP8)


def fp8_param_elements(graph: OpGraph, plan: Plan) -> dict[int, int]:
    """Weight elements held in fp8 (``fp8_param``), by layer, of ``graph``'s forward ops (a
    forward graph or a training step): n x k per linear, each expert's of a grouped one; a
    bias stays in the weight format. Empty unless ``plan.fp8_params``."""
    out: dict[int, int] = {}
    if not plan.fp8_params:
        return out
    for op in graph.ops():
        if op.task is Task.FORWARD and fp8_param(op, plan):
            out[op.layer] = out.get(op.layer, 0) + op.n * op.k * _groups(op)
    return out


def _groups(op: Op) -> int:
    """GEMMs ``op`` is: a grouped GEMM's experts (its m is per expert), else 1."""
    return op.batch if op.fn == "grouped_linear" else 1


def saved_bytes(op: Op, src: Op, plan: Plan) -> int | None:
    """What fp8 linear ``op`` (a forward op, 16-bit in the forward graph) keeps of its input
    ``src`` for its weight gradient: the column-wise fp8 copy, 1 byte per element; None if
    ``op`` is not an fp8 GEMM under ``plan``."""
    width = plan.formats.activation.bytes
    if (plan.formats.compute is not DType.FP8 or op.kind is not OpKind.MATMUL
            or op.fn not in LINEARS or tensor_format(op, plan.formats) is not DType.FP8):
        return None
    return src.out_bytes // width * _FP8


def add_casts(step: OpGraph, plan: Plan) -> OpGraph:
    """Add the cast kernels of ``step``'s fp8 GEMMs to it (in place; returned)."""
    width = plan.formats.activation.bytes
    if plan.formats.compute is not DType.FP8 or width == _FP8:
        return step
    names = fp8_gemms(step)
    by_input: dict[str, list[str]] = {}   # forward GEMMs, by the tensor they read
    by_output: dict[str, list[str]] = {}  # gradient GEMMs, by the forward linear they are of
    for name in names:
        op = step.op(name)
        if op.task in _FORWARD:
            inputs = step.inputs(name)
            if inputs:
                by_input.setdefault(inputs[0], []).append(name)
        elif op.task in (Task.DATA_GRAD, Task.WEIGHT_GRAD):
            by_output.setdefault(op.forward_of, []).append(name)
    if plan.fp8_recipe is Fp8Recipe.TORCHAO_TENSORWISE:
        return _torchao_casts(step, plan, names, by_input, by_output, width)
    fused = plan.fp8_modules is Fp8Modules.FUSED
    current = plan.fp8_recipe is Fp8Recipe.CURRENT
    for src, readers in by_input.items():
        _input_cast(step, src, readers, width, fused, current)
    for forward, readers in by_output.items():
        _grad_cast(step, forward, readers, width, current)
    for name in names:
        op = step.op(name)
        if not (op.params and op.n * op.k) or (quantized(op, plan)
                                               and plan.frozen_weights is Quantization.FP8):
            continue   # an fp8 frozen weight: read as stored, never cast
        if fused and op.task is Task.FORWARD and fp8_param(op, plan):
            _weight_transpose(step, op)
        elif fused and op.task is Task.FORWARD:
            _weight_cast(step, op, width, current)
        elif not fused and op.task in _FORWARD:
            _weight_recast(step, op, width, current)
    return step


def _torchao_casts(step: OpGraph, plan: Plan, names: list[str], by_input: dict[str, list[str]],
                   by_output: dict[str, list[str]], width: int) -> OpGraph:
    """``Fp8Recipe.TORCHAO_TENSORWISE``: torchao's Float8Linear (the module docstring). Each
    cast reads the 16-bit tensor once and writes it twice in fp8; an amax pass reads it once
    more, except the input's and the output gradient's under compiled fusion when a kernel
    compile generates writes them (fused into it); the weight is cast, with its amax pass, at
    every forward call."""
    fused_amax = plan.fusion is Fusion.COMPILED
    for src, readers in by_input.items():
        first = step.op(readers[0])
        elements = first.m * first.k * _groups(first)
        op = step.op(src)
        if (op.kind is OpKind.COLLECTIVE and op.fn == "all_gather"
                and _fused_norm(step, src, readers) is not None):   # Float8 TP: cast, then
            for gather in (src, f"{REGATHER}:{src}"):              # gather fp8
                if gather in step:
                    _narrow(step, gather, width)
        name = f"{CAST}:{readers[0]}"
        _add(step, first, name, elements * width, 2 * elements * _FP8, first.task, first.phase,
             [src], readers, kept=elements * _FP8)
        if not (fused_amax and _generated(step, [src])):
            _amax(step, name)
        _fp8_reread(step, name)
        for reader in readers:   # the weight gradient reads the kept fp8 copy
            wgrad = [c for c in step.consumers(src) if step.op(c).task is Task.WEIGHT_GRAD
                     and step.op(c).forward_of == (step.op(reader).forward_of or reader)]
            for grad in wgrad:
                step.nx.remove_edge(src, grad)
                step.add_edge(name, grad, len(step.inputs(grad)))
    for forward, readers in by_output.items():
        _grad_cast(step, forward, readers, width, current=not (
            fused_amax and _generated(step, _grad_sources(step, readers))))
        _fp8_reread(step, f"{CAST}:grad:{forward}")
        for out in step.consumers(forward):   # Float8RowwiseParallel: the gradient cast to
            grad = f"grad:{out}"               # fp8 before the reduce-scatter's adjoint gathers it
            if (step.op(out).fn == "reduce_scatter" and grad in step
                    and step.op(grad).fn == "all_gather"):
                _narrow(step, grad, width)
    for name in names:
        op = step.op(name)
        if not (op.params and op.n * op.k) or (quantized(op, plan)
                                               and plan.frozen_weights is Quantization.FP8):
            continue
        if op.task in _FORWARD:
            _weight_recast(step, op, width, current=True)   # a leaf: its amax never fused
            _fp8_reread(step, f"{CAST}:weight:{op.name}")
    return step


#: Kernels Inductor generates (and so can fuse an amax reduction into): elementwise ops and
#: norms. Attention (SDPA's FlashAttention / cuDNN kernels, forward and backward), GEMMs and
#: bmm (extern calls), collectives' inputs aside, are library kernels it calls, not writes.
_GENERATED = frozenset({OpKind.ELEMENTWISE, OpKind.NORM})


def _generated(step: OpGraph, sources: list[str]) -> bool:
    """Whether every op that writes the tensor read from ``sources`` is a kernel torch.compile
    generates (through a tensor-parallel gather, whose input torchtitan's Float8 TP plan casts
    before it gathers): only then can the amax be fused into its producer."""
    if not sources:
        return False
    for src in sources:
        op = step.op(src)
        if op.kind is OpKind.COLLECTIVE and op.fn in _PASS and len(step.inputs(src)) == 1:
            op = step.op(step.inputs(src)[0])
        if op.kind not in _GENERATED:
            return False
    return True


def _fp8_reread(step: OpGraph, cast: str) -> None:
    """torch.compile's row- and column-major cast reads its fp8 output once more, 1 byte per
    element (torchao eab345c roofline_utils.py, ``model_torch_compile_limitations``;
    pytorch/pytorch#130015, #133242): ``cast``'s bytes read + half its bytes written."""
    op = step.op(cast)
    step.nx.nodes[cast]["op"] = op.evolve(bytes_read=op.bytes_read + op.bytes_written // 2)


def _amax(step: OpGraph, cast: str) -> None:
    """Current scaling's amax pass over the tensor ``cast`` casts: one more read of it, priced
    in the cast op (its bytes read doubled; the amax kernel's own launch not counted)."""
    op = step.op(cast)
    step.nx.nodes[cast]["op"] = op.evolve(bytes_read=2 * op.bytes_read)


def _add(step: OpGraph, like: Op, name: str, read: int, written: int, task: Task,
         phase: Phase, sources: list[str], readers: list[str], kept: int = 0) -> None:
    cast = Op(name=name, kind=OpKind.COPY, phase=phase, dtype=_SOURCE, fn=CAST,
              bytes_read=read, bytes_written=written, out_bytes=kept, layer=like.layer,
              block=like.block, forward_of=like.forward_of or like.name, task=task)
    step.add(cast, [])
    for index, src in enumerate(sources):
        step.add_edge(src, name, index)
    step.issue_early(name)   # TE casts as soon as its input is ready, before its GEMMs
    for reader in readers:   # ordering only: the transient row-wise copy is not counted
        step.add_edge(name, reader, len(step.inputs(reader)), nbytes=0)


def _fused_norm(step: OpGraph, src: str, readers: list[str]) -> str | None:
    """The norm that writes ``src`` (through the tensor-parallel f) if every reader of its
    output is an fp8 GEMM: Transformer Engine's LayerNormLinear / LayerNormMLP."""
    op = step.op(src)
    if op.kind is OpKind.COLLECTIVE and op.fn in _PASS and len(step.inputs(src)) == 1:
        if set(step.consumers(src)) != set(readers):
            return None
        src = step.inputs(src)[0]
        op = step.op(src)
    if op.kind is not OpKind.NORM or op.fn not in NORMS:
        return None
    forward = [c for c in step.consumers(src) if step.op(c).phase is op.phase]
    if not all(_is_fp8(step.op(c)) or step.op(c).kind is OpKind.COLLECTIVE for c in forward):
        return None
    return src


def _input_cast(step: OpGraph, src: str, readers: list[str], width: int,
                fused: bool = True, current: bool = False) -> None:
    first = step.op(readers[0])
    elements = first.m * first.k * _groups(first)
    norm = _fused_norm(step, src, readers) if fused else None
    if norm is not None and current:   # the norm takes the amax and writes 16 bits; the cast
        if src != norm and step.op(src).fn == "all_gather":   # reads them (TE casts, then
            for gather in (src, f"{REGATHER}:{src}"):          # gathers the fp8 copy)
                if gather in step:
                    _narrow(step, gather, width)
        read, written = elements * width, 2 * elements * _FP8
    elif norm is not None:   # the norm writes fp8; a transpose makes the column-wise copy
        op = step.op(norm)
        saved = op.out_bytes // width * (width - _FP8)
        step.nx.nodes[norm]["op"] = op.evolve(bytes_written=max(op.bytes_written - saved, 0),
                                              out_bytes=op.out_bytes - saved)
        if src != norm and step.op(src).fn == "all_gather":   # sequence parallel: TE gathers
            for gather in (src, f"{REGATHER}:{src}"):          # the fp8 norm output, forward
                if gather in step:                              # and again for the wgrad
                    _narrow(step, gather, width)
        read, written = elements * _FP8, elements * _FP8
    else:
        read, written = elements * width, 2 * elements * _FP8
    name = f"{CAST}:{readers[0]}"
    _add(step, first, name, read, written, first.task, first.phase, [src], readers,
         kept=elements * _FP8)
    if current and norm is None:
        _amax(step, name)
    for reader in readers:   # the weight gradient reads the kept fp8 copy, not the input
        wgrad = [c for c in step.consumers(src) if step.op(c).task is Task.WEIGHT_GRAD
                 and step.op(c).forward_of == (step.op(reader).forward_of or reader)]
        for grad in wgrad:
            step.nx.remove_edge(src, grad)
            step.add_edge(name, grad, len(step.inputs(grad)))


def _narrow(step: OpGraph, name: str, width: int) -> None:
    """A collective of a 16-bit tensor run on its fp8 copy: its bytes / width."""
    op = step.op(name)
    step.nx.nodes[name]["op"] = op.evolve(
        bytes_read=op.bytes_read // width * _FP8, bytes_written=op.bytes_written // width * _FP8,
        out_bytes=op.out_bytes // width * _FP8)


def _grad_sources(step: OpGraph, readers: list[str]) -> list[str]:
    """The ops that write the output gradient the gradient GEMMs ``readers`` read."""
    return list(dict.fromkeys(
        p for r in readers for p in step.inputs(r)
        if step.op(p).phase is Phase.BACKWARD and step.op(p).task is not Task.REGATHER
        and step.op(p).fn != CAST))


def _grad_cast(step: OpGraph, forward: str, readers: list[str], width: int,
               current: bool = False) -> None:
    """One cast of the output gradient of ``forward`` for its data- and weight-gradient GEMMs."""
    sources = _grad_sources(step, readers)
    first = step.op(readers[0])
    output = step.op(forward)   # the gradient of the forward's output, m x n (the data
    elements = output.m * output.n * _groups(output)   # gradient has its own shape: grad_shape)
    _add(step, first, f"{CAST}:grad:{forward}", elements * width, 2 * elements * _FP8,
         Task.DATA_GRAD, Phase.BACKWARD, sources, readers)
    if current:
        _amax(step, f"{CAST}:grad:{forward}")


def _weight_cast(step: OpGraph, op: Op, width: int, current: bool = False) -> None:
    """The weight's fp8 copy and its transpose, once per step, after its layer's update."""
    elements = op.n * op.k * _groups(op)
    update = f"optimizer:L{op.layer}"
    _add(step, op, f"{CAST}:weight:{op.name}", elements * width, 2 * elements * _FP8,
         Task.FORWARD, Phase.OPTIMIZER, [update] if update in step else [], [])
    if current:
        _amax(step, f"{CAST}:weight:{op.name}")


def _weight_transpose(step: OpGraph, op: Op) -> None:
    """An fp8 primary weight's transpose (``Plan.fp8_params``), once per step, after its
    layer's update: read 1, write 1 per element (``FP8_TRANSPOSE``, TE's ``fp8_transpose``)."""
    elements = op.n * op.k * _groups(op)
    update = f"optimizer:L{op.layer}"
    name = f"{FP8_TRANSPOSE}:weight:{op.name}"
    step.add(Op(name=name, kind=OpKind.COPY, phase=Phase.OPTIMIZER, dtype=DType.FP8,
                fn=FP8_TRANSPOSE, bytes_read=elements, bytes_written=elements, layer=op.layer,
                block=op.block, forward_of=op.forward_of or op.name, task=Task.FORWARD),
             [update] if update in step else [])
    step.issue_early(name)


def _weight_recast(step: OpGraph, op: Op, width: int, current: bool = False) -> None:
    """``Fp8Modules.LINEAR``: the weight's fp8 copy and its transpose at each forward call of
    ``op`` (forward or recomputed), just before it (TE's ``update_fp8_weights = is_first_microbatch
    is None or is_first_microbatch``: with no ``is_first_microbatch``, every call casts)."""
    elements = op.n * op.k * _groups(op)
    name = f"{CAST}:weight:{op.name}"
    _add(step, op, name, elements * width, 2 * elements * _FP8, op.task, op.phase, [], [op.name])
    inputs = step.inputs(op.name)
    if inputs:   # ordering only: issued with the GEMM's input, not at the graph's start
        step.add_edge(inputs[0], name, 0, nbytes=0)
    if current:
        _amax(step, name)


#: fn of the SwiGLU-input store's kernels: the cast to fp8 (forward) and back (backward).
STORE, RESTORE = "fp8_store", "fp8_restore"
#: The activation whose input Megatron-core stores in fp8 (``fused_bias_swiglu.py``).
SWIGLU = "swiglu"


def store_swiglu_input(step: OpGraph, plan: Plan) -> OpGraph:
    """``Plan.fp8_swiglu_input``: each SwiGLU's backward reads its input from an fp8 copy made
    in the forward (``STORE``, 1 byte per element, kept) through a cast back to 16 bits
    (``RESTORE``, transient, issued when the SwiGLU's output gradient is ready). ``step`` is
    changed in place and returned; PlanError if it has no SwiGLU."""
    if not plan.fp8_swiglu_input:
        return step
    grads = [n for n in step.names() if step.op(n).fn == SWIGLU
             and step.op(n).task is Task.DATA_GRAD]
    if not any(step.op(n).fn == SWIGLU for n in step.names()):
        raise PlanError("fp8_swiglu_input = true needs a SwiGLU MLP (Megatron-core stores only "
                        "a SwiGLU's input in fp8) and this model has none: leave it false")
    width = plan.formats.activation.bytes
    for name in grads:
        op = step.op(name)
        inputs = step.inputs(name)
        saved = [s for s in inputs if step.op(s).phase in (Phase.FORWARD, Phase.RECOMPUTE)]
        grad = [s for s in inputs if s not in saved]
        if not saved:
            continue
        elements = sum(step.op(s).out_bytes for s in saved) // width
        first = step.op(saved[0])
        vector = dict(kind=OpKind.COPY, dtype=plan.formats.activation, layer=op.layer,
                      block=op.block, forward_of=op.forward_of)
        store = step.add(Op(name=f"{STORE}:{op.forward_of}", phase=first.phase, task=first.task,
                            fn=STORE, bytes_read=elements * width,
                            bytes_written=elements * _FP8, out_bytes=elements * _FP8,
                            **vector), [])
        for index, src in enumerate(saved):
            step.add_edge(src, store, index)
            step.nx.remove_edge(src, name)
        step.issue_early(store)
        restore = step.add(Op(name=f"{RESTORE}:{op.forward_of}", phase=Phase.BACKWARD,
                              task=Task.DATA_GRAD, fn=RESTORE, bytes_read=elements * _FP8,
                              bytes_written=elements * width, out_bytes=elements * width,
                              **vector), [store])
        for src in grad:   # ordering only: cast back when the backward reaches the SwiGLU
            step.add_edge(src, restore, len(step.inputs(restore)), nbytes=0)
        step.add_edge(restore, name, len(step.inputs(name)))
    return step


__all__ = ["CAST", "NORMS", "RESTORE", "STORE", "add_casts", "fp8_gemms", "fp8_param",
           "fp8_param_elements", "saved_bytes", "store_swiglu_input"]
