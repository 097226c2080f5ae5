"""Plots (``simulator.report.plots``, ``Result.plot_*``, ``hwsim plot``) and the tables behind them
(``simulator.report.views``): every chart is written to a file and read back as a non-empty image;
the figures agree with the simulator's own (peak memory, roofs, the pipeline's slots);
without matplotlib, one line says how to install it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import simulator
from simulator.cli import main
from simulator.explore.sweep import compare
from simulator.plan.parallel import ParallelPlan
from simulator.report import plots, views
from simulator.schedule.pipeline import pipeline_blocks

pytest.importorskip("matplotlib")
from matplotlib.image import imread  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    """A non-empty, valid PNG: the signature, and an image with pixels."""
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_MAGIC
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0
    assert image.std() > 0  # not a blank canvas


@pytest.fixture(scope="module")
def single():
    return simulator.simulate("gpt3-125m", "a100", micro_batch=1)


@pytest.fixture(scope="module")
def split():
    """Tensor and data parallel: all three streams have ops."""
    return simulator.simulate("gpt3-125m", "h100-sxm5-80gb", parallel=ParallelPlan(dp=2, tp=2),
                              micro_batch=1)


@pytest.mark.parametrize("chart", ["roofline", "timeline", "memory"])
@pytest.mark.parametrize("which", ["single", "split"])
def test_result_plots_write_png(chart, which, request, tmp_path):
    result = request.getfixturevalue(which)
    path = tmp_path / f"{chart}.png"
    fig = getattr(result, f"plot_{chart}")(path)
    assert fig.axes and path.exists()
    assert_png(path)
    assert not list(tmp_path.glob(".*"))  # the temporary file was renamed, not left behind


def test_plot_without_path_returns_a_figure_and_writes_nothing(single, tmp_path):
    fig = single.plot_roofline()
    assert fig.axes[0].get_xscale() == "log"
    assert not list(tmp_path.iterdir())


def test_save_svg(single, tmp_path):
    path = plots.save(plots.timeline(single), tmp_path / "step.svg")
    assert path.read_text().lstrip().startswith(("<?xml", "<svg"))


def test_roofline_points_lie_under_the_roofs(single):
    """Achieved FLOP/s never exceeds min(peak, fastest bandwidth x intensity): the chart's
    points sit under its roofs."""
    points = views.intensity_points(single)
    device = single.device_spec
    assert device is not None and device.name == single.device
    assert {"matmul", "elementwise"} <= set(points["kind"])
    peak = max(max(device.peak_flops_per_s.values()), device.vector_flops_per_s)
    bandwidth = max(level.bandwidth_bytes_per_s for level in device.memory)
    roof = np.minimum(peak, bandwidth * points["intensity"])
    assert (points["flops_per_s"] <= roof * (1 + 1e-9)).all()
    # elementwise ops do a few FLOPs per byte: memory-bound on an A100
    assert (points.loc[points["kind"] == "elementwise", "bound"] == "memory").all()


def test_timeline_has_a_row_per_busy_stream(split):
    ax = plots.timeline(split).axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["compute", "tensor-parallel comm", "data-parallel comm"]


def test_memory_over_time_peaks_at_the_reported_peak(single):
    """The stacked live bytes reach exactly the step's peak_memory_bytes (one device, no
    pipeline: states + the liveness peak) and never exceed it."""
    times, series = views.live_bytes(single)
    total = sum(series.values())
    assert np.all(np.diff(times) > 0)
    assert total.max() == pytest.approx(single.peak_memory_bytes, rel=1e-9)
    assert series["weights"][0] == single.memory_breakdown["weights"]
    assert total[-1] == pytest.approx(sum(single.memory_breakdown[k] for k in
                                          ("weights", "gradients", "optimizer_states")))


def test_pareto_front_by_hand():
    """Row 3 is beaten by row 1, row 5 by row 0 (the same time, a higher cost); row 4 has no
    time (+inf) but the lowest cost: nothing beats it (the plot leaves such rows out first)."""
    df = pd.DataFrame({"t": [1.0, 2.0, 3.0, 2.5, np.nan, 1.0],
                       "c": [5.0, 3.0, 1.0, 4.0, 0.1, 6.0]})
    assert views.pareto_front(df, ["t", "c"]).tolist() == [True, True, True, False, True, False]
    assert views.pareto_front(df.iloc[:0], ["t", "c"]).tolist() == []


def test_pareto_of_a_comparison(tmp_path):
    table = compare("gpt3-125m", ["a100", "h100-sxm5-80gb", "tpu-v4"], micro_batch=1,
                    tokens=1e9)
    fig = plots.pareto(table, x="total_time_days", y="energy_kwh")
    assert_png(plots.save(fig, tmp_path / "pareto.png"))
    with pytest.raises(plots.PlotError, match="no column 'nope'"):
        plots.pareto(table, x="nope")


def test_bars_and_tables(single, split, tmp_path):
    table = compare("gpt3-125m", ["a100", "tpu-v4"], micro_batch=1)
    assert_png(plots.save(plots.bars(table, y="step_time_s"), tmp_path / "bars.png"))
    roofs = views.device_roofs(["a100", "tpu-v4"])
    assert roofs.loc["a100-sxm4-80gb", "matrix_ridge_flops_per_byte"] == pytest.approx(
        312e12 / 2039e9)  # A100 datasheet: 312 TFLOP/s bf16, 2,039 GB/s
    kinds = views.roofline_table(single, split)
    assert kinds.loc[("a100-sxm4-80gb", "matmul"), "ops"] > 0
    shares = kinds.groupby(level="device")["time_share"].sum()
    assert np.allclose(shares, 1.0)


# -- the command line ---------------------------------------------------------------------------
@pytest.mark.parametrize("chart", ["roofline", "timeline", "memory"])
def test_cli_plot_writes_png(chart, tmp_path, capsys):
    out = tmp_path / f"{chart}.png"
    assert main(["plot", chart, "gpt3-125m", "--device", "a100", "--num-devices", "2",
                 "--out", str(out)]) == 0
    assert_png(out)
    assert str(out) in capsys.readouterr().out


def test_cli_plot_pareto_from_a_sweep_csv(tmp_path):
    from simulator.explore.sweep import sweep

    csv = tmp_path / "sweep.csv"
    sweep("gpt3-125m", ["a100", "tpu-v4"], [1, 2], [{}], tokens=1e9, workers=1,
          progress=False, out=csv)
    out = tmp_path / "pareto.png"
    assert main(["plot", "pareto", str(csv), "--x", "total_time_s", "--y", "energy_kwh",
                 "--out", str(out)]) == 0
    assert_png(out)


@pytest.mark.parametrize("argv, message", [
    (["plot", "roofline", "mlp", "--device", "a100", "--out", "x.txt"], "suffix"),
    (["plot", "roofline", "mlp", "--out", "x.png"], "--device"),
    (["plot", "pareto", "missing.csv", "--out", "x.png"], "missing.csv"),
    (["plot", "bubbles", "mlp", "--device", "a100", "--out", "x.png"], "invalid choice"),
])
def test_cli_plot_bad_input_is_one_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("axis", ["--x", "--y"])
def test_cli_pareto_of_a_name_column_is_one_line(axis, tmp_path, capsys):
    """A column of names (device, status) on an axis was an internal error (exit 70, pandas'
    'could not convert string to float'): one line naming the column and numeric ones."""
    table = tmp_path / "rows.csv"
    table.write_text("device,status,fits,total_time_days,cost_usd\n"
                     "a100,ok,True,2.0,10.0\nh100,ok,True,1.0,20.0\n")
    out = tmp_path / "pareto.png"
    assert main(["plot", "pareto", str(table), axis, "device", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "column 'device' holds names" in err and "total_time_days, cost_usd" in err
    assert not out.exists()


# -- matplotlib is optional ---------------------------------------------------------------------
def test_missing_matplotlib_is_one_line(single, monkeypatch, capsys, tmp_path):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(ImportError, match=r'pip install "hwsim\[plot\]"'):
        single.plot_memory()
    out = tmp_path / "x.png"
    assert main(["plot", "memory", "mlp", "--device", "a100", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == 'hwsim: error: plots need matplotlib: pip install "hwsim[plot]"\n'
    assert not out.exists()


def test_simulating_does_not_import_matplotlib():
    code = ("import sys, simulator, simulator.cli.main, simulator.report.result\n"
            "simulator.simulate('mlp', 'a100').summary()\n"
            "print('matplotlib' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_chrome_trace_puts_each_stream_on_its_thread(split, tmp_path):
    import json

    trace = json.loads(split.to_chrome_trace(tmp_path / "step.json").read_text())
    events = trace["traceEvents"]
    assert len(events) == len(split.ops)
    assert {e["tid"] for e in events} == {0, 1, 2}
    assert {e["cat"] for e in events if e["tid"] > 0} == {"collective"}


@pytest.mark.parametrize("gpipe", [True, False])
def test_pipeline_blocks_take_m_plus_p_minus_one_slots(gpipe):
    """GPipe and 1F1B both finish a pipeline's m micro-batches in (m + p - 1)(t_f + t_b)
    (Narayanan et al. 2021, sec. 2.2: the bubble is (p - 1) slots); each stage runs m
    forwards and m backwards, never two at once."""
    p, m, t_f, t_b = 4, 6, 1.0, 2.0
    blocks = pipeline_blocks(p, m, gpipe, t_f, t_b)
    ends = [start + dur for spans in blocks.values() for start, dur in spans]
    assert max(ends) == pytest.approx((m + p - 1) * (t_f + t_b))
    for stage in range(p):
        spans = sorted(blocks[(stage, False)] + blocks[(stage, True)])
        assert len(spans) == 2 * m
        assert all(a[0] + a[1] <= b[0] + 1e-12 for a, b in zip(spans, spans[1:]))


def test_a_result_without_ops_is_one_clear_error():
    """A timeline of a result with no ops is refused with the views' one-line error (a
    HwsimError the CLI prints as one line), not a numpy error from an empty table."""
    class Empty:
        model, device, lowered, parallel = "m", "d", None, None

    with pytest.raises(views.ViewError, match="m on d: the result has no ops to show"):
        plots.timeline(Empty())


def test_timeline_of_a_pipeline_shows_its_stages(tmp_path):
    r = simulator.simulate("gpt3-125m", "a100", parallel=ParallelPlan(pp=2), micro_batch=1,
                           global_batch=4)
    fig = r.plot_timeline(tmp_path / "pp.png")
    assert_png(tmp_path / "pp.png")
    stages = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert stages == ["stage 0", "stage 1"]
