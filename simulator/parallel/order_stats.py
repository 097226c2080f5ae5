"""The expected maximum of N independent standard normals, E[M_N]: the busiest of N experts or
ranks of a mixture of experts (``simulator.parallel.expert``) and the slowest of N devices
(``simulator.schedule.variability``) both read it.

E[M_N] has no closed form beyond N = 5 (Godwin 1949, Biometrika 36); with M_N's CDF Phi^N,
E[M_N] = int_0^inf (1 - Phi(x)^N) dx - int_-inf^0 Phi(x)^N dx, integrated numerically. For
large N it grows as sqrt(2 ln N).
"""
from __future__ import annotations

import math
import numbers
from functools import lru_cache

#: The most normals ``expected_max_normal`` accepts (2**40 is beyond any job or router); more
#: is a ValueError.
MAX_RANKS = 2 ** 40


@lru_cache(maxsize=4096)
def expected_max_normal(n: int) -> float:
    """E[max of ``n`` independent standard normals] (0 for n = 1; 1/sqrt(pi) for n = 2).

    Integrates the maximum's survival and distribution functions, ``1 - Phi^n`` over x > 0 and
    ``Phi^n`` over x < 0, with ``Phi^n = exp(n log Phi)`` (``scipy.special.log_ndtr``), so
    that the integrand stays exact far in the tails for any n."""
    if (isinstance(n, bool) or not isinstance(n, numbers.Integral)
            or not 1 <= n <= MAX_RANKS):
        raise ValueError(f"n = {n!r} must be an integer from 1 to {MAX_RANKS}")
    n = int(n)
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


__all__ = ["MAX_RANKS", "expected_max_normal"]
