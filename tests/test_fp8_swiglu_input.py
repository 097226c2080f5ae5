"""The SwiGLU's input kept in fp8 for its backward (``Plan.fp8_swiglu_input``, Megatron-core's
``activation_func_fp8_input_store``, MLPerf's NeMo LoRA FP8_ACT=1; simulator.training.fp8)."""
from dataclasses import replace

import pytest

from simulator import simulate
from simulator.cli import main
from simulator.graph.op import Phase
from simulator.parallel.rank import stage_forward
from simulator.plan.parallel import ParallelPlan
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from simulator.training.fp8 import RESTORE, STORE
from simulator.training.saved import activation_bytes
from workloads.zoo import MODELS

LLAMA = MODELS["llama2-7b"]
T, F, L = 512, 11008, 32          # tokens, Llama 2 7B's SwiGLU width and layers
GATE_UP = 2 * F * T               # the SwiGLU's input elements per layer (gate and up)


@pytest.mark.parametrize("precision", ["bf16", "fp8"])
def test_saved_swiglu_input_is_one_byte_per_element(precision):
    """The closed form: each layer keeps gate and up at 1 byte instead of 2."""
    small = LLAMA.with_layers(2)
    saved = {}
    for store in (False, True):
        plan = Plan(micro_batch=1, precision=precision, fp8_swiglu_input=store)
        forward = stage_forward(replace(small, seq_len=T), plan, ParallelPlan(), 0, None)[1]
        saved[store] = activation_bytes(forward, plan)
    assert saved[False] - saved[True] == 2 * GATE_UP * (2 - 1)


def test_store_and_restore_kernels_around_each_swiglu():
    """One cast to fp8 per SwiGLU in the forward (reads 2, writes 1 byte per element, kept) and
    one back in the backward (reads 1, writes 2), which the SwiGLU's backward reads instead of
    gate and up."""
    plan = Plan(micro_batch=1, fp8_swiglu_input=True)
    forward = stage_forward(replace(LLAMA.with_layers(2), seq_len=T), plan, ParallelPlan(), 0,
                            None)[1]
    step = training_graph(forward, plan)
    stores = [step.op(n) for n in step.names() if step.op(n).fn == STORE]
    restores = [step.op(n) for n in step.names() if step.op(n).fn == RESTORE]
    assert len(stores) == len(restores) == 2
    for store, restore in zip(stores, restores):
        assert (store.bytes_read, store.bytes_written, store.out_bytes) == (
            2 * GATE_UP, GATE_UP, GATE_UP)
        assert (restore.bytes_read, restore.bytes_written) == (GATE_UP, 2 * GATE_UP)
        assert store.phase is Phase.FORWARD and restore.phase is Phase.BACKWARD
    for name in step.names():
        op = step.op(name)
        if op.fn == "swiglu" and op.phase is Phase.BACKWARD:
            assert any(step.op(s).fn == RESTORE for s in step.inputs(name))
            assert not any(step.op(s).phase is Phase.FORWARD for s in step.inputs(name))


def test_fp8_swiglu_input_lowers_the_peak_and_adds_two_passes():
    """Less memory at the peak (the 16-bit gate and up freed after the forward), never a
    faster step (two more memory-bound kernels), the same FLOPs."""
    kw = dict(micro_batch=1, seq_len=2048, precision="fp8")
    plain = simulate("llama2-7b", "h100-sxm5-80gb", **kw)
    stored = simulate("llama2-7b", "h100-sxm5-80gb", fp8_swiglu_input=True, **kw)
    assert stored.peak_memory_bytes < plain.peak_memory_bytes
    assert stored.step_time_s >= plain.step_time_s
    assert stored.flops_per_step == plain.flops_per_step


def test_a_model_without_swiglu_is_refused_in_one_line(capsys):
    assert main(["predict", "gpt2-small", "--device", "a100", "--fp8-swiglu-input"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "fp8_swiglu_input = true needs a SwiGLU MLP" in err
