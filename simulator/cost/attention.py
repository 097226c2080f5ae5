"""Fused attention kernels as they run: efficiency by shape, pass and kernel, fitted on kernel
benchmarks (``tests/data/attention_kernels.csv``).

One mechanism, three parameters per (measured device, kernel, pass):

    rate = peak(dtype) x e x waves / ((1 + h / d) x (1 + c / nk))

- ``e``: the fraction of the dense peak the kernel's main loop reaches;
- ``h``: the non-matmul work (online softmax: exp, max, rescale) per score, in head-dimension
  units: a score costs d multiply-adds on the tensor cores but a fixed number of exp/max/scale
  on the slower units, so a short head (d = 64) spends more of its time off the tensor cores;
- ``c``: the fixed cost of one query block of 128 rows (load Q, write O and the log-sum-exp,
  the pipeline's fill and drain), in key blocks of 128: a block that visits nk key blocks does
  nk / (nk + c) of its time's work. A causal block visits (nb + 1) / 2 of the nb key blocks on
  average (the masked ones are skipped, ``simulator.cost.efficiency.executed_fraction``), so
  causal attention is slower per executed FLOP at short sequences, as measured;
- ``waves``: one thread block per (batch x head, query block) runs in waves over the SMs
  (from the spec's ``compute_units``, not fitted).

The forward and the backward (FlashAttention's recompute of S and P, then dQ, dK, dV) have
their own parameters where the benchmarks time them apart (H100: Shah et al. 2024, Figs. 4-5).
Where only forward + backward is published (A100, and FlashAttention-1 on the H100: Dao 2023,
Figs. 4 and 7), one (c, h) serves both passes and the backward's ``e`` is the forward's times
the ratio the kernel's own paper gives (``TIED_BACKWARD``). ``simulator.calibrate.attention``
fits the parameters (``FITS`` holds its output; ``tests/test_attention_kernels.py`` fits
again, holds out the longest sequences and checks both).

Devices of the measured chip (an A100 of any form factor, an H100, H800 or H200: the same
GA100 / GH100 SMs) use its fit as fractions of their own peak. The B200 has its own table
(NVIDIA cuDNN frontend's training benchmark, ``tests/data/attention_kernels_blackwell.csv``:
cuDNN and PyTorch's FlashAttention-2 backend, causal, head dimension 128 only, so ``h`` is
held at 0: ``simulator.calibrate.attention``). Its cuDNN rows were timed through PyTorch's
SDPA: the call's host cost (0.079 ms forward, 0.088 ms backward, from the same artifact's
512-token row less the cuDNN-frontend kernel's time there) is taken off each before fitting
(``CALL_FLOOR_S``), as hwsim prices dispatch apart.

The GB200 is the same die (``hardware_specs/devices/gb200.toml``: the B200 silicon at a higher
power limit, whose GEMMs already take the B200's tile) and runs the B200's fits at its own peak
and SMs (PyTorch's FlashAttention-2 backend's too: the same kernel in both tables, PyTorch 2.9
and 2.10, whose fits differ by 9-13 % in e). Its own table is fitted and checked (``FITS``),
not used: it measures a later cuDNN. Its rows are cuDNN 9.17.0 (NGC 25.11, cudnn-frontend d48a60eb, 2025-12-18) through cuDNN
frontend, the B200's 9.13.1 (NGC 25.09, bb37575d) through SDPA, and most of the gap between
the two tables is that release, not the part (``tests/data/attention_cudnn_versions.csv``, the
same benchmark's other artifacts). On one part, the GB300, 9.13.1 (bb37575d, SDPA) -> 9.17.0
(d48a60eb) gains 11.8 % forward and 9.0 % backward at 32,768 tokens, where PyTorch's call
(~0.08 ms) is under 0.5 % of the 19.6 / 66.7 ms timed, and 27 % / 14 % at 8,192. The GB200's
9.17 rows over the B200's 9.13 rows at 8,192-32,768 tokens (1.18-1.35 forward, 1.21-1.29
backward), less that gain at each length, leave 1.06-1.12: the part's own gain, about the
1.11 of the two datasheet peaks (2500 / 2250) that pricing at each one's peak applies
(assumed: that 9.17 gains on the GB200 what it gains on the GB300, sm_103 against sm_100).
The B200's fit stands for the release of the validated runs' era: the same benchmark on the
B200 with cuDNN 9.10.2 (NGC 25.05, f937055, 2025-06-12) is within 5 % of 9.13.1 at 4,096-32,768
tokens, 9.10.2 as fast or faster (forward 1,211 / 1,359 / 1,435 against 1,171 / 1,332 / 1,419 TFLOP/s
at 8k / 16k / 32k; backward 945 / 1,074 / 1,132 against 943 / 1,075 / 1,109), and every
Blackwell run hwsim is checked on ran a container of early 2025 (NeMo 25.02 and 25.04, MLPerf
Training v5.0, published 2025-06), months before 9.17. The B200's fixed cost c stays above the
GB200's own (10.6 / 18.1 against 5.1 / 5.3 key blocks): the same release gap, largest at short
lengths. A current (9.17 or later) stack would run nearer the GB200's own fit,
``FITS[('gb200', ...)]``; no plan field selects it.

Other devices have no attention measurement and keep the spec's ``attention_efficiency`` (or the
matmul efficiency) times the tile model (``simulator.cost.efficiency``).

Burst rates, slowed in a training step as GEMMs are. Every table above was timed in short runs,
none holding the chip at its power limit: the FlashAttention-2 benchmark times each
configuration over 30 ``torch.utils.benchmark`` repeats (Dao-AILab/flash-attention
``benchmarks/benchmark_flash_attention.py``, ``repeats = 30``; FlashAttention-3's
``hopper/benchmark_attn.py`` uses Triton's ``do_bench``, a 3 ms warm-up); cuDNN frontend's
training benchmark reports the median of 10 iterations, each after fresh ``torch.randn`` inputs
(``benchmark/sdpa_benchmark_training/README.md``, ``--num_iterations 10``). So they are bursts,
as the GEMM tables that a spec's ``matmul_sustained`` scales are, and a training step divides
their compute by that ratio too (``simulator.cost.power.sustained_times``): one rule for
every tensor-core kernel, whatever fraction of the peak it reaches (small or thin GEMMs far
below the best shape's rate and materialized attention's bmm's are scaled alike, so the
0.2-0.75 of the peak that these kernels reach is no reason to exempt fused attention). The
ratio is measured on a GEMM drawing the board's full power; a kernel that draws less (fused
attention's online softmax runs off the tensor cores) would keep a higher clock, so for it the
ratio is an upper bound on the slowdown. That is not modelled: no measured power draw or held
clock of a fused attention kernel was found (searched 2026-12-04), and a GEMM's draw is not
known by shape either. Work on the CUDA cores (fp32 GEMMs, vector and streaming kernels) is
not scaled: no sustained figure of it is measured. Its movement (validation, never fitted on; the tree of
7bb0998 without and with attention scaled): 112 rows on the H100, B200 and GB200 (97
validation, 15 calibration; the A100's GEMM figure is already sustained: no ratio), 81 closer,
31 further; validation median |error| 6.3 -> 6.4 %, p90 16.6 -> 18.3 %, bias +5.3 -> +4.7 %;
H100 6.7 -> 7.4 % (NeMo Llama 3.1 70B fp8 +7.0..+10.2 -> +5.2..+8.4 %; llm-foundry's 56 rows of
2K-4K tokens 0.6-5.2 points lower, median 1.7, e.g. MPT-760M on 32 GPUs +4.1 -> +0.6 %, but its
14 8-GPU rows of 16K-65K tokens, mostly attention, -4.8..-11.9 -> -10.9..-20.5 %), B200 3.0 ->
6.3 % (Mixtral 8x22B +0.8 -> -8.5 %, Llama 3 8B +2.2 -> -3.0 %), GB200 18.3 -> 16.6 % (Mixtral
8x22B +31.9 -> +23.9 %); H100 calibration rows (NeMo) 10.5 -> 9.4 %. The long-sequence rows
moving away is the open item: a held clock of a fused attention kernel measured above the
GEMMs' would show the mechanism not modelled here.
"""
from __future__ import annotations

