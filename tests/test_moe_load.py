"""The busiest expert-parallel rank's load (simulator/parallel/expert.py: expected_max_normal,
sampling_load, busiest_load): even a router balanced in expectation spreads a micro-batch's
token copies unevenly over the ranks, and the busiest one paces each MoE layer.

Closed forms: E[max of 2 standard normals] = 1/sqrt(pi), of 3 = 3/(2 sqrt(pi)); the
sampling floor against a Monte Carlo of uniform top-k routing (distinct experts per token).
"""
import math
from dataclasses import replace

import numpy as np
import pytest

from simulator import simulate
from simulator.parallel.expert import busiest_load, expected_max_normal, sampling_load
from workloads.zoo import get_workload


def test_expected_maximum_of_normals_closed_forms():
    assert expected_max_normal(1) == 0.0
    assert expected_max_normal(2) == pytest.approx(1 / math.sqrt(math.pi), rel=1e-9)
    assert expected_max_normal(3) == pytest.approx(3 / (2 * math.sqrt(math.pi)), rel=1e-9)
    values = [expected_max_normal(n) for n in (2, 4, 8, 16, 64, 256)]
    assert values == sorted(values)


@pytest.mark.parametrize("tokens, experts, top_k, ep", [(1024, 8, 2, 8), (512, 16, 4, 4),
                                                        (256, 64, 6, 8), (4096, 8, 1, 2)])
def test_sampling_floor_matches_a_monte_carlo_of_uniform_routing(tokens, experts, top_k, ep):
    """``tokens`` a rank, each sent to top_k distinct experts drawn uniformly; ep ranks of
    experts / ep experts each: the busiest rank's copies over the mean, averaged over 4,000
    micro-batches, within 5 % of the excess over 1 (the normal approximation and the Monte
    Carlo's own error)."""
    rng = np.random.default_rng(0)
    trials, n = 4000, tokens * ep
    ratios = np.empty(trials)
    for t in range(trials):
        # top_k distinct experts per token: the first k of a random permutation
        chosen = np.argsort(rng.random((n, experts)), axis=1)[:, :top_k]
        counts = np.bincount((chosen // (experts // ep)).ravel(), minlength=ep)
        ratios[t] = counts.max() / counts.mean()
    expected = sampling_load(tokens * top_k, ep, experts, top_k)
    assert expected - 1 == pytest.approx(ratios.mean() - 1, rel=0.05)


def test_one_rank_has_no_spread_and_many_copies_little():
    assert sampling_load(10_000, 1, 8, 2) == 1.0
    assert sampling_load(1e9, 8, 8, 2) == pytest.approx(1.0, abs=1e-4)
    assert sampling_load(100, 8, 8, 2) > sampling_load(10_000, 8, 8, 2) > 1.0


def test_busiest_load_is_the_larger_figure_dropless_and_the_capacity_padded():
    """Dropless: the larger of the imbalance and the floor. A capacity factor C pads every
    expert's input to C x the mean (Megatron-Core's moe_pad_expert_input_to_capacity, NeMo's
    recipes): the load is C, above the busiest expert's as below it."""
    moe = replace(get_workload("mixtral-8x7b").moe, imbalance=1.0, pad_to_capacity=False)
    floor = sampling_load(2048, 8, 8, 2)
    assert busiest_load(moe, 2048, 8) == floor
    assert busiest_load(replace(moe, imbalance=1.5), 2048, 8) == 1.5
    padded = replace(moe, capacity_factor=1.25, pad_to_capacity=True)
    assert busiest_load(replace(padded, imbalance=1.5), 2048, 8) == 1.25
    assert busiest_load(replace(padded, capacity_factor=1.0), 2048, 8) == 1.0
    assert busiest_load(padded, 2048, 8) == 1.25 > floor
    # dropping without padding: the busiest runs min(dropless, C)
    assert busiest_load(replace(moe, imbalance=1.5, capacity_factor=1.25), 2048, 8) == 1.25
    assert busiest_load(replace(moe, capacity_factor=1.25), 2048, 8) == floor


def test_a_dropless_expert_parallel_step_runs_the_floor_on_its_busiest_rank():
    work = replace(get_workload("mixtral-8x7b").with_layers(2), seq_len=1024)
    work = replace(work, moe=replace(work.moe, imbalance=1.0))   # a balanced router
    r = simulate(work, "h100", num_devices=8, micro_batch=1, precision="bf16", ep=8)
    low = r.lowered
    grouped = np.array([fn == "grouped_linear" for fn in low.fn])
    # 1,024 tokens x top-2 copies a rank: 1.029 of the mean on the busiest of 8
    assert set(low.load[grouped]) == {round(1000 * sampling_load(2048, 8, 8, 2))} == {1029}
