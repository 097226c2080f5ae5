"""Hugging Face ``config.json`` files -> the zoo's transformer (``TransformerConfig``), offline.

What every open model ships: the architecture's hyper-parameters under the names its
``transformers`` class reads (``LlamaConfig``, ``GPT2Config``, ...). Each supported
``model_type`` maps them onto ``TransformerConfig``'s fields as that class builds the model
(``transformers/models/<type>/modeling_<type>.py``), so that ``num_params()`` equals the
model's ``num_parameters()`` (tests/test_hf_config.py checks thirteen published models).
ViT image classifiers (``vit``) are read as the zoo's ViT; encoders (``bert``, ``roberta``)
as the zoo's BERT encoder with the head their
``architectures`` names (the MLM head, question answering's span head, or the sequence
classifier).

Modelled as the closest zoo layer, with the same parameters and GEMM FLOPs (the vector
work differs slightly): Gemma's GeLU-gated MLP (``Ffn.GEGLU``) and its embedding scaled by
sqrt(hidden); a sliding attention window (Mistral) as full causal attention over seq_len:
exact while seq_len <= the window, which is why the default seq_len stops there.
The projections run as the architecture's code runs them (``PROJECTIONS``): GPT-2's
``c_attn`` and GPT-NeoX's and Falcon's ``query_key_value`` as one q, k, v GEMM
(``TransformerConfig.projections`` "fused", which the plan's ``projections`` overrides).
Mixtures of experts (Mixtral, Qwen2-MoE, DeepSeek-V3) as the zoo's ``MoE``. Not modelled (a
one-line error): Qwen2-MoE's dense ``mlp_only_layers``, OPT's projected embeddings
(``word_embed_proj_dim`` != ``hidden_size``) and post-norm layers, Phi's ``qk_layernorm``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from simulator.errors import WorkloadError, in_interval, is_fraction, read_input
from workloads.moe import MLA, MoE, Router
from workloads.transformer import Ffn, Head, Norm, Residual, Style, TransformerConfig

#: The longest default context: a config's ``max_position_embeddings`` is often what rotary
#: scaling reaches (Qwen2: 131072), not what the model trained on; --seq-len gives more.
MAX_DEFAULT_SEQ_LEN = 8192


#: The names ``transformers.activations.ACT2CLS`` maps (transformers main, 2025: a config
#: naming another fails to load there with a KeyError).
ACTIVATIONS = frozenset({
    "gelu", "gelu_10", "gelu_fast", "gelu_new", "gelu_python", "gelu_pytorch_tanh",
    "gelu_python_tanh", "gelu_accurate", "hardswish", "laplace", "leaky_relu", "linear", "mish",
    "quick_gelu", "relu", "relu2", "relu6", "sigmoid", "silu", "sqrtsoftplus", "swish", "tanh",
    "prelu", "xielu"})


def is_hf_config(spec: str) -> bool:
    """A model argument that names a Hugging Face config: a ``.json`` file."""
    return spec.lower().endswith(".json")


def load_hf_config(path: str | Path) -> TransformerConfig:
    """The transformer of a Hugging Face ``config.json`` (WorkloadError naming the file and the
    key for a file hwsim cannot read or an architecture it does not model)."""
    path = Path(path)
    config = _Config(path, _read(path))
    kind = config.text("model_type")
    if kind not in ARCHITECTURES:
        raise WorkloadError(f"{path}: model_type {kind!r} is not supported: hwsim reads "
                            f"{', '.join(sorted(ARCHITECTURES))}")
    fields = ARCHITECTURES[kind](config)
    name = path.parent.name if path.name == "config.json" and path.parent.name else path.stem
    fields.setdefault("seq_len", config.seq_len(fields.get("positions")))
    fields["projections"] = PROJECTIONS[kind]
    try:
        return TransformerConfig(name=name or "hf-model", **fields)
    except WorkloadError as err:
        raise WorkloadError(f"{path}: {err}") from None


def _read(path: Path) -> dict:
    if not os.path.exists(path):
        raise WorkloadError(f"{path}: no such config file (give a Hugging Face config.json)")
    text = read_input(path, "config", WorkloadError)   # a regular file: a FIFO is refused
    try:
        data = json.loads(text.decode("utf-8"))
    except RecursionError:
        raise WorkloadError(f"{path}: not valid JSON (nested too deeply)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WorkloadError(f"{path}: not valid JSON ({err}); give the model's config.json") \
            from None
    if not isinstance(data, dict):
        raise WorkloadError(f"{path}: a config.json holds one JSON object, not "
                            f"{type(data).__name__}")
    return data


class _Config:
    """A config's keys, each checked as it is read (the error names the file and the key)."""

    def __init__(self, path: Path, data: dict) -> None:
        self.path, self.data = path, data

    def _get(self, key: str, default):
        value = self.data.get(key)
        return default if value is None else value

    def count(self, key: str, default: int | None = None) -> int | None:
        value = self._get(key, default)
        if value is None:
            raise WorkloadError(f"{self.path}: {key} is missing (a positive integer)")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise WorkloadError(f"{self.path}: {key} = {value!r} must be a positive integer")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise WorkloadError(f"{self.path}: {key} = {value!r} must be true or false")
        return value

    def text(self, key: str, default: str | None = None) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise WorkloadError(f"{self.path}: {key} = {value!r} must be a string"
                                if value is not None else f"{self.path}: {key} is missing")
        return value

    def activation(self, key: str, default: str) -> str:
        """An activation's name, one ``transformers`` knows (``ACT2FN``; another fails there
        too). hwsim prices the MLP it sits in by its kind (gated or not), whatever the name."""
        value = self.text(key, default)
        if value not in ACTIVATIONS:
            raise WorkloadError(f"{self.path}: {key} = {value!r} is not an activation of "
                                f"transformers (ACT2FN): {', '.join(sorted(ACTIVATIONS))}")
        return value

    def rate(self, *keys: str, default: float = 0.0) -> bool:
        """Whether any of the dropout probabilities ``keys`` is above 0 (``default`` where a
        key is absent: the value the config class gives it)."""
        for key in keys:
            value = self._get(key, default)
            if not in_interval(value, 0.0, 1.0, high_open=True):
                raise WorkloadError(f"{self.path}: {key} = {value!r} must be a probability "
                                    "in [0, 1)")
            if value > 0:
                return True
        return False

    def fraction(self, key: str, default: float) -> float:
        """A fraction in (0, 1] (the part of each head a rotary embedding rotates)."""
        value = self._get(key, default)
        if not is_fraction(value):
            raise WorkloadError(f"{self.path}: {key} = {value!r} must be a fraction in (0, 1]")
        return float(value)

    def refuse(self, key: str, value, why: str) -> None:
        if self.data.get(key) is not None and self.data.get(key) != value:
            raise WorkloadError(f"{self.path}: {key} = {self.data[key]!r}: {why}")

    def seq_len(self, positions: int | None) -> int:
        """The default context: the position table, else max_position_embeddings (2048 if
        absent), stopped at the sliding window and at ``MAX_DEFAULT_SEQ_LEN``."""
        longest = positions or self.count("max_position_embeddings", 2048)
        window = self.data.get("sliding_window")
        if isinstance(window, int) and window > 0 and self.data.get("use_sliding_window", True):
            longest = min(longest, window)
        return min(longest, MAX_DEFAULT_SEQ_LEN)


