"""Expert parallelism: a mixture of experts' routed experts sharded over ``ep`` ranks, the
tokens sent to their experts and back by all-to-all (Lepikhin et al. 2020, "GShard",
arXiv:2006.16668, sec. 2.3 and 3.2; Megatron-Core's ``MoEAlltoAllTokenDispatcher``,
megatron/core/transformer/moe/token_dispatcher.py).

A graph transform over one tensor-parallel rank's forward (``simulator.parallel.tensor``'s
output), returning a new graph. It reads each op's ``Role``:

- every grouped expert GEMM (``Role.EXPERT_COLUMN``, ``Role.EXPERT_ROW``) keeps experts / ep of
  the experts, their weights (and so their gradients and optimizer states) 1/ep; the token
  copies it runs are the same in number: each rank receives, on average, as many copies from
  the other ranks for its experts as it sends them for theirs;
- after the permutation (``Role.EXPERT_DISPATCH``) an all-to-all among the ep ranks sends
  each copy to its expert's rank (dispatch); before the un-permutation
  (``Role.EXPERT_COMBINE``) an all-to-all brings the results back (combine). Each moves the
  rank's token copies, slots x hidden elements, (ep - 1) / ep of them over the network
  (``simulator.cost.collectives``, NCCL's all-to-all: pairwise exchange, Thakur et al. 2005);
  the busiest rank receives ``load`` times the mean (``busiest_load``), so the buffer is
  scaled by it, and so is its grouped GEMMs' time (their ``load`` fact, set here: with ep = 1
  one device runs all the experts and the imbalance changes nothing). Their backward is the
  all-to-all the other way (``ADJOINT``).

Load: the larger of the router's imbalance on the ep ranks and the spread of a router
balanced in expectation. The router's: the workload's ``imbalance`` (the busiest expert's
load over the mean), by default the measured MaxVio of its router type
(``workloads.moe.MAXVIO``: Wang et al. 2024, arXiv:2408.15664, Table 2, aux-loss 0.52,
loss-free 0.04, over 64 experts), taken as a spread sigma of the experts' loads (1 + sigma
(Z_e - mean Z), Z iid normal: ``router_spread``, ``expert_imbalance``) and summed over a
rank's experts / ep experts (``rank_imbalance``: 1 + sigma E[max of ep normals] / sqrt(experts
/ ep); Mixtral's aux-loss default on 8 ranks: 1.316, DeepSeek-V3's loss-free on 64: 1.020).
The sampling spread (``sampling_load``): a micro-batch's copies fall on the ranks at random,
so the busiest of ep ranks receives, in expectation, the mean plus E[max of ep correlated
normals] standard deviations: closed form, checked against a Monte Carlo of top-k routing in
tests/test_moe_load.py; Mixtral 8x7B, 4,096 tokens x top-2 a rank over 8 ranks: 1.015.

Capacity (``busiest_load``, ``dropped_fraction``): with a capacity factor C each rank keeps
at most C x its mean copies per expert (Megatron-Core's ``apply_router_token_dropping``,
moe_utils.py at NVIDIA/Megatron-LM d98e8a64dd). Padded to capacity (``pad_to_capacity``,
NeMo's recipes) every expert runs exactly C x the mean, however the tokens spread. Dropping
without padding (Megatron-Core's default) the busiest rank runs min(load, C) (an upper
bound), and the copies over capacity are dropped: their expected share, E[(X - C)^+] of
normal per-expert loads (the router's spread and the binomial sampling of a rank's tokens),
comes off every rank's permutation and grouped GEMMs (FLOPs, model FLOPs included) and so off
the all-to-alls (``_keep``); the GEMMs keep the rows per expert of all the copies for their
shape efficiency. ``--json`` reports the figures (``figures``: parallel.moe).

Placement: Megatron-Core's MoE parallel folding (NVIDIA/Megatron-LM 7f22e210cd, 2024-11-23,
"MoE parallel folding: separate MoE parallel states from dense", in every release since
v0.10, so in NeMo 25.02 and 25.04; Liu et al. 2025, arXiv:2504.14960) generates the experts'
groups with a RankGenerator of their own, tp = the expert tensor parallel size (= tp here),
ep, dp = the expert data parallel size, cp = 1, order "tp-cp-ep-dp-pp": the dense layers'
context-parallel ranks fold into the experts' ep and data-parallel ranks. The ep ranks are
therefore tp apart and a node of d devices holds gcd(ep, d / tp) of a group: ep = 8 with
tp = 1 is one node's NVLink, and so is ep = 8 with tp = 1 and cp = 8; ep = 64 spans 8 nodes
and pays the inter-node network for 56 of 64 peers. (Before folding, Megatron-Core v0.9 and
earlier, ep ranks were tp x cp apart and ep had to divide dp; with cp = 1 the two agree.)

Overlap: the all-to-alls run on the model-parallel communicator's stream, and the routed
experts wait for the dispatch, the layer's output for the combine. The shared experts (which
read the layer's input, not the routed copies) run after the combine, in sequence, as
Megatron-Core's ``MoELayer`` runs them by default (``shared_experts(hidden_states)`` added to
the routed output); with ``ParallelPlan.moe_shared_expert_overlap`` (Megatron-Core's
``--moe-shared-expert-overlap``, DeepSeek-V3's schedule) they run on the compute stream while
the all-to-alls move the tokens.

Host synchronisation: without a capacity factor (dropless) the all-to-all's split sizes
depend on the routing, so Megatron-Core's ``MoEAlltoAllTokenDispatcher`` copies the token
counts to the host and calls ``torch.cuda.current_stream().synchronize()`` before the
dispatch all-to-all of each MoE layer's forward (``cuda_sync_point = "before_ep_alltoall"``,
megatron/core/transformer/moe/token_dispatcher.py at NVIDIA/Megatron-LM c230e0d7c2, MCore
v0.9-0.10; with a capacity factor and ``--moe-pad-expert-input-to-capacity`` the sizes are
known and it does not: ``"no_sync"``). With ep = 1 the dropless permutation carries it (no
all-to-all; the host still reads the tokens per expert: ``"before_ep_alltoall"`` or
``"before_finish"``); dropping over a capacity without padding, the host reads the count of
copies kept before the permutation (``"before_permutation_1"``, token_dispatcher.py at
d98e8a64dd), at any ep; DeepEP's dispatch (``deepep``), in a node or across nodes, does not.
The dispatch carries the fact ``sync``, and ``simulator.cost.host.sync_calls`` makes the host
wait for the device before issuing it (in the forward and a recomputation; the backward
reuses the sizes). The dropless permutation itself (moe_utils.permute at the same commit:
``masked_select``, whose output size the host must read) waits just before it, so the host
waits once either way. Not modelled: DeepEP's own sync.

Gradients (``reduce_expert_gradients``): a rank's experts are held by the dp x cp / ep ranks
of its expert-data-parallel group, tp x ep apart (Megatron-Core's ``expert_data_parallel``
group: its distributed optimizer reduce-scatters, its DDP all-reduces, the experts' gradients
there and the other parameters' over dp x cp), so each layer's data-parallel reduction is split
in two: the dense parameters' over the replicas, the experts' over their group. With ep = 8 in
a node the expert group has one rank per node: its reduction crosses the inter-node network
whole, not the 1/8 the hierarchical all-reduce of all the replicas sends there.

ZeRO shards the experts' states over the same group (``simulator.schedule.memory``), and
so each rank's update covers 1/(dp x cp / ep) of its experts (``shard_expert_updates``;
Megatron-Core's distributed optimizer splits each buffer over its own group).

Left out: the split is made for the per-layer reductions (Megatron-Core, FSDP, DDP), not for
DeepSpeed's multi-layer buckets, hybrid sharding's copies or ZeRO-3's gathers; with
dropping, the activation between the expert GEMMs and the un-permutation keep every copy's
size; the far tail of the dropped share (the normal approximation to the binomial
underestimates it: at C = 1.1, 8 experts, 2,048 tokens, 5.4e-5 for a Monte Carlo's 4.4e-5);
a router's imbalance by layer, by domain or over training (one figure for every layer and
step); Megatron-Core's ``--moe-token-drop-policy`` (which copies are dropped, not how many).
"""
from __future__ import annotations

