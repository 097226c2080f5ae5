"""``cpu-host``: a DeviceSpec of the machine hwsim runs on, built when it is loaded.

Read from the OS (each with a fallback, so that it never fails on a machine without the file):

- cores: physical cores, unique (physical id, core id) pairs in /proc/cpuinfo; else os.cpu_count.
- SIMD width: /proc/cpuinfo flags: avx512f -> 512, avx2 -> 256, else 128 (SSE; aarch64 NEON).
- clock: /sys/devices/system/cpu/cpu0/cpufreq/base_frequency (the base clock, as the
  xeon-8380 file uses), else cpuinfo_max_freq, else "cpu MHz" in /proc/cpuinfo, else 2.0 GHz.
  A VM reports no turbo clock: the development Xeon's 2.6 GHz gives one core 166 GFLOP/s,
  and its fp32 GEMMs ran at up to 197 (P1, 2026-12-04). ``hwsim calibrate`` therefore
  raises the clock, and every peak with it (``at_clock``), to the one its fastest fp32
  matmul shows (``simulator.calibrate.fit.sustained_clock_hz``), never lowers it.
- caches: /sys/devices/system/cpu/cpu0/cache/index*/ (level, type, size, shared_cpu_list).
- memory capacity: MemTotal in /proc/meminfo, else sysconf(SC_PHYS_PAGES x SC_PAGE_SIZE).

Derived: fp32 peak = cores x clock x (simd_bits / 32) lanes x 2 (FMA) x FMA_UNITS. FMA_UNITS = 2
is an assumption: two FMA pipes per core is what AVX2/AVX-512 server cores since Haswell /
Skylake-SP / Zen have (Intel 64 and IA-32 Optimization Reference Manual; the xeon-8380 file uses
the same 2); a part with one FMA pipe is over-estimated 2x. bf16 peak: AMX tiles (flag amx_bf16)
do 1024 bf16 FLOP/cycle/core (Intel: "4th Gen Xeon ... 2048 INT8 or 1024 BF16 operations per
cycle" per core, AMX overview); avx512_bf16 (VDPBF16PS, two bf16 products per fp32 lane) doubles
the fp32 rate; else bf16 runs at the fp32 rate (no entry, DeviceSpec.peak_for falls back).

Bandwidth cannot be read from the OS, so it is measured: numpy copies split over one thread per
core (numpy releases the GIL while copying), best of a few, counted as STREAM "Copy" counts it
(2 bytes moved per byte copied; McCalpin, STREAM benchmark). Main memory uses a 256 MiB copy;
each cache level of at least 1 MiB in all uses a copy of half its capacity (L1 is too small to
time a numpy copy meaningfully: call overhead would dominate, so it is left out). These are
achieved figures, not datasheet peaks, so memory_efficiency stays 1.0. A measured level that is
not faster than the level outside it is dropped (the copy did not stay in that cache).

Power cannot be read portably either: scaled per core from the xeon-8380 file's cited figures
(270 W TDP, 27 W idle for 40 cores: 6.75 W and 0.675 W per core). Conservative; give your own
spec file for a real budget. Op overhead: 3.3 us, as the xeon-8380 file (PyTorch
operator_benchmark CPU dispatch, pytorch/pytorch PR #32194).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hardware_specs.priors import class_priors
from hardware_specs.spec import (
    Architecture,
    DeviceClass,
    DeviceSpec,
    MemoryLevel,
    Unpriced,
)
from simulator.graph.op import DType

HOST_NAME = "cpu-host"
FMA_UNITS = 2                       # assumed FMA pipes per core, see the module docstring
AMX_BF16_FLOP_PER_CYCLE = 1024      # per core, Intel AMX overview
FALLBACK_CLOCK_HZ = 2.0e9           # when the OS reports no clock at all
WATTS_PER_CORE = 270 / 40           # xeon-8380: ARK TDP 270 W, 40 cores
IDLE_WATTS_PER_CORE = 27 / 40       # xeon-8380: AnandTech 16594 idle ~27 W per socket
OP_OVERHEAD_S = 3.3e-6              # xeon-8380 file, PyTorch operator_benchmark (PR #32194)
MAIN_MEMORY_COPY_BYTES = 256 * 2**20
_CPU = Path("/sys/devices/system/cpu/cpu0")


@functools.lru_cache(maxsize=1)
def host_device() -> DeviceSpec:
    """The machine hwsim runs on, as a DeviceSpec (measured once per process)."""
    info = _cpuinfo()
    cores, flags = _physical_cores(info), _flags(info)
    clock_hz, simd_bits = _clock_hz(info), _simd_bits(flags)
    fp32 = cores * clock_hz * (simd_bits / 32) * 2 * FMA_UNITS
    peaks = {DType.FP32: fp32}
    if "amx_bf16" in flags:
        peaks[DType.BF16] = cores * clock_hz * AMX_BF16_FLOP_PER_CYCLE
    elif "avx512_bf16" in flags:
        peaks[DType.BF16] = 2 * fp32
    model = cpu_model(info)
    # its GEMMs and vector units at the class priors until ``hwsim calibrate`` fits them (no
    # catalogue CPU is measured: the cross-class medians); its bandwidth is measured here
    priors = class_priors(DeviceClass.CPU, given={"memory_efficiency"})
    return DeviceSpec(**priors, priors=tuple(priors),
        name=HOST_NAME, vendor=(info[0].get("vendor_id", "unknown") if info else "unknown"),
        device_class=DeviceClass.CPU, peak_flops_per_s=peaks, vector_flops_per_s=fp32,
        memory=_memory_levels(cores), op_overhead_s=OP_OVERHEAD_S,
        idle_power_w=cores * IDLE_WATTS_PER_CORE, tdp_w=cores * WATTS_PER_CORE,
        power_priors=("idle_w", "tdp_w"),    # the xeon-8380's figures per core, a prior
        # not a product: no price to rent or buy this machine ('n/a (this machine)')
        rent_unpriced=Unpriced(offered=False, searched=None),
        purchase_unpriced=Unpriced(offered=False, searched=None),
        source=f"built at load time from /proc/cpuinfo, sysfs and /proc/meminfo on '{model}'; "
               f"bandwidths measured with numpy copies (see hardware_specs/host.py)",
        path="<cpu-host>",
        architecture=Architecture(compute_units=cores, clock_hz=clock_hz,
                                  simd_width_bits=simd_bits, fma_units_per_core=FMA_UNITS))


def cpu_model(info: list[dict[str, str]] | None = None) -> str:
    """The CPU's model name (/proc/cpuinfo), else what ``platform`` knows."""
    info = _cpuinfo() if info is None else info
    return (info[0].get("model name") if info else None) or platform.processor() \
        or platform.machine()


