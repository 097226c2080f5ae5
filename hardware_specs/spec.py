"""DeviceSpec: a device as data (STYLE.md rule 2). SI units inside; the loader converts."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from simulator.op import DType


class DeviceClass(str, Enum):
    GPU = "gpu"
    TPU = "tpu"
    CPU = "cpu"
    FPGA = "fpga"
    ACCELERATOR = "accelerator"


@dataclass(frozen=True)
class MemoryLevel:
    """One level of the memory hierarchy, innermost (registers/SRAM) first, main memory last."""

    name: str
    capacity_bytes: float
    bandwidth_bytes_per_s: float


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
    memory_efficiency: float = 1.0
    price_per_hour_usd: float | None = None
    source: str = ""
    path: str = ""                  # the file it was loaded from
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def main_memory(self) -> MemoryLevel:
        return self.memory[-1]

    @property
    def memory_bytes(self) -> float:
        return self.main_memory.capacity_bytes

    @property
    def memory_bandwidth_bytes_per_s(self) -> float:
        return self.main_memory.bandwidth_bytes_per_s

    def peak_for(self, dtype: DType) -> float:
        """Dense matrix peak for ``dtype``; formats a device lacks run at its fp32 rate.

        TF32 without a TF32 unit runs as FP32; FP8 without FP8 units runs at the 16-bit rate.
        """
        fallback = {DType.TF32: DType.FP32, DType.FP8: DType.BF16, DType.BF16: DType.FP16,
                    DType.FP16: DType.FP32, DType.INT8: DType.FP16}
        while dtype not in self.peak_flops_per_s:
            if dtype not in fallback:
                return self.vector_flops_per_s
            dtype = fallback[dtype]
        return self.peak_flops_per_s[dtype]
