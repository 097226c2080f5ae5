"""hwsim: predict deep-learning training time, memory, energy and cost on hardware you lack."""
from simulator.errors import HwsimError, PlanError, SpecError, WorkloadError
from simulator.graph import OpGraph
from simulator.op import Block, DType, Op, OpKind, Phase
from simulator.plan import Attention, Fusion, Optimizer, Plan, Precision, Recompute
from simulator.result import Result
from simulator.simulate import simulate
from simulator.training import training_graph

__version__ = "0.1.0"
__all__ = ["Attention", "Block", "Fusion", "DType", "HwsimError", "Op", "OpGraph", "OpKind", "Optimizer", "Phase",
           "Plan", "PlanError", "Precision", "Recompute", "Result", "SpecError",
           "WorkloadError", "simulate", "training_graph"]
