"""simulate() takes every plan and parallel field as a keyword, and seq_len (issue 22, item 1):
the same figures as the CLI's flags; a wrong keyword is hwsim's own one-line PlanError."""
import json

import pytest

from simulator import ParallelPlan, Plan, PlanError, simulate
from simulator.cli import main


def cli(argv, capsys):
    assert main(argv + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_parallel_keywords_equal_the_cli_flags(capsys):
    api = simulate("gpt3-1.3b", "a100", num_devices=8, tp=2, zero=1, micro_batch=4)
    flags = cli(["predict", "gpt3-1.3b", "--device", "a100", "--num-devices", "8", "--tp",
                 "2", "--zero", "1", "--micro-batch", "4"], capsys)
    assert api.parallel["dp"] == 4 and api.parallel["tp"] == 2 and api.parallel["zero"] == 1
    assert api.step_time_s == flags["step_time_s"]
    assert api.peak_memory_bytes == flags["peak_memory_bytes"]


def test_tp_alone_sizes_the_devices():
    result = simulate("gpt2-small", "a100", tp=2, micro_batch=1)
    assert result.num_devices == 2 and result.parallel["dp"] == 1


def test_seq_len_keyword_equals_the_flag(capsys):
    api = simulate("gpt2-small", "a100", seq_len=512, micro_batch=2)
    flags = cli(["predict", "gpt2-small", "--device", "a100", "--seq-len", "512",
                 "--micro-batch", "2"], capsys)
    assert api.tokens_per_s == flags["tokens_per_s"] == pytest.approx(api.samples_per_s * 512)


@pytest.mark.parametrize("kwargs, message", [
    ({"tensor_parallel": 2}, "unknown keyword 'tensor_parallel'"),
    ({"microbatch": 2}, "(did you mean micro_batch"),
    ({"seq_len": 0}, "seq_len = 0 must be a positive integer"),
    ({"seq_len": 128, "parallel": ParallelPlan(tp=2), "tp": 2}, "not both"),
    ({"tp": "2"}, "tp = '2' must be a positive integer"),
])
def test_a_wrong_keyword_is_a_plan_error(kwargs, message):
    with pytest.raises(PlanError) as err:
        simulate("gpt2-small", "a100", **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_seq_len_of_a_model_without_tokens_is_refused():
    with pytest.raises(PlanError, match="language models, not resnet-50"):
        simulate("resnet-50", "a100", seq_len=128)


def test_plan_and_its_fields_together_are_refused():
    with pytest.raises(PlanError, match="not both"):
        simulate("gpt2-small", "a100", Plan(micro_batch=2), micro_batch=2)


@pytest.mark.torch
def test_an_imported_module_runs_its_example_inputs_batch():
    pytest.importorskip("torch")
    import runpy

    module, inputs = runpy.run_path("tests/models/cnn_model.py")["factory"]()
    result = simulate((module, inputs), "a100")
    assert result.micro_batch == 8 == inputs[0].shape[0]
    with pytest.raises(PlanError, match="fix the batch at 8"):
        simulate((module, inputs), "a100", micro_batch=4)
