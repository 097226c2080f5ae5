"""Megatron-Core's MoE parallel folding (NVIDIA/Megatron-LM 7f22e210cd, in core_v0.10.0 and
later): the experts' groups come from a RankGenerator of their own (tp = expert tensor
parallel = tp here, ep, dp = expert data parallel, cp = 1; order tp-cp-ep-dp-pp), so context
parallelism folds into the experts' ep and data-parallel ranks: the ep ranks are tp apart and
the expert-data-parallel ranks tp x ep apart, whatever cp is.

16 H100 in 2 nodes of 8, tp 2, cp 2, dp 4, ep 4: an ep group is ranks {0, 2, 4, 6} (+1 for
the other tp rank): one node, 4 members (tp x cp = 4 apart before folding: 2 a node); its
expert-data-parallel group of dp x cp / ep = 2 is 8 apart: one member a node.
"""
from dataclasses import replace

import numpy as np

from simulator import simulate
from simulator.graph.collective import Axis
from simulator.graph.op import OpKind
from simulator.parallel.expert import local_members
from workloads.zoo import get_workload


def test_ep_members_per_node_do_not_depend_on_cp():
    assert local_members(8, 1, 8) == 8        # ep 8, tp 1: one node's NVLink, any cp
    assert local_members(8, 2, 8) == 4        # tp 2: 4 of a group in a node of 8
    assert local_members(8, 2, 64) == 8       # an NVL72 rack's 64 in one domain
    assert local_members(64, 1, 8) == 8       # 8 nodes of 8


def test_context_parallel_ranks_fold_into_the_experts_groups():
    work = replace(get_workload("mixtral-8x7b").with_layers(2), seq_len=2048)
    work = replace(work, moe=replace(work.moe, capacity_factor=1.0))
    r = simulate(work, "h100", num_devices=16, micro_batch=1, precision="bf16", tp=2, cp=2,
                 ep=4, sequence_parallel=True)
    low = r.lowered
    expert = (low.kind == OpKind.COLLECTIVE) & (low.axis == int(Axis.EXPERT))
    assert {(int(low.group[i]), int(low.local[i])) for i in np.flatnonzero(expert)} == {(4, 4)}
    names = {name: i for i, name in enumerate(low.names)}
    reductions = [i for name, i in names.items() if name.endswith(":experts")]
    assert reductions
    assert {(int(low.group[i]), int(low.local[i])) for i in reductions} == {(2, 1)}
