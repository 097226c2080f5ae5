"""The device catalogue (issue 3): every file loads, cites its sources, and its headline figures.

Headline figures are checked exactly against the sources each file cites: NVIDIA H100 datasheet
(989.4 TFLOP/s bf16 dense, 3.35 TB/s, 80 GB), Cloud TPU v4 docs (275 TFLOP/s, 32 GiB,
1200 GB/s), AMD MI300X data sheet (1307.4 TFLOP/s bf16 dense, 192 GB, 5.3 TB/s), NVIDIA V100
datasheet (125 TFLOP/s fp16 tensor, no bf16 units).
"""
from __future__ import annotations

from importlib import resources

import pytest

from hardware_specs import host
from hardware_specs.loader import ALIASES, list_devices, load_device
from hardware_specs.spec import DeviceClass, LinkKind
from simulator.errors import SpecError
from simulator.graph.op import DType

REQUIRED = [
    "v100-sxm2-32gb", "a100-sxm4-40gb", "a100-sxm4-80gb", "a100-pcie-80gb", "h100-sxm5-80gb",
    "h100-pcie-80gb", "h200-sxm", "rtx-4090", "l4", "mi250x", "mi300x",
    "tpu-v3", "tpu-v4", "tpu-v5e", "tpu-v5p",
    "xeon-8380", "xeon-8480", "epyc-9654", "cpu-host",
    "alveo-u250", "alveo-u280", "versal-vck5000", "gaudi2", "trainium1", "graphcore-bow",
    "m2-ultra", "snapdragon-8g3",
]
FILES = [name for name in REQUIRED if name != host.HOST_NAME]

def device_text(name: str) -> str:
    return resources.files("hardware_specs").joinpath("devices", f"{name}.toml").read_text()


# ------------------------------------------------------------------------------- catalogue

def test_every_required_name_is_listed():
    listed = list_devices()
    assert [name for name in REQUIRED if name not in listed] == []


@pytest.mark.parametrize("name", sorted(set(list_devices()) - {host.HOST_NAME}))
def test_every_catalogue_file_loads_with_positive_figures(name):
    spec = load_device(name)
    assert spec.name == name
    assert spec.peak_flops_per_s and all(v > 0 for v in spec.peak_flops_per_s.values())
    assert spec.memory_bytes > 0 and spec.memory_bandwidth_bytes_per_s > 0
    assert 0 < spec.idle_power_w <= spec.tdp_w
    assert spec.path.endswith(f"{name}.toml")


@pytest.mark.parametrize("name", FILES)
def test_every_file_cites_sources_in_comments(name):
    """A cheap sanity check of 'every figure with its source in a comment'."""
    text = device_text(name)
    comments = [line for line in text.splitlines() if line.lstrip().startswith("#")
                or " # " in line]
    assert "source" in text.lower()
    assert len(comments) >= 8, f"{name}: only {len(comments)} comment lines"
    for section in ("[compute]", "[power]", "[[memory]]"):
        start = text.index(section)
        block = text[start:text.find("\n[", start + 1) if "\n[" in text[start + 1:] else None]
        assert "#" in block, f"{name}: {section} has no comment"


# ------------------------------------------------------------------------- headline figures

def test_h100_sxm_headline_figures():
    h100 = load_device("h100-sxm5-80gb")
    assert h100.peak_flops_per_s[DType.BF16] == 989.4e12         # dense, not 1979 sparse
    assert h100.peak_flops_per_s[DType.FP8] == 1978.9e12
    assert h100.memory_bandwidth_bytes_per_s == 3.35e12
    assert h100.memory_bytes == 81559 * 2**20   # nvidia-smi total (NVIDIA/nccl issue 1264)
    assert h100.tdp_w == 700
    assert h100.architecture.compute_units == 132


def test_tpu_v4_headline_figures():
    tpu = load_device("tpu-v4")
    assert tpu.device_class is DeviceClass.TPU
    assert tpu.peak_flops_per_s[DType.BF16] == 275e12
    assert tpu.memory_bytes == 32 * 2**30
    assert tpu.memory_bandwidth_bytes_per_s == 1200e9
    assert tpu.architecture.systolic_array == (128, 128)
    assert tpu.architecture.matrix_units_per_core == 4