import math

from simulator.errors import PlanError
from simulator.graph.collective import Axis, collective
from simulator.graph.op import Block, Op, OpKind, Phase, Role, Task
from simulator.graph.opgraph import OpGraph
from simulator.parallel.order_stats import expected_max_normal
from simulator.parallel.tensor import grouped
from workloads.moe import MAXVIO, MAXVIO_EXPERTS

#: Roles of the grouped expert GEMMs.
EXPERTS = frozenset({Role.EXPERT_COLUMN, Role.EXPERT_ROW})


def check(work, ep: int) -> None:
    """PlanError naming the numbers when ``ep`` cannot split ``work``'s experts."""
    moe = getattr(work, "moe", None)
    if ep == 1:
        return
    if moe is None:
        raise PlanError(f"ep = {ep}: expert parallelism splits a mixture of experts' experts "
                        f"and {getattr(work, 'name', 'this model')} has none; use dp, tp, pp "
                        "and cp")
    if moe.experts % ep:
        raise PlanError(f"ep = {ep} must divide experts = {moe.experts} (each rank holds "
                        "experts / ep of them)")


def local_members(ep: int, tp: int, per_node: int) -> int:
    """Members of an ep group in one node: the ep ranks are tp apart (Megatron-Core's experts'
    rank order under MoE parallel folding: context parallelism folds into ep and the experts'
    data parallelism), so a node holds gcd(ep, devices per node / tp) of them (1 at least)."""
    return math.gcd(ep, max(per_node // tp, 1))


def shard(forward: OpGraph, ep: int, local: int = 0, overlap_shared: bool = False,
          deepep: bool = False, moe=None) -> OpGraph:
    """What one of ``ep`` expert-parallel ranks runs of ``forward`` (``forward`` if ep = 1, or
    if it has no experts); ``local``: members of the group per node (0: as many as fit);
    ``overlap_shared``: the shared experts run beside the all-to-alls (else after the
    combine); ``deepep``: DeepEP's two-hop dispatch (``nodes_per_token``) for ``moe`` (the
    workload's ``workloads.moe.MoE``)."""
    # Megatron-Core's all-to-all dispatcher reads the split sizes on the host first, dropless
    # and dropping without padding (DeepEP's dispatch is not that dispatcher)
    sync = moe is not None and not deepep and not (
        moe.capacity_factor is not None and moe.pad_to_capacity)
    if not any(op.role in EXPERTS for op in forward.ops()):
        return forward
    copies = _copies_per_rank(forward)
    dropping = moe is not None and moe.capacity_factor is not None and not moe.pad_to_capacity
    kept = 1.0 - dropped_fraction(moe, copies) if dropping else 1.0
    if ep == 1 or dropping:
        # ep = 1: no all-to-all, the host still reads the tokens per expert at the
        # permutation; dropping: "before_permutation_1" (token_dispatcher.py at d98e8a64dd)
        forward = _sync_permutation(forward) if sync else forward
    if ep == 1:   # one device runs every copy kept: balanced
        return _keep(forward, kept, None) if dropping else forward
    members = local or ep
    hops = None
    if deepep and moe is not None and ep > members:
        hops = (ep // members, members, nodes_per_token(moe, ep // members))
    # the busiest rank's work over the mean of all routed copies: its all-to-alls' share
    load = busiest_load(moe, copies, ep) if moe is not None else 1.0
    out = _shard(forward, ep, local, hops, moe.top_k if moe is not None else 1, load,
                 sync and not dropping)
    if dropping:   # the grouped GEMMs' load: over the mean of the copies kept
        out = _keep(out, kept, load / kept)
    if not overlap_shared:
        _shared_after_combine(out)
    return out


def sampling_load(copies: float, ep: int, experts: int = 0, top_k: int = 1) -> float:
    """The busiest of ``ep`` ranks' expected token copies over the mean, ``copies`` a rank on
    average, when a router balanced in expectation sends each token to ``top_k`` distinct
    experts of ``experts`` (experts / ep a rank) uniformly and independently of the other
    tokens. A token's copies on one rank are hypergeometric (variance k (1/ep)(1 - 1/ep)
    (E - k)/(E - 1)), so a rank's count has mean ``copies`` and variance copies (1 - 1/ep)
    (E - k)/(E - 1) (E = 0: copies picking ranks independently, the factor 1), and the ep
    counts, which sum to the group's copies, are correlated -1/(ep - 1). For such normals
    X_i = (Z_i - mean Z) / sqrt(1 - 1/ep) in law, so the expected maximum is the mean plus
    ``expected_max_normal(ep)`` x sqrt(copies (E - k)/(E - 1)). A floor: tokens of one
    sequence route alike (correlated), which spreads the counts further."""
    if ep <= 1 or copies <= 0:
        return 1.0
    distinct = (experts - top_k) / (experts - 1) if experts > 1 else 1.0
    return 1.0 + expected_max_normal(ep) * math.sqrt(distinct / copies)


def expert_imbalance(moe) -> float:
    """The busiest expert's load over the mean (1 + MaxVio) of ``moe``'s router: its
    ``imbalance``, or the measurement for its router type (``workloads.moe.MAXVIO``: loss-free
    with ``router_bias``, else an auxiliary loss) carried over to its count of experts as a
    spread: measured over 64 experts as 1 + ``router_spread`` x E[max of 64 normals], so over
    E experts 1 + that spread x E[max of E normals] (8 experts, an aux-loss router: 1.316)."""
    if moe.imbalance is not None:
        return float(moe.imbalance)
    maxvio = MAXVIO["loss_free" if moe.router_bias else "aux_loss"]
    return 1.0 + maxvio * expected_max_normal(moe.experts) / expected_max_normal(MAXVIO_EXPERTS)


def router_spread(moe) -> float:
    """sigma of the router's load model: the experts' loads over the mean are 1 + sigma (Z_e -
    mean Z), Z_e independent standard normals (they sum to the total), so the busiest of E is
    1 + sigma E[max of E normals] = ``expert_imbalance`` (0 for one expert)."""
    top = expected_max_normal(moe.experts)
    return (expert_imbalance(moe) - 1.0) / top if top > 0 else 0.0


def rank_imbalance(moe, ep: int) -> float:
    """The busiest of ``ep`` ranks' load over the mean when each holds g = experts / ep of the
    experts (Megatron-Core's contiguous placement) and their loads follow ``router_spread``'s
    model: a rank's load is 1 + (sigma / sqrt g) (W_r - mean W), W_r independent standard
    normals (the mean of its g Z_e, times sqrt g), so the busiest is 1 + sigma E[max of ep
    normals] / sqrt(g): the expert's imbalance with one expert a rank (ep = experts), 1 with
    one rank; DeepSeek-V3's default (loss-free, 256 experts) over ep = 64 ranks: 1.020."""
    if ep <= 1:
        return 1.0
    return 1.0 + router_spread(moe) * expected_max_normal(ep) / math.sqrt(moe.experts / ep)


def dropless_load(moe, copies: float, ep: int) -> float:
    """The busiest rank's token copies over the mean with no capacity: the larger of the
    router's imbalance on ``ep`` ranks (``rank_imbalance``) and a micro-batch's sampling
    spread (``sampling_load``, ``copies`` a rank)."""
    return max(rank_imbalance(moe, ep), sampling_load(copies, ep, moe.experts, moe.top_k))


def dropped_fraction(moe, copies: float) -> float:
    """The expected share of the token copies dropped over capacity: 0 dropless or padded;
    with a capacity factor C and no padding, each rank keeps at most C x its mean copies per
    expert (Megatron-Core's ``apply_router_token_dropping``: capacity ceil(tokens x top_k /
    experts x C) of the rank's own tokens, moe_utils.py at NVIDIA/Megatron-LM d98e8a64dd).
    An expert's copies from a rank (``copies`` a rank, T = copies / top_k tokens), over their
    mean, are taken as normal: mean 1, variance sigma^2 (1 - 1/E) from the router
    (``router_spread``) plus (E - k) / copies from sampling (each token picks an expert with
    probability k / E: binomial). The dropped share is E[(X - C)^+] = s phi(z) - (C - 1)(1 -
    Phi(z)), z = (C - 1) / s: at least max(0, 1 - C) (Jensen), 0 as C grows."""
    c = moe.capacity_factor
    if c is None or moe.pad_to_capacity or copies <= 0:
        return 0.0
    e, k = moe.experts, moe.top_k
    variance = router_spread(moe) ** 2 * (1 - 1 / e) + (e - k) / copies
    if variance <= 0:
        return max(0.0, 1.0 - c)
    s = math.sqrt(variance)
    z = (c - 1.0) / s
    pdf = math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    survival = 0.5 * math.erfc(z / math.sqrt(2.0))   # 1 - Phi(z), exact in the far tail
    return s * pdf - (c - 1.0) * survival


def busiest_load(moe, copies: float, ep: int) -> float:
    """The busiest rank's work over the mean (all routed copies), the load that paces the
    step: dropless, ``dropless_load``; with a capacity factor C padded to capacity
    (Megatron-Core's ``--moe-pad-expert-input-to-capacity``, NeMo's recipes), exactly C,
    however the tokens spread; dropping without padding, min(dropless, C): no expert of any
    rank keeps more than C x its mean (an upper bound: dropping at a rank's other experts
    can only lower it)."""
    if moe.capacity_factor is None:
        return dropless_load(moe, copies, ep)
    if moe.pad_to_capacity:
        return float(moe.capacity_factor)
    return min(dropless_load(moe, copies, ep), float(moe.capacity_factor))


def figures(moe, forward: OpGraph) -> dict | None:
    """The load figures of a rank's ``forward`` (``shard``'s output) for ``--json``:
    ``imbalance`` (the busiest expert's over the mean, ``expert_imbalance``),
    ``busiest_load`` (the busiest rank's work over the mean of all routed copies) and
    ``dropped_fraction`` (the expected share dropped over capacity); None without experts."""
    if moe is None:   # a dense model: no topological walk of its graph
        return None
    op = next((op for op in forward.ops() if op.role in EXPERTS), None)
    if op is None:
        return None
    facts = dict(op.extra)
    dropped = facts.get("dropped", 0) / 1e6
    load = (facts.get("load") or 1000) / 1000
    return {"imbalance": expert_imbalance(moe), "busiest_load": load * (1 - dropped),
            "dropped_fraction": dropped}


def _sync_permutation(forward: OpGraph) -> OpGraph:
    """``forward`` with the host synchronising before each dropless permutation (ep = 1:
    Megatron-Core's dispatcher reads the tokens per expert on the host, ``cuda_sync_point``
    "before_ep_alltoall" with several local experts, "before_finish" with one,
    token_dispatcher.py at c230e0d7c2)."""
    out = OpGraph(forward.name)
    for name in forward.names():
        op = forward.op(name)
        if op.role is Role.EXPERT_DISPATCH:
            op = op.evolve(extra=(*op.extra, ("sync", 1)))
        out.add(op, forward.inputs(name))
    return out


def _keep(forward: OpGraph, kept: float, load: float | None) -> OpGraph:
    """``forward`` (or a rank's share of it, ``_shard``'s output) with ``kept`` of each MoE
    layer's token copies: the permutation writes them and the grouped expert GEMMs run them
    (their fact ``dropped``: the share dropped, per million; ``load``: the busiest rank's
    work over the mean kept, None: unchanged). The GEMMs keep the shape (rows per expert) of
    all the routed copies, as dropless and padded do (the busiest rank's rows are near it,
    not the mean kept); the activation between them and the un-permutation keep their size
    (vector work of every copy's slot). The all-to-alls were sized by ``_shard`` on the
    busiest rank's kept copies."""
    dropped = round(1e6 * (1.0 - kept))
    out = OpGraph(forward.name)
    for name in forward.names():
        op = forward.op(name)
        if op.role is Role.EXPERT_DISPATCH and op.fn == "permute":
            written = round(op.out_bytes * kept)
            op = op.evolve(bytes_written=written, out_bytes=written)
        elif op.role in EXPERTS:
            slots = round(op.flops // (2 * op.k * op.n) * kept)
            part = grouped(op.evolve(flops=2 * slots * op.k * op.n), op.k, op.n)
            facts = tuple((key, round(1000 * load) if key == "load" and load is not None
                           else value) for key, value in part.extra)
            op = part.evolve(m=op.m, extra=(*facts, ("dropped", dropped)))
        out.add(op, forward.inputs(name))
    return out


def _copies_per_rank(forward: OpGraph) -> float:
    """A rank's token copies for its experts in one MoE layer, on average: as many as it
    routes (each rank receives, on average, as many copies as it sends), the first grouped
    expert GEMM's rows (its FLOPs over 2 k n)."""
    op = next(op for op in forward.ops() if op.role in EXPERTS)
    return op.flops / (2 * op.k * op.n)


def _shared_after_combine(graph: OpGraph) -> None:
    """Make each MoE layer's shared experts wait for its combine all-to-all: the linears of
    the layer's MLP block that are not routed experts nor its router (the shared experts'
    column-parallel ones, and Qwen-MoE's gate: a linear to one feature)."""
    combines = {}   # layer -> its combine all-to-all (the un-permutation's first input)
    for name in graph.names():
        op = graph.op(name)
        if op.role is Role.EXPERT_COMBINE:
            combines[op.layer] = graph.inputs(name)[0]
    for name in graph.names():
        op = graph.op(name)
        if op.layer not in combines or op.block is not Block.MLP or op.fn != "linear":
            continue
        if op.role is Role.COLUMN or (op.role is Role.REPLICATED and op.n == 1):
            # an ordering edge after the op's own inputs (a linear's activation stays first)
            graph.add_edge(combines[op.layer], name, len(graph.inputs(name)), nbytes=0)


def nodes_per_token(moe, nodes: int) -> float:
    """Nodes a token's top_k expert choices land on, on average, among ``nodes`` (its
    ``max_nodes`` when node-limited): n (1 - (1 - 1/n)^k) for k choices spread uniformly over
    n nodes (the expected count of distinct ones). DeepEP sends a token over the inter-node
    network once per such node, then forwards its copies inside the node over NVLink
    (deepseek-ai/DeepEP README, "normal kernels ... NVLink and RDMA forwarding"; DeepSeek-V3,
    arXiv:2412.19437, sec. 3.2.2)."""
    n = min(nodes, moe.max_nodes or nodes)
    return n * (1 - (1 - 1 / n) ** moe.top_k)


def _shard(forward: OpGraph, ep: int, local: int, hops=None, top_k: int = 1,
           load: float = 1.0, sync: bool = False) -> OpGraph:
    out = OpGraph(forward.name)
    remap: dict[str, str] = {}
    permille = round(1000 * load)
    for name in forward.names():
        op = forward.op(name)
        inputs = [remap.get(src, src) for src in forward.inputs(name)]
        if op.role in EXPERTS:
            experts = op.batch // ep
            part = grouped(op, op.k, op.n, experts)
            facts = tuple((key, permille if key == "load" else value)
                          for key, value in part.extra)
            out.add(part.evolve(extra=facts), inputs)
        elif op.role is Role.EXPERT_COMBINE:
            routed = inputs[0]   # the experts' output (the first input): send it back
            last = routed
            for a2a in reversed(_exchange(f"{name}.ep_combine", out.op(routed), op, ep, local,
                                          load, hops, top_k)):
                last = out.add(a2a, [last])
            out.add(op, [last, *inputs[1:]])
        else:
            out.add(op, inputs)
        if op.role is Role.EXPERT_DISPATCH:
            last = name
            for a2a in _exchange(f"{name}.ep_dispatch", op, op, ep, local, load, hops, top_k):
                if sync and last == name:   # the first all-to-all waits on the host's sizes
                    a2a = a2a.evolve(extra=(*a2a.extra, ("sync", 1)))
                last = out.add(a2a, [last])
            remap[name] = last
    return out


def _exchange(name: str, source: Op, template: Op, ep: int, local: int, load: float, hops,
              top_k: int) -> list[Op]:
    """The all-to-alls that move ``source``'s token copies to their experts' ranks, in
    dispatch order: one among the ep ranks, or DeepEP's two (``hops``: nodes, members per
    node, nodes per token): among the nodes' same-index ranks, each token once per node it
    goes to, then inside each node every copy to its expert's rank."""
    if hops is None:
        return [_all_to_all(name, source, template, ep, local, load)]
    nodes, members, per_token = hops
    inter = _all_to_all(f"{name}.inter", source, template, nodes, 1, load * per_token / top_k)
    intra = _all_to_all(f"{name}.intra", source, template, members, members, load)
    return [inter, intra]


def reduce_expert_gradients(step: OpGraph, replicas: int, ep: int, stride: int,
                            per_node: int) -> OpGraph:
    """Split each layer's data-parallel gradient reduction (and ZeRO 1-2's all-gather of the
    updated weights) of a training ``step`` with ``replicas`` replicas (changed in place and
    returned): the experts' share over their expert-data-parallel group of replicas / ep
    ranks, ``stride`` (tp x ep, MoE parallel folding) apart, on a node of ``per_node``
    devices; nothing when
    ep = 1 or the step has no experts."""
    if ep == 1:
        return step
    params, experts = _layer_parameters(step, trainable=False)
    if not experts:
        return step
    group = replicas // ep
    local = math.gcd(group, max(per_node // stride, 1))
    for name in list(step.names()):
        op = step.op(name)
        facts = dict(op.extra)
        if op.kind is not OpKind.COLLECTIVE or facts.get("axis") != int(Axis.DATA) or \
                op.fn not in _PER_LAYER or facts.get("group") != replicas:
            continue
        # one layer's reduction reads only that layer's gradients (its gather, its update): a
        # bucket of several layers (DeepSpeed's) or ZeRO-3's prefetched gather is left whole
        sources = {step.op(src).layer for src in step.inputs(name)}
        layer = op.layer
        # a gather the next step's forward issues (``ahead``) follows the previous layer's
        if sources != {layer} and not facts.get("ahead"):
            continue
        share = experts.get(layer, 0)
        if not share:
            continue
        total = params[layer]
        dense = op.evolve(bytes_read=op.bytes_read * (total - share) // total,
                          bytes_written=op.bytes_written * (total - share) // total)
        step.nx.nodes[name]["op"] = dense
        read = op.bytes_read * share // total
        written = read if op.fn == "all_reduce" else (
            read // group if op.fn == "reduce_scatter" else read * group)
        if op.fn == "all_gather":   # reads a shard, writes the whole
            read, written = op.bytes_written * share // total // group, \
                op.bytes_written * share // total
        part = collective(f"{name}:experts", op.fn, read, written, 0, group, Axis.DATA, op,
                          phase=op.phase, local=local).evolve(task=op.task)
        step.add(part, step.inputs(name))
        for reader in step.consumers(name):
            step.add_edge(part.name, reader, nbytes=0)
        if step.nx.nodes[name].get("early"):
            step.issue_early(part.name)
    return step


def _layer_parameters(step: OpGraph, trainable: bool) -> tuple[dict[int, int], dict[int, int]]:
    """Per layer of ``step``'s forward ops (this rank's): its parameters, and its experts'
    (``EXPERTS`` roles); ``trainable``: frozen ones left out (what an update covers)."""
    params: dict[int, int] = {}
    experts: dict[int, int] = {}
    for op in step.ops():
        if op.phase is Phase.FORWARD and op.params and not (trainable and op.frozen):
            params[op.layer] = params.get(op.layer, 0) + op.params
            if op.role in EXPERTS:
                experts[op.layer] = experts.get(op.layer, 0) + op.params
    return params, experts


def shard_expert_updates(step: OpGraph, shards: int, ep: int) -> OpGraph:
    """The update of a ZeRO-sharded training ``step`` (changed in place and returned) with its
    experts' share sharded over their expert-data-parallel group, ``shards`` // ``ep`` ranks,
    not over all ``shards``: ``simulator.parallel.data`` priced each layer's update as 1 /
    ``shards`` of its parameters; the experts' part of it is ``ep`` times that. Megatron-Core's
    distributed optimizer splits each gradient buffer's buckets over the buffer's own
    data-parallel group (NVIDIA/Megatron-LM 791b70e031, core_r0.11.0, NeMo 25.02's:
    megatron/core/optimizer/distrib_optimizer.py lines 169-177, ``gbuf_size //
    data_parallel_world_size``), and the experts' buffers are on the expert-data-parallel
    group (megatron/core/distributed/distributed_data_parallel.py lines 254-259), as
    ``simulator.schedule.memory`` shards their states. Nothing when ``shards`` <= 1 (ZeRO 0:
    every rank updates all it holds), ep = 1 or the step has no experts. The layer's update
    is scaled as a whole (flops, bytes, elements): its per-element traffic is taken as the
    same for the experts' weights and the others' (they differ by the fp8 weights' bytes
    only, ``simulator.training.fp8``)."""
    group = max(shards // ep, 1)
    if shards <= 1 or ep == 1 or group == shards:
        return step
    params, experts = _layer_parameters(step, trainable=True)
    for name in list(step.names()):
        op = step.op(name)
        share = experts.get(op.layer, 0)
        if op.task is not Task.UPDATE or not share:
            continue
        total = params[op.layer]
        # dense / shards + experts / group, over the total / shards priced
        num, den = total - share + share * shards // group, total
        step.nx.nodes[name]["op"] = op.evolve(
            flops=op.flops * num // den, params=-(-op.params * num // den),
            bytes_read=op.bytes_read * num // den, bytes_written=op.bytes_written * num // den)
    return step


#: The data-parallel collectives of one layer's parameters (``simulator.parallel.data``).
_PER_LAYER = frozenset({"all_reduce", "reduce_scatter", "all_gather"})


def _all_to_all(name: str, source: Op, template: Op, ep: int, local: int,
                load: float) -> Op:
    """The all-to-all of ``source``'s output among ``ep`` ranks, the busiest rank receiving
    ``load`` times the mean (the grouped GEMMs' fact)."""
    size = source.out_bytes
    nbytes = round(size * load)
    return collective(name, "all_to_all", nbytes, nbytes, size, ep, Axis.EXPERT, template,
                      local=local)


__all__ = ["EXPERTS", "busiest_load", "check", "dropless_load", "dropped_fraction",
           "expected_max_normal", "expert_imbalance", "figures", "local_members", "nodes_per_token",
           "rank_imbalance", "reduce_expert_gradients", "router_spread", "sampling_load",
           "shard", "shard_expert_updates"]
