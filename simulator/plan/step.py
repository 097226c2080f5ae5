"""How a workload is run: batch, precision, recomputation, optimizer (STYLE.md rule 1)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import Enum

from simulator.errors import PlanError, bounded
from simulator.graph.op import Block, DType, OpKind
from simulator.plan.parallel import MAX_BATCH, positive


class Precision(str, Enum):
    FP32 = "fp32"
    TF32 = "tf32"
    FP16 = "fp16"
    BF16 = "bf16"
    FP8 = "fp8"


class Recompute(str, Enum):
    NONE = "none"
    SELECTIVE = "selective"  # Korthikanti et al. 2022: recompute the attention core only
    FULL = "full"            # keep each layer's input, recompute the layer in the backward


class Optimizer(str, Enum):
    ADAM = "adam"
    ADAMW = "adamw"
    SGD = "sgd"              # with momentum, as ImageNet training uses it
    SGD_NOMOMENTUM = "sgd-nomomentum"  # torch.optim.SGD's defaults: no momentum buffer
    ADAFACTOR = "adafactor"  # torch.optim.Adafactor: factored second moment, no first
    ADAMW_8BIT = "adamw8bit"  # bitsandbytes' AdamW8bit: both moments in 8 bits, blockwise
    NONE = "none"            # no update: forward and backward only (the gradients are kept)


class OptimizerImpl(str, Enum):
    """How the update runs (PyTorch's torch/optim implementations; simulator.cost.host)."""
    SINGLE = "single"        # a for-loop over the tensors (_single_tensor_adamw)
    FOREACH = "foreach"      # _foreach_ calls over all tensors (_multi_tensor_adamw)
    FUSED = "fused"          # one fused kernel (fused=True, _fused_adamw; Apex FusedAdam)


class Attention(str, Enum):
    FUSED = "fused"                # FlashAttention-style: no s x s tensor in memory
    MATERIALIZED = "materialized"  # QK^T, softmax, dropout, AV as separate kernels (Megatron)


class AttentionLayout(str, Enum):
    """Where a fused attention kernel's q, k, v and output live (simulator.training.qkv)."""
    NATIVE = "native"            # the kernel reads q, k, v where the projections wrote them
    SBHD = "sbhd"                # [s, b, h] activations copied to the kernel's [b, s, h, d] and
    #                              back (Megatron-LM's FlashSelfAttention, 2023)
    SBHD_PACKED = "sbhd-packed"  # as sbhd, then q, k, v concatenated into one packed tensor
    #                              (GPT-NeoX's flash path, flash_attn_unpadded_qkvpacked_func)
    UNPADDED = "unpadded"        # q, k, v gathered to [tokens, h, d] and the output scattered
    #                              back (flash-attn's bert_padding: llm-foundry's flash path)


class AttentionKernel(str, Enum):
    """The fused attention kernel (``simulator.cost.attention`` prices each by its fit)."""
    AUTO = "auto"                  # the device's default (simulator.cost.attention)
    FLASH_ATTN_1 = "flash-attn-1"  # Dao et al. 2022
    FLASH_ATTN_2 = "flash-attn-2"  # Dao 2023: PyTorch SDPA's flash backend, HF flash_attention_2
    FLASH_ATTN_3 = "flash-attn-3"  # Shah et al. 2024: Hopper only
    FLASH_ATTN_TRITON = "flash-attn-triton"  # Tri Dao's Triton kernel (MPT's attn_impl: triton)
    CUDNN = "cudnn"                # cuDNN fused attention (Transformer Engine's FusedAttention)


class Fusion(str, Enum):
    EAGER = "eager"        # one kernel per op (PyTorch eager)
    COMPILED = "compiled"  # vector ops folded into their producer (torch.compile, XLA)


class LossKernels(str, Enum):
    """How a language model's cross-entropy over the vocabulary runs (``simulator.training.loss``)."""
    AUTO = "auto"    # as the step's fusion: one fused kernel compiled, Megatron-LM's eager passes
    TORCH = "torch"  # PyTorch's F.cross_entropy on an fp32 cast, eager (log_softmax, nll_loss),
    #                  outside any compiled region: torchtitan 9dec370 train.py lines 131-138
    MEGATRON = "megatron"  # Megatron-Core's vocab_parallel_cross_entropy, its eager fp32 passes,
    #                  under any fusion: Megatron-LM without --cross-entropy-loss-fusion (off by
    #                  default, core_r0.8.0 megatron/training/arguments.py lines 1134-1136)


class Rotary(str, Enum):
    """How eager PyTorch runs a rotary embedding (``simulator.training.qkv``; ``Fusion.EAGER``
    only: compiled fusion keeps it one kernel)."""
    EAGER = "eager"        # q * cos + rotate_half(q) * sin, a kernel per op (HF, GPT-NeoX bf16)
    SCRIPTED = "scripted"  # @torch.jit.script with the legacy fuser (GPT-NeoX fp16): two kernels


class BiasAdd(str, Enum):
    """Where eager PyTorch adds a linear's bias (``simulator.training.bias``; ``Fusion.EAGER``
    only)."""
    FUSED = "fused"        # in the GEMM (a cuBLASLt bias epilogue) or the next fused kernel
    SEPARATE = "separate"  # a kernel of its own after the GEMM (GPT-NeoX on PyTorch 1.8)


class Projections(str, Enum):
    """How a framework runs the column-parallel projections that read one input
    (``simulator.training.projections``)."""
    SEPARATE = "separate"  # q, k, v and gate, up a GEMM each (HF's Llama, torchtitan)
    FUSED = "fused"        # one linear_qkv and one linear_fc1 (Megatron-Core, NeMo; HF's
    #                        GPT-2 c_attn, GPT-NeoX and Falcon query_key_value)


class Fp8Modules(str, Enum):
    """Which Transformer Engine modules run a model's fp8 GEMMs (``simulator.training.fp8``)."""
    FUSED = "fused"    # LayerNormLinear / LayerNormMLP, weights cast once per step (Megatron-core)
    LINEAR = "linear"  # te.Linear only: the norm writes 16 bits, weights cast every forward call
    #                    (llm-foundry's fc_type = 'te': no is_first_microbatch)


class Fp8Recipe(str, Enum):
    """How Transformer Engine scales a tensor to fp8 (``simulator.training.fp8``)."""
    DELAYED = "delayed"  # scale from the amax history of earlier steps; the amax of this step
    #                      taken inside the cast kernel (TE's DelayedScaling, its default)
    CURRENT = "current"  # per-tensor current scaling: an amax pass over the tensor, then the
    #                      cast (TE's Float8CurrentScaling; NeMo 25.04's performance runs)
    TORCHAO_TENSORWISE = "torchao-tensorwise"  # torchao's Float8Linear, dynamic tensorwise
    #   scaling (torchtitan's float8 converter): 16-bit norms, the weight cast at every forward
    #   call, the amax of activations and gradients fused into their producer under compiled
    #   fusion (torchao eab345c torchao/float8/roofline_utils.py)


class Finetune(str, Enum):
    FULL = "full"    # every parameter trained
    LORA = "lora"    # base weights frozen, low-rank adapters trained (Hu et al. 2021)


class LoraTarget(str, Enum):
    """The linears of each layer that get an adapter."""
    QKV = "qkv"      # the attention's query, key and value projections
    O = "o"          # the attention's output projection
    MLP = "mlp"      # the MLP's linears (fc1, fc2; gate, up, down)


class Quantization(str, Enum):
    """How frozen weights are stored (QLoRA): bytes per weight element, dequantised to the
    compute format before each GEMM."""
    NF4 = "nf4"      # 4-bit NormalFloat, double-quantised constants (Dettmers et al. 2023)
    INT8 = "int8"    # LLM.int8() (Dettmers et al. 2022): int8 with an fp32 scale per row
    # Transformer Engine's fp8_model_init (MLPerf's NeMo LoRA: fp8_params): the frozen linears
    # held as fp8 tensors that its fp8 GEMMs read as they are, no dequantisation and no cast
    FP8 = "fp8"


#: LoRA's rank when none is given: PEFT's ``LoraConfig(r=8)`` default.
DEFAULT_LORA_RANK = 8

#: ``Plan.rank_variability``'s default: the spread of identical GPUs' speed on one GEMM, the
#: coefficient of variation 1.4826 MAD / median of 392 V100 SXM2 GPUs' SGEMM (25536^3, FP32)
#: kernel times on TACC Longhorn, each GPU's median over its runs (hal-uw/blox-pal
#: ``aggregated_data/sim/sgemm-longhorn-agg.csv``, commit da726ca, MIT; measured in 2020 by the
#: group of Sinha et al., SC'22; tests/data/gpu_variability.csv, recomputed by
#: tests/test_rank_variability.py).
#: Measured on V100; 204 A100 PCIe GPUs' ResNet-50 iterations on TACC Lonestar6 spread 0.0160;
#: a prior for the other GPUs (spec class "gpu": power-managed boost clocks). Devices of other
#: classes (FPGAs at the bitstream's fixed clock, TPUs, IPUs, Gaudi, Trainium, CPUs) have no
#: measured per-chip spread: 0 unless the plan sets one (simulator.schedule.variability).
RANK_VARIABILITY = 0.0172


@dataclass(frozen=True)
class Formats:
    """Dtypes of one precision. Mixed precision keeps an fp32 master copy (Micikevicius 2018)."""

    activation: DType
    compute: DType        # the matmul / conv input format
    weight: DType         # the copy the forward and backward read
    gradient: DType
    master: bool          # an fp32 master copy in the optimizer state

    def of(self, kind: OpKind, block: Block) -> DType:
        """The format a tensor op (``TENSOR_KINDS``) of ``kind`` in ``block`` runs in. FP8 is
        Transformer Engine's: its modules (Linear, LayerNormLinear, LayerNormMLP) run their
        GEMMs in fp8, while attention's core (DotProductAttention, fp8 only with fp8_dpa) and
        the output layer (Megatron-core's ColumnParallelLinear, not a TE module) stay in the
        activation format."""
        if self.compute is DType.FP8 and (kind is not OpKind.MATMUL
                                          or block in (Block.ATTN_CORE, Block.HEAD)):
            return self.activation
        return self.compute


FORMATS = {
    Precision.FP32: Formats(DType.FP32, DType.FP32, DType.FP32, DType.FP32, False),
    Precision.TF32: Formats(DType.FP32, DType.TF32, DType.FP32, DType.FP32, False),
    Precision.FP16: Formats(DType.FP16, DType.FP16, DType.FP16, DType.FP16, True),
    Precision.BF16: Formats(DType.BF16, DType.BF16, DType.BF16, DType.BF16, True),
    # FP8 (Transformer Engine): fp8 matmul inputs, bf16 activations and weights, fp32 master.
    Precision.FP8: Formats(DType.BF16, DType.FP8, DType.BF16, DType.BF16, True),
}

# Bytes of optimizer state per parameter, besides the master copy (Rajbhandari et al. 2020,
# sec. 3.1: Adam keeps momentum and variance, 4 bytes each; SGD its momentum buffer).
# - sgd-nomomentum: none (torch/optim/sgd.py, momentum 0: no momentum_buffer).
# - adafactor: a row and a column vector per matrix (torch/optim/_adafactor.py, PyTorch
#   2.13.0, ``row_var`` and ``col_var``: m + n elements for an m x n weight), counted as 0 a
#   parameter; a vector parameter's full ``variance`` (biases, norms' weights) is not counted.
# - adamw8bit: two uint8 states and an fp32 absmax per 256-element block of each
#   (bitsandbytes-foundation/bitsandbytes 95f9af3 bitsandbytes/optim/optimizer.py
#   ``Optimizer2State.init_state``: ``blocksize = 256``, ``absmax1``/``absmax2`` float32), 2 +
#   8 / 256 bytes; tensors under ``min_8bit_size`` (4,096 elements) keep fp32 states there,
#   not counted (biases and norms).
OPTIMIZER_STATE_BYTES = {Optimizer.ADAM: 8, Optimizer.ADAMW: 8, Optimizer.SGD: 4,
                         Optimizer.SGD_NOMOMENTUM: 0, Optimizer.ADAFACTOR: 0,
                         Optimizer.ADAMW_8BIT: 2 + 2 * 4 / 256, Optimizer.NONE: 0}
# Arithmetic per parameter of one update, counted from PyTorch's single-tensor implementations
# (torch/optim/adamw.py, sgd.py): AdamW 13 (moments 7, denominator 3, step 2, decay 1);
# SGD with momentum and weight decay 6; SGD without momentum (its default weight decay 0):
# ``param.add_(grad, alpha=-lr)``, 2. Adafactor (torch/optim/_adafactor.py
# ``_single_tensor_adafactor``, PyTorch 2.13.0, its default weight decay 0) on an m x n
# weight: the parameter's norm 2, the gradient's row and column norms 2 each, the outer
# product ``row_var @ col_var`` 1, its division 1, ``clamp_`` 1, ``rsqrt_`` 1, ``mul_(grad)``
# 1, the update's norm 2, ``param.add_`` 2: 15. bitsandbytes' 8-bit AdamW (csrc/kernels.cu
# ``kOptimizerStatic8bit2StateBlockwise`` at 95f9af3): AdamW's 13, dequantizing the two
# states 2, their block absmax 4 (abs, max), normalising them 2, and ``quantize_2D``'s search
# of the 256-entry map, 11 operations a state (7 halvings, a last comparison, its midpoint's
# add, multiply and comparison): 43.
OPTIMIZER_FLOPS_PER_PARAM = {Optimizer.ADAM: 13, Optimizer.ADAMW: 13, Optimizer.SGD: 6,
                             Optimizer.SGD_NOMOMENTUM: 2, Optimizer.ADAFACTOR: 15,
                             Optimizer.ADAMW_8BIT: 43, Optimizer.NONE: 0}
# Passes over fp32 arrays of the parameter's size that an unfused update (for-loop or foreach)
# makes besides the fused kernel's (which reads weight, gradient and states once and writes
# weight and states once), as (reads, writes). Counted in torch/optim/adamw.py
# (_single_tensor_adamw; _multi_tensor_adamw runs the same lines as _foreach_ calls), without
# amsgrad: param.mul_ (R1 W1), exp_avg.lerp_ (R2 W1), exp_avg_sq.mul_ (R1 W1), .addcmul_
# (R2 W1), exp_avg_sq.sqrt() (R1 W1), / bias_correction2_sqrt (R1 W1), .add_(eps) (R1 W1),
# param.addcdiv_ (R3 W1): 12 reads, 8 writes against _fused_adamw_'s 4 and 3. SGD with
# momentum and weight decay (torch/optim/sgd.py, _single_tensor_sgd): grad.add(param) (R2 W1),
# buf.mul_ (R1 W1), .add_(grad) (R2 W1), param.add_ (R2 W1): 7 and 4 against 3 and 2.
# SGD without momentum: param.add_ alone, the fused kernel's passes (none besides). Adafactor
# (``_single_tensor_adafactor``; it has no fused form) on an m x n weight: ``param.norm`` (R1),
# the row and column norms of the gradient (R1 each; their m- and n-vectors not counted), the
# outer product (W1), ``div_`` (R1 W1), ``clamp_`` (R1 W1), ``rsqrt_`` (R1 W1), ``mul_(grad)``
# (R2 W1), the update's norm (R1), ``param.add_`` (R2 W1): 11 and 6 against a fused kernel's
# 2 and 1 (weight and gradient read, weight written); the foreach form
# (``_multi_tensor_adafactor``) scales the updates by a ``_foreach_mul_`` before adding them:
# one pass more each (``FOREACH_EXTRA_PASSES``). bitsandbytes' 8-bit AdamW is one fused kernel
# a tensor: none besides.
UNFUSED_EXTRA_PASSES = {Optimizer.ADAM: (8, 5), Optimizer.ADAMW: (8, 5), Optimizer.SGD: (4, 3),
                        Optimizer.SGD_NOMOMENTUM: (0, 0), Optimizer.ADAFACTOR: (9, 5),
                        Optimizer.ADAMW_8BIT: (0, 0), Optimizer.NONE: (0, 0)}
FOREACH_EXTRA_PASSES = {Optimizer.ADAFACTOR: (1, 1)}
# Host synchronisations per parameter tensor inside the update: Adafactor's
# ``param.norm(2).item()`` and ``update.norm(2).item()`` (both forms); bitsandbytes'
# ``sync_gpu(p)`` (``torch.cuda.synchronize()``) after each tensor's kernel
# (bitsandbytes/optim/optimizer.py ``Optimizer8bit.step`` and bitsandbytes/utils.py at 95f9af3;
# since b43edf5, 2025-07-11).
UPDATE_SYNCS = {Optimizer.ADAFACTOR: 2, Optimizer.ADAMW_8BIT: 1}
# The implementations each optimizer has (``Plan.optimizer_impl``): PyTorch's Adafactor a
# for-loop and a foreach form (``adafactor``: ``_multi_tensor_adafactor`` if foreach, else
# ``_single_tensor_adafactor``; foreach defaults to None, the for-loop, on every device);
# bitsandbytes' optimizers one kernel per tensor from a Python loop (``Optimizer8bit.step``),
# priced as ``single``; no update, none.
OPTIMIZER_IMPLS = {Optimizer.ADAFACTOR: (OptimizerImpl.SINGLE, OptimizerImpl.FOREACH),
                   Optimizer.ADAMW_8BIT: (OptimizerImpl.SINGLE,), Optimizer.NONE: ()}


@dataclass(frozen=True)
class Plan:
    """One device's run of a workload. ``global_batch`` = micro_batch x micro-batches."""

    # A field's metadata is what the command line and sweeps need of it (simulator.plan.fields).
    micro_batch: int = field(default=1, metadata={
        "unset": True, "help": "samples per micro-batch (default: with --global-batch, the "
                              "largest that divides the replica's batch and fits; else the "
                              "model's, 1 for the zoo)"})
    global_batch: int | None = None
    precision: Precision = Precision.BF16
    recompute: Recompute = Recompute.NONE
    optimizer: Optimizer = Optimizer.ADAMW
    attention: Attention = field(default=Attention.FUSED, metadata={
        "help": "fused (FlashAttention-style) or materialized (s x s in memory)"})
    attention_kernel: AttentionKernel = field(default=AttentionKernel.AUTO, metadata={
        "help": "the fused attention kernel: auto (FlashAttention-2 on an A100, cuDNN on an "
                "H100), flash-attn-1, flash-attn-2, flash-attn-3 (Hopper), flash-attn-triton "
                "or cudnn"})
    attention_layout: AttentionLayout = field(default=AttentionLayout.NATIVE, metadata={
        "help": "where the fused attention kernel's q, k, v live: native (as the projections "
                "wrote them), sbhd (sequence-first activations copied to [b, s, h, d] and "
                "back: Megatron-LM's flash path), sbhd-packed (also packed into one qkv "
                "tensor: GPT-NeoX's flash path) or unpadded (gathered to the unpadded tokens "
                "and scattered back: llm-foundry's flash path)"})
    fusion: Fusion = field(default=Fusion.EAGER, metadata={
        "help": "eager (a kernel per op) or compiled (vector ops fused)"})
    # The loss's kernels (simulator.training.loss): torchtitan compiled its blocks but not its
    # loss ("compiling loss function causes CUDA errors", train.py lines 136-138 at 9dec370)
    loss_kernels: LossKernels = field(default=LossKernels.AUTO, metadata={
        "help": "a language model's cross-entropy: auto (a fused kernel under compiled fusion, "
                "Megatron-LM's eager passes under eager), torch (PyTorch's eager "
                "F.cross_entropy on an fp32 cast: log_softmax, nll_loss; torchtitan, whose "
                "loss was not compiled) or megatron (Megatron-LM's eager passes under any "
                "fusion: Megatron-Core without --cross-entropy-loss-fusion)"})
    rotary: Rotary = field(default=Rotary.EAGER, metadata={
        "help": "a rotary embedding under eager fusion: eager (PyTorch, a kernel per op) or "
                "scripted (torch.jit.script with the legacy fuser: GPT-NeoX's fp16 path)"})
    bias_add: BiasAdd = field(default=BiasAdd.FUSED, metadata={
        "help": "a biased linear's bias under eager fusion: fused (in the GEMM's epilogue) or "
                "separate (a kernel reading and writing the output after the GEMM, unless an "
                "activation's kernel adds it: GPT-NeoX on PyTorch 1.8)"})
    projections: Projections | None = field(default=None, metadata={
        "help": "the projections reading one input: separate (q, k, v and a gated MLP's gate "
                "and up a GEMM each, their input gradients summed: Hugging Face's Llama, "
                "torchtitan) or fused (one GEMM each for q, k, v and for gate, up: "
                "Megatron-Core's linear_qkv and linear_fc1, NeMo; Hugging Face's GPT-2, "
                "GPT-NeoX, Falcon). Default: the model's own (an imported Hugging Face "
                "config's architecture, workloads.hf_config.PROJECTIONS), else separate"})
    fp8_modules: Fp8Modules = field(default=Fp8Modules.FUSED, metadata={
        "help": "fp8's Transformer Engine modules: fused (LayerNormLinear/LayerNormMLP, "
                "weights cast once per step) or linear (te.Linear only: 16-bit norms, weights "
                "cast at every forward call)"})
    fp8_recipe: Fp8Recipe = field(default=Fp8Recipe.DELAYED, metadata={
        "help": "fp8 scaling: delayed (amax history; the amax taken inside each cast) or "
                "current (per-tensor current scaling: an amax pass over each tensor before "
                "its cast, norms writing 16 bits) or torchao-tensorwise (torchao's Float8Linear: "
                "an amax pass and a cast per tensor, the amax fused into the producer under "
                "compiled fusion, the weight cast at every forward call)"})
    # The SwiGLU's input kept for its backward in fp8 (simulator.training.fp8.store_swiglu_input):
    # Megatron-core's activation_func_fp8_input_store, MLPerf's NeMo LoRA FP8_ACT=1.
    fp8_swiglu_input: bool = field(default=False, metadata={
        "help": "keep the SwiGLU's input for its backward in fp8, 1 byte per element "
                "(Megatron-core's activation_func_fp8_input_store): a cast kernel in the "
                "forward, one back to 16 bits in the backward"})
    # The trained weights of Transformer Engine's fp8 linears held in fp8 (simulator.training.
    # fp8, "fp8 primary weights"): TE's fp8_model_init, NeMo's fp8_params, Megatron-LM's
    # --fp8-param-gather; the frozen weights' counterpart is frozen_weights = 'fp8'.
    fp8_params: bool = field(default=False, metadata={
        "help": "keep the trained weights of the fp8 linears in fp8, 1 byte each, the fp32 "
                "master in the optimizer (Transformer Engine's fp8_model_init: NeMo "
                "fp8_params, Megatron-LM --fp8-param-gather): the update writes them in fp8, "
                "the distributed optimizer all-gathers them at 1 byte, a transpose replaces "
                "their cast; needs --precision fp8 and --zero 1 or 2"})
    # PyTorch's CPU build has no fused attention kernel that takes dropout: SDPA with
    # dropout_p > 0 runs its math path there (simulator.training.fusion.math_attention)
    math_attention_dropout: bool = field(default=False, metadata={
        "help": "run fused attention that has dropout as PyTorch SDPA's math path (the "
                "scores, safe softmax, dropout and both products as their own kernels), as "
                "PyTorch's CPU build does, whose flash kernel takes no dropout (always on "
                "for a CPU)"})
    # Convolutions' activations in NHWC (PyTorch's memory_format=torch.channels_last): no layout
    # transposes around 16-bit convolutions (simulator.training.layout). False: NCHW, PyTorch's
    # default, where cuDNN's tensor-core kernels transpose each convolution's input and output.
    channels_last: bool = field(default=False, metadata={
        "help": "convolutions' activations in NHWC (torch.channels_last): no NCHW/NHWC "
                "transposes around 16-bit convolutions"})
    # cuDNN's batch-norm/convolution fusion (simulator.training.convnorm): statistics in the
    # convolution's epilogue, scale, shift and ReLU in the next one's prologue, one kernel for
    # a block's last norm, residual add and ReLU, and for a norm's and its ReLU's backward
    # (NVIDIA's MXNet ResNet-50 for MLPerf: NormConvolution, ScaleBiasAddRelu). NHWC only.
    conv_norm_fusion: bool = field(default=False, metadata={
        "help": "cuDNN's batch-norm/convolution fusion (NVIDIA's MXNet ResNet-50 for MLPerf): "
                "norm statistics in the convolution's epilogue, scale, shift and ReLU in the "
                "next convolution's prologue, a block's norm, residual add and ReLU in one "
                "kernel; needs --channels-last, fp16 and an NVIDIA GPU of compute capability 8.0+"})
    # Batch norm fused with its ReLU, and a residual block's last norm with the add and ReLU
    # (simulator.training.convnorm.fuse_norm_act: NVIDIA's MXNet ResNet-50 for MLPerf without
    # NormConvolution, --fuse-bn-relu / --fuse-bn-add-relu, NHWC fp16 kernels). Implied by
    # conv_norm_fusion, which fuses these too.
    norm_act_fusion: bool = field(default=False, metadata={
        "help": "batch norm fused with its ReLU, and a block's last norm with the residual add "
                "and ReLU, forward and backward (MXNet's BatchNorm act_type=relu and "
                "BatchNormAddRelu); needs --channels-last and fp16"})
    # Clip gradients by their global norm before the update: one more pass reading every
    # gradient (torch.nn.utils.clip_grad_norm_; Megatron-LM --clip-grad, 1.0 by default).
    grad_clip: bool = field(default=False, metadata={
        "help": "clip gradients by their global norm: one more pass over them per step "
                "(Megatron-LM --clip-grad, Hugging Face max_grad_norm)"})
    # Keep, accumulate and reduce the gradients in fp32 under 16-bit training (Megatron-LM
    # --accumulate-allreduce-grads-in-fp32, implied by its --bf16; Llama 3's "FP32 gradient
    # accumulation ... and reduce-scatter", Dubey et al. 2024, sec. 3.3.2): 4 bytes per
    # gradient instead of 2, in memory, in the data-parallel reduction and in the update.
    fp32_grads: bool = field(default=False, metadata={
        "help": "keep and reduce gradients in fp32 under bf16/fp16 (Megatron-LM "
                "--accumulate-allreduce-grads-in-fp32, on with its --bf16)"})

    # Fine-tuning (simulator.training.finetune): frozen parameters get no gradients and no
    # optimizer states; LoRA trains rank-r adapters (Hu et al. 2021) beside the frozen
    # linears of the targets; QLoRA stores the frozen linears quantised (Dettmers et al. 2023).
    finetune: Finetune = field(default=Finetune.FULL, metadata={
        "help": "full: train every parameter; lora: freeze the base weights and train "
                "low-rank adapters (Hu et al. 2021)"})
    lora_rank: int | None = field(default=None, metadata={
        "metavar": "R", "help": f"LoRA adapters' rank (default {DEFAULT_LORA_RANK})"})
    lora_targets: str | None = field(default=None, metadata={
        "metavar": "qkv,o,mlp", "help": "the linears that get an adapter, comma-separated: "
                                        "qkv, o, mlp (default qkv)"})
    frozen_weights: Quantization | None = field(default=None, metadata={
        "help": "QLoRA: store the frozen linears as nf4 or int8, dequantised before each "
                "GEMM; fp8 (with --precision fp8): 1 byte each, read by the fp8 GEMMs as "
                "stored (Transformer Engine's fp8_model_init) (default: the precision's "
                "weight format)"})
    # Transformer Engine's cache of an fp8 frozen weight's transpose across micro-batches
    # (simulator.training.finetune.transpose_fp8); False: Megatron-core's
    # disable_parameter_transpose_cache (MLPerf v4.0's SMC H100 LoRA runs), a transpose
    # kernel before each data-gradient GEMM, every micro-batch.
    fp8_transpose_cache: bool = field(default=True, metadata={
        "help": "fp8 frozen weights (--frozen-weights fp8): Transformer Engine keeps each "
                "weight's transpose across micro-batches (Megatron-core's default); "
                "--no-fp8-transpose-cache: disable_parameter_transpose_cache, the weight "
                "transposed in every backward (read 1, write 1 byte per weight)"})
    # The devices' power limit (nvidia-smi -pl): under it each phase of the step runs at the
    # clock that keeps its power within it (simulator.cost.power); None: the TDP.
    power_limit_w: float | None = field(default=None, metadata={
        "metavar": "W", "help": "the devices' power limit in watts (nvidia-smi -pl; default "
                                "the TDP): clocks drop to keep each phase's power within it"})

    # The host that issues the kernels (simulator.cost.host) and the step's costs outside its
    # graph.
    graphs: bool = field(default=False, metadata={
        "help": "CUDA graphs: the step's kernels replayed, one host call per micro-batch "
                "instead of one per kernel"})
    optimizer_impl: OptimizerImpl | None = field(default=None, metadata={
        "help": "the update's implementation: single (a for-loop over tensors), foreach, "
                "fused (fused=True, Apex FusedAdam); default as PyTorch: foreach on a GPU, "
                "single on a CPU"})
    # Host synchronisations inside the step (simulator.cost.host.syncs): the host waits
    # (torch.cuda.synchronize) until the device has run everything issued, so its issue time
    # of what follows is exposed. Both off by default, as in DeepSpeed (its activation
    # checkpointing's synchronize_checkpoint_boundary and its wall_clock_breakdown default to
    # false: deepspeed/runtime/activation_checkpointing/config.py, runtime/constants.py).
    sync_each_layer: bool = field(default=False, metadata={
        "help": "a device synchronisation at each checkpointed layer's forward and backward "
                "boundaries (DeepSpeed's synchronize_checkpoint_boundary, GPT-NeoX "
                "synchronize-each-layer); needs recompute = full"})
    sync_each_pass: bool = field(default=False, metadata={
        "help": "a device synchronisation as each micro-batch's forward, backward and the "
                "optimizer step start (timers that synchronise: DeepSpeed's "
                "wall_clock_breakdown before v0.6.4, its throughput timer)"})
    # CUDA_LAUNCH_BLOCKING=1 (simulator.cost.host.blocking): every kernel launch returns only
    # when its kernel has finished, so the host's cost per op and the device's time add up op
    # by op. Off by default, as CUDA's is (a debugging switch); BLOOM-176B trained with it.
    launch_blocking: bool = field(default=False, metadata={
        "help": "CUDA_LAUNCH_BLOCKING=1: each kernel launch (NCCL's too) waits for its kernel "
                "to finish, so the host's cost per op adds to the device's time instead of "
                "hiding behind it (NVIDIA GPUs; not with --graphs)"})
    step_overhead_ms: float = field(default=0.0, metadata={
        "metavar": "MS", "help": "milliseconds per step outside the step's graph (data "
                                 "loading, logging, the loss's .item(), LR scheduler)"})
    # Identical devices run at different speeds and a synchronous step waits for the slowest
    # of them (simulator.schedule.variability): c, the coefficient of variation of the
    # devices' speed; None (the default): the spread measured on V100 GEMMs (RANK_VARIABILITY)
    # on a GPU, 0 on other devices (no measured per-chip spread); a number applies to any device.
    rank_variability: float | None = field(default=None, metadata={
        "metavar": "C", "help": "the devices' speed varies with coefficient of variation C "
                                f"(0 to 0.5; default {RANK_VARIABILITY:g} on GPUs, 392 V100s' "
                                "SGEMM times, and 0 on other devices; 0 turns it off): the "
                                "step waits for the slowest of the job's devices, "
                                "1 + C E[max of N normals] times the median's"})
    # The whole run's losses outside its steps (simulator.report.goodput): checkpoint writes,
    # evaluations, failures. They change neither the step nor its memory, only a run's totals
    # (--tokens / --steps); all off by default.
    checkpoint_every: int = field(default=0, metadata={
        "metavar": "STEPS", "help": "run totals: a synchronous checkpoint (weights and "
                                    "optimizer states) every STEPS steps (0: none)"})
    storage_gb_s: float = field(default=0.0, metadata={
        "metavar": "GB_S", "help": "run totals: checkpoint storage's aggregate write "
                                   "bandwidth in GB/s (0: 0.122 GB/s per device, Llama 3's "
                                   "2 TB/s for 16,384 GPUs)"})
    eval_every: int = field(default=0, metadata={
        "metavar": "STEPS", "help": "run totals: an evaluation every STEPS steps (0: none)"})
    eval_batches: int = field(default=0, metadata={
        "metavar": "N", "help": "run totals: forward-only global batches per evaluation "
                                "(GPT-NeoX eval-iters)"})
    failure_rate: float = field(default=0.0, metadata={
        "metavar": "PER_DEVICE_HOUR", "help": "run totals: job-stopping failures per "
                                              "device-hour (Llama 3: 1.97e-5; 0: none)"})
    restart_s: float = field(default=0.0, metadata={
        "metavar": "S", "help": "run totals: seconds from a failure to training again "
                                "(detection, rescheduling, start-up, checkpoint load)"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "attention", _enum(Attention, self.attention, "attention"))
        if self.optimizer_impl is not None:
            object.__setattr__(self, "optimizer_impl",
                               _enum(OptimizerImpl, self.optimizer_impl, "optimizer_impl"))
        object.__setattr__(self, "step_overhead_ms",
                           _milliseconds(self.step_overhead_ms, "step_overhead_ms"))
        if self.rank_variability is not None:
            object.__setattr__(self, "rank_variability", bounded(
                _number(self.rank_variability, float), "rank_variability", 0.0, 0.5))
        self._check_run()
        object.__setattr__(self, "attention_kernel",
                           _enum(AttentionKernel, self.attention_kernel, "attention_kernel"))
        object.__setattr__(self, "fusion", _enum(Fusion, self.fusion, "fusion"))
        object.__setattr__(self, "rotary", _enum(Rotary, self.rotary, "rotary"))
        object.__setattr__(self, "loss_kernels",
                           _enum(LossKernels, self.loss_kernels, "loss_kernels"))
        object.__setattr__(self, "bias_add", _enum(BiasAdd, self.bias_add, "bias_add"))
        if self.projections is not None:   # None: the model's own (simulate resolves it)
            object.__setattr__(self, "projections",
                               _enum(Projections, self.projections, "projections"))
        object.__setattr__(self, "fp8_modules",
                           _enum(Fp8Modules, self.fp8_modules, "fp8_modules"))
        object.__setattr__(self, "fp8_recipe", _enum(Fp8Recipe, self.fp8_recipe, "fp8_recipe"))
        object.__setattr__(self, "attention_layout",
                           _enum(AttentionLayout, self.attention_layout, "attention_layout"))
        object.__setattr__(self, "precision", _enum(Precision, self.precision, "precision"))
        object.__setattr__(self, "recompute", _enum(Recompute, self.recompute, "recompute"))
        object.__setattr__(self, "optimizer", _enum(Optimizer, self.optimizer, "optimizer"))
        impls = OPTIMIZER_IMPLS.get(self.optimizer)
        if self.optimizer_impl is not None and impls is not None \
                and self.optimizer_impl not in impls:
            ran = ("runs no update" if not impls else "runs as "
                   + " or ".join(impl.value for impl in impls))
            raise PlanError(f"optimizer_impl = {self.optimizer_impl.value} does not exist for "
                            f"optimizer = {self.optimizer.value}, which {ran}; drop "
                            "--optimizer-impl" + (f" or pick {impls[-1].value}" if impls else ""))
        for name in ("grad_clip", "fp32_grads", "graphs", "channels_last", "sync_each_layer",
                     "sync_each_pass", "launch_blocking", "conv_norm_fusion", "fp8_swiglu_input",
                     "norm_act_fusion", "fp8_transpose_cache", "fp8_params"):
            if not isinstance(getattr(self, name), bool):
                raise PlanError(f"{name} = {getattr(self, name)!r} must be true or false")
        if self.conv_norm_fusion and not self.channels_last:
            raise PlanError("conv_norm_fusion = true needs channels_last = true: cuDNN's "
                            "fused batch-norm convolutions are NHWC only (add --channels-last)")
        if self.conv_norm_fusion and self.precision is not Precision.FP16:
            # fp16 only: cuDNN's samples of these fused graphs all run half-precision
            # inputs and outputs (simulator.training.convnorm's docstring); no bf16 source
            raise PlanError(f"conv_norm_fusion = true needs precision = fp16, not "
                            f"{self.precision.value}: cuDNN's fused batch-norm convolutions "
                            "run fp16 (--precision fp16)")
        if self.norm_act_fusion and not (self.channels_last
                                         and self.precision is Precision.FP16):
            # the NHWC kernels (apex/contrib/csrc/groupbn/nhwc_batch_norm_kernel.h, MXNet's
            # nhwc_batch_norm) hold half-precision NHWC tensors: StorageType uint16_t
            raise PlanError(f"norm_act_fusion = true needs channels_last = true and precision "
                            f"= fp16, not {str(self.channels_last).lower()} and "
                            f"{self.precision.value}: the "
                            "fused batch-norm kernels are NHWC fp16 (--channels-last "
                            "--precision fp16)")
        if self.grad_clip and self.optimizer is Optimizer.NONE:
            raise PlanError("grad_clip = true clips the gradients an update reads: optimizer = "
                            "none runs no update; drop --grad-clip or pick an optimizer")
        if self.sync_each_layer and self.recompute is not Recompute.FULL:
            raise PlanError(f"sync_each_layer = true synchronises at checkpointed layers: it "
                            f"needs recompute = full, not {self.recompute.value} (--recompute "
                            "full, or drop --sync-each-layer)")
        if self.graphs and (self.sync_each_layer or self.sync_each_pass):
            raise PlanError("graphs = true cannot capture a device synchronisation: drop "
                            "--sync-each-layer / --sync-each-pass or --graphs")
        if self.graphs and self.launch_blocking:
            # hwsim prices launch blocking per kernel launch; a graph's replay is one launch of
            # all its kernels, which it does not model
            raise PlanError("graphs = true with launch_blocking = true is not modelled: launch "
                            "blocking is priced per kernel launch, a CUDA graph replays its "
                            "kernels in one; drop --graphs or --launch-blocking")
        positive(self.micro_batch, "micro_batch", maximum=MAX_BATCH)
        gb = self.global_batch
        if gb is not None:
            positive(gb, "global_batch", maximum=MAX_BATCH)
        if gb is not None and gb % self.micro_batch:
            raise PlanError(f"global_batch = {gb!r} must be a positive multiple of "
                            f"micro_batch = {self.micro_batch}")

        self._check_finetune()
        object.__setattr__(self, "power_limit_w", _watts(self.power_limit_w, "power_limit_w"))

    def _check_run(self) -> None:
        """The run-level fields (simulator.report.goodput): counts of steps and batches from 0
        to MAX_BATCH, a bandwidth to 1e6 GB/s, a failure rate to 1 per device-hour, a restart
        to a year; numbers or their text (a sweep's grid)."""
        for name in ("checkpoint_every", "eval_every", "eval_batches"):
            object.__setattr__(self, name, bounded(_number(getattr(self, name), int), name,
                                                   0, MAX_BATCH, integer=True))
        for name, high in (("storage_gb_s", 1e6), ("failure_rate", 1.0),
                           ("restart_s", 3.2e7)):
            object.__setattr__(self, name, bounded(_number(getattr(self, name), float), name,
                                                   0.0, high))
        if self.eval_every and not self.eval_batches:
            raise PlanError(f"eval_every = {self.eval_every} needs eval_batches, the batches "
                            "each evaluation runs (--eval-batches N)")
        if self.eval_batches and not self.eval_every:
            raise PlanError(f"eval_batches = {self.eval_batches} needs eval_every, the steps "
                            "between evaluations (--eval-every STEPS)")

    def _check_finetune(self) -> None:
        object.__setattr__(self, "finetune", _enum(Finetune, self.finetune, "finetune"))
        if self.frozen_weights is not None:
            object.__setattr__(self, "frozen_weights",
                               _enum(Quantization, self.frozen_weights, "frozen_weights"))
        lora = self.finetune is Finetune.LORA
        for name in ("lora_rank", "lora_targets", "frozen_weights"):
            value = getattr(self, name)
            if value is not None and not lora:   # an enum as the flag's value: 'nf4'
                shown = value.value if isinstance(value, Enum) else value
                raise PlanError(f"{name} = {shown!r} needs finetune = lora (--finetune lora)")
        if self.frozen_weights is Quantization.FP8 and self.precision is not Precision.FP8:
            raise PlanError(f"frozen_weights = 'fp8' needs precision = fp8 (--precision fp8): "
                            f"the fp8 weights are read by fp8 GEMMs (precision is "
                            f"{self.precision.value})")
        if self.fp8_recipe is Fp8Recipe.TORCHAO_TENSORWISE:
            # Transformer Engine's and Megatron-core's options: torchao's Float8Linear casts the
            # weight at every forward call and stores no fp8 SwiGLU input (training.fp8)
            for name, given, flag in (
                    ("frozen_weights = 'fp8'", self.frozen_weights is Quantization.FP8,
                     "--frozen-weights fp8"),
                    ("fp8_swiglu_input = true", self.fp8_swiglu_input, "--fp8-swiglu-input"),
                    ("fp8_params = true", self.fp8_params, "--fp8-params")):
                if given:
                    raise PlanError(f"{name} is Transformer Engine's / Megatron-core's, not "
                                    f"torchao's (fp8_recipe = torchao-tensorwise): drop {flag} "
                                    "or use fp8_recipe delayed or current")
        self._check_fp8_params(lora)
        if not self.fp8_transpose_cache and self.frozen_weights is not Quantization.FP8:
            # 16-bit weights without the cache are cast and transposed at every forward call
            # (simulator.training.fp8: fp8_modules = linear), not this flag's kernel
            raise PlanError("fp8_transpose_cache = false needs frozen_weights = 'fp8' "
                            "(--finetune lora --frozen-weights fp8): it transposes fp8 frozen "
                            "weights; drop --no-fp8-transpose-cache")
        if self.lora_rank is not None and (isinstance(self.lora_rank, bool) or not isinstance(
                self.lora_rank, int) or self.lora_rank <= 0):
            raise PlanError(f"lora_rank = {self.lora_rank!r} must be a positive integer")
        if self.lora_targets is not None:
            parts = str(self.lora_targets).split(",")
            targets = [_enum(LoraTarget, part.strip(), "lora_targets") for part in parts]
            object.__setattr__(self, "lora_targets",
                               ",".join(t.value for t in LoraTarget if t in targets))

    def _check_fp8_params(self, lora: bool) -> None:
        """``fp8_params``: TE's fp8 primary weights, of a full training's fp8 linears as
        Megatron-core and NeMo build them (the data-parallel side, ZeRO 1-2, is checked with
        the parallel plan: ``simulator.parallel.rank.micro_batches``)."""
        if not self.fp8_params:
            return
        if self.precision is not Precision.FP8:
            raise PlanError(f"fp8_params = true needs precision = fp8 (--precision fp8): the "
                            f"fp8 weights are read by fp8 GEMMs (precision is "
                            f"{self.precision.value})")
        if lora:   # the frozen base is what fp8_model_init holds in fp8 there
            raise PlanError("fp8_params = true keeps trained weights in fp8; a LoRA base is "
                            "frozen: use --frozen-weights fp8 (the same fp8_model_init) and "
                            "drop --fp8-params")
        if self.fp8_modules is not Fp8Modules.FUSED:
            # te.Linear without is_first_microbatch (llm-foundry) would transpose the fp8
            # weight at every call: not modelled
            raise PlanError("fp8_params = true is modelled for Megatron-core's TE modules "
                            "(fp8_modules = fused, the weight transposed once a step), not "
                            "fp8_modules = linear: drop --fp8-params")

    @property
    def rank(self) -> int:
        """LoRA's rank (``lora_rank``, or PEFT's default)."""
        return self.lora_rank or DEFAULT_LORA_RANK

    @property
    def targets(self) -> frozenset[LoraTarget]:
        """The linears LoRA adapts (``lora_targets``, qkv by default)."""
        return frozenset(LoraTarget(t) for t in (self.lora_targets or "qkv").split(","))

    @property
    def batch(self) -> int:
        return self.micro_batch if self.global_batch is None else self.global_batch

    @property
    def micro_batches(self) -> int:
        return self.batch // self.micro_batch

    @property
    def formats(self) -> Formats:
        formats = FORMATS[self.precision]
        return replace(formats, gradient=DType.FP32) if self.fp32_grads else formats

    def state_bytes_per_param(self) -> dict[str, int]:
        """Bytes per parameter of weights, gradients and optimizer states.

        Mixed-precision Adam: 2 + 2 + (4 master + 4 + 4) = 16 (ZeRO paper, sec. 3.1).
        """
        f = self.formats
        states = OPTIMIZER_STATE_BYTES[self.optimizer] + (4 if f.master else 0)
        return {"weights": f.weight.bytes, "gradients": f.gradient.bytes,
                "optimizer_states": states}


def _watts(value, field_name: str) -> float | None:
    """A power in watts (a number or its text, from a flag or a sweep's grid) as a float;
    PlanError unless finite and in (0, 1e6]."""
    if value is None:
        return None
    try:
        watts = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        watts = math.nan
    if not 0 < watts <= 1e6:
        raise PlanError(f"{field_name} = {value!r} must be a power in watts, above 0 and at "
                        "most 1e6 (e.g. 300)")
    return watts


def _number(value, kind: type):
    """A number's text (a flag's or a sweep grid's) as ``kind``; anything else as it is (for
    ``bounded`` to refuse)."""
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            return value
    return value


def _milliseconds(value, field_name: str) -> float:
    """A duration in milliseconds (a number or its text) as a float; PlanError unless finite
    and in [0, 1e6]."""
    try:
        ms = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        ms = float("nan")
    if not 0 <= ms <= 1e6:
        raise PlanError(f"{field_name} = {value!r} must be a duration in milliseconds, 0 to "
                        "1e6 (e.g. 5)")
    return ms


def _enum(cls, value, field_name: str):
    if isinstance(value, cls):
        return value
    try:
        return cls(str(value).lower())
    except ValueError:
        choices = ", ".join(m.value for m in cls)
        raise PlanError(f"{field_name} = {value!r} is not known: choose one of {choices}") from None
