"""Cluster presets, cluster_for, and every validation error of a cluster file.

Preset figures are checked against their sources, exactly: DGX A100 (NVLink 3 600 GB/s
bidirectional = 300 per direction; 8 x 200 Gb/s HDR = 25 GB/s per GPU), DGX H100 (NVLink 4
900 GB/s bidirectional = 450; 8 x 400 Gb/s NDR = 50 GB/s per GPU), TPU v4 (6 ICI links x 45
GB/s one way, scaling-book; 4 x 4 x 4 cube, Cloud TPU docs).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from hardware_specs.cluster import (ClusterSpec, Topology, cluster_for, list_clusters,
                                    load_cluster, torus_shape)
from hardware_specs.loader import load_device
from hardware_specs.spec import LinkKind
from simulator.errors import PlanError, SpecError

GOOD = """
name = "test-cluster"
source = "unit test"
device = "a100"
nodes = 2
devices_per_node = 8
topology = "switch"

[intra]
name = "nvswitch"
kind = "nvlink"
bandwidth_gb_per_s = 300
latency_us = 0.6

[inter]
name = "ib"
kind = "infiniband"
bandwidth_gb_per_s = 25
latency_us = 2.7
"""


def write(tmp_path, text):
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return str(path)


def replace(old, new):
    assert old in GOOD
    return GOOD.replace(old, new)


# ----------------------------------------------------------------------------------- presets

def test_presets_are_listed():
    assert {"dgx-a100", "dgx-h100", "tpu-v4-pod-slice"} <= set(list_clusters())


@pytest.mark.parametrize("name", ["dgx-a100", "dgx-h100", "tpu-v4-pod-slice"])
def test_every_preset_loads(name):
    cluster = load_cluster(name)
    assert isinstance(cluster, ClusterSpec)
    assert cluster.name == name and cluster.source


def test_hwsim_devices_lists_every_preset(capsys):
    """The presets were named only by an unknown --cluster's error, whose neighbour said
    '(presets: see 'hwsim devices')', which listed none: each is a line of its own, its
    figures those of the file (DGX A100: 6,500 W a node less 8 x 400 W GPUs), and its source."""
    from simulator.cli import main

    assert main(["devices"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("cluster presets"))
    rows = {line.split()[0]: line for line in lines[start + 1:] if not line.startswith(" ")}
    assert sorted(rows) == list_clusters()
    for name, line in rows.items():
        cluster = load_cluster(name)
        assert f"{cluster.nodes} x {cluster.devices_per_node} {cluster.device.name}," in line
        assert f"source: {cluster.source}" in lines[lines.index(line) + 1]
    assert "hdr-infiniband 25 GB/s between nodes (switch), node overhead 3,300 W" in \
        rows["dgx-a100"]
    assert "set point" not in rows["dgx-b200"]   # its GPUs at their TDP (dgx-b200.toml)
    assert "tpu-v4-pod-slice   16 x 4 tpu-v4, ici 270 GB/s in a node" in rows["tpu-v4-pod-slice"]


def test_dgx_a100_figures():
    c = load_cluster("dgx-a100")
    assert c.device.name == "a100-sxm4-80gb"
    assert (c.nodes, c.devices_per_node, c.num_devices) == (1, 8, 8)
    assert c.topology is Topology.SWITCH and c.torus_dims is None
    assert c.intra.bandwidth_bytes_per_s == 300e9 and c.intra.kind is LinkKind.NVLINK
    assert c.inter.bandwidth_bytes_per_s == 25e9 and c.inter.kind is LinkKind.INFINIBAND
    assert c.intra.latency_s == pytest.approx(0.6e-6)
    assert c.inter.latency_s == pytest.approx(2.7e-6)


def test_aws_p4d_figures():
    # AWS p4d.24xlarge: 8 x A100 40GB on NVSwitch, 400 Gbps EFA per node (AWS EC2 P4 page)
    c = load_cluster("aws-p4d")
    assert c.device.name == "a100-sxm4-40gb" and c.devices_per_node == 8
    assert c.intra.bandwidth_bytes_per_s == 300e9 and c.intra.kind is LinkKind.NVLINK
    assert c.inter.bandwidth_bytes_per_s == pytest.approx(400e9 / 8 / 8)
    # EFA v1: "effective 340Gbps for all_reduce tests" of 400 (stas00/ml-engineering)
    assert c.inter.kind is LinkKind.ETHERNET and c.inter.efficiency == 0.85


def test_jean_zay_a100_figures():
    # BLOOM paper (arXiv:2211.05100) sec. 3.4.1: nodes of 8 A100 80GB, four 100 Gb/s Omni-Path
    # links per node (4 x 100 / 8 / 8 = 6.25 GB/s per GPU), priced as InfiniBand; the BLOOM
    # validation rows run on it
    import csv

    c = load_cluster("jean-zay-a100")
    assert c.device.name == "a100-sxm4-80gb" and c.devices_per_node == 8
    assert c.inter.bandwidth_bytes_per_s == pytest.approx(4 * 100e9 / 8 / 8)
    assert c.inter.kind is LinkKind.INFINIBAND
    assert c.intra == cluster_for(c.device, 8).intra   # NVLink as before: no cited link count
    rows = Path(__file__).parent / "data" / "validation_rows.csv"
    with rows.open(newline="") as f:
        bloom = {r["run_id"]: r["cluster"] for r in csv.DictReader(f)
                 if r["run_id"].startswith("bloom-")}
    assert bloom == {"bloom-176B-gbs2048": "jean-zay-a100", "bloom-176B-gbs192": "jean-zay-a100"}


def test_jean_zay_link_efficiency_is_its_measured_nccl_all_reduce():
    """BigScience's all_reduce_bench on 4 x 8 A100 80GB of Jean Zay (bigscience-workshop/
    bigscience 358e3c8, experiments/bandwidth/all_reduce_bench-a100-n4.txt): a 4 GB fp32
    all-reduce over 32 ranks, whose NCCL ring crossed each node through one 100 Gb/s Omni-Path
    link each way (its log: two channels, in by NET/IB/1, out by NET/IB/3): the ring's bus
    bandwidth over trials 1-4 (trial 0 holds NCCL's setup) is one link's achieved rate, and
    hwsim's flat ring of two members a node, one link's worth, runs at it."""
    import csv
    import statistics

    from simulator.cost.collectives import Collective, flat_ring_s

    path = Path(__file__).parent / "data" / "jean_zay_all_reduce.csv"
    with path.open(newline="") as f:
        trials = list(csv.DictReader(f))
    assert [int(t["trial"]) for t in trials] == [0, 1, 2, 3, 4]
    n, nbytes = int(trials[0]["ranks"]), float(trials[0]["bytes"])
    seconds = statistics.median(float(t["median_s"]) for t in trials[1:])
    busbw = nbytes / seconds * 2 * (n - 1) / n
    assert busbw == pytest.approx(5.07e9, rel=2e-3)
    link = 100e9 / 8    # one Omni-Path link, per direction
    c = load_cluster("jean-zay-a100")
    assert c.inter.efficiency == pytest.approx(busbw / link, abs=5e-4)
    assert c.inter.bandwidth_bytes_per_s * 2 == pytest.approx(link)   # two GPUs a link
    # a ring of 8 ranks, two a node, over 4 nodes: its bus bandwidth is one link's, measured
    ranks, size = 8, 1e9
    moved = size * 2 * (ranks - 1) / ranks
    priced = flat_ring_s(Collective.ALL_REDUCE, size, ranks, 2, c.intra, c.inter)
    assert moved / priced == pytest.approx(busbw, rel=2e-3)


def test_aws_p4d_network_slows_data_parallel_steps():
    # the same 16 A100 40GB, nodes joined by a quarter of the DGX A100's per-GPU rate: the
    # gradient all-reduce crosses the network, so the step cannot be faster, and is slower
    from simulator import simulate
    p4d = load_cluster("aws-p4d").with_nodes(2)
    hdr = cluster_for(p4d.device, 16)
    slow = simulate("gpt2-small", p4d, micro_batch=4, global_batch=64)
    fast = simulate("gpt2-small", hdr, micro_batch=4, global_batch=64)
    assert slow.step_time_s > fast.step_time_s


def test_dgx_h100_figures():
    c = load_cluster("dgx-h100")
    assert c.device.name == "h100-sxm5-80gb"
    assert c.intra.bandwidth_bytes_per_s == 450e9
    assert c.inter.bandwidth_bytes_per_s == 50e9


def test_tpu_v4_slice_is_a_4x4x4_torus():
    c = load_cluster("tpu-v4-pod-slice")
    assert c.topology is Topology.TORUS and c.torus_dims == (4, 4, 4)
    assert c.num_devices == 64 and c.devices_per_node == 4
    assert c.intra.bandwidth_bytes_per_s == 270e9      # 6 x 45 GB/s
    assert c.inter == c.intra


def test_torus_group_uses_the_links_of_the_axes_it_spans():
    c = load_cluster("tpu-v4-pod-slice")
    full = c.intra.bandwidth_bytes_per_s
    assert c.group_network(4).bandwidth_bytes_per_s == pytest.approx(full / 3)
    assert c.group_network(16).bandwidth_bytes_per_s == pytest.approx(full * 2 / 3)
    assert c.group_network(64).bandwidth_bytes_per_s == pytest.approx(full)


def test_with_nodes_scales_a_node_out():
    c = load_cluster("dgx-h100").with_nodes(32)
    assert c.num_devices == 256 and c.inter.bandwidth_bytes_per_s == 50e9


def test_with_nodes_refuses_a_torus(capsys):
    with pytest.raises(PlanError, match="torus"):
        load_cluster("tpu-v4-pod-slice").with_nodes(2)
    # the refusal says how to get another size ('give a slice of the size you want' did not)
    from simulator.cli import main

    # each command's own flags are named, and each suggestion runs (compare takes --devices:
    # '--device tpu-v5p' was wrong there)
    runs = {"predict": ["--device", "tpu-v5p", "--num-devices", "128"],
            "compare": ["--devices", "tpu-v5p", "--num-devices", "128"]}
    for command, suggested in runs.items():
        assert main([command, "gpt2-small", "--cluster", "tpu-v5p-pod-slice", "--num-devices",
                     "128"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{command}: {' '.join(suggested[:2])} " in err
        assert " ".join(suggested).replace("128", "N") in err
        assert main([command, "gpt2-small", *suggested]) == 0
        capsys.readouterr()
    assert "sweep: --devices tpu-v5p --device-counts N" in err


def test_load_by_path(tmp_path):
    c = load_cluster(write(tmp_path, GOOD))
    assert c.num_devices == 16 and c.device.name == "a100-sxm4-80gb"


def test_unknown_cluster_lists_the_presets():
    with pytest.raises(SpecError, match="unknown cluster 'dgx-z9'.*dgx-a100"):
        load_cluster("dgx-z9")


@pytest.mark.parametrize("spelling, name", [("dgxa100", "dgx-a100"), ("DGX_H100", "dgx-h100"),
                                             ("tpu v4 pod slice", "tpu-v4-pod-slice"),
                                             ("GB200-NVL72", "gb200-nvl72")])
def test_presets_take_loose_spellings_as_devices_do(spelling, name):
    """Issue 22 item 10: 'b-200' and 'tpuv4' were devices but 'dgxa100' an unknown cluster."""
    assert load_cluster(spelling).name == name


def test_missing_file():
    with pytest.raises(SpecError, match="no cluster spec file"):
        load_cluster("nowhere/cluster.toml")


# -------------------------------------------------------------------------------- cluster_for

def test_cluster_for_a100_is_8_per_node_on_nvlink():
    c = cluster_for(load_device("a100"), 32)
    assert (c.nodes, c.devices_per_node) == (4, 8)
    assert c.intra.kind is LinkKind.NVLINK and c.intra.bandwidth_bytes_per_s == 300e9
    assert c.inter.bandwidth_bytes_per_s == 25e9


def test_cluster_for_fewer_than_a_node():
    c = cluster_for(load_device("h100"), 4)
    assert (c.nodes, c.devices_per_node) == (1, 4)


def test_cluster_for_a_bridged_pcie_gpu_uses_pcie():
    c = cluster_for(load_device("a100-pcie-80gb"), 8)
    assert c.intra.kind is LinkKind.PCIE and c.intra.bandwidth_bytes_per_s == 32e9


def test_cluster_for_mi300x_uses_infinity_fabric():
    c = cluster_for(load_device("mi300x"), 16)
    assert c.intra.kind is LinkKind.INFINITY_FABRIC and c.devices_per_node == 8


def test_cluster_for_tpu_v4_is_a_torus_of_hosts_of_4():
    c = cluster_for(load_device("tpu-v4"), 64)
    assert c.topology is Topology.TORUS and c.torus_dims == (4, 4, 4)
    assert (c.nodes, c.devices_per_node) == (16, 4)
    assert c.intra.kind is LinkKind.ICI and c.intra.bandwidth_bytes_per_s == 270e9


def test_cluster_for_tpu_v5e_is_a_2d_torus():
    assert cluster_for(load_device("tpu-v5e"), 32).torus_dims == (4, 8)


def test_cluster_for_xeon_is_one_per_node():
    c = cluster_for(load_device("xeon"), 3)
    assert (c.nodes, c.devices_per_node) == (3, 1)


def test_cluster_for_names_the_numbers_when_nodes_are_not_whole():
    with pytest.raises(PlanError, match="num_devices = 12 .* 8 a100-sxm4-80gb per node"):
        cluster_for(load_device("a100"), 12)


@pytest.mark.parametrize("bad", [0, -8, 2.5, True])
def test_cluster_for_needs_a_positive_count(bad):
    with pytest.raises(PlanError, match="num_devices"):
        cluster_for(load_device("a100"), bad)


def test_torus_shape_is_balanced():
    assert torus_shape(64, 3) == (4, 4, 4)
    assert torus_shape(12, 3) == (2, 2, 3)
    assert torus_shape(4, 3) == (1, 2, 2)


def test_link_efficiency_defaults_by_kind_and_scales_the_bandwidth(tmp_path):
    """NVLink carries 80 % of its rate, InfiniBand 94 % (both cited in DEFAULT_EFFICIENCY),
    other kinds all of it unless the file says; a collective sees exactly the achieved
    bandwidth."""
    from simulator.cost.collectives import Collective, on, time_s

    cluster = load_cluster(write(tmp_path, GOOD))
    assert cluster.intra.efficiency == 0.8 and cluster.inter.efficiency == 0.94
    assert cluster.inter.achieved_bytes_per_s == pytest.approx(23.5e9)
    assert cluster.intra.achieved_bytes_per_s == pytest.approx(240e9)
    given = load_cluster(write(tmp_path, replace("latency_us = 2.7", "latency_us = 2.7\n"
                                                 "efficiency = 0.9")))
    assert given.inter.efficiency == 0.9
    for network in (cluster.intra, given.inter):
        assert on(Collective.ALL_REDUCE, 1e9, 8, network) == pytest.approx(time_s(
            Collective.ALL_REDUCE, 1e9, 8, network.bandwidth_bytes_per_s * network.efficiency,
            network.latency_s))
    assert cluster_for(load_device("a100"), 16).intra.efficiency == 0.8  # from its links


# ------------------------------------------------------------------------- validation errors

@pytest.mark.parametrize("old, new, pattern", [
    ('nodes = 2\n', 'nodes = 2\ncolour = "green"\n', r"colour: unknown key"),
    ('nodes = 2\n', '', r"nodes: missing required key"),
    ('nodes = 2', 'nodes = 0', r"nodes: must be > 0"),
    ('nodes = 2', 'nodes = 1.5', r"nodes: must be a whole number"),
    ('devices_per_node = 8', 'devices_per_node = -8', r"devices_per_node: must be > 0"),
    ('bandwidth_gb_per_s = 300', 'bandwidth_gb_per_s = 0', r"intra.bandwidth_gb_per_s: must be > 0"),
    ('bandwidth_gb_per_s = 25', 'bandwidth_gb_per_s = -1', r"inter.bandwidth_gb_per_s: must be > 0"),
    ('latency_us = 2.7', 'latency_us = "fast"', r"inter.latency_us: must be a number"),
    ('latency_us = 0.6\n', '', r"intra.latency_us: missing required key"),
    ('kind = "nvlink"', 'kind = "carrier-pigeon"', r"intra.kind: unknown network kind"),
    ('latency_us = 2.7', 'latency_us = 2.7\nefficiency = 1.2', r"inter.efficiency: must be in"),
    ('device = "a100"', 'device = "z9000"', r"device: unknown device 'z9000'"),
    ('topology = "switch"', 'topology = "ring"', r"topology: unknown topology 'ring'"),
    ('topology = "switch"', 'topology = "switch"\ntorus_dims = [4, 4]',
     r"torus_dims: only for topology"),
    ('topology = "switch"', 'topology = "torus"', r"torus_dims: a torus needs"),
    ('topology = "switch"', 'topology = "torus"\ntorus_dims = [4, 2, 4]',
     r"torus_dims: 4 x 2 x 4 = 32 devices but nodes x devices_per_node = 16"),
])
def test_bad_cluster_file_names_file_and_key(tmp_path, old, new, pattern):
    path = write(tmp_path, replace(old, new))
    with pytest.raises(SpecError, match=pattern) as error:
        load_cluster(path)
    message = str(error.value)
    assert message.startswith(path) and "\n" not in message


def test_several_nodes_need_an_inter_network(tmp_path):
    text = GOOD[:GOOD.index("[inter]")]
    with pytest.raises(SpecError, match=r"inter: missing: 2 nodes need an \[inter\]"):
        load_cluster(write(tmp_path, text))


def test_one_node_without_inter_is_fine(tmp_path):
    text = GOOD[:GOOD.index("[inter]")].replace("nodes = 2", "nodes = 1")
    assert load_cluster(write(tmp_path, text)).inter is None


def test_bad_toml(tmp_path):
    with pytest.raises(SpecError, match="not valid TOML"):
        load_cluster(write(tmp_path, "name = "))
