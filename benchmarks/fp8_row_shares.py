"""Where hwsim's step goes on the fp8 Megatron-Core / NeMo rows, and what would close each.

Run by hand: ``python benchmarks/fp8_row_shares.py [run_id ...]`` (default: every fp8 row
of ``tests/data/validation_rows.csv`` from NeMo or MLPerf v5.0). For each row it prints its
error (predicted / published - 1, as ``validation_report.py`` computes it) and the shares of
the compute stream of one micro-batch of the stage hwsim reports (``Result.ops``, the serial
sum of the op times, collectives apart) by class:

- ``fp8``: the fp8 GEMMs; ``16b``: the other tensor-core GEMMs (the output layer, routers);
- ``attn``: fused attention (forward, FlashAttention's recompute, backward);
- ``cast``: Transformer Engine's fp8 cast / transpose kernels, their amax passes inside
  (``cast_transpose:``, ``fp8_transpose:``; ``simulator.training.fp8``);
- ``rest``: every other op (norms, elementwise, optimizer, loss);

then the step's exposed communication as a share of the step, and for the fp8 GEMMs,
attention and the memory-bound rest (cast + rest) the factor by which that class alone would
have to be slower to close the row: 1 + error / share (the step taken as proportional to the
stream's sum, so a first-order figure). A factor that differs from row to row on the same
device is evidence against a single device figure of that class (docs/accuracy.md, the
fifteenth session's Blackwell diagnosis). Diagnosis only: nothing here is fitted.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # this tree's simulator, not an installed one
sys.path.insert(0, str(ROOT / "benchmarks"))

import validation_report as report  # noqa: E402

from simulator.training.finetune import FP8_TRANSPOSE  # noqa: E402
from simulator.training.fp8 import CAST  # noqa: E402

CAST_PREFIXES = (f"{CAST}:", f"{FP8_TRANSPOSE}:")


def default_rows() -> list[str]:
    return [row["run_id"] for row in report.load_rows() if row["precision"] == "fp8"
            and row["run_id"].startswith(("nemo-", "mlperf50-"))]


def shares(row: dict[str, str]) -> dict[str, float]:
    """The row's error, its compute stream's shares by class and its exposed communication."""
    result = report.predict(row)
    measured = float(row["published_value"])
    error = report.predicted_value(row, result) / measured - 1
    ops = result.ops
    stream = ops[ops.kind != "collective"]
    total = float(stream.time_s.sum())
    matmul = stream.kind == "matmul"
    cast = stream.name.str.startswith(CAST_PREFIXES)
    attention = stream.kind == "attention"
    out = {"error": error,
           "fp8": float(stream[matmul & (stream.dtype == "fp8")].time_s.sum()) / total,
           "16b": float(stream[matmul & (stream.dtype != "fp8")].time_s.sum()) / total,
           "attn": float(stream[attention].time_s.sum()) / total,
           "cast": float(stream[cast & ~matmul & ~attention].time_s.sum()) / total}
    out["rest"] = 1.0 - out["fp8"] - out["16b"] - out["attn"] - out["cast"]
    out["exposed"] = result.parallel.get("exposed_communication_s", 0.0) / result.step_time_s
    return out


def main(argv: list[str]) -> None:
    rows = {row["run_id"]: row for row in report.load_rows()}
    print(f"{'run':46s} {'device':15s} {'error':>7s} | {'fp8':>5s} {'16b':>5s} {'attn':>5s} "
          f"{'cast':>5s} {'rest':>5s} {'exp':>5s} | {'x fp8':>6s} {'x attn':>6s} {'x mem':>6s}")
    for run_id in argv or default_rows():
        s = shares(rows[run_id])
        e = s["error"]
        print(f"{run_id:46s} {rows[run_id]['device']:15s} {100 * e:+6.1f}% | {s['fp8']:5.2f} "
              f"{s['16b']:5.2f} {s['attn']:5.2f} {s['cast']:5.2f} {s['rest']:5.2f} "
              f"{s['exposed']:5.3f} | {1 + e / s['fp8']:6.2f} {1 + e / s['attn']:6.2f} "
              f"{1 + e / (s['cast'] + s['rest']):6.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
