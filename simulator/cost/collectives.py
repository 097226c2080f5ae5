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


def _whole_nodes(nbytes: float, group_size: int, devices_per_node: int) -> tuple[int, int]:
    """(members per node, nodes) of a group spanning whole nodes; ValueError otherwise (a
    plan's groups are checked first: ``simulator.parallel.rank.check_nodes``)."""
    _check(nbytes, group_size)
    local = min(devices_per_node, group_size)
    if local < 1 or group_size % local:
        raise ValueError(f"group of {group_size} is not a whole number of nodes of {local}")
    return local, group_size // local


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
    local, nodes = _whole_nodes(nbytes, group_size, devices_per_node)
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


def flat_ring_s(kind: Collective, nbytes: float, group_size: int, devices_per_node: int,
                intra: Link, inter: Link | None) -> float:
    """Bandwidth seconds (no latency) of NCCL's ring all-reduce, all-gather or reduce-scatter
    over ``group_size`` devices, ``devices_per_node`` of them in each node.

    NCCL's ring is one flat ring, not the phases of ``hierarchical_time_s``: each channel's
    ring "flow[s] from the NIC to the nearest GPU, go[es] through all the other GPUs through
    NVLink, then exit[s] from the last GPU, back to the NIC" (S. Jeaugey, NVIDIA/nccl issue
    #412, 2020), its channels entering and leaving by each of the node's NICs in turn, and
    every link is busy at once, in chunks: the ring runs at its slowest link ("busbw ...
    reflect[s] the speed of the hardware bottleneck", nccl-tests doc/PERFORMANCE.md). Every
    rank sends ``bytes_moved`` (ring) on its ring edges, so a node's rings send that many
    bytes out of the node, spread over the L = ``devices_per_node`` devices' own NICs, and
    each device the other (L - 1) / L of them over NVLink:

        max(moved / (L x inter), (L - 1) / L x moved / intra).

    Its check: across nodes, the ring's bus bandwidth is the node's NICs', whatever the
    number of nodes (8 x NDR, 400 Gb/s each: "46-48GB/s per NIC", NVIDIA/nccl-tests issue
    #290, D. Addison (NVIDIA), 2025; 4 nodes of 8 x H200 on EFA, a 4 GiB ring all-reduce over
    32 ranks: 364.65 GB/s of 8 x 50, stas00/ml-engineering network/README.md). With few nodes
    the whole buffer still crosses every node's NICs, (n - 1) / n of it, where the phases
    would send only (k - 1) / k (k nodes): two nodes of 8 send 15/16 where the phases send 1/2;
    over many nodes the two meet, and the flat ring is then the faster, its NVLink and NIC
    time overlapping instead of adding up. One node: the intra network alone."""
    kind = Collective(kind)
    local, _ = _whole_nodes(nbytes, group_size, devices_per_node)
    if kind not in (Collective.ALL_REDUCE, Collective.ALL_GATHER, Collective.REDUCE_SCATTER):
        raise ValueError(f"a flat ring runs all-reduce, all-gather or reduce-scatter, not {kind}")
    moved = bytes_moved(kind, nbytes, group_size, Algorithm.RING)
    if group_size == local:
        return moved / intra.achieved_bytes_per_s
    if inter is None:
        raise ValueError(f"a group of {group_size} over {group_size // local} nodes needs an "
                         "inter network")
    out = moved / (local * inter.achieved_bytes_per_s)
    within_node = (local - 1) / local * moved / intra.achieved_bytes_per_s
    return max(out, within_node)


