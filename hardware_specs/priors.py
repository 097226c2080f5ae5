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
#: never timed (``tests/test_priors.py`` derives them). ``DeviceSpec.priors`` names those used.
GPU_PRIORS = {"memory_efficiency": 0.780, "norm_memory_efficiency": 0.617,
              "batch_norm_memory_efficiency": 0.791,
              "batch_norm_backward_memory_efficiency": 0.842}
#: A device whose spec cites no GEMM measurement (``matmul_efficiency``) runs its GEMMs at its
#: class's prior, never at its datasheet peak: the median over the catalogue specs of its class
#: that cite one (GPUs: A100 SXM4 40/80GB 0.824, A100 PCIe 80GB 0.827, H100 SXM 0.803, H200
#: 0.763, B200 0.787, GB200 0.729, MI300X 0.471, MI325X 0.600, MI355X 0.622, V100 SXM2/PCIe
#: 0.848, T4 0.616 -> 0.787; accelerators: Gaudi 2 0.969, Gaudi 3 0.677, Trainium 0.830 (an
#: NKI bf16 GEMM on one NeuronCore-v2, AWS's matmul tutorial) -> 0.830; TPUs: v5e 0.923 (XLA's
#: bf16 jnp.matmul of 8192^3, the JAX Pallas TPU matmul guide), the median of one ->
#: 0.923; ``tests/data/nongpu_kernel_rates.csv``). A class with no measured member (FPGAs,
#: CPUs) takes ``CROSS_CLASS_PRIORS``. A fraction of the
#: device's own peak, as the streaming priors are of its own bandwidth: its balance of compute
#: and bandwidth decides which bounds an op. A calibrated CPU (``hwsim calibrate``) replaces it
#: with its fit. ``tests/test_priors.py`` recomputes them; ``DeviceSpec.priors`` names the
#: fields a device runs on.
MATMUL_PRIORS = {DeviceClass.GPU: 0.787, DeviceClass.ACCELERATOR: 0.830,
                 DeviceClass.TPU: 0.923}
#: A GPU whose spec cites no measurement of its vector units (``vector_efficiency``: norms',
#: activations', softmax's arithmetic) runs them at this fraction of its fp32 vector peak: the
#: median over the GPUs whose FMA-chain throughput GPUInspector.jl measured against the peak at
#: the maximum clock, over those whose SM has FP32 lanes of its own (A100-SXM4-40GB 19.1/19.5 =
#: 0.979, V100-SXM2-32GB 15.5/15.7 = 0.987 -> 0.983; tests/data/vector_fma_throughput.csv,
#: derived again by ``tests/test_priors.py``). A GPU whose SM shares FP32 lanes with INT32
#: (``Architecture.fp32_lanes_shared_with_int32``: GA10x, AD10x) takes
#: ``SHARED_LANE_VECTOR_PRIOR`` instead.
VECTOR_PRIORS = {DeviceClass.GPU: 0.983}
#: The vector prior of a GPU whose SM shares FP32 lanes with INT32: the median over the measured
#: GPUs with such an SM, today the A40 alone (GA102, 23.3 of 37.4 TFLOP/s = 0.623 in the same
#: GPUInspector.jl kernel). The reason given when it was set: NVIDIA's Ampere GA102 whitepaper
#: (2020) gives each GA10x SM partition one warp scheduler and dispatch unit (one warp
#: instruction per clock), a datapath of 16 FP32 lanes and one of 16 lanes doing FP32 or INT32
#: (its Ada whitepaper, 2022: the same for AD10x), so the FP32 peak needs an FP32 instruction
#: issued every clock and each other instruction takes a slot from it. Measured per SM per clock
#: that costs an FMA kernel nothing: cudapeak's FMA kernel (github astron-rd/cudapeak
#: kernels/fp32.cu, two FMA chains per thread; results astron-rd/cudapeak-results@b0971c9, the
#: SM clock read by NVML during the run) reaches 252.8-252.9 of 256 FLOP per SM per clock on
#: GA104 (RTX A4000) and AD104/AD102 (RTX 4000 Ada, RTX 4070, RTX 5000 Ada): 0.988, as GA100
#: (A100 PCIe 40GB) reaches 125.2 of 128, 0.978. GPUInspector's kernel has no integer work
#: in its loop either (pc2/GPUInspector.jl ext/CUDAExt/peakflops_gpu_fmas.jl: ~1000 FMAs per
#: loop counter) and its ratio is against the peak at the maximum clock: the A40's 23.3 TFLOP/s
#: is its 10,752 lanes x 2 at 1.08 GHz, not the 1.74 GHz of its rating, so the 0.623 is the
#: clock that 300 W card held (or that run), not its SM's datapaths (cudapeak's L40S, clock
#: not recorded: 79.4 of the 91.6 rated, 0.866). Kept on the field, as the one measured
#: shared-lane card, until a clock-under-load mechanism replaces it; not carried to other SMs
#: whose lanes also run INT32 (Pascal, Blackwell GB20x: the per-clock figures give no reason).
#: One measured die: a prior, not a fit (``tests/test_priors.py`` derives it from the row).
SHARED_LANE_VECTOR_PRIOR = 0.623
#: An FPGA whose spec cites no streaming measurement streams at this fraction of its own
#: bandwidth: the median over the measured FPGAs, today the Alveo U280 alone (Shuhai's
#: hardware engines on all 32 HBM pseudo-channels, "up to 425 GB/s" of the 460 GB/s datasheet
#: figure = 0.924; Wang et al., FCCM 2020, arXiv 2005.04324, abstract;
#: ``tests/data/nongpu_kernel_rates.csv``). Carried by the class rule to the DDR4 parts (Alveo
#: U250, VCK5000) although no DDR4 figure is read: the best a hand-written RTL engine reaches,
#: an upper figure for a kernel made with HLS (Choi et al., FPGA 2021, measure HLS designs
#: well below it before their optimisations); a prior, not a fit.
STREAM_PRIORS = {DeviceClass.FPGA: 0.924}
#: A device of a class with no measured member takes, for each of these op classes, the median
#: of the fitted efficiency over every catalogue spec that cites a measurement of it, whatever
#: its class (``tests/test_priors.py`` recomputes each from the files): streams
#: (``memory_efficiency``: the 13 GPU specs citing NeuSight's or PyTorch's kernels, 0.736-0.894,
#: and the Alveo U280's 0.924: 14 values, median (0.780 + 0.850) / 2 = 0.815), vector
#: arithmetic (``vector_efficiency``: the A100-SXM4-40/80GB 0.979 and V100-SXM2 0.987 -> 0.979)
#: and GEMMs (``matmul_efficiency``: the 17 GPU, accelerator and TPU specs above, 0.803, the
#: H100 SXM's). Today that is every TPU, accelerator (Gaudi, Trainium, Graphcore, Snapdragon)
#: and catalogue CPU for streams, every non-GPU for vector arithmetic, and the FPGAs and
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
CROSS_CLASS_PRIORS = {"matmul_efficiency": 0.803, "memory_efficiency": 0.815,
                      "vector_efficiency": 0.979}
