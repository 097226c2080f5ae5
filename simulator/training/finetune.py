"""Fine-tuning: frozen parameters, LoRA adapters and QLoRA's quantised base weights.

- Frozen parameters (``Op.frozen``) get no weight gradient and no optimizer state; a tensor
  gets a gradient only if some trainable parameter lies upstream of it (``needs_grad``), as
  autograd's ``requires_grad`` propagates: the frozen base still needs its data gradients
  wherever an adapter lies below, not its weight gradients.
- LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models",
  arXiv:2106.09685, sec. 4.1): beside each targeted linear W (k -> n), y = W x + (B A x) s
  with A (k -> r) and B (r -> n) trained and W frozen; the adapters' output is scaled (s =
  alpha / r) and added, as PEFT's ``lora.Linear.forward`` runs it (its dropout, 0 by default,
  left out). Every other parameter is frozen too (a tied head with the embedding it reads).
  A and B carry the fact ``lora_a`` / ``lora_b``, the base's ``Role``, from which
  ``simulator.parallel.tensor`` splits them over tensor-parallel ranks as NeMo's
  ``ParallelLinearAdapter`` does; they run in the activation format under fp8 (plain torch
  linears, outside Transformer Engine's autocast: ``tensor_format``).
- QLoRA (Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs",
  arXiv:2305.14314, sec. 3): the frozen linears of the layers are stored as 4-bit NormalFloat
  in blocks of 64 with double-quantised constants (8-bit per 64 weights, fp32 per 256 blocks:
  4 + 8/64 + 32/(64 x 256) = 4.127 bits), or as LLM.int8() (Dettmers et al. 2022: int8 with an
  fp32 scale per output row); embeddings, norms and the LM head stay in the weight format
  (bitsandbytes leaves ``lm_head`` unconverted). Each GEMM on such a weight, forward,
  recomputed or data gradient, first dequantises it to the compute format: an extra
  memory-bound pass reading the stored weight and writing it out (bitsandbytes' ``MatMul4Bit``
  dequantises in its forward and again in its backward).
- fp8 frozen weights (``Quantization.FP8``, with ``Precision.FP8``): Transformer Engine's
  ``fp8_model_init`` builds its modules' weights as fp8 tensors (``Float8Tensor``), as MLPerf's
  NeMo Llama 2 70B LoRA runs do (``fp8_params``: training_results_v5.0 0fdc28f Lenovo/
  benchmarks/llama2_70b_lora/custom_llama.py line 66 ``te.fp8_model_init()``, conf/
  megatron_gpt_peft_tuning_config.yaml line 36 ``fp8_params: ${FP8}``, config_common.sh line 20
  ``FP8=True``). The layers' frozen linears are stored at 1 byte per weight (the per-tensor scale
  and amax, a few bytes, not counted) and the fp8 GEMMs read them as stored: no dequantisation
  and no weight cast per step (TE's ``quantize_weight`` returns a ``QuantizedTensor`` weight as
  it is, NVIDIA/TransformerEngine d0067d0da ``pytorch/module/linear.py`` lines 476-490; a frozen
  weight is never updated, so its fp8 copy never goes stale). Embeddings, norms and the head
  are not TE linears and stay in the weight format. Not modelled: on GPUs whose fp8 GEMMs take
  only the TN layout (Ada, Hopper, sm120; ``is_non_tn_fp8_gemm_supported`` is true for compute
  capability 10.x, 11.x and 13.0 on, ``(10, 0) <= cc < (12, 0) or cc >= (13, 0)``,
  ``pytorch/utils.py`` lines 658-663) the data gradient's ``update_usage(
  columnwise_usage=True)`` (linear.py line 1051) builds the weight's transpose once and keeps
  it: 1 byte more per frozen weight there, not counted (memory only: made once, not per step).
- fp8 frozen weights without the transpose cache (``Plan.fp8_transpose_cache`` false:
  Megatron-core's ``disable_parameter_transpose_cache``, which MLPerf v4.0's SMC H100 LoRA runs
  set, conf/megatron_gpt_peft_tuning_config.yaml line 91): Megatron-core's TE linears then
  pass ``is_first_microbatch=None`` (NVIDIA/Megatron-LM core_r0.7.0.beta 3c0f3ef
  ``megatron/core/transformer/custom_layers/transformer_engine.py`` lines 162-165 and
  281-284; NeMo r2.0.0.rc0.beta copies the yaml key into the TransformerConfig,
  ``megatron_base_model.py`` lines 547-553), and TE of that time (NVIDIA/TransformerEngine
  090e724, 2024-04-19, the runs' Dockerfile ``TE_REVISION``) transposes the fp8 weight in
  every backward: ``weight.transpose_2d(cache=ctx.is_first_microbatch is not None)``
  (``pytorch/module/linear.py`` lines 410-411, ``layernorm_linear.py`` 410-411,
  ``layernorm_mlp.py`` 606-611) runs ``tex.fp8_transpose`` when not cached
  (``pytorch/float8_tensor.py`` line 576). Priced (``transpose_fp8``) as a copy before each
  data-gradient GEMM on such a weight, every micro-batch: read 1 byte and write 1 byte per
  weight element, at the streaming rate; the transposed copy is freed after its GEMM, so
  none is kept (Megatron's default, the cache on, keeps one per weight from the first
  micro-batch on: memory only, not counted, as above). Only on GPUs whose fp8 GEMMs are
  TN-only (``check_transpose_device``): from compute capability 10.0 (B200, GB200) TE's fp8
  GEMMs take the weight as stored and no transpose exists to cache or repeat, so the flag is
  refused there, as on every device that is not an NVIDIA GPU (TE's fp8 path is CUDA's).
"""
from __future__ import annotations

