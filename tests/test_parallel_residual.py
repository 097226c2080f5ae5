"""A parallel-residual layer under tensor parallelism (simulator.parallel.tensor): the attention's
and the MLP's row-parallel partial sums are added before one all-reduce (GPT-NeoX's
gpt_j_residual, EleutherAI/gpt-neox 53112bf megatron/model/transformer.py), where a sequential
layer reduces each."""
import pytest

from simulator import simulate
from simulator.graph.op import DType
from simulator.parallel.tensor import split
from workloads.transformer import Residual, TransformerConfig

LAYERS = 3


def _model(residual, dropout=False):
    return TransformerConfig("m", LAYERS, 1024, 8, vocab=2000, seq_len=256,
                             learned_positions=False, residual=residual, dropout=dropout)


def _collectives(graph, fn):
    return [op for op in graph.ops() if op.fn == fn]


@pytest.mark.parametrize("residual, per_layer", [
    (Residual.SEQUENTIAL, 2), (Residual.PARALLEL, 1), (Residual.SHARED_NORM, 1)])
@pytest.mark.parametrize("dropout", [False, True])
def test_all_reduces_per_layer(residual, per_layer, dropout):
    """One all-reduce for the embedding, then ``per_layer`` per layer, each of the whole
    activation (tokens x hidden x 2 bytes)."""
    graph = split(_model(residual, dropout).forward_graph(2, DType.BF16), 4)
    reduces = _collectives(graph, "all_reduce")
    assert len(reduces) == 1 + LAYERS * per_layer
    assert {op.bytes_read for op in reduces} == {2 * 256 * 1024 * 2}


def test_sequence_parallel_reduce_scatters_the_sum_once():
    graph = split(_model(Residual.PARALLEL).forward_graph(2, DType.BF16), 4,
                  sequence_parallel=True)
    assert len(_collectives(graph, "reduce_scatter")) == 1 + LAYERS


def test_one_rank_is_unsplit():
    """tp = 1: no collectives, and the parallel layer's two adds (attn + mlp, then x + it)."""
    graph = split(_model(Residual.PARALLEL).forward_graph(2, DType.BF16), 1)
    assert not _collectives(graph, "all_reduce")
    assert sum(op.fn == "add" for op in graph.ops()) == 2 * LAYERS


def test_parallel_residual_moves_less_than_sequential():
    parallel = simulate(_model(Residual.PARALLEL), "dgx-a100", micro_batch=2, tp=4, dp=2)
    sequential = simulate(_model(Residual.SEQUENTIAL), "dgx-a100", micro_batch=2, tp=4, dp=2)
    assert parallel.parallel["communication_s"] < sequential.parallel["communication_s"]
    assert parallel.step_time_s < sequential.step_time_s
