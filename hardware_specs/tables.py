"""Validation of the optional spec tables: ``[architecture]`` and ``[[links]]``.

A mixin of the loader's checker (it uses its ``fail``, ``keys``, ``made``, ``positive`` and
``text``), kept apart so that each module stays small. Schema::

    [architecture]                # every key optional, numbers only
    compute_units = 132           # SMs / CUs / TPU TensorCores / CPU cores / AI-engine tiles
    clock_ghz = 1.98
    matrix_tile = [128, 128, 32]  # GPU threadblock tile m, n, k (wave quantisation)
    systolic_array = [128, 128]   # rows, cols of one matrix unit (TPU MXU)
    matrix_units_per_core = 4
    simd_width_bits = 512
    fma_units_per_core = 2
    dsp_count = 12288             # FPGA DSP slices
    reference_units = 132         # a written what-if's (``hardware_specs.writer``): the
                                  # compute_units its efficiencies were measured with

    [[links]]                     # zero or more
    name = "nvlink4"   kind = "nvlink"   bandwidth_gb_per_s = 450   # per direction, per device
    count = 18                    # optional: physical links making up that bandwidth
    latency_us = 1.0              # optional
"""
from __future__ import annotations

from enum import Enum
from typing import Any

from hardware_specs import units
from hardware_specs.spec import Architecture, Link, LinkKind

_ARCH_INTS = ("compute_units", "matrix_units_per_core", "simd_width_bits",
              "fma_units_per_core", "dsp_count", "tile_fixed_k", "fp32_tile_fixed_k",
              "fp32_tile_load_cost", "fp32_split_k", "reference_units")
_ARCH_TUPLES = {"matrix_tile": 3, "fp32_matrix_tile": 3, "systolic_array": 2}
_ARCH_KEYS = ("compute_units", "clock_ghz", "matrix_tile", "tile_fixed_k", "fp32_matrix_tile",
              "fp32_tile_fixed_k", "fp32_tile_load_cost", "fp32_batched_tiles",
              "fp32_split_k", "systolic_array",
              "matrix_units_per_core", "simd_width_bits", "fma_units_per_core", "dsp_count",
              "reference_units")
_LINK_REQUIRED = ("name", "kind", "bandwidth_gb_per_s")
_LINK_OPTIONAL = ("count", "latency_us")


class OptionalTables:
    """Checks for ``[architecture]`` and ``[[links]]``; mixed into the loader's checker."""

    def choice(self, value: Any, kinds: type[Enum], key: str, what: str) -> Enum:
        """``value`` as a member of the enum ``kinds``, or one line listing the choices."""
        names = [k.value for k in kinds]
        if value not in names:
            raise self.fail(key, f"unknown {what} {value!r}; choose one of {', '.join(names)}")
        return kinds(value)

    def integer(self, value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be a whole number, not {value!r}")
        if value <= 0:
            raise self.fail(key, f"must be > 0, got {value}; give the datasheet figure")
        return value

    def integers(self, value: Any, key: str, length: int) -> tuple[int, ...]:
        if not isinstance(value, list) or len(value) != length:
            raise self.fail(key, f"must be a list of {length} whole numbers, not {value!r}")
        return tuple(self.integer(item, f"{key}[{i}]") for i, item in enumerate(value))

    def architecture(self, table: dict) -> Architecture:
        self.keys(table, "architecture", (), _ARCH_KEYS)
        fields: dict[str, Any] = {}
        for key, value in table.items():
            where = f"architecture.{key}"
            if key in _ARCH_INTS:
                fields[key] = self.integer(value, where)
            elif key in _ARCH_TUPLES:
                fields[key] = self.integers(value, where, _ARCH_TUPLES[key])
            elif key == "fp32_batched_tiles":
                if not isinstance(value, list) or not value:
                    raise self.fail(where, f"must be a list of [rows, columns] tiles such as "
                                           f"[[64, 128], [64, 64]], not {value!r}")
                fields[key] = tuple(self.integers(tile, f"{where}[{i}]", 2)
                                    for i, tile in enumerate(value))
            else:
                fields["clock_hz"] = units.ghz_to_hz(self.positive(value, where, "hz", units.GHZ))
        return self.made(Architecture, "architecture", **fields)

    def links(self, entries: Any) -> tuple[Link, ...]:
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise self.fail("links", "must be [[links]] tables with name, kind and "
                                     "bandwidth_gb_per_s")
        return tuple(self.link(entry, i) for i, entry in enumerate(entries))

    def link(self, entry: dict, index: int) -> Link:
        where = f"links[{index}]"
        self.keys(entry, where, _LINK_REQUIRED, _LINK_OPTIONAL)
        kind = self.choice(entry["kind"], LinkKind, f"{where}.kind", "link kind")
        bandwidth = self.positive(entry["bandwidth_gb_per_s"], f"{where}.bandwidth_gb_per_s",
                                  "bytes_per_s", units.GB_PER_S)
        latency = entry.get("latency_us")
        return self.made(
            Link, where, name=self.text(entry["name"], f"{where}.name"), kind=kind,
            bandwidth_bytes_per_s=units.gb_per_s_to_bytes_per_s(bandwidth),
            count=self.integer(entry.get("count", 1), f"{where}.count"),
            latency_s=None if latency is None else
            units.us_to_s(self.positive(latency, f"{where}.latency_us", "s", units.US)))
