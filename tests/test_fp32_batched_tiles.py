"""Batched fp32 GEMMs on the sgemm tiles the library runs for them
(``Architecture.fp32_batched_tiles``, ``simulator.cost.efficiency.fp32_tiles``).

NeuSight's fp32 ``torch.bmm`` tables (sitar-lab/NeuSight ``scripts/asplos/data/dataset/test/
bmm.csv`` and ``train/collect/bmm/p2.1.0/<GPU>.csv``, commit 6945927, MIT; PyTorch 2.1.0, CUDA
12.1, TF32 off, each call alone between two CUDA events, best 5 of 25) name the kernels cuBLAS
ran: ``ampere_sgemm_128x128`` alone on the A100 PCIe cards and the L4, but on the T4
``volta_sgemm_128x64``, ``64x64``, ``128x32`` (and ``32x128`` in the train table) and on the
V100 ``32x128``, ``64x64`` (and ``128x32``), never 128 x 128 for a batch of more than one. The
T4's and V100's specs list those tiles (``fp32_batched_tiles``, as the output's rows x columns:
cuBLAS's rows are a row-major C's columns) and their batched GEMMs take the fastest of them at
the load cost fitted on single GEMMs (nothing refitted here).
``tests/data/neusight_bmm_t4_v100.csv``: the T4's 339 calls of the test table with 64 among
their output columns or depth (an attention's head size) and all 72 of the V100's.
"""
import csv
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware_specs.loader import load_device
from hardware_specs.override import override
from hardware_specs.spec import Architecture
from hardware_specs.writer import device_toml
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
    """``spec`` with its batched GEMMs on the widest tile alone (as before any list)."""
    arch = dataclasses.replace(spec.architecture, fp32_batched_tiles=None)
    return dataclasses.replace(spec, architecture=arch)


def _tile(kernel: str) -> tuple[int, int]:
    """The output tile (rows, columns) of a ``volta_sgemm_<a>x<b>_nn`` kernel: cuBLAS's
    a x b, whose a rows are C's columns (PyTorch runs a row-major C = A B as C^T = B^T A^T)."""
    a, b = (int(side) for side in re.search(r"sgemm_(\d+)x(\d+)", kernel).groups())
    return b, a


def test_the_volta_and_turing_specs_list_the_tiles_their_kernels_name():
    """Every kernel the committed table names for the T4 and V100 is a tile their spec lists;
    the A100 PCIe cards and the L4 (128 x 128 alone) list none."""
    for name, device in (("t4", "Tesla T4"), ("v100-pcie-32gb", "Tesla V100-PCIE-32GB")):
        listed = set(load_device(name).architecture.fp32_batched_tiles)
        named = {_tile(r["kernel"]) for r in _rows(device) if int(r["batch"]) > 1}
        assert named and named <= listed
        assert (128, 128) not in listed
    assert load_device("t4").architecture.fp32_batched_tiles == (
        (64, 128), (64, 64), (32, 128), (128, 32))
    assert load_device("v100-pcie-32gb").architecture.fp32_batched_tiles == (
        (128, 32), (64, 64), (32, 128))
    for name in ("a100-pcie-80gb", "a100-pcie-40gb", "l4"):
        assert load_device(name).architecture.fp32_batched_tiles is None


def test_t4_attention_contexts_within_tolerance():
    """The T4's calls of 1e9 FLOPs and more whose output is 64 wide (146, an attention's
    context P V and its scores' gradients): on the widest tile half of each tile is padding,
    median error +62.9 %; on the listed tiles -12.5 % (median |error| 15.7 %, within 20 %)."""
    t4 = load_device("t4")
    rows = [r for r in _rows("Tesla T4") if int(r["n"]) == 64
            and 2.0 * int(r["batch"]) * int(r["m"]) * int(r["n"]) * int(r["k"]) >= 1e9]
    assert len(rows) == 146
    assert np.median(_errors(_widest(t4), rows)) > 0.5
    assert np.median(np.abs(_errors(t4, rows))) < 0.2