# -- NCCL's own cost model ---------------------------------------------------------------------
# NVIDIA/nccl src/graph/tuning.cc (commit 5067397c, 2026-06): ncclTunerConstantsDefaults and
# ncclTopoTuneModel. NCCL predicts each (algorithm, protocol) as latency + bytes / bandwidth and
# runs the fastest. Its latency is a base (launch) latency plus one hardware latency per ring
# step, and a ring over nodes takes nRanks - 1 steps (2 (nRanks - 1) for an all-reduce), of which
# nNodes - 1 cross the network and the rest (at no less than the network overhead, 1 us, three
# times for Simple) stay in the node. Protocols: LL (8-byte stores with a flag: half the
# bandwidth, the lowest latency), LL128 (120 of 128 bytes: 0.92), Simple (full bandwidth, the
# highest latency).
PROTOCOLS = ("LL", "LL128", "Simple")
NCCL_BASE_US = {Algorithm.RING: (6.6, 14.0, 8.4), Algorithm.TREE: (6.8, 14.0, 8.4)}
NCCL_HW_US = {   # per step, (LL, LL128, Simple)
    "nvlink": {Algorithm.TREE: (0.6, 1.25, 4.0), Algorithm.RING: (0.6, 1.9, 3.4)},
    "pci": {Algorithm.TREE: (1.0, 1.9, 4.0), Algorithm.RING: (1.0, 2.5, 5.7)},
    "net": {Algorithm.TREE: (5.0, 8.5, 14.0), Algorithm.RING: (2.7, 4.0, 14.0)},
}
NCCL_NET_OVERHEAD_US = 1.0   # getNetOverhead: x86 Intel hosts (AMD: 2.0); x 3 for Simple
# Bandwidth of each protocol as a fraction of the link's: ring LL x 0.5, LL128 x 0.92; the tree
# all-reduce x 0.92, then LL / 3.8, LL128 x 7/9 in one node and x 120/128 over nodes -- its
# halved algorithm bandwidth is ``bytes_moved``'s 2 x nbytes.
NCCL_BANDWIDTH = {Algorithm.RING: (0.5, 0.92, 1.0),
                  Algorithm.TREE: (0.92 / 3.8, 0.92 * 120 / 128, 0.92)}
NCCL_TREE_LL128_ONE_NODE = 0.92 * 7 / 9
# hwsim's link kinds as NCCL's hardware classes; a spec's latency_us is the class's ring LL
# figure (NVLink 0.6, network 2.7 us), and the other protocols' latencies scale with it. AMD's
# links (RCCL, whose tuning.cc has other constants: ROCm/rccl) keep the alpha-beta model until
# RCCL's table is cited.
NCCL_CLASS = {"nvlink": "nvlink", "pcie": "pci", "infiniband": "net", "ethernet": "net"}


def _nccl_latency_s(network: Link, algorithm: Algorithm, protocol: int) -> float:
    table = NCCL_HW_US[NCCL_CLASS[_kind(network)]]
    return network.latency_s * table[algorithm][protocol] / table[Algorithm.RING][0]


def _kind(network) -> str:
    kind = getattr(network, "kind", "")
    return getattr(kind, "value", kind)


def speaks_nccl(cluster: ClusterSpec) -> bool:
    """Whether ``cluster``'s collectives run on NCCL (or RCCL): GPUs on switched links NCCL
    knows. TPUs' ICI, Gaudi's HCCL, Trainium's and the others keep the plain ring/tree model."""
    from hardware_specs.cluster import Topology
    from hardware_specs.spec import DeviceClass
    nets = [cluster.intra] + ([cluster.inter] if cluster.inter is not None else [])
    return (cluster.device.device_class is DeviceClass.GPU
            and cluster.topology is Topology.SWITCH
            and all(_kind(net) in NCCL_CLASS for net in nets))


