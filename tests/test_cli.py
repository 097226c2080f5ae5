"""The ``hwsim`` command and ``simulate()``: the contract of DESIGN.md, end to end.

The CLI runs in this process through ``simulator.cli.main`` with its output captured, and as a
real subprocess (``python -m simulator.cli``) where the process itself is what is tested: a bad
input must give one line on stderr, a non-zero exit and nothing on stdout.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.cli import main

ROOT = Path(__file__).resolve().parents[1]
A100_SPEC = ROOT / "hardware_specs" / "devices" / "a100-sxm4-80gb.toml"
A100_BF16_PEAK = 312e12      # A100 datasheet, dense BF16 tensor-core peak
A100_CAPACITY = 80 * 2**30   # A100 datasheet, 80 GB HBM2e (nvidia-smi: 81920 MiB)

SUMMARY_KEYS = {"step_time_s", "samples_per_s", "tokens_per_s", "flops_per_step",
                "tflops_per_device", "mfu", "peak_memory_bytes", "memory_breakdown", "fits",
                "energy_j_per_step", "avg_power_w"}
BREAKDOWN_KEYS = {"weights", "gradients", "optimizer_states", "activations", "workspace"}
RUN_KEYS = {"total_time_s", "energy_kwh", "co2_kg", "cost_usd"}

# A tiny grouped-query SwiGLU transformer: fast to simulate, every optional field exercised.
TINY = dict(layers=2, hidden=64, heads=4, kv_heads=2, vocab=100, seq_len=32, ffn_hidden=96)
TINY_TOML = """\
[transformer]
layers = 2
hidden = 64
heads = 4
kv_heads = 2
vocab = 100
seq_len = 32
ffn_hidden = 96
ffn = "swiglu"
"""


def hwsim(*args: str, real: bool = False) -> subprocess.CompletedProcess:
    """Run ``hwsim ARGS`` from the repository root: in this process through
    ``simulator.cli.main`` (its stdout, stderr and exit status captured), or, with ``real``,
    as a subprocess, as a user runs it (``test_a_real_process_*`` keep that path covered)."""
    args = [str(arg) for arg in args]
    if real:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        return subprocess.run([sys.executable, "-m", "simulator.cli", *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=300)
    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(args)
            except SystemExit as stop:           # argparse's --help
                status = stop.code if isinstance(stop.code, int) else 1
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(args, status, out.getvalue(), err.getvalue())


def predict_json(*args: str) -> dict:
    proc = hwsim("predict", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def write_workload(tmp_path: Path, text: str, name: str = "work.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def tiny_toml_without(key: str) -> str:
    return "".join(line + "\n" for line in TINY_TOML.splitlines()
                   if not line.startswith(f"{key} "))


def tiny_toml_with(key: str, value: str) -> str:
    return tiny_toml_without(key) + f"{key} = {value}\n"


# -- bad input: one clear line, non-zero exit, no traceback, nothing on stdout ---------------------

def _negative_bandwidth_spec(tmp_path: Path) -> Path:
    """The A100 catalogue file with its first (main-memory) bandwidth made negative."""
    text, count = re.subn(r"(?m)^bandwidth_gb_per_s = (?=\d)", "bandwidth_gb_per_s = -",
                          A100_SPEC.read_text(), count=1)
    assert count == 1
    path = tmp_path / "broken-a100.toml"
    path.write_text(text)
    return path


def _non_utf8_workload(tmp_path: Path) -> Path:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"\xff\xfe[transformer]\n")
    return path


def _directory_workload(tmp_path: Path) -> Path:
    path = tmp_path / "dir.toml"
    path.mkdir()
    return path


# (id, function of tmp_path -> argv after "predict", words the message must contain)
BAD_CASES = [
    ("unknown-model", lambda t: ["gpt3-17b", "--device", "a100"], ["gpt3-17b"]),
    ("unknown-device", lambda t: ["gpt2-small", "--device", "a1000"], ["a1000"]),
    ("toml-missing-layers",
     lambda t: [write_workload(t, tiny_toml_without("layers")), "--device", "a100"],
     ["layers", "missing"]),
    ("toml-negative-hidden",
     lambda t: [write_workload(t, tiny_toml_with("hidden", "-64")), "--device", "a100"],
     ["hidden", "-64"]),
    ("toml-heads-not-dividing-hidden",
     lambda t: [write_workload(t, tiny_toml_with("heads", "6")), "--device", "a100"],
     ["heads", "6", "hidden"]),
    ("toml-kv-heads-not-dividing-heads",
     lambda t: [write_workload(t, tiny_toml_with("kv_heads", "3")), "--device", "a100"],
     ["kv_heads", "3"]),
    ("toml-zero-vocab",
     lambda t: [write_workload(t, tiny_toml_with("vocab", "0")), "--device", "a100"],
     ["vocab"]),
    ("toml-float-layers",
     lambda t: [write_workload(t, tiny_toml_with("layers", "2.5")), "--device", "a100"],
     ["layers", "2.5"]),
    ("toml-unknown-ffn",
     lambda t: [write_workload(t, tiny_toml_with("ffn", '"tanh"')), "--device", "a100"],
     ["ffn", "tanh"]),
    ("toml-does-not-parse",
     lambda t: [write_workload(t, "[transformer]\nlayers = = 2\n"), "--device", "a100"],
     ["TOML"]),
    ("toml-not-utf8", lambda t: [_non_utf8_workload(t), "--device", "a100"], ["TOML"]),
    ("toml-no-transformer-table",
     lambda t: [write_workload(t, "layers = 2\n"), "--device", "a100"], ["[transformer]"]),
    ("toml-unknown-key",
     lambda t: [write_workload(t, tiny_toml_with("dmodel", "64")), "--device", "a100"],
     ["dmodel"]),
    ("toml-no-such-file",
     lambda t: [t / "missing.toml", "--device", "a100"], ["missing.toml"]),
    ("toml-is-a-directory", lambda t: [_directory_workload(t), "--device", "a100"],
     ["dir.toml"]),
    ("bad-precision", lambda t: ["gpt2-small", "--device", "a100", "--precision", "fp64"],
     ["precision", "fp64"]),
    ("global-batch-not-multiple",
     lambda t: ["gpt2-small", "--device", "a100", "--global-batch", "3", "--micro-batch", "2"],
     ["global_batch", "3", "micro_batch"]),
    ("zero-micro-batch", lambda t: ["gpt2-small", "--device", "a100", "--micro-batch", "0"],
     ["micro_batch", "0"]),
    ("tokens-on-resnet",
     lambda t: ["resnet-50", "--device", "a100", "--tokens", "1e9"], ["tokens", "resnet-50"]),
    ("tokens-and-steps",
     lambda t: ["gpt2-small", "--device", "a100", "--tokens", "1e9", "--steps", "3"],
     ["--steps", "--tokens"]),
    ("negative-steps", lambda t: ["gpt2-small", "--device", "a100", "--steps", "-1"],
     ["steps", "-1"]),
    ("nan-tokens", lambda t: ["gpt2-small", "--device", "a100", "--tokens", "nan"],
     ["tokens", "nan"]),
    ("negative-tokens-exponent",      # a value, not an unknown option: the flag's own check
     lambda t: ["gpt2-small", "--device", "a100", "--tokens", "-1e9"], ["tokens", "-1e9", "> 0"]),
    ("negative-pue-exponent", lambda t: ["gpt2-small", "--device", "a100", "--pue", "-1.2E0"],
     ["pue", "-1.2E0"]),
    ("seq-len-on-cnn", lambda t: ["resnet-50", "--device", "a100", "--seq-len", "128"],
     ["seq-len", "resnet-50"]),
    ("tp-not-dividing-heads", lambda t: ["gpt2-small", "--device", "a100", "--tp", "5"],
     ["tp = 5", "heads = 12"]),
    ("devices-not-dp-tp-pp",
     lambda t: ["gpt2-small", "--device", "a100", "--num-devices", "8", "--dp", "2", "--tp",
                "2"], ["dp x tp x pp", "8"]),
    ("batch-not-divisible-over-dp",
     lambda t: ["gpt2-small", "--device", "a100", "--num-devices", "8", "--global-batch", "12"],
     ["global batch = 12", "dp"]),
    ("pp-not-dividing-layers",
     lambda t: ["gpt2-small", "--device", "a100", "--pp", "5"],
     ["pp = 5", "layers = 12", "--first-stage-layers"]),
    ("stage-layers-not-splitting",
     lambda t: ["gpt2-small", "--device", "a100", "--pp", "4", "--first-stage-layers", "4"],
     ["first_stage_layers = 4", "8 of layers = 12", "3 of pp = 4"]),
    ("cp-not-splitting-seq-len",
     lambda t: ["gpt2-small", "--device", "a100", "--cp", "3", "--attention", "fused"],
     ["2 x cp = 6", "seq_len = 1024"]),
    ("cp-on-a-cnn", lambda t: ["resnet-50", "--device", "a100", "--cp", "2"],
     ["cp = 2", "transformer"]),
    ("tp-on-a-cnn", lambda t: ["resnet-50", "--device", "a100", "--tp", "2"],
     ["tp = 2", "resnet-50"]),
    ("fsdp-whole-model-under-deepspeed",
     lambda t: ["gpt2-small", "--device", "a100", "--num-devices", "8", "--zero", "3",
                "--sharding", "deepspeed", "--fsdp-whole-model"],
     ["fsdp_whole_model", "sharding = deepspeed", "--sharding fsdp"]),
    ("unknown-cluster", lambda t: ["gpt2-small", "--cluster", "dgx-z9"], ["dgx-z9"]),
    ("zero-num-devices",
     lambda t: ["gpt2-small", "--device", "a100", "--num-devices", "0"], ["--num-devices"]),
    ("missing-device", lambda t: ["gpt2-small"], ["--device"]),
    ("device-negative-bandwidth",
     lambda t: ["gpt2-small", "--device", _negative_bandwidth_spec(t)],
     ["bandwidth_gb_per_s", "broken-a100.toml"]),
    ("device-spec-no-such-file",
     lambda t: ["gpt2-small", "--device", t / "nowhere.toml"], ["nowhere.toml"]),
]


@pytest.mark.parametrize("make_args, words", [c[1:] for c in BAD_CASES],
                         ids=[c[0] for c in BAD_CASES])
def test_bad_input_is_one_clear_line(tmp_path, make_args, words):
    proc = hwsim("predict", *make_args(tmp_path))
    assert proc.returncode != 0
    assert proc.stdout == "", "nothing may be written half-way"
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].strip(), proc.stderr
    for word in words:
        assert word in lines[0], f"{word!r} not named in: {lines[0]}"


def test_a_real_process_refuses_bad_input_in_one_line():
    proc = hwsim("predict", "gpt2-small", "--device", "a100", "--tp", "5", real=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_a_real_process_prints_the_same_json_as_main():
    proc = hwsim("predict", "gpt2-small", "--device", "a100", "--json", real=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == predict_json("gpt2-small", "--device", "a100")


def test_unknown_subcommand_is_one_line():
    proc = hwsim("simulate", "gpt2-small")
    assert proc.returncode != 0 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "simulate" in proc.stderr


def test_help_exits_zero():
    proc = hwsim("predict", "--help")
    assert proc.returncode == 0 and "--device" in proc.stdout


# -- good paths -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gpt2_json() -> dict:
    return predict_json("gpt2-small", "--device", "a100")


def test_predict_json_has_the_contract_keys(gpt2_json):
    assert SUMMARY_KEYS <= set(gpt2_json)
    assert set(gpt2_json["memory_breakdown"]) == BREAKDOWN_KEYS
    assert not RUN_KEYS & set(gpt2_json), "whole-run totals only with --tokens or --steps"
    for key in SUMMARY_KEYS - {"memory_breakdown", "fits"}:
        assert isinstance(gpt2_json[key], (int, float)) and gpt2_json[key] > 0, key
    assert isinstance(gpt2_json["fits"], bool)


def test_every_plan_field_is_a_flag_and_is_echoed(gpt2_json):
    """The plan flags, compare's and the JSON's "parallel" are made from Plan and ParallelPlan
    (``simulator.plan.fields``): a field added to either is a flag of predict with the
    dataclass's default (but micro_batch and dp, taken from the model and the devices), a flag
    of compare left unset, and a key of "parallel" (but micro_batches, which the batch gives,
    and the stage layers, echoed as stage_layers)."""
    from dataclasses import fields

    from simulator.cli.main import build_parser
    from simulator.plan import ParallelPlan, Plan
    from simulator.plan.fields import plain

    predict = build_parser().parse_args(["predict", "gpt2-small"])
    compare = build_parser().parse_args(["compare", "gpt2-small", "--devices", "a100"])
    for f in [*fields(Plan), *fields(ParallelPlan)]:
        if f.name == "micro_batches":
            assert not hasattr(predict, f.name)
            continue
        unset = f.name in ("micro_batch", "dp")
        assert getattr(predict, f.name) == (None if unset else plain(f.default)), f.name
        assert getattr(compare, f.name) is None, f.name
    echoed = {f.name for f in fields(ParallelPlan)} - {"micro_batches", "first_stage_layers",
                                                       "last_stage_layers"}
    assert echoed <= set(gpt2_json["parallel"])


def test_predict_json_is_internally_consistent(gpt2_json):
    s = gpt2_json
    step = s["step_time_s"]
    assert s["samples_per_s"] == pytest.approx(s["global_batch"] / step, rel=1e-12)
    assert s["tokens_per_s"] == pytest.approx(s["samples_per_s"] * 1024, rel=1e-12)
    assert s["tflops_per_device"] == pytest.approx(s["flops_per_step"] / step / 1e12, rel=1e-12)
    assert s["mfu"] == pytest.approx(s["tflops_per_device"] * 1e12 / A100_BF16_PEAK, rel=1e-12)
    assert 0 < s["mfu"] <= 1
    assert s["peak_memory_bytes"] == pytest.approx(sum(s["memory_breakdown"].values()),
                                                   rel=1e-12)
    assert s["energy_j_per_step"] >= s["avg_power_w"] * step * (1 - 1e-9)
    assert s["fits"] == (s["peak_memory_bytes"] <= A100_CAPACITY)
    assert s["fits"] is True  # GPT-2 small at batch 1 needs a few GB of 80


def test_predict_json_matches_simulate(gpt2_json):
    from simulator import simulate

    expected = simulate("gpt2-small", "a100").summary()
    assert gpt2_json.keys() == expected.keys()
    for key, value in expected.items():
        assert gpt2_json[key] == (pytest.approx(value, rel=1e-12)
                                  if isinstance(value, float) else value), key


def test_predict_tokens_adds_whole_run_totals(gpt2_json):
    s = predict_json("gpt2-small", "--device", "a100", "--tokens", "1e9")
    assert SUMMARY_KEYS | RUN_KEYS <= set(s)
    steps = 1e9 / (s["global_batch"] * 1024)
    assert s["total_time_s"] == pytest.approx(steps * s["step_time_s"], rel=1e-9)
    assert s["energy_kwh"] == pytest.approx(steps * s["energy_j_per_step"] / 3.6e6, rel=1e-9)
    assert s["co2_kg"] > 0
    assert s["cost_usd"] is None or s["cost_usd"] > 0  # None: the spec gives no price
    assert s["step_time_s"] == pytest.approx(gpt2_json["step_time_s"], rel=1e-12)


def test_predict_steps_totals():
    s = predict_json("gpt2-small", "--device", "a100", "--steps", "10", "--micro-batch", "2",
                     "--global-batch", "4")
    assert RUN_KEYS <= set(s)
    assert s["total_time_s"] == pytest.approx(10 * s["step_time_s"], rel=1e-12)
    assert (s["global_batch"], s["micro_batch"], s["micro_batches"]) == (4, 2, 2)
    assert s["samples_per_s"] == pytest.approx(4 / s["step_time_s"], rel=1e-12)


def test_predict_grad_clip_matches_simulate():
    """--grad-clip adds the global-norm pass over the gradients: the step's optimizer ops read
    4 more bytes per gradient (the fp32 copy the update works on), and the prediction is
    simulate()'s with grad_clip=True."""
    from simulator import simulate

    s = predict_json("gpt2-small", "--device", "a100", "--grad-clip")
    clipped = simulate("gpt2-small", "a100", grad_clip=True)
    plain = simulate("gpt2-small", "a100")
    assert s["step_time_s"] == pytest.approx(clipped.step_time_s, rel=1e-12)
    assert clipped.step_time_s > plain.step_time_s

    def optimizer_bytes(result):
        ops = result.ops
        return ops.loc[ops.phase == "optimizer", "bytes"].sum()
    assert optimizer_bytes(clipped) - optimizer_bytes(plain) == 4 * clipped.params


