"""Load a device spec TOML file into a validated ``DeviceSpec`` (SI units inside).

A device is named by its catalogue name (the stem of ``hardware_specs/devices/*.toml``), an alias
(``ALIASES``) or a path to a ``.toml`` file. Every mistake in a file raises one ``SpecError`` whose
one-line message names the file, the key and the fix (STYLE.md rule 3).

Schema (datasheet units, the unit in the key name; ``hardware_specs.units`` converts to SI)::

    name = "a100-sxm4-80gb"       vendor = "NVIDIA"       class = "gpu"     source = "..."
    [compute]
    peak_tflops = { fp32 = 19.5, tf32 = 156, bf16 = 312 }   # dense matrix peak per dtype
    vector_tflops = 19.5          # fp32 peak of the non-matrix units
    op_overhead_us = 3.3          # fixed cost per op (launch / dispatch)
    matmul_efficiency = 0.9       # optional, in (0, 1], default 1.0
    fp8_matmul_efficiency = 0.7   # optional: fp8 GEMMs', default: matmul_efficiency
    fp32_matmul_efficiency = 0.9  # optional: fp32 GEMMs' (CUDA cores), default: matmul_efficiency
    matmul_sustained = 0.9        # optional: sustained over burst GEMM rate, default: none
    fp8_matmul_sustained = 0.85   # optional: fp8 GEMMs' ratio, default: matmul_sustained
    conv_efficiency = 0.7         # optional, in (0, 1], default: matmul_efficiency
    fp32_conv_efficiency = 1.0    # optional: fp32 convolutions', default: conv_efficiency
    attention_efficiency = 0.65   # optional (fused attention), in (0, 1], default: as conv
    vector_efficiency = 0.5       # optional, in (0, 1], default 1.0
    optimizer_overhead_us = 16    # optional: eager optimizer cost per parameter tensor
    step_overhead_us = 50         # optional: framework cost per training step
    memory_efficiency = 0.88      # optional, in (0, 1], default 1.0
    matmul_memory_efficiency = 0.44   # optional: a memory-bound matmul's, default: memory's
    norm_memory_efficiency = 0.7  # optional: norms' and softmax's, default: memory's
    norm_memory_efficiency_compiled = 0.6  # optional: generated ones' (compiled fusion),
    #                               default: norm_memory_efficiency
    batch_norm_memory_efficiency = 0.79  # optional: NHWC batch norms' forward (channels_last),
    batch_norm_backward_memory_efficiency = 0.53  # and backward; default: a GPU's class prior
    #                               (GPU_PRIORS), other classes as the other norms
    batch_norm_nchw_memory_efficiency = 0.41   # optional: NCHW batch norms' forward (no
    batch_norm_nchw_backward_memory_efficiency = 0.46  # channels_last) and backward; default:
    #                               a GPU's class prior carried per SM (priors.
    #                               nchw_batch_norm_prior), other classes as the NHWC ones'
    conv_half_dim = 100           # optional (CPU, calibrated): 2-D convolutions' size at half
                                  # their plateau rate (simulator.cost.efficiency.cpu_gemm)
    [[memory]]                    # innermost first, main memory last
    name = "hbm2e"   capacity_gb = 80   bandwidth_gb_per_s = 2039    # or capacity_mib, ...
    private = true                # optional, a cache: each core has its own (capacity: the sum
                                  # over the cores; MemoryLevel.private, host.on_cores)
    [streaming_memory]            # optional: off-chip memory reached only by explicit copies
    name = "ddr4"    capacity_gb = 64   bandwidth_gb_per_s = 16   # (Graphcore; see streamed.py)
    [power]
    idle_w = 50      tdp_w = 400  # idle_w: measured draw; left out, the class prior (IDLE_PRIORS)
    prior = ["tdp_w"]             # optional: the figures given here that are priors, not
                                  # published for this device (the comments say from what)
    pj_per_flop = 0.5             # optional, only with a cited source
    pj_per_byte = 7               # optional: main-memory access energy, cited
    [price]                       # optional table, cited: public on-demand price per
    usd_per_hour = 1.5            # device-hour (provider, region, date), and what buying
    purchase_usd = 15000          # one costs (for own_cost_usd); at least one of them
    purchase_is_system = true     # optional: purchase_usd buys a whole computer (Mac Studio)
    node_parts_usd = 651.5        # optional, with purchase_usd: the node's parts a device
                                  # still needs (Bow: a host server's share), in place of a
                                  # GPU server's (own_cost_usd)
    no_usd_per_hour = { offered = false, searched = 2026-12-04 }   # instead of a figure: no
    no_purchase_usd = { offered = true, searched = 2026-12-04 }    # one rents (sells) it, or
                                  # it is offered but no citable dated price was found, as
                                  # searched that day (the comments say where; not after
                                  # today); a figure and its record together are an error
    [architecture] / [[links]]    # optional tables, see ``hardware_specs.tables``
    [functions]                   # optional, written by ``hwsim calibrate``: per ``Op.fn``
    gelu = { efficiency = 0.02, overhead_us = 4 }   # efficiency replaces the kind's
    conv2d = { overhead_us = 45 }                    # fixed cost per call, replaces op's

Every number must be finite and within the physical bounds of ``hardware_specs.spec.LIMITS``
(checked in SI, after conversion): peaks 1 FLOP/s to 1e19 FLOP/s (1e7 TFLOP/s); a memory level's
capacity up to 1e15 bytes; bandwidths 1 byte/s to 1e17 bytes/s (1e8 GB/s); power up to
100 kW; fixed costs (overheads, latencies) up to 1 s; energies up to 1e6 pJ; prices up to
1e6 USD/h; whole numbers (cores, link counts) up to 1e7; a spec file at most 1 MiB.

``cpu-host`` is not a file: it is built at load time from the machine hwsim runs on
(``hardware_specs.host``).
"""
from __future__ import annotations

