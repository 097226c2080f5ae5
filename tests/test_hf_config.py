"""Hugging Face config.json files read into the zoo's transformer (workloads/hf_config.py).

Each fixture under tests/data/hf_configs/ is a published model's config.json (the README there
names the repo). Its parameter count must equal the published model's, exactly: the count
``transformers`` (4.46.3) gives for the model built from the same file
(``AutoModelForCausalLM.from_config(...).num_parameters()`` on the meta device), which is
what the model cards and papers state where they state one exactly (Pythia's README table:
162,322,944 for pythia-160m; Llama 2 7B: 6,738,415,616 in its safetensors index).
"""
import json
from pathlib import Path

import pytest

from hardware_specs.loader import load_device
from simulator import simulate
from simulator.cli import main
from workloads.hf_config import ARCHITECTURES, load_hf_config
from workloads.hf_config import PROJECTIONS as PROJECTIONS_BY_TYPE
from workloads.transformer import Ffn, Norm, Residual
from workloads.zoo import get_workload

CONFIGS = Path(__file__).parent / "data" / "hf_configs"

# fixture folder -> (published repo, parameters of the published model)
PUBLISHED = {
    "Llama-2-7b-hf": ("meta-llama/Llama-2-7b-hf", 6_738_415_616),
    "Meta-Llama-3-8B": ("meta-llama/Meta-Llama-3-8B", 8_030_261_248),
    "Mistral-7B-v0.1": ("mistralai/Mistral-7B-v0.1", 7_241_732_096),
    "Qwen2-0.5B": ("Qwen/Qwen2-0.5B", 494_032_768),
    "gemma-2b": ("google/gemma-2b", 2_506_172_416),
    "gpt2": ("openai-community/gpt2", 124_439_808),
    "pythia-160m": ("EleutherAI/pythia-160m", 162_322_944),
    "opt-125m": ("facebook/opt-125m", 125_239_296),
    "falcon-7b": ("tiiuae/falcon-7b", 6_921_720_704),
    "phi-2": ("microsoft/phi-2", 2_779_683_840),
    "Mixtral-8x7B-v0.1": ("mistralai/Mixtral-8x7B-v0.1", 46_702_792_704),
    # BertForMaskedLM and RobertaForMaskedLM (encoders): the counts their num_parameters()
    # prints (no pooler; the MLM decoder tied, its bias counted once)
    "bert-base-uncased": ("google-bert/bert-base-uncased", 109_514_298),
    "roberta-base": ("FacebookAI/roberta-base", 124_697_433),
}


def config(name: str) -> str:
    return str(CONFIGS / name / "config.json")


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_equals_the_published_one(name):
    work = get_workload(config(name))
    assert work.num_params() == PUBLISHED[name][1]
    assert work.name == name


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_the_graph_owns_the_counted_parameters(name):
    work = get_workload(config(name))
    assert work.forward_graph(1).params() == work.num_params()


def test_every_fixture_is_in_the_readme():
    readme = (CONFIGS / "README.md").read_text()
    for name, (repo, _) in PUBLISHED.items():
        assert f"`{name}/`" in readme and repo in readme


def test_architecture_facts():
    gemma = load_hf_config(config("gemma-2b"))
    assert (gemma.head_dim, gemma.q_dim, gemma.n_kv_heads) == (256, 2048, 1)
    assert gemma.ffn is Ffn.GEGLU and gemma.norm is Norm.RMSNORM and gemma.tied_embeddings
    falcon = load_hf_config(config("falcon-7b"))
    assert falcon.residual is Residual.SHARED_NORM and falcon.n_kv_heads == 1
    assert not falcon.bias and not falcon.learned_positions
    pythia = load_hf_config(config("pythia-160m"))
    assert pythia.residual is Residual.PARALLEL and not pythia.tied_embeddings
    qwen = load_hf_config(config("Qwen2-0.5B"))
    assert qwen.qkv_bias and not qwen.bias and qwen.tied_embeddings
    opt = load_hf_config(config("opt-125m"))
    assert opt.ffn is Ffn.RELU and opt.positions == 2050 and opt.seq_len == 2048
    phi = load_hf_config(config("phi-2"))
    assert phi.head_bias and phi.residual is Residual.SHARED_NORM
    # Mistral's sliding window (4096) bounds the default context: attention is then exact
    assert load_hf_config(config("Mistral-7B-v0.1")).seq_len == 4096


