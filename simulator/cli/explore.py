"""The ``hwsim compare``, ``hwsim sweep`` and ``hwsim plan`` commands (``simulator.cli.main`` adds
them): tables over several devices, sweeps over plans, capacity planning.

Every mistake is a ``HwsimError`` (one line, exit 2 in ``simulator.cli.main``); an interrupted
sweep keeps the rows already computed in ``--out`` and exits 130.
"""
from __future__ import annotations

import argparse
import math

from simulator.cli.flags import (
    add_plan_fields,
    add_run_flags,
    add_set_flag,
    parse_sets,
    plan_values,
    positive_float,
    run_values,
)
from simulator.errors import HwsimError, PlanError

_GIB = 2.0 ** 30   # memory shown in GiB, as a device's '80 GB' of HBM means it
_PLAN_COLUMNS = ["device", "num_devices", "dp", "tp", "pp", "cp", "ep", "schedule", "zero",
                 "recompute", "micro_batch"]


def add_commands(sub) -> None:
    """Add compare, sweep and plan to the ``hwsim`` subcommands ``sub``."""
    c = sub.add_parser("compare", help="one plan on several devices, side by side")
    c.add_argument("model", help="as for predict")
    _devices_flag(c, required=False)
    c.add_argument("--num-devices", type=int, default=None, help="devices of each kind")
    c.add_argument("--seq-len", type=int, default=None, help="override the model's context")
    add_plan_fields(c, unset=True)
    c.add_argument("--tokens", type=positive_float, default=None, help="whole run: tokens")
    add_run_flags(c)
    add_set_flag(c)
    out = c.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON records")
    out.add_argument("--csv", action="store_true", help="print CSV")
    s = sub.add_parser("sweep", help="every combination of devices, device counts and plans")
    s.add_argument("model", help="as for predict")
    _devices_flag(s, required=False)
    _grid_flags(s)
    s.add_argument("--tokens", type=positive_float, default=None, help="whole run: tokens")
    s.add_argument("--out", default=None, help="write the rows to a .csv or .parquet file "
                   "(kept when interrupted); default: CSV on stdout")
    s.add_argument("--seq-len", type=int, default=None, help="override the model's context")
    add_plan_fields(s, unset=True)
    add_run_flags(s)
    add_set_flag(s)
    p = sub.add_parser("plan", help="the cheapest / fastest / greenest way to train on T tokens "
                       "within a deadline and a budget")
    p.add_argument("model", help="a language model, as for predict")
    p.add_argument("--tokens", type=positive_float, required=True, help="tokens to train on")
    p.add_argument("--deadline-days", type=positive_float, default=None)
    p.add_argument("--budget-usd", type=positive_float, default=None)
    p.add_argument("--rank-by", choices=("cost", "time", "energy"), default="cost")
    _devices_flag(p, required=False)
    _grid_flags(p)
    p.add_argument("--top", type=int, default=10, help="feasible configurations to print")
    p.add_argument("--out", default=None, help="write every configuration with its verdict to "
                   "a .csv or .parquet file")
    p.add_argument("--seq-len", type=int, default=None, help="override the model's context")
    add_plan_fields(p, unset=True)
    add_run_flags(p)
    add_set_flag(p)


def _devices_flag(p, required: bool) -> None:
    p.add_argument("--devices", required=required, type=_names, metavar="A,B,...",
                   help="catalogue names or spec files, comma-separated")
    p.add_argument("--cluster", type=_names, default=None, metavar="PRESET,...",
                   help="cluster presets (dgx-a100, dgx-h100, ...), comma-separated: their "
                        "devices, node layout and links (plan: their devices, counted by the "
                        "planner)")


def _grid_flags(p) -> None:
    p.add_argument("--device-counts", type=_counts, default=None, metavar="N1,N2,...",
                   help="devices of each kind (default: dp x tp x pp of each plan)")
    p.add_argument("--grid", action="append", default=None, metavar="FIELD=V1,V2,...",
                   help="plan values to combine (repeatable): tp, pp, dp, zero, recompute, "
                   "micro_batch, global_batch, precision, ...")
    p.add_argument("--workers", type=int, default=None, help="processes (default: the CPUs)")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="run on this Dask scheduler instead of local processes")
    # --grid-intensity: the old name of --carbon-intensity (add_run_flags), kept working
    p.add_argument("--grid-intensity", dest="carbon_intensity", type=positive_float,
                   default=None, help=argparse.SUPPRESS)


# ------------------------------------------------------------------------------- commands

