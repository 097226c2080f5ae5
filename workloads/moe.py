"""Mixture-of-experts layers and multi-head latent attention: their configuration, parameter
counts (closed form) and forward graphs, for ``workloads.transformer``.

A mixture-of-experts (MoE) layer replaces the dense MLP by ``experts`` routed MLPs of which
each token uses ``top_k`` (Shazeer et al. 2017; GShard, Lepikhin et al. 2020; Switch, Fedus et
al. 2021), plus ``shared_experts`` that every token uses (DeepSeekMoE, Dai et al. 2024, sec.
3.2). Its forward, as Megatron-Core's ``MoELayer`` runs it with the all-to-all token
dispatcher and grouped GEMMs (megatron/core/transformer/moe/, ``TEGroupedMLP``):

- router: a linear hidden -> experts (replicated over tensor-parallel ranks), softmax (Mixtral,
  Qwen) or sigmoid (DeepSeek-V3) scores and the top-k selection;
- permutation: every token copied once per chosen expert, grouped by expert
  (``Role.EXPERT_DISPATCH``); with expert parallelism an all-to-all sends each copy to the rank holding its expert
  (``simulator.parallel.expert``);
- grouped expert GEMMs (``Builder.grouped_linear``): a batch of ``experts`` GEMMs of
  tokens-per-expert rows each; gated experts (SwiGLU) have gate, up and down projections;
- un-permutation: the copies weighted by their routing probabilities and summed back into
  token order (``Role.EXPERT_COMBINE``; the all-to-all back first under expert parallelism);
- shared experts: one dense MLP of ``shared_experts`` x ``expert_ffn_hidden`` features.

Load imbalance and token dropping. ``imbalance`` is the busiest expert's load over the mean
(1 + MaxVio, Wang et al. 2024, arXiv:2408.15664, eq. 4), a property of the trained router;
left out, the cited measurement for the workload's router type (``MAXVIO``: an aux-loss
router, or the loss-free bias of ``router_bias``). With expert parallelism (ep > 1) the rank
holding the busiest experts paces each MoE layer: its load (``simulator.parallel.expert``:
the router's spread mapped onto ep ranks of experts / ep experts, or the sampling spread of a
micro-batch, the larger) is the ``load`` fact of each grouped GEMM (per mille), which
``simulator.cost.efficiency.executed_fraction`` applies to its time. With ep = 1 one device
runs every expert in one grouped GEMM: its work is the same however the tokens spread, so the
graph built here is balanced (load 1). With a ``capacity_factor`` C (GShard, sec. 2.2;
Switch, sec. 2.2) each rank keeps at most C x the mean of its token copies per expert and
drops the rest (Megatron-Core's ``--moe-expert-capacity-factor``): with
``pad_to_capacity`` (``--moe-pad-expert-input-to-capacity``, NeMo's performance recipes)
every expert's input is padded to C x the mean, so the load is exactly C; without it (the
default, Megatron-Core's) the busiest rank runs at most C and the dropped copies (their
expected share, ``simulator.parallel.expert.dropped_fraction``) are neither computed nor
sent. Model FLOPs count the copies the experts run: every routed copy when dropless or padded
(the closed form), the kept ones when dropping.

Multi-head latent attention (MLA, DeepSeek-V2, arXiv:2405.04434, sec. 2.1.2; DeepSeek-V3,
arXiv:2412.19437, sec. 2.1.1): queries through a low-rank bottleneck (q_lora_rank, with an
RMSNorm), keys and values from one compressed latent (kv_lora_rank, with an RMSNorm) plus a
decoupled rotary key of qk_rope_head_dim shared by all heads; per head q and k have
qk_nope_head_dim + qk_rope_head_dim features, v has v_head_dim. The down projections are
replicated over tensor-parallel ranks, the up projections column-parallel (Megatron-Core's
``MLASelfAttention``).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from simulator.errors import WorkloadError, in_interval
from simulator.graph.op import Block, Role
from workloads.layers import Builder


class Router(str, Enum):
    SOFTMAX = "softmax"   # softmax over the experts, then top-k (Mixtral, Qwen-MoE)
    SIGMOID = "sigmoid"   # sigmoid scores, top-k, normalised over the chosen (DeepSeek-V3)


#: A trained router's MaxVio (the busiest expert's load over the mean, minus 1) by its load
#: balancing, and the routed experts it was measured over: Wang et al. 2024, "Auxiliary-Loss-
#: Free Load Balancing Strategy for Mixture-of-Experts" (arXiv:2408.15664v1), Table 2,
#: MaxVio_global (eq. 4: the experts' loads over the validation set) of the 3B model (the
#: larger of the two; 200B tokens): 0.52 with an auxiliary loss (sec. 4.1: softmax gate,
#: alpha = 0.001), 0.04 loss-free (a per-expert bias, update rate 0.001); the 1B model: 0.72
#: and 0.04. Both models: DeepSeekMoE layers of 64 routed experts, 6 per token, 2 shared
#: (Appendix, Table 5). An aux-loss router with a larger alpha (Mixtral's Megatron-Core
#: recipes: 0.01) is likely better balanced than this; no measurement of one was found. The
#: table was read as quoted from v1 (the PDF itself was not readable here, 2026-12-04); a
#: throughput benchmark's first steps from a random initialisation may route more evenly than
#: the trained router measured here (not modelled).
#: Where the validation rows use it (issue 24, read 2026-12-04): NeMo's Mixtral performance
#: runs never do: their recipes' performance mode adds MegatronTokenDropCallback (capacity
#: factor 1.0, inputs padded to capacity; nemo/collections/llm/recipes/mixtral_8x7b.py and
#: mixtral_8x22b.py at NVIDIA/NeMo v2.2.0 and v2.3.0, the 25.02 and 25.04 containers), so
#: every expert runs the mean load. The Megatron-Core Mixtral 8x7B row (dropless, aux_loss at
#: 1e-2, NVIDIA/Megatron-LM megatron/core/transformer/moe/README.md at c230e0d7c2) does, as a
#: figure measured outside its setting: ten times the alpha, 8 experts top-2 against 64 top-6,
#: and a router whose state the README leaves open (its example script: check a dropless
#: model's performance after at least 500 iterations or from a trained checkpoint). No
#: measured MaxVio of an aux-loss router at alpha 0.01, nor of Mixtral's, was found (searched:
#: the pages and docs corpora for arXiv 2408.15664's text and figures, Mixtral's routing
#: analysis, Megatron-LM's MoE README): a known limitation, not a fitted figure.
MAXVIO = {"aux_loss": 0.52, "loss_free": 0.04}
MAXVIO_EXPERTS = 64

#: The largest figures of the MoE fields, far beyond any published model (DeepSeek-V3: 256
#: routed experts, 8 per token; Qwen3: 128; Arctic: 128 experts; Switch-C: 2,048 experts).
MAX_EXPERTS = 2**14


@dataclass(frozen=True)
class MoE:
    """``[moe]`` of a workload: the MLP of every layer from ``first_dense_layers`` on."""

    experts: int
    top_k: int
    shared_experts: int = 0
    expert_ffn_hidden: int | None = None   # None: the model's ffn_hidden
    capacity_factor: float | None = None   # None: dropless (Megatron-Core's default)
    first_dense_layers: int = 0            # DeepSeek-V3: 3 (first_k_dense_replace)
    router: Router = Router.SOFTMAX
    router_bias: bool = False              # a per-expert score bias (DeepSeek-V3's
    #                                        e_score_correction_bias, not trained by gradient)
    shared_gate: bool = False              # a sigmoid gate on the shared experts (Qwen-MoE)
    imbalance: float | None = None         # busiest expert's load / the mean load
    #                                        (None: MAXVIO's figure for the router)
    pad_to_capacity: bool = False          # with a capacity_factor: pad every expert's
    #                                        input to capacity (else drop, Megatron-Core's
    #                                        default: moe_pad_expert_input_to_capacity False)
    max_nodes: int | None = None           # node-limited routing: each token's experts on at
    #                                        most this many nodes (DeepSeek-V3: 4, its
    #                                        topk_group of 8 expert groups, one per node)

    def __post_init__(self) -> None:
        object.__setattr__(self, "router", _choice(Router, self.router, "router"))
        for key in ("experts", "top_k"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or \
                    not 0 < value <= MAX_EXPERTS:
                raise WorkloadError(f"[moe] {key} = {value!r} must be an integer in 1.."
                                    f"{MAX_EXPERTS}")
        if self.max_nodes is not None and (isinstance(self.max_nodes, bool) or not isinstance(
                self.max_nodes, int) or not 0 < self.max_nodes <= MAX_EXPERTS):
            raise WorkloadError(f"[moe] max_nodes = {self.max_nodes!r} must be a positive "
                                "integer")
        for key in ("shared_experts", "first_dense_layers"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10_000:
                raise WorkloadError(f"[moe] {key} = {value!r} must be an integer >= 0")
        if self.expert_ffn_hidden is not None and (
                isinstance(self.expert_ffn_hidden, bool)
                or not isinstance(self.expert_ffn_hidden, int)
                or not 0 < self.expert_ffn_hidden <= 2**22):
            raise WorkloadError(f"[moe] expert_ffn_hidden = {self.expert_ffn_hidden!r} must "
                                "be a positive integer")
        if self.top_k > self.experts:
            raise WorkloadError(f"[moe] top_k = {self.top_k} must be at most experts = "
                                f"{self.experts} (each token picks top_k of them)")
        if self.router_bias and self.router is not Router.SIGMOID:
            raise WorkloadError("[moe] router_bias = true needs router = 'sigmoid' (DeepSeek-"
                                f"V3's score correction bias), not {self.router.value!r}")
        if self.pad_to_capacity and self.capacity_factor is None:
            raise WorkloadError("[moe] pad_to_capacity = true needs a capacity_factor (each "
                                "expert's input is padded to capacity_factor x the mean)")
        for key, low in (("capacity_factor", 0.0), ("imbalance", 1.0)):
            value = getattr(self, key)
            if value is None:
                continue
            if not in_interval(value, low, 64, low_open=key == "capacity_factor"):
                bound = "> 0" if key == "capacity_factor" else ">= 1"
                raise WorkloadError(f"[moe] {key} = {value!r} must be a number {bound} and "
                                    "at most 64")

    def ffn(self, dense_ffn: int) -> int:
        return dense_ffn if self.expert_ffn_hidden is None else self.expert_ffn_hidden

    def is_moe(self, layer: int) -> bool:
        return layer >= self.first_dense_layers


@dataclass(frozen=True)
class MLA:
    """Multi-head latent attention's sizes (DeepSeek-V2/V3 config.json names)."""

    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    q_lora_rank: int | None = None   # None: q projected from the hidden state directly

    def __post_init__(self) -> None:
        for key in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                    "q_lora_rank"):
            value = getattr(self, key)
            if value is None and key == "q_lora_rank":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 2**16:
                raise WorkloadError(f"[mla] {key} = {value!r} must be a positive integer")

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim


def _choice(kind, value, key: str):
    try:
        return kind(value)
    except ValueError:
        choices = " | ".join(repr(m.value) for m in kind)
        raise WorkloadError(f"[moe] {key} = {value!r}: choose {choices}") from None


# -- parameters (closed form) -------------------------------------------------------------------
def mla_params(c) -> int:
    """Parameters of one MLA block of transformer ``c`` (no biases: DeepSeek's)."""
    a, h, heads = c.mla, c.hidden, c.heads
    q_out = heads * a.qk_head_dim
    q = h * q_out if a.q_lora_rank is None else h * a.q_lora_rank + a.q_lora_rank \
        + a.q_lora_rank * q_out
    kv = h * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank \
        + a.kv_lora_rank * heads * (a.qk_nope_head_dim + a.v_head_dim)
    return q + kv + heads * a.v_head_dim * h


def moe_mlp_params(c, active: bool = False) -> int:
    """Parameters of one MoE block of transformer ``c``: router, routed experts (``active``:
    the top_k a token uses), shared experts and their gate."""
    m, h = c.moe, c.hidden
    f = m.ffn(c.ffn_dim)
    per_expert = (3 if c.ffn.gated else 2) * h * f
    router = h * m.experts + (m.experts if m.router_bias else 0)
    routed = (m.top_k if active else m.experts) * per_expert
    shared = m.shared_experts * per_expert + (h if m.shared_gate else 0)
    return router + routed + shared