def test_predict_fp32_grads(gpt2_json):
    s = predict_json("gpt2-small", "--device", "a100", "--fp32-grads")
    assert s["memory_breakdown"]["gradients"] == 2 * gpt2_json["memory_breakdown"]["gradients"]
    assert s["memory_breakdown"]["weights"] == gpt2_json["memory_breakdown"]["weights"]


def test_predict_uneven_stages():
    s = predict_json("gpt2-small", "--device", "a100", "--pp", "4", "--first-stage-layers",
                     "2", "--last-stage-layers", "2")
    assert s["parallel"]["stage_layers"] == [2, 4, 4, 2]
    proc = hwsim("predict", "gpt2-small", "--device", "a100", "--pp", "4",
                 "--first-stage-layers", "2", "--last-stage-layers", "2")
    assert proc.returncode == 0 and "stage layers 2, 4 x 2, 2" in proc.stdout


def test_predict_context_parallel():
    s = predict_json("gpt2-small", "--device", "a100", "--cp", "2", "--num-devices", "4",
                     "--attention", "fused", "--global-batch", "4")
    assert s["parallel"]["cp"] == 2 and s["parallel"]["dp"] == 2
    proc = hwsim("predict", "gpt2-small", "--device", "a100", "--cp", "2", "--attention",
                 "fused")
    assert proc.returncode == 0 and "dp 1 x tp 1 x pp 1 x cp 2" in proc.stdout
    proc = hwsim("predict", "gpt2-small", "--device", "a100", "--cp", "2", "--attention",
                 "materialized")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "cp = 2" in proc.stderr and "--attention fused" in proc.stderr


