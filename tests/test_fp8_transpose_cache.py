"""fp8 frozen weights without Transformer Engine's transpose cache (``Plan.fp8_transpose_cache``
false: Megatron-core's ``disable_parameter_transpose_cache``, MLPerf v4.0's SMC H100 LoRA runs):
the weight transposed before each data-gradient GEMM, every micro-batch
(``simulator.training.finetune.transpose_fp8``; TE 090e724 ``linear.py`` lines 410-411)."""
from __future__ import annotations

import pytest

from benchmarks import energy_validation as ev
from simulator import simulate
from simulator.cli import main
from simulator.errors import PlanError
from simulator.graph.op import DType, OpKind, Task
from simulator.parallel.rank import stage_forward
from simulator.plan.parallel import ParallelPlan
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from simulator.training.finetune import FP8_TRANSPOSE, dequantize
from workloads.zoo import MODELS

LLAMA = MODELS["llama2-7b"]
H, F = 4096, 11008
QKV, O, MLP = 3 * H * H, H * H, 3 * H * F     # a layer's frozen linears' weights, by block


def _step(cache: bool, layers: int = 2, tp: int = 1):
    plan = Plan(micro_batch=1, finetune="lora", lora_rank=16, precision="fp8",
                frozen_weights="fp8", fp8_transpose_cache=cache)
    parallel = ParallelPlan(tp=tp)
    forward = stage_forward(LLAMA.with_layers(layers), plan, parallel, 0, None)[1]
    return dequantize(training_graph(forward, plan), plan)


@pytest.mark.parametrize("tp", [1, 4])
def test_one_transpose_before_each_data_gradient_on_a_frozen_fp8_weight(tp):
    """Two layers of Llama 2 7B, LoRA on q, k, v: every frozen linear gets a data gradient but
    the first layer's q, k and v (nothing trained lies upstream of them), so 2 x 7 - 3
    transposes, each reading and writing 1 byte per weight element the rank holds: the two
    layers' linears less the first's q, k, v, over tp. None with the cache on."""
    step = _step(False, tp=tp)
    ops = [step.op(n) for n in step.names() if step.op(n).fn == FP8_TRANSPOSE]
    assert len(ops) == 2 * 7 - 3
    assert {(op.kind, op.dtype, op.task) for op in ops} == {
        (OpKind.COPY, DType.FP8, Task.DATA_GRAD)}
    elements = (2 * (QKV + O + MLP) - QKV) // tp
    assert sum(op.bytes_read for op in ops) == sum(op.bytes_written for op in ops) == elements
    for op in ops:   # each feeds its own data-gradient GEMM on the same weight
        (gemm,) = step.consumers(op.name)
        assert gemm == op.name.split(":", 1)[1] and step.op(gemm).task is Task.DATA_GRAD
        assert op.bytes_read == step.op(gemm).k * step.op(gemm).n
    cached = _step(True, tp=tp)
    assert not any(cached.op(n).fn == FP8_TRANSPOSE for n in cached.names())
    assert set(step.names()) - set(cached.names()) == {op.name for op in ops}


def test_the_transposes_slow_every_micro_batch():
    """The same step plus the transposes: slower, more so with more micro-batches; the same
    FLOPs; the transposed copy freed after its GEMM, so no more memory at the peak."""
    kw = dict(micro_batch=1, seq_len=1024, finetune="lora", precision="fp8",
              frozen_weights="fp8")
    times = {}
    for gb in (1, 4):
        cached = simulate("llama2-7b", "h100-sxm5-80gb", global_batch=gb, **kw)
        fresh = simulate("llama2-7b", "h100-sxm5-80gb", global_batch=gb,
                         fp8_transpose_cache=False, **kw)
        assert fresh.flops_per_step == cached.flops_per_step
        assert fresh.peak_memory_bytes == cached.peak_memory_bytes
        times[gb] = fresh.step_time_s - cached.step_time_s
    assert 0 < times[1] < times[4]


def test_only_fp8_frozen_weights_take_it(capsys):
    for kw in ({}, {"finetune": "lora"}, {"finetune": "lora", "frozen_weights": "nf4"}):
        with pytest.raises(PlanError, match="fp8_transpose_cache = false needs frozen_weights"):
            Plan(micro_batch=1, fp8_transpose_cache=False, **kw)
    assert main(["predict", "llama2-7b", "--device", "h100-sxm5-80gb", "--micro-batch", "1",
                 "--seq-len", "512", "--precision", "fp8", "--no-fp8-transpose-cache"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "fp8_transpose_cache = false needs frozen_weights" in err
    with pytest.raises(PlanError, match="fp8_transpose_cache = 'no' must be true or false"):
        Plan(micro_batch=1, fp8_transpose_cache="no")


def test_the_metered_h100_lora_rows_set_it_as_their_config_does():
    """SMC's v4.0 runs set disable_parameter_transpose_cache (their yaml line 91); Lenovo's
    v5.0 B200 run leaves the cache on (train.py line 222, disable_parameter_transpose_cache
    False)."""
    for row in ("lora-1node", "lora-8node"):
        assert ev.EXTRA[row]["fp8_transpose_cache"] is False
    assert ev.EXTRA["lora-b200"].get("fp8_transpose_cache", True) is True


@pytest.mark.parametrize("device", ["b200", "gb200", "mi300x", "gaudi3"])
def test_refused_where_fp8_gemms_need_no_transpose(device, capsys):
    """From compute capability 10.0 (B200, GB200) TE's fp8 GEMMs take non-TN layouts
    (``is_non_tn_fp8_gemm_supported``, TE d0067d0da pytorch/utils.py lines 658-663): no
    transpose to repeat, so the flag is refused in one line (exit 2), not priced; likewise
    off NVIDIA's GPUs (TE's fp8 path is CUDA's)."""
    kw = dict(micro_batch=1, seq_len=512, finetune="lora", precision="fp8",
              frozen_weights="fp8")
    with pytest.raises(PlanError, match="fp8_transpose_cache = false needs a GPU whose fp8 "
                                        "GEMMs are TN-only"):
        simulate("llama2-7b", device, fp8_transpose_cache=False, **kw)
    assert main(["predict", "llama2-7b", "--device", device, "--micro-batch", "1",
                 "--seq-len", "512", "--precision", "fp8", "--finetune", "lora",
                 "--frozen-weights", "fp8", "--no-fp8-transpose-cache"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"not {device} (drop --no-fp8-transpose-cache)" in err


@pytest.mark.parametrize("device", ["h100-sxm5-80gb", "h200-sxm", "l40s", "rtx-4090"])
def test_priced_on_tn_only_gpus(device):
    """Ada and Hopper GPUs (compute capability 8.9, 9.0) run fp8 GEMMs TN only: the transposes
    are priced there, so the step is slower than with the cache on."""
    kw = dict(micro_batch=1, seq_len=512, finetune="lora", precision="fp8",
              frozen_weights="fp8")
    cached = simulate("llama2-7b", device, **kw)
    fresh = simulate("llama2-7b", device, fp8_transpose_cache=False, **kw)
    assert fresh.step_time_s > cached.step_time_s