import numpy as np

from simulator.plan.step import AttentionKernel

BLOCK = 128   # FlashAttention-2/3's query and key block (Dao 2023, sec. 3.1; Shah et al. 2024)


# Which measured device's fit a catalogue device uses: the same chip's SMs and clocks scale
# with its own peak (an A100 PCIe runs the A100's kernels; H800 and H200 are GH100).
# The GB200 is the B200's die: it runs the B200's fit (cuDNN 9.13, the release of the
# validated runs' era; its own table measures cuDNN 9.17, see the module's docstring).
CHIPS = {"a100-": "a100-sxm4-80gb", "h100-": "h100-sxm5-80gb", "h800-": "h100-sxm5-80gb",
         "h200-": "h100-sxm5-80gb", "b200": "b200", "gb200": "b200"}
# The kernel a current stack runs when the plan does not say (attention_kernel = auto):
# Ampere: FlashAttention-2 (PyTorch's SDPA flash backend, Hugging Face's flash_attention_2,
# Megatron-LM / Transformer Engine's flash-attn backend on sm80). Hopper: cuDNN's fused
# attention: "when both implementations are applicable, Transformer Engine prefers cuDNN flash
# attention on Hopper+ architectures, and Tri Dao flash attention on Ampere" (NeMo
# documentation, memory_optimizations.rst, NVIDIA/NeMo PR 9188); it reaches 92-96 % of
# FlashAttention-3's throughput at 2k-16k tokens (Shah et al. 2024, Figs. 4-5), and
# FlashAttention-3 needs a separate build (flash-attention's hopper/ package). Blackwell
# (B200, GB200): cuDNN's, by the same preference ("Hopper+").
DEFAULT_KERNEL = {"a100-sxm4-80gb": AttentionKernel.FLASH_ATTN_2,
                  "h100-sxm5-80gb": AttentionKernel.CUDNN,
                  "b200": AttentionKernel.CUDNN}