def _tiny_params_by_hand(*, bias: bool, layernorm: bool, tied: bool, positions: bool) -> int:
    """Parameters of TINY counted layer by layer, independently of TransformerConfig."""
    h, f, v, s = TINY["hidden"], TINY["ffn_hidden"], TINY["vocab"], TINY["seq_len"]
    kv = TINY["kv_heads"] * h // TINY["heads"]            # 2 KV heads of 16 = 32
    norm = 2 * h if layernorm else h                        # LayerNorm: gain + bias
    attention = h * h + h * kv + h * kv + h * h             # q, k, v, o
    attention += (h + kv + kv + h) if bias else 0
    mlp = h * f + h * f + f * h                             # gate, up, down (SwiGLU)
    mlp += (f + f + h) if bias else 0
    layer = attention + mlp + 2 * norm                      # pre-norm before each block
    embedding = v * h + (s * h if positions else 0)
    head = norm + (0 if tied else v * h)                    # final norm (+ untied lm_head)
    return embedding + TINY["layers"] * layer + head


def test_toml_workload_predicts_with_closed_form_params(tmp_path):
    path = write_workload(tmp_path, TINY_TOML, "tiny-gqa.toml")
    s = predict_json(path, "--device", "a100", "--micro-batch", "2")
    # GPT-style defaults: biases, LayerNorm, tied embeddings, learned positions.
    assert s["params"] == _tiny_params_by_hand(bias=True, layernorm=True, tied=True,
                                               positions=True) == 71_424
    assert s["model"] == "tiny-gqa"
    assert s["tokens_per_s"] == pytest.approx(s["samples_per_s"] * TINY["seq_len"], rel=1e-12)
    assert SUMMARY_KEYS <= set(s)


