"""The slowest rank sets the pace: speed differences between identical devices.

Identical GPUs do not run at identical speed: manufacturing variability and each chip's power
management under its power cap make some slower than others (Sinha et al., "Not All GPUs Are
Created Equal", SC'22, arXiv 2208.11035 v3, abstract: 8 % average, at most 22 %, performance
variation within each of five clusters of one GPU SKU, outliers up to 1.5x slower than the
median GPU; the differences are the devices', so they last over a run). A synchronous step
(the data-parallel gradient reduction, tensor-parallel collectives, pipeline hand-offs) waits
for the slowest of the ranks it joins, and since every rank of a job is joined to every other
by the step's collectives, the slowest device of the whole job sets the step's pace.

With each device's step time ``t (1 + c Z)``, Z a standard normal (c the coefficient of
variation of the devices' speed), the step of N devices is the expected maximum of N draws,
``t (1 + c E[max of N standard normals])`` (``slowest_of``). E[max] has no closed form beyond
N = 5; ``expected_max_normal`` integrates it: E[M_N] = int_0^inf (1 - Phi(x)^N) dx -
int_-inf^0 Phi(x)^N dx (M_N's CDF is Phi^N). For large N it grows as sqrt(2 ln N).

Not modelled: which phase each rank gates (the whole step is scaled, exposed communication
too, which a slower chip does not slow: an upper bound where communication is exposed),
variability from step to step within one device (thermal transients, host jitter), the
non-normal tail (Sinha et al.'s 1.5x outliers: a job scheduler or a health check removes
them), and any measured c: no per-device distribution of kernel times (median and spread per
GPU model) was found in a citable, readable form, so the plan's default is 0 (off) and
``Plan.rank_variability`` sets c for a what-if.
"""
from __future__ import annotations

import math
from functools import lru_cache

#: The most devices ``expected_max_normal`` accepts (2**40 is beyond any job); more is a
#: ValueError.
MAX_RANKS = 2 ** 40


@lru_cache(maxsize=4096)
def expected_max_normal(n: int) -> float:
    """E[max of ``n`` independent standard normals] (0 for n = 1; 1/sqrt(pi) for n = 2).

    Integrates the maximum's survival and distribution functions, ``1 - Phi^n`` over x > 0 and
    ``Phi^n`` over x < 0, with ``Phi^n = exp(n log Phi)`` (``scipy.special.log_ndtr``), so
    that the integrand stays exact far in the tails for any n."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_RANKS:
        raise ValueError(f"n = {n!r} must be an integer from 1 to {MAX_RANKS}")
    if n == 1:
        return 0.0
    # only when asked for: a plain predict loads no scipy
    from scipy import integrate, special
    # the upper tail: 1 - Phi(x)^n, negligible beyond sqrt(2 ln n) + 10
    top = math.sqrt(2 * math.log(n)) + 10.0
    mode = math.sqrt(2 * math.log(n))
    upper, _ = integrate.quad(lambda x: -math.expm1(n * special.log_ndtr(x)), 0.0, top,
                              points=[mode], limit=200, epsabs=1e-12, epsrel=1e-12)
    lower, _ = integrate.quad(lambda x: math.exp(n * special.log_ndtr(x)), -12.0, 0.0,
                              limit=200, epsabs=1e-12, epsrel=1e-12)
    return upper - lower


def slowest_of(n: int, c: float) -> float:
    """The factor by which the slowest of ``n`` devices' steps exceeds the median device's,
    their speeds varying with coefficient of variation ``c``: 1 + c E[max of n]. 1 for one
    device or c = 0."""
    if not 0.0 <= c < 1.0:
        raise ValueError(f"c = {c!r} must be in [0, 1)")
    return 1.0 + c * expected_max_normal(n) if c else 1.0


def figures(n: int, c: float) -> dict:
    """What a Result reports of it (``parallel.rank_variability`` in ``--json``)."""
    return {"coefficient_of_variation": c, "ranks": n,
            "expected_max_sigma": expected_max_normal(n), "step_factor": slowest_of(n, c)}


__all__ = ["MAX_RANKS", "expected_max_normal", "figures", "slowest_of"]
