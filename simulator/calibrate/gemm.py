"""A GPU's GEMM efficiencies from measured kernel timings: ``matmul_efficiency`` and
``fp32_matmul_efficiency`` of its spec.

hwsim prices a GEMM at ``peak x matmul_efficiency x shape`` (``simulator.cost.efficiency``: tile
and wave quantisation relative to the 8192^3 reference GEMM). Given measured times of GEMMs on a
device, each large one (at least ``LARGE_FLOPS``, where launch and fixed costs are a small share
and the GEMM is bound by its arithmetic) implies the efficiency ``hwsim's time at efficiency 1 /
measured time``; the fit is the median over the table's large GEMMs but the fifth with the most
FLOPs, which is held out: the fit is judged on larger GEMMs than it saw.

Data: DeepBench (Baidu, github.com/baidu-research/DeepBench, Apache-2.0, commit da81ba7), the
dense GEMMs of six applications (``tests/data/deepbench_gemm.csv``, 95 shapes per device and
format) timed with cuBLAS by ``code/nvidia/gemm_bench.cu`` on a V100 SXM2 (DGX-1) and a T4, CUDA
10.1, cuDNN 7.6.2, driver 418.67, fp32 and fp16 ("16 bit inputs, 16 bit multiplication, 32 bit
addition": tensor cores). ``tests/test_gemm_fit.py`` fits them again and checks the specs: fp16 as ``matmul_efficiency``,
fp32 (CUDA cores) as ``fp32_matmul_efficiency``.
"""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np

TABLE = Path(__file__).resolve().parents[2] / "tests" / "data" / "deepbench_gemm.csv"
#: GEMMs of at least this many FLOPs are fitted on (16 of DeepBench's 95 per table).
LARGE_FLOPS = 2e11


def load(path: Path = TABLE) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def predicted_s(device, shapes, dtype) -> np.ndarray:
    """hwsim's seconds for each (m, n, k) GEMM of ``shapes`` in ``dtype`` on ``device``."""
    from simulator.cost.roofline import op_costs
    from simulator.graph.lower import lower
    from simulator.graph.opgraph import OpGraph
    from workloads.layers import Builder

    graph = OpGraph()
    for i, (m, n, k) in enumerate(shapes):
        Builder(graph, dtype=dtype).linear(f"g{i}", None, m, k, n, bias=False)
    return op_costs(lower(graph), device)[2]


def fit(rows: list[dict], device, precision: str) -> dict:
    """``{"efficiency", "held_out_median", "held_out_max", "n"}`` of ``device`` (a DeviceSpec)
    on the ``precision`` ("fp32" or "fp16") rows of ``rows`` (one device's)."""
    from simulator.graph.op import DType

    chosen = [r for r in rows if r["precision"] == precision]
    dtype = DType.FP16 if precision == "fp16" else DType.FP32
    ideal = dataclasses.replace(device, matmul_efficiency=1.0, fp32_matmul_efficiency=None,
                                matmul_memory_efficiency=None, priors=())
    time_s = predicted_s(ideal, [(int(r["m"]), int(r["n"]), int(r["k"])) for r in chosen], dtype)
    measured = np.array([float(r["time_ms"]) * 1e-3 for r in chosen])
    flops = np.array([2.0 * int(r["m"]) * int(r["n"]) * int(r["k"]) for r in chosen])
    large = np.flatnonzero(flops >= LARGE_FLOPS)
    large = large[np.argsort(flops[large], kind="stable")]
    cut = int(0.8 * len(large))
    fitted, held = large[:cut], large[cut:]
    efficiency = float(np.median(time_s[fitted] / measured[fitted]))
    errors = np.abs(time_s[held] / efficiency / measured[held] - 1)
    return {"efficiency": efficiency, "held_out_median": float(np.median(errors)),
            "held_out_max": float(errors.max()), "n": len(fitted)}


__all__ = ["LARGE_FLOPS", "TABLE", "fit", "load", "predicted_s"]