def test_toml_workload_llama_style_params(tmp_path):
    text = TINY_TOML + ('name = "tiny-llama"\nnorm = "rmsnorm"\nbias = false\n'
                        'tied_embeddings = false\nlearned_positions = false\ndropout = false\n')
    s = predict_json(write_workload(tmp_path, text), "--device", "a100")
    assert s["model"] == "tiny-llama"
    assert s["params"] == _tiny_params_by_hand(bias=False, layernorm=False, tied=False,
                                               positions=False)


def test_human_output():
    proc = hwsim("predict", "gpt2-small", "--device", "a100", "--steps", "10")
    assert proc.returncode == 0, proc.stderr
    assert "step time" in proc.stdout and "whole run" in proc.stdout
    assert "J/step at" in proc.stdout and "mean device" not in proc.stdout   # one device
    assert proc.stderr == ""


def test_human_output_says_energy_is_per_device(tmp_path):
    """The energy line of several devices is one device's, the mean device's (as --json's
    energy_j_per_step and avg_power_w), not the system's (review finding: it did not say)."""
    out = hwsim("predict", write_workload(tmp_path, TINY_TOML), "--device", "a100",
                "--num-devices", "2").stdout
    assert "J/step at" in out and "per device (the mean device)" in out


def test_models_lists_the_zoo_with_params():
    proc = hwsim("models")
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()}
    for name in ("gpt3-175b", "llama2-70b", "resnet-50", "vit-b16", "bert-large", "mlp"):
        assert name in rows and "params" in rows[name], name
    assert "174,604.3M" in rows["gpt3-175b"]  # GPT-3 175B (Brown et al. 2020, Table 2.1)


