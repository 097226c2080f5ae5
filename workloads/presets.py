"""Named transformer presets, each with the paper or model card its numbers come from."""
from __future__ import annotations

from workloads.moe import MLA, MoE, Router
from workloads.transformer import Ffn, Norm, Style, TransformerConfig


def _gpt(name: str, layers: int, hidden: int, heads: int, seq_len: int) -> TransformerConfig:
    """GPT-2/GPT-3: learned positions, LayerNorm, GELU, biases, tied embeddings, vocab 50257."""
    return TransformerConfig(name, layers, hidden, heads, vocab=50257, seq_len=seq_len)


def _llama(name: str, layers: int, hidden: int, heads: int, ffn: int, vocab: int,
           seq_len: int, kv_heads: int | None = None) -> TransformerConfig:
    """LLaMA family: RMSNorm, SwiGLU, rotary positions, no biases, untied, no dropout."""
    return TransformerConfig(name, layers, hidden, heads, vocab=vocab, seq_len=seq_len,
                             kv_heads=kv_heads, ffn_hidden=ffn, ffn=Ffn.SWIGLU,
                             norm=Norm.RMSNORM, tied_embeddings=False, learned_positions=False,
                             bias=False, dropout=False)


def _bert(name: str, layers: int, hidden: int, heads: int) -> TransformerConfig:
    """Devlin et al. 2019: post-norm encoder, WordPiece vocab 30522, 512 positions, 2 types."""
    return TransformerConfig(name, layers, hidden, heads, vocab=30522, seq_len=512,
                             style=Style.ENCODER, type_vocab=2)


def _vit(name: str, layers: int, hidden: int, heads: int, mlp: int) -> TransformerConfig:
    """Dosovitskiy et al. 2021, Table 1: 224x224 images, 16x16 patches, 1000 ImageNet classes."""
    return TransformerConfig(name, layers, hidden, heads, vocab=1000, seq_len=197,
                             ffn_hidden=mlp, style=Style.VISION, tied_embeddings=False)


