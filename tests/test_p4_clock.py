"""The Tesla P4's GEMM rate under load, and why hwsim does not price a held clock from it.

Data: every fp32 ``torch.nn.Linear`` call of NeuSight's kernel table on the Tesla P4, the
Tesla T4 and the Tesla P100 PCIe 16GB (sitar-lab/NeuSight 6945927, MIT;
``scripts/asplos/data/dataset/test/linear.csv``; PyTorch 2.1.0, CUDA 12.1, TF32 off), in the
order they were collected (``neusight/Dataset/collect.py`` runs the shapes of
``scripts/asplos/data/dataset/dims/test_linear.csv`` one after another, and each device's rows
follow that file's order; the P4 lacks the 66 shapes that did not fit its 8 GB):
``tests/data/neusight_linear_order.csv``. Each call was timed 25 times back to back between two
CUDA events and the fastest 5 averaged, then profiled once and the profile written to and read
back from a JSON file before the next shape: the card rests between calls.

What the table shows (2026-12-05): the P4's rate falls with the call's length where the T4
(a 70 W passively cooled card too) runs the very same shapes at a flat rate, and a short call
right after tens of seconds of long calls is back at the rested rate, so it is not heat
accumulating over the session: the whole table is fitted (median error 5 %, one rate 10 %) by a
clock that holds the rested rate for the first few tenths of a second of continuous load and
then about half of it. hwsim does not price that held clock: read off the P100's table the same
way (its calls of 1 s and more fall too, to 0.25 of its peak) it would price the P100's five
inference labels, now within 7 %, +148 to +168 % slow (the P4's three would come from -13 to
-41 % to +1, -14 and +20 %):
the fall is real on the kernel bench, but it does not carry over to a training or inference
run on every card that shows it, and no kernel-level figure says on which. Diagnosis only.
"""
import csv
import statistics
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "tests" / "data" / "neusight_linear_order.csv"
PEAK = {"Tesla P4": 5.5e12,                 # p4.toml: datasheet 5.5 TFLOP/s fp32
        "Tesla T4": 8.1e12,                 # t4.toml: datasheet 8.1 TFLOP/s fp32
        "Tesla P100-PCIE-16GB": 9.3e12}     # p100-pcie-16gb.toml: datasheet 9.3 TFLOP/s fp32
RUNS, KEPT = 25, 5                          # collect.py: active = 25, sample = 5


def _calls(device: str) -> list[dict]:
    with TABLE.open(newline="") as handle:
        out = [r for r in csv.DictReader(handle) if r["device"] == device]
    for r in out:
        r["flops"] = 2.0 * int(r["m"]) * int(r["n"]) * int(r["k"])
        r["seconds"] = float(r["time_ms"]) / 1e3
        r["rate"] = r["flops"] / r["seconds"] / PEAK[device]
    return sorted(out, key=lambda r: int(r["order"]))


def _bench_seconds(work_s: np.ndarray, rested: float, held: float, after_s: float) -> np.ndarray:
    """What NeuSight's harness reports for calls of ``work_s`` seconds at the full peak, on a
    card that runs at ``rested`` of its peak for the first ``after_s`` seconds of continuous
    load and at ``held`` after, starting rested: the mean of the fastest 5 of 25 back-to-back
    runs."""
    clock = np.zeros_like(work_s)
    runs = []
    for _ in range(RUNS):
        at_rest = np.clip(after_s - clock, 0.0, None)          # seconds left at the rested rate
        done_rested = np.minimum(work_s, at_rest * rested)
        run = done_rested / rested + (work_s - done_rested) / held
        runs.append(run)
        clock = clock + run
    return np.sort(np.array(runs), axis=0)[:KEPT].mean(axis=0)


def _fit(device: str) -> tuple[tuple[float, float, float], float, float]:
    """(rested, held, after_s) fitted on a device's calls of at least 1e10 FLOPs (median
    |log error|, Nelder-Mead from (0.8, 0.45, 0.3 s)), the median |error| of that fit, and
    the median |error| of one rate (the median one) for every call."""
    from scipy.optimize import minimize

    calls = [r for r in _calls(device) if r["flops"] >= 1e10]
    work = np.array([r["flops"] / PEAK[device] for r in calls])
    seconds = np.array([r["seconds"] for r in calls])

    def loss(x):
        rested, held, after_s = x
        if not 0 < held < rested <= 1.2 or not 0 < after_s < 5:
            return 1e9
        return float(np.median(np.abs(np.log(_bench_seconds(work, *x) / seconds))))

    best = minimize(loss, (0.8, 0.45, 0.3), method="Nelder-Mead").x
    error = float(np.median(np.abs(_bench_seconds(work, *best) / seconds - 1)))
    one = float(np.median(work / seconds))
    return tuple(best), error, float(np.median(np.abs(work / one / seconds - 1)))


def test_the_table_is_neusights_collection_order():
    """Every call of the three GPUs, each GPU's in the order of NeuSight's shape list."""
    for device, count in (("Tesla P4", 974), ("Tesla T4", 1040), ("Tesla P100-PCIE-16GB", 1040)):
        calls = _calls(device)
        assert len(calls) == count
        assert [int(r["order"]) for r in calls] == list(range(count))
    assert (_calls("Tesla P4")[0]["m"], _calls("Tesla P4")[0]["n"]) == ("1024", "2560")


