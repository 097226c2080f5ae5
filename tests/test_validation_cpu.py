"""The calibration issue's bound, checked for real on the CPU that runs the tests.

A reduced calibration (``hwsim calibrate --quick``) is measured and fitted here, then the
training steps (forward, loss, backward, AdamW step) of the six test models in tests/models are
timed with torch and predicted with the calibrated spec. Bound (issue 6): median |error| under
15 %, no model off by more than 35 %. One try, no retries, no widened tolerance: a miss fails.

Single-threaded, calibration and validation alike: on the 2-vCPU virtual machines that run CI,
two-thread OpenMP steps switch between two speeds about 35 % apart, at random and for tens of
seconds at a time (hypervisor scheduling of the second vCPU), so a calibration and a validation
minutes apart disagree by more than the bound for reasons that are not the model's. One thread
is reproducible within about 5 % (README, "Accuracy").
"""
import statistics
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from hardware_specs.host import on_cores  # noqa: E402
from hardware_specs.loader import load_device  # noqa: E402
from simulator.calibrate.fit import Calibration, cases  # noqa: E402
from simulator.calibrate.timing import measure  # noqa: E402
from simulator.calibrate.validate import report, validate_models  # noqa: E402

MODELS = sorted(Path(__file__).parent.joinpath("models").glob("*_model.py"))


def test_calibrated_cpu_predicts_the_test_models_within_the_bound():
    assert len(MODELS) == 6  # MLP, CNN, ResNet-style, small GPT, text CNN, LSTM
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        device = on_cores(load_device("cpu-host"), 1)
        # three passes (the CLI's default is two): each figure is the best of its passes, so a
        # slow spell of the shared machine must last through all three to move it
        fit = Calibration(device).fit(measure(cases(quick=True), "cpu", passes=3))
        rows = validate_models([f"{path}:factory" for path in MODELS], fit.apply(), "cpu",
                               passes=3)
    finally:
        torch.set_num_threads(threads)
    table = report(rows)
    print(table)  # pytest -s shows it; README records a run
    errors = [abs(row.error) for row in rows]
    assert statistics.median(errors) < 0.15, table
    assert max(errors) < 0.35, table
