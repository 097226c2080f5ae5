"""fp8 primary weights (``Plan.fp8_params``: Transformer Engine's ``fp8_model_init``, NeMo's
``fp8_params``, Megatron-LM's ``--fp8-param-gather``; ``simulator.training.fp8``): the trained
weights of the TE linears held at 1 byte, the update casting its fp32 master shard to them, the
distributed optimizer's all-gather moving them at 1 byte an element, a transpose (read 1, write
1) in place of each weight's cast (read 2, write 2); the norms, embedding and output layer
stay 16-bit."""
from __future__ import annotations

import pytest

from simulator import PlanError, simulate
from simulator.cli import main
from simulator.graph.op import Task
from simulator.parallel.data import add_data_parallel
from simulator.parallel.rank import stage_forward
from simulator.plan.parallel import ParallelPlan
from simulator.plan.step import Plan
from simulator.training.backward import training_graph
from simulator.training.finetune import FP8_TRANSPOSE
from simulator.training.fp8 import CAST
from workloads.zoo import MODELS

LLAMA = MODELS["llama2-7b"]          # no biases; untied embedding and head
H, F, V, LAYERS = 4096, 11008, 32000, 2
LAYER_LINEARS = 4 * H * H + 3 * H * F     # q, k, v, o; gate, up, down: TE linears, fp8
LAYER_PARAMS = LAYER_LINEARS + 2 * H      # and the two RMSNorms' weights, 16-bit
ROOT_PARAMS = 2 * H * V + H               # embedding, head, final norm: 16-bit
DP = 4


def _step(fp8_params: bool, recipe: str = "delayed", dp: int = DP):
    """One rank's training step of 2 Llama 2 7B layers under ZeRO-1 over ``dp`` replicas."""
    plan = Plan(micro_batch=1, precision="fp8", fp8_params=fp8_params, fp8_recipe=recipe)
    forward = stage_forward(LLAMA.with_layers(LAYERS), plan, ParallelPlan(), 0, None)[1]
    return add_data_parallel(training_graph(forward, plan), plan, dp, 1)


@pytest.fixture(scope="module")
def steps():
    return {flag: _step(flag) for flag in (False, True)}


def _named(step, prefix: str) -> dict:
    return {n: step.op(n) for n in step.names() if n.startswith(prefix)}


@pytest.mark.parametrize("fp8_params", [False, True])
def test_the_all_gather_moves_one_byte_per_fp8_weight(steps, fp8_params):
    """Each layer's all-gather writes 2 bytes per 16-bit parameter and 1 per fp8 linear
    weight, and reads its 1/dp shard; the root's (embedding, head, final norm) stays 16-bit."""
    gathers = _named(steps[fp8_params], "dp_all_gather:")
    assert sorted(gathers) == ["dp_all_gather:L-1", "dp_all_gather:L0", "dp_all_gather:L1"]
    fp8 = LAYER_LINEARS if fp8_params else 0
    for layer in range(LAYERS):
        op = gathers[f"dp_all_gather:L{layer}"]
        assert op.bytes_written == 2 * LAYER_PARAMS - fp8
        assert op.bytes_read == (2 * LAYER_PARAMS - fp8) // DP
    assert gathers["dp_all_gather:L-1"].bytes_written == 2 * ROOT_PARAMS


def test_the_update_writes_one_byte_per_fp8_weight(steps):
    """The update casts its fp32 master shard into the fp8 weights: 1 byte written per element
    of the shard instead of 2; under current scaling it reads the shard once more for the
    amax (4 bytes). The root's update is unchanged."""
    current = _step(True, "current")
    for layer in range(LAYERS):
        name = f"optimizer:L{layer}"
        bf16, fp8, cur = (s.op(name) for s in (steps[False], steps[True], current))
        assert bf16.bytes_written - fp8.bytes_written == LAYER_LINEARS // DP
        assert fp8.bytes_read == bf16.bytes_read
        assert cur.bytes_read - fp8.bytes_read == 4 * LAYER_LINEARS // DP
    assert steps[False].op("optimizer:L-1") == steps[True].op("optimizer:L-1")


