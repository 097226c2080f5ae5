"""OpGraph.names: an op marked issue_early takes its place just after the last-placed of its
inputs, an early input counting at its own place (not where it was added). Streams run their
ops in this order, so an early op reading another early op (a gradient reduction after its
gradient accumulation) must not fall to the end of the step."""
import numpy as np

from simulator import Plan, simulate
from simulator.graph.collective import Axis
from simulator.graph.lower import COLLECTIVE_FNS
from simulator.graph.op import Op, OpKind, Phase
from simulator.graph.opgraph import OpGraph
from simulator.plan.parallel import ParallelPlan
from workloads.transformer import TransformerConfig


def _op(name: str) -> Op:
    return Op(name=name, kind=OpKind.ELEMENTWISE, phase=Phase.FORWARD, bytes_read=1,
              bytes_written=1)


def test_an_early_op_after_an_early_input_keeps_its_place():
    """a -> b -> c, then x (early, reads a) and y (early, reads x) added last: x goes just
    after a, and y just after x, not after c, where y was added."""
    g = OpGraph("g")
    g.add(_op("a"), [])
    g.add(_op("b"), ["a"])
    g.add(_op("c"), ["b"])
    g.add(_op("x"), ["a"])
    g.issue_early("x")
    g.add(_op("y"), ["x"])
    g.issue_early("y")
    assert g.names() == ["a", "x", "y", "b", "c"]
    # an op that is not early stays where it was added
    g.add(_op("z"), ["x"])
    assert g.names() == ["a", "x", "y", "b", "c", "z"]


def test_reductions_are_not_held_behind_the_backwards_gathers():
    """FSDP with unfused gradient accumulation: each block's reduce-scatter waits for its
    gradient add (both early ops, the add added after the backward's ops); it is issued as
    the block's gradients are ready, so on the in-order data-parallel stream it runs before
    the backward gather issued two blocks later (it used to run after every backward gather,
    its place taken from where the add was added)."""
    model = TransformerConfig("small", layers=4, hidden=1024, heads=8, vocab=8192,
                              seq_len=1024)
    r = simulate(model, "a100-sxm4-80gb", Plan(micro_batch=1, global_batch=16),
                 parallel=ParallelPlan(dp=16, zero=3, fused_grad_accumulation=False,
                                       comm_interference=False))
    low, start = r.lowered, r.times["start_s"]
    data = [i for i in range(len(low)) if low.axis[i] == int(Axis.DATA)
            and low.kind[i] == int(OpKind.COLLECTIVE)]
    names = np.asarray(low.names)

    def first(prefix: str, layer: int) -> int:
        (i,) = [i for i in data if names[i].startswith(prefix)
                and names[i].endswith(f":L{layer}")]
        return i

    for layer in (3, 2):
        scatter = first("dp_reduce_scatter", layer)
        assert low.collective[scatter] == COLLECTIVE_FNS.index("reduce_scatter")
        assert start[scatter] < start[first("zero3_all_gather_backward", layer - 2)]
