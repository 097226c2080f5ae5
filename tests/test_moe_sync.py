"""The host synchronisation of a dropless mixture of experts' all-to-all dispatch
(simulator/parallel/expert.py, simulator/cost/host.py).

Megatron-Core's ``MoEAlltoAllTokenDispatcher`` (NVIDIA/Megatron-LM c230e0d7c2,
megatron/core/transformer/moe/token_dispatcher.py) without a capacity factor and with ep > 1
sets ``cuda_sync_point = "before_ep_alltoall"`` and calls
``torch.cuda.current_stream().synchronize()`` there, once per MoE layer's forward; padded to a
capacity (``moe_pad_expert_input_to_capacity``, NeMo's performance recipes) it is
``"no_sync"``; with one rank there is no all-to-all, but a dropless dispatcher still reads the
tokens per expert on the host (``"before_ep_alltoall"`` or ``"before_finish"``); dropping
over a capacity without padding it reads the count kept (``"before_permutation_1"``).
"""
from dataclasses import replace

import numpy as np
import pytest

from simulator import simulate
from simulator.cost.host import sync_calls
from simulator.graph.op import Phase
from workloads.zoo import get_workload

LAYERS = 2


def _work(**moe):
    work = replace(get_workload("mixtral-8x7b").with_layers(LAYERS), seq_len=1024)
    return replace(work, moe=replace(work.moe, **moe)) if moe else work


def _run(work, **plan):
    fields = dict(num_devices=8, micro_batch=1, precision="bf16", ep=8)
    fields.update(plan)
    return simulate(work, "h100", **fields)


def _synced(result):
    """The ops the host synchronises before (the backward's copies of a dispatch keep its
    ``sync`` fact; only a forward or a recomputation waits)."""
    low = result.lowered
    return [low.names[i] for i in np.flatnonzero(sync_calls(low, result.device_spec))]


def test_a_dropless_dispatch_synchronises_once_per_moe_layer_forward():
    run = _run(_work())
    names = _synced(run)
    assert len(names) == LAYERS and all(name.endswith("permute.ep_dispatch") for name in names)
    low = run.lowered
    calls = sync_calls(low, run.device_spec)
    at = np.flatnonzero(calls)
    assert list(calls[at]) == [1.0] * LAYERS
    assert set(low.phase[at]) == {int(Phase.FORWARD)}
    # the backward's all-to-alls reuse the sizes: no other op waits for the device
    assert calls.sum() == LAYERS


def test_recomputation_synchronises_again():
    run = _run(_work(), recompute="full")
    low = run.lowered
    calls = sync_calls(low, run.device_spec)
    phases = low.phase[calls > 0]
    assert sorted(phases) == sorted([int(Phase.FORWARD)] * LAYERS
                                    + [int(Phase.RECOMPUTE)] * LAYERS)


@pytest.mark.parametrize("case", ["capacity", "one-rank-padded", "deepep", "deepep-in-a-node"])
def test_no_synchronisation_when_the_sizes_are_known(case):
    if case == "capacity":    # padded to capacity: Megatron-Core's "no_sync"
        run = _run(_work(capacity_factor=1.0, pad_to_capacity=True))
    elif case == "one-rank-padded":
        run = _run(_work(capacity_factor=1.0, pad_to_capacity=True), num_devices=1, ep=1)
    elif case == "deepep":    # DeepEP's dispatch is not Megatron-Core's all-to-all dispatcher
        run = _run(replace(_work(), moe=replace(_work().moe, experts=16)), num_devices=16,
                   ep=16, moe_dispatcher="deepep")
    else:                     # nor inside one node (no inter-node hop)
        run = _run(_work(), moe_dispatcher="deepep")
    assert not _synced(run)
    assert sync_calls(run.lowered, run.device_spec).sum() == 0


def test_one_rank_dropless_synchronises_at_the_permutation():
    """ep = 1, dropless, 8 local experts: Megatron-Core's dispatcher still reads the tokens
    per expert on the host (cuda_sync_point "before_ep_alltoall" with several local experts,
    "before_finish" with one): once per MoE layer's forward, at the permutation."""
    run = _run(_work(), num_devices=1, ep=1)
    names = _synced(run)
    assert len(names) == LAYERS and all(name.endswith("permute") for name in names), names
    assert sync_calls(run.lowered, run.device_spec).sum() == LAYERS


@pytest.mark.parametrize("ep", [8, 1])
def test_dropping_without_padding_synchronises_before_the_permutation(ep):
    """A capacity factor without padding: the copies kept are known only on the device, so
    Megatron-Core's dispatcher reads their count first (cuda_sync_point
    "before_permutation_1", token_dispatcher.py at NVIDIA/Megatron-LM d98e8a64dd): once per
    MoE layer's forward, at the permutation, not at the all-to-all."""
    run = _run(_work(capacity_factor=1.0), num_devices=ep, ep=ep)
    names = _synced(run)
    assert len(names) == LAYERS and all(name.endswith("permute") for name in names), names
    assert sync_calls(run.lowered, run.device_spec).sum() == LAYERS


def test_the_synchronisation_costs_the_hosts_issue_time_and_nothing_else():
    """Dropless and padded to a capacity factor equal to dropless's busiest load run the same
    work (the same load); only the host waits differ: dropless is slower, by less than the
    host's issue time of all the forward ops (the most a host that restarts from an idle
    device can expose)."""
    dropless = _run(_work())
    busiest = max(dropless.lowered.load) / 1000
    padded = _run(_work(capacity_factor=busiest, pad_to_capacity=True))
    assert set(dropless.lowered.load) == set(padded.lowered.load)
    assert dropless.flops_per_step == padded.flops_per_step
    extra = dropless.step_time_s - padded.step_time_s
    assert extra > 0
    from simulator.cost.host import costs
    issue = costs(dropless.lowered, dropless.device_spec)[1]
    forward = dropless.lowered.phase == int(Phase.FORWARD)
    assert extra < issue[forward].sum()


def test_the_nemo_rows_run_padded_and_megatron_cores_dropless():
    """NeMo's performance recipes pad every expert to capacity factor 1.0
    (MegatronTokenDropCallback): their validation rows say so (model_options
    moe.capacity_factor=1.0) and so run without the synchronisation; Megatron-Core's README
    run is dropless."""
    from benchmarks.validation_report import load_rows, workload
    rows = {row["run_id"]: row for row in load_rows() if "mixtral" in row["run_id"]}
    assert len(rows) == 5
    for run_id, row in rows.items():
        expected = None if run_id.startswith("megatron-core") else 1.0
        assert workload(row).moe.capacity_factor == expected, run_id
