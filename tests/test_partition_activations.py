"""DeepSpeed's partition_activations (simulator.parallel.partitioned): each checkpointed layer's
input kept 1/tp per tensor-parallel rank, cloned in the forward, and filled, copied in,
all-gathered (NCCL's copy at tp = 1) and copied out before the layer is recomputed, as
DeepSpeed v0.3.15 (EleutherAI/DeeperSpeed eb7f5cff) runs it."""
import pytest

from simulator import simulate
from simulator.cli import main
from simulator.errors import PlanError
from simulator.parallel.partitioned import FN, regather_kernels
from workloads.transformer import TransformerConfig

LAYERS, HIDDEN, SEQ, BATCH = 3, 1024, 256, 2
MODEL = TransformerConfig("m", LAYERS, HIDDEN, 8, vocab=2000, seq_len=SEQ)
SIZE = BATCH * SEQ * HIDDEN * 2   # one layer's 16-bit input


def _run(tp=2, **fields):
    fields.setdefault("precision", "fp16")   # bf16 gathers in fp32 (test_bf16_gathers_in_fp32)
    if tp == 1:   # DeepSpeed's only at tp = 1 (test_tp1_needs_deepspeed)
        fields.setdefault("sharding", "deepspeed")
    return simulate(MODEL, "dgx-a100", micro_batch=BATCH, tp=tp, dp=8 // tp,
                    recompute=fields.pop("recompute", "full"), **fields)


def _kernels(ops, tag):
    return ops[ops.name.str.startswith(f"{FN}.{tag}:")]


@pytest.mark.parametrize("tp", [2, 4])
def test_one_gather_per_recomputed_layer(tp):
    """Each layer's input (tokens x hidden x 2 bytes) gathered from its 1/tp pieces."""
    ops = _run(tp, partition_activations=True).ops
    gathers = ops[ops.name.str.startswith("checkpoint_all_gather")]
    assert len(gathers) == LAYERS
    assert set(gathers.bytes) == {SIZE // tp + SIZE}
    assert set(gathers.phase) == {"recompute"}


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_copies_in_closed_form(tp):
    """Per layer: the forward's clone of the piece (S/tp read and written); the backward's
    zero-fill (S written), copy in (S/tp each way), copy out of the gathered list (S each way);
    at tp = 1 the one-rank all-gather is NCCL's device copy of S (read and written)."""
    ops = _run(tp, partition_activations=True).ops
    expected = {"clone": 2 * SIZE // tp, "fill": SIZE, "copy_in": 2 * SIZE // tp,
                "copy_out": 2 * SIZE}
    if tp == 1:
        expected["gather"] = 2 * SIZE
    for tag, nbytes in expected.items():
        kernels = _kernels(ops, tag)
        assert len(kernels) == LAYERS, tag
        assert set(kernels.bytes) == {nbytes}, tag
    assert set(_kernels(ops, "clone").phase) == {"forward"}
    assert set(_kernels(ops, "fill").phase) == {"recompute"}
    if tp > 1:
        assert _kernels(ops, "gather").empty   # the collective instead


def test_bf16_gathers_in_fp32_under_deeperspeed():
    """DeeperSpeed casts a bf16 input to fp32 before the gather and back after it (FP32_COMM):
    the gather and its copies out move twice the bytes. A bf16 step under --sharding
    deepspeed-2021 is taken for DeeperSpeed's; upstream DeepSpeed never casts."""
    kernels = {tag: (read, written) for tag, read, written in
               regather_kernels(SIZE, 2, wide=True)}
    assert kernels == {"fill": (0, SIZE), "copy_in": (SIZE // 2, SIZE // 2),
                       "cast_up": (SIZE, 2 * SIZE), "gather": (SIZE, 2 * SIZE),
                       "copy_out": (2 * SIZE, 2 * SIZE), "cast_down": (2 * SIZE, SIZE)}
    ops = _run(1, partition_activations=True, precision="bf16", sharding="deepspeed-2021").ops
    assert set(_kernels(ops, "cast_up").bytes) == {3 * SIZE}
    assert set(_kernels(ops, "gather").bytes) == {4 * SIZE}
    for fields in ({"precision": "fp16", "sharding": "deepspeed-2021"},
                   {"precision": "bf16"}):
        ops = _run(1, partition_activations=True, **fields).ops
        assert _kernels(ops, "cast_up").empty, fields
        assert set(_kernels(ops, "gather").bytes) == {2 * SIZE}, fields


def test_recomputation_waits_for_the_regather():
    """Each layer's recomputation starts after its copies out end; the forward's clone ends
    before the layer's first forward op starts."""
    ops = _run(2, partition_activations=True).ops.set_index("name")
    for layer in range(LAYERS):
        out = ops.loc[f"{FN}.copy_out:L{layer}"]
        recomputed = ops[(ops.phase == "recompute") & (ops.layer == layer)
                         & ~ops.index.str.startswith((FN, "checkpoint_all_gather"))]
        assert recomputed.start_s.min() >= out.end_s - 1e-12
        forward = ops[(ops.phase == "forward") & (ops.layer == layer)
                      & ~ops.index.str.startswith(FN)]
        assert forward.start_s.min() >= ops.loc[f"{FN}.clone:L{layer}"].end_s - 1e-12


def test_off_by_default():
    ops = _run().ops
    assert not ops.name.str.startswith(("checkpoint_all_gather", FN)).any()


@pytest.mark.parametrize("tp", [1, 2])
def test_copies_never_speed_a_step_up(tp):
    assert _run(tp, partition_activations=True).step_time_s > _run(tp).step_time_s


@pytest.mark.parametrize("recompute, needs", [("none", "recompute = full, not none"),
                                              ("selective", "recompute = full")])
def test_needs_full_recomputation(recompute, needs):
    with pytest.raises(PlanError, match=f"partition_activations.*{needs}"):
        _run(2, recompute=recompute, partition_activations=True)


@pytest.mark.parametrize("fields", [{}, {"sharding": "megatron"}])
def test_tp1_needs_deepspeed(fields, capsys):
    """At tp = 1 the copies are DeepSpeed's one-rank group's; Megatron-LM refuses distributing
    saved activations there (arguments.py line 1411 at d98e8a64dd)."""
    with pytest.raises(PlanError, match="tp = 1 is DeepSpeed's only.*--sharding deepspeed"):
        simulate(MODEL, "dgx-a100", micro_batch=BATCH, dp=8, recompute="full",
                 partition_activations=True, **fields)
    argv = ["predict", "gpt2", "--device", "h100-sxm5-80gb", "--recompute", "full",
            "--partition-activations"] + [a for k, v in fields.items() for a in (f"--{k}", v)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "partition_activations" in err


@pytest.mark.parametrize("fields", [{"sharding": "deepspeed"}, {"sharding": "deepspeed-2021"},
                                    {"sharding": "deepspeed", "pipeline_engine": "deepspeed"}])
def test_tp1_runs_under_deepspeed(fields):
    on = simulate(MODEL, "dgx-a100", micro_batch=BATCH, dp=8, recompute="full",
                  precision="fp16", partition_activations=True, **fields)
    assert not _kernels(on.ops, "gather").empty