from simulator.errors import PlanError
from simulator.graph.collective import Axis
from simulator.graph.op import Block, DType, Op, OpKind, Role, Task
from simulator.graph.opgraph import OpGraph
from simulator.plan.step import Finetune, Formats, LoraTarget, Plan, Quantization

#: Bits per stored weight of each quantisation (QLoRA sec. 3: 4 + 0.127 for NF4's constants).
BITS = {Quantization.NF4: 4 + 8 / 64 + 32 / (64 * 256), Quantization.INT8: 8,
        Quantization.FP8: 8}
#: Facts on an adapter's A (k -> r) and B (r -> n) matrices: the base linear's ``Role``.
ADAPTER_A, ADAPTER_B = "lora_a", "lora_b"
#: Vector arithmetic per weight of a dequantisation: a table lookup (or a convert) and a scale.
DEQUANTIZE_FLOPS_PER_ELEMENT = 2
#: fn of the transpose of an fp8 frozen weight made at each backward (``transpose_fp8``).
FP8_TRANSPOSE = "fp8_transpose"
#: The catalogue's GPUs whose fp8 GEMMs take only the TN layout (name prefixes): TE's
#: ``is_non_tn_fp8_gemm_supported`` (d0067d0da ``pytorch/utils.py`` lines 658-663) is false
#: below compute capability 10.0 and for 12.x; CUDA's compute capability table
#: (developer.nvidia.com/cuda-gpus): L4, L40S, RTX 4090 8.9 (Ada); H100, H800, H200, H20,
#: GH200 9.0 (Hopper); RTX 5090 12.0. B200 and GB200 (10.0) take non-TN layouts. The spec has
#: no compute-capability or architecture field, so the rule goes by name, as
#: ``simulator.cost.attention.HOPPER`` does: a renamed copy of one of these is refused too.
TN_ONLY_FP8 = ("h100-", "h800-", "h200-", "h20", "gh200", "l4", "rtx-4090", "rtx-5090")


def adapt(forward: OpGraph, plan: Plan) -> OpGraph:
    """``forward`` as ``plan.finetune`` trains it: itself for a full fine-tune; for LoRA, every
    parameter frozen and rank-r adapters beside the targeted linears (PlanError if the model
    has none of them)."""
    if plan.finetune is Finetune.FULL:
        return forward
    out = OpGraph(forward.name)
    remap: dict[str, str] = {}
    adapted = 0
    for name in forward.names():
        op = forward.op(name)
        inputs = [remap.get(src, src) for src in forward.inputs(name)]
        if op.params or op.role is Role.VOCAB_HEAD:   # a tied head's weight is the embedding's
            op = op.evolve(frozen=True)
        out.add(op, inputs)
        if _targeted(op, plan.targets) and inputs:
            if plan.rank > min(op.k, op.n):   # B A has rank at most min(k, n): more is waste
                raise PlanError(f"lora_rank = {plan.rank} is above the width of {op.name} "
                                f"({op.k} -> {op.n}): an adapter's B A has rank at most "
                                f"{min(op.k, op.n)} and more parameters than the weight it "
                                "adapts; give a rank below it (--lora-rank; PEFT's default 8)")
            remap[name] = _adapter(out, op, inputs[0], plan.rank)
            adapted += 1
    if not adapted:
        targets = ",".join(t.value for t in LoraTarget if t in plan.targets)
        raise PlanError(f"finetune = lora: {forward.name.split(' ')[0]} has no linear of the "
                        f"targets {targets} in its layers (LoRA adapts a transformer's "
                        "attention and MLP linears)")
    return out