def test_v100_calls_within_tolerance():
    """The V100's 72 fp32 bmm calls (1e8 to 2e11 FLOPs): median |error| 20.9 % on the widest
    tile, 6.7 % on the listed ones (within 10 %)."""
    v100 = load_device(NEUSIGHT_CATALOGUE["Tesla V100-PCIE-32GB"])
    rows = _rows("Tesla V100-PCIE-32GB")
    assert len(rows) == 72
    assert np.median(np.abs(_errors(_widest(v100), rows))) > 0.18
    assert np.median(np.abs(_errors(v100, rows))) < 0.10


def test_a_context_in_closed_form():
    """BERT-large's context at batch 8 on the T4's 40 SMs (load cost 6): 128 products of
    512 x 64 outputs. On the listed 64 x 64 tile: 1,024 tiles, 26 waves, none padded, at
    (1 + 6 (2/128)) / (1 + 6 (2/64)) = 0.921 of 128 x 128's rate, x 1024 / 1040; the listed
    64 x 128 pads half of each tile, 128 x 32 runs at 0.886; the widest (128 x 128, not
    listed) would pad half: 0.5 x 512 / 520."""
    arch = load_device("t4").architecture
    rate = (1 + 6 * (2 / 128)) / (1 + 6 * (2 / 64))
    assert float(fp32_tiles(512, 64, 512, 128, arch)) == pytest.approx(rate * 1024 / 1040)
    widest = dataclasses.replace(arch, fp32_batched_tiles=None)
    assert float(fp32_tiles(512, 64, 512, 128, widest)) == pytest.approx(0.5 * 512 / 520)
    only = dataclasses.replace(arch, fp32_batched_tiles=((64, 128),))   # n = 64 padded to 128
    wide_rate = (1 + 6 * (2 / 128)) / (1 + 6 * (1 / 64 + 1 / 128))
    assert float(fp32_tiles(512, 64, 512, 128, only)) == pytest.approx(
        wide_rate * 0.5 * 1024 / 1040)


TILES = [(128, 128), (64, 128), (128, 64), (64, 64), (32, 128), (128, 32), (32, 32)]


@given(batch=st.integers(2, 512), m=st.integers(1, 4096), n=st.integers(1, 4096),
       k=st.integers(1, 4096), tiles=st.lists(st.sampled_from(TILES), min_size=1, max_size=4,
                                              unique=True),
       more=st.sampled_from(TILES))
@settings(max_examples=80, deadline=None)
def test_more_tiles_or_sms_never_slower(batch, m, n, k, tiles, more):
    """A batched GEMM's factor with one more tile listed is at least the list's (more tiles to
    choose from never slower), and twice the SMs at the same rate per SM never lower SMs x
    factor (the time at a fixed rate per SM is the work over that product)."""
    base = Architecture(compute_units=40, fp32_matrix_tile=(128, 128, 8), fp32_tile_load_cost=6,
                        fp32_batched_tiles=tuple(tiles))
    chosen = float(fp32_tiles(m, n, k, batch, base))
    wider = dataclasses.replace(base, fp32_batched_tiles=(*tiles, more))
    assert float(fp32_tiles(m, n, k, batch, wider)) >= chosen * (1 - 1e-12)
    twice = dataclasses.replace(base, compute_units=80)
    assert 80 * float(fp32_tiles(m, n, k, batch, twice)) >= 40 * chosen * (1 - 1e-12)


@pytest.mark.parametrize("tiles", [(), ((64,),), ((0, 64),), ((64, 64, 8),), "64x64"])
def test_a_bad_list_is_refused(tiles):
    with pytest.raises(SpecError, match="fp32_batched_tiles"):
        Architecture(compute_units=40, fp32_matrix_tile=(128, 128, 8), fp32_tile_load_cost=6,
                     fp32_batched_tiles=tiles)


def test_the_list_without_a_load_cost_is_one_line(tmp_path):
    """The tiles' rates need fp32_tile_load_cost: a spec listing tiles without it is refused
    in one line naming the file and the key, not silently priced on the widest tile."""
    text = (Path(__file__).parents[1] / "hardware_specs" / "devices" / "t4.toml").read_text()
    assert "fp32_tile_load_cost = 6\n" in text
    path = tmp_path / "t4-no-cost.toml"
    path.write_text(text.replace("fp32_tile_load_cost = 6\n", ""))
    with pytest.raises(SpecError) as info:
        load_device(str(path))
    message = str(info.value)
    assert "\n" not in message
    assert "t4-no-cost.toml" in message and "fp32_batched_tiles" in message
    assert "fp32_tile_load_cost" in message