HOPPER_ONLY = frozenset({AttentionKernel.FLASH_ATTN_3})

# Backward e / forward e where a kernel is benchmarked only forward + backward together:
# FlashAttention-2 "up to 73 % of the theoretical maximum FLOPs/s" forward and 63 % backward on
# the A100 (Dao 2023, sec. 4.1); FlashAttention-1 30-50 % forward, 25-35 % backward (Dao 2023,
# sec. 1), the ratio of the upper ends.
# Tri Dao's Triton kernel (flash_attn/flash_attn_triton.py, MPT's and llm-foundry's
# ``attn_impl: triton``) has no published split: its docstring says only that its forward is
# faster and its backward slower than FlashAttention-1's CUDA kernels, the two together
# "slightly slower" (FlashAttention-2 paper, Fig. 4: 4 % slower than FlashAttention-1 at the
# median). FlashAttention-1's ratio is used, so its backward is if anything priced fast.
TIED_BACKWARD = {AttentionKernel.FLASH_ATTN_2: 63 / 73, AttentionKernel.FLASH_ATTN_1: 35 / 50,
                 AttentionKernel.FLASH_ATTN_TRITON: 35 / 50}
# A kernel benchmarked on one chip only, run on another measured chip: the Triton kernel "has
# only been tested on A100" (its docstring) and no H100 benchmark of it is published. On
# Hopper it compiles to the same pre-Hopper mma instructions as FlashAttention-1 (neither uses
# sm90's wgmma or TMA), so it runs at FlashAttention-1's H100 fit: a stated stand-in, which
# ``note`` reports.
STAND_IN = {("h100-sxm5-80gb", AttentionKernel.FLASH_ATTN_TRITON): AttentionKernel.FLASH_ATTN_1}