def test_a_transpose_replaces_each_weight_cast(steps):
    """Each fp8 linear's weight cast (read 2, write 2 per element, once a step) becomes TE's
    transpose of the fp8 weight (read 1, write 1), and nothing else changes name."""
    casts = _named(steps[False], f"{CAST}:weight:")
    transposes = _named(steps[True], f"{FP8_TRANSPOSE}:weight:")
    assert len(casts) == len(transposes) == LAYERS * 7       # q, k, v, o, gate, up, down
    assert not _named(steps[True], f"{CAST}:weight:")
    assert sum(op.bytes_read for op in casts.values()) == 2 * LAYERS * LAYER_LINEARS
    assert sum(op.bytes_written for op in casts.values()) == 2 * LAYERS * LAYER_LINEARS
    for op in transposes.values():
        assert op.bytes_read == op.bytes_written
        assert op.task is Task.FORWARD and op.fn == FP8_TRANSPOSE
    assert sum(op.bytes_read for op in transposes.values()) == LAYERS * LAYER_LINEARS
    renamed = {n.replace(CAST, FP8_TRANSPOSE, 1) for n in casts}
    assert set(steps[True].names()) - set(transposes) == set(steps[False].names()) - set(casts)
    assert renamed == set(transposes)


@pytest.fixture(scope="module")
def runs():
    kw = dict(num_devices=DP, dp=DP, zero=1, micro_batch=1, global_batch=DP, seq_len=512,
              precision="fp8")
    work = LLAMA.with_layers(LAYERS)
    return {flag: simulate(work, "h100-sxm5-80gb", fp8_params=flag, **kw)
            for flag in (False, True)}


def test_working_weights_are_held_at_one_byte(runs):
    """The weights a rank holds: 1 byte per fp8 linear weight, 2 per other parameter; the
    gradients and the optimizer's states (its fp32 master) do not change."""
    weights = {flag: r.memory_breakdown["weights"] for flag, r in runs.items()}
    assert weights[False] == 2 * (LAYERS * LAYER_PARAMS + ROOT_PARAMS)
    assert weights[True] == weights[False] - LAYERS * LAYER_LINEARS
    for key in ("gradients", "optimizer_states"):
        assert runs[True].memory_breakdown[key] == runs[False].memory_breakdown[key]


def test_fp8_params_never_slow_a_step_nor_change_its_flops(runs):
    """Fewer bytes gathered, cast and written, the same GEMMs: never slower, the same FLOPs."""
    assert runs[True].step_time_s < runs[False].step_time_s
    assert runs[True].flops_per_step == runs[False].flops_per_step
    assert runs[True].peak_memory_bytes < runs[False].peak_memory_bytes


@pytest.mark.parametrize("fields, message", [
    (dict(precision="bf16", zero=1), "fp8_params = true needs precision = fp8"),
    (dict(zero=0), "fp8_params = true is modelled with a distributed optimizer"),
    (dict(zero=3), "not zero = 3"),
    (dict(zero=1, fp8_modules="linear"), "not fp8_modules = linear"),
    (dict(zero=1, fp8_recipe="torchao-tensorwise"), "not torchao's"),
    (dict(zero=0, finetune="lora", frozen_weights="fp8"), "use --frozen-weights fp8"),
])
def test_refused_where_not_modelled(fields, message):
    kw = dict(precision="fp8", num_devices=2, dp=2, micro_batch=1, global_batch=2, seq_len=512,
              fp8_params=True) | fields
    with pytest.raises(PlanError, match=message):
        simulate(LLAMA.with_layers(1), "h100-sxm5-80gb", **kw)


def test_cli_refuses_in_one_line(capsys):
    code = main(["predict", "llama2-7b", "--device", "h100", "--precision", "fp8",
                 "--fp8-params"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "--zero 1" in err


def test_the_rows_whose_configs_set_it_and_no_other():
    """Column fp8_params is true exactly on the NeMo and MLPerf (Megatron-core) fp8 rows run
    with the distributed optimizer, every cited config setting it there, and each such row's
    config_source names the setting; false on every bf16 row, the torchtitan and llm-foundry
    rows, and NeMo's Megatron-FSDP row (whose scripts turn it off)."""
    from pathlib import Path

    from tests.conftest import load_module
    report = load_module(Path(__file__).resolve().parent.parent / "benchmarks"
                         / "validation_report.py", "validation_report")
    rows = report.load_rows()
    flagged = {r["run_id"] for r in rows if r.get("fp8_params") == "true"}
    expected = {r["run_id"] for r in rows if r["precision"] == "fp8" and r["zero"] in ("1", "2")
                and r["run_id"].startswith(("nemo-", "mlperf"))}
    assert flagged == expected and len(flagged) == 46   # + 7 MLPerf v5.0, 3 Grok 1 (15th session)
    assert {r.get("fp8_params") for r in rows} <= {"true", ""}
    for r in rows:
        if r["run_id"] in flagged:
            assert "fp8_param" in r["config_source"].lower() or \
                "fp8 param" in r["config_source"], r["run_id"]
