"""Datasheet units -> SI. The one place a spec file's units are converted (STYLE.md rule 4).

Decimal prefixes are decimal (1 TFLOP/s = 1e12 FLOP/s, 1 GB = 1e9 bytes, as in datasheets);
binary prefixes are binary (1 GiB = 2**30 bytes). Vidur's ``x * 2**40`` TFLOP/s is the bug this
module exists to prevent.
"""
from __future__ import annotations

TFLOPS = 1e12           # FLOP/s per TFLOP/s (decimal, as every datasheet means it)
KB, MB, GB, TB = 1e3, 1e6, 1e9, 1e12
KIB, MIB, GIB = 2.0**10, 2.0**20, 2.0**30
GB_PER_S = 1e9          # bytes/s per GB/s
US = 1e-6               # seconds per microsecond

#: Capacity keys a ``[[memory]]`` level may use, with their factor to bytes.
CAPACITY_KEYS = {"capacity_kb": KB, "capacity_mb": MB, "capacity_gb": GB, "capacity_tb": TB,
                 "capacity_kib": KIB, "capacity_mib": MIB, "capacity_gib": GIB}


def tflops_to_flops_per_s(tflops: float) -> float:
    return tflops * TFLOPS


def gb_per_s_to_bytes_per_s(gb_per_s: float) -> float:
    return gb_per_s * GB_PER_S


def us_to_s(us: float) -> float:
    return us * US


def capacity_to_bytes(key: str, value: float) -> float:
    """``capacity_gb = 80`` -> 80e9; ``capacity_mib = 40`` -> 40 * 2**20."""
    return value * CAPACITY_KEYS[key]


GHZ = 1e9               # Hz per GHz
PJ = 1e-12              # joules per picojoule


def ghz_to_hz(ghz: float) -> float:
    return ghz * GHZ


def pj_to_j(pj: float) -> float:
    return pj * PJ
