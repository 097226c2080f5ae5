"""``hwsim calibrate --device D --from TABLE.csv`` on a published kernel timing table.

The tables committed under ``tests/data/`` (and any CSV with the same columns) are fitted by
the modules that fit them for the catalogue, with the same held-out rule, and the figures
written into a copy of D's spec:

- a GEMM table: DeepBench's (``device, precision, application, m, n, k, ..., time_ms``) or
  NeuSight's fp32 ``torch.nn.Linear`` calls (``device, precision, m, n, k, time_ms, kernel``):
  ``simulator.calibrate.gemm.fit`` per format, fp16 as ``matmul_efficiency`` and fp32 as
  ``fp32_matmul_efficiency``; the largest fifth of the GEMMs of at least 2e11 FLOPs held out;
- a streaming table: NeuSight's elementwise, layer-norm and softmax kernels (``device, op,
  rows, row, latency_ms, ...``): ``simulator.calibrate.streaming.fit`` per class,
  ``memory_efficiency`` and ``norm_memory_efficiency``; the fifth with the longest rows held
  out. The L2 that decides which kernels stream from memory is the table's device's in
  ``tests/data/neusight_devices*.csv``.

A table's ``device`` column names the GPU as the table does (``NVIDIA L4``); the rows of D are
those whose device is D's catalogue name or maps to it (``gemm.NEUSIGHT_CATALOGUE``,
``gemm.DEEPBENCH_CATALOGUE``, the first catalogue name of ``neusight_devices*.csv``). A table of
neither kind, or without rows of D, is one ``SpecError`` line.
"""
from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

from simulator.errors import SpecError

DATA = Path(__file__).resolve().parents[2] / "tests" / "data"
GEMM_COLUMNS = {"device", "precision", "m", "n", "k", "time_ms"}
STREAM_COLUMNS = {"device", "op", "rows", "row", "latency_ms"}
#: spec field of each fitted class
GEMM_FIELDS = {"fp16": "matmul_efficiency", "fp32": "fp32_matmul_efficiency"}
STREAM_FIELDS = {"elementwise": "memory_efficiency", "norm": "norm_memory_efficiency"}
#: The fewest rows a class is fitted on (``streaming.fit``'s own bound)
MIN_ROWS = 10