def test_mixtral_is_read_as_a_mixture_of_experts_like_the_zoo_preset():
    mixtral = get_workload(config("Mixtral-8x7B-v0.1"))
    assert (mixtral.moe.experts, mixtral.moe.top_k) == (8, 2)
    zoo = get_workload("mixtral-8x7b")
    assert (mixtral.num_params(), mixtral.active_params()) == \
        (zoo.num_params(), zoo.active_params()) == (46_702_792_704, 12_879_925_248)


def test_deepseek_v3_and_qwen2_moe_configs_are_read_as_their_zoo_presets(tmp_path):
    """config.json keys of deepseek-ai/DeepSeek-V3 and Qwen/Qwen1.5-MoE-A2.7B (the
    architecture keys only): the same model as the zoo's presets."""
    deepseek = {"model_type": "deepseek_v3", "num_hidden_layers": 61, "hidden_size": 7168,
                "num_attention_heads": 128, "num_key_value_heads": 128, "vocab_size": 129280,
                "intermediate_size": 18432, "moe_intermediate_size": 2048,
                "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8,
                "first_k_dense_replace": 3, "q_lora_rank": 1536, "kv_lora_rank": 512,
                "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
                "scoring_func": "sigmoid", "hidden_act": "silu", "tie_word_embeddings": False,
                "max_position_embeddings": 163840, "num_nextn_predict_layers": 1,
                "n_group": 8, "topk_group": 4}
    qwen = {"model_type": "qwen2_moe", "num_hidden_layers": 24, "hidden_size": 2048,
            "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": 151936,
            "intermediate_size": 5632, "moe_intermediate_size": 1408, "num_experts": 60,
            "num_experts_per_tok": 4, "shared_expert_intermediate_size": 5632,
            "decoder_sparse_step": 1, "mlp_only_layers": [], "hidden_act": "silu",
            "tie_word_embeddings": False, "max_position_embeddings": 8192}
    for keys, preset in ((deepseek, "deepseek-v3"), (qwen, "qwen2-moe")):
        path = tmp_path / f"{preset}.json"
        path.write_text(json.dumps(keys))
        work, zoo = get_workload(str(path)), get_workload(preset)
        assert work.num_params() == zoo.num_params()
        assert work.active_params() == zoo.active_params()
        assert work.moe.max_nodes == zoo.moe.max_nodes == (4 if preset == "deepseek-v3" else None)


