"""How much of a validation row's error its fused attention would have to carry: a diagnostic.

Run by hand: ``python benchmarks/attention_residual.py [REGEX]`` (default: llm-foundry's 8-GPU
bf16 and fp8 rows of 8,192 tokens or more, A100 and H100). For each row it prints

- the row's error (predicted / published - 1, as ``validation_report.py`` computes it);
- the share of one micro-batch's priced op time spent in fused attention (``Result.ops``);
- the speed-up of every fused attention op that would, alone, close the error, with the rest
  of the step held (``share / (1 + error - 1 + share)``; "-" where no speed-up can);
- a what-if, never a configuration: the error with fused attention kept at its burst rate
  (not divided by the spec's ``matmul_sustained``, ``simulator.cost.power.sustained_times``).

It fits nothing and sets nothing: the validation rows are never fitted on. docs/accuracy.md
("Thirteenth session: llm-foundry's long-sequence H100 rows") records what it printed.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # this tree's simulator, not an installed one
sys.path.insert(0, str(ROOT / "benchmarks"))

import validation_report as report  # noqa: E402

import simulator.cost.power as power  # noqa: E402
from simulator.graph.op import OpKind  # noqa: E402

DEFAULT = r"^foundry-mpt-.*-(a100|h100)-80gb-8-s(8192|16384|32768|65536)-"


def attention_share(result) -> float:
    """Fused attention's share of one micro-batch's priced op time."""
    ops = result.ops
    return float(ops.loc[ops.kind == "attention", "time_s"].sum() / ops.time_s.sum())


def burst_attention_error(row) -> float:
    """The row's error with fused attention not slowed by the held GEMM clock (a what-if)."""
    kept = power._TENSOR_CORE_CODES
    power._TENSOR_CORE_CODES = np.array([int(OpKind.MATMUL), int(OpKind.CONV)], dtype=np.int8)
    try:
        result = report.predict(row)
    finally:
        power._TENSOR_CORE_CODES = kept
    return report.predicted_value(row, result) / float(row["published_value"]) - 1


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    pattern = re.compile(argv[0] if argv else DEFAULT)
    print("| run | error | attention share | attention speed-up to close it "
          "| error, attention at burst |")
    print("|---|---|---|---|---|")
    for row in report.load_rows():
        if not pattern.search(row["run_id"]):
            continue
        result = report.predict(row)
        error = report.predicted_value(row, result) / float(row["published_value"]) - 1
        share = attention_share(result)
        needed = share / (error + share) if error + share > 0 else None
        print(f"| {row['run_id']} | {100 * error:+.1f} % | {share:.2f} | "
              f"{'-' if needed is None else f'{needed:.2f}'} | "
              f"{100 * burst_attention_error(row):+.1f} % |")


if __name__ == "__main__":
    main()