def test_mi300x_headline_figures():
    mi300x = load_device("mi300x")
    assert mi300x.peak_flops_per_s[DType.BF16] == 1307.4e12     # dense, not 2614.9 sparse
    assert mi300x.memory_bytes == 206141652992   # rocm-smi (ROCm/legacy-rocm-build #4750)
    assert mi300x.memory_bandwidth_bytes_per_s == 5.3e12


def test_v100_has_no_bf16_units_so_bf16_runs_at_the_fp16_tensor_rate():
    v100 = load_device("v100-sxm2-32gb")
    assert v100.peak_flops_per_s[DType.FP16] == 125e12
    assert DType.BF16 not in v100.peak_flops_per_s
    assert v100.peak_for(DType.BF16) == 125e12                   # BF16 -> FP16 fallback
    assert v100.peak_for(DType.TF32) == 15.7e12                  # TF32 -> FP32 (CUDA cores)


def test_peaks_are_dense_not_sparse():
    """Sparse marketing figures are twice the dense ones: bf16 never exceeds fp8, etc."""
    for name in FILES:
        peaks = load_device(name).peak_flops_per_s
        if DType.BF16 in peaks and DType.FP8 in peaks:
            assert peaks[DType.FP8] <= 2.01 * peaks[DType.BF16], name  # datasheet rounding


# -------------------------------------------------------------------------------- aliases

@pytest.mark.parametrize("alias, name", [
    ("a100", "a100-sxm4-80gb"), ("h100", "h100-sxm5-80gb"), ("h200", "h200-sxm"),
    ("v100", "v100-sxm2-32gb"), ("mi300", "mi300x"), ("4090", "rtx-4090"),
    ("xeon", "xeon-8380")])
def test_aliases(alias, name):
    assert ALIASES[alias] == name
    assert load_device(alias).name == name


def test_every_alias_points_at_a_listed_device():
    assert set(ALIASES.values()) <= set(list_devices())


# ------------------------------------------------------------------------------- cpu-host

def test_cpu_host_loads_with_positive_figures():
    spec = load_device("cpu-host")
    assert spec.name == "cpu-host" and spec.device_class is DeviceClass.CPU
    assert spec.peak_flops_per_s[DType.FP32] > 0 and spec.vector_flops_per_s > 0
    assert spec.memory_bytes > 0 and spec.memory_bandwidth_bytes_per_s > 0
    arch = spec.architecture
    assert arch.compute_units >= 1 and arch.simd_width_bits in (128, 256, 512)
    expected = arch.compute_units * arch.clock_hz * arch.simd_width_bits / 32 * 2 * 2
    assert spec.peak_flops_per_s[DType.FP32] == pytest.approx(expected)
    bandwidths = [level.bandwidth_bytes_per_s for level in spec.memory]
    assert bandwidths == sorted(bandwidths, reverse=True)       # inner levels faster
    assert load_device("CPU-HOST") is spec                      # built once per process


def test_cpu_host_survives_a_machine_without_proc_or_sys(monkeypatch, tmp_path):
    monkeypatch.setattr(host, "_read", lambda path: None)
    monkeypatch.setattr(host, "_CPU", tmp_path / "missing")
    monkeypatch.setattr(host, "MAIN_MEMORY_COPY_BYTES", 2**20)
    host.host_device.cache_clear()
    try:
        spec = host.host_device()
        assert spec.architecture.simd_width_bits == 128
        assert spec.architecture.clock_hz == host.FALLBACK_CLOCK_HZ
        assert spec.memory_bytes > 0 and spec.peak_flops_per_s[DType.FP32] > 0
    finally:
        host.host_device.cache_clear()


def test_cpu_host_flag_parsing():
    assert host._simd_bits({"avx512f", "avx2"}) == 512
    assert host._simd_bits({"avx2"}) == 256
    assert host._simd_bits({"asimd"}) == 128
    assert host._cpu_count_in("0-3,8") == 5
    assert host._size_bytes("48K") == 48 * 1024 and host._size_bytes("32M") == 32 * 2**20


# ------------------------------------------------------------------- architecture and links

