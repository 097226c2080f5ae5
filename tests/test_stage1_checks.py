"""DeepSpeed 2021's ZeRO stage 1 optimizer walks every gradient twice before its update
(simulator.parallel.checks: stage1.py's CheckOverflow.check and get_grad_norm, DeeperSpeed
eb7f5cff): closed-form bytes and host waits, placement, and the plans that run it."""
import numpy as np
import pytest

from hardware_specs.loader import load_device
from simulator import Plan, simulate
from simulator.cost.host import sync_calls
from simulator.graph.collective import Axis
from simulator.graph.lower import COLLECTIVE_FNS
from simulator.graph.op import OpKind, Phase, Task
from simulator.parallel.checks import WALKS, walk_bytes
from simulator.plan.parallel import ParallelPlan
from workloads.transformer import TransformerConfig

WORK = TransformerConfig("small", layers=4, hidden=1024, heads=8, vocab=8192, seq_len=1024)


def _run(zero=1, sharding="deepspeed-2021", precision="fp16", tp=1):
    return simulate(WORK, "a100-sxm4-40gb", Plan(micro_batch=1, global_batch=16,
                                                 precision=precision),
                    parallel=ParallelPlan(dp=16, tp=tp, zero=zero, sharding=sharding,
                                          pipeline_engine="deepspeed", comm_interference=False))


def _walks(result):
    low = result.lowered
    return [i for i, name in enumerate(low.names) if name.split(":")[0] in WALKS]


def test_walk_bytes_closed_form():
    """float(x.float().sum()): a 16-bit gradient is cast (2 B read, 4 written) and the copy
    summed (4 read); an fp32 gradient's .float() is itself, only the sum reads it."""
    assert walk_bytes(1000, 2) == (6000, 4000)
    assert walk_bytes(1000, 4) == (4000, 0)


@pytest.mark.parametrize("precision, grad_bytes", [("fp16", 2), ("bf16", 2)])
def test_each_walk_covers_every_parameter_the_rank_holds(precision, grad_bytes):
    """Two walks (overflow, norm), one op per layer each, over the whole model (not the rank's
    1/16 ZeRO partition): their bytes are 2 x walk_bytes(all parameters), their host waits
    one per parameter tensor and walk."""
    r = _run(precision=precision)
    low, walks = r.lowered, _walks(r)
    forward = low.phase == int(Phase.FORWARD)
    params, tensors = low.params[forward].sum(), np.maximum(low.tensors[forward & (
        low.params > 0)], 1).sum()
    layers = len(np.unique(low.layer[forward & (low.params > 0)]))
    assert len(walks) == 2 * layers
    read, written = walk_bytes(int(params), grad_bytes)
    assert low.bytes_read[walks].sum() == 2 * read
    assert low.bytes_written[walks].sum() == 2 * written
    assert low.sync[walks].sum() == 2 * tensors
    assert all(low.phase[i] == int(Phase.OPTIMIZER) and low.kind[i] == OpKind.REDUCTION
               for i in walks)


def test_walks_run_after_the_reduction_and_before_every_update():
    r = _run()
    low, start, end = r.lowered, r.times["start_s"], r.times["end_s"]
    walks = _walks(r)
    reduce = np.flatnonzero((low.axis == int(Axis.DATA)) & (low.kind == OpKind.COLLECTIVE)
                            & (low.collective == COLLECTIVE_FNS.index("all_reduce")))
    updates = np.flatnonzero(low.task == int(Task.UPDATE))
    assert len(reduce) and len(updates)
    assert start[walks].min() >= end[reduce].max() - 1e-12
    assert start[updates].min() >= end[walks].max() - 1e-12
    names = [low.names[i].split(":")[0] for i in sorted(walks)]
    assert names == sorted(names, key=WALKS.index)   # every overflow check, then every norm


def test_host_waits_once_per_tensor_in_the_walks():
    r = _run()
    calls = sync_calls(r.lowered, load_device("a100-sxm4-40gb"))
    walks = _walks(r)
    assert np.array_equal(calls[walks], r.lowered.sync[walks].astype(np.float64))


@pytest.mark.parametrize("zero, sharding", [(0, "deepspeed-2021"), (1, "deepspeed"),
                                            (0, "deepspeed")])
def test_only_deepspeed_2021_zero_1_runs_them(zero, sharding):
    assert not _walks(_run(zero=zero, sharding=sharding))


def test_tensor_parallel_ranks_walk_their_shard():
    """At tp 2 each rank holds about half the parameters: its walks move about half the
    bytes (the replicated norms and row-parallel biases are whole on both)."""
    one, two = (_run(tp=tp) for tp in (1, 2))
    moved = [r.lowered.bytes_read[_walks(r)].sum() for r in (one, two)]
    assert 0.5 * moved[0] < moved[1] < 0.6 * moved[0]


def test_walks_never_speed_a_step_up(monkeypatch):
    from simulator.parallel import data
    with_walks = _run().step_time_s
    monkeypatch.setattr(data, "add_checks", lambda step, plan, parallel: step)
    assert with_walks > _run().step_time_s