import datetime
import math
import re
import tomllib
from importlib import resources
from typing import Any

from hardware_specs import host, units
from hardware_specs.spec import (  # EFFICIENCIES: re-exported for callers of the loader
    EFFICIENCIES,
    HALF_DIM_MAX,
    LIMITS,
    POWER_FIGURES,
    DeviceClass,
    DeviceSpec,
    MemoryLevel,
    Unpriced,
)
from hardware_specs.priors import (  # noqa: F401  (re-exported: callers import them here)
    CLASS_PRIORS, CROSS_CLASS_PRIORS, GPU_PRIORS, MATMUL_PRIORS, MEASURED_CLASSES,
    STREAM_PRIORS, VECTOR_PRIORS, class_priors)
from hardware_specs.tables import OptionalTables
from simulator.errors import (
    SpecError,
    canonical,
    did_you_mean,
    is_fraction,
    is_real,
    read_input,
    shown,
)
from simulator.graph.op import DType

#: Short names users type -> catalogue names.
ALIASES: dict[str, str] = {
    "a100": "a100-sxm4-80gb",
    "a100-80gb": "a100-sxm4-80gb",
    "xeon": "xeon-8380",
    "icelake": "xeon-8380",
    "h100": "h100-sxm5-80gb",
    "h200": "h200-sxm",
    "v100": "v100-sxm2-32gb",
    "mi300": "mi300x",
    "4090": "rtx-4090",
    "a100-40gb": "a100-sxm4-40gb",
    "sapphire-rapids": "xeon-8480",
    "genoa": "epyc-9654",
    "h800": "h800-sxm",
    "5090": "rtx-5090",
    "trn2": "trainium2",
    "trillium": "tpu-v6e",
    "v6e": "tpu-v6e",
    "gaudi-3": "gaudi3",
    "mi250x-gcd": "mi250x-die",
    "p100": "p100-pcie-16gb",
    "v100-pcie": "v100-pcie-32gb",
    "3090": "rtx-3090",
    "a6000": "rtx-a6000",
    "6000-ada": "rtx-6000-ada",
    "rtx-8000": "quadro-rtx-8000",
}