def test_links_and_architecture_parsed():
    h100 = load_device("h100")
    nvlink = next(link for link in h100.links if link.kind is LinkKind.NVLINK)
    assert nvlink.bandwidth_bytes_per_s == 450e9 and nvlink.count == 18
    assert nvlink.per_link_bytes_per_s == 25e9
    assert h100.architecture.matrix_tile == (128, 256, 64)
    assert h100.architecture.tile_fixed_k == 290
    assert h100.architecture.clock_hz == pytest.approx(1.98e9)
    tpu = load_device("tpu-v5p")
    assert tpu.links[0].kind is LinkKind.ICI
    assert load_device("alveo-u250").architecture.dsp_count == 12288


def test_optional_tables_parse(device_file):
    tables = """
[architecture]
compute_units = 4
clock_ghz = 1.5
matrix_tile = [64, 64, 16]
simd_width_bits = 256

[[links]]
name = "fast"
kind = "nvlink"
bandwidth_gb_per_s = 100
count = 4
latency_us = 2
"""
    energy = "tdp_w = 300\npj_per_flop = 0.5\npj_per_byte = 7"
    spec = load_device(device_file(("", tables), ("tdp_w = 300", energy)))
    assert spec.architecture.compute_units == 4
    assert spec.architecture.clock_hz == 1.5e9
    assert spec.architecture.matrix_tile == (64, 64, 16)
    assert spec.links[0].latency_s == pytest.approx(2e-6)
    assert spec.links[0].bandwidth_bytes_per_s == 100e9
    assert spec.energy_per_flop_j == pytest.approx(0.5e-12)
    assert spec.energy_per_byte_j == pytest.approx(7e-12)


def test_files_without_optional_tables_default():
    spec = load_device("xeon-8380")
    assert spec.links == () and spec.architecture.compute_units is None
    assert spec.energy_per_flop_j is None


LINK = '\n[[links]]\nname = "l"\nkind = "nvlink"\nbandwidth_gb_per_s = 100\n'
ARCH = "\n[architecture]\ncompute_units = 4\n"
# Each case: the edit (old, new) of the valid spec (conftest.DEVICE_TOML; an empty old appends
# new) and the key its one-line error must name.
BAD_TABLES = {
    "arch_unknown_key": (("", ARCH + "warp_size = 32\n"), "architecture.warp_size"),
    "arch_negative": (("", "\n[architecture]\ncompute_units = -4\n"),
                      "architecture.compute_units"),
    "arch_float_units": (("", "\n[architecture]\ncompute_units = 4.5\n"),
                         "architecture.compute_units"),
    "arch_bad_tile": (("", "\n[architecture]\nmatrix_tile = [128, 128]\n"),
                      "architecture.matrix_tile"),
    "arch_zero_systolic": (("", "\n[architecture]\nsystolic_array = [128, 0]\n"),
                           "architecture.systolic_array[1]"),
    "arch_zero_clock": (("", "\n[architecture]\nclock_ghz = 0\n"), "architecture.clock_ghz"),
    "link_negative_bandwidth": (("", LINK.replace("= 100", "= -100")),
                                "links[0].bandwidth_gb_per_s"),
    "link_bad_kind": (("", LINK.replace('"nvlink"', '"carrier-pigeon"')), "links[0].kind"),
    "link_unknown_key": (("", LINK + "lanes = 16\n"), "links[0].lanes"),
    "link_missing_kind": (("", LINK.replace('kind = "nvlink"\n', "")), "links[0].kind"),
    "link_zero_count": (("", LINK + "count = 0\n"), "links[0].count"),
    "link_not_array": (('source = "unit test"\n', 'source = "unit test"\nlinks = "nvlink"\n'),
                       "links"),
    "power_negative_pj": (("tdp_w = 300", "tdp_w = 300\npj_per_flop = -1"),
                          "power.pj_per_flop"),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_bad_optional_tables_raise_one_line_naming_the_key(device_file, case):
    edit, key = BAD_TABLES[case]
    with pytest.raises(SpecError) as info:
        load_device(device_file(edit, name=f"{case}.toml"))
    message = str(info.value)
    assert "\n" not in message and f"{case}.toml" in message and key in message


def test_bad_link_kind_lists_the_choices(device_file):
    with pytest.raises(SpecError, match="choose one of nvlink, infinity-fabric, ici, pcie"):
        load_device(device_file(("", LINK.replace('"nvlink"', '"smoke-signal"'))))
