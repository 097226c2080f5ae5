"""Zoo transformers: parameter counts against their papers, FLOPs against closed forms."""
import pytest
from hypothesis import given, settings, strategies as st

from simulator.errors import WorkloadError
from simulator.graph.op import Block, OpKind
from workloads.presets import TRANSFORMERS
from workloads.transformer import Ffn, Norm, TransformerConfig

# (model, published parameter count, source). Each within 0.5%.
PUBLISHED_PARAMS = [
    ("gpt3-175b", 174.6e9, "Brown et al. 2020, Table 2.1 (175.0B; 174.6B exact for V=50257)"),
    ("llama2-7b", 6.74e9, "Llama 2 model card / HF config: 6,738,415,616"),
    ("llama2-70b", 68.98e9, "Llama 2 70B HF config: 68,976,648,192"),
    ("bert-large", 335e6, "Devlin et al. 2019 (340M, rounded); HF BertForMaskedLM 335M"),
    ("vit-b16", 86.6e6, "Dosovitskiy et al. 2021, Table 1 (86M); timm vit_base_patch16_224 86.6M"),
    ("gpt2-small", 124.4e6, "Radford et al. 2019 / HF gpt2: 124,439,808"),
    ("llama3-8b", 8.03e9, "Dubey et al. 2024; HF Meta-Llama-3-8B: 8,030,261,248"),
    ("llama3-405b", 405.9e9, "Dubey et al. 2024, Table 3 (405B)"),
]


@pytest.mark.parametrize("name,published,source", PUBLISHED_PARAMS)
def test_parameter_counts_match_published(name, published, source):
    config = TRANSFORMERS[name]
    assert config.num_params() == pytest.approx(published, rel=5e-3), source


@pytest.mark.parametrize("name", sorted(TRANSFORMERS))
def test_graph_parameters_equal_closed_form(name):
    config = TRANSFORMERS[name]
    graph = config.forward_graph(1)
    assert graph.params() == config.num_params()
    assert graph.is_dag()


def test_exact_counts_of_reference_models():
    """Exact counts from the released checkpoints (HF safetensors index sizes)."""
    assert TRANSFORMERS["llama2-7b"].num_params() == 6_738_415_616
    assert TRANSFORMERS["llama2-70b"].num_params() == 68_976_648_192
    assert TRANSFORMERS["gpt2-small"].num_params() == 124_439_808
    assert TRANSFORMERS["llama3-8b"].num_params() == 8_030_261_248


def _gpt_forward_flops(b, s, l, h, v):
    """Narayanan et al. 2021 eq. 3 / 3: forward = 24Bslh^2 (1 + s/6h + V/12lh)."""
    return 24 * b * s * l * h * h * (1 + s / (6 * h) + v / (12 * l * h))


@pytest.mark.parametrize("name", ["gpt2-small", "gpt3-1.3b", "gpt3-175b"])
def test_gpt_forward_flops_equal_narayanan(name):
    c = TRANSFORMERS[name]
    graph = c.forward_graph(2)
    expected = _gpt_forward_flops(2, c.seq_len, c.layers, c.hidden, c.vocab)
    assert graph.model_flops() == pytest.approx(expected, rel=1e-12)


def test_llama_forward_flops_closed_form():
    """SwiGLU (3 matrices of h x f) and GQA (K, V of width kv_heads x d) per token and layer."""
    c = TRANSFORMERS["llama2-70b"]
    b, s, h, f, l, v = 1, c.seq_len, c.hidden, c.ffn_dim, c.layers, c.vocab
    kv = c.n_kv_heads * c.head_dim
    per_layer = 2 * b * s * (2 * h * h + 2 * h * kv + 3 * h * f) + 4 * b * s * s * h
    assert c.forward_graph(b).model_flops() == per_layer * l + 2 * b * s * h * v


@settings(max_examples=25, deadline=None)
@given(layers=st.integers(1, 3), heads=st.integers(1, 4), head_dim=st.integers(1, 16),
       group=st.sampled_from([None, 1, 2]), ffn=st.sampled_from(list(Ffn)),
       norm=st.sampled_from(list(Norm)), tied=st.booleans(), bias=st.booleans())
def test_random_configs_are_consistent(layers, heads, head_dim, group, ffn, norm, tied, bias):
    kv = None if group is None else (heads if heads % group else heads // group)
    c = TransformerConfig("t", layers, heads * head_dim, heads, vocab=97, seq_len=8,
                          kv_heads=kv, ffn=ffn, norm=norm, tied_embeddings=tied, bias=bias)
    graph = c.forward_graph(2)
    assert graph.params() == c.num_params()
    assert graph.is_dag()
    assert [op.kind for op in graph.ops()][-1] is OpKind.LOSS
    b, s, h, f = 2, c.seq_len, c.hidden, c.ffn_dim
    kv_width = c.n_kv_heads * c.head_dim
    matrices = 2 * h * h + 2 * h * kv_width + (3 if ffn.gated else 2) * h * f
    per_layer = 2 * b * s * matrices + 4 * b * s * s * h
    assert graph.model_flops() == layers * per_layer + 2 * b * s * h * c.vocab


def test_blocks_tag_the_attention_core():
    graph = TRANSFORMERS["gpt2-small"].forward_graph(1)
    core = {op.fn for op in graph.ops() if op.block is Block.ATTN_CORE and op.layer == 0}
    assert core == {"bmm", "softmax", "dropout"}


@pytest.mark.parametrize("kwargs,field", [
    (dict(hidden=100, heads=3), "heads"),
    (dict(hidden=64, heads=8, kv_heads=3), "kv_heads"),
    (dict(hidden=-64, heads=8), "hidden"),
    (dict(hidden=64, heads=8, layers=0), "layers"),
])
def test_bad_configs_name_the_field(kwargs, field):
    base = dict(name="bad", layers=2, vocab=10, seq_len=4)
    base.update(kwargs)
    with pytest.raises(WorkloadError, match=field):
        TransformerConfig(**base)