#: dtype names allowed in ``peak_tflops`` (formats a matrix unit computes in).
PEAK_DTYPES: dict[str, DType] = {d.name.lower(): d for d in
                                 (DType.FP32, DType.TF32, DType.FP16, DType.BF16,
                                  DType.FP8, DType.INT8)}

_TOP_REQUIRED = ("name", "vendor", "class", "source", "compute", "memory", "power")
_TOP_OPTIONAL = ("price", "architecture", "links", "functions", "streaming_memory")
_FUNCTION_KEYS = ("efficiency", "overhead_us")
_COMPUTE_REQUIRED = ("peak_tflops", "vector_tflops", "op_overhead_us")
_COMPUTE_OPTIONAL = EFFICIENCIES
#: Optional ``[compute]`` sizes, each a number > 0 (``DeviceSpec.conv_half_dim``).
_COMPUTE_SIZES = ("conv_half_dim",)
_COMPUTE_TIMES = {"optimizer_overhead_us": "optimizer_overhead_s",  # optional, microseconds
                  "step_overhead_us": "step_overhead_s", "host_overhead_us": "host_overhead_s"}
_MEMORY_REQUIRED = ("name", "bandwidth_gb_per_s")
_POWER_REQUIRED = ("tdp_w",)
_POWER_OPTIONAL = ("idle_w", "pj_per_flop", "pj_per_byte", "prior")
#: Idle power over TDP where a spec has no measured idle_w (the device is flagged
#: ``DeviceSpec.idle_prior``): the median over the GPUs whose idle draw is measured (nvidia-smi
#: or amd-smi readings cited in their files): A100-SXM4-40GB 50/400 = 0.125, H100 SXM5 79/700
#: = 0.113, B200 137/1000 = 0.137, MI355X 238/1400 = 0.170; median 0.131
#: (``tests/test_power.py`` recomputes it). CPUs: the Xeon 8380's measured 27 of 270 W. TPUs:
#: Google's measured minimum over maximum power of TPU v3 (123/262 = 0.469) and v4 (90/192 =
#: 0.469), the Cloud TPU docs' figures the tpu-v3/v4 specs cite; 0.47. Accelerators (Trainium,
#: Gaudi), with no measured member: the median over those six measured GPUs and TPUs (0.154),
#: as MATMUL_PRIORS does for classes without one; 0.15. FPGAs (none measured) must give idle_w.
IDLE_PRIORS = {DeviceClass.GPU: 0.13, DeviceClass.CPU: 0.10, DeviceClass.TPU: 0.47,
               DeviceClass.ACCELERATOR: 0.15}
_PRICE_OPTIONAL = ("usd_per_hour", "purchase_usd", "purchase_is_system", "node_parts_usd",
                   "no_usd_per_hour", "no_purchase_usd")   # a price or its record at least
#: What a catalogue name may be (a file stem of ``devices/``).
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


# ---------------------------------------------------------------------------------------- public

def list_devices() -> list[str]:
    """Catalogue names, sorted: the stems of the shipped ``devices/*.toml`` files and cpu-host."""
    return sorted([entry.name[:-len(".toml")] for entry in _catalogue().iterdir()
                   if entry.name.endswith(".toml")] + [host.HOST_NAME])


def load_device(name_or_path: str) -> DeviceSpec:
    """A catalogue name, an alias or a path to a spec ``.toml`` file -> a validated DeviceSpec."""
    if not isinstance(name_or_path, str):
        raise SpecError(f"device = {shown(name_or_path)} must be a catalogue name, a spec "
                        ".toml file or a DeviceSpec")
    if _looks_like_path(name_or_path):
        data = read_input(name_or_path, "device spec", SpecError, hint=": give an existing "
                          ".toml file or a catalogue name (see 'hwsim devices')")
        return parse_device(data, shown(name_or_path, 200)[1:-1])
    name = _catalogue_name(name_or_path)
    if name == host.HOST_NAME:
        return host.host_device()
    resource = _catalogue() / f"{name}.toml"
    if not _NAME.fullmatch(name) or not resource.is_file():
        raise SpecError(f"unknown device {shown(name_or_path)}"
                        f"{_suggest(name_or_path)}: choose one of "
                        f"{', '.join(list_devices())} (see 'hwsim devices') "
                        f"or give a spec .toml file")
    return parse_device(resource.read_bytes(), f"hardware_specs/devices/{name}.toml")


