"""Extractive question answering's span head (``TransformerConfig.head = Head.SPAN``): one
linear hidden -> 2 at every position and a cross-entropy over the sequence's positions for the
start and for the end logits, in place of the MLM / LM head (NVIDIA DeepLearningExamples
PyTorch/LanguageModeling/BERT ``modeling.py`` BertForQuestionAnswering, ``run_squad.py``'s
loss; the run Lambda's ``bert_*_squad`` benchmark rows time)."""
import dataclasses
from pathlib import Path

import pytest

from simulator.errors import WorkloadError
from workloads.transformer import Head, Style, TransformerConfig
from workloads.zoo import get_workload, load_workload_toml

BERT = get_workload("bert-large")
#: As Lambda's SQuAD runs hold it: sequence 384 of a 512-row position table, vocab_size 30528.
SQUAD = dataclasses.replace(BERT, head=Head.SPAN, seq_len=384, positions=512, vocab=30528)


def _ops(work, batch=4):
    graph = work.forward_graph(batch)
    return {op.name.split(".")[-1]: op for op in (graph.op(n) for n in graph.names())}


def _layer_ops(work, batch=2):
    graph = work.forward_graph(batch)
    return [(n, graph.op(n).flops) for n in graph.names() if graph.op(n).layer >= 0]


def test_off_by_default():
    assert BERT.head is Head.LM and "qa_outputs" not in _ops(BERT)


@pytest.mark.parametrize("name, logged, pooler", [("bert-large", 335_150_082, 1024 * 1025),
                                                  ("bert-base", 109_488_386, 768 * 769)])
def test_parameters_are_the_logged_count_less_the_unused_pooler(name, logged, pooler):
    """lambdal/deeplearning-benchmark aa5addb, pytorch/results/H100_80GB_SXM5_v1/
    PyTorch_bert_{large,base}_squad_FP16/*.txt: ``model_weights_num`` 335,150,082 and
    109,488,386. DeepLearningExamples' BertModel also holds the pooler (hidden x hidden + its
    bias), which the span head never reads (no gradient): hwsim does not build it."""
    work = dataclasses.replace(get_workload(name), head=Head.SPAN, seq_len=384, positions=512,
                               vocab=30528)
    assert work.num_params() == logged - pooler


def test_the_head_is_a_linear_to_two_and_a_loss_over_positions_closed_form():
    ops = _ops(SQUAD, batch=4)
    assert "lm_head" not in ops and "mlm_dense" not in ops
    assert ops["qa_outputs"].flops == 2 * 4 * 384 * 1024 * 2
    # start and end: 2 x 4 rows of 384 classes, the logits' own 4 x 384 x 2 elements
    plain = _ops(dataclasses.replace(BERT, seq_len=384, positions=512, vocab=30528), batch=4)
    assert ops["loss"].flops * 30528 == plain["loss"].flops * 2
    # the encoder's layers are untouched
    assert _layer_ops(SQUAD) == _layer_ops(dataclasses.replace(SQUAD, head=Head.LM))


def test_span_head_cuts_the_vocabulary_head_flops():
    """The MLM head at every position is 2 x rows x h x (h + V) FLOPs forward; the span head
    2 x rows x h x 2: the step's forward FLOPs fall by about that difference."""
    mlm = dataclasses.replace(SQUAD, head=Head.LM)
    drop = sum(op.flops for op in _ops(mlm, 2).values()) - \
        sum(op.flops for op in _ops(SQUAD, 2).values())
    rows, h, v = 2 * 384, 1024, 30528
    assert drop == pytest.approx(2 * rows * h * (h + v - 2), rel=0.01)


def test_a_decoder_keeps_its_final_norm():
    gpt = TransformerConfig("g", 2, 256, 4, vocab=1000, seq_len=128, head=Head.SPAN)
    ops = _ops(gpt, 2)
    assert "qa_outputs" in ops and any(op.kind.name == "NORM" and op.layer < 0
                                       for op in ops.values())
    assert gpt.head_params() == 2 * 256 + 2 + 2 * 256


@pytest.mark.parametrize("change", [{"style": Style.VISION}, {"mlm_share": 0.15},
                                    {"head": "span"}, {"head": "qa"}])
def test_refused_with_the_field_named(change):
    with pytest.raises(WorkloadError, match="head"):
        dataclasses.replace(BERT, head=change.pop("head", Head.SPAN), **change)


def test_a_workload_file_names_it(tmp_path: Path):
    path = tmp_path / "squad.toml"
    path.write_text('[transformer]\nlayers = 2\nhidden = 128\nheads = 2\nvocab = 100\n'
                    'seq_len = 64\nhead = "span"\n')
    assert load_workload_toml(str(path)).head is Head.SPAN
    path.write_text(path.read_text().replace('"span"', '"qa"'))
    with pytest.raises(WorkloadError, match=r"head = 'qa': choose 'lm' \| 'span'"):
        load_workload_toml(str(path))


def test_a_workload_file_describes_the_squad_model_of_lambdas_rows(tmp_path: Path):
    """BERT-large fine-tuned on SQuAD as a TOML file: the encoder's style, token types and
    512-row position table under a 384-token sequence, and the span head, give the model of
    the lambda-bert-large rows (the logged count less the pooler)."""
    path = tmp_path / "bert-large-squad.toml"
    path.write_text('[transformer]\nlayers = 24\nhidden = 1024\nheads = 16\nvocab = 30528\n'
                    'seq_len = 384\npositions = 512\nstyle = "encoder"\ntype_vocab = 2\n'
                    'head = "span"\n')
    work = load_workload_toml(str(path))
    assert work.style is Style.ENCODER and work.num_params() == 335_150_082 - 1024 * 1025
    assert _layer_ops(work) == _layer_ops(dataclasses.replace(SQUAD, name=work.name))


def test_a_workload_file_refuses_what_it_cannot_describe(tmp_path: Path):
    """A vision style in a file would ignore its seq_len (a ViT's sequence is its patches, whose
    image size and patch are no keys) and an encoder's sequence longer than its position table
    has tokens with no position row: both refused in one line naming the key."""
    base = 'layers = 2\nhidden = 64\nheads = 4\nvocab = 1000\nseq_len = 384\n'
    path = tmp_path / "m.toml"
    path.write_text(f'[transformer]\n{base}style = "vision"\n')
    with pytest.raises(WorkloadError, match=r"style = 'vision' cannot be described in a file"):
        load_workload_toml(str(path))
    path.write_text(f'[transformer]\n{base}style = "encoder"\npositions = 128\n')
    with pytest.raises(WorkloadError, match=r"seq_len = 384 is longer than its learned "
                                            r"position table \(positions = 128\)"):
        load_workload_toml(str(path))
    path.write_text(f'[transformer]\n{base}style = "encoder"\npositions = 512\n')
    assert load_workload_toml(str(path)).positions == 512
