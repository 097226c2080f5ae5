"""ParallelPlan.overlap_param_gather (Megatron-LM --overlap-param-gather): ZeRO 1-2's
all-gathers of the updated weights run during the next step's forward, each layer's before
the layer (simulator.parallel.data._gather_ahead), paid once a step
(simulator.schedule.ahead)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from simulator import ParallelPlan, simulate
from simulator.graph.op import OpKind, Phase
from workloads.zoo import get_workload

# 16 GPUs in two DGX H100 nodes over 25 GB/s per GPU: gathers long enough to matter
COMMON = dict(num_devices=16, micro_batch=1, precision="bf16", attention="fused")


def _dense(layers=4):
    return replace(get_workload("llama2-7b").with_layers(layers), seq_len=1024)


def _run(work, overlap, **plan):
    return simulate(work, "h100", overlap_param_gather=overlap, **{**COMMON, **plan})


def _gathers(result):
    ops = result.ops
    return ops[(ops.kind == "collective") & ops.name.str.startswith("dp_all_gather")]


def test_default_is_megatrons():
    """Megatron-LM's DistributedDataParallelConfig.overlap_param_gather defaults to False."""
    assert ParallelPlan().overlap_param_gather is False


@pytest.mark.parametrize("global_batch", [16, 64])
def test_overlap_hides_behind_the_forward_only(global_batch):
    """Overlapped, the gathers hide behind the forward at most: the step is shorter by no more
    than one micro-batch's forward, and no shorter than the gathers themselves (one stream);
    each other micro-batch keeps its time (the delay is paid once)."""
    work = _dense()
    off = _run(work, False, zero=1, global_batch=global_batch)
    on = _run(work, True, zero=1, global_batch=global_batch)
    forward = on.ops[on.ops.phase == "forward"].time_s.sum()
    gathers = _gathers(on).time_s.sum()
    assert gathers > 0
    assert on.step_time_s < off.step_time_s
    assert off.step_time_s - on.step_time_s <= forward * 1.001
    assert on.step_time_s >= gathers
    # the same but for the host's cost of issuing the gathers (a few microseconds)
    assert on.parallel["micro_batch_s"] == pytest.approx(off.parallel["micro_batch_s"],
                                                         rel=1e-3)


def test_each_layer_waits_for_its_own_gather():
    """Every forward op owning weights starts after its layer's gather ends; the gathers run
    in the forward's layer order, before any update."""
    on = _run(_dense(3), True, zero=1, global_batch=16)
    ops = on.ops
    gathers = _gathers(on)
    ends = dict(zip(gathers.layer, gathers.end_s))
    assert set(ends) >= {0, 1, 2}
    forward = ops[(ops.phase == "forward") & (ops.kind == "matmul")]
    for layer, start in zip(forward.layer, forward.start_s):
        assert start >= ends[layer] - 1e-12
    updates = ops[ops.phase == "optimizer"]
    assert gathers.start_s.max() < updates.start_s.min()
    assert all(gathers.phase == "communication")


def test_no_effect_without_the_distributed_optimizer():
    """ZeRO 0 (all-reduce, no gather) and ZeRO 3 (gathers per unit) ignore the field."""
    work = _dense(2)
    for zero in (0, 3):
        off = _run(work, False, zero=zero, global_batch=16)
        on = _run(work, True, zero=zero, global_batch=16)
        assert on.step_time_s == off.step_time_s


def test_without_overlap_the_gathers_follow_the_update():
    """The default: each gather waits for its layer's update (after the whole backward)."""
    off = _run(_dense(2), False, zero=1, global_batch=16)
    ops = off.ops
    updates = ops[ops.phase == "optimizer"]
    assert _gathers(off).start_s.min() >= updates.end_s.min()


def test_experts_gathers_split_and_overlapped():
    """With ep the experts' share of each gather runs over their expert-data-parallel group
    (simulator.parallel.expert.reduce_expert_gradients) also ahead of the forward."""
    work = replace(get_workload("mixtral-8x7b").with_layers(2), seq_len=1024)
    on = simulate(work, "h100", num_devices=16, micro_batch=1, global_batch=32,
                  precision="bf16", ep=8, zero=1, overlap_param_gather=True)
    ops = on.ops
    experts = ops[ops.name.str.contains(r"dp_all_gather:L\d+:experts")]
    assert len(experts) == 2
    first_expert_gemm = ops[(ops.kind == "matmul") & ops.name.str.contains("expert_gate_proj")
                            & (ops.phase == "forward")]
    for layer, start in zip(first_expert_gemm.layer, first_expert_gemm.start_s):
        assert start >= float(experts[experts.layer == layer].end_s.iloc[0]) - 1e-12
    off = simulate(work, "h100", num_devices=16, micro_batch=1, global_batch=32,
                   precision="bf16", ep=8, zero=1)
    assert on.step_time_s < off.step_time_s


