"""A language model's loss as frameworks run it (simulator.training.loss): the bytes of
Megatron-LM's eager cross-entropy kernels and of a fused one, in closed form."""
import pytest

from simulator.graph.op import DType, OpKind, Phase
from simulator.parallel.tensor import split
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from simulator.training.fusion import fuse_elementwise
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


def _torch_step(precision="bf16", fusion="eager"):
    dtype = DType.FP32 if precision == "fp32" else DType.BF16
    return training_graph(MODEL.forward_graph(BATCH, dtype),
                          Plan(micro_batch=BATCH, precision=precision, fusion=fusion,
                               loss_kernels="torch"))


def test_torch_loss_moves_48_bytes_per_logit():
    """PyTorch's eager F.cross_entropy on an fp32 cast (torchtitan): cast (2 + 4), log_softmax
    (cunn_SoftMaxForward: three reads of the row, one write: 16) = 22 bytes forward; the nll
    gradient written (4), log_softmax's backward (cunn_SoftMaxBackward: the gradient read for
    its sum, then gradient and output read, one write: 16), the cast back (4 + 2) = 26
    backward; per row the int64 target and the fp32 logit it picks, each way."""
    ops = _loss_ops(_torch_step())
    assert [op.fn for op in ops if op.phase is Phase.FORWARD] == [
        "to_copy", "log_softmax", "cross_entropy"]
    assert [op.fn for op in ops if op.phase is Phase.BACKWARD] == [
        "nll_backward", "log_softmax_backward", "to_copy_backward"]
    assert _bytes(ops, Phase.FORWARD) == 22 * ELEMENTS + ROWS * (8 + 4) + 4
    assert _bytes(ops, Phase.BACKWARD) == 26 * ELEMENTS + ROWS * (8 + 4)


def test_torch_loss_writes_a_new_tensor_per_kernel():
    """No pass works in place: the cast, the log-softmax, the nll gradient and the log-softmax
    gradient are 4 bytes per logit each, the gradient cast back 2; the backward of the
    log-softmax reads the forward's kept output, not the cast; the 16-bit logits (``pred``,
    deleted only after the loss returns) are read by the loss too."""
    step = _torch_step()
    sizes = {name: step.op(name).out_bytes for name in (
        "loss.to_copy", "loss.log_softmax", "grad:loss.nll_backward",
        "grad:loss.log_softmax_backward", "grad:loss.to_copy_backward")}
    assert list(sizes.values()) == [4 * ELEMENTS] * 4 + [2 * ELEMENTS]
    assert set(step.consumers("loss.to_copy")) == {"loss.log_softmax"}
    assert set(step.consumers("loss.log_softmax")) == {"loss", "grad:loss.log_softmax_backward"}
    assert "loss" in step.consumers("lm_head")
    assert set(step.consumers("grad:loss.to_copy_backward")) >= {"dgrad:lm_head",
                                                                 "wgrad:lm_head"}


def test_torch_loss_stays_unfused_under_compiled_blocks():
    """torchtitan compiles its blocks, not its loss: elementwise fusion leaves the loss's
    kernels as they are, while it still folds the blocks' vector ops."""
    step = _torch_step(fusion="compiled")
    fused = fuse_elementwise(step)
    loss = [op.name for op in _loss_ops(step)]
    assert [op.name for op in _loss_ops(fused)] == loss
    assert len(fused) < len(step)


def test_fp32_logits_skip_the_torch_casts():
    ops = _loss_ops(_torch_step(precision="fp32"))
    assert "to_copy" not in {op.fn for op in ops}
    assert "to_copy_backward" not in {op.fn for op in ops}


def test_zero3_backward_gathers_keep_no_forward_output_alive():
    """A ZeRO-3 backward gather waits for the forward's last op but reads none of its output:
    the logits are freed after the loss, not held through the backward. With PyTorch's loss
    the peak is then the backward's three fp32 tensors of the logits' size (12 bytes per
    logit), not those and the 16-bit logits."""
    from simulator import ParallelPlan
    from simulator.graph.lower import COLLECTIVE_FNS
    from simulator.parallel.rank import build_stage

    low = build_stage(MODEL.forward_graph(BATCH, DType.BF16),
                      Plan(micro_batch=BATCH, loss_kernels="torch"),
                      ParallelPlan(dp=2, zero=3), per_node=8)
    gathers = [j for j in range(len(low.out_bytes))
               if low.kind[j] == OpKind.COLLECTIVE and low.phase[j] == int(Phase.BACKWARD)
               and low.collective[j] == COLLECTIVE_FNS.index("all_gather")]
    assert gathers
    for j in gathers:
        assert not low.edge_output[low.indptr[j]:low.indptr[j + 1]].any()


def test_megatron_loss_keeps_its_eager_passes_under_compiled_blocks():
    """Megatron-Core without --cross-entropy-loss-fusion (off by default, core_r0.8.0
    arguments.py lines 1134-1136): under compiled (Transformer Engine) fusion the loss runs the
    same eager passes as under eager fusion, 38 + 14 bytes a 16-bit logit, and elementwise
    fusion leaves them apart; ``auto`` under compiled fusion reads the logits once each way."""
    forward = MODEL.forward_graph(BATCH, DType.BF16)
    eager = _loss_ops(training_graph(forward, Plan(micro_batch=BATCH)))
    step = training_graph(forward, Plan(micro_batch=BATCH, fusion="compiled",
                                        loss_kernels="megatron"))
    ops = _loss_ops(step)
    assert [(op.fn, op.phase) for op in ops] == [(op.fn, op.phase) for op in eager]
    for phase in (Phase.FORWARD, Phase.BACKWARD):
        assert _bytes(ops, phase) == _bytes(eager, phase)
    assert _bytes(ops, Phase.FORWARD) - _bytes(ops, Phase.BACKWARD) > 20 * ELEMENTS
    fused = fuse_elementwise(step)
    assert [op.name for op in _loss_ops(fused)] == [op.name for op in ops]
    auto = _loss_ops(training_graph(forward, Plan(micro_batch=BATCH, fusion="compiled")))
    assert sum(op.bytes_read for op in auto) < sum(op.bytes_read for op in ops) / 5