def _core(c: _Config) -> dict:
    """The keys most types share (LlamaConfig's names)."""
    heads = c.count("num_attention_heads")
    return {"layers": c.count("num_hidden_layers"), "hidden": c.count("hidden_size"),
            "heads": heads, "vocab": c.count("vocab_size"),
            "kv_heads": c.count("num_key_value_heads", heads),
            "ffn_hidden": c.count("intermediate_size")}


def _gate(c: _Config, key: str = "hidden_act") -> Ffn:
    act = c.activation(key, "silu")
    return Ffn.SWIGLU if act in ("silu", "swish") else Ffn.GEGLU


def _llama(c: _Config) -> dict:
    """LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM: RMSNorm, gated MLP, rotary,
    no biases (Qwen2: on q, k, v; Llama: ``attention_bias``, ``mlp_bias``), untied."""
    qwen = c.data["model_type"] in ("qwen2", "qwen2_moe")
    attention_bias = c.flag("attention_bias", False)
    head = c.data.get("head_dim")
    return {**_core(c), "ffn": _gate(c), "norm": Norm.RMSNORM,
            "tied_embeddings": c.flag("tie_word_embeddings", False),
            "learned_positions": False, "bias": attention_bias,
            "qkv_bias": True if qwen else None, "mlp_bias": c.flag("mlp_bias", False),
            "dropout": False, "attention_dropout": c.rate("attention_dropout"),
            "head_size": c.count("head_dim") if head is not None else None}