def compare_command(args) -> int:
    from simulator.explore.sweep import FIELDS, compare

    fields = {key: value for key, value in plan_values(args, FIELDS).items()
              if value is not None}
    specs = _specs(args, _hardware(args))
    rows = compare(_model(args), specs, num_devices=args.num_devices,
                   tokens=args.tokens, totals=run_values(args), **fields)
    if len(rows) and not (rows["status"] == "ok").any():   # the flags, not a device: one line
        raise PlanError(_no_device_runs(rows))
    if args.json:
        print(rows.to_json(orient="records", indent=2))
    elif args.csv:
        print(rows.to_csv(index=False), end="")
    else:
        from simulator.cost.status import priors_summary

        print(_table(rows, list(rows.columns), specs))
        summary = priors_summary([getattr(spec, "device", spec) for spec in specs])
        if summary:
            print(summary)
    return 0


def _no_device_runs(rows, shown: int = 3) -> str:
    """The one line for a compare no device can run: the reason alone when every device gives
    the same one; else each distinct reason with the devices giving it (a reason that names its
    device is not prefixed again), the first ``shown`` of them and 'and N more devices'."""
    by_reason: dict[str, list[str]] = {}
    for device, status in zip(rows["device"], rows["status"]):
        by_reason.setdefault(status.removeprefix("invalid: "), []).append(str(device))
    if len(by_reason) == 1:
        return next(iter(by_reason))
    parts = [reason if all(name in reason for name in names)
             else f"{', '.join(names)}: {reason}" for reason, names in by_reason.items()]
    more = sum(len(names) for names in list(by_reason.values())[shown:])
    tail = f"; and {more} more device{'s' * (more > 1)}" if more else ""
    return "no device can run this plan: " + "; ".join(parts[:shown]) + tail


def sweep_command(args) -> int:
    from simulator.explore.sweep import sweep

    client = _client(args.scheduler)
    try:
        specs = _specs(args, _hardware(args))
        rows = sweep(_model(args), specs, args.device_counts,
                     _grid_and_fixed(args), tokens=args.tokens,
                     workers=args.workers, client=client, out=args.out, **run_values(args))
    finally:
        if client is not None:
            client.close()
    ok = int((rows.status == "ok").sum())
    if args.out:
        print(f"wrote {len(rows)} configurations ({ok} valid, {len(rows) - ok} invalid) "
              f"to {args.out}")
        from simulator.cost.status import priors_summary

        summary = priors_summary([getattr(spec, "device", spec) for spec in specs])
        if summary:
            print(summary)
    else:
        print(rows.to_csv(index=False), end="")
    return 0


def plan_command(args) -> int:
    from simulator.report.io import TableFile

    writer = TableFile(args.out) if args.out else None
    try:
        return _plan(args, writer)
    finally:
        if writer:
            writer.release()


def _plan(args, writer) -> int:
    from simulator.explore.capacity import capacity_plan, priced_devices
    from simulator.explore.sweep import frame, parse_grid

    if args.top < 1:
        raise PlanError(f"--top = {args.top} must be a positive integer")
    specs = _specs(args, _cluster_devices(args) or args.devices
                   or _priced(args, priced_devices()))
    client = _client(args.scheduler)
    try:
        report = capacity_plan(_model(args), args.tokens,
                      devices=specs,
                      device_counts=args.device_counts, deadline_days=args.deadline_days,
                      budget_usd=args.budget_usd, rank_by=args.rank_by,
                      plans=parse_grid(args.grid) or None, workers=args.workers,
                      client=client, fixed=_fixed(args), **run_values(args))
    finally:
        if client is not None:
            client.close()
    if writer:
        import pandas as pd
        table = pd.concat([report.feasible.drop(columns="rank"), report.rejected])
        writer.write(frame({int(row["config"]): row for row in table.to_dict("records")}))
    if report.feasible.empty:
        raise HwsimError(report.why_nothing())
    print(plan_text(report, args.top, specs))
    return 0


