"""A written spec reads back as the spec it was written from (``hardware_specs.writer``).

``device_toml`` writes a device built at run time or changed by a what-if (``--set``,
``hardware_specs.override``); the file must predict what the spec in memory does. Before
2026-12-05 it left out ``Architecture.reference_units`` (a what-if with more SMs then priced
its GEMMs against the reference at the new count: the A100 PCIe at 128 SMs 0.07 % slower on a
tiny fp32 step, read back) and rounded every figure to six digits (the A100 PCIe's
purchase_usd 16338.77 read back as 16338.8).
"""
from __future__ import annotations

import dataclasses
import math
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware_specs import units
from hardware_specs.loader import list_devices, load_device, parse_device
from hardware_specs.override import override
from hardware_specs.writer import _figure, device_toml
from simulator import simulate
from simulator.errors import SpecError
from workloads.transformer import TransformerConfig

TINY = TransformerConfig(name="tiny", layers=2, hidden=128, heads=4, vocab=256, seq_len=64)


def _read_back(device):
    return parse_device(device_toml(device).encode(), "written.toml")


def _differences(a, b) -> list[str]:
    """The DeviceSpec fields in which ``a`` and ``b`` differ (the file path aside)."""
    return [f.name for f in dataclasses.fields(a)
            if f.name != "path" and getattr(a, f.name) != getattr(b, f.name)]


@pytest.mark.parametrize("name", [n for n in list_devices() if n != "cpu-host"])
def test_every_catalogue_spec_reads_back_as_itself(name):
    """Every field but the path, exactly (``cpu-host``, built at run time, is not a product:
    its ``Unpriced`` records without a search date are not file keys, and no figure of a
    prediction reads them)."""
    device = load_device(name)
    assert _differences(device, _read_back(device)) == []


def test_a_what_if_with_more_sms_predicts_the_same_read_back():
    """The defect itself: 128 SMs on the A100 PCIe (108), fp32 so that the CUDA-core tiles of
    ``efficiency.fp32_tiles`` price the GEMMs against the reference at the measured 108 SMs."""
    more = override(load_device("a100-pcie-80gb"), {"architecture.compute_units": 128})
    again = _read_back(more)
    assert again.architecture.reference_units == 108
    assert again.architecture == more.architecture
    assert (simulate(TINY, again, global_batch=8, precision="fp32").summary()
            == simulate(TINY, more, global_batch=8, precision="fp32").summary())


_DEVICES = ("a100-pcie-80gb", "h100-sxm5-80gb", "mi300x", "tpu-v4")


@given(name=st.sampled_from(_DEVICES), units_factor=st.floats(0.25, 3.0),
       gb_per_s=st.floats(50.0, 20000.0), tdp_w=st.floats(50.0, 2000.0),
       efficiency=st.floats(0.05, 1.0), overhead_us=st.floats(0.1, 100.0),
       bf16_tflops=st.floats(10.0, 5000.0), precision=st.sampled_from(["fp32", "bf16"]))
@settings(max_examples=25, deadline=None)
def test_a_written_what_if_predicts_what_it_did(name, units_factor, gb_per_s, tdp_w,
                                                efficiency, overhead_us, bf16_tflops,
                                                precision):
    """A what-if over a few fields (SMs, bandwidth, TDP, efficiency, overhead, peak), each
    figure one a spec file can hold (a decimal in the file's unit, as the loader converts it),
    written and read back: the same spec, field for field, and the same prediction, every
    figure of its summary."""
    device = load_device(name)
    changes = {"memory.main.bandwidth_bytes_per_s": units.gb_per_s_to_bytes_per_s(gb_per_s),
               "tdp_w": max(tdp_w, device.idle_power_w), "matmul_efficiency": efficiency,
               "op_overhead_s": units.us_to_s(overhead_us),
               "peak_flops_per_s.bf16": units.tflops_to_flops_per_s(bf16_tflops)}
    if device.architecture.compute_units:
        changes["architecture.compute_units"] = max(
            1, round(device.architecture.compute_units * units_factor))
    changed = override(device, changes)
    again = _read_back(changed)
    assert _differences(changed, again) == []
    assert (simulate(TINY, again, global_batch=8, precision=precision).summary()
            == simulate(TINY, changed, global_batch=8, precision=precision).summary())