def _suggest(text: str) -> str:
    """`` (did you mean ...?)`` for an unknown device name, or ``""``."""
    return did_you_mean(text, [*list_devices(), *ALIASES])


def _catalogue_name(text: str) -> str:
    """The catalogue name ``text`` gives: as written, an alias (``ALIASES``) or loosely spelled
    (``RTX4090``, ``h200_sxm``: ``simulator.errors.canonical``); else ``text`` in lower case."""
    name = text.strip().lower()
    name = ALIASES.get(name, name)
    if name in list_devices():
        return name
    name = {canonical(n): n for n in [*list_devices(), *ALIASES]}.get(canonical(name), name)
    return ALIASES.get(name, name)


def parse_device(data: bytes, path: str) -> DeviceSpec:
    """TOML bytes of one device file -> DeviceSpec; ``path`` only names the file in errors."""
    return _Checker(path).device(read_toml(data, path))


def read_toml(data: bytes, path: str) -> dict:
    """TOML bytes of a spec file -> dict, or a one-line SpecError naming ``path``."""
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        message = " ".join(str(error).split())
        raise SpecError(f"{path}: not valid TOML ({message}); fix the syntax") from None
    except RecursionError:
        raise SpecError(f"{path}: not valid TOML (arrays or tables nested too deeply)") from None


# --------------------------------------------------------------------------------------- private

def _catalogue():
    return resources.files("hardware_specs").joinpath("devices")


def _looks_like_path(text: str) -> bool:
    return text.endswith(".toml") or "/" in text or "\\" in text


