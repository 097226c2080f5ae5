"""The mixture-of-experts validation rows (issue 24, item 5), each within a stated tolerance.

Every row of tests/data/validation_rows.csv whose model is one of the zoo's mixtures of experts
(``get_workload(model).moe``), predicted as benchmarks/validation_report.py predicts it (its
``evaluate``: the row's plan, cluster preset and published metric). Today: NeMo's Mixtral 8x7B
and 8x22B in fp8 on 64 and 256 B200s and GB200s (NeMo performance summary, 25.02 DGX-B200 and
25.04 DGX-GB200 tables, capacity factor 1.0 padded to capacity) and Megatron-Core's Mixtral
8x7B in bf16 on 64 H100s (its MoE README's 468 TFLOPS, dropless).

Tolerance: 15 % of the published figure, each row alone. It is the one the project already
holds NVIDIA's Megatron-Core-based recipe runs on DGX systems to, row by row: the NeMo H100
recipes of NVIDIA/dgxc-benchmarking (tests/test_validation_multi.py,
``test_nemo_h100_bf16_within_15_percent`` and ``test_nemo_h100_fp8_within_15_percent``). It
was not chosen from these rows' errors. A row outside it is a strict xfail naming its diagnosed
cause, so that the row coming inside fails the test and the mark must go.

These rows stay *validation* rows: the test was added after every constant they touch was set
and nothing may be fitted on them (benchmarks/validation_report.py's module docstring).
"""
from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from tests.conftest import load_module
from workloads.zoo import get_workload

ROOT = Path(__file__).resolve().parent.parent

report = load_module(ROOT / "benchmarks" / "validation_report.py", "validation_report")

#: Each row alone within 15 % of its published figure (see the module docstring).
TOLERANCE = 0.15


def _is_moe(row: dict[str, str]) -> bool:
    """The row's model is a zoo mixture of experts (a ``transformer`` row is a bare shape)."""
    return row["model"] != "transformer" and \
        getattr(get_workload(row["model"]), "moe", None) is not None


ROWS = {row["run_id"]: row for row in report.load_rows() if _is_moe(row)}

# Known misses, each with its diagnosed cause (or saying it is not diagnosed). None from the
# eleventh session to the thirteenth: Mixtral 8x22B on 256 GB200s (+16.4 %, then +18.4 % once
# the context-parallel ring was priced) is +10.2 % since the GB200 runs the B200's attention
# fit, its own table being a later cuDNN (simulator.cost.attention).
KNOWN_MISSES: dict[str, str] = {
    "nemo-mixtral-8x7b-fp8-b200-64": (
        "known miss, diagnosed in part (docs/accuracy.md, 'Mixtral 8x7B on 64 B200s'): +9.3 % "
        "-> +20.4 % once the run's fp8 weights are gathered at 1 byte (fp8_params: NeMo v2.2.0's "
        "bf16_with_fp8_mixed), +19.7 % since the experts' update is sharded over their "
        "expert-data-parallel group of 8. The config is read right and the gather's overlap is "
        "Megatron-core 0.11's, CUDA graphs included; the 2-byte gather's exposure stood in for "
        "an unpriced cost. hwsim's step sits at the edge of its InfiniBand (the last backward's "
        "reduce-scatters, the first forward's gathers), unmeasured for this collective; the "
        "dense B200 rows are optimistic too (+0.1 to +14.1 %, one node +13.9 %)"),
}
# dgxc-benchmarking's Grok 1 314B fp8 rows on 512-2048 H100s (fifteenth session, nothing fitted):
# +16.5 / +17.5 / +18.5 % where their bf16 twins are +9.9..+10.8 % (inside): hwsim's fp8
# speed-up 1.32 against the measured 1.24; not diagnosed (docs/accuracy.md, 'Fifteenth
# session: new runs'), as the NeMo GPT-3 175B fp8 H100 rows' (+12.6..+16.8 %).
KNOWN_MISSES.update({f"nemo-grok1-314b-fp8-{gpus}": (
    "known miss, not diagnosed: fp8 +16.5..+18.5 % against bf16 +9.9..+10.8 % on the same plan "
    "(hwsim's fp8 speed-up 1.32, measured 1.24); added in the fifteenth session, nothing fitted")
    for gpus in (512, 1024, 2048)})


@cache
def _outcome(run_id: str):
    return report.evaluate(ROWS[run_id])


def test_the_selection_is_every_moe_row_and_all_are_validation():
    """Five rows today (at least these); a new MoE row joins the bound below by itself. None of them may be
    calibration (nothing was fitted on them), and every known miss names a selected row."""
    assert {
        "megatron-core-mixtral-8x7b-bf16-64",
        "nemo-mixtral-8x22b-fp8-b200-256", "nemo-mixtral-8x22b-fp8-gb200-256",
        "nemo-mixtral-8x7b-fp8-b200-64", "nemo-mixtral-8x7b-fp8-gb200-64"} <= set(ROWS)
    assert {row["set"] for row in ROWS.values()} == {"validation"}
    assert set(KNOWN_MISSES) <= set(ROWS)


@pytest.mark.parametrize("run_id", [
    pytest.param(run_id, marks=pytest.mark.xfail(strict=True, reason=KNOWN_MISSES[run_id]))
    if run_id in KNOWN_MISSES else run_id for run_id in sorted(ROWS)])
def test_moe_row_within_15_percent(run_id):
    """NeMo's fp8 Mixtral rows, 8x7B (64 GPUs, ep 8) and 8x22B (256 GPUs, tp 2, pp 4, cp 8,
    ep 8), on B200 and GB200, and Megatron-Core's bf16 Mixtral 8x7B on 64 H100s (tp 1, pp 4,
    vp 8, ep 8, its dropless router priced with hwsim's aux-loss default, the busiest of 8
    ranks at 1.316 x the mean; the run's alpha, 0.01, is ten times the MaxVio measurement's
    and its imbalance is not published, docs/model.md 'Mixtures of experts'). At HEAD af891ff:
    B200 +8.4 / -0.3 %, GB200 +9.6 / +16.4 % (8x7B / 8x22B), Megatron-Core -10.5 %."""
    outcome = _outcome(run_id)
    assert outcome.measured == float(ROWS[run_id]["published_value"])
    assert outcome.predicted == pytest.approx(outcome.measured, rel=TOLERANCE), (
        f"{run_id}: predicted {outcome.predicted:,.1f} against {outcome.measured:,.1f} "
        f"({outcome.error:+.1%}), outside {TOLERANCE:.0%}")
