"""Flags that several ``hwsim`` commands share: one per plan field, made from the plans'
dataclasses (``simulator.plan.fields``: name, type, default, choices and help), and ``--set``.

A field ``micro_batch`` is the flag ``--micro-batch``; a switch on by default,
``overlap_grad_reduce``, is ``--no-overlap-grad-reduce``. The parsed arguments keep the
fields' names, so ``plan_values`` reads them back.
"""
from __future__ import annotations

import argparse
import math

from simulator.errors import SpecError
from simulator.plan.fields import PARALLEL, PLAN, PlanField


def add_plan_fields(p: argparse.ArgumentParser, unset: bool = False) -> None:
    """A flag for each field of ``Plan`` and then of ``ParallelPlan``. ``unset``: every flag
    defaults to None, so that only the flags given change the plan (``hwsim compare``)."""
    for field in (*PLAN.values(), *PARALLEL.values()):
        default = None if unset else field.default
        if field.kind is bool:
            on = field.default is True
            p.add_argument(f"--no-{flag(field.name)[2:]}" if on else flag(field.name),
                           dest=field.name, action="store_false" if on else "store_true",
                           default=default, help=field.help)
        else:
            p.add_argument(flag(field.name), type=int if field.kind is int else None,
                           choices=field.choices, default=default, metavar=field.metavar,
                           help=field.help)


def plan_values(args: argparse.Namespace, fields: dict[str, PlanField]) -> dict:
    """The parsed value of each of ``fields`` (``PLAN``, ``PARALLEL``), by field name."""
    return {name: getattr(args, name) for name in fields}


def flag(name: str) -> str:
    """The flag of a plan field: ``virtual_stages`` -> ``--virtual-stages``."""
    return "--" + name.replace("_", "-")


def add_set_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=None, metavar="PATH=VALUE",
                   help="change a device figure, SI units (memory.main.bandwidth_bytes_per_s"
                   "=6e12, tdp_w=500, price_per_hour_usd=2.5); repeatable")


def add_run_flags(p: argparse.ArgumentParser, prices: bool = True) -> None:
    """The run totals' flags every command that predicts shares (predict, compare, sweep,
    plan): datacentre PUE, carbon intensity, a node's power besides its devices, the cost of
    owning (``own_cost_usd``) and, with ``prices``, per-device prices."""
    p.add_argument("--node-overhead-w", type=float, default=None, metavar="WATTS",
                   help="run totals: power per node besides the devices (hosts, NICs, fans; "
                        "default: a cluster preset's measured, else datasheet, maximum node "
                        "power less its devices' TDPs; where the preset cites its node's "
                        "measured idle, its other parts at the step's device power; else 0)")
    p.add_argument("--pue", type=positive_float, default=None,
                   help="datacentre power usage effectiveness for run totals (default 1.0)")
    p.add_argument("--carbon-intensity", dest="carbon_intensity", type=positive_float, default=None,
                   metavar="KG_PER_KWH", help="grid carbon intensity for run totals (default "
                   "0.39, U.S. 2022, EIA)")
    p.add_argument("--own-years", type=positive_float, default=None, metavar="N",
                   help="own_cost_usd: the devices bought and kept N years (with "
                        "--electricity-usd-per-kwh)")
    p.add_argument("--electricity-usd-per-kwh", type=positive_float, default=None, metavar="P",
                   help="own_cost_usd: the price of electricity (with --own-years)")
    p.add_argument("--node-cost-usd", type=positive_float, default=None, metavar="USD",
                   help="own_cost_usd: a node's parts besides its devices (default 32,010, a "
                        "DGX H100's, SemiAnalysis 2023)")
    if prices:
        p.add_argument("--price-per-hour", type=parse_prices, default=None,
                       metavar="DEVICE=USD,...", help="on-demand USD per device-hour by device "
                       "(a100=1.8,h100=2.5), instead of the catalogue's")


def run_values(args: argparse.Namespace) -> dict:
    """``simulate``'s run-total keywords from ``add_run_flags``' flags (those given)."""
    values = {"pue": args.pue, "grid_kg_co2_per_kwh": args.carbon_intensity,
              "node_overhead_w": args.node_overhead_w,
              "own_years": args.own_years,
              "electricity_usd_per_kwh": args.electricity_usd_per_kwh,
              "node_cost_usd": args.node_cost_usd}
    return {key: value for key, value in values.items() if value is not None}


def parse_prices(text: str) -> dict[str, float]:
    """``"a100=1.8,h100=2.5"`` (``--price-per-hour``) -> ``{"a100": 1.8, "h100": 2.5}``; a
    bare price (``2.5``) prices every device: ``{"*": 2.5}``."""
    prices: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep and "," not in text:
            name, sep, value = "*", "=", item
        try:
            price = float(value)
        except ValueError:
            price = math.nan
        if not sep or not name.strip() or not (math.isfinite(price) and 0 < price <= 1e6):
            raise argparse.ArgumentTypeError(
                f"{item.strip()!r}: write DEVICE=USD per device-hour, such as a100=1.8,h100=2.5")
        prices[name.strip()] = price
    return prices


def positive_float(text: str) -> float:
    """A finite number > 0 (``1e9``): ``float()`` alone lets nan, inf and 0 through."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0, such as 1e9")
    return value


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``["PATH=VALUE", ...]`` (``--set``) -> ``{PATH: VALUE}`` for
    ``hardware_specs.override``."""
    changes: dict[str, str] = {}
    for item in items or []:
        path, sep, value = item.partition("=")
        if not sep or not path.strip() or not value.strip():
            raise SpecError(f"--set {item!r}: write PATH=VALUE, such as "
                            "memory.main.bandwidth_bytes_per_s=6e12")
        changes[path.strip()] = value.strip()
    return changes


__all__ = ["add_plan_fields", "add_run_flags", "add_set_flag", "flag", "parse_prices",
           "parse_sets", "plan_values", "run_values"]
