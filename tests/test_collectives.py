"""Collectives: closed forms (exact) and properties of the latency-bandwidth model.

Closed forms: ring all-reduce moves 2(n-1)/n of the buffer per device (Patarasuk & Yuan 2009,
and NCCL's bus-bandwidth factor); all-gather / reduce-scatter (n-1)/n (Thakur et al. 2005).
"""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware_specs.cluster import Network, load_cluster
from hardware_specs.spec import LinkKind
from simulator.cost.collectives import (Algorithm, Collective, bus_bandwidth_factor, bytes_moved,
                                   cluster_time_s, flat_ring_s, hierarchical_time_s,
                                   nccl_time_s, speaks_nccl, steps, time_s)

KINDS = list(Collective)
ALGOS = [Algorithm.RING, Algorithm.TREE, Algorithm.AUTO]


def net(bandwidth, latency):
    return Network("n", LinkKind.OTHER, bandwidth, latency)


# ------------------------------------------------------------------------------ closed forms

@pytest.mark.parametrize("n", [2, 3, 4, 7, 8, 64, 1000])
def test_ring_all_reduce_moves_2_n_minus_1_over_n(n):
    nbytes = n * 1024                 # divisible, so the float result is exact
    assert bytes_moved(Collective.ALL_REDUCE, nbytes, n) == 2 * (n - 1) * 1024
    assert Fraction(bytes_moved(Collective.ALL_REDUCE, 1.0, n)).limit_denominator(10_000) \
        == Fraction(2 * (n - 1), n)


@pytest.mark.parametrize("kind", [Collective.ALL_GATHER, Collective.REDUCE_SCATTER,
                                  Collective.ALL_TO_ALL])
@pytest.mark.parametrize("n", [2, 4, 8, 16])
def test_gather_scatter_move_n_minus_1_over_n(kind, n):
    assert bytes_moved(kind, n * 100, n) == (n - 1) * 100


def test_send_recv_moves_the_message():
    assert bytes_moved(Collective.SEND_RECV, 123.0, 2) == 123.0


@pytest.mark.parametrize("kind", KINDS)
def test_one_device_moves_nothing_and_takes_no_time(kind):
    assert bytes_moved(kind, 1e9, 1) == 0.0
    assert time_s(kind, 1e9, 1, 1e9, 1e-6) == 0.0


def test_nccl_bus_bandwidth_factor():
    assert bus_bandwidth_factor(Collective.ALL_REDUCE, 8) == pytest.approx(2 * 7 / 8)
    assert bus_bandwidth_factor(Collective.ALL_GATHER, 8) == pytest.approx(7 / 8)


def test_ring_all_reduce_time_is_steps_times_latency_plus_bytes_over_bandwidth():
    n, nbytes, bw, lat = 8, 1e9, 300e9, 0.6e-6
    expected = 2 * (n - 1) * lat + 2 * (n - 1) / n * nbytes / bw
    assert time_s(Collective.ALL_REDUCE, nbytes, n, bw, lat, Algorithm.RING) == \
        pytest.approx(expected)


def test_tree_latency_is_logarithmic():
    assert steps(Collective.ALL_REDUCE, 64, Algorithm.TREE) == 12
    assert steps(Collective.ALL_REDUCE, 64, Algorithm.RING) == 126
    assert steps(Collective.ALL_GATHER, 64, Algorithm.TREE) == 6
    assert steps(Collective.ALL_REDUCE, 6, Algorithm.TREE) == 6       # 2 ceil(log2 6)


def test_auto_picks_tree_for_small_and_ring_for_large_messages():
    n, bw, lat = 64, 25e9, 2.7e-6
    small, large = 1e3, 1e10
    ring = lambda b: time_s(Collective.ALL_REDUCE, b, n, bw, lat, Algorithm.RING)
    tree = lambda b: time_s(Collective.ALL_REDUCE, b, n, bw, lat, Algorithm.TREE)
    auto = lambda b: time_s(Collective.ALL_REDUCE, b, n, bw, lat, Algorithm.AUTO)
    assert tree(small) < ring(small) and auto(small) == tree(small)
    assert ring(large) < tree(large) and auto(large) == ring(large)


