"""DeepSpeed's partition_activations (simulator.parallel.tensor.gather_partitioned_checkpoints):
each checkpointed layer's input kept 1/tp per tensor-parallel rank and all-gathered before the
layer is recomputed."""
import pytest

from simulator import simulate
from simulator.errors import PlanError
from workloads.transformer import TransformerConfig

LAYERS, HIDDEN, SEQ, BATCH = 3, 1024, 256, 2
MODEL = TransformerConfig("m", LAYERS, HIDDEN, 8, vocab=2000, seq_len=SEQ)


def _run(tp=2, **fields):
    return simulate(MODEL, "dgx-a100", micro_batch=BATCH, tp=tp, dp=8 // tp,
                    recompute=fields.pop("recompute", "full"), **fields)


@pytest.mark.parametrize("tp", [2, 4])
def test_one_gather_per_recomputed_layer(tp):
    """Each layer's input (tokens x hidden x 2 bytes) gathered from its 1/tp pieces."""
    ops = _run(tp, partition_activations=True).ops
    gathers = ops[ops.name.str.startswith("checkpoint_all_gather")]
    size = BATCH * SEQ * HIDDEN * 2
    assert len(gathers) == LAYERS
    assert set(gathers.bytes) == {size // tp + size}
    assert set(gathers.phase) == {"recompute"}


def test_off_by_default():
    ops = _run().ops
    assert not ops.name.str.startswith("checkpoint_all_gather").any()


def test_gathers_never_speed_a_step_up():
    assert _run(partition_activations=True).step_time_s > _run().step_time_s


@pytest.mark.parametrize("tp, recompute, needs", [(1, "full", "tp > 1"),
                                                  (2, "none", "recompute = full, not none"),
                                                  (2, "selective", "recompute = full")])
def test_needs_tensor_parallel_checkpoints(tp, recompute, needs):
    with pytest.raises(PlanError, match=f"partition_activations.*{needs}"):
        _run(tp, recompute=recompute, partition_activations=True)
