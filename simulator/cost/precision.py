"""Can the device train in the plan's precision? Refused, or run in another format with a note.

A precision's matmuls run in its compute format (``Plan.formats.compute``). A device whose
spec gives that format's matrix peak runs it; otherwise ``DeviceSpec.peak_for`` runs it in the
nearest format the device has (``hardware_specs.spec.FALLBACK``), or on the vector units. Per
case (docs/model.md, "Precision a device lacks"):

- **fp8 without an fp8 matrix peak** (A100, V100, T4, TPU v3-v5p, ...): refused. fp8 training
  needs fp8 tensor cores; Transformer Engine raises on GPUs below compute capability 8.9
  ("Device compute capability 8.9 or higher required for FP8 execution",
  transformer_engine/pytorch/fp8.py, check_fp8_support), and running its GEMMs at the 16-bit
  rate would predict a run nobody can launch.
- **16-bit precisions on a device whose matrix unit runs only integers** (the Snapdragon 8 Gen
  3's Hexagon NPU, int8 only): refused; its CPU cores train in fp32 (``--precision fp32``, on
  the vector units, with a note). No released stack trains on a phone's GPU or NPU: Qualcomm AI
  Engine Direct (QNN) and ExecuTorch's Qualcomm backend compile inference graphs ahead of time;
  the on-device training that exists runs on the CPU: ExecuTorch's ``extension/training``
  ("experimental", SGD only: pytorch/executorch extension/training/README.md) and ONNX
  Runtime's on-device training (CPU execution provider). The Adreno 750's fp16 rate is not
  published by Qualcomm (only "25 % faster" than the Adreno 740) and is not in the spec.
- **any other missing format** runs in the one the device has, with a note naming it: fp16 on a
  TPU, Trainium or Gaudi at the bf16 rate (XLA and the Neuron and Habana stacks compute in
  bf16), bf16 on a V100, T4 or P100 at the fp16 rate (optimistic: those GPUs have no bf16
  arithmetic and PyTorch emulates it), fp32 / tf32 matmuls of a TPU or Gaudi at the vector
  rate (no fp32 matrix figure), bf16 on a CPU at its fp32 rate.
"""
from __future__ import annotations

from hardware_specs.spec import FALLBACK, DeviceClass
from simulator.errors import PlanError
from simulator.graph.op import DType

_FLOATS = (DType.FP32, DType.TF32, DType.FP16, DType.BF16, DType.FP8)


def check(device, plan) -> str | None:
    """PlanError if ``device`` cannot train in ``plan``'s precision; else a note when it runs
    the precision's matmuls in another format (None when it has the format)."""
    dtype = plan.formats.compute
    peaks = device.peak_flops_per_s
    if dtype in peaks:
        return None
    name = plan.precision.value
    if dtype is DType.FP8:
        # the 16-bit format the device has (Turing, Volta and Pascal have no bf16 arithmetic)
        choice = next((fmt.name.lower() for fmt in (DType.BF16, DType.FP16) if fmt in peaks),
                      "fp32")
        raise PlanError(f"precision = fp8 needs fp8 matrix units and {device.name}'s spec gives "
                        "no fp8 peak (fp8 training runs on H100/H200/B200, MI300, Gaudi 3, "
                        f"Trainium): choose {choice}")
    if not any(fmt in peaks for fmt in _FLOATS) and dtype is not DType.FP32 \
            and dtype is not DType.TF32:
        raise PlanError(f"precision = {name}: {device.name}'s matrix unit runs only integer "
                        "formats (its spec gives no floating-point matrix peak) and no released "
                        "framework trains on its GPU or NPU (Qualcomm's QNN SDK runs inference "
                        "only; ExecuTorch's and ONNX Runtime's on-device training run on the "
                        "CPU): choose fp32, which trains on its CPU cores' vector units")
    used = next((fmt for fmt in FALLBACK.get(dtype, ()) if fmt in peaks), None)
    rate = device.peak_for(dtype) / 1e12
    where = (f"its {used.name.lower()} rate" if used is not None else "its vector units' rate")
    return (f"{device.name} has no {dtype.name.lower()} matrix peak: precision = {name} "
            f"runs its matmuls at {where} ({rate:.4g} TFLOP/s), which MFU is measured against")


def stack_note(device) -> str | None:
    """A note where no released framework trains on ``device`` at all (an FPGA), so that the
    prediction reads as the what-if of a custom design it is; None elsewhere.

    FPGAs: PyTorch, JAX and TensorFlow have no FPGA backend, and AMD's Vitis AI (Alveo, Versal)
    compiles and runs inference only; training on one is a custom HLS/OpenCL/RTL design. The
    published research designs reach a large fraction of their own peak on GEMM-shaped
    training: a bfloat16 systolic-array MLP trainer in OpenCL, 5 TFLOP/s and "over 90 % of the
    peak efficiency during training" on a mid-range FPGA (BFLOAT MLP Training Accelerator for
    FPGAs, ReConFig 2019, doi:10.1109/RECONFIG48160.2019.8994798), so hwsim keeps the class
    prior on the device's DSP-derived peak and says what it is."""
    if device.device_class is not DeviceClass.FPGA:
        return None
    return (f"{device.name} is an FPGA: no released framework trains on it (PyTorch, JAX and "
            "TensorFlow have no FPGA backend; AMD's Vitis AI runs inference only), so this is "
            "the what-if of a custom HLS/RTL training design at its DSP-derived peak times the "
            "class prior (research designs report up to 90 % of their own peak on MLP "
            "training: ReConFig 2019, doi:10.1109/RECONFIG48160.2019.8994798)")


__all__ = ["check", "stack_note"]
