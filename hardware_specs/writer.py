"""Writing spec files: a calibrated copy of a device's file, or a file for a built device.

A calibrated copy keeps the original file's text and comments (every datasheet figure keeps its
source) and replaces only the calibrated keys of ``[compute]``, with a comment saying where
the new values come from. A device built at run time (``cpu-host``) or changed by a what-if
(``hardware_specs.override``) is written out whole, and reads back as the same spec: every
figure at full precision (``_figure``), the what-if's ``reference_units``, ``[functions]`` and
each memory level's ``private`` included, so the written file predicts what the spec in memory
does (``tests/test_spec_writer.py``). The text is parsed back before it is returned, so a written
file always loads.
"""
from __future__ import annotations

import dataclasses
from importlib import resources

from hardware_specs import units
from hardware_specs.spec import EFFICIENCIES, REQUIRED_EFFICIENCIES, Architecture, DeviceSpec

CALIBRATED_KEYS = ("matmul_efficiency", "conv_efficiency", "vector_efficiency",
                   "memory_efficiency", "op_overhead_us", "optimizer_overhead_us",
                   "step_overhead_us", "host_overhead_us", "fp32_matmul_efficiency",
                   "fp32_conv_efficiency",  # the fp32 ones: a calibration's serve fp32 (fit.py)
                   "conv_half_dim")


def calibrated_toml(device: DeviceSpec, calibrated: DeviceSpec, provenance: str) -> str:
    """The spec text of ``calibrated``: the source file of ``device`` with new efficiencies."""
    original = _source_text(device)
    text = original if original is not None else device_toml(device)
    lines = [f"# Calibrated: {provenance}.", f"# Base figures: {device.path or device.name}."]
    body = _replace_compute(_drop_functions(text.splitlines()), _compute_lines(calibrated))
    body = _replace_clock(body, device, calibrated)
    body += _function_lines(calibrated)
    first = next(i for i, line in enumerate(body) if line.startswith("name ="))
    body[first] = f'name = "{calibrated.name}"'  # the device's name, not a memory level's
    out = "\n".join(lines + body) + "\n"
    from hardware_specs.loader import parse_device  # validate before anyone writes it

    parse_device(out.encode(), f"{calibrated.name}.toml")
    return out


