"""The one test of a number that enters (``simulator.errors.is_real``, ``in_interval``,
``is_fraction``), used by every check that words its own line: a workload's shares
(``mlm_share``, ``packed_attention``, ``rotary_pct``), a config.json's fractions and dropout
rates, an MoE's capacity factor, a spec's efficiencies (loader and ``--set``)."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardware_specs.loader import load_device
from hardware_specs.override import override
from simulator.errors import SpecError, WorkloadError, bounded, in_interval, is_fraction, is_real
from workloads.transformer import Style, TransformerConfig


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10, 10))
def test_is_fraction_is_the_closed_interval_test(value):
    """(0, 1] exactly: 0 < x <= 1, which nan and the infinities fail."""
    assert is_fraction(value) == (0 < value <= 1)


@given(value=st.floats(-2, 2), low=st.floats(-1, 1), width=st.floats(0, 1),
       low_open=st.booleans(), high_open=st.booleans())
def test_in_interval_follows_its_ends(value, low, width, low_open, high_open):
    high = low + width
    inside = (value > low if low_open else value >= low) and \
        (value < high if high_open else value <= high)
    assert in_interval(value, low, high, low_open=low_open, high_open=high_open) == inside


@pytest.mark.parametrize("value", [True, False, "0.5", None, [0.5], 1j])
def test_a_bool_or_text_is_no_number(value):
    """``True`` is an int to Python (``True == 1``) but never a figure."""
    assert not is_real(value) and not is_fraction(value)
    assert not in_interval(value, -10, 10)


@pytest.mark.parametrize("value", [0.5, 1, np.float64(0.25), np.int64(1), Fraction(1, 3)])
def test_numbers_of_any_real_type_pass(value):
    assert is_real(value) and is_fraction(value)


def test_nan_is_in_no_interval():
    assert not in_interval(math.nan, -math.inf, math.inf)


def test_the_callers_keep_their_words():
    """Each caller's line is its own: a workload's share, the loader's and --set's fraction
    of peak, bounded's interval."""
    base = dict(name="t", layers=2, hidden=64, heads=4, vocab=100, seq_len=32)
    for value in (True, 0, 1.5, "0.5"):
        with pytest.raises(WorkloadError, match=r"mlm_share = .* must be a fraction in \(0, "
                                                r"1\] on an encoder"):
            TransformerConfig(**base, style=Style.ENCODER, mlm_share=value)
        with pytest.raises(WorkloadError, match=r"packed_attention = .* must be a fraction"):
            TransformerConfig(**base, packed_attention=value)
    with pytest.raises(WorkloadError, match="on an encoder"):     # a fraction, on a decoder
        TransformerConfig(**base, mlm_share=0.15)
    assert TransformerConfig(**base, packed_attention=1).packed_attention == 1
    with pytest.raises(SpecError, match=r"--set matmul_efficiency: must be in \(0, 1\], got "
                                        r"'1.5'; it is a fraction of peak"):
        override(load_device("a100"), {"matmul_efficiency": "1.5"})
    with pytest.raises(SpecError, match=r"x = True must be a number"):
        bounded(True, "x", 0.0, 1.0, error=SpecError)
    with pytest.raises(SpecError, match=r"x = 0 is outside \(0, 1\]"):
        bounded(0, "x", 0.0, 1.0, error=SpecError, low_open=True)
