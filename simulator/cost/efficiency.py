"""Shape-dependent efficiency of tensor ops, from the device's architecture facts.

Vectorised over the lowered arrays; every factor is derived from a spec figure, none is fitted:
- GPU (``matrix_tile`` and ``compute_units``): a matmul is cut into tiles of the threadblock tile
  (m x n), padded in k; tiles run in waves of one per SM. Tile quantisation wastes the padded
  part of the edge tiles, wave quantisation the idle SMs of the last wave (NVIDIA, "Matrix
  Multiplication Background User's Guide", DU-09799-001, sec. 2.3-2.4). A convolution's
  implicit GEMM runs the tile either way round (``conv_tiles``: m x n or n x m, the better
  of the two). Where the spec gives
  the tile's fixed cost (``tile_fixed_k``: pipeline fill and epilogue, in k-steps of the 16-bit
  main loop; a faster format's main loop is shorter, its fixed cost not), a tile of depth k
  does k / (ceil(k / tk) tk + fixed) of its time's work (its padded loop and the fixed cost
  add), and the library may split k into 2, 4 or 8 slices
  to fill more SMs (cuBLAS's split-k / ``segment_k`` kernels): the best split is taken (the
  partial sums' reduction is not priced). Where the spec gives the tile of the library's fp32
  (CUDA-core) kernel (``fp32_matrix_tile``), fp32 matmuls are cut into that tile instead, with
  that kernel's own fixed cost where the spec gives one (``fp32_tile_fixed_k``, in k-steps of
  the fp32 loop; none without it) and no split of k (NeuSight's H100 fp32
  ``torch.nn.Linear`` calls run sm80 FFMA kernels of 128 x 128 x 8 tiles, 1,002 of 1,040 with
  no split) unless the spec gives ``fp32_split_k`` (S): then a single fp32 GEMM takes the best
  split of k into 1 to S slices, each slice a tile paying the fixed cost (the L4's cuBLAS
  splits 567 of its 1,040 calls, ``ampere_sgemm`` grids of z = 2 to 24 and twice 57-58). Where
  the spec also gives ``fp32_tile_load_cost`` (c), the library picks the fastest of that tile's
  halvings down to 32 x 32 (cuBLAS's ``ampere_sgemm_128x64``, ``64x64``, ``32x128`` ... where
  128 x 128 tiles leave SMs idle, as NeuSight's kernel names show on the L4, T4, V100 and A100
  PCIe), a narrower tile running slower: per k-step a tm x tn tile does tm tn FMAs and loads
  tm + tn operands, each costing c FMAs' time (``fp32_tiles``); batched GEMMs keep the widest
  tile (NeuSight's fp32 bmm calls run ``ampere_sgemm_128x128`` alone on the A100 PCIe and L4)
  unless the spec lists the tiles the library runs for them (``fp32_batched_tiles``: the T4's
  and V100's ``volta_sgemm_128x64``, ``64x64``, ``128x32``, ``32x128``, none 128 x 128), the
  fastest of which is taken. Not modelled: cuBLAS's
  in-tile k slicing (``_sliced1x4``), its split-k grids on GPUs whose spec has no
  ``fp32_split_k`` (the T4's, V100's and P100's tables show them too), and the L4's CUTLASS
  ``simt_sgemm_256...`` kernels (a wider tile; the table cuts their names).
- TPU (``systolic_array``): the weight-stationary array holds a (k x n) block; k and n are
  padded to the array's rows and columns (Jouppi et al. 2017, sec. 2).
- CPU (``simd_width_bits``): n is padded to the SIMD lanes of the format; where the spec gives
  ``conv_half_dim`` (h), a 2-D convolution as a GEMM (m = N x Ho x Wo, n = the output
  channels, k = the input channels per group x the kernel's taps) of size
  s = 3 / (1/m + 1/n + 1/k) (the harmonic mean of its sides) runs at s / (s + h) of its
  plateau rate (``cpu_gemm``), half of it at s = h. The form is Goto and van de Geijn's cost
  model of a blocked GEMM ("Anatomy of High-Performance Matrix Multiplication", ACM TOMS
  34(3), 2008, doi:10.1145/1356052.1356053): packing the operands and loading and storing the
  output move each operand once per block, at a cost amortised over the side that operand
  does not span, so the time per FLOP is the kernel's own plus a term in 1/m + 1/n + 1/k. h
  is fitted by ``hwsim calibrate`` on its convolution kernels (``simulator.calibrate.fit``),
  none is cited. Matmuls keep their plateau: on the development machine's Xeon (torch 2.13,
  one thread) fp32 matmuls from 32 x 128 x 128 to 2048^3 all ran at 140-197 GFLOP/s, no
  trend with size (docs/accuracy.md), while the calibration's convolutions ranged over 3x;
  1-D convolutions, which no calibration kernel measures, keep theirs too. Not modelled:
  which operand a shape makes costly (a 64-row product of a 16 MiB B packs B from memory:
  113-143 GFLOP/s), a library's switch of algorithm by shape (oneDNN's direct, Winograd or
  1 x 1 convolutions), threads' split.
- causal fused attention skips the blocks above the diagonal: of nb x nb blocks of 128 rows
  (FlashAttention-2's block, Dao 2023) it runs nb(nb + 1)/2.
The result multiplies the device's ``matmul_efficiency`` (a cited or calibrated base), relative
to the factor of the ``REFERENCE_GEMM`` (8192^3) those figures were measured on. Each figure is
relative to the reference in the format it was measured in: an fp8 GEMM on a spec that gives
``fp8_matmul_efficiency`` (a measured fp8 kernel, whose own fixed cost, twice the 16-bit one in
k-steps, is in the figure) against the fp8 reference GEMM, so that an fp8 8192^3 runs at that
figure; every other tensor op against the 16-bit one. (Against the 16-bit reference, the fp8
fixed cost was counted twice: hwsim priced the B200's fp8 GEMM of the shape the cited fp8 MAMF
was measured on, 9472 x 5632 x 8192, at 3,194 TFLOP/s, 7.0 % under the 3,435 measured.)
"""
from __future__ import annotations

