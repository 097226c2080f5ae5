"""Parallel plans: validation errors name the numbers; pipeline and ZeRO closed forms.

ZeRO: Rajbhandari et al. 2020, Figure 1 example (Psi = 7.5B, N_d = 64, K = 12): 120 GB,
31.4 GB, 16.6 GB, 1.9 GB per device, checked to the figure's one decimal (abs 0.05 GB).
Pipeline: Narayanan et al. 2021 sec. 2.2 bubble (p-1)/m of the ideal, (p-1)/(m+p-1) of the
total; interleaved (p-1)/(v m). Korthikanti et al. 2022 sec. 4.2.3: the first interleaved
stage holds p (1 + (p-1)/(p v)) micro-batches.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import simulate
from simulator.cost.collectives import Collective, bytes_moved
from simulator.errors import PlanError
from simulator.graph.collective import Axis
from simulator.graph.op import Phase
from simulator.plan.parallel import ParallelPlan, Schedule
from simulator.schedule.memory import zero_state_bytes
from simulator.schedule.pipeline import (
    bubble_over_ideal,
    bubble_over_total,
    in_flight_micro_batches,
)
from tests.oracles import (
    data_parallel_collectives,
    pipeline_message_bytes,
    tensor_parallel_collectives,
)

# ---------------------------------------------------------------------------------- validation


def test_a_good_plan_returns_its_micro_batches():
    plan = ParallelPlan(dp=4, tp=8, pp=2)
    assert plan.num_devices == 64
    assert plan.validate(64, layers=24, heads=32, kv_heads=8, global_batch=512,
                         micro_batch=4) == 32


@pytest.mark.parametrize("plan, kwargs, message", [
    (ParallelPlan(tp=3, dp=1), dict(num_devices=3, heads=32),
     "tp = 3 must divide heads = 32"),
    (ParallelPlan(tp=6), dict(num_devices=6, heads=48, kv_heads=4),
     "tp = 6 must divide kv_heads = 4, or be a multiple of it"),
    (ParallelPlan(pp=5), dict(num_devices=5, layers=24),
     "pp = 5 must divide layers = 24"),
    (ParallelPlan(dp=2, tp=4, pp=2), dict(num_devices=8),
     "dp x tp x pp = 2 x 4 x 2 = 16 must equal the number of devices = 8"),
    (ParallelPlan(dp=8), dict(num_devices=8, global_batch=100, micro_batch=4),
     "global batch = 100 must be divisible by micro_batch x dp = 4 x 8 = 32"),
    (ParallelPlan(dp=2, micro_batches=3), dict(num_devices=2, global_batch=16, micro_batch=4),
     "global batch = 16 must equal micro_batch x micro_batches x dp = 4 x 3 x 2 = 24"),
    (ParallelPlan(pp=2, schedule="interleaved", virtual_stages=4),
     dict(num_devices=2, layers=12),
     "pp x virtual_stages = 2 x 4 = 8 must divide layers = 12"),
    (ParallelPlan(pp=4, schedule="interleaved", virtual_stages=2),
     dict(num_devices=4, layers=16, global_batch=6, micro_batch=1),
     "micro-batches = 6 to be a multiple of pp = 4"),
    (ParallelPlan(tp=4, sequence_parallel=True), dict(num_devices=4, seq_len=1026),
     "tp = 4 must divide seq_len = 1026"),
    (ParallelPlan(pp=16, first_stage_layers=7), dict(num_devices=16, layers=126),
     "first_stage_layers = 7 leaves 119 of layers = 126 for the other 15 of pp = 16 stages"),
    (ParallelPlan(pp=4, first_stage_layers=10, last_stage_layers=10),
     dict(num_devices=4, layers=21), "leaves 1 of layers = 21 for the other 2 of pp = 4"),
    (ParallelPlan(pp=2, first_stage_layers=7, last_stage_layers=8),
     dict(num_devices=2, layers=14),
     "first_stage_layers = 7 + last_stage_layers = 8 must add up to layers = 14"),
    (ParallelPlan(pp=4, schedule="interleaved", virtual_stages=2, first_stage_layers=2),
     dict(num_devices=4, layers=17),
     "first_stage_layers = 2 leaves 15 of layers = 17 for the other 7 of pp x virtual_stages "
     "= 8 model chunks"),
])
def test_impossible_plans_name_the_numbers(plan, kwargs, message):
    args = dict(num_devices=1, layers=24, heads=32) | kwargs
    with pytest.raises(PlanError) as error:
        plan.validate(**args)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(tp=0), "tp = 0 must be a positive integer"),
    (dict(dp=2.0), "dp = 2.0 must be a positive integer"),
    (dict(zero=4), "zero = 4 must be a ZeRO stage"),
    (dict(schedule="zigzag"), "schedule = 'zigzag' is not known"),
    (dict(virtual_stages=2), "virtual_stages = 2 needs the interleaved schedule"),
    (dict(micro_batches=0), "micro_batches = 0 must be a positive integer"),
    (dict(pp=2, first_stage_layers=0), "first_stage_layers = 0 must be a positive integer"),
    (dict(pp=2, schedule="interleaved", virtual_stages=2, last_stage_layers=-1),
     "last_stage_layers = -1 must be an integer >= 0"),  # interleaved: a chunk may be empty
    (dict(last_stage_layers=3), "last_stage_layers = 3 needs a pipeline: pp = 1"),
])
def test_bad_plan_fields(kwargs, message):
    with pytest.raises(PlanError, match=message):
        ParallelPlan(**kwargs)


@pytest.mark.parametrize("kwargs, layers, expected", [
    (dict(pp=4), 24, [6, 6, 6, 6]),
    (dict(pp=16, first_stage_layers=7, last_stage_layers=7), 126, [7] + [8] * 14 + [7]),
    (dict(pp=12, first_stage_layers=5, last_stage_layers=5), 70, [5] + [6] * 10 + [5]),
    (dict(pp=4, first_stage_layers=3), 15, [3, 4, 4, 4]),
    (dict(pp=4, last_stage_layers=1), 16, [5, 5, 5, 1]),
    (dict(pp=2, first_stage_layers=9, last_stage_layers=7), 16, [9, 7]),
])
def test_stage_layers(kwargs, layers, expected):
    """Megatron-LM's uneven split: the first and last stages' layers as given, the others
    sharing the rest evenly (Llama 3 405B: 126 layers on 16 stages; BLOOM 176B: 70 on 12)."""
    split = ParallelPlan(**kwargs).stage_layers(layers)
    assert split == expected and sum(split) == layers


@pytest.mark.parametrize("kwargs, layers, expected", [
    (dict(pp=4), 24, [[6], [6], [6], [6]]),
    (dict(pp=2, schedule="interleaved", virtual_stages=3), 12, [[2, 2, 2], [2, 2, 2]]),
    # Llama 3 405B's 126 layers on 16 stages, one layer fewer on the first and last model
    # chunk, 2 or 4 chunks per device (8 or 4 layers a chunk in the even split of 128)
    (dict(pp=16, schedule="interleaved", virtual_stages=2, first_stage_layers=3,
          last_stage_layers=3), 126, [[3, 4]] + [[4, 4]] * 14 + [[4, 3]]),
    (dict(pp=16, schedule="interleaved", virtual_stages=4, first_stage_layers=1,
          last_stage_layers=1), 126, [[1, 2, 2, 2]] + [[2, 2, 2, 2]] * 14 + [[2, 2, 2, 1]]),
    (dict(pp=2, schedule="interleaved", virtual_stages=2, last_stage_layers=1), 10,
     [[3, 3], [3, 1]]),
    # as Llama 3 405B ran: the first chunk only the embedding, the last only the head
    (dict(pp=16, schedule="interleaved", virtual_stages=8, first_stage_layers=0,
          last_stage_layers=0), 126, [[0] + [1] * 7] + [[1] * 8] * 14 + [[1] * 7 + [0]]),
])
def test_chunk_layers(kwargs, layers, expected):
    """Device d runs model chunks d, d + pp, ... (Narayanan et al. 2021, sec. 2.2.2); with
    the interleaved schedule the uneven first and last stages are the first and last chunks."""
    plan = ParallelPlan(**kwargs)
    assert plan.chunk_layers(layers) == expected
    assert plan.stage_layers(layers) == [sum(c) for c in expected]
    assert sum(map(sum, expected)) == layers


def test_schedule_from_string():
    assert ParallelPlan(schedule="1f1b").schedule is Schedule.ONE_F_ONE_B
    assert ParallelPlan(schedule="gpipe").schedule is Schedule.GPIPE


# ----------------------------------------------------------------------------------- pipeline

@pytest.mark.parametrize("p, m", [(1, 1), (2, 8), (4, 4), (8, 32), (16, 64)])
def test_1f1b_bubble_closed_forms(p, m):
    assert bubble_over_ideal(p, m, Schedule.ONE_F_ONE_B) == pytest.approx((p - 1) / m)
    assert bubble_over_total(p, m, Schedule.ONE_F_ONE_B) == pytest.approx((p - 1) / (m + p - 1))
    assert bubble_over_total(p, m, Schedule.GPIPE) == bubble_over_total(p, m)


def test_interleaved_bubble_shrinks_by_v():
    assert bubble_over_ideal(8, 16, Schedule.INTERLEAVED, v=4) == pytest.approx(7 / 64)
    assert bubble_over_total(8, 16, Schedule.INTERLEAVED, v=4) == pytest.approx(7 / (64 + 7))


def test_in_flight_micro_batches():
    assert [in_flight_micro_batches(4, 8, s) for s in range(4)] == [4, 3, 2, 1]
    assert in_flight_micro_batches(4, 2, 0) == 2                      # fewer than p micro-batches
    assert in_flight_micro_batches(4, 8, 3, Schedule.GPIPE) == 8
    p, v = 4, 2
    first = in_flight_micro_batches(p, 8, 0, Schedule.INTERLEAVED, v)
    assert first == pytest.approx(p * (1 + (p - 1) / (p * v)))       # Korthikanti sec. 4.2.3


def test_bad_stage():
    with pytest.raises(PlanError, match="stage = 4 must be in 0 .. pp - 1 = 3"):
        in_flight_micro_batches(4, 8, 4)


# ---------------------------------------------------------------------------------------- ZeRO

@pytest.mark.parametrize("stage, expected_gb", [(0, 120.0), (1, 31.4), (2, 16.6), (3, 1.9)])
def test_zero_paper_figure_1(stage, expected_gb):
    state = zero_state_bytes(7.5e9, stage, dp=64, k=12)
    assert sum(state.values()) / 1e9 == pytest.approx(expected_gb, abs=0.05)


def test_zero_breakdown():
    psi, nd = 1e9, 8
    assert zero_state_bytes(psi, 0, nd) == {"weights": 2e9, "gradients": 2e9,
                                            "optimizer_states": 12e9}
    assert zero_state_bytes(psi, 2, nd) == {"weights": 2e9, "gradients": 2e9 / nd,
                                            "optimizer_states": 12e9 / nd}


@settings(max_examples=200, deadline=None)
@given(st.floats(1e3, 1e13), st.integers(1, 4096), st.integers(1, 4096),
       st.sampled_from([0, 1, 2, 3]))
def test_more_devices_never_increase_zero_memory(params, dp_a, dp_b, stage):
    small, large = sorted((dp_a, dp_b))
    assert sum(zero_state_bytes(params, stage, large).values()) <= \
        sum(zero_state_bytes(params, stage, small).values()) * (1 + 1e-12)


@settings(max_examples=200, deadline=None)
@given(st.floats(1e3, 1e13), st.integers(1, 4096))
def test_higher_stages_never_use_more_memory(params, dp):
    totals = [sum(zero_state_bytes(params, s, dp).values()) for s in range(4)]
    assert all(a >= b * (1 - 1e-12) for a, b in zip(totals, totals[1:]))


# --------------------------------------------------------------------------------- collectives

def test_megatron_layer_has_two_all_reduces_each_way():
    transfers = tensor_parallel_collectives(tokens=2048, hidden=4096, activation_bytes=2)
    assert [(p, k) for p, k, _ in transfers] == \
        [("forward", Collective.ALL_REDUCE)] * 2 + [("backward", Collective.ALL_REDUCE)] * 2
    assert all(b == 2048 * 4096 * 2 for _, _, b in transfers)


def test_sequence_parallel_moves_the_same_bytes():
    plain = tensor_parallel_collectives(2048, 4096, 2)
    sp = tensor_parallel_collectives(2048, 4096, 2, sequence_parallel=True)
    assert {k for _, k, _ in sp} == {Collective.ALL_GATHER, Collective.REDUCE_SCATTER}
    for n in (2, 4, 8):
        moved = lambda ts: sum(bytes_moved(k, b, n) for _, k, b in ts)
        assert moved(sp) == pytest.approx(moved(plain))


@pytest.mark.parametrize("zero, volume", [(0, 2), (1, 2), (2, 2), (3, 3)])
def test_zero_communication_volume(zero, volume):
    """Rajbhandari et al. 2020 sec. 7: 2 Psi for stages 0-2, 3 Psi for stage 3 (ring, large n)."""
    psi, n = 1e9, 1024
    moved = sum(bytes_moved(k, b, n) for _, k, b in data_parallel_collectives(psi, zero, 1, 1))
    assert moved / psi == pytest.approx(volume, rel=2e-3)


def test_pipeline_message_is_split_over_tp():
    assert pipeline_message_bytes(2048, 4096, 2, tp=4) == 2048 * 4096 * 2 / 4


# ------------------------------------------------- the oracles above, checked against the graph

def _collectives(result, axis: Axis, layer: int | None = None) -> list[tuple[str, str, int]]:
    """(phase, collective, buffer bytes) of the step's collectives on ``axis`` that move bytes."""
    low = result.lowered
    out = []
    for i in range(len(low)):
        if low.collective[i] < 0 or low.axis[i] != int(axis) or low.bytes_read[i] == 0:
            continue
        if layer is not None and low.layer[i] != layer:
            continue
        buffer = int(max(low.bytes_read[i], low.bytes_written[i]))
        out.append((Phase(int(low.phase[i])).name.lower(), str(low.fn[i]), buffer))
    return sorted(out)