def nccl_time_s(kind: Collective, nbytes: float, group_size: int, devices_per_node: int,
                intra: Link, inter: Link | None) -> float:
    """Seconds of an all-reduce, all-gather or reduce-scatter as NCCL predicts and picks it:
    the fastest (algorithm, protocol) of ring (and, for an all-reduce, tree) x LL, LL128,
    Simple, each its base latency + per-step latencies (``NCCL_HW_US``: a ring over nodes pays
    every one of its nRanks - 1 steps) + the bandwidth time over the protocol's share of the
    bandwidth: the flat ring's (``flat_ring_s``), the tree's in phases (``hierarchical_time_s``
    without latency: intra-node chains, a tree between the nodes)."""
    import dataclasses

    kind = Collective(kind)
    _check(nbytes, group_size)
    if group_size == 1:
        return 0.0
    local = min(devices_per_node, group_size)
    nodes = group_size // local
    quiet = [None if net is None else dataclasses.replace(net, latency_s=0.0)
             for net in (intra, inter)]
    all_reduce = kind is Collective.ALL_REDUCE
    # LL128 only where the GPUs talk over NVLink (tuning.cc: typeIntra <= PATH_NVB)
    protocols = [p for p in range(len(PROTOCOLS))
                 if PROTOCOLS[p] != "LL128" or NCCL_CLASS[_kind(intra)] == "nvlink"]
    best = math.inf
    for algorithm in (Algorithm.RING, Algorithm.TREE) if all_reduce else (Algorithm.RING,):
        transfer = (flat_ring_s(kind, nbytes, group_size, local, intra, inter)
                    if algorithm is Algorithm.RING else
                    hierarchical_time_s(kind, nbytes, group_size, local, *quiet, algorithm))
        for p in protocols:
            latency = NCCL_BASE_US[algorithm][p] * 1e-6
            intra_step = _nccl_latency_s(intra, algorithm, p)
            if algorithm is Algorithm.RING:
                steps_all = 2 * (group_size - 1) if all_reduce else group_size - 1
                steps_net = (2 * (nodes - 1) if all_reduce else nodes - 1) if nodes > 1 else 0
                if nodes > 1:
                    overhead = NCCL_NET_OVERHEAD_US * (3 if PROTOCOLS[p] == "Simple" else 1)
                    intra_step = max(intra_step, overhead * 1e-6)
                    # one rank per node: the tree's network latency (tuning.cc)
                    net_step = _nccl_latency_s(inter, Algorithm.TREE if local == 1
                                               else Algorithm.RING, p)
                else:
                    net_step = 0.0
                latency += (steps_all - steps_net) * intra_step + steps_net * net_step
            else:
                latency += 2 * (local - 1) * intra_step
                if nodes > 1:
                    latency += 2 * int(math.log2(nodes)) * _nccl_latency_s(inter, algorithm, p)
            share = NCCL_BANDWIDTH[algorithm][p]
            if algorithm is Algorithm.TREE and PROTOCOLS[p] == "LL128" and nodes == 1:
                share = NCCL_TREE_LL128_ONE_NODE
            best = min(best, latency + transfer / share)
    return best


def cluster_time_s(kind: Collective, nbytes: float, group_size: int, cluster: ClusterSpec,
                   devices_per_node: int | None = None,
                   algorithm: Algorithm = Algorithm.AUTO) -> float:
    """Seconds for a collective of ``group_size`` devices on a cluster.

    Torus (TPU ICI): one flat collective on the links the group spans
    (``ClusterSpec.group_network``). Switch: ``hierarchical_time_s`` with the group's members
    per node (default: as many as fit in one node, the layout of a tensor-parallel group;
    a data-parallel group strided over tensor-parallel ones has fewer). GPUs on NCCL's links
    (``speaks_nccl``): all-reduce, all-gather and reduce-scatter at NCCL's own prediction
    (``nccl_time_s``) when the algorithm is left to it.
    """
    from hardware_specs.cluster import Topology
    if cluster.topology is Topology.TORUS:
        return on(kind, nbytes, group_size, cluster.group_network(group_size), algorithm)
    local = devices_per_node or min(group_size, cluster.devices_per_node)
    if (Algorithm(algorithm) is Algorithm.AUTO and speaks_nccl(cluster)
            and Collective(kind) in (Collective.ALL_REDUCE, Collective.ALL_GATHER,
                                     Collective.REDUCE_SCATTER)):
        return nccl_time_s(kind, nbytes, group_size, local, cluster.intra, cluster.inter)
    return hierarchical_time_s(kind, nbytes, group_size, local, cluster.intra, cluster.inter,
                               algorithm)


def bus_bandwidth_factor(kind: Collective, n: int) -> float:
    """busbw / algbw (NCCL docs): 2(n-1)/n for all-reduce, (n-1)/n for AG/RS/all-to-all."""
    return bytes_moved(kind, 1.0, n) if n > 1 else 0.0


def _check(nbytes: float, n: int) -> None:
    if nbytes < 0 or isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"collective of {nbytes} bytes among {n} devices: need bytes >= 0 "
                         f"and a whole number of devices >= 1")