def test_devices_lists_the_catalogue():
    proc = hwsim("devices")
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert "a100-sxm4-80gb" in rows and "312.0" in rows["a100-sxm4-80gb"]


def test_device_spec_file_is_accepted(tmp_path):
    path = tmp_path / "my-a100.toml"
    path.write_text(A100_SPEC.read_text())
    s = predict_json("gpt2-small", "--device", path)
    assert s["device"] == "a100-sxm4-80gb"


# -- the Python API -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def result():
    from simulator import simulate

    return simulate("gpt2-small", "a100", micro_batch=2)


def test_simulate_result_attributes(result):
    from simulator import Result

    assert isinstance(result, Result)
    summary = result.summary()
    for key in SUMMARY_KEYS:
        assert getattr(result, key) == summary[key], key
    assert result.micro_batch == result.global_batch == 2
    assert result.samples_per_s == pytest.approx(2 / result.step_time_s, rel=1e-12)
    assert result.mfu == pytest.approx(result.tflops_per_device * 1e12 / A100_BF16_PEAK,
                                       rel=1e-12)
    assert result.peak_memory_bytes == pytest.approx(sum(result.memory_breakdown.values()))
    assert result.totals == {}


def test_simulate_ops_dataframe(result):
    import pandas as pd

    ops = result.ops
    assert isinstance(ops, pd.DataFrame)
    assert len(ops) == len(result.lowered) > 100  # one row per op of the training graph
    for column in ("kind", "phase", "flops", "bytes", "compute_s", "memory_s", "bound",
                   "start_s", "end_s"):
        assert column in ops.columns, column
    assert set(ops["phase"]) >= {"forward", "backward", "optimizer"}
    assert set(ops["bound"]) <= {"compute", "memory"}
    assert ((ops["bound"] == "memory") == (ops["memory_s"] > ops["compute_s"])).all()
    assert (ops["end_s"] >= ops["start_s"]).all()
    # One micro-batch: the serial step is the sum of the op times.
    assert ops["end_s"].max() == pytest.approx(result.step_time_s, rel=1e-9)


