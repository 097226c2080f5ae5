"""How each op class of a device is priced: measured, a class prior, or the datasheet.

``hwsim devices`` prints it per device; ``simulate`` notes the priors a prediction ran on.
Classes and their sources (docs/model.md):

- ``gemm``: ``matmul_efficiency`` cited from a GEMM measurement (MAMF/MSMF, OpenXLA's table),
  a class prior (``hardware_specs.loader.MATMUL_PRIORS``), calibrated functions (``hwsim
  calibrate``), or the datasheet peak;
- ``conv``: ``conv_efficiency`` or a calibrated ``conv2d``; ``fp32 measured`` where only the fp32
  convolutions are (``fp32_conv_efficiency``: 16-bit ones as GEMMs); else as GEMMs;
- ``attention``: a kernel fit of the chip (``simulator.cost.attention``), a cited
  ``attention_efficiency``, else as GEMMs;
- ``stream`` (elementwise bytes) and ``norm`` (norms, softmax): measured streaming rates
  (NeuSight's kernels; PyTorch eager's in NVIDIA's cuDNN norm benchmark), the GPU priors
  (``GPU_PRIORS``), or the cross-class prior, ``prior (cross-class)``, where no catalogue
  device of its class is measured (``hardware_specs.priors.MEASURED_CLASSES``: TPUs,
  accelerators, FPGAs, CPUs; ``CROSS_CLASS_PRIORS``), ``measured`` for ``cpu-host`` (its
  bandwidth is timed here);
- ``batch-norm`` (NHWC batch norms of a channels_last plan, at least 64 channels):
  ``batch_norm_memory_efficiency`` measured (cuDNN's NHWC kernel, the GA100 parts), the GPU
  prior (``GPU_PRIORS``: the median over the measured dies), else ``as norm``;
- ``compiled-norm`` (norms, softmax under compiled fusion): ``norm_memory_efficiency_compiled``
  measured (torch.compile's kernels), else ``as norm``;
- ``vector`` (vector-unit compute): calibrated functions, a measured ``vector_efficiency``
  (an FMA-chain kernel at the clocks the card held: GPUInspector.jl's A100 and V100 SXM parts,
  cudapeak's A100 PCIe 40GB and L40S), the GPU prior (``hardware_specs.priors.VECTOR_PRIORS``,
  the median of the measured boards), else the cross-class prior where no device of its class
  is measured (all but GPUs: ``MEASURED_CLASSES``).
"""
from __future__ import annotations

from hardware_specs.priors import NCHW_CAPS
from simulator.cost.attention import fit_for
from simulator.cost.roofline import BATCH_NORM_MIN_CHANNELS

MEASURED, PRIOR, DATASHEET, CALIBRATED = "measured", "prior", "datasheet", "calibrated"
#: A prior of a class with no measured member: the median over the measured devices of every
#: class (``hardware_specs.loader.CROSS_CLASS_PRIORS``).
CROSS_CLASS = "prior (cross-class)"
#: A device class as the notes name it, in the plural.
PLURALS = {"gpu": "GPUs", "tpu": "TPUs", "cpu": "CPUs", "fpga": "FPGAs",
           "accelerator": "accelerators"}
#: The datasheet rate, with no measured device of the class to take a prior from: no
#: catalogue spec is left there (every class takes at least the cross-class prior); a
#: DeviceSpec built in code without the loader may be.
UNMEASURED_CLASS = "datasheet (class unmeasured)"
#: States in which an op class runs at no measurement of its own device.
UNMEASURED = (PRIOR, CROSS_CLASS, DATASHEET, UNMEASURED_CLASS)
_GEMM_FNS = ("linear", "matmul", "bmm", "addmm", "mm")


