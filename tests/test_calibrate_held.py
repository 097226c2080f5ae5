"""A calibration writes no figure its timings do not determine, and no non-physical one (issue 22,
item 9; helper Q1's finding, 2026-12-05: on the development VM no case moved more than the 480
MiB of L3 it reports, and the fit left ``memory_efficiency`` at 0.006, which would have priced
a step past 480 MiB at 0.2 GB/s). A figure no case's predicted time depends on keeps the spec's
value, and the output says so (``Calibration.undetermined``, ``held_``); a fitted
``memory_efficiency`` below ``MEMORY_EFFICIENCY_FLOOR`` is refused: nothing written, one line,
exit 2. Timings are made by the cost model itself from known figures (no torch, no timing)."""
import dataclasses

import pytest

from hardware_specs import units
from hardware_specs.loader import load_device
from hardware_specs.spec import MemoryLevel
from hardware_specs.writer import device_toml
from simulator.calibrate.fit import (MEMORY_EFFICIENCY_FLOOR, PARAMS, Calibration,
                                     CalibrationRefused, Measurement, cases, checked_fit)
from simulator.calibrate.records import kernels_csv
from simulator.calibrate.fit import _lowered
from simulator.cli import main
from simulator.cost.roofline import step_footprint

# each distinct calibration fit computed once per module (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("memo_fits")

XEON = load_device("xeon-8380")
TRUTH = {"matmul_efficiency": 0.71, "conv_efficiency": 0.43, "vector_efficiency": 0.02,
         "memory_efficiency": 0.3, "op_overhead_s": 6e-6, "optimizer_overhead_s": 15e-6,
         "step_overhead_s": 40e-6}
ENV = {"host": "test", "device": "cpu", "driver": "", "cuda": "", "torch": "0",
       "threads": "2", "date": "2026-12-05"}
#: the spec's own main-memory figure: none of the fit's grid starts (0.1, 0.4, 0.9), nor its
#: upper bound, nor TRUTH's, so that keeping it is told apart from anything the fit returns
SPEC_MEMORY = 0.85


def _cached(device):
    """``device`` with caches that hold every quick case's bytes (the largest, a 1024^3 fp32
    matmul or the 8 x 256 x 56 x 56 convolution's output, is under 26 MiB): a private L2 and a
    shared 60 MiB L3, so no case streams from main memory, as on the development VM."""
    return dataclasses.replace(device, memory_efficiency=SPEC_MEMORY, priors=_own_memory(device),
                               memory=(
        MemoryLevel("l2", 50 * units.MIB, 400e9, private=True),
        MemoryLevel("l3", 60 * units.MIB, 150e9), device.main_memory))


def _own_memory(device) -> tuple[str, ...]:
    """``device``'s priors less memory_efficiency: SPEC_MEMORY is the spec's own figure (the
    xeon-8380 file gives none, so it loads with the cross-class prior)."""
    return tuple(name for name in device.priors if name != "memory_efficiency")


def _timings(device, truth):
    todo = [c for c in cases(quick=True) if c.kind != "function"]
    bare = dataclasses.replace(device, **{**truth, "op_overhead_s": 1.5e-6})
    training = dataclasses.replace(device, **truth)
    return [Measurement(c, Calibration._predict(c, training if c.kind == "train" else bare))
            for c in todo]


@pytest.fixture(scope="module")
def cached():
    device = _cached(XEON)
    return device, _timings(device, TRUTH)


