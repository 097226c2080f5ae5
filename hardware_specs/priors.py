"""The efficiency priors a device without its own measurement of an op class runs on, never its
datasheet peak (issue 20, item 3): the class medians, the cross-class medians, and the rule
that gives a spec its priors (``class_priors``). ``hardware_specs.loader`` applies it to every
spec file it reads and ``hardware_specs.host`` to ``cpu-host``; ``DeviceSpec.priors`` names the
fields a device runs on; ``simulator.cost.status`` says so. ``tests/test_priors.py`` derives
each figure from the catalogue files and the committed measurements."""
from __future__ import annotations

from hardware_specs.spec import DeviceClass

#: A GPU whose spec cites no streaming measurement gets these priors: the medians over the
#: seven GPUs NeuSight timed (P4, P100, T4, V100, A100 PCIe 40GB and 80GB, L4; elementwise
#: 0.736-0.894, norms and softmax 0.450-0.775), fitted by ``simulator.calibrate.streaming``
#: (``tests/test_streaming.py`` derives them again). NHWC batch norms (channels_last, at least
#: ``simulator.cost.roofline.BATCH_NORM_MIN_CHANNELS`` channels), forward and backward: the
#: median over the GPUs whose cuDNN NHWC batch norm is measured and accepted, a die counted
#: once: today the GA100's (the A100-SXM4-40GB's fit, ``tests/data/batchnorm_nhwc.csv``,
#: carried to the four GA100 parts), so the median of one, 0.791 / 0.842. The V100-SXM2-32GB's
#: table does not enter: its own fit is refused for its own spec (held-out error 27 %
#: forward), and a figure not accepted for the part it was timed on is not accepted for parts
#: never timed (``tests/test_priors.py`` derives them). NCHW batch norms (no channels_last),
#: forward and backward: the median over the GPU dies whose cuDNN NCHW batch norms are measured,
#: today the GA100's (``simulator.calibrate.streaming.profiled_batch_norm_efficiency`` on the
#: kernels of a profiled ResNet-50 step on an A100 40GB, ``EVT_NCHW_BATCH_NORMS``), so the median
#: of one, 0.406 / 0.460 of that die's 1,555 GB/s: carried to a GPU with an SM count as the same
#: absolute rate per SM (``nchw_batch_norm_prior``), not as a fraction of its own DRAM.
#: ``DeviceSpec.priors`` names those used.
GPU_PRIORS = {"memory_efficiency": 0.780, "norm_memory_efficiency": 0.617,
              "batch_norm_memory_efficiency": 0.791,
              "batch_norm_backward_memory_efficiency": 0.842,
              "batch_norm_nchw_memory_efficiency": 0.406,
              "batch_norm_nchw_backward_memory_efficiency": 0.460}
#: A device whose spec cites no GEMM measurement (``matmul_efficiency``) runs its GEMMs at its
#: class's prior, never at its datasheet peak: the median over the catalogue specs of its class
#: that cite one (GPUs: A100 SXM4 40/80GB 0.824, A100 PCIe 80GB 0.827, H100 SXM 0.803, H200
#: 0.763, B200 0.787, GB200 0.729, MI300X 0.471, MI325X 0.600, MI355X 0.622, V100 SXM2/PCIe
#: 0.848, T4 0.616 -> 0.787; accelerators: Gaudi 2 0.969, Gaudi 3 0.677, Trainium 0.830 (an
#: NKI bf16 GEMM on one NeuronCore-v2, AWS's matmul tutorial) -> 0.830; TPUs: v5e 0.923 (XLA's
#: bf16 jnp.matmul of 8192^3, the JAX Pallas TPU matmul guide), v6e 0.793 (XLA's bf16
#: dot_general of 8192^3 in profiler device time, yangwhale/gpu-tpu-pedia) -> 0.858, carried to
#: v3, v4 and v5p; ``tests/data/nongpu_kernel_rates.csv``). A class with no measured member (FPGAs,
#: CPUs) takes ``CROSS_CLASS_PRIORS``. A fraction of the
#: device's own peak, as the streaming priors are of its own bandwidth: its balance of compute
#: and bandwidth decides which bounds an op. A calibrated CPU (``hwsim calibrate``) replaces it
#: with its fit. ``tests/test_priors.py`` recomputes them; ``DeviceSpec.priors`` names the
#: fields a device runs on.
MATMUL_PRIORS = {DeviceClass.GPU: 0.787, DeviceClass.ACCELERATOR: 0.830,
                 DeviceClass.TPU: 0.858}