# -- graphs -------------------------------------------------------------------------------------
def mla_attention(c, b: Builder, x: str, batch: int) -> str:
    """The MLA block's forward (``workloads.transformer._attention``'s counterpart)."""
    a, s, h, heads = c.mla, c.sequence, c.hidden, c.heads
    rows = batch * s
    b.block = Block.ATTN
    q_out = heads * a.qk_head_dim
    if a.q_lora_rank is None:
        q = b.linear("q_proj", x, rows, h, q_out, False, role=Role.COLUMN)
    else:
        q = b.linear("q_down_proj", x, rows, h, a.q_lora_rank, False)
        q = b.norm("rmsnorm", q, rows, a.q_lora_rank, bias=False)
        q = b.linear("q_up_proj", q, rows, a.q_lora_rank, q_out, False, role=Role.COLUMN)
    latent = b.linear("kv_down_proj", x, rows, h, a.kv_lora_rank + a.qk_rope_head_dim, False)
    k_rope = b.elementwise("mul", (latent,), rows * a.qk_rope_head_dim, base="rope_k")
    kv = b.norm("rmsnorm", latent, rows, a.kv_lora_rank, bias=False)
    kv = b.linear("kv_up_proj", kv, rows, a.kv_lora_rank,
                  heads * (a.qk_nope_head_dim + a.v_head_dim), False, role=Role.COLUMN)
    q = b.elementwise("mul", (q,), rows * q_out, base="rope_q")
    # each head's key: its k_nope from the up projection and the shared rotary key
    k = b.concat("k_concat", (kv, k_rope), rows * q_out)
    b.block = Block.ATTN_CORE
    n = batch * heads
    scores = b.matmul("scores", q, k, n, s, s, a.qk_head_dim, extra=(("causal", 1),))
    probs = b.softmax(scores, n * s, s)
    if c.drops_attention:
        probs = b.dropout(probs, n * s * s, base="attn_dropout")
    ctx = b.matmul("context", probs, kv, n, s, a.v_head_dim, s)
    b.block = Block.ATTN
    out = b.linear("o_proj", ctx, rows, heads * a.v_head_dim, h, False, role=Role.ROW)
    return b.dropout(out, rows * h, base="attn_out_dropout") if c.dropout else out