def plan_text(report, top: int = 10, specs=()) -> str:
    """The top feasible configurations, the Pareto front and the rejections by reason; of
    ``specs`` (the devices or clusters searched), those of the configurations shown that run
    on class priors or datasheet rates are named (``priors_summary``), as ``compare`` does."""
    columns = ["rank", *_PLAN_COLUMNS, "total_time_days", "cost_usd", "own_cost_usd",
               "energy_kwh", "mfu", "tflops_per_watt", "tokens_per_joule", "samples_per_kwh",
               "peak_memory_bytes"]
    for size in ("cp", "ep"):   # shown only when some plan splits sequences or experts
        if size not in report.rows or (report.rows[size].fillna(1) == 1).all():
            columns.remove(size)
    if "own_cost_usd" not in report.rows or report.rows["own_cost_usd"].isna().all():
        columns.remove("own_cost_usd")   # shown with --own-years and an electricity price
    feasible = _pipeline_shown(report.feasible)
    front = _pipeline_shown(report.pareto).sort_values(["total_time_s", "config"])
    distinct = front.drop_duplicates(["device", "num_devices", "total_time_s", "cost_usd",
                                      "energy_kwh"])
    lines = [f"{len(feasible)} of {len(report.rows)} configurations feasible; top "
             f"{min(top, len(feasible))} by {report.rank_by}:",
             _table(feasible.head(top), columns, specs), "",
             f"Pareto front (time, cost, energy): {len(front)} configurations"
             + (f" ({len(front) - len(distinct)} with the same figures as one shown left out)"
                if len(distinct) < len(front) else ""),
             _table(distinct, columns[1:], specs, legend=False)]
    counts = report.rejections()
    if len(counts):
        lines += ["", "rejected: " + "; ".join(f"{n} {kind}" for kind, n in counts.items())]
    from simulator.explore.capacity import explain

    lines += ["", *explain(report)]
    if getattr(report, "pruned", None):
        lines.append("left out as dominated (dearer, hungrier, slower and smaller per device "
                     "than another) or unable to run it: " + ", ".join(
                         f"{name} ({by if by.startswith('cannot') else 'by ' + by})"
                         for name, by in report.pruned.items()))
    lines += note_lines(feasible.head(top)["notes"])
    if feasible["cost_usd"].isna().any():
        lines.append("note: devices without a price have no cost (give --price-per-hour "
                     "DEVICE=USD)")
    from simulator.cost.status import priors_summary

    shown = set(feasible.head(top)["device"]) | set(distinct["device"])
    summary = priors_summary([device for device in (getattr(spec, "device", spec)
                                                    for spec in specs)
                              if device.name in shown])
    if summary:
        lines.append(summary)
    return "\n".join(lines)


# -------------------------------------------------------------------------------- helpers

def note_lines(notes) -> list[str]:
    """``note: ...`` once per distinct note of the rows' ``notes`` (a pandas Series of
    '; '-joined notes, None or '' where a row has none: ``explode`` gives NaN for a row's
    empty list, dropped, not printed as 'note: nan')."""
    split = notes.dropna().map(split_notes).explode().dropna()
    return [f"note: {note}" for note in dict.fromkeys(split) if note]


def split_notes(text: str) -> list[str]:
    """A row's notes (``sweep.flatten`` joins them with '; ') one by one: split at '; '
    outside parentheses only, since a note may hold one in its own parenthesis ('rank
    variability 0: ... (the V100 figure applies to GPUs only; --rank-variability C sets
    one)')."""
    notes, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if depth <= 0 and text.startswith("; ", i):
            notes.append(text[start:i])
            start, depth = i + 2, 0
    return [note for note in (*notes, text[start:]) if note]


def _pipeline_shown(rows):
    """``rows`` with the schedule as shown: none without a pipeline, the chunks per device
    with the interleaved one ("interleaved x2")."""
    if "schedule" not in rows or rows.empty:
        return rows
    rows = rows.copy()
    rows["schedule"] = rows["schedule"].where(rows["schedule"] != "interleaved",
                                              "interleaved x" + rows["virtual_stages"].astype(str))
    rows.loc[rows["pp"] == 1, "schedule"] = "none"
    return rows


#: The columns a device's on-demand price (a purchase price) makes: n/a where it is missing.
_RENT_COLUMNS = ("price_per_hour_usd", "cost_usd_per_step", "cost_usd")
_OWN_COLUMNS = ("own_cost_usd",)


def _unpriced_cells(shown, specs):
    """``shown`` with a missing price's cells saying why (``DeviceSpec.unpriced_label``:
    'not offered' where no one rents (sells) the device, 'none cited' where no citable price
    was found) instead of n/a, on rows of valid plans of devices among ``specs``; the numbers
    of those columns as the table's other floats print. The legend line, or None."""
    devices = {device.name: device for device in (getattr(spec, "device", spec)
                                                  for spec in specs)}
    if "device" not in shown or not devices:
        return shown, None
    ok = shown["status"] == "ok" if "status" in shown else True
    labels = set()
    for columns, purchase in ((_RENT_COLUMNS, False), (_OWN_COLUMNS, True)):
        for column in (c for c in columns if c in shown):
            if shown[column].isna().all() and purchase:
                continue      # no --own-years: the column is empty for every device
            short = shown["device"].map(lambda name, p=purchase: (
                devices[name].unpriced_label(p) if name in devices else None))
            short = short.where(shown[column].isna() & ok & short.notna())
            if short.isna().all():
                continue
            labels |= set(short.dropna())
            shown[column] = short.where(short.notna(), shown[column].map(
                lambda v: "n/a" if math.isnan(v) else f"{v:.4g}"))
    if not labels:
        return shown, None
    legend = {"not offered": ("'not offered': no one rents (sells) the device, as far as the "
                              "search its spec records found"),
              "none cited": ("'none cited': no citable dated price was found (hwsim devices "
                             "says when it was searched)"),
              "n/a": "'n/a': the machine hwsim runs on, not a product"}
    return shown, ("cost columns: " + "; ".join(text for key, text in legend.items()
                                                if key in labels)
                   + "; give --price-per-hour DEVICE=USD or --set purchase_usd=USD")