def calibration_status(device) -> dict[str, str]:
    """Op class -> how ``device`` prices it."""
    from hardware_specs.host import HOST_NAME
    from hardware_specs.loader import MEASURED_CLASSES

    priors = set(device.priors)
    functions = device.function_efficiency

    def datasheet(field: str) -> str:
        return (DATASHEET if device.device_class in MEASURED_CLASSES[field]
                else UNMEASURED_CLASS)

    def own(field: str, empty: float | None, fallback: str) -> str:
        value = getattr(device, field)
        if field in priors:
            return (PRIOR if device.device_class in MEASURED_CLASSES.get(
                field, (device.device_class,)) else CROSS_CLASS)
        return fallback if value is None or value == empty else MEASURED

    gemm = (CALIBRATED if any(fn in functions for fn in _GEMM_FNS)
            else own("matmul_efficiency", 1.0, DATASHEET))
    conv = CALIBRATED if "conv2d" in functions else own(
        "conv_efficiency", None, "fp32 measured" if device.fp32_conv_efficiency else "as gemm")
    attention = ("kernel fit" if fit_for(device, "auto") is not None
                 else own("attention_efficiency", None, "as gemm"))
    stream = (MEASURED if device.name == HOST_NAME
              else own("memory_efficiency", 1.0, datasheet("memory_efficiency")))
    norm = own("norm_memory_efficiency", None, "as stream")
    batch_norm = own("batch_norm_memory_efficiency", None, "as norm")
    nchw_batch_norm = own("batch_norm_nchw_memory_efficiency", None, "as norm")
    compiled = own("norm_memory_efficiency_compiled", None, "as norm")
    vector = (CALIBRATED if functions
              else own("vector_efficiency", 1.0, datasheet("vector_efficiency")))
    return {"gemm": gemm, "conv": conv, "attention": attention, "stream": stream, "norm": norm,
            "batch-norm": batch_norm, "nchw-batch-norm": nchw_batch_norm,
            "compiled-norm": compiled, "vector": vector}


def status_line(device) -> str:
    """``cls:state`` words, e.g. ``stream:prior/cross-class``."""
    return " ".join(f"{cls}:{state.replace(' (', '/').replace(')', '').replace(' ', '-')}"
                    for cls, state in calibration_status(device).items())


#: The priors of NHWC batch norms and of NCHW ones: named in a prediction only where it prices
#: one at them.
#: (forward, backward) each: the NCHW figures and the NHWC ones that cap them (``NCHW_CAPS``).
NCHW_BATCH_NORM_PRIORS, NHWC_BATCH_NORM_PRIORS = tuple(NCHW_CAPS), tuple(NCHW_CAPS.values())
BATCH_NORM_PRIORS = NHWC_BATCH_NORM_PRIORS + NCHW_BATCH_NORM_PRIORS


def priced_batch_norm_priors(lowered, plan) -> tuple[str, ...]:
    """The batch-norm figures a step prices any batch norm at (at least
    ``BATCH_NORM_MIN_CHANNELS`` channels: ``simulator.cost.roofline.price``): the NHWC ones under
    a channels_last plan, else the NCHW ones; none where the step has no such batch norm."""
    if lowered.fn is None or lowered.channels is None or not bool(
            ((lowered.fn == "batchnorm") & (lowered.channels >= BATCH_NORM_MIN_CHANNELS)).any()):
        return ()
    return NHWC_BATCH_NORM_PRIORS if plan.channels_last else NCHW_BATCH_NORM_PRIORS


