"""Where Lambda's single-GPU ResNet-50 AMP rows' priced steps go, per op class and GPU.

Run by hand: ``python benchmarks/resnet_lambda_breakdown.py [--what-if]``. For each row of
tests/data/lambda_resnet50_fp16.csv (NVIDIA DeepLearningExamples ResNet-50 v1.5, NCHW, native
AMP, synthetic data, SGD; validation, nothing fitted on it) it prints hwsim's priced step per
image by op class (convolution forward, data and weight gradient; NCHW <-> NHWC transposes;
batch norm forward and backward; ReLU and residual adds; the rest), the bytes per image of every
op that is not a convolution, the bandwidth hwsim prices them at, and the bandwidth they would
need if the convolutions were priced right (the measured step less the priced convolutions).

``--what-if`` (a diagnosis, never the model): the NCHW batch norms' rate, measured on one A100
40GB (0.406 / 0.460 of 1,555 GB/s, docs/accuracy.md, Convolution kernels), carried to each GPU
three ways: per SM (hwsim's prior since 2026-12-06, ``hardware_specs.priors.
nchw_batch_norm_prior``: Little's law, a kernel far below its DRAM's peak is held by the bytes its
SMs keep in flight), as a fraction of each GPU's DRAM peak (hwsim's rule before), and per SM
scaled by the boost clock. SM counts and clocks: the vendors' whitepapers (V100 80 SMs 1.53 GHz;
A100 108, 1.41; RTX 4090 128, 2.52; H100 PCIe 114, 1.755; H100 SXM5 132, 1.98).
docs/accuracy.md (Lambda's rows) records the figures.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import statistics
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # this tree's simulator, not an installed one

from hardware_specs.loader import load_device  # noqa: E402
from simulator import simulate  # noqa: E402

ROWS = ROOT / "tests" / "data" / "lambda_resnet50_fp16.csv"
SMS_CLOCK = {"v100-sxm2-32gb": (80, 1.53), "a100-pcie-40gb": (108, 1.41),
             "a100-pcie-80gb": (108, 1.41), "a100-sxm4-80gb": (108, 1.41),
             "rtx-4090": (128, 2.52), "h100-pcie-80gb": (114, 1.755),
             "h100-sxm5-80gb": (132, 1.98)}
REFERENCE = ("a100-pcie-40gb", 1555e9, 0.406, 0.460)   # where the NCHW rate was measured
CLASSES = ("conv_fwd", "conv_dgrad", "conv_wgrad", "transpose", "bn_fwd", "bn_bwd", "eltwise",
           "other")


def op_class(name: str, fn: str) -> str:
    if fn == "nchw_nhwc":
        return "transpose"
    if fn == "conv2d":
        return "conv_" + next((p for p in ("dgrad", "wgrad") if name.startswith(p + ":")), "fwd")
    if fn == "batchnorm":
        return "bn_bwd" if name.startswith("grad:") else "bn_fwd"
    return "eltwise" if fn in ("relu", "add") else "other"


def run(row: dict, device) -> object:
    return simulate("resnet-50", device, micro_batch=int(row["batch"]), precision="fp16",
                    optimizer="sgd")


def breakdown(rows: list[dict]) -> None:
    print("per image, us: " + " ".join(CLASSES) + " | priced measured error | non-conv MB, "
          "priced GB/s, needed GB/s (fraction of DRAM peak)")
    for row in rows:
        batch = int(row["batch"])
        result = run(row, row["catalogue"])
        low, times = result.lowered, result.times["time_s"]
        per_class: Counter = Counter()
        conv = other_bytes = other_time = 0.0
        for i, name in enumerate(low.names):
            per_class[op_class(name, low.fn[i])] += times[i]
            if low.fn[i] == "conv2d":
                conv += times[i]
            else:
                other_bytes += low.nbytes[i]
                other_time += times[i]
        measured = batch / float(row["samples_per_s"])
        priced = batch / result.samples_per_s
        peak = load_device(row["catalogue"]).memory[-1].bandwidth_bytes_per_s
        needed = other_bytes / (measured - conv)
        print(f"{row['catalogue']:15s} " + " ".join(f"{per_class[c] / batch * 1e6:5.0f}"
                                                     for c in CLASSES)
              + f" | {priced / batch * 1e6:5.0f} {measured / batch * 1e6:5.0f} "
              f"{result.samples_per_s / float(row['samples_per_s']) - 1:+6.1%} | "
              f"{other_bytes / batch / 1e6:4.0f} {other_bytes / other_time / 1e9:5.0f} "
              f"({other_bytes / other_time / peak:.2f}) {needed / 1e9:5.0f} ({needed / peak:.2f})")


def what_if(rows: list[dict]) -> None:
    name, reference_bandwidth, forward, backward = REFERENCE
    sms, clock = SMS_CLOCK[name]
    for mode in ("per SM (hwsim)", "fraction of DRAM peak", "per SM x clock"):
        errors = []
        for row in rows:
            device = load_device(row["catalogue"])
            if mode != "per SM (hwsim)":
                own_sms, own_clock = SMS_CLOCK[row["catalogue"]]
                peak = device.memory[-1].bandwidth_bytes_per_s
                scale = (peak / reference_bandwidth if mode == "fraction of DRAM peak"
                         else own_sms / sms * own_clock / clock)
                # at most the NHWC kernels' measured fractions (0.791, 0.842): a DRAM-bound kernel
                device = dataclasses.replace(
                    device,
                    batch_norm_nchw_memory_efficiency=min(
                        forward * reference_bandwidth * scale / peak, 0.791),
                    batch_norm_nchw_backward_memory_efficiency=min(
                        backward * reference_bandwidth * scale / peak, 0.842))
            result = run(row, device)
            errors.append((row["catalogue"], result.samples_per_s / float(row["samples_per_s"]) - 1))
        print(f"{mode}: " + ", ".join(f"{n} {e:+.1%}" for n, e in errors)
              + f"; median |error| {statistics.median(abs(e) for _, e in errors):.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what-if", action="store_true",
                        help="also carry the NCHW batch-norm rate the other ways (diagnosis only)")
    args = parser.parse_args()
    rows = list(csv.DictReader(ROWS.open()))
    breakdown(rows)
    if args.what_if:
        what_if(rows)


if __name__ == "__main__":
    main()
