"""DeepSpeed's engines as they ran in 2021: the pipeline engine's instruction schedule
(deepspeed/runtime/pipe/schedule.py ``TrainSchedule``, v0.5.0) and ZeRO-3's gather buffers
(deepspeed/runtime/zero/partition_parameters.py ``_allgather_param``, v0.3.13)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.schedule.pipeline import deepspeed_instruction, deepspeed_train_ends

# -- the pipeline engine's TrainSchedule --------------------------------------------------------


@given(p=st.integers(1, 12), m=st.integers(1, 40))
def test_trainschedule_runs_each_micro_batch_once_in_2_m_plus_p_minus_1_steps(p, m):
    """Every stage runs each micro-batch's forward and backward once in 2 (m + p - 1) steps;
    micro-batch j's forward reaches stage s at step 2j + s, its backward at 2j + 2p - s - 1,
    so stage s holds p - s forwards in flight at most (min(p - s, m): PipeDream-Flush's)."""
    steps = 2 * (m + p - 1)
    for s in range(p):
        ops = [deepspeed_instruction(s, t, p) for t in range(steps)]
        forwards = [t for t, (j, fwd) in enumerate(ops) if fwd and 0 <= j < m]
        backwards = [t for t, (j, fwd) in enumerate(ops) if not fwd and 0 <= j < m]
        assert forwards == [2 * j + s for j in range(m)]
        assert backwards == [2 * j + 2 * p - s - 1 for j in range(m)]
        held = max(sum(f <= t for f in forwards) - sum(b <= t for b in backwards)
                   for t in range(steps))
        assert held == min(p - s, m)


@given(p=st.integers(1, 12), m=st.integers(1, 60),
       f=st.floats(0.01, 1.0), b=st.floats(0.01, 4.0))
def test_trainschedule_takes_1f1bs_closed_form_with_equal_stages(p, m, f, b):
    """Blocking exchanges between neighbours at every step do not lock the stages into steps
    of max(F, B): stages of equal forward F and backward B end the schedule at
    (m + p - 1)(F + B), the 1F1B time with its (p - 1)(F + B) bubble (Narayanan et al. 2021,
    sec. 2.2.1) that ``simulator.schedule.step.step_time`` prices for both engines."""
    ends = deepspeed_train_ends([f] * p, [b] * p, m)
    assert abs(ends.max() - (m + p - 1) * (f + b)) <= 1e-9 * (m + p) * (f + b)
    # the first stage runs the last backward; the last stage ends p - 1 backwards earlier
    assert abs(ends[0] - ends.max()) <= 1e-9 * ends.max()
    assert abs(ends[0] - ends[-1] - (p - 1) * b) <= 1e-9 * ends.max()


@settings(max_examples=200)
@given(data=st.data(), p=st.integers(1, 8), m=st.integers(1, 24))
def test_trainschedule_is_bounded_by_the_closed_form_and_monotone(data, p, m):
    """With stages unlike each other: no faster than the slowest stage's own m micro-batches,
    no slower than (m + p - 1) x the slowest stage's micro-batch (the closed form hwsim uses,
    so pricing DeepSpeed's engine with it never makes the step shorter), and a slower
    forward or backward anywhere never ends the schedule earlier."""
    times = st.floats(0.01, 3.0)
    f = np.array(data.draw(st.lists(times, min_size=p, max_size=p)))
    b = np.array(data.draw(st.lists(times, min_size=p, max_size=p)))
    end = deepspeed_train_ends(f, b, m).max()
    assert end >= m * (f + b).max() * (1 - 1e-12)
    assert end <= (m + p - 1) * (f + b).max() * (1 + 1e-12)
    s = data.draw(st.integers(0, p - 1))
    slower = b.copy()
    slower[s] += data.draw(st.floats(0.0, 2.0))
    assert deepspeed_train_ends(f, slower, m).max() >= end * (1 - 1e-12)


# -- ZeRO-3 of 2021: each gather's buffer zero-filled first ---------------------------------------

def test_deepspeed_2021_zero_fills_each_gather_buffer():
    """v0.3.13's ``_allgather_param`` allocates the gathered parameter with ``torch.zeros``
    (a write of all its bytes) before the sync and the gather: one fill per gather, as many
    bytes written as the gather's output, on the data-parallel stream, ended before its
    gather starts; the host still synchronises before the gather (not the fill); today's
    coordinator (``--sharding deepspeed``) gathers into an empty buffer."""
    from hardware_specs.loader import load_device
    from simulator import Plan, simulate
    from simulator.cost import host
    from simulator.graph.collective import Axis
    from simulator.graph.lower import COLLECTIVE_FNS
    from simulator.graph.op import Phase
    from simulator.parallel.data import ZERO_FILL
    from simulator.plan.parallel import ParallelPlan
    from simulator.schedule.stage import streams
    from workloads.transformer import TransformerConfig

    work = TransformerConfig("small", layers=4, hidden=1024, heads=8, vocab=8192, seq_len=1024)
    a100 = "a100-sxm4-80gb"

    def run(sharding):
        return simulate(work, a100, Plan(micro_batch=1, global_batch=16), parallel=ParallelPlan(
            dp=16, zero=3, sharding=sharding, comm_interference=False))

    r = run("deepspeed-2021")
    low, start, end = r.lowered, r.times["start_s"], r.times["end_s"]
    gathers = np.flatnonzero((low.collective == COLLECTIVE_FNS.index("all_gather"))
                             & (low.axis == int(Axis.DATA))
                             & (low.phase != int(Phase.COMMUNICATION)))
    fills = np.flatnonzero(low.fn == ZERO_FILL)
    assert len(gathers) and len(fills) == len(gathers)
    assert np.all(streams(low)[fills] == 2)
    sync = host.syncs(low, load_device(a100), None)
    for g in gathers:
        inputs = low.indices[low.indptr[g]:low.indptr[g + 1]]
        fill = [int(i) for i in inputs if low.fn[i] == ZERO_FILL]
        assert len(fill) == 1
        assert low.bytes_written[fill[0]] == low.bytes_written[g]
        assert low.bytes_read[fill[0]] == 0
        assert end[fill[0]] <= start[g] + 1e-12
        assert sync[g] and not sync[fill[0]]
    assert not np.any(run("deepspeed").lowered.fn == ZERO_FILL)


def test_deepspeed_2021_builds_a_view_per_rank_before_each_gather():
    """v0.3.13's ``_allgather_param`` builds its list of dp views in Python after the
    synchronisation (``partitions.append(flat_tensor.narrow(...))`` per rank): each gather's
    host cost is its launch, the ``torch.cuda.synchronize()`` call and dp x
    ``GATHER_VIEW_FRACTION`` eager ops; nothing else pays for views. The device waits for the
    loop, so the step grows by at most the loops' host time, by more than nothing, and by more
    at a larger dp; today's coordinator builds no list."""
    from hardware_specs.loader import load_device
    from simulator import Plan, simulate
    from simulator.cost import host
    from simulator.graph.lower import COLLECTIVE_FNS
    from simulator.parallel.data import NCCL_COPY_OUT
    from simulator.plan.parallel import ParallelPlan
    from workloads.transformer import TransformerConfig

    work = TransformerConfig("small", layers=4, hidden=1024, heads=8, vocab=8192, seq_len=1024)
    a100 = load_device("a100-sxm4-80gb")
    per_op = host.host_per_op(a100)

    def run(dp, sharding="deepspeed-2021"):   # no straggler scaling: the host's time alone
        return simulate(work, a100, Plan(micro_batch=1, global_batch=dp, rank_variability=0.0),
                        parallel=ParallelPlan(dp=dp, zero=3, sharding=sharding,
                                              comm_interference=False))

    r = run(64)
    low = r.lowered
    copies = np.flatnonzero(low.fn == NCCL_COPY_OUT)
    gathers = low.indices[low.indptr[copies]]
    assert len(copies) and np.all(low.collective[gathers] == COLLECTIVE_FNS.index("all_gather"))
    views = host.list_views(low)
    assert np.allclose(views[gathers], 64 * host.GATHER_VIEW_FRACTION)
    assert np.count_nonzero(views) == len(gathers)
    _, issue = host.costs(low, a100, None)
    assert np.allclose(issue[gathers], per_op * (2 + 64 * host.GATHER_VIEW_FRACTION))
    loops = len(gathers) * 64 * host.GATHER_VIEW_FRACTION * per_op
    import unittest.mock as mock
    with mock.patch.object(host, "GATHER_VIEW_FRACTION", 0.0):
        without = run(64).step_time_s
    assert 0 < r.step_time_s - without <= loops * (1 + 1e-9)
    with mock.patch.object(host, "GATHER_VIEW_FRACTION", 0.0):
        without_small = run(16).step_time_s
    assert r.step_time_s - without > run(16).step_time_s - without_small
    assert not host.list_views(run(64, "deepspeed").lowered).any()


# -- ZeRO-3 of 2021: a list reduce-scatter per parameter, its inputs copied in -----------------

def test_deepspeed_2021_copies_each_gradient_into_its_list_reduce_scatter():
    """With contiguous_gradients on, v0.3.13 reduce-scatters each parameter's gradient on its own, as a list of dp views,
    which torch 1.8's ProcessGroupNCCL copies into a flat buffer first: before each bucket's
    reduce-scatters one copy op reading and writing the bucket's gradients, dp x (the bucket's
    parameter tensors) launches, on the data-parallel stream, each launch costing the host a
    C++ dispatch; then one reduce-scatter per parameter tensor, the bucket's bytes split among
    them. Today's coordinator: one reduce-scatter a bucket, no copies."""
    from hardware_specs.loader import load_device
    from simulator import Plan, simulate
    from simulator.cost import host
    from simulator.graph.lower import COLLECTIVE_FNS
    from simulator.graph.op import Phase
    from simulator.parallel.data import NCCL_COPY_IN
    from simulator.plan.parallel import ParallelPlan
    from simulator.schedule.stage import streams
    from workloads.transformer import TransformerConfig

    work = TransformerConfig("small", layers=4, hidden=1024, heads=8, vocab=8192, seq_len=1024)
    a100, dp = "a100-sxm4-80gb", 16

    def run(sharding, **kw):
        if sharding == "deepspeed-2021":
            kw = {"zero_contiguous_gradients": True, **kw}
        return simulate(work, a100, Plan(micro_batch=1, global_batch=dp), parallel=ParallelPlan(
            dp=dp, zero=3, sharding=sharding, comm_interference=False, **kw))

    r = run("deepspeed-2021")
    low = r.lowered
    scatters = np.flatnonzero(low.collective == COLLECTIVE_FNS.index("reduce_scatter"))
    copies = np.flatnonzero(low.fn == NCCL_COPY_IN)
    updates = np.flatnonzero(low.phase == int(Phase.OPTIMIZER))
    # SMALL's gradients fit one reduce_bucket_size bucket: one copy, then a reduce-scatter per
    # parameter tensor, the bucket's bytes split among them
    assert len(copies) == 1 and len(scatters) == low.tensors[updates].sum() > 1
    assert np.all(streams(low)[copies] == 2)
    assert low.tensors[copies].sum() == dp * low.tensors[updates].sum()
    assert low.bytes_read[scatters].sum() == low.bytes_read[copies].sum() \
        == low.bytes_written[copies].sum()
    assert r.times["start_s"][scatters].min() >= r.times["end_s"][copies].max() - 1e-12
    device = load_device(a100)
    overhead, issue = host.costs(low, device, None)
    assert np.allclose(overhead[copies], low.tensors[copies] * device.op_overhead_s)
    # each copy a C++ dispatch, and before them the Python loop's view per rank and tensor
    assert np.allclose(issue[copies], low.tensors[copies] * (host.COMPILED_HOST_FRACTION
                                                             + host.SCATTER_VIEW_FRACTION)
                       * host.host_per_op(device))
    today = run("deepspeed")
    assert not np.any(today.lowered.fn == NCCL_COPY_IN)
    assert np.sum(today.lowered.collective == COLLECTIVE_FNS.index("reduce_scatter")) == 1
    # a bucket per layer (reduce_bucket_size below a layer): a copy per bucket, the same
    # launches, reduce-scatters and bytes in all
    many = run("deepspeed-2021", zero_reduce_bucket=1).lowered
    mine = many.fn == NCCL_COPY_IN
    theirs = many.collective == COLLECTIVE_FNS.index("reduce_scatter")
    assert mine.sum() == work.layers + 1
    assert theirs.sum() == len(scatters)
    assert many.tensors[mine].sum() == low.tensors[copies].sum()
    assert many.bytes_read[theirs].sum() == low.bytes_read[scatters].sum()


def test_deepspeed_2021_flattens_all_reduces_and_copies_back_by_default():
    """v0.3.13's ZeRO-3 default, contiguous_gradients off: each bucket flattened and divided
    (two passes over its gradients), all-reduced whole (``allreduce_bucket`` forces an
    all-reduce), copied back (one pass), all on the data-parallel stream; the updates wait
    for the copy back; no list reduce-scatter, no copies in."""
    from simulator import Plan, simulate
    from simulator.graph.lower import COLLECTIVE_FNS
    from simulator.graph.op import Phase
    from simulator.parallel.data import FLAT_COPY, NCCL_COPY_IN
    from simulator.plan.parallel import ParallelPlan
    from simulator.schedule.stage import streams
    from workloads.transformer import TransformerConfig

    work = TransformerConfig("small", layers=4, hidden=1024, heads=8, vocab=8192, seq_len=1024)
    r = simulate(work, "a100-sxm4-80gb", Plan(micro_batch=1, global_batch=16),
                 parallel=ParallelPlan(dp=16, zero=3, sharding="deepspeed-2021",
                                       zero_reduce_bucket=1, comm_interference=False))
    low, start, end = r.lowered, r.times["start_s"], r.times["end_s"]
    assert not np.any(low.fn == NCCL_COPY_IN)
    assert not np.any(low.collective == COLLECTIVE_FNS.index("reduce_scatter"))
    reduce = np.flatnonzero((low.collective == COLLECTIVE_FNS.index("all_reduce"))
                            & (low.phase == int(Phase.BACKWARD)))
    assert len(reduce) == work.layers + 1   # a bucket per layer's update
    updates = np.flatnonzero(low.phase == int(Phase.OPTIMIZER))
    for i in reduce:
        inputs = low.indices[low.indptr[i]:low.indptr[i + 1]]
        before = [int(j) for j in inputs if low.fn[j] == FLAT_COPY]
        assert len(before) == 1
        assert low.bytes_read[before[0]] == low.bytes_written[before[0]] == 2 * low.bytes_read[i]
        assert end[before[0]] <= start[i] + 1e-12
        after = [j for j in np.flatnonzero(low.fn == FLAT_COPY)
                 if i in low.indices[low.indptr[j]:low.indptr[j + 1]]]
        assert len(after) == 1
        assert low.bytes_read[after[0]] == low.bytes_read[i]
        assert start[after[0]] >= end[i] - 1e-12
        assert all(start[u] >= end[after[0]] - 1e-12 for u in updates
                   if after[0] in low.indices[low.indptr[u]:low.indptr[u + 1]])
    copies = np.flatnonzero(low.fn == FLAT_COPY)
    assert len(copies) == 2 * len(reduce) and np.all(streams(low)[copies] == 2)


# -- the pipeline engine's ReduceGrads, one stage or more -----------------------------------------

def test_deepspeeds_engine_reduces_after_the_backward_even_with_one_stage():
    """GPT-NeoX runs DeepSpeed's PipelineEngine at pipe-parallel-size 1: the gradients are
    reduced by its ReduceGrads instruction after the last backward, however many buckets;
    before v0.4.0 (``deepspeed-2021``) that instruction all-reduces every gradient with the
    engine's buffered_allreduce_fallback at ZeRO 1 too (flatten, all-reduce, copy back), where
    today's engine leaves ZeRO 1 to its optimizer's reduce-scatter. Megatron-LM's schedules
    with overlap issue a full bucket during the backward."""
    from simulator import Plan, simulate
    from simulator.graph.collective import Axis
    from simulator.graph.lower import COLLECTIVE_FNS
    from simulator.graph.op import OpKind, Phase
    from simulator.parallel.data import FLAT_COPY
    from simulator.plan.parallel import ParallelPlan
    from simulator.schedule.stage import streams
    from workloads.transformer import TransformerConfig

    work = TransformerConfig("small", layers=4, hidden=1024, heads=8, vocab=8192, seq_len=1024)

    def run(engine, sharding):
        return simulate(work, "a100-sxm4-80gb", Plan(micro_batch=1, global_batch=16),
                        parallel=ParallelPlan(dp=16, zero=1, sharding=sharding,
                                              pipeline_engine=engine, zero_reduce_bucket=1,
                                              overlap_grad_reduce=True,
                                              comm_interference=False))

    def reductions(r):
        low = r.lowered
        data = (low.axis == int(Axis.DATA)) & (low.kind == OpKind.COLLECTIVE)
        kinds = {COLLECTIVE_FNS[c] for c in low.collective[data & (low.phase != int(
            Phase.OPTIMIZER))] if c >= 0}
        backward = (low.phase == int(Phase.BACKWARD)) & (streams(low) == 0)
        first = r.times["start_s"][np.flatnonzero(data)].min()
        return kinds, first >= r.times["end_s"][backward].max() - 1e-12, low

    kinds, after, low = reductions(run("deepspeed", "deepspeed-2021"))
    assert "all_reduce" in kinds and "reduce_scatter" not in kinds and after
    assert np.sum(low.fn == FLAT_COPY) == 2 * np.sum(
        (low.collective == COLLECTIVE_FNS.index("all_reduce")) & (low.axis == int(Axis.DATA)))
    kinds, after, low = reductions(run("deepspeed", "deepspeed"))
    assert "reduce_scatter" in kinds and after and not np.any(low.fn == FLAT_COPY)
    kinds, after, low = reductions(run("megatron", "deepspeed"))
    assert "reduce_scatter" in kinds and not after


def _engine_run(zero, sharding, engine="megatron", **kw):
    from simulator import Plan, simulate
    from simulator.plan.parallel import ParallelPlan
    from workloads.transformer import TransformerConfig

    work = TransformerConfig("small", layers=4, hidden=1024, heads=8, vocab=8192, seq_len=1024)
    return simulate(work, "a100-sxm4-80gb", Plan(micro_batch=1, global_batch=16),
                    parallel=ParallelPlan(dp=16, zero=zero, sharding=sharding,
                                          pipeline_engine=engine, comm_interference=False, **kw))


def test_the_plain_engine_all_reduces_flat_after_the_backward_at_zero_0():
    """DeepSpeed's engine without a pipeline, ZeRO 0 (v0.3.13 and DeeperSpeed eb7f5cff
    engine.py ``backward`` -> ``allreduce_gradients`` -> ``buffered_allreduce_fallback``):
    after the backward, in buckets of 5e8 elements (``MEMORY_OPT_ALLREDUCE_SIZE``, not
    ``reduce_bucket_size``: one bucket for this model even at zero_reduce_bucket = 1), each
    flattened (1 pass), all-reduced, then scaled by 1 / ranks and copied back (2 passes:
    ``allreduce_bucket``'s postscale ``mul_``, ``allreduce_and_copy``)."""
    from simulator.graph.collective import Axis
    from simulator.graph.lower import COLLECTIVE_FNS
    from simulator.graph.op import OpKind, Phase
    from simulator.parallel.data import FLAT_COPY
    from simulator.schedule.stage import streams

    for sharding in ("deepspeed", "deepspeed-2021"):
        r = _engine_run(0, sharding, zero_reduce_bucket=1, overlap_grad_reduce=True)
        low, start, end = r.lowered, r.times["start_s"], r.times["end_s"]
        data = np.flatnonzero((low.axis == int(Axis.DATA)) & (low.kind == OpKind.COLLECTIVE)
                              & (low.collective == COLLECTIVE_FNS.index("all_reduce")))
        assert len(data) == 1, sharding
        i = data[0]
        backward = (low.phase == int(Phase.BACKWARD)) & (streams(low) == 0)
        assert start[i] >= end[backward].max() - 1e-12
        copies = np.flatnonzero(low.fn == FLAT_COPY)
        before = [j for j in copies if end[j] <= start[i] + 1e-12]
        after = [j for j in copies if start[j] >= end[i] - 1e-12]
        assert len(before) == len(after) == 1
        assert low.bytes_read[before[0]] == low.bytes_read[i]
        assert low.bytes_read[after[0]] == 2 * low.bytes_read[i]


def test_the_pipeline_engine_buckets_by_memory_opt_allreduce_size():
    """ReduceGrads calls buffered_allreduce_fallback(elements_per_buffer=
    MEMORY_OPT_ALLREDUCE_SIZE) (DeeperSpeed eb7f5cff pipe/engine.py l.241): ZeRO's
    reduce_bucket_size does not split it."""
    from simulator.graph.collective import Axis
    from simulator.graph.lower import COLLECTIVE_FNS

    low = _engine_run(1, "deepspeed-2021", "deepspeed", zero_reduce_bucket=1).lowered
    reduce = (low.axis == int(Axis.DATA)) & (low.collective == COLLECTIVE_FNS.index("all_reduce"))
    assert reduce.sum() == 1


@pytest.mark.parametrize("precision, fp32_grads, reduction", [
    ("bf16", True, "all_reduce"), ("bf16", False, "reduce_scatter"),
    ("fp16", True, "reduce_scatter")])
def test_the_pipeline_engines_bf16_optimizer_all_reduces_fp32_gradients(precision, fp32_grads,
                                                                       reduction):
    """bf16 with fp32 gradient accumulation under DeepSpeed's pipeline engine is its
    BF16_Optimizer (microsoft/DeepSpeed 56c522386, 2022-04-19, "bf16+pipeline parallelism"):
    its fp32 master weights and Adam states sharded over the data-parallel ranks (ZeRO 1: the
    bf16 weights all-gathered after the update, ``all_gather_dp_groups``), but ReduceGrads
    all-reduces every fp32 gradient, flat (``_bf16_reduce_grads`` ->
    ``buffered_allreduce_fallback``): twice a reduce-scatter's traffic. Other formats at ZeRO 1
    keep the ZeRO optimizer's reduce-scatter."""
    from simulator import Plan, simulate
    from simulator.graph.collective import Axis
    from simulator.graph.lower import COLLECTIVE_FNS
    from simulator.graph.op import OpKind
    from simulator.parallel.data import FLAT_COPY
    from simulator.plan.parallel import ParallelPlan
    from workloads.transformer import TransformerConfig

    work = TransformerConfig("small", layers=4, hidden=1024, heads=8, vocab=8192, seq_len=1024)
    r = simulate(work, "a100-sxm4-80gb",
                 Plan(micro_batch=1, global_batch=32, precision=precision, fp32_grads=fp32_grads),
                 parallel=ParallelPlan(dp=8, pp=2, zero=1, sharding="deepspeed",
                                       pipeline_engine="deepspeed", comm_interference=False))
    low = r.lowered
    data = (low.axis == int(Axis.DATA)) & (low.kind == OpKind.COLLECTIVE)
    kinds = {COLLECTIVE_FNS[c] for c in low.collective[data] if c >= 0}
    assert reduction in kinds and kinds - {reduction} == {"all_gather"}
    reduced = data & (low.collective == COLLECTIVE_FNS.index(reduction))
    gathered = data & (low.collective == COLLECTIVE_FNS.index("all_gather"))
    grad_bytes = 4 if fp32_grads else 2
    # every parameter's gradient reduced whole (all-reduce) or its 1/8 kept (reduce-scatter);
    # the bf16 / fp16 weights gathered back from their 1/8 shards
    assert low.bytes_read[reduced].sum() == grad_bytes * low.bytes_written[gathered].sum() / 2
    out = low.bytes_written[reduced].sum() / low.bytes_read[reduced].sum()
    assert out == pytest.approx(1.0 if reduction == "all_reduce" else 1 / 8, rel=1e-6)
    assert np.any(low.fn == FLAT_COPY) == (reduction == "all_reduce")


@pytest.mark.parametrize("zero, sharding", [(2, "deepspeed"), (3, "deepspeed-2021"),
                                            (0, "fsdp"), (1, "megatron")])
def test_the_pipeline_engine_refuses_zero_2_3_and_other_libraries(zero, sharding):
    """DeepSpeed's PipelineEngine asserts "ZeRO-2 and ZeRO-3 are incompatible with pipeline
    parallelism" (pipe/engine.py) and runs DeepSpeed's own ZeRO: one line, exit 2."""
    from simulator.errors import PlanError
    from tests.test_cli import hwsim

    with pytest.raises(PlanError, match="pipeline_engine = deepspeed"):
        _engine_run(zero, sharding, "deepspeed")
    proc = hwsim("predict", "gpt2-small", "--device", "a100", "--num-devices", "8",
                 "--zero", str(zero), "--sharding", sharding, "--pipeline-engine", "deepspeed")
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_the_pythia_rows_notes_say_the_gradients_are_reduced_after_the_backward():
    """The eight Pythia rows run DeepSpeed's pipeline engine (ReduceGrads after the
    backward): their notes must not also say the gradients are reduced during it."""
    from benchmarks.validation_report import load_rows

    rows = [row for row in load_rows() if row["run_id"].startswith("pythia-")]
    assert len(rows) == 8
    for row in rows:
        assert row["pipeline_engine"] == "deepspeed", row["run_id"]
        assert "ReduceGrads all-reduces every gradient after the backward" in row["notes"]
        assert "during the backward" not in row["notes"], row["run_id"]
