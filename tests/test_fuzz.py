"""Hostile input, generated (issue 23): every command line, spec file, workload file, cluster
file and ``simulate()`` call either answers -- exit 0, JSON without NaN or Infinity whose figures
keep the output invariants (``simulator.report.check``) -- or refuses in one line: exit 2, exactly
one stderr line "hwsim: error: ...", nothing on stdout, no traceback. An internal error (exit
70, ``InternalError``) or any other exception fails. And ZeRO stage k + 1 never needs more
memory per device than stage k, but where stage 3's gathered weights exceed what it shards.

The CLI runs in-process (``simulator.cli.main``), on small models, so that the 2,520 generated
cases (derandomized: the same ones every run) take about 40 s on two shared cores. Slow tier:
``python -m pytest -m slow tests/test_fuzz.py``.
"""
from __future__ import annotations

import contextlib
import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hardware_specs.loader import list_devices, load_device
from simulator import HwsimError, ParallelPlan, Plan, simulate
from simulator.schedule.memory import zero3_gathered_params
from tests.conftest import DEVICE_TOML
from tests.test_hostile import run
from workloads.transformer import TransformerConfig

pytestmark = pytest.mark.slow

FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
DEVICES = [d for d in list_devices() if d != "cpu-host"]  # cpu-host times its memory at load
TINY = """[transformer]
layers = 2
hidden = 64
heads = 4
vocab = 100
seq_len = 32
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A folder with a tiny workload, a folder named x.csv and a FIFO named x.toml."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "tiny.toml").write_text(TINY)
    (root / "dir.csv").mkdir()
    with contextlib.suppress(OSError, AttributeError):
        import os
        os.mkfifo(root / "fifo.toml")
    return root


# ------------------------------------------------------------------------------- the checks

def _reject(constant: str):
    raise AssertionError(f"JSON with {constant}")


def assert_answer_or_one_line(code: int, out: str, err: str, json_out: bool = False) -> None:
    event(f"exit {code}")
    assert "Traceback" not in err and "Traceback" not in out
    if code == 2:
        assert out == "", "nothing may be written before a refusal"
        assert err.count("\n") == 1 and err.startswith("hwsim: error: "), err
        return
    assert code == 0, f"exit {code}: {err}"
    if json_out:
        assert_invariants(json.loads(out, parse_constant=_reject))


def assert_invariants(summary: dict) -> None:
    """The output invariants a JSON answer can show (simulate() checked the rest)."""
    mfu, hfu = summary["mfu"], summary["hfu"]
    assert 0 <= mfu <= hfu * (1 + 1e-9) and hfu <= 1 + 1e-9, (mfu, hfu)
    parts, peak = summary["memory_breakdown"], summary["peak_memory_bytes"]
    assert all(v >= 0 for v in parts.values())
    assert sum(parts.values()) == pytest.approx(peak, rel=1e-9)
    assert summary["fits"] == (peak <= summary["memory_capacity_bytes"])
    assert summary["step_time_s"] > 0 and summary["energy_j_per_step"] >= 0
    for key in ("energy_kwh", "co2_kg", "total_time_s"):
        if key in summary:
            assert summary[key] >= 0 and math.isfinite(summary[key])


# --------------------------------------------------------------------------- the strategies

#: Numbers as a user might type them, hostile ones included.
NUMBER_TEXT = st.one_of(
    st.integers(1, 8).map(str), st.integers(-10**20, 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e308", "1e-300", "0", "-0", "0x10", "1_000", "",
                     " ", "abc", "1e9999", "2**40", "3.5", "-1"]),
    st.text(max_size=12))
SET_PATHS = ["tdp_w", "idle_power_w", "price_per_hour_usd", "op_overhead_s", "vector_flops_per_s",
             "matmul_efficiency", "memory_efficiency", "peak_flops_per_s.bf16",
             "peak_flops_per_s.fp8", "memory.main.capacity_bytes",
             "memory.main.bandwidth_bytes_per_s", "architecture.compute_units",
             "architecture.matrix_tile", "energy_per_flop_j", "name", "no.such.path", ""]


@st.composite
def mostly(draw, plausible, hostile=None):
    """Seven draws in eight from ``plausible``, one from ``hostile`` (``NUMBER_TEXT``): a case
    is hostile in one or two places, so that most reach the model and its figures."""
    if draw(st.integers(0, 7)) != 5:
        return draw(plausible)
    return draw(NUMBER_TEXT if hostile is None else hostile)


@st.composite
def predict_argv(draw, root: Path) -> list[str]:
    model = draw(mostly(st.sampled_from([str(root / "tiny.toml"), "mlp", "gpt2-small"]),
                        st.sampled_from([str(root / "fifo.toml"), str(root / "missing.toml"),
                                         "no-such-model", "x" * 300, str(root)])))
    device = draw(mostly(st.sampled_from(DEVICES), st.sampled_from(
        ["nope", "a100 ", "A100", "x" * 300, "../../etc/passwd", str(root / "fifo.toml"),
         str(root), "\x1b[31mred", ""])))
    argv = ["predict", model, "--device", device, "--json"]
    flags = {"--micro-batch": mostly(st.integers(1, 8).map(str)),
             "--global-batch": mostly(st.sampled_from(["8", "16", "64"])),
             "--num-devices": mostly(st.sampled_from(["1", "2", "4", "8"]),
                                     st.sampled_from(["0", "-1", "3", "10**9", "99999999"])),
             "--tp": mostly(st.sampled_from(["1", "2", "4"])),
             "--pp": mostly(st.sampled_from(["1", "2"])), "--cp": mostly(st.just("2")),
             "--dp": mostly(st.sampled_from(["1", "2"])),
             "--zero": mostly(st.sampled_from(["0", "1", "2", "3"]), st.just("4")),
             "--recompute": mostly(st.sampled_from(["none", "selective", "full"]),
                                   st.just("half")),
             "--precision": mostly(st.sampled_from(["fp32", "bf16", "fp16", "fp8", "tf32"]),
                                   st.just("fp64")),
             "--attention": mostly(st.sampled_from(["fused", "materialized"]), st.just("x")),
             "--steps": mostly(st.sampled_from(["1", "1000", "1e6"])),
             "--tokens": mostly(st.sampled_from(["1e9", "3e12"])),
             "--pue": mostly(st.sampled_from(["1.1", "1.5"])),
             "--grid": mostly(st.sampled_from(["0", "0.4"])),
             "--node-overhead-w": mostly(st.sampled_from(["0", "2000"])),
             "--seq-len": mostly(st.sampled_from(["16", "32", "64"]),
                                 st.sampled_from(["0", "-4", "1048576", "x"]))}
    for flag in draw(st.lists(st.sampled_from(sorted(flags)), max_size=4, unique=True)):
        argv += [flag, draw(flags[flag])]
    if draw(st.integers(0, 2)) == 0:
        path = draw(st.sampled_from(SET_PATHS))
        argv += ["--set", f"{path}={draw(mostly(PLAUSIBLE_SET.get(path, NUMBER_TEXT)))}"]
    return argv


#: Values a what-if study might --set (in SI units).
PLAUSIBLE_SET = {
    "tdp_w": st.sampled_from(["300", "700", "1000"]), "idle_power_w": st.just("60"),
    "price_per_hour_usd": st.just("2.5"), "op_overhead_s": st.just("5e-6"),
    "matmul_efficiency": st.sampled_from(["0.5", "1"]),
    "memory_efficiency": st.sampled_from(["0.5", "1"]),
    "peak_flops_per_s.bf16": st.sampled_from(["1e15", "1e12"]),
    "memory.main.capacity_bytes": st.sampled_from(["1e9", "2e11"]),
    "memory.main.bandwidth_bytes_per_s": st.sampled_from(["1e12", "8e12"]),
    "vector_flops_per_s": st.just("1e14")}


ANYTHING = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                     st.lists(st.integers(), max_size=2), st.just(object()),
                     st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
PLAUSIBLE = {
    "micro_batch": st.integers(1, 4), "global_batch": st.sampled_from([None, 4, 8]),
    "precision": st.sampled_from(["bf16", "fp32", "fp8"]),
    "recompute": st.sampled_from(["none", "full"]), "tp": st.sampled_from([1, 2]),
    "zero": st.integers(0, 3), "num_devices": st.sampled_from([None, 1, 2, 4]),
    "tokens": st.sampled_from([None, 1e9]), "steps": st.sampled_from([None, 10.0]),
    "pue": st.sampled_from([1.0, 1.2]), "node_overhead_w": st.sampled_from([0.0, 500.0]),
    "seq_len": st.sampled_from([None, 16, 64]),
}


# -------------------------------------------------------------------------------- the tests

@settings(FUZZ, max_examples=700)
@given(data=st.data())
def test_predict_command_line_answers_or_refuses_in_one_line(files, data):
    argv = data.draw(predict_argv(files))
    assert_answer_or_one_line(*run(*argv), json_out=True)


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_other_commands_answer_or_refuse_in_one_line(files, data):
    command = data.draw(st.sampled_from(["compare", "sweep", "plan", "plot", "models",
                                         "devices", "simulate", ""]))
    devices = data.draw(st.sampled_from(["a100", "a100,h100", "nope", ",", "a100," + "x" * 200]))
    model = data.draw(st.sampled_from([str(files / "tiny.toml"), "gpt2-small", "mlp", "nope"]))
    out = data.draw(st.sampled_from([str(files / "rows.csv"), str(files / "dir.csv"),
                                     "/proc/rows.csv", "/sys/rows.csv", "nodir/x.csv",
                                     str(files / "rows.txt"), str(files / "x.png")]))
    argv = {"compare": ["compare", model, "--devices", devices],
            "sweep": ["sweep", model, "--devices", devices, "--workers", "1", "--out", out,
                      "--grid", data.draw(st.sampled_from(["tp=1,2", "zero=0,3", "tp=", "x=1",
                                                           "micro_batch=1,2"]))],
            "plan": ["plan", model, "--tokens", data.draw(NUMBER_TEXT), "--devices", devices,
                     "--device-counts", "1,2", "--workers", "1", "--out", out],
            "plot": ["plot", "timeline", model, "--device", "a100", "--out", out],
            "models": ["models"], "devices": ["devices"], "simulate": ["simulate"],
            "": []}[command]
    if command in ("compare", "sweep", "plan") and data.draw(st.booleans()):
        argv += ["--set", f"{data.draw(st.sampled_from(SET_PATHS))}={data.draw(NUMBER_TEXT)}"]
    code, stdout, err = run(*argv)
    assert_answer_or_one_line(code, "" if code == 2 else stdout, err)


def _toml_value(draw) -> str:
    """A TOML value a hostile spec or workload file might hold."""
    return draw(st.one_of(
        st.integers(-10**22, 10**22).map(str), st.integers(1, 4096).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(
            lambda v: "nan" if math.isnan(v) else ("inf" if v == math.inf else
                                                   "-inf" if v == -math.inf else repr(v))),
        st.sampled_from(["1e300", "1e-300", "0", "-1", "true", '"text"', '""', "[1, 2]",
                         "{ a = 1 }", "[" * 2000 + "]" * 2000, '"\\u001b[31m"', "2e19"])))


SPEC_KEYS = ["fp32 = 10", "bf16 = 100", "vector_tflops = 10", "op_overhead_us = 5",
             "matmul_efficiency = 0.8", "memory_efficiency = 0.9", "capacity_mib = 40",
             "capacity_gb = 16", "bandwidth_gb_per_s = 5000", "bandwidth_gb_per_s = 1000",
             "idle_w = 50", "tdp_w = 300", "usd_per_hour = 1.5", 'name = "test-gpu"',
             'class = "gpu"']


@settings(FUZZ, max_examples=450)
@given(data=st.data())
def test_device_spec_files_load_and_predict_or_refuse(files, data):
    text = DEVICE_TOML
    for _ in range(data.draw(st.integers(1, 3))):
        line = data.draw(st.sampled_from(SPEC_KEYS))
        key = line.split(" = ")[0]
        action = data.draw(st.sampled_from(["scale", "scale", "scale", "value", "value",
                                            "drop", "unknown"]))
        old = line.split(" = ")[1]
        scaled = (f"{float(old) * data.draw(st.sampled_from([0.5, 0.9, 1.0, 2.0])):g}"
                  if old[0].isdigit() else old)
        new = {"scale": f"{key} = {scaled}", "value": f"{key} = {_toml_value(data.draw)}",
               "drop": "", "unknown": f"{line}\nsurprise = 1"}[action]
        text = text.replace(line, new, 1)
    path = files / "device.toml"
    path.write_text(text)
    try:
        load_device(str(path))
    except HwsimError as err:
        assert "\n" not in str(err)
        return
    assert_answer_or_one_line(*run("predict", files / "tiny.toml", "--device", path,
                                   "--json"), json_out=True)


WORKLOAD_KEYS = ["layers", "hidden", "heads", "vocab", "seq_len", "kv_heads", "ffn_hidden",
                 "ffn", "name"]


@settings(FUZZ, max_examples=450)
@given(data=st.data())
def test_workload_files_predict_or_refuse(files, data):
    lines = ["[transformer]"]
    plausible = {"layers": st.integers(1, 3), "hidden": st.sampled_from([32, 64, 128]),
                 "heads": st.sampled_from([2, 4]), "vocab": st.integers(10, 500),
                 "seq_len": st.sampled_from([8, 16, 32])}
    for key in WORKLOAD_KEYS:
        if key in plausible and data.draw(st.integers(0, 9)):
            lines.append(f"{key} = {data.draw(plausible[key])}")
        elif data.draw(st.integers(0, 3)) == 0:
            lines.append(f"{key} = {_toml_value(data.draw)}")
    if data.draw(st.integers(0, 9)) == 0:
        lines.append(data.draw(st.sampled_from(["[extra]", "oops = 1", "layers = 2", "[[a]]",
                                                "x = [" * 50])))
    path = files / "model.toml"
    path.write_text("\n".join(lines) + "\n")
    assert_answer_or_one_line(*run("predict", path, "--device", "a100", "--json"), json_out=True)


CLUSTER = (Path(__file__).resolve().parents[1] / "hardware_specs" / "clusters"
           / "dgx-a100.toml").read_text()


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_cluster_files_predict_or_refuse(files, data):
    text = CLUSTER
    keys = re.findall(r"^(\w+) = .*$", text, flags=re.M)
    for _ in range(data.draw(st.integers(1, 2))):
        key = data.draw(st.sampled_from(keys))
        line = f"{key} = {_toml_value(data.draw)}"
        text = re.sub(rf"^{key} = .*$", lambda _: line, text, count=1, flags=re.M)
    path = files / "cluster.toml"
    path.write_text(text)
    assert_answer_or_one_line(*run("predict", files / "tiny.toml", "--cluster", path,
                                   "--json"), json_out=True)


@settings(FUZZ, max_examples=500)
@given(data=st.data())
def test_simulate_answers_or_raises_hwsim_errors(data):
    workload = data.draw(mostly(st.sampled_from(
        [TransformerConfig("t", 2, 64, 4, vocab=100, seq_len=32), "mlp", "gpt2-small"]),
        st.one_of(st.just("nope"), ANYTHING)))
    hardware = data.draw(mostly(st.sampled_from(["a100", "h100", "tpu-v4", "dgx-a100"]),
                                ANYTHING))
    kwargs = {}
    for key in data.draw(st.lists(st.sampled_from(sorted(PLAUSIBLE)), max_size=4, unique=True)):
        kwargs[key] = data.draw(mostly(PLAUSIBLE[key], ANYTHING))
    plan = data.draw(st.sampled_from([None] * 8 + ["bf16", 3]))
    try:
        result = simulate(workload, hardware, plan, **kwargs)
    except HwsimError as err:
        event(type(err).__name__)
        assert str(err) and "\n" not in str(err)
        return
    event("answer")
    assert_invariants(json.loads(result.to_json(), parse_constant=_reject))


@settings(FUZZ, max_examples=120)
@given(layers=st.integers(1, 6), hidden=st.sampled_from([32, 64, 128, 256]),
       vocab=st.sampled_from([50, 1000, 8000]), dp=st.sampled_from([2, 4, 8]),
       micro_batch=st.integers(1, 4), recompute=st.sampled_from(["none", "full"]),
       precision=st.sampled_from(["bf16", "fp32"]), tied=st.booleans())
def test_zero_stage_never_needs_more_memory_but_for_the_gathered_weights(
        layers, hidden, vocab, dp, micro_batch, recompute, precision, tied):
    """Stages 1 and 2 never need more memory per device than the stage before. Stage 3 shards
    the weights (saving 1 - 1/dp of them) and holds the root unit and two layers gathered
    (``schedule.memory.zero3_gathered_params``): it needs more than stage 2 exactly when these
    outweigh the saving (a shallow model, a large vocabulary, dp 2), by their difference (and
    at most one transient tensor more, as its gathers move the live peak in time)."""
    work = TransformerConfig("t", layers, hidden, 4, vocab=vocab, seq_len=32,
                             tied_embeddings=tied)
    runs = {z: simulate(work, "a100", parallel=ParallelPlan(dp=dp, zero=z),
                        micro_batch=micro_batch, recompute=recompute, precision=precision)
            for z in range(4)}
    peak = {z: runs[z].peak_memory_bytes for z in runs}
    assert peak[1] <= peak[0] and peak[2] <= peak[1]
    saved = runs[2].memory_breakdown["weights"] - runs[3].memory_breakdown["weights"]
    gathered = (zero3_gathered_params(work.forward_graph(1))
                * Plan(precision=precision).state_bytes_per_param()["weights"])
    assert saved == pytest.approx(runs[2].memory_breakdown["weights"] * (1 - 1 / dp), rel=1e-12)
    # ZeRO-3's gathers move the step's ops in time, so the instant of the live peak may hold
    # one more transient tensor than stage 2's (e.g. the loss's 16-bit logit gradient of a
    # tiny model): at most the largest op's bytes, never less than the closed form
    extra = peak[3] - peak[2] - (gathered - saved)
    assert -1.0 <= extra <= float(runs[3].ops["bytes"].max())
    if gathered > saved + 1.0:
        assert peak[3] > peak[2]