# (device, kernel, pass) -> (e, c, h), fitted by ``simulator.calibrate.attention.fit_all`` on
# tests/data/attention_kernels.csv (every row: FlashAttention-2 paper Figs. 4 and 7,
# FlashAttention-3 paper Figs. 4-5; log-time least squares) and attention_kernels_blackwell.csv
# (NVIDIA/cudnn-frontend benchmark/sdpa_benchmark_training/artifacts: B200 @bb37575d, PyTorch's
# SDPA on cuDNN 9.13, 2,048-16,384 tokens, each row's time less PyTorch's per-call floor,
# ``simulator.calibrate.attention.CALL_FLOOR_S``, as hwsim prices dispatch apart; GB200
# @d48a60eb, cuDNN frontend 1.16 on cuDNN 9.17, 512-16,384). Regenerate with
# ``python -m simulator.calibrate.attention``.
FITS: dict[tuple[str, str, str], tuple[float, float, float]] = {
    ('a100-sxm4-80gb', 'flash-attn-1', 'bwd'): (0.2701, 0.807, 0.00),
    ('a100-sxm4-80gb', 'flash-attn-1', 'fwd'): (0.3858, 0.807, 0.00),
    ('a100-sxm4-80gb', 'flash-attn-2', 'bwd'): (0.7094, 1.486, 18.88),
    ('a100-sxm4-80gb', 'flash-attn-2', 'fwd'): (0.8220, 1.486, 18.88),
    ('a100-sxm4-80gb', 'flash-attn-triton', 'bwd'): (0.2674, 0.724, 0.00),
    ('a100-sxm4-80gb', 'flash-attn-triton', 'fwd'): (0.3820, 0.724, 0.00),
    ('b200', 'cudnn', 'bwd'): (0.6555, 18.078, 0.00),
    ('b200', 'cudnn', 'fwd'): (0.7246, 10.630, 0.00),
    ('b200', 'flash-attn-2', 'bwd'): (0.1624, 6.715, 0.00),
    ('b200', 'flash-attn-2', 'fwd'): (0.1977, 5.749, 0.00),
    ('gb200', 'cudnn', 'bwd'): (0.5534, 5.287, 0.00),
    ('gb200', 'cudnn', 'fwd'): (0.7422, 5.127, 0.00),
    ('gb200', 'flash-attn-2', 'bwd'): (0.1437, 1.811, 0.00),
    ('gb200', 'flash-attn-2', 'fwd'): (0.1809, 2.184, 0.00),
    ('h100-sxm5-80gb', 'cudnn', 'bwd'): (0.6833, 2.788, 28.19),
    ('h100-sxm5-80gb', 'cudnn', 'fwd'): (0.7331, 1.103, 40.49),
    ('h100-sxm5-80gb', 'flash-attn-1', 'bwd'): (0.1400, 0.425, 0.00),
    ('h100-sxm5-80gb', 'flash-attn-1', 'fwd'): (0.2000, 0.425, 0.00),
    ('h100-sxm5-80gb', 'flash-attn-2', 'bwd'): (0.4081, 1.960, 21.82),
    ('h100-sxm5-80gb', 'flash-attn-2', 'fwd'): (0.3654, 0.870, 4.71),
    ('h100-sxm5-80gb', 'flash-attn-3', 'bwd'): (0.7480, 3.246, 28.13),
    ('h100-sxm5-80gb', 'flash-attn-3', 'fwd'): (0.9475, 2.295, 49.91),
}


def chip(device) -> str | None:
    """The measured device whose attention fits ``device`` uses, if any."""
    for prefix, measured in CHIPS.items():
        if device.name.startswith(prefix):
            return measured
    return None


def resolve(device, kernel) -> AttentionKernel | None:
    """The kernel ``device`` runs for plan value ``kernel`` (None: no fit for the device)."""
    measured = chip(device)
    kernel = AttentionKernel(kernel or AttentionKernel.AUTO)
    if measured is None:
        return None
    if kernel is AttentionKernel.AUTO:
        return DEFAULT_KERNEL[measured]
    return kernel


def fit_for(device, kernel) -> tuple[tuple[float, float, float], tuple[float, float, float]] | None:
    """The (forward, backward) parameters ``device`` runs ``kernel`` with, or None."""
    measured = chip(device)
    kernel = resolve(device, kernel)
    if kernel is None:
        return None
    kernel = STAND_IN.get((measured, kernel), kernel)
    fwd, bwd = FITS.get((measured, kernel.value, "fwd")), FITS.get((measured, kernel.value, "bwd"))
    return (fwd, bwd) if fwd and bwd else None