@pytest.mark.parametrize("kind", [Collective.ALL_GATHER, Collective.REDUCE_SCATTER])
def test_auto_all_gather_and_reduce_scatter_are_rings_as_in_nccl(kind):
    """NCCL has no tree for them (NVIDIA/nccl#1473): AUTO is the ring even where recursive
    doubling, asked for explicitly, would be faster."""
    n, bw, lat, small = 1024, 25e9, 2.7e-6, 1e3
    ring = time_s(kind, small, n, bw, lat, Algorithm.RING)
    assert time_s(kind, small, n, bw, lat, Algorithm.TREE) < ring
    assert time_s(kind, small, n, bw, lat, Algorithm.AUTO) == ring


def test_hierarchical_all_reduce_phases():
    intra, inter = net(300e9, 0.6e-6), net(25e9, 2.7e-6)
    nbytes, local, nodes = 1e9, 8, 4
    expected = (time_s(Collective.REDUCE_SCATTER, nbytes, local, 300e9, 0.6e-6)
                + time_s(Collective.ALL_REDUCE, nbytes / local, nodes, 25e9, 2.7e-6)
                + time_s(Collective.ALL_GATHER, nbytes, local, 300e9, 0.6e-6))
    got = hierarchical_time_s(Collective.ALL_REDUCE, nbytes, 32, 8, intra, inter)
    assert got == pytest.approx(expected)


def test_hierarchical_inside_one_node_uses_only_intra():
    intra = net(300e9, 0.6e-6)
    got = hierarchical_time_s(Collective.ALL_REDUCE, 1e9, 8, 8, intra, None)
    assert got == time_s(Collective.ALL_REDUCE, 1e9, 8, 300e9, 0.6e-6)


def test_hierarchical_beats_a_flat_ring_on_the_slow_network():
    intra, inter = net(300e9, 0.6e-6), net(25e9, 2.7e-6)
    flat = time_s(Collective.ALL_REDUCE, 1e9, 32, 25e9, 2.7e-6)
    assert hierarchical_time_s(Collective.ALL_REDUCE, 1e9, 32, 8, intra, inter) < flat


def test_cluster_time_on_dgx_and_tpu():
    dgx = load_cluster("dgx-a100").with_nodes(4)
    t = cluster_time_s(Collective.ALL_REDUCE, 1e9, 32, dgx)
    assert t == nccl_time_s(Collective.ALL_REDUCE, 1e9, 32, 8, dgx.intra, dgx.inter)
    asked = cluster_time_s(Collective.ALL_REDUCE, 1e9, 32, dgx, algorithm=Algorithm.RING)
    assert asked == hierarchical_time_s(Collective.ALL_REDUCE, 1e9, 32, 8, dgx.intra, dgx.inter,
                                        Algorithm.RING)
    tpu = load_cluster("tpu-v4-pod-slice")
    axis = cluster_time_s(Collective.ALL_GATHER, 1e9, 4, tpu)
    assert axis == pytest.approx(time_s(Collective.ALL_GATHER, 1e9, 4, 90e9, 1e-6))


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        bytes_moved(Collective.ALL_REDUCE, -1, 4)
    with pytest.raises(ValueError):
        time_s(Collective.ALL_REDUCE, 1, 4, 0.0, 1e-6)
    with pytest.raises(ValueError):
        hierarchical_time_s(Collective.ALL_REDUCE, 1, 12, 8, net(1, 0), net(1, 0))


# -------------------------------------------------------------------------------- properties

sizes = st.one_of(st.just(0.0), st.floats(1.0, 1e11, allow_nan=False))  # bytes: 0, or at least one
counts = st.integers(1, 4096)
bandwidths = st.floats(1e6, 1e13, allow_nan=False)
latencies = st.floats(0, 1e-3, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KINDS), st.sampled_from(ALGOS), sizes, counts, bandwidths, bandwidths,
       latencies)
