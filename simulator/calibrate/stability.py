"""How stable a calibration is: the fit repeated on two halves of its timings.

``hwsim calibrate`` times every case in three interleaved passes (``simulator.calibrate.timing``)
and keeps each pass's timing. Split in two equal halves, the first pass and the last (passes 1
and 3), they are two independent calibrations' worth of timings of the same cases, each one
timing a case and the same rule for every case; each half is fitted as the whole is (started
from the whole's fit), and every case predicted with both fits. Equal halves: a half that was
the faster of two passes (min of passes 1 and 3 against pass 2, as before) is faster than a
single pass on any noisy machine, steady or not, and the spread measured that bias (a false
"unstable"). Not measured: a slow spell on the middle pass alone, which the lower median (the
middle of the three timings) keeps out of the figures anyway. Timings of a steady
device give two equal fits; a shared machine's slow spells (tens of seconds, the 2-vCPU
development machine's two-thread steps switching between speeds ~35 % apart, docs/accuracy.md)
fall on one half and pull them apart.
The median disagreement over the cases is the calibration's spread: above ``STABILITY_BOUND``
``hwsim calibrate`` says the calibration is unstable (it still writes it, with the spread in
the spec's provenance comment: a user may have no quieter machine). Costs two local fits.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hardware_specs.spec import DeviceSpec
from simulator.calibrate.fit import Calibration, Measurement

#: Fits on halves of a calibration's timings whose predictions of its cases differ by more than
#: this (median over the cases) mark it unstable. Chosen, not fitted: it is issue 20's target
#: for the held-out models (median |error| at most 10 %); a calibration that moves its own
#: predictions by more than that between two halves of its timings cannot meet it.
STABILITY_BOUND = 0.10


@dataclass(frozen=True)
class Spread:
    """How far fits on two halves of the timings disagree: over the cases, the median and the
    largest |prediction of one half's fit / the other's - 1|. Not the fitted figures
    themselves: one the timings hardly determine moves far between the halves while no
    prediction moves (``memory_efficiency`` where every case's bytes fit in a cache moved 110x
    in one run here, before such a figure kept the spec's value, ``Calibration.undetermined``)."""

    median: float
    worst: float

    @property
    def unstable(self) -> bool:
        return self.median > STABILITY_BOUND

    def describe(self) -> str:
        return (f"fits on halves of the timings differ by {self.median:.1%} (median over the "
                f"cases; largest {self.worst:.1%})")

    def warning(self) -> str:
        """The line a user sees: empty when stable."""
        if not self.unstable:
            return ""
        return (f"calibration unstable: {self.describe()}, above {STABILITY_BOUND:.0%}; rerun "
                "on a quiet machine (uptime's load under 1) or with fewer --threads")


def halves(measurements: list[Measurement]) -> tuple[list[Measurement], list[Measurement]] | None:
    """Each case's first pass and its last, two equal halves of one timing each: two independent
    calibrations' worth of timings. The passes are the first ``n`` timings of every case, ``n``
    the fewest any case has (the calibration's interleaved passes, three by default, pass 1
    against pass 3); the timings ``checked_fit`` adds to a case timed again come after them and
    are left out, so every case is split by the same rule. None when a case has fewer than two
    (recorded without them, or one pass)."""
    if not measurements:
        return None
    passes = min(len(m.samples) for m in measurements)
    if passes < 2:
        return None
    return tuple([Measurement(m.case, m.samples[index], (m.samples[index],))
                  for m in measurements] for index in (0, passes - 1))


def stability(device: DeviceSpec, measurements: list[Measurement],
              whole: Calibration | None = None) -> Spread | None:
    """``Spread`` of fits on the two ``halves`` of the timings (None without pass timings):
    each case predicted with each half's fit. Timings that are the steady device's give two
    equal fits (0 %); a shared machine's slow spells, falling on one half, pull them apart.
    ``whole``: the fit of all the timings, where each half's fit starts (once, not from the
    grid of starts: the halves' optima lie near it; on the quick kernel cases of
    tests/test_calibrate_stability.py 0.17 s for both halves against 12 s, the same spread
    within 1e-9)."""
    split = halves(measurements)
    if split is None:
        return None
    fits = [Calibration(device).fit(half, start=whole) for half in split]
    ratios = np.array([fits[0]._predict(m.case, fits[0]._device_for(m.case))
                       / fits[1]._predict(m.case, fits[1]._device_for(m.case))
                       for m in split[0]])
    differ = np.abs(ratios - 1.0)
    return Spread(float(np.median(differ)), float(differ.max()))


__all__ = ["STABILITY_BOUND", "Spread", "halves", "stability"]