def _targeted(op: Op, targets: frozenset[LoraTarget]) -> bool:
    if op.fn != "linear" or op.layer < 0 or op.role not in (Role.COLUMN, Role.ROW):
        return False
    if op.block is Block.ATTN:
        return (LoraTarget.QKV if op.role is Role.COLUMN else LoraTarget.O) in targets
    return op.block is Block.MLP and LoraTarget.MLP in targets


def _adapter(out: OpGraph, base: Op, x: str, rank: int) -> str:
    """B A x s added to ``base``'s output; returns the sum's name (what readers read)."""
    a = out.add(_linear(base, "lora_a", base.k, rank, ADAPTER_A), [x])
    b = out.add(_linear(base, "lora_b", rank, base.n, ADAPTER_B), [a])
    numel, es = base.m * base.n, base.dtype.bytes
    vector = dict(kind=OpKind.ELEMENTWISE, dtype=base.dtype, layer=base.layer,
                  block=base.block, bytes_written=numel * es, out_bytes=numel * es)
    scaled = out.add(Op(name=f"{base.name}.lora_scale", fn="mul", flops=numel,
                        bytes_read=numel * es, **vector), [b])
    return out.add(Op(name=f"{base.name}.lora_add", fn="add", flops=numel,
                      bytes_read=2 * numel * es, **vector), [base.name, scaled])


def _linear(base: Op, suffix: str, k: int, n: int, fact: str) -> Op:
    """An adapter matrix (k -> n, no bias) over ``base``'s rows, trained; the fact ``fact``
    (``ADAPTER_A`` or ``ADAPTER_B``) holds the base's ``Role`` (how tensor parallelism splits
    it, ``simulator.parallel.tensor``)."""
    m, es = base.m, base.dtype.bytes
    return base.evolve(name=f"{base.name}.{suffix}", flops=2 * m * k * n, m=m, k=k, n=n,
                       bytes_read=(m * k + k * n) * es, bytes_written=m * n * es,
                       out_bytes=m * n * es, params=k * n, param_tensors=1,
                       role=Role.REPLICATED, frozen=False, extra=((fact, int(base.role)),))


def tensor_format(op: Op, formats: Formats) -> DType:
    """The format tensor op ``op`` runs in: ``Formats.of``'s, but a LoRA adapter's matrix
    runs in the activation format under fp8: it is a plain torch linear (PEFT's ``lora_A`` /
    ``lora_B`` ``nn.Linear``; NeMo's ``ParallelLinearAdapter`` builds Megatron-core's
    ``ColumnParallelLinear`` / ``RowParallelLinear``, not Transformer Engine modules), which
    TE's ``fp8_autocast`` leaves in 16 bits."""
    facts = dict(op.extra)
    if ADAPTER_A in facts or ADAPTER_B in facts:
        return formats.activation
    return formats.of(op.kind, op.block)


def needs_grad(forward: OpGraph) -> set[str] | None:
    """The ops whose output needs a gradient: those with trainable parameters and those
    reading such an output (autograd's ``requires_grad``), and a pipeline stage's receive of
    the previous stage's output, whose adapters need its gradient (every stage holds layers,
    and ``adapt`` puts adapters in every layer); None when nothing is frozen (every op then
    gets its gradient, as before fine-tuning existed)."""
    names = forward.names()
    if not any(forward.op(n).frozen for n in names):
        return None
    needed: set[str] = set()
    for name in names:
        op = forward.op(name)
        if (op.params and not op.frozen) or _received(op) or \
                any(src in needed for src in forward.inputs(name)):
            needed.add(name)
    return needed


def _received(op: Op) -> bool:
    """A pipeline message from the previous stage (``simulator.parallel.pipeline``)."""
    facts = dict(op.extra)
    return op.kind is OpKind.COLLECTIVE and op.fn == "send_recv" and \
        facts.get("axis") == int(Axis.PIPELINE) and not facts.get("send")


def quantized(op: Op, plan: Plan) -> bool:
    """Whether ``op`` (or a derived copy of it) is a GEMM on a quantised frozen weight."""
    return (plan.frozen_weights is not None and op.frozen and op.fn == "linear"
            and op.layer >= 0 and op.role in (Role.COLUMN, Role.ROW))


def stored_weight_bytes(op: Op, plan: Plan) -> float:
    """Bytes of ``op``'s weight as stored: quantised (``quantized``) or in the weight format."""
    if not quantized(op, plan):
        return op.params * plan.formats.weight.bytes
    if plan.frozen_weights is Quantization.INT8:
        return op.k * op.n + 4 * op.n + _bias(op) * plan.formats.weight.bytes
    if plan.frozen_weights is Quantization.FP8:   # 1 byte a weight; the bias in the weight format
        return op.k * op.n + _bias(op) * plan.formats.weight.bytes
    return op.k * op.n * BITS[Quantization.NF4] / 8 + _bias(op) * plan.formats.weight.bytes


