"""Did you mean (issue 22, item 10): unknown model, device and cluster names suggest the closest
names (difflib), and the common spellings of a name are that name."""
import pytest

from simulator import simulate
from simulator.cli import main
from simulator.errors import SpecError, WorkloadError, canonical, did_you_mean
from hardware_specs.cluster import load_cluster
from hardware_specs.loader import load_device
from workloads.zoo import MODELS, get_workload


@pytest.mark.parametrize("spelled, name", [
    ("resnet50", "resnet-50"), ("ResNet-50", "resnet-50"), ("llama-3-8b", "llama3-8b"),
    ("Llama-2-7b-hf", "llama2-7b"), ("meta-llama/Llama-2-7b-hf", "llama2-7b"),
    ("Meta-Llama-3-8B", "llama3-8b"), ("gpt2", "gpt2-small"), ("bert-base-uncased", "bert-base"),
    ("GPT3_175B", "gpt3-175b"),
])
def test_common_spellings_are_the_zoo_name(spelled, name):
    assert get_workload(spelled) is MODELS[name]


def test_no_two_zoo_names_are_one_spelling():
    spellings = [canonical(name) for name in MODELS]
    assert len(set(spellings)) == len(spellings)


@pytest.mark.parametrize("spelled, name", [
    ("RTX4090", "rtx-4090"), ("H200_SXM", "h200-sxm"), ("MI300X", "mi300x"), ("tpu v4", "tpu-v4"),
])
def test_device_spellings(spelled, name):
    assert load_device(spelled).name == load_device(name).name


def test_unknown_names_suggest_the_closest():
    with pytest.raises(WorkloadError, match=r"unknown model 'lama2-7b' \(did you mean llama2-7b"):
        get_workload("lama2-7b")
    with pytest.raises(SpecError, match=r"unknown device 'h100-sxm' \(did you mean .*h100-sxm5-80gb"):
        load_device("h100-sxm")
    with pytest.raises(SpecError, match=r"unknown cluster 'dgx-a10' \(did you mean dgx-a100"):
        load_cluster("dgx-a10")
    assert did_you_mean("zzzz", ["a100", "h100"]) == ""
    for empty in ("", "  "):   # not read as the current folder
        with pytest.raises(WorkloadError, match="the model is empty: give a zoo name"):
            get_workload(empty)


def test_the_api_resolves_spellings_and_suggests():
    assert simulate("resnet50", "RTX4090", micro_batch=1).model == "resnet-50"
    with pytest.raises(WorkloadError, match="did you mean"):
        simulate("resnet5", "a100")
    # simulate's hardware names a device or a cluster preset: a misspelt preset is suggested
    with pytest.raises(SpecError, match=r"unknown device or cluster 'dgx-a10' \(did you mean "
                                        r"dgx-a100"):
        simulate("resnet50", "dgx-a10")
    # (a10 is a catalogue device since 2026-12-06: both are suggested)
    with pytest.raises(SpecError, match=r"unknown device 'a10O' \(did you mean a10, a100\?\)"):
        simulate("resnet50", "a10O")   # nothing close among the presets: the device error


@pytest.mark.parametrize("argv, fragment", [
    (["predict", "resnet5", "--device", "a100"], "(did you mean resnet-50"),
    (["predict", "resnet50", "--device", "a10O"], "(did you mean a10, a100"),
    (["predict", "llama2-7b", "--cluster", "dgx-h10"], "(did you mean dgx-h100"),
])
def test_cli_says_it_in_one_line_with_exit_2(capsys, argv, fragment):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and fragment in err
