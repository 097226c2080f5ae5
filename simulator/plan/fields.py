"""The plans' fields, read from the dataclasses: what the command line's flags
(``simulator.cli.flags``), a sweep's grid (``simulator.explore.sweep``) and a Result's echo
of the parallel plan (``simulator.api``) are made from, so that a field added to ``Plan`` or
``ParallelPlan`` is a flag, a grid field and an echoed key without another list to edit.

A field's ``metadata`` may say:

- ``help``: the help of its flag; ``metavar``: its flag's value name;
- ``choices``: the values it takes, when not an enum's (ZeRO's stages);
- ``unset``: the command line and sweeps leave it unset (None) by default and derive it
  (micro_batch from the model, dp from the devices);
- ``derived``: the command line and sweeps give it through another field (micro_batches,
  through the global batch): no flag, no grid field, no echo;
- ``echo``: False when a Result reports it otherwise (first/last_stage_layers as its
  ``stage_layers``).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from enum import Enum
from types import UnionType

from simulator.plan.parallel import ParallelPlan
from simulator.plan.step import Plan


@dataclass(frozen=True)
class PlanField:
    """One field of ``Plan`` or ``ParallelPlan`` as the command line and sweeps see it."""

    name: str
    kind: type               # int, bool or an Enum
    default: object          # the dataclass's (None where ``unset``), an enum as its value
    help: str | None = None
    metavar: str | None = None
    choices: typing.Sequence | None = None   # an enum's values, or the metadata's
    echo: bool = True


def plan_fields(cls: type) -> dict[str, PlanField]:
    """The fields of ``cls`` (``Plan`` or ``ParallelPlan``) that the command line and sweeps
    set, in the dataclass's order (its ``derived`` ones left out)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if meta.get("derived"):
            continue
        kind = _kind(hints[f.name])
        choices = meta.get("choices")
        if issubclass(kind, Enum):
            choices = [member.value for member in kind]
        out[f.name] = PlanField(f.name, kind, None if meta.get("unset") else plain(f.default),
                                meta.get("help"), meta.get("metavar"), choices,
                                meta.get("echo", True))
    return out


def plain(value):
    """An enum as its value (the command line's and a table's form); anything else as is."""
    return value.value if isinstance(value, Enum) else value


def echo(parallel: ParallelPlan) -> dict:
    """What a Result says of ``parallel``: its echoed fields, enums as their values."""
    return {name: plain(getattr(parallel, name)) for name, f in PARALLEL.items() if f.echo}


def _kind(hint) -> type:
    """int from ``int | None``; the type itself otherwise."""
    if isinstance(hint, UnionType) or typing.get_origin(hint) is typing.Union:
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return hint


#: The step plan's and the parallel plan's fields, in their dataclasses' order.
PLAN = plan_fields(Plan)
PARALLEL = plan_fields(ParallelPlan)

__all__ = ["PARALLEL", "PLAN", "PlanField", "echo", "plain", "plan_fields"]