def test_faster_network_is_never_slower(kind, algo, nbytes, n, bw_a, bw_b, lat):
    slow, fast = sorted((bw_a, bw_b))
    assert time_s(kind, nbytes, n, fast, lat, algo) <= time_s(kind, nbytes, n, slow, lat, algo)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KINDS), st.sampled_from(ALGOS), sizes, counts, bandwidths, latencies,
       latencies)
def test_time_is_non_decreasing_in_latency(kind, algo, nbytes, n, bw, lat_a, lat_b):
    low, high = sorted((lat_a, lat_b))
    assert time_s(kind, nbytes, n, bw, low, algo) <= time_s(kind, nbytes, n, bw, high, algo)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KINDS), st.sampled_from(ALGOS), sizes, sizes, counts, bandwidths,
       latencies)
def test_time_is_non_decreasing_in_bytes(kind, algo, b_a, b_b, n, bw, lat):
    small, large = sorted((b_a, b_b))
    assert time_s(kind, small, n, bw, lat, algo) <= time_s(kind, large, n, bw, lat, algo)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KINDS), sizes, st.sampled_from([1, 2, 4, 8]), st.integers(1, 64),
       bandwidths, bandwidths, bandwidths, latencies, latencies)
def test_hierarchical_never_slower_with_faster_inter(kind, nbytes, local, nodes, intra_bw,
                                                     bw_a, bw_b, lat_intra, lat_inter):
    slow, fast = sorted((bw_a, bw_b))
    intra = net(intra_bw, lat_intra)
    group = local * nodes
    t_fast = hierarchical_time_s(kind, nbytes, group, local, intra, net(fast, lat_inter))
    t_slow = hierarchical_time_s(kind, nbytes, group, local, intra, net(slow, lat_inter))
    assert t_fast <= t_slow * (1 + 1e-12)


@settings(max_examples=200, deadline=None)
@given(sizes, st.integers(2, 1024))
def test_ring_all_reduce_is_reduce_scatter_plus_all_gather(nbytes, n):
    rs_ag = bytes_moved(Collective.REDUCE_SCATTER, nbytes, n) + \
        bytes_moved(Collective.ALL_GATHER, nbytes, n)
    assert math.isclose(bytes_moved(Collective.ALL_REDUCE, nbytes, n), rs_ag, rel_tol=1e-12)


# ------------------------------------------------------------------------ NCCL's own model

NVL = Network("nvl", LinkKind.NVLINK, 300e9, 0.6e-6)
IB = Network("ib", LinkKind.INFINIBAND, 25e9, 2.7e-6)


def test_nccl_large_all_gather_over_nodes_is_simple_ring_closed_form():
    """NVIDIA/nccl src/graph/tuning.cc: a 1 GB all-gather of 64 ranks in 8 nodes runs the ring
    with the Simple protocol: 8.4 us base, 56 in-node steps at max(3.4, 3 x 1.0) us, 7 network
    steps at 14 us, plus the flat ring's bandwidth time: 63/64 of the buffer out of each node
    through its 8 NICs of 25 GB/s (the NVLink share, 7/8 of it at 300 GB/s, is shorter)."""
    quiet = 63 / 64 * 1e9 / (8 * 25e9)
    expected = (8.4 + 56 * 3.4 + 7 * 14.0) * 1e-6 + quiet
    assert nccl_time_s(Collective.ALL_GATHER, 1e9, 64, 8, NVL, IB) == pytest.approx(expected,
                                                                                   rel=1e-12)


def test_nccl_tiny_all_gather_is_ll_latency():
    """A 64-byte all-gather of 8 ranks in one node: LL, 6.6 us + 7 x 0.6 us, and its halved
    bandwidth costs nothing that matters."""
    got = nccl_time_s(Collective.ALL_GATHER, 64.0, 8, 8, NVL, None)
    transfer = 7 / 8 * 64 / (300e9 * 0.5)
    assert got == pytest.approx((6.6 + 7 * 0.6) * 1e-6 + transfer, rel=1e-12)