def on_cores(spec: DeviceSpec, cores: int) -> DeviceSpec:
    """``spec`` (a CPU) used by ``cores`` of its cores, as a framework limited to that many
    threads uses it: compute peaks and power scale with the cores, and so does the capacity
    of a cache each core has its own of (``MemoryLevel.private``: one thread has one core's
    L2, 2 MiB of the development Xeon VM's 2 x 2 MiB, sysfs ``shared_cpu_list`` "0"; a
    one-thread copy there ran at 88.6 GB/s over 512 KiB and 28.8 GB/s over 2 MiB,
    2026-12-05); bandwidths are kept (a copy on fewer threads is not measured again)."""
    total = spec.architecture.compute_units or cores
    if cores >= total:
        return spec
    share = cores / total
    memory = tuple(dataclasses.replace(level, capacity_bytes=level.capacity_bytes * share)
                   if level.private else level for level in spec.memory)
    return dataclasses.replace(
        spec, peak_flops_per_s={d: v * share for d, v in spec.peak_flops_per_s.items()},
        vector_flops_per_s=spec.vector_flops_per_s * share,
        idle_power_w=spec.idle_power_w * share, tdp_w=spec.tdp_w * share, memory=memory,
        architecture=dataclasses.replace(spec.architecture, compute_units=cores))


def at_clock(spec: DeviceSpec, clock_hz: float) -> DeviceSpec:
    """``spec`` (a CPU with a clock) run at ``clock_hz``: every peak, matrix and vector, is
    cores x FLOP per cycle x clock, so each scales by clock_hz / its clock; nothing else moves
    (bandwidths are measured, power is a per-core prior). ``hwsim calibrate`` uses it with the
    clock a CPU held under load (``simulator.calibrate.fit.sustained_clock_hz``)."""
    old = spec.architecture.clock_hz
    if not old or clock_hz <= 0:
        raise ValueError(f"clock {clock_hz} Hz for {spec.name} (its clock: {old})")
    ratio = clock_hz / old
    return dataclasses.replace(
        spec, peak_flops_per_s={d: v * ratio for d, v in spec.peak_flops_per_s.items()},
        vector_flops_per_s=spec.vector_flops_per_s * ratio,
        architecture=dataclasses.replace(spec.architecture, clock_hz=clock_hz))


# ------------------------------------------------------------------------------ reading the OS