def test_the_graphs_tensor_parallel_collectives_are_megatrons():
    """A tp = 2 layer of gpt2-small runs exactly Shoeybi et al.'s four all-reduces of b s h."""
    r = simulate("gpt2-small", "a100", micro_batch=2, parallel=ParallelPlan(tp=2))
    tokens = 2 * 1024
    expected = sorted((phase, kind.value, int(nbytes)) for phase, kind, nbytes in
                      tensor_parallel_collectives(tokens, 768, 2))
    assert _collectives(r, Axis.TENSOR, layer=5) == expected


def test_the_graphs_data_parallel_collectives_are_zeros():
    """The step's data-parallel collectives move the volume of Rajbhandari et al. sec. 7 on the
    parameters the graph holds (stages 0-2: gradients; 3: gathers forward and backward), less
    under FSDP the backward gather of its root unit (embeddings, final norm: gathered once,
    kept through the backward)."""
    from workloads.zoo import get_workload
    forward = get_workload("gpt2-small").forward_graph(2)
    root = sum(op.params for op in forward.ops() if op.layer == -1)
    for zero in (0, 3):
        r = simulate("gpt2-small", "a100", micro_batch=2, parallel=ParallelPlan(dp=8, zero=zero))
        graph = sum(bytes_moved(kind, nbytes, 8) for _, kind, nbytes in
                    _collectives(r, Axis.DATA))
        oracle = sum(bytes_moved(kind, nbytes, 8) for _, kind, nbytes in
                     data_parallel_collectives(r.params, zero, 2, 2))
        if zero == 3:
            oracle -= bytes_moved(Collective.ALL_GATHER, root * 2, 8)
        assert graph == pytest.approx(oracle, rel=0.01)
