"""Measure with torch on the device at hand, fit its efficiencies, compare with real steps."""
from simulator.calibrate.fit import Calibration

__all__ = ["Calibration"]
