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
  (``GPU_PRIORS``), or the datasheet bandwidth;
- ``compiled-norm`` (norms, softmax under compiled fusion): ``norm_memory_efficiency_compiled``
  measured (torch.compile's kernels), else ``as norm``;
- ``vector`` (vector-unit compute): calibrated functions or ``vector_efficiency``, else the
  datasheet rate.
"""
from __future__ import annotations

from simulator.cost.attention import fit_for

MEASURED, PRIOR, DATASHEET, CALIBRATED = "measured", "prior", "datasheet", "calibrated"
_GEMM_FNS = ("linear", "matmul", "bmm", "addmm", "mm")


def calibration_status(device) -> dict[str, str]:
    """Op class -> how ``device`` prices it."""
    priors = set(device.priors)
    functions = device.function_efficiency

    def own(field: str, empty: float | None, fallback: str) -> str:
        value = getattr(device, field)
        if field in priors:
            return PRIOR
        return fallback if value is None or value == empty else MEASURED

    gemm = (CALIBRATED if any(fn in functions for fn in _GEMM_FNS)
            else own("matmul_efficiency", 1.0, DATASHEET))
    conv = CALIBRATED if "conv2d" in functions else own(
        "conv_efficiency", None, "fp32 measured" if device.fp32_conv_efficiency else "as gemm")
    attention = ("kernel fit" if fit_for(device, "auto") is not None
                 else own("attention_efficiency", None, "as gemm"))
    stream = own("memory_efficiency", 1.0, DATASHEET)
    norm = own("norm_memory_efficiency", None, "as stream")
    compiled = own("norm_memory_efficiency_compiled", None, "as norm")
    vector = (CALIBRATED if functions else own("vector_efficiency", 1.0, DATASHEET))
    return {"gemm": gemm, "conv": conv, "attention": attention, "stream": stream, "norm": norm,
            "compiled-norm": compiled, "vector": vector}


def status_line(device) -> str:
    return " ".join(f"{cls}:{state.replace(' ', '-')}"
                    for cls, state in calibration_status(device).items())


def priors_note(device) -> str | None:
    """What a Result says of the class priors ``device`` runs on (None: none)."""
    if not device.priors:
        return None
    parts = []
    kind = device.device_class.value.upper()
    if "matmul_efficiency" in device.priors:
        parts.append(f"GEMMs run at {device.matmul_efficiency:.1%} of its peak, the median "
                     f"measured on other {kind}s" if device.device_class.value in ("gpu",
                                                                                  "accelerator")
                     else f"GEMMs run at {device.matmul_efficiency:.1%} of its peak, the median "
                          "measured on GPUs and accelerators (none of its class is measured)")
    if any(field != "matmul_efficiency" for field in device.priors):
        parts.append(f"memory-bound kernels stream at the medians measured on other {kind}s")
    return (f"{device.name} has no measured {' or '.join(device.priors)}: "
            f"{'; '.join(parts)} (priors)")


def priors_summary(devices) -> str | None:
    """One line naming the devices of ``devices`` that run on class priors or the datasheet
    for their GEMMs or streams, and for which op classes (None: none does)."""
    shown = []
    for device in devices:
        weak = [cls for cls, state in calibration_status(device).items()
                if state in (PRIOR, DATASHEET) and cls in ("gemm", "stream", "norm")]
        if weak:
            shown.append(f"{device.name} ({', '.join(weak)})")
    if not shown:
        return None
    return ("note: on class priors or datasheet rates, not measurements (hwsim devices shows "
            "each op class): " + "; ".join(shown))


__all__ = ["calibration_status", "priors_note", "priors_summary", "status_line"]