class _Checker(OptionalTables):
    """Validates one parsed document; every method raises SpecError naming ``self.path``."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, key: str, problem: str) -> SpecError:
        return SpecError(f"{self.path}: {key}: {problem}")

    def made(self, cls, where: str, **fields):
        """``cls(**fields)``, its check's SpecError (a figure out of ``spec.LIMITS``) naming
        the file and ``where``."""
        try:
            return cls(**fields)
        except SpecError as error:
            raise self.fail(where, str(error)) from None

    # -- structure -------------------------------------------------------------------------
    def keys(self, table: dict, where: str, required: tuple, optional: tuple = ()) -> None:
        prefix = f"{where}." if where else ""
        for key in table:
            if key not in required and key not in optional:
                allowed = ", ".join(required + optional)
                raise self.fail(f"{prefix}{key}", f"unknown key; allowed here: {allowed}")
        for key in required:
            if key not in table:
                raise self.fail(f"{prefix}{key}", "missing required key; add it")

    def table(self, doc: dict, key: str) -> dict:
        value = doc[key]
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table [{key}], not {type(value).__name__}")
        return value

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "must be a non-empty string")
        return value

    def positive(self, value: Any, key: str, limit: str | None = None,
                 factor: float = 1.0) -> float:
        """A finite number > 0; with ``limit`` (a kind of ``spec.LIMITS``), ``value`` x
        ``factor`` (its SI figure) within that kind's physical bounds."""
        if not is_real(value):
            raise self.fail(key, f"must be a number, not {shown(value)}")
        if not math.isfinite(value):
            raise self.fail(key, f"must be a finite number, not {value}")
        if not value > 0:
            raise self.fail(key, f"must be > 0, got {value}; give the datasheet figure")
        if limit is not None:
            low, high, unit = LIMITS[limit]
            if not low <= value * factor <= high:
                raise self.fail(key, f"{value:g} is outside [{low / factor:g}, "
                                     f"{high / factor:g}] ({low:g} to {high:g} {unit}); give "
                                     "the datasheet figure in the key's unit")
        return float(value)

    def fraction(self, value: Any, key: str) -> float:
        if not is_real(value):
            raise self.fail(key, f"must be a number, not {shown(value)}")
        if not is_fraction(value):
            raise self.fail(key, f"must be in (0, 1], got {value}; it is a fraction of peak")
        return float(value)

    # -- sections --------------------------------------------------------------------------
    def device(self, doc: dict) -> DeviceSpec:
        self.keys(doc, "", _TOP_REQUIRED, _TOP_OPTIONAL)
        compute = self.compute(self.table(doc, "compute"))
        power = self.power(self.table(doc, "power"))
        price, purchase, system, unpriced = (self.price(self.table(doc, "price"))
                                             if "price" in doc else (None, None, False, {}))
        optional = {"architecture": self.architecture(self.table(doc, "architecture"))
                    } if "architecture" in doc else {}
        if "links" in doc:
            optional["links"] = self.links(doc["links"])
        if "functions" in doc:
            optional.update(self.functions(self.table(doc, "functions")))
        if "streaming_memory" in doc:
            optional["streaming_memory"] = self.memory_level(
                self.table(doc, "streaming_memory"), 0, "streaming_memory")
        device_class = self.choice(doc["class"], DeviceClass, "class", "device class")
        memory = self.memory(doc["memory"])
        arch = optional.get("architecture")
        priors = class_priors(device_class, compute,   # never the datasheet peak
                              arch.compute_units if arch is not None else None,
                              memory[-1].bandwidth_bytes_per_s)
        compute.update(priors, priors=tuple(priors))
        idle_prior = power[0] is None
        if idle_prior:
            if device_class not in IDLE_PRIORS:
                raise self.fail("power.idle_w", f"required for a {device_class.value} (no class "
                                "prior): give the measured idle draw in watts")
            power = (IDLE_PRIORS[device_class] * power[1], *power[1:])
            if "idle_w" in power[4]:
                raise self.fail("power.prior", "names idle_w, which the table does not give (a "
                                "left-out idle_w is the class prior, flagged without it): list "
                                "only figures given here")
        power_priors = (*(("idle_w",) if idle_prior else ()), *power[4])
        return self.made(
            DeviceSpec, "device", idle_prior=idle_prior, power_priors=power_priors,
            name=self.text(doc["name"], "name"),
            vendor=self.text(doc["vendor"], "vendor"),
            device_class=device_class,
            memory=memory,
            idle_power_w=power[0], tdp_w=power[1], price_per_hour_usd=price,
            purchase_usd=purchase, purchase_is_system=system, **unpriced,
            energy_per_flop_j=power[2], energy_per_byte_j=power[3],
            source=self.text(doc["source"], "source"), path=self.path, **compute, **optional)

    def compute(self, table: dict) -> dict:
        self.keys(table, "compute", _COMPUTE_REQUIRED,
                  _COMPUTE_OPTIONAL + tuple(_COMPUTE_TIMES) + _COMPUTE_SIZES)
        result = {
            "peak_flops_per_s": self.peaks(table["peak_tflops"]),
            "vector_flops_per_s": units.tflops_to_flops_per_s(
                self.positive(table["vector_tflops"], "compute.vector_tflops",
                              "flops_per_s", units.TFLOPS)),
            "op_overhead_s": units.us_to_s(
                self.positive(table["op_overhead_us"], "compute.op_overhead_us", "s", units.US)),
        }
        for key in _COMPUTE_OPTIONAL:
            if key in table:
                result[key] = self.fraction(table[key], f"compute.{key}")
        for key, field in _COMPUTE_TIMES.items():
            if key in table:
                result[field] = units.us_to_s(self.positive(table[key], f"compute.{key}", "s",
                                                             units.US))
        for key in _COMPUTE_SIZES:
            if key in table:
                result[key] = self.positive(table[key], f"compute.{key}")
                if result[key] > HALF_DIM_MAX:
                    raise self.fail(f"compute.{key}", f"{result[key]:g} is over {HALF_DIM_MAX:g};"
                                    " give the size (elements) at half the plateau rate")
        return result

    def functions(self, table: dict) -> dict:
        """``[functions]``: per-function efficiency and overhead from a calibration."""
        efficiency, overhead = {}, {}
        for fn, entry in table.items():
            where = f"functions.{fn}"
            if not isinstance(entry, dict) or not entry:
                raise self.fail(where, "must be a table such as { efficiency = 0.05, "
                                       "overhead_us = 4 }")
            self.keys(entry, where, (), _FUNCTION_KEYS)
            if "efficiency" in entry:
                efficiency[fn] = self.fraction(entry["efficiency"], f"{where}.efficiency")
            if "overhead_us" in entry:
                value = entry["overhead_us"]
                if not is_real(value) or value < 0:
                    raise self.fail(f"{where}.overhead_us", f"must be a number >= 0, not "
                                                            f"{value!r}")
                overhead[fn] = units.us_to_s(float(value))
        return {"function_efficiency": efficiency, "function_overhead_s": overhead}

    def peaks(self, table: Any) -> dict[DType, float]:
        key = "compute.peak_tflops"
        if not isinstance(table, dict) or not table:
            raise self.fail(key, "must be a non-empty table such as { fp32 = 19.5, bf16 = 312 }")
        peaks = {}
        for name, value in table.items():
            if name not in PEAK_DTYPES:
                raise self.fail(f"{key}.{name}", f"unknown dtype; choose from "
                                                 f"{', '.join(PEAK_DTYPES)}")
            tflops = self.positive(value, f"{key}.{name}", "flops_per_s", units.TFLOPS)
            peaks[PEAK_DTYPES[name]] = units.tflops_to_flops_per_s(tflops)
        return peaks

    def memory(self, levels: Any) -> tuple[MemoryLevel, ...]:
        if not isinstance(levels, list) or not levels:
            raise self.fail("memory", "must be one or more [[memory]] tables, "
                                      "innermost first, main memory last")
        return tuple(self.memory_level(level, i) for i, level in enumerate(levels))

    def memory_level(self, level: Any, index: int, where: str | None = None) -> MemoryLevel:
        where = where or f"memory[{index}]"
        if not isinstance(level, dict):
            raise self.fail(where, "must be a [[memory]] table")
        capacity_keys = [k for k in level if k in units.CAPACITY_KEYS]
        self.keys(level, where, _MEMORY_REQUIRED, tuple(units.CAPACITY_KEYS) + ("private",))
        if len(capacity_keys) != 1:
            raise self.fail(f"{where}.capacity_gb", "give exactly one capacity key "
                            f"({', '.join(units.CAPACITY_KEYS)})")
        capacity_key = capacity_keys[0]
        capacity = self.positive(level[capacity_key], f"{where}.{capacity_key}", "capacity_bytes",
                                 units.CAPACITY_KEYS[capacity_key])
        bandwidth = self.positive(level["bandwidth_gb_per_s"], f"{where}.bandwidth_gb_per_s",
                                  "bytes_per_s", units.GB_PER_S)
        private = level.get("private", False)
        if not isinstance(private, bool):
            raise self.fail(f"{where}.private", f"must be true or false, got {shown(private)}")
        return self.made(MemoryLevel, where, name=self.text(level["name"], f"{where}.name"),
                         capacity_bytes=units.capacity_to_bytes(capacity_key, capacity),
                         bandwidth_bytes_per_s=units.gb_per_s_to_bytes_per_s(bandwidth),
                         private=private)

    def power(self, table: dict) -> tuple[float | None, float, float | None, float | None,
                                          tuple[str, ...]]:
        """(idle W or None where not given, TDP W, J/FLOP, J/byte, the figures that are
        priors)."""
        self.keys(table, "power", _POWER_REQUIRED, _POWER_OPTIONAL)
        idle_w = self.positive(table["idle_w"], "power.idle_w", "w") if "idle_w" in table \
            else None
        tdp_w = self.positive(table["tdp_w"], "power.tdp_w", "w")
        if idle_w is not None and idle_w > tdp_w:
            raise self.fail("power.idle_w", f"idle power {idle_w:g} W exceeds tdp_w "
                                            f"{tdp_w:g} W; check both figures")
        energy = [units.pj_to_j(self.positive(table[key], f"power.{key}", "j", units.PJ))
                  if key in table else None for key in ("pj_per_flop", "pj_per_byte")]
        return idle_w, tdp_w, energy[0], energy[1], self.power_priors(table)

    def power_priors(self, table: dict) -> tuple[str, ...]:
        """``[power] prior``: a list naming figures given in the table (idle_w, tdp_w) that
        are priors, not published for this device."""
        names = table.get("prior", [])
        fix = 'list the figures given here that are priors, e.g. prior = ["idle_w", "tdp_w"]'
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise self.fail("power.prior", f"must be a list of names, not {shown(names)}; {fix}")
        for name in names:
            if name not in POWER_FIGURES:
                raise self.fail("power.prior", f"unknown figure {shown(name)}; {fix}")
        if len(set(names)) != len(names):
            raise self.fail("power.prior", f"names a figure twice ({names}); {fix}")
        return tuple(names)

    def price(self, table: dict) -> tuple[float | None, float | None, bool, dict]:
        """(on-demand USD per device-hour, purchase USD per device, whether that purchase
        is a whole computer, the ``Unpriced`` records of the prices not given and
        ``node_parts_usd`` where given, by their ``DeviceSpec`` field), the prices either None."""
        self.keys(table, "price", (), _PRICE_OPTIONAL)
        if not set(table) - {"purchase_is_system", "node_parts_usd"}:
            raise self.fail("price", "empty table: give usd_per_hour, purchase_usd or both "
                            "(or no_usd_per_hour / no_purchase_usd records)")
        unpriced = {}
        for key, figure, field_name in (("no_usd_per_hour", "usd_per_hour", "rent_unpriced"),
                                        ("no_purchase_usd", "purchase_usd",
                                         "purchase_unpriced")):
            if key not in table:
                continue
            if figure in table:
                raise self.fail(f"price.{key}", f"given with {figure}: a cited price needs no "
                                f"record of its absence; drop one of them")
            unpriced[field_name] = self.unpriced(table[key], f"price.{key}")
        system = table.get("purchase_is_system", False)
        if not isinstance(system, bool):
            raise self.fail("price.purchase_is_system",
                            f"must be true or false, got {shown(system)}")
        if system and "purchase_usd" not in table:
            raise self.fail("price.purchase_is_system", "needs purchase_usd (the system's "
                            "price): give it or drop purchase_is_system")
        if "node_parts_usd" in table:
            if "purchase_usd" not in table or system:
                raise self.fail("price.node_parts_usd", "needs purchase_usd of a device that is "
                                "not a whole system: give purchase_usd, or drop node_parts_usd "
                                "(or purchase_is_system)")
            unpriced["node_parts_usd"] = self.positive(table["node_parts_usd"],
                                                       "price.node_parts_usd", "usd")
        hourly, bought = (self.positive(table[key], f"price.{key}", kind) if key in table
                          else None for key, kind in (("usd_per_hour", "usd_per_hour"),
                                                      ("purchase_usd", "usd")))
        return hourly, bought, system, unpriced

    def unpriced(self, value: Any, key: str) -> Unpriced:
        """``{ offered = false, searched = 2026-12-04 }`` as an ``Unpriced`` record."""
        fix = "write { offered = false, searched = YYYY-MM-DD } (true: offered, none cited)"
        if not isinstance(value, dict):
            raise self.fail(key, f"must be an inline table, not {shown(value)}; {fix}")
        self.keys(value, key, ("offered", "searched"), ())
        offered, searched = value["offered"], value["searched"]
        if not isinstance(offered, bool):
            raise self.fail(f"{key}.offered", f"must be true or false, got {shown(offered)}")
        if not isinstance(searched, datetime.date) or isinstance(searched, datetime.datetime):
            raise self.fail(f"{key}.searched", f"must be a TOML date (YYYY-MM-DD, unquoted), "
                            f"got {shown(searched)}")
        today = datetime.date.today()      # this machine's local date
        if searched > today:
            raise self.fail(f"{key}.searched", f"{searched.isoformat()} is after today "
                            f"({today.isoformat()}); give the date the search was made")
        return Unpriced(offered=offered, searched=searched.isoformat())
