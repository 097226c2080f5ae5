"""Accuracy on this machine's CPU: calibrate, then predict real training steps of models.

Run by hand: ``python benchmarks/bench_validation_cpu.py [--threads N] [--quick]``. Calibrates
``cpu-host`` (the full sweep unless ``--quick``) with torch limited to N threads (default 1, see
tests/test_validation_cpu.py for why), then times and predicts the training steps of the six
test models (tests/models, the issue's bound) and of the held-out models in
benchmarks/models, which no calibration case was shaped after. Prints both tables; the README's
accuracy section records a run.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from hardware_specs.host import on_cores
from hardware_specs.loader import load_device
from simulator.calibrate.fit import Calibration, cases
from simulator.calibrate.timing import measure
from simulator.calibrate.validate import report, validate_models

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = on_cores(load_device("cpu-host"), args.threads)
    start = time.perf_counter()
    fit = Calibration(device).fit(measure(cases(quick=args.quick), "cpu"))
    took = time.perf_counter() - start
    residuals = [abs(r) for r in fit.residuals_]
    print(f"calibration ({'quick' if args.quick else 'full'}, {args.threads} thread(s)): "
          f"{len(residuals)} cases in {took:.0f} s, median |residual| "
          f"{statistics.median(residuals):.1%}")
    for folder, title in (("tests/models", "test models (issue 6 bound)"),
                          ("benchmarks/models", "held-out models")):
        specs = [f"{p}:factory" for p in sorted((ROOT / folder).glob("*_model.py"))]
        print(f"\n{title}\n{report(validate_models(specs, fit.apply(), 'cpu'))}")


if __name__ == "__main__":
    main()