def _gemma(c: _Config) -> dict:
    """GemmaForCausalLM: Llama's layer with a GeLU gate, head_dim apart from hidden / heads
    (256), RMSNorm, tied embeddings."""
    return {**_llama(c), "ffn": _gate(c, "hidden_activation" if "hidden_activation" in c.data
                                      else "hidden_act"),
            "tied_embeddings": c.flag("tie_word_embeddings", True)}


def _mixtral(c: _Config) -> dict:
    """MixtralForCausalLM: Mistral's layer with num_local_experts SwiGLU experts of
    intermediate_size, num_experts_per_tok per token, a softmax router (workloads.moe)."""
    return {**_llama(c), "moe": MoE(experts=c.count("num_local_experts"),
                                    top_k=c.count("num_experts_per_tok"))}


def _qwen2_moe(c: _Config) -> dict:
    """Qwen2MoeForCausalLM: Qwen2's layer (q, k, v biases) with num_experts experts of
    moe_intermediate_size, num_experts_per_tok per token (softmax), and a shared expert of
    shared_expert_intermediate_size behind a sigmoid gate (built as shared experts of the
    routed width: the same weights and FLOPs when it is a multiple of it)."""
    c.refuse("decoder_sparse_step", 1, "hwsim models a mixture of experts in every layer "
             "(decoder_sparse_step = 1)")
    if c.data.get("mlp_only_layers"):
        raise WorkloadError(f"{c.path}: mlp_only_layers = {c.data['mlp_only_layers']!r}: "
                            "hwsim models dense layers only first (first_dense_layers)")
    f = c.count("moe_intermediate_size")
    shared = c.data.get("shared_expert_intermediate_size") or 0
    if shared % f:
        raise WorkloadError(f"{c.path}: shared_expert_intermediate_size = {shared} must be a "
                            f"multiple of moe_intermediate_size = {f}")
    return {**_llama(c), "moe": MoE(experts=c.count("num_experts"),
                                    top_k=c.count("num_experts_per_tok"),
                                    expert_ffn_hidden=f, shared_experts=shared // f,
                                    shared_gate=bool(shared))}


def _deepseek_v3(c: _Config) -> dict:
    """DeepseekV3ForCausalLM: multi-head latent attention, first_k_dense_replace dense layers,
    then n_routed_experts experts of moe_intermediate_size (num_experts_per_tok per token,
    sigmoid scores with a correction bias) and n_shared_experts shared ones. The
    multi-token prediction layers (num_nextn_predict_layers) are left out, as transformers
    builds the model (``mtp`` adds them)."""
    c.refuse("scoring_func", "sigmoid", "hwsim models DeepSeek-V3's sigmoid router")
    heads = c.count("num_attention_heads")
    q_rank = c.data.get("q_lora_rank")
    mla = MLA(kv_lora_rank=c.count("kv_lora_rank"), qk_nope_head_dim=c.count("qk_nope_head_dim"),
              qk_rope_head_dim=c.count("qk_rope_head_dim"), v_head_dim=c.count("v_head_dim"),
              q_lora_rank=c.count("q_lora_rank") if q_rank is not None else None)
    moe = MoE(experts=c.count("n_routed_experts"), top_k=c.count("num_experts_per_tok"),
              shared_experts=c.data.get("n_shared_experts") or 0,
              expert_ffn_hidden=c.count("moe_intermediate_size"),
              first_dense_layers=c.data.get("first_k_dense_replace") or 0,
              router=Router.SIGMOID, router_bias=True,
              # group-limited routing: topk_group of n_group expert groups, each group a
              # node in DeepSeek-V3's 64-way expert parallelism over 8 nodes (sec. 2.1.2)
              max_nodes=c.count("topk_group") if c.data.get("topk_group") else None)
    return {"layers": c.count("num_hidden_layers"), "hidden": c.count("hidden_size"),
            "heads": heads, "vocab": c.count("vocab_size"),
            "ffn_hidden": c.count("intermediate_size"), "ffn": _gate(c), "norm": Norm.RMSNORM,
            "tied_embeddings": c.flag("tie_word_embeddings", False),
            "learned_positions": False, "bias": c.flag("attention_bias", False),
            "dropout": False, "attention_dropout": c.rate("attention_dropout"), "mla": mla,
            "moe": moe}


