"""One vocabulary (issue 22, item 8): every plan flag of predict and compare (--cp, --tp, ...,
--precision, --sequence-parallel) on sweep and plan too, where each fixes that field in every
configuration; the run-total flags (--pue, --carbon-intensity, --seq-len, --cluster, the
prices) on all four."""
import pytest

from simulator.cli import main
from simulator.cli.main import build_parser
from simulator.errors import PlanError
from simulator.explore.capacity import capacity_plan, with_fixed
from simulator.explore.sweep import FIELDS

SHARED = ("--seq-len", "--cluster", "--pue", "--carbon-intensity", "--own-years",
          "--electricity-usd-per-kwh", "--node-cost-usd", "--price-per-hour", "--set",
          "--node-overhead-w")


def _options(command: str) -> set[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return {flag for action in sub.choices[command]._actions for flag in action.option_strings}


@pytest.mark.parametrize("command", ["compare", "sweep", "plan"])
def test_every_plan_flag_of_predict_is_on(command):
    predict = _options("predict")
    plan_flags = {f for f in predict if f.lstrip("-").replace("no-", "", 1).replace("-", "_")
                  in FIELDS}
    assert len(plan_flags) == len(FIELDS)            # one flag per plan field
    missing = (plan_flags | set(SHARED)) - _options(command)
    assert not missing, f"{command} lacks {sorted(missing)}"
    assert "--cp" in _options(command)


def _cli(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_sweep_flags_fix_every_row(capsys):
    code, out, _ = _cli(["sweep", "gpt2-small", "--devices", "h100", "--seq-len", "2048",
                         "--cp", "2", "--tp", "2", "--micro-batch", "1", "--global-batch", "8",
                         "--grid", "zero=0,1", "--sequence-parallel", "--workers", "1"], capsys)
    assert code == 0
    header, *lines = out.strip().splitlines()
    rows = [dict(zip(header.split(","), line.split(","))) for line in lines]
    assert len(rows) == 2                             # the grid's two ZeRO stages
    assert {r["zero"] for r in rows} == {"0", "1"}
    for r in rows:
        assert (r["status"], r["cp"], r["tp"], r["sequence_parallel"]) == ("ok", "2", "2", "True")
        assert r["num_devices"] == "4"                # dp 1 x tp 2 x cp 2


@pytest.mark.parametrize("argv, words", [
    (["sweep", "gpt2-small", "--devices", "h100", "--cp", "2", "--grid", "cp=1,2"],
     "cp is given both"),
    (["plan", "gpt2-small", "--tokens", "1e9", "--devices", "h100", "--cp", "2", "--grid",
      "cp=1,2"], "cp is given both"),
    (["plan", "gpt2-small", "--tokens", "1e9", "--devices", "h100", "--cp", "two"],
     "invalid int value"),
])
def test_fixed_and_grid_bad_input_is_one_line(argv, words, capsys):
    code, out, err = _cli(argv, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and words in err and "Traceback" not in err


def test_plan_keeps_the_fields_given(capsys):
    """The planner varies only the fields not given: cp 2 at 2,048 tokens (below the 8,192
    tokens per rank it would try cp at by itself) and fp8 in every configuration."""
    report = capacity_plan("gpt2-small", 1e9, devices=["h100"], device_counts=[8],
                           fixed={"cp": 2, "precision": "fp8", "micro_batch": 2, "pp": 1},
                           workers=1, progress=False)
    rows = report.rows
    assert len(rows) > 1 and (rows.status == "ok").all()
    assert set(rows.cp) == {2} and set(rows.precision) == {"fp8"}
    assert set(rows.micro_batch) == {2} and set(rows.pp) == {1}
    assert set(rows.tp) == {1, 2, 4}                  # still searched (12 heads: tp 8 is not)
    code, out, _ = _cli(["plan", "gpt2-small", "--tokens", "1e9", "--devices", "h100",
                         "--device-counts", "8", "--cp", "2", "--pp", "1", "--tp", "2",
                         "--micro-batch", "2", "--workers", "1", "--top", "1"], capsys)
    assert code == 0 and "cp 2" in out and "tp 2" in out


def test_deadline_space_keeps_a_fixed_zero_stage():
    """The deadline's space drops ZeRO stages another beats (0 beside 1 and 2); one given is
    kept: ZeRO 0 alone, not an empty search."""
    report = capacity_plan("gpt2-small", 1e10, devices=["h100"], deadline_days=1,
                           fixed={"zero": 0, "recompute": "none", "tp": 1},
                           workers=1, progress=False)
    assert len(report.rows) > 0 and set(report.rows.zero) == {0}
    assert report.rows.dp.max() > 1                   # data parallel, yet ZeRO 0


def test_fixed_bad_input():
    with pytest.raises(PlanError, match="'cpx' is not a plan field"):
        capacity_plan("gpt2-small", 1e9, devices=["h100"], fixed={"cpx": 2}, progress=False)
    with pytest.raises(PlanError, match="tp is given both"):
        with_fixed({"tp": [1, 2]}, {"tp": 2})
    assert with_fixed([{"tp": 2}], {"cp": 2}) == [{"tp": 2, "cp": 2}]


def test_planner_tries_tp_over_replicated_kv_heads(tmp_path):
    """Issue 22, item 2: a multi-query model (one KV head) runs at tp > 1, its KV head
    replicated; the planner tries tp 1-8 as for any model whose heads they divide (it tried
    tp 1 alone: 'tp must divide kv_heads')."""
    spec = tmp_path / "mqa.toml"
    spec.write_text('[transformer]\nlayers = 4\nhidden = 1024\nheads = 16\nkv_heads = 1\n'
                    'vocab = 1000\nseq_len = 512\n')
    report = capacity_plan(str(spec), 1e8, devices=["h100"], device_counts=[8],
                           fixed={"pp": 1, "zero": 1, "micro_batch": 1, "recompute": "none"},
                           workers=1, progress=False)
    assert set(report.rows.tp) == {1, 2, 4, 8} and (report.rows.status == "ok").all()



def test_fixed_field_conflicting_with_a_plan_is_refused():
    """A list of plans is treated as a grid is: a fixed field a plan gives otherwise is a
    PlanError (it overwrote the plan's value); the same value, as text or enum, is kept."""
    from simulator.plan.step import Precision

    with pytest.raises(PlanError, match="tp is 1 in a plan but fixed at 2"):
        with_fixed([{"tp": 2}, {"tp": 1}], {"tp": 2})
    assert with_fixed([{"tp": 2, "precision": Precision.FP8}], {"tp": 2, "precision": "fp8"}) \
        == [{"tp": 2, "precision": "fp8"}]
    with pytest.raises(PlanError, match="precision is 'bf16' in a plan"):
        capacity_plan("gpt2-small", 1e9, devices=["h100"], plans=[{"precision": "bf16"}],
                      fixed={"precision": "fp8"}, progress=False)


@pytest.mark.parametrize("flags, words", [
    (["--micro-batch", "3"], ("no plan keeps --micro-batch 3 on 8 devices: dp x micro-batch "
                              "must divide the global batch (4096 sequences, a power of two")),
    (["--dp", "3"], "no plan keeps --dp 3 on 8 devices: dp x tp x pp x cp must be the device"),
    (["--tp", "3"], "no plan keeps --tp 3 on 8 devices: tp x pp x cp must divide the device"),
    (["--tp", "3", "--pp", "1", "--zero", "1"], "no plan keeps --tp 3 on 8 devices"),
])
def test_fixed_fields_leaving_no_plan_say_which(flags, words, capsys):
    """A fixed field no plan can keep names itself and its rule (it said 'empty grid: no
    plans to evaluate; give at least one', though no grid was given)."""
    code, out, err = _cli(["plan", "gpt2-small", "--tokens", "1e9", "--devices", "h100",
                           "--device-counts", "8", *flags, "--workers", "1"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert words in err and "empty grid" not in err


def test_device_pruning_rates_the_fixed_plan(monkeypatch):
    """The devices left out as dominated are judged at the plan searched: at bf16 an H100 PCIe
    beats an RTX 4090 on every count for Llama 2 7B, at fp8 it does not (the RTX 4090's fp8
    speeds it up more), so ``--precision fp8`` keeps it (the rates were the default plan's)."""
    from simulator.explore import capacity
    from simulator.explore.sweep import resolve_devices
    from workloads.zoo import get_workload

    work = get_workload("llama2-7b")
    specs = resolve_devices(["rtx-4090", "h100-pcie-80gb"], None)
    bf16, fp8 = (capacity.device_rates(work, specs, fixed)
                 for fixed in ({}, {"precision": "fp8"}))
    assert fp8["rtx-4090"].tokens_per_s > bf16["rtx-4090"].tokens_per_s
    assert capacity.dominated(specs, bf16) == {"rtx-4090": "h100-pcie-80gb"}
    assert capacity.dominated(specs, fp8) == {}
    _, pruned = capacity.deadline_space(work, specs, 1e11, 30, {"precision": "fp8"})
    assert pruned == {}

    searched = []

    def stop(work, specs, *args, **kwargs):
        searched.extend(spec.name for spec in specs)
        raise KeyboardInterrupt

    monkeypatch.setattr(capacity, "sweep", stop)
    with pytest.raises(KeyboardInterrupt):     # the default space's devices, then stopped
        capacity_plan("llama2-7b", 1e11, devices=["rtx-4090", "h100-pcie-80gb"],
                      fixed={"precision": "fp8"}, progress=False)
    assert searched == ["rtx-4090", "h100-pcie-80gb"]


def test_no_device_runs_the_fixed_plan_is_one_line(capsys):
    code, out, err = _cli(["plan", "gpt2-small", "--tokens", "1e9", "--devices", "a100,v100",
                           "--precision", "fp8", "--workers", "1"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "none of the 2 devices can run gpt2-small" in err and "fp8" in err


def test_node_overhead_reaches_compare_sweep_and_plan_rows(tmp_path, capsys):
    """--node-overhead-w was predict's only: compare, sweep and plan rows counted a device's
    node as drawing nothing besides its devices. 8 A100s are one node: 1,000 W more for the
    run's time adds 1,000 x total_time_s / 3.6e6 kWh (pue 1), and every row echoes it."""
    import io
    import json

    import pandas as pd

    base = ["gpt2-small", "--devices", "a100", "--tokens", "1e9"]
    rows = []
    for extra in ([], ["--node-overhead-w", "1000"]):
        assert main(["compare", *base, "--num-devices", "8", "--json", *extra]) == 0
        rows.append(json.loads(capsys.readouterr().out)[0])
    bare, node = rows
    assert node["total_time_days"] == bare["total_time_days"]
    assert node["energy_kwh"] - bare["energy_kwh"] == pytest.approx(
        1000 * bare["total_time_days"] * 86400 / 3.6e6, rel=1e-6)   # --json: 10 digits
    assert main(["sweep", *base, "--device-counts", "8", "--workers", "1",
                 "--node-overhead-w", "1000"]) == 0
    swept = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert swept.node_overhead_w.tolist() == [1000.0]
    assert swept.energy_kwh.tolist() == pytest.approx([node["energy_kwh"]], rel=1e-6)
    out = tmp_path / "plan.csv"
    assert main(["plan", *base, "--device-counts", "8", "--grid", "tp=1", "--grid", "zero=1",
                 "--grid", "micro_batch=1", "--workers", "1", "--node-overhead-w", "1000",
                 "--out", str(out)]) == 0
    assert pd.read_csv(out).node_overhead_w.tolist() == [1000.0]
    assert main(["compare", *base, "--node-overhead-w", "-5"]) == 2
    assert "node_overhead_w = -5.0 is outside" in capsys.readouterr().err


def test_run_total_flags_without_a_run_say_so(capsys):
    """predict --own-years 3 --electricity-usd-per-kwh 0.1 without --tokens or --steps printed
    no owning line and said nothing: the flags it cannot use are named in a note."""
    import json

    argv = ["predict", "gpt2-small", "--device", "h100", "--own-years", "3",
            "--electricity-usd-per-kwh", "0.1", "--pue", "1.2", "--json"]
    assert main(argv) == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert ("--own-years, --electricity-usd-per-kwh, --pue change only the whole run's totals, "
            "which need --tokens or --steps: nothing here uses them") in notes
    assert main([*argv, "--tokens", "1e9"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["own_cost_usd"] > 0 and not any("--tokens" in n for n in summary["notes"])
    # one flag: the verb agrees with it ('--node-overhead-w change only' did not)
    assert main(["predict", "gpt2-small", "--device", "h100", "--node-overhead-w", "1000",
                 "--json"]) == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert ("--node-overhead-w changes only the whole run's totals, which need --tokens or "
            "--steps: nothing here uses it") in notes
