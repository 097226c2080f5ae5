"""Kernel-level measurements of non-GPU devices (issue 20, item 3): the TPU v5e's and
Trainium's GEMMs and the Alveo U280's HBM streams (tests/data/nongpu_kernel_rates.csv, whose
rows cite their sources). Each spec's figure is what its committed row gives, the row's rate
is what its own time and work give, and the row's datasheet rate is the spec's."""
import csv
from pathlib import Path

import pytest

from hardware_specs.loader import load_device
from simulator.graph.op import DType

TABLE = Path(__file__).parent / "data" / "nongpu_kernel_rates.csv"


def _rows() -> list[dict]:
    with open(TABLE, newline="") as handle:
        return list(csv.DictReader(handle))


def test_each_timed_row_gives_its_stated_rate():
    """rate = work / time (FLOPs of 2 m n k over seconds), to the digits the row keeps."""
    timed = [r for r in _rows() if r["time_s"]]
    assert len(timed) == 7
    for row in timed:
        if row["shape"].startswith("m=n=k="):
            m = n = k = int(row["shape"].split("=")[-1])
        else:
            dims = dict(part.split("=") for part in row["shape"].split())
            m, n, k = int(dims["m"]), int(dims["n"]), int(dims["k"])
        assert int(row["work"]) == 2 * m * n * k, row["kernel"]
        assert int(row["work"]) / float(row["time_s"]) / 1e12 == pytest.approx(
            float(row["rate"]), abs=5e-4), row["kernel"]


@pytest.mark.parametrize("row", [r for r in _rows() if r["used"] == "yes"],
                         ids=lambda r: r["catalogue"])
def test_the_spec_figure_is_the_measured_rate_over_the_datasheet(row):
    spec = load_device(row["catalogue"])
    field = row["field"]
    assert field not in spec.priors                       # a measurement, not a prior
    assert getattr(spec, field) == round(float(row["rate"]) / float(row["datasheet_rate"]), 3)
    if field == "matmul_efficiency":                      # the datasheet rate is the spec's,
        per_unit = spec.peak_for(DType.BF16) / 1e12           # per core where one core was timed
        if "NeuronCore" in row["device"]:
            per_unit /= spec.architecture.compute_units
        assert float(row["datasheet_rate"]) == pytest.approx(per_unit)
    else:
        assert float(row["datasheet_rate"]) == spec.memory[-1].bandwidth_bytes_per_s / 1e9


def test_one_row_per_device_is_used_and_it_is_the_largest_or_fastest():
    """matmul_efficiency means the efficiency of large, well-shaped GEMMs: the row used is the
    device's fastest timed kernel (the TPU's largest GEMM, Trainium's optimised one)."""
    used = [r for r in _rows() if r["used"] == "yes"]
    assert sorted(r["catalogue"] for r in used) == ["alveo-u280", "tpu-v5e", "trainium1"]
    for row in used:
        rates = [float(r["rate"]) for r in _rows() if r["catalogue"] == row["catalogue"]]
        assert float(row["rate"]) == max(rates)