def _gpt2(c: _Config) -> dict:
    """GPT2LMHeadModel: learned positions (n_positions), LayerNorm, GeLU, biases, tied."""
    hidden = c.count("n_embd")
    positions = c.count("n_positions", 1024)
    act = c.activation("activation_function", "gelu_new")
    return {"layers": c.count("n_layer"), "hidden": hidden, "heads": c.count("n_head"),
            "vocab": c.count("vocab_size"), "ffn_hidden": c.count("n_inner", 4 * hidden),
            "ffn": Ffn.RELU if act == "relu" else Ffn.GELU,
            "tied_embeddings": c.flag("tie_word_embeddings", True), "positions": positions,
            "seq_len": min(c.count("n_ctx", positions), positions, MAX_DEFAULT_SEQ_LEN),
            "dropout": c.rate("resid_pdrop", "embd_pdrop"),
            "attention_dropout": c.rate("attn_pdrop"),
            # GPT2Attention's present (key, value): views of c_attn's output, returned while
            # use_cache is on (the default, in training too); priced with hf_eager only
            "kv_cache_views": c.flag("use_cache", True)}


def _gpt_neox(c: _Config) -> dict:
    """GPTNeoXForCausalLM (Pythia): parallel attention and MLP with a norm each
    (``use_parallel_residual``), LayerNorm, GeLU, rotary, biases, untied."""
    parallel = c.flag("use_parallel_residual", True)
    c.activation("hidden_act", "gelu")   # checked; the MLP is priced as a GeLU one
    return {**_core(c), "ffn": Ffn.GELU, "learned_positions": False,
            "rotary_pct": c.fraction("rotary_pct", 1.0),
            "tied_embeddings": c.flag("tie_word_embeddings", False),
            "bias": c.flag("attention_bias", True), "mlp_bias": True,
            "residual": Residual.PARALLEL if parallel else Residual.SEQUENTIAL,
            "dropout": c.rate("hidden_dropout"),
            "attention_dropout": c.rate("attention_dropout")}


def _opt(c: _Config) -> dict:
    """OPTForCausalLM: learned positions with 2 rows of offset, pre-norm LayerNorm, ReLU,
    biases, tied."""
    hidden = c.count("hidden_size")
    c.refuse("word_embed_proj_dim", hidden, "projected embeddings (OPT-350m) are not modelled")
    c.refuse("do_layer_norm_before", True, "post-norm OPT layers (OPT-350m) are not modelled")
    c.refuse("layer_norm_elementwise_affine", True, "norms without weights are not modelled")
    positions = c.count("max_position_embeddings", 2048)
    act = c.activation("activation_function", "relu")
    return {"layers": c.count("num_hidden_layers"), "hidden": hidden,
            "heads": c.count("num_attention_heads"), "vocab": c.count("vocab_size"),
            "ffn_hidden": c.count("ffn_dim"), "ffn": Ffn.RELU if act == "relu" else Ffn.GELU,
            "bias": c.flag("enable_bias", True),
            "tied_embeddings": c.flag("tie_word_embeddings", True),
            "positions": positions + 2,   # OPTLearnedPositionalEmbedding's offset of 2
            "seq_len": min(positions, MAX_DEFAULT_SEQ_LEN),
            "dropout": c.rate("dropout"), "attention_dropout": c.rate("attention_dropout"),
            # OPTDecoder drops no embedding (priced always); OPTAttention scales the queries
            # and clamps the masked scores with torch.max (priced with hf_eager only)
            "embedding_dropout": False, "mask_clamp": True}