import dataclasses

import numpy as np

from hardware_specs.spec import DeviceClass, DeviceSpec
from simulator.graph.lower import Lowered, members
from simulator.graph.op import TENSOR_KINDS, DType, OpKind

FLASH_BLOCK = 128
REFERENCE_GEMM = 8192   # m = n = k of the GEMM the cited matmul_efficiency figures measure
NARROWEST = 32   # the narrowest side of cuBLAS's sgemm tiles (ampere_sgemm_32x128, 64x32, 32x32)
SPLITS = (1, 2, 4, 8)   # k slices a library may run in parallel (split-k)
#: Bytes of one element of each format, indexed by its ``DType`` code (``Lowered.dtype``).
DTYPE_BYTES = np.array([DType(code).bytes for code in range(max(DType) + 1)], dtype=np.int64)
_DTYPE_BITS = DTYPE_BYTES * 8
_TENSOR_CODES = np.array(sorted(int(kind) for kind in TENSOR_KINDS), dtype=np.int8)


def _pad(x: np.ndarray, tile: int) -> np.ndarray:
    """Fraction of a padded extent that is real work: x / (ceil(x / tile) * tile)."""
    x = np.maximum(x, 1)
    return x / (np.ceil(x / tile) * tile)


def gpu_tiles(m, n, k, batch, tile: tuple[int, int, int], units: int,
              fixed_k=0.0, splits: tuple[int, ...] = SPLITS) -> np.ndarray:
    """Tile x wave quantisation efficiency of ``batch`` (m x k)(k x n) products; with a
    per-tile ``fixed_k`` (k-steps, added to the tile's padded loop: k / (ceil(k / tk) tk +
    fixed_k) of a slice), also the fixed cost's share, at the best split of k of
    ``splits``."""
    tm, tn, tk = tile
    m, n, k, batch = (np.maximum(np.asarray(a, dtype=np.float64), 1) for a in (m, n, k, batch))
    fixed_k = np.asarray(fixed_k, dtype=np.float64)
    best = np.zeros(np.broadcast(m, n, k, batch, fixed_k).shape)
    output_tiles = batch * np.ceil(m / tm) * np.ceil(n / tn)   # the same for every split
    pad_m, pad_n = _pad(m, tm), _pad(n, tn)
    for split in splits if np.any(fixed_k > 0) else (1,):
        part = np.ceil(k / split)   # the depth of each slice
        tiles = output_tiles * split
        waves = np.ceil(tiles / units)
        # a tile's time goes as its padded loop plus the fixed cost, both in k-steps: the
        # padding and the fixed cost add (multiplying them priced a depth-16 GEMM at 1/4 of
        # the rate of the same tile's depth-64 one, and a shallower GEMM above a deeper one)
        eff = (tiles / (waves * units) * pad_m * pad_n
               * k / (split * (np.ceil(part / tk) * tk + fixed_k)))
        best = np.maximum(best, eff)   # a slice shallower than the k-tile pays its padding
    return best


