"""fp8 through te.Linear only (Plan.fp8_modules = linear: llm-foundry's fc_type = 'te'): the
norms write 16 bits, every GEMM input is cast from 16 bits, and with no is_first_microbatch
Transformer Engine casts each weight at every forward call (linear.py at TE v0.13:
update_fp8_weights = is_first_microbatch is None or is_first_microbatch). Closed form."""
import pytest

from simulator.errors import PlanError
from simulator.graph.op import DType, Phase
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from simulator.training.fp8 import CAST
from workloads.transformer import TransformerConfig


def _step(layers, hidden, heads, seq, batch, **plan):
    c = TransformerConfig("t", layers, hidden, heads, vocab=100, seq_len=seq)
    return c, training_graph(c.forward_graph(batch, DType.BF16),
                             Plan(micro_batch=batch, precision=plan.pop("precision", "fp8"),
                                  **plan))


def _casts(step, phase, weights):
    return [step.op(n) for n in step.names() if step.op(n).fn == CAST
            and step.op(n).phase is phase and (":weight:" in n) == weights]


def _moved(ops):
    return sum(op.bytes_read + op.bytes_written for op in ops)


@pytest.mark.parametrize("layers, hidden, heads, seq, batch", [
    (1, 64, 4, 16, 2), (3, 128, 8, 32, 1), (2, 96, 3, 8, 5)])
def test_linear_casts_in_closed_form(layers, hidden, heads, seq, batch):
    """Per layer (q, k, v, o, fc1, fc2): forward, the four GEMM inputs cast from 16 bits
    (2 + 2 bytes per element: 3 of h, 1 of f per row) and the six weights cast and transposed
    (2 + 2 per element) once per micro-batch, none in the optimizer phase; the backward's
    output-gradient casts as with the fused modules."""
    c, step = _step(layers, hidden, heads, seq, batch, fp8_modules="linear")
    rows, h, f = batch * seq, hidden, c.ffn_dim
    assert _moved(_casts(step, Phase.FORWARD, False)) == layers * rows * (12 * h + 4 * f)
    weights = _casts(step, Phase.FORWARD, True)
    assert len(weights) == 6 * layers
    assert _moved(weights) == layers * 4 * (4 * h * h + 2 * h * f)
    assert not _casts(step, Phase.OPTIMIZER, True)
    _, fused = _step(layers, hidden, heads, seq, batch)
    assert _moved(_casts(step, Phase.BACKWARD, False)) == \
        _moved(_casts(fused, Phase.BACKWARD, False))
    # the norms write 16 bits, as in bf16
    _, bf16 = _step(layers, hidden, heads, seq, batch, precision="bf16")
    for name in ("L0.layernorm", "L0.layernorm#1"):
        assert step.op(name).bytes_written == bf16.op(name).bytes_written


def test_recomputed_forward_casts_the_weights_again():
    """With full recomputation te.Linear's forward runs twice per micro-batch: 12 weight casts
    per layer, against the fused modules' 6 per step."""
    _, step = _step(2, 64, 4, 16, 2, fp8_modules="linear", recompute="full")
    assert len(_casts(step, Phase.FORWARD, True)) == len(_casts(step, Phase.RECOMPUTE, True)) \
        == 2 * 6
    _, fused = _step(2, 64, 4, 16, 2, recompute="full")
    assert len(_casts(fused, Phase.OPTIMIZER, True)) == 2 * 6
    assert not _casts(fused, Phase.FORWARD, True) + _casts(fused, Phase.RECOMPUTE, True)


def test_weight_cast_runs_just_before_its_gemm():
    _, step = _step(1, 64, 4, 16, 2, fp8_modules="linear")
    order = {n: i for i, n in enumerate(step.names())}
    for op in _casts(step, Phase.FORWARD, True):
        gemm = op.name.split(":weight:")[1]
        assert step.consumers(op.name) == [gemm]
        assert order[step.inputs(gemm)[0]] < order[op.name] < order[gemm]


def test_linear_costs_more_per_step_than_fused():
    """More cast traffic with more micro-batches: the weight casts scale with them."""
    from simulator import simulate
    from simulator.plan.parallel import ParallelPlan
    c = TransformerConfig("t", 2, 256, 4, vocab=100, seq_len=64)
    times = {m: simulate(c, "h100-sxm5-80gb", Plan(micro_batch=2, global_batch=16,
                                                     precision="fp8", fp8_modules=m),
                         parallel=ParallelPlan()).step_time_s for m in ("fused", "linear")}
    assert times["linear"] > times["fused"]


def test_unknown_fp8_modules_is_refused():
    with pytest.raises(PlanError, match="fp8_modules"):
        Plan(fp8_modules="layernorm")