def _falcon(c: _Config) -> dict:
    """FalconForCausalLM: multi-query (7B) or grouped (``new_decoder_architecture``: 40B,
    180B) attention, parallel attention and MLP (one norm, or ``num_ln_in_parallel_attn``),
    LayerNorm, GeLU, rotary or ALiBi (no position parameters), tied."""
    hidden, heads = c.count("hidden_size"), c.count("num_attention_heads")
    c.activation("activation", "gelu")   # checked; the MLP is priced as a GeLU one
    new = c.flag("new_decoder_architecture", False)
    if new:
        kv = c.count("num_kv_heads", heads)
        norms = c.count("num_ln_in_parallel_attn", 2)
        residual = Residual.PARALLEL if norms == 2 else Residual.SHARED_NORM
    else:
        kv = 1 if c.flag("multi_query", True) else heads
        residual = Residual.SHARED_NORM if c.flag("parallel_attn", True) else \
            Residual.SEQUENTIAL
    return {"layers": c.count("num_hidden_layers"), "hidden": hidden, "heads": heads,
            "vocab": c.count("vocab_size"), "kv_heads": kv,
            "ffn_hidden": c.count("ffn_hidden_size", 4 * hidden), "ffn": Ffn.GELU,
            "bias": c.flag("bias", False), "learned_positions": False, "residual": residual,
            "tied_embeddings": c.flag("tie_word_embeddings", True),
            "dropout": c.rate("hidden_dropout"),
            "attention_dropout": c.rate("attention_dropout")}


def _phi(c: _Config) -> dict:
    """PhiForCausalLM (Phi-1.5, Phi-2): parallel attention and MLP sharing one LayerNorm, GeLU,
    rotary, biases everywhere, an untied LM head with a bias."""
    c.refuse("qk_layernorm", False, "Phi's query/key norms are not modelled")
    c.activation("hidden_act", "gelu_new")   # checked; the MLP is priced as a GeLU one
    return {**_core(c), "ffn": Ffn.GELU, "learned_positions": False, "bias": True,
            "head_bias": True, "residual": Residual.SHARED_NORM,
            "rotary_pct": c.fraction("partial_rotary_factor", 0.5),
            "tied_embeddings": c.flag("tie_word_embeddings", False),
            "dropout": c.rate("resid_pdrop", "embd_pdrop"),
            "attention_dropout": c.rate("attention_dropout")}


#: An encoder's ``architectures`` -> its head: the class name's suffix after ``Bert`` or
#: ``Roberta``. transformers' BertForMaskedLM and RobertaForMaskedLM build the encoder without
#: its pooler and the MLM head (a dense h -> h, GeLU, LayerNorm, the decoder tied to the word
#: embeddings with a bias of vocab_size: the zoo's encoder head); *ForQuestionAnswering the
#: encoder without pooler and ``qa_outputs`` (h -> 2: ``Head.SPAN``); *ForSequenceClassification
#: BERT's pooler (dense h -> h, tanh) and classifier h -> num_labels, RoBERTa's
#: RobertaClassificationHead (dense h -> h, tanh, out_proj h -> num_labels) on an encoder
#: without pooler: the same weights (``Head.CLASSIFY``).
ENCODER_HEADS = {"ForMaskedLM": Head.LM, "ForQuestionAnswering": Head.SPAN,
                 "ForSequenceClassification": Head.CLASSIFY}


def _encoder_head(c: _Config, family: str) -> Head:
    """The head ``architectures`` names (absent: the MLM head, the pretraining objective)."""
    names = c.data.get("architectures")
    if names is None:
        return Head.LM
    fix = (f"name {family}ForMaskedLM, {family}ForQuestionAnswering or "
           f"{family}ForSequenceClassification")
    if not (isinstance(names, list) and len(names) == 1 and isinstance(names[0], str)):
        raise WorkloadError(f"{c.path}: architectures = {names!r}: give one class name ({fix})")
    name = names[0]
    for suffix, head in ENCODER_HEADS.items():
        if name == family + suffix:
            return head
    raise WorkloadError(f"{c.path}: architectures = {names!r}: hwsim models {family}'s MLM, "
                        f"question-answering and sequence-classification heads only ({fix}; "
                        "token classification, multiple choice and the next-sentence head "
                        "are not modelled)")


def _labels(c: _Config) -> int:
    """The classes: as PretrainedConfig counts them, id2label's entries, else num_labels, else
    2."""
    names = c.data.get("id2label")
    if names is not None:
        if not isinstance(names, dict) or not names:
            raise WorkloadError(f"{c.path}: id2label = {names!r} must be an object of one "
                                "entry a class (\"0\": \"NEGATIVE\", ...)")
        return len(names)
    return c.count("num_labels", 2)


