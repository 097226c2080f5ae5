"""``hwsim calibrate --device D --from TABLE.csv`` on a published kernel table (issue 20 item 2;
simulator/calibrate/published.py): the figures the catalogue carries and the held-out errors
docs/accuracy.md reports ("GEMM kernels", "Kernels"), written into a spec that loads; a table
without D's rows, too few rows or a non-physical fit is one line, exit 2, nothing written."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from hardware_specs.loader import load_device
from simulator.cli import main

DATA = Path(__file__).parent / "data"


def calibrate(capsys, tmp_path, device: str, table: Path) -> tuple[int, str, str, Path]:
    out = tmp_path / "spec.toml"
    code = main(["calibrate", "--device", device, "--from", str(table), "--out", str(out)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err, out


@pytest.mark.parametrize("device, table, fields, report", [
    # NeuSight's fp32 nn.Linear calls on the L4: docs/accuracy.md, GEMM kernels
    ("l4", "neusight_linear_kernels.csv", {"fp32_matmul_efficiency": 0.298},
     ["gemm fp32: fp32_matmul_efficiency = 0.298 on 205 GEMMs; held out (the 52 largest): "
      "median |error| 7.5 %, worst 32.8 %"]),
    # DeepBench's T4 in both formats
    ("t4", "deepbench_gemm.csv", {"matmul_efficiency": 0.616, "fp32_matmul_efficiency": 0.464},
     ["gemm fp16: matmul_efficiency = 0.616 on 12 GEMMs; held out (the 4 largest): median "
      "|error| 4.1 %, worst 6.0 %", "gemm fp32: fp32_matmul_efficiency = 0.464"]),
    # NeuSight's streaming kernels on the L4 and the MI210: docs/accuracy.md, Kernels
    ("l4", "neusight_vector_kernels.csv",
     {"memory_efficiency": 0.780, "norm_memory_efficiency": 0.775},
     ["stream elementwise: memory_efficiency = 0.780 on 187 kernels; held out (the 47 longest "
      "rows): median |error| 0.4 %", "stream norm: norm_memory_efficiency = 0.775 on 107 "
      "kernels; held out (the 27 longest rows): median |error| 17.8 %"]),
    ("mi210", "neusight_vector_kernels_amd.csv",
     {"memory_efficiency": 0.736, "norm_memory_efficiency": 0.359}, ["median |error| 15.4 %"]),
])
def test_a_published_table_gives_the_catalogue_figures(capsys, tmp_path, device, table, fields,
                                                       report):
    code, out, err, path = calibrate(capsys, tmp_path, device, DATA / table)
    assert code == 0 and err == "", err
    for line in report:
        assert line in out
    written = load_device(str(path))
    assert written.name == f"{load_device(device).name}-calibrated"
    for field, value in fields.items():
        assert getattr(written, field) == pytest.approx(value, abs=1e-3)
        assert getattr(load_device(device), field) == pytest.approx(value, abs=1e-3)
    # a prior is replaced only where the table measured it (the L4's fp16 GEMMs stay a prior)
    assert set(written.priors) == set(load_device(device).priors) - set(fields)


def _table(tmp_path: Path, source: str, device: str, change) -> Path:
    """``source``'s rows of ``device`` passed through ``change`` (a list of dicts -> another)."""
    with open(DATA / source, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = change([dict(r) for r in reader if r["device"] == device])
        header = reader.fieldnames
    path = tmp_path / "table.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _large(row: dict) -> bool:
    return 2 * int(row["m"]) * int(row["n"]) * int(row["k"]) >= 2e11


@pytest.mark.parametrize("device, change, words", [
    ("l4", lambda rows: [{**r, "time_ms": str(float(r["time_ms"]) / 10)} for r in rows],
     "fp32_matmul_efficiency = 2.98, outside (0, 1]"),
    ("l4", lambda rows: [{**r, "time_ms": "nan"} for r in rows],
     "line 2: time_ms = 'nan' is not a finite number > 0"),
    ("l4", lambda rows: [{**r, "m": "x"} for r in rows], "line 2: m = 'x' is not a whole number"),
    # one bad time among good ones: the median hid it, and a NaN or negative time in the held-out
    # fifth printed 'median |error| nan %' (or a worst of 5,962 %) and wrote the spec, exit 0
    ("l4", lambda rows: rows[:-1] + [{**rows[-1], "time_ms": "nan"}], "time_ms = 'nan'"),
    ("l4", lambda rows: rows[:-1] + [{**rows[-1], "time_ms": "-5"}], "time_ms = '-5'"),
    ("l4", lambda rows: rows[:-1] + [{**rows[-1], "time_ms": "inf"}], "time_ms = 'inf'"),
    ("l4", lambda rows: [{**rows[0], "time_ms": "0"}] + rows[1:], "line 2: time_ms = '0'"),
    ("l4", lambda rows: [{**rows[0], "k": "-64"}] + rows[1:], "line 2: k = '-64'"),
    ("l4", lambda rows: [{**rows[0], "n": "1.5"}] + rows[1:], "line 2: n = '1.5'"),
    ("l4", lambda rows: [r for r in rows if not _large(r)] + [r for r in rows if _large(r)][:5],
     "5 fp32 GEMMs of l4 of at least 2e+11 FLOPs; the fit needs 10"),
    ("b200", lambda rows: rows, "no rows of b200 (the table's devices: NVIDIA L4)"),
])
def test_a_bad_table_is_one_line_and_writes_nothing(capsys, tmp_path, device, change, words):
    table = _table(tmp_path, "neusight_linear_kernels.csv", "NVIDIA L4", change)
    code, out, err, path = calibrate(capsys, tmp_path, device, table)
    assert code == 2 and out == "" and not path.exists()
    assert err.count("\n") == 1 and words in err and "Traceback" not in err


@pytest.mark.parametrize("column, value", [("latency_ms", "-0.1"), ("latency_ms", "nan"),
                                           ("rows", "0"), ("row", "-37")])
def test_a_bad_streaming_row_is_one_line(capsys, tmp_path, column, value):
    table = _table(tmp_path, "neusight_vector_kernels.csv", "NVIDIA L4",
                   lambda rows: rows[:-1] + [{**rows[-1], column: value}])
    code, out, err, path = calibrate(capsys, tmp_path, "l4", table)
    assert code == 2 and out == "" and not path.exists()
    assert err.count("\n") == 1 and f"{column} = {value!r}" in err, err


@pytest.mark.parametrize("source, report", [
    ("neusight_vector_kernels.csv", "memory_efficiency = 0.780 on 187 kernels"),
    ("neusight_linear_kernels.csv", "fp32_matmul_efficiency = 0.298 on 205 GEMMs")])
def test_rows_under_the_catalogue_name_fit_as_under_the_tables(capsys, tmp_path, source,
                                                               report):
    """D's rows may name it as the catalogue does ('l4'): a streaming table so was refused
    ("l4's L2 is not known"), a GEMM table fitted (docs/calibration.md says both are D's)."""
    table = _table(tmp_path, source, "NVIDIA L4",
                   lambda rows: [{**r, "device": "l4"} for r in rows])
    code, out, err, path = calibrate(capsys, tmp_path, "l4", table)
    assert code == 0 and err == "" and report in out and path.exists()


def test_a_table_saved_with_a_byte_order_mark_is_read(capsys, tmp_path):
    """A CSV saved by a spreadsheet starts with a UTF-8 byte order mark: its first column is
    still 'device' (it was read as a hwsim record: 'missing column(s) kind, fn, ...')."""
    table = tmp_path / "bom.csv"
    table.write_text((DATA / "neusight_linear_kernels.csv").read_text(encoding="utf-8"),
                     encoding="utf-8-sig")
    code, out, err, path = calibrate(capsys, tmp_path, "l4", table)
    assert code == 0 and err == "" and "fp32_matmul_efficiency = 0.298" in out


def test_a_hwsim_record_is_still_read_as_one(capsys, tmp_path):
    """A CSV of neither published kind keeps the record reader's error."""
    table = tmp_path / "x.csv"
    table.write_text("a,b\n1,2\n")
    code, _, err, path = calibrate(capsys, tmp_path, "l4", table)
    assert code == 2 and "not a hwsim record" in err and not path.exists()