def moe_mlp(c, b: Builder, x: str, rows: int) -> str:
    """The MoE block's forward over ``rows`` tokens (``workloads.transformer._mlp``'s
    counterpart)."""
    m, h = c.moe, c.hidden
    f = m.ffn(c.ffn_dim)
    b.block = Block.MLP
    logits = b.linear("router", x, rows, h, m.experts, False, role=Role.ROUTER)
    if m.router is Router.SOFTMAX:
        scores = b.softmax(logits, rows, m.experts, base="router_softmax")
    else:
        scores = b.elementwise("sigmoid", (logits,), rows * m.experts, saves=("output",),
                               base="router_sigmoid",
                               params=m.experts if m.router_bias else 0)
    chosen = b.top_k(scores, rows, m.experts, m.top_k)
    slots = rows * m.top_k   # token copies, one per chosen expert
    permuted = b.permute(x, chosen, rows * h, slots * h)
    gated = c.ffn.gated
    # the shared experts first: issued while the tokens are dispatched to the routed ones
    # (simulator.parallel.expert orders them after the combine unless they overlap)
    shared = None
    if m.shared_experts:
        g = m.shared_experts * f
        if gated:
            sact = b.swiglu(b.linear("shared_gate_proj", x, rows, h, g, False, role=Role.COLUMN),
                            b.linear("shared_up_proj", x, rows, h, g, False, role=Role.COLUMN),
                            rows * g, fn=c.ffn.value)
        else:
            sact = b.activation(c.ffn.value, b.linear("shared_fc1", x, rows, h, g, False,
                                                      role=Role.COLUMN), rows * g)
        shared = b.linear("shared_down_proj", sact, rows, g, h, False, role=Role.ROW)
        if m.shared_gate:   # sigmoid(x w) * shared (Qwen-MoE's shared_expert_gate)
            gate = b.linear("shared_expert_gate", x, rows, h, 1, False)
            shared = b.elementwise("mul", (shared, gate), rows * h, saves=("inputs",),
                                   base="shared_gate_mul")
    # balanced (load 1): one device running all experts does the same work however the tokens
    # spread; simulator.parallel.expert sets the busiest rank's load when ep > 1
    if gated:
        act = b.swiglu(
            b.grouped_linear("expert_gate_proj", permuted, slots, m.experts, h, f,
                             Role.EXPERT_COLUMN),
            b.grouped_linear("expert_up_proj", permuted, slots, m.experts, h, f,
                             Role.EXPERT_COLUMN), slots * f, fn=c.ffn.value)
    else:
        act = b.activation(c.ffn.value, b.grouped_linear(
            "expert_fc1", permuted, slots, m.experts, h, f, Role.EXPERT_COLUMN), slots * f)
    out = b.grouped_linear("expert_down_proj", act, slots, m.experts, f, h, Role.EXPERT_ROW)
    y = b.unpermute(out, chosen, slots * h, rows * h)
    if shared is not None:
        y = b.add(y, shared, rows * h, base="shared_add")
    return b.dropout(y, rows * h, base="mlp_dropout") if c.dropout else y


__all__ = ["MAXVIO", "MAXVIO_EXPERTS", "MLA", "MoE", "Router", "mla_attention", "mla_params", "moe_mlp", "moe_mlp_params"]
