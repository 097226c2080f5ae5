"""Collective communication costed with the latency-bandwidth (alpha-beta) model. SI units.

``nbytes`` is always the size of the whole buffer, as NCCL counts it: the all-reduce buffer, the
all-gather output, the reduce-scatter input, the all-to-all input, the message of a send/recv.
A ``Network`` (``hardware_specs.cluster``) gives the bandwidth per device, per direction, and
the latency of one message step.

Sources:
- Thakur, Rabenseifner & Gropp 2005, "Optimization of Collective Communication Operations in
  MPICH" (IJHPCA 19(1)): ring all-gather (n-1) steps moving (n-1)/n of the data; recursive
  doubling / halving for all-gather and reduce-scatter in log2(n) steps, same bytes; pairwise
  exchange all-to-all in n-1 steps moving (n-1)/n of the data.
- Patarasuk & Yuan 2009, "Bandwidth optimal all-reduce algorithms for clusters of workstations"
  (JPDC 69(2)): ring all-reduce = reduce-scatter + all-gather, 2(n-1) steps moving 2(n-1)/n of
  the data per device, the lower bound on bytes.
- NCCL docs, "Performance" (nccl-tests doc/PERFORMANCE.md): bus bandwidth = algorithm bandwidth
  x 2(n-1)/n for all-reduce, x (n-1)/n for all-gather and reduce-scatter.
- NCCL 2.4 double binary trees (NVIDIA developer blog, "Massively Scale Your Deep Learning
  Training with NCCL 2.4", 2019): full bandwidth with logarithmic latency; NCCL's own model
  (src/graph/tuning.cc) gives the tree all-reduce half the ring's bus bandwidth per byte, i.e.
  2 x nbytes / bandwidth, and chooses the algorithm with the lower predicted time.
"""
from __future__ import annotations

import math
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from simulator.graph.collective import Collective

if TYPE_CHECKING:
    from hardware_specs.cluster import ClusterSpec


class Algorithm(str, Enum):
    RING = "ring"
    TREE = "tree"     # double binary tree (all-reduce), recursive doubling/halving (AG, RS)
    AUTO = "auto"     # what NCCL would pick: the faster of the two for an all-reduce, ring
                      # for all-gather and reduce-scatter (NCCL has no tree for them)


class Link(Protocol):
    """A network as collectives see it (``hardware_specs.cluster.Network``)."""

    latency_s: float

    @property
    def achieved_bytes_per_s(self) -> float: ...


def bytes_moved(kind: Collective, nbytes: float, n: int,
                algorithm: Algorithm = Algorithm.RING) -> float:
    """Bytes each device sends (= receives) for one collective among ``n`` devices.

    Ring all-reduce: 2(n-1)/n x nbytes (Patarasuk & Yuan 2009); all-gather, reduce-scatter and
    all-to-all: (n-1)/n x nbytes (Thakur et al. 2005); send/recv: nbytes. The tree all-reduce
    moves 2 x nbytes (NCCL's tree model). One device moves nothing.
    """
    kind, algorithm = Collective(kind), Algorithm(algorithm)
    _check(nbytes, n)
    if n == 1:
        return 0.0
    if kind is Collective.SEND_RECV:
        return float(nbytes)
    if kind is Collective.ALL_REDUCE:
        return 2.0 * nbytes if algorithm is Algorithm.TREE else 2.0 * (n - 1) / n * nbytes
    return (n - 1) / n * nbytes


def steps(kind: Collective, n: int, algorithm: Algorithm = Algorithm.RING) -> int:
    """Message steps of one collective, each paying the latency once (Thakur et al. 2005).

    Ring: 2(n-1) for all-reduce, n-1 for all-gather, reduce-scatter and all-to-all. Tree:
    2 ceil(log2 n) for all-reduce (up the tree, then down), ceil(log2 n) for all-gather and
    reduce-scatter; all-to-all stays pairwise (n-1). Send/recv: 1.
    """
    kind, algorithm = Collective(kind), Algorithm(algorithm)
    if n <= 1:
        return 0
    if kind is Collective.SEND_RECV:
        return 1
    if kind is Collective.ALL_TO_ALL:
        return n - 1
    factor = 2 if kind is Collective.ALL_REDUCE else 1
    if algorithm is Algorithm.TREE:
        return factor * math.ceil(math.log2(n))
    return factor * (n - 1)