def conv_tiles(m, n, k, batch, tile: tuple[int, int, int], units: int,
               fixed_k=0.0, splits: tuple[int, ...] = SPLITS) -> np.ndarray:
    """``gpu_tiles`` of a convolution's implicit GEMM (m = batch x output pixels, n = output
    channels, k = input channels x taps) at the better of its tile's two orientations, tm x tn
    or tn x tm. The libraries' tensor-core convolution kernels come in both: CUTLASS builds its
    NHWC conv2d kernels from the same tile list as its GEMMs, 256 x 128 and 128 x 256, 256 x 64
    and 64 x 256, each pair with the same warps and stages (NVIDIA/cutlass 7107b05,
    python/cutlass_library/generator.py, ``GenerateSM80_TensorOp_16816``: ``tile_descriptions``
    passed to ``CreateGemmOperator`` and ``CreateConv2dOperator`` alike; its sm90 convolutions
    likewise, ``GenerateSM90_Conv3x`` putting each tile on clusters of 2 x 1 and of 1 x 2
    CTAs), so a convolution of
    64 or 128 output channels is not padded to a 256-wide side while its m, in the millions,
    fills the other. Both orientations load tm + tn operands per k-step for tm tn FMAs: the
    same rate, only the padding and waves differ. A square tile gives ``gpu_tiles``.

    Two limitations. The source is a proxy: the ResNet-50 runs this moved (the metered MLPerf
    rows, benchmarks/energy_validation.py) ran cuDNN through MXNet, whose tile list is not
    public; CUTLASS's generator is the nearest public list, not the kernels those runs used.
    And GEMMs keep the spec's one orientation only because their fixed cost, ``tile_fixed_k``,
    was fitted with it, not because the libraries lack the transposed tile (the same generator
    lists both for GEMMs too): a GEMM of a narrow n that the other orientation would pad less
    is priced at the spec's orientation."""
    tm, tn, tk = tile
    one = gpu_tiles(m, n, k, batch, tile, units, fixed_k, splits)
    if tm == tn:
        return one
    return np.maximum(one, gpu_tiles(m, n, k, batch, (tn, tm, tk), units, fixed_k, splits))


