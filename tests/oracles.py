"""Closed forms the simulator does not run, kept as oracles that its graphs are checked against
(tests/test_parallel.py): the collectives Megatron-LM and ZeRO issue, and the pipeline message.

The simulator derives every collective from the graph (``simulator.parallel``); these formulas
count the same traffic from the papers, so a graph that drifts from them fails a test.
"""
from __future__ import annotations

from simulator.errors import PlanError
from simulator.graph.collective import Collective

Transfer = tuple[str, Collective, float]     # (phase, collective, bytes of the whole buffer)


def tensor_parallel_collectives(tokens: int, hidden: int, activation_bytes: float,
                                sequence_parallel: bool = False) -> list[Transfer]:
    """Collectives among the tp ranks for one transformer layer and one micro-batch.

    Megatron (Shoeybi et al. 2019, sec. 3): an all-reduce of the tokens x hidden activation
    after attention and after the MLP in the forward, and two in the backward. Sequence
    parallel (Korthikanti et al. 2022, sec. 4.2.2): each becomes an all-gather before and a
    reduce-scatter after the block, forward and backward.
    """
    nbytes = tokens * hidden * activation_bytes
    if not sequence_parallel:
        return [("forward", Collective.ALL_REDUCE, nbytes)] * 2 + \
               [("backward", Collective.ALL_REDUCE, nbytes)] * 2
    block = [Collective.ALL_GATHER, Collective.REDUCE_SCATTER]
    return [(phase, kind, nbytes) for phase in ("forward", "backward")
            for _ in range(2) for kind in block]


def data_parallel_collectives(params: float, zero: int, weight_bytes: float = 2,
                              grad_bytes: float = 2) -> list[Transfer]:
    """Collectives among the dp ranks for one step (Rajbhandari et al. 2020, sec. 7).

    Stage 0: all-reduce the gradients. Stages 1-2: reduce-scatter the gradients, all-gather the
    updated weights (the same 2 Psi as an all-reduce). Stage 3 / FSDP full shard: all-gather
    the weights in the forward and again in the backward, reduce-scatter the gradients (3 Psi).
    """
    grads, weights = params * grad_bytes, params * weight_bytes
    if zero == 0:
        return [("backward", Collective.ALL_REDUCE, grads)]
    if zero in (1, 2):
        return [("backward", Collective.REDUCE_SCATTER, grads),
                ("optimizer", Collective.ALL_GATHER, weights)]
    if zero == 3:
        return [("forward", Collective.ALL_GATHER, weights),
                ("backward", Collective.ALL_GATHER, weights),
                ("backward", Collective.REDUCE_SCATTER, grads)]
    raise PlanError(f"zero = {zero!r} must be a ZeRO stage 0, 1, 2 or 3")


def pipeline_message_bytes(tokens: int, hidden: int, activation_bytes: float,
                           tp: int = 1) -> float:
    """Bytes one tp rank sends to the next stage per micro-batch (the activation forward, its
    gradient backward): tokens x hidden, split over the tp ranks by the scatter/gather
    optimisation (Narayanan et al. 2021, sec. 4.1)."""
    return tokens * hidden * activation_bytes / tp