def test_nccl_ring_pays_every_rank_not_every_node():
    """The ring's latency grows with ranks (511 steps at 512 GPUs), not with nodes alone: the
    difference from the hierarchical alpha-beta model is what a 512-GPU FSDP run pays."""
    small = nccl_time_s(Collective.REDUCE_SCATTER, 1e3, 512, 8, NVL, IB)
    assert small >= (6.6 + 448 * 1.0 + 63 * 2.7) * 1e-6 * (1 - 1e-12)
    assert small > 3 * hierarchical_time_s(Collective.REDUCE_SCATTER, 1e3, 512, 8, NVL, IB)


def test_only_gpus_on_nccl_links_speak_nccl():
    assert speaks_nccl(load_cluster("dgx-h100").with_nodes(2))
    assert not speaks_nccl(load_cluster("tpu-v4-pod-slice"))


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from([Collective.ALL_REDUCE, Collective.ALL_GATHER,
                             Collective.REDUCE_SCATTER]),
       nbytes=st.floats(1.0, 1e10), nodes=st.integers(1, 64), local=st.sampled_from([1, 2, 4, 8]),
       faster=st.floats(1.0, 8.0))
def test_nccl_time_is_monotone_and_never_below_the_bandwidth(kind, nbytes, nodes, local, faster):
    """More bytes never take less time; more bandwidth is never slower; higher latency never
    faster; and no protocol beats the latency-free transfer of the algorithms NCCL picks from
    (the flat ring, the tree in phases)."""
    n = nodes * local
    if n == 1:
        return
    inter = IB if nodes > 1 else None
    t = nccl_time_s(kind, nbytes, n, local, NVL, inter)
    assert nccl_time_s(kind, nbytes * 2, n, local, NVL, inter) >= t
    quick = [Network(x.name, x.kind, x.bandwidth_bytes_per_s * faster, x.latency_s)
             if x is not None else None for x in (NVL, inter)]
    assert nccl_time_s(kind, nbytes, n, local, *quick) <= t * (1 + 1e-12)
    slow = [Network(x.name, x.kind, x.bandwidth_bytes_per_s, x.latency_s * faster)
            if x is not None else None for x in (NVL, inter)]
    assert nccl_time_s(kind, nbytes, n, local, *slow) >= t * (1 - 1e-12)
    free = [Network(x.name, x.kind, x.bandwidth_bytes_per_s, 0.0) if x is not None else None
            for x in (NVL, inter)]
    floor = flat_ring_s(kind, nbytes, n, local, *free)
    if kind is Collective.ALL_REDUCE:
        floor = min(floor, hierarchical_time_s(kind, nbytes, n, local, *free, Algorithm.TREE))
    assert t >= floor * (1 - 1e-12)


def test_ll128_only_over_nvlink_and_its_tree_share_in_one_node():
    """tuning.cc enables LL128 only when the GPUs' intra path is NVLink (typeIntra <=
    PATH_NVB): on a PCIe box a mid-size all-gather costs what LL and Simple allow. A single-node
    tree all-reduce in LL128 gets 0.92 x 7/9 of the bandwidth, not 120/128."""
    pci = Network("pci", LinkKind.PCIE, 32e9, 1.0e-6)
    got = nccl_time_s(Collective.ALL_GATHER, 3e6, 8, 8, pci, None)
    transfer = 7 / 8 * 3e6 / 32e9
    ll = (6.6 + 7 * 1.0) * 1e-6 + transfer / 0.5
    simple = (8.4 + 7 * 5.7) * 1e-6 + transfer
    assert got == pytest.approx(min(ll, simple), rel=1e-12)
    nvl_ll128 = (14.0 + 7 * 1.9) * 1e-6 + transfer / 0.92
    assert nccl_time_s(Collective.ALL_GATHER, 3e6, 8, 8,
                       Network("nvl", LinkKind.NVLINK, 32e9, 0.6e-6), None) <= nvl_ll128
    from simulator.cost import collectives
    assert collectives.NCCL_TREE_LL128_ONE_NODE == pytest.approx(0.92 * 7 / 9)


