"""ClusterSpec: nodes x devices per node, the networks joining them, and their loader.

A cluster is data, like a device (STYLE.md rule 2): one file per preset in
``hardware_specs/clusters/*.toml``. Schema (datasheet units; ``hardware_specs.units`` converts)::

    name = "dgx-a100"     source = "..."
    device = "a100-sxm4-80gb"     # catalogue name, alias or path of a device spec file
    nodes = 1
    devices_per_node = 8
    topology = "switch"           # or "torus" (TPU ICI), then torus_dims = [4, 4, 4]
    node_power_w = 6500           # optional, cited: a node's maximum system power (datasheet)
    node_power_measured_w = 6000  # optional, cited: the most a node of this design was measured
                                  # to draw with its devices near full load (at most node_power_w)
    node_idle_w = 2200            # optional, cited: a node's measured wall power with its devices
                                  # idle (then its other parts follow the load: node_power_at)
    supply_efficiency = 0.97      # optional, cited, with node_idle_w: the node's measured power
                                  # conversion efficiency (DC out / AC in) under load (default 1)
    supply_efficiency_idle = 0.94 # optional, cited, with supply_efficiency: the same at rest
                                  # (default: supply_efficiency, one efficiency at any load)
    power_limit_w = 700           # optional, cited: the devices' default power set point as the
                                  # system ships (at most the device's TDP; default: the TDP)
    [intra]                       # the network inside a node (NVSwitch, PCIe, ICI)
    name = "nvswitch"   kind = "nvlink"   bandwidth_gb_per_s = 300   latency_us = 0.6
    [inter]                       # between nodes; required when nodes > 1
    name = "hdr-ib"   kind = "infiniband"   bandwidth_gb_per_s = 25   latency_us = 2.7
    efficiency = 0.9              # optional, either network: achieved fraction of the rate
                                  # (default ``DEFAULT_EFFICIENCY`` by kind, else 1.0)

Bandwidths are per device and per direction (a DGX A100's eight HDR NICs: 25 GB/s per GPU).
On a torus the intra bandwidth is that of all a chip's ICI links together; a group spanning
fewer axes uses fewer of them (``ClusterSpec.group_network``). A TPU slice's hosts are joined by
the same ICI, so its ``inter`` is the ICI network too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum
from importlib import resources
from typing import Any

from hardware_specs import units
from hardware_specs.loader import _Checker, load_device, read_toml
from hardware_specs.spec import DeviceClass, DeviceSpec, Link, LinkKind, fraction, within
from simulator.errors import (PlanError, SpecError, canonical, did_you_mean, read_input,
                              shown)


class Topology(str, Enum):
    SWITCH = "switch"    # every device reaches every other at full bandwidth (NVSwitch, a fat tree)
    TORUS = "torus"      # TPU ICI: neighbours only, wrap-around links, ``torus_dims``


@dataclass(frozen=True)
class Network:
    """One network: bandwidth per device, per direction; latency per message step (alpha)."""

    name: str
    kind: LinkKind
    bandwidth_bytes_per_s: float
    latency_s: float
    # Achieved fraction of the link rate at the application level (packet and protocol
    # overhead), as memory_efficiency is of a memory's; ``DEFAULT_EFFICIENCY`` by kind.
    efficiency: float = 1.0

    def __post_init__(self) -> None:
        within(self.bandwidth_bytes_per_s, "bandwidth_bytes_per_s", "bytes_per_s")
        within(self.latency_s, "latency_s", "s")
        fraction(self.efficiency, "efficiency")

    @property
    def achieved_bytes_per_s(self) -> float:
        return self.bandwidth_bytes_per_s * self.efficiency


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    device: DeviceSpec
    nodes: int
    devices_per_node: int
    intra: Network
    inter: Network | None
    topology: Topology = Topology.SWITCH
    torus_dims: tuple[int, ...] | None = None
    source: str = ""
    path: str = ""
    # A node's maximum system power from its datasheet (GPUs, CPUs, NICs, switches, fans,
    # power supplies); None where none is cited.
    node_power_w: float | None = None
    # The most a node of this design was measured to draw at the wall with its devices near full
    # load (a published measurement, cited in the preset); None where none is cited. Where
    # given, the node overhead is taken from it instead of the datasheet rating.
    node_power_measured_w: float | None = None
    # A node's measured wall power with its devices idle (its other parts at rest, its power
    # supplies' losses included); None where none is cited. Where given, the node's other parts
    # follow the load (``node_power_at``) instead of drawing the maximum's remainder throughout.
    node_idle_w: float | None = None
    # The node's measured power conversion efficiency under load (DC out over AC in), at which
    # a loaded node's DC draw is converted at the wall; 1.0 where none is cited.
    supply_efficiency: float = 1.0
    # The same efficiency measured with the node at rest (its idle's DC draw is
    # ``node_idle_w`` times it); None: ``supply_efficiency``, one efficiency at any load.
    supply_efficiency_idle: float | None = None
    # The devices' default power limit as the system ships them (the set point nvidia-smi and
    # the BMC report), where its vendor documents one below the device's TDP; None: the TDP.
    # simulate() applies it when the plan gives no power_limit_w (simulator.cost.power).
    power_limit_w: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.device, DeviceSpec):
            raise SpecError(f"device = {shown(self.device)} must be a DeviceSpec")
        within(self.nodes, "nodes", "count")
        within(self.devices_per_node, "devices_per_node", "count")
        within(self.num_devices, "nodes x devices_per_node", "count")
        within(self.node_power_w, "node_power_w", "node_w", optional=True, low_open=True)
        within(self.node_power_measured_w, "node_power_measured_w", "node_w", optional=True,
               low_open=True)
        within(self.power_limit_w, "power_limit_w", "w", optional=True, low_open=True)
        within(self.node_idle_w, "node_idle_w", "node_w", optional=True, low_open=True)
        fraction(self.supply_efficiency, "supply_efficiency")
        fraction(self.supply_efficiency_idle, "supply_efficiency_idle", optional=True)
        if (self.supply_efficiency_idle is not None
                and self.supply_efficiency_idle > self.supply_efficiency):
            raise SpecError(f"supply_efficiency_idle = {self.supply_efficiency_idle:g} is above "
                            f"supply_efficiency ({self.supply_efficiency:g})")

    @property
    def node_max_w(self) -> float | None:
        """The most a node draws: its measured maximum where one is cited, else its datasheet
        rating; None without either."""
        return (self.node_power_measured_w if self.node_power_measured_w is not None
                else self.node_power_w)

    def node_power_at(self, device_w: float) -> float:
        """A node's wall power with each of its devices drawing ``device_w`` on average.

        With a measured idle (``node_idle_w``): the node's DC draw is its DC draw at rest
        (the idle times the supplies' efficiency at rest, ``supply_efficiency_idle``) plus the
        devices' power above their own idle, converted at the wall at the efficiency under
        load (``supply_efficiency``):
        ``(supply_efficiency_idle x node_idle_w + n (device_w - idle_w)) / supply_efficiency``,
        held between the idle and the node's maximum (``node_max_w``) where one is cited.
        With one efficiency at any load this is ``node_idle_w + n (device_w - idle_w) /
        supply_efficiency``. Where the efficiency at rest is the lower, as a power supply's
        at light load, the form falls under the idle just above rest, where the efficiency
        between the two measured ones is not known: the node is held at its idle there. The
        other parts (CPUs, NICs, switches, fans or pumps) stay at their idle draw: no cited
        figure gives their part-load rise, so this is a lower bound where they work harder.
        Without a measured idle: the devices plus ``node_overhead_w``, the maximum's remainder
        at any load."""
        n = self.devices_per_node
        if self.node_idle_w is None:
            return n * device_w + self.node_overhead_w
        at_rest = (self.supply_efficiency_idle if self.supply_efficiency_idle is not None
                   else self.supply_efficiency)
        node_w = ((at_rest * self.node_idle_w + n * (device_w - self.device.idle_power_w))
                  / self.supply_efficiency)
        cap = self.node_max_w
        return min(max(node_w, self.node_idle_w), cap if cap is not None else math.inf)

    def overhead_at(self, device_w: float) -> float:
        """Watts a node draws besides its devices when each draws ``device_w``:
        ``node_power_at(device_w)`` less the devices' own, at least 0."""
        if self.node_idle_w is None:
            return self.node_overhead_w
        return max(self.node_power_at(device_w) - self.devices_per_node * device_w, 0.0)

    @property
    def node_overhead_w(self) -> float:
        """Watts a node draws besides its devices at full load (its devices at their TDP).
        With a measured idle: ``overhead_at`` the TDP. Else its maximum system power less its
        devices' TDPs; the measured maximum (``node_power_measured_w``) where one is cited,
        else the datasheet's rating (an upper bound: fans and CPUs at full load); 0.0 without
        either."""
        if self.node_idle_w is not None:
            return self.overhead_at(self.device.tdp_w)
        node_w = self.node_max_w
        if node_w is None:
            return 0.0
        return max(node_w - self.devices_per_node * self.device.tdp_w, 0.0)

    @property
    def num_devices(self) -> int:
        return self.nodes * self.devices_per_node

    def with_nodes(self, nodes: int) -> ClusterSpec:
        """The same node design, ``nodes`` of them (a DGX H100 node -> a 32-node SuperPOD)."""
        if self.topology is Topology.TORUS:
            # each command's own flags: predict's --device, compare's and sweep's --devices
            device = self.device.name
            raise PlanError(f"cluster {self.name} is a {self.torus_dims} torus of "
                            f"{self.num_devices} devices, not scaled by nodes: for another size "
                            f"give its device in place of the preset, with the count (predict: "
                            f"--device {device} --num-devices N; compare: --devices {device} "
                            f"--num-devices N; sweep: --devices {device} --device-counts N; "
                            "cluster_for builds its network) or a cluster .toml file")
        if nodes > 1 and self.inter is None:
            raise PlanError(f"cluster {self.name} has no [inter] network: it cannot span "
                            f"{nodes} nodes")
        return replace(self, nodes=nodes)

    def group_network(self, group_size: int) -> Network:
        """The intra network as a group of ``group_size`` neighbouring devices sees it.

        Switch: unchanged. Torus: a group along k of the d axes drives 2k of the 2d links
        (a bidirectional ring per axis; Austin et al., "How to Scale Your Model", sharding.md:
        an AllGather over one axis takes V / W_ici, over several axes V / (axes x W_ici)).
        """
        if self.topology is not Topology.TORUS or not self.torus_dims:
            return self.intra
        spanned, covered = 0, 1
        for dim in self.torus_dims:
            if covered >= group_size:
                break
            covered *= dim
            spanned += dim > 1
        fraction = max(spanned, 1) / len(self.torus_dims)
        return replace(self.intra, bandwidth_bytes_per_s=self.intra.bandwidth_bytes_per_s
                       * fraction)


# ---------------------------------------------------------------------------------- defaults

#: Achieved fraction of an InfiniBand NIC's line rate through NCCL: "For NDR @ 400Gbps you
#: should see 46-48GB/s per NIC" (D. Addison, NVIDIA, NVIDIA/nccl-tests issue #290,
#: 2025-03-03): 47 of 50 GB/s. Checks: HDR, a DGX with 8 NICs of 200 Gb/s has "a top speed of
#: 190 GB/s" (S. Jeaugey, NVIDIA/nccl issue #689, 2023): 0.95. (NCCL's search.cc
#: sm90SpeedArrayInter is a list of bandwidths its topology search tries, not an achieved
#: rate: no check.)
IB_EFFICIENCY = 0.94
#: Default inter-node network for ``cluster_for``: one 200 Gb/s HDR InfiniBand NIC per GPU, as in
#: a DGX A100 (NVIDIA DGX A100 User Guide, "Hardware Overview": 8 x single-port ConnectX-6 VPI
#: 200 Gb/s HDR InfiniBand) = 25 GB/s per device per direction, at ``IB_EFFICIENCY``. Latency:
#: NCCL's per-step network latency, 2.7 us (NVIDIA/nccl src/graph/tuning.cc,
#: hwLat[NET][Ring][LL]).
DEFAULT_INTER = Network("hdr-infiniband", LinkKind.INFINIBAND, 25e9, 2.7e-6, IB_EFFICIENCY)

#: Per-step latency of a link kind when its device file gives none. NVLink and PCIe: NCCL's
#: hwLat[NVLINK|PCI][Ring][LL] = 0.6 / 1.0 us (NVIDIA/nccl src/graph/tuning.cc). ICI: "each hop
#: ... typically around 1us" (Austin et al., "How to Scale Your Model", sharding.md).
DEFAULT_LATENCY_S = {LinkKind.NVLINK: 0.6e-6, LinkKind.INFINITY_FABRIC: 0.6e-6,
                     LinkKind.PCIE: 1.0e-6, LinkKind.ICI: 1.0e-6}
#: Achieved fraction of a link kind's rate when its file gives none. NVLink: "the app-level
#: bandwidth is 80% of the peak bandwidth" because of NVLink packet overhead (NCCL maintainer
#: S. Jeaugey, NVIDIA/nccl issue #1054, 2023-11-06; NCCL's topology model uses 20 GB/s per
#: NVLink 3 link of 25, src/graph/topo.h SM80_NVLINK_BW); checks on NVLink 4 and 5: a ring
#: all-reduce's bus bandwidth is 82 % of the per-direction rate on an 8 x H200 node (NVLS off)
#: and 740.64 of 900 GB/s on an 8 x B200 node (stas00/ml-engineering network/README.md).
#: InfiniBand: ``IB_EFFICIENCY``.
#: Other kinds: no cited figure, 1.0.
DEFAULT_EFFICIENCY = {LinkKind.NVLINK: 0.8, LinkKind.INFINIBAND: IB_EFFICIENCY}
_FABRICS = (LinkKind.NVLINK, LinkKind.INFINITY_FABRIC, LinkKind.IPU_LINK, LinkKind.ETHERNET)
GPU_NODE_SIZE = 8       # DGX / HGX A100 and H100, AMD MI300X platform, Gaudi2 HLS: 8 per node
TPU_HOST_SIZE = 4       # TPU v4 / v5p: 4 chips per host (Cloud TPU docs, system architecture)


# ------------------------------------------------------------------------------------ public

def list_clusters() -> list[str]:
    """Preset names, sorted: the stems of the shipped ``clusters/*.toml`` files."""
    return sorted(e.name[:-len(".toml")] for e in _presets().iterdir()
                  if e.name.endswith(".toml"))


def load_cluster(name_or_path: str) -> ClusterSpec:
    """A preset name or a path to a cluster ``.toml`` file -> a validated ClusterSpec."""
    if not isinstance(name_or_path, str):
        raise SpecError(f"cluster = {shown(name_or_path)} must be a preset name or a cluster "
                        ".toml file")
    text = name_or_path.strip()
    if text.endswith(".toml") or "/" in text or "\\" in text:
        data = read_input(text, "cluster spec", SpecError, hint=": give an existing .toml file "
                          f"or a preset name ({', '.join(list_clusters())})")
        return parse_cluster(data, shown(text, 200)[1:-1])
    # loosely spelled as device names are (``canonical``: DGX_A100, dgxa100, TPU v4 pod slice)
    name = {canonical(n): n for n in list_clusters()}.get(canonical(text))
    if name is None:
        raise SpecError(f"unknown cluster {shown(text)}"
                        f"{did_you_mean(text, list_clusters())}: choose one of "
                        f"{', '.join(list_clusters())} or give a cluster .toml file")
    resource = _presets() / f"{name}.toml"
    return parse_cluster(resource.read_bytes(), f"hardware_specs/clusters/{name}.toml")


def parse_cluster(data: bytes, path: str) -> ClusterSpec:
    """TOML bytes of one cluster file -> ClusterSpec; ``path`` only names the file in errors."""
    return _ClusterChecker(path).cluster(read_toml(data, path))


def cluster_for(device: DeviceSpec, num_devices: int) -> ClusterSpec:
    """The obvious cluster of ``num_devices`` x ``device`` (what ``--num-devices N`` builds).

    GPUs and accelerators: 8 per node on their NVLink / Infinity Fabric (else PCIe), nodes
    joined by ``DEFAULT_INTER``. TPUs: 4 chips per host, all on the ICI torus. CPUs and FPGAs:
    one per node.
    """
    if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1:
        raise PlanError(f"num_devices = {num_devices!r} must be a positive integer")
    if device.device_class is DeviceClass.TPU:
        return _tpu_slice(device, num_devices)
    per_node, intra = _node_of(device)
    per_node = min(per_node, num_devices)
    if num_devices % per_node:
        raise PlanError(f"num_devices = {num_devices} is not a multiple of the {per_node} "
                        f"{device.name} per node: use {num_devices // per_node * per_node} or "
                        f"{(num_devices // per_node + 1) * per_node}")
    return ClusterSpec(name=f"{num_devices}x{device.name}", device=device,
                       nodes=num_devices // per_node, devices_per_node=per_node, intra=intra,
                       inter=DEFAULT_INTER, source="hardware_specs.cluster.cluster_for")


# ----------------------------------------------------------------------------------- private

def _presets():
    return resources.files("hardware_specs").joinpath("clusters")


def _network(link: Link) -> Network:
    latency = link.latency_s if link.latency_s is not None else \
        DEFAULT_LATENCY_S.get(link.kind, DEFAULT_INTER.latency_s)
    return Network(link.name, link.kind, link.bandwidth_bytes_per_s, latency,
                   DEFAULT_EFFICIENCY.get(link.kind, 1.0))


def _node_of(device: DeviceSpec) -> tuple[int, Network]:
    """Devices per node and the network inside the node, from the device's own links."""
    if device.device_class in (DeviceClass.CPU, DeviceClass.FPGA) or not device.links:
        return 1, DEFAULT_INTER     # never used: one device per node
    # An NVLink bridge joins pairs only (A100 / H100 PCIe datasheets): 8 of them share PCIe.
    fabrics = [link for link in device.links
               if link.kind in _FABRICS and "bridge" not in link.name]
    pcie = [link for link in device.links if link.kind is LinkKind.PCIE]
    chosen = fabrics[0] if fabrics else (pcie or list(device.links))[0]
    return GPU_NODE_SIZE, _network(chosen)


def _tpu_slice(device: DeviceSpec, num_devices: int) -> ClusterSpec:
    ici = [link for link in device.links if link.kind is LinkKind.ICI]
    if not ici:
        raise SpecError(f"{device.path or device.name}: links: a TPU needs an [[links]] entry "
                        f"of kind 'ici' to build a slice; add it")
    per_host = min(TPU_HOST_SIZE, num_devices)
    if num_devices % per_host:
        raise PlanError(f"num_devices = {num_devices} is not a multiple of the {per_host} "
                        f"{device.name} chips per host")
    network = _network(ici[0])
    axes = max(ici[0].count // 2, 1)      # 2 links per torus axis: 6 -> 3D, 4 -> 2D
    return ClusterSpec(name=f"{num_devices}x{device.name}", device=device,
                       nodes=num_devices // per_host, devices_per_node=per_host,
                       intra=network, inter=network, topology=Topology.TORUS,
                       torus_dims=torus_shape(num_devices, axes),
                       source="hardware_specs.cluster.cluster_for")


def torus_shape(num_devices: int, axes: int) -> tuple[int, ...]:
    """``num_devices`` as ``axes`` dims, as even as prime factors allow: 64, 3 -> (4, 4, 4)."""
    dims = [1] * axes
    factors, rest, p = [], num_devices, 2
    while rest > 1:
        while rest % p == 0:
            factors.append(p)
            rest //= p
        p += 1
    for factor in sorted(factors, reverse=True):
        dims[dims.index(min(dims))] *= factor
    return tuple(sorted(dims))


_TOP_REQUIRED = ("name", "source", "device", "nodes", "devices_per_node", "topology", "intra")
_TOP_OPTIONAL = ("inter", "torus_dims", "node_power_w", "node_power_measured_w",
                 "power_limit_w", "node_idle_w", "supply_efficiency", "supply_efficiency_idle")
_NET_REQUIRED = ("name", "kind", "bandwidth_gb_per_s", "latency_us")
_NET_OPTIONAL = ("efficiency",)


class _ClusterChecker(_Checker):
    """Validates one parsed cluster document; every method raises SpecError naming the file."""

    def cluster(self, doc: dict) -> ClusterSpec:
        self.keys(doc, "", _TOP_REQUIRED, _TOP_OPTIONAL)
        nodes = self.integer(doc["nodes"], "nodes")
        per_node = self.integer(doc["devices_per_node"], "devices_per_node")
        inter = self.network(self.table(doc, "inter"), "inter") if "inter" in doc else None
        if nodes > 1 and inter is None:
            raise self.fail("inter", f"missing: {nodes} nodes need an [inter] network; add it")
        topology = self.choice(doc["topology"], Topology, "topology", "topology")
        device = self.device_of(doc["device"])
        limit = (self.positive(doc["power_limit_w"], "power_limit_w", "w")
                 if "power_limit_w" in doc else None)
        if limit is not None and limit > device.tdp_w:
            raise self.fail("power_limit_w", f"{limit:g} W is above {device.name}'s TDP "
                            f"({device.tdp_w:g} W); give at most the TDP or leave it out")
        rated, measured = (self.positive(doc[key], key, "node_w") if key in doc else None
                           for key in ("node_power_w", "node_power_measured_w"))
        if rated is not None and measured is not None and measured > rated:
            raise self.fail("node_power_measured_w", f"{measured:g} W is above node_power_w "
                            f"({rated:g} W, the rating); give the measured maximum, at most "
                            f"the rating")
        idle = (self.positive(doc["node_idle_w"], "node_idle_w", "node_w")
                if "node_idle_w" in doc else None)
        devices_idle = per_node * device.idle_power_w
        top = measured if measured is not None else rated
        if idle is not None and idle < devices_idle:
            raise self.fail("node_idle_w", f"{idle:g} W is below its {per_node} devices' own "
                            f"idle ({devices_idle:g} W); give the whole node's idle draw")
        if idle is not None and top is not None and idle >= top:
            raise self.fail("node_idle_w", f"{idle:g} W is not below the node's maximum "
                            f"({top:g} W); give the node's draw with its devices idle")
        efficiency = 1.0
        if "supply_efficiency" in doc:
            if idle is None:
                raise self.fail("supply_efficiency", "needs node_idle_w (the load it scales "
                                "is the devices' power above the node's idle); add it or "
                                "leave supply_efficiency out")
            efficiency = self.positive(doc["supply_efficiency"], "supply_efficiency")
            if efficiency > 1:
                raise self.fail("supply_efficiency", f"{efficiency:g} is above 1; give DC "
                                "out over AC in, a fraction such as 0.97")
        at_rest = None
        if "supply_efficiency_idle" in doc:
            if "supply_efficiency" not in doc:
                raise self.fail("supply_efficiency_idle", "needs supply_efficiency (the "
                                "efficiency under load it rises to); add it or leave "
                                "supply_efficiency_idle out")
            at_rest = self.positive(doc["supply_efficiency_idle"], "supply_efficiency_idle")
            if at_rest > efficiency:
                raise self.fail("supply_efficiency_idle", f"{at_rest:g} is above "
                                f"supply_efficiency ({efficiency:g}); node_power_at takes the "
                                "efficiency to rise from rest to load: give the one measured "
                                "at rest, at most the one under load")
        return self.made(
            ClusterSpec, "cluster",
            name=self.text(doc["name"], "name"), device=device,
            nodes=nodes, devices_per_node=per_node,
            intra=self.network(self.table(doc, "intra"), "intra"), inter=inter,
            topology=topology, torus_dims=self.dims(doc, topology, nodes * per_node),
            node_power_w=rated, node_power_measured_w=measured,
            node_idle_w=idle, supply_efficiency=efficiency,
            supply_efficiency_idle=at_rest, power_limit_w=limit,
            source=self.text(doc["source"], "source"), path=self.path)

    def device_of(self, value: Any) -> DeviceSpec:
        try:
            return load_device(self.text(value, "device"))
        except SpecError as error:
            raise self.fail("device", f"{error}") from None

    def dims(self, doc: dict, topology: Topology, devices: int) -> tuple[int, ...] | None:
        if topology is not Topology.TORUS:
            if "torus_dims" in doc:
                raise self.fail("torus_dims", "only for topology = \"torus\"; remove it")
            return None
        if "torus_dims" not in doc or not isinstance(doc["torus_dims"], list):
            raise self.fail("torus_dims", "a torus needs torus_dims = [x, y, z]; add it")
        dims = tuple(self.integer(d, f"torus_dims[{i}]") for i, d in enumerate(doc["torus_dims"]))
        if math.prod(dims) != devices:
            raise self.fail("torus_dims", f"{' x '.join(map(str, dims))} = {math.prod(dims)} "
                            f"devices but nodes x devices_per_node = {devices}; make them agree")
        return dims

    def network(self, table: dict, where: str) -> Network:
        self.keys(table, where, _NET_REQUIRED, _NET_OPTIONAL)
        kind = self.choice(table["kind"], LinkKind, f"{where}.kind", "network kind")
        bandwidth = self.positive(table["bandwidth_gb_per_s"], f"{where}.bandwidth_gb_per_s",
                                  "bytes_per_s", units.GB_PER_S)
        latency = self.positive(table["latency_us"], f"{where}.latency_us", "s", units.US)
        efficiency = (self.fraction(table["efficiency"], f"{where}.efficiency")
                      if "efficiency" in table else DEFAULT_EFFICIENCY.get(kind, 1.0))
        return self.made(Network, where, name=self.text(table["name"], f"{where}.name"),
                         kind=kind, bandwidth_bytes_per_s=units.gb_per_s_to_bytes_per_s(bandwidth),
                         latency_s=units.us_to_s(latency), efficiency=efficiency)