def _bias(op: Op) -> int:
    return op.params - op.k * op.n if op.params > op.k * op.n else 0


def frozen_weight_bytes(forward: OpGraph, plan: Plan) -> float:
    """Bytes of the frozen weights one rank holds (no gradient, no optimizer state)."""
    return sum(stored_weight_bytes(op, plan) for op in forward.ops()
               if op.task is Task.FORWARD and op.frozen and op.params)


def dequantize(step: OpGraph, plan: Plan) -> OpGraph:
    """Before each GEMM on a quantised weight (forward, recomputed, data gradient), the pass
    that dequantises it: reads the stored weight, writes it in the compute format, which the
    GEMM reads and then frees. Issued as soon as the GEMM's first input is ready. ``step`` is
    changed in place and returned. fp8 frozen weights need none: the fp8 GEMMs read them
    (but see ``transpose_fp8``, which this runs for them)."""
    if plan.frozen_weights is Quantization.FP8:
        return transpose_fp8(step, plan)
    if plan.frozen_weights is None:
        return step
    for name in [n for n in step.names() if quantized(step.op(n), plan)
                 and step.op(n).task is not Task.WEIGHT_GRAD]:
        op = step.op(name)
        stored = op.k * op.n * BITS[plan.frozen_weights] / 8
        written = op.k * op.n * op.dtype.bytes
        deq = Op(name=f"dequantize:{name}", kind=OpKind.ELEMENTWISE, phase=op.phase,
                 dtype=op.dtype, fn="dequantize",
                 flops=DEQUANTIZE_FLOPS_PER_ELEMENT * op.k * op.n,
                 bytes_read=int(stored), bytes_written=written, out_bytes=written,
                 layer=op.layer, block=op.block, forward_of=op.forward_of or name,
                 task=op.task)
        _insert_before(step, deq, name)
    return step


def _insert_before(step: OpGraph, op: Op, gemm: str) -> None:
    """Add ``op`` to ``step`` as the last input of ``gemm``, issued just in time: as soon as
    ``gemm``'s first input is ready (an ordering edge of no bytes from it)."""
    first = step.inputs(gemm)[:1]
    step.add(op, [])
    for src in first:   # ordering only
        step.add_edge(src, op.name, nbytes=0)
    step.add_edge(op.name, gemm, index=len(step.inputs(gemm)))
    if first:
        step.issue_early(op.name)


def check_transpose_device(device) -> None:
    """PlanError unless ``device`` is a GPU whose fp8 GEMMs take only the TN layout
    (``TN_ONLY_FP8``), where TE transposes an fp8 weight for the data gradient and
    ``fp8_transpose_cache`` = false repeats that every micro-batch (``transpose_fp8``)."""
    if device.vendor != "NVIDIA" or not device.name.startswith(TN_ONLY_FP8):
        raise PlanError(f"fp8_transpose_cache = false needs a GPU whose fp8 GEMMs are TN-only "
                        f"(Ada, Hopper, RTX 5090: Transformer Engine transposes fp8 weights "
                        f"there), not {device.name} (drop --no-fp8-transpose-cache)")


def transpose_fp8(step: OpGraph, plan: Plan) -> OpGraph:
    """fp8 frozen weights without TE's transpose cache (``Plan.fp8_transpose_cache`` false):
    before each data-gradient GEMM on such a weight, the kernel that transposes it (TE's
    ``fp8_transpose``: reads 1 byte and writes 1 byte per weight element), which the GEMM
    reads and then frees; every micro-batch. Issued as soon as the GEMM's first input is
    ready. ``step`` is changed in place and returned; unchanged with the cache on."""
    if plan.fp8_transpose_cache or plan.frozen_weights is not Quantization.FP8:
        return step
    for name in [n for n in step.names() if quantized(step.op(n), plan)
                 and step.op(n).task is Task.DATA_GRAD]:
        op = step.op(name)
        elements = op.k * op.n
        t = Op(name=f"{FP8_TRANSPOSE}:{name}", kind=OpKind.COPY, phase=op.phase,
               dtype=DType.FP8, fn=FP8_TRANSPOSE, bytes_read=elements, bytes_written=elements,
               out_bytes=elements, layer=op.layer, block=op.block,
               forward_of=op.forward_of or name, task=op.task)
        _insert_before(step, t, name)
    return step


__all__ = ["ADAPTER_A", "ADAPTER_B", "BITS", "FP8_TRANSPOSE", "TN_ONLY_FP8", "adapt",
           "check_transpose_device", "dequantize", "frozen_weight_bytes", "needs_grad",
           "quantized", "stored_weight_bytes", "tensor_format", "transpose_fp8"]