#: A GPU whose spec cites no measurement of its vector units (``vector_efficiency``: norms',
#: activations', softmax's arithmetic) runs them at this fraction of its fp32 vector peak (the
#: datasheet's, at the boost clock): the median, over the GPUs whose FMA-chain throughput was
#: measured at the clocks the card chose itself, of measured over rated
#: (tests/data/vector_fma_throughput.csv, derived again by ``tests/test_priors.py``):
#: GPUInspector.jl's A100-SXM4-40GB 19.1/19.5 = 0.979, V100-SXM2-32GB 15.5/15.7 = 0.987 and
#: A40 23.3/37.4 = 0.623; cudapeak's (github astron-rd/cudapeak kernels/fp32.cu, results
#: astron-rd/cudapeak-results@b0971c9, the best of three runs) A100 PCIe 40GB 18.93/19.5 =
#: 0.971 at the 1,410 MHz NVML read, L40S 79.38/91.6 = 0.867 (clock not recorded) and RTX
#: A4000 19.50/19.17 = 1.017 at 1,590-1,620 MHz, above its 1,560 MHz rating -> (0.971 + 0.979)
#: / 2 = 0.975. What the rows measure is the clock the card holds under a sustained FMA load,
#: not its SM's datapaths: per SM per clock, cudapeak's kernel at clocks locked by the
#: benchmark reaches 0.978 of the FP32 lanes' rate on GA100 (A100 PCIe, 765 MHz) and 0.988 on
#: GA104 (RTX A4000, 735 MHz), AD104 (RTX 4000 Ada, RTX 4070) and AD102 (RTX 5000 Ada),
#: whose SMs share half their FP32 lanes with INT32 (NVIDIA's Ampere GA102 whitepaper, 2020;
#: its Ada whitepaper, 2022): shared lanes cost an FMA kernel nothing per clock (until
#: 2026-12-06 such SMs took the A40's 0.623, ``SHARED_LANE_VECTOR_PRIOR``, now removed). The
#: held clock is the board's (its power limit, its cooling, the load's own power): the A40's
#: 23.3 TFLOP/s is its 10,752 lanes at 1.08 GHz, below its 1,305 MHz base clock (TechPowerUp's
#: figure; its 1,740 MHz maximum is CUDA's, on GPUInspector's page), while the RTX A4000 ran
#: above its rated boost, and no datasheet figure orders the measured boards (board watts per
#: FP32 lane-GHz: A100 SXM4 400 W 41 pJ held its rating, A40 300 W 16 pJ 62 %, L40S 350 W 7.6 pJ
#: 87 %, RTX A4000 140 W 15 pJ 102 %; its 140 W and 735 / 1,560 MHz: NVIDIA's datasheet as
#: ecer.com and technical.city reproduce it). So one prior for every GPU without a measurement,
#: the median of the boards measured, their spread (0.62-1.02) stated; a measured board cites its
#: own figure (``vector_efficiency`` in its spec). Not accepted: rows above the rated peak from another
#: kernel or an unnamed board (the GTX 1650's, xytpai/nvbench's RTX 4090), rows at clocks the
#: benchmark locked (the per-clock rows above).
#: A TPU without its own measurement: the median over the measured TPUs, today the v5e alone
#: (a Pallas kernel of independent f32 chains sustains 5.99 of its 6.14 TFLOP/s, 0.976;
#: AMLeng/tpu-kernels 1182eec, ``tests/data/nongpu_kernel_rates.csv``), carried to v3, v4, v5p
#: and v6e (their vector peaks are counted ALUs at derived or assumed clocks, their specs say).
VECTOR_PRIORS = {DeviceClass.GPU: 0.975, DeviceClass.TPU: 0.976}
#: An FPGA whose spec cites no streaming measurement streams at this fraction of its own
#: bandwidth: the median over the measured FPGAs, today the Alveo U280 alone (Shuhai's
#: hardware engines on all 32 HBM pseudo-channels, "up to 425 GB/s" of the 460 GB/s datasheet
#: figure = 0.924; Wang et al., FCCM 2020, arXiv 2005.04324, abstract;
#: ``tests/data/nongpu_kernel_rates.csv``). Carried by the class rule to the DDR4 parts (Alveo
#: U250, VCK5000) although no DDR4 figure is read: the best a hand-written RTL engine reaches,
#: an upper figure for a kernel made with HLS (Choi et al., FPGA 2021, measure HLS designs
#: well below it before their optimisations); a prior, not a fit. A TPU likewise: the median
#: over the measured TPUs, today the v5e alone (XLA's elementwise x * 2 of a bf16 16384^2
#: array in device time, 657.7 of 819 GB/s = 0.803; AMLeng/tpu-kernels, 2026-05-04;
#: ``tests/data/nongpu_kernel_rates.csv``), carried to v3, v4, v5p and v6e (HBM2 to HBM3 parts
#: whose streaming nobody timed; a prior, not a fit).
STREAM_PRIORS = {DeviceClass.FPGA: 0.924, DeviceClass.TPU: 0.803}
#: A device of a class with no measured member takes, for each of these op classes, the median
#: of the fitted efficiency over every catalogue spec that cites a measurement of it, whatever
#: its class (``tests/test_priors.py`` recomputes each from the files): streams
#: (``memory_efficiency``: the 13 GPU specs citing NeuSight's or PyTorch's kernels, 0.736-0.894,
#: the Alveo U280's 0.924 and the TPU v5e's 0.803: 15 values, median 0.803; 0.815 over the
#: 14 before the v5e's was cited, 2026-12-06), vector
#: arithmetic (``vector_efficiency``: the A100-SXM4-40/80GB 0.979, V100-SXM2 0.987, A100 PCIe
#: 40GB 0.971, L40S 0.867 and TPU v5e 0.976 -> (0.976 + 0.979) / 2 = 0.9775; 0.979 before the
#: v5e's, 2026-12-06)
#: and GEMMs (``matmul_efficiency``: the 18 GPU, accelerator and TPU specs above, (0.793 +
#: 0.803) / 2 = 0.798, between the TPU v6e's and the H100 SXM's; 0.803 until v6e's was cited,
#: 2026-12-06). Today that is every accelerator (Gaudi, Trainium, Graphcore, Snapdragon)
#: and catalogue CPU for streams (TPUs until 2026-12-06), every non-GPU but the TPUs for vector
#: arithmetic, and the FPGAs and
#: catalogue CPUs for GEMMs. A documented prior, not a measurement: no device runs an
#: op class at its datasheet peak because no device of its class was measured; ``hwsim
#: devices`` marks these ``prior/cross-class`` and predictions say so (``simulator.cost.status``).
#: Not carried over: the norm and NHWC batch-norm figures (PyTorch's and cuDNN's GPU kernels;
#: other classes' norms stream as their streams do). Searched for, 2026-12-05 and -06, without
#: a figure that could be read and checked in its primary source here: STREAM results for the
#: Xeon 8380/8480 and EPYC 9654 (Dell's PowerEdge notes and AnandTech's reviews give them as
#: charts; simon-r/My_Stream_Benchmark RESULTS.md @11d386c gives a 2-socket Platinum 8480+
#: "axpy (TRIAD)" of 372.2 GB/s but not the DIMMs or their speed, so no fraction of a datasheet
#: figure follows), Gaudi 2/3, Trainium and TPU HBM streaming rates, the vector units'
#: throughput of any non-GPU, Jia et al. 2019 (arXiv 1912.03413: the Graphcore GC2, not the
#: catalogue's Bow; only secondary summaries of its figures were reachable) and Lee et al.,
#: ISCA 2025 (arXiv 2501.00210: Gaudi-2 vs A100; only its abstract and a secondary summary were
#: reachable, which reports Gaudi-2's TPC ADD/SCALE at ~50 % and TRIAD at ~99 % of the vector
#: peak and 64 % of the HBM bandwidth for gathers of rows of 256 B and more; not used until
#: read in the paper; searched again 2026-12-06: the stored arxiv.org/html/2501.00210v1 page
#: is readable only to its introduction).
CROSS_CLASS_PRIORS = {"matmul_efficiency": 0.798, "memory_efficiency": 0.803,
                      "vector_efficiency": 0.9775}