def _encoder(c: _Config, family: str, offset: int) -> dict:
    """BertForMaskedLM, RobertaForMaskedLM and their *ForQuestionAnswering: post-norm
    LayerNorm encoder layers, GeLU (or ReLU) MLP, biases everywhere, learned absolute
    positions of max_position_embeddings rows (``offset`` of them never read: RoBERTa's
    padding_idx + 1) and type_vocab_size token types, an embedding LayerNorm, tied MLM
    decoder; dropout as hidden_dropout_prob and attention_probs_dropout_prob (0.1 where
    absent, BertConfig's and RobertaConfig's default)."""
    c.refuse("is_decoder", False, f"hwsim reads {family} as an encoder (is_decoder false)")
    c.refuse("add_cross_attention", False, "cross-attention layers are not modelled")
    c.refuse("position_embedding_type", "absolute", "relative position embeddings are not "
             "modelled (position_embedding_type \"absolute\")")
    c.refuse("tie_word_embeddings", True, "an untied MLM decoder is not modelled")
    act = c.activation("hidden_act", "gelu")
    head = _encoder_head(c, family)
    positions = c.count("max_position_embeddings", 512)
    if positions <= offset:
        raise WorkloadError(f"{c.path}: max_position_embeddings = {positions} leaves no "
                            f"position after the padding offset of {offset} (pad_token_id + 1)")
    return {"layers": c.count("num_hidden_layers", 12), "hidden": c.count("hidden_size", 768),
            "heads": c.count("num_attention_heads", 12), "vocab": c.count("vocab_size"),
            "ffn_hidden": c.count("intermediate_size", 3072),
            "ffn": Ffn.RELU if act == "relu" else Ffn.GELU, "norm": Norm.LAYERNORM,
            "style": Style.ENCODER, "type_vocab": c.count("type_vocab_size", 2),
            "positions": positions, "seq_len": min(positions - offset, MAX_DEFAULT_SEQ_LEN),
            "tied_embeddings": True, "bias": True,
            "dropout": c.rate("hidden_dropout_prob", default=0.1),
            "attention_dropout": c.rate("attention_probs_dropout_prob", default=0.1),
            "head": head, "labels": _labels(c) if head is Head.CLASSIFY else 2}


def _bert(c: _Config) -> dict:
    """BERT (Devlin et al. 2019): positions from 0, so every row of the table is read."""
    return _encoder(c, "Bert", 0)


def _roberta(c: _Config) -> dict:
    """RoBERTa (Liu et al. 2019): BERT's layers; RobertaEmbeddings numbers the positions from
    padding_idx + 1 (``create_position_ids_from_input_ids``), so roberta-base's 514 rows
    (pad_token_id 1) hold a context of 512."""
    pad = c.data.get("pad_token_id", 1)
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise WorkloadError(f"{c.path}: pad_token_id = {pad!r} must be an integer >= 0")
    return _encoder(c, "Roberta", pad + 1)


