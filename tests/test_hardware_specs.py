"""Device spec loader: catalogue, SI conversion of headline figures, and every validation error.

Headline figures are checked against the NVIDIA A100 datasheet (dense peaks, 2,039 GB/s, 80 GB,
400 W) and Intel ARK for the Xeon Platinum 8380 (8 x DDR4-3200 = 204.8 GB/s, 270 W); exact.
"""
from __future__ import annotations

import pytest

from hardware_specs import units
from hardware_specs.loader import (ALIASES, CROSS_CLASS_PRIORS, GPU_PRIORS, MATMUL_PRIORS,
                                   list_devices, load_device)
from hardware_specs.spec import DeviceClass
from simulator.errors import SpecError
from simulator.graph.op import DType

# --------------------------------------------------------------------------------- catalogue

def test_list_devices_lists_both():
    devices = list_devices()
    assert "a100-sxm4-80gb" in devices and "xeon-8380" in devices
    assert devices == sorted(devices)


@pytest.mark.parametrize("name", ["a100-sxm4-80gb", "xeon-8380"])
def test_catalogue_name_matches_file_stem(name):
    spec = load_device(name)
    assert spec.name == name
    assert spec.source


def test_a100_headline_figures_in_si():
    a100 = load_device("a100-sxm4-80gb")
    assert a100.device_class is DeviceClass.GPU
    assert a100.peak_flops_per_s[DType.BF16] == 312e12
    assert a100.peak_flops_per_s[DType.FP16] == 312e12
    assert a100.peak_flops_per_s[DType.TF32] == 156e12
    assert a100.peak_flops_per_s[DType.FP32] == 19.5e12
    assert a100.vector_flops_per_s == 19.5e12
    assert a100.memory_bandwidth_bytes_per_s == 2.039e12
    assert a100.memory_bytes == 80 * 2**30      # 80 GB HBM2e; nvidia-smi 81920 MiB
    assert a100.tdp_w == 400
    assert 0 < a100.idle_power_w < a100.tdp_w
    assert 0 < a100.op_overhead_s < 1e-4
    assert a100.peak_for(DType.FP8) == 312e12       # no FP8 units: runs at the 16-bit rate


def test_xeon_headline_figures_in_si():
    xeon = load_device("xeon-8380")
    assert xeon.device_class is DeviceClass.CPU
    assert xeon.peak_flops_per_s[DType.FP32] == pytest.approx(40 * 2.3e9 * 64)
    assert xeon.memory_bandwidth_bytes_per_s == pytest.approx(8 * 3200e6 * 8)
    assert xeon.tdp_w == 270


@pytest.mark.parametrize("dtype", [DType.TF32, DType.BF16, DType.FP16, DType.FP8, DType.INT8])
def test_cpu_peak_for_falls_back_to_fp32(dtype):
    xeon = load_device("xeon-8380")
    assert xeon.peak_for(dtype) == xeon.peak_flops_per_s[DType.FP32]


def test_alias_and_case():
    assert ALIASES["a100"] == "a100-sxm4-80gb"
    assert load_device("a100") == load_device("a100-sxm4-80gb")
    assert load_device("A100").name == "a100-sxm4-80gb"


def test_unknown_name_lists_choices():
    with pytest.raises(SpecError) as info:
        load_device("a1000")
    message = str(info.value)
    assert "\n" not in message
    assert "'a1000'" in message and "a100-sxm4-80gb" in message and "xeon-8380" in message
    assert "hwsim devices" in message


def test_missing_file_path():
    with pytest.raises(SpecError, match="no device spec file"):
        load_device("/nonexistent/dir/gpu.toml")


# ------------------------------------------------------------------------------ a good file

def test_good_file_converts_units(device_file):
    spec = load_device(device_file())
    assert spec.peak_flops_per_s == {DType.FP32: 10e12, DType.BF16: 100e12}
    assert [m.name for m in spec.memory] == ["sram", "hbm"]
    assert spec.memory[0].capacity_bytes == 40 * 2**20
    assert spec.memory[0].bandwidth_bytes_per_s == 5e12
    assert spec.memory_bytes == 16e9
    assert spec.op_overhead_s == pytest.approx(5e-6)
    assert (spec.matmul_efficiency, spec.memory_efficiency) == (0.8, 0.9)
    assert spec.price_per_hour_usd == 1.5
    assert spec.path.endswith("dev.toml")


