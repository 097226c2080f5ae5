"""cuBLAS's choice of fp32 tile: the ``fp32_tile_load_cost`` of a GPU spec, fitted on NeuSight's
fp32 ``torch.nn.Linear`` kernel tables.

hwsim prices an fp32 GEMM on a GPU whose spec gives ``fp32_tile_load_cost`` (c) at the best of
the widest fp32 tile's halvings (``simulator.cost.efficiency.fp32_tiles``), a narrower tile
running slower as each operand it loads per k-step costs c FMAs' time. NeuSight (Lee et al.,
ASPLOS 2025; github.com/sitar-lab/NeuSight, MIT licence, commit 6945927) timed fp32
``torch.nn.Linear`` calls (TF32 off, PyTorch 2.1.0, CUDA 12.1; each alone between two CUDA
events, best 5 of 25) whose kernel names show the tiles cuBLAS picked: ``ampere_sgemm_128x128``
on large calls, ``128x64``, ``128x32``, ``64x64``, ``32x128`` where 128 x 128 tiles leave SMs
idle (``volta_sgemm_*`` on the T4 and V100). ``fit_load_cost`` fits one c for five GPUs on their
calls of 1e10 to 2e11 FLOPs (``NARROW_TABLE``; under 1e10 the calls' ~20 us floor of host and
events, which hwsim prices apart, is a large share), refitting the
``fp32_matmul_efficiency`` of the L4 and the two A100 PCIe cards on their calls of 2e11 and more
(``simulator.calibrate.gemm.fit``, the rule their specs' figures come from; ``REFIT_DEVICES``)
while the T4 and V100 keep their specs' DeepBench figures, and holds each GPU out in turn.
Batched GEMMs keep the widest tile on the A100 PCIe and L4 (``efficiency.fp32_tiles``), whose
fp32 bmm calls in NeuSight's tables run ``ampere_sgemm_128x128`` alone; the T4's and V100's
choose among the tiles their kernels' names show (``fp32_batched_tiles``) at the same c
(nothing refitted: ``tests/test_fp32_batched_tiles.py``).

cuBLAS also splits k (``ampere_sgemm`` grids of z > 1 in NeuSight's kernel table,
``scripts/asplos/data/dataset/test/linear.csv``: 567 of the L4's 1,040 fp32 Linear calls, z = 2
to 24, e.g. 1024 x 1024 x 4096, BERT-large's fc2 at batch 2, as 128 x 128 tiles in nine slices:
576 tiles on 58 SMs where 64 leave most of the second wave idle). Where a spec gives
``fp32_split_k`` (the most slices, 24 on the L4), a single fp32 GEMM takes the best split, each
slice a tile paying ``fp32_tile_fixed_k``; ``fit_split_fixed`` fits that fixed cost on the
GPU's calls of ``NARROW_TABLE`` (refitting ``fp32_matmul_efficiency`` on its calls of 2e11 and
more at each cost tried) and holds out the fifth with the most FLOPs
(``tests/test_fp32_split_k.py``).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from simulator.calibrate.gemm import FIXED_GRID, NEUSIGHT_CATALOGUE, TABLE, fit, predicted_s

#: NeuSight's fp32 torch.nn.Linear calls of 1e10 to 2e11 FLOPs on five NVIDIA GPUs whose kernel
#: names show cuBLAS's narrower sgemm tiles (``fit_load_cost`` fits the tiles' load cost on them).
NARROW_TABLE = TABLE.with_name("neusight_linear_small.csv")
#: The GPUs of ``NARROW_TABLE`` (the catalogue names, ``NEUSIGHT_CATALOGUE``).
NARROW_DEVICES = ("NVIDIA L4", "Tesla T4", "Tesla V100-PCIE-32GB", "NVIDIA A100-PCIE-40GB",
                  "NVIDIA A100 80GB PCIe")
#: The load costs tried (FMAs per operand loaded; 0: the widest tile alone).
LOAD_GRID = tuple(range(33))
#: The GPUs of ``NARROW_DEVICES`` whose spec's ``fp32_matmul_efficiency`` is fitted on NeuSight's
#: fp32 Linear calls of 2e11 FLOPs and more (``simulator.calibrate.gemm``, with these tiles):
#: ``fit_load_cost`` refits it on those calls at each cost tried. The T4's and V100's come from
#: DeepBench's GEMMs (their spec files; tests/test_gemm_fit.py) and are kept as shipped, so that
#: the fit and its held-out figures describe the specs hwsim runs.
REFIT_DEVICES = ("NVIDIA L4", "NVIDIA A100-PCIE-40GB", "NVIDIA A100 80GB PCIe")


def _narrow_errors(name: str, rows: list[dict], large_rows: list[dict] | None,
                   cost: int) -> np.ndarray:
    """hwsim's relative errors on ``rows`` with the spec ``name`` at ``fp32_tile_load_cost``
    ``cost``, its ``fp32_matmul_efficiency`` refitted on ``large_rows`` (``fit``'s rule) or,
    when they are None, the spec's own."""
    from hardware_specs.loader import load_device
    from simulator.graph.op import DType

    device = load_device(name)
    arch = dataclasses.replace(device.architecture, fp32_tile_load_cost=cost or None,
                               fp32_batched_tiles=device.architecture.fp32_batched_tiles
                               if cost else None)   # single GEMMs: batched tiles unused
    device = dataclasses.replace(device, architecture=arch)
    if large_rows is not None:
        device = dataclasses.replace(device, fp32_matmul_efficiency=fit(large_rows, device,
                                                                        "fp32")["efficiency"])
    time_s = predicted_s(device, [(int(r["m"]), int(r["n"]), int(r["k"])) for r in rows],
                         DType.FP32)
    return time_s / np.array([float(r["time_ms"]) * 1e-3 for r in rows]) - 1


def fit_load_cost(rows: list[dict], large_rows: list[dict],
                  devices: tuple[str, ...] = NARROW_DEVICES,
                  grid: tuple[int, ...] = LOAD_GRID,
                  refit: tuple[str, ...] = REFIT_DEVICES) -> dict:
    """One ``fp32_tile_load_cost`` for ``devices`` (NeuSight names), fitted on their fp32 calls
    of ``rows`` (``NARROW_TABLE``): for each cost of ``grid`` the ``fp32_matmul_efficiency`` of
    every device of ``refit`` is refitted on its ``large_rows`` (``NEUSIGHT_TABLE``), the
    others keep their spec's, and the cost with the smallest median |error| over the devices'
    calls together wins. Held out by
    device: each device's median |error| at the cost fitted on the other devices alone
    (``held_out``), beside its own at the pooled fit (``medians``) and at 0 (``before``)."""
    errors = {}   # (device, cost) -> |errors|
    for device in devices:
        mine = [r for r in rows if r["device"] == device]
        large = ([r for r in large_rows if r["device"] == device] if device in refit
                 else None)
        for cost in grid:
            errors[device, cost] = np.abs(_narrow_errors(NEUSIGHT_CATALOGUE[device], mine,
                                                         large, cost))

    def best(among) -> int:
        return min(grid, key=lambda c: (float(np.median(np.concatenate(
            [errors[d, c] for d in among]))), c))

    cost = best(devices)
    return {"cost": cost,
            "median": float(np.median(np.concatenate([errors[d, cost] for d in devices]))),
            "medians": {d: float(np.median(errors[d, cost])) for d in devices},
            "before": {d: float(np.median(errors[d, grid[0]])) for d in devices},
            "held_out": {d: float(np.median(errors[d, best([o for o in devices if o != d])]))
                         for d in devices},
            "held_out_costs": {d: best([o for o in devices if o != d]) for d in devices}}


def fit_split_fixed(name: str, rows: list[dict], large_rows: list[dict], splits: int,
                    grid: tuple[int, ...] = FIXED_GRID) -> dict:
    """The fixed cost per fp32 tile (``fp32_tile_fixed_k``, k-steps of the fp32 loop) of the
    catalogue spec ``name`` with ``fp32_split_k`` = ``splits``, fitted on its calls of ``rows``
    (``NARROW_TABLE``, one device's): for each cost of ``grid`` the spec's
    ``fp32_matmul_efficiency`` is refitted on ``large_rows`` (``NEUSIGHT_TABLE``, ``fit``'s
    rule) and the cost with the smallest median |error| over the four fifths of ``rows`` with
    the fewest FLOPs wins; the other fifth is held out. ``"before"``: the same two medians with
    neither split nor fixed cost (the efficiency refitted the same way)."""
    from hardware_specs.loader import load_device
    from simulator.graph.op import DType

    spec = load_device(name)
    shapes = [(int(r["m"]), int(r["n"]), int(r["k"])) for r in rows]
    measured = np.array([float(r["time_ms"]) * 1e-3 for r in rows])
    flops = np.array([2.0 * m * n * k for m, n, k in shapes])
    order = np.argsort(flops, kind="stable")
    cut = int(0.8 * len(rows))
    fitted, held = order[:cut], order[cut:]

    def errors(fixed: int, split: int | None) -> tuple[np.ndarray, float]:
        arch = dataclasses.replace(spec.architecture, fp32_tile_fixed_k=fixed or None,
                                   fp32_split_k=split if fixed else None)
        device = dataclasses.replace(spec, architecture=arch)
        efficiency = fit(large_rows, device, "fp32")["efficiency"]
        device = dataclasses.replace(device, fp32_matmul_efficiency=efficiency)
        return np.abs(predicted_s(device, shapes, DType.FP32) / measured - 1), efficiency

    best = None
    for fixed in grid:
        if not fixed:
            continue   # a split with no fixed cost is free: the spec refuses it
        err, efficiency = errors(fixed, splits)
        score = float(np.median(err[fitted]))
        if best is None or score < best["median"]:
            best = {"fixed_k": fixed, "efficiency": efficiency, "median": score,
                    "held_out_median": float(np.median(err[held])), "n": len(fitted)}
    err, efficiency = errors(0, None)
    best["before"] = {"efficiency": efficiency, "median": float(np.median(err[fitted])),
                      "held_out_median": float(np.median(err[held]))}
    return best


__all__ = ["LOAD_GRID", "NARROW_DEVICES", "NARROW_TABLE", "REFIT_DEVICES", "fit_load_cost",
           "fit_split_fixed"]