TRANSFORMERS: dict[str, TransformerConfig] = {c.name: c for c in [
    # GPT-2: Radford et al. 2019, Table 2 (context 1024).
    _gpt("gpt2-small", 12, 768, 12, 1024),
    _gpt("gpt2-medium", 24, 1024, 16, 1024),
    _gpt("gpt2-large", 36, 1280, 20, 1024),
    _gpt("gpt2-xl", 48, 1600, 25, 1024),
    # GPT-3: Brown et al. 2020, Table 2.1 (context 2048). The table lists 24 heads of 128 for
    # 1.3B (24 x 128 != 2048) and d_model 5140 for 13B (not 40 x 128): we use 16 heads of 128
    # and 5120, the values consistent with the table's d_head = 128.
    _gpt("gpt3-125m", 12, 768, 12, 2048),
    _gpt("gpt3-350m", 24, 1024, 16, 2048),
    _gpt("gpt3-760m", 24, 1536, 16, 2048),
    _gpt("gpt3-1.3b", 24, 2048, 16, 2048),
    _gpt("gpt3-2.7b", 32, 2560, 32, 2048),
    _gpt("gpt3-6.7b", 32, 4096, 32, 2048),
    _gpt("gpt3-13b", 40, 5120, 40, 2048),
    _gpt("gpt3-175b", 96, 12288, 96, 2048),
    # LLaMA: Touvron et al. 2023a, Table 2; FFN widths from the released params.json.
    _llama("llama-7b", 32, 4096, 32, 11008, 32000, 2048),
    _llama("llama-13b", 40, 5120, 40, 13824, 32000, 2048),
    _llama("llama-33b", 60, 6656, 52, 17920, 32000, 2048),
    _llama("llama-65b", 80, 8192, 64, 22016, 32000, 2048),
    # Llama 2: Touvron et al. 2023b, Table 1 (context 4096; GQA with 8 KV heads for 70B).
    _llama("llama2-7b", 32, 4096, 32, 11008, 32000, 4096),
    _llama("llama2-13b", 40, 5120, 40, 13824, 32000, 4096),
    _llama("llama2-70b", 80, 8192, 64, 28672, 32000, 4096, kv_heads=8),
    # Llama 3: Dubey et al. 2024 ("The Llama 3 Herd of Models"), Table 3 (vocab 128256).
    _llama("llama3-8b", 32, 4096, 32, 14336, 128256, 8192, kv_heads=8),
    _llama("llama3-70b", 80, 8192, 64, 28672, 128256, 8192, kv_heads=8),
    _llama("llama3-405b", 126, 16384, 128, 53248, 128256, 8192, kv_heads=8),
    # Mixtral: Jiang et al. 2024 ("Mixtral of Experts", arXiv:2401.04088), Table 1, and the
    # released config.json (mistralai/Mixtral-8x7B-v0.1, Mixtral-8x22B-v0.1): Mistral's layer
    # with 8 SwiGLU experts, 2 per token, softmax router, vocab 32000, rope. 46,702,792,704
    # parameters, 12,879,925,248 active ("46.7B", "12.9B"); 8x22B: 140,620,634,112 and
    # 39,152,031,744 ("141B", "39B").
    TransformerConfig("mixtral-8x7b", 32, 4096, 32, vocab=32000, seq_len=4096, kv_heads=8,
                      ffn_hidden=14336, ffn=Ffn.SWIGLU, norm=Norm.RMSNORM,
                      tied_embeddings=False, learned_positions=False, bias=False,
                      dropout=False, moe=MoE(experts=8, top_k=2)),
    TransformerConfig("mixtral-8x22b", 56, 6144, 48, vocab=32000, seq_len=4096, kv_heads=8,
                      ffn_hidden=16384, ffn=Ffn.SWIGLU, norm=Norm.RMSNORM,
                      tied_embeddings=False, learned_positions=False, bias=False,
                      dropout=False, moe=MoE(experts=8, top_k=2)),
    # DeepSeek-V3: DeepSeek-AI 2024 (arXiv:2412.19437), sec. 4.2 and the released config.json
    # (deepseek-ai/DeepSeek-V3): 61 layers of hidden 7168, the first 3 dense (ffn 18432), the
    # others 256 routed experts of 2048 (8 per token, sigmoid scores with a bias) and 1
    # shared; MLA with 128 heads, q_lora_rank 1536, kv_lora_rank 512, 128 + 64 q/k and 128 v
    # features per head; vocab 129280, untied; node-limited routing to at most 4 nodes (sec.
    # 2.1.2; config topk_group 4 of n_group 8); trained at 4K context. 671,026,419,200
    # parameters ("671B"), 37,552,297,472 active with the input embedding, 36,625,618,432
    # without ("37B"); the option mtp = 1 adds the multi-token prediction module (11,610,068,224 more).
    TransformerConfig("deepseek-v3", 61, 7168, 128, vocab=129280, seq_len=4096,
                      ffn_hidden=18432, ffn=Ffn.SWIGLU, norm=Norm.RMSNORM,
                      tied_embeddings=False, learned_positions=False, bias=False,
                      dropout=False,
                      moe=MoE(experts=256, top_k=8, shared_experts=1, expert_ffn_hidden=2048,
                              first_dense_layers=3, router=Router.SIGMOID, router_bias=True,
                              max_nodes=4),
                      mla=MLA(kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
                              v_head_dim=128, q_lora_rank=1536)),
    # Qwen1.5-MoE-A2.7B: Qwen team 2024 (qwenlm.github.io/blog/qwen-moe) and the released
    # config.json (Qwen/Qwen1.5-MoE-A2.7B): 24 layers of hidden 2048, 16 heads with q, k, v
    # biases, 60 experts of 1408 (4 per token, softmax) and a shared expert of 5632 (= 4 x
    # 1408) behind a sigmoid gate, vocab 151936, untied. 14,315,784,192 parameters ("14.3B"),
    # 2,689,173,504 active ("2.7B").
    TransformerConfig("qwen2-moe", 24, 2048, 16, vocab=151936, seq_len=8192,
                      ffn_hidden=5632, ffn=Ffn.SWIGLU, norm=Norm.RMSNORM,
                      tied_embeddings=False, learned_positions=False, bias=False, qkv_bias=True,
                      dropout=False,
                      moe=MoE(experts=60, top_k=4, shared_experts=4, expert_ffn_hidden=1408,
                              shared_gate=True)),
    # BERT: Devlin et al. 2019, sec. 3.
    _bert("bert-base", 12, 768, 12),
    _bert("bert-large", 24, 1024, 16),
    # ViT: Dosovitskiy et al. 2021, Table 1.
    _vit("vit-b16", 12, 768, 12, 3072),
    _vit("vit-l16", 24, 1024, 16, 4096),
]}
