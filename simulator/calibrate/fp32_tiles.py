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
"""
from __future__ import annotations

import dataclasses

import numpy as np

from simulator.calibrate.gemm import NEUSIGHT_CATALOGUE, TABLE, fit, predicted_s

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


__all__ = ["LOAD_GRID", "NARROW_DEVICES", "NARROW_TABLE", "REFIT_DEVICES", "fit_load_cost"]