def test_simulate_chrome_trace(result, tmp_path):
    path = result.to_chrome_trace(tmp_path / "t.json")
    trace = json.loads(Path(path).read_text())
    assert len(trace["traceEvents"]) == len(result.ops)
    assert all(e["ph"] == "X" and e["dur"] >= 0 for e in trace["traceEvents"])
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]  # no temporary left behind


@pytest.mark.parametrize("precision, peak", [("fp32", 19.5e12), ("tf32", 156e12),
                                             ("fp16", 312e12), ("bf16", 312e12)])
def test_mfu_uses_the_peak_of_the_precision(tmp_path, precision, peak):
    from simulator import simulate
    from workloads.zoo import load_workload_toml

    work = load_workload_toml(write_workload(tmp_path, TINY_TOML))
    r = simulate(work, "a100", precision=precision)
    assert r.mfu == pytest.approx(r.flops_per_step / r.step_time_s / peak, rel=1e-12)


def test_simulate_bad_input_raises_hwsim_error():
    from simulator import HwsimError, simulate

    with pytest.raises(HwsimError, match="a1000"):
        simulate("gpt2-small", "a1000")
    with pytest.raises(HwsimError, match="gpt3-17b"):
        simulate("gpt3-17b", "a100")
    with pytest.raises(HwsimError, match="precision"):
        simulate("gpt2-small", "a100", precision="fp64")
