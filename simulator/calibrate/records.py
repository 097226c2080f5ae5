"""Measurements as data: what ``hwsim calibrate --record`` and ``hwsim validate --record`` write.

A calibration's micro-benchmark timings and a validation's training-step timings are written as
CSV with the environment they were taken in (device, driver, CUDA and torch versions, threads,
host, date, one set of columns repeated on every row), so that measurements from a machine with
a GPU can be committed and used where there is none: ``hwsim calibrate --from FILE`` fits a
spec to recorded timings without timing anything, and tests check predictions against recorded
steps. Reading a file that is not such a record is one ``SpecError`` line naming the file, the
row and the column.
"""
from __future__ import annotations

import csv
import io
import math
import platform
import subprocess
import time
from pathlib import Path

from simulator.errors import SpecError

ENVIRONMENT = ("device", "driver", "cuda", "torch", "threads", "host", "date")
KERNEL_COLUMNS = ("kind", "fn", "dims", "dtype", "seconds")
#: Written after ``KERNEL_COLUMNS``, optional when read (records written before it have none):
#: every pass's timing of the case, joined by spaces (``Measurement.samples``).
SAMPLES = "samples"
STEP_COLUMNS = ("model", "batch", "measured_s", "predicted_s", "measured_peak_bytes",
                "predicted_peak_bytes", "spec")


def environment(runtime: str) -> dict[str, str]:
    """Where measurements are taken: the device's name, the NVIDIA driver (nvidia-smi), the
    CUDA and torch versions, torch's threads, the host and the date (UTC)."""
    import torch

    from hardware_specs.host import cpu_model

    cuda = runtime.startswith("cuda")
    return {"device": torch.cuda.get_device_name(0) if cuda else cpu_model(),
            "driver": _driver() if cuda else "",
            "cuda": (torch.version.cuda or "") if cuda else "",
            "torch": torch.__version__, "threads": str(torch.get_num_threads()),
            "host": platform.node(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _driver() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout else ""


def kernels_csv(measurements, env: dict[str, str]) -> str:
    """The text of a calibration record: one row per micro-benchmark."""
    rows = [{"kind": m.case.kind, "fn": m.case.fn, "dims": "x".join(map(str, m.case.dims)),
             "dtype": m.case.dtype, "seconds": repr(m.seconds),
             SAMPLES: " ".join(map(repr, m.samples))} for m in measurements]
    return _csv((*KERNEL_COLUMNS, SAMPLES), rows, env)


def steps_csv(rows, env: dict[str, str], spec: str) -> str:
    """The text of a validation record: one row per model (``simulator.calibrate.validate.Row``)."""
    out = [{"model": r.model, "batch": r.batch, "measured_s": repr(r.measured_s),
            "predicted_s": repr(r.predicted_s),
            "measured_peak_bytes": "" if r.measured_peak_bytes is None
            else repr(r.measured_peak_bytes),
            "predicted_peak_bytes": repr(r.predicted_peak_bytes), "spec": spec} for r in rows]
    return _csv(STEP_COLUMNS, out, env)


def _csv(columns, rows, env) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=[*columns, *ENVIRONMENT], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, **{k: env.get(k, "") for k in ENVIRONMENT}})
    return text.getvalue()


def read_kernels(path: str | Path):
    """(measurements, environment of the first row) from a calibration record; each case's
    pass timings where the record has them (``SAMPLES``)."""
    from simulator.calibrate.fit import KINDS, Case, Measurement
    from simulator.calibrate.functions import FUNCTIONS

    rows = _read(path, KERNEL_COLUMNS)
    out = []
    for i, row in enumerate(rows, start=2):
        try:
            dims = tuple(int(d) for d in row["dims"].split("x"))
        except ValueError:
            raise SpecError(f"{path}: row {i}, dims = {row['dims']!r}: give integers joined "
                            "by x, as hwsim calibrate --record writes them") from None
        if row["kind"] not in KINDS or (row["kind"] == "function" and row["fn"] not in FUNCTIONS):
            raise SpecError(f"{path}: row {i}, kind = {row['kind']!r}, fn = {row['fn']!r}: "
                            "not a case this hwsim measures; record it again")
        case = Case(row["kind"], dims, row["dtype"], row["fn"])
        samples = tuple(_seconds(path, i, SAMPLES, value)
                        for value in (row.get(SAMPLES) or "").split())
        out.append(Measurement(case, _seconds(path, i, "seconds", row["seconds"]), samples))
    return out, {k: rows[0].get(k, "") for k in ENVIRONMENT}


def read_steps(path: str | Path) -> list[dict]:
    """The rows of a validation record, times as floats."""
    rows = _read(path, STEP_COLUMNS)
    for i, row in enumerate(rows, start=2):
        for key in ("measured_s", "predicted_s"):
            row[key] = _seconds(path, i, key, row[key])
        row["batch"] = int(row["batch"])
    return rows


def _read(path, columns) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise SpecError(f"{path}: not a hwsim record: missing column(s) "
                                f"{', '.join(missing)}; write it with --record")
            rows = list(reader)
    except OSError as err:
        raise SpecError(f"{path}: cannot read the record: {err.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as err:
        raise SpecError(f"{path}: not a CSV record ({err}); write it with --record") from None
    if not rows:
        raise SpecError(f"{path}: the record has no rows; write it with --record")
    return rows


def _seconds(path, row: int, key: str, value: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise SpecError(f"{path}: row {row}, {key} = {value!r}: a time must be a positive "
                        "number of seconds")
    return seconds


__all__ = ["environment", "kernels_csv", "read_kernels", "read_steps", "steps_csv"]
