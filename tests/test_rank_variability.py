"""The slowest rank sets the pace (simulator.schedule.variability): the expected maximum of N
standard normals in closed form and against tables, its invariants, and the step it scales."""
from __future__ import annotations

import contextlib
import io
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special, stats

from hardware_specs.loader import load_device
from simulator import simulate
from simulator.cli import main
from simulator.errors import PlanError
from simulator.plan.step import Plan
from simulator.schedule.variability import expected_max_normal, figures, slowest_of

ROOT_PI = math.sqrt(math.pi)


def test_expected_max_closed_forms():
    """E[M_N] in closed form for N <= 5 (Godwin 1949, Biometrika 36; David & Nagaraja,
    Order Statistics, 3rd ed. 2003): E[M_2] = 1/sqrt(pi), E[M_3] = 3/(2 sqrt(pi)),
    E[M_4] = 3/(2 sqrt(pi)) (1 + 2/pi arcsin(1/3)), E[M_5] = 5/(4 sqrt(pi)) (1 + 6/pi
    arcsin(1/3))."""
    third = math.asin(1 / 3)
    assert expected_max_normal(1) == 0.0
    assert expected_max_normal(2) == pytest.approx(1 / ROOT_PI, abs=1e-12)
    assert expected_max_normal(3) == pytest.approx(3 / (2 * ROOT_PI), abs=1e-12)
    assert expected_max_normal(4) == pytest.approx(3 / (2 * ROOT_PI) * (1 + 2 / math.pi * third),
                                                   abs=1e-12)
    assert expected_max_normal(5) == pytest.approx(5 / (4 * ROOT_PI) * (1 + 6 / math.pi * third),
                                                   abs=1e-12)


@pytest.mark.parametrize("n, table", [(10, 1.53875), (20, 1.86748), (50, 2.24907),
                                      (100, 2.50759)])
def test_expected_max_against_the_table(n, table):
    """Harter (1961), 'Expected values of normal order statistics', Biometrika 48, table 1
    (five decimals), as reprinted in David & Nagaraja's tables."""
    assert expected_max_normal(n) == pytest.approx(table, abs=6e-6)


def _density_integral(n: int) -> float:
    """E[M_n] the other way: int x n phi(x) Phi(x)^(n-1) dx (the maximum's density)."""
    mode = math.sqrt(2 * math.log(n))
    value, _ = integrate.quad(
        lambda x: x * n * math.exp(stats.norm.logpdf(x) + (n - 1) * special.log_ndtr(x)),
        -12.0, mode + 12.0, points=[mode], limit=400, epsabs=1e-12, epsrel=1e-12)
    return value


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=2, max_value=200_000))
def test_expected_max_against_the_density_integral(n):
    assert expected_max_normal(n) == pytest.approx(_density_integral(n), abs=1e-7)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=2, max_value=2 ** 30))
def test_expected_max_below_its_bound(n):
    """E[max of N standard normals] <= sqrt(2 ln N) (Jensen on the moment generating
    function), and above the N = 2 value."""
    assert 1 / ROOT_PI - 1e-12 <= expected_max_normal(n) <= math.sqrt(2 * math.log(n))


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=100_000), st.integers(min_value=1, max_value=1000),
       st.floats(min_value=0.0, max_value=0.5), st.floats(min_value=0.0, max_value=0.5))
def test_monotone_in_ranks_and_variation(n, more, c, d):
    low, high = sorted((c, d))
    assert expected_max_normal(n + more) > expected_max_normal(n)
    assert slowest_of(n + more, c) >= slowest_of(n, c)
    assert slowest_of(n, high) >= slowest_of(n, low) >= 1.0


def test_one_device_or_no_variation_is_the_identity():
    assert slowest_of(1, 0.3) == 1.0
    assert slowest_of(4096, 0.0) == 1.0
    assert figures(8, 0.02) == {"coefficient_of_variation": 0.02, "ranks": 8,
                                "expected_max_sigma": expected_max_normal(8),
                                "step_factor": 1 + 0.02 * expected_max_normal(8)}


@pytest.mark.parametrize("n", [0, -1, 1.5, True, 2 ** 41])
def test_expected_max_refuses_a_non_count(n):
    with pytest.raises(ValueError):
        expected_max_normal(n)


def test_the_step_waits_for_the_slowest_device():
    """A data-parallel step of 16 devices is 1 + c E[M_16] times the step without variation;
    one device's step does not move."""
    base = simulate("gpt2-small", "a100", num_devices=16, micro_batch=4, global_batch=64)
    varied = simulate("gpt2-small", "a100", num_devices=16, micro_batch=4, global_batch=64,
                      rank_variability=0.03)
    factor = 1 + 0.03 * expected_max_normal(16)
    assert varied.step_time_s == pytest.approx(base.step_time_s * factor, rel=1e-12)
    assert varied.parallel["rank_variability"]["step_factor"] == pytest.approx(factor,
                                                                         rel=1e-15)
    assert varied.avg_power_w < base.avg_power_w   # the waiting devices idle
    assert "rank_variability" not in base.parallel
    one = simulate("gpt2-small", "a100", micro_batch=4, rank_variability=0.03)
    assert one.step_time_s == simulate("gpt2-small", "a100", micro_batch=4).step_time_s


def test_the_slowest_device_scales_the_streamed_step_too():
    """On Graphcore IPUs streaming their states in (simulator.schedule.streamed), the factor
    scales the whole device step, the streaming time with it; a step overhead outside the
    step's graph is added after it, unscaled."""
    bow = load_device("graphcore-bow")
    kw = dict(num_devices=4, micro_batch=1, global_batch=8)
    base = simulate("gpt2-small", bow, **kw)
    assert any("do not fit" in note for note in base.notes)   # streamed
    varied = simulate("gpt2-small", bow, rank_variability=0.05, **kw)
    factor = 1 + 0.05 * expected_max_normal(4)
    assert varied.step_time_s == pytest.approx(base.step_time_s * factor, rel=1e-12)
    late = simulate("gpt2-small", bow, rank_variability=0.05, step_overhead_ms=100, **kw)
    assert late.step_time_s == pytest.approx(varied.step_time_s + 0.1, rel=1e-12)


@pytest.mark.parametrize("c", [-0.01, 0.51, float("nan"), "x", True])
def test_plan_refuses_a_bad_variation(c):
    with pytest.raises(PlanError, match="rank_variability"):
        Plan(rank_variability=c)


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


def test_cli_reports_it_and_refuses_a_bad_value():
    status, out, _ = _run(["predict", "gpt2-small", "--device", "a100", "--num-devices", "8",
                           "--micro-batch", "4", "--rank-variability", "0.02", "--json"])
    assert status == 0
    shown = json.loads(out)["parallel"]["rank_variability"]
    assert shown["ranks"] == 8 and shown["step_factor"] == pytest.approx(
        1 + 0.02 * expected_max_normal(8))
    status, out, _ = _run(["predict", "gpt2-small", "--device", "a100", "--micro-batch", "4",
                           "--json"])
    assert status == 0 and "rank_variability" not in json.loads(out)["parallel"]
    status, _, err = _run(["predict", "gpt2-small", "--device", "a100",
                           "--rank-variability", "0.9"])
    assert status == 2 and err.count("\n") == 1 and "rank_variability" in err
