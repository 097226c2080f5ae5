"""The held-out models of ``benchmarks/bench_validation_cpu.py`` (issue 20): at least eight, of
the named styles (CNNs of several styles, MLPs, transformers, RNNs), and none shares a shape with
the calibration's micro-benchmarks, so that the calibration predicts them by its fitted functions
of shape, not by having timed their ops.

A shape, per op of the training step (forward, backward, AdamW update): for a tensor op (matmul,
convolution, attention) its GEMM's (m, n, k, batch), whatever its function; for any other op its
kind, function and bytes read and written. Ops that move under a KiB are left out: scalars every
model has (a loss's mean, BatchNorm's step counter), with no shape to speak of."""
from pathlib import Path

import pytest

pytestmark = pytest.mark.torch
pytest.importorskip("torch")

from simulator.calibrate.fit import case_graph, cases  # noqa: E402
from simulator.graph.op import TENSOR_KINDS, DType, OpKind  # noqa: E402
from simulator.plan.step import Plan  # noqa: E402
from simulator.training.backward import training_graph  # noqa: E402
from workloads.torch_import import import_module, load_factory_parts  # noqa: E402

HELD_OUT = sorted(Path(__file__).resolve().parents[1].joinpath("benchmarks", "models")
                  .glob("*_model.py"))
SCALAR_BYTES = 1024


def shape(op) -> tuple | None:
    if op.kind in TENSOR_KINDS:
        return ("tensor", op.m, op.n, op.k, op.batch)
    if op.bytes_read + op.bytes_written < SCALAR_BYTES:
        return None
    return (op.kind.name, op.fn, op.bytes_read, op.bytes_written)


def step_graph(path: Path):
    module, inputs, name = load_factory_parts(f"{path}:factory")
    workload = import_module(module, inputs, name=name)
    return training_graph(workload.forward_graph(workload.default_batch, DType.FP32),
                          Plan(micro_batch=workload.default_batch, precision="fp32",
                               optimizer="adamw"))


@pytest.fixture(scope="module")
def held_out():
    return {path.stem: step_graph(path) for path in HELD_OUT}


def test_at_least_eight_held_out_models_of_the_named_styles(held_out):
    assert len(held_out) >= 8
    kinds = {name: {op.kind for op in graph.ops()} for name, graph in held_out.items()}
    fns = {name: {op.fn for op in graph.ops()} for name, graph in held_out.items()}
    cnns = [n for n, k in kinds.items() if OpKind.CONV in k]
    transformers = [n for n, f in fns.items() if "sdpa" in f or OpKind.ATTENTION in kinds[n]]
    rnns = [n for n, f in fns.items() if f & {"lstm_cell", "gru_cell"}]
    mlps = [n for n in held_out if n not in {*cnns, *transformers, *rnns}]
    assert len(cnns) >= 3 and len(transformers) >= 2 and len(rnns) >= 2 and len(mlps) >= 2, (
        cnns, transformers, rnns, mlps)


def test_no_held_out_op_has_a_calibration_cases_shape(held_out):
    calibrated = {}
    for case in cases():   # the full sweep: --quick's cases are a subset of it
        for op in case_graph(case).ops():
            if (key := shape(op)) is not None:
                calibrated.setdefault(key, case.label)
    shared = [(name, op.name, calibrated[key]) for name, graph in held_out.items()
              for op in graph.ops() if (key := shape(op)) is not None and key in calibrated]
    assert shared == []
    # the comparison can fail: a micro-model's own shape is found
    probe = case_graph(next(c for c in cases() if c.fn == "relu"))
    assert any(shape(op) in calibrated for op in probe.ops())