def test_no_case_past_the_last_cache_keeps_the_specs_memory_figure(cached):
    device, timings = cached
    # the premise: no case's bytes (a step's: its traffic) exceed the last cache
    held = [max(float(lowered.nbytes.max()), step_footprint(lowered))
            for lowered in (_lowered(m.case) for m in timings)]
    assert 20 * units.MIB < max(held) <= device.memory[-2].capacity_bytes
    fit = checked_fit(device, timings)
    assert fit.held_ == {"memory_efficiency": SPEC_MEMORY}
    assert fit.memory_efficiency_ == SPEC_MEMORY
    assert fit.apply().memory_efficiency == SPEC_MEMORY
    for name in PARAMS:     # the others recovered as before
        if name != "memory_efficiency":
            assert getattr(fit, name + "_") == pytest.approx(TRUTH[name], rel=1e-3), name
    assert max(abs(fit.residuals_)) < 1e-4
    assert fit.problems() == []
    report = fit.report()
    assert ("memory_efficiency kept at the spec's 0.85: no case's predicted time depends on it"
            in report)
    assert "no case's bytes exceed the l3's 60 MiB" in report


def test_a_figure_that_moves_a_case_is_fitted(cached):
    """The spec without caches: every op streams from main memory, and memory_efficiency is
    fitted (TRUTH's 0.3 comes back). There, at 0.3 of 204.8 GB/s, every vector case is bound
    by its bytes (an add: 1 FLOP per 12 bytes, 61 GB/s against 118 GFLOP/s at 0.02 of the
    vector peak), so vector_efficiency moves no time and keeps the spec's figure instead (the
    cross-class prior, 0.9775: no catalogue CPU's vector units are measured), which stays a
    prior in the calibrated spec; the fitted figures are the device's own."""
    plain = dataclasses.replace(XEON, memory_efficiency=SPEC_MEMORY, priors=_own_memory(XEON))
    fit = checked_fit(plain, _timings(plain, TRUTH))
    assert fit.held_ == {"vector_efficiency": 0.9775}
    assert fit.apply().priors == ("vector_efficiency",)
    assert fit.memory_efficiency_ == pytest.approx(0.3, rel=1e-3)
    assert fit.matmul_efficiency_ == pytest.approx(0.71, rel=1e-3)
    assert max(abs(fit.residuals_)) < 1e-4


def test_the_written_spec_keeps_the_memory_figure_and_says_so(cached, tmp_path, capsys):
    device, timings = cached
    spec = tmp_path / "cached.toml"
    spec.write_text(device_toml(device))
    recorded = tmp_path / "timings.csv"
    recorded.write_text(kernels_csv(timings, ENV))
    out = tmp_path / "calibrated.toml"
    assert main(["calibrate", "--device", str(spec), "--from", str(recorded),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "memory_efficiency kept at the spec's 0.85" in printed
    written = load_device(str(out))
    assert written.memory_efficiency == SPEC_MEMORY
    assert written.memory == device.memory            # bandwidths and the private flag
    assert written.matmul_efficiency == pytest.approx(0.71, rel=1e-3)
    assert ("kept at the spec's values, not determined by the timings: memory_efficiency 0.85"
            in out.read_text())


def test_a_memory_figure_below_the_physical_floor_is_refused(tmp_path, capsys):
    """Main memory at half the floor (0.005 of the xeon-8380's 204.8 GB/s, about 1 GB/s):
    every case streams from it (no cache listed), so the fit finds the figure, and it is
    refused: nothing written, one line naming it, exit 2."""
    slow = {**TRUTH, "memory_efficiency": MEMORY_EFFICIENCY_FLOOR / 2}
    timings = _timings(XEON, slow)
    fit = Calibration(XEON).fit(timings)
    assert fit.memory_efficiency_ == pytest.approx(0.005, rel=1e-2)
    with pytest.raises(CalibrationRefused, match=r"memory_efficiency = 0\.005 is below its "
                                                 r"physical floor 0\.01"):
        checked_fit(XEON, timings)
    recorded = tmp_path / "slow.csv"
    recorded.write_text(kernels_csv(timings, ENV))
    out = tmp_path / "xeon.toml"
    code = main(["calibrate", "--device", "xeon-8380", "--from", str(recorded),
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert err.count("\n") == 1 and "refused, nothing written" in err
    assert "below its physical floor" in err and "Traceback" not in err
