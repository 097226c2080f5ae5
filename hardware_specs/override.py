"""What-if studies: a device spec with some of its figures changed (``hwsim ... --set``).

A change is a dotted path into ``DeviceSpec`` (SI units, named as the fields are) and a value::

    tdp_w, idle_power_w, price_per_hour_usd, purchase_usd, node_parts_usd,
    op_overhead_s,
    optimizer_overhead_s,
    step_overhead_s, host_overhead_s,
    vector_flops_per_s,
    matmul_efficiency, conv_efficiency, attention_efficiency, vector_efficiency,
    memory_efficiency, matmul_memory_efficiency, norm_memory_efficiency,
    norm_memory_efficiency_compiled, batch_norm_memory_efficiency,
    batch_norm_backward_memory_efficiency, batch_norm_nchw_memory_efficiency,
    batch_norm_nchw_backward_memory_efficiency, fp8_matmul_efficiency, fp32_matmul_efficiency,
    fp32_conv_efficiency, matmul_sustained, fp8_matmul_sustained  (spec.EFFICIENCIES),
    energy_per_flop_j, energy_per_byte_j, name
    peak_flops_per_s.<dtype>                       e.g. peak_flops_per_s.bf16 = 2e15
    memory.<level name | main>.<capacity_bytes | bandwidth_bytes_per_s>
    architecture.<field>                           e.g. architecture.compute_units = 144
    links.<link name>.<bandwidth_bytes_per_s | count | latency_s>

Values are validated as the loader validates a spec file (``hardware_specs.loader``): finite
numbers > 0 within the physical bounds of ``hardware_specs.spec.LIMITS`` (checked by the spec
itself), efficiencies in (0, 1], idle power at most the TDP; a mistake is one ``SpecError`` naming
the path and the fix. Values may be strings (from the command line): they are parsed for the
field's type. The spec is frozen: ``override`` returns a new one.

The efficiency priors a spec runs on (``DeviceSpec.priors``) depend on its device class
(``hardware_specs.priors.class_priors``), which is not settable; the NCHW batch-norm priors also
on its SM count and main-memory bandwidth, and follow a --set of either (they are carried per
SM: ``hardware_specs.priors.nchw_batch_norm_prior``). An efficiency set here is a measurement,
no longer a prior.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from hardware_specs.loader import EFFICIENCIES, IDLE_PRIORS, PEAK_DTYPES
from hardware_specs.priors import NCHW_CAPS, nchw_batch_norm_prior
from hardware_specs.spec import Architecture, DeviceSpec
from simulator.errors import SpecError, is_fraction, shown

_FRACTIONS = EFFICIENCIES
_POSITIVE = ("vector_flops_per_s", "op_overhead_s", "optimizer_overhead_s", "step_overhead_s",
             "host_overhead_s", "idle_power_w",
             "tdp_w", "price_per_hour_usd", "purchase_usd", "node_parts_usd",
             "energy_per_flop_j", "energy_per_byte_j", "conv_half_dim")
_TEXT = ("name", "vendor")
_LEVEL_FIELDS = ("capacity_bytes", "bandwidth_bytes_per_s")
_LINK_FIELDS = {"bandwidth_bytes_per_s": float, "count": int, "latency_s": float}
_ARCH_TUPLES = {"matrix_tile": 3, "fp32_matrix_tile": 3, "systolic_array": 2}
_ROOTS = _FRACTIONS + _POSITIVE + _TEXT + ("peak_flops_per_s.<dtype>",
                                           "memory.<level|main>.<field>",
                                           "architecture.<field>", "links.<name>.<field>")


def override(device: DeviceSpec, changes: dict[str, object]) -> DeviceSpec:
    """``device`` with each ``path -> value`` of ``changes`` applied (SpecError if one is bad:
    the spec's own check of ``spec.LIMITS`` names the field, the value and the bound)."""
    if changes is not None and not isinstance(changes, dict):
        raise SpecError(f"overrides = {shown(changes)} must be a dict of path -> value")
    for path, value in (changes or {}).items():
        try:
            device = _apply(device, str(path).strip(), value)
        except SpecError as error:
            text = str(error)
            if text.startswith("--set"):
                raise
            raise SpecError(f"--set {text}" if text.startswith(str(path).strip())
                            else f"--set {path}: {text}") from None
    keys = {str(path).strip() for path in (changes or {})}
    if set(device.priors) & keys:        # figures the user gives are no longer priors
        device = dataclasses.replace(
            device, priors=tuple(name for name in device.priors if name not in keys))
    device = _carried_priors(device)     # after: a figure the user gives is not carried
    given = {"idle_w"} if "idle_power_w" in keys else set()
    given |= {"tdp_w"} if "tdp_w" in keys else set()
    if set(device.power_priors) & given:   # power figures the user gives are not priors
        device = dataclasses.replace(device, power_priors=tuple(
            name for name in device.power_priors if name not in given))
    given_prices = {name: None for name, figure in (("rent_unpriced", "price_per_hour_usd"),
                                                    ("purchase_unpriced", "purchase_usd"))
                    if figure in keys}
    if given_prices:                     # a price the user gives is no longer missing
        device = dataclasses.replace(device, **given_prices)
    if "idle_power_w" in keys:           # a figure the user gives is no longer the prior
        device = dataclasses.replace(device, idle_prior=False)
    elif device.idle_prior and "tdp_w" in keys:   # the class prior follows the new TDP
        device = dataclasses.replace(
            device, idle_power_w=IDLE_PRIORS[device.device_class] * device.tdp_w)
    if device.idle_power_w > device.tdp_w:
        raise SpecError(f"--set: idle_power_w = {device.idle_power_w:g} W exceeds tdp_w = "
                        f"{device.tdp_w:g} W; set both consistently")
    return device


def _carried_priors(device: DeviceSpec) -> DeviceSpec:
    """``device`` with its NCHW batch-norm priors carried again from its SMs and main-memory
    bandwidth as they now are (``hardware_specs.priors.nchw_batch_norm_prior``): a what-if on
    either moves them as the loader would have."""
    carried = {field: nchw_batch_norm_prior(
                   field, device.architecture.compute_units,
                   device.memory[-1].bandwidth_bytes_per_s, getattr(device, cap))
               for field, cap in NCHW_CAPS.items() if field in device.priors}
    changed = {f: v for f, v in carried.items() if v != getattr(device, f)}
    return dataclasses.replace(device, **changed) if changed else device


def _apply(device: DeviceSpec, path: str, value: Any) -> DeviceSpec:
    head, _, rest = path.partition(".")
    if not rest and head in _FRACTIONS:
        return dataclasses.replace(device, **{head: _fraction(value, path)})
    if not rest and head in _POSITIVE:
        return dataclasses.replace(device, **{head: _positive(value, path)})
    if not rest and head in _TEXT:
        if not str(value).strip():
            raise SpecError(f"--set {path}: must be a non-empty string")
        return dataclasses.replace(device, **{head: str(value).strip()})
    if head == "peak_flops_per_s" and rest:
        return _peak(device, path, rest, value)
    if head == "memory" and rest:
        return _memory(device, path, rest, value)
    if head == "architecture" and rest:
        return _architecture(device, path, rest, value)
    if head == "links" and rest:
        return _link(device, path, rest, value)
    raise SpecError(f"--set {path}: unknown spec path; choose one of {', '.join(_ROOTS)}")


def _peak(device: DeviceSpec, path: str, dtype: str, value: Any) -> DeviceSpec:
    if dtype.lower() not in PEAK_DTYPES:
        raise SpecError(f"--set {path}: unknown dtype {dtype!r}; choose one of "
                        f"{', '.join(PEAK_DTYPES)}")
    peaks = dict(device.peak_flops_per_s)
    peaks[PEAK_DTYPES[dtype.lower()]] = _positive(value, path)
    return dataclasses.replace(device, peak_flops_per_s=peaks)


def _memory(device: DeviceSpec, path: str, rest: str, value: Any) -> DeviceSpec:
    level_name, _, field = rest.rpartition(".")
    names = [level.name for level in device.memory]
    if level_name == "main":
        index = len(device.memory) - 1
    elif level_name in names:
        index = names.index(level_name)
    else:
        raise SpecError(f"--set {path}: {device.name} has no memory level {level_name!r}; "
                        f"choose one of {', '.join(names + ['main'])}")
    if field not in _LEVEL_FIELDS:
        raise SpecError(f"--set {path}: unknown memory field {field!r}; choose one of "
                        f"{', '.join(_LEVEL_FIELDS)}")
    levels = list(device.memory)
    levels[index] = dataclasses.replace(levels[index], **{field: _positive(value, path)})
    return dataclasses.replace(device, memory=tuple(levels))


def _architecture(device: DeviceSpec, path: str, field: str, value: Any) -> DeviceSpec:
    # reference_units is not a knob: it records the spec's own count when compute_units is set
    fields = {f.name: f for f in dataclasses.fields(Architecture) if f.name != "reference_units"}
    if field not in fields:
        raise SpecError(f"--set {path}: unknown architecture field; choose one of "
                        f"{', '.join(fields)}")
    if field == "clock_hz":
        new = _positive(value, path)
    elif field in _ARCH_TUPLES:
        new = _integers(value, path, _ARCH_TUPLES[field])
    elif field == "fp32_batched_tiles":   # "64x128,64x64" or [[64, 128], [64, 64]]
        tiles = value.split(",") if isinstance(value, str) else value
        if not isinstance(tiles, (list, tuple)) or not tiles:
            raise SpecError(f"--set {path}: must be tiles such as 64x128,64x64, not {value!r}")
        new = tuple(_integers(tile, path, 2) for tile in tiles)
    else:
        new = _integer(value, path)
    arch = device.architecture
    if field == "compute_units" and arch.reference_units is None and arch.compute_units:
        # the spec's efficiencies were measured at its own count: keep the reference there
        arch = dataclasses.replace(arch, reference_units=arch.compute_units)
    arch = dataclasses.replace(arch, **{field: new})
    return dataclasses.replace(device, architecture=arch)


def _link(device: DeviceSpec, path: str, rest: str, value: Any) -> DeviceSpec:
    link_name, _, field = rest.rpartition(".")
    names = [link.name for link in device.links]
    if link_name not in names:
        raise SpecError(f"--set {path}: {device.name} has no link {link_name!r}; choose one of "
                        f"{', '.join(names) or '(none: it has no links)'}")
    if field not in _LINK_FIELDS:
        raise SpecError(f"--set {path}: unknown link field {field!r}; choose one of "
                        f"{', '.join(_LINK_FIELDS)}")
    new = _integer(value, path) if _LINK_FIELDS[field] is int else _positive(value, path)
    links = list(device.links)
    index = names.index(link_name)
    links[index] = dataclasses.replace(links[index], **{field: new})
    return dataclasses.replace(device, links=tuple(links))


# ------------------------------------------------------------------------------------ values

def _number(value: Any, path: str) -> float:
    if isinstance(value, bool):
        raise SpecError(f"--set {path}: must be a number, not {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"--set {path}: must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise SpecError(f"--set {path}: must be a finite number, not {value!r}")
    return number


def _positive(value: Any, path: str) -> float:
    number = _number(value, path)
    if not number > 0:
        raise SpecError(f"--set {path}: must be > 0, got {value!r}; give the figure in SI "
                        "units (bytes, bytes/s, FLOP/s, W, s)")
    return number


def _fraction(value: Any, path: str) -> float:
    number = _number(value, path)
    if not is_fraction(number):
        raise SpecError(f"--set {path}: must be in (0, 1], got {value!r}; it is a fraction "
                        "of peak")
    return number


def _integer(value: Any, path: str) -> int:
    number = _positive(value, path)
    if number != int(number):
        raise SpecError(f"--set {path}: must be a whole number, not {value!r}")
    return int(number)


def _integers(value: Any, path: str, length: int) -> tuple[int, ...]:
    items = value.replace("x", ",").split(",") if isinstance(value, str) else value
    try:
        items = list(items)
    except TypeError:
        items = []
    if len(items) != length:
        raise SpecError(f"--set {path}: must be {length} whole numbers such as "
                        f"{','.join(['128'] * length)}, not {value!r}")
    return tuple(_integer(item, path) for item in items)


def apply(hardware, changes: dict[str, object] | None):
    """``hardware`` (a device name, spec file, ``DeviceSpec`` or ``ClusterSpec``) with
    ``changes``: a device is loaded and overridden; a cluster gets its device overridden.
    Unchanged when there are no changes."""
    if not changes:
        return hardware
    from hardware_specs.cluster import ClusterSpec
    from hardware_specs.loader import load_device

    if isinstance(hardware, ClusterSpec):
        return dataclasses.replace(hardware, device=override(hardware.device, changes))
    device = hardware if isinstance(hardware, DeviceSpec) else load_device(hardware)
    return override(device, changes)