def narrow_tiles(tile: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """The tiles of an fp32 kernel family whose widest tile is ``tile``: each side halved down
    to ``NARROWEST`` (of 128 x 128 x 8: 128, 64 or 32 by 128, 64 or 32)."""
    tm, tn, tk = tile
    sides_m = [tm >> i for i in range(8) if tm >> i >= min(NARROWEST, tm)]
    sides_n = [tn >> i for i in range(8) if tn >> i >= min(NARROWEST, tn)]
    return [(a, b, tk) for a in sides_m for b in sides_n]


def fp32_tiles(m, n, k, batch, arch) -> np.ndarray:
    """The fp32 kernel's tile x wave factor: its one tile (``fp32_matrix_tile``, with
    ``fp32_tile_fixed_k``), or, where the spec gives ``fp32_tile_load_cost`` (c), the best of
    ``narrow_tiles``, a tile of tm x tn running at (1 + c (1/TM + 1/TN)) / (1 + c (1/tm + 1/tn))
    of the widest's (TM x TN) rate: per k-step it does tm tn FMAs and loads tm + tn operands,
    each costing c FMAs' time; a batched GEMM (``batch`` > 1) keeps the widest tile, or where
    the spec lists ``fp32_batched_tiles``, the best of those (rows x columns of the output;
    the widest only if listed); each set of tiles is priced for its own GEMMs only. Where the spec gives ``fp32_split_k`` (S), a single GEMM's
    tiles also take the best split of k into 1 to S slices (``gpu_tiles``: s slices of a
    tile cost s (ceil(k / (s tk)) tk + ``fp32_tile_fixed_k``) k-steps and fill s times the
    tiles of a wave)."""
    fixed32 = float(arch.fp32_tile_fixed_k or 0)   # k-steps of the fp32 loop
    widest = arch.fp32_matrix_tile
    cost = arch.fp32_tile_load_cost
    shape = np.broadcast(m, n, k, batch).shape
    m, n, k, batch = (a.ravel() for a in np.broadcast_arrays(m, n, k, batch))
    out = np.empty(m.shape)
    alone = ~(batch > 1)   # single GEMMs; the others batched: each set priced on its own tiles

    def best(rows, tiles, splits=(1,)):
        """The best of ``tiles`` for the GEMMs ``rows``, at the best of ``splits``."""
        shapes = (m[rows], n[rows], k[rows], batch[rows])
        found = np.zeros(len(shapes[0]))
        for tile in tiles:
            rate = 1.0 if tile == widest else (
                (1 + cost * (1 / widest[0] + 1 / widest[1]))
                / (1 + cost * (1 / tile[0] + 1 / tile[1])))
            found = np.maximum(found, rate * gpu_tiles(*shapes, (*tile[:2], widest[2]),
                                                       arch.compute_units, fixed32,
                                                       splits=splits))
        return found

    # single GEMMs split k into up to fp32_split_k slices where the spec says the library does
    # (each slice pays fixed32: gpu_tiles); batched ones do not (2,089 of NeuSight's 2,092 fp32
    # bmm calls on the L4 run ampere_sgemm_128x128 grids whose z is the batch, the other three
    # z = 65,535, the grid's limit)
    splits = tuple(range(1, (arch.fp32_split_k or 1) + 1))
    # the choice of narrower tiles is fitted on single GEMMs (torch.nn.Linear); batched ones
    # keep the widest tile, as cuBLAS runs them on the A100 PCIe and L4 (ampere_sgemm_128x128
    # in all 6,860 of NeuSight's fp32 bmm calls there), unless the spec says its library runs
    # narrower ones for them (fp32_batched_tiles: the T4's and V100's volta_sgemm_128x64,
    # 64x64, 128x32, 32x128, as its kernel names show them; the widest only if listed)
    if np.any(alone):
        out[alone] = best(alone, narrow_tiles(widest) if cost else [widest], splits)
    if not np.all(alone):
        listed = arch.fp32_batched_tiles if cost else None
        out[~alone] = best(~alone, [(*t, widest[2]) for t in listed] if listed else [widest])
    return out.reshape(shape)


def shape_efficiency(lowered: Lowered, device: DeviceSpec) -> np.ndarray:
    """Per-op factor for tensor ops, 1 for the reference GEMM (1 where the spec gives no
    facts). Read-only; the last one kept per graph with what it depends on besides the graph
    (the device's class, architecture, per-format peaks where a tile has a fixed cost, whether
    fp8 GEMMs take their own reference, and ``conv_half_dim``): a GPU calibration's fit prices each of its graphs tens of thousands of
    times at one architecture, and the tile search was most of an H100 fit's time."""
    arch = device.architecture
    key = (device.device_class, arch, device.conv_half_dim,
           tuple(device.peak_for(DType(c)) for c in range(max(DType) + 1))
           if arch.tile_fixed_k else None,
           bool(arch.tile_fixed_k) and device.fp8_matmul_efficiency is not None)
    last = lowered.__dict__.get("_shape_efficiency")   # frozen: the instance dict itself
    if last is not None and last[0] == key:
        return last[1]
    eff = _shape_efficiency(lowered, device)
    eff.setflags(write=False)
    lowered.__dict__["_shape_efficiency"] = (key, eff)
    return eff


def _shape_efficiency(lowered: Lowered, device: DeviceSpec) -> np.ndarray:
    arch = device.architecture
    m, n, k, batch = lowered.m, lowered.n, lowered.k, lowered.batch
    eff = np.ones(len(lowered))
    if device.device_class is DeviceClass.GPU and arch.matrix_tile and arch.compute_units:
        # only tensor ops run on the matrix units (the others' factor is never used): a
        # 1M-op graph's split-k search over every op took 145 ms (benchmarks/bench_price.py)
        ops = np.flatnonzero(members(lowered.kind, _TENSOR_CODES))
        fixed = float(arch.tile_fixed_k or 0)
        if fixed:   # fixed in time: a format's faster main loop makes it more k-steps
            rate16 = max(device.peak_for(DType.FP16), device.peak_for(DType.BF16))
            rates = np.array([device.peak_for(DType(c)) for c in range(max(DType) + 1)])
            fixed = fixed * rates[lowered.dtype[ops].astype(np.int64)] / rate16
            # a fused attention kernel's tile loops over the whole key sequence, not over k
            fixed = np.where(lowered.mask("kind", OpKind.ATTENTION)[ops], 0.0, fixed)
        ref = REFERENCE_GEMM
        # the reference at the SMs the efficiencies were measured with (a what-if's more SMs
        # keep the per-SM rate: more SMs never slower at a peak scaled with them)
        measured = arch.reference_units or arch.compute_units
        tiles = gpu_tiles(m[ops], n[ops], k[ops], batch[ops], arch.matrix_tile,
                          arch.compute_units, fixed)
        conv = np.flatnonzero(lowered.mask("kind", OpKind.CONV)[ops])
        if conv.size and arch.matrix_tile[0] != arch.matrix_tile[1]:   # either way round
            at = ops[conv]
            tiles[conv] = conv_tiles(m[at], n[at], k[at], batch[at], arch.matrix_tile,
                                     arch.compute_units, np.broadcast_to(fixed, ops.shape)[conv])
        eff[ops] = tiles / gpu_tiles(ref, ref, ref, 1, arch.matrix_tile, measured,
                                     arch.tile_fixed_k or 0)
        if arch.tile_fixed_k and device.fp8_matmul_efficiency is not None:
            # a measured fp8 figure already holds the fp8 kernel's own fixed cost: its
            # reference is the fp8 GEMM of the reference shape, not the 16-bit one
            own = np.flatnonzero((lowered.mask("kind", OpKind.MATMUL)
                                  & lowered.mask("dtype", DType.FP8))[ops])
            if own.size:
                fixed8 = arch.tile_fixed_k * device.peak_for(DType.FP8) / rate16
                eff[ops[own]] = tiles[own] / gpu_tiles(ref, ref, ref, 1, arch.matrix_tile,
                                                       measured, fixed8)
        if arch.fp32_matrix_tile:   # fp32 GEMMs run the library's CUDA-core kernel's tile
            own = ops[(lowered.mask("kind", OpKind.MATMUL)
                        & lowered.mask("dtype", DType.FP32))[ops]]
            at_measured = arch if measured == arch.compute_units else \
                dataclasses.replace(arch, compute_units=measured)
            eff[own] = (fp32_tiles(m[own], n[own], k[own], batch[own], arch)
                        / fp32_tiles(ref, ref, ref, 1, at_measured))
    elif arch.systolic_array:
        rows, cols = arch.systolic_array
        eff = _pad(k, rows) * _pad(n, cols)
    elif device.device_class is DeviceClass.CPU and arch.simd_width_bits:
        lanes = np.maximum(arch.simd_width_bits // _DTYPE_BITS[lowered.dtype.astype(np.int64)], 1)
        eff = _pad(n, lanes)
        half = device.conv_half_dim
        if half:
            # the calibration's convolution kernels are 2-D: a 1-D one's library kernel is not
            # measured by them, and keeps its plateau (its own function figures, where fitted)
            plane = lowered.mask("kind", OpKind.CONV)
            if lowered.fn is not None:
                plane = plane & (lowered.fn == "conv2d")
            eff = np.where(plane, eff * cpu_gemm(m, n, k, half)
                           / cpu_gemm(REFERENCE_GEMM, REFERENCE_GEMM, REFERENCE_GEMM, half), eff)
    return eff


def cpu_gemm(m, n, k, half: float) -> np.ndarray:
    """A CPU GEMM's fraction of its plateau rate: s / (s + ``half``), s = 3 / (1/m + 1/n +
    1/k) (sides below 1 count as 1); 1/2 at s = ``half``, rising to 1 as every side grows."""
    m, n, k = (np.maximum(np.asarray(a, dtype=np.float64), 1.0) for a in (m, n, k))
    size = 3.0 / (1.0 / m + 1.0 / n + 1.0 / k)
    return size / (size + half)


def executed_fraction(lowered: Lowered) -> np.ndarray:
    """Share of an op's counted FLOPs that run on the device that paces the step: causal
    fused attention skips masked blocks; a mixture of experts' grouped GEMM runs its busiest
    expert's load, ``load`` per mille of the mean (``workloads.moe``)."""
    frac = np.ones(len(lowered))
    if lowered.load is not None and lowered.load.any():
        loaded = lowered.load > 0
        frac[loaded] = lowered.load[loaded] / 1000.0
    causal = lowered.mask("kind", OpKind.ATTENTION) & (lowered.causal > 0)
    if causal.any():
        blocks = np.ceil(np.maximum(lowered.m[causal], 1) / FLASH_BLOCK)
        frac[causal] = (blocks + 1) / (2 * blocks)
    return frac