def time_s(kind: Collective, nbytes: float, n: int, bandwidth_bytes_per_s: float,
           latency_s: float, algorithm: Algorithm = Algorithm.AUTO) -> float:
    """Seconds for one collective among ``n`` devices on one network: steps x latency +
    bytes moved / bandwidth. ``AUTO`` takes NCCL's choice: the faster of ring and tree for an
    all-reduce; the ring for all-gather and reduce-scatter, for which NCCL implements no tree
    ("the Tree algorithm implements multiple reduce/broadcast operations, so it doesn't apply
    to allgather/reducescatter", S. Jeaugey, NVIDIA/nccl issue #1473, 2024; its PAT algorithm
    of 2.23 covers only one GPU per node). ``TREE`` asks for recursive doubling / halving
    (MPI's) explicitly."""
    algorithm = Algorithm(algorithm)
    if bandwidth_bytes_per_s <= 0 or latency_s < 0:
        raise ValueError(f"bandwidth {bandwidth_bytes_per_s} must be > 0 and latency "
                         f"{latency_s} >= 0")
    if algorithm is Algorithm.AUTO:
        candidates = (Algorithm.RING, Algorithm.TREE) if Collective(kind) is \
            Collective.ALL_REDUCE else (Algorithm.RING,)
        return min(time_s(kind, nbytes, n, bandwidth_bytes_per_s, latency_s, a)
                   for a in candidates)
    moved = bytes_moved(kind, nbytes, n, algorithm)
    return steps(kind, n, algorithm) * latency_s + moved / bandwidth_bytes_per_s


def on(kind: Collective, nbytes: float, n: int, network: Link,
       algorithm: Algorithm = Algorithm.AUTO) -> float:
    """``time_s`` on a network at its achieved bandwidth."""
    return time_s(kind, nbytes, n, network.achieved_bytes_per_s, network.latency_s, algorithm)


def hierarchical_time_s(kind: Collective, nbytes: float, group_size: int, devices_per_node: int,
                        intra: Link, inter: Link | None,
                        algorithm: Algorithm = Algorithm.AUTO) -> float:
    """Seconds for a collective of ``group_size`` devices, ``devices_per_node`` of them in each
    node (the group's members per node, not the node's size), in phases:

    - all-reduce: intra reduce-scatter, inter all-reduce of the 1/devices_per_node shard each
      device holds (every device on its own NIC, in parallel), intra all-gather (the
      hierarchical scheme of NCCL's trees and of Thakur et al. 2005 sec. 4 for SMP clusters);
    - all-gather: inter all-gather of each device's shard, then intra all-gather;
      reduce-scatter the reverse;
    - all-to-all (pairwise exchange): the L-1 peers in the node over intra, the n-L in other
      nodes over inter, one after the other;
    - send/recv: inter when the group spans nodes.

    A group inside one node uses only the intra network.
    """
    kind = Collective(kind)
    _check(nbytes, group_size)
    local = min(devices_per_node, group_size)
    if local < 1 or group_size % local:
        raise ValueError(f"group of {group_size} is not a whole number of nodes of {local}")
    nodes = group_size // local
    if nodes == 1:
        return on(kind, nbytes, group_size, intra, algorithm)
    if inter is None:
        raise ValueError(f"a group of {group_size} over {nodes} nodes needs an inter network")
    if kind is Collective.SEND_RECV:
        return on(kind, nbytes, 2, inter, algorithm)
    if kind is Collective.ALL_TO_ALL:
        near, far = local - 1, group_size - local       # peers in the node, in other nodes
        return (near * intra.latency_s + near / group_size * nbytes / intra.achieved_bytes_per_s
                + far * inter.latency_s + far / group_size * nbytes / inter.achieved_bytes_per_s)
    if kind is Collective.ALL_REDUCE:
        return (on(Collective.REDUCE_SCATTER, nbytes, local, intra, algorithm)
                + on(Collective.ALL_REDUCE, nbytes / local, nodes, inter, algorithm)
                + on(Collective.ALL_GATHER, nbytes, local, intra, algorithm))
    return (on(kind, nbytes, local, intra, algorithm)
            + on(kind, nbytes / local, nodes, inter, algorithm))


def cluster_time_s(kind: Collective, nbytes: float, group_size: int, cluster: ClusterSpec,
                   devices_per_node: int | None = None,
                   algorithm: Algorithm = Algorithm.AUTO) -> float:
    """Seconds for a collective of ``group_size`` devices on a cluster.

    Torus (TPU ICI): one flat collective on the links the group spans
    (``ClusterSpec.group_network``). Switch: ``hierarchical_time_s`` with the group's members
    per node (default: as many as fit in one node, the layout of a tensor-parallel group;
    a data-parallel group strided over tensor-parallel ones has fewer).
    """
    from hardware_specs.cluster import Topology
    if cluster.topology is Topology.TORUS:
        return on(kind, nbytes, group_size, cluster.group_network(group_size), algorithm)
    local = devices_per_node or min(group_size, cluster.devices_per_node)
    return hierarchical_time_s(kind, nbytes, group_size, local, cluster.intra, cluster.inter,
                               algorithm)


def bus_bandwidth_factor(kind: Collective, n: int) -> float:
    """busbw / algbw (NCCL docs): 2(n-1)/n for all-reduce, (n-1)/n for AG/RS/all-to-all."""
    return bytes_moved(kind, 1.0, n) if n > 1 else 0.0


def _check(nbytes: float, n: int) -> None:
    if nbytes < 0 or isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"collective of {nbytes} bytes among {n} devices: need bytes >= 0 "
                         f"and a whole number of devices >= 1")
