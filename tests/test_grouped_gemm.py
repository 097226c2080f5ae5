"""Grouped expert GEMMs against measured grouped-GEMM throughput (issue 24, item 3).

DeepGEMM's README (deepseek-ai/DeepGEMM 327ec92, 2025-04-09, MIT; tests/data/deepgemm_h800.csv)
measures fp8 GEMMs on an H800 SXM5: dense ones of 64-4096 rows and grouped ones, "contiguous"
(4 or 8 experts of 4096-8192 tokens each, the training forward's layout) and "masked" (1-4
experts of 256-1024 tokens). hwsim prices a grouped GEMM as ``experts`` GEMMs of the mean
tokens per expert (``m``), through the same tile x wave model as a dense GEMM
(``simulator.cost.efficiency``): no parameter of its own, so every row is out of sample.

What the rows show, and what is asserted here:
- a grouped GEMM runs at the rate of a dense GEMM of the same per-expert shape: contiguous
  groups of 4096-8192 tokens at 0.95-1.04x the 4096-row dense GEMM of the same n and k; hwsim
  1.04-1.06x;
- few tokens per expert run below that: 256 tokens per expert at 0.76x (k 7168) and 0.88x
  (k 2048) of 1024 per expert; hwsim 0.81x and 0.87x. Over all ten grouped rows hwsim's rate
  relative to the same-(n, k) reference is within 28 % of the measured one (median 5 %); the
  28 % is the masked (inference decoding) layout's 2 x 512 tokens at k 7168, 16 % slower than
  1 x 1024, which has the same tiles (a per-group cost of the masked kernel that the tile model
  lacks; the contiguous training layout shows none: 4 x 8192 and 8 x 4096 both 1346 TFLOPS).
- absolute rates: hwsim's H800 has no fp8 GEMM figure (its bf16 0.776 serves fp8), and is
  16-36 % faster than DeepGEMM's grouped GEMMs, as it is than its dense GEMMs of the same k
  (7-27 % for the 4096-row ones with k >= 1536): a device-level figure, not a grouping one.
  DeepGEMM's fine-grained (1 x 128 block) scaling is another kernel than Transformer
  Engine's per-tensor fp8, so the spec takes no figure from it.
"""
from __future__ import annotations

import csv
import statistics
from pathlib import Path

import numpy as np
import pytest

from hardware_specs.loader import load_device
from simulator.cost.roofline import op_costs
from simulator.graph.lower import lower
from simulator.graph.op import DType, Role
from simulator.graph.opgraph import OpGraph
from workloads.layers import Builder

DATA = Path(__file__).parent / "data" / "deepgemm_h800.csv"


def _rows():
    with DATA.open(newline="") as file:
        return [{key: (value if key == "layout" else float(value)) for key, value in row.items()}
                for row in csv.DictReader(file)]


def _hwsim_tflops(rows) -> np.ndarray:
    """hwsim's fp8 TFLOP/s on the H800 for each row (a grouped GEMM of groups x m_per_group
    token copies, or a dense GEMM)."""
    graph = OpGraph()
    builder = Builder(graph, dtype=DType.FP8)
    names = []
    for i, row in enumerate(rows):
        groups, m, n, k = (int(row[key]) for key in ("groups", "m_per_group", "n", "k"))
        x = builder.input(f"x{i}", groups * m * k)
        if row["layout"] == "dense":
            names.append(builder.linear(f"g{i}", x, m, k, n, bias=False))
        else:
            names.append(builder.grouped_linear(f"g{i}", x, groups * m, groups, k, n,
                                                Role.EXPERT_COLUMN))
    low = lower(graph)
    time_s = op_costs(low, load_device("h800-sxm"))[2]
    at = low.position()
    flops = np.array([2 * r["groups"] * r["m_per_group"] * r["n"] * r["k"] for r in rows])
    return flops / np.array([time_s[at[name]] for name in names]) / 1e12


@pytest.fixture(scope="module")
def table():
    rows = _rows()
    return rows, _hwsim_tflops(rows)


def _reference(rows, row):
    """The 4096-row dense GEMM of the row's n and k."""
    return next(i for i, r in enumerate(rows) if r["layout"] == "dense"
                and r["m_per_group"] == 4096 and (r["n"], r["k"]) == (row["n"], row["k"]))


def test_data_as_published(table):
    rows, _ = table
    assert len(rows) == 28
    assert {r["layout"] for r in rows} == {"dense", "contiguous", "masked"}
    # the README's best dense figure and its grouped ones
    assert max(r["tflops"] for r in rows) == 1520
    assert sorted({r["tflops"] for r in rows if r["layout"] == "contiguous"}) == [1214, 1346]


def test_grouped_rate_relative_to_dense_as_measured(table):
    """A grouped GEMM's rate over the dense GEMM of the same n and k: hwsim's within 28 % of
    DeepGEMM's on every grouped row (the masked 2 x 512 row, above), median within 6 %."""
    rows, hwsim = table
    errors = []
    for i, row in enumerate(rows):
        if row["layout"] == "dense":
            continue
        ref = _reference(rows, row)
        measured = row["tflops"] / rows[ref]["tflops"]
        predicted = hwsim[i] / hwsim[ref]
        errors.append(abs(predicted / measured - 1))
    assert len(errors) == 10
    assert max(errors) < 0.28
    assert statistics.median(errors) < 0.06


def test_large_groups_run_at_the_dense_rate(table):
    """Contiguous groups of 4096-8192 tokens: measured 0.95-1.04x the dense rate; hwsim within
    10 % of 1 (no grouping penalty of its own)."""
    rows, hwsim = table
    for i, row in enumerate(rows):
        if row["layout"] == "contiguous":
            ref = _reference(rows, row)
            assert 0.94 < row["tflops"] / rows[ref]["tflops"] < 1.05
            assert abs(hwsim[i] / hwsim[ref] - 1) < 0.10


def test_few_tokens_per_expert_run_slower(table):
    """256 tokens per expert run below 1024 per expert, measured and in hwsim, by a similar
    factor (0.76 / 0.88 measured; hwsim 0.81 / 0.87, within 7 %)."""
    rows, hwsim = table
    for k in (7168, 2048):
        small = next(i for i, r in enumerate(rows) if r["layout"] == "masked"
                     and r["m_per_group"] == 256 and r["k"] == k)
        large = next(i for i, r in enumerate(rows) if r["layout"] == "masked"
                     and r["m_per_group"] == 1024 and r["k"] == k)
        measured = rows[small]["tflops"] / rows[large]["tflops"]
        predicted = hwsim[small] / hwsim[large]
        assert measured < 0.9 and predicted < 0.9
        assert predicted == pytest.approx(measured, rel=0.07)