def kernel_efficiency(m, n, k, batch, causal, params, units: int | None) -> np.ndarray:
    """Fraction of the dense peak an attention pass of ``batch`` (m x n) score matrices at
    head dimension ``k`` runs at, with ``params`` = (e, c, h)."""
    e, c, h = params
    m, n, k, batch = (np.maximum(np.asarray(a, dtype=np.float64), 1) for a in (m, n, k, batch))
    query_blocks = np.ceil(m / BLOCK)
    key_blocks = np.ceil(n / BLOCK)
    visited = np.where(np.asarray(causal) > 0, (query_blocks + 1) / 2, key_blocks)
    waves = 1.0
    if units:
        tiles = batch * query_blocks
        waves = tiles / (np.ceil(tiles / units) * units)
    return e * waves / ((1 + h / k) * (1 + c / visited))


def pass_time_s(m, n, k, batch, causal, backward: bool, peak_flops: float, params,
                units: int | None) -> np.ndarray:
    """Seconds of one pass as a benchmark times it: forward 4 m n k FLOPs per (batch x head),
    the backward 2.5 times that (its recompute of S and P included), the executed share of a
    causal mask's blocks only."""
    m, n, k, batch = (np.asarray(a, dtype=np.float64) for a in (m, n, k, batch))
    flops = 4 * m * n * k * batch * (2.5 if backward else 1.0)
    blocks = np.ceil(np.maximum(m, 1) / BLOCK)
    flops = np.where(np.asarray(causal) > 0, flops * (blocks + 1) / (2 * blocks), flops)
    return flops / (peak_flops * kernel_efficiency(m, n, k, batch, causal, params, units))


HOPPER = ("h100-", "h800-", "h200-", "h20", "gh200")   # sm90 devices of the catalogue


def with_kernel(device, kernel):
    """``device`` running fused attention with ``kernel`` (a plan's ``attention_kernel``);
    PlanError for FlashAttention-3 on a device that is not a Hopper GPU (its kernels use sm90's
    wgmma and TMA instructions)."""
    import dataclasses

    from simulator.errors import PlanError

    kernel = AttentionKernel(kernel)
    if kernel in HOPPER_ONLY and not device.name.startswith(HOPPER):
        raise PlanError(f"attention_kernel = {kernel.value} runs only on Hopper GPUs (H100, "
                        f"H800, H200), not on {device.name}: choose flash-attn-2, cudnn or auto")
    if device.attention_kernel == kernel.value:
        return device
    return dataclasses.replace(device, attention_kernel=kernel.value)


#: The head dimensions each FlashAttention kernel is compiled for: a head runs in the smallest
#: that holds it, the columns past its own computed and discarded, so it takes that head's
#: time. FlashAttention (v1): 32, 64, 128 (csrc/flash_attn/fmha_api.cpp ``run_fmha_fwd`` and
#: ``run_fmha_bwd`` at 4a6eaa9); FlashAttention-2: 32, 64, 96, 128, 192, 256
#: (csrc/flash_attn/src/static_switch.h ``HEADDIM_SWITCH`` at 0251105); the Triton kernel: the
#: next power of two, at least 16 (flash_attn/flash_attn_triton.py ``BLOCK_HEADDIM = max(
#: triton.next_power_of_2(d), 16)``; heads above 128 are refused, ``check_head_dim``). The fits'
#: benchmarks ran heads of 64 and 128, which no kernel pads.
COMPILED_HEADS = {AttentionKernel.FLASH_ATTN_1: (32, 64, 128),
                  AttentionKernel.FLASH_ATTN_2: (32, 64, 96, 128, 192, 256),
                  AttentionKernel.FLASH_ATTN_TRITON: (16, 32, 64, 128)}


def padded_head(kernel, k: np.ndarray) -> np.ndarray:
    """The head dimension ``kernel`` runs heads of ``k`` at (``k`` where it has no table or
    the head is past its largest)."""
    k = np.asarray(k, dtype=np.float64)
    sizes = COMPILED_HEADS.get(kernel)
    if not sizes:
        return k
    table = np.asarray(sizes, dtype=np.float64)
    index = np.searchsorted(table, k)
    return np.where(index < len(table), table[np.minimum(index, len(table) - 1)], k)