def _source_text(device: DeviceSpec) -> str | None:
    if not device.path:
        return None
    prefix = "hardware_specs/devices/"
    if device.path.startswith(prefix):
        return resources.files("hardware_specs").joinpath(
            "devices", device.path[len(prefix):]).read_text(encoding="utf-8")
    try:
        with open(device.path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return None


def _figure(value: float, factor: float = 1.0) -> str:
    """``value`` (SI) in the file's unit of ``factor`` SI units, written so that the loader,
    which multiplies it by ``factor`` (``hardware_specs.units``), reads ``value`` back: the
    shortest decimal of value / factor (a whole number without its point). Every figure a spec
    file can hold (a decimal x factor) comes back exactly; an SI figure that no decimal x
    factor gives (a what-if's ``--set memory.main.bandwidth_bytes_per_s=1.234e11``: about one
    arbitrary decimal in twenty at 1e9) comes back as the nearest one that does, a unit in its
    last place away: no figure in the file's unit reads back closer."""
    number = value / factor
    if number == int(number) and abs(number) < 2.0**53:
        return str(int(number))
    return repr(number)


def _compute_lines(spec: DeviceSpec) -> list[str]:
    out = [f"op_overhead_us = {_figure(spec.op_overhead_s, units.US)}",
           f"matmul_efficiency = {_figure(spec.matmul_efficiency)}",
           f"vector_efficiency = {_figure(spec.vector_efficiency)}",
           f"memory_efficiency = {_figure(spec.memory_efficiency)}"]
    if spec.conv_efficiency is not None:
        out.append(f"conv_efficiency = {_figure(spec.conv_efficiency)}")
    if spec.optimizer_overhead_s > 0:
        out.append(f"optimizer_overhead_us = {_figure(spec.optimizer_overhead_s, units.US)}")
    if spec.step_overhead_s > 0:
        out.append(f"step_overhead_us = {_figure(spec.step_overhead_s, units.US)}")
    # the host's cost per op; absent, the loader leaves it None and the host issues at
    # op_overhead_s (simulator.cost.host.host_per_op)
    if spec.host_overhead_s is not None and spec.host_overhead_s != spec.op_overhead_s:
        out.append(f"host_overhead_us = {_figure(spec.host_overhead_s, units.US)}")
    if spec.conv_half_dim:   # a CPU's convolutions by shape, where fitted
        out.append(f"conv_half_dim = {_figure(spec.conv_half_dim)}")
    return out


#: The efficiencies ``_compute_lines`` writes (calibrated ones); ``device_toml`` the others.
_COMPUTE_WRITTEN = (*REQUIRED_EFFICIENCIES, "conv_efficiency")


def _function_lines(spec: DeviceSpec) -> list[str]:
    """The ``[functions]`` table of ``spec``'s per-function figures (none: no table)."""
    fns = sorted(set(spec.function_efficiency) | set(spec.function_overhead_s))
    if not fns:
        return []
    out = ["", "[functions]  # measured by hwsim calibrate (see the header)"]
    for fn in fns:
        parts = []
        if fn in spec.function_efficiency:
            parts.append(f"efficiency = {_figure(spec.function_efficiency[fn])}")
        if fn in spec.function_overhead_s:
            parts.append(f"overhead_us = {_figure(spec.function_overhead_s[fn], units.US)}")
        out.append(f"{fn} = {{ {', '.join(parts)} }}")
    return out


def _drop_functions(lines: list[str]) -> list[str]:
    """The lines without a ``[functions]`` table (a calibration replaces it whole)."""
    out, inside = [], False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            inside = stripped.split("#", 1)[0].strip() == "[functions]"
        if not inside:
            out.append(line)
    while out and not out[-1].strip():
        out.pop()
    return out


def _replace_compute(lines: list[str], new: list[str], keys=CALIBRATED_KEYS,
                     header: str = "# measured by hwsim calibrate (see the header):",
                     name: str | None = None) -> list[str]:
    """Drop ``keys`` inside ``[compute]`` and put ``header`` and the ``new`` lines under its
    header line; with ``name``, the top-level ``name`` line names it (a derived spec)."""
    out, section = [], None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped.strip("[]").strip()
        key = stripped.split("=", 1)[0].strip() if "=" in stripped else ""
        if section == "compute" and key in keys:
            continue
        if section is None and key == "name" and name is not None:
            line = f'name = "{name}"'
        out.append(line)
        if stripped == "[compute]":
            out.extend([header] + new)
    return out


def _replace_clock(lines: list[str], device: DeviceSpec, calibrated: DeviceSpec) -> list[str]:
    """Where a calibration raised a CPU's clock (``simulator.calibrate.fit.sustained_clock_hz``):
    its ``peak_tflops``, ``vector_tflops`` and ``clock_ghz`` lines replaced by the calibrated
    figures, each under a comment giving the clock the file had. Otherwise the lines as they
    were."""
    old, new = device.architecture.clock_hz, calibrated.architecture.clock_hz
    if not old or not new or new == old:
        return lines
    note = (f"# raised by hwsim calibrate: the clock its fastest fp32 matmul held, "
            f"{new / 1e9:.4g} GHz, over the {old / 1e9:.4g} GHz the spec had (see the header)")
    replace = {("compute", "peak_tflops"): _peak_line(calibrated),
               ("compute", "vector_tflops"):
                   f"vector_tflops = {_figure(calibrated.vector_flops_per_s, units.TFLOPS)}",
               ("architecture", "clock_ghz"): f"clock_ghz = {_figure(new, units.GHZ)}"}
    out, section = [], None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped.split("#", 1)[0].strip().strip("[]").strip()
        key = stripped.split("=", 1)[0].strip() if "=" in stripped else ""
        if (section, key) in replace:
            out += [note, replace[(section, key)]]
        else:
            out.append(line)
    return out


def _peak_line(spec: DeviceSpec) -> str:
    peaks = ", ".join(f"{d.name.lower()} = {_figure(v, units.TFLOPS)}"
                      for d, v in spec.peak_flops_per_s.items())
    return f"peak_tflops = {{ {peaks} }}"


def _capacity_line(capacity_bytes: float) -> str:
    """The capacity key that reads back to the same bytes: whole MiB (what nvidia-smi reports,
    e.g. the H100 SXM5's 81559 MiB) as ``capacity_mib``, anything else in GB at full
    precision."""
    mib = capacity_bytes / units.MIB
    if mib == int(mib):
        return f"capacity_mib = {int(mib)}"
    return f"capacity_gb = {_figure(capacity_bytes, units.GB)}"


def _level_lines(level) -> list[str]:
    private = ["private = true"] if level.private else []   # a core's own cache (on_cores)
    return [f'name = "{level.name}"', _capacity_line(level.capacity_bytes),
            f"bandwidth_gb_per_s = {_figure(level.bandwidth_bytes_per_s, units.GB_PER_S)}",
            *private]


def device_toml(spec: DeviceSpec) -> str:
    """A whole spec file for a device that has none (built at run time)."""
    out = [f'name = "{spec.name}"', f'vendor = "{spec.vendor}"',
           f'class = "{spec.device_class.value}"', f'source = "{spec.source}"', "",
           "[compute]", _peak_line(spec),
           f"vector_tflops = {_figure(spec.vector_flops_per_s, units.TFLOPS)}"]
    out += [line for line in _compute_lines(spec)      # a class prior is the loader's to
            if line.split(" =")[0] not in spec.priors]  # give, not a fact of this device
    for key in EFFICIENCIES:           # the rest, cited, not calibrated: a calibrated file
        if key in _COMPUTE_WRITTEN:    # keeps their lines
            continue
        if getattr(spec, key) is not None and key not in spec.priors:
            out.append(f"{key} = {_figure(getattr(spec, key))}")
    # every fact the spec has, as the loader reads it (clock in GHz, tuples as lists), a
    # what-if's reference_units included (the SMs its efficiencies were measured with)
    facts = {}
    for field in dataclasses.fields(Architecture):
        value = getattr(spec.architecture, field.name)
        if field.name == "clock_hz" and value is not None:
            facts["clock_ghz"] = _figure(value, units.GHZ)
        elif value is not None:
            facts[field.name] = ([list(v) if isinstance(v, tuple) else v for v in value]
                                 if isinstance(value, tuple) else value)
    if facts:
        out += ["", "[architecture]"] + [f"{k} = {v}" for k, v in facts.items()]
    for level in spec.memory:
        out += ["", "[[memory]]", *_level_lines(level)]
    if spec.streaming_memory is not None:   # off-chip states, streamed in (Graphcore)
        out += ["", "[streaming_memory]", *_level_lines(spec.streaming_memory)]
    out += ["", "[power]"] + ([] if spec.idle_prior else
                              [f"idle_w = {_figure(spec.idle_power_w)}"])
    out.append(f"tdp_w = {_figure(spec.tdp_w)}")   # a prior idle is the loader's to give
    if spec.given_power_priors:               # figures of the file that are priors stay so
        out.append("prior = [" + ", ".join(f'"{name}"' for name in spec.given_power_priors)
                   + "]")
    if spec.energy_per_flop_j is not None:
        out.append(f"pj_per_flop = {_figure(spec.energy_per_flop_j, units.PJ)}")
    if spec.energy_per_byte_j is not None:
        out.append(f"pj_per_byte = {_figure(spec.energy_per_byte_j, units.PJ)}")
    prices = [f"{key} = {_figure(value)}" for key, value in (
        ("usd_per_hour", spec.price_per_hour_usd), ("purchase_usd", spec.purchase_usd))
        if value is not None]
    if spec.purchase_is_system and spec.purchase_usd is not None:
        prices.append("purchase_is_system = true")
    if spec.node_parts_usd is not None:
        prices.append(f"node_parts_usd = {_figure(spec.node_parts_usd)}")
    for key, value, record in (("no_usd_per_hour", spec.price_per_hour_usd, spec.rent_unpriced),
                               ("no_purchase_usd", spec.purchase_usd, spec.purchase_unpriced)):
        if value is None and record is not None and record.searched is not None:
            prices.append(f"{key} = {{ offered = {str(record.offered).lower()}, "
                          f"searched = {record.searched} }}")
    if prices:
        out += ["", "[price]", *prices]
    for link in spec.links:
        out += ["", "[[links]]", f'name = "{link.name}"', f'kind = "{link.kind.value}"',
                f"bandwidth_gb_per_s = {_figure(link.bandwidth_bytes_per_s, units.GB_PER_S)}",
                f"count = {link.count}"]
        if link.latency_s is not None:
            out.append(f"latency_us = {_figure(link.latency_s, units.US)}")
    out += _function_lines(spec)
    return "\n".join(out) + "\n"