def test_predict_a_config_from_the_cli(capsys):
    assert main(["predict", config("gpt2"), "--device", "a100", "--micro-batch", "2",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == 124_439_808 and out["model"] == "gpt2"
    assert out["tokens_per_s"] == pytest.approx(out["samples_per_s"] * 1024)


def test_a_models_folder_is_read_by_its_config(tmp_path, capsys):
    """A downloaded model's folder, as from_pretrained takes it, is its config.json: before,
    a folder named like a zoo alias (meta-llama/Llama-2-7b-hf's Llama-2-7b-hf/) silently ran
    the zoo model its name spells, whatever its config said, and any other folder was an
    'unknown model'. Here a folder named Llama-2-7b-hf holding Qwen2-0.5B's config."""
    import shutil

    folder = tmp_path / "Llama-2-7b-hf"
    folder.mkdir()
    shutil.copy(config("Qwen2-0.5B"), folder / "config.json")
    for spec in (str(folder), f"{folder}/"):
        assert get_workload(spec).num_params() == 494_032_768
    assert simulate(str(folder), "h100", micro_batch=1).params == 494_032_768
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", str(empty), "--device", "a100"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a folder without a config.json" in err
    assert main(["predict", "x" * 5000, "--device", "a100"]) == 2   # no path: a model name
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown model" in err and len(err) < 600


#: fixture -> the projections its architecture's modeling code runs (workloads.hf_config.PROJECTIONS)
PROJECTIONS = {"gpt2": "fused", "pythia-160m": "fused", "falcon-7b": "fused",
               "Llama-2-7b-hf": "separate", "Meta-Llama-3-8B": "separate",
               "Mistral-7B-v0.1": "separate", "Qwen2-0.5B": "separate", "gemma-2b": "separate",
               "opt-125m": "separate", "phi-2": "separate", "Mixtral-8x7B-v0.1": "separate",
               "bert-base-uncased": "separate", "roberta-base": "separate"}


def test_every_architecture_says_how_it_runs_its_projections():
    assert set(PROJECTIONS_BY_TYPE) == set(ARCHITECTURES)
    assert set(PROJECTIONS) == set(PUBLISHED)
    for name, projections in PROJECTIONS.items():
        assert load_hf_config(config(name)).projections == projections, name


def test_gpt2_runs_one_qkv_gemm_unless_the_plan_says_otherwise():
    """GPT-2's c_attn is one Conv1D of 3 x hidden outputs: one GEMM a layer for q, k and v
    (its forward and its input gradient's), not three and a sum; a plan naming separate
    projections still gets three."""
    work = load_hf_config(config("gpt2")).with_layers(1)

    def linears(result) -> int:
        ops = result.ops
        return int(((ops.kind == "matmul") & (ops.phase == "forward")
                    & ops.name.str.contains("proj|qkv|attn")).sum())

    own = simulate(work, "h100", micro_batch=1, seq_len=128)
    apart = simulate(work, "h100", micro_batch=1, seq_len=128, projections="separate")
    assert own.hardware_flops_per_step == apart.hardware_flops_per_step
    assert linears(apart) - linears(own) == 2   # q, k, v: three GEMMs -> one


def test_simulate_a_config_from_the_api():
    result = simulate(config("Qwen2-0.5B"), "h100", micro_batch=1)
    assert result.params == 494_032_768


def test_seq_len_beyond_a_learned_position_table_is_refused(capsys):
    assert main(["predict", config("gpt2"), "--device", "a100", "--seq-len", "2048"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "position table (positions = 1024)" in err


@pytest.mark.parametrize("text, message", [
    (None, "no such config file"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "one JSON object"),
    ('{"model_type": "deberta-v2", "hidden_size": 768}',
     "model_type 'deberta-v2' is not supported"),
    ('{"model_type": "llama", "hidden_size": 4096}', "num_attention_heads is missing"),
    ('{"model_type": "llama", "hidden_size": -1, "num_attention_heads": 2, '
     '"num_hidden_layers": 1, "vocab_size": 10, "intermediate_size": 8}',
     "hidden_size = -1 must be a positive integer"),
    ('{"model_type": "opt", "hidden_size": 1024, "word_embed_proj_dim": 512}',
     "projected embeddings"),
    ('{"hidden_size": 8}', "model_type is missing"),
])
def test_a_bad_config_is_one_line_and_exit_2(tmp_path, capsys, text, message):
    path = tmp_path / "config.json"
    if text is not None:
        path.write_text(text)
    assert main(["predict", str(path), "--device", "a100"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err and str(path) in err


@pytest.mark.parametrize("name, key, value, message", [
    ("Llama-2-7b-hf", "hidden_act", "swishy",
     "hidden_act = 'swishy' is not an activation of transformers (ACT2FN): gelu,"),
    ("gpt2", "activation_function", 3, "activation_function = 3 must be a string"),
    ("pythia-160m", "hidden_act", "gelu2", "hidden_act = 'gelu2' is not an activation"),
    ("phi-2", "hidden_act", "", "hidden_act = '' is not an activation"),
    ("falcon-7b", "activation", "GELU", "activation = 'GELU' is not an activation"),
])
def test_an_activation_transformers_does_not_know_is_one_line(tmp_path, capsys, name, key, value,
                                                               message):
    """A published config with its activation's name replaced: transformers' ACT2FN would
    fail on it (KeyError), so hwsim refuses it rather than price the MLP as some other one."""
    data = json.loads(Path(config(name)).read_text())
    data[key] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    assert main(["predict", str(path), "--device", "a100"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err and str(path) in err


def test_every_activation_of_the_fixtures_is_known():
    from workloads.hf_config import ACTIVATIONS

    keys = ("hidden_act", "hidden_activation", "activation_function", "activation")
    seen = {data[k] for name in PUBLISHED
            for data in [json.loads(Path(config(name)).read_text())] for k in keys if k in data}
    assert seen and seen <= ACTIVATIONS, seen - ACTIVATIONS


def _dropouts(work) -> dict[str, int]:
    """How many dropout ops of each kind one forward graph holds, by the op's name."""
    graph = work.forward_graph(1)
    counts: dict[str, int] = {}
    for op in graph.ops():
        if op.fn == "dropout":
            kind = op.name.rsplit(".", 1)[-1].rstrip("0123456789_")
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def test_opt_prices_its_hidden_dropout_and_not_its_attention_dropout():
    """facebook/opt-125m: dropout 0.1, attention_dropout 0.0. At p = 0 ATen's dropout returns
    its input and launches nothing, so the 12 layers price an output dropout after the
    attention and the MLP each, and none on the probabilities; and none after the embeddings:
    OPTDecoder adds the token and position embeddings and goes to the first layer's norm
    (transformers 4.38.1 modeling_opt.py; NeuSight's opt_13 traces list embedding, add,
    layer norm; PyTorch keeps two dropout masks a layer and no other,
    tests/data/hf_eager_memory.csv)."""
    opt = load_hf_config(config("opt-125m"))
    assert opt.dropout and not opt.drops_attention and not opt.embedding_dropout
    assert _dropouts(get_workload(config("opt-125m"))) == \
        {"attn_out_dropout": 12, "mlp_dropout": 12}


@pytest.mark.parametrize("name, keys, hidden, attention", [
    ("opt-125m", {"attention_dropout": 0.1}, 24, 12),        # none on the embeddings
    ("opt-125m", {"dropout": 0.0}, 0, 0),
    ("gpt2", {}, 25, 12),                                   # resid/embd/attn_pdrop 0.1
    ("gpt2", {"attn_pdrop": 0.0}, 25, 0),
    ("Llama-2-7b-hf", {}, 0, 0),                            # attention_dropout 0.0
    ("Llama-2-7b-hf", {"attention_dropout": 0.1}, 0, 32),   # Llama has no hidden dropout
    ("pythia-160m", {"attention_dropout": 0.1}, 0, 12),
])
def test_attention_and_hidden_dropout_are_read_apart(tmp_path, name, keys, hidden, attention):
    data = {**json.loads(Path(config(name)).read_text()), **keys}
    path = tmp_path / name / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    counts = _dropouts(get_workload(str(path)))
    assert counts.pop("attn_dropout", 0) == attention
    assert sum(counts.values()) == hidden


def test_a_sweep_row_names_the_projections_the_model_ran():
    """A sweep's or a plan's row says which projections ran: the model's own where the grid
    and flags name none (review finding: the column was empty, Plan.projections' None, for a
    GPT-2 config that ran one q, k, v GEMM), the grid's where it names them."""
    from simulator.explore.sweep import _config_columns

    device = load_device("h100")
    gpt2, llama = load_hf_config(config("gpt2")), load_hf_config(config("Meta-Llama-3-8B"))
    assert _config_columns(gpt2, device, 1, {})["projections"] == "fused"
    assert _config_columns(llama, device, 1, {})["projections"] == "separate"
    assert _config_columns(gpt2, device, 1, {"projections": "separate"})["projections"] \
        == "separate"


def _variant(tmp_path, name: str, **keys) -> str:
    data = {**json.loads(Path(config(name)).read_text()), **keys}
    path = tmp_path / name / "config.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(data))
    return str(path)


def test_bert_and_roberta_are_read_as_encoders():
    from workloads.transformer import Head, Style
    bert, roberta = (load_hf_config(config(n)) for n in ("bert-base-uncased", "roberta-base"))
    zoo = get_workload("bert-base")
    for model in (bert, roberta):
        assert model.style is Style.ENCODER and model.head is Head.LM
        assert model.projections == "separate" and model.drops_attention and model.dropout
        # the zoo's BERT-base layer, parameter for parameter
        assert model.layer_params() == zoo.layer_params()
    assert (bert.positions, bert.seq_len, bert.type_vocab) == (512, 512, 2)
    # RobertaEmbeddings numbers positions from pad_token_id + 1 = 2: 514 rows, 512 tokens
    assert (roberta.positions, roberta.seq_len, roberta.type_vocab) == (514, 512, 1)


@pytest.mark.parametrize("name, architecture", [("bert-base-uncased", "BertForQuestionAnswering"),
                                                ("roberta-base", "RobertaForQuestionAnswering")])
def test_a_question_answering_encoder_has_the_span_head(tmp_path, name, architecture):
    """*ForQuestionAnswering: the encoder without its pooler and qa_outputs (h -> 2), in place
    of the MLM head (dense h x h + h, LayerNorm 2h, the decoder's bias of vocab_size)."""
    from workloads.transformer import Head
    mlm = load_hf_config(config(name))
    qa = load_hf_config(_variant(tmp_path, name, architectures=[architecture]))
    h = mlm.hidden
    assert qa.head is Head.SPAN
    assert qa.num_params() == mlm.num_params() - (h * h + h + 2 * h + mlm.vocab) + 2 * h + 2
    assert qa.forward_graph(1).params() == qa.num_params()
    if name == "bert-base-uncased":   # 108,891,648 for the encoder without pooler + 1,538
        assert qa.num_params() == 108_893_186


@pytest.mark.parametrize("keys, message", [
    ({"architectures": ["BertForTokenClassification"]},
     "architectures = ['BertForTokenClassification']: hwsim models Bert's MLM, "
     "question-answering and sequence-classification heads only (name BertForMaskedLM, "
     "BertForQuestionAnswering or BertForSequenceClassification"),
    ({"architectures": ["BertForPreTraining"]}, "next-sentence head"),
    ({"architectures": ["BertForSequenceClassification"], "id2label": []},
     "id2label = [] must be an object"),
    ({"architectures": ["BertForSequenceClassification"], "num_labels": 0},
     "num_labels = 0 must be a positive integer"),
    ({"architectures": "BertForMaskedLM"}, "give one class name"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type = 'relative_key'"),
    ({"is_decoder": True}, "is_decoder = True"),
    ({"tie_word_embeddings": False}, "untied MLM decoder"),
    ({"hidden_dropout_prob": 1.5}, "hidden_dropout_prob = 1.5 must be a probability"),
    ({"type_vocab_size": 0}, "type_vocab_size = 0 must be a positive integer"),
])
def test_a_bert_config_hwsim_cannot_model_is_one_line(tmp_path, capsys, keys, message):
    path = _variant(tmp_path, "bert-base-uncased", **keys)
    assert main(["predict", path, "--device", "a100"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err and path in err


def test_roberta_needs_a_position_after_its_padding_offset(tmp_path, capsys):
    path = _variant(tmp_path, "roberta-base", max_position_embeddings=2)
    assert main(["predict", path, "--device", "a100"]) == 2
    assert "leaves no position after the padding offset of 2" in capsys.readouterr().err


def test_an_encoders_seq_len_beyond_its_position_table_is_refused(capsys):
    assert main(["predict", config("bert-base-uncased"), "--device", "a100",
                 "--seq-len", "1024"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "position table (positions = 512)" in err


def test_an_encoders_absent_dropout_is_bertconfigs_default(tmp_path):
    """BertConfig's hidden_dropout_prob and attention_probs_dropout_prob default to 0.1."""
    data = json.loads(Path(config("bert-base-uncased")).read_text())
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "architectures"):
        del data[key]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    model = load_hf_config(path)
    assert model.dropout and model.drops_attention and model.num_params() == 109_514_298
    assert not load_hf_config(_variant(tmp_path, "bert-base-uncased", hidden_dropout_prob=0.0,
                                       attention_probs_dropout_prob=0.0)).drops_attention


@pytest.mark.parametrize("name, architecture, published", [
    ("bert-base-uncased", "BertForSequenceClassification", 109_483_778),
    ("roberta-base", "RobertaForSequenceClassification", 124_647_170)])
def test_a_sequence_classifier_counts_the_published_parameters(tmp_path, name, architecture,
                                                               published):
    """*ForSequenceClassification with 2 labels (PretrainedConfig's default): the
    num_parameters() printed for bert-base-uncased and roberta-base fine-tuned on a binary
    task (public repositories' logs: 109,483,778 and 124,647,170); the encoder without MLM
    head plus pooler h x h + h and classifier h x 2 + 2."""
    from workloads.transformer import Head
    model = load_hf_config(_variant(tmp_path, name, architectures=[architecture]))
    assert model.head is Head.CLASSIFY and model.labels == 2
    assert model.num_params() == published
    assert model.forward_graph(2).params() == published


def test_a_classifiers_labels_are_id2labels_entries_else_num_labels(tmp_path):
    arch = ["BertForSequenceClassification"]
    three = load_hf_config(_variant(tmp_path, "bert-base-uncased", architectures=arch,
                                    id2label={"0": "a", "1": "b", "2": "c"}, num_labels=7))
    five = load_hf_config(_variant(tmp_path, "roberta-base", num_labels=5,
                                   architectures=["RobertaForSequenceClassification"]))
    assert (three.labels, five.labels) == (3, 5)
    two = load_hf_config(_variant(tmp_path, "bert-base-uncased", architectures=arch))
    assert three.num_params() - two.num_params() == 768 + 1
    # the loss is a cross-entropy over labels classes a sample, not over the vocabulary
    loss = [op for op in three.forward_graph(4).ops() if op.fn == "cross_entropy"]
    assert len(loss) == 1 and loss[0].flops == 6 * 4 * 3


def test_the_classify_head_is_an_encoders_with_positive_labels():
    """head = "classify" (also a workload TOML's [transformer] key, with labels): the pooler's
    and classifier's weights in closed form; refused on a decoder or without a class."""
    import dataclasses

    from simulator.errors import WorkloadError
    from workloads.transformer import Head
    bert = get_workload("bert-large")
    h = bert.hidden
    classify = dataclasses.replace(bert, head=Head.CLASSIFY, labels=3)
    assert classify.head_params() == h * h + h + 3 * h + 3
    assert classify.forward_graph(1).params() == classify.num_params()
    for bad in (dict(labels=0), dict(labels=True), dict(mlm_share=0.15)):
        with pytest.raises(WorkloadError, match="labels|mlm_share"):
            dataclasses.replace(bert, head=Head.CLASSIFY, **bad)
    with pytest.raises(WorkloadError, match="needs style = 'encoder'"):
        dataclasses.replace(get_workload("gpt2"), head=Head.CLASSIFY)


def _vit_base(tmp_path, **keys) -> str:
    """google/vit-base-patch16-224's hyper-parameters (its model card and Dosovitskiy et al.
    2021, Table 1: ViT-Base, 224 px, 16 px patches, 1000 ImageNet classes) under ViTConfig's
    key names; the labels' names are placeholders (no Hub file is committed for ViT)."""
    data = {"architectures": ["ViTForImageClassification"], "model_type": "vit",
            "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
            "intermediate_size": 3072, "hidden_act": "gelu", "image_size": 224,
            "patch_size": 16, "num_channels": 3, "qkv_bias": True,
            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
            "id2label": {str(i): f"LABEL_{i}" for i in range(1000)}, **keys}
    path = tmp_path / "vit-base-patch16-224" / "config.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(data))
    return str(path)


def test_a_vit_config_is_the_zoos_vit(tmp_path):
    """ViTForImageClassification of ViT-Base/16 with 1000 classes: 86,567,656 parameters,
    the count published for google/vit-base-patch16-224 and torchvision's vit_b_16
    (IMAGENET1K_V1's model card: 86,567,656 params), the zoo's vit-b16 layer for layer."""
    from workloads.transformer import Style
    vit = load_hf_config(_vit_base(tmp_path))
    zoo = get_workload("vit-b16")
    assert vit.style is Style.VISION and vit.sequence == zoo.sequence == 197
    assert vit.num_params() == zoo.num_params() == 86_567_656
    assert vit.forward_graph(1).params() == vit.num_params()
    assert not vit.dropout and not vit.drops_attention and vit.projections == "separate"
    # qkv_bias false: no bias on q, k, v (3 x 768 a layer)
    plain = load_hf_config(_vit_base(tmp_path, qkv_bias=False))
    assert vit.num_params() - plain.num_params() == 12 * 3 * 768
    ten = load_hf_config(_vit_base(tmp_path, id2label=None, num_labels=10))
    assert vit.num_params() - ten.num_params() == 990 * 769


@pytest.mark.parametrize("keys, message", [
    ({"architectures": ["ViTModel"]}, "architectures = ['ViTModel']: hwsim models ViT's image "
     "classifier only (name ViTForImageClassification"),
    ({"patch_size": 512}, "patch_size = 512 is larger than image_size = 224"),
    ({"num_channels": 0}, "num_channels = 0 must be a positive integer"),
])
def test_a_vit_config_hwsim_cannot_model_is_one_line(tmp_path, capsys, keys, message):
    path = _vit_base(tmp_path, **keys)
    assert main(["predict", path, "--device", "a100"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err and path in err
