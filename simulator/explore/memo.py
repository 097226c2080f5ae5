"""Memos of the device-independent graphs, for sweeps that simulate one plan on many devices.

``simulator.api.simulate`` spends most of its time building graphs: each simulated stage's
forward graph (``simulator.parallel.rank.stage_forward``) and its lowered training step (the
first half of ``run_stage``: training graph, fusion, data-parallel collectives, lowering).
Neither depends on the device's figures -- only on the workload, the plan and the devices per
node of the cluster -- and a sweep evaluates the same plan on many devices, so ``install()``
puts bounded memos in front of both, in the processes that evaluate a sweep; only pricing and
scheduling run per device. The graphs and arrays are only read downstream, so the results are
the same with and without the memos (``tests/test_sweep.py`` checks this).

``run_stage`` below composes ``simulator.parallel.rank``'s ``build_stage`` (memoized) and
``price_stage``, as ``distributed.run_stage`` does.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace

_SIZE = 64
_lock = threading.Lock()
_cache: OrderedDict = OrderedDict()
_steps: OrderedDict = OrderedDict()
_original = None


def install() -> None:
    """Put the memos in front of ``simulator.api``'s ``stage_forward`` and ``run_stage`` (once
    per process)."""
    global _original
    import simulator.api as api
    with _lock:
        if _original is None:
            _original = (api.stage_forward, api.run_stage)
            api.stage_forward, api.run_stage = stage_forward, run_stage


def uninstall() -> None:
    global _original
    import simulator.api as api
    with _lock:
        if _original is not None:
            api.stage_forward, api.run_stage = _original
            _original = None
        _cache.clear()
        _steps.clear()


def run_stage(forward, plan, parallel, device, cluster, stage: int = 0):
    """``simulator.parallel.rank.run_stage`` with its device-independent half memoized."""
    from simulator.parallel.rank import build_stage
    from simulator.schedule.stage import price_stage

    per_node = cluster.devices_per_node if cluster else 1
    lowered = _remember(_steps, (id(forward), plan, parallel, per_node), forward,
                        lambda: build_stage(forward, plan, parallel, per_node))
    return price_stage(lowered, forward, device, cluster, stage)


def _remember(cache: OrderedDict, key, keep, build):
    """``cache[key]``, built on a miss; ``keep`` is held with the value (an id() in the key
    must stay alive); the oldest entries go beyond ``_SIZE``."""
    with _lock:
        if key in cache:
            cache.move_to_end(key)
            return cache[key][1]
    value = build()
    with _lock:
        cache[key] = (keep, value)
        while len(cache) > _SIZE:
            cache.popitem(last=False)
    return value


def stage_forward(work, plan, parallel, stage, cluster):
    """``simulator.parallel.rank.stage_forward``, memoized on the workload, stage and devices
    per node and on the plans with the fields it does not read set to their defaults: a
    field added later is part of the key until it is listed here (a memo miss, never a
    stale graph)."""
    per_node = cluster.devices_per_node if cluster else 1
    key = (_identity(work), replace(plan, global_batch=None, recompute="none",
                                    optimizer="adamw", fusion="eager", grad_clip=False,
                                    fp32_grads=False),
           replace(parallel, zero=0, micro_batches=None, overlap_grad_reduce=True,
                   overlap_tp_comm=True, fused_grad_accumulation=True), stage, per_node)
    original = _original[0] if _original else _distributed()
    return _remember(_cache, key, work,
                     lambda: original(work, plan, parallel, stage, cluster))


def _identity(work):
    try:
        hash(work)
    except TypeError:
        return ("id", id(work))
    return work


def _distributed():
    from simulator.parallel.rank import stage_forward as original
    return original
