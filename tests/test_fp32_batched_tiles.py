"""Batched fp32 GEMMs on narrower sgemm tiles where the library runs them
(``Architecture.fp32_batched_narrowest``, ``simulator.cost.efficiency.fp32_tiles``).

NeuSight's fp32 ``torch.bmm`` table (sitar-lab/NeuSight ``scripts/asplos/data/dataset/test/
bmm.csv``, commit 6945927, MIT; PyTorch 2.1.0, CUDA 12.1, TF32 off, each call alone between two
CUDA events, best 5 of 25) names the kernels cuBLAS ran: ``ampere_sgemm_128x128`` alone on the
A100 PCIe cards and the L4, but ``volta_sgemm_128x64``, ``64x64``, ``128x32`` on the T4 and
``32x128``, ``64x64`` on the V100, never 128 x 128. The T4's and V100's specs say so
(``fp32_batched_narrowest = 32``): their batched GEMMs pick among the halvings of the widest
tile down to 32 as single GEMMs do (at the load cost fitted on single GEMMs, nothing refitted
here). ``tests/data/neusight_bmm_t4_v100.csv``: the T4's 339 calls with 64 among their output
columns or depth (an attention's head size) and all 72 of the V100's.
"""
import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware_specs.loader import load_device
from hardware_specs.spec import Architecture
from simulator.calibrate.gemm import NEUSIGHT_CATALOGUE
from simulator.cost.efficiency import fp32_tiles
from simulator.cost.roofline import op_costs
from simulator.errors import SpecError
from simulator.graph.lower import lower
from simulator.graph.op import DType
from simulator.graph.opgraph import OpGraph
from workloads.layers import Builder

TABLE = Path(__file__).parent / "data" / "neusight_bmm_t4_v100.csv"


def _rows(device: str) -> list[dict]:
    with TABLE.open(newline="") as handle:
        return [r for r in csv.DictReader(handle) if r["device"] == device]


def _errors(spec, rows: list[dict]) -> np.ndarray:
    """hwsim's relative error on each fp32 bmm call of ``rows`` on ``spec``."""
    graph = OpGraph()
    builder = Builder(graph, dtype=DType.FP32)
    names = []
    for i, r in enumerate(rows):
        batch, m, n, k = (int(r[c]) for c in ("batch", "m", "n", "k"))
        a, b = builder.input(f"a{i}", batch * m * k), builder.input(f"b{i}", batch * k * n)
        names.append(builder.matmul(f"g{i}", a, b, batch, m, n, k))
    lowered = lower(graph)
    where = {name: i for i, name in enumerate(lowered.names)}
    seconds = op_costs(lowered, spec)[2][[where[name] for name in names]]
    return seconds / np.array([float(r["time_ms"]) * 1e-3 for r in rows]) - 1


def _widest(spec):
    """``spec`` with its batched GEMMs on the widest tile alone (as before)."""
    arch = dataclasses.replace(spec.architecture, fp32_batched_narrowest=None)
    return dataclasses.replace(spec, architecture=arch)


def test_the_volta_and_turing_specs_say_so():
    for name in ("t4", "v100-pcie-32gb"):
        assert load_device(name).architecture.fp32_batched_narrowest == 32
    for name in ("a100-pcie-80gb", "a100-pcie-40gb", "l4"):
        assert load_device(name).architecture.fp32_batched_narrowest is None


def test_t4_attention_contexts_within_tolerance():
    """The T4's calls of 1e9 FLOPs and more whose output is 64 wide (146, an attention's
    context P V and its scores' gradients): on the widest tile half of each tile is padding,
    median error +62.9 %; on cuBLAS's narrower tiles -16.4 % (median |error| within 20 %)."""
    t4 = load_device("t4")
    rows = [r for r in _rows("Tesla T4") if int(r["n"]) == 64
            and 2.0 * int(r["batch"]) * int(r["m"]) * int(r["n"]) * int(r["k"]) >= 1e9]
    assert len(rows) == 146
    assert np.median(_errors(_widest(t4), rows)) > 0.5
    assert np.median(np.abs(_errors(t4, rows))) < 0.2


def test_v100_calls_within_tolerance():
    """The V100's 72 fp32 bmm calls (1e8 to 2e11 FLOPs): median |error| 19.9 % on the widest
    tile, 9.0 % on the narrower ones (within 10 %)."""
    v100 = load_device(NEUSIGHT_CATALOGUE["Tesla V100-PCIE-32GB"])
    rows = _rows("Tesla V100-PCIE-32GB")
    assert len(rows) == 72
    assert np.median(np.abs(_errors(_widest(v100), rows))) > 0.18
    assert np.median(np.abs(_errors(v100, rows))) < 0.10


def test_a_context_in_closed_form():
    """BERT-large's context at batch 8 on the T4's 40 SMs (load cost 6): 128 products of
    512 x 64 outputs. 128 x 128 tiles: 512 tiles, 13 waves, half of each padding (512 / 520 x
    0.5); 128 x 64 tiles: the same 512 tiles, none padded, at (1 + 6 (2/128)) / (1 + 6 (1/128
    + 1/64)) = 0.959 of 128 x 128's rate (x 512 / 520); 64 x 64 (1,024 tiles, 26 waves, 1024 /
    1040, at 0.921) is slower."""
    arch = load_device("t4").architecture
    rate = (1 + 6 * (2 / 128)) / (1 + 6 * (1 / 128 + 1 / 64))
    assert float(fp32_tiles(512, 64, 512, 128, arch)) == pytest.approx(rate * 512 / 520)
    widest = dataclasses.replace(arch, fp32_batched_narrowest=None)
    assert float(fp32_tiles(512, 64, 512, 128, widest)) == pytest.approx(0.5 * 512 / 520)


@given(batch=st.integers(2, 512), m=st.integers(1, 4096), n=st.integers(1, 4096),
       k=st.integers(1, 4096), floor=st.sampled_from([32, 64, 128]))
@settings(max_examples=80, deadline=None)
def test_more_tiles_or_sms_never_slower(batch, m, n, k, floor):
    """A batched GEMM's factor with tiles down to ``floor`` is at least the widest tile's
    (more tiles to choose from never slower), and twice the SMs at the same rate per SM never
    lower SMs x factor (the time at a fixed rate per SM is the work over that product)."""
    base = Architecture(compute_units=40, fp32_matrix_tile=(128, 128, 8), fp32_tile_load_cost=6)
    narrow = dataclasses.replace(base, fp32_batched_narrowest=floor)
    chosen = float(fp32_tiles(m, n, k, batch, narrow))
    assert float(fp32_tiles(m, n, k, batch, base)) <= chosen * (1 + 1e-12)
    more = dataclasses.replace(narrow, compute_units=80)
    assert 80 * float(fp32_tiles(m, n, k, batch, more)) >= 40 * chosen * (1 - 1e-12)


def test_a_bad_floor_is_refused():
    with pytest.raises(SpecError, match="fp32_batched_narrowest"):
        Architecture(compute_units=40, fp32_matrix_tile=(128, 128, 8), fp32_batched_narrowest=0)
