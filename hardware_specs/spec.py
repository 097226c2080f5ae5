"""DeviceSpec: a device as data (STYLE.md rule 2). SI units inside; the loader converts."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from simulator.errors import SpecError, bounded, clean
from simulator.graph.op import DType


class DeviceClass(str, Enum):
    GPU = "gpu"
    TPU = "tpu"
    CPU = "cpu"
    FPGA = "fpga"
    ACCELERATOR = "accelerator"


FALLBACK = {
    DType.FP32: (DType.FP32,),
    DType.TF32: (DType.TF32, DType.FP32),
    DType.FP16: (DType.FP16, DType.BF16, DType.FP32),
    DType.BF16: (DType.BF16, DType.FP16, DType.FP32),
    DType.FP8: (DType.FP8, DType.BF16, DType.FP16, DType.FP32),
    DType.INT8: (DType.INT8, DType.FP16, DType.BF16, DType.FP32),
}


#: The figures of a spec's [power] table that may be priors (``DeviceSpec.power_priors``).
POWER_FIGURES = ("idle_w", "tdp_w")
#: The efficiencies of a spec's ``[compute]``, each a fraction in (0, 1]: the three every spec
#: has (``REQUIRED_EFFICIENCIES``), then the optional ones, in the order the writer writes them.
#: The one list the loader, ``override`` (what-if paths), the spec's checks and the writer read.
REQUIRED_EFFICIENCIES = ("matmul_efficiency", "vector_efficiency", "memory_efficiency")
EFFICIENCIES = ("matmul_efficiency", "conv_efficiency", "attention_efficiency",
                "vector_efficiency", "memory_efficiency", "matmul_memory_efficiency",
                "norm_memory_efficiency", "norm_memory_efficiency_compiled",
                "batch_norm_memory_efficiency", "batch_norm_backward_memory_efficiency",
                "batch_norm_nchw_memory_efficiency", "batch_norm_nchw_backward_memory_efficiency",
                "fp8_matmul_efficiency", "fp32_matmul_efficiency", "fp32_conv_efficiency",
                "matmul_sustained", "fp8_matmul_sustained")


#: Physical bounds of a device's figures, SI: (low, high, unit). A figure outside them is a typo
#: or a unit mistake, not a device. ``DeviceSpec``, ``MemoryLevel``, ``Link`` and
#: ``Architecture`` check them when made, so that a spec file, a ``--set`` change and a spec
#: built in Python pass one check (``hardware_specs.loader``'s schema states them).
LIMITS = {
    "flops_per_s": (1.0, 1e19, "FLOP/s"),      # 10 EFLOP/s: 500 x an H100's dense fp8 peak
    "capacity_bytes": (1.0, 1e15, "bytes"),    # 1 PB in one memory level
    "bytes_per_s": (1.0, 1e17, "bytes/s"),     # 100 PB/s: 5 x a wafer-scale engine's SRAM
    "w": (0.0, 1e5, "W"),                      # up to a 100 kW system
    "node_w": (0.0, 1e7, "W"),                 # a cluster's node: up to a rack-scale NVLink
                                               # domain (RUN_LIMITS' node_overhead_w bound)
    "s": (0.0, 1.0, "s"),                      # a fixed cost per op, call, step or message
    "j": (0.0, 1e-6, "J"),                     # per FLOP or byte: 10^6 x a GPU's picojoule
    "usd_per_hour": (0.0, 1e6, "USD/h"),
    "usd": (0.0, 1e9, "USD"),                  # a device's purchase price
    "hz": (1e3, 1e11, "Hz"),
    "count": (1, 10**7, ""),                   # cores, tiles, links, lanes
}


#: The largest ``conv_half_dim`` a spec may give: a GEMM of sides of ten million running at
#: half its plateau rate is no device's (a bound, not a figure).
HALF_DIM_MAX = 1e7


def within(value, name: str, kind: str, *, optional: bool = False, low_open: bool = False):
    """``value`` checked against ``LIMITS[kind]`` (SpecError naming ``name``); None passes
    where ``optional``."""
    if optional and value is None:
        return None
    low, high, unit = LIMITS[kind]
    return bounded(value, name, low, high, integer=kind == "count", unit=unit, error=SpecError,
                   low_open=low_open)


def fraction(value, name: str, optional: bool = False):
    """An efficiency: a number in (0, 1] (None passes where ``optional``)."""
    if optional and value is None:
        return None
    return bounded(value, name, 0.0, 1.0, error=SpecError, low_open=True)


def label(value, name: str) -> str:
    """A name or vendor: one line of text, without control characters, of at most 200."""
    if not isinstance(value, str) or not value.strip() or len(value) > 200 \
            or clean(value) != value:
        raise SpecError(f"{name} = {clean(repr(value))[:60]} must be a non-empty line of text "
                        "(at most 200 characters, no control characters)")
    return value


@dataclass(frozen=True)
class MemoryLevel:
    """One level of the memory hierarchy, innermost (registers/SRAM) first, main memory last."""

    name: str
    capacity_bytes: float
    bandwidth_bytes_per_s: float
    #: a cache each core has its own of (``capacity_bytes`` is then the sum over the cores):
    #: a framework on fewer cores has only theirs (``hardware_specs.host.on_cores``)
    private: bool = False

    def __post_init__(self) -> None:
        label(self.name, "memory name")
        within(self.capacity_bytes, "capacity_bytes", "capacity_bytes")
        within(self.bandwidth_bytes_per_s, "bandwidth_bytes_per_s", "bytes_per_s")


class LinkKind(str, Enum):
    NVLINK = "nvlink"
    INFINITY_FABRIC = "infinity-fabric"
    ICI = "ici"
    PCIE = "pcie"
    ETHERNET = "ethernet"
    INFINIBAND = "infiniband"
    IPU_LINK = "ipu-link"
    OTHER = "other"


@dataclass(frozen=True)
class Link:
    """One kind of off-chip link of a device (NVLink, ICI, PCIe, ...).

    ``bandwidth_bytes_per_s`` is per direction, per device, all ``count`` physical links of this
    kind together (an H100 SXM's 18 NVLink 4 links: 450 GB/s per direction, count 18).
    """

    name: str
    kind: LinkKind
    bandwidth_bytes_per_s: float
    count: int = 1
    latency_s: float | None = None

    def __post_init__(self) -> None:
        label(self.name, "link name")
        if not isinstance(self.kind, LinkKind):
            raise SpecError(f"link kind = {clean(repr(self.kind))[:60]} must be a LinkKind")
        within(self.bandwidth_bytes_per_s, "bandwidth_bytes_per_s", "bytes_per_s")
        within(self.count, "count", "count")
        within(self.latency_s, "latency_s", "s", optional=True)

    @property
    def per_link_bytes_per_s(self) -> float:
        return self.bandwidth_bytes_per_s / self.count


@dataclass(frozen=True)
class Architecture:
    """Facts the efficiency model needs; every field is optional (None = not given)."""

    compute_units: int | None = None          # SMs / CUs / TPU cores / CPU cores / AIE tiles
    # the SMs the spec's efficiencies were measured with, where a what-if changed compute_units
    # (``hardware_specs.override``): shape efficiencies stay relative to the reference GEMM at
    # this count, the per-SM kernel's rate held (``efficiency.shape_efficiency``). None:
    # compute_units. Not a knob of --set; the writer writes it (a written what-if predicts what
    # the one in memory does) and needs compute_units with it.
    reference_units: int | None = None
    clock_hz: float | None = None
    matrix_tile: tuple[int, int, int] | None = None     # GPU threadblock tile (m, n, k)
    # fixed cost of each output tile (pipeline fill, epilogue) in k-steps of its 16-bit main
    # loop: a tile of depth k runs as long as one of k + tile_fixed_k (``efficiency.gpu_tiles``)
    tile_fixed_k: int | None = None
    # the tile of the library's fp32 (CUDA-core) GEMM kernel where it differs from the 16-bit
    # one (an H100's fp32 GEMMs run sm80 FFMA kernels of 128 x 128 x 8 tiles): fp32 matmuls are
    # cut into it, with its own fixed cost per tile in k-steps of the fp32 main loop
    # (fp32_tile_fixed_k, else none) and no split of k unless fp32_split_k says
    # (``efficiency.shape_efficiency``)
    fp32_matrix_tile: tuple[int, int, int] | None = None
    fp32_tile_fixed_k: int | None = None
    # the library also runs narrower fp32 tiles (halves of fp32_matrix_tile's sides down to 32)
    # and picks the fastest; each operand a tile loads per k-step costs this many FMAs' time,
    # so a narrower tile runs slower (``efficiency.fp32_tiles``)
    fp32_tile_load_cost: int | None = None
    # the output tiles (m rows x n columns of C = A B, each side a whole number) the library
    # runs for batched fp32 GEMMs (torch.bmm), as its kernels' names show them; the fastest is
    # picked as above, at the same load cost (needs fp32_tile_load_cost). None: batched GEMMs
    # keep fp32_matrix_tile (``efficiency.fp32_tiles``)
    fp32_batched_tiles: tuple[tuple[int, int], ...] | None = None
    # the most slices the library splits k of a single fp32 GEMM into (cuBLAS's sgemm grids of
    # z > 1, as NeuSight's kernel tables record them): the best split of 1 to this many is
    # taken, each slice a tile of its own paying fp32_tile_fixed_k, which prices the split
    # (needs it; ``efficiency.fp32_tiles``). None: no split
    fp32_split_k: int | None = None
    systolic_array: tuple[int, int] | None = None       # (rows, cols) of one matrix unit
    matrix_units_per_core: int | None = None
    simd_width_bits: int | None = None
    fma_units_per_core: int | None = None
    dsp_count: int | None = None                         # FPGA DSP slices

    def __post_init__(self) -> None:
        for name in ("compute_units", "reference_units", "tile_fixed_k", "fp32_tile_fixed_k",
                     "fp32_tile_load_cost", "fp32_split_k", "matrix_units_per_core",
                     "simd_width_bits", "fma_units_per_core", "dsp_count"):
            within(getattr(self, name), name, "count", optional=True)
        within(self.clock_hz, "clock_hz", "hz", optional=True)
        if self.reference_units is not None and self.compute_units is None:
            raise SpecError("reference_units needs compute_units (the count it was changed "
                            "to); give compute_units or drop reference_units")
        for name, length in (("matrix_tile", 3), ("fp32_matrix_tile", 3), ("systolic_array", 2)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, tuple) or len(value) != length):
                raise SpecError(f"{name} = {clean(repr(value))[:60]} must be {length} whole "
                                "numbers")
            for item in value or ():
                within(item, name, "count")
        if self.fp32_split_k and self.fp32_split_k > 1 and not self.fp32_tile_fixed_k:
            raise SpecError("fp32_split_k needs fp32_tile_fixed_k (each slice's fixed cost is "
                            "what a split costs; without it every split is free); give it or "
                            "drop fp32_split_k")
        tiles = self.fp32_batched_tiles
        if tiles is not None:
            if not (isinstance(tiles, tuple) and tiles and all(
                    isinstance(t, tuple) and len(t) == 2 for t in tiles)):
                raise SpecError(f"fp32_batched_tiles = {clean(repr(tiles))[:60]} must be a list "
                                "of [rows, columns] tiles such as [[64, 128], [64, 64]]")
            for tile in tiles:
                for side in tile:
                    within(side, "fp32_batched_tiles", "count")
            if not self.fp32_tile_load_cost or not self.fp32_matrix_tile:
                raise SpecError("fp32_batched_tiles needs fp32_matrix_tile and "
                                "fp32_tile_load_cost (the rate of a tile is the widest tile's "
                                "at that load cost); give them or drop fp32_batched_tiles")


@dataclass(frozen=True)
class Unpriced:
    """Why a spec gives no on-demand price (``DeviceSpec.rent_unpriced``) or no purchase price
    (``purchase_unpriced``): ``offered`` False: no one rents (sells) the device, as far as the
    search of ``searched`` (an ISO date, the spec's comments say where) found; True: it is
    rented (sold), but no citable dated price was found. ``searched`` None: not a product at
    all (``cpu-host``, the machine hwsim runs on)."""

    offered: bool
    searched: str | None

    def __post_init__(self) -> None:
        if not isinstance(self.offered, bool):
            raise SpecError(f"offered = {clean(repr(self.offered))[:60]} must be true or false")
        if self.searched is not None and not (
                isinstance(self.searched, str)
                and len(self.searched) == 10 and self.searched[4] == self.searched[7] == "-"
                and self.searched.replace("-", "").isdigit()):
            raise SpecError(f"searched = {clean(repr(self.searched))[:60]} must be a date, "
                            "YYYY-MM-DD")

    @property
    def label(self) -> str:
        """The short form the cost cells and docs/devices.md print: ``not offered``, ``none
        cited`` or ``n/a`` (not a product)."""
        if self.searched is None:
            return "n/a"
        return "none cited" if self.offered else "not offered"

    def words(self) -> str:
        """``not offered (searched 2026-12-04)``, ``none cited (searched 2026-12-04)`` or
        ``n/a (this machine)``: what ``hwsim devices`` and predict print."""
        if self.searched is None:
            return "n/a (this machine)"
        return f"{self.label} (searched {self.searched})"


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    vendor: str
    device_class: DeviceClass
    # Dense peak of the matrix units (tensor cores, systolic arrays, AMX/AVX FMA) per dtype.
    peak_flops_per_s: dict[DType, float]
    # Peak of the vector units (CUDA cores, VPU, SIMD) for non-matrix ops, fp32.
    vector_flops_per_s: float
    memory: tuple[MemoryLevel, ...]
    op_overhead_s: float            # fixed cost per op: kernel launch / dispatch
    idle_power_w: float
    tdp_w: float
    # Achieved fraction of peak on large, well-shaped work; 1.0 = ideal roofline.
    matmul_efficiency: float = 1.0
    # The same for fp8 GEMMs, where measured: they reach a smaller fraction of their (twice as
    # high) peak than 16-bit ones. None: matmul_efficiency.
    fp8_matmul_efficiency: float | None = None
    # The same for fp32 GEMMs, where measured: on GPUs they run on the CUDA cores, not the
    # matrix units, and reach another fraction of their peak. None: matmul_efficiency.
    fp32_matmul_efficiency: float | None = None
    # Where matmul_efficiency (and fp8_matmul_efficiency) is a burst figure (a short benchmark
    # on a cool chip, at its boost clock): the fraction of that rate the device holds when its
    # GEMMs run back to back at its power limit, as in training (the sustained
    # over the burst rate of one tool on the device or its die; simulator.cost.power
    # .sustained_times). None: the figures are already sustained.
    matmul_sustained: float | None = None
    # The same ratio for fp8 GEMMs, where the tool measured (or the spec derives) it apart
    # from the 16-bit one: the fp8 GEMMs' sustained over burst rate. None: matmul_sustained.
    fp8_matmul_sustained: float | None = None
    memory_efficiency: float = 1.0
    # Convolutions run library algorithms (implicit GEMM, Winograd, direct) of their own
    # efficiency; None: as matmuls.
    conv_efficiency: float | None = None
    # The same for fp32 convolutions, where measured: cuDNN runs them on other kernels
    # (Winograd, FFT, CUDA-core implicit GEMM) than its tensor-core 16-bit ones. None:
    # conv_efficiency, else as fp32 matmuls.
    fp32_conv_efficiency: float | None = None
    # Fused attention kernels (FlashAttention: matmuls, online softmax and masking in one
    # kernel) reach less of the peak than a GEMM; None: as matmuls.
    attention_efficiency: float | None = None
    # The fused attention kernel the run uses (``simulator.cost.attention.AttentionKernel``
    # value; "auto": the device's default). Set from the plan's ``attention_kernel``; where the
    # kernel has a fit for this device's chip, it prices fused attention instead of
    # ``attention_efficiency``.
    attention_kernel: str = "auto"
    # A matmul whose bytes bound it (a batched GEMM with a short side: attention's scores and
    # context at head dimension 64-128) streams them at this fraction of the main memory's
    # datasheet bandwidth, not at memory_efficiency: its tiles' loads and epilogue writes are
    # not one stream. None: at memory_efficiency.
    matmul_memory_efficiency: float | None = None
    # Norms and softmax (OpKind.NORM, SOFTMAX) reduce each row or channel before writing it and
    # stream at this fraction of the datasheet bandwidth, less than an elementwise kernel
    # (``simulator.calibrate.streaming``): PyTorch eager's norm kernels, where measured. None:
    # at memory_efficiency.
    norm_memory_efficiency: float | None = None
    # The same for generated norm and softmax kernels (torch.compile's), which a plan's
    # ``Fusion.COMPILED`` runs (``simulator.cost.roofline.price``). None: norm_memory_efficiency.
    norm_memory_efficiency_compiled: float | None = None
    # Batch norms in NHWC (a plan's channels_last; ``simulator.cost.roofline.price``), forward
    # and backward: cuDNN's NHWC batch-norm kernels (PyTorch's channels-last path; MXNet's NHWC
    # kernels of NVIDIA's MLPerf ResNet are their relatives), fitted by
    # ``simulator.calibrate.streaming.fit_batch_norm``; a GPU without them gets the class prior
    # (``hardware_specs.loader.GPU_PRIORS``). None (other classes): as the other norms.
    batch_norm_memory_efficiency: float | None = None
    batch_norm_backward_memory_efficiency: float | None = None
    # The same in NCHW (PyTorch's default format; a plan without channels_last): cuDNN's NCHW
    # batch-norm kernels (``bn_fw_tr_1C11_*``, ``bn_bw_1C11_*``), about half as fast as its NHWC
    # ones, fitted by ``simulator.calibrate.streaming.profiled_batch_norm_efficiency``; a GPU without them
    # gets the class prior. None (other classes): as the other norms.
    batch_norm_nchw_memory_efficiency: float | None = None
    batch_norm_nchw_backward_memory_efficiency: float | None = None
    vector_efficiency: float = 1.0  # achieved fraction of the vector peak (norms, softmax, ...)
    # The efficiencies above that are a class prior, not a measurement of this device
    # (``hardware_specs.loader.GPU_PRIORS``).
    priors: tuple[str, ...] = ()
    # Framework cost of updating one parameter tensor in an eager optimizer step (PyTorch's
    # per-tensor AdamW launches a dozen kernels per tensor); 0 where updates are fused.
    optimizer_overhead_s: float = 0.0
    # The host's cost of issuing one op (eager PyTorch: Python, dispatcher, autograd, launch
    # call), on its own stream on a device that is not a CPU (simulator.cost.host); None: as
    # op_overhead_s, which stays each kernel's fixed cost on the device.
    host_overhead_s: float | None = None
    # Framework cost of one training step besides its ops (the loop, loss.backward() and
    # optimizer.step() entry, zero_grad): paid once per optimizer step; 0 where negligible.
    step_overhead_s: float = 0.0
    # Per-function overrides, keyed by ``Op.fn`` ("gelu", "conv2d", "dropout", ...), measured by
    # calibration: the fraction of its unit's peak a function achieves (replacing the kind's
    # efficiency: vector functions are not all one speed -- an erf or a random-number generator
    # costs many adds) and its fixed cost per call (replacing op_overhead_s: a library's
    # per-call set-up, such as oneDNN's convolution primitives on a CPU, or none for the GEMMs
    # inside one fused RNN call). Empty: every function runs at its kind's rates.
    function_efficiency: dict[str, float] = field(default_factory=dict)
    function_overhead_s: dict[str, float] = field(default_factory=dict)
    # A CPU's 2-D convolutions (as GEMMs) by shape: the size s = 3 / (1/m + 1/n + 1/k) at which
    # one runs at half its plateau rate, s / (s + h) of it in general
    # (``simulator.cost.efficiency.cpu_gemm``), fitted by ``hwsim calibrate`` on its kernels.
    # None: every shape at the plateau (the SIMD padding of n aside).
    conv_half_dim: float | None = None
    price_per_hour_usd: float | None = None
    # What one device costs to buy (its share of a server's baseboard where it is sold so),
    # for the cost of owning it (``simulator.report.figures.own_cost``); None: not sold or
    # no cited price.
    purchase_usd: float | None = None
    # purchase_usd buys a whole computer (a Mac Studio, a phone): its CPUs, memory, storage and
    # power supply are in that price, so owning it adds no node's other parts
    # (``simulator.report.figures.own_cost``); False: a device that goes into a server.
    purchase_is_system: bool = False
    # What each device still needs of a node besides purchase_usd, where that price already
    # holds the rest of a server (a Graphcore IPU-Machine: chassis, power supplies, fans, BMC,
    # the gateway's RoCE NICs; the host server is bought apart): own_cost adds devices x this
    # in place of the nodes' parts (``--node-cost-usd``, a GPU server's). None: the nodes'
    # parts (a device that goes into a GPU server) or none (purchase_is_system).
    node_parts_usd: float | None = None
    # Where price_per_hour_usd (purchase_usd) is None: whether the device is offered at all,
    # and when that was searched (``Unpriced``); None: the spec says nothing (a user's file).
    rent_unpriced: Unpriced | None = None
    purchase_unpriced: Unpriced | None = None
    source: str = ""
    path: str = ""                  # the file it was loaded from
    extra: dict[str, float] = field(default_factory=dict)
    architecture: Architecture = field(default_factory=Architecture)
    links: tuple[Link, ...] = ()
    energy_per_flop_j: float | None = None      # dynamic energy, where a source gives it
    energy_per_byte_j: float | None = None      # main-memory access energy per byte
    # idle_power_w is the class prior (hardware_specs.loader.IDLE_PRIORS), not a measurement
    idle_prior: bool = False
    # The [power] figures ("idle_w", "tdp_w") that are priors, not a measurement or datasheet
    # figure of this device: those the spec file names in ``[power] prior = [...]`` (its
    # comments say from which measured devices they come) and "idle_w" where the loader gave
    # the class prior (idle_prior). ``hwsim devices`` and a Result's notes say so.
    power_priors: tuple[str, ...] = ()
    # Off-chip memory the device computes from only through explicit copies (a Graphcore IPU's
    # Streaming Memory): model states that do not fit in ``memory`` live there and are
    # streamed in per phase (``simulator.schedule.streamed``); None: no such memory.
    streaming_memory: MemoryLevel | None = None

    def __post_init__(self) -> None:
        """Every figure within ``LIMITS`` (SpecError naming the field, the value, the bound)."""
        label(self.name, "name")
        label(self.vendor, "vendor")
        if not isinstance(self.device_class, DeviceClass):
            raise SpecError(f"device_class = {clean(repr(self.device_class))[:60]} must be a "
                            "DeviceClass")
        if not isinstance(self.peak_flops_per_s, dict) or not all(
                isinstance(key, DType) for key in self.peak_flops_per_s):
            raise SpecError("peak_flops_per_s must map DTypes to FLOP/s")
        for dtype, peak in self.peak_flops_per_s.items():
            within(peak, f"peak_flops_per_s.{dtype.name.lower()}", "flops_per_s")
        within(self.vector_flops_per_s, "vector_flops_per_s", "flops_per_s")
        if not isinstance(self.memory, tuple) or not self.memory or not all(
                isinstance(level, MemoryLevel) for level in self.memory):
            raise SpecError("memory must be one or more MemoryLevels, main memory last")
        for name in ("op_overhead_s", "optimizer_overhead_s", "step_overhead_s"):
            within(getattr(self, name), name, "s")
        within(self.host_overhead_s, "host_overhead_s", "s", optional=True)
        within(self.idle_power_w, "idle_power_w", "w")
        within(self.tdp_w, "tdp_w", "w", low_open=True)
        if not isinstance(self.power_priors, tuple) or not set(self.power_priors) <= set(
                POWER_FIGURES) or len(set(self.power_priors)) != len(self.power_priors):
            raise SpecError(f"power_priors = {clean(repr(self.power_priors))[:60]} must name "
                            f"each of {', '.join(POWER_FIGURES)} at most once")
        for name in REQUIRED_EFFICIENCIES:
            fraction(getattr(self, name), name)
        for name in EFFICIENCIES:
            if name not in REQUIRED_EFFICIENCIES:
                fraction(getattr(self, name), name, optional=True)
        for fn, value in self.function_efficiency.items():
            fraction(value, f"function_efficiency.{fn}")
        for fn, value in self.function_overhead_s.items():
            within(value, f"function_overhead_s.{fn}", "s")
        if self.conv_half_dim is not None:
            bounded(self.conv_half_dim, "conv_half_dim", 0.0, HALF_DIM_MAX, error=SpecError)
        within(self.price_per_hour_usd, "price_per_hour_usd", "usd_per_hour", optional=True,
               low_open=True)
        within(self.purchase_usd, "purchase_usd", "usd", optional=True, low_open=True)
        within(self.node_parts_usd, "node_parts_usd", "usd", optional=True)
        if self.node_parts_usd is not None and (self.purchase_usd is None
                                                or self.purchase_is_system):
            raise SpecError("node_parts_usd needs purchase_usd of a device that is not a whole "
                            "system (purchase_is_system): give purchase_usd, or drop one of them")
        for name in ("rent_unpriced", "purchase_unpriced"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), Unpriced):
                raise SpecError(f"{name} must be an Unpriced record or None")
        for name in ("energy_per_flop_j", "energy_per_byte_j"):
            within(getattr(self, name), name, "j", optional=True, low_open=True)
        if not isinstance(self.architecture, Architecture) or not isinstance(self.links, tuple) \
                or not all(isinstance(link, Link) for link in self.links):
            raise SpecError("architecture must be an Architecture and links a tuple of Links")
        if self.streaming_memory is not None and not isinstance(self.streaming_memory,
                                                                MemoryLevel):
            raise SpecError("streaming_memory must be a MemoryLevel or None")

    @property
    def main_memory(self) -> MemoryLevel:
        return self.memory[-1]

    @property
    def memory_bytes(self) -> float:
        return self.main_memory.capacity_bytes

    @property
    def memory_bandwidth_bytes_per_s(self) -> float:
        return self.main_memory.bandwidth_bytes_per_s

    @property
    def given_power_priors(self) -> tuple[str, ...]:
        """The ``power_priors`` the spec file names in ``[power] prior = [...]``: all of them
        but a class-prior idle (``idle_prior``), which the loader gives."""
        return tuple(name for name in self.power_priors
                     if name != "idle_w" or not self.idle_prior)

    def unpriced_words(self, purchase: bool = False) -> str | None:
        """Why the on-demand (``purchase``: the purchase) price is missing, as printed: the
        spec's record (``Unpriced.words``: 'not offered (searched 2026-12-04)', 'none cited
        (searched 2026-12-04)') or 'none cited' without one; None where the price is given."""
        if (self.purchase_usd if purchase else self.price_per_hour_usd) is not None:
            return None
        record = self.purchase_unpriced if purchase else self.rent_unpriced
        return "none cited" if record is None else record.words()

    def unpriced_label(self, purchase: bool = False) -> str | None:
        """``unpriced_words``' short form (``Unpriced.label``): 'not offered', 'none cited',
        'n/a'; None where the price is given."""
        if (self.purchase_usd if purchase else self.price_per_hour_usd) is not None:
            return None
        record = self.purchase_unpriced if purchase else self.rent_unpriced
        return "none cited" if record is None else record.label

    def conv_efficiency_for(self, dtype: DType) -> float:
        """The efficiency a ``dtype`` convolution runs at (``simulator.cost.roofline.price``'s
        rule, the one place it is written): ``fp32_conv_efficiency`` for fp32, else
        ``conv_efficiency``, else as a GEMM of its format (``fp32_matmul_efficiency`` for fp32,
        else ``matmul_efficiency``)."""
        if dtype == DType.FP32 and self.fp32_conv_efficiency is not None:
            return self.fp32_conv_efficiency
        if self.conv_efficiency is not None:
            return self.conv_efficiency
        if dtype == DType.FP32 and self.fp32_matmul_efficiency is not None:
            return self.fp32_matmul_efficiency
        return self.matmul_efficiency

    def peak_for(self, dtype: DType) -> float:
        """Dense matrix peak for ``dtype``, or the rate of the format it would run in.

        A device without a format runs it in the nearest one it has (``FALLBACK``): the other
        16-bit float, then fp32; TF32 runs as fp32; FP8 and INT8 at the 16-bit rate. With
        none of them, the vector units' rate.
        """
        for candidate in FALLBACK.get(dtype, (dtype,)):
            if candidate in self.peak_flops_per_s:
                return self.peak_flops_per_s[candidate]
        return self.vector_flops_per_s