#: FlashAttention (v1)'s head dimensions: multiples of 8 up to 128 (Dao-AILab/flash-attention
#: csrc/flash_attn/fmha_api.cpp at 4a6eaa9, the version GPT-NeoX vendored in
#: megatron/model/flash_attention.py: ``TORCH_CHECK((head_size % 8 == 0) && (head_size <=
#: 128))``; its README: "Head dimensions that are multiples of 8, up to 128").
FLASH_ATTN_1_MAX_HEAD_DIM = 128
#: Tri Dao's Triton kernel: any head up to 128, in fp16 or bf16 only (flash_attn/
#: flash_attn_triton.py ``_flash_attn_forward``: ``assert d <= 128, "FlashAttention only
#: support head dimensions up to 128"``; ``assert q.dtype in [torch.float16, torch.bfloat16],
#: "Only support fp16 and bf16"``).
FLASH_ATTN_TRITON_MAX_HEAD_DIM = 128


#: Every named fused kernel refuses fp32 inputs (the attention core runs in the activation
#: format: fp32 under fp32 and tf32): FlashAttention-1 ``TORCH_CHECK(q_dtype == torch::kFloat16
#: || (is_sm8x && q_dtype == torch::kBFloat16))`` (csrc/flash_attn/fmha_api.cpp at 4a6eaa9);
#: FlashAttention-2 "FlashAttention only support fp16 and bf16 data type"
#: (csrc/flash_attn/flash_api.cpp at 0251105); FlashAttention-3 "FlashAttention only supports
#: fp16, bf16, and fp8_e4m3 data type" (hopper/flash_api.cpp); the Triton kernel ``assert
#: q.dtype in [torch.float16, torch.bfloat16]``; cuDNN's fused attention: Transformer Engine
#: disables FusedAttention "for unsupported qkv_dtype" outside bf16, fp16 and fp8
#: (transformer_engine/pytorch/attention/dot_product_attention/utils.py). ``auto`` is not
#: refused: it names no kernel. In fp32 PyTorch's SDPA dispatcher runs its memory-efficient
#: kernel (torch.nn.functional.scaled_dot_product_attention: the flash backend takes fp16 and
#: bf16, the memory-efficient one fp32 too; aten/src/ATen/native/transformers/cuda/
#: sdp_utils.cpp ``check_tensor_dtype``), of which no benchmark is cited: an fp32 or tf32
#: attention op is priced by no half-precision kernel's fit (``fitted_rates``;
#: ``HALF_ONLY_DTYPES``: the op formats the fits do not cover) and not at the spec's
#: ``attention_efficiency`` (FlashAttention-2's bf16 figure), but as GEMMs of its format, the
#: memory-efficient kernel's tiles (``simulator.cost.roofline.price``): an upper bound, its
#: softmax and online rescaling between the GEMMs not counted.
HALF_ONLY_PRECISIONS = ("fp32", "tf32")
HALF_ONLY_DTYPES = ("FP32", "TF32")


def check_head_dim(kernel, head_dim: int | None, precision=None) -> None:
    """PlanError where ``kernel`` cannot run a head of ``head_dim`` (None: unknown, no check)
    or in ``precision`` (a plan's ``Precision``): a named kernel under fp32 or tf32
    (``HALF_ONLY_PRECISIONS``)."""
    from simulator.errors import PlanError

    kernel = AttentionKernel(kernel)
    precision = getattr(precision, "value", precision)
    if kernel is not AttentionKernel.AUTO and precision in HALF_ONLY_PRECISIONS:
        raise PlanError(f"attention_kernel = {kernel.value} runs fp16 and bf16 only, not "
                        f"{precision}: choose precision = bf16 or fp16, attention_kernel = "
                        "auto, or attention = materialized")
    if kernel is AttentionKernel.FLASH_ATTN_TRITON:
        if head_dim is not None and head_dim > FLASH_ATTN_TRITON_MAX_HEAD_DIM:
            raise PlanError(f"attention_kernel = flash-attn-triton takes head dimensions up to "
                            f"{FLASH_ATTN_TRITON_MAX_HEAD_DIM}, not {head_dim}: choose "
                            "flash-attn-2 or attention = materialized")
        return
    if head_dim is None or kernel is not AttentionKernel.FLASH_ATTN_1:
        return
    if head_dim % 8 or head_dim > FLASH_ATTN_1_MAX_HEAD_DIM:
        raise PlanError(f"attention_kernel = flash-attn-1 takes head dimensions that are "
                        f"multiples of 8 up to {FLASH_ATTN_1_MAX_HEAD_DIM}, not {head_dim}: "
                        "choose flash-attn-2 or attention = materialized")