def test_optional_keys_default(device_file):
    spec = load_device(device_file(("matmul_efficiency = 0.8\n", ""),
                                   ("memory_efficiency = 0.9\n", ""),
                                   ("[price]\nusd_per_hour = 1.5\n", "")))
    # a GPU with no GEMM measurement runs at the class prior, never at its peak
    assert spec.matmul_efficiency == MATMUL_PRIORS[DeviceClass.GPU] < 1.0
    assert (spec.conv_efficiency, spec.attention_efficiency) == (None, None)  # as matmuls
    assert spec.price_per_hour_usd is None
    # a GPU with no streaming measurement gets the class priors, and says so
    assert spec.device_class is DeviceClass.GPU
    assert spec.priors == ("memory_efficiency", "norm_memory_efficiency",
                           "batch_norm_memory_efficiency",
                           "batch_norm_backward_memory_efficiency",
                           "batch_norm_nchw_memory_efficiency",
                           "batch_norm_nchw_backward_memory_efficiency", "matmul_efficiency",
                           "vector_efficiency")
    assert (spec.memory_efficiency, spec.norm_memory_efficiency) == (
        GPU_PRIORS["memory_efficiency"], GPU_PRIORS["norm_memory_efficiency"])
    measured = load_device(device_file())          # the template cites memory_efficiency
    assert measured.priors == ("norm_memory_efficiency", "batch_norm_memory_efficiency",
                               "batch_norm_backward_memory_efficiency",
                               "batch_norm_nchw_memory_efficiency",
                               "batch_norm_nchw_backward_memory_efficiency", "vector_efficiency")
    other = load_device(device_file(('class = "gpu"', 'class = "accelerator"'),
                                    ("memory_efficiency = 0.9\n", "")))
    # a class with no measured member: the cross-class priors, never the datasheet rate
    assert other.priors == ("memory_efficiency", "vector_efficiency")
    assert (other.memory_efficiency, other.vector_efficiency) == (
        CROSS_CLASS_PRIORS["memory_efficiency"], CROSS_CLASS_PRIORS["vector_efficiency"])
    assert other.norm_memory_efficiency is None     # GPU kernels' figures are not carried over


def test_function_figures_load_in_si(device_file):
    functions = ("[functions]\ngelu = { efficiency = 0.05, overhead_us = 4 }\n"
                 "conv2d = { overhead_us = 0 }\n")
    spec = load_device(device_file(("", functions)))
    assert spec.function_efficiency == {"gelu": 0.05}
    assert spec.function_overhead_s == {"gelu": pytest.approx(4e-6), "conv2d": 0.0}
    assert load_device(device_file(name="plain.toml")).function_efficiency == {}


def test_units_module():
    assert units.tflops_to_flops_per_s(312) == 312e12
    assert units.gb_per_s_to_bytes_per_s(2039) == 2.039e12
    assert units.capacity_to_bytes("capacity_gib", 1) == 2**30
    assert units.capacity_to_bytes("capacity_gb", 80) == 80e9
    assert units.us_to_s(4) == pytest.approx(4e-6)


# ------------------------------------------------------------------------------ bad files

