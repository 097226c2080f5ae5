"""The ``hwsim`` command: predict, models, devices.

A user's mistake is one line on stderr and exit status 2, never a traceback; a bug in hwsim
(an ``InternalError``: a result breaking one of its invariants, or any other exception) is one
line saying so and exit status 70; SIGTERM stops the command as Ctrl-C does (exit 143).
"""
from __future__ import annotations

import argparse
import itertools
import os
import re
import signal
import sys

from hardware_specs import override as whatif
from simulator.cli.explore import COMMANDS, add_commands
from simulator.cli.flags import (
    add_plan_fields,
    add_run_flags,
    add_set_flag,
    flag,
    parse_sets,
    plan_values,
    positive_float,
    run_values,
)
from simulator.errors import HwsimError, InternalError, PlanError, clean, read_input
from simulator.plan.fields import PARALLEL, PLAN

EXIT_USAGE = 2          # a user's mistake (HwsimError): one line
EXIT_INTERNAL = 70      # a bug in hwsim (InternalError or any other exception): one line
EXIT_TERMINATED = 143   # SIGTERM (128 + 15)
PLOTS = ("roofline", "timeline", "memory", "pareto")


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A negative number written with an exponent (--tokens -1e9) is a value, so its flag's
        # own check says what is wrong with it: argparse's matcher (no option of hwsim looks
        # like a number) knows only -5 and -.5, and took -1e9 for an unknown option.
        self._negative_number_matcher = _NEGATIVE_NUMBER

    def error(self, message: str):  # one line, not usage + error
        raise HwsimError(f"{message} (see '{self.prog} --help')")


