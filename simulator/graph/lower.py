"""Lowering: an ``OpGraph`` to flat NumPy arrays, the only hand-off into the engine.

The engine never sees networkx or ``Op`` records (DESIGN.md, data flow): it sees one array per
fact, indexed by an op's position in the graph's deterministic topological order, and the
predecessors in CSR form. ``lower`` is one Python pass over the ops that fills lists, then one
``np.array`` per field, so a 50k-op GPT-3 training graph lowers in a fraction of a second.

Dtypes: counts (``flops``, ``bytes_read``, ``bytes_written``, ``out_bytes``, ``params``,
``tensors``, ``edge_bytes``) and shapes (``m``, ``n``, ``k``, ``batch``, ``layer``) are int64,
so they stay exact (DESIGN.md: FLOP counts are exact); pricing converts to float64. ``kind``,
``phase``, ``task`` and ``dtype`` are int8 codes of ``OpKind``, ``Phase``, ``Task`` and
``DType``. Every array is read-only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.errors import WorkloadError, shown
from simulator.graph.collective import Collective
from simulator.graph.opgraph import OpGraph

#: Edge attribute set by ``simulator.training.backward``: False when the reader needs only the producer's
#: kept bytes (mask, statistics), not its output. Absent means True.
READS_OUTPUT = "reads_output"
#: The fact of an op whose output a returned key/value cache holds to the forward's end
#: (Hugging Face GPT-2's ``present``: ``TransformerConfig.kv_cache_views``); ``Lowered.kv_cache``.
KV_CACHE = "kv_cache"

# Op fields copied one-to-one into an array, and the array's dtype.
_OP_FIELDS = {
    "kind": np.int8, "phase": np.int8, "task": np.int8, "dtype": np.int8,
    "flops": np.int64, "vector_flops": np.int64, "bytes_read": np.int64, "bytes_written": np.int64,
    "out_bytes": np.int64, "params": np.int64, "tensors": np.int64,
    "m": np.int64, "n": np.int64, "k": np.int64, "batch": np.int64, "layer": np.int64,
    "causal": np.int8,
}
# Facts from ``Op.extra`` a collective carries, their array dtype and the value when absent:
# ``group`` devices taking part, ``local`` of them per node (0: as many as fit), ``axis`` the
# parallel dimension (``simulator.graph.collective.Axis``) whose communicator runs it.
# ``load``: a mixture of experts' grouped GEMM, the busiest expert's work over the mean, per
# mille (0: none; ``workloads.moe``). ``sync``: the host's synchronisations with the device
# before issuing the op in the forward (0: none; 1 before a dropless MoE dispatch,
# ``simulator.parallel.expert``: its split sizes read on the host; 2 before each of
# flash-attn's unpad gathers, ``simulator.training.qkv.UNPAD_SYNCS``;
# ``simulator.cost.host.sync_calls``). ``userbuffers``: 1 on a tensor-parallel collective
# TransformerEngine's userbuffers overlap with its GEMM (``ParallelPlan.tp_comm_overlap``,
# ``simulator.cost.overlap``; 0: none). ``ring``: context parallelism run as a ring of
# attention steps (``simulator.parallel.context``, ``simulator.cost.ring``: 1
# TransformerEngine's p2p, 2 PyTorch's context_parallel; 0: none), on the fused attention ops
# and the key/value collectives, and ``ring_steps`` its cp steps. ``channels``: a batch norm's
# channels, forward and backward (``simulator.cost.roofline``: NHWC figures from 64 up; 0:
# not a batch norm). ``onednn``: a convolution PyTorch's CPU build runs on oneDNN,
# ``simulator.graph.conv_backend`` bits (0: not), and ``reorder_input`` /
# ``reorder_output`` its input's and output's elements, which oneDNN copies to and from its
# blocked layout in each pass (``simulator.cost.roofline.reorder_seconds``). ``vectors``: the
# 1-D tensors among an Adafactor update's ``tensors`` (``simulator.cost.host.VECTOR_LINES``).
_EXTRA_FIELDS = {"group": (np.int64, 1), "local": (np.int64, 0), "axis": (np.int8, 0),
                 "load": (np.int64, 0), "sync": (np.int32, 0), "userbuffers": (np.int8, 0),
                 "ring": (np.int8, 0), "ring_steps": (np.int64, 0), "channels": (np.int64, 0),
                 "onednn": (np.int8, 0), "reorder_input": (np.int64, 0),
                 "reorder_output": (np.int64, 0), KV_CACHE: (np.int8, 0),
                 "vectors": (np.int64, 0)}
#: ``Lowered.collective`` codes: the index of an op's ``fn`` in this tuple, -1 for any other fn.
COLLECTIVE_FNS = tuple(kind.value for kind in Collective)


@dataclass(frozen=True, eq=False)
class Lowered:
    """One graph as arrays in topological order (position ``i`` is op ``names[i]``).

    The predecessors of op ``i`` are ``indices[indptr[i]:indptr[i + 1]]`` (positions, in input
    order, each < ``i``); ``edge_bytes`` holds the tensor bytes on the same edges and
    ``edge_output`` whether the reader needs the producer's output (False: only what the producer
    keeps besides, its ``keep_bytes``; the graph's ``reads_output`` edge attribute, default True;
    an ordering-only edge of 0 bytes reads nothing).
    """

    names: list[str]
    indptr: np.ndarray      # int64, n + 1
    indices: np.ndarray     # int64, n_edges: predecessor positions
    edge_bytes: np.ndarray  # int64, n_edges
    edge_output: np.ndarray  # bool, n_edges: the edge reads the producer's output
    kind: np.ndarray        # int8, OpKind codes
    phase: np.ndarray       # int8, Phase codes
    task: np.ndarray        # int8, Task codes
    dtype: np.ndarray       # int8, DType codes
    flops: np.ndarray       # int64
    vector_flops: np.ndarray  # int64, vector-unit work inside a fused tensor op
    bytes_read: np.ndarray  # int64
    bytes_written: np.ndarray  # int64
    out_bytes: np.ndarray   # int64
    keep_bytes: np.ndarray  # int64, mask_bytes + stats_bytes: kept for the backward besides
    params: np.ndarray      # int64, parameter elements owned (or updated, by an update)
    tensors: np.ndarray     # int64, the parameter tensors that hold them
    m: np.ndarray           # int64
    n: np.ndarray           # int64
    k: np.ndarray           # int64
    batch: np.ndarray       # int64
    layer: np.ndarray       # int64, -1 outside any layer
    causal: np.ndarray      # int8, 1 for attention under a causal mask
    group: np.ndarray = None       # int64, devices in a collective's group (1 otherwise)
    local: np.ndarray = None       # int64, of them per node (0: as many as fit in one)
    axis: np.ndarray = None        # int8, ``simulator.graph.collective.Axis`` code of a collective
    collective: np.ndarray = None  # int8, index in ``COLLECTIVE_FNS``, -1 if not a collective
    fn: np.ndarray = None          # object (str), ``Op.fn``: per-function rates look it up
    load: np.ndarray = None        # int64, an expert GEMM's busiest load / mean, per mille
    sync: np.ndarray = None        # int32, the host's synchronisations before it in the forward
    userbuffers: np.ndarray = None  # int8, 1: a collective overlapped with its GEMM
    ring: np.ndarray = None         # int8, context parallel's ring (simulator.cost.ring), 0: none
    ring_steps: np.ndarray = None   # int64, the ring's cp steps (0: none)
    channels: np.ndarray = None     # int64, a batch norm's channels (0: not a batch norm)
    onednn: np.ndarray = None       # int8, conv_backend bits: a convolution run on oneDNN
    reorder_input: np.ndarray = None   # int64, a convolution's input elements (oneDNN copies)
    reorder_output: np.ndarray = None  # int64, its output elements
    kv_cache: np.ndarray = None     # int8, 1: its output held to the forward's end (KV_CACHE)
    vectors: np.ndarray = None      # int64, an Adafactor update's 1-D tensors (of ``tensors``)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def n_edges(self) -> int:
        return int(self.indptr[-1])

    @property
    def nbytes(self) -> np.ndarray:
        """Bytes each op moves (read + written), int64."""
        return self.bytes_read + self.bytes_written

    def preds(self, i: int) -> np.ndarray:
        """Positions of op ``i``'s predecessors, in input order."""
        return self.indices[self.indptr[i]:self.indptr[i + 1]]

    def mask(self, column: str, code: int) -> np.ndarray:
        """Read-only bool per op: ``column`` (``"kind"``, ``"phase"``, ``"task"``, ``"dtype"``)
        equals ``code``, computed once per graph. A calibration's fit prices each of its
        micro-graphs tens of thousands of times, and numpy compares an int8 column with an
        ``IntEnum`` member through its generic path (about 5 us a comparison on the 2-core
        machine, Python 3.11), more than the graph's own arithmetic."""
        masks = self.__dict__.setdefault("_masks", {})   # frozen: the instance dict itself
        key = (column, int(code))
        found = masks.get(key)
        if found is None:
            found = getattr(self, column) == key[1]
            found.setflags(write=False)
            masks[key] = found
        return found

    def among(self, column: str, wanted) -> np.ndarray:
        """Read-only bool per op: ``column`` equals one of the few ``wanted`` (``members``),
        computed once per graph and ``wanted``, as ``mask`` is: ``members`` compares a column
        once per value, and the ``fn`` column's strings one element at a time."""
        masks = self.__dict__.setdefault("_masks", {})   # frozen: the instance dict itself
        key = (column, tuple(wanted))
        found = masks.get(key)
        if found is None:
            found = members(getattr(self, column), key[1])
            found.setflags(write=False)
            masks[key] = found
        return found

    def position(self) -> dict[str, int]:
        """Name -> position (built on demand; the engine itself never needs it)."""
        return {name: i for i, name in enumerate(self.names)}