def kind_of(path: str | Path) -> str | None:
    """``"gemm"`` or ``"stream"`` for a published table's header, else None (a hwsim record,
    or anything else: ``records.read_kernels`` says what is wrong with it)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            header = set(next(csv.reader(handle), []))
    except (OSError, UnicodeDecodeError):
        return None
    if GEMM_COLUMNS <= header:
        return "gemm"
    if STREAM_COLUMNS <= header:
        return "stream"
    return None


def _rows(path, device) -> list[dict]:
    from simulator.calibrate import gemm

    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    names = {**gemm.NEUSIGHT_CATALOGUE, **gemm.DEEPBENCH_CATALOGUE,
             **{d["device"]: d["catalogue"].split()[0] for d in _stream_devices().values()
                if d["catalogue"]}}
    mine = [(line, r) for line, r in enumerate(rows, start=2)
            if device.name in (r.get("device"), names.get(r.get("device")))]
    if not mine:
        held = sorted({r.get("device") or "" for r in rows})
        raise SpecError(f"{path}: no rows of {device.name} (the table's devices: "
                        f"{', '.join(held[:12]) or 'none'}); give a catalogue device it holds")
    for line, r in mine:   # a NaN, infinite, zero or negative figure is never fitted on
        _check_row(path, line, r)
    return [r for _, r in mine]


#: The numeric columns of each kind of table: sizes (whole numbers > 0) and times (> 0)
_SIZES = {"gemm": ("m", "n", "k"), "stream": ("rows", "row")}
_TIMES = {"gemm": "time_ms", "stream": "latency_ms"}


def _check_row(path, line: int, row: dict) -> None:
    """One line naming the row, column and value of a size that is not a whole number > 0 or
    a time that is not a finite number > 0."""
    kind = "gemm" if GEMM_COLUMNS <= row.keys() else "stream"
    for column in _SIZES[kind]:
        value = row.get(column) or ""
        if not (value.strip().isascii() and value.strip().isdigit() and int(value) > 0):
            raise SpecError(f"{path}: line {line}: {column} = {value!r} is not a whole number "
                            "> 0; give the kernel's size")
    value = row.get(_TIMES[kind]) or ""
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not (math.isfinite(seconds) and seconds > 0):
        raise SpecError(f"{path}: line {line}: {_TIMES[kind]} = {value!r} is not a finite "
                        "number > 0; give the kernel's measured time in milliseconds")


def _stream_devices() -> dict[str, dict]:
    out = {}
    for name in ("neusight_devices.csv", "neusight_devices_amd.csv"):
        with open(DATA / name, newline="", encoding="utf-8") as handle:
            out.update({d["device"]: d for d in csv.DictReader(handle)})
    return out


def fit_table(path: str | Path, device) -> tuple[dict[str, float], list[str]]:
    """(spec field -> fitted figure, one report line per fitted class) for ``device`` (a
    DeviceSpec) from the published table at ``path``."""
    kind = kind_of(path)
    rows = _rows(path, device)
    figures, lines = {}, []
    try:
        if kind == "gemm":
            from simulator.calibrate import gemm

            for precision, field in GEMM_FIELDS.items():
                mine = [r for r in rows if r["precision"] == precision]
                if not mine:
                    continue
                large = sum(2.0 * int(r["m"]) * int(r["n"]) * int(r["k"]) >= gemm.LARGE_FLOPS
                            for r in mine)
                if large < MIN_ROWS:
                    raise SpecError(f"{path}: {large} {precision} GEMMs of {device.name} of at "
                                    f"least {gemm.LARGE_FLOPS:.0e} FLOPs; the fit needs "
                                    f"{MIN_ROWS} (a fifth of them held out)")
                f = gemm.fit(rows, device, precision)
                figures[field] = f["efficiency"]
                lines.append(f"gemm {precision}: {field} = {f['efficiency']:.3f} on {f['n']} "
                             f"GEMMs; held out (the {f['held']} largest): median |error| "
                             f"{100 * f['held_out_median']:.1f} %, worst "
                             f"{100 * f['held_out_max']:.1f} %")
        else:
            from simulator.calibrate import streaming

            # the table's name of D or D's catalogue name: either finds its L2, and the fit
            # reads every row of D under one name
            table_device = rows[0]["device"]
            known = _stream_devices().get(table_device) or next(
                (d for d in _stream_devices().values()
                 if (d["catalogue"] or " ").split()[0] == device.name), None)
            if known is None:
                raise SpecError(f"{path}: {table_device}'s L2 is not known (tests/data/"
                                "neusight_devices.csv): which kernels stream from memory is "
                                "undecided")
            rows = [{**r, "device": table_device} for r in rows]
            for cls, field in STREAM_FIELDS.items():
                f = streaming.fit(rows, table_device, cls, device.memory_bandwidth_bytes_per_s,
                                  float(known["l2_mb"]) * 2**20)
                figures[field] = f.efficiency
                lines.append(f"stream {cls}: {field} = {f.efficiency:.3f} on {f.fitted_rows} "
                             f"kernels; held out (the {f.held_out_rows} longest rows): median "
                             f"|error| {100 * f.held_out_median_error:.1f} %")
    except (KeyError, ValueError, ZeroDivisionError) as err:
        raise SpecError(f"{path}: cannot fit {device.name} on it ({err}); give the table's "
                        "columns as tests/data/README.md describes them") from None
    bad = {k: v for k, v in figures.items() if not 0 < v <= 1}
    if bad:   # a non-physical figure is never written (issue 22 item 9)
        raise SpecError(f"{path}: the fit gives {', '.join(f'{k} = {v:.3g}' for k, v in bad.items())}"
                        f", outside (0, 1]: the table's device is not what {device.name}'s spec "
                        "says, or its timings are not of single kernels; nothing written")
    return figures, lines


def spec_text(device, figures: dict[str, float], source: str) -> str:
    """``device``'s spec file with ``figures`` written into its ``[compute]`` table (the lines
    of those keys replaced), named ``<name>-calibrated``; validated before it is returned."""
    from hardware_specs.loader import parse_device
    from hardware_specs.writer import _replace_compute, _source_text, device_toml

    text = _source_text(device) or device_toml(device)
    out = [f"# Calibrated: {', '.join(figures)} fitted by hwsim calibrate --from "
           f"{source} (simulator/calibrate/published.py).",
           f"# Base figures: {device.path or device.name}."]
    out += _replace_compute(text.splitlines(), [f"{k} = {v:.4g}" for k, v in figures.items()],
                            keys=tuple(figures), header=f"# fitted on {source}:",
                            name=f"{device.name}-calibrated")
    body = "\n".join(out) + "\n"
    checked = parse_device(body.encode(), f"{device.name}-calibrated.toml")
    for key, value in figures.items():   # the loader reads back what was fitted
        if abs(getattr(checked, key) - float(f"{value:.4g}")) > 1e-12:
            raise SpecError(f"{key}: written {value:.4g}, read back {getattr(checked, key)}")
    return body


def calibrate(path: str, device, out: str | None) -> tuple[str, list[str], str]:
    """(the file to write, the report lines, the spec text) of ``device`` fitted on ``path``."""
    figures, lines = fit_table(path, device)
    if not figures:
        raise SpecError(f"{path}: no fp16 or fp32 rows of {device.name} to fit")
    return out or f"{device.name}-calibrated.toml", lines, spec_text(
        dataclasses.replace(device), figures, Path(path).name)


__all__ = ["calibrate", "fit_table", "kind_of", "spec_text"]