_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^-(inf|nan)$", re.IGNORECASE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hwsim", description="Predict deep-learning training time, memory, "
                     "energy and cost on hardware you do not have.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("predict", help="predict one training step (and a whole run)")
    p.add_argument("model", help="zoo name ('hwsim models'), Hugging Face config.json, "
                   "workload .toml file, model .onnx file, or path/to/file.py:factory "
                   "returning (torch module, example inputs)")
    add_plan_flags(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    c = sub.add_parser("calibrate", help="fit a device's efficiencies to micro-benchmarks "
                       "run here with torch; writes a calibrated spec file")
    c.add_argument("--device", required=True, help="the device present: cpu-host, or the "
                   "catalogue name of the CUDA GPU in this machine")
    c.add_argument("--out", default=None, help="spec file to write (default DEVICE-calibrated.toml)")
    c.add_argument("--quick", action="store_true", help="a reduced sweep (for tests and CI)")
    c.add_argument("--threads", type=int, default=None, help="CPU: torch threads (and cores "
                   "of the calibrated spec); default: torch's, all cores")
    c.add_argument("--record", default=None, metavar="CSV", help="also write the timings, with "
                   "device, driver, torch version and date, to this file")
    c.add_argument("--from", dest="recorded", default=None, metavar="CSV", help="fit timings "
                   "recorded with --record (on another machine), or a published GEMM or "
                   "streaming kernel table (tests/data/neusight_linear_kernels.csv, "
                   "deepbench_gemm.csv, neusight_vector_kernels.csv), instead of timing here")
    v = sub.add_parser("validate", help="time real training steps here with torch and compare "
                       "them with hwsim's predictions")
    v.add_argument("models", nargs="+", metavar="MODEL", help="path/to/file.py:factory")
    v.add_argument("--device", required=True, help="the device present (cpu-host, a calibrated "
                   "spec file of it, or the catalogue name of this machine's CUDA GPU)")
    v.add_argument("--threads", type=int, default=None, help="CPU: torch threads; give what "
                   "the spec was calibrated with")
    v.add_argument("--record", default=None, metavar="CSV", help="also write the measured and "
                   "predicted steps, with device, driver, torch version and date, to this file")
    v.add_argument("--steps", type=int, default=5, help="at least this many steps per timed "
                   "batch (each model: best of five batches in each of three interleaved "
                   "passes, the median pass kept)")
    sub.add_parser("models", help="list the model zoo")
    sub.add_parser("devices", help="list the device catalogue")
    g = sub.add_parser("plot", help="draw a step's roofline, timeline or memory, or a sweep's "
                       "Pareto front, as an image file")
    g.add_argument("chart", choices=PLOTS, help="roofline, timeline, memory (of MODEL's step) "
                   "or pareto (of a sweep or plan CSV file)")
    g.add_argument("model", metavar="MODEL|TABLE", help="as for predict; for pareto the CSV "
                   "or Parquet file written by 'hwsim sweep' or 'hwsim plan'")
    g.add_argument("--out", required=True, help="image file to write (.png, .svg or .pdf)")
    g.add_argument("--x", default="total_time_days", help="pareto: column on the x axis")
    g.add_argument("--y", default="cost_usd", help="pareto: column on the y axis")
    add_plan_flags(g)
    add_commands(sub)  # compare, sweep, plan (simulator.cli.explore)
    return parser


def add_plan_flags(p: argparse.ArgumentParser) -> None:
    """The hardware and plan flags of a simulated step (predict, plot)."""
    p.add_argument("--device", default=None, help="catalogue name ('hwsim devices') or .toml")
    p.add_argument("--cluster", default=None, help="a cluster preset ('hwsim devices' lists "
                   "them: dgx-h100, gb200-nvl72, tpu-v5p-pod-slice, ...) or cluster .toml, "
                   "instead of --device")
    p.add_argument("--num-devices", type=int, default=None,
                   help="devices in all (default dp x tp x pp x cp, or the cluster's)")
    p.add_argument("--seq-len", type=int, default=None, help="override the model's context")
    add_plan_fields(p)
    run = p.add_mutually_exclusive_group()
    run.add_argument("--tokens", type=positive_float, default=None,
                     help="whole run: tokens to train on")
    run.add_argument("--steps", type=positive_float, default=None,
                     help="whole run: optimizer steps")
    add_run_flags(p)
    # --grid: the old name of --carbon-intensity (a sweep's --grid is its plan grid)
    p.add_argument("--grid", dest="carbon_intensity", type=positive_float, default=None,
                   help=argparse.SUPPRESS)
    add_set_flag(p)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        commands = {"predict": _predict, "calibrate": _calibrate, "validate": _validate,
                    "models": _models, "devices": _devices, "plot": _plot, **COMMANDS}
        return commands[args.command](args)
    except HwsimError as err:
        print(f"hwsim: error: {_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into head: not an error
        sys.stderr.close()
        return 0
    except Exception as err:  # a bug in hwsim: one line, not a traceback, unless asked for
        if os.environ.get("HWSIM_TRACEBACK"):
            raise
        what = "" if isinstance(err, InternalError) else f"{type(err).__name__}: "
        print(f"hwsim: internal error: {what}{_line(err)} (HWSIM_TRACEBACK=1 shows where)",
              file=sys.stderr)
        return EXIT_INTERNAL


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread (``entry``) so that a sweep keeps its finished rows
    and stops its workers as on Ctrl-C."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def _line(err: BaseException) -> str:
    """An error as one clean line: control characters escaped, whitespace runs as one space."""
    return " ".join(clean(str(err)).split())


def _predict(args) -> int:
    result = simulate_args(args)
    print(result.to_json() if args.json
          else format_summary(result.summary(), result.device_spec))
    return 0


def simulate_args(args):
    """The ``Result`` of ``args.model`` under the hardware and plan flags (``add_plan_flags``)."""
    from dataclasses import replace

    from simulator.api import simulate
    from workloads.zoo import get_workload

    hardware, parallel, num_devices = _hardware_and_parallel(args)
    work = get_workload(args.model)
    if args.seq_len is not None:
        if not hasattr(work, "seq_len") or work.tokens_per_sample is None:
            raise PlanError(f"--seq-len applies to language models, not {work.name}")
        if args.seq_len <= 0:
            raise PlanError(f"--seq-len = {args.seq_len} must be a positive integer")
        work = replace(work, seq_len=args.seq_len)
    # no --micro-batch: the model's (an imported one's example batch), or with a global
    # batch the largest that fits (simulate's fitting_micro_batch)
    fields = {key: value for key, value in plan_values(args, PLAN).items()
              if not (key == "micro_batch" and value is None)}
    totals = run_values(args)
    if args.price_per_hour:
        hardware = _priced(hardware, args.price_per_hour)
    result = simulate(work, hardware, parallel=parallel, num_devices=num_devices,
                      tokens=args.tokens, steps=args.steps, **totals, **fields)
    unused = [f"--{name.replace('_', '-')}" for name in ("own_years", "electricity_usd_per_kwh",
                                                         "node_cost_usd", "pue",
                                                         "carbon_intensity", "node_overhead_w",
                                                         "price_per_hour")
              if getattr(args, name) is not None]
    if unused and args.tokens is None and args.steps is None:   # said, not silently dropped
        verb, them = ("changes", "it") if len(unused) == 1 else ("change", "them")
        result.notes.append(f"{', '.join(unused)} {verb} only the whole run's totals, which "
                            f"need --tokens or --steps: nothing here uses {them}")
    return result


def _plot(args) -> int:
    from pathlib import Path

    from simulator.report import plots
    from simulator.report.io import writable

    if Path(args.out).suffix.lower() not in (".png", ".svg", ".pdf"):
        raise HwsimError(f"--out {args.out}: the image's suffix must be .png, .svg or .pdf")
    writable(args.out)   # before any work
    if args.chart == "pareto":
        fig = plots.pareto(_read_csv(args.model), x=args.x, y=args.y)
    else:
        plots.require()
        fig = getattr(plots, args.chart)(simulate_args(args))
    plots.save(fig, args.out)
    print(f"wrote {args.out}")
    return 0


def _read_csv(path: str):
    """A sweep's or plan's rows: a CSV file, or the Parquet file that ``--out rows.parquet``
    writes (by its suffix, or its PAR1 magic bytes)."""
    import io

    import pandas as pd

    data = read_input(path, "table", HwsimError, max_bytes=1 << 30)  # a regular file, <= 1 GiB
    parquet = str(path).lower().endswith(".parquet") or data[:4] == b"PAR1"
    try:
        return pd.read_parquet(io.BytesIO(data)) if parquet else pd.read_csv(io.BytesIO(data))
    except ImportError:
        raise HwsimError(f"{path}: reading Parquet needs pyarrow: pip install pyarrow, or "
                         "write the sweep's --out as .csv") from None
    except Exception as err:   # pandas' and pyarrow's parse errors are not one class
        kind = "Parquet" if parquet else "CSV"
        raise HwsimError(f"{path}: cannot read it as a {kind} table "
                         f"({type(err).__name__})") from None


def _runs(values: list[int]) -> str:
    """[7, 8, 8, 7] -> '7, 8 x 2, 7'."""
    counted = ((value, len(list(run))) for value, run in itertools.groupby(values))
    return ", ".join(f"{value}" + (f" x {n}" if n > 1 else "") for value, n in counted)


def _priced(hardware, prices: dict):
    """``hardware`` (device name, spec or cluster) with its device's ``--price-per-hour``."""
    import dataclasses

    from hardware_specs.cluster import ClusterSpec
    from hardware_specs.loader import load_device
    from simulator.explore.sweep import with_prices

    if isinstance(hardware, ClusterSpec):
        return dataclasses.replace(hardware, device=with_prices([hardware.device], prices)[0])
    device = hardware if not isinstance(hardware, str) else load_device(hardware)
    return with_prices([device], prices)[0]


def _hardware_and_parallel(args):
    """(device or cluster, ParallelPlan, num_devices) from the flags; dp defaults to the
    devices left over by tp x pp."""
    from hardware_specs.cluster import load_cluster
    from simulator.plan.parallel import COUNTS, ParallelPlan, data_parallel_size, positive

    counts = {"--num-devices": args.num_devices,
              **{flag(name): getattr(args, name) for name in COUNTS}}
    for name, value in counts.items():
        if value is not None:
            positive(value, name)   # named by its flag, before dp is derived from it
    if args.device is None and args.cluster is None:
        raise PlanError("the following arguments are required: --device (or --cluster)")
    if args.device is not None and args.cluster is not None:
        raise PlanError("give --device or --cluster, not both")
    hardware = load_cluster(args.cluster) if args.cluster else args.device
    hardware = whatif.apply(hardware, parse_sets(args.set))
    n = args.num_devices
    if n is None:
        n = hardware.num_devices if args.cluster else \
            (args.dp or 1) * args.tp * args.pp * args.cp
    dp = args.dp if args.dp is not None else data_parallel_size(n, args.tp, args.pp, args.cp)
    parallel = ParallelPlan(**{**plan_values(args, PARALLEL), "dp": dp})
    return hardware, parallel, n


def format_summary(s: dict, device=None) -> str:
    """The predict summary ``s`` as text; ``device`` (its DeviceSpec, if known) says why a
    missing price is missing (``_missing_price``)."""
    gib = 2.0 ** 30   # memory in GiB, as drivers and datasheets' 'GB' of DRAM mean it
    lines = [
        f"{clean(s['model'])} on {clean(s['device'])} ({s['precision']}, global batch "
        f"{s['global_batch']} "
        f"= {s['micro_batches']} x micro-batch {s['micro_batch']}"
        + (f" x dp {s['parallel']['dp']}" if (s.get("parallel") or {}).get("dp", 1) > 1 else "")
        + ")",
        f"  step time          {s['step_time_s']:.4g} s",
        f"  throughput         {s['samples_per_s']:.4g} samples/s"
        + (f", {s['tokens_per_s']:.4g} tokens/s" if s["tokens_per_s"] else ""),
        f"  model FLOPs/step   {s['flops_per_step']:.4g}  ({s['tflops_per_device']:.1f} "
        f"TFLOP/s per device, MFU {s['mfu']:.1%}, HFU {s['hfu']:.1%})",
        f"  peak memory        {s['peak_memory_bytes'] / gib:.2f} GiB of "
        f"{s['memory_capacity_bytes'] / gib:.1f} GiB -> {'fits' if s['fits'] else 'DOES NOT FIT'}",
        "    " + ", ".join(f"{k} {v / gib:.2f}" for k, v in s["memory_breakdown"].items()),
        f"  energy             {s['energy_j_per_step']:.4g} J/step at {s['avg_power_w']:.0f} W"
        + (" per device (the mean device)" if s["num_devices"] > 1 else "")
        + (f" (power limit {s['power_limit_w']:.0f} W)" if s.get("power_limit_w") else ""),
    ]
    if s.get("samples_per_kwh"):
        lines.append("  per energy         " + (f"{s['tokens_per_joule']:.4g} tokens/J, "
                                                if s.get("tokens_per_joule") else "")
                     + f"{s['samples_per_kwh']:.4g} samples/kWh, {s['tflops_per_watt']:.3g} "
                     "TFLOP/s per W (devices alone)")
    if s.get("step_overhead_s"):
        lines.insert(2, f"  outside the graph  {s['step_overhead_s'] * 1e3:.4g} ms/step (data "
                        "loading, logging, .item(), LR scheduler: --step-overhead-ms)")
    par = s.get("parallel") or {}
    if s.get("num_devices", 1) > 1 and par:
        lines.insert(1, f"  {s['num_devices']} devices on {par['cluster']}: dp {par['dp']} x tp "
                     f"{par['tp']} x pp {par['pp']}"
                     + (f" x cp {par['cp']}" if par.get("cp", 1) > 1 else "")
                     + (f", experts over ep {par['ep']}" if par.get("ep", 1) > 1 else "")
                     + f", ZeRO {par['zero']}"
                     + (", sequence parallel" if par["sequence_parallel"] else "")
                     + (", hidden-sharded" if par.get("hidden_sharded") else "")
                     + (f", {par['schedule']} schedule" if par["pp"] > 1 else "")
                     + (f", stage layers {_runs(par['stage_layers'])}"
                        if par.get("stage_layers") and len(set(par["stage_layers"])) > 1
                        else ""))
        lines.append(f"  communication      {par['communication_s']:.4g} s/step, exposed "
                     f"{par['exposed_communication_s']:.4g} s; pipeline bubble "
                     f"{par['bubble_fraction']:.1%} of the step")
    if "total_time_s" in s:
        cost = (f"${s['cost_usd']:,.0f}" if s["cost_usd"] is not None
                else f"n/a ({_missing_price(s['device'], device, False)}: "
                     "--price-per-hour USD)")
        lines.append(f"  whole run          {s['steps']:.4g} steps, {s['total_time_s'] / 86400:.4g}"
                     f" days, {s['device_hours']:,.0f} device-hours, {s['energy_kwh']:,.0f} kWh,"
                     f" {s['co2_kg']:,.0f} kg CO2, cost {cost}")
        if s.get("goodput", 1.0) < 1.0:
            lines.append(f"  goodput            {s['goodput']:.1%}: steps "
                         f"{s['training_time_s'] / 86400:.4g} days, checkpoints "
                         f"{s['checkpoint_time_s'] / 3600:.4g} h, evaluations "
                         f"{s['eval_time_s'] / 3600:.4g} h, failures (expected) "
                         f"{s['failure_time_s'] / 3600:.4g} h"
                         + (f"; Young's optimum: a checkpoint every "
                            f"{s['young_checkpoint_every']:,} steps"
                            if "young_checkpoint_every" in s else ""))
        if "own_cost_usd" in s:
            owned = (f"${s['own_cost_usd']:,.0f}" if s["own_cost_usd"] is not None
                     else f"n/a ({_missing_price(s['device'], device, True)}: "
                          "--set purchase_usd=...)")
            lines.append(f"  owning             {owned} (devices and nodes over "
                         f"{s['own_years']:g} years, electricity at "
                         f"${s['electricity_usd_per_kwh']:g}/kWh) vs renting {cost}")
    lines += [f"  note: {note}" for note in s.get("notes", [])]
    return "\n".join(lines)


def _missing_price(name: str, device, purchase: bool) -> str:
    """Why ``name`` has no on-demand (``purchase``: purchase) price, for a cost shown as n/a:
    a sentence for each of the spec's ``unpriced_label`` states (``Unpriced.label``, which
    decides them), with the record's search date: 'alveo-u280 is not rented by anyone
    (searched 2026-12-04), its spec says where' (not offered), 'no on-demand price cited for
    h20 (searched 2026-12-04), its spec says why' (none cited; no date without a record),
    'cpu-host is not a product: no on-demand price' (n/a)."""
    kind = "purchase" if purchase else "on-demand"
    label = "none cited" if device is None else device.unpriced_label(purchase)
    if label == "n/a":
        return f"{name} is not a product: no {kind} price"
    record = device and (device.purchase_unpriced if purchase else device.rent_unpriced)
    searched = f" (searched {record.searched})" if record else ""
    if label == "not offered":
        return (f"{name} is not {'sold' if purchase else 'rented'} by anyone{searched}, its "
                "spec says where")
    return f"no {kind} price cited for {name}{searched}, its spec says why"


def _calibrate(args) -> int:
    import dataclasses

    from hardware_specs.host import on_cores
    from hardware_specs.loader import load_device
    from hardware_specs.spec import DeviceClass
    from hardware_specs.writer import calibrated_toml
    from simulator.calibrate import fit as calibrate
    from simulator.calibrate import published, records, stability, timing
    from simulator.report.io import progress_bar, writable, write_atomic

    for path, option in ((args.out, "--out"), (args.record, "--record")):
        if path:
            writable(path, option)   # before any timing
    device = load_device(args.device)
    if args.recorded and published.kind_of(args.recorded):   # a published kernel table
        out, lines, text = published.calibrate(args.recorded, device, args.out)
        write_atomic(out, text)
        print("\n".join(lines))
        print(f"wrote {out}: use it with --device {out}")
        return 0
    if args.recorded:  # fit recorded timings: nothing is timed, the device need not be here
        _set_threads(args.threads, None)
        measurements, env = records.read_kernels(args.recorded)
    else:
        runtime = present_runtime(device)
        _set_threads(args.threads, runtime)
        todo = calibrate.cases(quick=args.quick)
        if runtime.startswith("cuda"):
            todo = [dataclasses.replace(c, dtype="bf16") if c.kind in ("matmul", "conv") else c
                    for c in todo]
        measurements = timing.measure(todo, runtime, progress=progress_bar)
        env = records.environment(runtime)
    if args.threads and device.device_class is DeviceClass.CPU:
        device = on_cores(device, args.threads)   # a CPU calibrated on that many cores
    # the noisiest cases timed again, then the fit judged: CalibrationRefused (one line,
    # exit 2) writes nothing, not even --record
    retime = None if args.recorded else (
        lambda again: timing.measure(again, runtime, progress=progress_bar))
    fit = calibrate.checked_fit(device, measurements, retime)
    fit.spread_ = stability.stability(device, measurements, fit)   # said and written, not refused
    if args.record and not args.recorded:
        write_atomic(args.record, records.kernels_csv(fit.measurements_, env))
        print(f"wrote {args.record}: the timings, for hwsim calibrate --from")
    calibrated = dataclasses.replace(fit.apply(), name=f"{device.name}-calibrated")
    text = calibrated_toml(device, calibrated, calibrate.provenance(env, fit.spread_, fit.held_))
    out = args.out or f"{device.name}-calibrated.toml"
    write_atomic(out, text)
    print(fit.report())
    print(f"wrote {out}: use it with --device {out}")
    return 0


def _set_threads(threads: int | None, runtime: str | None) -> None:
    """Check ``--threads`` and limit torch to that many CPU threads; ``runtime`` None: timings
    recorded elsewhere, nothing to limit here."""
    if threads is None:
        return
    if threads <= 0:
        raise HwsimError(f"--threads = {threads} must be a positive integer")
    if runtime is None:
        return
    if runtime != "cpu":
        raise HwsimError(f"--threads {threads}: only a CPU calibration or validation takes it")
    import torch

    torch.set_num_threads(threads)


def _validate(args) -> int:
    from hardware_specs.loader import load_device
    from simulator.calibrate.validate import report, validate_models
    from simulator.report.io import progress_bar, writable, write_atomic

    if args.record:
        writable(args.record, "--record")   # before any timing
    device = load_device(args.device)
    runtime = present_runtime(device)
    _set_threads(args.threads, runtime)
    if args.steps <= 0:
        raise HwsimError(f"--steps = {args.steps} must be a positive integer")
    rows = validate_models(args.models, device, runtime, args.steps, progress=progress_bar)
    print(report(rows))
    if args.record:
        from simulator.calibrate import records

        write_atomic(args.record, records.steps_csv(rows, records.environment(runtime),
                                                    device.name))
        print(f"wrote {args.record}")
    return 0


def present_runtime(device) -> str:
    """The torch device that runs ``device`` here, or a one-line error if it is not present."""
    from hardware_specs.spec import DeviceClass

    try:
        import torch
    except ImportError:
        raise HwsimError('calibration runs torch: pip install "hwsim[torch]"') from None
    if device.device_class is DeviceClass.CPU:
        if not device.name.startswith("cpu-host"):  # cpu-host, or a calibrated copy of it
            raise HwsimError(f"--device {device.name}: hwsim calibrates the machine it runs "
                             "on; use --device cpu-host (this machine's CPU)")
        return "cpu"
    if device.device_class is DeviceClass.GPU and torch.cuda.is_available():
        here = torch.cuda.get_device_name(0)
        family = device.name.split("-")[0].upper()
        if family in here.upper().replace(" ", ""):
            return "cuda"
        raise HwsimError(f"--device {device.name}: the GPU here is {here!r}; calibrate the "
                         "catalogue entry of that GPU")
    raise HwsimError(f"--device {device.name}: no such device is present here (no CUDA GPU "
                     "visible to torch); use --device cpu-host, or run on a machine with it")


def _models(args) -> int:
    from workloads.zoo import MODELS

    for name, work in MODELS.items():
        seq = work.tokens_per_sample
        moe = getattr(work, "moe", None)
        print(f"{name:14s} {work.num_params() / 1e6:12,.1f}M params"
              + (f"   seq {seq}" if seq else "")
              + (f"   mixture of {moe.experts} experts, {work.active_params() / 1e6:,.1f}M "
                 "active" if moe else ""))
    return 0


def _devices(args) -> int:
    from hardware_specs.loader import list_devices, load_device
    from simulator.graph.op import DType

    from simulator.cost.status import status_line

    devices = {name: load_device(name) for name in list_devices()}  # all valid, then print
    for name, d in devices.items():
        print(f"{name:16s} {d.device_class.value:11s} {_half_words(d)} "
              f"TFLOP/s  fp32 {d.peak_for(DType.FP32) / 1e12:6.1f}  mem "
              f"{d.memory_bytes / 2 ** 30:6.1f} GiB at {d.memory_bandwidth_bytes_per_s / 1e9:6.0f} GB/s"
              f"{_streaming_words(d)}  {_power_words(d)}  {_price_words(d)}  "
              f"{status_line(d)}")
        print(f"{'':16s} source: {d.source}")
    print("per op class: measured (a cited kernel measurement), calibrated (hwsim calibrate), "
          "kernel-fit, prior (the class median), datasheet (the peak: optimistic), as-gemm, "
          "fp32-measured (conv: fp32 measured, 16-bit as GEMMs), as-norm (compiled-norm: "
          "norms under compiled fusion at the eager kernels' figure)")
    print("prices: on-demand USD per device-hour and purchase USD, each cited in the spec's "
          "[price] comments ('(system)': a whole computer's price, with no server node's parts "
          "to add); 'not offered (searched DATE)': no one rents (sells) the device, as far as "
          "that day's search found; 'none cited (searched DATE)': it is offered, but no "
          "citable dated price was found (the spec's comments say where each was searched): "
          "give --price-per-hour DEVICE=USD or --set purchase_usd=USD")
    print("power: 'TDP ... (prior)', 'idle prior': a figure not published for the device, a "
          "prior from measured devices of its class (the spec's [power] comments say which; "
          "its energy figures are uncertain): give --set tdp_w=W or --set idle_power_w=W")
    _clusters()
    return 0


def _clusters() -> None:
    """The cluster presets (``--cluster NAME``): nodes x devices, the networks inside and
    between nodes (per device and direction), a node's power besides its devices and the
    devices' set point where the preset cites them, and the preset's source."""
    from hardware_specs.cluster import list_clusters, load_cluster

    clusters = {name: load_cluster(name) for name in list_clusters()}
    print("cluster presets (--cluster NAME): nodes x devices per node, the networks per device "
          "and direction, a node's power besides its devices, the devices' set point")
    for name, c in clusters.items():
        between = ("" if c.inter is None else f", {c.inter.name} "
                   f"{c.inter.bandwidth_bytes_per_s / 1e9:g} GB/s between nodes")
        power = (f", node overhead {c.node_overhead_w:,.0f} W" if c.node_overhead_w else "")
        limit = (f", set point {c.power_limit_w:g} W" if c.power_limit_w else "")
        print(f"{name:18s} {c.nodes} x {c.devices_per_node} {c.device.name}, {c.intra.name} "
              f"{c.intra.bandwidth_bytes_per_s / 1e9:g} GB/s in a node{between}"
              f" ({c.topology.value}){power}{limit}")
        print(f"{'':18s} source: {c.source}")


def _half_words(device) -> str:
    """The 16-bit matrix peak as the datasheet gives it: ``bf16   312.0``; ``fp16   112.0`` on a
    device without bf16 (V100, T4, P100: a bf16 run falls back to the fp16 rate with a note,
    ``simulator.cost.precision``); ``bf16       -`` on one with neither (an int8-only NPU, an FPGA
    whose matrix figure is fp32 or int8), not the fallback rate ``peak_for`` would give."""
    from simulator.graph.op import DType

    for dtype in (DType.BF16, DType.FP16):
        if dtype in device.peak_flops_per_s:
            return f"{dtype.name.lower()} {device.peak_flops_per_s[dtype] / 1e12:7.1f}"
    return f"bf16 {'-':>7s}"


def _streaming_words(device) -> str:
    """`` + 64 GB streaming at 16 GB/s`` for a device with streaming memory (a Graphcore
    IPU's, ``simulator.schedule.streamed``), else nothing."""
    level = device.streaming_memory
    return ("" if level is None else f" + {level.capacity_bytes / 2 ** 30:.0f} GiB streaming at "
            f"{level.bandwidth_bytes_per_s / 1e9:.0f} GB/s")


def _power_words(device) -> str:
    """``TDP 700 W``, with ``(prior)`` after a TDP and ``idle prior`` for an idle draw that is
    a prior, not published for the device (``DeviceSpec.power_priors``)."""
    tdp = " (prior)" if "tdp_w" in device.power_priors else ""
    idle = ", idle prior" if "idle_w" in device.power_priors else ""
    return f"TDP {device.tdp_w:.0f} W{tdp}{idle}"


def _price_words(device) -> str:
    """``rent $4.00/h buy $17,349``, ``(system)`` after a purchase price that buys a whole
    computer (a Mac Studio); for a price the spec does not give, its record
    (``DeviceSpec.unpriced_words``): 'not offered (searched 2026-12-04)' where no one rents
    (sells) it, 'none cited (searched 2026-12-04)' where it is offered but no citable price
    was found, plain 'none cited' where the spec says neither."""
    rent, buy = device.price_per_hour_usd, device.purchase_usd
    system = " (system)" if buy is not None and device.purchase_is_system else ""
    return (f"rent {device.unpriced_words() or f'${rent:.2f}/h'} "
            f"buy {device.unpriced_words(purchase=True) or f'${buy:,.0f}'}{system}")


def entry() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    sys.exit(main())
