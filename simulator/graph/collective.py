"""Collectives as graph records: which collective (``Collective``), on which parallel axis
(``Axis``), the op that runs one (``collective``), each one's backward (``ADJOINT``) and the
all-gather that reassembles a message split over the tensor-parallel ranks (``reassembly``).

Counting only: ``simulator.cost.collectives`` prices them on a cluster's networks.
"""
from __future__ import annotations

from enum import Enum, IntEnum

from simulator.graph.op import Op, OpKind, Phase


class Collective(str, Enum):
    ALL_REDUCE = "all_reduce"
    ALL_GATHER = "all_gather"
    REDUCE_SCATTER = "reduce_scatter"
    ALL_TO_ALL = "all_to_all"
    SEND_RECV = "send_recv"


class Axis(IntEnum):
    """The parallel dimension a collective runs over: each has its own communicator (and so its
    own stream) in Megatron-LM and PyTorch. The integer is the code the engine sees."""

    NONE = 0
    TENSOR = 1    # tensor / sequence parallel ranks (one node)
    PIPELINE = 2  # neighbouring pipeline stages (send / recv)
    DATA = 3      # data-parallel replicas (gradient reduction, ZeRO gathers)
    CONTEXT = 4   # context-parallel ranks (the all-gather of keys and values)
    EXPERT = 5    # expert-parallel ranks (a mixture of experts' token all-to-all)


#: The backward of each forward collective (Shoeybi et al. 2019, sec. 3, f and g; Korthikanti
#: et al. 2022, sec. 4.2.2, g and g-bar): None passes the gradient through without a kernel.
#: ``split`` keeps this rank's 1/group of a whole tensor, a slice with no traffic forward
#: (Megatron's ``scatter_to_sequence_parallel_region``), its gradient all-gathered backward.
ADJOINT = {"all_reduce": None, "identity": "all_reduce",
           "all_gather": "reduce_scatter", "reduce_scatter": "all_gather",
           "send_recv": "send_recv", "all_to_all": "all_to_all", "split": "all_gather"}


def collective(name: str, fn: str, nbytes_read: int, nbytes_written: int, out_bytes: int,
               group: int, axis: Axis, template: Op, phase: Phase = Phase.FORWARD,
               local: int = 0, **extra: int) -> Op:
    """A collective op of ``group`` devices on ``axis``'s communicator. ``fn`` is a
    ``Collective`` value (or ``identity`` or ``split``: no traffic forward); the
    buffer NCCL counts is the larger of the bytes read and written."""
    facts = (("group", group), ("local", local), ("axis", int(axis)), *extra.items())
    return Op(name=name, kind=OpKind.COLLECTIVE, phase=phase, dtype=template.dtype, fn=fn,
              bytes_read=nbytes_read, bytes_written=nbytes_written, out_bytes=out_bytes,
              layer=template.layer, block=template.block, extra=facts)


def reassembly(received: str, size: int, split: int, template: Op,
               phase: Phase = Phase.FORWARD) -> Op:
    """The all-gather that reassembles, inside the receiving node, a message of ``size`` bytes
    that arrived as op ``received`` in ``split`` pieces, one per tensor-parallel rank (an
    activation here; its gradient in ``simulator.training.backward``)."""
    return collective(f"{received}.tp_all_gather", "all_gather", size // split, size, size,
                      split, Axis.TENSOR, template, phase=phase, scatter=split)


__all__ = ["ADJOINT", "Axis", "Collective", "collective", "reassembly"]
