"""Transformers: decoder LMs (GPT, LLaMA), encoders (BERT) and vision transformers (ViT).

One parametric builder. A layer is built the way Megatron-LM runs it, so that its saved
activations are those of Korthikanti et al. 2022, sec. 4.1 (34sbh + 5as^2b bytes at 16 bits):
the attention scale and causal mask are fused into the softmax, Q, K and V are separate
projections of the same normed input, and dropout keeps a 1-byte mask.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from simulator.errors import WorkloadError, is_fraction
from simulator.graph.lower import KV_CACHE
from simulator.graph.opgraph import OpGraph
from simulator.graph.op import Block, DType, Role
from workloads.base import TransformerShape
from workloads.layers import Builder
from workloads.moe import MLA, MoE, mla_attention, mla_params, moe_mlp, moe_mlp_params


class Ffn(str, Enum):
    GELU = "gelu"
    SWIGLU = "swiglu"    # silu(gate) * up (LLaMA)
    GEGLU = "geglu"      # gelu(gate) * up (Gemma): SwiGLU's projections, a GeLU gate
    RELU = "relu"        # OPT

    @property
    def gated(self) -> bool:
        return self in (Ffn.SWIGLU, Ffn.GEGLU)


class Norm(str, Enum):
    LAYERNORM = "layernorm"
    RMSNORM = "rmsnorm"


class Residual(str, Enum):
    SEQUENTIAL = "sequential"  # x + attn(norm x), then + mlp(norm .) (GPT, LLaMA)
    PARALLEL = "parallel"      # x + attn(norm1 x) + mlp(norm2 x) (GPT-NeoX, Falcon-40B)
    SHARED_NORM = "shared-norm"  # x + attn(norm x) + mlp(norm x): one norm (GPT-J, Falcon-7B,
    #                              Phi)


class Style(str, Enum):
    DECODER = "decoder"  # causal LM, pre-norm (GPT, LLaMA)
    ENCODER = "encoder"  # masked LM, post-norm (BERT)
    VISION = "vision"    # ViT: patch embedding, class token, pre-norm, classifier head


class Head(str, Enum):
    """What the model's last layer feeds (``TransformerConfig.head``)."""

    LM = "lm"      # the style's own: the LM head (decoder), the MLM head (encoder), the
    #                classifier on the class token (vision)
    # extractive question answering: one linear hidden -> 2 at every position (start and end
    # logits), a cross-entropy over the sequence's positions for each (Devlin et al. 2019,
    # sec. 4.2; NVIDIA DeepLearningExamples PyTorch/LanguageModeling/BERT modeling.py
    # BertForQuestionAnswering and run_squad.py, the run Lambda's BERT SQuAD benchmark times)
    SPAN = "span"
    # sequence classification (an encoder fine-tuned on GLUE and the like): the first token's
    # final hidden state through a dense h -> h, tanh and dropout, then a linear h -> labels, a
    # cross-entropy over ``labels`` classes a sample (transformers' BertPooler and
    # BertForSequenceClassification.classifier; RobertaClassificationHead: the same weights,
    # one more dropout over batch x hidden, not priced)
    CLASSIFY = "classify"


#: The largest figure of each field: far beyond any real model (the largest published: 126
#: layers, hidden 25,600 and ffn 102,400 (Megatron-LM's 1T), vocab 262,144 (Gemma 3), a 10M-token
#: context (Llama 4 Scout)), small enough that a step's counts stay exact in int64.
LIMITS = {"layers": 10_000, "hidden": 2**20, "heads": 2**16, "kv_heads": 2**16,
          "ffn_hidden": 2**22, "vocab": 2**24, "seq_len": 2**24, "head_size": 2**16,
          "positions": 2**24}