def test_phase_and_kind_names_used_here_exist():
    assert Phase.COMMUNICATION.name.lower() == "communication"
    assert OpKind.COLLECTIVE.name.lower() == "collective"


@pytest.mark.parametrize("plan", [dict(pp=2, schedule="interleaved", virtual_stages=2),
                                  dict(tp=2, sequence_parallel=True), dict(zero=2),
                                  dict(sync_each_pass=True)],
                         ids=["interleaved", "tp-sp", "zero2", "host-sync"])
def test_overlap_never_slows_a_step(plan):
    """With pipelines, tensor parallelism, ZeRO-2 or the host synchronising each pass the
    overlapped gathers still only hide behind the forward: the step is shorter, and each other
    micro-batch keeps its time."""
    work = _dense(8)
    plan = {"zero": 1, "global_batch": 64, **plan}
    off = _run(work, False, **plan)
    on = _run(work, True, **plan)
    assert on.step_time_s < off.step_time_s
    assert on.parallel["micro_batch_s"] == pytest.approx(off.parallel["micro_batch_s"],
                                                         rel=1e-3)


@pytest.mark.parametrize("global_batch", [32, 64])
@pytest.mark.parametrize("plan", [dict(), dict(zero=2), dict(sync_each_pass=True),
                                  dict(comm_interference=False)],
                         ids=["zero1", "zero2", "host-sync", "no-interference"])
def test_a_shorter_step_draws_no_more_energy_nor_exposes_more(plan, global_batch):
    """The gathers delay the first micro-batch only: the other m - 1 run, wait and draw as
    without them (simulator.schedule.ahead keeps their schedule), so when overlapping shortens
    the step neither its energy nor its exposed communication rises. (Charged to every
    micro-batch, llama2-7b at 4 layers, m = 4: exposed 28.3 -> 50.3 ms, 33.8 -> 35.5 J.)"""
    work = _dense()
    plan = {"zero": 1, "global_batch": global_batch, **plan}
    off = _run(work, False, **plan)
    on = _run(work, True, **plan)
    assert on.micro_batches > 1
    assert on.step_time_s < off.step_time_s
    assert on.energy_j_per_step <= off.energy_j_per_step
    assert (on.parallel["exposed_communication_s"]
            <= off.parallel["exposed_communication_s"])


@pytest.mark.parametrize("sync", [False, True], ids=["issued", "host-sync"])
def test_follow_up_schedules_issue_at_the_hosts_times(monkeypatch, sync):
    """price_stage keeps the host's issue times (StageRun.issued) with or without
    synchronisations, and both schedules built after it (interfere, paid_once) issue each op
    no earlier: here issue times pushed 1 ms later move every start."""
    import simulator.api as api
    from simulator.schedule import ahead, stage

    seen = {}

    def late_interfere(run, *args, **kw):
        assert run.issued is not None
        run = replace(run, issued=run.issued + 1e-3)
        out = stage.interfere(run, *args, **kw)
        seen["interfere"] = (out.issued, out.start)
        return out

    def paid_once(run):
        out = ahead.paid_once(run)
        seen["paid_once"] = (out.issued, out.micro_start)
        return out

    monkeypatch.setattr(api, "interfere", late_interfere)
    monkeypatch.setattr(api, "paid_once", paid_once)
    _run(_dense(2), True, zero=1, global_batch=32, sync_each_pass=sync)
    for name, (issued, start) in seen.items():
        assert start is not None, name
        assert (start >= issued - 1e-12).all(), name


@pytest.mark.parametrize("sharding", ["deepspeed", "deepspeed-2021"])
def test_deepspeed_has_no_overlapped_gather(sharding):
    """DeepSpeed ZeRO 1-2 all-gathers the updated weights in its step and has no option to
    defer them to the forward: asking for it is one PlanError naming the field, the value and
    the fix."""
    from simulator.errors import PlanError

    with pytest.raises(PlanError, match=f"overlap_param_gather = true with sharding = "
                                        f"{sharding}.*drop --overlap-param-gather"):
        ParallelPlan(dp=2, zero=1, sharding=sharding, overlap_param_gather=True)
    with pytest.raises(PlanError, match="overlap_param_gather"):
        _run(_dense(2), True, zero=1, global_batch=16, sharding=sharding)
