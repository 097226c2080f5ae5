"""Many devices: data, tensor, sequence and pipeline parallelism, ZeRO, on clusters."""
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware_specs.cluster import DEFAULT_INTER, cluster_for, load_cluster
from hardware_specs.loader import load_device
from simulator import PlanError, simulate
from simulator.graph.collective import Axis
from simulator.graph.op import DType, OpKind, Phase
from simulator.parallel.rank import build_stage, stage_forward
from simulator.parallel.tensor import split
from simulator.plan.parallel import ParallelPlan
from simulator.plan.step import RANK_VARIABILITY, Plan
from simulator.schedule.memory import live_tensors, zero_state_bytes
from simulator.schedule.pipeline import bubble_over_total
from simulator.schedule.variability import slowest_of
from simulator.training.backward import training_graph
from simulator.training.fusion import fuse_attention
from simulator.training.saved import activation_bytes_by_layer
from workloads.zoo import get_workload

GPT = "gpt3-1.3b"


def _run(parallel=None, model=GPT, device="a100", **plan):
    plan.setdefault("micro_batch", 2)
    plan.setdefault("global_batch", 8 * plan["micro_batch"] * (parallel.dp if parallel else 1))
    return simulate(model, device, parallel=parallel, **plan)


def _named(result, prefix: str) -> np.ndarray:
    """Positions of the ops whose names start with ``prefix``."""
    return np.flatnonzero(np.char.startswith(np.array(result.lowered.names, dtype=str), prefix))


def test_one_device_plan_is_the_single_device_result_exactly():
    alone = simulate(GPT, "a100", micro_batch=2, global_batch=16)
    planned = simulate(GPT, "a100", micro_batch=2, global_batch=16,
                       parallel=ParallelPlan(), num_devices=1)
    a, b = alone.summary(), planned.summary()
    assert a == b
    assert np.array_equal(alone.times["end_s"], planned.times["end_s"])


def test_transformer_model_flops_are_three_forwards():
    """The closed form used for split models equals the training graph's own count, a causal
    fused attention core counting half its s x s products (report.figures.counted_fraction)."""
    r = simulate(GPT, "a100", micro_batch=1)
    forward = fuse_attention(get_workload(GPT).forward_graph(1))
    masked = sum(op.flops for op in forward.ops() if op.kind is OpKind.ATTENTION and op.causal)
    assert masked > 0
    assert r.flops_per_step == 3 * (forward.model_flops() - masked / 2)


def test_pure_data_parallel_scales_throughput():
    one = _run()
    # without NCCL's interference (simulator.cost.interference) the compute is the same
    many = _run(ParallelPlan(dp=8, comm_interference=False))
    assert _run(ParallelPlan(dp=8)).step_time_s >= many.step_time_s
    assert many.num_devices == 8 and many.parallel["cluster"] == "8xa100-sxm4-80gb"
    assert many.micro_batches == one.micro_batches
    assert many.hardware_flops_per_step == 8 * one.hardware_flops_per_step
    # same per-device compute: the gradient all-reduce is the only difference
    assert many.step_time_s >= one.step_time_s
    exposed = many.parallel["exposed_communication_s"]
    # besides, the host issues each reduction (simulator.cost.host): at most its cost per op
    # each, where the host is what the step waits on
    issued = (many.lowered.kind == OpKind.COLLECTIVE).sum() * many.device_spec.op_overhead_s
    # and all of it waits for the slowest of the 8 devices (simulator.schedule.variability)
    slowest = many.parallel["rank_variability"]["step_factor"]
    assert slowest == slowest_of(8, RANK_VARIABILITY) > 1
    assert (one.step_time_s + exposed) * slowest <= many.step_time_s * (1 + 1e-9)
    assert many.step_time_s <= (one.step_time_s + exposed + issued) * slowest * (1 + 1e-9)
    assert 0 < exposed < many.parallel["communication_s"]   # mostly hidden by the backward
    assert many.samples_per_s == pytest.approx(8 * one.samples_per_s * one.step_time_s
                                               / many.step_time_s)
    assert many.memory_breakdown == one.memory_breakdown


def test_tensor_parallel_halves_matmul_flops_and_weights():
    forward = fuse_attention(get_workload(GPT).forward_graph(2))
    half = split(forward, 2)
    for name in ("L3.q_proj", "L3.fc1", "L3.o_proj", "L3.fc2", "L3.attention"):
        assert half.op(name).flops * 2 == forward.op(name).flops
    for name in ("L3.q_proj", "L3.fc1", "L3.o_proj", "L3.fc2"):
        op, whole = half.op(name), forward.op(name)
        assert op.k * op.n * 2 == whole.k * whole.n     # the weight matrix, split exactly
    assert half.op("L3.layernorm").flops == forward.op("L3.layernorm").flops  # replicated