@given(value=st.floats(1e-15, 1e18), factor=st.sampled_from(
    [1.0, units.US, units.PJ, units.GB_PER_S, units.TFLOPS, units.GHZ, units.GB]))
def test_a_figure_reads_back_within_a_unit_in_the_last_place(value, factor):
    """Any SI figure, written in the file's unit and multiplied back as the loader does, is
    itself or its float neighbour (one arbitrary decimal in twenty is no decimal x factor);
    one that is a decimal x factor, exactly itself."""
    read = tomllib.loads(f"x = {_figure(value, factor)}")["x"] * factor
    assert abs(read - value) <= math.ulp(value)
    held = value / factor
    assert tomllib.loads(f"x = {_figure(held * factor, factor)}")["x"] * factor == held * factor


def test_reference_units_needs_compute_units():
    """A file's ``reference_units`` without ``compute_units`` is one line naming both."""
    text = device_toml(load_device("tpu-v4"))
    assert "\ncompute_units = 2\n" in text
    text = text.replace("\ncompute_units = 2\n", "\nreference_units = 2\n")
    with pytest.raises(SpecError, match="reference_units needs compute_units"):
        parse_device(text.encode(), "bad.toml")


def _with_caches(device):
    """``device`` with cpu-host's kind of memory levels (``hardware_specs.host``): a private L2
    (each core its own; capacity the sum over the cores), a shared L3, then main memory."""
    from hardware_specs.spec import MemoryLevel

    main = device.main_memory
    return dataclasses.replace(device, path="<cpu-host>", architecture=dataclasses.replace(
        device.architecture, compute_units=40), memory=(
        MemoryLevel("l2", 80 * units.MIB, 103.4e9, private=True),
        MemoryLevel("l3", 60 * units.MIB, 27.8e9), main))


def test_memory_levels_read_back_with_their_private_flag():
    """Every memory level, ``MemoryLevel.private`` included (added by 42486e8 and not written
    until 2026-12-05: a calibrated cpu-host spec read back had a shared L2, and one thread of it
    was priced with the whole chip's L2 instead of one core's)."""
    from hardware_specs.host import on_cores

    device = _with_caches(load_device("xeon-8380"))
    again = _read_back(device)
    assert [level.private for level in again.memory] == [True, False, False]
    assert _differences(device, again) == []
    # one thread of the read-back spec has one core's L2, 80 MiB / 40 cores = 2 MiB
    assert on_cores(again, 1).memory == on_cores(device, 1).memory
    assert on_cores(again, 1).memory[0].capacity_bytes == 2 * units.MIB
    assert on_cores(again, 1).memory[1].capacity_bytes == 60 * units.MIB


def test_a_calibrated_built_device_keeps_its_private_levels():
    """``calibrated_toml`` of a device with no source file (cpu-host: ``device_toml`` whole)."""
    from hardware_specs.writer import calibrated_toml

    device = _with_caches(load_device("xeon-8380"))
    calibrated = dataclasses.replace(device, name="xeon-8380-calibrated",
                                     memory_efficiency=0.5)
    again = parse_device(calibrated_toml(device, calibrated, "a test").encode(), "c.toml")
    assert again.memory == device.memory
    assert again.memory_efficiency == 0.5


def test_private_must_be_a_boolean():
    text = device_toml(_with_caches(load_device("xeon-8380")))
    assert "\nprivate = true\n" in text
    with pytest.raises(SpecError, match=r"memory\[0\]\.private.*must be true or false"):
        parse_device(text.replace("\nprivate = true\n", '\nprivate = "yes"\n').encode(),
                     "bad.toml")