def note(device) -> str | None:
    """What a Result says when the plan's kernel has no measurement on ``device``."""
    kernel = AttentionKernel(device.attention_kernel)
    if kernel is AttentionKernel.AUTO:
        return None
    if fit_for(device, kernel) is not None:
        stand_in = STAND_IN.get((chip(device), kernel))
        return None if stand_in is None else (
            f"no benchmark of {kernel.value} on {device.name}'s chip: fused attention runs "
            f"at {stand_in.value}'s fit there (simulator.cost.attention.STAND_IN)")
    return (f"no benchmark of {kernel.value} on {device.name}'s chip: fused attention runs at "
            "the spec's attention efficiency (tests/data/attention_kernels*.csv have the A100, "
            "H100, B200 and GB200)")


def fitted_rates(lowered, device) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the fused attention ops ``device`` prices by a kernel fit, and their
    FLOP/s (of the executed FLOPs). A forward pass, and the forward run again by activation
    recompute, use the forward's parameters; FlashAttention's own recompute inside the
    backward (``flash_recompute:``) and the gradient kernel the backward's."""
    from simulator.graph.op import DType, OpKind, Task

    empty = np.zeros(0, dtype=np.int64)
    fits = fit_for(device, getattr(device, "attention_kernel", None))
    if fits is None:
        return empty, np.zeros(0)
    # a fit is of a half-precision kernel: fp32 attention is not its (HALF_ONLY_PRECISIONS)
    full = lowered.among("dtype", [DType[name] for name in HALF_ONLY_DTYPES])
    ops = np.flatnonzero(lowered.mask("kind", OpKind.ATTENTION) & ~full)
    if not len(ops):
        return empty, np.zeros(0)
    task = lowered.task[ops]
    # FlashAttention's recompute inside the backward writes nothing to memory (it feeds the
    # gradient kernel on chip: simulator.training.backward); a forward re-run by activation
    # recompute writes its output like the forward
    backward = (task == Task.DATA_GRAD) | ((task == Task.RECOMPUTE)
                                           & (lowered.out_bytes[ops] == 0))
    # a head narrower than the kernel's compiled one runs at that one's time (COMPILED_HEADS):
    # the rate of the compiled head, of which the head's own FLOPs are k / compiled. The whole
    # efficiency, its softmax term h / d included, is the compiled head's: the kernel runs that
    # head's tiles, and h was fitted on heads of 64 and 128, never padded (at the head's own d
    # a v2 head of 80 would take (1 + h/80) / (1 + h/96) = 3.3 % longer than one of 96)
    k = np.maximum(lowered.k[ops].astype(np.float64), 1)
    compiled = padded_head(resolve(device, device.attention_kernel), k)
    args = (lowered.m[ops], lowered.n[ops], compiled, lowered.batch[ops], lowered.causal[ops])
    units = device.architecture.compute_units
    eff = np.where(backward, kernel_efficiency(*args, fits[1], units),
                   kernel_efficiency(*args, fits[0], units))
    eff = eff * k / compiled
    rate = np.array([device.peak_for(DType(code)) for code in range(max(DType) + 1)])
    peaks = rate[lowered.dtype[ops].astype(np.int64)]
    return ops, peaks * eff


__all__ = [
    "FITS",
    "STAND_IN",
    "AttentionKernel",
    "chip",
    "fit_for",
    "fitted_rates",
    "kernel_efficiency",
    "note",
    "padded_head",
    "pass_time_s",
    "resolve",
    "with_kernel",
]