def test_the_p4_slows_with_the_calls_length_where_the_t4_does_not():
    """The P4's median rate: 0.82 of its peak on calls of 5-50 ms, 0.65 at 0.1-0.2 s, 0.44 on
    calls of 1 s or more. The T4 on the same shapes: 0.49 and 0.46: its rate does not depend
    on the length, so the P4's fall is not in the shapes (the long calls are the big ones)."""
    p4 = _calls("Tesla P4")
    t4 = {(r["m"], r["n"], r["k"]): r for r in _calls("Tesla T4")}

    def median(rows, low, high):
        return statistics.median(r["rate"] for r in rows if low <= r["seconds"] < high)

    short, long = median(p4, 0.005, 0.05), median(p4, 1.0, 100.0)
    assert short >= 0.8 and median(p4, 0.1, 0.2) <= 0.7 and long <= 0.46
    same = [t4[(r["m"], r["n"], r["k"])] for r in p4 if r["seconds"] >= 1.0]
    t4_short = [t4[(r["m"], r["n"], r["k"])] for r in p4 if 0.005 <= r["seconds"] < 0.05]
    ratio = (statistics.median(r["rate"] for r in same)
             / statistics.median(r["rate"] for r in t4_short))
    assert 0.9 <= ratio <= 1.1


def test_a_short_p4_call_after_long_ones_is_at_the_rested_rate():
    """Short calls (5-50 ms) right after calls that kept the P4 busy for 30 s or more (its five
    previous calls' 26 runs each: 127 calls) run at the same rate as those after less than 5 s
    of load (53 calls; 0.832 and 0.827 of the peak): the card is back to its rested clock
    within the rest between two calls (a profile written and read back), so the slow long
    calls are not heat soaked into the card over the session."""
    calls = _calls("Tesla P4")
    after_load, after_rest = [], []
    for i, r in enumerate(calls):
        if not 0.005 <= r["seconds"] < 0.05 or i < 5:
            continue
        before = sum(26 * c["seconds"] for c in calls[i - 5:i])
        if before >= 30:
            after_load.append(r["rate"])
        elif before < 5:
            after_rest.append(r["rate"])
    assert len(after_load) >= 100 and len(after_rest) >= 40
    assert statistics.median(after_load) >= 0.8
    assert statistics.median(after_load) == pytest.approx(statistics.median(after_rest),
                                                          rel=0.05)


def test_a_clock_held_after_tenths_of_a_second_fits_the_p4_table():
    """Fitted on the P4's 865 calls of 1e10 FLOPs and more: 0.841 of the peak for the first
    0.31 s of continuous load, 0.413 after (0.49 of it), median error 5.0 % against 9.6 % for
    one rate: the fall over 0.1-5 s calls is the fastest five runs averaging a boost window of
    a few tenths of a second with a held clock, not a rate that keeps falling over seconds."""
    (rested, held, after_s), error, one = _fit("Tesla P4")
    assert 0.8 <= rested <= 0.88 and 0.38 <= held <= 0.45 and 0.1 <= after_s <= 0.6
    assert error <= 0.06 and one >= 0.09


def test_a_held_clock_would_price_the_p100s_labels_far_slow(tmp_path):
    """Price each card's fp32 GEMMs at its held rate, its median on the calls of 1 s or more
    (the P4 0.428, the P100 0.252, in place of the specs' 0.675 and 0.695, fitted on calls of
    2e11 FLOPs and more): the P4's three inference labels move from -30.4, -40.7, -12.9 % to
    +0.8, -14.0, +20.1 % and the P100's five from +0.6 to +6.1 % to +148 to +168 %: the P100
    ran its labels (and the GEMMs of their per-op traces, 0.75-0.78 of its peak) at its rested
    rate. A held clock read off a kernel table is not a figure for a run."""
    from tests.conftest import load_module

    bench = load_module(ROOT / "benchmarks" / "neusight_labels.py", "neusight_labels")
    specs = {}
    for name, device, old in (("p4", "Tesla P4", "0.675"),
                              ("p100-pcie-16gb", "Tesla P100-PCIE-16GB", "0.695")):
        held = statistics.median(r["rate"] for r in _calls(device) if r["seconds"] >= 1.0)
        text = (ROOT / "hardware_specs" / "devices" / f"{name}.toml").read_text()
        line = f"fp32_matmul_efficiency = {old}"
        assert line in text
        specs[name] = tmp_path / f"{name}-held.toml"
        specs[name].write_text(text.replace(line, f"fp32_matmul_efficiency = {held:.3f}"))
    moved = {}
    for r in bench.labels(bench.INFERENCE_LABELS):
        if r["catalogue"] in specs:
            args = (r["model"], str(specs[r["catalogue"]]), int(r["seq_len"]), int(r["batch"]))
            moved.setdefault(r["catalogue"], []).append(
                bench.predict_inference_ms(*args) / float(r["fw_ms"]) - 1)
    assert len(moved["p4"]) == 3 and max(abs(e) for e in moved["p4"]) <= 0.25
    assert len(moved["p100-pcie-16gb"]) == 5 and min(moved["p100-pcie-16gb"]) >= 0.4
