"""Measurements as data: calibration and validation records round-trip, refit identically, and
a bad record is one line naming the file, the row and the column."""
import subprocess
import sys
from pathlib import Path

import pytest

from hardware_specs.loader import load_device
from simulator.calibrate import records
from simulator.calibrate.fit import (Calibration, Case, Measurement, case_graph, case_seconds,
                                 cases)
from simulator.cost.roofline import op_costs
from simulator.errors import SpecError
from simulator.graph.lower import lower
from simulator.calibrate.validate import Row

ROOT = Path(__file__).resolve().parents[1]
ENV = {"device": "NVIDIA H100 80GB HBM3", "driver": "550.54.15", "cuda": "12.4",
       "torch": "2.13.0", "threads": "16", "host": "gpu-box", "date": "2026-11-23 12:00 UTC"}


def _measured():
    device = load_device("h100")
    todo = [c for c in cases(quick=True) if c.kind != "function"]
    return [Measurement(c, case_seconds(c, op_costs(lower(case_graph(c)), device)[2]) * 1.3)
            for c in todo]


@pytest.mark.slow
def test_kernel_record_round_trips_and_refits_identically(tmp_path):
    measured = _measured()
    path = tmp_path / "kernels.csv"
    path.write_text(records.kernels_csv(measured, ENV))
    back, env = records.read_kernels(path)
    assert back == measured and env == ENV  # exact: times are written with repr
    device = load_device("h100")
    a, b = Calibration(device).fit(measured), Calibration(device).fit(back)
    assert a.apply() == b.apply()


def test_step_record_round_trips(tmp_path):
    rows = [Row("gpt", 4, 3.1e-3, 2.9e-3, 2.5e9, 2.4e9), Row("mlp", 32, 1e-3, 1.1e-3, None, 4e6)]
    path = tmp_path / "steps.csv"
    path.write_text(records.steps_csv(rows, ENV, "h100-sxm5-80gb"))
    back = records.read_steps(path)
    assert [(r["model"], r["batch"], r["measured_s"], r["predicted_s"]) for r in back] == \
        [("gpt", 4, 3.1e-3, 2.9e-3), ("mlp", 32, 1e-3, 1.1e-3)]
    assert back[0]["driver"] == "550.54.15" and back[1]["measured_peak_bytes"] == ""


GOOD = records.kernels_csv([Measurement(Case("matmul", (64, 64, 64)), 1e-5)], ENV)


@pytest.mark.parametrize("text, words", [
    (GOOD.replace("seconds", "secs"), "missing column(s) seconds"),
    (GOOD.replace("1e-05", "-1e-05"), "row 2, seconds = '-1e-05'"),
    (GOOD.replace("1e-05", "fast"), "row 2, seconds = 'fast'"),
    (GOOD.replace("64x64x64", "64xsixty"), "row 2, dims = '64xsixty'"),
    (GOOD.replace("matmul", "fft"), "row 2, kind = 'fft'"),
    (GOOD.splitlines()[0] + "\n", "has no rows"),
])
def test_a_bad_record_is_one_line_naming_the_row(tmp_path, text, words):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(SpecError) as error:
        records.read_kernels(path)
    message = str(error.value)
    assert message.startswith(str(path)) and words in message and "\n" not in message


def test_calibrating_from_a_bad_record_writes_nothing(tmp_path):
    bad, out = tmp_path / "bad.csv", tmp_path / "out.toml"
    bad.write_text(GOOD.replace("1e-05", "0"))
    run = subprocess.run([sys.executable, "-m", "simulator.cli", "calibrate", "--device", "h100",
                          "--from", str(bad), "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and not out.exists()
    assert len(run.stderr.strip().splitlines()) == 1 and "seconds = '0'" in run.stderr


@pytest.mark.slow
def test_calibrating_from_a_record_needs_no_device_here(tmp_path):
    """GPU timings committed as data fit the GPU's spec on a machine without one."""
    path, out = tmp_path / "kernels.csv", tmp_path / "h100-cal.toml"
    path.write_text(records.kernels_csv(_measured(), ENV))
    run = subprocess.run([sys.executable, "-m", "simulator.cli", "calibrate", "--device", "h100",
                          "--from", str(path), "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    text = out.read_text()
    assert "gpu-box (NVIDIA H100 80GB HBM3, driver 550.54.15, CUDA 12.4)" in text
    assert load_device(str(out)).matmul_efficiency < 0.9  # the timings were 1.3x the ideal


def test_median_over_passes_keeps_each_items_lower_median_and_reports_progress():
    """``hwsim validate``'s timing: every item once per pass, interleaved, each item's lower
    median (tuples ordered by their seconds), progress after each call and when done."""
    from simulator.calibrate.timing import median_over_passes

    runs = iter([3.0, (5.0, "a"), 2.0, (4.0, "b"), 2.5, (6.0, "c")])
    seen = []
    middle = median_over_passes(["x", "y"], lambda item: next(runs), 3,
                                lambda done, total, label: seen.append((done, total, label)))
    assert middle == [2.5, (5.0, "a")]
    assert seen == [(0, 6, "x"), (1, 6, "y"), (2, 6, "x"), (3, 6, "y"), (4, 6, "x"),
                    (5, 6, "y"), (6, 6, "done")]