#: Per field, the class priors: the median over the measured devices of the class.
CLASS_PRIORS = {**{field: {DeviceClass.GPU: value} for field, value in GPU_PRIORS.items()},
                "memory_efficiency": {DeviceClass.GPU: GPU_PRIORS["memory_efficiency"],
                                      **STREAM_PRIORS},
                "matmul_efficiency": MATMUL_PRIORS, "vector_efficiency": VECTOR_PRIORS}
#: The device classes with at least one catalogue spec that cites a measurement of the field:
#: its streaming rate (``memory_efficiency``: GPUs, NeuSight's and PyTorch's kernels, their
#: medians GPU_PRIORS; FPGAs, the Alveo U280's HBM, and TPUs, the v5e's, STREAM_PRIORS), its
#: vector units' rate
#: (``vector_efficiency``: GPUs, the A100, V100 and L40S parts; TPUs, the v5e) or its GEMMs'
#: (``matmul_efficiency``: GPUs, accelerators and TPUs). A device of any other class takes the
#: cross-class prior (``CROSS_CLASS_PRIORS``), ``prior (cross-class)`` in ``hwsim devices``.
#: ``tests/test_priors.py`` derives these sets from the catalogue files, so a spec that cites a
#: measurement moves its class in.
MEASURED_CLASSES = {"memory_efficiency": frozenset({DeviceClass.GPU, DeviceClass.FPGA,
                                                    DeviceClass.TPU}),
                    "vector_efficiency": frozenset({DeviceClass.GPU, DeviceClass.TPU}),
                    "matmul_efficiency": frozenset({DeviceClass.GPU, DeviceClass.ACCELERATOR,
                                                    DeviceClass.TPU})}