def members(values: np.ndarray, wanted) -> np.ndarray:
    """Bool per element of ``values``: it equals one of the few ``wanted`` (codes of an int8
    column, or ``fn`` strings). ``np.isin``'s result, without its sort: a graph of tens of ops
    is priced tens of thousands of times by a calibration's fit, where ``np.isin``'s fixed
    cost (20-60 us a call) was a third of the fit's time (2026-12-06, the 2-core development
    machine). For a long ``wanted`` (a graph's layers) use ``np.isin``."""
    out = np.zeros(len(values), dtype=bool)
    for value in wanted:
        out |= values == (int(value) if isinstance(value, int) else value)  # an IntEnum: its int
    return out


#: The largest count (FLOPs, bytes, elements) of one op: sums of two stay exact in int64.
MAX_COUNT = 2**60


def _check_counts(columns: dict[str, list[int]], names: list[str]) -> None:
    """WorkloadError naming the op whose count is beyond ``MAX_COUNT`` (a model too large to
    count: hidden = 2**40 was an OverflowError)."""
    for field in ("flops", "vector_flops", "bytes_read", "bytes_written", "out_bytes", "params",
                  "m", "n", "k", "batch"):
        values = columns[field]
        if values and max(values) > MAX_COUNT:
            i = values.index(max(values))
            raise WorkloadError(f"op {shown(names[i])}: {field} = {values[i]:.3e} is beyond the "
                                f"{MAX_COUNT:.3e} hwsim counts in one op; use a smaller model, "
                                "batch or sequence")


