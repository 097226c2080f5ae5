"""Predictions against published single-device training measurements.

Rows come from tests/data/published_runs.csv (copied from the project's validation set with
their sources: Lambda deeplearning-benchmark, pytorch/pytorch-train-throughput-fp16.csv, ResNet-50
with AMP fp16, batch 1280 on A100 80GB SXM4 and 256 on V100). No constant in hwsim is fitted
to them; the README's accuracy table lists the same numbers.
"""
import csv
from pathlib import Path

import pytest

from simulator import simulate

ROWS = {row["run_id"]: row for row in
        csv.DictReader((Path(__file__).parent / "data" / "published_runs.csv").open())}
# run id -> (device, batch used by the benchmark)
RESNET50 = {"lambda-resnet50-A100_80GB_SXM4": ("a100-sxm4-80gb", 1280),
            "lambda-resnet50-V100_16GB_(LambdaCloud)": ("v100-sxm2-32gb", 256)}


def _predict(run_id):
    device, batch = RESNET50[run_id]
    result = simulate("resnet-50", device, micro_batch=batch, precision="fp16", optimizer="sgd")
    return result, float(ROWS[run_id]["samples_per_s"])


def test_resnet50_speedup_a100_over_v100_within_20_percent():
    """The ratio cancels what a roofline cannot know yet (library efficiency): it checks the
    device model. Measured 1582 / 833 = 1.90; tolerance 20 %. A known miss (2,023 / 845 = 2.39,
    +26 %) until the A100's 16-bit convolutions took Ladder's measured rate (0.680,
    tests/test_conv_harness.py; fitted on kernel timings only): 1,948 / 858 = 2.27, +19.5 %,
    just inside the bound; 2,250 / 989 = 2.27, +19.7 %, since the stride-1 1x1 convolutions
    run untransposed."""
    a100, measured_a100 = _predict("lambda-resnet50-A100_80GB_SXM4")
    v100, measured_v100 = _predict("lambda-resnet50-V100_16GB_(LambdaCloud)")
    predicted = a100.samples_per_s / v100.samples_per_s
    assert predicted == pytest.approx(measured_a100 / measured_v100, rel=0.20)


@pytest.mark.parametrize("run_id", sorted(RESNET50))
def test_resnet50_fits_where_the_benchmark_ran(run_id):
    result, _ = _predict(run_id)
    assert result.fits


@pytest.mark.parametrize("run_id", [
    # predicted +22.7 % (+27.6 % before the A100's measured 16-bit convolution rate, +23.1 %
    # after it; +42.2 % while the stride-1 1x1 convolutions ran untransposed and the NCHW batch
    # norms at the row norms' rate, before their own, tests/test_batch_norm_rate.py)
    "lambda-resnet50-A100_80GB_SXM4",
    # +5.4 % (+3.0 % before the 1x1 convolutions ran untransposed, +18.8 % after, before the
    # NCHW batch norms' own rate)
    "lambda-resnet50-V100_16GB_(LambdaCloud)"])
def test_resnet50_throughput_within_25_percent(run_id):
    result, measured = _predict(run_id)
    assert result.samples_per_s == pytest.approx(measured, rel=0.25)