def test_the_list_round_trips_and_overrides(tmp_path):
    """The writer writes the list as the loader reads it; ``--set`` takes tiles as 64x128,64x64
    and refuses a tile that is not two numbers in one line."""
    t4 = load_device("t4")
    path = tmp_path / "t4-written.toml"
    path.write_text(device_toml(t4))
    assert load_device(str(path)).architecture.fp32_batched_tiles == \
        t4.architecture.fp32_batched_tiles
    changed = override(t4, {"architecture.fp32_batched_tiles": "64x64,32x128"})
    assert changed.architecture.fp32_batched_tiles == ((64, 64), (32, 128))
    with pytest.raises(SpecError, match="fp32_batched_tiles"):
        override(t4, {"architecture.fp32_batched_tiles": "64x64x8"})


def _every_tile_then_select(m, n, k, batch, arch):
    """The oracle: every candidate tile priced for every GEMM, single or batched, then each
    GEMM's own set chosen (as fp32_tiles did before 2026-12-05)."""
    from simulator.cost.efficiency import gpu_tiles, narrow_tiles

    widest, cost, fixed = arch.fp32_matrix_tile, arch.fp32_tile_load_cost, \
        float(arch.fp32_tile_fixed_k or 0)
    splits = tuple(range(1, (arch.fp32_split_k or 1) + 1))

    def factor(tile, at_splits):
        rate = (1 + cost * (1 / widest[0] + 1 / widest[1])) / (1 + cost * (1 / tile[0]
                                                                          + 1 / tile[1]))
        return rate * gpu_tiles(m, n, k, batch, (*tile[:2], widest[2]), arch.compute_units,
                                fixed, splits=at_splits)

    single = np.max([factor(t, splits) for t in narrow_tiles(widest)], axis=0)
    batched = np.max([factor((*t, widest[2]), (1,)) for t in arch.fp32_batched_tiles], axis=0)
    return np.where(np.asarray(batch) > 1, batched, single)


@given(shapes=st.lists(st.tuples(st.integers(1, 4096), st.integers(1, 4096),
                                 st.integers(1, 4096), st.sampled_from([1, 1, 2, 12, 96])),
                       min_size=1, max_size=20),
       device=st.sampled_from(["t4", "v100-pcie-32gb"]), split_k=st.sampled_from([None, 6]))
@settings(max_examples=60, deadline=None)
def test_each_gemm_is_priced_on_its_own_tiles_only(shapes, device, split_k):
    """fp32_tiles prices single GEMMs on the narrow tiles and batched ones on the listed tiles,
    each set only for its own GEMMs, and gives the oracle's factors bit for bit (every tile
    priced for every GEMM, then chosen)."""
    import simulator.cost.efficiency as efficiency

    arch = dataclasses.replace(load_device(device).architecture, fp32_split_k=split_k,
                               fp32_tile_fixed_k=8 if split_k else None)
    m, n, k, batch = (np.array(column) for column in zip(*shapes))
    calls = []
    real = efficiency.gpu_tiles

    def counted(m_, n_, k_, batch_, tile, *args, **kwargs):
        calls.append((tile[:2], np.asarray(batch_).copy()))
        return real(m_, n_, k_, batch_, tile, *args, **kwargs)

    efficiency.gpu_tiles = counted
    try:
        got = fp32_tiles(m, n, k, batch, arch)
    finally:
        efficiency.gpu_tiles = real
    assert np.array_equal(got, _every_tile_then_select(m, n, k, batch, arch))
    listed = set(arch.fp32_batched_tiles)
    for tile, priced in calls:   # each call prices one set: the batched or the single GEMMs
        if np.any(priced > 1):
            assert np.all(priced > 1) and tile in listed
            assert len(priced) == np.count_nonzero(batch > 1)
        else:
            assert len(priced) == np.count_nonzero(batch <= 1)
    assert len(calls) == (len(efficiency.narrow_tiles(arch.fp32_matrix_tile)) * np.any(batch <= 1)
                          + len(listed) * np.any(batch > 1))
