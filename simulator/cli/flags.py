"""Flags that several ``hwsim`` commands share: one per plan field, made from the plans'
dataclasses (``simulator.plan.fields``: name, type, default, choices and help), and ``--set``.

A field ``micro_batch`` is the flag ``--micro-batch``; a switch on by default,
``overlap_grad_reduce``, is ``--no-overlap-grad-reduce``. The parsed arguments keep the
fields' names, so ``plan_values`` reads them back.
"""
from __future__ import annotations

import argparse

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


__all__ = ["add_plan_fields", "add_set_flag", "flag", "parse_sets", "plan_values"]
