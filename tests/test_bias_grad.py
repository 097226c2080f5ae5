"""A biased linear's bias gradient under eager fusion (simulator.training.backward): a sum of
the output gradient over its rows, its own kernel (autograd's sum_to for addmm's broadcast
bias; Megatron-LM's grad_output.sum(dim=0)); fused away under compiled fusion."""
import pytest

from simulator.graph.op import DType, OpKind, Task
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from workloads.transformer import TransformerConfig

BATCH, SEQ, HIDDEN = 2, 64, 256


def _bgrads(bias=True, fusion="eager", precision="bf16"):
    model = TransformerConfig("m", 2, HIDDEN, 4, vocab=500, seq_len=SEQ, bias=bias)
    step = training_graph(model.forward_graph(BATCH, DType.BF16),
                          Plan(micro_batch=BATCH, precision=precision, fusion=fusion))
    return [op for op in step.ops() if op.name.startswith("bgrad")]


def test_one_bias_sum_per_biased_linear():
    """q, k, v, o, fc1, fc2 per layer: each reads its output gradient (rows x n x 2 bytes)
    and writes n gradient elements."""
    ops = _bgrads()
    assert len(ops) == 2 * 6
    assert all(op.kind is OpKind.REDUCTION and op.task is Task.WEIGHT_GRAD for op in ops)
    rows = BATCH * SEQ
    widths = sorted(op.bytes_written // 2 for op in ops)
    assert widths == sorted([HIDDEN] * 10 + [4 * HIDDEN] * 2)
    assert sum(op.bytes_read for op in ops) == 2 * rows * 2 * (5 * HIDDEN + 4 * HIDDEN)


@pytest.mark.parametrize("fields", [{"bias": False}, {"fusion": "compiled"}])
def test_no_bias_or_a_fused_epilogue_adds_none(fields):
    assert not _bgrads(**fields)