def _vit(c: _Config) -> dict:
    """ViTForImageClassification (or no ``architectures``): the zoo's ViT (``style`` vision:
    a patch_size x patch_size convolution of num_channels, a class token, learned positions for
    the (image_size / patch_size)^2 + 1 tokens, pre-norm LayerNorm layers, GeLU MLP, q, k, v
    biases as ``qkv_bias``, a final LayerNorm and a linear classifier h -> num_labels on the
    class token); dropout as hidden_dropout_prob and attention_probs_dropout_prob (ViTConfig's
    default 0.0)."""
    names = c.data.get("architectures")
    if names is not None and names != ["ViTForImageClassification"]:
        raise WorkloadError(f"{c.path}: architectures = {names!r}: hwsim models ViT's image "
                            "classifier only (name ViTForImageClassification; ViTModel's "
                            "pooler and masked image modelling are not modelled)")
    act = c.activation("hidden_act", "gelu")
    image, patch = c.count("image_size", 224), c.count("patch_size", 16)
    if patch > image:
        raise WorkloadError(f"{c.path}: patch_size = {patch} is larger than image_size = "
                            f"{image}")
    return {"layers": c.count("num_hidden_layers", 12), "hidden": c.count("hidden_size", 768),
            "heads": c.count("num_attention_heads", 12), "vocab": _labels(c),
            "ffn_hidden": c.count("intermediate_size", 3072),
            "ffn": Ffn.RELU if act == "relu" else Ffn.GELU, "norm": Norm.LAYERNORM,
            "style": Style.VISION, "image_size": image, "patch": patch,
            "channels": c.count("num_channels", 3), "seq_len": (image // patch) ** 2 + 1,
            "tied_embeddings": False, "bias": True, "qkv_bias": c.flag("qkv_bias", True),
            "dropout": c.rate("hidden_dropout_prob"),
            "attention_dropout": c.rate("attention_probs_dropout_prob")}


#: model_type -> (how its ``transformers`` modeling code runs the projections that read one
#: input, where it says so): "fused" where q, k and v are one linear whose output is split
#: (none of the fused types has a gated MLP, so its MLP's one input linear is alone either
#: way), "separate" where they are a linear each (and a gated MLP's gate and up too).
#: huggingface/transformers, read 2026-12-06 at the commit given, src/transformers/models/:
PROJECTIONS = {
    # gpt2/modeling_gpt2.py (c44b2d9): GPT2Attention.c_attn = Conv1D(3 * embed_dim, embed_dim),
    # forward: query, key, value = self.c_attn(hidden_states).split(self.split_size, dim=2)
    "gpt2": "fused",
    # gpt_neox/modeling_gpt_neox.py (203bf6f): GPTNeoXAttention.query_key_value =
    # nn.Linear(hidden_size, 3 * hidden_size), its output viewed per head and sliced
    "gpt_neox": "fused",
    # falcon/modeling_falcon.py (4427208): FalconAttention.query_key_value = FalconLinear(
    # hidden_size, qkv_out_dim): 3 x hidden, hidden + 2 head_dim (multi-query) or
    # (2 num_kv_heads + num_attention_heads) head_dim (new_decoder_architecture)
    "falcon": "fused",
    # llama/modeling_llama.py (5dd4a63): LlamaAttention q_proj, k_proj, v_proj and LlamaMLP
    # gate_proj, up_proj, a nn.Linear each; Mistral's, Qwen2's, Gemma's, Mixtral's and
    # Qwen2-MoE's attention are Llama's q_proj, k_proj, v_proj under their names (hwsim's
    # routed experts are not fused either way: simulator.training.projections.groups)
    "llama": "separate", "mistral": "separate", "qwen2": "separate", "gemma": "separate",
    "mixtral": "separate", "qwen2_moe": "separate",
    # opt/modeling_opt.py (ab91074): OPTAttention q_proj, k_proj, v_proj
    "opt": "separate",
    # phi/modeling_phi.py (0faeaf3): PhiAttention q_proj, k_proj, v_proj (Phi-3's qkv_proj
    # and gate_up_proj are one GEMM each, but model_type phi3 is not read)
    "phi": "separate",
    # deepseek_v3: multi-head latent attention, no column pair of one input (its projections
    # are not touched either way, simulator.training.projections)
    "deepseek_v3": "separate",
    # bert/modeling_bert.py (v4.46.3): BertSelfAttention.query, key, value, a nn.Linear each;
    # roberta/modeling_roberta.py (v4.46.3): RobertaSelfAttention, the same
    "bert": "separate", "roberta": "separate",
    # vit/modeling_vit.py (v4.46.3): ViTSelfAttention.query, key, value, a nn.Linear each
    "vit": "separate",
}

#: model_type -> its fields.
ARCHITECTURES = {"llama": _llama, "mistral": _llama, "qwen2": _llama, "gemma": _gemma,
                 "mixtral": _mixtral, "qwen2_moe": _qwen2_moe, "deepseek_v3": _deepseek_v3,
                 "gpt2": _gpt2, "gpt_neox": _gpt_neox, "opt": _opt, "falcon": _falcon,
                 "phi": _phi, "bert": _bert, "roberta": _roberta,
                 "vit": _vit}

__all__ = ["ARCHITECTURES", "MAX_DEFAULT_SEQ_LEN", "PROJECTIONS", "is_hf_config",
           "load_hf_config"]
