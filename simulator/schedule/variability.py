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
N = 5; ``expected_max_normal`` (``simulator.parallel.order_stats``, shared with the experts'
load) integrates it: E[M_N] = int_0^inf (1 - Phi(x)^N) dx - int_-inf^0 Phi(x)^N dx (M_N's CDF
is Phi^N). For large N it grows as sqrt(2 ln N).

A measured c, ``RANK_VARIABILITY`` = 0.0172 (``simulator.plan.step``), at the kernel level: 392 V100 SXM2 GPUs of TACC
Longhorn each ran the same SGEMM (25536 x 25536, FP32, cuBLAS
``volta_sgemm_128x32_sliced1x4_nn``) many times; each GPU's median kernel time, and across GPUs
the robust coefficient of variation ``spread``: 1.4826 MAD / median (the MAD of a normal is
0.6745 sigma), which the tail does not move (measured May-June 2020 by Sinha et al.'s group,
published with their PAL scheduler, Jain et al., SC'24: hal-uw/blox-pal
``aggregated_data/sim/sgemm-longhorn-agg.csv``, commit da726ca, MIT;
tests/data/gpu_variability.csv keeps the per-GPU medians). The rule for what a health check
removes is the modified z-score above 3.5 (Iglewicz & Hoaglin 1993): 3 of the 392, up to 1.20x
the median; the standard deviation of the other 389 is 0.0164, so they are close to normal. The
mechanism is each chip's clock under the power cap (the GPUs ran at 297 W of 300 W; kernel time
and SM clock correlate at r = -0.87). A check on another generation and workload: 204 A100 PCIe
40GB GPUs of TACC Lonestar6, the mean ResNet-50 iteration of each (blox-pal
``aggregated_data/ls6/resnet-ls6-agg.csv``), spread 0.0160. The rule: the file's GPUs in the
cabinets whose nodes' ``nvidia-smi -L`` in hal-uw/gpu_variability_sc22_artifact (commit 93ba0d4,
``sec5b_bert/uuids/`` and ``sec5d_pagerank/uuids/``) reads A100-PCIE-40GB: c302, c303, c305,
c306, c308, c309, c315, c316, c317; c304 (3 GPUs) has no record and c310's one record
(``c310-006_uuid.txt``) is empty, so their 15 are left out (all 219 of the file: 0.0158).

Which devices get it by default (``coefficient``): GPUs (spec class ``gpu``: NVIDIA's and AMD's,
each chip boosting its clock under a power cap), the V100 figure measured on NVIDIA and a prior
for the other GPUs (AMD's are unmeasured). Devices of other classes have no measured per-chip
spread and get c = 0 with a note saying so: an FPGA runs the bitstream's fixed clock, and no
per-chip spread is cited for TPUs, IPUs, Gaudi, Trainium or CPUs. It is
``Plan.rank_variability``'s default (None: ``simulator.plan.step.RANK_VARIABILITY`` on a GPU,
0 elsewhere); a number, ``--rank-variability C``, applies to any device, and
``--rank-variability 0`` turns it off.

Not modelled: which phase each rank gates (the whole step is scaled, exposed communication too,
which a slower chip does not slow: an upper bound where communication is exposed; so are steps
that run below the power cap, where chips differ less: 136 Longhorn V100s' BERT iterations at
152 W mean spread 0.0055, blox-pal ``bert-longhorn-agg.csv``), variability from step to step
within one device (thermal transients, host jitter; within one V100 the SGEMM's runs spread
0.001), the tail beyond the health check's cut (the normal's expected maximum passes 3.5 sigma
at about 2,500 devices, where a cluster has removed its devices: above that the factor is an
upper bound), and a spread per device model or per workload.
"""
from __future__ import annotations

import math
import statistics

from simulator.parallel.order_stats import MAX_RANKS, expected_max_normal
from simulator.plan.step import RANK_VARIABILITY

#: sigma / MAD of a normal, 1 / Phi^-1(3/4) (``spread``).
NORMAL_MAD = 1.482602218505602

def slowest_of(n: int, c: float) -> float:
    """The factor by which the slowest of ``n`` devices' steps exceeds the median device's,
    their speeds varying with coefficient of variation ``c``: 1 + c E[max of n]. 1 for one
    device or c = 0."""
    if not 0.0 <= c < 1.0:
        raise ValueError(f"c = {c!r} must be in [0, 1)")
    return 1.0 + c * expected_max_normal(n) if c else 1.0


def spread(times) -> float:
    """The robust coefficient of variation of identical devices' times (or speeds): 1.4826 x
    the median absolute deviation / the median (sigma / mean for a normal; a few outliers do
    not move it)."""
    values = sorted(float(t) for t in times)
    if len(values) < 2 or values[0] <= 0 or not all(map(math.isfinite, values)):
        raise ValueError("spread needs two or more positive, finite times")
    middle = statistics.median(values)
    return NORMAL_MAD * statistics.median(abs(t - middle) for t in values) / middle


def coefficient(c: float | None, device) -> float:
    """The coefficient of variation a plan's ``rank_variability`` ``c`` gives on ``device`` (a
    DeviceSpec): ``c`` when the plan sets it; by default (None) the measured V100 spread on a
    GPU (spec class ``gpu``) and 0 on any other device (the module's docstring)."""
    if c is not None:
        return c
    from hardware_specs.spec import DeviceClass
    return RANK_VARIABILITY if device.device_class is DeviceClass.GPU else 0.0


def provenance(c: float | None) -> str:
    """Where a note says the coefficient comes from: the plan's ``rank_variability`` ``c``,
    None for the measured default, a number for the user's what-if."""
    if c is None:
        return ("c measured: 392 V100s' SGEMM times, a prior for other GPUs; "
                "--rank-variability 0 turns it off")
    return "c set by the plan, a what-if"


def figures(n: int, c: float) -> dict:
    """What a Result reports of it (``parallel.rank_variability`` in ``--json``)."""
    return {"coefficient_of_variation": c, "ranks": n,
            "expected_max_sigma": expected_max_normal(n), "step_factor": slowest_of(n, c)}


__all__ = ["MAX_RANKS", "NORMAL_MAD", "RANK_VARIABILITY", "coefficient", "expected_max_normal",
           "figures",
           "provenance", "slowest_of", "spread"]