def _read(path: Path | str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _cpuinfo() -> list[dict[str, str]]:
    """/proc/cpuinfo as one dict per logical CPU; [] where there is none (macOS, Windows)."""
    text = _read("/proc/cpuinfo") or ""
    blocks = []
    for block in text.strip().split("\n\n"):
        entry = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            entry[key.strip()] = value.strip()
        if entry:
            blocks.append(entry)
    return blocks


def _physical_cores(info: list[dict[str, str]]) -> int:
    pairs = {(b.get("physical id"), b.get("core id")) for b in info if "core id" in b}
    return len(pairs) if pairs else max(1, os.cpu_count() or 1)


def _flags(info: list[dict[str, str]]) -> set[str]:
    if not info:
        return set()
    return set((info[0].get("flags") or info[0].get("Features") or "").split())


def _simd_bits(flags: set[str]) -> int:
    if "avx512f" in flags:
        return 512
    if "avx2" in flags:
        return 256
    return 128                      # SSE, or NEON on aarch64 (SVE width is not read)


def _clock_hz(info: list[dict[str, str]]) -> float:
    for name in ("base_frequency", "cpuinfo_max_freq"):
        khz = _number(_read(_CPU / "cpufreq" / name))
        if khz:
            return khz * 1e3
    mhz = [_number(b.get("cpu MHz")) for b in info]
    mhz = [m for m in mhz if m]
    return max(mhz) * 1e6 if mhz else FALLBACK_CLOCK_HZ


def _number(text: str | None) -> float | None:
    try:
        value = float((text or "").strip())
    except ValueError:
        return None
    return value if value > 0 else None


def _size_bytes(text: str | None) -> float | None:
    """'48K' / '2048K' / '32M' (sysfs cache size) -> bytes."""
    text = (text or "").strip()
    factor = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
    value = _number(text.rstrip("KMG"))
    return value * factor if value else None


def _caches(cores: int) -> list[tuple[str, float, bool]]:
    """(name, total capacity in bytes, private) of each data/unified cache level, innermost
    first; private: one instance per core or more (a core's own, not shared)."""
    levels = {}
    for index in sorted(_CPU.glob("cache/index*")) if _CPU.exists() else []:
        if (_read(index / "type") or "").strip() == "Instruction":
            continue
        level, size = _read(index / "level"), _size_bytes(_read(index / "size"))
        sharing = _cpu_count_in(_read(index / "shared_cpu_list"))
        if level and size:
            instances = max(1, (os.cpu_count() or cores) // max(1, sharing))
            levels[int(level)] = (size * instances, instances >= cores)
    return [(f"l{level}", *levels[level]) for level in sorted(levels)]


def _cpu_count_in(cpu_list: str | None) -> int:
    """'0-3,8' -> 5."""
    count = 0
    for part in (cpu_list or "").strip().split(","):
        low, _, high = part.partition("-")
        if low.strip().isdigit():
            count += int(high) - int(low) + 1 if high.strip().isdigit() else 1
    return max(1, count)


def _memory_capacity_bytes() -> float:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return float(line.split()[1]) * 1024
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8e9                  # last resort; never reached on Linux or macOS


# ------------------------------------------------------------------------------ measuring

def _memory_levels(cores: int) -> tuple[MemoryLevel, ...]:
    main = MemoryLevel("dram", _memory_capacity_bytes(),
                       copy_bandwidth(MAIN_MEMORY_COPY_BYTES, cores))
    levels, outer = [main], main.bandwidth_bytes_per_s
    for name, capacity, private in reversed(_caches(cores)):
        if capacity < 2**20:
            continue
        bandwidth = copy_bandwidth(int(capacity // 2), cores)
        if bandwidth > outer:
            levels.insert(0, MemoryLevel(name, capacity, bandwidth, private))
            outer = bandwidth
    return tuple(levels)


def copy_bandwidth(total_bytes: int, threads: int, min_seconds: float = 0.02,
                   trials: int = 3) -> float:
    """Bytes/s of a threaded numpy copy of ``total_bytes`` (STREAM Copy: 2 bytes per byte)."""
    import numpy as np

    threads = max(1, min(threads, os.cpu_count() or 1))
    chunk = max(1, total_bytes // 8 // threads)
    sources = [np.ones(chunk, dtype=np.float64) for _ in range(threads)]
    targets = [np.empty_like(s) for s in sources]
    repeats = max(1, int(min_seconds * 10e9 / (2 * 8 * chunk * threads)))

    def work(i: int) -> None:
        for _ in range(repeats):
            np.copyto(targets[i], sources[i])

    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))            # warm-up: fault the pages in
        for _ in range(trials):
            start = time.perf_counter()
            list(pool.map(work, range(threads)))
            best = min(best, time.perf_counter() - start)
    return 2 * 8 * chunk * threads * repeats / max(best, 1e-9)
