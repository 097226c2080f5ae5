"""``hwsim devices`` prints the 16-bit matrix peak the datasheet gives, in the format it gives
it: bf16 where the device has bf16, fp16 where it has only fp16 (V100, T4, P100: no bf16 unit; a
bf16 plan runs there at the fp16 rate with a note), and "-" where it has neither (the
Snapdragon 8 Gen 3's NPU: int8 only; the Alveo FPGAs' fp32 and int8 figures), never the
fallback rate ``DeviceSpec.peak_for`` prices such a plan at."""
from hardware_specs.loader import list_devices, load_device
from simulator.cli.main import main
from simulator.graph.op import DType


def _rows(capsys) -> dict[str, list[str]]:
    assert main(["devices"]) == 0
    return {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()
            if line.strip() and not line.startswith(" ")}


def test_the_sixteen_bit_column_names_the_datasheet_format(capsys):
    rows = _rows(capsys)
    assert rows["v100-pcie-32gb"][2:4] == ["fp16", "112.0"]      # V100 PCIe datasheet
    assert rows["t4"][2:4] == ["fp16", "65.0"]
    assert rows["snapdragon-8g3"][2:4] == ["bf16", "-"]          # int8 only
    assert rows["a100-sxm4-80gb"][2:4] == ["bf16", "312.0"]
    for name in list_devices():
        device = load_device(name)
        label, value = rows[name][2:4]
        peaks = device.peak_flops_per_s
        if DType.BF16 in peaks:
            assert (label, float(value)) == ("bf16", round(peaks[DType.BF16] / 1e12, 1)), name
        elif DType.FP16 in peaks:
            assert (label, float(value)) == ("fp16", round(peaks[DType.FP16] / 1e12, 1)), name
        else:
            assert (label, value) == ("bf16", "-"), name
