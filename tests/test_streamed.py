"""Seed systems done properly (issue 24, item 2): a Graphcore IPU's streaming memory
(simulator.schedule.streamed: model states off chip, streamed in per phase, priced in closed
form) and the refusals of what no stack trains (Snapdragon 16-bit, one line, exit 2)."""
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardware_specs.loader import load_device, parse_device
from hardware_specs.spec import MemoryLevel
from hardware_specs.writer import device_toml
from simulator import simulate
from simulator.cli import main
from simulator.errors import SpecError
from simulator.schedule.streamed import moved_bytes

BOW = load_device("graphcore-bow")
ON_CHIP_ONLY = replace(BOW, streaming_memory=None)
# gpt2-small: the largest op is the token embedding, 50,257 x 768 of 124,439,808 parameters
# (GPT-2 small as published; hwsim's zoo preset)
WTE_SHARE = 50257 * 768 / 124_439_808


def test_the_bow_spec_cites_its_streaming_memory():
    level = BOW.streaming_memory
    assert level.capacity_bytes == 64 * 2**30      # 256 GB (JEDEC) per Bow-2000 / 4 IPUs
    # PCIe Gen4 x8, per direction: 16 GT/s x 8 lanes x 128/130 (encoding) / 8 bits
    assert level.bandwidth_bytes_per_s == pytest.approx(16e9 * 8 * 128 / 130 / 8, rel=1e-3)
    assert BOW.memory_bytes == 900e6                # 3.6 GB per Bow-2000 / 4 IPUs


@pytest.mark.parametrize("global_batch", [1, 4])
def test_gpt2_small_fits_a_bow_ipu_with_its_states_streamed(global_batch):
    """Without streaming memory gpt2-small's 2.6 GB does not fit the IPU's 0.9 GB of SRAM;
    with it the weights, gradients and Adam states live off chip and the step pays
    ((2m + 1) W + 2m G + 2S) bytes at the link's bandwidth, nothing else moving."""
    plain = simulate("gpt2-small", ON_CHIP_ONLY, micro_batch=1, global_batch=global_batch)
    assert not plain.fits
    streamed = simulate("gpt2-small", BOW, micro_batch=1, global_batch=global_batch)
    assert streamed.fits
    m = global_batch
    assert streamed.micro_batches == plain.micro_batches == m
    mem = plain.memory_breakdown
    moved = moved_bytes(mem["weights"], mem["gradients"], mem["optimizer_states"], m)
    assert moved == (2 * m + 1) * mem["weights"] + 2 * m * mem["gradients"] \
        + 2 * mem["optimizer_states"]
    assert streamed.step_time_s - plain.step_time_s == pytest.approx(moved / 15.75e9,
                                                                     rel=1e-9)
    on_chip = streamed.memory_breakdown
    assert on_chip["optimizer_states"] == 0
    assert on_chip["weights"] == pytest.approx(mem["weights"] * WTE_SHARE)
    assert on_chip["gradients"] == pytest.approx(mem["gradients"] * WTE_SHARE)
    assert on_chip["activations"] == mem["activations"]
    assert streamed.peak_memory_bytes == pytest.approx(sum(on_chip.values()))
    assert streamed.flops_per_step == plain.flops_per_step
    assert any("streamed in per phase" in note for note in streamed.notes)
    # the IPU idles while the states stream: at least idle power over the added time
    assert streamed.energy_j_per_step - plain.energy_j_per_step >= \
        BOW.idle_power_w * (streamed.step_time_s - plain.step_time_s) * (1 - 1e-9)


def test_optimizer_states_alone_go_off_chip_when_the_rest_fits():
    """Tier 1: with full recomputation gpt2-small's weights, gradients and activations fit
    on chip (0.83 GB of 0.9); only the Adam states live off chip, 2S bytes per step."""
    plain = simulate("gpt2-small", ON_CHIP_ONLY, micro_batch=1, global_batch=4,
                     recompute="full")
    assert not plain.fits
    streamed = simulate("gpt2-small", BOW, micro_batch=1, global_batch=4, recompute="full")
    assert streamed.fits
    mem = plain.memory_breakdown
    moved = moved_bytes(mem["weights"], mem["gradients"], mem["optimizer_states"], 4,
                        phased=False)
    assert moved == 2 * mem["optimizer_states"]
    assert streamed.step_time_s - plain.step_time_s == pytest.approx(moved / 15.75e9,
                                                                     rel=1e-9)
    on_chip = streamed.memory_breakdown
    assert on_chip["weights"] == mem["weights"] and on_chip["gradients"] == mem["gradients"]
    assert on_chip["optimizer_states"] == 0
    assert any("its optimizer states" in n and "streamed through the update" in n
               for n in streamed.notes)
    # fewer bytes than phasing the weights in too, so faster than tier 2 would be
    assert moved < moved_bytes(mem["weights"], mem["gradients"], mem["optimizer_states"], 4)