def priors_note(device, batch_norms: tuple[str, ...] = BATCH_NORM_PRIORS) -> str | None:
    """What a Result says of the class priors ``device`` runs on (None: none). ``batch_norms``:
    the batch-norm figures the prediction prices at (``priced_batch_norm_priors``; empty:
    none); the other batch-norm priors go unnamed."""
    fields = [field for field in device.priors
              if field not in BATCH_NORM_PRIORS or field in batch_norms]
    if not fields:
        return None
    from hardware_specs.loader import MEASURED_CLASSES

    parts = []
    own = PLURALS[device.device_class.value]

    def median(field: str) -> str:
        """Whose median the prior of ``field`` is: its class's, or every measured class's."""
        classes = MEASURED_CLASSES.get(field, frozenset({device.device_class}))
        if device.device_class in classes:
            return f"the median measured on other {own}"
        names = sorted(PLURALS[c.value] for c in classes)
        listed = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
        return f"the median measured on {listed} (none of its class is measured)"

    if "matmul_efficiency" in fields:
        parts.append(f"GEMMs run at {device.matmul_efficiency:.1%} of its peak, "
                     f"{median('matmul_efficiency')}")
    if any(field not in ("matmul_efficiency", "vector_efficiency", *BATCH_NORM_PRIORS)
           for field in fields):
        parts.append(f"memory-bound kernels stream at the medians measured on other {own}"
                     if "norm_memory_efficiency" in fields or device.device_class.value == "gpu"
                     else f"memory-bound kernels stream at {device.memory_efficiency:.1%} of its "
                          f"bandwidth, {median('memory_efficiency')}")
    if "vector_efficiency" in fields:
        parts.append(f"vector-unit arithmetic (norms, activations, softmax) runs at "
                     f"{device.vector_efficiency:.1%} of its vector peak, "
                     f"{median('vector_efficiency')}")
    for layout, (forward, backward) in (("NHWC", NHWC_BATCH_NORM_PRIORS),
                                        ("NCHW", NCHW_BATCH_NORM_PRIORS)):
        if forward in fields or backward in fields:
            per_sm = layout == "NCHW" and device.architecture.compute_units is not None
            whence = ("the measured die's rate per SM times its SMs" if per_sm else
                      f"the median over the measured {device.device_class.value.upper()} dies")
            if per_sm and any(getattr(device, field) == getattr(device, NCHW_CAPS[field])
                              for field in (forward, backward) if field in fields):
                whence += ", at most its NHWC figures"   # nchw_batch_norm_prior's cap
            parts.append(f"{layout} batch norms stream at {getattr(device, forward):.1%} "
                         f"forward and {getattr(device, backward):.1%} backward of its "
                         f"bandwidth, {whence}")
    return (f"{device.name} has no measured {' or '.join(fields)}: "
            f"{'; '.join(parts)} (priors)")


def stream_note(device) -> str | None:
    """What a Result says of a device whose memory-bound kernels stream at the datasheet
    bandwidth: no measured ``memory_efficiency`` and no class prior (no device of its class is
    measured: TPUs, FPGAs, CPUs, accelerators but the GPUs); None where they do not, or where
    the bandwidth is this machine's own measurement (``cpu-host``: its stream status is
    measured, ``calibration_status``) or a calibration's."""
    if (calibration_status(device)["stream"] not in (DATASHEET, UNMEASURED_CLASS)
            or device.function_efficiency):
        return None
    return (f"{device.name} has no measured memory efficiency and none of its class is "
            f"measured: memory-bound kernels stream at the datasheet bandwidth "
            f"({device.memory_bandwidth_bytes_per_s / 1e9:,.0f} GB/s), so step time is an "
            "optimistic bound")


def priors_summary(devices) -> str | None:
    """One line naming the devices of ``devices`` that run on class priors or the datasheet
    for their GEMMs or streams, and for which op classes (None: none does)."""
    shown = []
    for device in devices:
        weak = [cls for cls, state in calibration_status(device).items()
                if state in UNMEASURED and cls in ("gemm", "stream", "norm")]
        if weak:
            shown.append(f"{device.name} ({', '.join(weak)})")
    if not shown:
        return None
    return ("note: on class priors or datasheet rates, not measurements (hwsim devices shows "
            "each op class): " + "; ".join(shown))


__all__ = ["BATCH_NORM_PRIORS", "NCHW_BATCH_NORM_PRIORS", "NHWC_BATCH_NORM_PRIORS", "UNMEASURED",
           "UNMEASURED_CLASS", "calibration_status", "priced_batch_norm_priors", "priors_note",
           "priors_summary", "status_line", "stream_note"]
