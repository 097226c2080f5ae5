"""fp8 with per-tensor current scaling (Plan.fp8_recipe = current; simulator.training.fp8): an
amax pass over each 16-bit tensor before its cast (TE's Float8CurrentScalingQuantizer:
nvte_compute_amax, then the cast), priced as one more read in the cast op, and norms that take
the amax but write 16 bits (normalization.cpp, Impl::FUSED_NORM_AMAX_FP8). Bytes in closed
form against delayed scaling."""
import pytest

from simulator.graph.op import DType, Phase
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from simulator.training.fp8 import CAST
from workloads.transformer import TransformerConfig


def _step(layers, hidden, heads, seq, batch, recipe="delayed", precision="fp8"):
    c = TransformerConfig("t", layers, hidden, heads, vocab=100, seq_len=seq)
    plan = Plan(micro_batch=batch, precision=precision, fp8_recipe=recipe)
    return c, training_graph(c.forward_graph(batch, DType.BF16), plan)


def _ops(step, fn, phase):
    return [step.op(n) for n in step.names()
            if step.op(n).fn == fn and step.op(n).phase is phase]


def _bytes(ops):
    return sum(op.bytes_read + op.bytes_written for op in ops)


@pytest.mark.parametrize("layers, hidden, heads, seq, batch", [
    (1, 64, 4, 16, 2), (3, 128, 8, 32, 1), (2, 96, 3, 8, 5)])
def test_cast_bytes_in_closed_form(layers, hidden, heads, seq, batch):
    """Per layer of a GPT (rows r = batch x seq, a = 2 bytes): forward, the two norm outputs
    are cast from 16 bits (2 + 2 each, no amax pass: the norm took it) and the attention and
    GeLU outputs are read twice, amax then cast (2 + 2 + 2); backward, each of the six output
    gradients read twice before its cast (2 + 2 + 2); each weight once per step (2 + 2 + 2)."""
    c, current = _step(layers, hidden, heads, seq, batch, "current")
    _, delayed = _step(layers, hidden, heads, seq, batch)
    rows, h, f = batch * seq, hidden, c.ffn_dim
    assert _bytes(_ops(current, CAST, Phase.FORWARD)) == layers * rows * (2 * 4 * h + 6 * h
                                                                           + 6 * f)
    assert _bytes(_ops(current, CAST, Phase.BACKWARD)) == layers * rows * 6 * (5 * h + f)
    assert _bytes(_ops(current, CAST, Phase.OPTIMIZER)) == layers * 6 * (4 * h * h + 2 * h * f)
    for phase in (Phase.BACKWARD, Phase.OPTIMIZER):   # delayed: 2 + 2, the amax in the cast
        assert 2 * _bytes(_ops(current, CAST, phase)) == 3 * _bytes(_ops(delayed, CAST, phase))
    # the layers' norms write 16 bits, as without fp8; under delayed scaling they write fp8
    _, bf16 = _step(layers, hidden, heads, seq, batch, precision="bf16")
    for name in ("L0.layernorm", "L0.layernorm#1"):
        assert current.op(name).bytes_written == bf16.op(name).bytes_written
        assert bf16.op(name).bytes_written - delayed.op(name).bytes_written == rows * h


def test_the_same_casts_in_the_same_places():
    """Current scaling changes bytes, not the graph: the same cast ops, reading and feeding
    the same ops, and what the forward keeps for the weight gradients (the fp8 copy) the
    same."""
    _, current = _step(2, 64, 4, 16, 2, "current")
    _, delayed = _step(2, 64, 4, 16, 2)
    casts = [n for n in delayed.names() if delayed.op(n).fn == CAST]
    assert casts == [n for n in current.names() if current.op(n).fn == CAST]
    for name in casts:
        assert current.inputs(name) == delayed.inputs(name)
        assert current.consumers(name) == delayed.consumers(name)
        assert current.op(name).out_bytes == delayed.op(name).out_bytes


def test_current_scaling_costs_time_not_flops():
    from simulator import simulate

    kw = {"micro_batch": 2, "global_batch": 16, "seq_len": 2048, "precision": "fp8"}
    delayed = simulate("gpt3-1.3b", "h100", **kw)
    current = simulate("gpt3-1.3b", "h100", fp8_recipe="current", **kw)
    assert current.step_time_s > delayed.step_time_s
    assert current.flops_per_step == pytest.approx(delayed.flops_per_step)
    # bf16 has no casts to scale: the recipe changes nothing
    bf16 = {**kw, "precision": "bf16"}
    assert (simulate("gpt3-1.3b", "h100", fp8_recipe="current", **bf16).step_time_s
            == simulate("gpt3-1.3b", "h100", **bf16).step_time_s)