# Each case: the edit (old, new) of the valid spec (conftest.DEVICE_TOML; an empty old appends
# new) and the key its one-line error must name.
BAD_CASES = {
    "bad_toml": (('vendor = "Acme"', 'vendor = "Acme'), "not valid TOML"),
    "unknown_top_key": (('vendor = "Acme"', 'vendor = "Acme"\ncolour = "green"'), "colour"),
    "unknown_compute_key": (("vector_tflops = 10", "vector_tflops = 10\nwarp = 32"),
                            "compute.warp"),
    "unknown_memory_key": (("capacity_mib = 40", "capacity_mib = 40\nlatency_ns = 5"),
                           "memory[0].latency_ns"),
    "unknown_power_key": (("tdp_w = 300", "tdp_w = 300\nboost_w = 350"), "power.boost_w"),
    "missing_top_key": (('source = "unit test"\n', ""), "source"),
    "missing_compute_key": (("op_overhead_us = 5\n", ""), "compute.op_overhead_us"),
    "missing_memory_bandwidth": (("capacity_gb = 16\nbandwidth_gb_per_s = 1000",
                                  "capacity_gb = 16"), "memory[1].bandwidth_gb_per_s"),
    "missing_capacity": (("capacity_gb = 16\n", ""), "memory[1].capacity"),
    "two_capacities": (("capacity_gb = 16", "capacity_gb = 16\ncapacity_gib = 15"),
                       "memory[1].capacity"),
    "missing_power_table": (("[power]\nidle_w = 50\ntdp_w = 300\n", ""), "power"),
    "no_memory": (('[[memory]]\nname = "sram"\ncapacity_mib = 40\nbandwidth_gb_per_s = 5000\n\n'
                   '[[memory]]\nname = "hbm"\ncapacity_gb = 16\nbandwidth_gb_per_s = 1000\n', ""),
                  "memory"),
    "zero_bandwidth": (("bandwidth_gb_per_s = 1000", "bandwidth_gb_per_s = 0"),
                       "memory[1].bandwidth_gb_per_s"),
    "negative_capacity": (("capacity_mib = 40", "capacity_mib = -40"), "memory[0].capacity_mib"),
    "zero_peak": (("bf16 = 100", "bf16 = 0"), "compute.peak_tflops.bf16"),
    "negative_vector": (("vector_tflops = 10", "vector_tflops = -1"), "compute.vector_tflops"),
    "zero_overhead": (("op_overhead_us = 5", "op_overhead_us = 0"), "compute.op_overhead_us"),
    "zero_tdp": (("tdp_w = 300", "tdp_w = 0"), "power.tdp_w"),
    "zero_idle": (("idle_w = 50", "idle_w = 0"), "power.idle_w"),
    "zero_price": (("usd_per_hour = 1.5", "usd_per_hour = 0"), "price.usd_per_hour"),
    "string_number": (("tdp_w = 300", 'tdp_w = "300"'), "power.tdp_w"),
    "efficiency_above_one": (("matmul_efficiency = 0.8", "matmul_efficiency = 1.2"),
                             "compute.matmul_efficiency"),
    "efficiency_zero": (("memory_efficiency = 0.9", "memory_efficiency = 0"),
                        "compute.memory_efficiency"),
    "attention_efficiency_above_one": (
        ("memory_efficiency = 0.9", "memory_efficiency = 0.9\nattention_efficiency = 1.5"),
        "compute.attention_efficiency"),
    "matmul_memory_efficiency_zero": (
        ("memory_efficiency = 0.9", "memory_efficiency = 0.9\nmatmul_memory_efficiency = 0"),
        "compute.matmul_memory_efficiency"),
    "unknown_dtype": (("bf16 = 100", "bf61 = 100"), "compute.peak_tflops.bf61"),
    "non_compute_dtype": (("bf16 = 100", "int64 = 100"), "compute.peak_tflops.int64"),
    "empty_peaks": (("{ fp32 = 10, bf16 = 100 }", "{}"), "compute.peak_tflops"),
    "unknown_class": (('class = "gpu"', 'class = "gpgpu"'), "class"),
    "idle_above_tdp": (("idle_w = 50", "idle_w = 400"), "power.idle_w"),
    "function_efficiency_above_one": (("", "[functions]\ngelu = { efficiency = 2 }\n"),
                                      "functions.gelu.efficiency"),
    "function_negative_overhead": (("", "[functions]\ngelu = { overhead_us = -1 }\n"),
                                   "functions.gelu.overhead_us"),
    "function_unknown_key": (("", "[functions]\ngelu = { speed = 2 }\n"), "functions.gelu.speed"),
    "function_not_a_table": (("", "[functions]\ngelu = 0.5\n"), "functions.gelu"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_file_raises_one_line_naming_file_and_key(device_file, case):
    edit, key = BAD_CASES[case]
    path = device_file(edit, name=f"{case}.toml")
    with pytest.raises(SpecError) as info:
        load_device(path)
    message = str(info.value)
    assert "\n" not in message
    assert f"{case}.toml" in message
    assert key in message


def test_error_messages_say_the_fix(device_file):
    with pytest.raises(SpecError, match=r"choose one of gpu, tpu, cpu, fpga, accelerator"):
        load_device(device_file(('class = "gpu"', 'class = "gpgpu"')))
    with pytest.raises(SpecError, match=r"must be in \(0, 1\]"):
        load_device(device_file(("matmul_efficiency = 0.8", "matmul_efficiency = 2")))
    with pytest.raises(SpecError, match=r"allowed here"):
        load_device(device_file(("tdp_w = 300", "tdp_w = 300\nboost_w = 1")))


@pytest.mark.parametrize("name", ["h100-sxm5-80gb", "a100-sxm4-80gb", "tpu-v4", "xeon-8380",
                                  "t4", "v100-sxm2-32gb"])
def test_a_written_spec_keeps_every_architecture_fact(name):
    """A device without a source file is written out whole (``device_toml``): loading the text
    back gives the same architecture facts, the H100's tile fixed cost included, and the cited
    efficiencies calibration does not fit (the A100's attention and memory-bound matmul ones)."""
    import dataclasses

    from hardware_specs.loader import parse_device
    from hardware_specs.writer import device_toml

    device = dataclasses.replace(load_device(name), path=None)
    back = parse_device(device_toml(device).encode(), f"{name}.toml")
    assert back.architecture == device.architecture
    for key in ("attention_efficiency", "matmul_memory_efficiency", "fp8_matmul_efficiency",
                "fp32_matmul_efficiency", "conv_efficiency", "fp32_conv_efficiency"):
        assert getattr(back, key) == getattr(device, key)


@pytest.mark.parametrize("host", [None, 7e-6])
def test_a_written_spec_keeps_its_host_cost(host, tmp_path):
    """``host_overhead_s`` (TOML ``host_overhead_us``; None: the host issues at
    ``op_overhead_s``, so it is written only where it differs) survives a device written out
    whole and a calibrated copy, of a file that gives it too (its line replaced, not
    duplicated)."""
    import dataclasses

    from hardware_specs.loader import parse_device
    from hardware_specs.writer import calibrated_toml, device_toml

    device = dataclasses.replace(load_device("h100-sxm5-80gb"), host_overhead_s=host)
    whole = parse_device(device_toml(dataclasses.replace(device, path=None)).encode(), "h.toml")
    assert whole.host_overhead_s == (None if host is None else pytest.approx(host))
    file = tmp_path / "h100-cal.toml"
    file.write_text(calibrated_toml(device, dataclasses.replace(device, name="h100-cal"),
                                    "unit test"))
    again = load_device(str(file))
    assert again.host_overhead_s == whole.host_overhead_s
    faster = dataclasses.replace(again, host_overhead_s=3e-6)
    assert parse_device(calibrated_toml(again, faster, "unit test").encode(),
                        "h.toml").host_overhead_s == pytest.approx(3e-6)


# A spec's capacity is what its source means: a datasheet's "80 GB" of DRAM is a JEDEC GB
# (2**30 bytes, JESD100B.01), and where the total the driver reports is cited (nvidia-smi's
# MiB, rocm-smi's bytes; the figure cudaMemGetInfo and torch.cuda's total_memory give), that
# total. Read as 1e9 bytes, an H100 lost 5.5e9 of its 85.5e9 bytes.
REPORTED_TOTAL_BYTES = {
    "h100-sxm5-80gb": 81559 * 2**20,    # nvidia-smi (NVIDIA/nccl issue 1264; modal-client PR 2797)
    "h100-pcie-80gb": 81559 * 2**20,    # nvidia-smi (scaleway/docs-content, MIG how-to)
    "a100-sxm4-80gb": 81920 * 2**20,    # nvidia-smi (modal-labs/modal-client PR 2797)
    "a100-sxm4-40gb": 40960 * 2**20,    # nvidia-smi (modal-labs/modal-client PR 2797)
    "l40s": 46068 * 2**20,              # nvidia-smi, ECC on (modal-client PR 2797)
    "l4": 23034 * 2**20,                # nvidia-smi, ECC on (modal-client PR 2797)
    "t4": 15360 * 2**20,                # nvidia-smi, ECC on (modal-client PR 2797)
    "h200-sxm": 143771 * 2**20,         # nvidia-smi (sgl-project/sglang issue 3196)
    "b200": 183359 * 2**20,             # nvidia-smi (NVIDIA/TensorRT-LLM issue 10278)
    "gb200": 189471 * 2**20,            # nvidia-smi (vllm-project/vllm issue 24272)
    "mi300x": 206141652992,             # rocm-smi VRAM Total Memory (ROCm/legacy-rocm-build 4750)
}


@pytest.mark.parametrize("name", sorted(REPORTED_TOTAL_BYTES))
def test_capacity_is_the_total_the_driver_reports(name):
    assert load_device(name).memory_bytes == REPORTED_TOTAL_BYTES[name]


@pytest.mark.parametrize("name", ["h100-sxm5-80gb", "h200-sxm", "mi300x", "a100-sxm4-40gb",
                                  "graphcore-bow"])
def test_a_written_spec_keeps_its_capacity_to_the_byte(name):
    """The writer (calibrated copies, ``hwsim devices --write``) gives back the bytes it read:
    81559 MiB printed as ``capacity_gb = 85.5208100`` read back 190 kB short."""
    import dataclasses

    from hardware_specs.loader import parse_device
    from hardware_specs.writer import device_toml

    device = dataclasses.replace(load_device(name), path=None)
    back = parse_device(device_toml(device).encode(), f"{name}.toml")
    assert [m.capacity_bytes for m in back.memory] == [m.capacity_bytes for m in device.memory]
    if device.streaming_memory is not None:
        assert back.streaming_memory.capacity_bytes == device.streaming_memory.capacity_bytes
