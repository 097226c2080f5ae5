"""A trained router's imbalance and token dropping over a capacity factor
(simulator/parallel/expert.py: expert_imbalance, rank_imbalance, dropped_fraction,
busiest_load; workloads/moe.py: MAXVIO).

The cited default: Wang et al. 2024 (arXiv:2408.15664), Table 2, MaxVio_global of the 3B
model, 0.52 with an auxiliary loss and 0.04 loss-free, over 64 routed experts: given back
exactly for 64 experts. The mapping onto ep ranks and the dropped share are closed forms of
the load model (normal loads), checked against a Monte Carlo of that model and of uniform
top-k routing with Megatron-Core's per-rank capacity.
"""
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from simulator import simulate
from simulator.errors import WorkloadError
from simulator.parallel.expert import (
    busiest_load,
    dropless_load,
    dropped_fraction,
    expected_max_normal,
    expert_imbalance,
    rank_imbalance,
    router_spread,
)
from workloads.moe import MAXVIO, MAXVIO_EXPERTS, MoE, Router
from workloads.zoo import get_workload


def test_the_default_imbalance_is_the_measured_maxvio_for_the_router_type():
    """Over the measured models' 64 experts the load model gives back 1 + MaxVio of the
    router's type (a Monte Carlo of the busiest of 64 loads 1 + sigma (Z_e - mean Z), sigma
    from ``router_spread``: the aux-loss figure without ``router_bias``, the loss-free one with
    it); 8 experts (Mixtral), the same spread over fewer experts: 1 + 0.52 x E[max of 8] /
    E[max of 64]; a user's figure wins."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal((40_000, MAXVIO_EXPERTS))
    busiest = (z - z.mean(axis=1, keepdims=True)).max(axis=1).mean()
    for kind, moe in (("aux_loss", MoE(experts=MAXVIO_EXPERTS, top_k=6)),
                      ("loss_free", MoE(experts=MAXVIO_EXPERTS, top_k=6,
                                        router=Router.SIGMOID, router_bias=True))):
        assert router_spread(moe) * busiest == pytest.approx(MAXVIO[kind], rel=0.01)
    mixtral = get_workload("mixtral-8x7b").moe
    assert expert_imbalance(mixtral) == pytest.approx(
        1 + 0.52 * expected_max_normal(8) / expected_max_normal(64), rel=1e-12)
    assert 1.31 < expert_imbalance(mixtral) < 1.32
    assert expert_imbalance(replace(mixtral, imbalance=1.1)) == 1.1
    assert expert_imbalance(MoE(experts=1, top_k=1)) == 1.0


def test_the_rank_imbalance_spans_one_rank_to_one_expert_a_rank():
    moe = replace(get_workload("deepseek-v3").moe, imbalance=1.3)
    assert rank_imbalance(moe, 1) == 1.0
    assert rank_imbalance(moe, 256) == pytest.approx(1.3, rel=1e-12)
    values = [rank_imbalance(moe, ep) for ep in (1, 2, 4, 8, 16, 64, 256)]
    assert values == sorted(values)
    # DeepSeek-V3's loss-free default over its 64 ranks of 4 experts
    assert rank_imbalance(get_workload("deepseek-v3").moe, 64) == pytest.approx(1.020, abs=5e-4)


@pytest.mark.parametrize("experts, ep", [(64, 8), (16, 4), (256, 64)])
def test_the_rank_mapping_matches_a_monte_carlo_of_its_load_model(experts, ep):
    """Experts' loads 1 + sigma (Z_e - mean Z), Z iid normal, contiguous groups of
    experts / ep a rank: the busiest rank's mean load over 20,000 draws within 2 % of the
    excess over 1."""
    moe = MoE(experts=experts, top_k=2, imbalance=1.5)
    sigma = router_spread(moe)
    rng = np.random.default_rng(1)
    z = rng.standard_normal((20_000, experts))
    loads = 1 + sigma * (z - z.mean(axis=1, keepdims=True))
    busiest = loads.reshape(-1, ep, experts // ep).mean(axis=2).max(axis=1).mean()
    assert rank_imbalance(moe, ep) - 1 == pytest.approx(busiest - 1, rel=0.02)


def test_the_dropped_share_is_the_normal_excess_over_capacity():
    """E[(X - C)^+] for X ~ N(1, s^2): the closed form against a quadrature."""
    moe = MoE(experts=8, top_k=2, imbalance=1.4, capacity_factor=1.1)
    copies = 4096
    s = math.sqrt(router_spread(moe) ** 2 * (1 - 1 / 8) + (8 - 2) / copies)
    excess, _ = integrate.quad(lambda x: (x - 1.1) * stats.norm.pdf(x, 1, s), 1.1, np.inf)
    assert dropped_fraction(moe, copies) == pytest.approx(excess, rel=1e-7)
    # dropless and padded drop nothing
    assert dropped_fraction(replace(moe, capacity_factor=None), copies) == 0.0
    assert dropped_fraction(replace(moe, pad_to_capacity=True), copies) == 0.0
    # no spread: exactly the share over capacity
    even = MoE(experts=1, top_k=1, imbalance=1.0, capacity_factor=0.75)
    assert dropped_fraction(even, copies) == 0.25
    assert dropped_fraction(replace(even, capacity_factor=1.5), copies) == 0.0



@pytest.mark.parametrize("capacity", [0.25, 0.9, 1.0, 1.1, 1.5, 2.0, 4.0])
@pytest.mark.parametrize("imbalance, copies", [(1.0, 256), (1.4, 4096), (3.0, 1e6)])
def test_the_dropped_share_is_scipys_normal_closed_form(capacity, imbalance, copies):
    """The math.erfc form gives scipy.stats.norm's s pdf(z) - (C - 1) sf(z) to 1e-12 of its
    terms, the far upper tail included (C = 4: z = 20, a share of 6.5e-88, where 1 - Phi(z)
    taken as 1 - cdf would round to 0; there the two terms cancel to 0.3 % of their size in
    either form)."""
    moe = MoE(experts=8, top_k=2, imbalance=imbalance, capacity_factor=capacity)
    s = math.sqrt(router_spread(moe) ** 2 * (1 - 1 / 8) + (8 - 2) / copies)
    z = (capacity - 1) / s
    terms = s * stats.norm.pdf(z), (capacity - 1) * stats.norm.sf(z)
    got = dropped_fraction(moe, copies)
    assert got > 0
    assert abs(got - (terms[0] - terms[1])) <= 1e-12 * (abs(terms[0]) + abs(terms[1]))

@pytest.mark.parametrize("tokens, experts, top_k, capacity", [(2048, 8, 2, 1.0),
                                                                (1024, 64, 6, 1.0),
                                                                (4096, 16, 4, 1.0),
                                                                (1024, 64, 6, 1.1),
                                                                (2048, 8, 2, 1.1)])
def test_the_dropped_share_matches_a_monte_carlo_of_capacity_routing(tokens, experts, top_k,
                                                                     capacity):
    """A balanced router (imbalance 1): ``tokens`` a rank, each to top_k distinct experts
    drawn uniformly; each expert keeps ceil(tokens x top_k / experts x C) of them
    (Megatron-Core's get_capacity): the share dropped over 2,000 micro-batches within 5 % of
    the closed form, or 0.05 % of the copies (the normal approximation to the binomial
    underestimates its far tail: 2,048 tokens, 8 experts, C = 1.1: 4.4e-5 vs 5.4e-5 dropped)."""
    rng = np.random.default_rng(2)
    keep = math.ceil(tokens * top_k / experts * capacity)
    dropped = []
    for _ in range(2000):
        chosen = np.argsort(rng.random((tokens, experts)), axis=1)[:, :top_k]
        counts = np.bincount(chosen.ravel(), minlength=experts)
        dropped.append(np.maximum(counts - keep, 0).sum() / (tokens * top_k))
    moe = MoE(experts=experts, top_k=top_k, imbalance=1.0, capacity_factor=capacity)
    assert dropped_fraction(moe, tokens * top_k) == pytest.approx(np.mean(dropped), rel=0.05,
                                                                  abs=5e-4)


@given(capacity=st.floats(0.25, 4.0), imbalance=st.floats(1.0, 3.0),
       copies=st.floats(64, 1e6), ep=st.sampled_from([1, 2, 4, 8]))
@settings(max_examples=60, deadline=None)
def test_dropping_bounds(capacity, imbalance, copies, ep):
    """The dropped share is at least the share over capacity (Jensen), falls as the capacity
    grows, and the busiest rank dropping runs no more than padded (C) nor dropless."""
    moe = MoE(experts=8, top_k=2, imbalance=imbalance, capacity_factor=capacity)
    d = dropped_fraction(moe, copies)
    assert max(0.0, 1 - capacity) - 1e-12 <= d < 1
    assert dropped_fraction(replace(moe, capacity_factor=capacity * 1.1), copies) <= d + 1e-12
    load = busiest_load(moe, copies, ep)
    assert load <= capacity
    assert load <= dropless_load(moe, copies, ep)
    assert load <= busiest_load(replace(moe, pad_to_capacity=True), copies, ep)
    # the kept copies' busiest rank runs at least their mean
    assert load >= 1 - d - 1e-12


def _run(moe, **plan):
    work = replace(get_workload("mixtral-8x7b").with_layers(2), seq_len=1024)
    fields = {"num_devices": 8, "micro_batch": 1, "precision": "bf16", "ep": 8, **plan}
    return simulate(replace(work, moe=moe), "h100", **fields)


def _experts(result):
    return np.array([fn == "grouped_linear" for fn in result.lowered.fn])


def test_a_capacity_far_above_the_load_is_dropless():
    """C -> infinity drops nothing: the same step (both synchronise the host once a layer)."""
    moe = get_workload("mixtral-8x7b").moe
    dropless, wide = _run(moe), _run(replace(moe, capacity_factor=8.0))
    assert round(1e6 * dropped_fraction(replace(moe, capacity_factor=8.0), 2048)) == 0
    assert wide.flops_per_step == dropless.flops_per_step
    assert wide.step_time_s == pytest.approx(dropless.step_time_s, rel=1e-9)


@pytest.mark.parametrize("capacity", [0.75, 1.0, 1.25])
def test_dropping_runs_the_kept_copies_and_never_more_work_than_padding(capacity):
    """The step's FLOPs fall by the dropped share of the routed experts' (closed form, to the
    copy); the busiest rank's expert GEMMs run no more work than padded to C; the step takes
    no longer than padded plus the host's issue time of the forward (dropping synchronises
    the host, padding does not). The GEMMs' shape efficiency is that of the mean rows, fewer
    when dropping: their time may differ from padded's by that (about 1 % here)."""
    moe = get_workload("mixtral-8x7b").moe
    dropless = _run(moe)
    padded = _run(replace(moe, capacity_factor=capacity, pad_to_capacity=True))
    dropping = _run(replace(moe, capacity_factor=capacity))
    d = dropped_fraction(replace(moe, capacity_factor=capacity), 2048)   # 1,024 x top-2
    assert d >= max(0.0, 1 - capacity)
    assert padded.flops_per_step == dropless.flops_per_step
    expert = dropless.lowered.flops[_experts(dropless)]
    kept = dropping.lowered.flops[_experts(dropping)]
    assert kept.sum() == pytest.approx(expert.sum() * (1 - d), rel=1e-3)
    # the model FLOPs: the expert GEMMs' (forward and backward) of 8 replicas
    assert dropless.flops_per_step - dropping.flops_per_step == pytest.approx(
        8 * dropless.micro_batches * (expert.sum() - kept.sum()), rel=1e-9)
    # the busiest rank's expert work (FLOPs x load): C x the mean copies at most, as padded
    work = {k: (r.lowered.flops * r.lowered.load / 1000)[_experts(r)].sum()
            for k, r in (("padded", padded), ("dropping", dropping))}
    assert work["dropping"] <= work["padded"] * (1 + 1e-3)
    from simulator.cost.host import costs
    from simulator.graph.op import Phase
    issue = costs(dropping.lowered, dropping.device_spec)[1]
    forward = dropping.lowered.phase == int(Phase.FORWARD)
    assert dropping.step_time_s <= padded.step_time_s + issue[forward].sum()
    # the busiest rank's kept copies: at most C of the mean of all routed copies
    low = dropping.lowered
    assert max(low.load[_experts(dropping)]) / 1000 * (1 - d) <= capacity + 1e-3