def lower(graph: OpGraph) -> Lowered:
    """Flatten ``graph`` into a ``Lowered`` in ``graph.names()`` order."""
    names = graph.names()
    position = {name: i for i, name in enumerate(names)}
    nodes, pred = graph.nx._node, graph.nx._pred   # the views' own dicts (``OpGraph.names``)
    columns: dict[str, list[int]] = {field: [] for field in _OP_FIELDS}
    appenders = [(columns[field].append, field) for field in _OP_FIELDS]
    counts: list[int] = []
    indices: list[int] = []
    edge_bytes: list[int] = []
    edge_output: list[bool] = []
    keep_bytes: list[int] = []
    extras: dict[str, list[int]] = {field: [] for field in _EXTRA_FIELDS}
    collective: list[int] = []
    fns: list[str] = []
    codes = {fn: i for i, fn in enumerate(COLLECTIVE_FNS)}
    for name in names:
        op = nodes[name]["op"]
        for append, field in appenders:
            append(getattr(op, field))
        keep_bytes.append(op.mask_bytes + op.stats_bytes)
        facts = dict(op.extra) if op.extra else {}
        for field, (_, default) in _EXTRA_FIELDS.items():
            extras[field].append(facts.get(field, default))
        collective.append(codes.get(op.fn, -1))
        fns.append(op.fn)
        edges = sorted(pred[name].items(), key=lambda e: e[1]["index"])
        counts.append(len(edges))
        for src, data in edges:
            indices.append(position[src])
            edge_bytes.append(data["bytes"])
            edge_output.append(bool(data.get(READS_OUTPUT, True)) and data["bytes"] > 0)
    indptr = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum(np.asarray(counts, dtype=np.int64), out=indptr[1:])
    _check_counts(columns, names)
    arrays = {field: np.asarray(values, dtype=_OP_FIELDS[field])
              for field, values in columns.items()}
    arrays.update(indptr=indptr, indices=np.asarray(indices, dtype=np.int64),
                  edge_bytes=np.asarray(edge_bytes, dtype=np.int64),
                  edge_output=np.asarray(edge_output, dtype=np.bool_),
                  keep_bytes=np.asarray(keep_bytes, dtype=np.int64),
                  collective=np.asarray(collective, dtype=np.int8),
                  fn=np.asarray(fns, dtype=object))
    arrays.update({field: np.asarray(values, dtype=_EXTRA_FIELDS[field][0])
                   for field, values in extras.items()})
    for array in arrays.values():
        array.flags.writeable = False
    return Lowered(names=names, **arrays)


__all__ = ["Lowered", "lower", "members"]

