"""How a step runs: the step's plan (batch, precision, recomputation, optimizer) and the
parallel plan (dp, tp, pp, cp, ZeRO, schedule)."""
from simulator.plan.parallel import ParallelPlan, Schedule
from simulator.plan.step import Attention, Fusion, Optimizer, Plan, Precision, Recompute

__all__ = ["Attention", "Fusion", "Optimizer", "ParallelPlan", "Plan", "Precision", "Recompute",
           "Schedule"]