def test_nothing_streams_when_the_step_fits_on_chip():
    small = simulate("resnet50", BOW, micro_batch=8)
    assert small.fits
    assert small.step_time_s == simulate("resnet50", ON_CHIP_ONLY, micro_batch=8).step_time_s
    assert not any("streaming memory" in note for note in small.notes)


def test_states_beyond_the_streaming_memory_do_not_fit():
    tiny = replace(BOW, streaming_memory=MemoryLevel("ddr4", 1e9, 15.75e9))
    result = simulate("gpt2-small", tiny, micro_batch=1)
    assert not result.fits
    assert result.step_time_s == simulate("gpt2-small", ON_CHIP_ONLY,
                                          micro_batch=1).step_time_s


def test_streaming_memory_round_trips_and_bad_tables_are_one_line():
    again = parse_device(device_toml(BOW).encode(), "bow.toml")
    assert again.streaming_memory == BOW.streaming_memory
    text = device_toml(BOW).replace("bandwidth_gb_per_s = 15.75\n", "")
    with pytest.raises(SpecError, match="streaming_memory") as err:
        parse_device(text.encode(), "bow.toml")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_snapdragon_16bit_is_refused_in_one_line(precision, capsys):
    code = main(["predict", "gpt2-small", "--device", "snapdragon-8g3",
                 "--precision", precision])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "no released framework trains on its GPU or NPU" in err
    assert "choose fp32" in err
    assert main(["predict", "gpt2-small", "--device", "snapdragon-8g3", "--precision",
                 "fp32", "--micro-batch", "1"]) == 0


@pytest.mark.parametrize("device", ["alveo-u280", "alveo-u250", "versal-vck5000"])
def test_an_fpga_prediction_says_no_framework_trains_on_it(device):
    result = simulate("gpt2-small", device, micro_batch=1, precision="fp32")
    notes = [n for n in result.notes if "no released framework trains on it" in n]
    assert len(notes) == 1 and notes[0].startswith(f"{device} is an FPGA")
    assert "Vitis AI runs inference only" in notes[0]
    assert not any("no released framework" in n
                   for n in simulate("gpt2-small", "a100", micro_batch=1).notes)


def test_hwsim_devices_lists_each_source_and_the_streaming_memory(capsys):
    from hardware_specs.loader import list_devices
    assert main(["devices"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in list_devices():
        row = next(i for i, line in enumerate(lines) if line.split()[0] == name)
        assert lines[row + 1].split(None, 1) == ["source:", load_device(name).source], name
    bow = next(line for line in lines if line.startswith("graphcore-bow "))
    assert "mem    0.8 GiB at  65000 GB/s + 64 GiB streaming at 16 GB/s" in bow   # 900 MB, 64 GiB
    assert "streaming" not in next(line for line in lines if line.startswith("a100-sxm4-80gb "))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from(["gpt2-small", "bert-base", "gpt2-medium"]),
       seq_len=st.sampled_from([128, 512, 1024]), m=st.integers(1, 4),
       recompute=st.sampled_from(["none", "full"]),
       gb_per_s=st.floats(1.0, 100.0))
def test_streaming_only_ever_adds_its_closed_form(model, seq_len, m, recompute, gb_per_s):
    """Whatever the model and plan: with streaming memory a step either runs as without it
    (it fitted on chip, or its states exceed the streaming memory too) or fits on chip and
    takes exactly its tier's bytes over the link's bandwidth longer; FLOPs never move."""
    device = replace(BOW, streaming_memory=MemoryLevel("ddr4", 64e9, gb_per_s * 1e9))
    kwargs = {"micro_batch": 1, "global_batch": m, "recompute": recompute,
              "seq_len": seq_len}
    plain = simulate(model, ON_CHIP_ONLY, **kwargs)
    streamed = simulate(model, device, **kwargs)
    assert streamed.flops_per_step == plain.flops_per_step
    notes = [n for n in streamed.notes if "streaming memory" in n]
    if plain.fits or not notes:
        assert not notes and streamed.step_time_s == plain.step_time_s
        assert streamed.fits == plain.fits
        return
    assert streamed.fits and streamed.peak_memory_bytes <= BOW.memory_bytes
    mem = plain.memory_breakdown
    phased = "per phase" in notes[0]
    moved = moved_bytes(mem["weights"], mem["gradients"], mem["optimizer_states"], m, phased)
    assert streamed.step_time_s - plain.step_time_s == pytest.approx(moved / (gb_per_s * 1e9),
                                                                     rel=1e-9)
