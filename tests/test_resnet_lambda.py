"""ResNet-50 AMP on seven single GPUs (Lambda's benchmark), as validation: nothing is fitted on it.

tests/data/lambda_resnet50_fp16.csv: NVIDIA DeepLearningExamples' ResNet-50 v1.5 with AMP, NCHW,
SGD, synthetic data, each GPU at the batch Lambda ran. Measured on 2026-12-03 (8f931a3):
V100 +1 %, A100 40GB PCIe +14 %, A100 80GB PCIe +24 %, A100 80GB SXM4 +28 %, RTX 4090 -30 %,
H100 PCIe +4 %, H100 SXM5 +13 %: median |error| 14.3 % (issue 20's bound: 15 %). Before the
channel norms' second pass and the NCHW transposes (simulator.training.layout) the median was
85.3 %, after the first alone 60.2 %. With the A100s' 16-bit convolutions at Ladder's measured
rate (0.680, tests/test_conv_harness.py; 2026-12-06): A100 40GB PCIe +11.8 %, 80GB PCIe +20.0 %,
80GB SXM4 +23.1 %, the rest unchanged: median 11.8 %. With the stride-1 1x1 convolutions'
forward and data gradient run as GEMMs on NCHW tensors, untransposed (simulator.training.layout,
kernel-level evidence only; 2026-12-06): V100 +3.0 -> +18.8 %, A100 40GB PCIe +11.8 -> +30.6 %,
80GB PCIe +20.0 -> +39.2 %, 80GB SXM4 +23.1 -> +42.2 %, RTX 4090 -30.4 -> -18.9 %, H100 PCIe
+4.2 -> +23.2 %, H100 SXM5 +7.2 -> +23.7 %: median 11.8 -> 23.7 %. The transposes had been priced
at 2.3 times what a profiled NCHW step's transpose kernels take (tests/test_layout.py), which
hid that the NCHW batch norms are priced short: that profile's (apuaaChen/EVT_AE 917438b,
ResNet-50 fp16 at batch 128 on an A100 40GB) cuDNN NCHW batch-norm kernels take 33.4 ms a step,
2.1 times its NHWC ones (16.1 ms), where hwsim priced 20.7 ms and 18.2 ms (docs/accuracy.md,
Convolution kernels). With the NCHW batch norms at the rate of that profile's kernels (0.406
forward, 0.460 backward of the bandwidth, carried to the GA100 parts and, as the GPU class prior,
to the other GPUs; tests/test_batch_norm_rate.py; 2026-12-06): V100 +18.8 -> +5.4 %, A100 40GB
PCIe +30.6 -> +10.1 %, 80GB PCIe +39.2 -> +20.1 %, 80GB SXM4 +42.2 -> +22.7 %, RTX 4090 -18.9 ->
-27.8 %, H100 PCIe +23.2 -> +8.5 %, H100 SXM5 +23.7 -> +22.7 %: median 20.1 %, above the issue's
15 % (then a strict xfail); every GPU within 35 %. With that rate carried per SM rather than as a
fraction of each GPU's DRAM (hardware_specs.priors.nchw_batch_norm_prior: a second kernel table,
xwang233's contiguous batch norms on a V100 and an A100, shows each channel moving as fast on
both, tests/test_nchw_batch_norm_carry.py; 2026-12-06): V100 +5.4 -> +15.4 %, A100 40GB PCIe
+10.1 % (its own figure), 80GB PCIe +20.1 -> +9.8 %, 80GB SXM4 +22.7 -> +9.6 %, RTX 4090 -27.8 ->
-12.8 %, H100 PCIe +8.5 -> -0.4 %, H100 SXM5 +22.7 -> -5.4 %: median 9.8 %.
"""
from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest

from simulator import simulate

ROWS = list(csv.DictReader((Path(__file__).parent / "data" / "lambda_resnet50_fp16.csv").open()))


@pytest.fixture(scope="module")
def errors():
    out = {}
    for row in ROWS:
        result = simulate("resnet-50", row["catalogue"], micro_batch=int(row["batch"]),
                          precision="fp16", optimizer="sgd")
        out[row["name_gpu"]] = result.samples_per_s / float(row["samples_per_s"]) - 1
    return out


def test_median_error_within_issue_bound(errors):
    """Median |error| over the seven GPUs at most 15 % (14.3 % when measured; 11.8 % before the
    1x1 convolutions ran untransposed; 23.7 % then; 20.1 % with the NCHW batch norms' rate as a
    fraction of each DRAM, a strict xfail; 9.8 % with it carried per SM)."""
    assert len(errors) == 7
    assert statistics.median(abs(e) for e in errors.values()) <= 0.15


def test_every_gpu_within_35_percent(errors):
    """The worst, the RTX 4090 (-30 %) and the A100 80GB SXM4 (+28 %; +23 % after Ladder's
    convolution rate; +42 % while the 1x1 convolutions ran untransposed and the NCHW batch norms
    at the row norms' rate; the RTX 4090 -27.8 % and the A100 SXM4 +22.7 % with their own), within
    35 %."""
    assert max(abs(e) for e in errors.values()) <= 0.35