def test_pad_to_capacity_needs_a_capacity_factor(tmp_path):
    with pytest.raises(WorkloadError, match="pad_to_capacity"):
        MoE(experts=8, top_k=2, pad_to_capacity=True)
    path = tmp_path / "moe.toml"
    path.write_text('[transformer]\nlayers = 2\nhidden = 256\nheads = 4\nvocab = 1000\n'
                    'seq_len = 128\nffn = "swiglu"\n[moe]\nexperts = 8\ntop_k = 2\n'
                    'capacity_factor = 1.0\npad_to_capacity = true\n')
    work = get_workload(str(path))
    assert work.moe.pad_to_capacity and work.moe.capacity_factor == 1.0


def test_json_reports_the_routers_load_and_the_dropped_share():
    """``--json``'s parallel.moe: the expert imbalance, the busiest rank's work over the mean
    of all routed copies and the expected share dropped (to the part per million)."""
    moe = replace(get_workload("mixtral-8x7b").moe, capacity_factor=1.0)
    d = dropped_fraction(moe, 2048)
    dropping = _run(moe).summary()["parallel"]["moe"]
    assert dropping["imbalance"] == pytest.approx(expert_imbalance(moe))
    assert dropping["dropped_fraction"] == pytest.approx(d, abs=1e-6) and d > 0.05
    assert dropping["busiest_load"] == pytest.approx(1.0, abs=1e-3)
    padded = _run(replace(moe, pad_to_capacity=True)).summary()["parallel"]["moe"]
    assert (padded["busiest_load"], padded["dropped_fraction"]) == (1.0, 0.0)
    one = _run(moe, num_devices=1, ep=1).summary()["parallel"]["moe"]   # every copy kept
    assert one["busiest_load"] == pytest.approx(1 - d, abs=1e-6)
    dense = simulate("llama3-8b", "h100", micro_batch=1, precision="bf16").summary()
    assert "moe" not in dense["parallel"]
