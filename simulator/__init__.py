"""hwsim: predict deep-learning training time, memory, energy and cost on hardware you lack.

The records and plans (errors, graph, plan) import eagerly; ``simulate`` and the rest load on
first use, so that ``import simulator`` stays light and ``hardware_specs`` and ``workloads`` can
import ``simulator.graph`` without loading the engine.
"""
from importlib import import_module

from simulator.errors import HwsimError, InternalError, PlanError, SpecError, WorkloadError
from simulator.graph.op import Block, DType, Op, OpKind, Phase
from simulator.plan.parallel import ParallelPlan, Schedule
from simulator.plan.step import Attention, Fusion, Optimizer, Plan, Precision, Recompute

__version__ = "0.1.0"

_LAZY = {"simulate": "simulator.api", "Result": "simulator.report.result",
         "OpGraph": "simulator.graph.opgraph",
         "training_graph": "simulator.training.backward",
         "sweep": "simulator.explore.sweep", "compare": "simulator.explore.sweep",
         "capacity_plan": "simulator.explore.capacity",
         "CapacityReport": "simulator.explore.capacity",
         "StageCache": "simulator.explore.memo",
         "Calibration": "simulator.calibrate.fit", "override": "hardware_specs.override"}


def __dir__() -> list[str]:
    """The module's names with the lazy ones (``simulate``, ``compare``, ...), for ``dir()`` and
    tab completion."""
    return sorted(set(globals()) | set(_LAZY))


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'simulator' has no attribute {name!r}")


__all__ = ["Attention", "Block", "Calibration", "CapacityReport", "DType", "Fusion",
           "HwsimError", "InternalError", "Op", "OpGraph", "OpKind", "Optimizer",
           "ParallelPlan", "Phase", "Plan", "PlanError", "Precision", "Recompute", "Result",
           "Schedule", "SpecError", "StageCache", "WorkloadError", "capacity_plan", "compare",
           "override", "simulate", "sweep", "training_graph"]