#: Per field, the class priors: the median over the measured devices of the class.
CLASS_PRIORS = {**{field: {DeviceClass.GPU: value} for field, value in GPU_PRIORS.items()},
                "matmul_efficiency": MATMUL_PRIORS, "vector_efficiency": VECTOR_PRIORS}
CLASS_PRIORS["memory_efficiency"] = {**CLASS_PRIORS["memory_efficiency"], **STREAM_PRIORS}
#: The device classes with at least one catalogue spec that cites a measurement of the field:
#: its streaming rate (``memory_efficiency``: GPUs, NeuSight's and PyTorch's kernels, their
#: medians GPU_PRIORS; FPGAs, the Alveo U280's HBM, STREAM_PRIORS), its vector units' rate
#: (``vector_efficiency``: GPUs, the A100 and V100 SXM parts) or its GEMMs'
#: (``matmul_efficiency``: GPUs, accelerators and TPUs). A device of any other class takes the
#: cross-class prior (``CROSS_CLASS_PRIORS``), ``prior (cross-class)`` in ``hwsim devices``.
#: ``tests/test_priors.py`` derives these sets from the catalogue files, so a spec that cites a
#: measurement moves its class in.
MEASURED_CLASSES = {"memory_efficiency": frozenset({DeviceClass.GPU, DeviceClass.FPGA}),
                    "vector_efficiency": frozenset({DeviceClass.GPU}),
                    "matmul_efficiency": frozenset({DeviceClass.GPU, DeviceClass.ACCELERATOR,
                                                    DeviceClass.TPU})}


def class_priors(device_class: DeviceClass, given, architecture=None) -> dict[str, float]:
    """The efficiency priors a spec of ``device_class`` that gives the fields ``given`` runs
    on, field -> figure, in ``DeviceSpec.priors``' order: its class's (``CLASS_PRIORS``) where
    the class has one, else the cross-class one (``CROSS_CLASS_PRIORS``) where the field has
    one; a GPU whose ``architecture`` shares FP32 lanes with INT32 takes the vector prior of
    such SMs (``SHARED_LANE_VECTOR_PRIOR``). Fields given are measurements, never priors."""
    shared = (device_class is DeviceClass.GPU and architecture is not None
              and bool(architecture.fp32_lanes_shared_with_int32))
    out = {}
    for field, by_class in CLASS_PRIORS.items():
        if field in given:
            continue
        value = (SHARED_LANE_VECTOR_PRIOR if shared and field == "vector_efficiency"
                 else by_class.get(device_class, CROSS_CLASS_PRIORS.get(field)))
        if value is not None:
            out[field] = value
    return out

__all__ = ["CLASS_PRIORS", "CROSS_CLASS_PRIORS", "GPU_PRIORS", "MATMUL_PRIORS",
           "MEASURED_CLASSES", "SHARED_LANE_VECTOR_PRIOR", "STREAM_PRIORS", "VECTOR_PRIORS",
           "class_priors"]