def _table(rows, columns: list[str], specs=(), legend: bool = True) -> str:
    """The ``columns`` of ``rows`` as text; a missing price's cells say why where the devices'
    specs are given (``_unpriced_cells``, with ``legend`` its legend line after the table)."""
    shown = rows[[c for c in columns if c in rows.columns]].copy()
    if "peak_memory_bytes" in shown:
        shown["peak_memory_bytes"] = shown["peak_memory_bytes"] / _GIB
        shown = shown.rename(columns={"peak_memory_bytes": "peak_memory_gib"})
    if "memory_capacity_bytes" in shown:
        shown["memory_capacity_bytes"] = shown["memory_capacity_bytes"] / _GIB
        shown = shown.rename(columns={"memory_capacity_bytes": "capacity_gib"})
    shown, why = _unpriced_cells(shown, specs)
    text = shown.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="n/a")
    return text if why is None or not legend else f"{text}\n{why}"


def _fixed(args) -> dict:
    """The plan fields given as flags (``--cp 2``, ``--precision fp8``): every configuration
    of a sweep or plan keeps them."""
    from simulator.explore.sweep import FIELDS

    return {key: value for key, value in plan_values(args, FIELDS).items()
            if value is not None}


def _grid_and_fixed(args) -> dict | None:
    """A sweep's ``--grid`` with the plan fields given as flags as one-value lists (a field
    given both ways is a PlanError)."""
    from simulator.explore.capacity import with_fixed
    from simulator.explore.sweep import parse_grid

    grid, fixed = parse_grid(args.grid), _fixed(args)
    return (with_fixed(grid, fixed) if fixed else grid) or None


def _hardware(args) -> list[str]:
    """--devices and --cluster together (one of them needed)."""
    names = [*(args.devices or []), *(args.cluster or [])]
    if not names:
        raise HwsimError("give --devices (catalogue names or spec files) or --cluster "
                         "(presets: see 'hwsim devices')")
    return names


def _cluster_devices(args) -> list[str]:
    """A plan's --devices plus the devices of its --cluster presets (the planner counts)."""
    if not args.cluster:
        return []
    from hardware_specs.cluster import load_cluster

    return list(dict.fromkeys([*(args.devices or []),
                               *(load_cluster(name).device.name for name in args.cluster)]))


def _priced(args, names: list[str]) -> list[str]:
    """The catalogue's priced devices and those --price-per-hour names (the default devices
    of a plan), each device once: an alias (a100) is the device it loads (a100-sxm4-80gb)."""
    from hardware_specs.loader import load_device
    from simulator.errors import SpecError

    out, seen = [], set()
    for name in [*names, *(args.price_per_hour or {})]:
        if name == "*":
            continue
        try:
            device = load_device(name).name
        except SpecError:   # not a device (a cluster preset): resolve_devices says what it is
            device = name
        if device not in seen:
            seen.add(device)
            out.append(name)
    return out


def _model(args):
    """``args.model`` over ``--seq-len`` tokens when given (``simulator.api.with_seq_len``)."""
    if args.seq_len is None:
        return args.model
    from simulator.api import with_seq_len
    from workloads.zoo import get_workload

    return with_seq_len(get_workload(args.model), args.seq_len)


def _specs(args, devices):
    """The devices loaded, with ``--set`` and ``--price-per-hour`` applied."""
    from simulator.explore.sweep import resolve_devices, with_prices

    return with_prices(resolve_devices(list(devices), parse_sets(args.set)),
                       args.price_per_hour)


def _client(address: str | None):
    if address is None:
        return None
    try:
        from distributed import Client
    except ImportError:
        raise HwsimError('--scheduler needs Dask: pip install "hwsim[sweep]"') from None
    try:
        return Client(address, timeout=10)
    except (OSError, TimeoutError, ValueError) as err:
        raise HwsimError(f"--scheduler {address}: cannot connect ({err}); start one with "
                         "'dask scheduler' or leave --scheduler out") from None


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give one or more device names, such as a100,h100")
    return names


def _counts(text: str) -> list[int]:
    try:
        counts = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        counts = []
    if not counts or any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError(f"{text!r}: give positive whole numbers, such as 8,16")
    return counts


COMMANDS = {"compare": compare_command, "sweep": sweep_command, "plan": plan_command}