def test_amd_links_keep_the_alpha_beta_model():
    from simulator.cost.collectives import NCCL_CLASS
    assert "infinity-fabric" not in NCCL_CLASS


# -- NCCL's flat ring over nodes (simulator.cost.collectives.flat_ring_s) -------------------------

NDR = Network("ndr", LinkKind.INFINIBAND, 50e9, 2.7e-6, 0.94)
NVL4 = Network("nvl4", LinkKind.NVLINK, 450e9, 0.6e-6, 0.8)


@pytest.mark.parametrize("nodes", [2, 4, 32])
def test_flat_ring_bus_bandwidth_is_the_nodes_nics(nodes):
    """Across DGX H100 nodes a large ring all-gather's bus bandwidth is the 8 NICs' rate,
    whatever the node count: 8 x 47 = 376 GB/s, inside the "46-48GB/s per NIC" NVIDIA gives
    for NDR (NVIDIA/nccl-tests issue #290): 368 to 384 GB/s. The phases would give 2 nodes
    249 GB/s (their NVLink time added, not overlapped) and 32 nodes 233 GB/s."""
    n, nbytes = 8 * nodes, 8e9
    busbw = nbytes * bus_bandwidth_factor(Collective.ALL_GATHER, n) / flat_ring_s(
        Collective.ALL_GATHER, nbytes, n, 8, NVL4, NDR)
    assert busbw == pytest.approx(8 * 47e9, rel=1e-9)
    assert 368e9 <= busbw <= 384e9


def test_flat_ring_all_reduce_on_dgx_a100_nodes_is_their_190_gb_s():
    """Two DGX A100 nodes (8 HDR NICs of 25 GB/s at 0.94, NVLink 3 at 240 of 300): the ring
    all-reduce's bus bandwidth is 8 x 23.5 = 188 GB/s, within 2 % of the "top speed of 190
    GB/s" of a DGX with 8 NICs (S. Jeaugey, NVIDIA/nccl issue #689); the phases, their NVLink
    time added to the NICs', gave 149 GB/s."""
    nvl3 = Network("nvl3", LinkKind.NVLINK, 300e9, 0.0, 0.8)
    hdr = Network("hdr", LinkKind.INFINIBAND, 25e9, 0.0, 0.94)
    factor = bus_bandwidth_factor(Collective.ALL_REDUCE, 16)
    busbw = 1e9 * factor / flat_ring_s(Collective.ALL_REDUCE, 1e9, 16, 8, nvl3, hdr)
    assert busbw == pytest.approx(190e9, rel=0.02)
    phases = 1e9 * factor / hierarchical_time_s(Collective.ALL_REDUCE, 1e9, 16, 8, nvl3, hdr,
                                                Algorithm.RING)
    assert phases == pytest.approx(149e9, rel=0.01)


def test_flat_ring_sends_the_whole_buffer_out_of_each_node():
    """Two GPUs per node (a data-parallel group strided over tensor-parallel ranks), two nodes:
    each node's rings send (n - 1)/n = 3/4 of the buffer out through its 2 NICs, where the
    phases would send (k - 1)/k = 1/2: an all-reduce of 1 GB 2 x 3/4 x 1e9 / (2 x 47e9)."""
    got = flat_ring_s(Collective.ALL_REDUCE, 1e9, 4, 2, NVL4, NDR)
    assert got == pytest.approx(2 * 3 / 4 * 1e9 / (2 * 47e9), rel=1e-12)
    one_node = flat_ring_s(Collective.ALL_GATHER, 1e9, 8, 8, NVL4, None)
    assert one_node == pytest.approx(7 / 8 * 1e9 / 360e9, rel=1e-12)


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from([Collective.ALL_REDUCE, Collective.ALL_GATHER,
                             Collective.REDUCE_SCATTER]),
       nbytes=st.floats(1.0, 1e10), nodes=st.integers(2, 128), local=st.sampled_from([1, 2, 4, 8]),
       faster=st.floats(1.0, 8.0))
