"""BERT's MLM head on the masked positions alone (``TransformerConfig.mlm_share``), as NVIDIA's
MLPerf BERT runs it with --dense_seq_output (training_results_v5.0 0fdc28f,
Lenovo/benchmarks/bert/modeling.py, BertPreTrainingHeads.forward: index_select of the masked
positions, then the head). Off by default: every position, as Hugging Face's BERT."""
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.errors import WorkloadError
from workloads.transformer import Style, TransformerConfig
from workloads.zoo import get_workload

BERT = get_workload("bert-large")


def _ops(work, batch=4):
    graph = work.forward_graph(batch)
    return {op.name.split(".")[-1]: op for op in (graph.op(n) for n in graph.names())}


def test_off_by_default_every_position():
    ops = _ops(BERT)
    assert BERT.mlm_share is None and "mlm_gather" not in ops
    assert ops["lm_head"].flops == 2 * 4 * 512 * 1024 * 30522


def test_the_head_runs_on_the_gathered_share_closed_form():
    """At 0.15 (BERT's masked_lm_prob) a batch of 4 x 512 positions keeps round(2048 x 0.15) =
    307 rows: the gather moves 307 x 1024 elements, the MLM transform and the tied decoder
    are 2 x 307 x 1024 x 1024 and 2 x 307 x 1024 x 30522 FLOPs."""
    ops = _ops(dataclasses.replace(BERT, mlm_share=0.15))
    es = ops["mlm_gather"].bytes_written // (307 * 1024)
    assert es in (2, 4) and ops["mlm_gather"].bytes_written == 307 * 1024 * es
    assert ops["mlm_dense"].flops == 2 * 307 * 1024 * 1024
    assert ops["lm_head"].flops == 2 * 307 * 1024 * 30522
    # the encoder's layers are untouched
    plain = _ops(BERT)
    assert [name for name in plain if name != "lm_head" and plain[name].layer >= 0] == \
        [name for name in ops if ops[name].layer >= 0 and name != "lm_head"]


@settings(max_examples=25, deadline=None)
@given(low=st.floats(0.01, 1.0), high=st.floats(0.01, 1.0))
def test_more_share_never_fewer_flops(low, high):
    low, high = sorted((low, high))
    flops = [sum(op.flops for op in _ops(dataclasses.replace(BERT, mlm_share=s), 2).values())
             for s in (low, high)]
    assert flops[0] <= flops[1] <= sum(op.flops for op in _ops(BERT, 2).values())


@pytest.mark.parametrize("value", [0, 0.0, -0.1, 1.5, True, "0.15"])
def test_a_share_outside_0_1_is_refused(value):
    with pytest.raises(WorkloadError, match="mlm_share"):
        dataclasses.replace(BERT, mlm_share=value)


def test_only_an_encoder_has_an_mlm_head():
    gpt = TransformerConfig("g", 2, 256, 4, vocab=1000, seq_len=128)
    assert gpt.style is Style.DECODER
    with pytest.raises(WorkloadError, match="mlm_share"):
        dataclasses.replace(gpt, mlm_share=0.15)
