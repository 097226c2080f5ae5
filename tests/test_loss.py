"""A language model's loss as frameworks run it (simulator.training.loss): the bytes of
Megatron-LM's eager cross-entropy kernels and of a fused one, in closed form."""
import pytest

from simulator.graph.op import DType, OpKind, Phase
from simulator.parallel.tensor import split
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from workloads.mlp import MLPConfig
from workloads.transformer import TransformerConfig

MODEL = TransformerConfig("t", 2, 64, 4, vocab=1000, seq_len=32)
BATCH = 3
ROWS = BATCH * MODEL.seq_len
ELEMENTS = ROWS * MODEL.vocab


def _loss_ops(step):
    """The loss's kernels: the forward chain and its gradient kernels (not the head's GEMMs)."""
    return [op for op in step.ops()
            if op.name.startswith("loss") or op.forward_of.startswith("loss")]


def _bytes(ops, phase):
    return sum(op.bytes_read + op.bytes_written for op in ops if op.phase is phase)


@pytest.mark.parametrize("precision, width", [("bf16", 2), ("fp16", 2)])
def test_eager_16_bit_moves_52_bytes_per_logit(precision, width):
    """cast (2 + 4), max 4, sub 8, exp 8, sum 4, div 8 = 38 bytes forward; mul 8, cast back
    (4 + 2) = 14 backward; plus the per-row work (megatron/core/tensor_parallel/
    cross_entropy.py, counted in training/loss.py)."""
    step = training_graph(MODEL.forward_graph(BATCH, DType.BF16),
                          Plan(micro_batch=BATCH, precision=precision))
    ops = _loss_ops(step)
    f = 4
    rows_fwd = ROWS * (f + f + f + f)            # max, sub's max, sum, div's sum
    rows_fwd += ROWS * ((8 + 8 + 4 + 4) + (1 + 8 + 4 + 4))   # the loss op's row work
    assert _bytes(ops, Phase.FORWARD) == (width + f + 4 + 8 + 8 + 4 + 8) * ELEMENTS + rows_fwd
    rows_bwd = ROWS * ((8 + 1 + 4 + 4) + 4)
    assert _bytes(ops, Phase.BACKWARD) == (8 + f + width) * ELEMENTS + rows_bwd
    assert [op.fn for op in ops if op.phase is Phase.FORWARD] == [
        "to_copy", "max", "sub", "exp", "sum", "div", "cross_entropy"]
    assert [op.fn for op in ops if op.phase is Phase.BACKWARD] == ["mul", "to_copy"]


def test_eager_fp32_has_no_casts():
    """fp32 logits: ``.float()`` is a no-op, so 32 bytes forward and 8 backward per logit."""
    step = training_graph(MODEL.forward_graph(BATCH, DType.FP32),
                          Plan(micro_batch=BATCH, precision="fp32"))
    ops = _loss_ops(step)
    big = sum(op.bytes_read + op.bytes_written for op in ops) - ROWS * (
        4 * 4 + (8 + 8 + 4 + 4) + (1 + 8 + 4 + 4) + (8 + 1 + 4 + 4) + 4)
    assert big == (4 + 8 + 8 + 4 + 8 + 8) * ELEMENTS
    assert "to_copy" not in {op.fn for op in ops}


def test_the_fp32_buffer_is_kept_for_the_backward():
    """The softmax is computed in place in the cast's fp32 buffer and saved: the backward's
    kernels read that buffer, and the in-place passes allocate nothing."""
    step = training_graph(MODEL.forward_graph(BATCH, DType.BF16), Plan(micro_batch=BATCH))
    cast = "loss.to_copy"
    assert step.op(cast).out_bytes == 4 * ELEMENTS
    readers = set(step.consumers(cast))
    assert {"grad:loss.mul", "grad:loss.to_copy", "loss.sub", "loss.exp", "loss.div"} <= readers
    assert all(step.op(f"loss.{fn}").out_bytes == 0 for fn in ("sub", "exp", "div"))
    # the 16-bit gradient of the logits feeds the head's GEMMs
    assert step.op("grad:loss.to_copy").out_bytes == 2 * ELEMENTS
    assert set(step.consumers("grad:loss.to_copy")) >= {"dgrad:lm_head", "wgrad:lm_head"}


def test_compiled_reads_the_logits_once_each_way():
    """A fused cross-entropy (flash-attention's): forward reads the 16-bit logits once and
    keeps the fp32 log-sum-exp per row; the backward reads them and writes the gradient."""
    step = training_graph(MODEL.forward_graph(BATCH, DType.BF16),
                          Plan(micro_batch=BATCH, fusion="compiled"))
    ops = _loss_ops(step)
    assert [op.kind for op in ops] == [OpKind.LOSS, OpKind.LOSS]
    forward, backward = ops
    assert forward.bytes_read == 2 * ELEMENTS + 8 * ROWS
    assert forward.bytes_written == 8 * ROWS and forward.stats_bytes == 4 * ROWS
    assert backward.bytes_read == 2 * ELEMENTS and backward.bytes_written == 2 * ELEMENTS


def test_tensor_parallel_ranks_each_pass_over_their_vocabulary_slice():
    tp = 4
    forward = split(MODEL.forward_graph(BATCH, DType.BF16), tp)
    step = training_graph(forward, Plan(micro_batch=BATCH))
    slice_ = ROWS * -(-MODEL.vocab // tp)
    assert step.op("loss.to_copy").bytes_read == 2 * slice_
    assert step.op("loss.exp").bytes_read == 4 * slice_


def test_a_classifier_keeps_its_one_loss_op():
    """Only a vocabulary head's loss is lowered to kernels; an MLP's over 10 classes is not."""
    mlp = MLPConfig("m", 32, (64,), 10)
    step = training_graph(mlp.forward_graph(8, DType.BF16), Plan(micro_batch=8))
    losses = [op for op in step.ops() if op.fn == "cross_entropy"]
    assert [op.kind for op in losses] == [OpKind.LOSS, OpKind.LOSS]
    assert not any(op.fn in ("to_copy", "exp", "div") for op in step.ops())
