"""hwsim: predict deep-learning training time, memory, energy and cost on hardware you lack.

The light modules (op, graph, plan, errors) import eagerly; ``simulate`` and the rest load on
first use, so that ``hardware_specs`` and ``workloads`` can import ``simulator.op`` without
a circular import.
"""
from importlib import import_module

from simulator.errors import HwsimError, PlanError, SpecError, WorkloadError
from simulator.graph import OpGraph
from simulator.op import Block, DType, Op, OpKind, Phase
from simulator.plan import Attention, Fusion, Optimizer, Plan, Precision, Recompute

__version__ = "0.1.0"

_LAZY = {"simulate": "simulator.api", "Result": "simulator.result",
         "training_graph": "simulator.training"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'simulator' has no attribute {name!r}")


__all__ = ["Attention", "Block", "DType", "Fusion", "HwsimError", "Op", "OpGraph", "OpKind",
           "Optimizer", "Phase", "Plan", "PlanError", "Precision", "Recompute", "Result",
           "SpecError", "WorkloadError", "simulate", "training_graph"]