#: Where the NCHW batch-norm figures of ``GPU_PRIORS`` were measured: the A100 40GB's 108 SMs
#: (NVIDIA A100 Tensor Core GPU Architecture whitepaper, 2020) and 1,555 GB/s (datasheet).
NCHW_BATCH_NORM_REFERENCE = (108, 1555e9)
#: Each NCHW figure with the NHWC figure that caps it (the same direction).
NCHW_CAPS = {"batch_norm_nchw_memory_efficiency": "batch_norm_memory_efficiency",
             "batch_norm_nchw_backward_memory_efficiency":
                 "batch_norm_backward_memory_efficiency"}


def nchw_batch_norm_prior(field: str, compute_units: int | None, bandwidth: float,
                          cap: float) -> float:
    """The NCHW batch-norm prior (``field``: forward or backward) of a GPU with
    ``compute_units`` SMs (or CUs) and ``bandwidth`` bytes/s of main memory: the measured die's
    absolute rate per SM (``GPU_PRIORS``' figure x 1,555 GB/s / 108 SMs: 5.85 GB/s forward,
    6.62 backward) times its SMs, as a fraction of its own bandwidth, at most ``cap`` (its NHWC
    figure for the direction: a kernel held by its DRAM reaches no more than cuDNN's best one).

    Why per SM: cuDNN's NCHW kernels run a fixed number of thread blocks per channel, each at a
    rate set by the bytes it keeps in flight (Little's law), not by the DRAM. xwang233's
    contiguous tables (``tests/data/batchnorm_nchw_contiguous.csv``) show it: at 2-32 channels
    the bandwidth grows in proportion to the channels, and a V100 (900 GB/s, 80 SMs at 1.53 GHz)
    moves each channel as fast as an A100 40GB (1,555 GB/s, 108 at 1.41): the per-channel rate
    carries neither with the DRAM (1.73x) nor with the clock (0.92x)
    (``tests/test_nchw_batch_norm_carry.py``). With every SM busy, the rate is the SMs' blocks
    at that per-block rate, so it carries with the SM count. A GPU whose spec gives no SM count
    takes the measured die's fraction."""
    value = GPU_PRIORS[field]
    if compute_units:
        sms, reference = NCHW_BATCH_NORM_REFERENCE
        value = value * reference / sms * compute_units / bandwidth
    return round(min(value, cap), 3)


def class_priors(device_class: DeviceClass, given, compute_units: int | None = None,
                 bandwidth: float | None = None) -> dict[str, float]:
    """The efficiency priors a spec of ``device_class`` that gives the fields ``given`` runs
    on, field -> figure, in ``DeviceSpec.priors``' order: its class's (``CLASS_PRIORS``) where
    the class has one, else the cross-class one (``CROSS_CLASS_PRIORS``) where the field has
    one. A GPU's NCHW batch-norm priors are carried per SM (``nchw_batch_norm_prior``: its
    ``compute_units`` and main-memory ``bandwidth``). Fields given are measurements, never
    priors."""
    out = {}
    for field, by_class in CLASS_PRIORS.items():
        if field in given:
            continue
        value = by_class.get(device_class, CROSS_CLASS_PRIORS.get(field))
        if value is not None:
            out[field] = value
    for field, cap in NCHW_CAPS.items():
        if field in out and bandwidth is not None:
            out[field] = nchw_batch_norm_prior(
                field, compute_units, bandwidth, given[cap] if cap in given else out[cap])
    return out

__all__ = ["CLASS_PRIORS", "CROSS_CLASS_PRIORS", "GPU_PRIORS", "MATMUL_PRIORS",
           "MEASURED_CLASSES", "NCHW_BATCH_NORM_REFERENCE", "NCHW_CAPS", "STREAM_PRIORS",
           "VECTOR_PRIORS", "class_priors", "nchw_batch_norm_prior"]