def test_flat_ring_more_network_is_never_slower_and_the_nics_bound_it(kind, nbytes, nodes,
                                                                      local, faster):
    """More NIC or NVLink bandwidth never slows the ring; it never beats the NICs' share of the
    bytes each rank moves, nor the NVLink share; and as nodes grow the phases' extra (k-1)/k
    factor tends to the ring's (n-1)/n: the ring is never slower than the phases by more than
    (n - 1)/n x k/(k - 1)."""
    n = nodes * local
    t = flat_ring_s(kind, nbytes, n, local, NVL4, NDR)
    for intra, inter in ((NVL4, Network("x", LinkKind.INFINIBAND, 50e9 * faster, 0.0, 0.94)),
                         (Network("y", LinkKind.NVLINK, 450e9 * faster, 0.0, 0.8), NDR)):
        assert flat_ring_s(kind, nbytes, n, local, intra, inter) <= t * (1 + 1e-12)
    moved = bytes_moved(kind, nbytes, n)
    assert t >= moved / (local * NDR.achieved_bytes_per_s) * (1 - 1e-12)
    assert t >= (local - 1) / local * moved / NVL4.achieved_bytes_per_s * (1 - 1e-12)
    quiet = [Network(x.name, x.kind, x.bandwidth_bytes_per_s, 0.0, x.efficiency)
             for x in (NVL4, NDR)]
    phases = hierarchical_time_s(kind, nbytes, n, local, *quiet, Algorithm.RING)
    assert t <= phases * (n - 1) / n * nodes / (nodes - 1) * (1 + 1e-9)


def test_more_network_bandwidth_never_slows_a_training_step():
    """GPT-2 medium on 4 DGX H100 nodes, tensor-, data- and pipeline-parallel: the same plan
    on nodes joined at 25, 50 and 100 GB/s per GPU is never slower as the network grows."""
    import dataclasses

    from simulator import simulate
    base = load_cluster("dgx-h100").with_nodes(4)
    times = []
    for rate in (25e9, 50e9, 100e9):
        cluster = dataclasses.replace(base, inter=dataclasses.replace(
            base.inter, bandwidth_bytes_per_s=rate))
        times.append(simulate("gpt2-medium", cluster, micro_batch=2, global_batch=256, tp=2,
                              pp=2, zero=1).step_time_s)
    assert times[0] >= times[1] >= times[2]
    assert times[0] > times[2]


def test_a_group_filling_nodes_unevenly_is_a_plan_error():
    """tp = 12 on nodes of 8: its collectives cannot run in node-sized phases; the CLI says so
    in one line, exit 2 (it was 'internal error: ValueError'). cp ranks are tp apart: cp = 3
    with tp = 4 puts 2 a node."""
    from simulator.errors import PlanError
    from simulator.parallel.rank import check_nodes
    from simulator.plan.parallel import ParallelPlan
    from tests.test_cli import hwsim

    proc = hwsim("predict", "gpt3-175b", "--device", "h100", "--num-devices", "24", "--tp",
                 "12", "--pp", "2")
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "tp = 12" in lines[0] and "divides 8" in lines[0], proc.stderr
    cluster = load_cluster("dgx-h100")
    with pytest.raises(PlanError, match="cp = 3"):
        check_nodes(ParallelPlan(tp=4, cp=3), cluster)
    for tp, cp in ((16, 1), (8, 2), (4, 2), (2, 4), (1, 16), (3, 1)):
        check_nodes(ParallelPlan(tp=tp, cp=cp), cluster)