@dataclass(frozen=True)
class TransformerConfig:
    name: str
    layers: int
    hidden: int
    heads: int
    vocab: int
    seq_len: int
    kv_heads: int | None = None       # None: multi-head; 1: multi-query; else grouped-query
    ffn_hidden: int | None = None     # None: 4 x hidden
    ffn: Ffn = Ffn.GELU
    norm: Norm = Norm.LAYERNORM
    tied_embeddings: bool = True
    learned_positions: bool = True    # False: rotary (no parameters)
    # the fraction of each head's dimensions the rotary embedding rotates, the rest passed
    # through (GPT-NeoX's rotary_pct: 0.25 in Pythia; Phi's partial_rotary_factor)
    rotary_pct: float = 1.0
    bias: bool = True                 # biases on the linear layers
    dropout: bool = True              # hidden dropout: embeddings, attention and MLP outputs
    # dropout on the attention probabilities (None: as ``dropout``). Hugging Face configs give
    # it apart (``attention_dropout``, ``attn_pdrop``): OPT's is 0.0 beside its dropout 0.1,
    # and at p = 0 ATen's dropout returns its input with no kernel (aten/src/ATen/native/
    # Dropout.cpp, ``_dropout_impl``), so it is priced only when above 0.
    attention_dropout: bool | None = None
    style: Style = Style.DECODER
    type_vocab: int = 0               # BERT token-type embeddings
    image_size: int = 224             # ViT only
    patch: int = 16                   # ViT only
    channels: int = 3                 # ViT only
    # Hugging Face architectures (workloads.hf_config) beyond the presets' (None: as above)
    head_size: int | None = None      # None: hidden / heads (Gemma and PaLM: 256)
    qkv_bias: bool | None = None      # biases on q, k, v (None: as bias; Qwen2: True)
    mlp_bias: bool | None = None      # biases on the MLP's linears (None: as bias)
    head_bias: bool = False           # a bias on the LM head (Phi)
    positions: int | None = None      # rows of the learned position table (None: seq_len;
    #                                   OPT: max_position_embeddings + 2)
    residual: Residual = Residual.SEQUENTIAL
    # Mixture of experts, multi-head latent attention and multi-token prediction
    # (workloads.moe; DeepSeek-V3, arXiv:2412.19437, sec. 2.2: ``mtp`` extra modules, each an
    # RMSNorm of the hidden state and of the next token's embedding, a linear 2h -> h and one
    # transformer layer, sharing the embedding and the output head, with its own loss)
    moe: MoE | None = None
    mla: MLA | None = None
    mtp: int = 0
    # Hugging Face's eager modules (attn_implementation="eager"), as NeuSight's per-op traces of
    # GPT-2, BERT and OPT show them (sitar-lab/NeuSight 6945927, scripts/asplos/label/<GPU>/
    # <model>-train-<seq>-<batch>.csv): the attention's scale and its mask run as two
    # elementwise kernels of their own over the s x s scores before the softmax (GPT-2
    # ``truediv`` and ``where``, BERT ``truediv`` and ``add``, OPT ``add`` and ``max``), where
    # Megatron fuses both into its softmax kernel; and, with ``gelu_kernels`` 8, GPT-2's
    # ``gelu_new`` (NewGELUActivation: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))) runs
    # as its eight elementwise kernels (``mul``, ``pow``, ``mul``, ``add``, ``mul``, ``tanh``,
    # ``add``, ``mul``). Off by default: the presets and configs price the fused kernels.
    hf_eager: bool = False
    gelu_kernels: int = 1
    # The causal mask as its own elementwise kernel over the s x s scores before the softmax,
    # the scale folded into the score GEMM: Megatron-LM's FusedScaleMaskSoftmax outside 16 bits
    # (megatron/model/fused_softmax.py at NVIDIA/Megatron-LM core_r0.5.0: is_kernel_available
    # needs fp16 or bf16 input, else forward_torch_softmax runs mask_func, a masked_fill_, then
    # torch.nn.Softmax; CoreAttention's baddbmm takes alpha = 1 / sqrt(head size)). Off by
    # default (the fused 16-bit kernel); hf_eager already has the mask's kernel.
    mask_kernel: bool = False
    # Hugging Face's eager modules, model by model (workloads.hf_config sets them from the
    # config's model_type; transformers 4.38.1, the version NeuSight pins; what each keeps is
    # measured with PyTorch in tests/data/hf_eager_memory.csv):
    # - ``mask_clamp`` (OPT's OPTAttention, with hf_eager): the queries scaled before the score
    #   GEMM (``q_proj(x) * scaling``: a kernel over the queries, not the scores), the mask
    #   added to the scores, then ``torch.max`` of them and the dtype's minimum, which keeps
    #   the masked scores (fp32, heads x s x s) for its backward; NeuSight's opt_13 traces list
    #   ``mul`` over (1, 2048, 2048), ``add`` and ``max`` over the scores.
    # - ``kv_cache_views`` (GPT-2's GPT2Attention, with hf_eager): with ``use_cache`` (the
    #   config's default, in training too) each layer returns its key and value (``present``)
    #   as views of c_attn's output, which the model's output holds until the caller drops it
    #   (NeuSight's harness: after the loss, before the backward), so the whole q, k, v output
    #   of every layer lives to the forward's end (OPT's present is its contiguous k and v,
    #   kept for the backward anyway).
    # - ``embedding_dropout`` False: no dropout on the embeddings (OPT's OPTDecoder), the
    #   layers' dropouts as ``dropout``.
    mask_clamp: bool = False
    kv_cache_views: bool = False
    embedding_dropout: bool = True
    # How the model's own code runs the projections reading one input: "fused" (q, k and v one
    # GEMM, and a gated MLP's gate and up one: Hugging Face's GPT-2 c_attn, GPT-NeoX's and
    # Falcon's query_key_value), "separate" (a GEMM each), None (not known: the plan's
    # default, separate). A plan that names ``projections`` overrides it
    # (``simulator.training.projections``; an imported config sets it, workloads.hf_config).
    projections: str | None = None
    # BERT's MLM head on the masked positions alone: the share of the sequence's positions it
    # runs on, gathered first (torch.index_select), as NVIDIA's MLPerf BERT does with
    # --dense_seq_output (training_results_v5.0 0fdc28f, Lenovo/benchmarks/bert/modeling.py,
    # BertPreTrainingHeads.forward). None: every position (Hugging Face's BertForPreTraining).
    # BERT masks 15 % of the tokens (Devlin et al. 2019, sec. 3.1; MLPerf's
    # create_pretraining_data.py: round(len x masked_lm_prob 0.15), at most 76 a sample), so
    # 0.15 is the share at most (padding is never masked). Encoder style only.
    mlm_share: float | None = None
    # Packed sequences attending within each sample only: the mean over the packed rows of
    # sum(l_i^2) / seq_len^2, l_i the lengths of the samples packed into a row of seq_len
    # tokens (Krell et al. 2021, "Efficient Sequence Packing without Cross-contamination",
    # arXiv 2107.02027; NVIDIA's MLPerf BERT --pad_fmha --packed_samples: a varlen fused
    # attention kernel given each sample's bounds, cu_seqlens). The GEMMs, norms and the rest
    # still see seq_len real tokens a row; the attention core runs as 1 / packed_attention
    # equal samples of packed_attention x seq_len tokens a row (``packed_core``), which keeps
    # both the row's tokens and its score FLOPs (sum l_i^2), so a kernel fit prices it at the
    # efficiency of that one length, not at each l_i's (an approximation: the fixed cost per
    # query block is convex in the length). None (or 1): the whole row attends to itself.
    packed_attention: float | None = None
    # What the last layer feeds (``Head``): the style's own head, or ``span``, extractive
    # question answering's start and end logits (BERT fine-tuned on SQuAD), in place of it.
    head: Head = Head.LM
    labels: int = 2                   # head = "classify": the classes (HF num_labels)

    def __post_init__(self) -> None:
        for key in ("layers", "hidden", "heads", "vocab", "seq_len"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise WorkloadError(f"{self.name}: {key} = {value!r} must be a positive integer")
        for key in ("kv_heads", "ffn_hidden", "head_size", "positions"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise WorkloadError(f"{self.name}: {key} = {value!r} must be a positive integer")
        for key, limit in LIMITS.items():
            value = getattr(self, key, None)
            if value is not None and value > limit:
                raise WorkloadError(f"{self.name}: {key} = {value:,} is above {limit:,}, beyond "
                                    "any real model (LIMITS); check the figure")
        if not is_fraction(self.rotary_pct):
            raise WorkloadError(f"{self.name}: rotary_pct = {self.rotary_pct!r} must be a "
                                "fraction in (0, 1] (GPT-NeoX's rotary_pct; 1: whole heads)")
        if self.projections not in (None, "fused", "separate"):
            raise WorkloadError(f"{self.name}: projections = {self.projections!r} must be "
                                "'fused' or 'separate' (or left out: the plan's default)")
        if self.mlm_share is not None and (not is_fraction(self.mlm_share)
                                           or self.style is not Style.ENCODER):
            raise WorkloadError(f"{self.name}: mlm_share = {self.mlm_share!r} must be a fraction "
                                "in (0, 1] on an encoder (the share of positions the MLM head "
                                "runs on: 0.15 for BERT's masked tokens)")
        if not isinstance(self.head, Head):
            raise WorkloadError(f"{self.name}: head = {self.head!r}: choose "
                                + " | ".join(repr(h.value) for h in Head))
        if self.head is Head.SPAN and (self.style is Style.VISION or self.mlm_share is not None):
            raise WorkloadError(f"{self.name}: head = 'span' (question answering over the "
                                "sequence's positions) needs a text model without mlm_share")
        if self.head is Head.CLASSIFY and (self.style is not Style.ENCODER
                                           or self.mlm_share is not None):
            raise WorkloadError(f"{self.name}: head = 'classify' (the first token's pooled "
                                "state -> labels) needs style = 'encoder' without mlm_share")
        if isinstance(self.labels, bool) or not isinstance(self.labels, int) or \
                not 0 < self.labels <= 2**24:
            raise WorkloadError(f"{self.name}: labels = {self.labels!r} must be a positive "
                                "integer up to 16,777,216 (the classes of head = 'classify')")
        if self.packed_attention is not None and (not is_fraction(self.packed_attention)
                                                  or self.mla is not None):
            raise WorkloadError(f"{self.name}: packed_attention = {self.packed_attention!r} must "
                                "be a fraction in (0, 1], without [mla] (the mean of sum(l_i^2) "
                                "/ seq_len^2 over packed rows of samples of l_i tokens: 1 for "
                                "one sample a row, 1/k for k equal ones)")
        if self.head_size is None and self.hidden % self.heads:
            raise WorkloadError(f"{self.name}: heads = {self.heads} must divide hidden = "
                                f"{self.hidden} (head dimension = hidden / heads)")
        # a text model's tokens each take a row of the table (a ViT's sequence is its patches)
        if self.learned_positions and self.positions is not None and \
                self.style is not Style.VISION and self.seq_len > self.positions:
            raise WorkloadError(f"{self.name}: seq_len = {self.seq_len} is longer than its "
                                f"learned position table (positions = {self.positions})")
        if self.heads % self.n_kv_heads:
            raise WorkloadError(f"{self.name}: kv_heads = {self.n_kv_heads} must divide heads = "
                                f"{self.heads} (each KV head serves a group of query heads)")
        if self.moe is not None and self.moe.first_dense_layers > self.layers:
            raise WorkloadError(f"{self.name}: [moe] first_dense_layers = "
                                f"{self.moe.first_dense_layers} is more than layers = "
                                f"{self.layers}")
        if self.gelu_kernels not in (1, 8) or isinstance(self.gelu_kernels, bool):
            raise WorkloadError(f"{self.name}: gelu_kernels = {self.gelu_kernels!r} must be 1 (a "
                                "fused GELU) or 8 (Hugging Face's gelu_new in eager PyTorch)")
        if self.mtp not in (0, 1) or isinstance(self.mtp, bool):
            raise WorkloadError(f"{self.name}: mtp = {self.mtp!r} must be 0 or 1 (multi-token "
                                "prediction modules: DeepSeek-V3 trains one)")
        if (self.moe or self.mla or self.mtp) and self.style is not Style.DECODER:
            raise WorkloadError(f"{self.name}: [moe], [mla] and mtp describe decoder language "
                                "models only")

    # -- derived sizes ---------------------------------------------------------------------------
    @property
    def n_kv_heads(self) -> int:
        return self.heads if self.kv_heads is None else self.kv_heads

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads if self.head_size is None else self.head_size

    @property
    def q_dim(self) -> int:
        """Query (and attention output) features: heads x head dimension."""
        return self.heads * self.head_dim

    def _bias(self, override: bool | None) -> bool:
        return self.bias if override is None else override

    @property
    def drops_attention(self) -> bool:
        """Whether a dropout runs on the attention probabilities (``attention_dropout``,
        else as the hidden ``dropout``)."""
        return self.dropout if self.attention_dropout is None else self.attention_dropout

    @property
    def ffn_dim(self) -> int:
        return 4 * self.hidden if self.ffn_hidden is None else self.ffn_hidden

    @property
    def tokens_per_sample(self) -> int | None:
        return None if self.style is Style.VISION else self.seq_len

    @property
    def sequence(self) -> int:
        """Tokens the layers see per sample (ViT: patches + class token)."""
        if self.style is Style.VISION:
            return (self.image_size // self.patch) ** 2 + 1
        return self.seq_len

    @property
    def transformer(self) -> TransformerShape:
        """What splitting the layers over tensor- and pipeline-parallel ranks needs."""
        moe = self.moe
        head_dim = self.mla.qk_head_dim if self.mla is not None else self.head_dim
        return TransformerShape(self.layers, self.hidden, self.heads, self.n_kv_heads,
                                self.sequence, self.ffn_dim, head_dim,
                                moe.experts if moe else 0,
                                moe.ffn(self.ffn_dim) if moe else 0)

    def with_layers(self, layers: int) -> "TransformerConfig":
        """The model of this one's first ``layers`` layers (a pipeline stage's: every layer
        is alike; a mixture of experts keeps its dense first layers, at most ``layers``)."""
        moe = self.moe
        if moe is not None and moe.first_dense_layers > layers:
            moe = replace(moe, first_dense_layers=layers)
        return replace(self, layers=layers, moe=moe)

    # -- parameters (closed form) -------------------------------------------------------------------
    def layer_params(self, layer: int = 0, active: bool = False) -> int:
        """Parameters of layer ``layer`` (``active``: of a mixture of experts, those one token
        uses: top_k routed experts)."""
        if self.moe is None and self.mla is None:
            return self._dense_layer_params()
        attn = mla_params(self) if self.mla is not None else self._attention_params()
        if self.moe is not None and self.moe.is_moe(layer):
            mlp = moe_mlp_params(self, active)
        else:
            mlp = self._mlp_params()
        return attn + mlp + 2 * self._norm_params()

    def _attention_params(self) -> int:
        h, q, kv = self.hidden, self.q_dim, self.n_kv_heads * self.head_dim
        return 2 * h * q + 2 * h * kv + (q + 2 * kv if self._bias(self.qkv_bias) else 0) \
            + (h if self.bias else 0)

    def _mlp_params(self) -> int:
        h, n_ffn_in = self.hidden, 2 if self.ffn.gated else 1
        return (n_ffn_in + 1) * h * self.ffn_dim \
            + ((n_ffn_in * self.ffn_dim + h) if self._bias(self.mlp_bias) else 0)

    def _dense_layer_params(self) -> int:
        h, q, kv = self.hidden, self.q_dim, self.n_kv_heads * self.head_dim
        attn = 2 * h * q + 2 * h * kv + (q + 2 * kv if self._bias(self.qkv_bias) else 0) \
            + (h if self.bias else 0)
        n_ffn_in = 2 if self.ffn.gated else 1
        mlp = (n_ffn_in + 1) * h * self.ffn_dim \
            + ((n_ffn_in * self.ffn_dim + h) if self._bias(self.mlp_bias) else 0)
        norms = 1 if self.residual is Residual.SHARED_NORM else 2
        return attn + mlp + norms * self._norm_params()

    def _norm_params(self) -> int:
        return self.hidden * (2 if self.norm is Norm.LAYERNORM else 1)

    def embedding_params(self) -> int:
        h = self.hidden
        if self.style is Style.VISION:
            patch = self.channels * self.patch ** 2 * h + h
            return patch + h + self.sequence * h  # + class token + positions
        table = self.seq_len if self.positions is None else self.positions
        positions = table * h if self.learned_positions else 0
        extra = self.type_vocab * h + (self._norm_params() if self.style is Style.ENCODER else 0)
        return self.vocab * h + positions + extra

    def head_params(self) -> int:
        h = self.hidden
        if self.style is Style.VISION:
            return self._norm_params() + h * self.vocab + self.vocab
        if self.head is Head.SPAN:   # qa_outputs: hidden -> start, end (a pre-norm decoder's
            #                          final norm before it)
            return 2 * h + 2 + (self._norm_params() if self.style is Style.DECODER else 0)
        if self.head is Head.CLASSIFY:   # pooler dense h -> h, classifier h -> labels
            return h * h + h + h * self.labels + self.labels
        if self.style is Style.ENCODER:  # MLM transform (dense, gelu, norm) + tied decoder + bias
            return h * h + h + self._norm_params() + self.vocab
        untied = 0 if self.tied_embeddings else self.vocab * h
        return self._norm_params() + untied + (self.vocab if self.head_bias else 0)

    def num_params(self) -> int:
        return self._params(active=False)

    def active_params(self) -> int:
        """Parameters one token uses (a mixture of experts: top_k routed experts per layer;
        a dense model: all of them), the input embedding included."""
        return self._params(active=True)

    def _params(self, active: bool) -> int:
        if self.moe is None and self.mla is None:
            layers = self.layers * self.layer_params()
        else:
            dense = self.moe.first_dense_layers if self.moe is not None else self.layers
            layers = dense * self.layer_params(0, active) + (self.layers - dense) * \
                self.layer_params(self.layers - 1, active)
        return self.embedding_params() + layers + self.head_params() + self.mtp_params(active)

    def mtp_params(self, active: bool = False) -> int:
        """Multi-token prediction modules (DeepSeek-V3, sec. 2.2): per module three RMSNorms
        (of the hidden state, of the embedding, and before the shared head: the released
        checkpoint's enorm, hnorm and shared_head.norm), the projection 2h -> h and one layer
        like the last (the embedding and head shared)."""
        h = self.hidden
        return self.mtp * (3 * self._norm_params() + 2 * h * h
                           + self.layer_params(self.layers, active))

    # -- graph -------------------------------------------------------------------------------------
    def forward_graph(self, batch: int, dtype: DType = DType.FP32,
                      param_dtype: DType | None = None) -> OpGraph:
        if batch <= 0:
            raise WorkloadError(f"{self.name}: batch = {batch} must be a positive integer")
        largest = 2 * batch * self.heads * self.sequence ** 2 * self.head_dim  # QK^T FLOPs
        if largest >= 2 ** 62 or batch * self.sequence * max(self.vocab, self.ffn_dim) >= 2 ** 56:
            raise WorkloadError(f"{self.name}: seq_len = {self.seq_len} with batch {batch} "
                                "is too large to count exactly (64-bit): use a smaller seq_len")
        graph = OpGraph(f"{self.name} forward (batch {batch})")
        b = Builder(graph, dtype=dtype, param_dtype=param_dtype or dtype)
        x = _embed(self, b, batch)
        for layer in range(self.layers):
            b.layer = layer
            x = _layer(self, b, x, batch)
        b.layer, b.block = -1, Block.HEAD
        _head(self, b, x, batch)
        if self.mtp:
            _mtp(self, b, x, batch)
        return graph


def _embed(c: TransformerConfig, b: Builder, batch: int) -> str:
    b.block = Block.HEAD
    s, h = c.sequence, c.hidden
    rows = batch * s
    if c.style is Style.VISION:
        side = c.image_size
        x, _, _ = b.conv2d("patch_embed", None, batch, c.channels, side, side, h, c.patch,
                           stride=c.patch, bias=True)
        x = b.copy("cls_concat", x, rows * h)  # prepend the class token: a materialised concat
        x = b.elementwise("add", (x,), rows * h, base="pos_add",
                          params=h + rows // batch * h,  # class token + position table
                          param_tensors=2)
        return b.dropout(x, rows * h, base="emb_dropout") if c.dropout else x
    x = b.embedding("tok_embed", rows, c.vocab, h, role=Role.VOCAB_EMBEDDING)
    if c.learned_positions:
        table = s if c.positions is None else c.positions
        x = b.add(x, b.embedding("pos_embed", rows, table, h, role=Role.POSITION_EMBEDDING),
                  rows * h, base="pos_add")
    if c.type_vocab:
        x = b.add(x, b.embedding("type_embed", rows, c.type_vocab, h), rows * h, base="type_add")
    if c.style is Style.ENCODER:
        x = b.norm(c.norm.value, x, rows, h, bias=c.norm is Norm.LAYERNORM)
    return b.dropout(x, rows * h, base="emb_dropout") if c.dropout and c.embedding_dropout else x


def _layer(c: TransformerConfig, b: Builder, x: str, batch: int) -> str:
    rows, h = batch * c.sequence, c.hidden
    if c.style is Style.ENCODER:  # post-norm: x = norm(x + f(x))
        x = _residual(b, x, _attention(c, b, x, batch), rows * h, Block.ATTN)
        x = _norm(c, b, x, rows)
        x = _residual(b, x, _mlp(c, b, x, rows), rows * h, Block.MLP)
        return _norm(c, b, x, rows)
    if c.residual is Residual.SEQUENTIAL:
        x = _residual(b, x, _attention(c, b, _norm(c, b, x, rows), batch), rows * h, Block.ATTN)
        return _residual(b, x, _mlp(c, b, _norm(c, b, x, rows), rows), rows * h, Block.MLP)
    normed = _norm(c, b, x, rows)  # attention and MLP read the same input, added at the end
    attn = _attention(c, b, normed, batch)
    mlp = _mlp(c, b, normed if c.residual is Residual.SHARED_NORM else _norm(c, b, x, rows),
               rows)
    # attn + mlp first, then the residual: under tensor parallelism the two row-parallel
    # partial sums are added before one all-reduce (GPT-NeoX's gpt_j_residual: "we can do a
    # single allreduce after we add mlp / attn outputs", EleutherAI/gpt-neox 53112bf
    # megatron/model/transformer.py ParallelTransformerLayer.forward); the tag tells
    # simulator.parallel.tensor
    b.block = Block.ATTN
    both = b.elementwise("add", (attn, mlp), rows * h, base="parallel_sum",
                         extra=(("partial_sum", 1),))
    return _residual(b, x, both, rows * h, Block.MLP)


def _norm(c: TransformerConfig, b: Builder, x: str, rows: int) -> str:
    b.block = Block.NORM
    return b.norm(c.norm.value, x, rows, c.hidden, bias=c.norm is Norm.LAYERNORM)


def _residual(b: Builder, x: str, y: str, numel: int, block: Block) -> str:
    b.block = block
    return b.add(x, y, numel)


def _attention(c: TransformerConfig, b: Builder, x: str, batch: int) -> str:
    if c.mla is not None:
        return mla_attention(c, b, x, batch)
    s, h, d, qd = c.sequence, c.hidden, c.head_dim, c.q_dim
    rows, kv = batch * s, c.n_kv_heads * d
    b.block = Block.ATTN
    qkv_bias = c._bias(c.qkv_bias)
    # GPT-2's present: c_attn's one output (q, k and v), held to the forward's end
    held = ((KV_CACHE, 1),) if c.hf_eager and c.kv_cache_views else ()
    q = b.linear("q_proj", x, rows, h, qd, qkv_bias, role=Role.COLUMN, extra=held)
    k = b.linear("k_proj", x, rows, h, kv, qkv_bias, role=Role.COLUMN, extra=held)
    v = b.linear("v_proj", x, rows, h, kv, qkv_bias, role=Role.COLUMN, extra=held)
    clamp = c.hf_eager and c.mask_clamp   # OPT: the queries scaled, the masked scores clamped
    if clamp:
        q = b.elementwise("scale", (q,), rows * qd, base="q_scale")
    if not c.learned_positions and c.style is Style.DECODER:  # rotary embedding of q and k
        # one op each (a fused kernel); tagged with the rotated and the head's dimensions for
        # simulator.training.qkv, which prices PyTorch's eager kernels in their place
        rotated = max(1, round(d * c.rotary_pct))
        tag = (("rotary_dims", rotated), ("head_dim", d))
        q = b.elementwise("mul", (q,), rows * qd, base="rope_q", extra=tag)
        k = b.elementwise("mul", (k,), rows * kv, base="rope_k", extra=tag)
    b.block = Block.ATTN_CORE
    heads, s = packed_core(batch * c.heads, s, c.packed_attention)
    causal = (("causal", 1),) if c.style is Style.DECODER else ()  # fused kernels skip blocks
    scores = b.matmul("scores", q, k, heads, s, s, d, extra=causal)
    if c.hf_eager and not clamp:   # the scale and the mask as their own kernels (hf_eager)
        scores = b.elementwise("scale", (scores,), heads * s * s, base="attn_scale")
    if c.hf_eager or c.mask_kernel:   # the mask as its own kernel (hf_eager, mask_kernel)
        scores = b.elementwise("add", (scores,), heads * s * s, base="attn_mask")
    if clamp:   # torch.max(scores, finfo.min): its backward reads the masked scores
        scores = b.elementwise("mul", (scores,), heads * s * s, saves=("inputs",),
                               base="attn_clamp")
    probs = b.softmax(scores, heads * s, s)  # scale and causal mask fused, as in Megatron
    if c.drops_attention:
        probs = b.dropout(probs, heads * s * s, base="attn_dropout")
    ctx = b.matmul("context", probs, v, heads, s, d, s)
    b.block = Block.ATTN
    out = b.linear("o_proj", ctx, rows, qd, h, c.bias, role=Role.ROW)
    return b.dropout(out, rows * h, base="attn_out_dropout") if c.dropout else out


def packed_core(heads: int, s: int, packed: float | None) -> tuple[int, int]:
    """(score matrices, their side) of the attention core of ``heads`` (samples x heads)
    rows of ``s`` tokens whose packed samples have a mean sum(l_i^2) / s^2 of ``packed``: as
    many equal samples of round(packed x s) tokens as the rows' tokens fill (rounded down, so
    the score FLOPs never exceed the unpacked ones). 1 / k on a row that k divides: k samples
    of s / k, exactly."""
    side = max(1, round(s * packed)) if packed else s
    if side >= s:
        return heads, s
    return heads * s // side, side


def _mlp(c: TransformerConfig, b: Builder, x: str, rows: int) -> str:
    # a multi-token prediction module (built outside the layers) is a layer past the last
    if c.moe is not None and c.moe.is_moe(b.layer if b.layer >= 0 else c.layers):
        return moe_mlp(c, b, x, rows)
    h, f, bias = c.hidden, c.ffn_dim, c._bias(c.mlp_bias)
    b.block = Block.MLP
    if c.ffn.gated:
        act = b.swiglu(b.linear("gate_proj", x, rows, h, f, bias, role=Role.COLUMN),
                       b.linear("up_proj", x, rows, h, f, bias, role=Role.COLUMN), rows * f,
                       fn=c.ffn.value)
    elif c.ffn is Ffn.GELU and c.gelu_kernels == 8:
        act = _gelu_new(b, b.linear("fc1", x, rows, h, f, bias, role=Role.COLUMN), rows * f)
    else:
        act = b.activation(c.ffn.value, b.linear("fc1", x, rows, h, f, bias,
                                                 role=Role.COLUMN), rows * f)
    out = b.linear("fc2", act, rows, f, h, bias, role=Role.ROW)
    return b.dropout(out, rows * h, base="mlp_dropout") if c.dropout else out


def _gelu_new(b: Builder, x: str, numel: int) -> str:
    """Hugging Face's NewGELUActivation in eager PyTorch, one kernel per operation of
    ``0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x,
    3.0))))``, as NeuSight's traces of GPT-2 list them; each saves what its backward reads."""
    half = b.elementwise("scale", (x,), numel, base="gelu_half")
    cube = b.elementwise("mul", (x,), numel, saves=("inputs",), base="gelu_pow")
    inner = b.elementwise("add", (x, b.elementwise("scale", (cube,), numel, base="gelu_coef")),
                          numel, base="gelu_sum")
    tanh = b.elementwise("mul", (b.elementwise("scale", (inner,), numel, base="gelu_scale"),),
                         numel, saves=("output",), base="gelu_tanh")
    one = b.elementwise("scale", (tanh,), numel, base="gelu_one")
    return b.elementwise("mul", (half, one), numel, saves=("inputs",), base="gelu_new")


def _head(c: TransformerConfig, b: Builder, x: str, batch: int) -> None:
    rows, h = batch * c.sequence, c.hidden
    if c.style is Style.VISION:  # classify from the class token only
        x = b.norm(c.norm.value, x, rows, h, bias=c.norm is Norm.LAYERNORM)
        cls = b.copy("cls_select", x, batch * h)
        b.loss(b.linear("classifier", cls, batch, h, c.vocab, bias=True), batch, c.vocab)
        return
    if c.head is Head.SPAN:   # start and end logits; a cross-entropy over s positions each
        if c.style is Style.DECODER:   # the final norm of a pre-norm stack (GPT-2's ln_f)
            x = b.norm(c.norm.value, x, rows, h, bias=c.norm is Norm.LAYERNORM)
        logits = b.linear("qa_outputs", x, rows, h, 2, bias=True)
        b.loss(logits, 2 * batch, c.sequence)
        return
    if c.head is Head.CLASSIFY:   # the first token: pooler (dense, tanh), dropout, classifier
        cls = b.copy("cls_select", x, batch * h)
        y = b.linear("pooler", cls, batch, h, h, bias=True)
        y = b.elementwise("tanh", (y,), batch * h, saves=("output",))
        if c.dropout:
            y = b.dropout(y, batch * h, base="cls_dropout")
        b.loss(b.linear("classifier", y, batch, h, c.labels, bias=True), batch, c.labels)
        return
    if c.style is Style.ENCODER:  # MLM transform, then the tied decoder with its own bias
        if c.mlm_share is not None:  # the masked positions gathered (index_select) first
            rows = max(1, round(rows * c.mlm_share))
            x = b.copy("mlm_gather", x, rows * h)
        x = b.activation("gelu", b.linear("mlm_dense", x, rows, h, h, True), rows * h)
        x = b.norm(c.norm.value, x, rows, h, bias=c.norm is Norm.LAYERNORM)
        logits = b.linear("lm_head", x, rows, h, c.vocab, bias=True, tied=True,
                          role=Role.VOCAB_HEAD)
    else:
        x = b.norm(c.norm.value, x, rows, h, bias=c.norm is Norm.LAYERNORM)
        logits = b.linear("lm_head", x, rows, h, c.vocab, bias=c.head_bias,
                          tied=c.tied_embeddings, role=Role.VOCAB_HEAD)
    b.loss(logits, rows, c.vocab)


def _mtp(c: TransformerConfig, b: Builder, x: str, batch: int) -> None:
    """DeepSeek-V3's multi-token prediction module (arXiv:2412.19437, sec. 2.2, eq. 21-24):
    RMSNorm of the last layer's output and of the embedding of the token one further ahead
    (the shared embedding table, read again), their concatenation projected 2h -> h, one
    transformer layer, the shared final norm and output head, and its own cross-entropy. Built
    outside the layers (``layer`` -1, on the last pipeline stage, as DeepSeek-V3 places it)."""
    rows, h = batch * c.sequence, c.hidden
    b.block = Block.HEAD
    emb = b.embedding("mtp_embed", rows, c.vocab, h, tied=True)
    left = b.norm(c.norm.value, x, rows, h, bias=False)
    right = b.norm(c.norm.value, emb, rows, h, bias=False)
    joined = b.concat("mtp_concat", (left, right), 2 * rows * h)
    y = b.linear("mtp_proj", joined, rows, 2 * h, h, False)
    y = _layer(c, b, y, batch)
    b.block = Block.HEAD
    y = b.norm(c.norm.value, y, rows, h, bias=False)
    logits = b.linear("mtp_head", y, rows, h, c.vocab, bias=False, tied=True,
                      role=Role.VOCAB_HEAD)
    b.loss(logits, rows, c.vocab)
