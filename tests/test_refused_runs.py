"""Published runs configured as their sources ran them that hwsim refuses today
(tests/data/refused_runs.csv, same columns as validation_rows.csv).

Intel's Gaudi 2 LLaMA training table (Intel Gaudi software 1.19.0) ran every row in fp8, and
gaudi2.toml gives no fp8 peak (none confirmed in a primary source), so ``simulate`` refuses
them with one line. These tests pin that state: each row is a run of published_runs.csv with its
published figure, its only refusal is the missing fp8 peak (the same row at bf16 plans), and
the refusal names the field. When a primary Gaudi 2 fp8 figure enters the spec,
``test_refused_for_want_of_an_fp8_peak`` fails: move the rows to validation_rows.csv (set
validation: nothing was chosen watching them) and report their errors.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from simulator import PlanError
from tests.conftest import load_module

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"

report = load_module(ROOT / "benchmarks" / "validation_report.py", "validation_report")
REFUSED = report.load_rows(DATA / "refused_runs.csv")
PUBLISHED = {row["run_id"]: row for row in
             csv.DictReader((DATA / "published_runs.csv").open(newline="", encoding="utf-8"))}
IDS = [row["run_id"] for row in REFUSED]


def test_refused_rows_share_the_validation_columns():
    header = next(csv.reader((DATA / "validation_rows.csv").open(newline="", encoding="utf-8")))
    assert list(REFUSED[0]) == header
    assert not {row["run_id"] for row in REFUSED} & {row["run_id"] for row in report.load_rows()}


@pytest.mark.parametrize("row", REFUSED, ids=IDS)
def test_refused_row_is_a_published_run(row):
    published = PUBLISHED[row["run_id"]]
    assert float(row["published_value"]) == float(published[row["metric"]])
    assert int(row["device_count"]) == int(published["device_count"])
    assert int(row["global_batch"]) == int(published["global_batch_seqs"])
    for key in ("dp", "tp", "pp"):
        assert int(row[key]) == int(published[key]), key
    assert row["source"] and row["config_source"] and row["set_rule"]


@pytest.mark.parametrize("row", REFUSED, ids=IDS)
def test_refused_for_want_of_an_fp8_peak(row):
    assert row["precision"] == "fp8"
    with pytest.raises(PlanError, match="no fp8 peak"):
        report.predict(row)


@pytest.mark.parametrize("row", REFUSED, ids=IDS)
def test_the_rest_of_the_configuration_plans(row):
    """The fp8 peak is the only thing missing: the same run at bf16 simulates (its figure is
    not compared: the run was fp8)."""
    result = report.predict(dict(row, precision="bf16"))
    assert result.tokens_per_s > 0