def test_tensor_parallel_adds_four_all_reduces_per_layer():
    """Megatron: g after o_proj and fc2 forward, f before qkv and fc1 backward, each of
    b x s x h x 2 bytes (Shoeybi et al. 2019, sec. 3)."""
    work = get_workload(GPT)
    r = _run(ParallelPlan(tp=2), micro_batch=2)
    ops = r.ops
    reduce = ops[(ops.kind == "collective") & (ops.layer == 5) & (ops.time_s > 0)]
    assert sorted(reduce.phase) == ["backward", "backward", "forward", "forward"]
    assert (reduce.bytes == 2 * 2 * work.seq_len * work.hidden * 2).all()   # read + written
    assert r.parallel["params_per_device"] < 0.51 * r.params


def test_sequence_parallel_moves_the_same_bytes_and_splits_norms():
    plain = _run(ParallelPlan(tp=4))
    sp = _run(ParallelPlan(tp=4, sequence_parallel=True))
    comm = lambda r: r.ops[(r.ops.kind == "collective") & (r.ops.layer == 2)]
    assert len(comm(sp)) > len(comm(plain))
    norm = lambda r: r.ops[r.ops.name == "L2.layernorm"].flops.item()
    assert norm(sp) * 4 == norm(plain)
    assert sp.memory_breakdown["activations"] < plain.memory_breakdown["activations"]


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_selective_recompute_layer_activations_equal_korthikanti_table_2(tp):
    """Korthikanti et al. 2022, Table 2: with selective recomputation a layer keeps
    sbh(10 + 24/t) bytes under tensor parallelism and 34sbh/t with sequence parallelism as
    well (sec. 4.2.2: the column-parallel linears keep their input's sequence shard, as
    Megatron-LM does). Exact, besides the two norms' fp32 mean and rstd (8 bytes per row
    each) on the rank's rows, which the paper drops."""
    c = get_workload(GPT)
    b, s, h = 2, c.seq_len, c.hidden
    plan = Plan(micro_batch=b, recompute="selective")
    forward = c.forward_graph(b, DType.BF16)
    norms = 2 * 8 * s * b
    for sp, want in ((False, s * b * h * (10 + 24 // tp) + norms),
                     (True, (34 * s * b * h + norms) // tp)):
        per_layer = activation_bytes_by_layer(split(forward, tp, sp), plan)
        assert per_layer[3] == want, sp


def test_sequence_parallel_backward_gathers_the_shard_again():
    """Megatron-LM's LinearWithGradAccumulationAndAsyncCommunication (Korthikanti et al.
    2022, sec. 4.2.2): the weight gradients of the linears reading a sequence-parallel
    all-gather read a second all-gather of the saved shard, issued in the backward; the
    forward's gathered tensor is freed after its forward readers."""
    parallel, plan = ParallelPlan(tp=4, sequence_parallel=True), Plan(micro_batch=2)
    r = _run(parallel)
    low, start, end = r.lowered, r.times["start_s"], r.times["end_s"]
    at = low.position()
    step = training_graph(stage_forward(get_workload(GPT), plan, parallel, 0, None)[1], plan)
    assert step.names() == low.names   # the graph simulate() scheduled
    gathers = [n for n in step.names() if step.op(n).fn == "all_gather"
               and step.op(n).phase is Phase.FORWARD]
    assert len(gathers) == 2 * 24 + 1   # two per layer, and the lm_head's
    forward_end = end[low.phase == Phase.FORWARD].max()
    _, _, out_free, _ = live_tensors(low, start, end)
    for gather in gathers:
        again = step.op(f"regather:{gather}")
        fwd = step.op(gather)
        assert (again.fn, again.bytes_read, again.bytes_written, again.out_bytes, again.extra) \
            == (fwd.fn, fwd.bytes_read, fwd.bytes_written, fwd.out_bytes, fwd.extra)
        assert step.inputs(again.name)[0] == step.inputs(gather)[0]   # the shard
        readers = step.consumers(gather)
        assert all(step.op(n).phase is Phase.FORWARD for n in readers)
        wgrads = [f"wgrad:{n}" for n in readers]
        assert all(again.name in step.inputs(w) for w in wgrads)
        assert start[at[again.name]] >= forward_end
        assert out_free[at[gather]] <= forward_end


@pytest.mark.parametrize("schedule, v", [("gpipe", 1), ("1f1b", 1), ("interleaved", 2)])
def test_pipeline_bubble_closed_form(schedule, v, monkeypatch):
    """The bubble is every other stage's micro-batch once, at its own pace, over v
    (``simulator.schedule.step.step_time``): (p - 1) / v of the slowest stage's at most,
    with equality only where the stages are alike."""
    import simulator.api as api
    from simulator.schedule.step import stage_times

    seen = {}

    def spy(runs, parallel, m, stand_in=None):
        seen["times"] = stage_times(runs, parallel.pp, stand_in)
        return step_time(runs, parallel, m, stand_in)

    step_time = api.step_time
    monkeypatch.setattr(api, "step_time", spy)
    p, m = 4, 8
    r = _run(ParallelPlan(pp=p, schedule=schedule, virtual_stages=v), global_batch=2 * m)
    per_micro = r.parallel["micro_batch_s"]   # the slower of the first and last stages
    assert per_micro >= r.ops[~r.ops.phase.isin(["optimizer", "communication"])].end_s.max()
    bubble = r.parallel["bubble_fraction"] * r.step_time_s
    assert len(seen["times"]) == p and max(seen["times"]) == pytest.approx(per_micro)
    assert bubble == pytest.approx((sum(seen["times"]) - per_micro) / v, rel=1e-9)
    assert bubble <= (p - 1) / v * per_micro
    assert bubble / (m * per_micro + bubble) <= bubble_over_total(p, m, schedule, v)


def test_pipeline_first_stage_holds_more_micro_batches_under_gpipe():
    one_f = _run(ParallelPlan(pp=4), global_batch=32)
    gpipe = _run(ParallelPlan(pp=4, schedule="gpipe"), global_batch=32)
    assert gpipe.memory_breakdown["activations"] > one_f.memory_breakdown["activations"]
    assert gpipe.step_time_s == pytest.approx(one_f.step_time_s)


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_zero_states_are_zero_state_bytes(zero):
    r = _run(ParallelPlan(dp=8, zero=zero))
    expected = zero_state_bytes(r.params, zero, 8, k=12, weight_bytes=2, grad_bytes=2)
    for key, value in expected.items():
        assert r.memory_breakdown[key] == pytest.approx(value)


def test_zero3_gathers_weights_forward_and_backward():
    r = _run(ParallelPlan(dp=8, zero=3))
    names = r.ops[r.ops.kind == "collective"].name
    assert names.str.startswith("zero3_all_gather_forward").sum() == 25   # 24 layers + head
    # FSDP keeps its root unit (embeddings, final norm, head) gathered through the backward
    assert names.str.startswith("zero3_all_gather_backward").sum() == 24
    # 3 Psi of traffic against DDP's 2 Psi (Rajbhandari et al. 2020, sec. 7), every
    # micro-batch; its step can still be shorter: the update is sharded (1/8 of Adam's passes)
    # and the gathers hide behind the compute
    assert r.parallel["communication_s"] > _run(ParallelPlan(dp=8)).parallel["communication_s"]


@settings(max_examples=8, deadline=None)
@given(st.sampled_from([2, 4, 8, 16]), st.sampled_from([2, 4, 8, 16]))
def test_more_replicas_never_increase_memory_under_zero3(a, b):
    small, large = sorted((a, b))
    mem = lambda dp: simulate("gpt2-small", "a100", micro_batch=1, global_batch=dp,
                              parallel=ParallelPlan(dp=dp, zero=3)).peak_memory_bytes
    assert mem(large) <= mem(small)


@settings(max_examples=6, deadline=None)
@given(st.floats(5e9, 100e9))
def test_faster_inter_network_is_never_slower(bandwidth):
    from dataclasses import replace
    base = cluster_for(load_device("a100"), 16)
    slow = replace(base, inter=replace(DEFAULT_INTER, bandwidth_bytes_per_s=bandwidth))
    fast = replace(base, inter=replace(DEFAULT_INTER, bandwidth_bytes_per_s=2 * bandwidth))
    run = lambda c: simulate("gpt2-small", c, micro_batch=4, global_batch=64,
                             parallel=ParallelPlan(dp=16)).step_time_s
    assert run(fast) <= run(slow)


def test_cluster_presets_and_scaling_by_nodes():
    r = simulate("gpt2-small", "dgx-a100", micro_batch=4, global_batch=32)
    assert r.num_devices == 8 and r.parallel["cluster"] == "dgx-a100"
    bigger = simulate("gpt2-small", load_cluster("dgx-a100"), num_devices=32, micro_batch=4,
                      global_batch=128)
    assert bigger.num_devices == 32


def test_gpt3_175b_on_1024_devices():
    """Megatron's PTD-P layout (Narayanan et al. 2021): tp 8 in a node, pp 16, dp 8."""
    r = simulate("gpt3-175b", "a100", parallel=ParallelPlan(dp=8, tp=8, pp=16),
                 micro_batch=1, global_batch=1536, recompute="full", tokens=300e9)
    # how fast: benchmarks/bench_cluster.py times this call (docs/speed.md), not the suite
    assert r.num_devices == 1024 and r.micro_batches == 192
    assert r.fits and 10e9 < r.peak_memory_bytes < 80e9
    assert 0.3 < r.hfu <= 1 and r.mfu < r.hfu
    assert r.hfu / r.mfu == pytest.approx(4 / 3, rel=0.02)   # full recompute: 4 forwards
    assert 0 < r.parallel["bubble_fraction"] < 0.1
    t = r.totals
    assert t["device_hours"] == pytest.approx(t["total_time_s"] * 1024 / 3600)
    assert t["energy_kwh"] == pytest.approx(t["steps"] * r.energy_j_per_step * 1024 / 3.6e6)


def test_node_overhead_and_pue_in_totals():
    r = simulate("gpt2-small", "a100", num_devices=16, micro_batch=4, global_batch=64,
                 steps=100, pue=1.2, node_overhead_w=3000)
    t = r.totals
    devices = 100 * r.energy_j_per_step * 16
    nodes = 3000 * 2 * t["total_time_s"]
    assert t["energy_kwh"] == pytest.approx((devices + nodes) * 1.2 / 3.6e6)


@pytest.mark.parametrize("parallel, kwargs, words", [
    (ParallelPlan(tp=5), {}, ["tp = 5", "heads = 12"]),
    (ParallelPlan(dp=2, tp=2), {"num_devices": 8}, ["dp x tp x pp", "8"]),
    (ParallelPlan(dp=4), {"global_batch": 6}, ["global batch = 6", "dp"]),
])
def test_bad_plans_name_the_numbers(parallel, kwargs, words):
    with pytest.raises(PlanError) as err:
        simulate("gpt2-small", "a100", parallel=parallel, **kwargs)
    for word in words:
        assert word in str(err.value)


def test_tensor_parallel_needs_a_transformer():
    with pytest.raises(PlanError, match="not a transformer"):
        simulate("resnet-50", "a100", parallel=ParallelPlan(tp=2), micro_batch=8)


def test_data_parallel_works_for_any_model():
    r = simulate("resnet-50", "a100", num_devices=8, micro_batch=32, global_batch=256)
    assert r.num_devices == 8 and r.parallel["communication_s"] > 0
    assert (r.lowered.kind == OpKind.COLLECTIVE).sum() > 0
    assert set(np.unique(r.lowered.phase[r.lowered.kind == OpKind.COLLECTIVE])) == {
        int(Phase.COMMUNICATION)}


def test_gradient_reduction_without_overlap_waits_for_the_whole_backward():
    """Megatron-LM before --overlap-grad-reduce: the first reduction starts when the last
    backward op ends, the rest follow on the in-order stream; with overlap (DDP) the first
    starts inside the backward. Not overlapping is never faster, and by at most the
    reductions' own time."""
    kw = dict(micro_batch=2, global_batch=64)
    overlapped = simulate(GPT, "a100", num_devices=16, parallel=ParallelPlan(dp=16), **kw)
    serial = simulate(GPT, "a100", num_devices=16,
                      parallel=ParallelPlan(dp=16, overlap_grad_reduce=False), **kw)
    assert serial.parallel["overlap_grad_reduce"] is False
    for r, inside in ((overlapped, True), (serial, False)):
        low, start, end = r.lowered, r.times["start_s"], r.times["end_s"]
        reductions = _named(r, "dp_all_reduce")
        backward_end = end[(low.phase == Phase.BACKWARD) | (low.phase == Phase.RECOMPUTE)].max()
        assert len(reductions) > 1
        assert bool(start[reductions].min() < backward_end) == inside
    assert serial.step_time_s > overlapped.step_time_s
    reduce_s = serial.times["time_s"][_named(serial, "dp_all_reduce")].sum()
    assert serial.step_time_s - overlapped.step_time_s <= reduce_s * (1 + 1e-9)


def test_interleaved_chunks_exchange_activations_v_times():
    """Narayanan et al. 2021 sec. 2.2.2: with v model chunks per device the pipeline's
    communication grows v times. A device's stage of 12 layers in v = 3 chunks of 4 exchanges
    the residual stream at the two chunk boundaries, forward and backward, besides its own
    send or receive; each message is the boundary activation split over the tp ranks."""
    plan = Plan(micro_batch=1)
    work = get_workload(GPT)
    for v in (2, 3):
        par = ParallelPlan(tp=2, pp=2, schedule="interleaved", virtual_stages=v)
        _, stage = stage_forward(work, plan, par, 1, None)
        swaps = [n for n in stage.names() if n.startswith("pipeline_exchange")
                 and stage.op(n).fn == "send_recv"]
        assert len(swaps) == v - 1
        for n in swaps:
            op, src = stage.op(n), stage.op(stage.inputs(n)[0])
            assert op.bytes_read == src.out_bytes // 2
            (gather,) = stage.consumers(n)   # the node reassembles the message
            assert stage.op(stage.consumers(gather)[0]).layer == src.layer + 1
        step = training_graph(stage, plan)
        backward = [n for n in step.names() if n.startswith("grad:pipeline_exchange")
                    and step.op(n).fn == "send_recv"]
        assert len(backward) == v - 1
    flat = ParallelPlan(tp=2, pp=2)
    assert not [n for n in stage_forward(work, plan, flat, 1, None)[1].names()
                if n.startswith("pipeline_exchange")]


@pytest.mark.parametrize("zero, per_micro_batch", [(0, False), (2, False), (3, True)])
def test_zero3_reduces_gradients_every_micro_batch(zero, per_micro_batch):
    """Under gradient accumulation stages 0-2 reduce once per step (DDP's no_sync); ZeRO-3
    keeps no unsharded gradient to accumulate in, so it reduce-scatters every micro-batch
    (DeepSpeed stage 3, FSDP without no_sync): its step's communication is m times one
    micro-batch's."""
    one, four = (_run(ParallelPlan(dp=8, zero=zero), micro_batch=2, global_batch=16 * m)
                 for m in (1, 4))
    assert (one.micro_batches, four.micro_batches) == (1, 4)
    names = np.array(one.lowered.names, dtype=str)
    sync = np.char.startswith(names, "dp_all_reduce") | np.char.startswith(names,
                                                                          "dp_reduce_scatter")
    assert bool((one.lowered.phase[sync] == Phase.BACKWARD).all()) == per_micro_batch
    if per_micro_batch:
        assert four.parallel["communication_s"] == pytest.approx(
            4 * one.parallel["communication_s"], rel=1e-9)
    else:
        assert four.parallel["communication_s"] < 4 * one.parallel["communication_s"]


def test_tensor_parallel_backward_without_overlap_waits_for_weight_gradients():
    """Megatron-LM's asynchronous tensor-parallel all-reduce overlaps a column-parallel
    linear's input-gradient all-reduce with its weight-gradient GEMM; without it
    (``overlap_tp_comm`` False, the 2021 code) the all-reduce starts after the weight
    gradients of every linear it reduces for. Never faster, slower by at most the backward
    all-reduces' own time per micro-batch."""
    kw = dict(num_devices=8, micro_batch=2, global_batch=8, precision="fp16")
    overlapped = simulate(GPT, "a100", parallel=ParallelPlan(tp=8), **kw)
    serial = simulate(GPT, "a100", parallel=ParallelPlan(tp=8, overlap_tp_comm=False), **kw)
    for result, waits in ((overlapped, False), (serial, True)):
        names = np.array(result.lowered.names, dtype=str)
        start, end = result.times["start_s"], result.times["end_s"]
        layers = _named(result, "grad:L")
        reduces = layers[np.char.endswith(names[layers], ".tp_identity")]
        assert len(reduces) == 2 * 24    # before attention and before the MLP, every layer
        for i in reduces:
            layer = result.lowered.layer[i]
            block = ("q_proj", "k_proj", "v_proj") if "#" not in names[i] else ("fc1",)
            wgrads = [np.flatnonzero(names == f"wgrad:L{layer}.{b}")[0] for b in block]
            after = bool(start[i] >= max(end[w] for w in wgrads))
            # overlapped, the MLP's all-reduce runs beside fc1's weight gradient (attention's
            # waits anyway for the add of q, k and v's input gradients behind theirs)
            assert after if waits else (not after or block != ("fc1",))
    assert serial.step_time_s > overlapped.step_time_s
    reduce_s = serial.times["time_s"][reduces].sum()
    assert serial.step_time_s - overlapped.step_time_s <= \
        serial.micro_batches * reduce_s * (1 + 1e-9)


def test_unfused_gradient_accumulation_adds_one_pass_per_micro_batch():
    """Without Megatron-LM's fused accumulation each micro-batch adds its weight gradients
    into the gradient buffer: per layer a pass reading 2 and writing 1 gradient-sized buffer
    (fp16: 6 bytes per parameter), on the compute stream before the layer's update. Across
    the step it costs m such passes: the step grows by m times their time (pp = 1, dp = 1:
    nothing overlaps them)."""
    kw = dict(micro_batch=1, global_batch=4, precision="fp16")
    fused = simulate(GPT, "a100", parallel=ParallelPlan(), **kw)
    unfused = simulate(GPT, "a100", parallel=ParallelPlan(fused_grad_accumulation=False), **kw)
    assert not len(_named(fused, "grad_accumulate:weights"))
    adds = _named(unfused, "grad_accumulate:weights")
    low = unfused.lowered
    assert (low.phase[adds] == Phase.BACKWARD).all()
    assert low.nbytes[adds].sum() == 6 * unfused.parallel["params_per_device"]
    added = unfused.micro_batches * unfused.times["time_s"][adds].sum()
    assert unfused.step_time_s - fused.step_time_s == pytest.approx(added, rel=1e-6)


def test_fp32_gradients_double_the_gradient_memory_and_the_reduction():
    """Gradients kept in fp32 under bf16 (Megatron-LM with --bf16): the gradient buffer and
    every data-parallel all-reduce are twice the size and take longer; weights and optimizer
    states stay, and the optimizer no longer copies bf16 gradients to fp32 (6 bytes per
    parameter fewer: read 2, write 4)."""
    kw = dict(micro_batch=1, global_batch=8, precision="bf16")
    half = simulate(GPT, "a100", parallel=ParallelPlan(dp=8), **kw)
    full = simulate(GPT, "a100", parallel=ParallelPlan(dp=8), fp32_grads=True, **kw)
    for part in ("weights", "optimizer_states"):
        assert full.memory_breakdown[part] == half.memory_breakdown[part]
    assert full.memory_breakdown["gradients"] == 2 * half.memory_breakdown["gradients"]

    def reduced(result):
        return result.lowered.nbytes[_named(result, "dp_all_reduce")].sum()
    assert reduced(full) == 2 * reduced(half) > 0

    def reduction_s(result):
        return result.ops.time_s[result.ops.name.str.startswith("dp_all_reduce")].sum()

    def update_bytes(result):
        return result.ops.bytes[result.ops.phase == "optimizer"].sum()
    assert reduction_s(full) > reduction_s(half)
    assert update_bytes(half) - update_bytes(full) == 6 * full.params


def test_uneven_stages():
    """Megatron-LM's first/last stage layers: giving the even split changes nothing; an uneven
    one keeps the step's FLOPs (the same model). 1F1B's steady state is paced by the slowest
    stage: evenly split, the last (6 layers and the 50,257-word head); one layer fewer on the
    first and last stages balances them (5, 7, 7, 5: faster, the reason Llama 3 405B ran 7 of
    its 126 layers on its first and last stages); three fewer overloads the middle ones. The
    even split's middle stages take the first stage's time, embedding included, in the
    pipeline's fill and drain (``simulator.schedule.step.stage_times``); given explicitly,
    the middle stage is simulated: 0.06 % apart."""
    kw = dict(micro_batch=1, global_batch=8, precision="bf16", recompute="full")

    def run(**stages):
        return simulate(GPT, "a100", parallel=ParallelPlan(pp=4, **stages), **kw)
    even, given = run(), run(first_stage_layers=6, last_stage_layers=6)
    balanced = run(first_stage_layers=5, last_stage_layers=5)
    heavy = run(first_stage_layers=3, last_stage_layers=3)
    assert given.step_time_s == pytest.approx(even.step_time_s, rel=1e-3)
    assert given.step_time_s <= even.step_time_s
    assert given.peak_memory_bytes == even.peak_memory_bytes
    assert balanced.parallel["stage_layers"] == [5, 7, 7, 5]
    for uneven in (balanced, heavy):
        assert uneven.flops_per_step == pytest.approx(even.flops_per_step, rel=1e-12)
        assert uneven.hardware_flops_per_step == pytest.approx(
            even.hardware_flops_per_step, rel=1e-12)
    assert balanced.step_time_s < even.step_time_s < heavy.step_time_s
    assert heavy.parallel["micro_batch_s"] > even.parallel["micro_batch_s"]


def test_uneven_interleaved_stages():
    """Uneven stages with the interleaved schedule (Llama 3 405B's layout): giving the even
    split changes nothing. A 22-layer model, which 4 stages x 2 chunks cannot split evenly,
    runs with one layer fewer on the first and last chunks (2, 3 | 3, 3 | 3, 3 | 3, 2): the
    step's FLOPs are those of any other split of it, the first device's exchange reads its
    first chunk's last layer, and it is faster than the split that piles the spare layers on
    the first and last chunks (5, 2 | 2, 2 | 2, 2 | 2, 5), whose end devices pace the
    pipeline. (Given explicitly, the even split's middle devices are simulated, not stood for
    by the first with its embedding: 0.04 % apart, ``test_uneven_stages``.)"""
    kw = dict(micro_batch=1, global_batch=8, precision="bf16", recompute="full")

    def run(work, **stages):
        return simulate(work, "a100", parallel=ParallelPlan(
            pp=4, schedule="interleaved", virtual_stages=2, **stages), **kw)
    gpt = get_workload(GPT)
    even, given = run(gpt), run(gpt, first_stage_layers=3, last_stage_layers=3)
    assert given.step_time_s == pytest.approx(even.step_time_s, rel=1e-3)
    assert given.peak_memory_bytes == even.peak_memory_bytes
    short = replace(gpt, layers=22)
    fewer = run(short, first_stage_layers=2, last_stage_layers=2)
    heavy = run(short, first_stage_layers=5, last_stage_layers=5)
    assert fewer.parallel["stage_layers"] == [5, 6, 6, 5]
    assert heavy.parallel["stage_layers"] == [7, 4, 4, 7]
    assert fewer.flops_per_step == pytest.approx(heavy.flops_per_step, rel=1e-12)
    assert fewer.hardware_flops_per_step == pytest.approx(heavy.hardware_flops_per_step,
                                                          rel=1e-12)
    assert fewer.step_time_s < heavy.step_time_s
    plan = Plan(micro_batch=1)
    par = ParallelPlan(pp=4, schedule="interleaved", virtual_stages=2, first_stage_layers=2,
                       last_stage_layers=2)
    for stage, boundary in ((0, 1), (1, 2), (3, 2)):   # the last layer of its first chunk
        _, graph = stage_forward(short, plan, par, stage, None)
        (swap,) = [n for n in graph.names() if n.startswith("pipeline_exchange")]
        assert graph.op(graph.inputs(swap)[0]).layer == boundary


def test_chunks_holding_only_the_embedding_or_the_head():
    """Llama 3 405B's layout (Dubey et al. 2024, sec. 3.3.2): "the first model chunk on the
    first stage has only the embedding, and the last model chunk on the last stage has only
    output projection and loss calculation". The first device sends the embedding's output
    on at once (its exchange reads it), the last device receives the head's input from
    the previous device (its exchange feeds the final norm); the step's FLOPs are the
    model's, as with three layers on each of those chunks."""
    work, plan = replace(get_workload(GPT), layers=18), Plan(micro_batch=1)
    par = ParallelPlan(pp=4, schedule="interleaved", virtual_stages=2, first_stage_layers=0,
                       last_stage_layers=0)
    assert par.chunk_layers(18) == [[0, 3], [3, 3], [3, 3], [3, 0]]
    _, first = stage_forward(work, plan, par, 0, None)
    (swap,) = [n for n in first.names() if n.startswith("pipeline_exchange")]
    source = first.op(first.inputs(swap)[0])
    assert source.layer == -1 and source.kind is not OpKind.COLLECTIVE
    assert {first.op(n).layer for n in first.consumers(swap)} == {0}
    _, last = stage_forward(work, plan, par, 3, None)
    (swap,) = [n for n in last.names() if n.startswith("pipeline_exchange")]
    assert last.op(last.inputs(swap)[0]).layer == 2        # the last layer the device runs
    assert {n for n in last.names() if n.endswith("lm_head")}
    kw = dict(micro_batch=1, global_batch=8, precision="bf16")
    ends = simulate(work, "a100", parallel=par, **kw)
    threes = simulate(work, "a100", parallel=replace(par, first_stage_layers=3,
                                                     last_stage_layers=3), **kw)
    assert ends.parallel["stage_layers"] == [3, 6, 6, 3]
    assert threes.parallel["stage_layers"] == [5, 4, 4, 5]
    assert ends.flops_per_step == pytest.approx(threes.flops_per_step, rel=1e-12)


def test_context_parallel_splits_the_tokens_and_keeps_the_flops():
    """Context parallelism (Megatron-LM --context-parallel-size): each of cp ranks runs 1/cp
    of every sequence's tokens, its queries against all the keys. The step's model and
    hardware FLOPs are the unsplit run's exactly; every linear has 1/cp of the rows, every
    attention 1/cp of the query rows and all the keys; the parameters on a rank are all of
    them (the learned position table whole); activations shrink as cp grows."""
    work = get_workload(GPT)
    kw = dict(micro_batch=1, global_batch=2, precision="bf16", attention="fused",
              recompute="none")
    runs = {cp: simulate(work, "a100", parallel=ParallelPlan(dp=2, cp=cp), **kw)
            for cp in (1, 2, 4)}
    one = runs[1]
    s, tokens = work.seq_len, work.seq_len  # micro-batch 1
    for cp, run in runs.items():
        assert run.num_devices == 2 * cp and run.parallel["cp"] == cp
        assert run.flops_per_step == one.flops_per_step
        assert run.hardware_flops_per_step == one.hardware_flops_per_step
        assert run.parallel["params_per_device"] == one.parallel["params_per_device"]
        forward = run.ops[run.ops.phase == "forward"]
        fc1 = run.lowered.m[list(run.lowered.names).index("L0.fc1")]
        assert fc1 == tokens // cp
        i = list(run.lowered.names).index("L0.attention")
        assert (run.lowered.m[i], run.lowered.n[i]) == (s // cp, s)
        assert len(forward[forward.name.str.endswith("cp_all_gather")]) == \
            (2 * work.layers if cp > 1 else 0)
    acts = [runs[cp].memory_breakdown["activations"] for cp in (1, 2, 4)]
    assert acts[0] > acts[1] > acts[2]


def test_context_parallel_gathers_keys_and_values():
    """Before each attention the cp ranks all-gather its keys and values (Llama 3's method,
    Dubey et al. 2024, sec. 3.3.2): a buffer of micro-batch x seq_len x kv_heads / tp x
    head_dim x 2 bytes each (the rank's tensor-parallel share of the heads), a group of cp on
    the context axis; the backward reduce-scatters their gradients, the same buffer. The
    parameters' gradients reduce over the dp x cp ranks that hold them."""
    from simulator.graph.collective import Axis
    from simulator.graph.lower import COLLECTIVE_FNS
    work = get_workload("llama2-7b")
    tp, cp, b = 2, 2, 2
    run = simulate(work, "a100", parallel=ParallelPlan(tp=tp, cp=cp), micro_batch=b,
                   global_batch=b, precision="bf16", attention="fused", recompute="none")
    low, names = run.lowered, list(run.lowered.names)
    buffer = b * work.seq_len * work.n_kv_heads // tp * work.head_dim * 2
    for phase, fn in ((Phase.FORWARD, "all_gather"), (Phase.BACKWARD, "reduce_scatter")):
        ops = [i for i, n in enumerate(names) if "cp_all_gather" in n
               and low.phase[i] == phase]
        assert len(ops) == 2 * work.layers
        for i in ops:
            assert max(low.bytes_read[i], low.bytes_written[i]) == buffer
            assert low.group[i] == cp and low.axis[i] == int(Axis.CONTEXT)
            assert COLLECTIVE_FNS[low.collective[i]] == fn
    reduce = [i for i, n in enumerate(names) if low.axis[i] == int(Axis.DATA)]
    assert reduce and all(low.group[i] == cp for i in reduce)


@pytest.mark.parametrize("parallel, kwargs, message", [
    (ParallelPlan(cp=2), dict(attention="materialized"), "needs fused attention"),
    (ParallelPlan(cp=3), dict(attention="fused"), "2 x cp = 6 must divide seq_len = 2048"),
    (ParallelPlan(cp=4, tp=2, sequence_parallel=True), dict(attention="fused"),
     None),
])
def test_context_parallel_plans_that_cannot_run(parallel, kwargs, message):
    if message is None:   # 2048 / 4 = 512 tokens, which tp = 2 splits: it runs
        assert simulate(GPT, "a100", parallel=parallel, micro_batch=1, **kwargs).fits
        return
    with pytest.raises(PlanError, match=message):
        simulate(GPT, "a100", parallel=parallel, micro_batch=1, **kwargs)
    with pytest.raises(PlanError, match="dp x tp x pp x cp = 1 x 1 x 1 x 2 = 2 must equal"):
        simulate(GPT, "a100", num_devices=4, parallel=ParallelPlan(cp=2), micro_batch=1,
                 attention="fused")


def test_gradient_adds_run_inside_the_backward_and_keep_the_reduction_overlapped():
    """Megatron-LM's gradient hook and PyTorch's AccumulateGrad add a layer's weight
    gradients as soon as they are written: each add starts before the next layer's backward
    ends, and a data-parallel reduction that overlaps the backward still does (the step is
    shorter than with the reductions after the whole backward)."""
    kw = dict(micro_batch=1, global_batch=4, precision="fp16")

    def run(overlap):
        return simulate(GPT, "a100", parallel=ParallelPlan(
            dp=2, fused_grad_accumulation=False, overlap_grad_reduce=overlap), **kw)
    over, after = run(True), run(False)
    names = list(over.lowered.names)
    start, end = over.times["start_s"], over.times["end_s"]
    backward = [i for i, n in enumerate(names) if n.startswith(("dgrad", "wgrad"))]
    for layer in range(get_workload(GPT).layers - 1, 0, -1):
        add = names.index(f"grad_accumulate:weights:L{layer}")
        below = [i for i in backward if names[i].split(":")[1].startswith(f"L{layer - 1}.")]
        assert end[add] <= max(start[i] for i in below)
    assert over.step_time_s < after.step_time_s


@pytest.mark.parametrize("sequence_parallel", [False, True])
def test_scatter_gather_reassembles_every_received_message(sequence_parallel):
    """Narayanan et al. 2021 sec. 4.1: each tp rank sends 1/tp of a stage-boundary activation
    over its own card; the receiving node all-gathers the pieces over NVLink. A middle stage
    of v = 2 chunks receives its input and one chunk boundary forward, and its output's and
    that boundary's gradients backward: four all-gathers of the whole activation (1/tp read
    per rank), none of whose adjoints moves data. A sequence-parallel message is a shard
    already: no gathers."""
    plan = Plan(micro_batch=1, precision="fp16")
    par = ParallelPlan(tp=2, pp=4, schedule="interleaved", virtual_stages=2,
                       sequence_parallel=sequence_parallel)
    _, stage = stage_forward(get_workload(GPT), plan, par, 1, None)
    step = training_graph(stage, plan)
    gathers = [n for n in step.names() if n.endswith(".tp_all_gather") and "pipeline" in n
               and step.op(n).kind is OpKind.COLLECTIVE]
    if sequence_parallel:
        assert gathers == []
        return
    assert len(gathers) == 4
    assert {step.op(n).phase for n in gathers} == {Phase.FORWARD, Phase.BACKWARD}
    for n in gathers:
        op, src = step.op(n), step.op(step.inputs(n)[0])
        assert op.fn == "all_gather" and src.fn == "send_recv"
        assert op.bytes_written == 2 * op.bytes_read == 2 * src.bytes_read
    assert not [n for n in step.names() if n.startswith("grad:") and n.endswith(
        ".tp_all_gather") and step.op(n).fn == "reduce_scatter"]


@pytest.mark.parametrize("fp32_grads", [False, True])
def test_tied_embedding_gradients_are_all_reduced_between_the_end_stages(fp32_grads):
    """Megatron-LM's _allreduce_embedding_grads: with tied embeddings and pp > 1 the first
    stage (the embedding) and the last (the head's copy) all-reduce the word embedding's
    gradient, vocab x hidden / tp elements, in a group of two on the pipeline communicator,
    after the data-parallel reduction and before the update; not with untied embeddings,
    nor on the middle stages, nor without a pipeline."""
    work = get_workload(GPT)
    plan = Plan(micro_batch=1, global_batch=16, precision="bf16", fp32_grads=fp32_grads)
    par = ParallelPlan(dp=2, tp=2, pp=4)
    expected = -(-work.vocab // 2) * work.hidden * (4 if fp32_grads else 2)  # vocab rows / tp

    def reduces(model, parallel, stage):
        low = build_stage(stage_forward(model, plan, parallel, stage, None)[1], plan,
                          parallel, 8)
        return low, [i for i, n in enumerate(low.names) if n.startswith("embedding_all_reduce")]
    for stage in (0, 3):
        low, found = reduces(work, par, stage)
        assert len(found) == 1
        i = found[0]
        assert low.bytes_read[i] == low.bytes_written[i] == expected
        assert (low.group[i], low.axis[i], low.phase[i]) == (2, int(Axis.PIPELINE),
                                                            int(Phase.COMMUNICATION))
        assert any(low.names[j].startswith("dp_all_reduce") for j in low.preds(i))
        update = low.names.index("optimizer:L-1")
        assert i in low.preds(update)
    assert reduces(work, par, 1)[1] == []
    assert reduces(work, ParallelPlan(dp=8, tp=2), 0)[1] == []
    untied = replace(work, tied_embeddings=False)
    assert all(reduces(untied, par, stage)[1] == [] for stage in (0, 3))
