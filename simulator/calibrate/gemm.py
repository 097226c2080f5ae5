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

NeuSight (Lee et al., ASPLOS 2025; github.com/sitar-lab/NeuSight, MIT licence, commit 6945927):
fp32 ``torch.nn.Linear`` calls (``ampere_sgemm`` / CUTLASS SIMT kernels on NVIDIA, TF32 off,
PyTorch 2.1.0, CUDA 12.1; rocBLAS/Tensile MFMA kernels on AMD, PyTorch 2.4.1), each timed alone
between two CUDA events (the best 5 of 25), of at least ``LARGE_FLOPS``, on nine GPUs
(``tests/data/neusight_linear_kernels.csv``; ``NEUSIGHT_CATALOGUE`` names the spec of each): the
same fit gives their ``fp32_matmul_efficiency``. The GEMMs of a second or more (the largest
fifth, held out) run slower on the P100, the P4 and the MI210 (0.25, 0.44 and 0.36 of the peak
against 0.72, 0.80 and 0.63 on GEMMs of 10-100 ms): their clocks fall under a long load.
"""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np

TABLE = Path(__file__).resolve().parents[2] / "tests" / "data" / "deepbench_gemm.csv"
NEUSIGHT_TABLE = TABLE.with_name("neusight_linear_kernels.csv")
#: NeuSight's GPUs and the catalogue spec each is priced on (same chip, clocks and memory).
NEUSIGHT_CATALOGUE = {"NVIDIA L4": "l4", "NVIDIA H100 80GB HBM3": "h100-sxm5-80gb",
                      "NVIDIA A100 80GB PCIe": "a100-pcie-80gb",
                      "NVIDIA A100-PCIE-40GB": "a100-pcie-40gb",
                      "Tesla V100-PCIE-32GB": "v100-pcie-32gb", "Tesla T4": "t4",
                      "Tesla P100-PCIE-16GB": "p100-pcie-16gb", "Tesla P4": "p4",
                      "AMD Instinct MI100": "mi100",
                      "AMD Instinct MI210": "mi210"}
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
    """``{"efficiency", "held_out_median", "held_out_max", "n", "held"}`` of ``device`` (a
    DeviceSpec) on the ``precision`` ("fp32" or "fp16") rows of ``rows`` (one device's): ``n``
    GEMMs fitted on, ``held`` held out."""
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
            "held_out_max": float(errors.max()), "n": len(fitted), "held": len(held)}


#: DeepBench's GPUs and the catalogue spec each is priced on.
DEEPBENCH_CATALOGUE = {"v100-sxm2": "v100-sxm2-32gb", "t4": "t4"}


def fit_deepbench(path: Path = TABLE) -> dict[tuple[str, str], dict]:
    """(table device, precision) -> ``fit``'s dict with ``"spec"``, for DeepBench's V100 and T4
    in fp16 (tensor cores: the specs' ``matmul_efficiency``) and fp32 (``fp32_matmul_efficiency``)."""
    from hardware_specs.loader import load_device

    rows = load(path)
    return {(device, precision): {**fit([r for r in rows if r["device"] == device],
                                        load_device(name), precision), "spec": name}
            for device, name in DEEPBENCH_CATALOGUE.items() for precision in ("fp16", "fp32")}


def fit_neusight(path: Path = NEUSIGHT_TABLE) -> dict[str, dict]:
    """Every NeuSight GPU's fp32 fit (``fit``'s dict, with ``"spec"``: the catalogue name)."""
    from hardware_specs.loader import load_device

    rows = load(path)
    out = {}
    for device, name in NEUSIGHT_CATALOGUE.items():
        out[device] = {**fit([r for r in rows if r["device"] == device], load_device(name),
                             "fp32"), "spec": name}
    return out


#: NeuSight's fp32 linear and bmm calls of 1e9 to 2e11 FLOPs on the H100 (the range under
#: ``LARGE_FLOPS``, which ``fit`` leaves out): ``fit_fp32_tile`` fits the fp32 kernel's fixed
#: cost per tile on them.
SMALL_TABLE = TABLE.with_name("neusight_small_gemm_h100.csv")
#: The fixed costs tried, in k-steps of the fp32 main loop.
FIXED_GRID = tuple(range(0, 129, 4))


def _small_times(device, rows: list[dict], fixed: int) -> tuple[np.ndarray, float]:
    """hwsim's seconds for each call of ``rows`` on ``device`` with ``fixed`` as its
    ``fp32_tile_fixed_k``, at ``fp32_matmul_efficiency`` 1, and the reference factor."""
    from simulator.cost.roofline import op_costs
    from simulator.graph.lower import lower
    from simulator.graph.op import DType
    from simulator.graph.opgraph import OpGraph
    from workloads.layers import Builder

    arch = dataclasses.replace(device.architecture, fp32_tile_fixed_k=fixed or None)
    ideal = dataclasses.replace(device, architecture=arch, fp32_matmul_efficiency=1.0,
                                matmul_memory_efficiency=None, priors=())
    graph = OpGraph()
    builder = Builder(graph, dtype=DType.FP32)
    names = []
    for i, r in enumerate(rows):
        batch, m, n, k = (int(r[c]) for c in ("batch", "m", "n", "k"))
        if r["op"] == "linear":
            names.append(builder.linear(f"g{i}", None, m, k, n, bias=False))
        else:
            a, b = builder.input(f"a{i}", batch * m * k), builder.input(f"b{i}", batch * k * n)
            names.append(builder.matmul(f"g{i}", a, b, batch, m, n, k))
    lowered = lower(graph)
    where = {name: i for i, name in enumerate(lowered.names)}
    return op_costs(lowered, ideal)[2][[where[name] for name in names]]


def fit_fp32_tile(device, rows: list[dict], large_rows: list[dict]) -> dict:
    """The fixed cost per tile of ``device``'s fp32 GEMM kernel (its spec's
    ``fp32_matrix_tile``), in k-steps of the fp32 main loop, fitted on NeuSight's fp32 linear
    and bmm calls of 1e9 to 2e11 FLOPs (``rows``, ``SMALL_TABLE``).

    Each call was timed alone between two CUDA events, so it carries the host's issue and the
    events' floor, which hwsim prices apart (``simulator.cost.host``): the model is ``t =
    intercept + hwsim's time``, the intercept one figure for all calls (the median of the
    residuals) and not part of the device; for each fixed cost of ``FIXED_GRID`` the
    ``fp32_matmul_efficiency`` is refitted on ``large_rows`` (``fit``'s rule), and the fixed
    cost with the smallest median |error| wins. The fifth of ``rows`` with the most FLOPs is
    held out (by shape range) and its median |error| reported."""
    flops = np.array([2.0 * int(r["batch"]) * int(r["m"]) * int(r["n"]) * int(r["k"])
                      for r in rows])
    measured = np.array([float(r["time_ms"]) * 1e-3 for r in rows])
    order = np.argsort(flops, kind="stable")
    cut = int(0.8 * len(rows))
    fitted, held = order[:cut], order[cut:]
    best = None
    for fixed in FIXED_GRID:
        arch = dataclasses.replace(device.architecture, fp32_tile_fixed_k=fixed or None)
        efficiency = fit(large_rows, dataclasses.replace(device, architecture=arch),
                         "fp32")["efficiency"]
        time_s = _small_times(device, rows, fixed) / efficiency
        intercept = float(np.median(measured[fitted] - time_s[fitted]))
        errors = np.abs((time_s + intercept) / measured - 1)
        score = float(np.median(errors[fitted]))
        if best is None or score < best["median"]:
            best = {"fixed_k": fixed, "efficiency": efficiency, "intercept_s": intercept,
                    "median": score, "held_out_median": float(np.median(errors[held])),
                    "no_intercept_median": float(np.median(np.abs(time_s / measured - 1)[fitted])),
                    "n": len(fitted)}
    return best


#: LLMCompass's A100 80GB SXM 16-bit torch.matmul calls (Zhang et al., ISCA 2024; 20 shapes,
#: 2.3 to 293 TFLOP/s, each call timed alone with its host floor): ``fit_tile`` fits the
#: A100's 16-bit tile fixed cost on them.
A100_TABLE = TABLE.with_name("llmcompass_a100_gemm.csv")
#: The 16-bit fixed costs tried, in k-steps of the 16-bit main loop (the H100's and B200's
#: fits used steps of 10).
TILE_GRID = tuple(range(0, 801, 10))
#: The most passes of ``fit_tile``'s alternation between efficiency and host floor.
PASSES = 50


def _tile_times(device, rows: list[dict], fixed: int, efficiency: float) -> np.ndarray:
    """hwsim's seconds for the bf16 GEMMs of ``rows`` on ``device`` with ``fixed`` as its
    ``tile_fixed_k`` and ``efficiency`` as its ``matmul_efficiency`` (no sustained ratio: a
    kernel timed alone)."""
    from simulator.cost.power import burst
    from simulator.graph.op import DType

    arch = dataclasses.replace(device.architecture, tile_fixed_k=fixed or None)
    priced = dataclasses.replace(burst(device), architecture=arch,
                                 matmul_efficiency=efficiency, priors=())
    return predicted_s(priced, [(int(r["m"]), int(r["n"]), int(r["k"])) for r in rows],
                       DType.BF16)


def fit_tile(device, rows: list[dict], grid: tuple[int, ...] = TILE_GRID) -> dict:
    """The fixed cost per tile of ``device``'s 16-bit GEMM kernel (its spec's ``matrix_tile``),
    in k-steps, fitted on GEMM calls each timed alone (``rows``: m, n, k, time_ms).

    Each call carries the host's issue and synchronisation, which hwsim prices apart
    (``simulator.cost.host``): the model is ``t = intercept + hwsim's time``, the intercept one
    figure for all calls (the median residual) and not part of the device, the burst
    efficiency of the table one figure too (scaled until the median over its GEMMs of at
    least ``LARGE_FLOPS`` of hwsim's time over the measured time less the intercept is 1,
    the two alternated until they settle). For each fixed cost of ``grid`` both are refitted
    and the one with the smallest median |error| wins. The fifth of ``rows`` with the most FLOPs is held
    out and its median |error| reported, and each row's error (``errors``, in ``rows``'
    order)."""
    flops = np.array([2.0 * int(r["m"]) * int(r["n"]) * int(r["k"]) for r in rows])
    measured = np.array([float(r["time_ms"]) * 1e-3 for r in rows])
    order = np.argsort(flops, kind="stable")
    cut = int(0.8 * len(rows))
    fitted, held = order[:cut], order[cut:]
    large = fitted[flops[fitted] >= LARGE_FLOPS]
    best = None
    for fixed in grid:
        efficiency = 1.0
        for _ in range(PASSES):   # until the large calls' median ratio is 1 and stays there
            time_s = _tile_times(device, rows, fixed, efficiency)
            intercept = float(np.median(measured[fitted] - time_s[fitted]))
            ratio = float(np.median(time_s[large] / (measured[large] - intercept)))
            efficiency *= ratio
            if abs(ratio - 1) < 1e-12:
                break
        time_s = _tile_times(device, rows, fixed, efficiency)
        intercept = float(np.median(measured[fitted] - time_s[fitted]))
        errors = (time_s + intercept) / measured - 1
        score = float(np.median(np.abs(errors[fitted])))
        if best is None or score < best["median"]:
            best = {"fixed_k": fixed, "efficiency": efficiency, "intercept_s": intercept,
                    "median": score, "held_out_median": float(np.median(np.abs(errors[held]))),
                    "errors": errors, "n": len(fitted)}
    return best


__all__ = ["A100_TABLE", "FIXED_GRID", "LARGE_FLOPS", "NEUSIGHT_CATALOGUE", "NEUSIGHT_TABLE",
           "SMALL_TABLE", "TABLE", "TILE_GRID", "fit", "fit_fp32_tile", "fit_neusight",
           "fit_tile", "load", "predicted_s"]
